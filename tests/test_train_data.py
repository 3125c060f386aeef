"""Training on the user's own data: npz files, (x, y) sequences, torch Datasets, the three tasks,
fine-tuning a plain torch.nn.GRU, and the errors for bad data files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deltahw.errors import DeltahwError
from deltahw.model import load_model
from deltahw.train import data as tdata
from deltahw.train import train as ttrain
from deltahw.train import userdata
from deltahw.train.evaluate import golden_eval

torch.set_num_threads(1)

TINY = dict(hidden=8, dense_epochs=4, delta_epochs=3, ramp_epochs=1, batch_size=16, lr=1e-2,
            delta_lr=5e-3)
TINY_CLI = ["--hidden", "8", "--dense-epochs", "4", "--delta-epochs", "3", "--ramp-epochs", "1",
            "--batch-size", "16", "--lr", "1e-2", "--delta-lr", "5e-3", "--quiet"]


def _sequences(task: str, n: int = 90, seed: int = 0):
    """Synthetic sequences: 3 features, 12-30 frames; targets that need the recurrence."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        T = int(rng.integers(12, 31))
        t = np.arange(T)
        c = i % 3
        x = np.stack([np.sin(2 * np.pi * 0.05 * t + rng.uniform(0, 6)) + (c - 1),
                      rng.normal(0, 0.3, T), np.cos(0.2 * t)], 1).astype(np.float32)
        if task == tdata.CLASSIFICATION:
            y = c
        elif task == tdata.STEP_CLASSIFICATION:
            y = (np.cumsum(x[:, 0]) > 0).astype(np.int64)  # sign of a running sum: memory
        else:
            prev = np.concatenate([[0.0], x[:-1, 0]])
            y = np.stack([3.0 * prev + 10.0, x[:, 2] - prev], 1).astype(np.float32)
        xs.append(x)
        ys.append(y)
    return xs, ys


def _npz(path, task, n=90, seed=0, **extra):
    xs, ys = _sequences(task, n, seed)
    X = np.concatenate(xs)
    lengths = np.array([len(x) for x in xs])
    y = np.array(ys) if task == tdata.CLASSIFICATION else np.concatenate(ys)
    np.savez(path, X=X, lengths=lengths, y=y, **extra)
    return X, lengths, y


# ------------------------------------------------------------------------ end to end, per task
@pytest.mark.parametrize("task", tdata.TASKS)
def test_npz_trains_end_to_end_for_each_task(tmp_path, task):
    data = tmp_path / "train.npz"
    _npz(data, task)
    out = tmp_path / "run"
    assert ttrain.main(["--data", str(data), "--out", str(out)] + TINY_CLI) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    s = metrics["summary"]
    assert s["task"] == task
    model = load_model(out / "model.pt")
    assert model.meta["task"] == task and model.meta["dataset_name"] == "train"
    assert model.input_mean is not None and model.config.hidden_size == 8
    ds = userdata.make_dataset(data, task=task)  # rebuilt from the file, as a later tool would
    assert (len(ds.train), len(ds.val), len(ds.test)) == (
        (66, 12, 12) if task == tdata.CLASSIFICATION else (62, 14, 14))
    res = golden_eval(model, ds, "test")
    assert res["task"] == task and res["op_reduction"] > 1.0
    if task == tdata.STEP_REGRESSION:
        assert model.meta["target_std"] == pytest.approx(ds.target_std.tolist())
        assert res["rmse"] == pytest.approx(s["delta_trained_test_rmse"], rel=1e-12)
        assert res["mae"] == pytest.approx(s["delta_trained_test_mae"], rel=1e-12)
        # Better than predicting the training mean (in the data's units: target 0 has std ~2).
        y = np.concatenate([v for v in ds.test.y])
        baseline = float(np.sqrt(((y - ds.target_mean) ** 2).mean()))
        assert res["rmse"] < baseline
    else:
        assert res["accuracy"] == pytest.approx(s["delta_trained_test_accuracy"], abs=1e-12)
        assert res["accuracy"] > 0.55  # chance: 1/3 (classification), ~0.5 (per timestep)
    if task == tdata.STEP_CLASSIFICATION:
        # Per-timestep accuracy: counted over every real timestep, not per sequence.
        assert res["timesteps"] == int(ds.test.lengths.sum())


