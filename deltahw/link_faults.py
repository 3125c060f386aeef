"""Fault-injection campaign for the host link: the driver against the Python reference device and
against the RTL bridge (Amaranth simulation), under randomized fault schedules.

Every schedule runs one session: ``connect``, ``load_model``, ``run`` of a sequence, on a
:class:`~deltahw.linksim.FaultyLine` that loses, damages, duplicates or truncates frames, inserts
garbage or resets the device, in either direction. The session must end either **bit-exact**
(outputs equal to the golden model / the reference core, and the device executed exactly the
register writes the driver meant, in order) or in a :class:`~deltahw.host.DeviceError`; after an
error, the same ``Device`` on a clean line must recover (reconnect after a reset, else resync by
itself) and then be bit-exact. Anything else (a wrong output, a wrong write, another exception, or
simulated time past the bound) fails the schedule. Schedules:

* ``sweep``: one fault of each kind at every frame position of a clean session, both directions;
* ``random``: several faults at random positions and rates, both directions.

``python -m deltahw.link_faults [--quick] [--out docs/link_faults]`` writes ``report.json`` and
``README.md``; ``make link-faults`` runs the full campaign, the unit tests a quick sample.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import regmap
from .linksim import FAULT_KINDS, FaultyLine, Hang, RefDevice, Schedule

__all__ = ["BridgeSim", "fake_core_outputs", "run_schedule", "campaign", "main"]

#: Simulated clock period of the RTL bridge (1 MHz: the driver's timeouts read in simulated time).
PERIOD = 1e-6


def _models():
    import torch

    from .model import from_modules

    torch.manual_seed(1)
    ref_model = from_modules(torch.nn.GRU(5, 8, 2), torch.nn.Linear(8, 3), theta_x=(6, 4),
                             theta_h=(5, 3), lanes=6, act_width=1, lanes_per_bank=3, enc_width=2)
    rtl_model = from_modules(torch.nn.GRU(5, 6, 1), torch.nn.Linear(6, 3), theta_x=(3,),
                             theta_h=(2,), lanes=6, act_width=2, lanes_per_bank=3, enc_width=4)
    return ref_model, rtl_model


def _inputs(model, T, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.cumsum(torch.randn(T, model.config.input_size, generator=g) * 0.3, 0)
    return model.quantize_input(x)[0].numpy()


# --------------------------------------------------------------------------------------------------
# The RTL bridge in Amaranth's simulator, with a register file and a reference core behind it.

def fake_core_outputs(config, x) -> np.ndarray:
    """The reference core behind the simulated bridge: a recurrence over the timesteps of ``x``
    ((T, I) ints) whose every output depends on every earlier input and its position, so a lost,
    repeated or reordered input element changes the outputs. Returns (T, W) ints in the act
    format's range."""
    ab = config.act.bits
    W = config.output_size if config.output_size else config.hidden_size
    mask, half = (1 << ab) - 1, 1 << (ab - 1)
    h, out = 0, []
    for t, row in enumerate(np.asarray(x, np.int64)):
        h = (h * 5 + sum((k + 3) * int(v) for k, v in enumerate(row)) + t) & 0xFFFFFFFF
        ys = [((h >> (j % 7)) + 31 * j + int(row[j % len(row)])) & mask for j in range(W)]
        out.append([y - (1 << ab) if y >= half else y for y in ys])
    return np.array(out, np.int64).reshape(len(out), W)


