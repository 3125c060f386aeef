"""Projection, not a measurement: the deferred head without a host flag (docs/deferred_head.md).

No RTL implements this schedule. Over the test split of each model given, it sets today's cycle
model (:func:`deltahw.cycles.timestep_cycles`) beside the cycle model the plan in
``docs/deferred_head.md`` ("The plan") would make exact, built from the same primitives
(:mod:`deltahw.cycles`), for a model with a head:

* the window after the last layer's activation of t (its drain, ``W`` = ``ACT_DRAIN``, swept
  shorter) runs the **head slot** first: the head of t-1 and its read-out, ``S(t) = F(n_o(t-1))
  + R`` cycles (``F`` the head's MAC phase, ``R = ceil(O/A)`` read-out beats), none when t starts
  its sequence; then the x phase of t+1;
* timestep t costs ``x(t) + (its layers' MAC phases, activations and drains) + max(W, S(t))``,
  where ``x(t)`` is its whole x phase when it starts a sequence, else the part of it past the
  previous window, ``max(0, X(t) - max(0, W - S(t-1)))``;
* the head of a sequence's last timestep runs in place after it closes: stall cycles, as every
  in-place head (a late input, a lock-step host): printed as the lock-step cost, the wall cycles
  per timestep of a host that waits for each output before it sends the next input, today and
  with the plan.

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
    """(config, per-timestep arrays over the test split, sequence-major: fired columns per layer
    (N, L), layer 0's x columns, head columns, first; op reduction)."""
    spec = resolve_model(name)
    model = load_model(spec.model_path)
    cfg = model.config
    if not cfg.has_head:
        raise SystemExit(f"{name}: the deferred head needs a head; got {cfg.summary()}.")
    xq, lengths, _, _ = _test_data(spec, model)
    st = ops.split_stats(model, xq, lengths)
    return (cfg, st["fired_layers"].astype(np.int64), st["fired_x0"].astype(np.int64),
            st["fired_head"].astype(np.int64), st["first"].astype(bool),
            st["dense_macs"].sum() / st["macs"].sum())


def planned(cfg, fl, x0, no, first, trim: int):
    """(compute cycles, lock-step wall cycles) per timestep of the planned schedule with the
    drain ``trim`` cycles shorter (module docstring)."""
    cc, hc = cyc.column_cost(cfg), cyc.head_column_cost(cfg)
    L, nb = cfg.num_layers, ceil_div(cfg.hidden_size, cfg.act_width)
    R = ceil_div(cfg.output_size, cfg.act_width)
    W = cyc.ACT_DRAIN - trim
    F = cyc.mac_phase_fixed(no, hc, cyc.HEAD) + no * hc
    X = cyc.x_phase(cfg, x0)
    nh0 = fl[:, 0] - x0
    body = cyc.mac_phase_fixed(nh0, cc, 0) + nh0 * cc + L * nb + (L - 1) * W
    for l in range(1, L):
        body = body + cyc.mac_phase_fixed(fl[:, l], cc, l) + fl[:, l] * cc
    S = np.where(first, 0, np.r_[0, F[:-1] + R])  # the head of t-1 in t's window
    S_prev = np.r_[0, S[:-1]]
    xc = np.where(first, X, np.maximum(0, X - np.maximum(0, W - S_prev)))
    compute = xc + body + np.maximum(W, S)
    # Lock-step: every input late, every head in place after its timestep (stall), the x phase
    # run alone (its hidden part stall), the window's slot empty (the pad, compute).
    wall = X + body + np.maximum(W, S) + F + R
    return compute, wall


def planned_dense(cfg, trim: int) -> int:
    """The same for a timestep in which everything fires, inside a sequence."""
    cols = cyc.dense_columns(cfg)
    H = cfg.hidden_size
    c, _ = planned(cfg, np.array([cols] * 3), np.array([cols[0] - H] * 3), np.array([H] * 3),
                   np.array([True, False, False]), trim)
    return int(c[-1])


def today_lockstep(cfg, fl, x0, no, first):
    """Today's wall cycles per timestep of a lock-step host: compute + the overlaps lost."""
    c = cyc.timestep_cycles(cfg, [fl[:, l] for l in range(cfg.num_layers)], no, fired_x0=x0,
                            first=first)
    return c + cyc.lost_overlap(cfg, x0, fl[:, 0] - x0, first)


def main(argv) -> int:
    print("| model | drain | today: cycles (dense), realized | planned: cycles (dense), "
          "realized | lock-step wall cycles per timestep, today / planned |")
    print("|---|---:|---|---|---|")
    for name in argv:
        cfg, fl, x0, no, first, opred = counts(name)
        today = cyc.timestep_cycles(cfg, [fl[:, l] for l in range(cfg.num_layers)], no,
                                    fired_x0=x0, first=first).mean()
        td = cyc.dense_cycles(cfg)
        lock_today = today_lockstep(cfg, fl, x0, no, first).mean()
        for trim in DRAINS:
            c, wall = planned(cfg, fl, x0, no, first, trim)
            d = planned_dense(cfg, trim)
            today_cell = (f"{today:.2f} ({td}), {td / today / opred:.1%}" if trim == 0
                          else "-")
            lock = (f"{lock_today:.2f}" if trim == 0 else "-") + f" / {wall.mean():.2f}"
            print(f"| {name} | {cyc.ACT_DRAIN - trim} | {today_cell} | {c.mean():.2f} ({d}), "
                  f"{d / c.mean() / opred:.1%} | {lock} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["fsdd", "watch"]))
