"""The Python API end to end on a tiny model: import, thresholds in real units, predict (golden),
simulate (the generated RTL on Verilator, bit-exact with predict), export, generate, summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_gru, random_inputs

import deltahw
from deltahw.api import APIError, DeltaNetwork
from deltahw.golden import run_golden
from deltahw.model import load_model


@pytest.fixture
def gru_and_head():
    gru, head = make_gru(3, 4, 1, 2, seed=5, scale=2.0)
    module = torch.nn.Module()
    module.gru, module.head = gru, head
    return module


def test_import_says_what_was_chosen(gru_and_head, capsys):
    net = DeltaNetwork(gru_and_head)
    msg = capsys.readouterr().out
    assert "imported a plain torch GRU" in msg and "P=12 lanes, E=4, A=2" in msg
    assert "theta_x=[0.0]" in msg and "op reduction 1x" in msg and "calibrate" in msg
    assert net.config.theta_x == (0,)
    DeltaNetwork(gru_and_head, theta_x=0.05, verbose=False)
    assert capsys.readouterr().out == ""


def test_thresholds_in_real_units_and_errors(gru_and_head):
    net = DeltaNetwork(gru_and_head, theta_x=0.05, theta_h=0.1, theta_head=0.25, lanes=6,
                       act_width=1, enc_width=2, verbose=False)
    # 0.05 * 256 = 12.8 -> 13 LSBs (half up), 0.1 -> 25.6 -> 26, 0.25 -> 64.
    assert net.config.theta_x == (13,) and net.config.theta_h == (26,)
    assert net.config.theta_head == 64 and net.config.lanes == 6
    assert net.thresholds()["theta_x"] == [13 / 256]
    assert net.with_thresholds(theta_x=0).config.theta_x == (0,)
    with pytest.raises(APIError, match="theta_x: A threshold must be a finite number >= 0"):
        net.with_thresholds(theta_x=-1)
    with pytest.raises(APIError, match="Unknown argument 'lane'"):
        DeltaNetwork(gru_and_head, lane=3, verbose=False)
    assert deltahw.DeltaNetwork is DeltaNetwork


def test_predict_simulate_export_generate(gru_and_head, tmp_path):
    net = DeltaNetwork(gru_and_head, theta_x=0.05, theta_h=0.03, theta_head=0.02, lanes=6,
                       act_width=1, enc_width=2, verbose=False)
    x = random_inputs(2, 9, 3, seed=4, smooth=True).numpy()
    y = net.predict(x)
    x_q, _ = net.model.quantize_input(torch.from_numpy(x))
    ref = run_golden(net.model, x_q)
    assert np.array_equal(y, ref.outputs.numpy() / 256.0)
    assert np.array_equal(net.predict(x[0], raw=True), ref.outputs[0].numpy())
    sim = net.simulate(x, log=lambda _m: None)
    assert sim["simulator"] == "verilator"
    assert np.array_equal(sim["outputs"], y)  # the RTL's own output beats, unpacked
    for b in range(2):
        assert sim["cycles"][b] == ref.cycles[b].tolist()
        assert sim["fired_x"][b] == ref.fired_x[b].tolist()
        assert sim["fired_h"][b] == ref.fired_h[b].tolist()
        assert sim["fired_head"][b] == ref.fired_head[b].tolist()
    assert sum(sim["mac_busy"][0]) > 0
    out = net.export(tmp_path / "exp")
    back = DeltaNetwork(out, verbose=False)
    assert back.config == net.config and np.array_equal(back.predict(x), y)
    # The command line (make sim CONFIG=... INPUT=x.npy) is the same call on the exported folder.
    from deltahw.simulate import main as simulate_main

    np.save(tmp_path / "x.npy", x)
    assert simulate_main([str(out), "--input", str(tmp_path / "x.npy"), "--output",
                          str(tmp_path / "y.npy"), "--stats", str(tmp_path / "s.json")]) == 0
    assert np.array_equal(np.load(tmp_path / "y.npy"), y)
    stats = json.loads((tmp_path / "s.json").read_text())
    assert [s["cycles"] for s in stats["per_sequence"]] == ref.cycles.tolist()
    assert stats["simulator"] == "verilator" and stats["input_saturated"] == 0
    rtl = net.generate(tmp_path / "rtl")
    man = json.loads((rtl / "manifest.json").read_text())
    assert man["config"]["theta_x"] == [13] and (rtl / "deltahw_core.v").is_file()
    s = net.summary()
    assert s["network"]["hidden_size"] == 4 and s["formats"]["act"] == "Q8.8"
    assert s["cycles"]["dense_cycles_per_timestep"] > s["cycles"]["min_cycles_per_timestep"]
    assert any(r["luts"] > 0 for r in s["resources"].values())
    assert load_model(out).config.theta_head == 5


def test_build_without_synthesis_writes_the_tree_from_the_object(tmp_path):
    """``DeltaNetwork.build`` builds from the object itself (no export written next to ``out``)
    through the build command's own function; the report records the model's config."""
    import json

    torch.manual_seed(0)
    net = DeltaNetwork(torch.nn.GRU(3, 8, batch_first=True), theta_x=0.1, lanes=6,
                       act_width=1, enc_width=2, verbose=False)
    report = net.build("ulx3s", tmp_path / "b", synth=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    saved = json.loads((tmp_path / "b" / "report.json").read_text())
    assert saved["config"] == report["config"]
    assert saved["config"]["theta_x"] == [26] and saved["config"]["lanes"] == 6
    assert saved["flow"] == "none" and saved["model"] is None
    with pytest.raises(Exception, match=r"theta_x needs one threshold per layer \(1\); got 2"):
        net.with_thresholds(theta_x=[0.1, 0.2])
