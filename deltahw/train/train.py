"""``python -m deltahw.train``: train a delta-GRU classifier for the accelerator.

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import DeltahwError
from ..config import ConfigError, DeltaGRUConfig
from ..model import CHECKPOINT_KIND, load_model, quantize_gru, save_checkpoint
from ..util import atomic_write_bytes, atomic_write_text
from .data import DATASETS, Dataset, DatasetError, load_dataset
from .evaluate import float_dense_eval, golden_eval, to_lsb
from .module import DeltaGRU

__all__ = ["TrainError", "DEFAULTS", "build_parser", "run", "main"]

#: Per-dataset defaults (each fits the ~10 minute budget on 2 CPU cores with one thread).
DEFAULTS = {
    "fsdd": dict(hidden=64, dense_epochs=40, delta_epochs=30, ramp_epochs=6, batch_size=32,
                 lr=3e-3, delta_lr=3e-3, theta_x=0.375, theta_h=0.5, l1=2.0, noise=0.0,
                 ema=0.0, weight_decay=0.0),
    "watch": dict(hidden=64, dense_epochs=15, delta_epochs=12, ramp_epochs=3, batch_size=32,
                  lr=3e-3, delta_lr=3e-3, theta_x=0.375, theta_h=0.25, l1=5.0, noise=0.0,
                  ema=0.0, weight_decay=0.0),
}

#: Hardware parameters of the shipped models (Arty A7-35T).
HW_DEFAULTS = dict(lanes=48, lanes_per_bank=4, act_width=4, enc_width=8)

STATE_NAME = "train_state.pt"


class TrainError(DeltahwError, ValueError):
    """Training cannot start or continue (bad argument, NaN loss, mismatched resume state)."""


# --------------------------------------------------------------------------------------------------
class DenseNet(nn.Module):
    """The dense float baseline: ``torch.nn.GRU``, ``torch.nn.Linear`` on the last real timestep."""

    def __init__(self, config: DeltaGRUConfig):
        super().__init__()
        self.config = config
        self.gru = nn.GRU(config.input_size, config.hidden_size, config.num_layers,
                          batch_first=True)
        self.head = nn.Linear(config.hidden_size, config.output_size)

    def forward(self, x, lengths):
        out, _ = self.gru(x)
        return self.head(out[torch.arange(x.shape[0]), lengths - 1])

    @torch.no_grad()
    def clamp_to_formats(self) -> None:
        w = self.config.weight
        for n, p in self.named_parameters():
            if "weight" in n:
                p.clamp_(w.min_value, w.max_value)


@dataclass
class Arrays:
    """A split as padded tensors: normalised float inputs, act-grid inputs, lengths, labels."""

    x_float: torch.Tensor
    x_grid: torch.Tensor
    lengths: torch.Tensor
    y: torch.Tensor


def _arrays(ds: Dataset, split: str, config: DeltaGRUConfig) -> Arrays:
    xq, lengths, y = ds.quantize(split, config.act)
    s = ds.split(split)
    from .data import pad_batch

    x, _ = pad_batch(s.xs)
    xf = ((x.double() - torch.from_numpy(ds.mean).double())
          / torch.from_numpy(ds.std).double()).float()
    return Arrays(xf, xq.float() * config.act.lsb, lengths, y)


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


def _slice(arr: Arrays, idx: torch.Tensor, grid: bool):
    lengths = arr.lengths[idx]
    T = int(lengths.max())
    x = (arr.x_grid if grid else arr.x_float)[idx, :T]
    return x, lengths, arr.y[idx]


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
def _eval_dense(net: DenseNet, arr: Arrays) -> float:
    net.eval()
    correct = 0
    for idx in _batches(arr.lengths, 512, None):
        x, lengths, y = _slice(arr, idx, grid=False)
        correct += int((net(x, lengths).argmax(-1) == y).sum())
    return correct / len(arr.y)


@torch.no_grad()
def _eval_delta(net: DeltaGRU, arr: Arrays) -> tuple[float, float]:
    """Accuracy and op reduction of the (quantized) float module; equals the golden model's."""
    net.eval()
    correct = 0
    macs = dense = 0.0
    for idx in _batches(arr.lengths, 512, None):
        x, lengths, y = _slice(arr, idx, grid=True)
        out = net(x, lengths)
        correct += int((out.last.argmax(-1) == y).sum())
        macs += float(out.macs.sum())
        dense += float(out.dense_macs.sum())
    return correct / len(arr.y), (dense / macs if macs else float("inf"))


