"""A user's data end to end, as the README's path describes it: a small ``.npz`` made here is
trained into a delta network (``python -m deltahw.train --data``), its thresholds calibrated
(``python -m deltahw.calibrate``), the calibrated model exported and generated, and the user's own
test sequences run through the generated RTL on Verilator, bit-exact with the golden model on
every output of every timestep and cycle-exact with the cycle model.

About 2-3 minutes (training ~20 s, calibration a few seconds, one Verilator build).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from deltahw.api import DeltaNetwork
from deltahw.calibrate import main as calibrate_main
from deltahw.golden import run_golden
from deltahw.train.train import main as train_main
from deltahw.train.userdata import write_npz


def _sequences(n: int, seed: int):
    """Three classes of slowly varying 3-channel signals (the kind of input delta networks are
    for): class k is a sinusoid of frequency (k + 1) / 40 cycles per frame in channel k, with a
    random phase, amplitude and noise, lengths 20-40 frames."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        k = i % 3
        T = int(rng.integers(20, 41))
        t = np.arange(T)
        x = 0.1 * rng.standard_normal((T, 3))
        x[:, k] += rng.uniform(0.7, 1.3) * np.sin(2 * np.pi * (k + 1) / 40 * t
                                                  + rng.uniform(0, 2 * np.pi))
        xs.append(x.astype(np.float32))
        ys.append(k)
    return xs, np.asarray(ys)


def test_user_data_round_trip_to_bit_exact_rtl(tmp_path, capsys):
    for name, n, seed in (("train", 90, 1), ("val", 30, 2), ("test", 12, 3)):
        xs, y = _sequences(n, seed)
        write_npz(tmp_path / f"{name}.npz", xs, y)
    run = tmp_path / "run"
    assert train_main(["--data", str(tmp_path / "train.npz"), "--val-data",
                       str(tmp_path / "val.npz"), "--test-data", str(tmp_path / "test.npz"),
                       "--out", str(run), "--hidden", "8", "--dense-epochs", "12",
                       "--delta-epochs", "6", "--ramp-epochs", "2", "--lanes", "6",
                       "--enc-width", "2", "--lanes-per-bank", "3", "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["summary"]["task"] == "classification"
    # Three well separated classes: far above chance (1/3) after a few seconds of training.
    assert metrics["summary"]["delta_trained_test_accuracy"] >= 0.6

    cal = tmp_path / "cal"
    assert calibrate_main([str(run / "model.pt"), "--data", str(tmp_path / "val.npz"),
                           "--test-data", str(tmp_path / "test.npz"), "--max-loss", "5",
                           "--out", str(cal), "--quiet"]) == 0
    report = json.loads((cal / "calibration.json").read_text())
    assert report["chosen"]["op_reduction"] >= report["given"]["op_reduction"]
    capsys.readouterr()

    net = DeltaNetwork(cal / "model.pt", verbose=False)
    exported = net.export(tmp_path / "export")
    rtl = net.generate(tmp_path / "rtl")
    assert (rtl / "deltahw_core.v").is_file()
    back = DeltaNetwork(exported, verbose=False)
    assert back.config == net.config

    # The user's test sequences (float, their own units) through the generated RTL.
    xs, _ = _sequences(12, 3)
    T = min(len(x) for x in xs[:3])
    x = np.stack([x[:T] for x in xs[:3]])
    sim = back.simulate(x, log=lambda _m: None)
    x_q, _ = back.model.quantize_input(torch.from_numpy(x))
    ref = run_golden(back.model, x_q)
    assert np.array_equal(sim["outputs"], ref.outputs.numpy() * back.config.act.lsb)
    for b in range(3):
        assert sim["cycles"][b] == ref.cycles[b].tolist()
        assert sim["fired_x"][b] == ref.fired_x[b].tolist()
        assert sim["fired_h"][b] == ref.fired_h[b].tolist()
    # The calibrated thresholds are what the hardware ran: some deltas were skipped.
    assert int(np.sum(sim["fired_h"])) < 3 * T * back.config.hidden_size
