"""The SoC's fast checks (the whole SoC in LiteX's Verilator simulation is ``make soc-sim``):
LiteX elaborates the SoC with the deltahw window where the firmware expects it, the firmware
(the unchanged C driver + the SoC HAL) compiles warning-free for VexRiscv in both modes, and the
console checker accepts exactly the golden model's outputs and the cycle model's counts."""

from __future__ import annotations

import subprocess

import pytest
import torch

from deltahw.golden import run_golden
from deltahw.model import from_modules

torch.set_num_threads(1)


def _model():
    torch.manual_seed(4)
    return from_modules(torch.nn.GRU(5, 6, 1), torch.nn.Linear(6, 3), lanes=6, act_width=2,
                        enc_width=2, theta_x=(10,), theta_h=(10,))


@pytest.fixture(scope="module")
def csr():
    from deltahw.soc.litex_soc import DELTAHW_ORIGIN, DeltahwSoC, make_platform
    from deltahw.soc.sim import _csr_json

    soc = DeltahwSoC(make_platform("sim"), "sim", 100e6, [], 0x8000)
    c = _csr_json(soc)
    assert c["memories"]["deltahw"]["base"] == DELTAHW_ORIGIN
    assert c["memories"]["rom"]["size"] == 0x8000
    for name in ("uart_rxtx", "uart_txfull", "timer0_uptime_latch", "timer0_uptime_cycles",
                 "sim_finish_finish"):
        assert name in c["csr_registers"]
    return c


@pytest.mark.parametrize("load", [True, False], ids=["load", "bram-init"])
def test_firmware_compiles_for_vexriscv(tmp_path, csr, load):
    from deltahw.soc.firmware import compile_firmware, write_headers

    model = _model()
    x_q = model.quantize_input(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)))[0]
    write_headers(model, x_q, csr, tmp_path / "inc")
    words = compile_firmware(tmp_path / "fw", tmp_path / "inc", csr, 0x8000, load)
    assert 0 < len(words) <= 0x8000 // 4
    assert words[0] & 0x7F == 0x17  # auipc sp: crt0 sets the stack first
    nm = subprocess.run(["riscv64-unknown-elf-nm", str(tmp_path / "fw" / "firmware.elf")],
                        capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[-1] for line in nm.splitlines()}
    assert "deltahw_step" in symbols
    # the weights are in the image (and loaded) only in load mode
    assert ("deltahw_load_params" in symbols) == load
    assert ("deltahw_weights" in symbols) == load


def _console(golden, steps, load=True, **change):
    lines = [f"DELTAHW-SOC steps={steps} width=3 load=1", "INIT rc=0"]
    if load:
        lines.append("LOAD rc=0 cpu=1000 words=20")
    ys, cyc = golden.outputs[0].tolist(), golden.cycles[0].tolist()
    for t in range(steps):
        y, c = list(ys[t]), int(cyc[t])
        if change.get("t") == t:
            y[0] += change.get("dy", 0)
            c += change.get("dc", 0)
        lines.append(f"STEP {t} cpu=900 acc={c} rc=0 y=" + ",".join(map(str, y)))
    lines.append(f"COUNTERS total={sum(map(int, cyc))} timesteps={steps} stall=0 mac_busy=5")
    lines.append("DONE rc=0 uptime=12345")
    return "\n".join(lines) + "\n"


def test_console_check_accepts_golden_and_rejects_any_difference():
    from deltahw.soc.sim import SocError, compare

    model = _model()
    x_q = model.quantize_input(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)))[0]
    g = run_golden(model, x_q)
    ok = compare(_console(g, 5), g, 5, 3, load=True)
    assert ok["outputs_bit_exact"] == "5/5 timesteps"
    assert ok["cycles_match_cycle_model"] == "5/5 timesteps"
    assert ok["cpu_cycles_per_step"]["mean"] == 900
    for bad in ({"t": 2, "dy": 1}, {"t": 4, "dc": -1}):
        with pytest.raises(SocError, match="timestep"):
            compare(_console(g, 5, **bad), g, 5, 3, load=True)
    with pytest.raises(SocError, match="STALL_TOTAL 0 != cycle model 3"):
        compare(_console(g, 5), g, 5, 3, load=True, expected_stall=3)
    assert compare(_console(g, 5), g, 5, 3, load=True, expected_stall=0)["counters"]["stall"] == 0
    with pytest.raises(SocError, match="timestep 4 was not printed"):
        compare(_console(g, 4), g, 5, 3, load=True)
    with pytest.raises(SocError, match="parameter load"):
        compare(_console(g, 5, load=False), g, 5, 3, load=True)
