"""Threshold calibration: per-layer Theta_x / Theta_h and the head's Theta for the largest operation
reduction within a stated metric loss, evaluated by the bit-exact golden model.

    python -m deltahw.calibrate MODEL --data val.npz --max-loss 1.0 --out DIR [--test-data t.npz]

(with ``--config``, ``--allow-clipping`` and ``--trust-pickle`` as in ``python -m deltahw.export``)

``MODEL`` is anything :func:`deltahw.model.load_model` reads (deltahw checkpoint, ``torch.nn.GRU``
state dict with a ``Linear`` head, exported folder); the data files have the layout of
:mod:`deltahw.train.userdata` (``X`` (sum T_i, I), ``lengths`` (N,), ``y``), and the task is the
one the model records (else inferred from ``y``). The search:

* **Reference**: the better, on the calibration data, of the golden model with every threshold 0
  (the dense fixed-point network) and with the model's own thresholds (a network trained with
  thresholds in the loop is often better with them). The *loss* of a threshold setting is the
  reference accuracy minus its accuracy, in percentage points (classification tasks), or its
  RMSE's increase over the reference RMSE in percent of the reference (regression). A setting is
  *admissible* when its loss is at most ``max_loss``.
* **Grid**: thresholds in LSBs of the act format on a half-octave grid 0, 1, 2, 3, 4, 6, 8, 11, 16,
  ... up to ``max_theta`` (real units, default 2.0; inputs are normalised to unit variance and the
  hidden state lies in [-1, 1]), plus the model's own thresholds.
* **Uniform sweep**: every threshold equal (each grid value), for the Pareto plot and as a seed.
* **Greedy coordinate ascent** from the admissible point with the largest op reduction found so
  far: at each step, every threshold (Theta_x and Theta_h of each layer, the head's) is raised by
  one grid step in turn; of the admissible candidates that raise the op reduction, one that loses
  nothing more is taken first, else the one with the largest gain in log op reduction per point of
  extra loss. When no raise is admissible, exchanges (one threshold up a step, another down) are
  tried. The search stops when neither helps. The chosen setting is the admissible point with the
  largest op reduction among all evaluated ones.

Everything is evaluated with :func:`deltahw.train.evaluate.golden_eval` (the float64 path of the
golden model, bit-exact with the RTL). ``DIR`` receives ``model.pt`` (a deltahw checkpoint of the
same parameters with the chosen thresholds; the input file is never touched), ``config.json``,
``calibration.json`` (every evaluated point), ``calibration.md`` (table) and ``pareto.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import DeltaGRUConfig
from .errors import DeltahwError
from .model import CHECKPOINT_KIND, QuantizedModel, load_model
from .util import atomic_dir

__all__ = [
    "CalibrationError",
    "Point",
    "Calibration",
    "threshold_grid",
    "calibrate",
    "write_calibration",
    "main",
]

#: Files a calibration writes into its output folder (the marker that a folder is ours).
OUTPUT_FILES = ("model.pt", "config.json", "calibration.json", "calibration.md", "pareto.png")


class CalibrationError(DeltahwError, ValueError):
    """Calibration cannot run: bad data for the model, bad option, unusable output folder."""


@dataclass
class Point:
    """One evaluated threshold setting (LSBs) and its golden-model figures on a data set."""

    theta_x: tuple
    theta_h: tuple
    theta_head: int
    metric: float  # accuracy (0..1) or RMSE (data units)
    op_reduction: float
    loss: float  # points of accuracy, or % of the reference RMSE
    admissible: bool
    macs_per_timestep: float
    fired_x_fraction: list
    fired_h_fraction: list
    origin: str  # reference | given | uniform | greedy

    @property
    def key(self) -> tuple:
        return (tuple(self.theta_x), tuple(self.theta_h), int(self.theta_head))

    def real(self, lsb: float) -> dict:
        """The thresholds in real units."""
        return {"theta_x": [t * lsb for t in self.theta_x],
                "theta_h": [t * lsb for t in self.theta_h], "theta_head": self.theta_head * lsb}


@dataclass
class Calibration:
    """The result of :func:`calibrate`: the model with the chosen thresholds and every point."""

    model: QuantizedModel  # the chosen thresholds
    task: str
    metric: str  # "accuracy" or "rmse"
    max_loss: float
    loss_unit: str
    reference: Point  # the better of every threshold 0 and the model's own thresholds
    given: Point  # the model's own thresholds
    chosen: Point
    points: list  # every evaluated Point, in evaluation order
    path: list  # keys of the greedy path, from the reference to where it stopped
    grid: list
    test: dict = field(default_factory=dict)  # name -> golden figures on the test data
    zero: Point | None = None  # every threshold 0
    seconds: float = 0.0
    evaluations: int = 0

    def frontier(self) -> list:
        """The Pareto-optimal points (higher op reduction, lower loss), by op reduction."""
        pts = sorted(self.points, key=lambda p: (-p.op_reduction, p.loss))
        out, best = [], math.inf
        for p in pts:
            if p.loss < best:
                out.append(p)
                best = p.loss
        return sorted(out, key=lambda p: p.op_reduction)

    def thresholds(self) -> dict:
        """The chosen thresholds in real units (what ``--theta-x`` etc. and the API take)."""
        return self.chosen.real(self.model.config.act.lsb)


def threshold_grid(config: DeltaGRUConfig, max_theta: float = 2.0) -> list[int]:
    """Half-octave grid of thresholds in LSBs: 0, 1, 2, 3, 4, 6, 8, 11, 16, ... <= max_theta."""
    if not math.isfinite(max_theta) or max_theta <= 0:
        raise CalibrationError(f"max_theta must be a positive number; got {max_theta!r}.")
    top = min(int(math.floor(max_theta * 2**config.act.frac + 0.5)), (1 << config.act.bits) - 1)
    vals, j = {0}, 0
    while (v := int(math.floor(2 ** (j / 2) + 0.5))) <= top:
        vals.add(v)
        j += 1
    return sorted(vals)


# --------------------------------------------------------------------------------------------------
def _dataset(model: QuantizedModel, data, test_data, task: str | None):
    """A :class:`deltahw.train.data.Dataset` whose ``val`` split is the calibration data (and
    ``test`` the test data, or the calibration data again); the model's normalisation is used."""
    from .train.data import CLASSIFICATION, STEP_REGRESSION, DatasetError, task_of
    from .train.userdata import as_sequences, make_dataset

    meta = model.meta or {}
    if task is None and meta.get("task"):
        task = task_of(meta)
    try:
        val = as_sequences(data, task, "the calibration data")
        test = None if test_data is None else as_sequences(test_data, val.task, "the test data")
        ds = make_dataset(val, val, test if test is not None else val, task=val.task,
                          name="calibration", class_names=meta.get("classes"))
    except DatasetError as e:
        raise CalibrationError(str(e)) from None
    cfg = model.config
    if not cfg.has_head:
        raise CalibrationError("Calibration needs a model with a linear head (output_size > 0): "
                               "the metric is read from the head's outputs.")
    if ds.input_size != cfg.input_size:
        raise CalibrationError(f"The data has {ds.input_size} features per frame; the model "
                               f"expects {cfg.input_size}.")
    if ds.task == STEP_REGRESSION:
        if ds.num_classes != cfg.output_size:
            raise CalibrationError(f"The data has {ds.num_classes} targets per frame; the model's "
                                   f"head has {cfg.output_size} outputs.")
    elif ds.num_classes > cfg.output_size:
        raise CalibrationError(f"The data has {ds.num_classes} classes; the model's head has only "
                               f"{cfg.output_size} outputs.")
    if ds.task != CLASSIFICATION and meta.get("task") not in (None, ds.task):
        raise CalibrationError(f"The model was trained for {meta['task']}; the data is "
                               f"{ds.task}.")
    return ds


