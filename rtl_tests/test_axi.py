"""Regression of the AXI4 core (``deltahw_axi``) with a real AXI VIP (cocotbext-axi).

One pytest test per parameter combination (network x pause setting), each generated and compiled
in its own build directory ``rtl_tests/sim_build/axi/<sim>/<combination>/`` (Forencich style;
``SIM=icarus`` (default) or ``SIM=verilator``). For every combination:

* the RTL is generated with ``--interface axi`` from the network's *shape* only: all weights and
  biases in the BRAMs are zero and the thresholds are not the network's, so the outputs can only
  be right if the testbench's run-time loading over AXI4-Lite (``PARAM_SEL``/``PARAM_ADDR``/
  ``PARAM_DATA``, ``THETA_*``) works;
* the expectations (output bytes, TUSER flags, per-timestep ``CYCLES_LAST``/``FIRED_LAST`` and the
  ``CYCLES_TOTAL``/``TIMESTEPS``/``MAC_BUSY`` totals) come from the integer golden model and the
  cycle model, computed here and handed to ``cocotb_axi.py`` as JSON;
* the fsdd network runs real utterances of the ``models/fsdd`` test split; the ``odd_formats``
  network (10-bit activations in 16-bit lanes, 3 input beats with a padding lane, a head) runs
  slowly varying random sequences.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deltahw import regmap
from deltahw.config import ceil_div
from deltahw.verify.sim import (
    BUILD_ARGS,
    TIMESCALE,
    _make_overrides,
    _verilator_on_path,
    simulator,
)
from deltahw.verify.vectors import CASES, _sequence_op, _smooth_inputs, make_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FSDD = REPO / "models" / "fsdd" / "export"

#: Pause settings (probability that a cycle pauses): source = s_axis TVALID held low,
#: sink = m_axis TREADY held low.
PAUSES = {
    "nopause": (0.0, 0.0),
    "src": (0.5, 0.0),
    "sink": (0.0, 0.6),
    "both": (0.3, 0.5),
}
#: (network, pause) combinations: every pause setting on one network or the other (the fsdd runs
#: load 18k parameter words over AXI4-Lite each, a few minutes on Icarus).
COMBOS = [("fsdd", "nopause"), ("fsdd", "both"), ("odd_formats", "src"), ("odd_formats", "sink")]
#: fsdd test-split utterances: the first runs lock-step (counters read after every timestep),
#: the others stream back to back.
FSDD_UTTERANCES = range(6)


def _build_root() -> Path:
    return Path(os.environ.get("SIM_BUILD", HERE / "sim_build")).resolve() / "axi"


def _model(network: str):
    from deltahw.model import load_model

    if network == "fsdd":
        return load_model(FSDD)
    return make_model(next(c for c in CASES if c.name == network))


def _sequences(network: str, model) -> tuple[list[torch.Tensor], str]:
    if network == "fsdd":
        from deltahw.train.data import load_dataset
        from deltahw.train.evaluate import golden_inputs

        x, lengths, _ = golden_inputs(model, load_dataset("fsdd"), "test")
        seqs = [x[i, : int(lengths[i])] for i in FSDD_UTTERANCES]
        return seqs, f"fsdd test split utterances {list(FSDD_UTTERANCES)}"
    rng = np.random.default_rng(5)
    case = next(c for c in CASES if c.name == network)
    return ([_smooth_inputs(model.config, n, rng) for n in (case.timesteps, 9, 12)],
            "smooth random walks")


def _lane(v: int, lb: int) -> bytes:
    return (int(v) & ((1 << lb) - 1)).to_bytes(lb // 8, "little")


def axi_frames(cfg, x_q: torch.Tensor, y: list[list[int]], rng) -> tuple[list[str], list[str]]:
    """Input and output packets of a sequence as hex strings (one packet per timestep).

    Input lanes hold the elements sign-extended to the lane width; padding lanes past I carry
    random bits (the core must ignore them). Output lanes past W are 0.
    """
    lb = 8 * ceil_div(cfg.act.bits, 8)
    E, A, I, W = cfg.enc_width, cfg.act_width, cfg.input_size, cfg.output_width
    ins, outs = [], []
    for t in range(x_q.shape[0]):
        row = [int(v) for v in x_q[t]]
        pad = [int(rng.integers(0, 1 << lb)) for _ in range(ceil_div(I, E) * E - I)]
        ins.append(b"".join(_lane(v, lb) for v in row + pad).hex())
        orow = list(y[t]) + [0] * (ceil_div(W, A) * A - W)
        outs.append(b"".join(_lane(v, lb) for v in orow).hex())
    return ins, outs


def _param_writes(model) -> list[dict]:
    from deltahw.layout import Layout

    lay = Layout(model.config)
    sel = regmap.by_name(model.config.num_layers)["PARAM_SEL"]
    off = {f.name: f.offset for f in sel.fields}
    out = []
    for kind, table in ((regmap.PARAM_KIND_WEIGHT, lay.lane_weights(model)),
                        (regmap.PARAM_KIND_BIAS, lay.lane_biases(model))):
        for lane in range(lay.lanes):
            out.append({"kind": kind, "lane": lane,
                        "sel": kind << off["kind"] | lane << off["lane"],
                        "data": [int(v) & 0xFFFFFFFF for v in table[:, lane]]})
    return out


def _thetas(cfg) -> dict:
    L = cfg.num_layers
    return {**{f"THETA_X{l}": cfg.theta_x[l] for l in range(L)},
            **{f"THETA_H{l}": cfg.theta_h[l] for l in range(L)},
            **({"THETA_HEAD": cfg.theta_head} if cfg.has_head else {})}


def _document(network: str, pause: str, model, power_on) -> dict:
    cfg = model.config
    rng = np.random.default_rng(11)
    seqs, origin = _sequences(network, model)
    sequences = []
    for k, x in enumerate(seqs):
        op, _ = _sequence_op(model, x, f"S{k}", k == 0, rng)
        ins, outs = axi_frames(cfg, x, op["values"], rng)
        sequences.append({"label": op["label"], "lockstep": op["lockstep"], "in": ins,
                          "out": outs, "cycles": op["cycles"], "fired_x": op["fired_x"],
                          "fired_h": op["fired_h"], "fired_head": op["fired_head"],
                          "mac_busy": op["mac_busy"], "stall_lockstep": op["stall_lockstep"],
                          "stall_streamed": op["stall_streamed"]})
    regs = {r.name: 4 * r.addr for r in regmap.register_map(cfg.num_layers)}
    regs.update({r.name: 4 * r.addr for r in regmap.axi_register_map()})
    irq = {f.name: f.offset for f in regmap.axi_by_name()["IRQ_STATUS"].fields}
    src, sink = PAUSES[pause]
    return {
        "network": network, "pause": pause, "origin": origin, "summary": cfg.summary(),
        "src_pause": src, "sink_pause": sink, "seed": 1 + list(PAUSES).index(pause),
        "regs": regs, "irq_bits": irq, "num_layers": cfg.num_layers, "has_head": cfg.has_head,
        "in_beats": ceil_div(cfg.input_size, cfg.enc_width),
        "theta": _thetas(cfg), "theta_power_on": _thetas(power_on.config),
        "id_magic": regmap.ID_MAGIC, "version": regmap.VERSION,
        "clear_counters": 1 << regmap.by_name(cfg.num_layers)["CTRL"].fields[0].offset,
        "lane_bytes": ceil_div(cfg.act.bits, 8),
        "params": _param_writes(model),
        "sequences": sequences,
    }


def _power_on_model(model):
    """The model the RTL is generated from: zero parameters and thresholds unlike the network's."""
    from deltahw.generate import zero_model

    cfg = model.config
    L = cfg.num_layers
    other = cfg.with_thresholds(theta_x=tuple(t + 3 for t in cfg.theta_x),
                                theta_h=tuple(t + 5 for t in cfg.theta_h),
                                theta_head=cfg.theta_head + 7)
    assert other.theta_x != cfg.theta_x and L >= 1
    return zero_model(other)


