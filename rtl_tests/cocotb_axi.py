"""cocotb test of ``deltahw_axi`` with cocotbext-axi (AxiStreamSource/Sink, AxiLiteMaster).

The pytest side (``test_axi.py``) generates the RTL with zero parameters, computes every
expectation from the golden and cycle models and passes them in the JSON file ``DELTAHW_VECTORS``.
This module only drives and checks:

1. reset; ``ID``/``VERSION`` and the power-on thresholds over AXI4-Lite;
2. every lane's weights and biases and every threshold written over AXI4-Lite (``PARAM_ADDR`` read
   back per lane); a write with partial ``WSTRB`` must answer SLVERR and change nothing;
3. the first sequence lock-step: one input packet, its output packet compared byte for byte
   (and TUSER), then ``CYCLES_LAST``, ``FIRED_LAST<l>``, ``FIRED_HEAD_LAST``, ``TIMESTEPS`` and the
   interrupt (``irq`` high, ``IRQ_STATUS`` set, cleared by writing 1) checked after every timestep;
4. the other sequences streamed back to back with random pauses on both streams (one timestep sent
   as two packets, so ``TLAST`` is early: ``framing_error`` must be set, the data still right);
   every output packet compared; then ``CYCLES_TOTAL``, ``TIMESTEPS``, ``MAC_BUSY`` (and
   ``STALL_TOTAL``: exactly the overlap the lock-step timesteps lose when neither stream pauses)
   against the cycle model.

All mismatches are collected and written to ``DELTAHW_REPORT`` before the test fails.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path

from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, with_timeout
from cocotb.utils import get_sim_time
from cocotbext.axi import (
    AxiLiteBus,
    AxiLiteMaster,
    AxiResp,
    AxiStreamBus,
    AxiStreamFrame,
    AxiStreamSink,
    AxiStreamSource,
)

import cocotb

CLOCK_NS = 10


def random_pause(rng: random.Random, prob: float):
    """Pause generator: each cycle pauses with ``prob``, with occasional bursts of 5-40 cycles."""
    burst = 0
    while True:
        if prob <= 0:
            yield False
        elif burst:
            burst -= 1
            yield True
        elif rng.random() < 0.02 * prob:
            burst = rng.randint(5, 40)
            yield True
        else:
            yield rng.random() < prob


class TB:
    """Clock, reset, AXI4-Stream source and sink, AXI4-Lite master and their pause generators."""

    def __init__(self, dut, seed: int):
        self.dut = dut
        self.log = dut._log
        self.rng = random.Random(seed)
        # Reset from time 0 and the first rising edge half a period later: the VIP's channel
        # monitors stop on the reset edge before they could sample the not-yet-reset outputs.
        dut.aresetn.value = 0
        cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start(start_high=False))
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk,
                                      dut.aresetn, reset_active_level=False)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk,
                                  dut.aresetn, reset_active_level=False)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.aclk, dut.aresetn,
                                  reset_active_level=False)
        # Per-transfer INFO logs of 10k+ register writes would dominate the run time.
        for obj in (self.source, self.sink, self.axil.write_if, self.axil.read_if):
            obj.log.setLevel(logging.WARNING)
        self.errors: list[str] = []

    def set_pauses(self, src: float, sink: float) -> None:
        self.source.set_pause_generator(random_pause(self.rng, src))
        self.sink.set_pause_generator(random_pause(self.rng, sink))

    async def cycle_reset(self) -> None:
        self.dut.aresetn.value = 0
        for _ in range(4):
            await RisingEdge(self.dut.aclk)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.dut.aclk)

    def error(self, msg: str) -> None:
        msg = f"[{get_sim_time('ns'):.0f} ns] {msg}"
        self.log.error(msg)
        self.errors.append(msg)


class Runner:
    def __init__(self, tb: TB, doc: dict):
        self.tb, self.doc = tb, doc
        self.regs = doc["regs"]
        self.irq = doc["irq_bits"]
        self.steps = 0
        self.reads = 0

    async def read(self, name: str) -> int:
        self.reads += 1
        return await self.tb.axil.read_dword(self.regs[name])

    async def write(self, name: str, value: int) -> None:
        resp = await self.tb.axil.write(self.regs[name], (value & 0xFFFFFFFF).to_bytes(4, "little"))
        if resp.resp != AxiResp.OKAY:
            self.tb.error(f"write {name}: response {resp.resp!r}, expected OKAY")

    async def check(self, name: str, expected: int, where: str) -> int:
        got = await self.read(name)
        if got != expected:
            self.tb.error(f"{where}: {name} expected {expected} (0x{expected:x}) got {got} "
                          f"(0x{got:x})")
        return got

    async def wait_idle(self, where: str, limit: int = 5000) -> None:
        start = get_sim_time("ns")
        while (await self.read("STATUS")) & 0x7:
            if get_sim_time("ns") - start > limit * CLOCK_NS:
                raise AssertionError(f"{where}: the core did not go idle in {limit} cycles")

    # ---- registers and parameters ----------------------------------------------------------------
    async def load(self) -> int:
        doc = self.doc
        await self.check("ID", doc["id_magic"], "after reset")
        await self.check("VERSION", doc["version"], "after reset")
        for name, value in doc["theta_power_on"].items():
            await self.check(name, value, "power-on threshold")
        axil = self.tb.axil
        words = 0
        for p in doc["params"]:
            last = None
            axil.init_write(self.regs["PARAM_SEL"], p["sel"].to_bytes(4, "little"))
            axil.init_write(self.regs["PARAM_ADDR"], bytes(4))
            for v in p["data"]:
                last = axil.init_write(self.regs["PARAM_DATA"], v.to_bytes(4, "little"))
            await last.wait()
            if last.data.resp != AxiResp.OKAY:
                self.tb.error(f"PARAM_DATA write answered {last.data.resp!r}")
            words += len(p["data"])
            await self.check("PARAM_ADDR", len(p["data"]),
                             f"after {len(p['data'])} PARAM_DATA writes to lane {p['lane']} kind "
                             f"{p['kind']}")
        for name, value in doc["theta"].items():
            await self.write(name, value)
            await self.check(name, value, "threshold read-back")
        # Byte strobes are not supported: a half-word write is refused and changes nothing.
        name = next(iter(doc["theta"]))
        resp = await axil.write(self.regs[name], b"\xff\xff")
        if resp.resp != AxiResp.SLVERR:
            self.tb.error(f"partial-strobe write to {name}: response {resp.resp!r}, expected "
                          "SLVERR")
        await self.check(name, doc["theta"][name], "after a refused partial-strobe write")
        return words

    # ---- sequences -------------------------------------------------------------------------------
    @staticmethod
    def flags(seq: dict, t: int) -> int:
        return (t == 0) | ((t == len(seq["in"]) - 1) << 1)

    def compare(self, seq: dict, t: int, frame) -> None:
        want = bytes.fromhex(seq["out"][t])
        got = bytes(frame.tdata)
        where = f"sequence {seq['label']} timestep {t}"
        if got != want:
            lb = self.doc["lane_bytes"]
            diffs = [f"lane {k}: expected {want[k * lb:(k + 1) * lb].hex()} got "
                     f"{got[k * lb:(k + 1) * lb].hex()}"
                     for k in range(max(len(want), len(got)) // lb)
                     if want[k * lb:(k + 1) * lb] != got[k * lb:(k + 1) * lb]]
            self.tb.error(f"{where}: output packet differs ({len(got)} bytes, expected "
                          f"{len(want)}): {'; '.join(diffs[:6])}")
        tuser = frame.tuser if isinstance(frame.tuser, list) else [frame.tuser]
        if any(int(u) != self.flags(seq, t) for u in tuser):
            self.tb.error(f"{where}: output TUSER {frame.tuser} expected {self.flags(seq, t)} "
                          "on every beat")

    def send(self, seq: dict, t: int, split: bool = False) -> None:
        data = bytes.fromhex(seq["in"][t])
        flags = self.flags(seq, t)
        if split:  # TLAST after the first beat: a framing error, same data
            cut = len(data) // self.doc["in_beats"]
            self.tb.source.send_nowait(AxiStreamFrame(data[:cut], tuser=flags))
            self.tb.source.send_nowait(AxiStreamFrame(data[cut:], tuser=0))
        else:
            self.tb.source.send_nowait(AxiStreamFrame(data, tuser=flags))

    async def recv(self, seq: dict, t: int, timeout_cycles: int):
        return await with_timeout(self.tb.sink.recv(), timeout_cycles * CLOCK_NS, "ns")

    async def lockstep(self, seq: dict) -> None:
        ts = self.irq["timestep_done"]
        sd = self.irq["sequence_done"]
        for t in range(len(seq["in"])):
            where = f"sequence {seq['label']} timestep {t}"
            self.send(seq, t)
            frame = await self.recv(seq, t, 40 * seq["cycles"][t] + 4000)
            self.compare(seq, t, frame)
            await self.wait_idle(where)
            self.steps += 1
            await self.check("CYCLES_LAST", seq["cycles"][t], where)
            for l in range(self.doc["num_layers"]):
                fx, fh = seq["fired_x"][t][l], seq["fired_h"][t][l]
                await self.check(f"FIRED_LAST{l}", fx | fh << 16, where)
            if self.doc["has_head"]:
                await self.check("FIRED_HEAD_LAST", seq["fired_head"][t], where)
            await self.check("TIMESTEPS", self.steps, where)
            want = (1 << ts) | ((t == len(seq["in"]) - 1) << sd)
            if int(self.tb.dut.irq.value) != 1:
                self.tb.error(f"{where}: irq is low after the timestep's output")
            await self.check("IRQ_STATUS", want, where)
            await self.write("IRQ_STATUS", want)
            await self.tb.cycles(2)
            if int(self.tb.dut.irq.value) != 0:
                self.tb.error(f"{where}: irq stays high after IRQ_STATUS was cleared")

    async def stream(self, seqs: list[dict]) -> bool:
        """Send every timestep of ``seqs`` back to back; check the outputs in order."""
        split_at = None
        if self.doc["in_beats"] > 1:
            split_at = (0, len(seqs[0]["in"]) // 2)
        for k, seq in enumerate(seqs):
            for t in range(len(seq["in"])):
                self.send(seq, t, split=(k, t) == split_at)
        for seq in seqs:
            for t in range(len(seq["in"])):
                frame = await self.recv(seq, t, 60 * seq["cycles"][t] + 4000)
                self.compare(seq, t, frame)
                self.steps += 1
        return split_at is not None

    async def run(self) -> dict:
        doc = self.doc
        tb = self.tb
        words = await self.load()
        await self.write("IRQ_ENABLE", (1 << max(self.irq.values()) + 1) - 1)
        await self.write("CTRL", doc["clear_counters"])
        seqs = doc["sequences"]
        tb.set_pauses(doc["src_pause"], doc["sink_pause"])
        await self.lockstep(seqs[0])
        split = await self.stream(seqs[1:])
        await tb.source.wait()
        await self.wait_idle("after the streamed sequences")
        total = sum(sum(s["cycles"]) for s in seqs)
        await self.check("TIMESTEPS", self.steps, "totals")
        await self.check("CYCLES_TOTAL", total, "totals")
        await self.check("MAC_BUSY", sum(sum(s["mac_busy"]) for s in seqs), "totals")
        stall = await self.read("STALL_TOTAL")
        # With m_axis always ready the only stall cycles are what the lock-step sequence loses
        # (each input comes after the previous timestep is done, each head runs in place) and,
        # with s_axis never pausing, each streamed sequence's last head, run in place.
        lost = seqs[0]["stall_lockstep"] + sum(s["stall_streamed"] for s in seqs[1:])
        if doc["sink_pause"] == 0 and doc["src_pause"] == 0 and stall != lost:
            self.tb.error(f"STALL_TOTAL {stall} with both streams unpaused (expected {lost})")
        elif doc["sink_pause"] == 0 and stall < lost:
            self.tb.error(f"STALL_TOTAL {stall} with m_axis always ready (expected >= {lost})")
        want = (1 << self.irq["timestep_done"]) | (1 << self.irq["sequence_done"])
        want |= int(split) << self.irq["framing_error"]
        await self.check("IRQ_STATUS", want, "after the streamed sequences")
        await tb.cycles(2)
        if not tb.sink.empty():
            tb.error(f"{tb.sink.count()} unexpected output packet(s)")
        return {"param_words": words, "timesteps_checked": self.steps, "stall_total": stall,
                "cycles_total": total, "framing_error_tested": split}


@cocotb.test()
async def run_axi(dut):
    """Load the network over AXI4-Lite, run the sequences over AXI4-Stream, check everything."""
    doc = json.loads(Path(os.environ["DELTAHW_VECTORS"]).read_text())
    tb = TB(dut, doc["seed"])
    tb.log.info("%s / %s: %s; %s", doc["network"], doc["pause"], doc["summary"], doc["origin"])
    await tb.cycle_reset()
    wall = time.time()
    runner = Runner(tb, doc)
    extra = {}
    try:
        extra = await runner.run()
    except AssertionError as e:
        tb.error(str(e))
    except cocotb.triggers.SimTimeoutError:
        tb.error(f"timeout waiting for an output packet after {runner.steps} timesteps")
    report = {
        "network": doc["network"], "pause": doc["pause"], "errors": tb.errors,
        "sequences": len(doc["sequences"]),
        "timesteps": sum(len(s["in"]) for s in doc["sequences"]),
        "src_pause": doc["src_pause"], "sink_pause": doc["sink_pause"],
        "register_reads": runner.reads,
        "sim_cycles": int(get_sim_time("ns") // CLOCK_NS),
        "wall_seconds": round(time.time() - wall, 2),
        **extra,
    }
    Path(os.environ["DELTAHW_REPORT"]).write_text(json.dumps(report, indent=1))
    if tb.errors:
        raise AssertionError(f"{len(tb.errors)} error(s); first: {tb.errors[0]}")
