"""The benchmark run: ``python -m deltahw.bench [--quick] [--out docs/benchmarks] ...``.

Steps, for each model (default: the shipped ``fsdd`` and ``watch``; any model folder works):

1. golden model on the whole test split: the task's metric (accuracy at the last timestep,
   per-timestep accuracy, or RMSE / MAE; model thresholds, and Theta = 0), operation
   reduction, and the cycle model's cycles for every test timestep;
2. RTL in simulation on a sample of test sequences (:mod:`deltahw.bench.rtl`): cycles per timestep
   from the hardware counters, delta and dense (Theta = 0), checked against the cycle model;
3. lane sweep (:mod:`deltahw.bench.hw`): resource estimates, and in full mode Artix-7 open synthesis
   and ECP5 place and route, one build at a time;

then the CPU reference (:mod:`deltahw.bench.cpu`) and the published figures
(:mod:`deltahw.bench.published`). Writes ``results.json``, ``README.md`` and PNG plots into
``--out`` (each file atomically).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DeltaGRUConfig
from ..errors import DeltahwError
from .. import cycles as cyc
from ..model import load_model
from ..util import run_cli
from . import cpu, hw, ops
from .published import PUBLISHED
from .whatif import what_if
from .rtl import decompose, ideal_per_step, measure_rtl, useful_macs

__all__ = ["ModelSpec", "resolve_model", "run", "main", "RESULTS_FORMAT"]

REPO = Path(__file__).resolve().parents[2]
RESULTS_FORMAT = 1
DEFAULT_MODELS = ("fsdd", "watch")


class BenchError(DeltahwError, RuntimeError):
    """The benchmark cannot run as asked (missing model, bad option)."""


@dataclass
class ModelSpec:
    """A model to benchmark and where its test data comes from."""

    name: str
    folder: Path
    model_path: Path  # exported folder (preferred) or checkpoint
    dataset: str | None  # deltahw.train dataset name, or None for inputs.npy
    inputs: Path | None = None  # float (B, T, I) or (T, I) .npy when there is no dataset
    labels: Path | None = None  # JSON list of class labels for ``inputs``


def resolve_model(entry: str) -> ModelSpec:
    """``fsdd`` / ``watch`` / ``example`` (folders under ``models/``) or a model folder path."""
    from ..train.data import DATASETS

    folder = Path(entry)
    if not folder.is_dir():
        folder = REPO / "models" / entry
    if not folder.is_dir():
        raise BenchError(f"Model {entry!r}: no folder {entry} or {folder}.")
    name = folder.name
    if (folder / "export" / "manifest.json").is_file():
        model_path = folder / "export"
    elif (folder / "manifest.json").is_file():
        model_path = folder
    elif (folder / "model.pt").is_file():
        model_path = folder / "model.pt"
    else:
        raise BenchError(f"Model {entry!r}: {folder} has neither export/manifest.json nor "
                         "model.pt.")
    dataset = name if name in DATASETS else None
    if dataset is None:
        meta_ds = load_model(model_path).meta.get("dataset")
        if isinstance(meta_ds, dict):
            meta_ds = meta_ds.get("name")
        if meta_ds in DATASETS:
            dataset = meta_ds
    inputs = labels = None
    if dataset is None:
        inputs = folder / "input.npy"
        if not inputs.is_file():
            raise BenchError(f"Model {entry!r}: not a dataset model ({', '.join(DATASETS)}) and "
                             f"no test inputs {inputs}.")
        labels = folder / "labels.json" if (folder / "labels.json").is_file() else None
    return ModelSpec(name, folder, model_path, dataset, inputs, labels)


# --------------------------------------------------------------------------------------------------
class Progress:
    """Progress lines on the terminal the bench started with.

    It writes to its own duplicate of stdout, so the lines still reach the terminal while the
    simulator's output is redirected to a log file (:func:`deltahw.bench.rtl.measure_rtl`), and
    lines from the synthesis thread do not interleave within a line.
    """

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.time()
        self.marks: list[tuple[str, float]] = []
        sys.stdout.flush()
        self.stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
        self.lock = threading.Lock()

    def _print(self, line: str) -> None:
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def step(self, msg: str) -> None:
        self.n += 1
        self.marks.append((msg, time.time()))
        self._print(f"[{self.n}/{self.total} {self.elapsed()}] {msg}")

    def durations(self) -> list[dict]:
        ends = [t for _, t in self.marks[1:]] + [time.time()]
        return [{"step": m, "seconds": round(e - t, 1)} for (m, t), e in zip(self.marks, ends)]

    def log(self, msg: str) -> None:
        self._print(msg)

    def elapsed(self) -> str:
        s = int(time.time() - self.t0)
        return f"{s // 60:d}:{s % 60:02d}"


def _test_data(spec: ModelSpec, model):
    """Integer test inputs (B, T, I), lengths, labels (or None) and a description."""
    if spec.dataset is not None:
        from ..train.data import load_dataset
        from ..train.evaluate import golden_inputs

        ds = load_dataset(spec.dataset)
        xq, lengths, y = golden_inputs(model, ds, "test")
        return xq, lengths, y, {"dataset": spec.dataset, "split": "test", **ds.summary()}
    x = np.load(spec.inputs)
    if x.ndim == 2:
        x = x[None]
    xq, clipped = model.quantize_input(torch.from_numpy(np.asarray(x, dtype=np.float32)))
    lengths = torch.full((xq.shape[0],), xq.shape[1], dtype=torch.int64)
    y = torch.tensor(json.loads(spec.labels.read_text())) if spec.labels else None
    rel = spec.inputs.relative_to(REPO) if spec.inputs.is_relative_to(REPO) else spec.inputs
    return xq, lengths, y, {"dataset": None, "inputs": str(rel), "sequences": int(xq.shape[0]),
                            "input_saturated": clipped}


def _sample(lengths: torch.Tensor, budget_steps: int, max_len: int | None, seed: int,
            max_seqs: int | None = None) -> tuple[list[int], list[int]]:
    """Seeded random test sequences until ``budget_steps`` timesteps; (indices, used lengths)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    idx, used, total = [], [], 0
    for i in order:
        n = int(lengths[i]) if max_len is None else min(int(lengths[i]), max_len)
        idx.append(int(i))
        used.append(n)
        total += n
        if total >= budget_steps or (max_seqs and len(idx) >= max_seqs):
            break
    return idx, used