def _save_state(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=quiet, dynamic_ncols=True,
                leave=False, file=sys.stderr)


# --------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.train",
        description="Train a delta-GRU classifier (dense pretraining, then delta training with "
                    "thresholds in the forward pass, quantization-aware) and evaluate it with the "
                    "bit-exact golden model.",
    )
    ap.add_argument("--dataset", required=True, help=f"one of {', '.join(DATASETS)}")
    ap.add_argument("--out", required=True, help="output folder (model.pt, config.json, ...)")
    ap.add_argument("--hidden", type=int, help="hidden units H (default per dataset: 64)")
    ap.add_argument("--layers", type=int, default=1, help="GRU layers (default 1)")
    ap.add_argument("--theta-x", type=float,
                    help="input-delta threshold in real units of the normalised input "
                         "(rounded to act LSBs)")
    ap.add_argument("--theta-h", type=float, help="hidden-delta threshold in real units")
    ap.add_argument("--theta-head", type=float,
                    help="threshold of the head's input encoder (default: --theta-h)")
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
    ap.add_argument("--init", help="start the delta stage from this dense GRU (deltahw checkpoint "
                                   "or torch.nn.GRU state dict) instead of running the dense stage")
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
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=val,
                        help=f"hardware parameter {name} (default {val})")
    return ap


def _resolve(args) -> dict:
    """Fill per-dataset defaults; validate every argument with a full-sentence error."""
    if args.dataset not in DATASETS:
        raise TrainError(f"Unknown dataset '{args.dataset}'; choose one of {', '.join(DATASETS)}.")
    d = dict(DEFAULTS[args.dataset])
    for k in list(d):
        v = getattr(args, k, None)
        if v is not None:
            d[k] = v
    d["theta_head"] = d["theta_h"] if args.theta_head is None else args.theta_head
    for k in ("hidden", "dense_epochs", "delta_epochs", "batch_size"):
        if not isinstance(d[k], int) or d[k] < 1:
            raise TrainError(f"--{k.replace('_', '-')} must be a positive integer; got {d[k]}.")
    if d["ramp_epochs"] < 0:
        raise TrainError(f"--ramp-epochs must be >= 0; got {d['ramp_epochs']}.")
    if d["ramp_epochs"] >= d["delta_epochs"]:
        raise TrainError(
            f"--ramp-epochs ({d['ramp_epochs']}) must be smaller than --delta-epochs "
            f"({d['delta_epochs']}) so that some epochs run at the full thresholds."
        )
    for k in ("lr", "delta_lr"):
        if not (math.isfinite(d[k]) and d[k] > 0):
            raise TrainError(f"--{k.replace('_', '-')} must be a positive number; got {d[k]}.")
    if not 0 <= d["ema"] < 1:
        raise TrainError(f"--ema must be from 0 (off) to below 1; got {d['ema']}.")
    for k in ("l1", "noise", "theta_x", "theta_h", "theta_head", "weight_decay"):
        if not (math.isfinite(d[k]) and d[k] >= 0):
            raise TrainError(f"--{k.replace('_', '-')} must be a number >= 0; got {d[k]}.")
    if args.threads < 1:
        raise TrainError(f"--threads must be at least 1; got {args.threads}.")
    if args.init and args.no_pretrain:
        raise TrainError("--init and --no-pretrain contradict each other; pass only one.")
    if args.init and args.dense_only:
        raise TrainError("--init skips the dense stage, so --dense-only has nothing to do.")
    d.update(layers=args.layers, seed=args.seed, split_seed=args.split_seed,
             quantize=not args.no_quant, init=args.init, no_pretrain=args.no_pretrain,
             dense_only=args.dense_only, limit=args.limit, dataset=args.dataset)
    return d


def _config(opts: dict, ds: Dataset, hw: dict) -> tuple[DeltaGRUConfig, DeltaGRUConfig]:
    """(dense config with zero thresholds, delta config with the target thresholds)."""
    try:
        base = DeltaGRUConfig(input_size=ds.input_size, hidden_size=opts["hidden"],
                              num_layers=opts["layers"], output_size=ds.num_classes, **hw)
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


