"""Delta encoder (threshold comparator) for K elements per cycle.

For each element: ``d = v - vhat``; it fires when ``|d| >= theta`` (so theta 0 fires everything and
the network is the dense GRU); where it fires the delta is ``d`` and the last-transmitted value
becomes ``v``, elsewhere the delta is 0 and ``vhat`` is kept. ``clear`` treats ``vhat`` as 0 (the
first vector of a sequence) and ``in_range`` masks padding elements past the vector's end.
"""

from __future__ import annotations

from amaranth import Module, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DeltaEncoder"]


class DeltaEncoder(wiring.Component):
    """Compares ``width`` elements per cycle. Purely combinational (latency 0); the surrounding
    pipeline registers its inputs and outputs."""

    def __init__(self, *, width: int, act_bits: int):
        self.width, self.act_bits = width, act_bits
        super().__init__({
            "v": In(data.ArrayLayout(signed(act_bits), width)),
            "vhat": In(data.ArrayLayout(signed(act_bits), width)),
            "theta": In(unsigned(act_bits)),
            "clear": In(1),
            "in_range": In(width),
            "fire": Out(width),
            "delta": Out(data.ArrayLayout(signed(act_bits + 1), width)),
            "new_vhat": Out(data.ArrayLayout(signed(act_bits), width)),
        })

    def elaborate(self, platform):
        m = Module()
        for i in range(self.width):
            old = Mux(self.clear, 0, self.vhat[i])
            d = self.v[i] - old
            mag = Mux(d < 0, -d, d)
            fire = self.in_range[i] & (mag >= self.theta)
            m.d.comb += [
                self.fire[i].eq(fire),
                self.delta[i].eq(Mux(fire, d, 0)),
                self.new_vhat[i].eq(Mux(fire, self.v[i], old)),
            ]
        return m
