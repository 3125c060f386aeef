"""cocotb testbench of the generated ``deltahw_core`` (port contract: ``docs/architecture.md``).

:class:`TB` owns the clock, the reset, a :class:`StreamSource` on the ``i`` stream, a
:class:`StreamSink` on the ``o`` stream, a :class:`BusMaster` on the register bus and the random
idle / backpressure generators. Expected output beats are queued (:meth:`TB.expect`) and an
in-order checker compares every received beat with them bit for bit; mismatches are collected with
their sequence, timestep, beat and element so a failure says exactly what differed.

Timing discipline (the same on Icarus and Verilator): every coroutine drives signals right after a
rising edge and samples in the ``ReadOnly`` phase of the same cycle, so a handshake seen there
completes at the next edge. Nothing is driven from ``ReadOnly``: anything woken by an event first
waits for the next rising edge.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from cocotb.clock import Clock
from cocotb.triggers import Event, Lock, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

import cocotb

__all__ = ["TB", "StreamSource", "StreamSink", "BusMaster", "Expected", "pause_generator",
           "CLOCK_NS", "ProtocolError"]

CLOCK_NS = 10


class ProtocolError(AssertionError):
    """The core broke the stream or bus protocol (valid dropped, payload changed, X values)."""


def pause_generator(rng: random.Random, prob: float):
    """Random pauses: each cycle pauses with ``prob``; now and then a long burst of pauses.

    ``prob`` = 0 never pauses. The bursts (up to 40 cycles) exercise full and empty buffers.
    """
    burst = 0
    while True:
        if prob <= 0:
            yield False
            continue
        if burst:
            burst -= 1
            yield True
            continue
        if rng.random() < prob * 0.02:
            burst = rng.randint(5, 40)
            yield True
            continue
        yield rng.random() < prob


def _int(handle, what: str) -> int:
    val = handle.value
    if not val.is_resolvable:
        raise ProtocolError(f"{what} is not a resolvable value ({val}) at "
                            f"{get_sim_time('ns'):.0f} ns.")
    return int(val)


async def _guarded(coro, on_error) -> None:
    """Run a driver coroutine; a protocol error (X on a handshake) is recorded, not raised.

    An exception escaping a background task would end the cocotb test before the report with
    every error so far is written; the driver stops instead and the waits time out with a
    diagnosis.
    """
    try:
        await coro
    except ProtocolError as e:
        on_error(f"{e} (driver stopped)")


class StreamSource:
    """Drives a valid/ready stream from a queue of payload integers.

    Idle cycles are inserted only *between* beats (``valid`` never drops before its transfer, as
    the Amaranth stream protocol requires).
    """

    def __init__(self, clk, valid, ready, payload, on_error, pause=None, name="i"):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.name = name
        self.pause = pause
        self.on_error = on_error
        self.queue: deque[int] = deque()
        self.sent = 0
        self._wake = Event()
        self._idle = Event()
        self._idle.set()
        self.valid.value = 0
        self.payload.value = 0
        self._task = cocotb.start_soon(_guarded(self._run(), on_error))

    def send(self, beats) -> None:
        """Queue payloads (no signal is driven here, so it may be called from any phase)."""
        self.queue.extend(beats)
        if self.queue:
            self._idle.clear()
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self.queue)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def _run(self) -> None:
        current = None
        accepted = False
        while True:
            await RisingEdge(self.clk)
            if current is not None and accepted:
                current = None
                self.sent += 1
            if current is None:
                if self.queue and not (self.pause is not None and next(self.pause)):
                    current = self.queue.popleft()
                    self.payload.value = current
                    self.valid.value = 1
                else:
                    self.valid.value = 0
            if current is None and not self.queue:
                # valid is low from this edge on; sleep until more beats are queued.
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                accepted = False
                continue
            await ReadOnly()
            accepted = current is not None and _int(self.ready, f"{self.name}__ready") == 1


class StreamSink:
    """Receives a valid/ready stream with random backpressure and checks the protocol.

    Received payloads are handed to ``on_beat`` (the in-order checker). A beat that is offered and
    not taken must stay offered with the same payload until it is taken.
    """

    def __init__(self, clk, valid, ready, payload, on_beat, on_error, pause=None, name="o"):
        self.clk, self.valid, self.ready, self.payload = clk, valid, ready, payload
        self.name = name
        self.pause = pause
        self.on_beat = on_beat
        self.on_error = on_error
        self.received = 0
        self.enabled = True
        self.ready.value = 0
        self._task = cocotb.start_soon(_guarded(self._run(), on_error))

    async def _run(self) -> None:
        offered = None  # payload offered but not taken in the previous cycle
        while True:
            await RisingEdge(self.clk)
            rdy = self.enabled and not (self.pause is not None and next(self.pause))
            self.ready.value = int(rdy)
            await ReadOnly()
            valid = _int(self.valid, f"{self.name}__valid")
            if valid:
                data = _int(self.payload, f"{self.name}__payload")
            if offered is not None:
                if not valid:
                    self.on_error(f"{self.name} stream: valid dropped before the beat "
                                  f"0x{offered:x} was taken")
                elif data != offered:
                    self.on_error(f"{self.name} stream: payload changed from 0x{offered:x} to "
                                  f"0x{data:x} before it was taken")
            offered = None
            if valid:
                if rdy:
                    self.received += 1
                    self.on_beat(data)
                else:
                    offered = data


class BusMaster:
    """The register bus: one write per cycle, reads return data the cycle after ``r_en``."""

    def __init__(self, dut, clk):
        self.clk = clk
        self.addr, self.w_data = dut.bus__addr, dut.bus__w_data
        self.w_en, self.r_en, self.r_data = dut.bus__w_en, dut.bus__r_en, dut.bus__r_data
        self.lock = Lock()
        self.addr.value = 0
        self.w_data.value = 0
        self.w_en.value = 0
        self.r_en.value = 0

    async def write(self, addr: int, value: int) -> None:
        await self.write_burst([(addr, value)])

    async def write_burst(self, writes) -> None:
        """Back-to-back writes, one per cycle."""
        async with self.lock:
            await RisingEdge(self.clk)
            for addr, value in writes:
                self.addr.value = addr
                self.w_data.value = value & 0xFFFFFFFF
                self.w_en.value = 1
                await RisingEdge(self.clk)
            self.w_en.value = 0

    async def read(self, addr: int) -> int:
        async with self.lock:
            await RisingEdge(self.clk)
            self.addr.value = addr
            self.r_en.value = 1
            await RisingEdge(self.clk)
            self.r_en.value = 0
            await ReadOnly()
            return _int(self.r_data, f"bus__r_data (register 0x{addr:02x})")

    async def monitor(self, addr: int, stop: Event, samples: list) -> None:
        """Read register ``addr`` in every cycle until ``stop`` is set (holding the bus).

        Reads are pipelined (``r_en`` stays high), so ``samples[n]`` is the register's value in the
        n-th cycle after the monitor took the bus: a per-cycle trace, e.g. of ``STATUS.busy``.
        """
        async with self.lock:
            await RisingEdge(self.clk)
            self.addr.value = addr
            self.r_en.value = 1
            while True:
                await RisingEdge(self.clk)
                await ReadOnly()
                samples.append(_int(self.r_data, f"bus__r_data (register 0x{addr:02x})"))
                if stop.is_set():
                    break
            await RisingEdge(self.clk)
            self.r_en.value = 0


@dataclass
class Expected:
    """One expected output beat and where it comes from (for failure messages)."""

    word: int
    label: str
    step: int
    beat: int
    values: list[int]


class TB:
    """Clock, reset, stream drivers, bus and the in-order output checker of ``deltahw_core``."""

    def __init__(self, dut, *, in_elems: int, out_elems: int, elem_bits: int, seed: int,
                 idle: float = 0.0, backpressure: float = 0.0):
        self.dut = dut
        self.log = dut._log
        self.in_elems, self.out_elems, self.elem_bits = in_elems, out_elems, elem_bits
        self.rng = random.Random(seed)
        self._check_ports()
        self.clock = Clock(dut.clk, CLOCK_NS, unit="ns")
        self.clock.start()
        dut.rst.value = 1
        self.expected: deque[Expected] = deque()
        #: Every error, in simulation-time order, each prefixed with its time.
        self.errors: list[str] = []
        self.error_count = 0
        self.checked = 0
        self.unexpected: list[int] = []
        self._drained = Event()
        self._drained.set()
        self.source = StreamSource(dut.clk, dut.i__valid, dut.i__ready, dut.i__payload,
                                   self.error, pause_generator(self.rng, idle))
        self.sink = StreamSink(dut.clk, dut.o__valid, dut.o__ready, dut.o__payload,
                               self._on_beat, self.error, pause_generator(self.rng, backpressure))
        self.bus = BusMaster(dut, dut.clk)

    def _check_ports(self) -> None:
        want = {"i__payload": self.in_elems * self.elem_bits + 1,
                "o__payload": self.out_elems * self.elem_bits + 1,
                "bus__addr": 8, "bus__w_data": 32, "bus__r_data": 32}
        for name, width in want.items():
            got = len(getattr(self.dut, name))
            if got != width:
                raise ProtocolError(f"Port {name} is {got} bits wide; the port contract for this "
                                    f"config says {width}.")

    def set_idle(self, prob: float) -> None:
        self.source.pause = pause_generator(self.rng, prob)

    def set_backpressure(self, prob: float) -> None:
        self.sink.pause = pause_generator(self.rng, prob)

    async def reset(self, cycles: int = 4) -> None:
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.clk)

    def error(self, msg: str) -> None:
        """Record an error (the first ``MAX_STORED`` are kept in full, the rest counted)."""
        self.error_count += 1
        if len(self.errors) < self.MAX_STORED:
            msg = f"[{get_sim_time('ns'):.0f} ns] {msg}"
            self.log.error(msg)
            self.errors.append(msg)

    MAX_STORED = 100

    # --- output checking --------------------------------------------------------------------------
    def expect(self, items) -> None:
        self.expected.extend(items)
        if self.expected:
            self._drained.clear()

    def _on_beat(self, word: int) -> None:
        if not self.expected:
            self.unexpected.append(word)
            return
        exp = self.expected.popleft()
        self.checked += 1
        if word != exp.word:
            self.error(self.describe_mismatch(exp, word))
        if not self.expected:
            self._drained.set()

    def describe_mismatch(self, exp: Expected, got: int) -> str:
        n, b = self.out_elems, self.elem_bits
        mask = (1 << b) - 1
        got_vals, got_last = [], (got >> (n * b)) & 1
        for e in range(n):
            v = (got >> (e * b)) & mask
            got_vals.append(v - (1 << b) if v >> (b - 1) else v)
        exp_last = (exp.word >> (n * b)) & 1
        exp_vals = list(exp.values) + [0] * (n - len(exp.values))
        diffs = [f"element {exp.beat * n + e}: expected {exp_vals[e]} got {got_vals[e]}"
                 for e in range(n) if exp_vals[e] != got_vals[e]]
        if exp_last != got_last:
            diffs.append(f"last: expected {exp_last} got {got_last}")
        return (f"sequence {exp.label} timestep {exp.step} beat {exp.beat}: expected payload "
                f"0x{exp.word:x} got 0x{got:x} ({'; '.join(diffs)})")

    async def wait_outputs(self, timeout_cycles: int, what: str) -> None:
        """Wait until every queued expected beat has arrived (or fail with a diagnosis)."""
        if not self.expected:
            return
        try:
            await with_timeout(self._drained.wait(), timeout_cycles * CLOCK_NS, "ns")
        except SimTimeoutError:
            status = await self.diagnose()
            nxt = self.expected[0]
            raise AssertionError(
                f"Timeout after {timeout_cycles} cycles waiting for {what}: still expecting "
                f"{len(self.expected)} beat(s), next is sequence {nxt.label} timestep {nxt.step} "
                f"beat {nxt.beat}; {self.checked} beats checked, "
                f"{self.source.sent} input beats accepted, {self.source.pending} not yet sent; "
                f"{status}") from None

    async def diagnose(self) -> str:
        parts = []
        for sig in ("i__valid", "i__ready", "o__valid", "o__ready"):
            parts.append(f"{sig}={getattr(self.dut, sig).value}")
        try:
            status = await with_timeout(self.bus.read(0x04), 50 * CLOCK_NS, "ns")
            parts.append(f"STATUS=0x{status:x}")
        except (SimTimeoutError, ProtocolError) as e:
            parts.append(f"STATUS unreadable ({e})")
        return ", ".join(parts)

    async def check_nothing_left(self, cycles: int = 64) -> None:
        """With the sink always ready, no further beat may appear; the input must be consumed."""
        self.set_backpressure(0.0)
        await self.cycles(cycles)
        if self.unexpected:
            self.error(
                f"{len(self.unexpected)} output beat(s) beyond the expected ones, first "
                f"0x{self.unexpected[0]:x}")
        if self.source.pending:
            self.error(f"{self.source.pending} input beat(s) were never accepted")
