"""8N1 UART receiver and transmitter with stream interfaces.

Both run in the ``sync`` domain at a fixed bit period of ``divisor`` clock cycles
(``divisor = round(clock / baud)``, see :func:`uart_divisor`). They are deliberately small: the host
link is the only user, and the framing above them (:mod:`deltahw.gateware.bridge`) does the error
detection, so the receiver only reports framing errors and never applies backpressure upstream.
"""


from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor", "MIN_DIVISOR"]

#: Smallest bit period the receiver can sample reliably (it needs a mid-bit sample point and a
#: start-bit check before it).
MIN_DIVISOR = 4


def uart_divisor(clock_hz: float, baud: int, max_error: float = 0.02) -> int:
    """Bit period in cycles for ``baud`` at ``clock_hz``; raises if the rate error is too big."""
    if baud <= 0:
        raise ValueError(f"The baud rate must be positive; got {baud}.")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(
            f"A {clock_hz / 1e6:g} MHz clock cannot run a UART at {baud} baud: the bit period "
            f"would be {clock_hz / baud:.2f} cycles and the receiver needs at least {MIN_DIVISOR}."
        )
    error = abs(clock_hz / divisor - baud) / baud
    if error > max_error:
        raise ValueError(
            f"{baud} baud at {clock_hz / 1e6:g} MHz is off by {100 * error:.1f}% with divisor "
            f"{divisor} (at most {100 * max_error:.0f}% is allowed); pick a baud rate near "
            f"{clock_hz / divisor:.0f} or {clock_hz / (divisor + 1):.0f}."
        )
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"The UART divisor must be an integer >= {MIN_DIVISOR}; got {divisor!r}.")


class UARTRx(wiring.Component):
    """8N1 receiver: ``rx`` pin in, one byte per frame out on ``o``.

    The pin goes through a two-flop synchronizer; a start bit is confirmed half a bit period after
    the falling edge and the data bits are sampled in their middle. A byte appears on ``o`` about
    9.5 bit periods after the start edge; it is held until ``o.ready`` or until the next byte
    arrives, in which case ``overrun`` pulses and the old byte is lost. A stop bit that reads 0
    pulses ``error`` and drops the byte (the receiver then waits for the line to go idle).
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    error: Out(1)
    overrun: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        pin = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, pin, init=1)

        timer = Signal(range(d + 1))
        bit = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        m.d.sync += [self.error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~pin):
                    m.d.sync += timer.eq(d // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(pin):  # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(d - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq((shreg >> 1) | (pin << 7)), bit.eq(bit + 1),
                                 timer.eq(d - 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(pin):
                    m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += self.overrun.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(pin):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter: bytes from ``i`` out on the ``tx`` pin (idle high).

    A byte is accepted when the transmitter is idle and takes 10 bit periods; ``i.ready`` is high
    only in the cycle a byte can be taken, so back-to-back bytes leave no idle gap.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, divisor: int):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        timer = Signal(range(d))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)

        m.d.comb += [self.i.ready.eq(bits == 0), self.busy.eq(bits != 0), self.tx.eq(shreg[0])]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                # Stop bit (1), data LSB first, start bit (0).
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                             bits.eq(10), timer.eq(d - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq((shreg >> 1) | (1 << 9)), bits.eq(bits - 1), timer.eq(d - 1)]
        return m
