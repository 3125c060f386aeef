"""cocotb test of the benchmark: the regression's checks plus a record of the hardware counters.

Runs a vectors document of the RTL regression (:mod:`deltahw.verify.vectors` format, executed
by :mod:`deltahw.verify.cocotb_core`'s :class:`VectorRunner`, so every output beat is still
compared bit for bit with the golden model and every lock-step timestep's ``CYCLES_LAST`` /
``FIRED_LAST`` with the golden cycle model) and additionally records what the hardware counted:

* lock-step sequences: per timestep ``CYCLES_LAST``, ``FIRED_LAST<l>``, ``FIRED_HEAD_LAST`` and the
  increment of ``MAC_BUSY`` (cycles the MAC array issued work);
* streamed sequences (``timed`` ops): the simulated clock cycles from the first input beat offered
  to the last output beat received, with ``CYCLES_TOTAL`` and ``STALL_TOTAL`` over the same run.

The records go into the report (``DELTAHW_REPORT``) under ``"measured"``. This module is loaded by
the simulator's Python (as ``deltahw.bench.cocotb_bench``, from the installed package); it imports
no torch.
"""

from __future__ import annotations


from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time
import cocotb

from ..verify.cocotb_core import VectorRunner, run_document
from ..verify.tb import CLOCK_NS, TB

__all__ = ["BenchRunner", "run_bench"]


class BenchRunner(VectorRunner):
    """:class:`VectorRunner` that keeps the counter values it reads (``self.measured``)."""

    def __init__(self, tb: TB, doc: dict):
        super().__init__(tb, doc)
        self.measured: dict[str, dict] = {}

    async def op_sequence(self, op: dict) -> None:
        if not op["lockstep"]:
            await super().op_sequence(op)
            return
        await self.sync(f"before sequence {op['label']}")
        rec = {"cycles": [], "fired": [], "fired_head": [], "mac_busy": []}
        busy0 = await self.read("MAC_BUSY")
        for t in range(len(op["inputs"])):
            got = await self.lockstep_timestep(op, t)
            for key in ("cycles", "fired", "fired_head"):
                rec[key].append(got[key])
            busy = await self.read("MAC_BUSY")
            rec["mac_busy"].append(busy - busy0)
            busy0 = busy
            if rec["mac_busy"][-1] != op["mac_busy"][t]:
                self.error(f"sequence {op['label']} timestep {t}: MAC_BUSY grew by "
                           f"{rec['mac_busy'][-1]}, expected {op['mac_busy'][t]}")
        self.measured[op["label"]] = rec

    async def op_timed(self, op: dict) -> None:
        """Stream the sequences named in ``op["sequences"]`` back to back and time the run."""
        await self.sync("before the timed run")
        await self.tb.bus.write(self.regs["CTRL"], self.regmap["CTRL"].pack(clear_counters=1))
        self.steps_since_clear = 0
        await RisingEdge(self.tb.dut.clk)
        start = get_sim_time("ns")
        steps = 0
        for seq in op["sequences"]:
            for t in range(len(seq["inputs"])):
                self.queue_timestep(seq, t)
            steps += len(seq["inputs"])
        self.steps_since_clear += steps
        await self.tb.wait_outputs(self._timeout(self.pending_cycles, len(self.tb.expected)
                                                 + self.tb.source.pending), "the timed run")
        end = get_sim_time("ns")
        await self.sync("after the timed run")
        rec = {"timesteps": steps, "sim_cycles": int(round((end - start) / CLOCK_NS)),
               "timesteps_reg": await self.read("TIMESTEPS"),
               "cycles_total": await self.read("CYCLES_TOTAL"),
               "stall_total": await self.read("STALL_TOTAL"),
               "mac_busy": await self.read("MAC_BUSY"),
               "expected_cycles_total": op["cycles_total"]}
        if rec["cycles_total"] != op["cycles_total"]:
            self.error(f"timed run: CYCLES_TOTAL expected {op['cycles_total']} got "
                       f"{rec['cycles_total']}")
        if rec["timesteps_reg"] != steps:
            self.error(f"timed run: TIMESTEPS expected {steps} got {rec['timesteps_reg']}")
        self.measured[op["label"]] = rec


@cocotb.test()
async def run_bench(dut):
    """Run ``DELTAHW_VECTORS`` with the regression's checks; report the counters read."""
    await run_document(dut, BenchRunner, extra=lambda runner: {"measured": runner.measured})
