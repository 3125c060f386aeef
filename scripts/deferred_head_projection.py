"""Projection, not a measurement: the deferred head without a host flag (docs/deferred_head.md).

No RTL implements this schedule. Over the test split of each model given, it sets today's exact
cycle model (:func:`deltahw.cycles.timestep_cycles`) beside a closed-form model of the variant
"defer the head only when the next input is already in", for a one-layer model with a head:

* a timestep t inside a sequence costs ``max(0, S(t) - W) + H(t) + ceil(H/A) + W``: its h phase
  ``H(t)`` (fetch + columns), the activation beats and the drain ``W`` (``ACT_DRAIN``, swept),
  plus what the window before it (the previous timestep's drain) holds past ``W``:
  ``S(t) = X(t) + F(t-2) + R - 1``, the x phase of t, then the head of t-2 (``F``: fetch +
  columns) and its read-out (``R`` beats, the last one beside the h phase's fetch); a window
  holds no head when the previous timestep starts its sequence;
* a sequence's first timestep: its whole x phase, no window;
* the head of a sequence's last timestep runs in place (``F + R - 1`` cycles): counted here,
  so that nothing is left out of the comparison.

With a late input (a lock-step host) the head runs in place and the next window is padded to what
the model says (docs/deferred_head.md): the lock-step cost is the mean pad, printed per model.
Approximations: the merged head fetch and today's read-out overlap rules are not modelled; the
"today" column is the exact model, and the same closed form with the head in place after the drain
(today's order) is printed as a check: compare the deferred column with that one.

Usage: ``python scripts/deferred_head_projection.py fsdd watch``
"""

from __future__ import annotations

import sys

import numpy as np

from deltahw import cycles as cyc
from deltahw.bench import ops
from deltahw.bench.run import _test_data, resolve_model
from deltahw.config import ceil_div
from deltahw.model import load_model

DRAINS = (0, 1, 2, 3, 4)  # cycles taken off ACT_DRAIN


def counts(name: str):
    """(config, per-timestep arrays over the test split: layer-0 x and h columns, head columns,
    first, last, op reduction)."""
    spec = resolve_model(name)
    model = load_model(spec.model_path)
    cfg = model.config
    if cfg.num_layers != 1 or not cfg.has_head:
        raise SystemExit(f"{name}: the projection models one layer with a head; "
                         f"got {cfg.summary()}.")
    xq, lengths, _, _ = _test_data(spec, model)
    st = ops.split_stats(model, xq, lengths)
    x0 = st["fired_x0"].astype(np.int64)
    nh = st["fired_layers"][:, 0].astype(np.int64) - x0
    first = st["first"].astype(bool)
    last = np.r_[first[1:], True]
    opred = st["dense_macs"].sum() / st["macs"].sum()
    return cfg, x0, nh, st["fired_head"].astype(np.int64), first, last, opred


def closed_form(cfg, x0, nh, no, first, last, trim: int, defer: bool):
    """Cycles per timestep of the closed form (module docstring) with the drain ``trim`` cycles
    shorter, deferring the head (``defer``) or running it in place after the drain as today
    (the check: its gap to the exact model is the closed form's error), and the lock-step pad
    per timestep (0 without deferral)."""
    cc, hc = cyc.column_cost(cfg), cyc.head_column_cost(cfg)
    nb = ceil_div(cfg.hidden_size, cfg.act_width)
    R = ceil_div(cfg.output_size, cfg.act_width)
    W = cyc.ACT_DRAIN - trim
    X, F, H = x0 * cc + 1, no * hc + 1, nh * cc + 1
    out = np.empty(len(x0), dtype=np.int64)
    pad = np.zeros(len(x0), dtype=np.int64)
    for t in range(len(x0)):
        if first[t]:
            out[t] = X[t] + H[t] + nb + W
            continue
        s = X[t] + (F[t - 2] + R - 1 if defer and not first[t - 1] else 0)
        out[t] = max(0, s - W) + H[t] + nb + W
        if defer and not first[t - 1]:
            pad[t] = max(0, s - W) - max(0, X[t] - W)
    # Deferred: the flushed head of each sequence's last timestep; else every head in place.
    out = out + (last if defer else 1) * (F + R - 1)
    return out, pad


def dense(cfg, trim: int, defer: bool) -> int:
    """The same for a timestep in which everything fires, inside a sequence."""
    cc, hc = cyc.column_cost(cfg), cyc.head_column_cost(cfg)
    nb = ceil_div(cfg.hidden_size, cfg.act_width)
    R = ceil_div(cfg.output_size, cfg.act_width)
    W = cyc.ACT_DRAIN - trim
    head = cfg.hidden_size * hc + 1 + R - 1
    s = cfg.input_size * cc + 1 + (head if defer else 0)
    return max(0, s - W) + cfg.hidden_size * cc + 1 + nb + W + (0 if defer else head)


def main(argv) -> int:
    print("| model | drain | today (exact model): cycles (dense), realized | closed form, head in "
          "place (check) | closed form, head deferred | lock-step pad per timestep |")
    print("|---|---:|---|---|---|---:|")
    for name in argv:
        cfg, x0, nh, no, first, last, opred = counts(name)
        today = cyc.timestep_cycles(cfg, [x0 + nh], no, fired_x0=x0, first=first).mean()
        td = cyc.dense_cycles(cfg)
        for trim in DRAINS:
            cells = []
            for defer in (False, True):
                c, pad = closed_form(cfg, x0, nh, no, first, last, trim, defer)
                d = dense(cfg, trim, defer)
                cells.append(f"{c.mean():.2f} ({d}), {d / c.mean() / opred:.1%}")
            today_cell = (f"{today:.2f} ({td}), {td / today / opred:.1%}" if trim == 0
                          else "-")
            print(f"| {name} | {cyc.ACT_DRAIN - trim} | {today_cell} | {cells[0]} | {cells[1]} "
                  f"| {pad.mean():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["fsdd", "watch"]))