def _stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    return {"mean": float(a.mean()), "min": float(a.min()), "p50": float(np.percentile(a, 50)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max()), "total": float(a.sum())}


def _rtl_summary(cfg, meas: dict) -> dict:
    """Aggregate the per-timestep counter values of :func:`measure_rtl`."""
    flat = {}
    for run in ("delta", "dense"):
        cyc_, model_, fl, fh, busy, x0, first, early = ([] for _ in range(8))
        for s in meas["sequences"]:
            r = s[run]
            cyc_ += r["cycles"]
            model_ += r["model_cycles"]
            fl += r["fired_layers"]
            fh += r["fired_head"]
            busy += r["mac_busy"]
            x0 += [step[0] for step in r["fired_x"]]
            first += r["first"]
            early += r["h0_early"]
        fl_a = np.asarray(fl, dtype=np.int64).reshape(len(cyc_), cfg.num_layers)
        flat[run] = {"cycles": np.asarray(cyc_), "model_cycles": np.asarray(model_),
                     "fired_layers": fl_a, "fired_head": np.asarray(fh),
                     "fired_x0": np.asarray(x0, dtype=np.int64),
                     "first": np.asarray(first, dtype=bool),
                     "h0_early": np.asarray(early, dtype=np.int64),
                     "mac_busy": np.asarray(busy),
                     "ideal": ideal_per_step(cfg, fl_a, fh),
                     "useful": useful_macs(cfg, fl_a, fh)}
    d, z = flat["delta"], flat["dense"]
    matches = bool(np.array_equal(d["cycles"], d["model_cycles"])
                   and np.array_equal(z["cycles"], z["model_cycles"]))
    P = cfg.lanes
    out = {
        "timesteps": int(len(d["cycles"])),
        "matches_cycle_model": matches,
        "delta_cycles": _stats(d["cycles"]),
        "dense_cycles": _stats(z["cycles"]),
        "ideal_cycles": _stats(d["ideal"]),
        "dense_ideal_cycles": _stats(z["ideal"]),
        "speedup_vs_dense": float(z["cycles"].sum() / d["cycles"].sum()),
        "speedup_per_timestep": _stats(z["cycles"] / d["cycles"]),
        "measured_over_ideal": float(d["cycles"].sum() / d["ideal"].sum()),
        "measured_over_ideal_per_timestep": _stats(d["cycles"] / d["ideal"]),
        "dense_measured_over_ideal": float(z["cycles"].sum() / z["ideal"].sum()),
        "lane_utilisation": float(d["useful"].sum() / (P * d["cycles"].sum())),
        "dense_lane_utilisation": float(z["useful"].sum() / (P * z["cycles"].sum())),
        "mac_busy_fraction": float(d["mac_busy"].sum() / d["cycles"].sum()),
        "dense_mac_busy_fraction": float(z["mac_busy"].sum() / z["cycles"].sum()),
        "op_reduction_sample": float(z["useful"].sum() / d["useful"].sum()),
        "phases_mean_delta": {k: float(v.mean()) for k, v in
                              decompose(cfg, d["fired_layers"], d["fired_head"],
                                        fired_x0=d["fired_x0"], first=d["first"],
                                        h0_early=d["h0_early"]).items()},
        "phases_mean_dense": {k: float(v.mean()) for k, v in
                              decompose(cfg, z["fired_layers"], z["fired_head"],
                                        fired_x0=z["fired_x0"], first=z["first"],
                                        h0_early=z["h0_early"]).items()},
        "per_timestep": {
            "delta_cycles": d["cycles"].tolist(), "model_cycles": d["model_cycles"].tolist(),
            "dense_cycles": z["cycles"].tolist(), "dense_model_cycles": z["model_cycles"].tolist(),
            "ideal_cycles": d["ideal"].tolist(), "fired_layers": d["fired_layers"].tolist(),
            "fired_head": d["fired_head"].tolist(), "mac_busy": d["mac_busy"].tolist(),
            "fired_x0": d["fired_x0"].tolist(), "first": d["first"].tolist(),
            "h0_early": d["h0_early"].tolist(),
            "sequence": [i for i, s in enumerate(meas["sequences"])
                         for _ in range(s["timesteps"])],
        },
    }
    st = meas.get("stream")
    if st:
        out["stream"] = {**st, "sim_cycles_per_timestep": st["sim_cycles"] / st["timesteps"],
                         "compute_cycles_per_timestep": st["cycles_total"] / st["timesteps"],
                         "overhead_cycles": st["sim_cycles"] - st["cycles_total"]
                         - st["stall_total"],
                         "reset_cycles_per_sequence": cyc.reset_cycles(cfg)}
    return out


