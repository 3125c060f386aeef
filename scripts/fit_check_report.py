"""Render docs/benchmarks/fit_check.md: the fit check's estimate next to the recorded synthesis.

    python scripts/fit_check_report.py [--json docs/benchmarks/fit_check.json]

The measurements come from real builds (see the JSON's ``about``); the estimates from
``deltahw.resources.estimate`` at the current code. ``tests/test_fit_check.py`` holds the estimate
to 10 % on LUTs and FFs.
"""

import argparse
import json
import os
from pathlib import Path

from deltahw.boards import PARTS
from deltahw.model import load_model
from deltahw.resources import estimate

REPO = Path(__file__).resolve().parent.parent


def render(data: dict) -> str:
    cfg = load_model(REPO / data["model"]).config
    header = ["| part | A | LUTs: synthesis / estimate | FFs: synthesis / estimate | "
              "block RAM (synth / est) | multipliers (synth / est) | source |",
              "|---|---:|---|---|---|---|---|"]
    current = data["current_gateware"]
    lines = ["# Fit check vs open synthesis", "", data["about"], "",
             f"Current gateware ({current}): the rows the estimator is fitted to and tested on.",
             "", *header]
    rows = [r for r in data["measurements"] if r["gateware"] == current]
    older = [r for r in data["measurements"] if r["gateware"] != current]
    for r in rows + older:
        if r is (older[0] if older else None):
            lines += ["", "Earlier gateware (history, not held to the estimate):", "", *header]
        part = PARTS[r["part"]]
        e = estimate(cfg.replace(act_width=r["act_width"], capture=r.get("capture", False)), part)
        cells = [f"{r[k]} / {getattr(e, k)} ({getattr(e, k) / r[k] - 1:+.1%})"
                 for k in ("luts", "ffs")]
        lines.append(f"| {r['part']} | {r['act_width']} | {cells[0]} | {cells[1]} | "
                     f"{r['bram']} / {e.bram:g} {part.bram_name} | {r['dsps']} / {e.dsps} "
                     f"{part.dsp_name} | {r['source']} |")
    lines += ["", "Rendered by `python scripts/fit_check_report.py`; checked by "
              "`tests/test_fit_check.py` (10 % on LUTs and FFs, exact on block RAM and "
              "multipliers, for the rows of the current gateware)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, default=REPO / "docs" / "benchmarks" / "fit_check.json")
    args = ap.parse_args()
    out = args.json.with_suffix(".md")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(render(json.loads(args.json.read_text())))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
