"""Evaluation through the bit-exact golden model: task metrics, operation reduction, sweeps.

Everything here runs :func:`deltahw.golden.run_golden` on the integer inputs the hardware would see
(``QuantizedModel.quantize_input`` with the checkpoint's own normalisation), never the float model.
The read-out depends on the task (:data:`deltahw.train.data.TASKS`):

* ``classification``: the class is the argmax of the head output at the sequence's last real
  timestep; metric ``accuracy`` over sequences.
* ``timestep-classification``: the argmax at every real timestep; ``accuracy`` over all real
  timesteps of the split (per-timestep accuracy).
* ``timestep-regression``: the head output at every real timestep, de-normalised with the target
  mean and standard deviation stored in the model (``meta["target_mean"]``, ``"target_std"``);
  ``rmse`` and ``mae`` over all real timesteps and outputs, in the data's own units.

Every result also has ``metric`` (the name of the primary metric) and ``score`` (higher is better:
the accuracy, or minus the RMSE), which model selection and the sweeps use. The operation
reduction is ``GoldenResult.summary(config)["op_reduction"]`` = dense MACs / delta MACs over all
real timesteps of the split.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..config import DeltaGRUConfig
from ..golden import run_golden
from ..model import QuantizedModel, load_model
from ..numerics import threshold_to_lsb
from .data import CLASSIFICATION, STEP_CLASSIFICATION, STEP_REGRESSION, Dataset, pad_batch

__all__ = [
    "golden_inputs",
    "golden_eval",
    "task_metrics",
    "TaskTally",
    "model_tally",
    "metrics_text",
    "METRIC_DEFINITIONS",
    "primary_metric",
    "float_dense_eval",
    "float_dense_metrics",
    "sweep",
    "pareto",
    "plot_sweep",
    "sweep_table",
    "to_lsb",
]


def to_lsb(value: float, config: DeltaGRUConfig) -> int:
    """A threshold in real units (e.g. 0.25) as an integer number of act-format LSBs."""
    return threshold_to_lsb(value, config.act)


def golden_inputs(model: QuantizedModel, ds: Dataset, split: str):
    """Quantized integer inputs (B, T, I), lengths (B,) and targets of a split
    (:meth:`Dataset.targets`, in the data's own units)."""
    s = ds.split(split)
    x, lengths = pad_batch(s.xs)
    xq, _ = model.quantize_input(x)
    mask = torch.arange(xq.shape[1])[None, :] < lengths[:, None]
    xq = torch.where(mask[..., None], xq, 0)
    return xq, lengths, ds.targets(s)


#: What each task's metric counts (reports state it next to the figures).
METRIC_DEFINITIONS = {
    CLASSIFICATION: "accuracy: argmax of the head output at each sequence's last timestep",
    STEP_CLASSIFICATION: "per-timestep accuracy: argmax of the head output at every real "
                         "timestep, over all real timesteps",
    STEP_REGRESSION: "RMSE and MAE of the de-normalised head output at every real timestep, over "
                     "all real timesteps and outputs, in the data's units",
}


def primary_metric(task: str) -> str:
    """``accuracy`` for the classification tasks, ``rmse`` for regression."""
    return "rmse" if task == STEP_REGRESSION else "accuracy"


class TaskTally:
    """Accumulates a task's metric over chunks of sequences (outputs in real units).

    The one implementation of the task metrics: training, the calibration, the bench and the host
    driver all count through it.
    """

    def __init__(self, task: str, t_mean=None, t_std=None):
        self.task = task
        self.t_mean = None if t_mean is None else torch.as_tensor(t_mean, dtype=torch.float64)
        self.t_std = None if t_std is None else torch.as_tensor(t_std, dtype=torch.float64)
        self.correct = self.count = 0
        self.se = self.ae = None

    def add(self, out: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor) -> None:
        """``out`` (B, T, O) real-valued head outputs (normalised units for regression)."""
        B, T = out.shape[:2]
        if self.task == CLASSIFICATION:
            last = out[torch.arange(B), lengths - 1]
            self.correct += int((last.argmax(-1) == y).sum())
            self.count += B
            return
        mask = torch.arange(T)[None, :] < lengths[:, None]
        y = y[:, :T]
        if self.task == STEP_CLASSIFICATION:
            self.correct += int(((out.argmax(-1) == y) & mask).sum())
            self.count += int(mask.sum())
            return
        pred = out.double()
        if self.t_std is not None:
            pred = pred * self.t_std + self.t_mean
        err = (pred - y.double())[mask]  # (frames, O)
        se, ae = (err**2).sum(0), err.abs().sum(0)
        self.se = se if self.se is None else self.se + se
        self.ae = ae if self.ae is None else self.ae + ae
        self.count += int(mask.sum())

    def result(self) -> dict:
        if self.task != STEP_REGRESSION:
            acc = self.correct / max(1, self.count)
            return {"metric": "accuracy", "score": acc, "accuracy": acc}
        n = max(1, self.count)
        per = (self.se / n).sqrt()
        rmse = float((self.se.sum() / (n * len(self.se))).sqrt())
        mae = float(self.ae.sum() / (n * len(self.ae)))
        return {"metric": "rmse", "score": -rmse, "rmse": rmse, "mae": mae,
                "rmse_per_output": per.tolist(), "mae_per_output": (self.ae / n).tolist()}


_Tally = TaskTally  # the name the training code imports


def model_tally(model: QuantizedModel, task: str | None = None) -> TaskTally:
    """A :class:`TaskTally` for ``model``'s task (``meta["task"]`` unless ``task`` is given), with
    the model's stored target statistics for regression."""
    from .data import task_of

    meta = getattr(model, "meta", None) or {}
    task = task or task_of(meta)
    return TaskTally(task, meta.get("target_mean"), meta.get("target_std"))


def metrics_text(result: dict, task: str) -> str:
    """A task's metrics as a short phrase (CLI and bench lines)."""
    if task == STEP_REGRESSION:
        return (f"RMSE {result['rmse']:.4g}, MAE {result['mae']:.4g} (data units, over every "
                "timestep)")
    what = "per-timestep accuracy" if task == STEP_CLASSIFICATION else "accuracy"
    return f"{what} {100 * result['accuracy']:.2f} %"


def _target_stats(model: QuantizedModel | None, ds: Dataset):
    meta = getattr(model, "meta", None) or {}
    if meta.get("target_std") is not None:
        return meta["target_mean"], meta["target_std"]
    return ds.target_mean, ds.target_std


def task_metrics(task: str, outputs: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
                 t_mean=None, t_std=None) -> dict:
    """The task's metrics of real-valued head outputs (B, T, O) against targets ``y``."""
    t = TaskTally(task, t_mean, t_std)
    t.add(outputs, lengths, y)
    return t.result()


def golden_eval(model: QuantizedModel, ds: Dataset, split: str = "test", inputs=None,
                chunk: int = 512) -> dict:
    """Task metrics and golden statistics of ``model`` (with its config's thresholds) on a split.

    The task is ``ds.task``; regression outputs are de-normalised with the model's stored target
    statistics (or the dataset's, for a model without them).
    """
    cfg = model.config
    if not cfg.has_head:
        raise ValueError(
            "Evaluating a task needs a model with a linear head (output_size > 0)."
        )
    xq, lengths, y = inputs if inputs is not None else golden_inputs(model, ds, split)
    tally = TaskTally(ds.task, *_target_stats(model, ds))
    macs = dense = steps = 0
    fx = np.zeros(cfg.num_layers)
    fh = np.zeros(cfg.num_layers)
    summ = None
    for a in range(0, len(y), chunk):
        res = run_golden(model, xq[a : a + chunk], lengths[a : a + chunk])
        tally.add(res.outputs.double() * cfg.act.lsb, lengths[a : a + chunk], y[a : a + chunk])
        summ = res.summary(cfg)
        n = summ["timesteps"]
        macs += summ["macs"]
        dense += summ["dense_macs"]
        fx += np.asarray(summ["fired_x_fraction"]) * n
        fh += np.asarray(summ["fired_h_fraction"]) * n
        steps += n
    return {
        "split": split,
        "task": ds.task,
        "sequences": int(len(y)),
        "timesteps": steps,
        **tally.result(),
        "op_reduction": dense / macs if macs else float("inf"),
        "macs_per_timestep": macs / steps,
        "dense_macs_per_timestep": dense / steps,
        "fired_x_fraction": (fx / steps).tolist(),
        "fired_h_fraction": (fh / steps).tolist(),
        "theta_x": list(cfg.theta_x),
        "theta_h": list(cfg.theta_h),
        "theta_head": cfg.theta_head,
    }


def float_dense_eval(gru_state: dict, head_state: dict, ds: Dataset, split: str = "test") -> float:
    """Primary metric (accuracy, or RMSE) of the float dense GRU on a split."""
    r = float_dense_metrics(gru_state, head_state, ds, split)
    return r[r["metric"]]


@torch.no_grad()
def float_dense_metrics(gru_state: dict, head_state: dict, ds: Dataset,
                        split: str = "test") -> dict:
    """Task metrics of the float (unquantized) dense GRU, ``torch.nn.GRU`` + ``torch.nn.Linear``,
    on the inputs normalised with the dataset's training statistics."""
    w = gru_state["weight_ih_l0"]
    H, I = w.shape[0] // 3, w.shape[1]
    L = sum(1 for k in gru_state if k.startswith("weight_ih_l"))
    gru = torch.nn.GRU(I, H, L, batch_first=True)
    gru.load_state_dict(gru_state)
    head = torch.nn.Linear(H, head_state["weight"].shape[0])
    head.load_state_dict(head_state)
    s = ds.split(split)
    x, lengths = pad_batch(s.xs)
    x = (x.double() - torch.from_numpy(ds.mean).double()) / torch.from_numpy(ds.std).double()
    out, _ = gru(x.float())
    return task_metrics(ds.task, head(out), lengths, ds.targets(s), ds.target_mean,
                        ds.target_std)


def sweep(model: QuantizedModel, ds: Dataset, grid, splits=("val", "test"), progress=None) -> list:
    """Evaluate ``model`` at every ``(theta_x, theta_h)`` pair of ``grid`` (LSBs, head = theta_h).

    Returns one record per pair with the golden accuracy and op reduction on each split.
    """
    inputs = {s: golden_inputs(model, ds, s) for s in splits}
    rows = []
    for tx, th in grid:
        cfg = model.config.with_thresholds(theta_x=(tx,) * model.config.num_layers,
                                           theta_h=(th,) * model.config.num_layers, theta_head=th)
        m = model.with_config(cfg)
        row = {"theta_x": tx, "theta_h": th, "theta_head": th,
               "theta_x_real": tx * cfg.act.lsb, "theta_h_real": th * cfg.act.lsb}
        for s in splits:
            r = golden_eval(m, ds, s, inputs=inputs[s])
            row[s] = {k: r[k] for k in ("metric", "score", "accuracy", "rmse", "mae",
                                        "op_reduction", "macs_per_timestep",
                                        "fired_x_fraction", "fired_h_fraction") if k in r}
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def _score(r: dict) -> float:
    return r["score"] if "score" in r else r["accuracy"]


def pareto(rows: list, split: str = "val") -> list:
    """Indices of the rows not dominated on ``split`` (higher score, i.e. accuracy or -RMSE, and
    higher op reduction)."""
    keep = []
    for i, r in enumerate(rows):
        a, o = _score(r[split]), r[split]["op_reduction"]
        dominated = any(
            (_score(q[split]) >= a and q[split]["op_reduction"] >= o)
            and (_score(q[split]) > a or q[split]["op_reduction"] > o)
            for j, q in enumerate(rows) if j != i
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: rows[i][split]["op_reduction"])


def plot_sweep(curves: dict, path: Path, title: str, reference: float | None = None,
               marks: dict | None = None,
               ylabel: str = "test accuracy (%), golden model") -> None:
    """Plot test accuracy vs op reduction, one line per curve ``{label: [(op_red, acc), ...]}``."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..util import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    styles = ["o-", "s-", "^-", "d-"]
    for k, (label, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], styles[k % len(styles)],
                label=label, markersize=4)
    if reference is not None:
        ax.axhline(100 * reference, color="gray", ls="--", lw=1,
                   label=f"float dense GRU ({100 * reference:.1f} %)")
        ax.axhline(100 * reference - 1, color="gray", ls=":", lw=1, label="float dense - 1 point")
    for label, (x, y) in (marks or {}).items():
        ax.plot([x], [100 * y], "r*", markersize=12, label=label)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = ax.get_xlim()
    ticks = [t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("operation reduction (dense MACs / delta MACs), golden model, test split")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def sweep_table(rows: list, frontier: list, title: str) -> str:
    """Markdown table of a sweep; rows on the validation Pareto frontier are marked."""
    lines = [f"### {title}", "",
             "| theta_x (LSB / real) | theta_h = theta_head (LSB / real) | val acc | val op red. "
             "| test acc | test op red. | fired x / h (test) | frontier |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        t = r["test"]
        lines.append(
            f"| {r['theta_x']} / {r['theta_x_real']:.3f} "
            f"| {r['theta_h']} / {r['theta_h_real']:.3f} "
            f"| {100 * r['val']['accuracy']:.2f} % | {r['val']['op_reduction']:.2f}x "
            f"| {100 * t['accuracy']:.2f} % | {t['op_reduction']:.2f}x "
            f"| {100 * t['fired_x_fraction'][0]:.1f} % / {100 * t['fired_h_fraction'][0]:.1f} % "
            f"| {'*' if i in frontier else ''} |"
        )
    return "\n".join(lines) + "\n"


def load_for_eval(path) -> QuantizedModel:
    return load_model(path)


def dump_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=float) + "\n"
