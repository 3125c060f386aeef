"""Accuracy vs operation reduction of a run-time-converted dense GRU and a delta-trained GRU.

    python scripts/sweep_thresholds.py models/fsdd [models/watch ...] [--out docs/training]

For each model folder (written by ``python -m deltahw.train``: ``dense.pt`` and ``model.pt``) this
evaluates both networks with the bit-exact golden model over a grid of thresholds
``(theta_x, theta_h)`` (theta_head = theta_h), on the validation and test splits. The curve of each
network is its Pareto frontier **chosen on the validation split** (no threshold is picked by looking
at the test split) and plotted with its **test** accuracy and op reduction. Writes, per task:

    OUT/<task>_sweep.json   every grid point of both networks, the frontiers, the float reference
    OUT/<task>_sweep.md     Markdown tables
    OUT/<task>_sweep.png    the plot (accuracy vs op reduction, log x axis), like the paper's
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltahw.model import load_model  # noqa: E402
from deltahw.train.data import load_dataset  # noqa: E402
from deltahw.train.evaluate import pareto, plot_sweep, sweep, sweep_table  # noqa: E402
from deltahw.util import atomic_write_text  # noqa: E402

#: Threshold grids in act LSBs (Q8.8: 256 LSB = 1.0). Inputs are normalised to unit variance.
GRIDS = {
    "fsdd": ([0, 32, 64, 96, 128, 192, 256], [0, 16, 32, 64, 96, 128, 160, 192]),
    "watch": ([0, 16, 32, 64, 96, 128, 192], [0, 16, 32, 64, 96, 128, 192, 256]),
    # 0/1 features (chroma, onset, downbeat; a 0-1 jump is 2-2.5 after normalisation): any
    # theta_x below the jump passes every change, so few theta_x values; long sequences.
    "chorales": ([0, 64, 256], [0, 32, 64, 96, 128, 192, 256]),
}


def run_task(folder: Path, out: Path, extra: list | None = None) -> dict:
    t0 = time.time()
    trained = load_model(folder / "model.pt")
    dense = load_model(folder / "dense.pt")
    task = trained.meta.get("dataset_name", trained.meta.get("task"))
    if task not in GRIDS:
        raise SystemExit(f"error: {folder}/model.pt has task {task!r}; expected one of "
                         f"{sorted(GRIDS)}.")
    ds = load_dataset(task, int(trained.meta.get("training", {}).get("split_seed", 0)))
    gx, gh = GRIDS[task]
    grid = [(tx, th) for tx in gx for th in gh]
    # Make sure the shipped operating point is on the grid.
    op = (trained.config.theta_x[0], trained.config.theta_h[0])
    if op not in grid:
        grid.append(op)
    dense = dense.with_config(dense.config.replace(
        **{k: getattr(trained.config, k) for k in ("lanes", "lanes_per_bank", "act_width",
                                                    "enc_width")}))
    result = {"task": task, "grid_lsb": grid, "float_dense": trained.meta.get("float_dense"),
              "operating_point": {"theta_x": op[0], "theta_h": op[1]}, "curves": {}}
    labels = {"converted": "dense GRU (dense.pt) converted at run time",
              "trained": "delta-trained GRU (model.pt) at swept thresholds"}
    for key, model in (("converted", dense), ("trained", trained)):
        rows = sweep(model, ds, grid)
        front = pareto(rows, "val")
        result["curves"][key] = {"label": labels[key], "rows": rows, "val_frontier": front}
        print(f"{task} {key}: {len(rows)} points, {len(front)} on the validation frontier",
              file=sys.stderr)
    ref = (result["float_dense"] or {}).get("test_accuracy")
    curves = {}
    for c in result["curves"].values():
        curves[c["label"]] = [(c["rows"][i]["test"]["op_reduction"],
                               c["rows"][i]["test"]["accuracy"]) for i in c["val_frontier"]]
    others = []
    for e in extra or []:
        m = load_model(Path(e) / "model.pt")
        name = m.meta.get("dataset_name", m.meta.get("task"))
        if name != task or m.config.hidden_size != trained.config.hidden_size:
            continue
        tx, th = m.config.theta_x[0], m.config.theta_h[0]
        row = sweep(m, ds, [(tx, th)])[0]
        opts = m.meta.get("training", {})
        row["training"] = {k: opts.get(k) for k in ("theta_x", "theta_h", "l1", "init", "seed",
                                                     "delta_epochs")}
        others.append(row)
    if others:
        result["other_delta_trained_runs"] = others
        curves["delta-trained at other thresholds (one run each)"] = [
            (r["test"]["op_reduction"], r["test"]["accuracy"]) for r in others]
    rows = result["curves"]["trained"]["rows"]
    opr = next(r for r in rows if (r["theta_x"], r["theta_h"]) == op)
    marks = {f"shipped model (theta_x={op[0]}, theta_h={op[1]} LSB)":
             (opr["test"]["op_reduction"], opr["test"]["accuracy"])}
    result["operating_point"].update(opr)
    out.mkdir(parents=True, exist_ok=True)
    per_step = ds.task == "timestep-classification"
    plot_sweep(curves, out / f"{task}_sweep.png",
               f"{task}: 1-layer delta-GRU H={trained.config.hidden_size}, golden model",
               reference=ref, marks=marks,
               ylabel="test accuracy per timestep (%), golden model" if per_step
               else "test accuracy (%), golden model")
    md = [f"# Threshold sweep: {task}", "",
          f"Golden-model accuracy and operation reduction of `{folder.name}/dense.pt` (converted "
          f"at run time) and `{folder.name}/model.pt` (delta-trained). Thresholds in LSBs of the "
          f"act format "
          f"(Q8.8, 256 LSB = 1.0) and in real units; theta_head = theta_h. `*` marks the points on "
          f"the validation Pareto frontier, which the plot draws with their test numbers.", ""]
    if ref is not None:
        md += [f"Float dense GRU (torch.nn.GRU, no quantization) test accuracy: "
               f"{100 * ref:.2f} %.", ""]
    for c in result["curves"].values():
        md.append(sweep_table(c["rows"], c["val_frontier"], c["label"]))
    if others:
        md.append(sweep_table(others, list(range(len(others))),
                              "other delta-trained runs, each at its own training thresholds"))
    atomic_write_text(out / f"{task}_sweep.md", "\n".join(md))
    result["seconds"] = time.time() - t0
    atomic_write_text(out / f"{task}_sweep.json", json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}/{task}_sweep.{{json,md,png}} in {result['seconds']:.0f} s", file=sys.stderr)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="model folders written by python -m deltahw.train")
    ap.add_argument("--out", default=str(ROOT / "docs" / "training"), help="output folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--extra", nargs="*", default=[],
                    help="further delta-trained run folders (same task and size), each evaluated "
                         "at its own training thresholds and drawn as its own curve")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    for m in args.models:
        folder = Path(m)
        for f in ("model.pt", "dense.pt"):
            if not (folder / f).is_file():
                print(f"error: {folder} has no {f}; train it with python -m deltahw.train.",
                      file=sys.stderr)
                return 2
        run_task(folder, Path(args.out), args.extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
