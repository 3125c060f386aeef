"""Memory layout of the accelerator: how weights, biases and accumulators are split across MAC
lanes.

This is the only description of the bank layout. The exporter writes ``.mem`` files with it, the
golden model reads exported folders back through it, and the RTL generator sizes and addresses its
memories from it.

Rows. A layer's weight matrix has 3H rows (r, u, c gates). The hardware interleaves them by unit:
physical row ``3*j + gate`` holds gate ``gate`` of hidden unit ``j``. With P lanes a column is swept
in ``C = ceil(3H / P)`` row groups; lane ``p`` in group ``g`` handles physical row ``g*P + p``
(rows past 3H are padding with weight 0). Because P is a multiple of 3A (see the config), lane
``p`` always carries gate ``p % 3``, and the A units activated together sit in 3A neighbouring lanes
of one row group. The head (O outputs) uses rows ``g*P + p`` directly, ``ceil(O/P)`` groups.

Weight banks. Lane ``p``'s weights live in bank ``p // G`` (G = lanes_per_bank), at bit offset
``(p % G) * weight.bits`` of the bank word. Word address for layer ``l``, column ``k``, group ``g``:
``weight_base[l] + k*C + g``, columns ``0..I_l-1`` being the input (x) columns and
``I_l..I_l+H-1`` the recurrent (h) columns; the head follows the last layer.

Accumulators and biases. Each lane has an accumulator memory MX (M_r, M_u or M_cx rows, by the
lane's gate; the head's rows too) and the c-gate lanes a second one, MCH (M_ch rows), so the
activation stage reads M_cx and M_ch in the same cycle. Layer ``l`` owns MX words
``mx_base[l] + g`` and MCH words ``mx_base[l] + g`` (MCH's own address space); the head owns MX
words ``mx_base[L] + g``. The bias memory of a lane holds the reset value of every accumulator
word: MX words at their own address, MCH word ``a`` at ``mx_depth + a``.

Split accumulators. When 3A > P (an activation beat covers ``k = 3A / P`` row groups: the config
allows P a multiple of 3 that divides 3A), each lane's MX and MCH are ``k`` memories
(``acc_split``): word ``a`` lives in memory ``a % k`` at row ``a // k``, so an activation beat
reads its k words, one per memory, at one row in one cycle, while a column's issue reads and
writes one word. Each layer's words start at a multiple of k (``group_stride``: the row groups
rounded up to a multiple of k; the words past ``groups`` are padding, read by the activation for
the units past H, which it masks). With k = 1 nothing changes: one memory, ``group_stride`` =
``groups``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import DeltaGRUConfig, ceil_div

__all__ = ["Layout", "GATE_R", "GATE_U", "GATE_C"]

GATE_R, GATE_U, GATE_C = 0, 1, 2


@dataclass(frozen=True)
class Layout:
    """Bank geometry derived from a config (see the module docstring for the mapping)."""

    config: DeltaGRUConfig

    # --- geometry ---------------------------------------------------------------------------------
    @property
    def lanes(self) -> int:
        return self.config.lanes

    @property
    def groups(self) -> int:
        """Row groups per GRU column, C = ceil(3H / P)."""
        return ceil_div(3 * self.config.hidden_size, self.lanes)

    @property
    def head_groups(self) -> int:
        return ceil_div(self.config.output_size, self.lanes) if self.config.has_head else 0

    @property
    def acc_split(self) -> int:
        """k: accumulator memories per lane (MX, and MCH on the c lanes), the row groups one
        activation beat reads: ``3A / P`` when that is more than 1, else 1."""
        return max(1, 3 * self.config.act_width // self.lanes)

    @property
    def group_stride(self) -> int:
        """Accumulator words per layer: the row groups rounded up to a multiple of
        :attr:`acc_split` (each layer's words start in memory 0)."""
        k = self.acc_split
        return ceil_div(self.groups, k) * k

    @property
    def num_banks(self) -> int:
        return self.lanes // self.config.lanes_per_bank

    def layer_columns(self, layer: int) -> int:
        return self.config.layer_input_size(layer) + self.config.hidden_size

    @property
    def weight_base(self) -> list[int]:
        """Word address of each layer's first column, then of the head (one entry per block)."""
        bases, addr = [], 0
        for l in range(self.config.num_layers):
            bases.append(addr)
            addr += self.layer_columns(l) * self.groups
        bases.append(addr)
        return bases

    @property
    def weight_depth(self) -> int:
        return self.weight_base[-1] + self.config.hidden_size * self.head_groups

    @property
    def mx_base(self) -> list[int]:
        """MX word address of each layer's row groups, then of the head's."""
        return [self.group_stride * l for l in range(self.config.num_layers + 1)]

    @property
    def mx_depth(self) -> int:
        return self.mx_base[-1] + self.head_groups

    @property
    def mch_depth(self) -> int:
        return self.group_stride * self.config.num_layers

    @property
    def acc_depth(self) -> int:
        """Depth of a lane's bias memory: MX words, then MCH words."""
        return self.mx_depth + self.mch_depth

    @property
    def weight_word_bits(self) -> int:
        return self.config.lanes_per_bank * self.config.weight.bits

    @property
    def bias_word_bits(self) -> int:
        return self.config.lanes_per_bank * self.config.bias.bits

    def geometry(self) -> dict:
        """Plain-data summary for manifests and reports."""
        return {
            "lanes": self.lanes,
            "lanes_per_bank": self.config.lanes_per_bank,
            "row_groups": self.groups,
            "head_row_groups": self.head_groups,
            "weight_banks": self.num_banks,
            "weight_depth": self.weight_depth,
            "weight_word_bits": self.weight_word_bits,
            "weight_base": self.weight_base,
            "bias_banks": self.num_banks,
            "acc_depth": self.acc_depth,
            "bias_word_bits": self.bias_word_bits,
            "mx_base": self.mx_base,
            "mx_depth": self.mx_depth,
            "mch_depth": self.mch_depth,
        }

    # --- row mapping ------------------------------------------------------------------------------
    def gru_row_index(self) -> torch.Tensor:
        """(C, P) tensor: logical row (gate*H + unit) of lane p in group g, or -1 (padding)."""
        H = self.config.hidden_size
        phys = torch.arange(self.groups * self.lanes).view(self.groups, self.lanes)
        unit, gate = phys // 3, phys % 3
        logical = gate * H + unit
        return torch.where(phys < 3 * H, logical, torch.full_like(logical, -1))

    def head_row_index(self) -> torch.Tensor:
        O = self.config.output_size
        phys = torch.arange(self.head_groups * self.lanes).view(self.head_groups, self.lanes)
        return torch.where(phys < O, phys, torch.full_like(phys, -1))

    # --- packing ----------------------------------------------------------------------------------
    def lane_weights(self, model) -> torch.Tensor:
        """(weight_depth, P) int64 tensor: the weight every lane reads at every word address."""
        out = torch.zeros(self.weight_depth, self.lanes, dtype=torch.int64)
        rows = self.gru_row_index()
        valid = rows >= 0
        safe = rows.clamp(min=0)
        for l, layer in enumerate(model.layers):
            w = torch.cat([layer.w_x, layer.w_h], dim=1)  # (3H, I_l + H), rows gate-major
            cols = w.shape[1]
            blk = w[safe]  # (C, P, cols)
            blk = torch.where(valid[..., None], blk, torch.zeros_like(blk))
            blk = blk.permute(2, 0, 1).reshape(cols * self.groups, self.lanes)
            base = self.weight_base[l]
            out[base : base + blk.shape[0]] = blk
        if self.config.has_head:
            hrows = self.head_row_index()
            hv = hrows >= 0
            blk = model.head_w[hrows.clamp(min=0)]  # (Ch, P, H)
            blk = torch.where(hv[..., None], blk, torch.zeros_like(blk))
            blk = blk.permute(2, 0, 1).reshape(-1, self.lanes)
            base = self.weight_base[-1]
            out[base : base + blk.shape[0]] = blk
        return out

    def lane_biases(self, model) -> torch.Tensor:
        """(acc_depth, P) int64 tensor in the bias format: each accumulator's reset value."""
        out = torch.zeros(self.acc_depth, self.lanes, dtype=torch.int64)
        rows = self.gru_row_index()
        valid = rows >= 0
        safe = rows.clamp(min=0)
        H = self.config.hidden_size
        C = self.groups
        gate_of_lane = torch.arange(self.lanes) % 3
        for l, layer in enumerate(model.layers):
            # Mx holds r, u and cx sums; Mch holds the c-gate's recurrent sum (c lanes only).
            bx = torch.cat([layer.b_r, layer.b_u, layer.b_cx])
            bh = torch.cat([torch.zeros(2 * H, dtype=torch.int64), layer.b_ch])
            base, chb = self.mx_base[l], self.mx_depth + self.mx_base[l]
            out[base : base + C] = torch.where(valid, bx[safe], 0)
            is_c = (gate_of_lane == 2)[None, :] & valid
            out[chb : chb + C] = torch.where(is_c, bh[safe], 0)
        if self.config.has_head:
            hrows = self.head_row_index()
            base = self.mx_base[-1]
            out[base : base + self.head_groups] = torch.where(
                hrows >= 0, model.head_b[hrows.clamp(min=0)], 0
            )
        return out

    def unpack_weights(self, lane_w: torch.Tensor, model_shell) -> None:
        """Inverse of :meth:`lane_weights`: fill the weight matrices of ``model_shell`` in place."""
        rows = self.gru_row_index()
        valid = rows >= 0
        for l, layer in enumerate(model_shell.layers):
            cols = self.layer_columns(l)
            base = self.weight_base[l]
            blk = lane_w[base : base + cols * self.groups].reshape(cols, self.groups, self.lanes)
            w = torch.zeros(3 * self.config.hidden_size, cols, dtype=torch.int64)
            w[rows[valid]] = blk[:, valid].T
            I = self.config.layer_input_size(l)
            layer.w_x, layer.w_h = w[:, :I].contiguous(), w[:, I:].contiguous()
        if self.config.has_head:
            hrows = self.head_row_index()
            hv = hrows >= 0
            base = self.weight_base[-1]
            H = self.config.hidden_size
            blk = lane_w[base : base + H * self.head_groups].reshape(
                H, self.head_groups, self.lanes
            )
            w = torch.zeros(self.config.output_size, H, dtype=torch.int64)
            w[hrows[hv]] = blk[:, hv].T
            model_shell.head_w = w

    def unpack_biases(self, lane_b: torch.Tensor, model_shell) -> None:
        rows = self.gru_row_index()
        valid = rows >= 0
        H, C = self.config.hidden_size, self.groups
        for l, layer in enumerate(model_shell.layers):
            base, chb = self.mx_base[l], self.mx_depth + self.mx_base[l]
            bx = torch.zeros(3 * H, dtype=torch.int64)
            bx[rows[valid]] = lane_b[base : base + C][valid]
            bh = torch.zeros(3 * H, dtype=torch.int64)
            bh[rows[valid]] = lane_b[chb : chb + C][valid]
            layer.b_r, layer.b_u, layer.b_cx = bx[:H], bx[H : 2 * H], bx[2 * H :]
            layer.b_ch = bh[2 * H :]
        if self.config.has_head:
            hrows = self.head_row_index()
            hv = hrows >= 0
            base = self.mx_base[-1]
            b = torch.zeros(self.config.output_size, dtype=torch.int64)
            b[hrows[hv]] = lane_b[base : base + self.head_groups][hv]
            model_shell.head_b = b

    # --- bank words -------------------------------------------------------------------------------
    def to_bank_words(self, lane_vals: torch.Tensor, bits: int) -> list[list[int]]:
        """Split a (depth, P) lane tensor into per-bank unsigned words (lane 0 in the LSBs)."""
        G = self.config.lanes_per_bank
        mask = (1 << bits) - 1
        vals = (lane_vals & mask).tolist()
        banks = []
        for b in range(self.num_banks):
            words = []
            for row in vals:
                word = 0
                for i in range(G):
                    word |= row[b * G + i] << (i * bits)
                words.append(word)
            banks.append(words)
        return banks

    def from_bank_words(self, banks: list[list[int]], bits: int) -> torch.Tensor:
        G = self.config.lanes_per_bank
        mask, sign = (1 << bits) - 1, 1 << (bits - 1)
        depth = len(banks[0])
        out = torch.zeros(depth, self.lanes, dtype=torch.int64)
        for b, words in enumerate(banks):
            for i in range(G):
                lane = [((w >> (i * bits)) & mask) for w in words]
                t = torch.tensor(lane, dtype=torch.int64)
                out[:, b * G + i] = torch.where(t >= sign, t - (1 << bits), t)
        return out