class _Evaluator:
    """Golden-model evaluations of threshold settings on one split, cached by thresholds."""

    def __init__(self, model: QuantizedModel, ds, split: str):
        from .train.evaluate import golden_inputs

        self.model, self.ds, self.split = model, ds, split
        self.inputs = golden_inputs(model, ds, split)
        self.cache: dict = {}
        self.seconds = 0.0

    def __call__(self, key: tuple) -> dict:
        if key not in self.cache:
            from .train.evaluate import golden_eval

            tx, th, to = key
            cfg = self.model.config.with_thresholds(theta_x=tx, theta_h=th, theta_head=to)
            t0 = time.perf_counter()
            self.cache[key] = golden_eval(self.model.with_config(cfg), self.ds, self.split,
                                          inputs=self.inputs)
            self.seconds += time.perf_counter() - t0
        return self.cache[key]


def _admissible_moves(moves, idx, current, key_of, point) -> list:
    """(move, Point) of every admissible move that raises the op reduction."""
    out = []
    for mv in moves:
        ix = dict(idx)
        for d, v in mv.items():
            ix[d] += v
        p = point(key_of(ix), "greedy")
        if p.admissible and p.op_reduction > current.op_reduction:
            out.append((mv, p))
    return out


def _gain(p: Point, current: Point) -> tuple:
    """Rank of a move: one that loses nothing first (by op reduction), then the gain in log op
    reduction per point of extra loss."""
    extra = p.loss - current.loss
    if extra <= 0:
        return (True, p.op_reduction)
    return (False, math.log(p.op_reduction / current.op_reduction) / extra)