def _perf_at(cfg, mean_cycles: float, p99_cycles: float, dense_cycles: int, f_mhz: float | None):
    if not f_mhz:
        return None
    dense_macs = cpu.dense_macs_per_timestep(cfg)
    return {"clock_mhz": f_mhz,
            "latency_us_mean": mean_cycles / f_mhz, "latency_us_p99": p99_cycles / f_mhz,
            "dense_latency_us": dense_cycles / f_mhz,
            "effective_gops": 2 * dense_macs * f_mhz / mean_cycles / 1e3,
            "dense_gops": 2 * dense_macs * f_mhz / dense_cycles / 1e3,
            "peak_gops": 2 * cfg.lanes * f_mhz / 1e3,
            # Clock-independent: dense-equivalent operations per MAC unit (lane) per cycle.
            "effective_ops_per_mac_cycle": 2 * dense_macs / mean_cycles / cfg.lanes,
            "timesteps_per_s": f_mhz * 1e6 / mean_cycles}


#: The ECP5 place-and-route record (``docs/benchmarks/fmax``): where a benchmark without synthesis
#: takes the measured post-route Fmax of the same lane and activation-unit counts from.
FMAX_RECORD = REPO / "docs" / "benchmarks" / "fmax" / "results.json"


def recorded_ecp5(cfg, path: Path = FMAX_RECORD, speed_grade: int | None = None) -> dict | None:
    """The best measured post-route ECP5 Fmax recorded in ``path`` for ``cfg``'s P and A (runs
    without a ``lanes`` field are of the record's own model, whose P the record states), as a
    hardware row's ``ecp5`` entry marked ``recorded``; ``None`` when there is none.
    ``speed_grade``: the runs placed on that grade (:func:`recorded_speed_grades`); by default
    the record's own (its board's).

    When the record names the builds of today's gateware (``current_gateware``: the commits
    whose gateware is the current one; a run's ``code`` starts with its commit), only those
    count: a faster placement of an earlier netlist says nothing about this one. Without such a
    run the best of all is taken and marked ``earlier_gateware``. A run placed on another speed
    grade than the record's (a run's ``speed_grade``, when it has one, against the record's) is
    not a build for the record's board and never counts."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    default_lanes = rec.get("lanes") or 48
    current = tuple(rec.get("current_gateware", {}).get("code", []))
    own_speed = rec.get("speed_grade")
    speed = own_speed if speed_grade is None else speed_grade

    def is_current(run):
        return bool(current) and str(run.get("code", "")).split(" ")[0] in current

    best = None
    for run in rec.get("runs", []):
        if not run.get("measured") or not run.get("fmax_mhz"):
            continue
        if run.get("speed_grade", own_speed) != speed:
            continue
        if ((run.get("lanes") or default_lanes) != cfg.lanes
                or run.get("act_width") != cfg.act_width):
            continue
        key = (is_current(run), run["fmax_mhz"])
        if best is None or key > (is_current(best), best["fmax_mhz"]):
            best = run
    if best is None:
        return None
    packed = best.get("packed") or {}
    used = ({"luts": packed["TRELLIS_COMB"][0], "bram": packed["DP16KD"][0],
             "dsps": packed["MULT18X18D"][0]}
            if all(k in packed for k in ("TRELLIS_COMB", "DP16KD", "MULT18X18D")) else None)
    out = {"fmax_mhz": float(best["fmax_mhz"]), "target_mhz": best.get("target_mhz"),
           "recorded": f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
                       f"run '{best.get('name', '?')}' (code {best.get('code', '?')}, "
                       f"{rec.get('model', 'model')})"}
    if used:
        out["used"] = used
    if speed is not None:
        out["speed_grade"] = speed
    if best.get("board"):  # a run of ``python -m deltahw.build --board B``
        from ..boards import get_board

        board = get_board(best["board"])
        out["board"] = {"name": board.name, "title": board.title, "part": board.part().name}
    if current and not is_current(best):
        out["earlier_gateware"] = True
        out["recorded"] += "; an earlier gateware (no build of the current one recorded)"
    return out


def recorded_speed_grades(path: Path = FMAX_RECORD) -> list[int]:
    """The speed grades of the measured runs in the ECP5 record ``path`` other than the record's
    own (for example -8 builds for the ECP5-5G evaluation board in a record of ULX3S (-6)
    builds), in increasing order; ``[]`` without a record."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    own = rec.get("speed_grade")
    return sorted({run["speed_grade"] for run in rec.get("runs", [])
                   if run.get("measured") and run.get("fmax_mhz")
                   and run.get("speed_grade", own) != own})


