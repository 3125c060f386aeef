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
from .util import run_cli

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

    def summary(self, config: DeltaGRUConfig) -> dict:
        m = self.mask
        steps = int(m.sum())
        macs, dense = int(self.macs[m].sum()), int(self.dense_macs[m].sum())
        cyc = self.cycles[m]
        cols = cycles.dense_columns(config)
        dense_cyc = cycles.timestep_cycles(
            config, cols, config.hidden_size if config.has_head else 0
        )
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


def run_golden(model: QuantizedModel, x_q: torch.Tensor, lengths=None) -> GoldenResult:
    """Run the integer golden model on quantized inputs ``x_q`` of shape (B, T, I) or (T, I).

    ``lengths`` (B,) marks the real length of each sequence when a batch is padded. Every sequence
    starts from the reset state (zero h, zero last-transmitted values, accumulators = biases).
    """
    cfg = model.config
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

    n_layer = fired_x + fired_h
    macs = (n_layer * 3 * H).sum(-1) + fired_head * cfg.output_size
    dense = sum(3 * H * c for c in cycles.dense_columns(cfg)) + H * cfg.output_size
    dense_macs = torch.where(mask, dense, 0)
    cyc = cycles.timestep_cycles(cfg, [n_layer[..., l] for l in range(L)], fired_head)
    cyc = torch.where(mask, torch.as_tensor(cyc), 0)
    macs = torch.where(mask, macs, 0)
    outputs = torch.where(mask[..., None], outputs, 0)
    return GoldenResult(outputs, fired_x, fired_h, fired_head, macs, dense_macs, cyc, mask)


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


def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "model", help="exported model folder, deltahw checkpoint or GRU state dict (.pt)"
    )
    ap.add_argument("--config", help="JSON config (formats, thresholds, lanes) for a plain GRU")
    ap.add_argument("--theta-x", help="input-delta thresholds in real units, e.g. 0.05 or 0.05,0.1")
    ap.add_argument("--theta-h", help="hidden-delta thresholds in real units")
    add_loading_arguments(ap)


def add_loading_arguments(ap: argparse.ArgumentParser) -> None:
    """``--allow-clipping`` and ``--trust-pickle``, for every command that imports a model."""
    ap.add_argument("--allow-clipping", action="store_true",
                    help="accept a model that quantization clips heavily (more than 1 %% of its "
                         "parameters or 10 %% of one tensor) or rounds to all-zero weights")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle arbitrary Python objects (e.g. a whole saved nn.Module) from "
                         "the model file; only for files you trust, as unpickling can run code")


def model_from_arguments(args) -> QuantizedModel:
    cfg = DeltaGRUConfig.load(args.config) if args.config else None
    model = load_model(args.model, config=cfg, allow_clipping=args.allow_clipping,
                       trust_pickle=args.trust_pickle)
    tx = _parse_thresholds(args.theta_x, model.config, "--theta-x")
    th = _parse_thresholds(args.theta_h, model.config, "--theta-h")
    if tx or th:
        model = model.with_config(model.config.with_thresholds(theta_x=tx, theta_h=th))
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
