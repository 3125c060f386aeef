"""Projections: how many cycles design changes would save, from the cycle model's phase structure.

These are *projections*, not measurements: the cycle model of :mod:`deltahw.cycles` with one term
changed, applied to the fired-column counts of real test timesteps. Each change is an upper bound
of what the named RTL change could gain (e.g. a perfect overlap), so the report labels them so.

Changes:

* ``overlap``: a layer's activation phase (ceil(H/A) beats + ACT_DRAIN) overlaps the next MAC
  phase (the next layer's, or the head's), hiding min(activation, next MAC phase) per boundary;
* ``act_x2``: twice the activation units (A -> 2A): ceil(H/2A) beats per layer, ceil(O/2A) read-out;
* ``head_nopad``: head columns cost ceil(O/P) cycles instead of max(ceil(O/P), 3);
* ``layer_nopad``: layer columns cost ceil(3H/P) instead of max(ceil(3H/P), 3) (only matters when
  P > 3H/3);
* ``all``: every change above together.
"""

from __future__ import annotations

import numpy as np

from .. import cycles as cyc
from ..config import DeltaGRUConfig, ceil_div

__all__ = ["CHANGES", "projected_cycles", "what_if"]

CHANGES = {
    "overlap": "overlap each layer's activation with the next MAC phase (next layer or head)",
    "act_x2": "twice the activation units (A -> 2A)",
    "head_nopad": "head columns at ceil(O/P) cycles (no 3-cycle read-modify-write padding)",
    "layer_nopad": "layer columns at ceil(3H/P) cycles (no 3-cycle padding)",
    "all": "all of the above",
}


def projected_cycles(cfg: DeltaGRUConfig, fired_layers, fired_head, overlap=False, act_mult=1,
                     head_nopad=False, layer_nopad=False) -> np.ndarray:
    """Cycles per timestep under the changes; with no change it equals ``timestep_cycles``."""
    fl = np.asarray(fired_layers, dtype=np.int64)
    fh = np.asarray(fired_head, dtype=np.int64)
    H, L, P = cfg.hidden_size, cfg.num_layers, cfg.lanes
    A = cfg.act_width * act_mult
    C = ceil_div(3 * H, P)
    cc = C if layer_nopad else cyc.column_cost(cfg)
    act = ceil_div(H, A) + cyc.ACT_DRAIN
    mac = [fl[:, l] * cc + cyc.MAC_DRAIN for l in range(L)]
    total = cyc.STEP_OVERHEAD + sum(mac[l] + act for l in range(L))
    nxt = mac[1:]
    if cfg.has_head:
        hc = ceil_div(cfg.output_size, P) if head_nopad else cyc.head_column_cost(cfg)
        head_mac = fh * hc + cyc.MAC_DRAIN
        total = total + head_mac + ceil_div(cfg.output_size, A) + cyc.OUT_DRAIN
        nxt = nxt + [head_mac]
    if overlap:
        for m in nxt:
            total = total - np.minimum(act, m)
    return np.asarray(total, dtype=np.int64)


def what_if(cfg: DeltaGRUConfig, fired_layers, fired_head) -> dict:
    """Mean delta and dense cycles per timestep, the speedup, the latency gain over today's
    design and the ratio to the ideal bound of the changed hardware (same P, its A)."""
    fl = np.asarray(fired_layers, dtype=np.int64)
    fh = np.asarray(fired_head, dtype=np.int64)
    dense_fl = np.asarray([cyc.dense_columns(cfg)], dtype=np.int64)
    dense_fh = np.asarray([cfg.hidden_size if cfg.has_head else 0], dtype=np.int64)
    options = {
        "today": {},
        "overlap": {"overlap": True},
        "act_x2": {"act_mult": 2},
        "head_nopad": {"head_nopad": True},
        "layer_nopad": {"layer_nopad": True},
        "all": {"overlap": True, "act_mult": 2, "head_nopad": True, "layer_nopad": True},
    }
    base = projected_cycles(cfg, fl, fh)
    model = np.array([cyc.timestep_cycles(cfg, list(map(int, r)), int(h))
                      for r, h in zip(fl, fh)], dtype=np.int64)
    if not np.array_equal(base, model):
        raise AssertionError("whatif.projected_cycles no longer matches deltahw.cycles; update it.")
    out = {}
    C = ceil_div(3 * cfg.hidden_size, cfg.lanes)
    Ch = ceil_div(cfg.output_size, cfg.lanes)
    today = float(base.mean())
    for k, kw in options.items():
        d = float(projected_cycles(cfg, fl, fh, **kw).mean())
        A = cfg.act_width * kw.get("act_mult", 1)
        ideal = float((fl.sum(-1) * C + fh * Ch).mean()) + cfg.num_layers * ceil_div(
            cfg.hidden_size, A) + (ceil_div(cfg.output_size, A) if cfg.has_head else 0)
        z = float(projected_cycles(cfg, dense_fl, dense_fh, **kw)[0])
        floor = float(projected_cycles(cfg, np.zeros_like(dense_fl), np.zeros_like(dense_fh),
                                       **kw)[0])
        out[k] = {"description": CHANGES.get(k, "the current design"), "delta_cycles": d,
                  "dense_cycles": z, "speedup_vs_dense": z / d, "no_fire_cycles": floor,
                  "speedup_bound": z / floor, "latency_gain": today / d,
                  "ideal_cycles": ideal, "over_ideal": d / ideal}
    return out
