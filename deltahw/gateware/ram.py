"""Parameter RAM: a simple dual-port memory initialised from the exported weight/bias files.

In generated Verilog it is an instance of ``verilog/deltahw_sdp_ram.v``, which loads its
``$readmemh`` file at elaboration (so the same RTL runs another model's weights) and which Vivado
and Yosys infer as block RAM. For amaranth.sim unit tests it is an
:class:`amaranth.lib.memory.Memory`
holding the same words.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import ClockSignal, Instance, Module, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ParamRAM", "VERILOG_RAM_PATH"]

VERILOG_RAM_PATH = Path(__file__).parent / "verilog" / "deltahw_sdp_ram.v"


class ParamRAM(wiring.Component):
    """Simple dual-port RAM of ``depth`` words of ``lanes`` x ``lane_bits`` bits.

    Latency: ``r_data`` holds the word at ``r_addr`` one cycle after the address (always enabled).
    Writes: lanes with ``w_en[i]`` set take ``w_data``'s lane ``i`` at ``w_addr`` on the clock edge.
    A read of the word written in the same cycle is undefined in the Verilog instance (it tells
    Yosys ``no_rw_check``, so no collision logic sits in the read path); the core writes its
    parameters only while idle, so it never uses such a read.
    ``init`` (list of words) is used in simulation; ``init_file`` (a file name relative to the
    simulator's working directory) selects the ``$readmemh`` Verilog instance.
    """

    def __init__(self, *, lanes: int, lane_bits: int, depth: int, init=None, init_file=None):
        if depth < 1:
            raise ValueError(f"A parameter RAM needs at least one word; got depth={depth}.")
        self.lanes, self.lane_bits, self.depth = lanes, lane_bits, depth
        self.init, self.init_file = list(init or []), init_file
        self.abits = max(1, (depth - 1).bit_length())
        width = lanes * lane_bits
        super().__init__({
            "r_addr": In(self.abits), "r_data": Out(width),
            "w_addr": In(self.abits), "w_data": In(width), "w_en": In(lanes),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.lanes * self.lane_bits
        if self.init_file is not None:
            m.submodules.ram = Instance(
                "deltahw_sdp_ram",
                p_WIDTH=width, p_DEPTH=self.depth, p_ABITS=self.abits, p_LANES=self.lanes,
                p_INIT_FILE=self.init_file,
                i_clk=ClockSignal(), i_raddr=self.r_addr, o_rdata=self.r_data,
                i_waddr=self.w_addr, i_wdata=self.w_data, i_wen=self.w_en,
            )
            return m
        m.submodules.mem = mem = memory.Memory(shape=unsigned(width), depth=self.depth,
                                               init=self.init)
        rp = mem.read_port()
        wp = mem.write_port(granularity=self.lane_bits)
        m.d.comb += [
            rp.addr.eq(self.r_addr), self.r_data.eq(rp.data),
            wp.addr.eq(self.w_addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en),
        ]
        return m
