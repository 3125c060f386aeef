"""Unit tests of the AXI4 wrapper (``deltahw.gateware.axi``): the AXI4-Lite bridge's protocol and
latency in amaranth.sim, and ``generate --interface axi``'s ports and manifest.

The full regression of the wrapped core with a real AXI VIP is ``rtl_tests/test_axi.py``.
"""

import json
import re

from amaranth.sim import Simulator

from deltahw import regmap
from deltahw.config import DeltaGRUConfig
from deltahw.gateware.axi import (
    AXIL_ADDR_BITS,
    RESP_OKAY,
    RESP_SLVERR,
    AxiLiteBridge,
    lane_bits,
    stream_geometry,
)


def _bridge_run(bench):
    dut = AxiLiteBridge()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench(dut))
    sim.run()


def test_axil_write_latency_and_strobes():
    seen = []

    def bench(dut):
        async def run(ctx):
            ax, bus = dut.axil, dut.bus
            ctx.set(ax.bready, 1)
            for addr, strb, data in ((0x40, 0xF, 0x1234), (0x44, 0x3, 0x99), (0x48, 0xF, 7)):
                ctx.set(ax.awaddr, addr)
                ctx.set(ax.wdata, data)
                ctx.set(ax.wstrb, strb)
                ctx.set(ax.awvalid, 1)
                ctx.set(ax.wvalid, 1)
                # accepted in this cycle: the bus write happens now (comb), only for full strobes
                assert ctx.get(ax.awready) and ctx.get(ax.wready)
                seen.append((ctx.get(bus.w_en), ctx.get(bus.addr), ctx.get(bus.w_data)))
                await ctx.tick()
                ctx.set(ax.awvalid, 0)
                ctx.set(ax.wvalid, 0)
                assert ctx.get(ax.bvalid) == 1  # B one cycle after acceptance
                assert ctx.get(ax.bresp) == (RESP_OKAY if strb == 0xF else RESP_SLVERR)
                await ctx.tick()
                assert ctx.get(ax.bvalid) == 0

        return run

    _bridge_run(bench)
    assert seen == [(1, 0x10, 0x1234), (0, 0x11, 0x99), (1, 0x12, 7)]


def test_axil_back_to_back_reads_and_alternation():
    def bench(dut):
        async def run(ctx):
            ax, bus = dut.axil, dut.bus
            ctx.set(ax.rready, 1)
            ctx.set(ax.bready, 1)
            # a read and a write pending together: served alternately, never both in one cycle
            ctx.set(ax.arvalid, 1)
            ctx.set(ax.araddr, 0x400)
            ctx.set(ax.awvalid, 1)
            ctx.set(ax.wvalid, 1)
            ctx.set(ax.wstrb, 0xF)
            ctx.set(ax.awaddr, 0x8)
            order = []
            for _ in range(6):
                w, r = ctx.get(ax.awready), ctx.get(ax.arready)
                assert not (w and r)
                assert ctx.get(bus.r_en) == r and ctx.get(bus.w_en) == w
                if r:
                    assert ctx.get(bus.addr) == 0x100
                order.append("w" if w else "r" if r else "-")
                ctx.set(bus.r_data, 0xABC0 + len(order))
                await ctx.tick()
                if r:
                    # R one cycle after acceptance, data from the bus's next-cycle r_data
                    assert ctx.get(ax.rvalid) == 1 and ctx.get(ax.rresp) == RESP_OKAY
            assert order == ["w", "r", "w", "r", "w", "r"], order

        return run

    _bridge_run(bench)


def test_geometry_is_byte_aligned():
    cfg = DeltaGRUConfig(input_size=13, hidden_size=16, output_size=3, lanes=12,
                         lanes_per_bank=4, act_width=2, enc_width=4)
    g = stream_geometry(cfg)
    assert lane_bits(cfg) % 8 == 0 and lane_bits(cfg) >= cfg.act.bits
    assert g["in_tdata_bits"] == 4 * lane_bits(cfg) and g["out_tdata_bits"] == 2 * lane_bits(cfg)
    assert g["in_beats_per_timestep"] == 4 and g["out_beats_per_timestep"] == 2
    assert (regmap.AXI_WRAPPER_BASE + len(regmap.axi_register_map())) * 4 <= 1 << AXIL_ADDR_BITS


def test_generate_axi_cli(tmp_path):
    from deltahw.generate import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(DeltaGRUConfig(input_size=3, hidden_size=4, output_size=2, lanes=6,
                                             lanes_per_bank=2, act_width=2,
                                             enc_width=4).to_dict()))
    out = tmp_path / "rtl"
    assert main([str(cfg), "--out", str(out), "--interface", "axi"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rtl"]["top"] == "deltahw_axi" and manifest["rtl"]["interface"] == "axi"
    text = (out / "deltahw_axi.v").read_text()
    top = text[text.index("module deltahw_axi("):]
    top = top[: top.index("endmodule")]
    ports = set(re.findall(r"^\s*(?:input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", top, re.M))
    for name in ("aclk", "aresetn", "irq", "s_axis_tdata", "s_axis_tuser", "s_axis_tlast",
                 "m_axis_tready", "s_axil_awaddr", "s_axil_wstrb", "s_axil_rdata"):
        assert name in ports, (name, sorted(ports))
    assert not any("__" in p for p in ports)
