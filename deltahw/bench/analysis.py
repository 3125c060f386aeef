"""The command line shared by the analyses over the shipped models' test splits
(:mod:`deltahw.bench.skip`, :mod:`deltahw.bench.stream`): ``python -m deltahw.bench.NAME MODEL...
--out FOLDER``.

Every model name is resolved before any long step runs; each model's test split is loaded as
``python -m deltahw.bench`` loads it, analysed, and the results of all models are written
together at the end (each file atomically).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import DeltahwError
from ..util import run_cli

__all__ = ["analysis_main"]


def analysis_main(argv, *, name: str, description: str, files: str, analyse, write) -> int:
    """Parse ``argv``, then for each model ``analyse(model_name, model, x_q, lengths)`` (a dict,
    stored under ``results["models"][model_name]`` with the data's description as ``"data"``),
    then ``write(out_folder, results)``. ``files`` names the files ``write`` writes (help text)."""
    ap = argparse.ArgumentParser(prog=f"python -m deltahw.bench.{name}", description=description)
    ap.add_argument("models", nargs="+", help="fsdd, watch, example or a model folder")
    ap.add_argument("--out", type=Path, required=True, help=f"folder for {files}")
    args = ap.parse_args(argv)
    return run_cli(_body, args, name, analyse, write)


def _body(args, name, analyse, write) -> int:
    from ..model import load_model
    from .run import _test_data, resolve_model

    specs = [resolve_model(m) for m in args.models]  # every name checked before any long step
    if args.out.exists() and not args.out.is_dir():
        raise DeltahwError(f"--out {args.out} is a file; expected a folder.")
    results = {"models": {}}
    for spec in specs:
        print(f"{name}: {spec.name}: golden model over the test data ...", flush=True)
        model = load_model(spec.model_path)
        xq, lengths, _, desc = _test_data(spec, model)
        results["models"][spec.name] = {**analyse(spec.name, model, xq, lengths), "data": desc}
    write(args.out, results)
    return 0
