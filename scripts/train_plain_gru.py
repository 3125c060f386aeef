"""Train a plain dense ``torch.nn.GRU`` + ``torch.nn.Linear`` the way a user would, without deltahw.

    python scripts/train_plain_gru.py --data train.npz --val-data val.npz --test-data test.npz \\
        --hidden 64 --epochs 40 --out plain.pt

This is the starting point of the fine-tuning experiment in ``docs/training.md``: a network trained
with nothing but PyTorch (no weight clamping, no quantization, no thresholds), saved with
``torch.save(model.state_dict(), path)`` under the module's own names (``rnn.*``, ``fc.*``), then
turned into a delta network with ``python -m deltahw.train ... --init plain.pt``. Inputs are
normalised per channel with the training split's mean and standard deviation (what deltahw's
training does too, so the fine-tuning sees the inputs the network was trained on). Sequence
classification, class read at the last real frame. Writes ``OUT`` and ``OUT.json`` (accuracies).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["Net", "main"]


class Net(nn.Module):
    def __init__(self, inputs: int, hidden: int, classes: int):
        super().__init__()
        self.rnn = nn.GRU(inputs, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x, lengths):
        out, _ = self.rnn(x)
        return self.fc(out[torch.arange(len(lengths)), lengths - 1])


def _load(path):
    with np.load(path, allow_pickle=False) as z:
        X, lengths, y = z["X"], z["lengths"], z["y"]
    offs = np.concatenate([[0], np.cumsum(lengths)])
    return [X[a:b] for a, b in zip(offs[:-1], offs[1:])], y.astype(np.int64)


def _pad(xs, mean, std):
    lengths = torch.tensor([len(x) for x in xs])
    out = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[1])
    for i, x in enumerate(xs):
        out[i, : len(x)] = torch.from_numpy((x - mean) / std)
    return out, lengths


@torch.no_grad()
def _accuracy(net, x, lengths, y) -> float:
    net.eval()
    return float((net(x, lengths).argmax(-1) == torch.from_numpy(y)).float().mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--val-data", required=True)
    ap.add_argument("--test-data", required=True)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    (xs, y), (vxs, vy), (txs, ty) = (_load(p) for p in (args.data, args.val_data, args.test_data))
    allx = np.concatenate(xs)
    mean, std = allx.mean(0), allx.std(0)
    x, lengths = _pad(xs, mean, std)
    vx, vl = _pad(vxs, mean, std)
    tx, tl = _pad(txs, mean, std)
    net = Net(x.shape[2], args.hidden, int(y.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    best, best_state = -1.0, None
    yt = torch.from_numpy(y)
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xs))
        for i in range(0, len(xs), args.batch_size):
            idx = perm[i : i + args.batch_size]
            T = int(lengths[idx].max())
            loss = nn.functional.cross_entropy(net(x[idx, :T], lengths[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
        sched.step()
        acc = _accuracy(net, vx, vl, vy)
        print(f"epoch {epoch + 1}/{args.epochs}: val accuracy {100 * acc:.2f} %", flush=True)
        if acc > best:
            best, best_state = acc, {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    torch.save(net.state_dict(), args.out)
    w = torch.cat([p.detach().flatten() for n, p in net.named_parameters() if "weight" in n])
    res = {"val_accuracy": best, "test_accuracy": _accuracy(net, tx, tl, ty),
           "max_abs_weight": float(w.abs().max()),
           "weights_outside_q1_7": float(((w < -1) | (w > 1 - 2**-7)).float().mean()),
           "options": vars(args)}
    Path(args.out + ".json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "options"}))
    return 0 if math.isfinite(best) else 1


if __name__ == "__main__":
    sys.exit(main())