def _other_grades(cfg, cs: dict, path: Path = FMAX_RECORD) -> list[dict]:
    """A hardware row's ``ecp5_other_grades``: for each other speed grade in the record
    (:func:`recorded_speed_grades`) with a run of ``cfg``'s P and A, that run's
    :func:`recorded_ecp5` entry with the performance at its clock (``perf``)."""
    out = []
    for grade in recorded_speed_grades(path):
        e = recorded_ecp5(cfg, path, grade)
        if e is not None:
            e["perf"] = _perf_at(cfg, cs["mean_cycles"], cs["p99_cycles"], cs["dense_cycles"],
                                 e["fmax_mhz"])
            out.append(e)
    return out


def refresh_recorded_ecp5(results: dict, path: Path = FMAX_RECORD) -> None:
    """Re-read the ECP5 record for the rows of a run without synthesis (``--render`` after a new
    place-and-route build was recorded): their ``ecp5`` entry, the other speed grades'
    (``ecp5_other_grades``) and the performance at their clocks."""
    for m in results.get("models", {}).values():
        if m.get("hardware_mode") != "estimate":
            continue
        for row in m.get("hardware", []):
            if row.get("ecp5") and not row["ecp5"].get("recorded"):
                continue
            cfg = hw.with_lanes(DeltaGRUConfig.from_dict(m["config"]), row["lanes"])
            row["ecp5"] = recorded_ecp5(cfg, path)
            cs = row["cycle_model"]
            row["ecp5_other_grades"] = _other_grades(cfg, cs, path)
            row["perf_ecp5_fmax"] = _perf_at(cfg, cs["mean_cycles"], cs["p99_cycles"],
                                             cs["dense_cycles"],
                                             (row["ecp5"] or {}).get("fmax_mhz"))


def _hardware_rows(spec: ModelSpec, model, test: dict, lanes_list, reports: dict) -> list[dict]:
    """One row per lane count: cycle model, estimates, and the synthesis results in ``reports``
    (keyed ``(model name, board, P)``; absent in quick mode)."""
    from ..boards import PARTS
    from ..resources import config_for_part

    rows = []
    for P in lanes_list:
        cfg = hw.with_lanes(model.config, P)
        cs = ops.cycle_stats(cfg, test["fired_layers"], test["fired_head"],
                             fired_x0=test["fired_x0"], first=test["first"],
                             h0_early=test["h0_early"])  # (the same A: the same h0_early)
        cs.pop("histogram")
        row = {"lanes": P, "lanes_per_bank": cfg.lanes_per_bank, "shipped": P == model.config.lanes,
               "cycle_model": cs, "estimate": hw.estimates(cfg), "artix": None, "ecp5": None}
        rep = reports.get((spec.name, "arty_a7", P))
        if rep is not None and "error" in rep:
            row["artix"] = {"error": rep["error"]}
        elif rep is not None:
            u = rep["utilisation"]
            row["artix"] = {
                "flow": rep["flow"], "seconds": rep.get("synthesis_seconds"),
                "wall_seconds": rep["bench"]["seconds"], "reused": rep["bench"]["reused"],
                "used": {"luts": u["luts"]["used"], "lutram_luts": u["luts"].get("lutram"),
                         "ffs": u["ffs"]["used"], "bram36": u["bram"]["used"],
                         "dsps": u["dsps"]["used"], "carry4": u.get("carry4")},
            }
            for label, pname in hw.ARTY_PARTS.items():
                part = PARTS[pname]
                used = row["artix"]["used"]
                pct = {"luts": 100 * used["luts"] / part.luts,
                       "ffs": 100 * used["ffs"] / part.ffs,
                       "bram36": 100 * used["bram36"] / part.brams,
                       "dsps": 100 * used["dsps"] / part.dsps}
                row["artix"][label] = {"part": pname, "percent": pct,
                                       "fits": all(v <= 100 for v in pct.values())}
        rep = reports.get((spec.name, "ulx3s", P))
        if rep is not None and "error" in rep:
            row["ecp5"] = {"error": rep["error"]}
        elif rep is not None:
            u = rep["utilisation"]
            row["ecp5"] = {
                "part": rep["part"], "flow": rep["flow"], "seconds": rep.get("synthesis_seconds"),
                "wall_seconds": rep["bench"]["seconds"], "reused": rep["bench"]["reused"],
                "target_mhz": rep["timing"]["target_mhz"],
                "fmax_mhz": rep["timing"]["fmax_mhz"], "met": rep["timing"]["met"],
                "used": {k: u[k]["used"] for k in ("luts", "ffs", "bram", "dsps")},
                "totals": {k: u[k]["total"] for k in ("luts", "ffs", "bram", "dsps")},
            }
        if row["ecp5"] is None and not reports:
            # No synthesis in this run: the measured post-route figure of the same P and A.
            row["ecp5"] = recorded_ecp5(cfg)
        # The Arty's build may turn capture off (resources.config_for_part): its cycles then
        # are the cycle model's for that configuration (the RTL ran the shipped one).
        arty_cfg = config_for_part(cfg, PARTS[hw.ARTY_PARTS["A7-35T"]])
        cs_arty = cs if arty_cfg == cfg else ops.cycle_stats(
            arty_cfg, test["fired_layers"], test["fired_head"], fired_x0=test["fired_x0"],
            first=test["first"], h0_early=test["h0_early"])
        row["artix_capture"] = arty_cfg.capture
        row["perf_artix_assumed"] = _perf_at(arty_cfg, cs_arty["mean_cycles"],
                                             cs_arty["p99_cycles"], cs_arty["dense_cycles"],
                                             hw.ARTIX_ASSUMED_MHZ)
        fmax = (row["ecp5"] or {}).get("fmax_mhz")
        row["perf_ecp5_fmax"] = _perf_at(cfg, cs["mean_cycles"], cs["p99_cycles"],
                                         cs["dense_cycles"], fmax)
        # Measured builds of the same P and A on other ECP5 speed grades (the record's).
        row["ecp5_other_grades"] = _other_grades(cfg, cs)
        rows.append(row)
    return rows


