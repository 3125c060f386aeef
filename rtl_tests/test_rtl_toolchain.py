"""The simulation toolchain and the testbench classes, on a small known design (no core needed).

Amaranth -> Verilog -> ``cocotb_tools.runner`` on the selected simulator (``SIM``), driving
``echo_design.EchoCore`` with the same :class:`deltahw.verify.tb.TB` the core regression uses:
random idle cycles, random backpressure, bus writes and reads; and a broken variant whose stream
protocol violation the testbench must report.
"""

from __future__ import annotations

import shutil

import pytest
from deltahw.verify.sim import (
    BUILD_ARGS,
    TIMESCALE,
    _env_without,
    _make_overrides,
    _verilator_on_path,
    sim_build_root,
    simulator,
)


def _run_echo(broken: bool, elems: int = 3, bits: int = 7):
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner
    from echo_design import EchoCore

    sim = simulator()
    if sim == "verilator":
        _verilator_on_path()
    root = sim_build_root() / sim / f"echo{'-broken' if broken else ''}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    src = root / "echo.v"
    src.write_text(verilog.convert(EchoCore(elems, bits, broken), name="echo"))
    runner = get_runner(sim)
    # No waveforms here even with WAVES=1: they are for the core's scenarios.
    with _env_without("WAVES"), _make_overrides(sim):
        runner.build(sources=[str(src)], hdl_toplevel="echo", build_dir=root / "sim",
                     build_args=BUILD_ARGS[sim], always=True, timescale=TIMESCALE)
        runner.test(hdl_toplevel="echo", test_module="cocotb_echo", build_dir=root / "sim",
                    test_dir=root, results_xml=str(root / "results.xml"),
                    extra_env={"ECHO_ELEMS": str(elems), "ECHO_BITS": str(bits),
                               "ECHO_BROKEN": "1" if broken else "0"})


@pytest.mark.parametrize("broken", [False, True], ids=["good", "broken"])
def test_toolchain_and_testbench(broken):
    _run_echo(broken)
