"""Bit-exact integer golden model of the delta-GRU accelerator.

The model defines what the hardware must compute: the RTL is compared with it on every output of
every timestep, and its cycle count (from :mod:`deltahw.cycles`) on every timestep. It works on
int64
torch tensors only; the single float step is quantizing the inputs on entry (``QuantizedModel
.quantize_input``) and, optionally, dequantizing the outputs.

Per layer and timestep (``docs/numerics.md`` states every rounding):

    dx = x - xhat, fired where |dx| >= theta_x; xhat <- x where fired; dx <- 0 elsewhere
    dh = h - hhat, fired where |dh| >= theta_h; hhat <- h where fired; dh <- 0 elsewhere
    Mx  += Wx dx + [Wh_r; Wh_u; 0] dh       (M_r | M_u | M_cx, exact, acc format)
    Mch += Wh_c dh                          (M_ch)
    r = sigmoid_table(M_r), u = sigmoid_table(M_u)
    c = tanh_table(sat(rnd(M_cx) + rnd(r * sat(rnd(M_ch)))))
    h = sat(c + rnd(u * (h - c)))

The head (if any) is a delta-encoded linear layer on the last layer's h: ``Mo += Wo do``,
``y = sat(rnd(Mo))``. Sequences in a batch may have different lengths (``lengths``): past its end a
sequence's state is frozen and its statistics are zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import cycles
from .config import ConfigError, DeltaGRUConfig
from .model import InputError, QuantizedModel, load_model
from .numerics import dequantize, rshift_round, saturate, threshold_to_lsb
from .util import (  # noqa: F401  (the argument helpers: re-exported for callers)
    add_loading_arguments,
    add_model_arguments,
    add_threshold_arguments,
    run_cli,
)

__all__ = ["GoldenResult", "run_golden", "gru_activation", "main"]


@dataclass
class GoldenResult:
    """Outputs and per-timestep statistics of a golden-model run (all int64 tensors)."""

    outputs: torch.Tensor  # (B, T, O or H) in the act format
    fired_x: torch.Tensor  # (B, T, L) fired input deltas per layer
    fired_h: torch.Tensor  # (B, T, L) fired hidden deltas per layer
    fired_head: torch.Tensor  # (B, T) fired deltas into the head (0 without a head)
    macs: torch.Tensor  # (B, T) multiply-accumulates done
    dense_macs: torch.Tensor  # (B, T) MACs a dense GRU does for the same step
    cycles: torch.Tensor  # (B, T) predicted hardware compute cycles
    mask: torch.Tensor  # (B, T) bool, True for real (non-padding) timesteps
    # (B, T) layer 0's fired h deltas among its first cycles.h0_early_units(config) units: those
    # its h queue has counted in the window's last cycle (an input of the cycle model)
    h0_early: torch.Tensor

    def summary(self, config: DeltaGRUConfig) -> dict:
        m = self.mask
        steps = int(m.sum())
        macs, dense = int(self.macs[m].sum()), int(self.dense_macs[m].sum())
        cyc = self.cycles[m]
        dense_cyc = cycles.dense_cycles(config)
        out = {
            "timesteps": steps,
            "macs": macs,
            "dense_macs": dense,
            "op_reduction": dense / macs if macs else float("inf"),
            "mean_cycles": float(cyc.float().mean()) if steps else 0.0,
            "dense_cycles": int(dense_cyc),
            "speedup_vs_dense_hw": dense_cyc / float(cyc.float().mean()) if steps else 0.0,
            "fired_x_fraction": [],
            "fired_h_fraction": [],
        }
        for l in range(config.num_layers):
            fx = self.fired_x[..., l][m].float().mean() / config.layer_input_size(l)
            fh = self.fired_h[..., l][m].float().mean() / config.hidden_size
            out["fired_x_fraction"].append(float(fx))
            out["fired_h_fraction"].append(float(fh))
        return out


def gru_activation(config: DeltaGRUConfig, m_r, m_u, m_cx, m_ch, h_prev):
    """The activation and update stage on accumulator values: returns the new h (act format)."""
    return _activation(config, torch.cat([m_r, m_u], dim=-1), m_cx, m_ch, h_prev)


def _activation(config: DeltaGRUConfig, m_ru, m_cx, m_ch, h_prev):
    """:func:`gru_activation` with M_r and M_u side by side (one table lookup for both gates)."""
    af, wf = config.act.frac, config.weight.frac
    ru = config.sigmoid.lookup(m_ru, config.acc_frac)
    H = m_cx.shape[-1]
    r, u = ru[..., :H], ru[..., H:]
    cx = saturate(rshift_round(m_cx, wf), config.act)
    ch = saturate(rshift_round(m_ch, wf), config.act)
    pre_c = saturate(cx + rshift_round(r * ch, af), config.act)
    c = config.tanh.lookup(pre_c, af)
    return saturate(c + rshift_round(u * (h_prev - c), af), config.act)


def _encode(v, vhat, theta):
    """Delta encoder: returns (delta with non-fired zeroed, new vhat, fired mask)."""
    d, new_vhat, fired = _delta(v, vhat, theta)
    return d, new_vhat, torch.ones_like(d, dtype=torch.bool) if fired is None else fired


def _delta(v, vhat, theta):
    """:func:`_encode`, but the mask is ``None`` when theta is 0 (everything fires)."""
    d = v - vhat
    if theta == 0:
        return d, v, None
    fired = d.abs() >= theta
    d = d * fired
    return d, vhat + d, fired


def _count(fired, width: int, active, all_active: bool):
    """Fired elements per sequence (zero for sequences past their end)."""
    if fired is None:
        return width if all_active else active[:, 0].long() * width
    return (fired & active).sum(1) if not all_active else fired.sum(1)


#: Paths of :func:`run_golden`: ``"auto"`` takes float64 when :func:`float64_exact` proves it exact.
PATHS = ("auto", "float64", "int64")


def run_golden(
    model: QuantizedModel, x_q: torch.Tensor, lengths=None, *, path: str = "auto"
) -> GoldenResult:
    """Run the integer golden model on quantized inputs ``x_q`` of shape (B, T, I) or (T, I).

    ``lengths`` (B,) marks the real length of each sequence when a batch is padded. Every sequence
    starts from the reset state (zero h, zero last-transmitted values, accumulators = biases).

    ``path`` picks the arithmetic, never the result: ``"float64"`` runs the integers in float64
    (BLAS matmuls, layer by layer; exact by the proof of :func:`float64_exact`), ``"int64"`` runs
    them in int64 timestep by timestep, and ``"auto"`` (the default) takes float64 whenever the
    config allows it. Both give the same bits; the float64 path is several times faster.
    """
    cfg = model.config
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(PATHS)}; got {path!r}.")
    if x_q.dim() == 2:
        x_q = x_q[None]
    if x_q.dtype != torch.int64:
        raise TypeError(f"run_golden takes int64 quantized inputs; got {x_q.dtype}.")
    B, T, I = x_q.shape
    if I != cfg.input_size:
        raise ValueError(f"Inputs have {I} features; the model expects {cfg.input_size}.")
    if x_q.numel() and (x_q.min() < cfg.act.min_int or x_q.max() > cfg.act.max_int):
        raise ValueError(f"Quantized inputs must lie in [{cfg.act.min_int}, {cfg.act.max_int}].")
    if lengths is None:
        lengths = torch.full((B,), T, dtype=torch.int64)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    exact = float64_exact(cfg)
    if path == "float64" and not exact:
        raise ValueError(
            f"The float64 path is not exact for this config (bound {float64_bound(cfg)} >= 2**53 "
            f"half-LSBs); use path='int64' or 'auto'."
        )
    use_float = path == "float64" or (path == "auto" and exact)
    run = _run_float64 if use_float else _run_int64
    outputs, fired_x, fired_h, fired_head, h0_early = run(model, x_q, mask)

    H, L = cfg.hidden_size, cfg.num_layers
    padded = not bool(mask.all())
    if padded:
        fired_x = torch.where(mask[..., None], fired_x, 0)
        fired_h = torch.where(mask[..., None], fired_h, 0)
        fired_head = torch.where(mask, fired_head, 0)
        h0_early = torch.where(mask, h0_early, 0)
    n_layer = fired_x + fired_h
    macs = (n_layer * 3 * H).sum(-1) + fired_head * cfg.output_size
    dense = sum(3 * H * c for c in cycles.dense_columns(cfg)) + H * cfg.output_size
    dense_macs = torch.full((B, T), dense, dtype=torch.int64)
    # Every sequence starts at t = 0 (nothing to overlap its x phase with).
    first = (torch.arange(T) == 0).expand(B, T)
    cyc = torch.as_tensor(
        cycles.run_cycles(cfg, [n_layer[..., l] for l in range(L)], fired_head,
                          fired_x0=fired_x[..., 0], first=first, h0_early=h0_early))
    if padded:
        dense_macs = torch.where(mask, dense_macs, 0)
        cyc = torch.where(mask, cyc, 0)
        macs = torch.where(mask, macs, 0)
        outputs = torch.where(mask[..., None], outputs, 0)
    return GoldenResult(outputs, fired_x, fired_h, fired_head, macs, dense_macs, cyc, mask,
                        h0_early)


def _run_int64(model: QuantizedModel, x_q: torch.Tensor, mask: torch.Tensor):
    """The int64 path: every timestep in turn, one integer matmul per layer and vector.

    Sequences past their end keep their state frozen. Returns outputs and fired counts, unmasked.
    """
    cfg = model.config
    B, T, _ = x_q.shape
    H, L = cfg.hidden_size, cfg.num_layers
    shift_b = cfg.acc_frac - cfg.bias.frac
    # One accumulator tensor per layer, columns [M_cx | M_r | M_u | M_ch], so that the x columns
    # (which feed M_cx, M_r, M_u) and the h columns (M_r, M_u, M_ch) each update one contiguous
    # slice with one integer matmul: (B, I_l) x (I_l, 3H) and (B, H) x (H, 3H).
    wx_t = [torch.cat([p.w_x[2 * H :], p.w_x[: 2 * H]]).T.contiguous() for p in model.layers]
    wh_t = [p.w_h.T.contiguous() for p in model.layers]
    state = []
    for l, p in enumerate(model.layers):
        m0 = torch.cat([p.b_cx, p.b_r, p.b_u, p.b_ch]) << shift_b
        state.append(
            {
                "xhat": torch.zeros(B, cfg.layer_input_size(l), dtype=torch.int64),
                "hhat": torch.zeros(B, H, dtype=torch.int64),
                "h": torch.zeros(B, H, dtype=torch.int64),
                "m": m0.expand(B, 4 * H).clone(),
            }
        )
    if cfg.has_head:
        head_wt = model.head_w.T.contiguous()
        head_state = {
            "xhat": torch.zeros(B, H, dtype=torch.int64),
            "m": (model.head_b << shift_b).expand(B, cfg.output_size).clone(),
        }

    O = cfg.output_width
    outputs = torch.zeros(B, T, O, dtype=torch.int64)
    fired_x = torch.zeros(B, T, L, dtype=torch.int64)
    fired_h = torch.zeros(B, T, L, dtype=torch.int64)
    fired_head = torch.zeros(B, T, dtype=torch.int64)
    h0_early = torch.zeros(B, T, dtype=torch.int64)
    n_early = cycles.h0_early_units(cfg)
    theta_x, theta_h = cfg.theta_x, cfg.theta_h

    for t in range(T):
        active = mask[:, t : t + 1]
        all_active = bool(active.all())
        v = x_q[:, t]
        for l in range(L):
            s = state[l]
            dx, xhat, fx = _delta(v, s["xhat"], theta_x[l])
            dh, hhat, fh = _delta(s["h"], s["hhat"], theta_h[l])
            m = s["m"] if all_active else s["m"].clone()  # updated in place below
            m[:, : 3 * H] += dx @ wx_t[l]
            m[:, H:] += dh @ wh_t[l]
            h = _activation(cfg, m[:, H : 3 * H], m[:, :H], m[:, 3 * H :], s["h"])
            if not all_active:
                xhat = torch.where(active, xhat, s["xhat"])
                hhat = torch.where(active, hhat, s["hhat"])
                m = torch.where(active, m, s["m"])
                h = torch.where(active, h, s["h"])
            s.update(xhat=xhat, hhat=hhat, m=m, h=h)
            fired_x[:, t, l] = _count(fx, dx.shape[1], active, all_active)
            fired_h[:, t, l] = _count(fh, H, active, all_active)
            if l == 0:
                h0_early[:, t] = _count(None if fh is None else fh[:, :n_early], n_early,
                                        active, all_active)
            v = h
        if cfg.has_head:
            do, xhat, fo = _delta(v, head_state["xhat"], cfg.theta_head)
            m = head_state["m"] + do @ head_wt
            if not all_active:
                xhat = torch.where(active, xhat, head_state["xhat"])
                m = torch.where(active, m, head_state["m"])
            head_state.update(xhat=xhat, m=m)
            fired_head[:, t] = _count(fo, H, active, all_active)
            outputs[:, t] = saturate(rshift_round(m, cfg.weight.frac), cfg.act)
        else:
            outputs[:, t] = v
    return outputs, fired_x, fired_h, fired_head, h0_early


# --------------------------------------------------------------------------------------------------
# The float64 path
_EXACT = 2**53  # float64 holds every integer below this exactly (53-bit significand)
_EXACT32 = 2**24  # float32: 24-bit significand


def _table_signed(table) -> torch.Tensor:
    """Table entries ordered by signed index: entry ``i + 2**(in_bits-1)`` is ``f(i)``."""
    half = table.size // 2
    vals = table.as_tensor()
    return torch.cat([vals[half:], vals[:half]])


def _table_extremes(config: DeltaGRUConfig) -> tuple[int, int, int, int]:
    """(min, max) of the sigmoid table and of the tanh table, as integers."""
    s, t = config.sigmoid.values, config.tanh.values
    return min(s), max(s), min(t), max(t)


def float64_bound(config: DeltaGRUConfig) -> int:
    """The largest magnitude, in units of its own resolution, of any value the float64 path forms.

    :func:`float64_exact` compares it with 2**53; the proof is there.
    """
    a = config.act
    amax = 1 << (a.bits - 1)  # |act-format value| <= amax (covers min_int = -amax)
    wmax = 1 << (config.weight.bits - 1)
    sb = config.acc_frac - config.bias.frac
    bmax = (1 << (config.bias.bits - 1)) << sb
    sig, tanh = config.sigmoid, config.tanh
    s_sig = config.acc_frac - config.sigmoid_in.frac
    wf, af = config.weight.frac, a.frac
    k = af - config.tanh_in.frac
    H = config.hidden_size
    fan_in = [config.layer_input_size(l) + H for l in range(config.num_layers)]
    fan_in += [H] if config.has_head else []
    # (1) accumulators, in half accumulator LSBs: bias, products, folded rounding constants.
    const = max((sig.size // 2 + 1) << s_sig, 1 << wf)
    acc = 2 * (bmax + max(fan_in) * wmax * amax + const)
    # (2) tanh index: (cx + 1/2 + c_k) / 2**k + off_t + r * ch / 2**(af + k), in 2**-(af+k+1).
    smin, smax, tmin, tmax = _table_extremes(config)
    rmax = max(abs(smin), abs(smax))
    cmax = max(abs(tmin), abs(tmax))
    c_k = (1 << (k - 1)) if k else 0
    idx = (amax + 1 + c_k + (tanh.size // 2) * (1 << k)) * (1 << (af + 1)) + 2 * rmax * amax
    # (3) new h: c + 1/2 + u * (h - c) / 2**af, in 2**-af.
    upd = (cmax + 1) * (1 << af) + rmax * (amax + cmax)
    return max(acc, idx, upd)


def float64_exact(config: DeltaGRUConfig) -> bool:
    """Whether the float64 path computes the same integers as the int64 path for this config.

    Proof. IEEE 754 float64 rounds to nearest and returns the exact result of an addition,
    multiplication or fused multiply-add whenever that result is representable; a multiple of
    2**-q of magnitude below 2**(53 - q) is representable (at most 53 significant bits), and
    scaling by a power of two is exact (no value here comes near the exponent limits). The float64
    path only forms such values, and every one of them is bounded by :func:`float64_bound`
    counted in units of its resolution 2**-q; if that bound is below 2**53 every operation, in any
    order (BLAS blocking, FMA, threads), is exact, and so are ``floor``, ``clamp`` and the
    truncation to an index of a non-negative value. The three families of values:

    1. Accumulators ``M = b * 2**sb + W v + K`` (the x part precomputed in bulk, the h part one
       matmul per timestep): ``|b * 2**sb| <= 2**(bias.bits-1+sb)``, each product ``|w v| <=
       2**(weight.bits-1) * 2**(act.bits-1)`` over at most ``fan_in = I_l + H`` terms (``H`` for
       the head; ``v`` is a last-transmitted value, always in the act format, see
       docs/numerics.md), and the folded rounding constant ``K = (1/2 + 2**(sigmoid_in.bits-1)) *
       2**s`` (sigmoid columns, ``s = acc_frac - sigmoid_in.frac``) or ``2**(weight.frac-1)``
       (other columns) is a multiple of half an LSB. Any partial sum is bounded by the sum of the
       magnitudes, counted in half LSBs. Columns are scaled by ``2**-s`` in the weights and
       constants, so the matmul directly yields ``M / 2**s + 1/2 + offset`` and ``floor`` of it is
       the rounded, offset table index.
    2. The tanh index ``(cx + 1/2 + c_k) / 2**k + off_t + r ch / 2**(act.frac + k)`` (one
       ``addcmul``): a multiple of ``2**-(act.frac+k+1)`` with ``|cx|, |ch| <= 2**(act.bits-1)``,
       ``0 <= r <=`` the sigmoid table's largest entry, ``k = act.frac - tanh_in.frac``.
    3. The new state ``c + 1/2 + u (h - c) / 2**act.frac`` (one ``addcmul``): a multiple of
       ``2**-act.frac`` with ``|c|`` at most the tanh table's largest entry.

    The deltas ``v - v_hat`` are differences of act-format integers (below 2**25). The defaults
    (Q8.8 act, Q1.7 weights, I + H up to 6144) need at most 2**37. Where
    :func:`float32_exact` holds, the timestep loop runs in float32 (proof there).
    """
    return float64_bound(config) < _EXACT


def _float32_bounds(config: DeltaGRUConfig) -> dict | None:
    """The quantities of :func:`float32_exact`'s proof, or None when the tables rule it out."""
    smin, smax, tmin, tmax = _table_extremes(config)
    a, af, wf = config.act, config.act.frac, config.weight.frac
    if not (smin >= 0 and smax <= 1 << af and a.min_int <= tmin and tmax <= a.max_int):
        return None
    cmax = max(-tmin, tmax)
    A = 1 << (a.bits - 1)
    s = config.acc_frac - config.sigmoid_in.frac
    k = af - config.tanh_in.frac
    off_s, off_t = config.sigmoid.size // 2, config.tanh.size // 2
    mm = config.hidden_size * (1 << (config.weight.bits - 1)) * cmax  # |W h_hat|, LSBs of M
    mm_ru, mm_c = -(-mm >> s), -(-mm >> wf)  # the same in the scaled r|u and c columns (ceil)
    p_max = -(-(smax * A) >> (af + k))  # |r ch| / 2**(af + k), ceil
    return {
        "cmax": cmax, "mm_ru": mm_ru, "mm_c": mm_c, "p_max": p_max,
        "matmul": mm,
        "ru_sum": (2 * off_s + 2 * mm_ru + 2) << s,
        "ch_sum": (A + 2 * mm_c + 2) << max(wf, 1),
        "product": smax * A,
        "tanh_const": (2 * off_t + p_max + 2) << (k + 1),
        "tanh_window": (2 * off_t + 1) << (af + k + 1),
        "update": (cmax + 1) * (1 << af) + smax * 2 * cmax,
        "lerp": 2 * cmax << af,
    }