class SynthesisQueue(threading.Thread):
    """Runs the board builds one after the other in a background thread.

    The RTL simulations run meanwhile in the main thread (a build and a simulation each keep one
    core busy); two builds never run at the same time (and ``deltahw.build`` holds a machine-wide
    lock while it synthesizes).
    """

    def __init__(self, jobs: list[tuple], rebuild: bool, prog: Progress):
        super().__init__(name="deltahw-bench-synthesis", daemon=True)
        self.jobs, self.rebuild, self.prog = jobs, rebuild, prog
        self.reports: dict = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for k, (name, board, P, path, out_dir, variant) in enumerate(self.jobs):
                self.prog.log(f"  [synthesis {k + 1}/{len(self.jobs)} {self.prog.elapsed()}] "
                              f"{name}: {board} P={P}")
                self.reports[(name, board, P)] = hw.synthesize(
                    board, path, P, out_dir, self.rebuild, variant=variant,
                    log=lambda msg, n=name: self.prog.log(f"  [synthesis] {n}:{msg}"))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            self.error = e


def _training_metrics(spec: ModelSpec) -> dict | None:
    path = spec.folder / "metrics.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text()).get("summary", {})
    keep = ("float_dense_test_accuracy", "delta_trained_test_accuracy",
            "delta_trained_test_op_reduction", "converted_test_accuracy_same_thresholds",
            "converted_test_op_reduction_same_thresholds")
    return {k: s[k] for k in keep if k in s}


@dataclass
class _Work:
    """What the phases of one model share."""

    spec: ModelSpec
    model: object
    xq: torch.Tensor
    lengths: torch.Tensor
    out: dict
    st: dict
    lanes: list
    ecp5: set