def _load_init(path: str, base: DeltaGRUConfig) -> tuple[dict, dict]:
    p = Path(path)
    if not p.is_file():
        raise TrainError(f"The --init checkpoint {p} does not exist.")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with a clear message
        raise TrainError(f"{p} is not a readable PyTorch checkpoint: {e}") from None
    if isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND:
        gru, head = obj["gru"], obj.get("head")
    elif isinstance(obj, dict):
        gru = {k.split(".")[-1]: v for k, v in obj.items() if "_l" in k and "head" not in k}
        head = {k.split(".")[-1]: v for k, v in obj.items() if k.startswith("head.")} or None
    else:
        raise TrainError(f"{p} holds a {type(obj).__name__}; expected a deltahw checkpoint or a "
                         "torch.nn.GRU state dict.")
    w = gru.get("weight_ih_l0")
    want = (3 * base.hidden_size, base.input_size)
    if w is None or tuple(w.shape) != want:
        got = None if w is None else tuple(w.shape)
        raise TrainError(
            f"The --init checkpoint {p} is for another network: its weight_ih_l0 has shape {got}, "
            f"this run needs {want} (input_size={base.input_size}, hidden={base.hidden_size})."
        )
    if head is not None and tuple(head["weight"].shape) != (base.output_size, base.hidden_size):
        raise TrainError(
            f"The --init checkpoint {p} has a head of shape {tuple(head['weight'].shape)}; this "
            f"run needs ({base.output_size}, {base.hidden_size})."
        )
    return gru, head


