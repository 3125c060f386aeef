"""Projections: how many cycles design changes would save, from the cycle model's phase structure.

These are *projections*, not measurements: the cycle model of :mod:`deltahw.cycles` (its phases,
:func:`deltahw.cycles.timestep_phases`) with one term changed, applied to the fired-column counts of
real test timesteps. Each change is an upper bound of what the named RTL change could gain (e.g. a
perfect overlap), so the report labels them so.

Changes:

* ``overlap``: a layer's activation phase (ceil(H/A) beats + ``ACT_DRAIN``) overlaps the next
  layer's MAC phase, hiding min(activation, next MAC phase) per boundary; the next MAC phase
  includes its fetch (or its empty-phase cycle) and drain. The last layer's boundary is the
  window, which already holds the head slot and the next timestep's x phase (today's
  schedule, :mod:`deltahw.cycles`);
* ``act_x2``: twice the activation units (A -> 2A): ceil(H/2A) beats per layer, ceil(O/2A) read-out;
* ``head_unit``: the head on its own MAC unit (its own weight memory), its MAC phase and read-out
  running beside the next timestep's layers: the head slots of the windows stay empty (an upper
  bound: it assumes the next timestep never waits for them);
* ``all``: every change above together.

:func:`act_width_sweep` and :func:`choose_act_width` make the choice of the activation width A
data-driven: the exact cycle model at every legal A for the same P over real fired counts, with
the fit check's multiplier and LUT estimate for a part, and the fastest A that fits.
"""

from __future__ import annotations

import numpy as np

from .. import cycles as cyc
from .. import resources
from ..config import LIMITS, ConfigError, DeltaGRUConfig, ceil_div

__all__ = ["CHANGES", "OPTIONS", "projected_cycles", "what_if", "act_width_sweep",
           "choose_act_width", "act_width_for_data"]

CHANGES = {
    "overlap": "overlap each layer's activation with the next layer's MAC phase",
    "act_x2": "twice the activation units (A -> 2A)",
    "head_unit": "the head on its own MAC unit, beside the next timestep's layers",
    "all": "all of the above",
}

#: Keyword arguments of :func:`projected_cycles` for each row of the table ("today": none).
OPTIONS = {
    "today": {},
    "overlap": {"overlap": True},
    "act_x2": {"act_mult": 2},
    "head_unit": {"head_unit": True},
    "all": {"overlap": True, "act_mult": 2, "head_unit": True},
}


def _act_beats(cfg: DeltaGRUConfig, A: int) -> tuple[int, int]:
    """Activation beats per layer and head read-out beats (0 without a head) with A units."""
    return ceil_div(cfg.hidden_size, A), (ceil_div(cfg.output_size, A) if cfg.has_head else 0)


def _arrays(cfg: DeltaGRUConfig, fired_layers, fired_head, fired_x0, first, h0_early=None):
    fl = np.asarray(fired_layers, dtype=np.int64).reshape(-1, cfg.num_layers)
    fh = np.broadcast_to(np.asarray(fired_head, dtype=np.int64), fl.shape[:1])
    x0 = np.broadcast_to(np.asarray(fired_x0, dtype=np.int64), fl.shape[:1])
    fs = np.broadcast_to(np.asarray(first, dtype=bool), fl.shape[:1])
    early = (None if h0_early is None
             else np.broadcast_to(np.asarray(h0_early, dtype=np.int64), fl.shape[:1]))
    return [fl[:, l] for l in range(cfg.num_layers)], fh, x0, fs, early