def golden_phase(spec: ModelSpec, args, prog: Progress) -> _Work:
    from ..train.data import task_of
    from ..train.evaluate import METRIC_DEFINITIONS, metrics_text, model_tally

    model = load_model(spec.model_path)
    cfg = model.config
    rel = (spec.model_path.relative_to(REPO) if spec.model_path.is_relative_to(REPO)
           else spec.model_path)
    out = {"name": spec.name, "model_path": str(rel), "config": cfg.to_dict(),
           "summary": cfg.summary()}
    prog.step(f"{spec.name}: golden model on the test data ({cfg.summary()})")
    t0 = time.time()
    xq, lengths, y, data_info = _test_data(spec, model)
    out["data"] = data_info
    task = data_info.get("task") or task_of(model.meta)
    tally, tally0 = (model_tally(model, task), model_tally(model, task)) if (
        y is not None and cfg.has_head) else (None, None)
    st = ops.split_stats(model, xq, lengths, targets=y, tally=tally)
    if tally0 is not None:  # the metric at Theta = 0 (the same weights run densely)
        ops.split_stats(model.with_config(ops.dense_config(cfg)), xq, lengths, targets=y,
                        tally=tally0)
    n = len(st["cycles"])
    met = tally.result() if tally else None
    met0 = tally0.result() if tally0 else None
    golden = {
        "sequences": int(xq.shape[0]), "timesteps": n,
        "task": task, "metrics": met, "metrics_theta0": met0,
        "accuracy": met.get("accuracy") if met else None,
        "accuracy_theta0": met0.get("accuracy") if met0 else None,
        "accuracy_definition": METRIC_DEFINITIONS[task],
        "op_reduction": float(st["dense_macs"].sum() / st["macs"].sum()),
        "macs_per_timestep": float(st["macs"].mean()),
        "dense_macs_per_timestep": float(st["dense_macs"].mean()),
        "fired_fraction_per_layer": [
            float(st["fired_layers"][:, l].mean() / (cfg.layer_input_size(l) + cfg.hidden_size))
            for l in range(cfg.num_layers)],
        "fired_head_fraction": (float(st["fired_head"].mean() / cfg.hidden_size)
                                if cfg.has_head else None),
        "theta_x": list(cfg.theta_x), "theta_h": list(cfg.theta_h), "theta_head": cfg.theta_head,
        "theta_x_real": [t * cfg.act.lsb for t in cfg.theta_x],
        "theta_h_real": [t * cfg.act.lsb for t in cfg.theta_h],
        "training_metrics": _training_metrics(spec),
        "seconds": round(time.time() - t0, 1),
    }
    out["golden"] = golden
    out["cycle_model"] = ops.cycle_stats(cfg, st["fired_layers"], st["fired_head"], st["cycles"],
                                         fired_x0=st["fired_x0"], first=st["first"],
                                         h0_early=st["h0_early"])
    out["cycle_model"]["histogram_source"] = "whole test split"
    out["what_if"] = what_if(cfg, st["fired_layers"], st["fired_head"], fired_x0=st["fired_x0"],
                             first=st["first"], h0_early=st["h0_early"])
    prog.log(f"    {n} test timesteps: op reduction {golden['op_reduction']:.2f}x"
             + (f", {metrics_text(met, task)} (Theta = 0: {metrics_text(met0, task)})"
                if met is not None else "")
             + f"; cycle model: {out['cycle_model']['mean_cycles']:.1f} cycles/timestep, "
             f"{out['cycle_model']['speedup_vs_dense']:.2f}x over dense")
    out["_test_cycles"] = st["cycles"]  # for the distribution plot (not written to JSON)
    lanes = sorted(set(args.lanes) | {cfg.lanes}) if args.lanes else hw.lane_sweep(cfg)
    full = not args.quick and not args.no_synth
    if not full:
        ecp5 = set()
    elif spec.name in args.ecp5_sweep:
        ecp5 = set(lanes) if args.ecp5_all_lanes else set(hw.ecp5_sweep(cfg, lanes))
    else:
        ecp5 = {cfg.lanes}
    out["hardware_mode"] = "synthesis" if full else "estimate"
    return _Work(spec, model, xq, lengths, out, st, lanes, ecp5)


def cpu_phase(w: _Work, args, prog: Progress) -> None:
    prog.step(f"{w.spec.name}: CPU reference (torch.nn.GRU float32 batch 1; golden model)")
    mt = 0.2 if args.quick else 1.0
    cpu_ref = {"torch_1thread": cpu.torch_gru_reference(w.model, threads=1, min_time=mt)}
    if (os.cpu_count() or 1) > 1:
        cpu_ref["torch_all_threads"] = cpu.torch_gru_reference(w.model, threads=os.cpu_count(),
                                                               min_time=mt)
    nb = min(int(w.xq.shape[0]), 64 if args.quick else 512)
    cpu_ref["golden"] = cpu.golden_throughput(w.model, w.xq[:nb, : int(w.lengths[:nb].max())],
                                              w.lengths[:nb], threads=os.cpu_count() or 1)
    w.out["cpu"] = cpu_ref
    t1 = cpu_ref["torch_1thread"]
    prog.log(f"    torch.nn.GRU: {t1['latency_us']:.1f} us per timestep (batch 1, 1 thread), "
             f"{t1['throughput_steps_s']:.0f} timesteps/s streaming; golden model "
             f"{cpu_ref['golden']['timesteps_s']:.0f} timesteps/s (batch {nb})")