# --------------------------------------------------------------------------------------------------
def run(args) -> dict:
    """Run (or resume) a training run; returns the metrics written to ``OUT/metrics.json``."""
    opts = _resolve(args)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        ds = load_dataset(opts["dataset"], opts["split_seed"])
    except DatasetError as e:
        raise TrainError(str(e)) from None
    hw = {k: getattr(args, k) for k in HW_DEFAULTS}
    base, target = _config(opts, ds, hw)
    out = Path(args.out)
    state_path = out / STATE_NAME
    fingerprint = {k: v for k, v in opts.items()}
    fingerprint["config"] = target.to_dict()

    # Arrays (a --limit keeps the first N training sequences, for smoke tests).
    train_arr = _arrays(ds, "train", base)
    if opts["limit"]:
        n = min(opts["limit"], len(train_arr.y))
        train_arr = Arrays(train_arr.x_float[:n], train_arr.x_grid[:n], train_arr.lengths[:n],
                           train_arr.y[:n])
    val_arr = _arrays(ds, "val", base)

    if args.resume:
        if not state_path.is_file():
            raise TrainError(f"--resume was given but {state_path} does not exist; there is no "
                             "interrupted run to continue.")
        state = torch.load(state_path, map_location="cpu", weights_only=False)
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
        if opts["init"]:
            gru, head = _load_init(opts["init"], base)
            state.update(stage="delta", dense={"gru": gru, "head": head, "source": opts["init"]})

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
        bar = _progress((E - state["epoch"]) * nb, "dense", args.quiet)
        for epoch in range(state["epoch"], E):
            gen = torch.Generator().manual_seed(_epoch_seed(opts["seed"], "dense", epoch))
            torch.manual_seed(_epoch_seed(opts["seed"], "dense", epoch))
            for g in opt.param_groups:
                g["lr"] = _cosine(opts["lr"], epoch, E)
            net.train()
            tot = 0.0
            for b, idx in enumerate(_batches(train_arr.lengths, opts["batch_size"], gen)):
                x, lengths, y = _slice(train_arr, idx, grid=False)
                loss = nn.functional.cross_entropy(net(x, lengths), y)
                _check_loss(loss, "dense", epoch, b)
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                net.clamp_to_formats()
                tot += loss.item()
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{tot / (b + 1):.3f}")
            acc = _eval_dense(net, val_arr)
            state["history"].append({"stage": "dense", "epoch": epoch + 1, "loss": tot / (b + 1),
                                     "val_accuracy": acc})
            if best is None or acc > best["val_accuracy"]:
                best = {"val_accuracy": acc, "epoch": epoch + 1,
                        "model": {k: v.clone() for k, v in net.state_dict().items()}}
            state.update(epoch=epoch + 1, model=net.state_dict(), opt=opt.state_dict(), best=best)
            state["seconds"]["dense"] = time.time() - t_start
            state["cpu_seconds"]["dense"] = time.process_time() - c_start
            _save_state(state_path, state)
            bar.write(f"dense epoch {epoch + 1}/{E}: loss {tot / (b + 1):.4f}, "
                      f"val accuracy (float) {100 * acc:.2f} %")
        bar.close()
        net.load_state_dict(best["model"])
        gru = {k[len("gru."):]: v for k, v in net.state_dict().items() if k.startswith("gru.")}
        head = {"weight": net.head.weight.detach().clone(), "bias": net.head.bias.detach().clone()}
        meta = _meta(ds, opts, "dense", {"best_epoch": best["epoch"],
                                          "val_accuracy_float": best["val_accuracy"]})
        save_checkpoint(out / "dense.pt", base, gru, head, ds.mean, ds.std, meta)
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
    bar = _progress((E - state["epoch"]) * nb, "delta", args.quiet)
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
            ce = nn.functional.cross_entropy(o.last, y)
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
            bar.set_postfix(epoch=epoch + 1, ce=f"{tot / (b + 1):.3f}",
                            l1=f"{tot_l1 / (b + 1):.4f}", opred=f"{o.op_reduction:.1f}x")
        live = {k: v.clone() for k, v in net.state_dict().items()}
        if opts["ema"]:
            net.load_state_dict(ema)
        acc, opred = _eval_delta(net, val_arr)
        evaluated = {k: v.clone() for k, v in net.state_dict().items()}
        net.load_state_dict(live)
        full = epoch >= R
        state["history"].append({"stage": "delta", "epoch": epoch + 1, "ce": tot / (b + 1),
                                 "l1": tot_l1 / (b + 1), "val_accuracy": acc,
                                 "val_op_reduction": opred, "theta_x": list(net.config.theta_x),
                                 "theta_h": list(net.config.theta_h)})
        better = best is None or (acc, opred) > (best["val_accuracy"], best["val_op_reduction"])
        if full and better:
            best = {"val_accuracy": acc, "val_op_reduction": opred, "epoch": epoch + 1,
                    "model": evaluated}
        state.update(epoch=epoch + 1, model=net.state_dict(), opt=opt.state_dict(), best=best,
                     ema=ema)
        state["seconds"]["delta"] = time.time() - t_start
        state["cpu_seconds"]["delta"] = time.process_time() - c_start
        _save_state(state_path, state)
        bar.write(f"delta epoch {epoch + 1}/{E}: ce {tot / (b + 1):.4f}, "
                  f"l1 {tot_l1 / (b + 1):.4f}, val accuracy {100 * acc:.2f} % at {opred:.2f}x "
                  "op reduction "
                  f"(theta_x {list(net.config.theta_x)}, theta_h {list(net.config.theta_h)} LSB)")
    bar.close()
    net.load_state_dict(best["model"])
    net.config = target
    metrics = _finish(out, ds, base, target, net, state, best, opts)
    state_path.unlink(missing_ok=True)
    return metrics


def _meta(ds: Dataset, opts: dict, stage: str, extra: dict) -> dict:
    return {
        "task": ds.name,
        "stage": stage,
        "classes": list(ds.class_names),
        "dataset": ds.summary(),
        "preprocessing": "x_hw = quantize((x - input_mean) / input_std, act); " + (
            "one sequence per utterance (13 MFCC per frame)" if ds.name == "fsdd"
            else ds.info.get("windows", "")),
        "readout": "argmax of the head output at the last timestep of each sequence",
        "training": {k: v for k, v in opts.items()},
        **extra,
    }


def _quantized(gru: dict, head: dict | None, config: DeltaGRUConfig, ds: Dataset):
    """The QuantizedModel that ``load_model`` would build from a checkpoint of these parameters."""
    model = quantize_gru(gru, config=config, head=head)
    model.input_mean = torch.from_numpy(ds.mean)
    model.input_std = torch.from_numpy(ds.std)
    return model


