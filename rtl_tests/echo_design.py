"""A small known-good (and a deliberately broken) Amaranth design with the core's port shapes.

Used by ``test_rtl_toolchain.py`` to check, before the real core is involved, that Amaranth ->
Verilog -> cocotb works on the selected simulator and that the testbench classes of
``deltahw.verify.tb`` drive and check streams and the register bus correctly (including catching a
stream protocol violation).

``EchoCore``: each ``i`` beat goes through a 4-deep FIFO to ``o`` with every element XORed with
register ``KEY`` (address 0x20) and ``last`` = the input's ``first``. Register 0x00 reads the
deltahw ID. Reads return data the cycle after ``r_en``, as the core's bus.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from deltahw.regmap import ID_MAGIC

__all__ = ["EchoCore", "KEY_ADDR"]

KEY_ADDR = 0x20


class EchoCore(wiring.Component):
    def __init__(self, elems: int, bits: int, broken: bool = False):
        self.elems, self.bits, self.broken = elems, bits, broken
        w = elems * bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"data": w, "first": 1}))),
            "o": Out(stream.Signature(data.StructLayout({"data": w, "last": 1}))),
            "bus": In(wiring.Signature({
                "addr": Out(8), "w_data": Out(32), "w_en": Out(1), "r_en": Out(1),
                "r_data": In(32)})),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.elems * self.bits
        m.submodules.q = q = fifo.SyncFIFOBuffered(width=w + 1, depth=4)
        key = Signal(32)
        m.d.comb += [
            q.w_data.eq(Cat(self.i.payload.data, self.i.payload.first)),
            q.w_en.eq(self.i.valid),
            self.i.ready.eq(q.w_rdy),
        ]
        mask = Cat(*[key[: self.bits] for _ in range(self.elems)])
        valid = q.r_rdy
        if self.broken:
            # Drops valid every 8th cycle even while the beat has not been taken.
            tick = Signal(3)
            m.d.sync += tick.eq(tick + 1)
            valid = q.r_rdy & (tick != 7)
        m.d.comb += [
            self.o.payload.data.eq(q.r_data[:w] ^ mask),
            self.o.payload.last.eq(q.r_data[w]),
            self.o.valid.eq(valid),
            q.r_en.eq(self.o.ready & valid),
        ]
        with m.If(self.bus.w_en & (self.bus.addr == KEY_ADDR)):
            m.d.sync += key.eq(self.bus.w_data)
        with m.If(self.bus.r_en):
            with m.Switch(self.bus.addr):
                with m.Case(0x00):
                    m.d.sync += self.bus.r_data.eq(ID_MAGIC)
                with m.Case(KEY_ADDR):
                    m.d.sync += self.bus.r_data.eq(key)
                with m.Default():
                    m.d.sync += self.bus.r_data.eq(0)
        return m