def rtl_phase(w: _Work, args, prog: Progress) -> None:
    spec, cfg, lengths = w.spec, w.model.config, w.lengths
    prog.step(f"{spec.name}: RTL cycles from the hardware counters ({args.sim})")
    if args.quick:
        idx, used = _sample(lengths, budget_steps=10**9, max_len=args.quick_len,
                            seed=args.seed, max_seqs=args.quick_seqs)
    else:
        idx, used = _sample(lengths, budget_steps=args.rtl_steps, max_len=None, seed=args.seed)
    seqs = [w.xq[i, :n_] for i, n_ in zip(idx, used)]
    meas = measure_rtl(spec.name, w.model, spec.model_path, seqs, sim=args.sim, log=prog.log,
                       quiet=not args.verbose)
    rtl = _rtl_summary(cfg, meas)
    if not rtl["matches_cycle_model"]:
        raise AssertionError(f"{spec.name}: measured cycles differ from the cycle model.")
    sample_cs = ops.cycle_stats(cfg, rtl["per_timestep"]["fired_layers"],
                                rtl["per_timestep"]["fired_head"],
                                fired_x0=rtl["per_timestep"]["fired_x0"],
                                first=rtl["per_timestep"]["first"],
                                h0_early=rtl["per_timestep"]["h0_early"])
    w.out["rtl"] = {"simulator": meas["simulator"], "sample": {
        "sequence_indices": idx, "timesteps_used": used, "seed": args.seed,
        "truncated": any(u < int(lengths[i]) for i, u in zip(idx, used)),
        "cycle_model_speedup": sample_cs["speedup_vs_dense"]},
        "build_seconds": meas["build_seconds"], "build_reused": meas["build_reused"],
        "sim_seconds": meas["sim_seconds"], "sim_cycles": meas["sim_cycles"],
        "output_beats_checked": meas["beats_checked"], **rtl}
    r = w.out["rtl"]
    prog.log(f"    RTL: {r['delta_cycles']['mean']:.1f} cycles/timestep (dense "
             f"{r['dense_cycles']['mean']:.0f}) -> speedup {r['speedup_vs_dense']:.2f}x, lane "
             f"utilisation {100 * r['lane_utilisation']:.1f} %, measured/ideal "
             f"{r['measured_over_ideal']:.3f}; every timestep equals the cycle model")


def synthesis_jobs(work: list[_Work], args) -> list[tuple]:
    """(model, board, P, model path, build folder, variant) of every build, cheapest first."""
    jobs = []
    root = Path(args.build_dir)
    for w in work:
        if w.out["hardware_mode"] != "synthesis":
            continue
        for P in w.lanes:
            # One synth_xilinx run per P; the A7-100T variant passes the fit check for any P that
            # fits either part, and the cell counts are compared with both parts' totals.
            jobs.append((w.spec.name, "arty_a7", P, w.spec.model_path,
                         root / w.spec.name / f"arty_a7_P{P}", "100"))
    for w in work:
        for P in sorted(w.ecp5):
            jobs.append((w.spec.name, "ulx3s", P, w.spec.model_path,
                         root / w.spec.name / f"ulx3s_P{P}", None))
    return jobs


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run(args) -> dict:
    specs = [resolve_model(m) for m in args.models]
    steps = 3 * len(specs) + 2
    prog = Progress(steps)
    mode = "quick" if args.quick else "full"
    prog.log(f"deltahw benchmark ({mode}): models {', '.join(s.name for s in specs)}; "
             f"simulator {args.sim}; output {args.out}")
    t0 = time.time()
    results = {
        "format": RESULTS_FORMAT,
        "mode": mode,
        "command": "python -m deltahw.bench " + " ".join(args.argv),
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": cpu.machine_info(),
        "definitions": DEFINITIONS,
        "models": {},
        "published": PUBLISHED,
    }
    # Golden model and CPU reference first, while the machine is quiet; then the board builds in
    # a background thread while the RTL simulations run.
    work = [golden_phase(spec, args, prog) for spec in specs]
    for w in work:
        cpu_phase(w, args, prog)
    jobs = synthesis_jobs(work, args)
    queue = None
    if jobs:
        prog.log(f"  starting {len(jobs)} board builds in the background, one at a time: "
                 + ", ".join(f"{n} {b} P={P}" for n, b, P, *_ in jobs))
        queue = SynthesisQueue(jobs, args.rebuild, prog)
        queue.start()
    try:
        for w in work:
            rtl_phase(w, args, prog)
    finally:
        if queue is not None:
            prog.step("waiting for the board builds")
            queue.join()
    if queue is None:
        prog.step("lane sweep: resource estimates only" + (" (quick)" if args.quick else ""))
    elif queue.error is not None:
        raise queue.error
    reports = queue.reports if queue is not None else {}
    for w in work:
        w.out["hardware"] = _hardware_rows(w.spec, w.model, w.st, w.lanes, reports)
        results["models"][w.spec.name] = w.out
    prog.step("writing the report")
    results["seconds"] = round(time.time() - t0, 1)
    results["step_seconds"] = prog.durations()[:-1]
    results["machine"]["load_average_end"] = list(os.getloadavg())
    from .report import write_report

    try:
        written = write_report(results, Path(args.out))
    except Exception:
        from .report import _json_ready

        dump = Path(args.build_dir) / "results-unreported.json"
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text(json.dumps(_json_ready(results), indent=1))
        prog.log(f"writing the report failed; the measured results are saved in {dump}")
        raise
    prog.log(f"wrote {', '.join(str(p) for p in written)} in {results['seconds']:.0f} s")
    return results