def float32_exact(config: DeltaGRUConfig) -> bool:
    """Whether the float64 path may run its timestep loop in float32 (it does where this holds).

    Proof. (0) If every sigmoid table entry lies in [0, 2**act.frac] (0 <= u <= 1) and every tanh
    entry in the act range, the new state ``h' = c + rnd(u (h - c))`` lies between ``c`` and ``h``
    (rounding half up maps a value between 0 and the integer ``h - c`` to an integer between
    them): it needs no saturation and, from ``h = 0`` at reset, ``|h| <= cmax``, the largest
    ``|tanh entry|`` (2**act.frac = 256 for the defaults: a GRU's hidden state lies in [-1, 1]).
    So are ``h_hat`` and the inputs of the layers after the first and of the head. Then, with
    float32's 24-bit significand and the argument of :func:`float64_exact`, every quantity below
    (in units of its resolution) is below 2**24:

    1. ``matmul``: ``W h_hat`` partial sums, ``H * 2**(weight.bits-1) * cmax`` (scaled columns).
    2. ``ru_sum``: the sigmoid columns' accumulator ``addmm``. Their x side (float64, in bulk) is
       first clamped to ``[-(mm_ru + 1), 2 off_s + mm_ru + 1]``, ``mm_ru`` the bound of 1. in these
       columns: a value beyond that stays beyond the index range ``[0, 2 off_s)`` whatever the
       matmul adds, so the clamped index is unchanged; then every partial sum is exact.
    3. ``ch_sum``: the same for the M_ch columns (constant x side, clamped to the act range widened
       by ``mm_c + 1``), whose ``floor`` is then clamped to the act range.
    4. ``product`` ``r ch`` (exact), ``tanh_const`` the clamped constant part of the tanh index.
       The index sum itself may round, but only outside the window ``[t_lo, t_hi]`` whose values
       (``tanh_window``) are representable: rounding is monotonic and the window's ends are
       representable, so the clamp gives the exact result's clamp.
    5. ``update``: ``c + u (h - c) / 2**act.frac`` (then ``+ 1/2`` and ``floor``), and ``lerp``:
       the loop forms it as ``torch.lerp(c, h, w)`` with ``w = u / 2**act.frac`` in ``[0, 1]``
       (the table is stored pre-scaled), which computes ``c + w (h - c)`` or ``h - (1 - w)
       (h - c)`` (with or without FMA): ``h - c`` is an integer, ``|h - c| <= 2 cmax``, and ``w``,
       ``1 - w`` are multiples of ``2**-act.frac`` in ``[0, 1]``, so every product and the result
       are multiples of ``2**-act.frac`` of magnitude at most ``2 cmax``.

    ``h - h_hat`` are differences of integers below ``2 cmax``. The default formats hold for H up
    to 191 (``ru_sum`` is the first to fail); larger networks run the loop in float64.
    """
    b = _float32_bounds(config)
    return b is not None and all(
        b[k] < _EXACT32 for k in ("matmul", "ru_sum", "ch_sum", "product", "tanh_const",
                                  "tanh_window", "update", "lerp"))


