"""The Wishbone wrapper of the SoC (deltahw.soc.wishbone) in amaranth.sim, driven the way the C
driver's SoC HAL drives it (firmware/soc/hal.c): ID/VERSION through the core window, parameters
loaded over PARAM_DATA into a zero-initialised core, thresholds, input beats staged in IN_DATA
and pushed, output beats read from OUT_DATA and popped; outputs and CYCLES_LAST equal the golden
model's, and the sticky overrun/underrun bits report misuse."""

from __future__ import annotations

import torch
from amaranth.sim import Simulator

from deltahw import regmap
from deltahw.config import ceil_div
from deltahw.golden import run_golden
from deltahw.layout import Layout
from deltahw.model import from_modules
from deltahw.soc.wishbone import DeltaGRUWishbone, soc_register_map, stream_words

torch.set_num_threads(1)


def _model():
    torch.manual_seed(3)
    gru, head = torch.nn.GRU(5, 7, 2), torch.nn.Linear(7, 3)
    with torch.no_grad():
        for p in gru.parameters():
            p.mul_(2.0)
    return from_modules(gru, head, lanes=12, act_width=2, enc_width=2, theta_x=(20, 20),
                        theta_h=(20, 20))


class Master:
    """Wishbone classic master in amaranth.sim with the driver HAL's four operations."""

    def __init__(self, ctx, wb):
        self.ctx, self.wb, self.cycles = ctx, wb, 0

    async def _cycle(self, addr, we, data=0):
        c, wb = self.ctx, self.wb
        c.set(wb.adr, addr)
        c.set(wb.we, we)
        c.set(wb.dat_w, data)
        c.set(wb.sel, 0b1111)
        c.set(wb.cyc, 1)
        c.set(wb.stb, 1)
        for _ in range(8):
            await c.tick()
            self.cycles += 1
            if c.get(wb.ack):
                value = c.get(wb.dat_r)
                c.set(wb.cyc, 0)
                c.set(wb.stb, 0)
                await c.tick()
                self.cycles += 1
                return value
        raise AssertionError(f"no ack for word 0x{addr:x}")

    async def read(self, addr):
        return await self._cycle(addr, 0)

    async def write(self, addr, value):
        await self._cycle(addr, 1, value)


def _pack(values, bits):
    word = 0
    for e, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (e * bits)
    return word


def _unpack(word, bits, n):
    out = []
    for e in range(n):
        v = (word >> (e * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def test_wishbone_wrapper_runs_a_sequence_like_the_driver():
    model = _model()
    cfg, lay = model.config, Layout(model.config)
    core_regs = regmap.by_name(cfg.num_layers)
    soc = {r.name: r for r in soc_register_map(cfg)}
    st = soc["STREAM_STATUS"]
    n_in, n_out = stream_words(cfg)
    dut = DeltaGRUWishbone(cfg)  # all-zero parameters: the outputs are right only if loaded
    T = 6
    x = torch.randn(T, cfg.input_size, generator=torch.Generator().manual_seed(1))
    x_q, _ = model.quantize_input(x)
    golden = run_golden(model, x_q)
    E, A, ab = cfg.enc_width, cfg.act_width, cfg.act.bits
    nbi, nbo = ceil_div(cfg.input_size, E), ceil_div(cfg.output_width, A)
    got, cyc, flags = [], [], {}

    async def tb(ctx):
        m = Master(ctx, dut.wb)
        assert await m.read(core_regs["ID"].addr) == regmap.ID_MAGIC
        assert await m.read(core_regs["VERSION"].addr) == regmap.VERSION
        w = lay.lane_weights(model).T  # (lanes, depth)
        b = lay.lane_biases(model).T
        sel = core_regs["PARAM_SEL"]
        for lane in range(cfg.lanes):
            for kind, vals in ((regmap.PARAM_KIND_WEIGHT, w[lane]), (regmap.PARAM_KIND_BIAS,
                                                                      b[lane])):
                await m.write(sel.addr, sel.pack(kind=kind, lane=lane))
                await m.write(core_regs["PARAM_ADDR"].addr, 0)
                for v in vals.tolist():
                    await m.write(core_regs["PARAM_DATA"].addr, regmap.to_word(v))
        for l in range(cfg.num_layers):
            await m.write(core_regs[f"THETA_X{l}"].addr, cfg.theta_x[l])
            await m.write(core_regs[f"THETA_H{l}"].addr, cfg.theta_h[l])
        await m.write(core_regs["THETA_HEAD"].addr, cfg.theta_head)
        # misuse first: a pop with nothing waiting sets the sticky underrun bit
        await m.write(soc["OUT_POP"].addr, 0)
        flags["underrun"] = st.unpack(await m.read(st.addr))["underrun"]
        await m.write(st.addr, 0)
        flags["cleared"] = await m.read(st.addr)
        for t in range(T):
            v = x_q[t].tolist() + [0] * (nbi * E - cfg.input_size)
            for beat in range(nbi):
                for _ in range(1000):
                    if not st.unpack(await m.read(st.addr))["in_full"]:
                        break
                else:
                    raise AssertionError("the core never took an input beat")
                word = _pack(v[beat * E:(beat + 1) * E], ab)
                for k in range(n_in):
                    await m.write(soc[f"IN_DATA{k}"].addr, (word >> (32 * k)) & 0xFFFFFFFF)
                await m.write(soc["IN_PUSH"].addr, int(t == 0 and beat == 0))
            row = []
            for beat in range(nbo):
                for _ in range(1000):
                    s = st.unpack(await m.read(st.addr))
                    if s["out_valid"]:
                        break
                else:
                    raise AssertionError("no output beat came")
                assert s["out_last"] == (beat == nbo - 1)
                word = 0
                for k in range(n_out):
                    word |= await m.read(soc[f"OUT_DATA{k}"].addr) << (32 * k)
                row += _unpack(word, ab, A)
                await m.write(soc["OUT_POP"].addr, 0)
            got.append(row[:cfg.output_width])
            cyc.append(await m.read(core_regs["CYCLES_LAST"].addr))
        # with no output read the core soon stops taking input (two timesteps of output, two
        # input vectors buffered); a push while the staged beat still waits is refused, reported
        for _ in range(8 * nbi):
            await m.write(soc["IN_PUSH"].addr, 0)
        flags["overrun"] = st.unpack(await m.read(st.addr))["overrun"]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()  # ends with the testbench (every wait in it is bounded)
    assert torch.equal(torch.tensor(got), golden.outputs[0])
    assert cyc == golden.cycles[0].tolist()
    assert flags == {"underrun": 1, "cleared": 0, "overrun": 1}
