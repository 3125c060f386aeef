"""BRAM initialisation export: weight and bias banks as ``$readmemh`` files plus a manifest.

``python -m deltahw.export CHECKPOINT --out DIR [--config cfg.json]`` writes::

    DIR/manifest.json          config, formats, bank geometry, file checksums, quantization report
    DIR/weights_bank{b}.mem    one word per line, lanes_per_bank weights per word (lane 0 in the
    LSBs)
    DIR/biases_bank{b}.mem     accumulator reset values, same lane packing, bias format

The layout is :class:`deltahw.layout.Layout`'s. The folder is written atomically: a failed export
leaves no half-written folder (and an existing folder untouched). :func:`load_exported` reads a
folder
back, checking lengths and checksums, so the golden model can run from it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

from .errors import DeltahwError
from .config import ConfigError, DeltaGRUConfig
from .layout import Layout
from .model import ImportError_, LayerParams, QuantizedModel
from .util import atomic_dir

__all__ = ["export_model", "load_exported", "ManifestError", "MANIFEST_KIND", "main"]

MANIFEST_KIND = "deltahw-model"


class ManifestError(DeltahwError, ValueError):
    """An exported folder is inconsistent (missing file, wrong length, checksum mismatch)."""


def _mem_text(words: list[int], bits: int, header: str) -> str:
    digits = -(-bits // 4)
    lines = [f"// {header}"]
    lines += [f"{w:0{digits}x}" for w in words]
    return "\n".join(lines) + "\n"


def _parse_mem(path: Path, bits: int) -> list[int]:
    words = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        try:
            w = int(line, 16)
        except ValueError:
            raise ManifestError(f"{path}:{n}: '{line}' is not a hexadecimal word.") from None
        if w >> bits:
            raise ManifestError(f"{path}:{n}: word {line} does not fit in {bits} bits.")
        words.append(w)
    return words


def bank_files(model: QuantizedModel) -> dict[str, tuple[str, int, int]]:
    """Name -> (text, word bits, depth) of every init file of a model, in the hardware layout."""
    cfg = model.config
    lay = Layout(cfg)
    files = {}
    wbanks = lay.to_bank_words(lay.lane_weights(model), cfg.weight.bits)
    bbanks = lay.to_bank_words(lay.lane_biases(model), cfg.bias.bits)
    G = cfg.lanes_per_bank
    kinds = (
        ("weights", wbanks, cfg.weight, lay.weight_word_bits),
        ("biases", bbanks, cfg.bias, lay.bias_word_bits),
    )
    for kind, banks, fmt, word_bits in kinds:
        for b, words in enumerate(banks):
            hdr = (
                f"deltahw {kind} bank {b}: lanes {b * G}..{b * G + G - 1}, {G} x "
                f"{fmt.name()} per word, depth {len(words)}"
            )
            files[f"{kind}_bank{b}.mem"] = (_mem_text(words, word_bits, hdr), word_bits, len(words))
    return files


def build_manifest(model: QuantizedModel, files: dict) -> dict:
    cfg = model.config
    return {
        "kind": MANIFEST_KIND,
        "format_version": 1,
        "config": cfg.to_dict(),
        "formats": {
            "act": cfg.act.name(),
            "weight": cfg.weight.name(),
            "bias": cfg.bias.name(),
            "acc": f"{cfg.acc_bits} bits, {cfg.acc_frac} fraction bits",
            "sigmoid_in": cfg.sigmoid_in.name(),
            "tanh_in": cfg.tanh_in.name(),
        },
        "geometry": Layout(cfg).geometry(),
        "files": {
            name: {
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
                "word_bits": bits,
                "depth": depth,
            }
            for name, (text, bits, depth) in sorted(files.items())
        },
        "quantization": model.report,
        "input_mean": None if model.input_mean is None else model.input_mean.tolist(),
        "input_std": None if model.input_std is None else model.input_std.tolist(),
        "meta": json.loads(json.dumps(model.meta, default=str)),
    }


def write_model_files(model: QuantizedModel, folder: Path) -> dict:
    """Write init files and manifest into an existing folder (not atomic); return the manifest."""
    files = bank_files(model)
    for name, (text, _, _) in files.items():
        (folder / name).write_text(text)
    manifest = build_manifest(model, files)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_model(model: QuantizedModel, out) -> dict:
    """Export atomically to ``out``; returns the manifest."""
    with atomic_dir(Path(out)) as tmp:
        manifest = write_model_files(model, tmp)
    return manifest


def read_manifest(folder: Path) -> dict:
    mpath = Path(folder) / "manifest.json"
    if not mpath.is_file():
        raise ManifestError(f"{folder} is not an exported model folder: it has no manifest.json.")
    try:
        manifest = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ManifestError(f"{mpath} is not valid JSON: {e}.") from None
    if manifest.get("kind") != MANIFEST_KIND:
        raise ManifestError(
            f"{mpath} is not a deltahw model manifest (kind={manifest.get('kind')})."
        )
    return manifest


def check_files(folder: Path, manifest: dict, config: DeltaGRUConfig) -> None:
    """Check that every init file exists with the length and checksum the manifest states."""
    lay = Layout(config)
    expect = {
        f"weights_bank{b}.mem": (lay.weight_word_bits, lay.weight_depth)
        for b in range(lay.num_banks)
    }
    expect.update(
        {f"biases_bank{b}.mem": (lay.bias_word_bits, lay.acc_depth) for b in range(lay.num_banks)}
    )
    listed = manifest.get("files", {})
    for name, (bits, depth) in expect.items():
        path = folder / name
        if name not in listed:
            raise ManifestError(
                f"The manifest in {folder} does not list {name}, which the config "
                f"({config.summary()}) requires."
            )
        if not path.is_file():
            raise ManifestError(f"{path} is missing.")
        words = _parse_mem(path, bits)
        if len(words) != depth:
            raise ManifestError(f"{path} has {len(words)} words; the layout needs {depth}.")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != listed[name]["sha256"]:
            raise ManifestError(
                f"{path} does not match the checksum in the manifest; it was changed after export."
            )


def load_exported(folder) -> QuantizedModel:
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        cfg = DeltaGRUConfig.from_dict(manifest["config"])
    except (KeyError, ConfigError) as e:
        raise ManifestError(f"The manifest in {folder} has an invalid config: {e}") from None
    check_files(folder, manifest, cfg)
    lay = Layout(cfg)
    wb = [
        _parse_mem(folder / f"weights_bank{b}.mem", lay.weight_word_bits)
        for b in range(lay.num_banks)
    ]
    bb = [
        _parse_mem(folder / f"biases_bank{b}.mem", lay.bias_word_bits) for b in range(lay.num_banks)
    ]
    H = cfg.hidden_size
    z = torch.zeros(0, dtype=torch.int64)
    model = QuantizedModel(cfg, [LayerParams(z, z, z, z, z, z) for _ in range(cfg.num_layers)])
    lay.unpack_weights(lay.from_bank_words(wb, cfg.weight.bits), model)
    lay.unpack_biases(lay.from_bank_words(bb, cfg.bias.bits), model)
    assert all(p.b_r.shape == (H,) for p in model.layers)
    model.report = manifest.get("quantization", {})
    model.meta = manifest.get("meta", {})
    if manifest.get("input_mean") is not None:
        model.input_mean = torch.tensor(manifest["input_mean"], dtype=torch.float32)
        model.input_std = torch.tensor(manifest["input_std"], dtype=torch.float32)
    return model


def main(argv=None) -> int:
    from .golden import add_model_arguments, model_from_arguments

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.export",
        description="Quantize a checkpoint and write the BRAM init files and manifest.",
    )
    add_model_arguments(ap)
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    for name in ("lanes", "lanes-per-bank", "enc-width", "act-width"):
        ap.add_argument(
            f"--{name}", type=int, help=f"override the config's {name.replace('-', '_')}"
        )
    args = ap.parse_args(argv)
    try:
        model = model_from_arguments(args)
        hw = {
            k: getattr(args, k)
            for k in ("lanes", "lanes_per_bank", "enc_width", "act_width")
            if getattr(args, k) is not None
        }
        if hw:
            model = model.with_config(model.config.replace(**hw))
        manifest = export_model(model, args.out)
    except (ValueError, ImportError_) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rep = model.report
    clipped = sum(v["clipped"] for v in rep.values())
    worst = max((v["max_abs_error"] for v in rep.values()), default=0.0)
    g = manifest["geometry"]
    print(f"exported {model.config.summary()}")
    print(
        f"  {g['weight_banks']} weight banks x {g['weight_depth']} words x "
        f"{g['weight_word_bits']} bits; {clipped} parameters clipped; max quantization error "
        f"{worst:.4g}"
    )
    print(f"  wrote {args.out}/manifest.json and {len(manifest['files'])} .mem files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
