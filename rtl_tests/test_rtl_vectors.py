"""Checks of the regression's own stimuli and expectations (fast; no simulator, no core).

The RTL regression is only as good as its vectors: these tests make sure the scenarios really
contain what they claim (saturated inputs, nothing firing, thresholds that differ per layer, a
second sequence reset in mid-run, head outputs at the format limits...) and that beat packing
follows the port contract of ``docs/architecture.md``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from deltahw.verify.sim import selected_cases
from deltahw.verify.vectors import CASES as BUILTIN_CASES
from deltahw.verify.vectors import (
    SCENARIOS,
    CoreCase,
    Scenario,
    build_scenario,
    gate_saturation,
    make_model,
    pack_input_beats,
    pack_output_beats,
    unpack_beat,
    write_vectors,
)

from deltahw.config import DeltaGRUConfig, ceil_div
from deltahw.golden import run_golden
from deltahw.layout import Layout

CASES = selected_cases()


def _case_id(case):
    return case.name


def _sequences(sc: Scenario) -> list[dict]:
    return [o for o in sc.ops if o["op"] == "sequence"]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_beat_packing(case):
    cfg = case.config
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.integers(cfg.act.min_int, cfg.act.max_int + 1, (3, cfg.input_size)))
    beats = pack_input_beats(cfg, x, rng, first=True)
    E, ab = cfg.enc_width, cfg.act.bits
    assert all(len(b) == ceil_div(cfg.input_size, E) for b in beats)
    for t, step in enumerate(beats):
        vals = []
        for b, word in enumerate(step):
            assert word >> (E * ab + 1) == 0
            v, first = unpack_beat(word, E, ab)
            assert first == int(t == 0 and b == 0)
            vals += v
        assert vals[: cfg.input_size] == x[t].tolist()
    W, A = cfg.output_width, cfg.act_width
    y = torch.as_tensor(rng.integers(cfg.act.min_int, cfg.act.max_int + 1, (2, W)))
    for t, step in enumerate(pack_output_beats(cfg, y)):
        assert len(step) == ceil_div(W, A)
        vals = []
        for b, word in enumerate(step):
            v, last = unpack_beat(word, A, ab)
            assert last == int(b == len(step) - 1)
            vals += v
        assert vals[:W] == y[t].tolist() and not any(vals[W:])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_models_are_not_saturated(case):
    """Random test models must keep their gates mostly in the tables' sloped region."""
    model = make_model(case)
    rng = np.random.default_rng(3)
    cfg = model.config
    x = torch.as_tensor(rng.integers(-(1 << cfg.act.frac), 1 << cfg.act.frac,
                                     (8, cfg.input_size)))
    sat = gate_saturation(model, x)
    assert max(sat.values()) < 0.5, f"gates saturate too often: {sat}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_scenarios_cover_what_they_claim(case, tmp_path):
    model = make_model(case)
    cfg = model.config
    scs = {name: build_scenario(case, name, model) for name in SCENARIOS}
    for name, sc in scs.items():
        for seq in _sequences(sc):
            T = len(seq["inputs"])
            assert len(seq["outputs"]) == len(seq["cycles"]) == len(seq["fired_x"]) == T
            # first=1 exactly on the first beat of the sequence
            flags = [w >> (cfg.enc_width * cfg.act.bits) for step in seq["inputs"] for w in step]
            assert flags[0] == 1 and not any(flags[1:]), name
        write_vectors(case, sc, tmp_path / f"{name}.json", seed=1)
        json.loads((tmp_path / f"{name}.json").read_text())

    def fired(sc):
        return [sum(f) for s in _sequences(sc) for f in s["fired_x"] + s["fired_h"]]

    assert not any(fired(scs["silent"])), "the silent scenario fired a delta"
    dense = _sequences(scs["dense"])[0]
    L = cfg.num_layers
    for t in range(len(dense["fired_x"])):
        for l in range(L):
            assert dense["fired_x"][t][l] == cfg.layer_input_size(l)
    typical = _sequences(scs["typical"])[0]
    n = sum(sum(f) for f in typical["fired_x"] + typical["fired_h"])
    full = len(typical["fired_x"]) * sum(cfg.layer_input_size(l) + cfg.hidden_size
                                         for l in range(L))
    assert 0.02 < n / full < 0.9, f"typical thresholds fire {n / full:.0%} of the deltas"
    # Inputs at both format limits, including full-scale jumps between them.
    sat_vals = set()
    for step in _sequences(scs["saturation"])[0]["inputs"]:
        vals = []
        for w in step:
            vals += unpack_beat(w, cfg.enc_width, cfg.act.bits)[0]
        sat_vals |= set(vals[: cfg.input_size])
    assert {cfg.act.min_int, cfg.act.max_int} <= sat_vals
    # Input deltas of exactly theta (fire) and theta - 1 (do not) occur, or the scenario says
    # which of them this act format cannot produce.
    edge = _sequences(scs["threshold_edge"])[0]
    tx = dict((o["reg"], o["value"]) for o in scs["threshold_edge"].ops if o["op"] == "write")
    theta = tx["THETA_X0"]
    prev = np.zeros(cfg.input_size, dtype=np.int64)
    seen = set()
    for step in edge["inputs"]:
        vals = []
        for w in step:
            vals += unpack_beat(w, cfg.enc_width, cfg.act.bits)[0]
        x = np.array(vals[: cfg.input_size])
        d = np.abs(x - prev)
        seen |= set(d.tolist())
        prev = np.where(d >= theta, x, prev)
    for d in (theta, theta - 1):
        assert d in seen or any(f"= {d}:" in w for w in scs["threshold_edge"].not_exercised), (
            f"delta {d} neither produced nor declared as not exercised")
    # A sequence reset in the middle of a run: several streamed sequences back to back.
    mid = [s for s in _sequences(scs["reset_midrun"])]
    assert len(mid) >= 2 and not any(s["lockstep"] for s in mid)
    # The threshold change writes different values per sequence (and per layer when L > 1).
    writes = [(o["reg"], o["value"]) for o in scs["theta_change"].ops if o["op"] == "write"]
    per_seq = len(writes) // 3
    declared = scs["theta_change"].not_exercised
    assert writes[:per_seq] != writes[per_seq: 2 * per_seq] or declared
    if L > 1:
        b = dict(writes[per_seq: 2 * per_seq])
        assert b["THETA_X0"] != b["THETA_X1"] or declared
    # Parameter writes cover every lane's weight and bias memory.
    lay = Layout(cfg)
    pw = [o for o in scs["param_write"].ops if o["op"] == "param_write"]
    assert len(pw) == 2 * lay.lanes
    assert {len(o["data"]) for o in pw if o["kind"] == 0} == {lay.weight_depth}
    assert {len(o["data"]) for o in pw if o["kind"] == 1} == {lay.acc_depth}
    # The other models really differ from the built one.
    assert scs["swap_weights"].test_dir_model is not None
    assert not torch.equal(scs["swap_weights"].test_dir_model.layers[0].w_x, model.layers[0].w_x)