def _simulate(network: str, pause: str, name: str, corrupt=None) -> tuple[dict, dict]:
    """Generate, build (own directory) and run one combination; returns (report, vectors)."""
    from cocotb_tools.runner import get_runner

    from deltahw.gateware.axi import AXI_TOP_NAME
    from deltahw.generate import generate

    sim = simulator()
    root = _build_root() / sim / name
    if root.exists():
        shutil.rmtree(root)
    rtl, build = root / "rtl", root / "sim"
    model = _model(network)
    t0 = time.time()
    power_on = _power_on_model(model)
    generate(power_on, rtl, interface="axi")
    doc = _document(network, pause, model, power_on)
    if corrupt is not None:
        corrupt(doc)
    vectors, report_path = root / "vectors.json", root / "report.json"
    vectors.write_text(json.dumps(doc))
    if sim == "verilator":
        _verilator_on_path()
    runner = get_runner(sim)
    with _make_overrides(sim):
        runner.build(sources=[str(p) for p in sorted(rtl.glob("*.v"))], hdl_toplevel=AXI_TOP_NAME,
                     build_dir=build, build_args=list(BUILD_ARGS[sim]), always=True,
                     timescale=TIMESCALE)
    t_build = time.time() - t0
    try:
        runner.test(hdl_toplevel=AXI_TOP_NAME, hdl_toplevel_lang="verilog",
                    test_module="cocotb_axi", testcase="run_axi", build_dir=build,
                    test_dir=rtl, timescale=TIMESCALE,
                    extra_env={"DELTAHW_VECTORS": str(vectors), "DELTAHW_REPORT": str(report_path)},
                    results_xml=str(root / "results.xml"))
    except SystemExit:  # cocotb's runner exits on failed tests under pytest; the report says why
        pass
    assert report_path.exists(), f"the simulation wrote no report ({root}); see its output"
    rep = json.loads(report_path.read_text())
    rep.update({"sim": sim, "build_seconds": round(t_build, 1),
                "wall_seconds_total": round(time.time() - t0, 1)})
    report_path.write_text(json.dumps(rep, indent=1))
    return rep, doc


