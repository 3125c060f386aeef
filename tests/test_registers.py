# amaranth: UnusedElaboratable=no
"""The register map description (pack/unpack) and the register block built from it."""

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from deltahw import regmap
from deltahw.gateware.registers import RegisterBlock
from deltahw.regmap import BUS_DATA_BITS, RegmapError


def test_pack_unpack_roundtrip_every_field_register():
    for reg in regmap.register_map(3):
        if not reg.fields:
            continue
        values = {f.name: (f.max * 5 + 3 * i) % (f.max + 1) for i, f in enumerate(reg.fields)}
        word = reg.pack(**values)
        assert 0 <= word < 1 << BUS_DATA_BITS
        assert reg.unpack(word) == values
        for f in reg.fields:  # each field lands at its own offset, nothing else moves
            assert reg.pack(**{f.name: 1}) == 1 << f.offset


def test_pack_refuses_values_that_do_not_fit():
    shape1 = regmap.by_name(1)["SHAPE1"]
    out = shape1.field("output_size")
    assert shape1.pack(output_size=out.max) == out.max << out.offset
    with pytest.raises(RegmapError, match=r"SHAPE1.output_size is 12 bits wide .* got 4096"):
        shape1.pack(output_size=4096)
    with pytest.raises(RegmapError, match="got -1"):
        shape1.pack(lanes=-1)
    with pytest.raises(RegmapError, match="no field 'lane'"):
        shape1.pack(lane=1)


def test_unpack_refuses_words_outside_the_fields():
    regs = regmap.by_name(1)
    with pytest.raises(RegmapError, match="outside its fields"):
        regs["SHAPE1"].unpack(1 << 31)
    with pytest.raises(RegmapError, match="32 bits"):
        regs["SHAPE0"].unpack(1 << 32)
    assert regs["CYCLES_TOTAL"].unpack(0xFFFFFFFF) == {"value": 0xFFFFFFFF}


def test_map_size_follows_the_address_layout():
    assert len(regmap.register_map(regmap.MAX_LAYERS)) == len({
        r.addr for r in regmap.register_map(regmap.MAX_LAYERS)})
    assert max(r.addr for r in regmap.register_map(regmap.MAX_LAYERS)) < 1 << regmap.BUS_ADDR_BITS
    with pytest.raises(RegmapError, match="1 to 8 layers"):
        regmap.register_map(regmap.MAX_LAYERS + 1)


def _block():
    regs = regmap.register_map(2)
    return regs, RegisterBlock(
        regs,
        constants={"ID": regmap.ID_MAGIC, "VERSION": regmap.VERSION,
                   "SHAPE0": {"input_size": 13, "hidden_size": 300},
                   "SHAPE1": {"num_layers": 2, "output_size": 10, "lanes": 48,
                              "act_width_log2": 2}},
        storage={"THETA_X0": (12, 5), "THETA_H1": (12, 7)},
    )


def test_block_refuses_a_constant_that_does_not_fit():
    with pytest.raises(RegmapError, match="output_size"):
        RegisterBlock(regmap.register_map(1), constants={"SHAPE1": {"output_size": 4096}})
    with pytest.raises(RegmapError, match="does not fit"):
        RegisterBlock(regmap.register_map(1), storage={"THETA_X0": (4, 16)})


def test_block_reads_writes_strobes_and_increments():
    regs, dut = _block()
    by = {r.name: r for r in regs}
    m = Module()
    m.submodules.dut = dut
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def read(ctx, name_or_addr):
        addr = by[name_or_addr].addr if isinstance(name_or_addr, str) else name_or_addr
        ctx.set(dut.bus.addr, addr)
        ctx.set(dut.bus.r_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.r_en, 0)
        # Registered: the data are there in the cycle after r_en, and stay.
        value = ctx.get(dut.bus.r_data)
        await ctx.tick()
        assert ctx.get(dut.bus.r_data) == value
        return value

    async def write(ctx, name, value, check_strobe=None):
        ctx.set(dut.bus.addr, by[name].addr)
        ctx.set(dut.bus.w_data, value)
        ctx.set(dut.bus.w_en, 1)
        if check_strobe is not None:
            assert ctx.get(dut.strobe(check_strobe)) == 1
            assert ctx.get(dut[check_strobe].as_value() if by[check_strobe].fields
                           else dut[check_strobe]) == value
        await ctx.tick()
        ctx.set(dut.bus.w_en, 0)

    async def tb(ctx):
        assert await read(ctx, "ID") == regmap.ID_MAGIC
        assert await read(ctx, "VERSION") == regmap.VERSION
        assert await read(ctx, "SHAPE0") == by["SHAPE0"].pack(input_size=13, hidden_size=300)
        s1 = by["SHAPE1"].unpack(await read(ctx, "SHAPE1"))
        assert s1 == {"num_layers": 2, "output_size": 10, "lanes": 48, "act_width_log2": 2}
        assert await read(ctx, 0x7F) == 0  # no register there
        # Storage: reset values, width truncation, independence.
        assert await read(ctx, "THETA_X0") == 5
        assert await read(ctx, "THETA_H1") == 7
        assert ctx.get(dut["THETA_X0"]) == 5
        await write(ctx, "THETA_X0", 0xFFFFF123)
        assert ctx.get(dut["THETA_X0"]) == 0x123
        assert await read(ctx, "THETA_X0") == 0x123
        assert await read(ctx, "THETA_H1") == 7
        # A field register keeps only its fields' bits.
        await write(ctx, "PARAM_SEL", 0xFFFFFFFF)
        sel = by["PARAM_SEL"]
        assert await read(ctx, "PARAM_SEL") == sel.field("kind").mask | sel.field("lane").mask
        assert ctx.get(dut["PARAM_SEL"].lane) == sel.field("lane").max
        # PARAM_ADDR increments after each PARAM_DATA write; the strobe sees the old address.
        await write(ctx, "PARAM_ADDR", 40)
        for k in range(3):
            assert ctx.get(dut["PARAM_ADDR"]) == 40 + k
            await write(ctx, "PARAM_DATA", 1000 + k, check_strobe="PARAM_DATA")
        assert await read(ctx, "PARAM_ADDR") == 43
        assert ctx.get(dut.strobe("PARAM_DATA")) == 0
        # Inputs read back through their fields.
        ctx.set(dut["STATUS"].out_pending, 1)
        ctx.set(dut["FIRED_LAST1"].h, 0xBEEF)
        ctx.set(dut["CYCLES_TOTAL"], 0xDEADBEEF)
        assert by["STATUS"].unpack(await read(ctx, "STATUS"))["out_pending"] == 1
        assert by["FIRED_LAST1"].unpack(await read(ctx, "FIRED_LAST1")) == {"x": 0, "h": 0xBEEF}
        assert await read(ctx, "CYCLES_TOTAL") == 0xDEADBEEF
        await write(ctx, "CTRL", by["CTRL"].pack(clear_counters=1), check_strobe="CTRL")
        assert ctx.get(dut.strobe("CTRL")) == 0

    sim.add_testbench(tb)
    sim.run()
