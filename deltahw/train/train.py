"""``python -m deltahw.train``: train a delta-GRU for the accelerator, on built-in data or yours.

Data: ``--dataset fsdd|watch`` (shipped in packages), or ``--data train.npz [--val-data v.npz]
[--test-data t.npz] [--task ...]`` (see :mod:`deltahw.train.userdata` for the file layout). From
Python, :func:`fit` takes a path, arrays, an iterable of ``(x, y)`` sequences or a torch
``Dataset``. Tasks (:data:`deltahw.train.data.TASKS`): sequence classification (last timestep),
per-timestep classification and per-timestep regression.

A run has two stages, both written into the output folder ``OUT``:

1. **dense**: a float ``torch.nn.GRU`` + ``torch.nn.Linear`` head on the normalised inputs (weights
   kept inside the weight format's range so they quantize without clipping). Writes
   ``OUT/dense.pt``. This is the "float dense GRU of the same size" the delta network is compared
   with, and the network that the threshold sweep converts to a delta network at run time.
2. **delta**: :class:`deltahw.train.module.DeltaGRU` started from the dense weights (``--init`` or
   the dense stage), trained with the thresholds in the forward pass (ramped up from 0 over
   ``--ramp-epochs``), quantization-aware, with optional threshold-tied noise and an L1 cost on the
   hidden-state changes. Writes ``OUT/model.pt`` (a ``deltahw.model.save_checkpoint`` checkpoint
   that ``deltahw.model.load_model`` and ``python -m deltahw.export`` read), ``OUT/config.json`` and
   ``OUT/metrics.json`` (golden-model accuracy and operation reduction on val and test).

The model kept from each stage is the epoch with the best validation accuracy (for the delta stage,
only epochs at the full thresholds count; ties go to the larger operation reduction). Runs are
deterministic for a given ``--seed`` (batch order and noise are seeded per epoch) and restartable:
``OUT/train_state.pt`` is written atomically after every epoch and ``--resume`` continues from it
with identical results. Every file is written atomically, so an interrupted run never leaves a
half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..bench.whatif import act_width_for_data
from ..boards import PARTS
from ..errors import DeltahwError
from ..config import ConfigError, DeltaGRUConfig
from ..model import CHECKPOINT_KIND, load_model, quantize_gru, save_checkpoint
from ..util import Terminated, atomic_write_bytes, atomic_write_text, run_cli
from .data import (
    CLASSIFICATION,
    DATASETS,
    STEP_REGRESSION,
    TASKS,
    Dataset,
    DatasetError,
    load_dataset,
)
from .evaluate import (_Tally, float_dense_metrics, golden_eval, golden_inputs, primary_metric,
                       to_lsb)
from .module import DeltaGRU
from .userdata import make_dataset

__all__ = ["TrainError", "DEFAULTS", "USER_DEFAULTS", "auto_schedule", "FitResult", "fit",
           "build_parser", "run", "main"]

#: Per-dataset defaults (each fits the ~10 minute budget on 2 CPU cores with one thread).
DEFAULTS = {
    "fsdd": dict(hidden=64, dense_epochs=40, delta_epochs=30, ramp_epochs=6, batch_size=32,
                 lr=3e-3, delta_lr=3e-3, theta_x=0.375, theta_h=0.5, l1=2.0, noise=0.0,
                 ema=0.0, weight_decay=0.0),
    "watch": dict(hidden=64, dense_epochs=15, delta_epochs=12, ramp_epochs=3, batch_size=32,
                  lr=3e-3, delta_lr=3e-3, theta_x=0.375, theta_h=0.25, l1=5.0, noise=0.0,
                  ema=0.0, weight_decay=0.0),
}

#: Defaults for the user's own data (``--data`` / :func:`fit`); epochs and batch size come from
#: :func:`auto_schedule`. Thresholds 0.25 (a quarter of an input standard deviation, a quarter of
#: the tanh range for h) sit below both shipped models' (0.375 / 0.25-0.5): on a new dataset the
#: accuracy is kept first; the calibration picks larger thresholds where the data allows.
USER_DEFAULTS = dict(hidden=64, lr=3e-3, delta_lr=3e-3, theta_x=0.25, theta_h=0.25, l1=2.0,
                     noise=0.0, ema=0.0, weight_decay=0.0)
#: Optimizer steps the automatic schedule aims for (fsdd's defaults: 2640 dense, 1980 delta).
AUTO_DENSE_STEPS, AUTO_DELTA_STEPS = 2000, 1200


def auto_schedule(n_train: int) -> dict:
    """Batch size and epochs for ``n_train`` training sequences (user data defaults).

    The batch size is 32, smaller for small sets so that an epoch has at least 8 steps (never
    below 8); the epochs give about :data:`AUTO_DENSE_STEPS` dense and :data:`AUTO_DELTA_STEPS`
    delta optimizer steps, within 15-150 dense and 10-100 delta epochs (the best validation
    epoch is kept, so more epochs than needed cost time, not accuracy); thresholds ramp up over
    the first fifth of the delta epochs.
    """
    bs = 32
    while bs > 8 and n_train < 8 * bs:
        bs //= 2
    nb = max(1, math.ceil(n_train / bs))
    dense = min(150, max(15, math.ceil(AUTO_DENSE_STEPS / nb)))
    delta = min(100, max(10, math.ceil(AUTO_DELTA_STEPS / nb)))
    return dict(batch_size=bs, dense_epochs=dense, delta_epochs=delta,
                ramp_epochs=max(1, round(0.2 * delta)))


#: Hardware parameters of the shipped models (Arty A7-35T).
HW_DEFAULTS = dict(lanes=48, lanes_per_bank=4, act_width="auto", enc_width=8)
#: The part an ``act_width="auto"`` choice must fit (the Arty A7-35T, the primary board).
DEFAULT_PART = "xc7a35t"
#: How ``--act-width auto`` chooses, recorded with the choice (also by ``deltahw.train.act_width``).
ACT_WIDTH_RULE = ("fewest mean cycles per timestep (deltahw.cycles) among the widths that fit "
                  "the part (deltahw.resources.fits)")


def _act_width_arg(text: str):
    """``--act-width``: a power of two, or ``auto`` (chosen from the validation data)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a power of two or 'auto'; got {text!r}") from None

STATE_NAME = "train_state.pt"


class TrainError(DeltahwError, ValueError):
    """Training cannot start or continue (bad argument, NaN loss, mismatched resume state)."""