def _loss(metric: str, ref: float, value: float) -> float:
    if metric == "accuracy":
        return 100.0 * (ref - value)
    if ref == 0:
        return 0.0 if value == 0 else math.inf
    return 100.0 * (value - ref) / ref


def calibrate(model, data, *, max_loss: float = 1.0, task: str | None = None, test_data=None,
              max_theta: float = 2.0, progress=None) -> Calibration:
    """Choose per-layer thresholds (and the head's) for ``model`` on ``data``; see the module doc.

    Args:
        model: a :class:`~deltahw.model.QuantizedModel` or anything ``load_model`` reads.
        data: the calibration (validation) data: an ``.npz`` path, a dict of ``X``, ``lengths``,
            ``y``, or an iterable of ``(x, y)`` sequences (:mod:`deltahw.train.userdata`).
        max_loss: the admissible loss against the all-zero thresholds: accuracy points
            (classification) or percent of the reference RMSE (regression).
        test_data: optional held-out data; the reference, the given and the chosen thresholds are
            evaluated on it too (``Calibration.test``).
        max_theta: the largest threshold tried, in real units.
        progress: ``callable(str)`` for one line per step (``print`` for the command line).
    Returns a :class:`Calibration`; ``.model`` carries the chosen thresholds.
    """
    if not isinstance(model, QuantizedModel):
        model = load_model(model)
    if not isinstance(max_loss, (int, float)) or not math.isfinite(max_loss) or max_loss < 0:
        raise CalibrationError(f"max_loss must be a number >= 0; got {max_loss!r}.")
    say = progress or (lambda _msg: None)
    t_start = time.perf_counter()
    ds = _dataset(model, data, test_data, task)
    cfg = model.config
    L, lsb = cfg.num_layers, cfg.act.lsb
    grid = threshold_grid(cfg, max_theta)
    ev = _Evaluator(model, ds, "val")
    points: dict = {}
    ref_key = ((0,) * L, (0,) * L, 0)
    metric = ev(ref_key)["metric"]
    unit = "accuracy points" if metric == "accuracy" else "% of the reference RMSE"
    ref_value = ev(ref_key)[metric]  # replaced by the reference below

    def point(key, origin) -> Point:
        if key in points:
            return points[key]
        r = ev(key)
        loss = _loss(metric, ref_value, r[metric])
        p = Point(key[0], key[1], key[2], r[metric], r["op_reduction"], loss, loss <= max_loss,
                  r["macs_per_timestep"], r["fired_x_fraction"], r["fired_h_fraction"], origin)
        points[key] = p
        return p

    def fmt(p: Point) -> str:
        m = f"{100 * p.metric:.2f} %" if metric == "accuracy" else f"RMSE {p.metric:.4g}"
        return (f"theta_x={list(p.theta_x)} theta_h={list(p.theta_h)} head={p.theta_head} LSB: "
                f"{m}, op reduction {p.op_reduction:.2f}x, loss {p.loss:+.2f}")

    zero = point(ref_key, "reference")
    given = point((tuple(cfg.theta_x), tuple(cfg.theta_h), cfg.theta_head), "given")
    # The reference is the better of the dense network and the model's own thresholds: a model
    # trained with thresholds in the loop may be better with them than without.
    better = metric == "accuracy" and given.metric > zero.metric or (
        metric != "accuracy" and given.metric < zero.metric)
    ref_point = given if better else zero
    ref_value = ref_point.metric
    for p in points.values():
        p.loss = _loss(metric, ref_value, p.metric)
        p.admissible = p.loss <= max_loss
    say(f"calibrating on {len(ds.val)} sequences ({int(ds.val.lengths.sum())} timesteps), "
        f"{ds.task}; max loss {max_loss:g} {unit}; grid {len(grid)} values up to "
        f"{grid[-1]} LSB ({grid[-1] * lsb:g})")
    say(f"every threshold 0: {fmt(zero)}")
    say(f"the model's own thresholds: {fmt(given)}")
    say(f"reference: {'the model' + chr(39) + 's own thresholds' if better else 'thresholds 0'}")

    # Uniform sweep: all thresholds equal; stops two grid steps after the loss is exceeded.
    over = 0
    for i, v in enumerate(grid[1:], 1):
        p = point(((v,) * L, (v,) * L, v), "uniform")
        say(f"uniform {i}/{len(grid) - 1}: {fmt(p)}")
        over = over + 1 if not p.admissible else 0
        if over >= 2:
            break

    # Greedy coordinate ascent from the best admissible point so far, on a grid that also holds
    # the model's own thresholds.
    dims = [("x", l) for l in range(L)] + [("h", l) for l in range(L)] + [("head", 0)]
    values = sorted(set(grid) | set(cfg.theta_x) | set(cfg.theta_h) | {cfg.theta_head})

    def key_of(ix: dict) -> tuple:
        return (tuple(values[ix[("x", l)]] for l in range(L)),
                tuple(values[ix[("h", l)]] for l in range(L)), values[ix[("head", 0)]])

    def index_of(key: tuple) -> dict:
        ix = {("x", l): values.index(key[0][l]) for l in range(L)}
        ix.update({("h", l): values.index(key[1][l]) for l in range(L)})
        ix[("head", 0)] = values.index(key[2])
        return ix

    seeds = [p for p in points.values() if p.admissible]
    current = max(seeds, key=lambda p: (p.op_reduction, -p.loss)) if seeds else ref_point
    idx = index_of(current.key)
    path = [current.key]
    say(f"greedy search from {fmt(current)}")
    step = 0
    while True:
        step += 1
        moves = [{d: +1} for d in dims if idx[d] + 1 < len(values)]
        cands = _admissible_moves(moves, idx, current, key_of, point)
        if not cands:  # exchange: raise one threshold while lowering another
            moves = [{d: +1, e: -1} for d in dims for e in dims
                     if d != e and idx[d] + 1 < len(values) and idx[e] > 0]
            cands = _admissible_moves(moves, idx, current, key_of, point)
        if not cands:
            say(f"step {step}: no raise or exchange of thresholds gains within the loss; done")
            break

        move, current = max(cands, key=lambda c, cur=current: _gain(c[1], cur))
        for d, v in move.items():
            idx[d] += v
        path.append(current.key)
        say(f"step {step} ({len(ev.cache)} evaluations, {ev.seconds:.1f} s): {fmt(current)}")

    admissible = [p for p in points.values() if p.admissible]
    chosen = max(admissible, key=lambda p: (p.op_reduction, -p.loss))
    new_cfg = cfg.with_thresholds(theta_x=chosen.theta_x, theta_h=chosen.theta_h,
                                  theta_head=chosen.theta_head)
    out_model = model.with_config(new_cfg)
    out_model.meta = dict(model.meta or {})
    say(f"chosen: {fmt(chosen)}")
    cal = Calibration(out_model, ds.task, metric, float(max_loss), unit, ref_point, given, chosen,
                      list(points.values()), path, values, evaluations=len(ev.cache), zero=zero)
    if test_data is not None:
        tev = _Evaluator(model, ds, "test")
        for name, p in (("thresholds 0", zero), ("given", given), ("chosen", chosen)):
            r = tev(p.key)
            cal.test[name] = {"metric": r[metric], "op_reduction": r["op_reduction"],
                              "loss": _loss(metric, tev(ref_point.key)[metric], r[metric])}
            m = (f"{100 * r[metric]:.2f} %" if metric == "accuracy"
                 else f"RMSE {r[metric]:.4g}")
            say(f"test data, {name} thresholds: {m}, op reduction {r['op_reduction']:.2f}x")
    cal.seconds = time.perf_counter() - t_start
    out_model.meta["calibration"] = _meta_record(cal)
    return cal


