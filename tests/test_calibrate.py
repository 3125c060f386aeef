"""Threshold calibration (deltahw.calibrate) on a small model and data set made here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_gru

from deltahw.calibrate import CalibrationError, calibrate, main, threshold_grid
from deltahw.config import DeltaGRUConfig
from deltahw.model import from_modules, load_model, save_checkpoint
from deltahw.train.evaluate import golden_eval
from deltahw.train.userdata import make_dataset, write_npz


def _data(n=40, T=12, I=3, seed=0):
    """Two classes of smooth sequences: the sign of the mean of feature 0 is the label."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        y = i % 2
        x = np.cumsum(rng.normal(0, 0.3, (T, I)), 0) + (1.0 if y else -1.0)
        xs.append(x.astype(np.float32))
        ys.append(y)
    return xs, np.array(ys)


@pytest.fixture
def setup(tmp_path):
    gru, head = make_gru(3, 8, 1, 2, seed=2, scale=2.5)
    ckpt = tmp_path / "model.pt"
    cfg = DeltaGRUConfig(3, 8, 1, 2, theta_x=(4,), theta_h=(2,), theta_head=1)
    save_checkpoint(ckpt, cfg, gru.state_dict(), head.state_dict(), meta={"task": "classification"})
    xs, ys = _data()
    write_npz(tmp_path / "val.npz", xs, ys)
    xt, yt = _data(seed=1)
    write_npz(tmp_path / "test.npz", xt, yt)
    return tmp_path, ckpt


def test_grid():
    g = threshold_grid(DeltaGRUConfig(3, 8), 2.0)
    assert g[:9] == [0, 1, 2, 3, 4, 6, 8, 11, 16] and g[-1] == 512
    with pytest.raises(CalibrationError, match="max_theta must be a positive number"):
        threshold_grid(DeltaGRUConfig(3, 8), -1)


def test_calibrate_function_and_files(setup):
    tmp, ckpt = setup
    lines = []
    cal = calibrate(ckpt, tmp / "val.npz", max_loss=2.0, test_data=tmp / "test.npz",
                    progress=lines.append)
    assert any("greedy search" in s for s in lines) and lines[-1].startswith("test data")
    ch = cal.chosen
    assert ch.admissible and ch.loss <= 2.0
    assert ch.op_reduction >= max(p.op_reduction for p in cal.points if p.admissible)
    # Every point's figures are the golden model's, recomputed here independently.
    model = load_model(ckpt)
    ds = make_dataset(tmp / "val.npz", tmp / "val.npz", tmp / "val.npz")
    for p in (ch, cal.given, cal.zero):
        m = model.with_config(model.config.with_thresholds(theta_x=p.theta_x, theta_h=p.theta_h,
                                                           theta_head=p.theta_head))
        r = golden_eval(m, ds, "val")
        assert r["accuracy"] == p.metric and r["op_reduction"] == p.op_reduction
    ref = max(cal.zero.metric, cal.given.metric)
    assert cal.reference.metric == ref and ch.loss == pytest.approx(100 * (ref - ch.metric))
    assert ch.op_reduction > cal.given.op_reduction  # it found something better than given
    assert cal.model.config.theta_x == ch.theta_x and cal.model.config.theta_head == ch.theta_head
    assert set(cal.test) == {"thresholds 0", "given", "chosen"}
    front = cal.frontier()
    assert all(a.op_reduction < b.op_reduction and a.loss < b.loss
               for a, b in zip(front, front[1:]))


def test_cli_writes_a_new_checkpoint_and_never_the_input(setup, capsys):
    tmp, ckpt = setup
    before = ckpt.read_bytes()
    out = tmp / "cal"
    assert main([str(ckpt), "--data", str(tmp / "val.npz"), "--max-loss", "2", "--out",
                 str(out), "--quiet"]) == 0
    assert ckpt.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.pt", "config.json", "calibration.json", "calibration.md", "pareto.png"])
    rep = json.loads((out / "calibration.json").read_text())
    new = load_model(out / "model.pt")
    assert list(new.config.theta_x) == rep["chosen"]["theta_x"]
    assert new.config.theta_head == rep["chosen"]["theta_head"]
    assert new.meta["calibration"]["max_loss"] == 2.0
    old = load_model(ckpt)
    assert torch.equal(new.layers[0].w_h, old.layers[0].w_h)
    assert torch.equal(new.input_mean, old.input_mean) if old.input_mean is not None else True
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "chosen thresholds (real units)" in capsys.readouterr().out
    # Re-running into its own folder replaces it; a foreign folder or the input's is refused.
    assert main([str(ckpt), "--data", str(tmp / "val.npz"), "--out", str(out), "--quiet"]) == 0
    (tmp / "other").mkdir()
    (tmp / "other" / "notes.txt").write_text("mine")
    assert main([str(ckpt), "--data", str(tmp / "val.npz"), "--out", str(tmp / "other"),
                 "--quiet"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (tmp / "other" / "notes.txt").read_text() == "mine"
    assert main([str(ckpt), "--data", str(tmp / "val.npz"), "--out", str(tmp), "--quiet"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before


def test_errors(setup, tmp_path):
    tmp, ckpt = setup
    xs, _ = _data(I=4)
    write_npz(tmp / "wrong.npz", xs, np.arange(len(xs)) % 2)
    with pytest.raises(CalibrationError, match="4 features per frame; the model expects 3"):
        calibrate(ckpt, tmp / "wrong.npz")
    with pytest.raises(CalibrationError, match="max_loss must be a number >= 0"):
        calibrate(ckpt, tmp / "val.npz", max_loss=-1)
    gru, _ = make_gru(3, 8)
    with pytest.raises(CalibrationError, match="needs a model with a linear head"):
        calibrate(from_modules(gru), tmp / "val.npz")
