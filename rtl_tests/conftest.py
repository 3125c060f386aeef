"""pytest setup of the RTL regression (``rtl_tests/``): import paths, header and timing summary.

Run with ``python -m pytest rtl_tests`` (``SIM=verilator``, ``WAVES=1``, ``CONFIG=path`` select the
simulator, waveforms and a user's configuration; see :mod:`deltahw.verify.sim`, which holds the
harness so that an installed deltahw can run it too).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Keep this module light: cocotb's assertion rewriting makes pytest load it inside every
# simulation too (the simulators run in rtl_tests/sim_build/...), so nothing heavy (torch, the
# golden model) is imported at module level.

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)


def pytest_report_header(config):
    from deltahw.verify import sim as deltahw_sim

    sim = os.environ.get("SIM", "icarus")
    cfg = os.environ.get("CONFIG", "") or "built-in matrix"
    return [f"deltahw RTL regression: SIM={sim} WAVES={int(deltahw_sim.waves_enabled())} "
            f"CONFIG={cfg} builds in {deltahw_sim.sim_build_root()}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    deltahw_sim = sys.modules.get("deltahw.verify.sim")
    if deltahw_sim is None:
        return
    _RESULTS = deltahw_sim.RESULTS
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("deltahw RTL scenarios")
    cyc = sum(r.get("sim_cycles", 0) for r in _RESULTS)
    wall = sum(r.get("wall_seconds_total", 0) for r in _RESULTS)
    tr.write_line(f"{'case/scenario':34s} {'beats':>7s} {'cycles':>9s} {'wall s':>7s}")
    for r in _RESULTS:
        tr.write_line(f"{r['case'] + '/' + r['scenario']:34s} {r.get('beats_checked', 0):7d} "
                      f"{r.get('sim_cycles', 0):9d} {r.get('wall_seconds_total', 0):7.1f}")
    tr.write_line(f"{len(_RESULTS)} scenarios passed: {cyc} simulated cycles in {wall:.0f} s of "
                  "simulation")
    out = deltahw_sim.sim_build_root() / f"summary-{deltahw_sim.simulator()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_RESULTS, indent=1))
