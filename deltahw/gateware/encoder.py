"""Delta encoder (threshold comparator) for K elements per cycle.

For each element: ``d = v - vhat``; it fires when ``|d| >= theta`` (so theta 0 fires everything and
the network is the dense GRU); where it fires the delta is ``d`` and the last-transmitted value
becomes ``v``, elsewhere the delta is 0 and ``vhat`` is kept. ``clear`` treats ``vhat`` as 0 (the
first vector of a sequence) and ``in_range`` masks padding elements past the vector's end.

Timing: the fire decision is the only part of the encoder that can sit on a loop (an input
encoder reads back a last-transmitted word the cycle after it wrote it), so it is built from
comparisons that each take one carry chain: ``|d| >= theta`` is ``d >= theta or d <= -theta``
(two chains side by side after the subtraction, instead of subtraction, negation and comparison
in series), and with ``ahead=True`` the bounds ``v - theta`` and ``v + theta`` are computed and
registered a cycle early, so the loop is ``vhat <= v - theta or vhat >= v + theta``: one chain.
With ``vhat_ahead=True`` it is the other way round (for encoders whose ``v`` arrives late, from a
pipeline, and whose ``vhat`` can be read a cycle early): ``vhat -/+ theta`` are registered and the
fire decision is ``v <= vhat - theta or v >= vhat + theta``, one chain after ``v``.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import KEEP

__all__ = ["DeltaEncoder"]


class DeltaEncoder(wiring.Component):
    """Compares ``width`` elements per cycle. Latency 0 from ``vhat``, ``clear`` and ``in_range``
    to ``fire``, ``delta`` and ``new_vhat`` (combinational); the surrounding pipeline registers its
    inputs and outputs. Throughput: one vector of ``width`` elements per cycle.

    ``ahead=False``: ``v`` and ``theta`` belong to the same cycle as ``vhat``.
    ``ahead=True``: ``v``, ``theta`` and ``clear`` are presented one cycle earlier (the encoder
    registers ``v``, its bounds ``v -/+ theta`` and ``clear``, every cycle, unconditionally), which
    takes the subtraction off the ``vhat`` -> ``new_vhat`` path. ``clear`` is registered once per
    element (flip-flops kept apart in synthesis: :data:`deltahw.gateware.KEEP`): one shared
    ``clear`` fanned out to every element's selects (5.7 ns of routing on the ECP5 with P=12
    A=4). ``LATENCY_V`` gives that offset.
    ``vhat_ahead=True``: ``vhat``, ``clear`` and ``theta`` are presented one cycle earlier (the
    encoder registers the old value and its bounds), which takes the subtraction off the ``v`` ->
    ``fire`` path. ``LATENCY_VHAT`` gives that offset.

    ``over`` is the threshold compare alone (``|d| >= theta``, not masked by ``in_range``), for a
    user that masks it with its own registered enable in the same LUT as the compare's OR.
    ``delta`` is the difference where the element fires and 0 elsewhere; ``diff`` is the
    difference everywhere. A delta queue stores only the fired elements, so it takes ``diff``:
    zeroing the others puts ``fire`` on every bit of the queue's delta input register (on the
    ECP5 as those flip-flops' synchronous reset, a fanout of the compare that was the critical
    path at 75 MHz, docs/benchmarks/fmax lead12-5).
    """

    #: Cycles by which ``vhat``/``clear``/``theta`` lead ``v`` with ``vhat_ahead``.
    VHAT_AHEAD_LATENCY = 1

    def __init__(self, *, width: int, act_bits: int, ahead: bool = False,
                 vhat_ahead: bool = False):
        if ahead and vhat_ahead:
            raise ValueError("DeltaEncoder: ahead and vhat_ahead exclude each other.")
        self.width, self.act_bits, self.ahead, self.vhat_ahead = width, act_bits, ahead, vhat_ahead
        #: Cycles from ``v``/``theta`` to the outputs (0, or 1 with ``ahead``).
        self.LATENCY_V = int(ahead)
        #: Cycles from ``vhat``/``clear``/``theta`` to the outputs (0, or 1 with ``vhat_ahead``).
        self.LATENCY_VHAT = self.VHAT_AHEAD_LATENCY if vhat_ahead else 0
        super().__init__({
            "v": In(data.ArrayLayout(signed(act_bits), width)),
            "vhat": In(data.ArrayLayout(signed(act_bits), width)),
            "theta": In(unsigned(act_bits)),
            "clear": In(1),
            "in_range": In(width),
            "fire": Out(width),
            "over": Out(width),
            "delta": Out(data.ArrayLayout(signed(act_bits + 1), width)),
            "diff": Out(data.ArrayLayout(signed(act_bits + 1), width)),
            "new_vhat": Out(data.ArrayLayout(signed(act_bits), width)),
        })

    def elaborate(self, platform):
        m = Module()
        ab = self.act_bits
        bound = signed(ab + 2)  # v -/+ theta: v in [-2^(ab-1), 2^(ab-1)), theta in [0, 2^ab)
        neg_theta = Signal(signed(ab + 1))
        m.d.comb += neg_theta.eq(-self.theta)
        for i in range(self.width):
            if self.ahead:
                v = Signal(signed(ab), name=f"v{i}")
                lo, hi = Signal(bound, name=f"lo{i}"), Signal(bound, name=f"hi{i}")
                # The decision for old = 0 (clear) is registered too, so ``clear`` selects
                # between two decisions instead of sitting in front of the compare chain.
                lo_now, hi_now = Signal(bound), Signal(bound)
                big0 = Signal(name=f"big0_{i}")
                m.d.comb += [lo_now.eq(self.v[i] - self.theta), hi_now.eq(self.v[i] + self.theta)]
                m.d.sync += [v.eq(self.v[i]), lo.eq(lo_now), hi.eq(hi_now),
                             big0.eq((lo_now >= 0) | (hi_now <= 0))]
            else:
                v = self.v[i]
            old = Signal(signed(ab), name=f"old{i}")
            if self.ahead:
                clear = Signal(name=f"clear{i}", attrs=KEEP)  # this element's copy
                m.d.sync += clear.eq(self.clear)
            else:
                clear = self.clear
            if self.vhat_ahead:
                old_now = Mux(self.clear, 0, self.vhat[i])
                olo, ohi = Signal(bound, name=f"olo{i}"), Signal(bound, name=f"ohi{i}")
                m.d.sync += [old.eq(old_now), olo.eq(old_now - self.theta),
                             ohi.eq(old_now + self.theta)]
            else:
                m.d.comb += old.eq(Mux(clear, 0, self.vhat[i]))
            d = Signal(signed(ab + 1), name=f"d{i}")
            m.d.comb += d.eq(v - old)
            if self.ahead:
                # |v - old| >= theta  <=>  old <= v - theta  or  old >= v + theta (vhat straight
                # into the compare; old = 0 when clear: the registered big0)
                vh = self.vhat[i]
                big = Mux(clear, big0, (vh <= lo) | (vh >= hi))
            elif self.vhat_ahead:
                # |v - old| >= theta  <=>  v <= old - theta  or  v >= old + theta
                big = (v <= olo) | (v >= ohi)
            else:
                big = (d >= self.theta) | (d <= neg_theta)
            fire = Signal(name=f"fire{i}")
            m.d.comb += fire.eq(self.in_range[i] & big)
            m.d.comb += [
                self.fire[i].eq(fire),
                self.over[i].eq(big),
                self.delta[i].eq(Mux(fire, d, 0)),
                self.diff[i].eq(d),
                self.new_vhat[i].eq(Mux(fire, v, old)),
            ]
        return m