def projected_cycles(cfg: DeltaGRUConfig, fired_layers, fired_head, *, fired_x0, first,
                     h0_early=None, overlap=False, act_mult=1, head_unit=False) -> np.ndarray:
    """Cycles per timestep under the changes; with no change it equals ``run_cycles``.

    ``fired_layers`` is (T, L) fired columns (x + h) per layer, ``fired_head`` (T,), ``fired_x0``
    (T,) layer 0's x columns, ``first`` (T,) the timestep starts a sequence (the timesteps of
    each sequence in order: the head slots of :func:`deltahw.cycles.window_slots`), ``h0_early``
    (T,) as :func:`deltahw.cycles.run_cycles` takes it (kept as today's A decides it, also with
    ``act_mult``). The formula
    is the cycle model's (``deltahw.cycles`` module docstring) with the read-out beats of
    ``A * act_mult`` units, the head slots empty with ``head_unit``, and with ``overlap`` each
    layer's activation hiding part of the next layer's MAC phase.
    """
    layers, fh, x0, fs, early = _arrays(cfg, fired_layers, fired_head, fired_x0, first, h0_early)
    L, W = cfg.num_layers, cyc.ACT_DRAIN
    cc, lag = cyc.column_cost(cfg), cyc.act_read_lag(cfg)
    layer_beats, head_beats = _act_beats(cfg, cfg.act_width * act_mult)
    slot, slot_prev = cyc.window_slots(fh, fs)

    def slot_cycles(n):
        if head_unit or not cfg.has_head:
            return 0 * n
        has = n >= 0
        return has * (cyc.head_phase(cfg, n * has) + head_beats)

    X = cyc.x_phase(cfg, x0)
    s_prev = slot_cycles(slot_prev)  # the x phase starts in the slot's last cycle
    lim = np.where(s_prev > 0, np.maximum(0, W - s_prev) + 1, W)
    hidden_x = np.where(fs, 0, np.minimum(X, lim))
    merged = (cc >= 2) & (X > hidden_x) & (x0 > 0)  # the h phase's fetch in the x phase's
    nh0 = layers[0] - x0
    # ... or in the window's last cycle (cycles.h_fetch_in_window)
    if L > 1:
        known = np.ones_like(fs)
    elif early is None:
        raise ValueError("A one-layer model's projection needs h0_early (GoldenResult.h0_early).")
    else:
        known = (early > 0) | (nh0 == 0)
    in_window = (cc >= 2) & ~fs & known & ((X < lim) | ((X == lim) & (x0 > 0)))
    total = (X - hidden_x + nh0 * cc + cyc.mac_phase_fixed(nh0, cc, 0, lag) - merged - in_window
             + L * layer_beats + (L - 1) * W + np.maximum(W, slot_cycles(slot)))
    act = layer_beats + W
    for l, n in enumerate(layers[1:], start=1):
        m = n * cc + cyc.mac_phase_fixed(n, cc, l, lag)
        total = total + m - (np.minimum(act, m) if overlap else 0)
    # Capture (cycles.act_capture, with the changed A): each capturing layer's first beats ran in
    # the last column of the phase before its activation, if that phase had one.
    G = _capture(cfg, cfg.act_width * act_mult)
    for l in range(L):
        if G and (cfg.has_head or l < L - 1):
            total = total - G * ((nh0 if l == 0 else layers[l]) > 0)
    return np.broadcast_to(np.asarray(total, dtype=np.int64), fh.shape).copy()


def _capture(cfg: DeltaGRUConfig, A: int) -> int:
    """:func:`deltahw.cycles.act_capture` of ``cfg`` with A activation units (0 where that A is
    not a legal configuration)."""
    try:
        return cyc.act_capture(cfg.replace(act_width=A))
    except ConfigError:
        return 0


def what_if(cfg: DeltaGRUConfig, fired_layers, fired_head, *, fired_x0, first,
            h0_early=None) -> dict:
    """Mean delta and dense cycles per timestep, the speedup, the latency gain over today's
    design and the ratio to the ideal bound of the changed hardware (same P, its A)."""
    layers, fh, x0, fs, early = _arrays(cfg, fired_layers, fired_head, fired_x0, first, h0_early)
    fl = np.stack(layers, axis=1)
    dense_fl = np.asarray([cyc.dense_columns(cfg)], dtype=np.int64)
    dense_fh = np.asarray([cfg.hidden_size if cfg.has_head else 0], dtype=np.int64)
    dense_kw = {"fired_x0": np.asarray([cfg.input_size]), "first": np.asarray([False]),
                "h0_early": np.asarray([cyc.h0_early_units(cfg)])}
    floor_kw = {"fired_x0": np.asarray([0]), "first": np.asarray([False]),
                "h0_early": np.asarray([0])}
    base = projected_cycles(cfg, fl, fh, fired_x0=x0, first=fs, h0_early=early)
    if not np.array_equal(base, cyc.run_cycles(cfg, layers, fh, fired_x0=x0, first=fs,
                                               h0_early=early)):
        raise AssertionError("whatif.projected_cycles no longer matches deltahw.cycles; update it.")
    issue = float(np.mean(cyc.mac_issue_cycles(cfg, layers, fh)))
    today = float(base.mean())
    out = {}
    for k, kw in OPTIONS.items():
        d = float(projected_cycles(cfg, fl, fh, fired_x0=x0, first=fs, h0_early=early,
                                   **kw).mean())
        layer_beats, head_beats = _act_beats(cfg, cfg.act_width * kw.get("act_mult", 1))
        ideal = issue + cfg.num_layers * layer_beats + head_beats
        z = float(projected_cycles(cfg, dense_fl, dense_fh, **dense_kw, **kw)[0])
        floor = float(projected_cycles(cfg, np.zeros_like(dense_fl), np.zeros_like(dense_fh),
                                       **floor_kw, **kw)[0])
        out[k] = {"description": CHANGES.get(k, "the current design"), "delta_cycles": d,
                  "dense_cycles": z, "speedup_vs_dense": z / d, "no_fire_cycles": floor,
                  "speedup_bound": z / floor, "latency_gain": today / d,
                  "ideal_cycles": ideal, "over_ideal": d / ideal}
    return out


