"""Board-neutral top level: the accelerator core behind a UART host bridge, plus status LEDs.

:class:`UARTTop` has plain pins (``uart_rx``, ``uart_tx``, ``leds``) and runs in the ``sync``
domain; the board files (:mod:`deltahw.boards.arty_a7`, :mod:`deltahw.boards.ulx3s`) wrap it with
the board's clocking and pin requests, and the end-to-end simulation test drives its pins directly.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig
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
    """Pulse stretcher: ``out`` stays high ``cycles`` cycles after the last ``trigger``."""

    def __init__(self, m, trigger, cycles, name):
        self.out = Signal(name=f"{name}_led")
        count = Signal(range(cycles + 1), name=f"{name}_count")
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
    """

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
        m.submodules.core = core = core_class()(self.config, **self._core_args)
        m.submodules.bridge = bridge = Bridge(self.config, rx_depth=self.rx_depth)
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)

        m.d.comb += urx.rx.eq(self.uart_rx)
        m.d.comb += self.uart_tx.eq(utx.tx)
        wiring.connect(m, urx.o, bridge.rx)
        wiring.connect(m, bridge.tx, utx.i)
        wiring.connect(m, bridge.i, core.i)
        wiring.connect(m, core.o, bridge.o)
        wiring.connect(m, bridge.bus, core.bus)

        hz = int(self.clock_hz)
        beat = Signal(range(max(2, hz // 2)))
        heart = Signal()
        with m.If(beat == 0):
            m.d.sync += [beat.eq(max(1, hz // 2) - 1), heart.eq(~heart)]
        with m.Else():
            m.d.sync += beat.eq(beat - 1)
        rx_led = _Stretch(m, bridge.good_frame, max(1, hz // 50), "rx")
        err_led = _Stretch(m, bridge.bad_frame, max(1, hz // 2), "err")
        busy_led = _Stretch(m, bridge.i.valid & ~bridge.i.ready, max(1, hz // 100), "busy")
        m.d.comb += self.leds.eq(Cat(heart, rx_led.out, err_led.out, busy_led.out))
        return m