def test_head_outputs_reach_the_format_limits():
    """odd_formats has a head whose outputs saturate: the RTL must saturate, not wrap."""
    case = next(c for c in BUILTIN_CASES if c.name == "odd_formats")
    model = make_model(case)
    cfg = model.config
    hit = set()
    for name in ("dense", "saturation", "typical"):
        for seq in _sequences(build_scenario(case, name, model)):
            for row in seq["values"]:
                hit |= {v for v in row if v in (cfg.act.min_int, cfg.act.max_int)}
    assert hit, "no head output reached the act format's limits"


def test_golden_of_vectors_matches_a_fresh_run():
    """The expected beats are the golden model's outputs (guards the packing against drift)."""
    case = CASES[0]
    model = make_model(case)
    sc = build_scenario(case, "typical", model)
    seq = _sequences(sc)[0]
    cfg = model.config
    x = []
    for step in seq["inputs"]:
        vals = []
        for w in step:
            vals += unpack_beat(w, cfg.enc_width, cfg.act.bits)[0]
        x.append(vals[: cfg.input_size])
    writes = {o["reg"]: o["value"] for o in sc.ops if o["op"] == "write"}
    L = cfg.num_layers
    m = model.with_config(cfg.with_thresholds(
        theta_x=tuple(writes[f"THETA_X{l}"] for l in range(L)),
        theta_h=tuple(writes[f"THETA_H{l}"] for l in range(L)),
        theta_head=writes.get("THETA_HEAD", cfg.theta_head)))
    res = run_golden(m, torch.tensor(x, dtype=torch.int64))
    assert pack_output_beats(cfg, res.outputs[0]) == seq["outputs"]
    assert res.cycles[0].tolist() == seq["cycles"]