# --------------------------------------------------------------------------------------------------
class DenseNet(nn.Module):
    """The dense float baseline: ``torch.nn.GRU`` and a ``torch.nn.Linear`` head at every step."""

    def __init__(self, config: DeltaGRUConfig):
        super().__init__()
        self.config = config
        self.gru = nn.GRU(config.input_size, config.hidden_size, config.num_layers,
                          batch_first=True)
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x, lengths):
        """Head outputs (B, T, O) at every timestep (the task's loss reads what it needs)."""
        out, _ = self.gru(x)
        return self.head(out)

    @torch.no_grad()
    def clamp_to_formats(self) -> None:
        w = self.config.weight
        for n, p in self.named_parameters():
            if "weight" in n:
                p.clamp_(w.min_value, w.max_value)


@dataclass
class Arrays:
    """A split as padded tensors: normalised float inputs, act-grid inputs, lengths, targets as
    learnt (normalised for regression) and as evaluated (the data's units)."""

    x_float: torch.Tensor
    x_grid: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor
    y_eval: torch.Tensor

    def head(self, n: int) -> Arrays:
        return Arrays(self.x_float[:n], self.x_grid[:n], self.lengths[:n], self.y[:n],
                      self.y_eval[:n])


def _arrays(ds: Dataset, split: str, config: DeltaGRUConfig) -> Arrays:
    xq, lengths, y_eval = ds.quantize(split, config.act)
    s = ds.split(split)
    from .data import pad_batch

    x, _ = pad_batch(s.xs)
    xf = ((x.double() - torch.from_numpy(ds.mean).double())
          / torch.from_numpy(ds.std).double()).float()
    return Arrays(xf, xq.float() * config.act.lsb, lengths, ds.targets(s, normalised=True),
                  y_eval)


def _batches(lengths: torch.Tensor, batch_size: int, gen: torch.Generator | None) -> list:
    """Length-bucketed batches (similar lengths together); shuffled when ``gen`` is given."""
    n = len(lengths)
    if gen is None:
        order = torch.argsort(lengths, stable=True)
    else:
        jitter = torch.rand(n, generator=gen) * 4.0
        order = torch.argsort(lengths.float() + jitter, stable=True)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if gen is not None:
        perm = torch.randperm(len(batches), generator=gen)
        batches = [batches[i] for i in perm]
    return batches


def _slice(arr: Arrays, idx: torch.Tensor, grid: bool, evaluate: bool = False):
    lengths = arr.lengths[idx]
    T = int(lengths.max())
    x = (arr.x_grid if grid else arr.x_float)[idx, :T]
    y = (arr.y_eval if evaluate else arr.y)[idx]
    return x, lengths, (y if y.dim() == 1 else y[:, :T])


def task_loss(task: str, out: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor):
    """Cross-entropy at the last real timestep (classification) or over every real timestep
    (timestep-classification); mean squared error of the normalised targets (regression)."""
    B, T = out.shape[:2]
    if task == CLASSIFICATION:
        return nn.functional.cross_entropy(out[torch.arange(B), lengths - 1], y)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    if task == STEP_REGRESSION:
        return nn.functional.mse_loss(out[mask], y[mask])
    return nn.functional.cross_entropy(out[mask], y[mask])


def _epoch_seed(seed: int, stage: str, epoch: int) -> int:
    return (seed * 1_000_003 + (0 if stage == "dense" else 500_009) + epoch * 7919) % (2**31)


def _cosine(lr: float, epoch: int, epochs: int) -> float:
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs))))


def _check_loss(loss: torch.Tensor, stage: str, epoch: int, batch: int) -> None:
    if not torch.isfinite(loss):
        raise TrainError(
            f"The training loss became {loss.item()} in the {stage} stage (epoch {epoch + 1}, "
            f"batch {batch + 1}); lower the learning rate (--lr/--delta-lr) or the L1 weight "
            "(--l1) and start again. No checkpoint was written for this epoch."
        )


@torch.no_grad()
def _eval_dense(net: DenseNet, arr: Arrays, ds: Dataset) -> dict:
    """Task metrics of the float dense network (``score``: higher is better)."""
    net.eval()
    tally = _Tally(ds.task, ds.target_mean, ds.target_std)
    for idx in _batches(arr.lengths, 512, None):
        x, lengths, y = _slice(arr, idx, grid=False, evaluate=True)
        tally.add(net(x, lengths), lengths, y)
    return tally.result()


@torch.no_grad()
def _eval_delta(net: DeltaGRU, arr: Arrays, ds: Dataset) -> tuple[dict, float]:
    """Task metrics and op reduction of the (quantized) float module; equal the golden model's."""
    net.eval()
    tally = _Tally(ds.task, ds.target_mean, ds.target_std)
    macs = dense = 0.0
    for idx in _batches(arr.lengths, 512, None):
        x, lengths, y = _slice(arr, idx, grid=True, evaluate=True)
        out = net(x, lengths)
        tally.add(out.outputs, lengths, y)
        macs += float(out.macs.sum())
        dense += float(out.dense_macs.sum())
    return tally.result(), (dense / macs if macs else float("inf"))


def _fmt(r: dict) -> str:
    if r["metric"] == "rmse":
        return f"RMSE {r['rmse']:.4g}, MAE {r['mae']:.4g}"
    return f"accuracy {100 * r['accuracy']:.2f} %"