@pytest.mark.parametrize(("network", "pause"), COMBOS, ids=[f"{n}-{p}" for n, p in COMBOS])
def test_axi(network, pause):
    """AXI4 core: weights over AXI4-Lite, real sequences over AXI4-Stream, bit- and cycle-exact."""
    name = f"{network}-{pause}"
    rep, doc = _simulate(network, pause, name)
    summary = _build_root() / f"summary-{rep['sim']}.json"
    old = json.loads(summary.read_text()) if summary.exists() else {}
    old[name] = {k: v for k, v in rep.items() if k != "errors"}
    summary.write_text(json.dumps(old, indent=1))
    errors = rep["errors"]
    assert not errors, f"{len(errors)} error(s):\n  " + "\n  ".join(errors[:20])
    n_steps = sum(len(s["in"]) for s in doc["sequences"])
    assert rep.get("timesteps_checked") == n_steps
    assert rep["param_words"] == sum(len(p["data"]) for p in doc["params"]) > 0


def test_axi_catches_mismatches():
    """Corrupted expectations must fail, each reported with its sequence and timestep: one bit of
    a lock-step output packet, one sign-extension bit of a streamed one, one CYCLES_LAST."""
    hits = {}

    def corrupt(doc):
        s0, s1 = doc["sequences"][0], doc["sequences"][1]
        b = bytearray.fromhex(s0["out"][1])
        b[0] ^= 1
        s0["out"][1] = b.hex()
        b = bytearray.fromhex(s1["out"][2])
        b[-1] ^= 0x80
        s1["out"][2] = b.hex()
        s0["cycles"][2] += 1
        hits.update(cycles=s0["cycles"][2])

    rep, _ = _simulate("odd_formats", "both", "selftest", corrupt)
    errs = "\n".join(rep["errors"])
    assert "sequence S0 timestep 1: output packet differs" in errs, errs
    assert "sequence S1 timestep 2: output packet differs" in errs, errs
    assert f"sequence S0 timestep 2: CYCLES_LAST expected {hits['cycles']}" in errs, errs
    # the corrupted cycle count also makes the total wrong; nothing else may be reported
    assert "totals: CYCLES_TOTAL" in errs, errs
    assert len(rep["errors"]) == 4, errs
