"""Seed variance of the training recipe: the whole pipeline (dense stage + delta stage) per seed.

    python scripts/seed_study.py fsdd --seeds 0 1 2 [--work /tmp/seeds] [--out docs/training]

Each seed runs ``python -m deltahw.train --dataset TASK --seed S`` with the default settings (the
seed changes the initialisation, the batch order and the noise; the data split stays the same) and
collects, from each run's golden-model metrics, the float dense test accuracy, the delta-trained
test accuracy and operation reduction, and the run-time-converted accuracy at the same thresholds.
Writes ``OUT/<task>_seeds.json`` and ``OUT/<task>_seeds.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltahw.util import atomic_write_text  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("task", choices=["fsdd", "watch"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", default="/tmp/deltahw_seeds", help="folder for the runs")
    ap.add_argument("--out", default=str(ROOT / "docs" / "training"))
    ap.add_argument("--reuse", action="store_true", help="reuse finished runs in --work")
    args, extra = ap.parse_known_args(argv)
    rows = []
    for seed in args.seeds:
        run = Path(args.work) / f"{args.task}_seed{seed}"
        if not (args.reuse and (run / "metrics.json").is_file()):
            if (run / "train_state.pt").is_file():
                (run / "train_state.pt").unlink()
            cmd = [sys.executable, "-m", "deltahw.train", "--dataset", args.task, "--out", str(run),
                   "--seed", str(seed), "--quiet", *extra]
            print(" ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True, cwd=ROOT)
        m = json.loads((run / "metrics.json").read_text())
        s = m["summary"]
        rows.append({
            "seed": seed,
            "float_dense": s["float_dense_test_accuracy"],
            "delta_trained": s["delta_trained_test_accuracy"],
            "op_reduction": s["delta_trained_test_op_reduction"],
            "converted": s["converted_test_accuracy_same_thresholds"],
            "converted_op_reduction": s["converted_test_op_reduction_same_thresholds"],
            "gap_points": s["accuracy_gap_points"],
            "wall_seconds": s["train_seconds"],
            "cpu_seconds": s.get("train_cpu_seconds"),
        })
    lines = [f"# Seed study: {args.task}", "",
             "Whole pipeline per seed with the default settings "
             f"(`python -m deltahw.train --dataset {args.task} --seed S`); golden model, test "
             "split. Gap = float dense - delta-trained, in points.", "",
             "| seed | float dense | delta-trained | op reduction | gap (points) "
             "| converted at same thresholds | converted op red. |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {100 * r['float_dense']:.2f} % "
                     f"| {100 * r['delta_trained']:.2f} % "
                     f"| {r['op_reduction']:.2f}x | {r['gap_points']:+.2f} "
                     f"| {100 * r['converted']:.2f} % | {r['converted_op_reduction']:.2f}x |")
    if len(rows) > 1:
        def ms(key, scale=100.0):
            v = [scale * r[key] for r in rows]
            return f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"
        lines.append(f"| mean ± sd | {ms('float_dense')} | {ms('delta_trained')} "
                     f"| {ms('op_reduction', 1.0)} | {ms('gap_points', 1.0)} | {ms('converted')} "
                     f"| {ms('converted_op_reduction', 1.0)} |")
    out = Path(args.out)
    atomic_write_text(out / f"{args.task}_seeds.md", "\n".join(lines) + "\n")
    atomic_write_text(out / f"{args.task}_seeds.json", json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
