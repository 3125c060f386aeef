"""Smoke test of ``python -m deltahw.bench --quick`` on a tiny random model (Icarus, ~1 minute).

Runs the bench's quick path end to end (golden model, RTL simulation with the hardware counters,
resource estimates, CPU reference, report) and checks the report's structure, and that every
measured ``CYCLES_LAST`` equals the golden cycle model: recomputed here independently with
:func:`deltahw.golden.run_golden` on the very sequences the bench simulated.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from deltahw import cycles
from deltahw.bench import report as bench_report
from deltahw.bench import run as bench_run
from deltahw.bench.rtl import decompose
from deltahw.bench.whatif import act_width_sweep, choose_act_width, projected_cycles, what_if
from deltahw.config import DeltaGRUConfig
from deltahw.golden import run_golden
from deltahw.model import load_model, save_checkpoint

from conftest import make_gru, random_inputs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_model_folder(folder, meta=None, labels=(0, 1, 0)):
    """A random I=3, H=8, O=2 delta-GRU (6 lanes) with smooth test inputs and labels."""
    gru, head = make_gru(3, 8, 1, 2, seed=7, scale=2.0)
    cfg = DeltaGRUConfig(3, 8, 1, 2, theta_x=(10,), theta_h=(6,), theta_head=4, lanes=6,
                         lanes_per_bank=3, act_width=1, enc_width=2)
    folder.mkdir(parents=True)
    save_checkpoint(folder / "model.pt", cfg, gru.state_dict(), head.state_dict(),
                    meta=meta or {"test": "bench smoke"})
    x = random_inputs(3, 10, 3, seed=5, scale=1.0, smooth=True).float().numpy()
    np.save(folder / "input.npy", x)
    (folder / "labels.json").write_text(json.dumps(list(labels)))
    return folder


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    if shutil.which("iverilog") is None:
        pytest.fail("iverilog is not installed; `make setup` installs it (the bench smoke test "
                    "needs a simulator).")
    root = tmp_path_factory.mktemp("bench")
    folder = _tiny_model_folder(root / "tiny")
    out = root / "report"
    mp = pytest.MonkeyPatch()
    mp.setenv("SIM_BUILD", str(root / "sim_build"))
    try:
        rc = bench_run.main(["--quick", "--models", str(folder), "--sim", "icarus",
                             "--out", str(out), "--build-dir", str(root / "build")])
    finally:
        mp.undo()
    assert rc == 0
    return folder, out, json.loads((out / "results.json").read_text())


def test_report_files_and_structure(quick_report):
    _, out, res = quick_report
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.startswith(".")], f"temporary files left: {names}"
    for n in ("results.json", "README.md", "cycles_tiny.png", "timeline_tiny.png", "phases.png",
              "lanes.png", "peers.png"):
        assert n in names, n
        if n.endswith(".png"):
            assert (out / n).read_bytes()[:8] == PNG_MAGIC, n
    assert res["format"] == bench_run.RESULTS_FORMAT
    assert res["mode"] == "quick"
    assert sorted(res["files"]) == sorted(names)
    assert {p["name"] for p in res["published"]} >= {"EdgeDRNN", "DeltaRNN", "Spartus",
                                                     "hls4ml GRU"}
    m = res["models"]["tiny"]
    for key in bench_report.REQUIRED_KEYS:
        assert key in m, key
    assert m["config"]["lanes"] == 6
    g = m["golden"]
    assert g["sequences"] == 3 and g["timesteps"] == 30
    assert g["op_reduction"] > 1.0
    assert g["accuracy"] is not None and 0.0 <= g["accuracy"] <= 1.0
    # Quick mode: estimates only, labelled as such; P sweep contains the model's own P.
    assert m["hardware_mode"] == "estimate"
    lanes = [r["lanes"] for r in m["hardware"]]
    assert 6 in lanes and lanes == sorted(lanes)
    for row in m["hardware"]:
        assert row["artix"] is None and row["ecp5"] is None and row["perf_ecp5_fmax"] is None
        assert set(row["estimate"]) == {"A7-35T", "A7-100T", "ECP5-85F"}
        assert row["perf_artix_assumed"]["clock_mhz"] == 100.0
    cpu = m["cpu"]
    assert cpu["torch_1thread"]["latency_us"] > 0
    assert cpu["golden"]["timesteps_s"] > 0
    text = (out / "README.md").read_text()
    for needle in ("## Summary", "Quick mode", "estimate", "assumed", "EdgeDRNN",
                   "## 6. Discussion", "tiny"):
        assert needle in text, needle


def test_measured_cycles_equal_the_golden_cycle_model(quick_report):
    folder, _, res = quick_report
    m = res["models"]["tiny"]
    r = m["rtl"]
    pt = r["per_timestep"]
    assert r["simulator"] == "icarus"
    assert r["matches_cycle_model"] is True
    assert pt["delta_cycles"] == pt["model_cycles"]
    assert pt["dense_cycles"] == pt["dense_model_cycles"]
    # Independently: the golden model on the very sequences the bench simulated.
    model = load_model(folder / "model.pt")
    cfg = model.config
    x = np.load(folder / "input.npy")
    xq, _ = model.quantize_input(torch.from_numpy(x))
    sample = r["sample"]
    assert len(sample["sequence_indices"]) == 2 and r["timesteps"] == sum(sample["timesteps_used"])
    expected, fired, fired_head, x0, first, early, dense, flush = [], [], [], [], [], [], [], 0
    for i, n in zip(sample["sequence_indices"], sample["timesteps_used"]):
        g = run_golden(model, xq[i, :n])
        expected += g.cycles[0].tolist()
        fired += (g.fired_x + g.fired_h)[0].tolist()
        fired_head += g.fired_head[0].tolist()
        x0 += g.fired_x[0, :, 0].tolist()
        early += g.h0_early[0].tolist()
        first += [t == 0 for t in range(n)]
        flush += int(cycles.flush_cycles(cfg, g.fired_head[0, -1]))
        # The dense run of the same sequence (every column fires).
        cols = cycles.dense_columns(cfg)
        dense += cycles.run_cycles(
            cfg, [np.full(n, c) for c in cols], np.full(n, cfg.hidden_size if cfg.has_head else 0),
            fired_x0=np.full(n, cfg.input_size), first=np.arange(n) == 0,
            h0_early=np.full(n, cycles.h0_early_units(cfg))).tolist()
    assert pt["delta_cycles"] == expected
    assert pt["fired_layers"] == fired
    assert pt["fired_head"] == fired_head
    assert pt["fired_x0"] == x0 and pt["first"] == first and pt["h0_early"] == early
    # The dense run: each sequence's first timestep runs its x phase alone (and its window has
    # no head slot), the second's x phase hid in a window without one; then the steady state.
    assert pt["dense_cycles"] == dense
    steady = [dense[t] for t in range(1, len(dense)) if not (first[t] or first[t - 1])]
    assert steady and all(d == cycles.dense_cycles(cfg) for d in steady)
    ideal = [cycles.ideal_cycles(cfg, f, h) for f, h in zip(fired, fired_head)]
    assert pt["ideal_cycles"] == ideal
    # The headline ratios follow from the per-timestep values.
    assert r["speedup_vs_dense"] == pytest.approx(sum(pt["dense_cycles"]) / sum(expected))
    assert r["measured_over_ideal"] == pytest.approx(sum(expected) / sum(ideal))
    useful = sum(sum(f) * 3 * cfg.hidden_size + h * cfg.output_size
                 for f, h in zip(fired, fired_head))
    assert r["lane_utilisation"] == pytest.approx(useful / (cfg.lanes * sum(expected)))
    assert r["speedup_vs_dense"] > 1.0
    assert 0 < r["lane_utilisation"] <= r["mac_busy_fraction"] <= 1.0
    # MAC_BUSY per timestep: fired columns x ceil(3H/P) (+ head columns x ceil(O/P)).
    C, Ch = -(-3 * cfg.hidden_size // cfg.lanes), -(-cfg.output_size // cfg.lanes)
    assert pt["mac_busy"] == [sum(f) * C + h * Ch for f, h in zip(fired, fired_head)]
    # Streaming: the counters agree with the cycle model and the only stall cycles are the
    # in-place heads of each sequence's last timestep.
    st = r["stream"]
    assert st["cycles_total"] == sum(expected) and st["stall_total"] == flush
    assert st["sim_cycles"] >= st["cycles_total"]


def test_cycle_decomposition_and_projections_match_the_cycle_model(small_model):
    cfg = small_model.config
    rng = np.random.default_rng(0)
    fl = np.stack([rng.integers(0, cfg.layer_input_size(l) + cfg.hidden_size + 1, 50)
                   for l in range(cfg.num_layers)], axis=1)
    fh = rng.integers(0, cfg.hidden_size + 1, 50)
    fl[:5] = 0  # timesteps in which nothing fires: every MAC phase is an empty one
    fh[:5] = 0
    fl[5:10, 0] = 0  # one empty layer phase
    x0 = np.minimum(fl[:, 0], rng.integers(0, cfg.input_size + 1, 50))
    first = np.arange(50) % 7 == 0
    kw = {"fired_x0": x0, "first": first}
    parts = decompose(cfg, fl, fh, **kw)
    assert set(parts) == set(bench_report.PHASE_LABELS) == {"mac_issue", "mac_fixed", "act",
                                                             "act_fixed", "overlap"}
    want = cycles.run_cycles(cfg, [fl[:, l] for l in range(cfg.num_layers)], fh, fired_x0=x0,
                             first=first)
    assert (sum(parts.values()) == np.asarray(want)).all()
    for k, v in parts.items():
        assert v.shape == (50,), k
    # The issue and beats of the layers and of the head slot (the previous timestep's head).
    slot, slot_prev = cycles.window_slots(fh, first)
    R = -(-cfg.output_size // cfg.act_width)
    ideal = [cycles.ideal_cycles(cfg, list(map(int, a)), max(int(s_), 0)) - R * (s_ < 0)
             for a, s_ in zip(fl, slot)]
    assert (parts["mac_issue"] + parts["act"] == np.asarray(ideal)).all()
    # Per timestep, each of the phases the same as deltahw.cycles.timestep_phases gives.
    for t in (0, 5, 20):
        ph = cycles.timestep_phases(cfg, list(map(int, fl[t])), fired_x0=int(x0[t]),
                                    first=bool(first[t]), slot_head=int(slot[t]),
                                    slot_head_prev=int(slot_prev[t]))
        assert {k: int(v[t]) for k, v in parts.items()} == ph
    # t = 0 starts a sequence: no slot; (layer 0 has two MAC phases: x and h)
    assert first[0] and slot[0] == cycles.NO_SLOT
    assert (parts["mac_fixed"][0] == (cfg.num_layers + 1) * cycles.EMPTY_MAC_PHASE
            and parts["mac_issue"][0] == 0 and parts["overlap"][0] == 0)
    # t = 1: an empty head in its slot (fh[0] = 0), hidden in the window, and the x phase in
    # the window before it (no slot there: t = 0 started the sequence); so is the h phase's
    # fetch, in that window's last cycle, if the x phase was over by then (two layers: layer
    # 0's h queue is complete then).
    xp = int(cycles.x_phase(cfg, int(x0[1])))
    h_fetch = int(xp < cycles.ACT_DRAIN or (xp == cycles.ACT_DRAIN and x0[1] > 0))
    assert cfg.num_layers == 2 and cycles.column_cost(cfg) >= 2
    assert parts["overlap"][1] == -cycles.head_slot(cfg, 0) - min(xp, cycles.ACT_DRAIN) - h_fetch
    w = what_if(cfg, fl, fh, **kw)
    assert set(w) == {"today", "overlap", "act_x2", "head_unit", "all"}
    assert w["today"]["delta_cycles"] == pytest.approx(float(np.mean(want)))
    assert w["today"]["ideal_cycles"] == pytest.approx(float(np.mean(
        [cycles.ideal_cycles(cfg, list(map(int, a)), int(b)) for a, b in zip(fl, fh)])))
    assert w["today"]["no_fire_cycles"] == cycles.floor_cycles(cfg)
    assert w["today"]["dense_cycles"] == cycles.dense_cycles(cfg)
    for k in ("overlap", "act_x2", "head_unit", "all"):
        assert w[k]["delta_cycles"] < w["today"]["delta_cycles"], k
        assert w[k]["dense_cycles"] < w["today"]["dense_cycles"], k
    assert w["all"]["delta_cycles"] <= min(w[k]["delta_cycles"] for k in w)


def test_projected_overlap_hides_the_shorter_of_activation_and_next_mac_phase(small_model):
    cfg = small_model.config
    fl = np.array([[0] * cfg.num_layers, cycles.dense_columns(cfg)])
    fh = np.array([0, cfg.hidden_size if cfg.has_head else 0])
    kw = {"fired_x0": np.array([0, cfg.input_size]), "first": np.array([False, False])}
    base = projected_cycles(cfg, fl, fh, **kw)
    over = projected_cycles(cfg, fl, fh, overlap=True, **kw)
    act = -(-cfg.hidden_size // cfg.act_width) + cycles.ACT_DRAIN
    cc = cycles.column_cost(cfg)
    for t in range(2):
        hidden = [min(act, int(n) * cc + cycles.mac_phase_fixed(int(n), cc, l + 1))
                  for l, n in enumerate(fl[t, 1:])]
        # (the last layer's boundary is the window, which the change leaves as it is)
        assert base[t] - over[t] == sum(hidden)


def test_a_cycle_mismatch_is_reported_not_averaged(small_model):
    cfg = small_model.config
    seq = {"timesteps": 2}
    run = {"cycles": [50, 60], "model_cycles": [50, 61], "fired_layers": [[1, 1], [2, 2]],
           "fired_x": [[1, 0], [1, 1]], "first": [True, False], "fired_head": [0, 1],
           "mac_busy": [1, 2], "h0_early": [0, 1]}
    seq["delta"] = run
    seq["dense"] = dict(run, model_cycles=run["cycles"])
    summary = bench_run._rtl_summary(cfg, {"sequences": [seq]})
    assert summary["matches_cycle_model"] is False


def test_act_width_sweep_is_the_cycle_model_at_every_legal_width(small_model):
    """The data-driven choice of A: every legal A (A a power of two, P a multiple of 3A, or 3A
    a multiple of P: A = 32 at P = 48, split accumulators), the cycle model's mean over the
    given timesteps at each, and the fastest A that fits the part."""
    from deltahw.boards import PARTS

    cfg = small_model.config.replace(lanes=48, act_width=2)
    rng = np.random.default_rng(1)
    fl = np.stack([rng.integers(0, cfg.layer_input_size(l) + cfg.hidden_size + 1, 40)
                   for l in range(cfg.num_layers)], axis=1)
    fh = rng.integers(0, cfg.hidden_size + 1, 40)
    kw = {"fired_x0": np.minimum(fl[:, 0], 3), "first": np.arange(40) % 10 == 0}
    rows = act_width_sweep(cfg, fl, fh, **kw)
    assert [r["act_width"] for r in rows] == [1, 2, 4, 8, 16, 32]
    for r in rows:
        c = cfg.replace(act_width=r["act_width"])
        want = cycles.run_cycles(c, [fl[:, l] for l in range(c.num_layers)], fh, **kw)
        assert r["delta_cycles"] == pytest.approx(float(np.mean(want)))
        assert r["dense_cycles"] == cycles.dense_cycles(c)
    # More units, fewer beats: fastest when nothing limits, up to A = 16; A = 32 reads two row
    # groups a beat and waits for the second beat's (cycles.act_read_lag): here no faster.
    assert min(rows, key=lambda r: r["delta_cycles"])["act_width"] == 16
    assert choose_act_width(rows) == 16
    part = PARTS["xc7a35t"]
    fitted = act_width_sweep(cfg, fl, fh, part, **kw)
    assert all("fits" in r and "dsps" in r for r in fitted)
    ok = [r for r in fitted if r["fits"]]
    assert choose_act_width(fitted) == min(ok, key=lambda r: r["delta_cycles"])["act_width"]
    with pytest.raises(ValueError):
        choose_act_width([dict(r, fits=False) for r in fitted])


def _golden_phase(folder):
    import argparse

    args = argparse.Namespace(lanes=[6], quick=True, no_synth=True, ecp5_sweep=[],
                              ecp5_all_lanes=False)
    spec = bench_run.resolve_model(str(folder))
    return bench_run.golden_phase(spec, args, bench_run.Progress(1)).out["golden"]


@pytest.mark.parametrize("task", ["classification", "timestep-classification",
                                  "timestep-regression"])
def test_golden_phase_reports_the_task_metric(tmp_path, task):
    """The bench's golden phase reports the model's task metric, per timestep for per-timestep
    tasks, with the model's thresholds and at Theta = 0; expected values computed here by hand
    from the golden model's outputs."""
    B, T = 3, 10
    rng = np.random.default_rng(3)
    meta = {"task": task}
    if task == "classification":
        labels = [0, 1, 0]
    elif task == "timestep-classification":
        labels = rng.integers(0, 2, (B, T)).tolist()
    else:
        labels = rng.normal(5.0, 2.0, (B, T, 2)).tolist()
        meta.update(target_mean=[5.0, 4.0], target_std=[2.0, 0.5])
    folder = _tiny_model_folder(tmp_path / "tiny", meta, labels)
    model = load_model(folder / "model.pt")
    x = np.load(folder / "input.npy")
    xq, _ = model.quantize_input(torch.from_numpy(x))
    g = _golden_phase(folder)
    assert g["task"] == task
    y = np.asarray(labels)
    for key, m in (("metrics", model), ("metrics_theta0", model.with_config(
            model.config.with_thresholds(theta_x=(0,), theta_h=(0,), theta_head=0)))):
        out = run_golden(m, xq).outputs.numpy() * model.config.act.lsb  # (B, T, 2)
        if task == "classification":
            want = float(np.mean(out[:, -1].argmax(-1) == y))
        elif task == "timestep-classification":
            want = float(np.mean(out.argmax(-1) == y))
        else:
            pred = out * np.array([2.0, 0.5]) + np.array([5.0, 4.0])
            assert g[key]["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - y) ** 2))))
            assert g[key]["mae"] == pytest.approx(float(np.mean(np.abs(pred - y))))
            assert g["accuracy"] is None
            continue
        assert g[key]["accuracy"] == pytest.approx(want)
        assert g["accuracy" if key == "metrics" else "accuracy_theta0"] == pytest.approx(want)
    report = "\n".join(bench_report._golden_section({"models": {"tiny": {
        "golden": {**g, "theta_x_real": [0.1], "theta_h_real": [0.1], "training_metrics": None},
        "data": {"dataset": None, "inputs": "input.npy"}, "config": model.config.to_dict()}}}))
    if task == "timestep-regression":
        assert f"RMSE {g['metrics']['rmse']:.4g}" in report
    elif task == "timestep-classification":
        assert "per timestep" in report



def test_weight_words_read_counts_p_words_per_issue_cycle():
    # H=64: a layer column is 3H = 192 weights. P=48 reads them in 4 full row groups (192 words);
    # P=36 needs 6 row groups of 36 (216 words, 24 of them idle lanes'). The head (O=10) reads
    # one row group of P words per fired column.
    for lanes, per_col in ((48, 192), (36, 216)):
        cfg = DeltaGRUConfig(13, 64, 2, 10, lanes=lanes, lanes_per_bank=4, act_width=4,
                             enc_width=4)
        assert cycles.weight_words_read(cfg, [3, 0], 2) == 3 * per_col + 2 * lanes
        assert cycles.weight_words_read(cfg, [0, 0], 0) == 0
        dense = cycles.weight_words_read(cfg, cycles.dense_columns(cfg), 64)
        assert dense == (13 + 64 + 64 + 64) * per_col + 64 * lanes


def test_quick_report_has_weight_reads_and_ops_per_mac_cycle(quick_report):
    _, out, res = quick_report
    (name, m), = res["models"].items()
    c = m["cycle_model"]
    # Dense: every column of I + H fires in the one layer (3H weights each) and all H head
    # columns (O weights each): the tiny model is I=3, H=8, O=2 on 6 lanes.
    assert c["dense_weights_used"] == (3 + 8) * 24 + 8 * 2
    assert c["dense_weight_words"] == (3 + 8) * 4 * 6 + 8 * 1 * 6
    assert 0 < c["weight_words_per_timestep"] <= c["dense_weight_words"]
    assert c["weights_used_per_timestep"] <= c["weight_words_per_timestep"]
    dense_macs = (3 + 8) * 24 + 8 * 2
    for row in m["hardware"]:  # every P of the lane sweep, at its own mean cycles
        assert row["perf_artix_assumed"]["effective_ops_per_mac_cycle"] == pytest.approx(
            2 * dense_macs / row["cycle_model"]["mean_cycles"] / row["lanes"])
    text = (out / "README.md").read_text()
    assert "effective op / MAC / cycle" in text
    assert "Weight-memory reads per timestep" in text


def test_recorded_ecp5_takes_the_best_measured_run_of_the_same_p_and_a(tmp_path):
    rec = {"model": "m (P=48)", "runs": [
        {"name": "a", "code": "c1", "act_width": 8, "lanes": None, "target_mhz": 100,
         "fmax_mhz": 61.7,
         "measured": True, "packed": {"TRELLIS_COMB": [39397, 83640], "DP16KD": [30, 208],
                                      "MULT18X18D": [64, 156]}},
        {"name": "b", "code": "c2", "act_width": 8, "target_mhz": 100, "fmax_mhz": None,
         "measured": False},
        {"name": "c", "code": "c3", "act_width": 4, "target_mhz": 100, "fmax_mhz": 70.0,
         "measured": True},
        {"name": "d", "code": "c4", "act_width": 8, "lanes": 12, "target_mhz": 100,
         "fmax_mhz": 80.0, "measured": True},
        {"name": "e", "code": "c5", "act_width": 8, "target_mhz": 60, "fmax_mhz": 60.2,
         "measured": True}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rec))
    cfg = DeltaGRUConfig(13, 64, 1, 10, lanes=48, lanes_per_bank=4, act_width=8, enc_width=8)
    got = bench_run.recorded_ecp5(cfg, path)
    assert got["fmax_mhz"] == 61.7 and got["target_mhz"] == 100
    assert got["used"] == {"luts": 39397, "bram": 30, "dsps": 64}
    assert "run 'a'" in got["recorded"] and "c1" in got["recorded"]
    other_p = DeltaGRUConfig(13, 64, 1, 10, lanes=24, lanes_per_bank=4, act_width=8, enc_width=8)
    assert bench_run.recorded_ecp5(other_p, path) is None
    assert bench_run.recorded_ecp5(cfg, tmp_path / "missing.json") is None
    # Naming today's gateware: its best run counts, not a faster placement of earlier gateware.
    rec["current_gateware"] = {"code": ["c5"]}
    path.write_text(json.dumps(rec))
    got = bench_run.recorded_ecp5(cfg, path)
    assert got["fmax_mhz"] == 60.2 and "run 'e'" in got["recorded"]
    assert "earlier_gateware" not in got
    rec["current_gateware"] = {"code": ["c9"]}  # no build of it recorded: the best, marked
    path.write_text(json.dumps(rec))
    got = bench_run.recorded_ecp5(cfg, path)
    assert got["fmax_mhz"] == 61.7 and got["earlier_gateware"]
    assert "an earlier gateware" in got["recorded"]
    # A faster run on another speed grade than the record's is not a build for its board.
    rec["speed_grade"] = 6
    rec["runs"].append({"name": "f", "code": "c1", "act_width": 8, "target_mhz": 70,
                        "fmax_mhz": 90.0, "measured": True, "speed_grade": 8})
    path.write_text(json.dumps(rec))
    got = bench_run.recorded_ecp5(cfg, path)
    assert got["fmax_mhz"] == 61.7 and "run 'a'" in got["recorded"]
    rec["runs"][-1]["speed_grade"] = 6
    path.write_text(json.dumps(rec))
    assert bench_run.recorded_ecp5(cfg, path)["fmax_mhz"] == 90.0


def test_recorded_ecp5_other_speed_grades(tmp_path):
    """A record of -6 (ULX3S) builds with -8 runs: the -8 runs are offered per grade, the best
    of today's gateware, with the board of a board build."""
    rec = {"speed_grade": 6, "current_gateware": {"code": ["new"]}, "runs": [
        {"name": "u", "code": "new", "act_width": 8, "target_mhz": 70, "fmax_mhz": 71.0,
         "measured": True},
        {"name": "old8", "code": "old", "act_width": 8, "target_mhz": 100, "fmax_mhz": 120.0,
         "measured": True, "speed_grade": 8},
        {"name": "e1", "code": "new", "act_width": 8, "target_mhz": 100, "fmax_mhz": 101.5,
         "measured": True, "speed_grade": 8, "board": "ecp5_evn"},
        {"name": "e2", "code": "new", "act_width": 8, "target_mhz": 100, "fmax_mhz": 109.5,
         "measured": True, "speed_grade": 8, "board": "ecp5_evn"},
        {"name": "x7", "code": "new", "act_width": 8, "target_mhz": 100, "fmax_mhz": None,
         "measured": False, "speed_grade": 7}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rec))
    assert bench_run.recorded_speed_grades(path) == [8]
    assert bench_run.recorded_speed_grades(tmp_path / "missing.json") == []
    cfg = DeltaGRUConfig(13, 64, 1, 10, lanes=48, lanes_per_bank=4, act_width=8, enc_width=8)
    own = bench_run.recorded_ecp5(cfg, path)
    assert own["fmax_mhz"] == 71.0 and own["speed_grade"] == 6 and "board" not in own
    fast = bench_run.recorded_ecp5(cfg, path, 8)
    assert fast["fmax_mhz"] == 109.5 and "run 'e2'" in fast["recorded"]
    assert fast["board"] == {"name": "ecp5_evn", "title": "Lattice ECP5-5G Evaluation Board",
                             "part": "LFE5UM5G-85F"}
    cs = {"mean_cycles": 50.0, "p99_cycles": 90.0, "dense_cycles": 400}
    (entry,) = bench_run._other_grades(cfg, cs, path)
    assert entry["speed_grade"] == 8
    assert entry["perf"]["latency_us_mean"] == pytest.approx(50.0 / 109.5)
    other_a = DeltaGRUConfig(13, 64, 1, 10, lanes=48, lanes_per_bank=4, act_width=4,
                             enc_width=8)
    assert bench_run._other_grades(other_a, cs, path) == []


def test_render_refresh_takes_a_newly_recorded_ecp5_build(quick_report, tmp_path):
    _, _, res = quick_report
    res = json.loads(json.dumps(res))
    (m,) = res["models"].values()
    record = tmp_path / "fmax.json"
    record.write_text(json.dumps({"lanes": 6, "runs": [
        {"name": "new", "code": "abc", "act_width": 1, "target_mhz": 100, "fmax_mhz": 80.0,
         "measured": True}]}))
    bench_run.refresh_recorded_ecp5(res, record)
    rows = {r["lanes"]: r for r in m["hardware"]}
    got = rows[6]
    assert got["ecp5"]["fmax_mhz"] == 80.0 and "run 'new'" in got["ecp5"]["recorded"]
    assert got["perf_ecp5_fmax"]["latency_us_mean"] == pytest.approx(
        got["cycle_model"]["mean_cycles"] / 80.0)
    assert all(r["ecp5"] is None and r["perf_ecp5_fmax"] is None
               for P, r in rows.items() if P != 6)
    assert all(r["ecp5_other_grades"] == [] for r in rows.values())  # the record has one grade