DEFINITIONS = {
    "op_reduction": "dense MACs / delta MACs over all real test timesteps (golden model)",
    "speedup_vs_dense": "sum of dense cycles / sum of delta cycles on the same timesteps, same "
                        "hardware (Theta = 0 written to every THETA register)",
    "ideal_cycles": "deltahw.cycles.ideal_cycles: fired columns x ceil(3H/P) + ceil(H/A) per layer "
                    "(+ head: fired x ceil(O/P) + ceil(O/A))",
    "measured_over_ideal": "sum of measured cycles / sum of ideal cycles (1.0 = no overhead)",
    "lane_utilisation": "useful MACs / (P x cycles); useful MACs = fired columns x 3H (+ head "
                        "fired x O)",
    "mac_busy_fraction": "MAC_BUSY / cycles: fraction of cycles the MAC array issues a column "
                         "slice (a slice may leave lanes idle when P does not divide 3H)",
    "effective_gops": "2 x dense MACs per timestep / mean time per timestep (dense-equivalent "
                      "operations per second)",
    "effective_ops_per_mac_cycle": "effective operations / (MAC units x clock cycles): how much "
                                   "dense-equivalent work one multiplier does per cycle (2 for a "
                                   "dense design at full use; more only by skipping work)",
    "weight_words_per_timestep": "deltahw.cycles.weight_words_read: weight-memory words read per "
                                 "timestep (P per issue cycle); the paper's memory cost measure",
    "cycles": "compute cycles per timestep as counted by CYCLES_LAST (stall cycles waiting for "
              "the host, the sequence-reset phase and any cycles between timesteps are not "
              "counted; the timed stream shows them)",
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.bench",
        description="Benchmarks of the delta-GRU accelerator: operation reduction and accuracy "
                    "(golden model), RTL cycles from the hardware counters (simulation), "
                    "utilisation and clock per lane count, CPU reference, published peers.")
    ap.add_argument("--quick", action="store_true",
                    help="a few minutes: 2 short RTL sequences, resource estimates only")
    ap.add_argument("--out", default="docs/benchmarks", help="report folder (default "
                                                             "docs/benchmarks)")
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma-separated model names under models/ or model folders "
                         "(default fsdd,watch)")
    ap.add_argument("--sim", default=None, choices=("verilator", "icarus"),
                    help="RTL simulator (default verilator)")
    ap.add_argument("--rtl-steps", type=int, default=4000,
                    help="full mode: simulate test sequences until this many timesteps")
    ap.add_argument("--quick-seqs", type=int, default=2, help="quick mode: RTL sequences")
    ap.add_argument("--quick-len", type=int, default=12,
                    help="quick mode: RTL sequences truncated to this many timesteps")
    ap.add_argument("--lanes", help="lane counts of the sweep, e.g. 12,24,48 (the model's own P is "
                                    "always added; default 3A, 6A, 12A and the model's own)")
    ap.add_argument("--ecp5-sweep",
                    help="comma-separated models whose whole lane sweep gets ECP5 place and "
                         "route (default: the first model; the others only at their own P, "
                         "since one ECP5 build takes 5-20 minutes here); 'all' for every model")
    ap.add_argument("--ecp5-all-lanes", action="store_true",
                    help="ECP5 place and route for every P of the sweep (default: the smallest, "
                         "the largest and the model's own)")
    ap.add_argument("--no-synth", action="store_true",
                    help="full mode without synthesis (resource estimates only)")
    ap.add_argument("--rebuild", action="store_true",
                    help="run every synthesis again even if an up-to-date build exists")
    ap.add_argument("--build-dir", default=str(REPO / "build" / "bench"),
                    help="where the board builds go (default build/bench)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the RTL sequence sample")
    ap.add_argument("--verbose", action="store_true",
                    help="show the simulator's output instead of logging it to a file")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="only write the report (README.md, plots) from an existing results.json")
    args = ap.parse_args(argv)
    args.argv = argv
    if args.render:
        from .report import write_report

        results = json.loads(Path(args.render).read_text())
        refresh_recorded_ecp5(results)
        for p in write_report(results, Path(args.out)):
            print(f"wrote {p}")
        return 0
    args.models = [m for m in args.models.split(",") if m]
    args.sim = args.sim or os.environ.get("SIM", "verilator")
    if args.lanes:
        try:
            args.lanes = sorted({int(v) for v in args.lanes.split(",")})
        except ValueError:
            ap.error(f"--lanes must be comma-separated integers; got {args.lanes!r}.")
    if args.ecp5_sweep is None:
        args.ecp5_sweep = [Path(args.models[0]).name] if args.models else []
    elif args.ecp5_sweep == "all":
        args.ecp5_sweep = [Path(m).name for m in args.models]
    else:
        args.ecp5_sweep = args.ecp5_sweep.split(",")
    def body() -> int:  # BenchError, and a model, config or tool error: one ``error:`` sentence
        run(args)
        return 0

    return run_cli(body)