def act_width_sweep(cfg: DeltaGRUConfig, fired_layers, fired_head, part=None, *, fired_x0,
                    first, h0_early=None) -> list[dict]:
    """The exact cycle model at every legal activation width A for ``cfg``'s P (P a multiple of
    3A, or 3A a multiple of P: split accumulators, ``Layout.acc_split``; the config decides),
    over the given timesteps' fired counts: mean delta cycles, dense cycles, speedup; with a
    ``part`` (:data:`deltahw.boards.PARTS` value) also the fit check's multipliers, LUTs and
    whether it fits. The fired counts do not depend on A (same thresholds, same arithmetic); the
    cycle model's ``h0_early`` does (with one layer: the h deltas of every activation beat but
    the last), so ``h0_early`` maps each A to its (N,) array (``GoldenResult.h0_early`` of the
    model at that A); ``None`` with more than one layer."""
    rows = []
    for A in (1 << i for i in range(LIMITS["act_width"][1].bit_length())):
        try:
            c = cfg.replace(act_width=A)
        except ConfigError:
            continue
        early = None if h0_early is None else h0_early[A]
        layers, fh, x0, fs, early = _arrays(c, fired_layers, fired_head, fired_x0, first, early)
        mean = float(np.mean(cyc.run_cycles(c, layers, fh, fired_x0=x0, first=fs,
                                            h0_early=early)))
        dense = cyc.dense_cycles(c)
        row = {"act_width": A, "delta_cycles": mean, "dense_cycles": dense,
               "speedup_vs_dense": dense / mean, "no_fire_cycles": cyc.floor_cycles(c)}
        if part is not None:
            est = resources.estimate(c, part)
            row.update(part=part.name, dsps=est.dsps, luts=est.luts,
                       fits=resources.fits(c, part))
        rows.append(row)
    return rows


def choose_act_width(rows: list[dict]) -> int:
    """The A with the fewest mean delta cycles among the rows that fit (smallest A on a tie)."""
    ok = [r for r in rows if r.get("fits", True)]
    if not ok:
        raise ValueError("No activation width fits the part.")
    return min(ok, key=lambda r: (r["delta_cycles"], r["act_width"]))["act_width"]


def act_width_for_data(model, x_q, lengths, part) -> tuple[int, list[dict]]:
    """The activation width A for ``model`` on a part, chosen from real data.

    ``x_q`` (B, T, I) are quantized inputs with ``lengths`` (B,): the golden model gives each real
    timestep's fired columns, :func:`act_width_sweep` the exact cycle model at every legal A with
    the fit check for ``part`` (a :data:`deltahw.boards.PARTS` value), and :func:`choose_act_width`
    the fastest A that fits. Returns (A, the sweep rows).
    """
    import torch

    from ..golden import run_golden

    r = run_golden(model, x_q, lengths)
    m = r.mask
    fl = (r.fired_x + r.fired_h)[m].numpy()
    fh = r.fired_head[m].numpy()
    x0 = r.fired_x[..., 0][m].numpy()
    first = (torch.arange(m.shape[1]) == 0).expand_as(m)[m].numpy()
    early = None
    if model.config.num_layers == 1:  # h0_early depends on A: the golden model at every legal A
        early = {}
        for A in (1 << i for i in range(LIMITS["act_width"][1].bit_length())):
            try:
                c = model.config.replace(act_width=A)
            except ConfigError:
                continue
            early[A] = run_golden(model.with_config(c), x_q, lengths).h0_early[m].numpy()
    rows = act_width_sweep(model.config, fl, fh, part, fired_x0=x0, first=first, h0_early=early)
    return choose_act_width(rows), rows
