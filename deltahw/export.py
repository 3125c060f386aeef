"""BRAM initialisation export: weight and bias banks as ``$readmemh`` files plus a manifest.

``python -m deltahw.export CHECKPOINT --out DIR [--config cfg.json]`` writes::

    DIR/manifest.json          config, formats, bank geometry, file checksums, quantization report
    DIR/weights_bank{b}.mem    one word per line, lanes_per_bank weights per word (lane 0 in the
                               LSBs)
    DIR/biases_bank{b}.mem     accumulator reset values, same lane packing, bias format

The layout is :class:`deltahw.layout.Layout`'s; the file formats, names and the manifest are
:mod:`deltahw.artifacts`'. The folder is written atomically: a failed or interrupted export leaves
no half-written folder (and an existing folder untouched). An existing ``DIR`` is replaced only if
a previous export wrote it (``--force`` overrides that; the working directory and the folder of
the input are never replaced). :func:`load_exported` reads a folder back, checking every file.
"""

from __future__ import annotations

import argparse
import sys

from .artifacts import (
    MANIFEST_KIND,
    ManifestError,
    bank_files,
    build_manifest,
    check_files,
    output_dir,
    read_manifest,
    write_model_files,
)
from .model import QuantizedModel, load_exported
from .util import run_cli

__all__ = [
    "chosen_lines",
    "export_model",
    "load_exported",
    "ManifestError",
    "MANIFEST_KIND",
    "bank_files",
    "build_manifest",
    "check_files",
    "read_manifest",
    "write_model_files",
    "clipping_lines",
    "main",
]


def export_model(model: QuantizedModel, out, force: bool = False, protect=()) -> dict:
    """Export atomically to ``out``; returns the manifest.

    An existing ``out`` is replaced only if it is an earlier export (or with ``force``).
    """
    with output_dir(out, "export", force=force, protect=protect) as tmp:
        manifest = write_model_files(model, tmp)
    return manifest


def clipping_lines(report: dict) -> list[str]:
    """One line per tensor with saturated values (for the CLI summaries)."""
    return [
        f"  {name}: {v['clipped']} of {v['count']} values ({100 * v['clipped'] / v['count']:.2f} "
        f"%) saturated to the {v['format']} range (float values {v['min']:.4g} .. "
        f"{v['max']:.4g})"
        for name, v in report.items()
        if v.get("clipped")
    ]


def chosen_lines(config) -> list[str]:
    """What the tool chose for the user, and how to change it (for the CLI summaries)."""
    lsb = config.act.lsb
    tx = ",".join(f"{v * lsb:g}" for v in config.theta_x)
    th = ",".join(f"{v * lsb:g}" for v in config.theta_h)
    out = [f"  thresholds (real units): theta_x={tx} theta_h={th}"
           + (f" theta_head={config.theta_head * lsb:g}" if config.has_head else "")
           + " (--theta-x/--theta-h/--theta-head; or choose them on your data with "
             "python -m deltahw.calibrate)"]
    if not any(config.theta_x) and not any(config.theta_h) and not config.theta_head:
        out.append("  all thresholds are 0: every delta fires, so the hardware does the dense "
                   "work (op reduction 1x)")
    out.append(f"  hardware: P={config.lanes} MAC lanes, {config.lanes_per_bank} lanes per "
               f"bank, E={config.enc_width} encoder lanes, A={config.act_width} activation units "
               "(--lanes, --lanes-per-bank, --enc-width, --act-width)")
    return out


def main(argv=None) -> int:
    from .util import add_model_arguments

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.export",
        description="Quantize a checkpoint and write the BRAM init files and manifest.",
    )
    add_model_arguments(ap)
    ap.add_argument("--out", required=True,
                    help="output folder (written atomically; an existing folder is replaced only "
                         "if it is an earlier export)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing --out folder even if deltahw did not write it")
    for name in ("lanes", "lanes-per-bank", "enc-width", "act-width"):
        ap.add_argument(
            f"--{name}", type=int, help=f"override the config's {name.replace('-', '_')}"
        )
    args = ap.parse_args(argv)
    return run_cli(_run, args)


def _run(args) -> int:
    from .golden import model_from_arguments

    model = model_from_arguments(args)
    hw = {
        k: getattr(args, k)
        for k in ("lanes", "lanes_per_bank", "enc_width", "act_width")
        if getattr(args, k) is not None
    }
    if hw:
        model = model.with_config(model.config.replace(**hw))
    manifest = export_model(model, args.out, force=args.force, protect=[args.model])
    rep = model.report
    clipped = sum(v["clipped"] for v in rep.values())
    worst = max((v["max_abs_error"] for v in rep.values()), default=0.0)
    g = manifest["geometry"]
    print(f"exported {model.config.summary()}")
    for line in chosen_lines(model.config):
        print(line)
    print(
        f"  {g['weight_banks']} weight banks x {g['weight_depth']} words x "
        f"{g['weight_word_bits']} bits; {clipped} parameters clipped; max quantization error "
        f"{worst:.4g}"
    )
    for line in clipping_lines(rep):
        print(line)
    print(f"  wrote {args.out}/manifest.json and {len(manifest['files'])} .mem files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