def _save_state(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_state(path: Path) -> dict:
    """An interrupted run's state, read with ``weights_only=True`` (tensors and plain containers,
    all that :func:`_save_state` writes): a crafted file cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with a clear message
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TrainError(
            f"Cannot resume from {path}: it is not a training state this tool wrote ({first}). "
            f"Delete it to start the run over."
        ) from None
    if not isinstance(state, dict) or not {"fingerprint", "stage", "epoch"} <= set(state):
        raise TrainError(f"Cannot resume from {path}: it is not a training state this tool wrote "
                         "(missing fingerprint, stage or epoch). Delete it to start the run over.")
    return state


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=quiet, dynamic_ncols=True,
                leave=False, file=sys.stderr)


# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.train",
        description="Train a delta-GRU (dense pretraining or your own dense GRU, then delta "
                    "training with thresholds in the forward pass, quantization-aware) on a "
                    "built-in dataset or your own data, and evaluate it with the bit-exact golden "
                    "model.",
    )
    src = ap.add_argument_group("data (one of --dataset, --data)")
    src.add_argument("--dataset", help=f"a built-in dataset: {', '.join(DATASETS)}")
    src.add_argument("--data", help="your training data: an .npz with X (all frames, features), "
                                    "lengths (sequences) and y (labels or targets)")
    src.add_argument("--val-data", help="validation .npz (default: 15 %% split off --data)")
    src.add_argument("--test-data", help="test .npz (default: 15 %% split off --data)")
    src.add_argument("--task", choices=TASKS,
                     help="what y holds (default: inferred from y's length and dtype and "
                          "printed): one label per sequence, one label per frame, or real "
                          "targets per frame")
    ap.add_argument("--out", required=True, help="output folder (model.pt, config.json, ...)")
    ap.add_argument("--hidden", type=int, help="hidden units H (default 64)")
    ap.add_argument("--layers", type=int, default=1, help="GRU layers (default 1)")
    ap.add_argument("--theta-x", type=float,
                    help="input-delta threshold in real units of the normalised input "
                         "(rounded to act LSBs)")
    ap.add_argument("--theta-h", type=float, help="hidden-delta threshold in real units")
    ap.add_argument("--theta-head", type=float,
                    help="threshold of the head's input encoder in real units (default: "
                         "--theta-h)")
    ap.add_argument("--dense-epochs", type=int, help="epochs of the dense stage")
    ap.add_argument("--delta-epochs", type=int, help="epochs of the delta stage")
    ap.add_argument("--ramp-epochs", type=int, help="delta epochs over which thresholds ramp up")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float, help="Adam learning rate of the dense stage")
    ap.add_argument("--delta-lr", type=float, help="Adam learning rate of the delta stage")
    ap.add_argument("--l1", type=float, help="weight of the L1 cost on hidden-state changes")
    ap.add_argument("--noise", type=float,
                    help="std of the threshold-tied noise, in units of the threshold (0 = off)")
    ap.add_argument("--ema", type=float,
                    help="decay of an exponential moving average of the delta-stage weights, "
                         "which is what is evaluated and kept (0 = off)")
    ap.add_argument("--weight-decay", type=float, help="AdamW weight decay of the delta stage")
    ap.add_argument("--float", dest="no_quant", action="store_true",
                    help="delta stage without rounding to the fixed-point grid (ablation)")
    ap.add_argument("--init", help="fine-tune this dense network into a delta network instead of "
                                   "running the dense stage: a deltahw checkpoint, or the "
                                   "state dict of a torch.nn.GRU (optionally with its "
                                   "torch.nn.Linear head) saved with torch.save")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="let --init unpickle arbitrary Python objects (e.g. a whole saved "
                         "nn.Module); only for files you trust, as unpickling can run code")
    ap.add_argument("--no-pretrain", action="store_true",
                    help="train the delta network from a random initialisation (no dense stage "
                         "init; the dense stage still runs as the reference unless --init)")
    ap.add_argument("--dense-only", action="store_true", help="stop after the dense stage")
    ap.add_argument("--seed", type=int, default=0, help="training seed (init, batch order, noise)")
    ap.add_argument("--split-seed", type=int, default=0, help="dataset split seed (keep at 0 to "
                                                               "compare with shipped models)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--limit", type=int, default=0,
                    help="use only this many training sequences (smoke tests)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, val in HW_DEFAULTS.items():
        auto = name == "act_width"
        ap.add_argument(f"--{name.replace('_', '-')}", type=_act_width_arg if auto else int,
                        default=val,
                        help=(f"hardware parameter {name} (default {val}"
                              + ("; auto: the fastest width that fits --part, from the cycle "
                                 "model over the validation split's fired columns)" if auto
                                 else ")")))
    ap.add_argument("--part", default=DEFAULT_PART, choices=sorted(PARTS),
                    help=f"FPGA part an automatic act width must fit (default {DEFAULT_PART})")
    return ap


#: Options :func:`fit` takes (``None`` = the dataset's default), with their CLI spelling.
OPTIONS = ("hidden", "theta_x", "theta_h", "theta_head", "dense_epochs", "delta_epochs",
           "ramp_epochs", "batch_size", "lr", "delta_lr", "l1", "noise", "ema", "weight_decay")


def _resolve(given: dict, ds: Dataset, builtin: bool) -> dict:
    """Fill the defaults (per built-in dataset, or :data:`USER_DEFAULTS` + :func:`auto_schedule`);
    validate every option with a full-sentence error."""
    if builtin and ds.name in DEFAULTS:
        d = dict(DEFAULTS[ds.name])
    else:
        n = len(ds.train) if not given.get("limit") else min(len(ds.train), given["limit"])
        d = {**USER_DEFAULTS, **auto_schedule(n)}
        if given.get("delta_epochs") is not None and given.get("ramp_epochs") is None:
            d["ramp_epochs"] = max(1, round(0.2 * given["delta_epochs"]))
    for k in list(d):
        v = given.get(k)
        if v is not None:
            d[k] = v
    d["theta_head"] = d["theta_h"] if given.get("theta_head") is None else given["theta_head"]
    for k in ("hidden", "dense_epochs", "delta_epochs", "batch_size"):
        if not isinstance(d[k], int) or isinstance(d[k], bool) or d[k] < 1:
            raise TrainError(f"--{k.replace('_', '-')} must be a positive integer; got {d[k]}.")
    if not isinstance(d["ramp_epochs"], int) or d["ramp_epochs"] < 0:
        raise TrainError(f"--ramp-epochs must be an integer >= 0; got {d['ramp_epochs']}.")
    if d["ramp_epochs"] >= d["delta_epochs"]:
        raise TrainError(
            f"--ramp-epochs ({d['ramp_epochs']}) must be smaller than --delta-epochs "
            f"({d['delta_epochs']}) so that some epochs run at the full thresholds."
        )
    for k in ("lr", "delta_lr"):
        if not (isinstance(d[k], (int, float)) and math.isfinite(d[k]) and d[k] > 0):
            raise TrainError(f"--{k.replace('_', '-')} must be a positive number; got {d[k]}.")
    if not 0 <= d["ema"] < 1:
        raise TrainError(f"--ema must be from 0 (off) to below 1; got {d['ema']}.")
    for k in ("l1", "noise", "theta_x", "theta_h", "theta_head", "weight_decay"):
        if not (isinstance(d[k], (int, float)) and math.isfinite(d[k]) and d[k] >= 0):
            raise TrainError(f"--{k.replace('_', '-')} must be a number >= 0; got {d[k]}.")
    layers = given.get("layers", 1)
    if not isinstance(layers, int) or layers < 1:
        raise TrainError(f"--layers must be a positive integer; got {layers}.")
    if given.get("init") is not None and given.get("no_pretrain"):
        raise TrainError("--init and --no-pretrain contradict each other; pass only one.")
    if given.get("init") is not None and given.get("dense_only"):
        raise TrainError("--init skips the dense stage, so --dense-only has nothing to do.")
    init = given.get("init")
    d.update(layers=layers, seed=given.get("seed", 0), split_seed=given.get("split_seed", 0),
             quantize=given.get("quantize", True),
             init=None if init is None else (str(init) if isinstance(init, (str, Path))
                                             else "<state dict>"),
             no_pretrain=bool(given.get("no_pretrain")), dense_only=bool(given.get("dense_only")),
             limit=given.get("limit", 0) or 0, dataset=ds.name, task=ds.task)
    if not builtin:
        d["data_digest"] = _digest(ds)
    return d


def _digest(ds: Dataset) -> str:
    """A hash of every split's inputs and targets (a resumed run must see the same data)."""
    import hashlib

    h = hashlib.sha256(ds.task.encode())
    for k in ("train", "val", "test"):
        s = ds.split(k)
        for x in s.xs:
            h.update(np.ascontiguousarray(x).tobytes())
        ys = [s.y] if ds.task == CLASSIFICATION else s.y
        for y in ys:
            h.update(np.ascontiguousarray(np.asarray(y)).tobytes())
    return h.hexdigest()[:16]


def _config(opts: dict, ds: Dataset, hw: dict) -> tuple[DeltaGRUConfig, DeltaGRUConfig]:
    """(dense config with zero thresholds, delta config with the target thresholds)."""
    if hw.get("act_width") == "auto":
        # Chosen at the end (_finish) from the validation data; 1 is legal for every lane count
        # and changes nothing in training.
        hw = dict(hw, act_width=1)
    try:
        base = DeltaGRUConfig(input_size=ds.input_size, hidden_size=opts["hidden"],
                              num_layers=opts["layers"], output_size=ds.output_size, **hw)
        L = base.num_layers
        delta = base.with_thresholds(theta_x=(to_lsb(opts["theta_x"], base),) * L,
                                     theta_h=(to_lsb(opts["theta_h"], base),) * L,
                                     theta_head=to_lsb(opts["theta_head"], base))
        DeltaGRUConfig.from_dict(delta.to_dict())
    except (ConfigError, ValueError) as e:
        raise TrainError(f"The requested network is not a valid deltahw config: {e}") from None
    return base, delta


def _ramped(cfg: DeltaGRUConfig, epoch: int, ramp: int) -> DeltaGRUConfig:
    if ramp == 0 or epoch >= ramp:
        return cfg
    f = (epoch + 1) / (ramp + 1)
    return cfg.with_thresholds(theta_x=tuple(int(round(t * f)) for t in cfg.theta_x),
                               theta_h=tuple(int(round(t * f)) for t in cfg.theta_h),
                               theta_head=int(round(cfg.theta_head * f)))


_GRU_KEY = re.compile(r"^(.*?)((weight|bias)_(ih|hh)_l(\d+))$")


def split_state_dict(obj: dict, where: str) -> tuple[dict, dict | None]:
    """(GRU parameters under ``torch.nn.GRU`` names, head ``{weight, bias}`` or None) of a state
    dict: a ``torch.nn.GRU``'s, or a module's holding one GRU and a ``torch.nn.Linear`` head (the
    one Linear whose input size is the GRU's hidden size)."""
    gru, prefixes = {}, set()
    for k, v in obj.items():
        m = _GRU_KEY.match(str(k))
        if m and isinstance(v, torch.Tensor):
            prefixes.add(m.group(1))
            gru[m.group(2)] = v
    if not gru:
        raise TrainError(f"{where} has no torch.nn.GRU parameters (weight_ih_l0, ...); expected "
                         "the state dict of a torch.nn.GRU or of a module that holds one.")
    if len(prefixes) > 1:
        raise TrainError(f"{where} holds several GRUs ({', '.join(sorted(prefixes))}); "
                         "save the state dict of the one to fine-tune.")
    if any(k.endswith("_reverse") for k in obj):
        raise TrainError(f"{where} is a bidirectional GRU; a delta network runs forward only.")
    H = gru["weight_hh_l0"].shape[1] if "weight_hh_l0" in gru else None
    heads = []
    for k, v in obj.items():
        k = str(k)
        if _GRU_KEY.match(k) or not k.endswith("weight") or not isinstance(v, torch.Tensor):
            continue
        p = k[: -len("weight")]
        b = obj.get(p + "bias")
        if v.dim() == 2 and v.shape[1] == H and isinstance(b, torch.Tensor) \
                and tuple(b.shape) == (v.shape[0],):
            heads.append((p, {"weight": v, "bias": b}))
    if len(heads) > 1:
        raise TrainError(f"{where} has several Linear layers that could be the head "
                         f"({', '.join(p.rstrip('.') for p, _ in heads)}); deltahw supports one "
                         "Linear head on the GRU's output.")
    return gru, (heads[0][1] if heads else None)


def _load_init(init, base: DeltaGRUConfig,
               trust_pickle: bool = False) -> tuple[dict, dict | None, str]:
    """GRU and head parameters to start the delta stage from, and a note of what was found.

    ``trust_pickle`` (``--trust-pickle``) also reads a file holding arbitrary pickled objects (e.g.
    a whole saved ``nn.Module``); without it only tensors and plain containers are unpickled."""
    if isinstance(init, nn.Module):
        init = init.state_dict()
    if isinstance(init, dict):
        obj, p = init, "the given state dict"
    else:
        p = Path(init)
        if not p.is_file():
            raise TrainError(f"The --init checkpoint {p} does not exist.")
        try:
            obj = torch.load(p, map_location="cpu", weights_only=not trust_pickle)
        except Exception as e:  # noqa: BLE001 - re-raised with a clear message
            raise TrainError(f"{p} is not a readable PyTorch state dict ({str(e).splitlines()[0]}"
                             "); save the model with torch.save(model.state_dict(), path)"
                             + ("" if trust_pickle else ", or pass --trust-pickle if you trust "
                                "the file (unpickling can run code)") + ".") from None
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
    if isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND:
        gru, head = obj["gru"], obj.get("head")
    elif isinstance(obj, dict):
        gru, head = split_state_dict(obj, str(p))
    else:
        raise TrainError(f"{p} holds a {type(obj).__name__}; expected a deltahw checkpoint or a "
                         "torch.nn.GRU state dict.")
    w = gru.get("weight_ih_l0")
    want = (3 * base.hidden_size, base.input_size)
    if w is None or tuple(w.shape) != want:
        got = None if w is None else tuple(w.shape)
        raise TrainError(
            f"The --init checkpoint {p} is for another network: its weight_ih_l0 has shape {got}, "
            f"this run needs {want} (input_size={base.input_size}, hidden={base.hidden_size}); "
            "pass --hidden to match it."
        )
    layers = sum(1 for k in gru if k.startswith("weight_ih_l"))
    if layers != base.num_layers:
        raise TrainError(f"The --init checkpoint {p} has {layers} GRU layers; this run has "
                         f"{base.num_layers} (pass --layers {layers}).")
    for k, v in gru.items():
        if not torch.isfinite(v).all():
            raise TrainError(f"The --init checkpoint {p} has NaN or infinite values in {k}.")
    gru = {k: v.detach().float().clone() for k, v in gru.items()}
    note = []
    if head is not None and tuple(head["weight"].shape) != (base.output_size, base.hidden_size):
        note.append(f"its head has {head['weight'].shape[0]} outputs and this task needs "
                    f"{base.output_size}, so the head starts from a random initialisation")
        head = None
    elif head is None:
        note.append("it has no Linear head, so the head starts from a random initialisation")
    else:
        head = {k: v.detach().float().clone() for k, v in head.items()}
    w = base.weight
    n_out = sum(int(((v < w.min_value) | (v > w.max_value)).sum())
                for k, v in list(gru.items()) + list((head or {}).items()) if "weight" in k)
    if n_out:
        n_all = sum(v.numel() for k, v in list(gru.items()) + list((head or {}).items())
                    if "weight" in k)
        note.append(f"{n_out} of {n_all} weights ({100 * n_out / n_all:.1f} %) lie outside the "
                    f"weight format's range [{w.min_value}, {w.max_value}] and are clamped into "
                    "it before fine-tuning")
    return gru, head, "; ".join(note)


# --------------------------------------------------------------------------------------------------
@dataclass
class FitResult:
    """What :func:`fit` wrote: the output folder, the checkpoint and the metrics."""

    out: Path
    checkpoint: Path  # OUT/model.pt (OUT/dense.pt with dense_only)
    metrics: dict
    dataset: Dataset

    def load(self):
        """The trained network as a :class:`deltahw.model.QuantizedModel`."""
        return load_model(self.checkpoint)


def load_data(data=None, dataset: str | None = None, val_data=None, test_data=None,
              task: str | None = None, split_seed: int = 0) -> tuple[Dataset, bool]:
    """(The :class:`Dataset` to train on, whether it is a built-in one)."""
    if isinstance(data, Dataset):
        if val_data is not None or test_data is not None:
            raise TrainError("A Dataset already has its validation and test splits; do not pass "
                             "val_data or test_data with it.")
        if task is not None and task != data.task:
            raise TrainError(f"The dataset is for the task {data.task}, not {task}.")
        return data, data.name in DATASETS and not data.info.get("user")
    if (data is None) == (dataset is None):
        raise TrainError("Give the data to train on: either a built-in dataset (--dataset "
                         f"{'|'.join(DATASETS)}) or your own data (--data FILE.npz), not both.")
    try:
        if dataset is not None:
            if val_data is not None or test_data is not None or task not in (None,
                                                                             CLASSIFICATION):
                raise TrainError(f"--val-data, --test-data and --task go with --data; the "
                                 f"built-in dataset {dataset} has its own splits and task.")
            return load_dataset(dataset, split_seed), True
        ds = make_dataset(data, val_data, test_data, task=task, seed=split_seed)
        ds.info["user"] = True
        return ds, False
    except DatasetError as e:
        raise TrainError(str(e)) from None


def fit(data=None, task: str | None = None, out=None, *, val_data=None, test_data=None,
        dataset: str | None = None, init=None, layers: int = 1, seed: int = 0,
        split_seed: int = 0, quantize: bool = True, no_pretrain: bool = False,
        dense_only: bool = False, resume: bool = False, threads: int = 1, quiet: bool = True,
        limit: int = 0, hardware: dict | None = None, part: str = DEFAULT_PART,
        **options) -> FitResult:
    """Train a delta network on ``data`` and write it to ``out``; the Python form of the CLI.

    Args:
        data: training data: a path to an ``.npz`` (``X``, ``lengths``, ``y``), a dict of those
            arrays, an iterable of ``(x, y)`` sequences, a torch ``Dataset`` of such pairs, or a
            :class:`~deltahw.train.data.Dataset`. Or ``dataset="fsdd"`` / ``"watch"`` instead.
        task: ``classification``, ``timestep-classification`` or ``timestep-regression``
            (default: inferred from ``y``).
        out: output folder (``model.pt``, ``dense.pt``, ``config.json``, ``metrics.json``).
        val_data, test_data: like ``data``; split off ``data`` (seeded, stratified) when absent.
        init: fine-tune this dense network instead of running the dense stage: a path (deltahw
            checkpoint or ``torch.nn.GRU`` state dict), a state dict, or a module.
        hardware: hardware parameters (``lanes``, ``lanes_per_bank``, ``act_width``,
            ``enc_width``; default :data:`HW_DEFAULTS`). ``act_width="auto"`` (the default)
            picks the fastest activation width that fits ``part`` from the cycle model over the
            validation split's fired columns (:func:`deltahw.bench.whatif.act_width_for_data`).
        part: the :data:`deltahw.boards.PARTS` name an automatic act width must fit.
        **options: any of :data:`OPTIONS` (``hidden``, ``theta_x``, ``dense_epochs``, ...),
            thresholds in real units; unset ones take the defaults (``docs/training.md``).

    Raises :class:`TrainError` (a :class:`deltahw.errors.DeltahwError`) with one sentence for bad
    data or options, before any training.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TrainError(f"Unknown training option {unknown[0]!r}; the options are "
                         f"{', '.join(OPTIONS)}.")
    if out is None:
        raise TrainError("fit() needs an output folder: out=PATH.")
    if not isinstance(threads, int) or threads < 1:
        raise TrainError(f"threads must be at least 1; got {threads}.")
    hw = dict(HW_DEFAULTS)
    for k, v in (hardware or {}).items():
        if k not in HW_DEFAULTS:
            raise TrainError(f"Unknown hardware parameter {k!r}; expected one of "
                             f"{', '.join(HW_DEFAULTS)}.")
        hw[k] = v
    if part not in PARTS:
        raise TrainError(f"Unknown part {part!r}; expected one of {', '.join(sorted(PARTS))}.")
    ds, builtin = load_data(data, dataset, val_data, test_data, task, split_seed)
    given = dict(options, layers=layers, seed=seed, split_seed=split_seed, quantize=quantize,
                 init=init, no_pretrain=no_pretrain, dense_only=dense_only, limit=limit)
    opts = _resolve(given, ds, builtin)
    metrics = _train(opts, ds, Path(out), hw, init=init, resume=resume, threads=threads,
                     quiet=quiet, part=part)
    ckpt = Path(out) / ("dense.pt" if dense_only else "model.pt")
    return FitResult(Path(out), ckpt, metrics, ds)


def run(args) -> dict:
    """Run (or resume) a training run from parsed CLI arguments; returns the metrics written to
    ``OUT/metrics.json``."""
    if args.threads < 1:
        raise TrainError(f"--threads must be at least 1; got {args.threads}.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out {out} is an existing file; expected a folder for the run.")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise TrainError(f"--out {out} cannot be created: {parent} is a file, not a folder.")
    if args.dataset is not None and args.dataset not in DATASETS:
        raise TrainError(f"Unknown dataset '{args.dataset}'; choose one of {', '.join(DATASETS)}.")
    ds, builtin = load_data(args.data, args.dataset, args.val_data, args.test_data, args.task,
                            args.split_seed)
    if not builtin and args.task is None and not args.quiet:
        print(f"task: {ds.task} (inferred from y; pass --task to choose)", file=sys.stderr)
    given = {k: getattr(args, k) for k in OPTIONS}
    given.update(layers=args.layers, seed=args.seed, split_seed=args.split_seed,
                 quantize=not args.no_quant, init=args.init, no_pretrain=args.no_pretrain,
                 dense_only=args.dense_only, limit=args.limit)
    opts = _resolve(given, ds, builtin)
    hw = {k: getattr(args, k) for k in HW_DEFAULTS}
    return _train(opts, ds, Path(args.out), hw, init=args.init, resume=args.resume,
                  threads=args.threads, quiet=args.quiet, part=args.part,
                  trust_pickle=args.trust_pickle)


def _train(opts: dict, ds: Dataset, out: Path, hw: dict, init=None, resume: bool = False,
           threads: int = 1, quiet: bool = True, part: str = DEFAULT_PART,
           trust_pickle: bool = False) -> dict:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    auto_part = PARTS[part] if hw.get("act_width") == "auto" else None
    base, target = _config(opts, ds, hw)
    state_path = out / STATE_NAME
    fingerprint = {k: v for k, v in opts.items()}
    fingerprint["config"] = target.to_dict()
    if auto_part is not None:
        fingerprint["act_width_auto_part"] = auto_part.name

    # Arrays (a --limit keeps the first N training sequences, for smoke tests).
    train_arr = _arrays(ds, "train", base)
    if opts["limit"]:
        train_arr = train_arr.head(min(opts["limit"], len(train_arr.y)))
    val_arr = _arrays(ds, "val", base)
    init_note = ""

    if resume:
        if not state_path.is_file():
            raise TrainError(f"--resume was given but {state_path} does not exist; there is no "
                             "interrupted run to continue.")
        state = _load_state(state_path)
        old = state.get("fingerprint", {})
        diff = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
        if diff:
            detail = "; ".join(f"{k}: run has {old.get(k)!r}, command asks {fingerprint.get(k)!r}"
                               for k in diff if k != "config")
            if "config" in diff:
                detail += ("; config: the saved run was trained with another network config "
                           f"({DeltaGRUConfig.from_dict(old['config']).summary()})"
                           if old.get("config") else "; config differs")
            raise TrainError(
                f"Cannot resume: {state_path} belongs to a run with different settings ({detail}). "
                "Resume with the original arguments or start a new run in another folder."
            )
    else:
        if state_path.is_file():
            raise TrainError(
                f"{out} holds an unfinished run ({STATE_NAME}); continue it with --resume, or "
                f"delete {state_path} to start over."
            )
        state = {"fingerprint": fingerprint, "stage": "dense", "epoch": 0, "history": [],
                 "seconds": {"dense": 0.0, "delta": 0.0},
                 "cpu_seconds": {"dense": 0.0, "delta": 0.0}}
        if init is not None:
            gru, head, init_note = _load_init(init, base, trust_pickle=trust_pickle)
            if init_note and not quiet:
                print(f"--init {opts['init']}: {init_note}.", file=sys.stderr)
            state.update(stage="delta", dense={"gru": gru, "head": head, "source": opts["init"],
                                               "note": init_note})

    # ---------------------------------------------------------------------------- dense stage
    if state["stage"] == "dense":
        torch.manual_seed(opts["seed"])
        net = DenseNet(base)
        net.clamp_to_formats()
        opt = torch.optim.Adam(net.parameters(), lr=opts["lr"])
        best = state.get("best")
        if "model" in state:
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
        E = opts["dense_epochs"]
        t_start = time.time() - state["seconds"]["dense"]
        c_start = time.process_time() - state["cpu_seconds"]["dense"]
        nb = len(_batches(train_arr.lengths, opts["batch_size"], None))
        bar = _progress((E - state["epoch"]) * nb, "dense", quiet)
        for epoch in range(state["epoch"], E):
            gen = torch.Generator().manual_seed(_epoch_seed(opts["seed"], "dense", epoch))
            torch.manual_seed(_epoch_seed(opts["seed"], "dense", epoch))
            for g in opt.param_groups:
                g["lr"] = _cosine(opts["lr"], epoch, E)
            net.train()
            tot = 0.0
            for b, idx in enumerate(_batches(train_arr.lengths, opts["batch_size"], gen)):
                x, lengths, y = _slice(train_arr, idx, grid=False)
                loss = task_loss(ds.task, net(x, lengths), lengths, y)
                _check_loss(loss, "dense", epoch, b)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                net.clamp_to_formats()
                tot += loss.item()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{tot / (b + 1):.3f}")
            r = _eval_dense(net, val_arr, ds)
            m = r["metric"]
            state["history"].append({"stage": "dense", "epoch": epoch + 1, "loss": tot / (b + 1),
                                     f"val_{m}": r[m]})
            if best is None or r["score"] > best["val_score"]:
                best = {"val_score": r["score"], f"val_{m}": r[m], "epoch": epoch + 1,
                        "model": {k: v.clone() for k, v in net.state_dict().items()}}
            state.update(epoch=epoch + 1, model=net.state_dict(), opt=opt.state_dict(), best=best)
            state["seconds"]["dense"] = time.time() - t_start
            state["cpu_seconds"]["dense"] = time.process_time() - c_start
            _save_state(state_path, state)
            bar.write(f"dense epoch {epoch + 1}/{E}: loss {tot / (b + 1):.4f}, "
                      f"val {_fmt(r)} (float)")
        bar.close()
        net.load_state_dict(best["model"])
        gru = {k[len("gru."):]: v for k, v in net.state_dict().items() if k.startswith("gru.")}
        head = {"weight": net.head.weight.detach().clone(), "bias": net.head.bias.detach().clone()}
        m = primary_metric(ds.task)
        meta = _meta(ds, opts, "dense", {"best_epoch": best["epoch"],
                                          f"val_{m}_float": best[f"val_{m}"]})
        dense_cfg = base
        if auto_part is not None:
            dq = _quantized(gru, head, base, ds)
            xq, lengths, _ = golden_inputs(dq, ds, "val")
            dense_cfg = base.replace(act_width=act_width_for_data(dq, xq, lengths, auto_part)[0])
        save_checkpoint(out / "dense.pt", dense_cfg, gru, head, ds.mean, ds.std, meta)
        state.update(stage="delta", epoch=0, dense={"gru": gru, "head": head,
                                                      "source": str(out / "dense.pt")})
        for k in ("model", "opt", "best"):
            state.pop(k, None)
        _save_state(state_path, state)
        if opts["dense_only"]:
            metrics = _finish_dense_only(out, ds, base, gru, head, state)
            state_path.unlink(missing_ok=True)
            return metrics

    # ---------------------------------------------------------------------------- delta stage
    torch.manual_seed(opts["seed"] + 1)
    net = DeltaGRU(target, quantize=opts["quantize"], noise=opts["noise"])
    if not opts["no_pretrain"]:
        net.load_gru(state["dense"]["gru"], state["dense"]["head"])
    net.clamp_to_formats()
    opt = torch.optim.AdamW(net.parameters(), lr=opts["delta_lr"],
                            weight_decay=opts["weight_decay"])
    best = state.get("best")
    if "model" in state:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    ema = state.get("ema") or {k: v.detach().clone() for k, v in net.state_dict().items()}
    E, R = opts["delta_epochs"], opts["ramp_epochs"]
    t_start = time.time() - state["seconds"]["delta"]
    c_start = time.process_time() - state["cpu_seconds"]["delta"]
    nb = len(_batches(train_arr.lengths, opts["batch_size"], None))
    bar = _progress((E - state["epoch"]) * nb, "delta", quiet)
    for epoch in range(state["epoch"], E):
        gen = torch.Generator().manual_seed(_epoch_seed(opts["seed"], "delta", epoch))
        torch.manual_seed(_epoch_seed(opts["seed"], "delta", epoch))
        net.config = _ramped(target, epoch, R)
        for g in opt.param_groups:
            g["lr"] = _cosine(opts["delta_lr"], epoch, E)
        net.train()
        tot = tot_l1 = 0.0
        for b, idx in enumerate(_batches(train_arr.lengths, opts["batch_size"], gen)):
            x, lengths, y = _slice(train_arr, idx, grid=True)
            o = net(x, lengths)
            ce = task_loss(ds.task, o.outputs, lengths, y)
            loss = ce + opts["l1"] * o.l1
            _check_loss(loss, "delta", epoch, b)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            net.clamp_to_formats()
            if opts["ema"]:
                with torch.no_grad():
                    for k, v in net.state_dict().items():
                        ema[k].mul_(opts["ema"]).add_(v, alpha=1 - opts["ema"])
            tot += ce.item()
            tot_l1 += o.l1.item()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{tot / (b + 1):.3f}",
                            l1=f"{tot_l1 / (b + 1):.4f}", opred=f"{o.op_reduction:.1f}x")
        live = {k: v.clone() for k, v in net.state_dict().items()}
        if opts["ema"]:
            net.load_state_dict(ema)
        r, opred = _eval_delta(net, val_arr, ds)
        m = r["metric"]
        evaluated = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(live)
        full = epoch >= R
        state["history"].append({"stage": "delta", "epoch": epoch + 1, "loss": tot / (b + 1),
                                 "l1": tot_l1 / (b + 1), f"val_{m}": r[m],
                                 "val_op_reduction": opred, "theta_x": list(net.config.theta_x),
                                 "theta_h": list(net.config.theta_h)})
        better = best is None or (r["score"], opred) > (best["val_score"],
                                                         best["val_op_reduction"])
        if full and better:
            best = {"val_score": r["score"], f"val_{m}": r[m], "val_op_reduction": opred,
                    "epoch": epoch + 1, "model": evaluated}
        state.update(epoch=epoch + 1, model=net.state_dict(), opt=opt.state_dict(), best=best,
                     ema=ema)
        state["seconds"]["delta"] = time.time() - t_start
        state["cpu_seconds"]["delta"] = time.process_time() - c_start
        _save_state(state_path, state)
        bar.write(f"delta epoch {epoch + 1}/{E}: loss {tot / (b + 1):.4f}, "
                  f"l1 {tot_l1 / (b + 1):.4f}, val {_fmt(r)} at {opred:.2f}x "
                  "op reduction "
                  f"(theta_x {list(net.config.theta_x)}, theta_h {list(net.config.theta_h)} LSB)")
    bar.close()
    net.load_state_dict(best["model"])
    net.config = target
    metrics = _finish(out, ds, base, target, net, state, best, opts, auto_part)
    state_path.unlink(missing_ok=True)
    return metrics


_READOUT = {
    CLASSIFICATION: "argmax of the head output at the last timestep of each sequence",
    "timestep-classification": "argmax of the head output at every timestep",
    STEP_REGRESSION: "head output at every timestep x target_std + target_mean",
}


def _meta(ds: Dataset, opts: dict, stage: str, extra: dict) -> dict:
    if ds.name == "fsdd" and not ds.info.get("user"):
        pre = "one sequence per utterance (13 MFCC per frame)"
    else:
        pre = ds.info.get("windows", "one sequence per row of lengths, frames as given")
    meta = {
        "task": ds.task,
        "dataset_name": ds.name,
        "stage": stage,
        "classes": list(ds.class_names),
        "dataset": ds.summary(),
        "preprocessing": "x_hw = quantize((x - input_mean) / input_std, act); " + pre,
        "readout": _READOUT[ds.task],
        "training": {k: v for k, v in opts.items()},
        **extra,
    }
    if ds.task == STEP_REGRESSION:
        meta["target_mean"] = [float(v) for v in ds.target_mean]
        meta["target_std"] = [float(v) for v in ds.target_std]
    return meta


def _quantized(gru: dict, head: dict | None, config: DeltaGRUConfig, ds: Dataset, meta=None):
    """The QuantizedModel that ``load_model`` would build from a checkpoint of these parameters."""
    model = quantize_gru(gru, config=config, head=head)
    model.input_mean = torch.from_numpy(ds.mean)
    model.input_std = torch.from_numpy(ds.std)
    if meta:
        model.meta = dict(meta)
    return model


def _float_dense(dense: dict, ds: Dataset) -> dict:
    m = primary_metric(ds.task)
    fl = {"source": dense["source"]}
    for split in ("val", "test"):
        r = float_dense_metrics(dense["gru"], dense["head"], ds, split)
        for k in ("accuracy", "rmse", "mae"):
            if k in r:
                fl[f"{split}_{k}"] = r[k]
    fl["metric"] = m
    return fl


def _finish_dense_only(out: Path, ds, base, gru, head, state) -> dict:
    model = load_model(out / "dense.pt")
    fl = _float_dense({"gru": gru, "head": head, "source": str(out / "dense.pt")}, ds)
    metrics = {
        "dataset": ds.summary(),
        "task": ds.task,
        "float_dense": {k: v for k, v in fl.items() if k.startswith(("val_", "test_"))},
        "golden_dense_theta0": {s: golden_eval(model, ds, s) for s in ("val", "test")},
        "training": {"seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"],
                     "history": state["history"]},
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _finish(out: Path, ds, base, target, net: DeltaGRU, state, best, opts,
            auto_part=None) -> dict:
    dense = state["dense"]
    m = primary_metric(ds.task)
    fl = _float_dense(dense, ds) if dense["head"] is not None else {"source": dense["source"]}
    meta = _meta(ds, opts, "delta", {"best_epoch": best["epoch"], "float_dense": fl})
    model = _quantized(net.gru_state_dict(), net.head_state_dict(), target, ds, meta)
    choice = None
    if auto_part is not None:
        # The activation width changes no result (same arithmetic, same fired columns), only the
        # cycles: chosen on the validation split, the fastest that fits the part.
        xq, lengths, _ = golden_inputs(model, ds, "val")
        A, rows = act_width_for_data(model, xq, lengths, auto_part)
        target = target.replace(act_width=A)
        model = model.with_config(target)
        choice = {"act_width": A, "part": auto_part.name, "data": "validation split",
                  "rule": ACT_WIDTH_RULE, "sweep": rows}
    trained = {s: golden_eval(model, ds, s) for s in ("val", "test")}
    converted = {}
    if dense["head"] is not None:
        dense_q = _quantized(dense["gru"], dense["head"], base, ds, meta)
        converted["theta0"] = golden_eval(dense_q, ds, "test")
        converted["same_thresholds"] = golden_eval(dense_q.with_config(target), ds, "test")
    t = trained["test"]
    summary = {
        "task": ds.task,
        "metric": m,
        f"float_dense_test_{m}": fl.get(f"test_{m}"),
        f"delta_trained_test_{m}": t[m],
        "delta_trained_test_op_reduction": t["op_reduction"],
    }
    if m == "accuracy":
        summary["accuracy_gap_points"] = (None if fl.get("test_accuracy") is None
                                          else 100 * (fl["test_accuracy"] - t["accuracy"]))
    else:
        summary["delta_trained_test_mae"] = t["mae"]
        summary["float_dense_test_mae"] = fl.get("test_mae")
    summary.update({
        f"converted_test_{m}_same_thresholds": converted.get("same_thresholds", {}).get(m),
        "converted_test_op_reduction_same_thresholds":
            converted.get("same_thresholds", {}).get("op_reduction"),
        "theta_x_lsb": list(target.theta_x), "theta_h_lsb": list(target.theta_h),
        "theta_head_lsb": target.theta_head,
        "theta_x_real": [v * target.act.lsb for v in target.theta_x],
        "theta_h_real": [v * target.act.lsb for v in target.theta_h],
        "train_seconds": state["seconds"],
        "train_cpu_seconds": state["cpu_seconds"],
    })
    if dense.get("note"):
        summary["init_note"] = dense["note"]
    metrics = {
        "summary": summary,
        "dataset": ds.summary(),
        "config": target.to_dict(),
        "float_dense": fl,
        "golden_delta_trained": trained,
        "golden_dense_converted": converted,
        "act_width_choice": choice,
        "training": {"options": {k: v for k, v in opts.items()}, "best_delta_epoch": best["epoch"],
                     "seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"],
                     "history": state["history"]},
        "evaluation": "bit-exact golden model (deltahw.golden.run_golden) on the quantized inputs; "
                      + _READOUT[ds.task],
    }
    # Timings stay out of the checkpoint so that a re-run writes the same bytes.
    meta["metrics"] = {k: v for k, v in summary.items() if "seconds" not in k}
    save_checkpoint(out / "model.pt", target, net.gru_state_dict(), net.head_state_dict(),
                    ds.mean, ds.std, meta)
    atomic_write_text(out / "config.json", target.to_json() + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _value(m: str, v) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f} %" if m == "accuracy" else f"RMSE {v:.4g}"


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    return run_cli(_main, args)


def _main(args) -> int:
    try:
        metrics = run(args)
    except (KeyboardInterrupt, Terminated) as e:
        print(f"\nerror: interrupted; the last finished epoch is saved in "
              f"{Path(args.out) / STATE_NAME}, continue with --resume.", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    name = args.dataset or args.data
    s = metrics.get("summary")
    if s:
        m = s["metric"]
        print(
            f"{name} ({s['task']}): float dense {_value(m, s[f'float_dense_test_{m}'])}, "
            f"delta-trained {_value(m, s[f'delta_trained_test_{m}'])} at "
            f"{s['delta_trained_test_op_reduction']:.2f}x op reduction (golden model, test split); "
            f"run-time converted at the same thresholds "
            f"{_value(m, s[f'converted_test_{m}_same_thresholds'])} at "
            f"{(s['converted_test_op_reduction_same_thresholds'] or 0):.2f}x. "
            f"Wrote {args.out}/model.pt, config.json, metrics.json."
        )
    else:
        f = metrics["float_dense"]
        m = primary_metric(metrics["task"])
        print(f"{name}: float dense test {_value(m, f[f'test_{m}'])}; wrote "
              f"{args.out}/dense.pt and metrics.json.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
