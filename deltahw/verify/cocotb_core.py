"""cocotb tests of ``deltahw_core``: run one scenario's vectors file against the RTL.

The pytest side (``rtl_tests/test_rtl_core.py``, the bench) writes the vectors
(:mod:`deltahw.verify.vectors`, through :mod:`deltahw.verify.sim`) and passes the
file in ``DELTAHW_VECTORS``; this module only drives and checks. Every output beat of every
timestep is compared bit for bit with the golden model's; in lock-step sequences the
per-timestep registers (``CYCLES_LAST``, ``FIRED_LAST<l>``, ``FIRED_HEAD_LAST``, ``TIMESTEPS``)
are read after the timestep's output and compared with the golden values; streamed sequences are
checked through the totals (``CYCLES_TOTAL``, ``TIMESTEPS``, ``MAC_BUSY``, ``STALL_TOTAL``). All
mismatches are collected (with sequence, timestep and beat) and written to ``DELTAHW_REPORT`` as
JSON before the test fails.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cocotb.triggers import ClockCycles, Event, RisingEdge
from cocotb.utils import get_sim_time
import cocotb

from .. import regmap
from .tb import CLOCK_NS, TB, Expected

#: Compare whole bus words unless a check says otherwise.
WORD_MASK = (1 << regmap.BUS_DATA_BITS) - 1

#: Stop collecting (and abort the run) after this many mismatches: the rest is noise.
MAX_ERRORS = 60


class _Abort(Exception):
    pass


class VectorRunner:
    """Executes the operations of a vectors document on a :class:`TB`."""

    def __init__(self, tb: TB, doc: dict):
        self.tb, self.doc = tb, doc
        self.regs = doc["regs"]
        self.regmap = regmap.by_name(doc["num_layers"])
        self.n_in = -(-doc["input_size"] // doc["in_elems"])
        self.n_out = -(-doc["output_width"] // doc["out_elems"])
        self.pending_cycles = 0  # compute cycles of streamed timesteps not yet synchronised
        self.steps_since_clear = 0
        self.register_reads = 0
        self.stall_checks: list[dict] = []  # what each stall_check op saw (for the report)

    # --- helpers --------------------------------------------------------------------------------
    def error(self, msg: str) -> None:
        self.tb.error(msg)
        if self.tb.error_count >= MAX_ERRORS:
            raise _Abort()

    async def read(self, name: str) -> int:
        self.register_reads += 1
        return await self.tb.bus.read(self.regs[name])

    async def check_reg(self, name: str, expected: int, where: str, mask: int = WORD_MASK):
        got = await self.read(name)
        if got & mask != expected & mask:
            self.error(f"{where}: {name} expected {expected & mask} (0x{expected & mask:x}) got "
                       f"{got & mask} (0x{got & mask:x})")
        return got

    def _timeout(self, compute_cycles: int, beats: int) -> int:
        return 4 * compute_cycles + 120 * beats + 2000

    async def sync(self, what: str) -> None:
        """Wait until every queued input is taken, every expected output checked, core idle."""
        await self.tb.wait_outputs(self._timeout(self.pending_cycles, len(self.tb.expected)
                                                 + self.tb.source.pending), what)
        await self.tb.source.wait_idle()
        self.pending_cycles = 0
        await self.wait_status_idle(what)

    async def wait_status_idle(self, what: str, limit_cycles: int = 4000) -> None:
        start = get_sim_time("ns")
        while True:
            status = await self.read("STATUS")
            fields = self.regmap["STATUS"].unpack(status)
            if not any(fields.values()):
                return
            if get_sim_time("ns") - start > limit_cycles * CLOCK_NS:
                raise AssertionError(
                    f"{what}: the core did not go idle within {limit_cycles} cycles "
                    f"(STATUS=0x{status:x}: "
                    + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")")

    def queue_timestep(self, seq: dict, t: int) -> None:
        items = []
        W, A = self.doc["output_width"], self.doc["out_elems"]
        for b, word in enumerate(seq["outputs"][t]):
            vals = seq["values"][t][b * A: min(W, (b + 1) * A)]
            items.append(Expected(word, seq["label"], t, b, vals))
        self.tb.expect(items)
        self.tb.source.send(seq["inputs"][t])
        self.pending_cycles += seq["cycles"][t]

    # --- operations -----------------------------------------------------------------------------
    async def op_sequence(self, op: dict) -> None:
        T = len(op["inputs"])
        if not op["lockstep"]:
            for t in range(T):
                self.queue_timestep(op, t)
            self.steps_since_clear += T
            return
        await self.sync(f"before sequence {op['label']}")
        for t in range(T):
            await self.lockstep_timestep(op, t)

    async def lockstep_timestep(self, op: dict, t: int) -> dict:
        """Run timestep ``t`` of a sequence alone and check the counters it leaves.

        Returns what was read: ``cycles`` (CYCLES_LAST), ``fired`` ([x, h] per layer) and
        ``fired_head`` (0 without a head).
        """
        where = f"sequence {op['label']} timestep {t}"
        self.queue_timestep(op, t)
        await self.tb.wait_outputs(self._timeout(op["cycles"][t], self.n_in + self.n_out),
                                   f"the output of {where}")
        await self.tb.source.wait_idle()
        self.pending_cycles = 0
        await self.wait_status_idle(f"after {where}")
        self.steps_since_clear += 1
        got = {"cycles": await self.check_reg("CYCLES_LAST", op["cycles"][t], where),
               "fired": [], "fired_head": 0}
        for l in range(self.doc["num_layers"]):
            fx, fh = op["fired_x"][t][l], op["fired_h"][t][l]
            word = await self.read(f"FIRED_LAST{l}")
            f = self.regmap[f"FIRED_LAST{l}"].unpack(word)
            got["fired"].append([f["x"], f["h"]])
            if (f["x"], f["h"]) != (fx, fh):
                self.error(f"{where}: FIRED_LAST{l} expected x={fx} h={fh} got "
                           f"x={f['x']} h={f['h']}")
        if self.doc["has_head"]:
            got["fired_head"] = await self.check_reg("FIRED_HEAD_LAST", op["fired_head"][t],
                                                     where)
        await self.check_reg("TIMESTEPS", self.steps_since_clear, where)
        return got

    async def op_totals(self, op: dict) -> None:
        await self.sync("before reading the totals")
        where = "totals"
        await self.check_reg("TIMESTEPS", op["timesteps"], where)
        await self.check_reg("CYCLES_TOTAL", op["cycles"], where)
        busy = await self.check_reg("MAC_BUSY", op["mac_busy"], where)
        stall = await self.read("STALL_TOTAL")
        if op["stall_zero"] and stall != op["stall"]:
            self.error(f"{where}: STALL_TOTAL expected {op['stall']} (output always ready: only "
                       f"what lock-step sequences lose and the last heads run in place) got "
                       f"{stall}")
        self.tb.log.info("totals: %d timesteps, %d compute cycles, MAC busy %d, stall %d",
                         op["timesteps"], op["cycles"], busy, stall)

    async def op_stall_check(self, op: dict) -> None:
        """Stream ``op["sequences"]`` while reading STATUS in every cycle; check STALL_TOTAL.

        Every cycle in which ``STATUS.busy`` is set is a compute cycle (``CYCLES_TOTAL``), a
        sequence-reset cycle (``op["reset_cycles"]``, from the cycle model) or a stall cycle, so
        the stall cycles the testbench saw are its busy cycles minus the golden compute and reset
        cycles; ``STALL_TOTAL`` must have grown by exactly that many.
        """
        await self.sync("before the stall check")
        stall0 = await self.read("STALL_TOTAL")
        cycles0 = await self.read("CYCLES_TOTAL")
        samples: list[int] = []
        stop = Event()
        mon = cocotb.start_soon(self.tb.bus.monitor(self.regs["STATUS"], stop, samples))
        await RisingEdge(self.tb.dut.clk)
        # No output is read for hold_cycles (the core must stall), then with random backpressure.
        if op["hold_cycles"]:
            self.tb.set_backpressure(1.0)
        else:  # the output read from the start (the stream scenario's input-bound check)
            self.tb.set_backpressure(op.get("backpressure", self.doc["backpressure"]))
        for seq in op["sequences"]:
            for t in range(len(seq["inputs"])):
                self.queue_timestep(seq, t)
            self.steps_since_clear += len(seq["inputs"])
        if op["hold_cycles"]:
            await ClockCycles(self.tb.dut.clk, op["hold_cycles"])
        self.tb.set_backpressure(op.get("backpressure", self.doc["backpressure"]))
        await self.tb.wait_outputs(self._timeout(self.pending_cycles, len(self.tb.expected)
                                                 + self.tb.source.pending), "the stall check")
        await self.tb.source.wait_idle()
        self.pending_cycles = 0
        status = self.regmap["STATUS"]
        for _ in range(4000):
            await RisingEdge(self.tb.dut.clk)
            if samples and not any(status.unpack(samples[-1]).values()):
                break
        else:
            raise AssertionError("stall check: the core did not go idle within 4000 cycles")
        stop.set()
        await mon
        self.tb.set_backpressure(self.doc["backpressure"])
        busy = sum(status.unpack(w)["busy"] for w in samples)
        compute = sum(sum(s["cycles"]) for s in op["sequences"])
        expected = busy - compute - op["reset_cycles"]
        stall = await self.read("STALL_TOTAL") - stall0
        cycles = await self.read("CYCLES_TOTAL") - cycles0
        if cycles != compute:
            self.error(f"stall check: CYCLES_TOTAL grew by {cycles}, expected {compute}")
        if stall != expected:
            self.error(f"stall check: STALL_TOTAL grew by {stall}, expected {expected} (the "
                       f"testbench saw {busy} busy cycles = {compute} compute + "
                       f"{op['reset_cycles']} reset + {expected} stall)")
        if op.get("must_stall") and expected <= 0:
            self.error("stall check: the testbench saw no stall cycle although no output was "
                       f"read for {op['hold_cycles']} cycles")
        self.stall_checks.append({"busy": busy, "compute": compute,
                                  "reset": op["reset_cycles"], "stall_expected": expected,
                                  "stall_total": stall})
        self.tb.log.info("stall check: %d busy cycles, %d compute, %d reset, %d stall", busy,
                         compute, op["reset_cycles"], stall)

    async def op_write(self, op: dict) -> None:
        await self.sync(f"before writing {op['reg']}")
        await self.tb.bus.write(self.regs[op["reg"]], op["value"])
        if op.get("readback"):
            await self.check_reg(op["reg"], op["value"], f"read-back after writing {op['reg']}")

    async def op_expect(self, op: dict) -> None:
        await self.sync(f"before reading {op['reg']}")
        await self.check_reg(op["reg"], op["value"], "register check", op.get("mask", WORD_MASK))

    async def op_clear_counters(self, op: dict) -> None:
        await self.sync("before clearing the counters")
        await self.tb.bus.write(self.regs["CTRL"], self.regmap["CTRL"].pack(clear_counters=1))
        self.steps_since_clear = 0

    async def op_wait_idle(self, op: dict) -> None:
        await self.sync("waiting for idle")

    async def op_param_write(self, op: dict) -> None:
        await self.sync("before parameter writes")
        sel = self.regmap["PARAM_SEL"].pack(kind=op["kind"], lane=op["lane"])
        await self.tb.bus.write_burst([(self.regs["PARAM_SEL"], sel),
                                       (self.regs["PARAM_ADDR"], 0)])
        await self.tb.bus.write_burst([(self.regs["PARAM_DATA"], v) for v in op["data"]])
        await self.check_reg("PARAM_ADDR", len(op["data"]),
                             f"PARAM_ADDR after {len(op['data'])} writes to lane {op['lane']} "
                             f"kind {op['kind']}")

    async def run(self) -> None:
        for op in self.doc["ops"]:
            await getattr(self, f"op_{op['op']}")(op)
        await self.sync("at the end")
        await self.tb.check_nothing_left()
        await self.check_reg("STATUS", 0, "at the end",
                             sum(f.mask for f in self.regmap["STATUS"].fields))


async def run_document(dut, runner_cls, extra=None) -> None:
    """Run the vectors document in ``DELTAHW_VECTORS`` with ``runner_cls(tb, doc)``, write the
    report (``DELTAHW_REPORT``, with ``extra(runner)`` merged in) and fail on any error."""
    doc = json.loads(Path(os.environ["DELTAHW_VECTORS"]).read_text())
    tb = TB(dut, in_elems=doc["in_elems"], out_elems=doc["out_elems"],
            elem_bits=doc["elem_bits"], seed=doc["seed"], idle=doc["idle"],
            backpressure=doc["backpressure"])
    tb.log.info("%s / %s: %s", doc["case"], doc["scenario"], doc["summary"])
    wall = time.time()
    await tb.reset()
    runner = runner_cls(tb, doc)
    fatal = None
    try:
        await runner.wait_status_idle("after reset")
        await runner.run()
    except _Abort:
        fatal = f"stopped after {MAX_ERRORS} errors"
    except AssertionError as e:
        fatal = str(e)
    await RisingEdge(dut.clk)
    errors = list(tb.errors)
    if fatal:
        errors.append(f"[{get_sim_time('ns'):.0f} ns] {fatal}")
    if tb.error_count > len(tb.errors):
        errors.append(f"... and {tb.error_count - len(tb.errors)} more error(s)")
    report = {
        "case": doc["case"],
        "scenario": doc["scenario"],
        "errors": errors,
        "beats_checked": tb.checked,
        "input_beats": tb.source.sent,
        "register_reads": runner.register_reads,
        "sim_cycles": int(get_sim_time("ns") // CLOCK_NS),
        "wall_seconds": round(time.time() - wall, 2),
        "stall_checks": runner.stall_checks,
    }
    if extra is not None:
        report.update(extra(runner))
    out = os.environ.get("DELTAHW_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    tb.log.info("checked %d output beats, %d register reads in %d cycles (%.1f s)",
                tb.checked, runner.register_reads, report["sim_cycles"], report["wall_seconds"])
    if errors:
        raise AssertionError(f"{len(errors)} error(s); first: {errors[0]}")


@cocotb.test()
async def run_vectors(dut):
    """Run the scenario in ``DELTAHW_VECTORS`` and check everything against the golden model."""
    await run_document(dut, VectorRunner)