def test_fit_takes_sequences_and_torch_datasets(tmp_path):
    xs, ys = _sequences(tdata.STEP_REGRESSION, 60)
    pairs = list(zip(xs, ys))

    class TorchDS(torch.utils.data.Dataset):
        def __len__(self):
            return len(pairs)

        def __getitem__(self, i):
            return torch.from_numpy(pairs[i][0]), torch.from_numpy(pairs[i][1])

    a = ttrain.fit(pairs, out=tmp_path / "a", **TINY)
    b = ttrain.fit(TorchDS(), out=tmp_path / "b", **TINY)
    assert a.dataset.task == tdata.STEP_REGRESSION  # inferred: real targets per frame
    assert a.metrics["summary"] == {**b.metrics["summary"],
                                    "train_seconds": a.metrics["summary"]["train_seconds"],
                                    "train_cpu_seconds": a.metrics["summary"]["train_cpu_seconds"]}
    assert a.load().config.output_size == 2
    # Normalisation statistics come from the training split only.
    np.testing.assert_allclose(a.dataset.mean, np.concatenate(a.dataset.train.xs).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_given_validation_and_test_files_are_used_as_is(tmp_path):
    for name, seed in (("tr", 0), ("va", 1), ("te", 2)):
        _npz(tmp_path / f"{name}.npz", tdata.CLASSIFICATION, n=30, seed=seed,
             classes=np.array(["slow", "mid", "fast"]))
    ds = userdata.make_dataset(tmp_path / "tr.npz", tmp_path / "va.npz", tmp_path / "te.npz")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 30, 30)
    assert ds.class_names == ["slow", "mid", "fast"] and ds.info["split"] == "as given"
    np.testing.assert_array_equal(ds.test.y, np.arange(30) % 3)


def test_string_labels_and_seeded_stratified_split():
    xs, ys = _sequences(tdata.CLASSIFICATION, 60)
    names = np.array(["a", "b", "c"])[np.array(ys)]
    seqs = list(zip(xs, names))
    d1 = userdata.make_dataset(seqs, seed=3)
    d2 = userdata.make_dataset(seqs, seed=3)
    d3 = userdata.make_dataset(seqs, seed=4)
    assert d1.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(d1.test.origin, d2.test.origin)
    assert set(d1.test.origin.tolist()) != set(d3.test.origin.tolist())
    for k in ("train", "val", "test"):
        assert np.bincount(d1.split(k).y, minlength=3).tolist() == \
            [{"train": 14, "val": 3, "test": 3}[k]] * 3
    all_ids = np.concatenate([d1.split(k).origin for k in ("train", "val", "test")])
    assert sorted(all_ids.tolist()) == list(range(60))


