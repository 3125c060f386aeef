"""Performance counters: what the schedule did, for the registers of :mod:`deltahw.regmap`."""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig

__all__ = ["PerfCounters"]


class PerfCounters(wiring.Component):
    """Cycle, stall, timestep, MAC-issue and fired-column counters.

    Inputs each cycle (from :class:`~deltahw.gateware.schedule.Schedule`): ``counting`` (a compute
    cycle of the running timestep: after ``step_done``, the next one's), ``stalling``,
    ``step_done`` (the timestep's last cycle), ``issue`` (the MAC array issues), ``latch_fired``
    with ``block``, ``nx`` and ``nh`` (a MAC phase's first cycle and the fired x / h counts it
    sweeps; the head's, ``FIRED_HEAD_LAST``, is the head phase that ran last: a deferred head
    runs in the next timestep's window, an in-place head after its timestep closed),
    ``latch_x0`` with ``nx`` (layer 0's x phase, which may run in the previous timestep's window:
    its count is held until layer 0's h phase, which always follows it, latches both),
    ``clear`` (``CTRL.clear_counters``).

    Latency: every counter is a register updated at the end of the cycle; ``cycles_last`` is the
    number of counting cycles of the last closed timestep (the closing cycle included) and
    latches, like ``timesteps``, at the end of ``step_done``. A ``clear`` in the same cycle as an
    increment wins (``cycles_last`` and the fired counts are not cleared). Throughput: every
    cycle.
    """

    def __init__(self, config: DeltaGRUConfig):
        self.config = config
        L = config.num_layers
        super().__init__({
            "counting": In(1),
            "stalling": In(1),
            "step_done": In(1),
            "issue": In(1),
            "latch_fired": In(1),
            "latch_x0": In(1),
            "block": In(range(L + 1)),
            "nx": In(16),
            "nh": In(16),
            "clear": In(1),
            "cycles_last": Out(32),
            "cycles_total": Out(32),
            "stall_total": Out(32),
            "timesteps": Out(32),
            "mac_busy": Out(32),
            "fired_x": Out(data.ArrayLayout(16, L)),
            "fired_h": Out(data.ArrayLayout(16, L)),
            "fired_head": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        L = cfg.num_layers
        step_cycles = Signal(32)  # compute cycles of the running timestep
        with m.If(self.step_done):
            m.d.sync += [step_cycles.eq(0), self.cycles_last.eq(step_cycles + 1),
                         self.timesteps.eq(self.timesteps + 1)]
        with m.Elif(self.counting):
            m.d.sync += step_cycles.eq(step_cycles + 1)
        with m.If(self.counting):
            m.d.sync += self.cycles_total.eq(self.cycles_total + 1)
        with m.If(self.stalling):
            m.d.sync += self.stall_total.eq(self.stall_total + 1)
        with m.If(self.issue):
            m.d.sync += self.mac_busy.eq(self.mac_busy + 1)
        x0 = Signal(16)  # layer 0's x count, held until its h phase
        with m.If(self.latch_x0):
            m.d.sync += x0.eq(self.nx)
        with m.If(self.latch_fired):
            for l in range(L):
                with m.If(self.block == l):
                    m.d.sync += [self.fired_x[l].eq(x0 if l == 0 else self.nx),
                                 self.fired_h[l].eq(self.nh)]
            if cfg.has_head:
                with m.If(self.block == L):
                    m.d.sync += self.fired_head.eq(self.nx)
        # After the increments above: a clear in the same cycle wins.
        with m.If(self.clear):
            m.d.sync += [self.cycles_total.eq(0), self.stall_total.eq(0),
                         self.timesteps.eq(0), self.mac_busy.eq(0)]
        return m