def _meta_record(cal: Calibration) -> dict:
    """What the written checkpoint and manifest record about the calibration."""
    lsb = cal.model.config.act.lsb
    rec = {
        "method": "greedy coordinate ascent on a half-octave grid (deltahw.calibrate)",
        "metric": cal.metric,
        "max_loss": cal.max_loss,
        "loss_unit": cal.loss_unit,
        "reference_metric": cal.reference.metric,
        "chosen_metric": cal.chosen.metric,
        "chosen_loss": cal.chosen.loss,
        "chosen_op_reduction": cal.chosen.op_reduction,
        "thresholds_real": cal.chosen.real(lsb),
    }
    if cal.test:
        rec["test"] = cal.test
    return rec


# --------------------------------------------------------------------------------------------------
def _report(cal: Calibration, source: str) -> dict:
    lsb = cal.model.config.act.lsb

    def pd(p: Point) -> dict:
        d = asdict(p)
        d.update(theta_x=list(p.theta_x), theta_h=list(p.theta_h), real=p.real(lsb))
        return d

    return {
        "source": source,
        "task": cal.task,
        "metric": cal.metric,
        "max_loss": cal.max_loss,
        "loss_unit": cal.loss_unit,
        "grid_lsb": cal.grid,
        "act_lsb": lsb,
        "reference": pd(cal.reference),
        "zero": pd(cal.zero),
        "given": pd(cal.given),
        "chosen": pd(cal.chosen),
        "test": cal.test,
        "frontier": [pd(p) for p in cal.frontier()],
        "greedy_path": [list(map(list, k[:2])) + [k[2]] for k in cal.path],
        "points": [pd(p) for p in cal.points],
        "evaluations": cal.evaluations,
        "seconds": cal.seconds,
        "config": cal.model.config.to_dict(),
    }


