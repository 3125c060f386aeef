"""cocotb test of :func:`deltahw.simulate.simulate_rtl`: run a user's sequences, keep what came out.

Runs a vectors document of the RTL regression's format (:mod:`deltahw.verify.vectors`) with the
benchmark's runner (:class:`deltahw.bench.cocotb_bench.BenchRunner`: every output beat is compared
bit for bit with the golden model, every lock-step timestep's ``CYCLES_LAST`` / ``FIRED_LAST`` /
``MAC_BUSY`` with the cycle model, and the counters read are recorded) and also records every output
payload the core emitted, in order, so the caller gets the hardware's own outputs back. Loaded by
the simulator's Python; it imports no torch.
"""

from __future__ import annotations

import cocotb

from deltahw.bench.cocotb_bench import BenchRunner
from deltahw.verify.cocotb_core import run_document

__all__ = ["RecordingRunner", "run_simulate"]


class RecordingRunner(BenchRunner):
    """:class:`BenchRunner` that also keeps every received output payload (``self.beats``)."""

    def __init__(self, tb, doc: dict):
        super().__init__(tb, doc)
        self.beats: list[int] = []
        check = tb.sink.on_beat

        def record(word: int) -> None:
            self.beats.append(int(word))
            check(word)

        tb.sink.on_beat = record


@cocotb.test()
async def run_simulate(dut):
    """Run ``DELTAHW_VECTORS``; report the counters read and the output payloads received."""
    await run_document(dut, RecordingRunner,
                       extra=lambda runner: {"measured": runner.measured, "beats": runner.beats})