def _finish_dense_only(out: Path, ds, base, gru, head, state) -> dict:
    model = load_model(out / "dense.pt")
    metrics = {
        "dataset": ds.summary(),
        "float_dense": {"val_accuracy": float_dense_eval(gru, head, ds, "val"),
                        "test_accuracy": float_dense_eval(gru, head, ds, "test")},
        "golden_dense_theta0": {s: golden_eval(model, ds, s) for s in ("val", "test")},
        "training": {"seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"],
                     "history": state["history"]},
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def _finish(out: Path, ds, base, target, net: DeltaGRU, state, best, opts) -> dict:
    dense = state["dense"]
    fl = {"val_accuracy": float_dense_eval(dense["gru"], dense["head"], ds, "val"),
          "test_accuracy": float_dense_eval(dense["gru"], dense["head"], ds, "test"),
          "source": dense["source"]}
    meta = _meta(ds, opts, "delta", {"best_epoch": best["epoch"], "float_dense": fl})
    model = _quantized(net.gru_state_dict(), net.head_state_dict(), target, ds)
    trained = {s: golden_eval(model, ds, s) for s in ("val", "test")}
    converted = {}
    if dense["head"] is not None:
        dense_q = _quantized(dense["gru"], dense["head"], base, ds)
        converted["theta0"] = golden_eval(dense_q, ds, "test")
        converted["same_thresholds"] = golden_eval(dense_q.with_config(target), ds, "test")
    t = trained["test"]
    metrics = {
        "summary": {
            "float_dense_test_accuracy": fl["test_accuracy"],
            "delta_trained_test_accuracy": t["accuracy"],
            "delta_trained_test_op_reduction": t["op_reduction"],
            "accuracy_gap_points": 100 * (fl["test_accuracy"] - t["accuracy"]),
            "converted_test_accuracy_same_thresholds":
                converted.get("same_thresholds", {}).get("accuracy"),
            "converted_test_op_reduction_same_thresholds":
                converted.get("same_thresholds", {}).get("op_reduction"),
            "theta_x_lsb": list(target.theta_x), "theta_h_lsb": list(target.theta_h),
            "theta_head_lsb": target.theta_head,
            "theta_x_real": [v * target.act.lsb for v in target.theta_x],
            "theta_h_real": [v * target.act.lsb for v in target.theta_h],
            "train_seconds": state["seconds"],
            "train_cpu_seconds": state["cpu_seconds"],
        },
        "dataset": ds.summary(),
        "config": target.to_dict(),
        "float_dense": fl,
        "golden_delta_trained": trained,
        "golden_dense_converted": converted,
        "training": {"options": {k: v for k, v in opts.items()}, "best_delta_epoch": best["epoch"],
                     "seconds": state["seconds"], "cpu_seconds": state["cpu_seconds"],
                     "history": state["history"]},
        "evaluation": "bit-exact golden model (deltahw.golden.run_golden) on the quantized inputs; "
                      "class = argmax of the head output at the last real timestep",
    }
    # Timings stay out of the checkpoint so that a re-run writes the same bytes.
    meta["metrics"] = {k: v for k, v in metrics["summary"].items() if "seconds" not in k}
    save_checkpoint(out / "model.pt", target, net.gru_state_dict(), net.head_state_dict(),
                    ds.mean, ds.std, meta)
    atomic_write_text(out / "config.json", target.to_json() + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        metrics = run(args)
    except (TrainError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch is saved in {Path(args.out) / STATE_NAME}, "
              "continue with --resume.", file=sys.stderr)
        return 130
    s = metrics.get("summary")
    if s:
        print(
            f"{args.dataset}: float dense {100 * s['float_dense_test_accuracy']:.2f} %, "
            f"delta-trained {100 * s['delta_trained_test_accuracy']:.2f} % at "
            f"{s['delta_trained_test_op_reduction']:.2f}x op reduction (golden model, test split); "
            f"run-time converted at the same thresholds "
            f"{100 * (s['converted_test_accuracy_same_thresholds'] or 0):.2f} % at "
            f"{(s['converted_test_op_reduction_same_thresholds'] or 0):.2f}x. "
            f"Wrote {args.out}/model.pt, config.json, metrics.json."
        )
    else:
        f = metrics["float_dense"]
        print(f"{args.dataset}: float dense test accuracy {100 * f['test_accuracy']:.2f} %; wrote "
              f"{args.out}/dense.pt and metrics.json.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