def _run_float64(model: QuantizedModel, x_q: torch.Tensor, mask: torch.Tensor):
    """The float64 path: layer by layer, the input side of every timestep at once.

    A delta accumulator telescopes (docs/numerics.md): ``M_t = bias + Wx x_hat_t + Wh h_hat_t``.
    The input encoder of a layer is elementwise, so its x_hat for all timesteps is a short loop of
    small elementwise steps, and ``Wx x_hat`` for all timesteps one float64 matmul. Only the
    recurrent part (hidden encoder, ``Wh h_hat`` and the activation) runs timestep by timestep:
    one ``addmm`` and about fifteen elementwise operations on (B, H) tensors, in float32 where
    :func:`float32_exact` proves it exact (else float64). The head is then one matmul. A fired
    delta changes its last-transmitted value (a threshold is at least 1 LSB), so fired counts are
    the changed elements of x_hat / h_hat between timesteps, counted in bulk. Batch rows never mix
    and time is causal, so padded timesteps only need masking afterwards.
    """
    cfg = model.config
    B, T, _ = x_q.shape
    H, L, O = cfg.hidden_size, cfg.num_layers, cfg.output_width
    f64 = dict(dtype=torch.float64)
    sd = dict(dtype=torch.float32 if float32_exact(cfg) else torch.float64)  # the loop's dtype
    af, wf = cfg.act.frac, cfg.weight.frac
    amin, amax = cfg.act.min_int, cfg.act.max_int
    A = 1 << (cfg.act.bits - 1)
    sb = cfg.acc_frac - cfg.bias.frac
    # The sigmoid table pre-scaled by 2**-act.frac (exact: a power of two), so that u is the
    # weight of the state update's lerp and r * ch needs only the 2**-k scale.
    sig_t = (_table_signed(cfg.sigmoid).to(**f64) * 2.0**-af).to(**sd)
    lerp = sd["dtype"] == torch.float32  # 0 <= u <= 1 there (float32_exact, (0))
    tanh_t = _table_signed(cfg.tanh).to(**sd)
    s_sig = cfg.acc_frac - cfg.sigmoid_in.frac
    off_s = cfg.sigmoid.size // 2
    k = af - cfg.tanh_in.frac
    off_t = cfg.tanh.size // 2
    c_k = 2.0 ** (k - 1) if k else 0.0

    def rnd_index(n: int) -> int:  # rshift_round(n, k) for a Python int
        return (n + (1 << (k - 1))) >> k if k else n

    # tanh index bounds (see float64_exact, 2.): clamp(floor(y), lo, hi) with the offset added.
    t_lo = max(-off_t, rnd_index(amin)) + off_t
    t_hi = min(off_t - 1, rnd_index(amax)) + off_t + 0.5
    # Pre-clamps of the x side (float32_exact, 2.-4.); exact and harmless in float64 too. When
    # the tables do not bound h by cmax (then h is saturated), h_hat is bounded by the act range.
    fb = _float32_bounds(cfg)
    sat_h = fb is None
    hmax = A if sat_h else fb["cmax"]
    mm = H * (1 << (cfg.weight.bits - 1)) * hmax
    mm_ru, mm_c = -(-mm >> s_sig), -(-mm >> wf)
    _, smax, _, _ = _table_extremes(cfg)
    p_max = -(-(smax * A) >> (af + k))
    # Column scales: r, u columns by 2**-s_sig (sigmoid index), c columns by 2**-wf.
    scale_ru, scale_c = 2.0**-s_sig, 2.0**-wf
    k_ru = 0.5 + off_s  # folded rounding constant + table offset, after scaling
    chunk = max(1, min(T, (1 << 22) // max(1, B * 3 * H)))  # bounds the x-side buffer (32 MB)
    # One x-side buffer per dtype, reused by every chunk and layer: a fresh one per chunk costs
    # its page faults again every time (several ms for the benchmark's 16 MB).
    bufs = {}

    k_c = 2.0 ** (wf - 1)  # the c columns' rounding constant, in LSBs of M
    v_seq = x_q.transpose(0, 1)  # (T, B, I) view, timestep-major
    x_max = int(x_q.abs().max()) if x_q.numel() else 0
    fired_x = torch.empty(B, T, L, dtype=torch.int64)
    fired_h = torch.empty(B, T, L, dtype=torch.int64)
    for l, p in enumerate(model.layers):
        I_l = cfg.layer_input_size(l)
        # The x side in bulk: float32 when its partial sums are provably exact (_bulk_dtype).
        b_x = torch.cat([p.b_r, p.b_u, p.b_cx]) << sb  # LSBs of M
        k_x = torch.cat([torch.full((2 * H,), k_ru * 2.0**s_sig), torch.full((H,), k_c)])
        xdt = _bulk_dtype(p.w_x, b_x, k_x, x_max)
        if sd["dtype"] == torch.float64:
            xdt = torch.float64
        v_seq = v_seq.to(xdt).contiguous()
        col_scale = torch.cat([torch.full((2 * H,), scale_ru, **f64),
                               torch.full((H,), scale_c, **f64)])
        wx_t = (p.w_x.to(**f64).T * col_scale).to(xdt).contiguous()  # (I_l, 3H): r | u | cx
        wh_t = (p.w_h.to(**f64).T * col_scale).to(**sd).contiguous()  # (H, 3H): r | u | ch
        bias = ((b_x.to(**f64) + k_x.to(**f64)) * col_scale).to(xdt)
        b_ch = (p.b_ch.to(**f64) * 2.0**sb * scale_c + 0.5).clamp_(amin - mm_c - 1,
                                                                   amax + mm_c + 1)
        x_hat = _encode_sequence(v_seq, cfg.theta_x[l])
        fired_x[:, :, l] = _fired_counts(x_hat, cfg.theta_x[l], I_l)
        h_seq = torch.empty(T, B, H, **sd)
        theta_h = float(cfg.theta_h[l])
        # h_hat used at step t (0 at t = 0; every later step is written by the encoder). With
        # theta 0 it is h itself and the fired counts need no record.
        h_hat_seq = torch.empty(T if theta_h else 0, B, H, **sd)
        if theta_h and T:
            h_hat_seq[0].zero_()
        h = h_hat = torch.zeros(B, H, **sd)
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            n = t1 - t0
            # x side of every timestep of the chunk: [M_r | M_u] scaled, and cx.
            if xdt not in bufs:
                bufs[xdt] = torch.empty(chunk * B, 3 * H, dtype=xdt)
            xs = torch.addmm(bias, x_hat[t0:t1].reshape(n * B, I_l), wx_t,
                             out=bufs[xdt][: n * B]).view(n, B, 3 * H)
            # (clamp(floor(cx)) + 1/2 + c_k) / 2**k + off_t, the constant part of the tanh index,
            # clamped once (an increasing affine map commutes with the clamps).
            cx = xs[..., 2 * H :].floor_()
            cx_term = torch.add(torch.tensor(off_t + (0.5 + c_k) * 2.0**-k, dtype=xdt), cx,
                                alpha=2.0**-k)
            lo_c = max(t_lo - p_max - 1, off_t + (amin + 0.5 + c_k) * 2.0**-k)
            hi_c = min(t_hi + p_max + 1, off_t + (amax + 0.5 + c_k) * 2.0**-k)
            cx_term = cx_term.clamp_(lo_c, hi_c).to(**sd)
            xs[..., : 2 * H].clamp_(-(mm_ru + 1), 2 * off_s + mm_ru + 1)
            xs[..., 2 * H :] = b_ch  # the same buffer now holds the x side of [r | u | ch]
            acc = xs.to(**sd)
            for t in range(t0, t1):
                m = torch.addmm(acc[t - t0], h_hat, wh_t)
                # Table look-ups by int32 index_select: cheaper than int64 and take.
                ru = m[:, : 2 * H].clamp(0, 2 * off_s - 0.5).int().view(-1)
                ru = sig_t.index_select(0, ru).view(B, 2 * H)
                r, u = ru[:, :H], ru[:, H:]
                ch = m[:, 2 * H :].floor_().clamp_(amin, amax)
                y = torch.addcmul(cx_term[t - t0], r, ch, value=2.0**-k)
                c = tanh_t.index_select(0, y.clamp_(t_lo, t_hi).int().view(-1)).view(B, H)
                if lerp:  # c + u (h - c) in one pass; exact, see float32_exact (5.)
                    h = torch.lerp(c, h, u, out=h_seq[t])
                else:
                    h = torch.addcmul(c, u, h - c, out=h_seq[t])
                h.add_(0.5).floor_()
                if sat_h:
                    h.clamp_(amin, amax)
                if t + 1 < T:
                    h_hat = _encode_step(h, h_hat, theta_h, h_hat_seq[t + 1]) if theta_h else h
        fired_h[:, :, l] = _fired_counts(h_hat_seq, cfg.theta_h[l], H) if theta_h else H
        if l == 0:
            n_early = cycles.h0_early_units(cfg)
            h0_early = (_fired_counts(h_hat_seq[..., :n_early], cfg.theta_h[0], n_early)
                        if theta_h else torch.full((B, T), n_early, dtype=torch.int64))
        v_seq = h_seq
        x_max = hmax
    fired_head = torch.zeros(B, T, dtype=torch.int64)
    if cfg.has_head:
        o_hat = _encode_sequence(v_seq, cfg.theta_head)
        fired_head = _fired_counts(o_hat, cfg.theta_head, H)
        b_o = model.head_b << sb
        odt = _bulk_dtype(model.head_w, b_o, torch.full((O,), k_c), hmax)
        if v_seq.dtype == torch.float64:
            odt = torch.float64
        w_o = (model.head_w.to(**f64).T * scale_c).to(odt)
        b_o = (b_o.to(**f64) * scale_c + 0.5).to(odt)
        y = torch.addmm(b_o, o_hat.reshape(T * B, H).to(odt), w_o).floor_().clamp_(amin, amax)
        v_seq = y.view(T, B, O)
    outputs = v_seq.transpose(0, 1).to(torch.int64)
    return outputs, fired_x, fired_h, fired_head, h0_early


def _bulk_dtype(w: torch.Tensor, b: torch.Tensor, const: torch.Tensor, v_max: int):
    """float32 if ``b + const + W v`` (in LSBs of M, ``|v| <= v_max``) is exact in float32.

    Every partial sum of an ``addmm`` of it is bounded, per output, by ``|b| + |const| +
    sum_k |W[:, k]| v_max``, and every term is a multiple of half an LSB (the rounding constants);
    below 2**24 half-LSBs float32 is exact (the argument of :func:`float64_exact`), and scaling a
    column by a power of two changes nothing. A check on the actual weights and inputs, so typical
    networks (small trained weights, normalised inputs) run their bulk matmuls in float32.
    """
    bound = w.abs().sum(1) * v_max + b.abs() + const.abs()
    return torch.float32 if 2 * float(bound.max()) < _EXACT32 else torch.float64


def _encode_step(v: torch.Tensor, v_hat: torch.Tensor, theta: float, out: torch.Tensor):
    """One delta-encoder step on float integers: ``v`` where ``|v - v_hat| >= theta``, else
    ``v_hat``; written into ``out``. ``theta == 0`` returns ``v`` itself (everything fires).

    For integers ``d = v - v_hat`` (exact) and an integer ``theta``, ``hardshrink(d, theta - 1/2)``
    is ``d`` exactly where ``|d| >= theta`` (the element fires: ``v_hat + d = v``, exact) and 0
    elsewhere: three passes instead of a comparison and ``where``, which are several times slower
    on CPU.
    """
    if not theta:
        return v
    d = v - v_hat
    return torch.add(v_hat, torch.nn.functional.hardshrink(d, theta - 0.5), out=out)


def _encode_sequence(v_seq: torch.Tensor, theta: int) -> torch.Tensor:
    """Last-transmitted values after each timestep's encoder, (T, B, N), for a whole sequence."""
    if theta == 0:
        return v_seq  # everything fires: v_hat = v
    T = v_seq.shape[0]
    out = torch.empty_like(v_seq)
    v_hat = torch.zeros_like(v_seq[0]) if T else None
    for t in range(T):
        v_hat = _encode_step(v_seq[t], v_hat, float(theta), out[t])
    return out


def _fired_counts(v_hat: torch.Tensor, theta: int, width: int) -> torch.Tensor:
    """Fired elements per (B, T) from last-transmitted values (T, B, N) used at each timestep."""
    T, B = v_hat.shape[:2]
    if theta == 0:
        return torch.full((B, T), width, dtype=torch.int64)
    counts = torch.empty(T, B, dtype=torch.int32)  # int32 sums are several times faster
    if T:
        counts[0] = (v_hat[0] != 0).sum(-1, dtype=torch.int32)
        counts[1:] = (v_hat[1:] != v_hat[:-1]).sum(-1, dtype=torch.int32)
    return counts.T.to(torch.int64)

# --------------------------------------------------------------------------------------------------
def _parse_thresholds(text: str | None, cfg: DeltaGRUConfig, name: str):
    """Command-line thresholds are in real units (e.g. 0.05), one per layer or one for all."""
    if text is None:
        return None
    try:
        return tuple(threshold_to_lsb(v, cfg.act) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{name} takes finite thresholds >= 0 in real units, one for all layers or one per "
            f"layer separated by commas (e.g. 0.05 or 0.05,0.1); got '{text}'."
        ) from None


def model_from_arguments(args) -> QuantizedModel:
    cfg = DeltaGRUConfig.load(args.config) if args.config else None
    model = load_model(args.model, config=cfg, allow_clipping=args.allow_clipping,
                       trust_pickle=args.trust_pickle)
    return apply_threshold_arguments(model, args)


def apply_threshold_arguments(model: QuantizedModel, args) -> QuantizedModel:
    """``model`` with the thresholds of ``--theta-x/--theta-h/--theta-head`` (real units), if
    given."""
    tx = _parse_thresholds(getattr(args, "theta_x", None), model.config, "--theta-x")
    th = _parse_thresholds(getattr(args, "theta_h", None), model.config, "--theta-h")
    to = _parse_thresholds(getattr(args, "theta_head", None), model.config, "--theta-head")
    if to is not None and len(to) != 1:
        raise ConfigError(f"--theta-head takes one threshold; got {args.theta_head}.")
    if tx or th or to:
        model = model.with_config(model.config.with_thresholds(
            theta_x=tx, theta_h=th, theta_head=to[0] if to else None))
    return model


def load_inputs(path) -> np.ndarray:
    """Float inputs from a ``.npy`` file: (T, I) or (B, T, I), at least one timestep."""
    inp = Path(path)
    if not inp.is_file():
        raise InputError(f"The input file {inp} does not exist.")
    try:
        x = np.load(inp, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{inp} is not a readable .npy file of numbers: {e}.") from None
    if not isinstance(x, np.ndarray):
        x.close()
        raise InputError(f"{inp} is an .npz archive; --input takes one .npy array of shape (T, I) "
                         "or (B, T, I) (save it with numpy.save).")
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(
            f"--input must hold floats (they are quantized on entry); got dtype {x.dtype}."
        )
    if x.ndim in (2, 3) and (x.shape[0] == 0 or (x.ndim == 3 and x.shape[1] == 0)):
        raise InputError(f"{inp} has shape {x.shape}: no timesteps to run; expected (T, I) or "
                         "(B, T, I) with T >= 1 and B >= 1.")
    return x


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m deltahw.golden",
        description="Run the bit-exact delta-GRU golden model on float inputs (.npy).",
    )
    add_model_arguments(ap)
    ap.add_argument("--input", required=True, help="float inputs, shape (T, I) or (B, T, I), .npy")
    ap.add_argument("--output", required=True, help="where to write the outputs (.npy)")
    ap.add_argument("--raw", action="store_true", help="write raw integers instead of floats")
    ap.add_argument("--stats", help="write per-timestep statistics and a summary (JSON)")
    args = ap.parse_args(argv)
    return run_cli(_main, args)


def _main(args) -> int:
    import io

    from .util import atomic_write_bytes, atomic_write_text, check_output_file

    # Every check before the run: inputs, model, output paths.
    x = load_inputs(args.input)
    check_output_file(Path(args.output), "--output file")
    if args.stats:
        check_output_file(Path(args.stats), "--stats file")
    model = model_from_arguments(args)
    x_q, clipped = model.quantize_input(torch.from_numpy(x))
    squeeze = x_q.dim() == 2
    res = run_golden(model, x_q)
    y = res.outputs[0] if squeeze else res.outputs
    out = y.numpy() if args.raw else dequantize(y, model.config.act.frac).numpy()
    summary = res.summary(model.config)
    summary["input_saturated"] = clipped
    stats = None
    if args.stats:
        stats = {
            "config": model.config.to_dict(),
            "summary": summary,
            "per_timestep": {
                "fired_x": res.fired_x.tolist(),
                "fired_h": res.fired_h.tolist(),
                "fired_head": res.fired_head.tolist(),
                "macs": res.macs.tolist(),
                "cycles": res.cycles.tolist(),
            },
        }
        # No operation at all (nothing fired) makes the op reduction infinite: JSON has no
        # Infinity, so it is written as null.
        summary_json = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                        for k, v in summary.items()}
        stats["summary"] = summary_json
        text = json.dumps(stats, indent=1, allow_nan=False)
    buf = io.BytesIO()
    np.save(buf, out)
    atomic_write_bytes(Path(args.output), buf.getvalue())
    if stats is not None:
        atomic_write_text(Path(args.stats), text)
    print(
        f"{summary['timesteps']} timesteps: op reduction {summary['op_reduction']:.2f}x, "
        f"{summary['mean_cycles']:.1f} cycles/timestep (dense {summary['dense_cycles']}), "
        f"{clipped} input values saturated; wrote {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
