"""Head read-out: the head's accumulators rescaled to the act format, A outputs per beat."""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig, ceil_div
from . import KEEP
from . import Forms
from .activation import round_saturate
from .frontend import bits_for
from .mac import MacArray

__all__ = ["HeadReadout", "output_layout"]


def output_layout(config: DeltaGRUConfig) -> data.StructLayout:
    """Payload of the output stream: A elements, then ``last`` (a timestep's final beat)."""
    return data.StructLayout(
        {"data": data.ArrayLayout(signed(config.act.bits), config.act_width), "last": 1}
    )


class HeadReadout(wiring.Component):
    """Rescales beat ``beat`` (A accumulators, lane block ``k`` of the P accumulator words on
    ``mx_data``, the MAC array's forwarded read-out ``MacArray.mx_fwd``) to ``y = sat(rnd(M_o))``
    and presents it as an output-FIFO word.

    Protocol: ``issue`` with ``beat``/``k`` in the cycle the controller addresses the accumulator
    word (as early as the cycle after the head's last MAC issue: the forwarded read includes it);
    ``mx_data`` holds it ``MacArray.FWD_READ_LATENCY`` cycles later (the beat's number travels
    along), and the rescaled beat is on ``out``/``w_en`` ``LATENCY`` cycles after that. Elements
    past O are 0; ``last`` marks beat ceil(O/A) - 1. Throughput: one beat per cycle, no stalls
    (the controller checks the FIFO's room before the read-out starts).

    Pipeline: 1. the beat's A words are selected out of the P lanes (a P/A:1 select) and
    registered; 2. round and saturate (one carry chain, the overflow tests beside the rounding
    adder), registered.
    """

    #: Cycles from ``mx_data`` to ``out``/``w_en`` (select, then rescale, each registered).
    LATENCY = 2

    def __init__(self, config: DeltaGRUConfig, *, logic_compares=None):
        self.config = config
        #: The rescale's compares as LUT logic (ActivationPipe's reasons); ``None``: as
        #: :class:`~deltahw.gateware.Forms` says for the elaborating platform.
        self.logic_compares = logic_compares
        P, A = config.lanes, config.act_width
        self.nbo = ceil_div(config.output_size, A)
        self.k_bits = bits_for(max(1, P // A))
        super().__init__({
            "issue": In(1),
            "beat": In(bits_for(self.nbo)),
            "k": In(self.k_bits),
            "mx_data": In(data.ArrayLayout(signed(config.acc_bits), P)),
            "out": Out(output_layout(config)),
            "w_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        P, A, O, ab = cfg.lanes, cfg.act_width, cfg.output_size, cfg.act.bits
        lc = (Forms.for_platform(platform).logic_compares if self.logic_compares is None
              else self.logic_compares)
        st = data.StructLayout({"valid": 1, "beat": len(self.beat), "k": self.k_bits})
        # Delay line of the issued beats: dl[i] holds the issue of i cycles ago; the words are on
        # mx_data at dl[R] (R = MacArray.FWD_READ_LATENCY), the result leaves at dl[R + LATENCY].
        R = MacArray.FWD_READ_LATENCY
        dl = [Signal(st, name=f"ro{i}") for i in range(R + self.LATENCY + 1)]
        m.d.comb += [dl[0].valid.eq(self.issue), dl[0].beat.eq(self.beat), dl[0].k.eq(self.k)]
        for i in range(R + self.LATENCY):
            m.d.sync += dl[i + 1].eq(dl[i])
        # 1. select the beat's lane block. The lane block ``k`` of stage R is registered once
        # per output element from stage R - 1 (the same value in the same cycle), each copy kept
        # apart (KEEP) and placed by its element's select: one ``dl[R].k`` flip-flop driving the
        # P/A:1 select of all A words was the ECP5's critical path at 100 MHz (13.15 ns of
        # routing, docs/benchmarks/fmax).
        # With O <= P the head's outputs are lanes 0..O-1 of one word: the other lanes are never
        # output (masked to 0 below), so they are left out of the select. Their ``mx_fwd`` words
        # are then unused, and on the xc7 synth_xilinx keeps those lanes' old-sum registers inside
        # the DSP48E1s (C register): +1543 flip-flops on fsdd when all 48 lanes were selectable.
        sel = Signal(data.ArrayLayout(signed(cfg.acc_bits), A))
        for i in range(A):
            k_copy = Signal(self.k_bits, name=f"ro_k{i}", reset_less=True, attrs=KEEP)
            m.d.sync += k_copy.eq(dl[R - 1].k)
            with m.Switch(k_copy):
                for k in range(max(1, P // A)):  # (A > P: O <= P, the config says)
                    if O <= P and A * k + i >= O:
                        continue
                    with m.Case(k):
                        m.d.sync += sel[i].eq(self.mx_data[A * k + i])
        # 2. round and saturate.
        y = Signal(data.ArrayLayout(signed(ab), A))
        for i in range(A):
            m.d.sync += y[i].eq(round_saturate(sel[i], cfg.weight.frac, ab, lc))
        out = dl[R + self.LATENCY]
        for i in range(A):
            m.d.comb += self.out.data[i].eq(Mux(out.beat * A + i < O, y[i], 0))
        m.d.comb += [self.out.last.eq(out.beat == self.nbo - 1), self.w_en.eq(out.valid)]
        return m