def _markdown(cal: Calibration, source: str) -> str:
    lsb = cal.model.config.act.lsb
    acc = cal.metric == "accuracy"
    mname = "accuracy" if acc else "RMSE"

    def m(v):
        return f"{100 * v:.2f} %" if acc else f"{v:.4g}"

    def th(p: Point) -> str:
        return (f"{'/'.join(str(t) for t in p.theta_x)} | {'/'.join(str(t) for t in p.theta_h)} | "
                f"{p.theta_head} | {'/'.join(f'{t * lsb:g}' for t in p.theta_x)}, "
                f"{'/'.join(f'{t * lsb:g}' for t in p.theta_h)}, {p.theta_head * lsb:g}")

    lines = [
        "# Threshold calibration",
        "",
        f"Model: `{source}`; task {cal.task}. Admissible loss: {cal.max_loss:g} "
        f"{cal.loss_unit} against the reference, the better of every threshold 0 and the "
        f"model's own thresholds ({'the latter' if cal.reference is cal.given else 'the former'}"
        f"), on the calibration data (golden model, bit-exact). {cal.evaluations} golden "
        f"evaluations in {cal.seconds:.1f} s.",
        "",
        f"**Chosen:** theta_x = {[t * lsb for t in cal.chosen.theta_x]}, theta_h = "
        f"{[t * lsb for t in cal.chosen.theta_h]}, theta_head = {cal.chosen.theta_head * lsb:g} "
        f"(real units; LSBs {list(cal.chosen.theta_x)}, {list(cal.chosen.theta_h)}, "
        f"{cal.chosen.theta_head}): {mname} {m(cal.chosen.metric)}, op reduction "
        f"{cal.chosen.op_reduction:.2f}x on the calibration data.",
        "",
        "| thresholds | theta_x (LSB) | theta_h (LSB) | theta_head (LSB) | real units (x, h, head) "
        f"| {mname} | loss | op reduction |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    rows = [("every threshold 0", cal.zero), ("the model's own", cal.given),
            ("**chosen**", cal.chosen)]
    for name, p in rows:
        lines.append(f"| {name} | {th(p)} | {m(p.metric)} | {p.loss:+.2f} | "
                     f"{p.op_reduction:.2f}x |")
    if cal.test:
        lines += ["", "On the test data:", "", f"| thresholds | {mname} | loss | op reduction |",
                  "|---|---:|---:|---:|"]
        for name, r in cal.test.items():
            lines.append(f"| {name} | {m(r['metric'])} | {r['loss']:+.2f} | "
                         f"{r['op_reduction']:.2f}x |")
    lines += ["", "## Pareto frontier (calibration data)", "",
              f"| theta_x (LSB) | theta_h (LSB) | theta_head (LSB) | real units (x, h, head) | "
              f"{mname} | loss | op reduction | found by |",
              "|---|---|---|---|---:|---:|---:|---|"]
    for p in cal.frontier():
        lines.append(f"| {th(p)} | {m(p.metric)} | {p.loss:+.2f} | {p.op_reduction:.2f}x | "
                     f"{p.origin} |")
    return "\n".join(lines) + "\n"