class BridgeSim:
    """Transport to the RTL :class:`~deltahw.gateware.bridge.Bridge` in Amaranth's simulator.

    A testbench drives ``rx`` one byte every ``rx_gap + 1`` cycles, takes ``tx`` bytes, serves the
    bus from a register file (ID, VERSION, SHAPE0/1 of ``config``; every write logged in
    ``writes``) and plays the core: it takes ``i`` beats (stalling, like the core, while a
    timestep's outputs wait) and offers each timestep's :func:`fake_core_outputs` on ``o``.
    ``monotonic()`` is the simulated time; ``reset_device()`` pulses the bridge's reset.
    """

    def __init__(self, config, *, rx_depth=256, rx_gap=0, read_wait=200, deadline=None):
        from amaranth.hdl import Module, ResetInserter, Signal
        from amaranth.sim import Simulator

        from .gateware.bridge import Bridge

        self.cfg = config
        self.dut = dut = Bridge(config, rx_depth=rx_depth)
        self.rst = Signal()
        m = Module()
        m.submodules.bridge = ResetInserter(self.rst)(dut)
        self.sim = Simulator(m)
        self.sim.add_clock(PERIOD)
        self.rx_gap, self.read_wait, self.deadline = rx_gap, read_wait, deadline
        self.to_device = collections.deque()
        self.from_device = bytearray()
        self.reset_pending = False
        self.resets = 0
        self.writes = []  # every executed bus write, across resets (restart() clears it)
        r = regmap.by_name(config.num_layers)
        self.init_regs = {
            r["ID"].addr: regmap.ID_MAGIC, r["VERSION"].addr: regmap.VERSION,
            r["SHAPE0"].addr: config.input_size | config.hidden_size << 16,
            r["SHAPE1"].addr: (config.num_layers | config.output_size << 4 | config.lanes << 16
                               | (config.act_width.bit_length() - 1) << 27)}
        self._core_reset()
        self.sim.add_testbench(self._bench, background=True)
        self.cycles = 0
        self.t0 = 0.0

    def restart(self, deadline=None):
        """Reset the bridge and the testbench state: a fresh device for the next session (the
        simulator, whose construction is the slow part, is reused)."""
        self.to_device.clear()
        self.from_device.clear()
        self.reset_device()
        self._advance(8)
        self.from_device.clear()
        self.resets = 0
        self.writes = []
        self.t0 = self.monotonic()
        self.deadline = None if deadline is None else self.t0 + deadline
        return self

    def _core_reset(self):
        self.regs = collections.defaultdict(int, self.init_regs)
        self.step_elems = []  # elements of the current timestep
        self.seq_x = []  # timesteps of the current sequence
        self.out_beats = collections.deque()

    def _core_step(self):
        cfg = self.cfg
        y = fake_core_outputs(cfg, np.array(self.seq_x))[-1].tolist()
        A = cfg.act_width
        y += [0] * (-len(y) % A)
        mask = (1 << cfg.act.bits) - 1
        for b in range(0, len(y), A):
            word = 0
            for e, v in enumerate(y[b:b + A]):
                word |= (v & mask) << (e * cfg.act.bits)
            self.out_beats.append((word, int(b + A >= len(y))))

    async def _bench(self, ctx):
        d, cfg = self.dut, self.cfg
        E, ab, I = cfg.enc_width, cfg.act.bits, cfg.input_size
        gap = 0
        driven = {}
        o_data, o_last = d.o.payload.data, d.o.payload.last  # views: made once, ids stay valid

        def drive(sig, value):
            # Only real changes: every ctx.set costs a settle of the design.
            if driven.get(id(sig)) != value:
                driven[id(sig)] = value
                ctx.set(sig, value)

        drive(d.tx.ready, 1)
        sampled = (d.tx.valid, d.tx.payload, d.bus.w_en, d.bus.addr, d.bus.w_data, d.bus.r_en,
                   d.i.valid, d.i.payload.data, d.i.payload.first, d.o.ready)
        while True:
            _, _, tx_valid, tx_data, w_en, addr, w_data, r_en, i_valid, i_data, i_first, \
                o_ready = await ctx.tick().sample(*sampled)
            self.cycles += 1
            if self.reset_pending:
                self.reset_pending = False
                for sig in (d.rx.valid, d.i.ready, d.o.valid):
                    drive(sig, 0)
                drive(self.rst, 1)
                await ctx.tick().repeat(2)
                drive(self.rst, 0)
                self._core_reset()
                continue
            if tx_valid:
                self.from_device.append(tx_data)
            if w_en:
                self.writes.append((addr, w_data))
                self.regs[addr] = w_data
            if r_en:
                drive(d.bus.r_data, self.regs[addr] & 0xFFFFFFFF)
            if i_valid and driven.get(id(d.i.ready)):
                if i_first:
                    self.seq_x, self.step_elems = [], []
                for slot in range(E):
                    if len(self.step_elems) < I:
                        v = (i_data >> (slot * ab)) & ((1 << ab) - 1)
                        self.step_elems.append(v - (1 << ab) if v >> (ab - 1) else v)
                if len(self.step_elems) == I:
                    self.seq_x.append(self.step_elems)
                    self.step_elems = []
                    self._core_step()
            if driven.get(id(d.o.valid)) and o_ready:
                self.out_beats.popleft()
            if self.out_beats:
                word, last = self.out_beats[0]
                drive(o_data, word)
                drive(o_last, last)
                drive(d.o.valid, 1)
            else:
                drive(d.o.valid, 0)
            # Like the core: no new input while a timestep's outputs wait.
            drive(d.i.ready, int(not self.out_beats))
            if gap:
                gap -= 1
                drive(d.rx.valid, 0)
            elif self.to_device:
                drive(d.rx.payload, self.to_device.popleft())
                drive(d.rx.valid, 1)
                gap = self.rx_gap
            else:
                drive(d.rx.valid, 0)

    def _advance(self, cycles):
        self.sim.run_until(self.now_fs_cycles() * PERIOD + cycles * PERIOD)
        if self.deadline is not None and self.monotonic() > self.deadline:
            raise Hang(f"simulated time passed {self.deadline - self.t0:g} s")

    def now_fs_cycles(self) -> int:
        return round(self.sim._engine.now * 1e-15 / PERIOD)

    # ---- transport interface ----
    def monotonic(self) -> float:
        return self.now_fs_cycles() * PERIOD

    @property
    def in_waiting(self):
        return len(self.from_device)

    def write(self, data):
        self.to_device.extend(data)
        # Let the bytes go out (a UART write returns once the OS has them).
        self._advance(len(data) * (self.rx_gap + 1) // 2 + 1)

    def read(self, n):
        waited = 0
        while not self.from_device and waited < self.read_wait:
            self._advance(32)
            waited += 32
        data = bytes(self.from_device[:n])
        del self.from_device[:n]
        return data

    def reset_device(self):
        self.reset_pending = True
        self.resets += 1
        self._advance(4)


_SIMS = {}


def _bridge_sim(config) -> BridgeSim:
    key = json.dumps(config.to_dict(), sort_keys=True)
    if key not in _SIMS:
        _SIMS[key] = BridgeSim(config, rx_depth=256)
    return _SIMS[key]


# --------------------------------------------------------------------------------------------------
# Sessions and campaign.

class _Target:
    """One device under test: how to make it, the model and input, the expected results."""

    def __init__(self, name, make, model, x, expect, driver_kw):
        self.name, self.make, self.model, self.x, self.expect = name, make, model, x, expect
        self.driver_kw = driver_kw
        self.clean_writes = None
        self.clean_frames = None


def _session(dev, t):
    dev.connect()
    dev.load_model(t.model)
    return dev.run(t.x)


def _exact(dev_inner, t, res) -> str | None:
    """None if the session's result and the device's executed writes are exactly right."""
    if res.outputs.shape != t.expect.shape or not np.array_equal(res.outputs, t.expect):
        bad = int((res.outputs != t.expect).sum()) if res.outputs.shape == t.expect.shape else -1
        return f"wrong outputs ({bad} values differ)"
    if t.clean_writes is not None and dev_inner.writes != t.clean_writes:
        return (f"the device executed {len(dev_inner.writes)} register writes, expected "
                f"{len(t.clean_writes)} (or different ones)")
    return None


def run_schedule(t: _Target, schedule: Schedule, bound: float) -> dict:
    """One schedule against a fresh device. Returns a result record (``ok`` True or False)."""
    from .host import Device, DeviceError

    inner = t.make(deadline=bound)
    line = FaultyLine(inner, schedule)
    dev = Device(line, **t.driver_kw)
    rec = {"schedule": schedule.describe()}
    w0 = time.monotonic()
    try:
        try:
            res = _session(dev, t)
            why = _exact(inner, t, res)
            rec["outcome"] = "exact" if why is None else "WRONG"
            if why:
                rec["why"] = why
        except DeviceError as e:
            rec["outcome"] = "error"
            rec["error"] = type(e).__name__
            rec["message"] = str(e)
            # The same Device on a clean line must come back: after a reset by connect(), after
            # anything else by itself (the next call resynchronises).
            line.enabled = False
            if rec["error"] == "DeviceResetError" or dev._state == "new":
                dev.connect()
            else:
                dev._ensure()  # what the next call does by itself; here to start a clean log
            inner.writes.clear()
            dev.load_model(t.model)
            res = dev.run(t.x)
            why = _exact(inner, t, res)
            rec["recovered"] = why is None
            if why:
                rec["why"] = f"after recovery: {why}"
    except Hang as e:
        rec["outcome"] = "HANG"
        rec["why"] = str(e)
    except Exception as e:  # noqa: BLE001 - anything else is a campaign failure, recorded
        rec["outcome"] = "CRASH"
        rec["why"] = f"{type(e).__name__}: {e}"
    rec["sim_seconds"] = round(inner.monotonic() - getattr(inner, "t0", 0.0), 4)
    rec["wall_seconds"] = round(time.monotonic() - w0, 3)
    rec["injected"] = dict(line.injected)
    rec["ok"] = rec["outcome"] == "exact" or (rec["outcome"] == "error" and
                                             rec.get("recovered", False))
    return rec


def _clean_run(t: _Target):
    """A clean session: the expected write log and the number of frames each way."""
    inner = t.make(deadline=None)
    line = FaultyLine(inner, Schedule())
    from .host import Device

    dev = Device(line, **t.driver_kw)
    res = _session(dev, t)
    why = _exact(inner, t, res)
    if why:
        raise RuntimeError(f"{t.name}: the clean session is not exact: {why}")
    t.clean_writes = list(inner.writes)
    t.clean_frames = dict(line.count)
    t.clean_sim_seconds = inner.monotonic() - getattr(inner, "t0", 0.0)


def _schedules(t: _Target, *, sweep_stride: int, n_random: int, seed: int, rotate=False):
    """Sweep: a single fault at every ``sweep_stride``-th frame of each direction, of every kind
    (``rotate``: of one kind per position, cycling through the kinds); then random schedules."""
    out = []
    for d, direction in enumerate(("down", "up")):
        for i in range(0, t.clean_frames[direction], sweep_stride):
            k = i // sweep_stride  # cycle the kinds over the positions actually swept
            kinds = [FAULT_KINDS[(k + 3 * d) % len(FAULT_KINDS)]] if rotate else FAULT_KINDS
            for kind in kinds:
                out.append(("sweep", Schedule(faults={(direction, i): kind})))
    rng = random.Random(seed)
    for k in range(n_random):
        rate = rng.choice([0.01, 0.02, 0.05, 0.1, 0.2])
        kinds = rng.choice([FAULT_KINDS, tuple(k for k in FAULT_KINDS if k != "reset"),
                            (rng.choice(FAULT_KINDS),)])
        out.append(("random", Schedule(rate=rate, kinds=kinds, seed=seed * 100003 + k,
                                       limit=rng.choice([2, 4, 8, None]))))
    return out


def _targets(which, *, T_ref, T_rtl):
    from .golden import run_golden
    import torch

    ref_model, rtl_model = _models()
    out = []
    if "ref" in which:
        x = _inputs(ref_model, T_ref)
        expect = run_golden(ref_model, torch.from_numpy(x)).outputs[0].numpy()
        out.append(_Target(
            "reference device", lambda deadline: RefDevice(ref_model.config, rx_depth=256,
                                                           deadline=deadline),
            ref_model, x, expect, dict(timeout=0.05, retries=3, quiet_time=0.005)))
    if "rtl" in which:
        x = _inputs(rtl_model, T_rtl, seed=2)
        expect = fake_core_outputs(rtl_model.config, x)
        out.append(_Target(
            "RTL bridge (Amaranth simulation)",
            lambda deadline: _bridge_sim(rtl_model.config).restart(deadline),
            rtl_model, x, expect, dict(timeout=0.0015, retries=3, quiet_time=0.0002)))
    return out


def _print_now(msg):
    print(msg, flush=True)


def campaign(*, which=("ref", "rtl"), quick=False, seed=1, rtl_random=24, rtl_stride=1,
             progress=_print_now) -> dict:
    """Run the campaign; returns the report dict (see :func:`main`)."""
    report = {"quick": quick, "seed": seed, "fault_kinds": list(FAULT_KINDS), "targets": [],
              "rtl_random": rtl_random, "rtl_stride": rtl_stride}
    for t in _targets(which, T_ref=6, T_rtl=6):
        _clean_run(t)
        rtl = t.name.startswith("RTL")
        if quick:
            stride, n_random = (max(1, t.clean_frames["down"] // 2), 2) if rtl else (
                max(1, t.clean_frames["down"] // 6), 12)
        else:
            # The RTL simulation is about 1000 times slower: one kind per position there.
            stride, n_random = (rtl_stride, rtl_random) if rtl else (1, 400)
        scheds = _schedules(t, sweep_stride=stride, n_random=n_random, seed=seed, rotate=rtl)
        # Bound: the driver gives up after (retries + 1) timeouts without progress; a faulted
        # session plus the recovery session take a few clean sessions and a few such give-ups.
        bound = t.clean_sim_seconds * 3 + 12 * t.driver_kw["timeout"] * (
            t.driver_kw["retries"] + 1)
        progress(f"[link-faults] {t.name}: {len(scheds)} schedules (clean session: "
                 f"{t.clean_frames['down']} frames down, {t.clean_frames['up']} up, "
                 f"{t.clean_sim_seconds:.3f} s simulated); bound {bound:.2f} s simulated each")
        recs = []
        w0 = time.monotonic()
        for n, (family, s) in enumerate(scheds):
            rec = run_schedule(t, s, bound)
            rec["family"] = family
            recs.append(rec)
            if not rec["ok"]:
                progress(f"  FAIL {family} {rec['schedule']}: {rec['outcome']} {rec.get('why')}")
            if (n + 1) % (10 if rtl else 50) == 0 or n + 1 == len(scheds):
                el = time.monotonic() - w0
                progress(f"  {n + 1}/{len(scheds)} schedules, {el:.0f} s, "
                         f"{sum(not r['ok'] for r in recs)} failed")
        outcomes = collections.Counter(r["outcome"] for r in recs)
        errors = collections.Counter(r["error"] for r in recs if r["outcome"] == "error")
        injected = collections.Counter()
        for r in recs:
            injected.update(r["injected"])
        report["targets"].append({
            "name": t.name, "config": t.model.config.summary(), "timesteps": len(t.x),
            "clean_frames": t.clean_frames, "clean_register_writes": len(t.clean_writes),
            "driver": t.driver_kw, "bound_sim_seconds": bound,
            "schedules": len(recs), "by_family": dict(collections.Counter(r["family"]
                                                                          for r in recs)),
            "ok": sum(r["ok"] for r in recs), "failed": sum(not r["ok"] for r in recs),
            "outcomes": dict(outcomes), "errors": dict(errors),
            "faults_injected": dict(sorted(injected.items())),
            "max_sim_seconds": max(r["sim_seconds"] for r in recs),
            "max_wall_seconds": max(r["wall_seconds"] for r in recs),
            "wall_seconds": round(time.monotonic() - w0, 1),
            "failures": [r for r in recs if not r["ok"]][:50],
        })
    return report


def _markdown(report) -> str:
    lines = ["# Host link fault-injection campaign", "",
             "Generated by `python -m deltahw.link_faults` (`make link-faults`); do not edit.", "",
             *([f"Commands: {'; '.join(f'`{c}`' for c in report['commands'])}.", ""]
               if report.get("commands") else []),
             "Each schedule runs `connect`, `load_model` and `run` on a line that injects faults "
             "(kinds: " + ", ".join(report["fault_kinds"]) + "; both directions). A schedule "
             "passes when the session is bit-exact (outputs and the device's executed register "
             "writes) or ends in a `DeviceError` after which the same `Device` recovers on a clean "
             "line and is bit-exact. Hangs (simulated time past the bound), wrong outputs, wrong "
             "writes and other exceptions fail.", "",
             "| target | schedules | passed | bit-exact | DeviceError (then recovered) | failed | "
             "longest (simulated s) | bound (simulated s) |",
             "|---|---|---|---|---|---|---|---|"]
    for t in report["targets"]:
        o = t["outcomes"]
        lines.append(f"| {t['name']} | {t['schedules']} | {t['ok']} | {o.get('exact', 0)} | "
                     f"{o.get('error', 0)} | {t['failed']} | {t['max_sim_seconds']:.3f} | "
                     f"{t['bound_sim_seconds']:.2f} |")
    for t in report["targets"]:
        lines += ["", f"## {t['name']}", "",
                  f"- config: {t['config']}, {t['timesteps']} timesteps",
                  f"- clean session: {t['clean_frames']['down']} frames to the device, "
                  f"{t['clean_frames']['up']} back, {t['clean_register_writes']} register writes",
                  f"- driver: {t['driver']}",
                  f"- schedules by family: {t['by_family']}",
                  f"- outcomes: {t['outcomes']}; errors raised: {t['errors']}",
                  f"- faults injected: {t['faults_injected']}",
                  f"- wall time {t['wall_seconds']} s (longest schedule {t['max_wall_seconds']} s)"]
        if t["failures"]:
            lines += ["", "Failures:", ""]
            lines += [f"- {r['family']} `{r['schedule']}`: {r['outcome']} {r.get('why', '')}"
                      for r in t["failures"]]
    return "\n".join(lines) + "\n"


def write_report(report, out: Path):
    out.mkdir(parents=True, exist_ok=True)
    for name, text in (("report.json", json.dumps(report, indent=1)),
                       ("README.md", _markdown(report))):
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is for everyone to read
        os.replace(tmp, out / name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltahw.link_faults",
                                 description="Fault-injection campaign for the host link.")
    ap.add_argument("--quick", action="store_true", help="a small sample (the unit tests' size)")
    ap.add_argument("--target", choices=["ref", "rtl", "both"], default="both")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rtl-random", type=int, default=24,
                    help="random multi-fault schedules against the RTL bridge (default 24)")
    ap.add_argument("--rtl-stride", type=int, default=1,
                    help="sweep every Nth frame position of the RTL bridge (default 1: all)")
    ap.add_argument("--out", default="docs/link_faults",
                    help="folder for report.json and README.md (default: docs/link_faults)")
    args = ap.parse_args(argv)
    which = ("ref", "rtl") if args.target == "both" else (args.target,)
    report = campaign(which=which, quick=args.quick, seed=args.seed,
                      rtl_random=args.rtl_random, rtl_stride=args.rtl_stride)
    write_report(report, Path(args.out))
    failed = sum(t["failed"] for t in report["targets"])
    for t in report["targets"]:
        print(f"{t['name']}: {t['schedules']} schedules, {t['ok']} passed "
              f"({t['outcomes']}), {t['failed']} failed")
    print(f"report: {Path(args.out) / 'README.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