@pytest.mark.parametrize("kw", [
    dict(input_size=1, hidden_size=3, lanes=6, act=(8, 3), sigmoid_in=(8, 3), tanh_in=(8, 3)),
    dict(input_size=2, hidden_size=4, num_layers=2, output_size=1, lanes=6, act=(6, 3),
         sigmoid_in=(6, 3), tanh_in=(6, 3)),
    dict(input_size=1, hidden_size=2, lanes=6, act=(2, 1), sigmoid_in=(4, 1), tanh_in=(4, 1)),
], ids=["I1_q3", "L2_q3", "act2bits"])
def test_edge_and_theta_change_on_small_formats(kw):
    """Small I and 3 fraction bits: the stimulus still produces deltas theta and theta - 1 and two
    different threshold sets, or (a 2-bit act format) says what it cannot exercise."""
    cfg = DeltaGRUConfig(**kw)
    case = CoreCase("small_format", cfg, seed=5, timesteps=4)
    model = make_model(case)
    edge = build_scenario(case, "threshold_edge", model)
    theta = next(o["value"] for o in edge.ops if o["op"] == "write" and o["reg"] == "THETA_X0")
    seen = set(edge.notes["edge_deltas"])
    for d in (theta, theta - 1):
        assert d in seen or any(f"= {d}:" in w for w in edge.not_exercised)
    if cfg.act.bits > 2:
        assert {theta, theta - 1} <= seen and not edge.not_exercised
    change = build_scenario(case, "theta_change", model)
    writes = [(o["reg"], o["value"]) for o in change.ops if o["op"] == "write"]
    n = len(writes) // 3
    a, b = dict(writes[:n]), dict(writes[n:2 * n])
    if cfg.act.bits > 2:
        assert all(a[k] != b[k] for k in a) and not change.not_exercised
        if cfg.num_layers > 1:
            assert b["THETA_X0"] != b["THETA_X1"]
    else:
        assert a != b or change.not_exercised


def test_stream_scenario_on_an_input_bound_config():
    """Fuzz seed 23001, configuration 8: 24 input beats per vector beside timesteps of 15 cycles.
    Streamed inputs come late there (stall cycles that are correct), so the stream scenario must
    not claim zero stall: it says so and checks STALL_TOTAL against the testbench's busy-cycle
    count instead; a configuration whose input keeps up keeps the zero-stall claim."""
    from deltahw.verify.vectors import input_keeps_up

    cfg = DeltaGRUConfig(input_size=24, hidden_size=7, lanes=12, lanes_per_bank=2, act=(12, 7),
                         weight=(8, 6), bias=(23, 9), acc_bits=28, sigmoid_in=(7, 3),
                         tanh_in=(6, 3), enc_width=1, act_width=4, theta_x=(5,), theta_h=(11,))
    assert not input_keeps_up(cfg)
    case = CoreCase("input_bound", cfg, seed=3, timesteps=6)
    model = make_model(case)
    sc = build_scenario(case, "stream", model)
    (totals,) = [o for o in sc.ops if o["op"] == "totals"]
    (check,) = [o for o in sc.ops if o["op"] == "stall_check"]
    assert not totals["stall_zero"]
    assert check["hold_cycles"] == 0 and check["backpressure"] == 0.0
    assert check["sequences"] == _sequences(sc)
    assert any("24 beats" in w for w in sc.not_exercised)
    regs = build_scenario(case, "registers", model)
    assert not next(o for o in regs.ops if o["op"] == "totals")["stall_zero"]
    assert any("STALL_TOTAL = 0" in w for w in regs.not_exercised)
    # The built-in cases all keep up: their stream scenarios claim zero stall, unchanged.
    for builtin in BUILTIN_CASES:
        assert input_keeps_up(builtin.config), builtin.name
        sc = build_scenario(builtin, "stream", make_model(builtin))
        assert [o["op"] for o in sc.ops].count("stall_check") == 0
        assert next(o for o in sc.ops if o["op"] == "totals")["stall_zero"]