def _plot(cal: Calibration) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = cal.metric == "accuracy"
    scale = 100.0 if acc else 1.0
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for origin, style, label in (("uniform", "s", "all thresholds equal"),
                                 ("greedy", "o", "greedy search")):
        pts = [p for p in cal.points if p.origin == origin]
        ax.plot([p.op_reduction for p in pts], [scale * p.metric for p in pts], style,
                ms=3, alpha=0.5, label=label)
    fr = cal.frontier()
    ax.plot([p.op_reduction for p in fr], [scale * p.metric for p in fr], "k-", lw=1,
            label="Pareto frontier")
    ref = scale * cal.reference.metric
    limit = ref - cal.max_loss if acc else ref * (1 + cal.max_loss / 100)
    ax.axhline(limit, color="gray", ls=":", lw=1, label=f"max loss ({cal.max_loss:g})")
    ax.plot([cal.zero.op_reduction], [scale * cal.zero.metric], "kD", ms=6,
            label="all thresholds 0")
    ax.plot([cal.given.op_reduction], [scale * cal.given.metric], "b^", ms=8,
            label="the model's own thresholds")
    ax.plot([cal.chosen.op_reduction], [scale * cal.chosen.metric], "r*", ms=13, label="chosen")
    ax.set_xscale("log")
    ax.set_xlabel("operation reduction (dense MACs / delta MACs), golden model")
    ax.set_ylabel("accuracy (%)" if acc else "RMSE")
    ax.set_title("Threshold calibration (validation data)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _check_out(out: Path, inputs: list[Path], force: bool = False) -> None:
    """Refuse an output folder that would overwrite the inputs or the working directory, or
    (unless ``force``) files this tool did not write."""
    out = Path(out)
    for p in inputs:
        if p.exists() and out.exists():
            r, o = p.resolve(), out.resolve()
            if r == o or o in r.parents:  # the folder is replaced whole
                raise CalibrationError(f"--out {out} would overwrite the input {p}; choose "
                                       "another folder.")
    if out.exists() and not out.is_dir():
        raise CalibrationError(f"--out {out} exists and is not a folder.")
    cwd = Path.cwd().resolve()
    if out.is_dir() and (cwd == out.resolve() or out.resolve() in cwd.parents):
        raise CalibrationError(f"--out {out} is the working directory (or holds it); the folder "
                               "is replaced whole, so give a new one, e.g. --out calibrated.")
    if out.is_dir() and not force:
        foreign = sorted(f.name for f in out.iterdir() if f.name not in OUTPUT_FILES)
        ours = (out / "calibration.json").is_file()
        if foreign or (any(out.iterdir()) and not ours):
            raise CalibrationError(f"--out {out} already holds files this tool did not write "
                                   f"({', '.join(foreign[:3]) or 'model.pt'}); choose a new or "
                                   "empty folder, or pass --force to replace it.")


def _checkpoint_bytes(cal: Calibration, source) -> bytes:
    """A deltahw checkpoint with the chosen config: the source's float parameters when it is a
    deltahw checkpoint file, else the model's (dequantized, which re-quantize to the same)."""
    model = cal.model
    obj = None
    if isinstance(source, (str, Path)) and Path(source).is_file():
        try:
            raw = torch.load(Path(source), map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - fall back to the quantized parameters
            raw = None
        if isinstance(raw, dict) and raw.get("kind") == CHECKPOINT_KIND:
            obj = dict(raw)
    if obj is None:
        sd = model.float_params()
        head = None
        if model.config.has_head:
            head = {"weight": sd.pop("head.weight"), "bias": sd.pop("head.bias")}
        obj = {"kind": CHECKPOINT_KIND, "version": 1, "gru": sd, "head": head,
               "input_mean": None if model.input_mean is None else model.input_mean.float(),
               "input_std": None if model.input_std is None else model.input_std.float()}
    obj["config"] = model.config.to_dict()
    obj["meta"] = json.loads(json.dumps(model.meta, default=str))
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def write_calibration(cal: Calibration, out, source=None, force: bool = False) -> Path:
    """Write ``model.pt``, ``config.json``, ``calibration.json``/``.md`` and ``pareto.png`` into
    the folder ``out`` (new, or written by an earlier calibration and holding nothing else; with
    ``force``, any folder but the working directory and the source)."""
    out = Path(out)
    src = [Path(source)] if isinstance(source, (str, Path)) else []
    _check_out(out, src, force=force)
    name = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    files = {
        "model.pt": _checkpoint_bytes(cal, source),
        "config.json": (cal.model.config.to_json() + "\n").encode(),
        "calibration.json": (json.dumps(_report(cal, name), indent=1, default=float)
                             + "\n").encode(),
        "calibration.md": _markdown(cal, name).encode(),
        "pareto.png": _plot(cal),
    }
    with atomic_dir(out) as tmp:  # the whole folder appears at once, or not at all
        for fname, data in files.items():
            (tmp / fname).write_bytes(data)
    return out


# --------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    from .util import add_loading_arguments, run_cli

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.calibrate",
        description="Choose per-layer delta thresholds for the largest op reduction within a "
                    "metric loss, on validation data, with the bit-exact golden model.")
    ap.add_argument("model", help="exported model folder, deltahw checkpoint or GRU state dict "
                                  "(.pt)")
    ap.add_argument("--config", help="JSON config (formats, lanes) for a plain GRU")
    add_loading_arguments(ap)
    ap.add_argument("--data", required=True, help="calibration (validation) data, .npz with X, "
                    "lengths, y")
    ap.add_argument("--max-loss", type=float, default=1.0,
                    help="admissible loss: accuracy points, or percent of the reference RMSE "
                         "(default 1.0)")
    ap.add_argument("--out", required=True,
                    help="output folder (written atomically; an existing folder is replaced only "
                         "if an earlier calibration wrote it)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing --out folder even if deltahw did not write it (never "
                         "the working directory or an input)")
    ap.add_argument("--test-data", help="held-out .npz: report the chosen thresholds on it too")
    ap.add_argument("--task", help="classification, timestep-classification or "
                    "timestep-regression (default: the model's, else inferred from y)")
    ap.add_argument("--max-theta", type=float, default=2.0,
                    help="largest threshold tried, real units (default 2.0)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    return run_cli(_main, args)


def _main(args) -> int:
    out = Path(args.out)
    src = [Path(args.model), Path(args.data)] + (
        [Path(args.test_data)] if args.test_data else [])
    _check_out(out, src, force=args.force)
    cfg = DeltaGRUConfig.load(args.config) if args.config else None
    model = load_model(args.model, config=cfg, allow_clipping=args.allow_clipping,
                       trust_pickle=args.trust_pickle)
    cal = calibrate(model, args.data, max_loss=args.max_loss, task=args.task,
                    test_data=args.test_data, max_theta=args.max_theta,
                    progress=None if args.quiet else (lambda s: print(s, flush=True)))
    write_calibration(cal, out, source=args.model, force=args.force)
    t = cal.thresholds()
    print(f"chosen thresholds (real units): theta_x={t['theta_x']} theta_h={t['theta_h']} "
          f"theta_head={t['theta_head']:g}; op reduction {cal.chosen.op_reduction:.2f}x, loss "
          f"{cal.chosen.loss:+.2f} {cal.loss_unit}; wrote {out}/model.pt, config.json, "
          f"calibration.json, calibration.md, pareto.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