def test_fine_tune_a_plain_torch_gru_state_dict(tmp_path, capsys):
    """--init takes a module's state dict holding a torch.nn.GRU and a Linear head (any names)."""
    data = tmp_path / "d.npz"
    _npz(data, tdata.CLASSIFICATION)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 8, batch_first=True)
            self.fc = torch.nn.Linear(8, 3)

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.rnn.weight_hh_l0.mul_(4.0)  # some weights outside Q1.7's [-1, 1): clamped, and said
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "ft"
    args = ["--data", str(data), "--out", str(out), "--init", str(tmp_path / "plain.pt")]
    assert ttrain.main(args + [a for a in TINY_CLI if a != "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "are clamped into it before fine-tuning" in err
    assert not (out / "dense.pt").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["float_dense"]["source"] == str(tmp_path / "plain.pt")
    assert "clamped" in metrics["summary"]["init_note"]
    # The head came from the state dict: the float dense reference is the plain network's.
    gru = torch.nn.GRU(3, 8, batch_first=True)
    gru.load_state_dict(net.rnn.state_dict())
    ds = userdata.make_dataset(data)
    ref = ttrain.float_dense_metrics(gru.state_dict(), net.fc.state_dict(), ds, "test")
    assert metrics["float_dense"]["test_accuracy"] == ref["accuracy"]
    # A plain GRU without head and of another size: the head is fresh, the size is an error.
    torch.save(torch.nn.GRU(3, 8).state_dict(), tmp_path / "gru.pt")
    gru_state, head, note = ttrain._load_init(tmp_path / "gru.pt",
                                              load_model(out / "model.pt").config)
    assert head is None and "no Linear head" in note and set(gru_state) == set(
        torch.nn.GRU(3, 8).state_dict())
    torch.save(torch.nn.GRU(3, 5).state_dict(), tmp_path / "small.pt")
    assert ttrain.main(["--data", str(data), "--out", str(tmp_path / "x"), "--init",
                        str(tmp_path / "small.pt")] + TINY_CLI) == 2
    assert "is for another network" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- bad data
def _bad(tmp_path, **arrays):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    return p


GOOD = dict(X=np.zeros((10, 2), np.float32), lengths=np.array([4, 6]), y=np.array([0, 1]))

BAD_FILES = [
    (dict(GOOD, lengths=np.array([4, 5])), "lengths add up to 9 frames but X has 10 rows"),
    (dict(GOOD, X=np.zeros(10, np.float32)), r"X must be 2-D \(all frames, features\); got shape"),
    (dict(GOOD, X=np.array([["a", "b"]] * 10)), "X has dtype <U1; expected a float"),
    (dict(GOOD, X=np.where(np.arange(20).reshape(10, 2) == 13, np.nan, 0.0)),
     r"X has 1 NaN or infinite values .* at frame 6 \(sequence 1\), feature 1"),
    (dict(GOOD, X=np.full((10, 2), np.inf)), "X has 20 NaN or infinite values"),
    (dict(GOOD, y=np.array([0, 1, 1])), r"y has 3 entries; expected 2 \(one label per sequence\) "
                                        r"or 10 \(one label or target per frame\)"),
    (dict(GOOD, y=np.array([0, -1])), "label -1 .* is negative"),
    (dict(GOOD, y=np.array([0, 2]), classes=np.array(["a", "b"])),
     r"label 2 \(entry 1\) is out of range; 'classes' names 2 classes"),
    (dict(GOOD, y=np.array([0.0, 0.5])), "class label 0.5 .* is not an integer"),
    (dict(GOOD, lengths=np.array([4.0, 6.0])), "lengths must be a 1-D integer array"),
    (dict(GOOD, lengths=np.array([0, 10])), "sequence 0 has length 0"),
    ({"X": GOOD["X"], "y": GOOD["y"]}, "has no lengths"),
    (dict(GOOD, y=np.array([{"a": 1}, 2], dtype=object)), "holds Python objects"),
]


@pytest.mark.parametrize("arrays,message", BAD_FILES)
def test_bad_data_files_are_clear_errors(tmp_path, arrays, message):
    p = _bad(tmp_path, **arrays)
    with pytest.raises(tdata.DatasetError, match=message):
        userdata.make_dataset(p)
    assert issubclass(tdata.DatasetError, DeltahwError)


def test_bad_data_stops_the_cli_before_training(tmp_path, capsys):
    p = _bad(tmp_path, **dict(GOOD, lengths=np.array([4, 5])))
    out = tmp_path / "run"
    assert ttrain.main(["--data", str(p), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lengths add up to 9 frames" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    (tmp_path / "notnpz.npz").write_text("hello")
    assert ttrain.main(["--data", str(tmp_path / "notnpz.npz"), "--out", str(out)]) == 2
    assert "is not a .npz file" in capsys.readouterr().err
    assert ttrain.main(["--data", str(tmp_path / "missing.npz"), "--out", str(out)]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err
    assert ttrain.main(["--out", str(out)]) == 2
    assert "either a built-in dataset" in capsys.readouterr().err
    assert ttrain.main(["--dataset", "fsdd", "--task", "timestep-regression", "--out",
                        str(out)]) == 2
    assert "go with --data" in capsys.readouterr().err


def test_too_few_sequences_per_class_and_mismatched_splits(tmp_path):
    xs, ys = _sequences(tdata.CLASSIFICATION, 12)
    ys[2] = 5  # class 5 has one sequence
    with pytest.raises(tdata.DatasetError, match=r"class 5 has 1 sequence; a stratified split "
                                                 r"into training, test, validation sets needs at "
                                                 r"least 3 per class"):
        userdata.make_dataset(list(zip(xs, ys)))
    tr = tmp_path / "tr.npz"
    _npz(tr, tdata.CLASSIFICATION, n=30)
    va = tmp_path / "va.npz"
    np.savez(va, X=np.zeros((8, 4), np.float32), lengths=np.array([8]), y=np.array([0]))
    with pytest.raises(tdata.DatasetError, match="va.npz has 4 features per frame; "
                                                 "the training data has 3"):
        userdata.make_dataset(tr, va, va)
    np.savez(va, X=np.zeros((8, 3), np.float32), lengths=np.array([8]), y=np.array([7]))
    with pytest.raises(tdata.DatasetError, match="Class '3' has no training sequence"):
        userdata.make_dataset(tr, va, va)
    with pytest.raises(tdata.DatasetError, match="sequence 1 has 2 features but sequence 0 has 3"):
        userdata.from_sequences([(np.zeros((5, 3)), 0), (np.zeros((5, 2)), 1)])
    with pytest.raises(tdata.DatasetError, match="sequence 0 has 5 frames but 4 targets"):
        userdata.from_sequences([(np.zeros((5, 3)), np.zeros(4))])
    with pytest.raises(ttrain.TrainError, match="Unknown training option 'hiden'"):
        ttrain.fit(tr, out=tmp_path / "o", hiden=8)


def test_auto_schedule_is_sensible_for_small_and_large_sets():
    small = ttrain.auto_schedule(210)
    assert small["batch_size"] == 16 and small["dense_epochs"] == 143
    assert small["delta_epochs"] == 86 and small["ramp_epochs"] == 17
    big = ttrain.auto_schedule(20000)
    assert big["batch_size"] == 32 and big["dense_epochs"] == 15 and big["delta_epochs"] == 10
    tiny = ttrain.auto_schedule(20)
    assert tiny["batch_size"] == 8 and tiny["dense_epochs"] == 150


# ------------------------------------------------------------------ built-in data through --data
@pytest.mark.parametrize("name", ["fsdd", "watch"])
def test_builtin_splits_written_as_npz_load_back_identically(tmp_path, name):
    """scripts/export_npz.py writes a built-in dataset's splits; --data reads back the same
    arrays, labels and normalisation, so training on the files is training on the same data."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "export_npz.py"
    spec = importlib.util.spec_from_file_location("export_npz", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([name, "--out", str(tmp_path)]) == 0
    ref = tdata.load_dataset(name)
    got = userdata.make_dataset(tmp_path / "train.npz", tmp_path / "val.npz",
                                tmp_path / "test.npz", task="classification")
    assert got.class_names == [str(c) for c in ref.class_names]
    for k in ("train", "val", "test"):
        a, b = ref.split(k), got.split(k)
        assert len(a.xs) == len(b.xs)
        assert all(np.array_equal(x, y) for x, y in zip(a.xs, b.xs))
        np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(ref.mean, got.mean)
    np.testing.assert_array_equal(ref.std, got.std)


def test_chorales_dataset_reads_the_scores():
    """Bach chorales from music21's corpus: per-eighth-note soprano/alto/tenor inputs, bass
    pitch-class targets. Expected values read by hand from bwv1.6.mxl (F major; the soprano
    starts F4 | C5 A4 F4 C5, the bass F3 | E3 F3 D3 A2, a one-quarter pickup)."""
    ds = tdata.load_dataset("chorales")
    assert ds.task == tdata.STEP_CLASSIFICATION and ds.input_size == 14
    assert ds.num_classes == 13 and ds.class_names[-1] == "rest"
    sizes = [len(ds.split(k)) for k in ("train", "val", "test")]
    assert sum(sizes) == 403 and sizes[1] == sizes[2] == 60
    ids = [set(ds.split(k).origin.tolist()) for k in ("train", "val", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    where = [(k, i) for k in ("train", "val", "test")
             for i, o in enumerate(ds.split(k).origin)
             if o == 0]  # bwv1.6 is the first file in sorted order
    assert len(where) == 1
    x, y = ds.split(where[0][0]).xs[where[0][1]], ds.split(where[0][0]).y[where[0][1]]
    F, C, A = 5, 0, 9  # soprano F4 | C5 A4 F4 C5: its pitch classes are in the chroma
    assert all(x[k, pc] == 1 for k, pc in enumerate([F, F, C, C, A, A, F, F, C, C]))
    assert set(x[:10, :12].sum(1).tolist()) <= {1.0, 2.0, 3.0}  # three voices, maybe unisons
    np.testing.assert_array_equal(x[:10, 12], [1, 0, 1, 0, 1, 0, 1, 0, 1, 0])  # onsets
    np.testing.assert_array_equal(x[:11, 13], [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])  # downbeats
    np.testing.assert_array_equal(y[:10], [5, 5, 4, 4, 5, 5, 2, 2, 9, 9])  # F E F D A
    for k in ("train", "val", "test"):
        assert all(len(a) == len(b) for a, b in zip(ds.split(k).xs, ds.split(k).y))
        assert all(v.min() >= 0 and v.max() <= 12 for v in ds.split(k).y)


def test_fsdd_through_data_files_trains_the_same_network(tmp_path):
    """The same options on the built-in fsdd and on its splits written as npz files give the same
    network and the same golden-model figures (a short run; the full one is in the docs)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "export_npz.py"
    spec = importlib.util.spec_from_file_location("export_npz", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["fsdd", "--out", str(tmp_path / "npz")]) == 0
    opts = ["--limit", "320", "--hidden", "16", "--dense-epochs", "3", "--delta-epochs", "2",
            "--ramp-epochs", "1", "--batch-size", "32", "--lr", "1e-2", "--quiet"]
    fsdd = ttrain.DEFAULTS["fsdd"]
    same = ["--theta-x", str(fsdd["theta_x"]), "--theta-h", str(fsdd["theta_h"]),
            "--l1", str(fsdd["l1"]), "--delta-lr", str(fsdd["delta_lr"])]
    assert ttrain.main(["--dataset", "fsdd", "--out", str(tmp_path / "a")] + opts) == 0
    npz = tmp_path / "npz"
    assert ttrain.main(["--data", str(npz / "train.npz"), "--val-data", str(npz / "val.npz"),
                        "--test-data", str(npz / "test.npz"), "--out", str(tmp_path / "b")]
                       + opts + same) == 0
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert a["config"] == b["config"]
    assert all(torch.equal(a["gru"][k], b["gru"][k]) for k in a["gru"])
    assert all(torch.equal(a["head"][k], b["head"][k]) for k in a["head"])
    sa = json.loads((tmp_path / "a" / "metrics.json").read_text())["summary"]
    sb = json.loads((tmp_path / "b" / "metrics.json").read_text())["summary"]
    for k in ("delta_trained_test_accuracy", "delta_trained_test_op_reduction",
              "float_dense_test_accuracy", "converted_test_accuracy_same_thresholds"):
        assert sa[k] == sb[k], k


def test_shipped_chorales_model_reproduces_its_metrics():
    """models/chorales: per-timestep classification, H <= 64 (fits the Arty A7 like the others);
    the golden model reproduces metrics.json from the checkpoint and from the exported folder."""
    from pathlib import Path

    from deltahw.config import DeltaGRUConfig

    folder = Path(__file__).resolve().parents[1] / "models" / "chorales"
    metrics = json.loads((folder / "metrics.json").read_text())
    model = load_model(folder / "model.pt")
    assert model.config == DeltaGRUConfig.load(folder / "config.json")
    assert model.config.hidden_size <= 64 and model.config.lanes == 48
    assert model.meta["task"] == tdata.STEP_CLASSIFICATION
    exported = load_model(folder / "export")
    assert exported.config == model.config
    assert exported.meta["task"] == tdata.STEP_CLASSIFICATION
    res = golden_eval(model, tdata.load_dataset("chorales"), "test")
    s = metrics["summary"]
    assert res["accuracy"] == pytest.approx(s["delta_trained_test_accuracy"], abs=1e-12)
    assert res["op_reduction"] == pytest.approx(s["delta_trained_test_op_reduction"])
    assert res["timesteps"] == metrics["dataset"]["test"]["frames"]
