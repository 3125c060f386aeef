"""Board-neutral top level: the accelerator core behind a UART host bridge, plus status LEDs.

:class:`UARTTop` has plain pins (``uart_rx``, ``uart_tx``, ``leds``) and runs in the ``sync``
domain; the board files (:mod:`deltahw.boards.arty_a7`, :mod:`deltahw.boards.ulx3s`) wrap it with
the board's clocking and pin requests, and the end-to-end simulation test drives its pins directly.
"""

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, DomainRenamer, Module, ResetInserter,
                          ResetSignal, Signal)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig
from ..gateware import KEEP
from ..gateware.bridge import Bridge
from ..gateware.uart import UARTRx, UARTTx

__all__ = ["UARTTop", "LED_NAMES", "core_class"]

#: Meaning of each status LED, in order (also printed in the build report).
LED_NAMES = ("heartbeat (about 1 Hz: clock running, out of reset)",
             "host frame received (flashes per good frame)",
             "host frame error (damaged frame seen, held 0.5 s)",
             "core busy (input waiting for the core)")


def core_class():
    """The accelerator core class (imported late so the boards package loads without it)."""
    from ..gateware.core import DeltaGRUCore

    return DeltaGRUCore


class _Stretch:
    """Pulse stretcher: ``out`` stays high ``cycles`` cycles after the last ``trigger``.

    The trigger passes ``DELAY`` registers first: the LED counters sit wherever the placer puts
    them, far from the logic that raises their triggers (the ECP5's critical path at 85 MHz ran
    from the UART receiver's frame check to the rx LED counter, 8.4 ns of routing); a
    lamp lit two cycles later is the same lamp.
    """

    DELAY = 2

    def __init__(self, m, trigger, cycles, name):
        self.out = Signal(name=f"{name}_led")
        count = Signal(range(cycles + 1), name=f"{name}_count")
        for k in range(self.DELAY):
            staged = Signal(name=f"{name}_trigger{k}")
            m.d.sync += staged.eq(trigger)
            trigger = staged
        with m.If(trigger):
            m.d.sync += count.eq(cycles)
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        m.d.comb += self.out.eq(count != 0)


class UARTTop(wiring.Component):
    """Core + bridge + 8N1 UART at ``clock_hz / divisor`` baud.

    ``weight_init``/``bias_init`` initialise the parameter memories in simulation; with
    ``init_files=True`` the core loads its ``.mem`` files by ``$readmemh`` (the board builds).
    ``rx_depth`` is the bridge's receive buffer (see :class:`deltahw.gateware.bridge.Bridge`).

    Reset: the ``sync`` domain's reset reaches each block (core, bridge, UART receiver and
    transmitter, LEDs) through a flip-flop of its own, ``RESET_LATENCY`` cycle later, all blocks
    at once. The blocks run in a reset-less copy of ``sync`` (same clock) with that flip-flop as
    their reset (kept apart from the others in synthesis: :data:`deltahw.gateware.KEEP`), so the
    domain's reset drives five flip-flops instead of every register of the design: on the ECP5
    that one net, from the reset synchroniser to ~16k flip-flops, was the critical path at a
    60 MHz target (0.95 ns logic + 15.65 ns routing; docs/benchmarks/fmax).
    """

    #: Cycles from the ``sync`` domain's reset to the blocks' registers (their reset flip-flop).
    RESET_LATENCY = 1

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    leds: Out(4)

    def __init__(self, config: DeltaGRUConfig, *, divisor: int, clock_hz: float,
                 init_files=True, weight_init=None, bias_init=None, rx_depth=1024):
        self.config = config
        self.divisor = divisor
        self.clock_hz = clock_hz
        self.rx_depth = rx_depth
        self._core_args = dict(weight_init=weight_init, bias_init=bias_init,
                               init_files=init_files)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        # The reset tree (see the class docstring): the blocks' domain, reset-less, on the clock of
        # ``sync``; every block gets the reset of ``sync`` through its own flip-flop (init 1: held
        # in reset from configuration until the first clock edge after the reset is released).
        m.domains.blocks = blocks = ClockDomain("blocks", reset_less=True, local=True)
        m.d.comb += blocks.clk.eq(ClockSignal("sync"))
        rst_in = ResetSignal("sync", allow_reset_less=True)

        def block(name, elaboratable):
            rst = Signal(init=1, reset_less=True, name=f"rst_{name}", attrs=KEEP)
            m.d.blocks += rst.eq(rst_in)
            m.submodules[name] = DomainRenamer({"sync": "blocks"})(
                ResetInserter({"sync": rst})(elaboratable))
            return elaboratable

        core = block("core", core_class()(self.config, **self._core_args))
        bridge = block("bridge", Bridge(self.config, rx_depth=self.rx_depth))
        urx = block("uart_rx", UARTRx(self.divisor))
        utx = block("uart_tx", UARTTx(self.divisor))

        m.d.comb += urx.rx.eq(self.uart_rx)
        m.d.comb += self.uart_tx.eq(utx.tx)
        wiring.connect(m, urx.o, bridge.rx)
        wiring.connect(m, bridge.tx, utx.i)
        wiring.connect(m, bridge.i, core.i)
        wiring.connect(m, core.o, bridge.o)
        wiring.connect(m, bridge.bus, core.bus)

        hz = int(self.clock_hz)
        lm = Module()  # the LEDs' logic, a block of its own
        beat = Signal(range(max(2, hz // 2)))
        heart = Signal()
        with lm.If(beat == 0):
            lm.d.sync += [beat.eq(max(1, hz // 2) - 1), heart.eq(~heart)]
        with lm.Else():
            lm.d.sync += beat.eq(beat - 1)
        rx_led = _Stretch(lm, bridge.good_frame, max(1, hz // 50), "rx")
        err_led = _Stretch(lm, bridge.bad_frame, max(1, hz // 2), "err")
        busy_led = _Stretch(lm, bridge.i.valid & ~bridge.i.ready, max(1, hz // 100), "busy")
        lm.d.comb += self.leds.eq(Cat(heart, rx_led.out, err_led.out, busy_led.out))
        block("leds", lm)
        return m
