"""Evaluation through the bit-exact golden model: accuracy, operation reduction, threshold sweeps.

Everything here runs :func:`deltahw.golden.run_golden` on the integer inputs the hardware would see
(``QuantizedModel.quantize_input`` with the checkpoint's own normalisation), never the float model.
A sequence's class is the argmax of the head output at its last real timestep. The operation
reduction is ``GoldenResult.summary(config)["op_reduction"]`` = dense MACs / delta MACs over all
real timesteps of the split.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..config import DeltaGRUConfig
from ..golden import run_golden
from ..model import QuantizedModel, load_model
from .data import Dataset, pad_batch

__all__ = [
    "golden_inputs",
    "golden_eval",
    "float_dense_eval",
    "sweep",
    "pareto",
    "plot_sweep",
    "sweep_table",
    "to_lsb",
]


def to_lsb(value: float, config: DeltaGRUConfig) -> int:
    """A threshold in real units (e.g. 0.25) as an integer number of act-format LSBs."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"A threshold must be a finite number >= 0; got {value!r}.")
    return int(math.floor(value * 2**config.act.frac + 0.5))


def golden_inputs(model: QuantizedModel, ds: Dataset, split: str):
    """Quantized integer inputs (B, T, I), lengths (B,) and labels (B,) of a split."""
    s = ds.split(split)
    x, lengths = pad_batch(s.xs)
    xq, _ = model.quantize_input(x)
    mask = torch.arange(xq.shape[1])[None, :] < lengths[:, None]
    xq = torch.where(mask[..., None], xq, 0)
    return xq, lengths, torch.from_numpy(np.asarray(s.y, dtype=np.int64))


def golden_eval(model: QuantizedModel, ds: Dataset, split: str = "test", inputs=None,
                chunk: int = 512) -> dict:
    """Accuracy and golden statistics of ``model`` (with its config's thresholds) on a split."""
    cfg = model.config
    if not cfg.has_head:
        raise ValueError(
            "Classification accuracy needs a model with a linear head (output_size > 0)."
        )
    xq, lengths, y = inputs if inputs is not None else golden_inputs(model, ds, split)
    correct = 0
    macs = dense = steps = 0
    fx = np.zeros(cfg.num_layers)
    fh = np.zeros(cfg.num_layers)
    summ = None
    for a in range(0, len(y), chunk):
        res = run_golden(model, xq[a : a + chunk], lengths[a : a + chunk])
        idx = torch.arange(res.outputs.shape[0])
        last = res.outputs[idx, lengths[a : a + chunk] - 1]
        correct += int((last.argmax(-1) == y[a : a + chunk]).sum())
        summ = res.summary(cfg)
        n = summ["timesteps"]
        macs += summ["macs"]
        dense += summ["dense_macs"]
        fx += np.asarray(summ["fired_x_fraction"]) * n
        fh += np.asarray(summ["fired_h_fraction"]) * n
        steps += n
    return {
        "split": split,
        "sequences": int(len(y)),
        "timesteps": steps,
        "accuracy": correct / len(y),
        "op_reduction": dense / macs if macs else float("inf"),
        "macs_per_timestep": macs / steps,
        "dense_macs_per_timestep": dense / steps,
        "fired_x_fraction": (fx / steps).tolist(),
        "fired_h_fraction": (fh / steps).tolist(),
        "theta_x": list(cfg.theta_x),
        "theta_h": list(cfg.theta_h),
        "theta_head": cfg.theta_head,
    }


@torch.no_grad()
def float_dense_eval(gru_state: dict, head_state: dict, ds: Dataset, split: str = "test") -> float:
    """Accuracy of the float (unquantized) dense GRU, ``torch.nn.GRU`` + ``torch.nn.Linear``."""
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
    last = head(out[torch.arange(len(lengths)), lengths - 1])
    return float((last.argmax(-1).numpy() == s.y).mean())


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
            row[s] = {k: r[k] for k in ("accuracy", "op_reduction", "macs_per_timestep",
                                        "fired_x_fraction", "fired_h_fraction")}
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def pareto(rows: list, split: str = "val") -> list:
    """Indices of the rows not dominated on ``split`` (higher accuracy and higher op reduction)."""
    keep = []
    for i, r in enumerate(rows):
        a, o = r[split]["accuracy"], r[split]["op_reduction"]
        dominated = any(
            (q[split]["accuracy"] >= a and q[split]["op_reduction"] >= o)
            and (q[split]["accuracy"] > a or q[split]["op_reduction"] > o)
            for j, q in enumerate(rows) if j != i
        )
        if not dominated:
            keep.append(i)
    return sorted(keep, key=lambda i: rows[i][split]["op_reduction"])


def plot_sweep(curves: dict, path: Path, title: str, reference: float | None = None,
               marks: dict | None = None) -> None:
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
    ax.set_ylabel("test accuracy (%), golden model")
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
