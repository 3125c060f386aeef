"""Choose a trained model's activation width again: ``python -m deltahw.train.act_width FOLDER``.

Training's ``--act-width auto`` picks the activation width A (how many GRU units the activation
evaluates per cycle) from the validation split: the fewest mean cycles per timestep
(:mod:`deltahw.cycles`) among the widths that fit the part (:func:`deltahw.resources.fits`).
The choice depends on the cycle model and the fit check of the day it ran; when either changes
(a smaller gateware makes a wider A fit), this command makes the same choice again on the same
model, without training: A changes no result (same arithmetic, same fired columns), only the
cycles and the resources, so the weights stay as they are.

``FOLDER`` is a training output folder (``model.pt``, ``config.json``, ``metrics.json``, as
``python -m deltahw.train --out FOLDER`` writes) of one of the bundled datasets. It rewrites
``model.pt``'s config (the float parameters are copied unchanged), ``config.json``, and
``metrics.json``'s ``act_width_choice`` (the new sweep, with the previous choice kept under
``previous``), each atomically, and prints the sweep. Re-export the model afterwards
(``python -m deltahw.export FOLDER/model.pt --out FOLDER/export``). With ``--dry-run`` it only
prints the sweep.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import torch

from ..boards import PARTS
from ..config import ConfigError, DeltaGRUConfig
from ..model import CHECKPOINT_KIND, _load_torch_file, load_model
from ..util import atomic_write_bytes, atomic_write_text, run_cli
from .data import DATASETS, load_dataset
from .train import ACT_WIDTH_RULE, DEFAULT_PART

__all__ = ["rechoose", "main"]


def _folder_files(folder: Path) -> tuple[Path, Path, Path]:
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; expected a training output folder "
                          "(model.pt, config.json, metrics.json).")
    files = tuple(folder / n for n in ("model.pt", "config.json", "metrics.json"))
    missing = [p.name for p in files if not p.is_file()]
    if missing:
        raise ConfigError(f"{folder} has no {', '.join(missing)}; expected the output folder of "
                          "python -m deltahw.train (model.pt, config.json, metrics.json).")
    return files


def rechoose(folder, part: str = DEFAULT_PART, dry_run: bool = False) -> dict:
    """Choose ``folder``'s act width again (module docstring). Returns the new
    ``act_width_choice`` record; writes nothing with ``dry_run``."""
    from ..bench.whatif import act_width_for_data
    from .evaluate import golden_inputs

    folder = Path(folder)
    ckpt_path, config_path, metrics_path = _folder_files(folder)
    if part not in PARTS:
        raise ConfigError(f"Unknown part {part!r}; expected one of {', '.join(sorted(PARTS))}.")
    try:
        metrics = json.loads(metrics_path.read_text())
        name = metrics["dataset"]["name"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{metrics_path} does not name its dataset (dataset.name); expected "
                          "the metrics.json python -m deltahw.train writes.") from None
    if name not in DATASETS:
        raise ConfigError(f"{folder} was trained on {name!r}, not a bundled dataset "
                          f"({', '.join(DATASETS)}): its validation split is not here to choose "
                          "from; train again with --act-width auto, or export with --act-width.")
    obj = _load_torch_file(ckpt_path)
    if not isinstance(obj, dict) or obj.get("kind") != CHECKPOINT_KIND:
        raise ConfigError(f"{ckpt_path} is not a deltahw checkpoint (kind {CHECKPOINT_KIND!r}).")
    model = load_model(ckpt_path)
    ds = load_dataset(name)
    xq, lengths, _ = golden_inputs(model, ds, "val")
    A, rows = act_width_for_data(model, xq, lengths, PARTS[part])
    previous = metrics.get("act_width_choice")
    choice = {"act_width": A, "part": PARTS[part].name, "data": "validation split",
              "rule": ACT_WIDTH_RULE, "sweep": rows,
              "how": "python -m deltahw.train.act_width (chosen again after training)",
              "previous": None if previous is None else
              {k: previous.get(k) for k in ("act_width", "part", "rule")}}
    if dry_run:
        return choice
    cfg = DeltaGRUConfig.from_dict(obj["config"]).replace(act_width=A)
    obj["config"] = cfg.to_dict()
    buf = io.BytesIO()
    torch.save(obj, buf)
    metrics["act_width_choice"] = choice
    if isinstance(metrics.get("config"), dict) and "act_width" in metrics["config"]:
        metrics["config"]["act_width"] = A
    # Three atomic writes: a run stopped between them leaves every file whole, and running the
    # command again (the choice is deterministic) brings the three into line.
    atomic_write_text(config_path, cfg.to_json() + "\n")
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2) + "\n")
    atomic_write_bytes(ckpt_path, buf.getvalue())
    return choice


def _main(args) -> int:
    choice = rechoose(args.folder, args.part, args.dry_run)
    for r in choice["sweep"]:
        print(f"A={r['act_width']:>2}: {r['delta_cycles']:7.2f} cycles per timestep (dense "
              f"{r['dense_cycles']}), {r['luts']} LUTs estimated on {r['part']}: "
              f"{'fits' if r['fits'] else 'does not fit'}")
    prev = (choice["previous"] or {}).get("act_width")
    verb = "would choose" if args.dry_run else "chose"
    print(f"{args.folder}: {verb} act_width {choice['act_width']}"
          + (f" (was {prev})" if prev is not None else ""))
    if not args.dry_run:
        print(f"re-export it: python -m deltahw.export {Path(args.folder) / 'model.pt'} "
              f"--out {Path(args.folder) / 'export'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.train.act_width",
        description="Choose a trained model's activation width again, with today's cycle model "
                    "and fit check (no training; the weights stay as they are).")
    ap.add_argument("folder", help="training output folder (model.pt, config.json, metrics.json)")
    ap.add_argument("--part", default=DEFAULT_PART, choices=sorted(PARTS),
                    help=f"FPGA part the act width must fit (default {DEFAULT_PART})")
    ap.add_argument("--dry-run", action="store_true", help="print the sweep, write nothing")
    return run_cli(_main, ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
