"""A float, trainable delta-GRU that computes what the integer golden model computes.

:class:`DeltaGRU` has the parameters of a ``torch.nn.GRU`` (same names, shapes and gate order r, z,
n; the golden model calls z "u" and n "c") plus an optional ``torch.nn.Linear`` head, so a dense
pretrained GRU loads into it and its state dict loads into ``torch.nn.GRU`` and into
:func:`deltahw.model.quantize_gru`. Its forward pass is the delta network of ``deltahw.golden``:

* **thresholds in the forward pass**: per layer, the matrix products see the last *transmitted*
  input and hidden vectors (``xhat``, ``hhat``), which change only where ``|v - vhat| >= theta``.
  Because the accumulators telescope (``M = b + W xhat``, see ``numerics.accumulator_bits_needed``),
  the module computes ``W xhat`` directly instead of summing deltas; the result is the same number.
  The fire mask has no gradient; the gradient flows "straight through" the encoder into the value
  that was selected (the current ``v`` where it fired, the held ``vhat`` elsewhere).
* **quantization-aware** (``quantize=True``, the default): weights are rounded to the config's
  weight format and clamped to its range, biases to the bias format (``b_r = b_ir + b_hr`` and
  ``b_u = b_iz + b_hz`` rounded as sums, as the importer does), inputs and every intermediate value
  of ``deltahw.golden.gru_activation`` are rounded half up and saturated exactly where the golden
  model rounds, and sigmoid/tanh are the config's lookup tables. Every rounding and table has the
  value of the integer datapath and the gradient of the smooth function (straight-through
  estimator), written as ``exact + (smooth - smooth.detach())`` so the forward value is the exact
  one bit for bit.
* **noise tied to the threshold** (``noise`` > 0, training only): Gaussian noise of standard
  deviation ``noise * theta`` (rounded to the act grid when quantizing) is added to ``xhat`` and
  ``hhat`` before the products: the error model of a delta network (Neil et al., 2017).
* **L1 cost on the deltas**: :attr:`DeltaGRUOutput.l1` is the mean ``|h_t - h_{t-1}|`` over real
  timesteps, units and layers; the training loop adds ``beta * l1`` to the loss.

Agreement with the golden model (tested in ``tests/test_train.py``): with ``quantize=True`` the
module's outputs equal the golden model's bit for bit (0 LSB) as long as every partial sum of a
pre-activation product, in real units, stays below ``2**(m - acc_frac)`` in magnitude, where m is
the float mantissa width (24 for float32, 53 for float64) and acc_frac = act.frac + weight.frac (15
by default: 512 for float32). Below that bound every product and partial sum is an exactly
representable multiple of ``2**-acc_frac``, so no float rounding happens anywhere;
:meth:`DeltaGRU.exact_bound` returns it and :attr:`DeltaGRUOutput.max_partial` how close a run came.
Noise breaks the equality (it is a training device only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import DeltaGRUConfig
from ..numerics import ActivationTable, FixedFormat

__all__ = ["DeltaGRU", "DeltaGRUOutput", "round_ste", "saturate_ste", "table_ste"]


def _round_half_up(v: torch.Tensor) -> torch.Tensor:
    """``floor(v + 1/2)`` without the float rounding of the sum (as ``numerics.quantize_float``)."""
    q = torch.floor(v)
    return torch.where(v >= q + 0.5, q + 1, q)


def round_ste(v: torch.Tensor, frac: int) -> torch.Tensor:
    """Round half up to ``frac`` fraction bits in the forward pass; identity gradient."""
    scale = 2.0**frac
    exact = _round_half_up(v.detach() * scale) / scale
    return exact + (v - v.detach())


def saturate_ste(v: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    """Clamp to the range of ``fmt`` (zero gradient outside, as ``torch.clamp``)."""
    return v.clamp(fmt.min_value, fmt.max_value)


def table_ste(table: ActivationTable, pre: torch.Tensor, smooth) -> torch.Tensor:
    """Look ``pre`` (real units) up in ``table`` as the hardware does; gradient of ``smooth``.

    The golden model indexes with ``rshift_round(pre_int, pre_frac - in_frac)``, i.e.
    ``floor(pre * 2**in_frac + 0.5)`` clamped to the table's signed index range.
    """
    half = 1 << (table.in_bits - 1)
    idx = _round_half_up(pre.detach() * 2.0**table.in_frac).clamp(-half, half - 1)
    idx = idx.to(torch.int64) & (table.size - 1)
    exact = table.as_tensor().to(pre.dtype)[idx] / 2.0**table.out_frac
    s = smooth(pre)
    return exact + (s - s.detach())


@dataclass
class DeltaGRUOutput:
    """Result of a :class:`DeltaGRU` forward pass. Counts are float tensors without gradient."""

    outputs: torch.Tensor  # (B, T, O or H): head outputs, or last layer's h without a head
    last: torch.Tensor  # (B, O or H): outputs at the last real timestep of each sequence
    l1: torch.Tensor  # scalar: mean |h_t - h_{t-1}| over real timesteps, units and layers
    fired_x: torch.Tensor  # (B, T, L) fired input deltas per layer (0 on padding)
    fired_h: torch.Tensor  # (B, T, L)
    fired_head: torch.Tensor  # (B, T)
    macs: torch.Tensor  # (B, T) multiply-accumulates done (as the golden model counts them)
    dense_macs: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) bool, real timesteps
    max_partial: float  # largest |partial sum| of a pre-activation product seen (real units)

    @property
    def op_reduction(self) -> float:
        macs = float(self.macs.sum())
        return float(self.dense_macs.sum()) / macs if macs else float("inf")


class DeltaGRU(nn.Module):
    """Float delta-GRU with the golden model's equations; see the module docstring.

    Args:
        config: network shape, formats and thresholds (``theta_x``, ``theta_h``, ``theta_head`` in
            LSBs of ``config.act``). Thresholds can be changed later with :meth:`set_thresholds`.
        quantize: round to the fixed-point grid (quantization-aware training); ``False``
            computes the plain float delta GRU (thresholds still apply, converted to real units).
        noise: standard deviation of the threshold-tied noise, in units of the threshold.
    """

    def __init__(self, config: DeltaGRUConfig, quantize: bool = True, noise: float = 0.0):
        super().__init__()
        if not isinstance(config, DeltaGRUConfig):
            raise TypeError(f"config must be a DeltaGRUConfig; got {type(config).__name__}.")
        if not (isinstance(noise, (int, float)) and noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"noise must be a finite number >= 0; got {noise!r}.")
        self.config = config
        self.quantize = bool(quantize)
        self.noise = float(noise)
        H = config.hidden_size
        k = 1.0 / math.sqrt(H)
        for l in range(config.num_layers):
            I = config.layer_input_size(l)
            for name, shape in ((f"weight_ih_l{l}", (3 * H, I)), (f"weight_hh_l{l}", (3 * H, H)),
                                (f"bias_ih_l{l}", (3 * H,)), (f"bias_hh_l{l}", (3 * H,))):
                self.register_parameter(name, nn.Parameter(torch.empty(shape).uniform_(-k, k)))
        self.head = nn.Linear(H, config.output_size) if config.has_head else None

    # ----------------------------------------------------------------------------------------------
    def set_thresholds(self, theta_x=None, theta_h=None, theta_head=None) -> None:
        """Change the thresholds (LSBs of the act format; validated by the config)."""
        self.config = self.config.with_thresholds(theta_x, theta_h, theta_head)

    def exact_bound(self) -> float:
        """Largest partial-sum magnitude (real units) below which the forward pass is bit-exact."""
        mant = 1 - round(math.log2(torch.finfo(self.weight_ih_l0.dtype).eps))
        return 2.0 ** (mant - self.config.acc_frac)

    def gru_state_dict(self) -> dict:
        """The recurrent parameters under ``torch.nn.GRU`` names (detached copies)."""
        return {n: p.detach().clone() for n, p in self.named_parameters()
                if not n.startswith("head")}

    def head_state_dict(self) -> dict | None:
        if self.head is None:
            return None
        return {"weight": self.head.weight.detach().clone(),
                "bias": self.head.bias.detach().clone()}

    def load_gru(self, gru_state: dict, head_state: dict | None = None) -> None:
        """Start from a (dense, pretrained) ``torch.nn.GRU`` state dict and optional head."""
        own = dict(self.named_parameters())
        for n, p in own.items():
            if n.startswith("head"):
                continue
            if n not in gru_state:
                raise ValueError(f"The GRU state dict has no '{n}'; cannot initialise from it.")
            if tuple(gru_state[n].shape) != tuple(p.shape):
                raise ValueError(f"'{n}' has shape {tuple(gru_state[n].shape)} in the state dict; "
                                 f"this network needs {tuple(p.shape)}.")
            with torch.no_grad():
                p.copy_(gru_state[n])
        if self.head is not None and head_state is not None:
            with torch.no_grad():
                self.head.weight.copy_(head_state["weight"])
                self.head.bias.copy_(head_state["bias"])

    @torch.no_grad()
    def clamp_to_formats(self) -> None:
        """Project weights into the weight format's range (call after each optimizer step)."""
        w = self.config.weight
        for n, p in self.named_parameters():
            if n.endswith("weight") or n.startswith("weight"):
                p.clamp_(w.min_value, w.max_value)

    # ----------------------------------------------------------------------------------------------
    def _qw(self, w):
        if not self.quantize:
            return w
        return saturate_ste(round_ste(w, self.config.weight.frac), self.config.weight)

    def _qb(self, b):
        """Round a bias to the bias format; ``b`` may be float64 (a folded sum, see forward)."""
        if not self.quantize:
            return b
        dtype = self.weight_ih_l0.dtype
        return saturate_ste(round_ste(b, self.config.bias.frac), self.config.bias).to(dtype)

    def _qa(self, v):
        """Round and saturate to the act format (identity when not quantizing)."""
        if not self.quantize:
            return v
        return saturate_ste(round_ste(v, self.config.act.frac), self.config.act)

    def _theta(self, lsbs: int) -> float:
        return lsbs * self.config.act.lsb

    def _noisy(self, v, theta):
        if not (self.training and self.noise > 0 and theta > 0):
            return v
        n = torch.randn_like(v) * (self.noise * theta)
        if self.quantize:
            n = _round_half_up(n * 2.0**self.config.act.frac) / 2.0**self.config.act.frac
        return v + n

    @staticmethod
    def _encode_seq(v, theta):
        """Delta-encode a (B, T, n) sequence: returns the transmitted (B, T, n) values and fires."""
        B, T, n = v.shape
        if theta <= 0:  # |d| >= 0 always holds: every element fires, vhat = v
            return v, torch.ones(v.shape, dtype=torch.bool)
        vhat = v.new_zeros(B, n)
        outs, fires = [], []
        for t in range(T):
            vt = v[:, t]
            fired = (vt - vhat).detach().abs() >= theta
            vhat = torch.where(fired, vt, vhat)
            outs.append(vhat)
            fires.append(fired)
        return torch.stack(outs, 1), torch.stack(fires, 1)

    def _activation(self, m_r, m_u, m_cx, m_ch, h_prev):
        """``deltahw.golden.gru_activation`` on real-valued accumulators."""
        cfg = self.config
        if not self.quantize:
            r, u = torch.sigmoid(m_r), torch.sigmoid(m_u)
            c = torch.tanh(m_cx + r * m_ch)
            return c + u * (h_prev - c)
        af = cfg.act.frac
        r = table_ste(cfg.sigmoid, m_r, torch.sigmoid)
        u = table_ste(cfg.sigmoid, m_u, torch.sigmoid)
        cx = self._qa(m_cx)
        ch = self._qa(m_ch)
        pre_c = saturate_ste(cx + round_ste(r * ch, af), cfg.act)
        c = table_ste(cfg.tanh, pre_c, torch.tanh)
        return saturate_ste(c + round_ste(u * (h_prev - c), af), cfg.act)

    def forward(self, x: torch.Tensor, lengths=None, check_exact: bool = False) -> DeltaGRUOutput:
        """Run on normalised float inputs ``x`` (B, T, I); ``lengths`` (B,) for padded batches.

        With ``quantize=True`` the inputs are rounded to the act grid first (pass
        ``x_q / 2**act.frac`` to feed the golden model's integer inputs exactly). ``check_exact``
        records in ``max_partial`` an upper bound of every partial sum (costs one more product per
        timestep), to compare with :meth:`exact_bound`.
        """
        cfg = self.config
        if x.dim() != 3 or x.shape[-1] != cfg.input_size:
            raise ValueError(f"Inputs must have shape (B, T, {cfg.input_size}); got "
                             f"{tuple(x.shape)}.")
        B, T, _ = x.shape
        dtype = self.weight_ih_l0.dtype
        x = x.to(dtype)
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
            raise ValueError(f"Every length must be from 1 to T={T}; got {lengths.tolist()}.")
        mask = torch.arange(T)[None, :] < lengths[:, None]
        H, L = cfg.hidden_size, cfg.num_layers
        v = self._qa(x)
        fired_x, fired_h, l1_terms = [], [], []
        max_partial = 0.0
        for l in range(L):
            wx = self._qw(getattr(self, f"weight_ih_l{l}"))
            wh = self._qw(getattr(self, f"weight_hh_l{l}"))
            b_ih, b_hh = getattr(self, f"bias_ih_l{l}"), getattr(self, f"bias_hh_l{l}")
            # b_r = b_ir + b_hr and b_u = b_iz + b_hz are summed in float64 and rounded once, as
            # the importer does (a float32 sum could land on the other side of a rounding tie).
            b_ru = b_ih[: 2 * H].double() + b_hh[: 2 * H].double()
            b_x = torch.cat([self._qb(b_ru if self.quantize else b_ru.to(dtype)),
                             self._qb(b_ih[2 * H :])])
            b_ch = self._qb(b_hh[2 * H :])
            tx, th = self._theta(cfg.theta_x[l]), self._theta(cfg.theta_h[l])
            xhat, fx = self._encode_seq(v, tx)
            xhat = self._noisy(xhat, tx)
            gx = xhat @ wx.T + b_x  # (B, T, 3H): M_r | M_u | M_cx without the h part
            if check_exact:
                max_partial = max(max_partial, _abs_dot(xhat, wx, b_x))
            h = x.new_zeros(B, H)
            hhat = x.new_zeros(B, H)
            hs, fhs = [], []
            for t in range(T):
                fired = (h - hhat).detach().abs() >= th
                hhat = torch.where(fired, h, hhat)
                gh = self._noisy(hhat, th) @ wh.T
                m = gx[:, t, : 2 * H] + gh[:, : 2 * H]
                m_ch = b_ch + gh[:, 2 * H :]
                h = self._activation(m[:, :H], m[:, H:], gx[:, t, 2 * H :], m_ch, h)
                hs.append(h)
                fhs.append(fired)
            hseq = torch.stack(hs, 1)
            fired_x.append(fx.sum(-1))
            fired_h.append(torch.stack(fhs, 1).sum(-1))
            prev = torch.cat([hseq.new_zeros(B, 1, H), hseq[:, :-1]], 1)
            l1_terms.append(((hseq - prev).abs().mean(-1) * mask).sum() / mask.sum())
            v = hseq
            if check_exact:
                gmax = float(gx.detach().abs().max()) + float(b_ch.detach().abs().max())
                max_partial = max(max_partial, gmax + _abs_dot(hseq.abs().amax((0, 1))[None], wh,
                                                               None))
        fired_head = torch.zeros(B, T)
        if self.head is not None:
            to = self._theta(cfg.theta_head)
            ohat, fo = self._encode_seq(v, to)
            fired_head = fo.sum(-1).float()
            wo, bo = self._qw(self.head.weight), self._qb(self.head.bias)
            out = self._qa(ohat @ wo.T + bo)
            if check_exact:
                max_partial = max(max_partial, _abs_dot(ohat, wo, bo))
        else:
            out = v
        fx = torch.stack(fired_x, -1).float() * mask[..., None]
        fh = torch.stack(fired_h, -1).float() * mask[..., None]
        fired_head = fired_head * mask
        macs = (fx + fh).sum(-1) * 3 * H + fired_head * cfg.output_size
        dense = sum(3 * H * (cfg.layer_input_size(l) + H) for l in range(L)) + H * cfg.output_size
        last = out[torch.arange(B), lengths - 1]
        return DeltaGRUOutput(out, last, torch.stack(l1_terms).mean(), fx, fh, fired_head, macs,
                              mask.float() * dense, mask, max_partial)


def _abs_dot(v, w, b) -> float:
    """Upper bound on any partial sum of ``v @ w.T + b`` (real units), in any summation order."""
    with torch.no_grad():
        s = v.detach().abs() @ w.detach().abs().T
        if b is not None:
            s = s + b.detach().abs()
        return float(s.max()) if s.numel() else 0.0
