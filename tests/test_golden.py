"""The golden model against independent references: a dense fixed-point GRU, a per-column delta-GRU,
the float ``torch.nn.GRU`` (within the bound of docs/numerics.md), and its command line.

The references below are written from the contract in docs/numerics.md and the equations in
``deltahw.golden``'s docstring; they share no arithmetic helper with ``deltahw`` (own rounding by
floor division, own saturation, own tables generated from ``math``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, make_gru, random_inputs

from deltahw import cycles
from deltahw.config import DeltaGRUConfig
from deltahw.golden import (
    float32_exact,
    float64_bound,
    float64_exact,
    gru_activation,
    main,
    run_golden,
)
from deltahw.model import from_modules, quantize_gru


# --------------------------------------------------------------------------------------------------
# Independent fixed-point reference
def ref_round(q: torch.Tensor, shift: int) -> torch.Tensor:
    """Round half up by exact floor division (the contract: add half an LSB, then shift)."""
    if shift == 0:
        return q
    return torch.div(q + 2 ** (shift - 1), 2**shift, rounding_mode="floor")


def ref_sat(q: torch.Tensor, bits: int) -> torch.Tensor:
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return torch.where(q < lo, lo, torch.where(q > hi, hi, q))


class RefNumerics:
    """The GRU cell of the contract, written out step by step."""

    def __init__(self, cfg: DeltaGRUConfig):
        self.cfg = cfg

        def table(fn, fmt):
            half = 2 ** (fmt.bits - 1)
            return torch.tensor([math.floor(fn(i / 2**fmt.frac) * 2**cfg.act.frac + 0.5)
                                 for i in range(-half, half)], dtype=torch.int64)

        self.sig = table(lambda v: 1 / (1 + math.exp(-v)), cfg.sigmoid_in)
        self.tanh = table(math.tanh, cfg.tanh_in)

    def lookup(self, tab, fmt, pre, pre_frac):
        idx = ref_sat(ref_round(pre, pre_frac - fmt.frac), fmt.bits)
        return tab[idx + 2 ** (fmt.bits - 1)]

    def cell(self, m_r, m_u, m_cx, m_ch, h):
        c = self.cfg
        af, wf, ab = c.act.frac, c.weight.frac, c.act.bits
        r = self.lookup(self.sig, c.sigmoid_in, m_r, af + wf)
        u = self.lookup(self.sig, c.sigmoid_in, m_u, af + wf)
        cx = ref_sat(ref_round(m_cx, wf), ab)
        ch = ref_sat(ref_round(m_ch, wf), ab)
        pre = ref_sat(cx + ref_round(r * ch, af), ab)
        cand = self.lookup(self.tanh, c.tanh_in, pre, af)
        return ref_sat(cand + ref_round(u * (h - cand), af), ab)

    def head(self, m):
        return ref_sat(ref_round(m, self.cfg.weight.frac), self.cfg.act.bits)


def dense_reference(model, x_q: torch.Tensor) -> torch.Tensor:
    """Dense fixed-point GRU of one sequence (T, I): M = bias * 2**s + W x + W h at every step."""
    cfg = model.config
    ref = RefNumerics(cfg)
    H, scale = cfg.hidden_size, 2 ** (cfg.acc_frac - cfg.bias.frac)
    hs = [torch.zeros(H, dtype=torch.int64) for _ in model.layers]
    out = []
    for t in range(x_q.shape[0]):
        v = x_q[t]
        for l, p in enumerate(model.layers):
            h = hs[l]
            m_r = p.b_r * scale + p.w_x[:H] @ v + p.w_h[:H] @ h
            m_u = p.b_u * scale + p.w_x[H : 2 * H] @ v + p.w_h[H : 2 * H] @ h
            m_cx = p.b_cx * scale + p.w_x[2 * H :] @ v
            m_ch = p.b_ch * scale + p.w_h[2 * H :] @ h
            hs[l] = ref.cell(m_r, m_u, m_cx, m_ch, h)
            v = hs[l]
        if cfg.has_head:
            v = ref.head(model.head_b * scale + model.head_w @ v)
        out.append(v)
    return torch.stack(out) if out else torch.zeros(0, cfg.output_width, dtype=torch.int64)


def delta_reference(model, x_q: torch.Tensor) -> dict:
    """Delta-GRU of one sequence, one fired column at a time, as the hardware sweeps them."""
    cfg = model.config
    ref = RefNumerics(cfg)
    H, scale = cfg.hidden_size, 2 ** (cfg.acc_frac - cfg.bias.frac)

    def encode(v, vhat, theta):
        fired = []
        for k in range(v.shape[0]):
            d = int(v[k] - vhat[k])
            if abs(d) >= theta:
                fired.append((k, d))
                vhat[k] = v[k]
        return fired

    layers = []
    for l, p in enumerate(model.layers):
        layers.append({
            "xhat": torch.zeros(cfg.layer_input_size(l), dtype=torch.int64),
            "hhat": torch.zeros(H, dtype=torch.int64),
            "h": torch.zeros(H, dtype=torch.int64),
            "m": torch.cat([p.b_r, p.b_u, p.b_cx, p.b_ch]) * scale,  # M_r | M_u | M_cx | M_ch
        })
    if cfg.has_head:
        yhat = torch.zeros(H, dtype=torch.int64)
        m_o = model.head_b * scale
    # Layer 0's h deltas its queue has counted in the window's last cycle: with one layer, those
    # of every activation beat (A units) but the last (whose deltas are a cycle behind); else all.
    L, A = cfg.num_layers, cfg.act_width
    n_early = H if L > 1 else (-(-H // A) - 1) * A
    out, fx, fh, fo, early = [], [], [], [], []
    for t in range(x_q.shape[0]):
        v = x_q[t]
        fx.append([]), fh.append([])
        for l, p in enumerate(model.layers):
            s = layers[l]
            fired_x = encode(v, s["xhat"], cfg.theta_x[l])
            fired_h = encode(s["h"], s["hhat"], cfg.theta_h[l])
            for k, d in fired_x:
                s["m"][: 3 * H] += p.w_x[:, k] * d
            for k, d in fired_h:
                s["m"][: 2 * H] += p.w_h[: 2 * H, k] * d
                s["m"][3 * H :] += p.w_h[2 * H :, k] * d
            m = s["m"]
            s["h"] = ref.cell(m[:H], m[H : 2 * H], m[2 * H : 3 * H], m[3 * H :], s["h"])
            v = s["h"]
            fx[-1].append(len(fired_x)), fh[-1].append(len(fired_h))
            if l == 0:
                early.append(sum(1 for k, _ in fired_h if k < n_early))
        if cfg.has_head:
            fired_o = encode(v, yhat, cfg.theta_head)
            for k, d in fired_o:
                m_o = m_o + model.head_w[:, k] * d
            v = ref.head(m_o)
            fo.append(len(fired_o))
        else:
            fo.append(0)
        out.append(v.clone())
    T = x_q.shape[0]
    return {
        "outputs": torch.stack(out) if out else torch.zeros(0, cfg.output_width, dtype=torch.int64),
        "fired_x": torch.tensor(fx, dtype=torch.int64).view(T, cfg.num_layers),
        "fired_h": torch.tensor(fh, dtype=torch.int64).view(T, cfg.num_layers),
        "fired_head": torch.tensor(fo, dtype=torch.int64),
        "h0_early": torch.tensor(early, dtype=torch.int64),
    }


def quantized_inputs(model, batch, steps, seed, smooth=True, scale=1.0):
    x = random_inputs(batch, steps, model.config.input_size, seed=seed, smooth=smooth, scale=scale)
    x_q, _ = model.quantize_input(x)
    return x_q


# --------------------------------------------------------------------------------------------------
# Theta = 0: bit for bit the dense fixed-point GRU
SIZES = [
    # (I, H, L, O)
    (13, 37, 2, 0),
    (13, 37, 2, 5),
    (1, 1, 1, 0),
    (5, 2, 3, 1),
    (40, 128, 1, 0),
    (16, 32, 1, 4),
]


@pytest.mark.parametrize("I, H, L, O", SIZES)
def test_theta_zero_equals_dense_fixed_point_gru(I, H, L, O):
    gru, head = make_gru(I, H, L, O, seed=I + H + L + O)
    model = from_modules(gru, head)
    assert model.config.theta_x == (0,) * L and model.config.theta_h == (0,) * L
    T = 12 if H > 64 else 25
    x_q = quantized_inputs(model, 3, T, seed=H, smooth=False, scale=2.0)
    res = run_golden(model, x_q)
    for b in range(x_q.shape[0]):
        assert torch.equal(res.outputs[b], dense_reference(model, x_q[b]))
    # Every element fires when theta is 0: the statistics are those of the dense GRU.
    dense_cols = cycles.dense_columns(model.config)
    assert res.fired_x[..., 0].eq(I).all() and res.fired_h.eq(H).all()
    assert torch.equal(res.macs, res.dense_macs)
    slot = H if O else cycles.NO_SLOT
    # Every sequence's first timestep runs its x phase alone and has no head slot in its window;
    # the second has one (the first's head) but its x phase hid in a window without; from the
    # third on, the dense reference.
    early = cycles.h0_early_units(model.config)  # (every h unit fires)
    assert res.h0_early.eq(early).all()
    first = cycles.timestep_cycles(model.config, dense_cols, fired_x0=I, first=True,
                                   h0_early=early)
    second = cycles.timestep_cycles(model.config, dense_cols, fired_x0=I, first=False,
                                    h0_early=early, slot_head=slot)
    assert res.cycles[:, 0].eq(first).all() and res.cycles[:, 1].eq(second).all()
    assert res.cycles[:, 2:].eq(cycles.dense_cycles(model.config)).all()
    assert cycles.dense_cycles(model.config) == cycles.timestep_cycles(
        model.config, dense_cols, fired_x0=I, first=False, h0_early=early, slot_head=slot,
        slot_head_prev=slot)


def test_theta_zero_with_saturating_weights_and_inputs():
    """Large weights and inputs drive every rescale, table index and the state to its limits."""
    gru, head = make_gru(13, 37, 2, 5, seed=11, scale=12.0)  # weights clip to [-1, 127/128]
    model = from_modules(gru, head)
    assert sum(v["clipped"] for v in model.report.values()) > 0
    x_q = quantized_inputs(model, 2, 20, seed=5, smooth=False, scale=200.0)
    assert x_q.min() == model.config.act.min_int and x_q.max() == model.config.act.max_int
    res = run_golden(model, x_q)
    for b in range(2):
        assert torch.equal(res.outputs[b], dense_reference(model, x_q[b]))
    # The head saturates its output, the state never leaves [-1, 1].
    assert res.outputs.abs().max() == 2**15 or res.outputs.abs().max() > 2**8


def test_theta_one_is_dense_too():
    """|delta| >= 1 fires every change, so outputs equal theta 0; only the statistics differ."""
    gru, head = make_gru(13, 37, 2, 5, seed=2)
    dense = from_modules(gru, head)
    one = from_modules(gru, head, theta_x=(1, 1), theta_h=(1, 1), theta_head=1)
    x_q = quantized_inputs(dense, 2, 30, seed=9)
    a, b = run_golden(dense, x_q), run_golden(one, x_q)
    assert torch.equal(a.outputs, b.outputs)
    assert (b.macs <= a.macs).all() and (b.cycles <= a.cycles).all()


# --------------------------------------------------------------------------------------------------
# Theta > 0: bit for bit the column-by-column delta reference, statistics included
@pytest.mark.parametrize(
    "I, H, L, O, theta_x, theta_h, theta_head",
    [
        (13, 37, 2, 5, (6, 3), (4, 5), 2),
        (13, 37, 2, 0, (20, 0), (0, 9), 0),
        (5, 2, 3, 1, (3,), (2,), 7),
        (16, 32, 1, 4, (8,), (8,), 8),
        (4, 6, 1, 2, (65535,), (65535,), 65535),  # nothing ever fires but exact extremes
    ],
)
def test_delta_golden_equals_column_reference(I, H, L, O, theta_x, theta_h, theta_head):
    gru, head = make_gru(I, H, L, O, seed=7 * H + L)
    model = from_modules(gru, head, theta_x=theta_x, theta_h=theta_h, theta_head=theta_head)
    x_q = quantized_inputs(model, 3, 30, seed=L + I)
    res = run_golden(model, x_q)
    cfg = model.config
    for b in range(x_q.shape[0]):
        ref = delta_reference(model, x_q[b])
        assert torch.equal(res.outputs[b], ref["outputs"])
        assert torch.equal(res.fired_x[b], ref["fired_x"])
        assert torch.equal(res.fired_h[b], ref["fired_h"])
        assert torch.equal(res.fired_head[b], ref["fired_head"])
        assert torch.equal(res.h0_early[b], ref["h0_early"])
        n = ref["fired_x"] + ref["fired_h"]
        macs = (n * 3 * H).sum(-1) + ref["fired_head"] * O
        assert torch.equal(res.macs[b], macs)
        T = x_q.shape[1]
        expect = cycles.run_cycles(cfg, [n[:, l] for l in range(L)], ref["fired_head"],
                                   fired_x0=ref["fired_x"][:, 0], first=torch.arange(T) == 0,
                                   h0_early=ref["h0_early"])
        assert torch.equal(res.cycles[b], torch.as_tensor(expect).expand(T))
    if max(theta_x) < 1000:
        assert res.macs.sum() < res.dense_macs.sum()  # smooth inputs: the delta network saves work


def test_cycle_model_composition():
    """The cycle model's phases, written out by hand for one awkward configuration."""
    cfg = DeltaGRUConfig(13, 37, 2, 5, lanes=12, act_width=2)
    assert cycles.ACT_DRAIN == 10 and cycles.MAC_FETCH == 2 and cycles.ACC_WRITE_LATENCY == 3
    assert cycles.FAST_FETCH == 1
    # Layer columns: ceil(3*37/12) = 10 cycles, no drain (10 >= 3); head columns: ceil(5/12) = 1
    # cycle, no drain either (the read-out reads through the MAC array's forwarding, which has an
    # issue's sum the next cycle, as the next column does); activation: ceil(37/2) = 19
    # beats + 10 drain (accumulator read 2: address register and memory, 7 pipeline stages,
    # queue count 2, minus the cycle the counts are read in); read-out 3 beats. Layer 0 (6 x + 4
    # h columns here) runs an x phase and an h phase, each reading one queue, whose first entry
    # is in a register: 1 fetch cycle (layer 1 sweeps its x then h queue: 2). The last layer's
    # drain is the window: the head slot (the previous timestep's head: its fetch, columns and
    # read-out), then the next timestep's x phase, which starts in the slot's last cycle (its
    # fetch beside the last read-out beat); the timestep takes max(10, slot). Layer 0's h phase
    # fetches in the x phase's last cycle when that cycle is the timestep's own (the x phase did
    # not all hide in the window) and the x phase had columns: -1.
    x_phase = 1 + 6 * 10 + 0
    layer0 = (1 + 4 * 10 + 0) + 19 + 10
    layer1 = 2 + 4 * 10 + 0 + 19
    first = x_phase + layer0 - 1 + layer1 + 10
    assert cycles.timestep_cycles(cfg, [10, 4], fired_x0=6, first=True) == first
    # A slot of 3 head columns: 1 + 3 + 3 = 7 cycles, inside the window; the x phase hid behind
    # the 10 - 7 + 1 = 4 cycles such a slot left of the previous window (its last one included).
    assert cycles.head_slot(cfg, 3) == 7 and cycles.head_slot(cfg, cycles.NO_SLOT) == 0
    inside = cycles.timestep_cycles(cfg, [10, 4], fired_x0=6, first=False, slot_head=3,
                                    slot_head_prev=3)
    assert inside == first - 4
    # A slot of 20 columns (24 cycles) outlasts the window, and leaves only its last cycle.
    assert cycles.timestep_cycles(cfg, [10, 4], fired_x0=6, first=False, slot_head=20,
                                  slot_head_prev=20) == first + (24 - 10) - 1
    # A short x phase hides entirely (a MAC phase in which nothing fired is one cycle: the counts
    # are read, nothing fetched), and was over before the window's last cycle (a slot of no
    # columns, 1 + 0 + 3 = 4 cycles, leaves it 10 - 4 + 1 = 7 cycles): layer 0's h phase (empty
    # here) runs its cycle there, hidden too (two layers: layer 0's h queue is complete then).
    assert cycles.timestep_cycles(cfg, [0, 4], fired_x0=0, first=False, slot_head=0,
                                  slot_head_prev=0) == (0 + 19 + 10) + layer1 + 10
    phases = cycles.timestep_phases(cfg, [10, 4], fired_x0=6, first=False, slot_head=3,
                                    slot_head_prev=3)
    assert phases["mac_issue"] == 10 * 10 + 4 * 10 + 3
    assert phases["overlap"] == -4 - 7
    assert phases["mac_fixed"] == 1 + 1 - 1 + 2 + 1  # x, h (merged), layer 1, the slot's
    assert sum(phases.values()) == inside
    assert cycles.ideal_cycles(cfg, [10, 4], 3) < inside
    # Lock-step: every head runs in place (stall), and every x phase but the first alone, the
    # part the window it missed would have hidden stalling: 10 cycles after a first timestep
    # (no slot in its window), 4 after a window with a slot of 3 columns.
    stall = cycles.lockstep_stall(cfg, np.array([6, 6, 6]), np.array([3, 4, 0]),
                                  np.array([True, False, False]))
    assert stall.tolist() == [cycles.head_slot(cfg, 3), 10 + cycles.head_slot(cfg, 4),
                              4 + cycles.head_slot(cfg, 0)]
    # Without a head, the window is the drain.
    nohead = DeltaGRUConfig(13, 37, 2, 0, lanes=12, act_width=2)
    assert cycles.timestep_cycles(nohead, [10, 4], fired_x0=6, first=False) == first - 10
    # One layer: in the window's last cycle its h queue has counted the deltas of units 0..35
    # (the beats before the last, unit 36's), not yet the last beat's. With an x phase over
    # before that cycle (none fired: 1 cycle; the slot of no columns leaves 7), the h phase's
    # fetch runs there if one of those fired (its first entry is stored) or nothing fired at
    # all, not if only unit 36 did. An x phase of one column (1 + 10 cycles) is not over: 7
    # of its cycles hide, the h fetch merges into its last one (h_fetch_merged), whatever fired.
    one = DeltaGRUConfig(13, 37, 1, 5, lanes=12, act_width=2)
    assert cycles.h0_early_units(one) == 36

    def one_layer(x0, h0, early):
        return int(cycles.timestep_cycles(one, [x0 + h0], fired_x0=x0, first=False,
                                          h0_early=early, slot_head=0, slot_head_prev=0))

    late = one_layer(0, 1, 0)  # unit 36 alone: the fetch a cycle after the window
    assert one_layer(0, 2, 1) == late + 10 - 1  # one more column, the fetch in the window
    assert one_layer(0, 0, 0) == late - 10 - 1  # nothing fired: the empty phase in the window
    assert one_layer(1, 1, 0) == one_layer(1, 1, 1) == late + 4 - 1
    with pytest.raises(ValueError, match="h0_early"):
        cycles.timestep_cycles(one, [4], fired_x0=0, first=False)


# --------------------------------------------------------------------------------------------------
# Batches with different lengths
@pytest.mark.parametrize("O, theta", [(0, 0), (5, 0), (5, 4)])
def test_batch_with_different_lengths(O, theta):
    gru, head = make_gru(13, 37, 2, O, seed=13)
    model = from_modules(gru, head, theta_x=(theta,), theta_h=(theta,), theta_head=theta)
    x_q = quantized_inputs(model, 4, 17, seed=1)
    lengths = [17, 1, 0, 9]
    res = run_golden(model, x_q, lengths=lengths)
    assert res.outputs.shape == (4, 17, model.config.output_width)
    for b, n in enumerate(lengths):
        alone = run_golden(model, x_q[b : b + 1, :n])
        assert torch.equal(res.outputs[b, :n], alone.outputs[0])
        assert torch.equal(res.outputs[b, :n], delta_reference(model, x_q[b, :n])["outputs"])
        assert torch.equal(res.cycles[b, :n], alone.cycles[0])
        assert torch.equal(res.fired_x[b, :n], alone.fired_x[0])
        pad = slice(n, None)
        assert res.outputs[b, pad].eq(0).all() and res.cycles[b, pad].eq(0).all()
        assert res.macs[b, pad].eq(0).all() and res.fired_x[b, pad].eq(0).all()
        assert res.fired_h[b, pad].eq(0).all() and res.fired_head[b, pad].eq(0).all()
    assert res.mask.sum() == sum(lengths)
    summary = res.summary(model.config)
    assert summary["timesteps"] == sum(lengths)
    assert summary["dense_macs"] == sum(lengths) * int(res.dense_macs[0, 0])


def test_two_dimensional_input_and_input_checks():
    gru, _ = make_gru(3, 4)
    model = from_modules(gru)
    x_q = torch.randint(-300, 300, (6, 3))
    res = run_golden(model, x_q)
    assert res.outputs.shape == (1, 6, 4)
    assert torch.equal(res.outputs[0], dense_reference(model, x_q))
    with pytest.raises(TypeError, match=r"int64 quantized inputs; got torch\.float32\."):
        run_golden(model, x_q.float())
    with pytest.raises(ValueError, match=r"Inputs have 5 features; the model expects 3\."):
        run_golden(model, torch.zeros(1, 2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"must lie in \[-32768, 32767\]\."):
        run_golden(model, torch.full((1, 2, 3), 40000, dtype=torch.int64))
    empty = run_golden(model, torch.zeros(2, 0, 3, dtype=torch.int64))
    assert empty.outputs.shape == (2, 0, 4)


# --------------------------------------------------------------------------------------------------
# The float64 path (float32 where proven) against the int64 path, bit for bit
FIELDS = ("outputs", "fired_x", "fired_h", "fired_head", "macs", "dense_macs", "cycles", "mask")


def assert_paths_agree(model, x_q, lengths=None):
    a = run_golden(model, x_q, lengths, path="int64")
    b = run_golden(model, x_q, lengths, path="float64")
    for f in FIELDS:
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.equal(run_golden(model, x_q, lengths).outputs, a.outputs)  # "auto"
    return a


def extreme_model(I, H, L, O, cfg_kw, seed):
    """Weights and biases at the ends of their formats (the floats saturate on import)."""
    gen = torch.Generator().manual_seed(seed)

    def ends(*shape):
        return (torch.randint(0, 2, shape, generator=gen) * 2 - 1).double() * 1e6

    sd = {}
    for l in range(L):
        Il = I if l == 0 else H
        sd.update({f"weight_ih_l{l}": ends(3 * H, Il), f"weight_hh_l{l}": ends(3 * H, H),
                   f"bias_ih_l{l}": ends(3 * H), f"bias_hh_l{l}": ends(3 * H)})
    head = {"weight": ends(O, H), "bias": ends(O)} if O else None
    return quantize_gru(sd, head=head, **cfg_kw)


FORMATS = {
    "default": {},
    "narrow": dict(act=(12, 6), weight=(6, 5), bias=(10, 4), sigmoid_in=(8, 4), tanh_in=(9, 6)),
    "wide": dict(act=(20, 10), weight=(12, 11), bias=(20, 12), sigmoid_in=(12, 8),
                 tanh_in=(11, 10)),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("extreme", [False, True])
def test_float_and_int_paths_are_bit_identical(fmt, extreme):
    I, H, L, O = 11, 24, 2, 3
    kw = dict(FORMATS[fmt], theta_x=(1, 40), theta_h=(3, 1), theta_head=7)
    if extreme:
        model = extreme_model(I, H, L, O, kw, seed=5)
    else:
        gru, head = make_gru(I, H, L, O, seed=7, scale=2.0)
        model = from_modules(gru, head, **kw)
    cfg = model.config
    assert float64_exact(cfg)
    gen = torch.Generator().manual_seed(9)
    lo, hi = cfg.act.min_int, cfg.act.max_int
    if extreme:  # inputs jumping between the ends of the range and zero
        x_q = torch.tensor([lo, 0, hi])[torch.randint(0, 3, (5, 17, I), generator=gen)]
    else:
        x_q = (torch.randn(5, 17, I, generator=gen).cumsum(1) * 2 ** (cfg.act.frac - 1)).long()
        x_q = x_q.clamp(lo, hi)
    a = assert_paths_agree(model, x_q, lengths=[17, 3, 0, 16, 1])
    assert_paths_agree(model, x_q)
    for thetas in (dict(theta_x=(0, 0), theta_h=(0, 0), theta_head=0),
                   dict(theta_x=(hi, 2), theta_h=(2, hi), theta_head=hi)):
        assert_paths_agree(model.with_config(cfg.with_thresholds(**thetas)), x_q)
    # The cases reach what they are meant to: head outputs at (or beyond 100 of) the ends of the
    # act range for extreme weights, and not a trivially constant output otherwise.
    if extreme:
        big = min(hi, 100 * 2**cfg.act.frac)
        assert int(a.outputs.max()) >= big and int(a.outputs.min()) <= -big
    assert len(torch.unique(a.outputs)) > 3


def test_float32_proof_and_fallbacks():
    default = DeltaGRUConfig(40, 128, 1, 10)
    assert float32_exact(default) and float64_exact(default)
    assert float32_exact(DeltaGRUConfig(40, 191))
    assert not float32_exact(DeltaGRUConfig(40, 192))  # the sigmoid columns' sums reach 2**24
    # Wide weights: the loop runs in float64, still bit-exact.
    gru, head = make_gru(6, 64, 1, 2, seed=2)
    model = from_modules(gru, head, weight=(14, 13), theta_x=(2,), theta_h=(1,), theta_head=1)
    assert not float32_exact(model.config) and float64_exact(model.config)
    x_q = (random_inputs(3, 20, 6, seed=3, smooth=True) * 256).long()
    assert_paths_agree(model, x_q)
    # 24-bit act with a coarse tanh index: float64 is not provably exact; auto takes int64.
    cfg = DeltaGRUConfig(3, 4, act=(24, 23), tanh_in=(14, 0), bias=(16, 8))
    assert not float64_exact(cfg) and float64_bound(cfg) >= 2**53
    gru, _ = make_gru(3, 4, seed=1)
    model = from_modules(gru, act=(24, 23), tanh_in=(14, 0), bias=(16, 8))
    x_q = torch.randint(-(2**23), 2**23, (2, 5, 3))
    auto = run_golden(model, x_q)
    assert torch.equal(auto.outputs, run_golden(model, x_q, path="int64").outputs)
    with pytest.raises(ValueError, match="float64 path is not exact for this config"):
        run_golden(model, x_q, path="float64")
    with pytest.raises(ValueError, match="path must be one of auto, float64, int64"):
        run_golden(model, x_q, path="fast")


# --------------------------------------------------------------------------------------------------
# Fixed point versus float: the bound of docs/numerics.md
def sigmoid(v):
    return 1 / (1 + torch.exp(-v))


def table_error_constants(cfg: DeltaGRUConfig) -> tuple[float, float, float]:
    """(a, eps_sigma, eps_tanh_index) of docs/numerics.md, from the formats."""
    a = 2.0**-cfg.act.frac
    s_max = (2 ** (cfg.sigmoid_in.bits - 1) - 1) / 2**cfg.sigmoid_in.frac
    t_max = (2 ** (cfg.tanh_in.bits - 1) - 1) / 2**cfg.tanh_in.frac
    tau_s = 1 - 1 / (1 + math.exp(-s_max))
    tau_t = 1 - math.tanh(t_max)
    eps_sig = max(2.0 ** -(cfg.sigmoid_in.frac + 1) / 4, tau_s) + a / 2
    eps_tidx = max(2.0 ** -(cfg.tanh_in.frac + 1), tau_t)
    return a, eps_sig, eps_tidx


def test_error_constants_of_the_default_formats():
    a, eps_sig, eps_tidx = table_error_constants(DeltaGRUConfig(4, 4))
    assert a == eps_sig == eps_tidx == 2.0**-8  # the docs' "one LSB each"


def float_gates(p, x, h):
    """Float GRU step (PyTorch's equations) on float64 parameters; returns gates and new h."""
    H = h.shape[-1]
    gi = x @ p["w_ih"].T + p["b_ih"]
    gh = h @ p["w_hh"].T + p["b_hh"]
    A_r, A_z = gi[..., :H] + gh[..., :H], gi[..., H : 2 * H] + gh[..., H : 2 * H]
    A_cx, A_ch = gi[..., 2 * H :], gh[..., 2 * H :]
    r, z = sigmoid(A_r), sigmoid(A_z)
    n = torch.tanh(A_cx + r * A_ch)
    return {"A_r": A_r, "A_z": A_z, "A_cx": A_cx, "A_ch": A_ch, "r": r, "z": z, "n": n,
            "h": (1 - z) * n + z * h}


def layer_float_params(sd: dict, l: int) -> dict:
    names = [("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
             ("b_hh", "bias_hh")]
    return {k: sd[f"{n}_l{l}"].to(torch.float64) for k, n in names}


@pytest.mark.parametrize("I, H, scale", [(13, 37, 1.0), (40, 128, 1.0), (16, 32, 6.0)])
def test_one_step_error_is_within_the_local_bound(I, H, scale):
    """Same on-grid state and input, same (dequantized) parameters: one step errs by at most
    a * 2.5 + eps_tidx + eps_sigma * (|A_ch| + |h - n|) per unit (docs/numerics.md)."""
    gru, _ = make_gru(I, H, seed=H, scale=scale)
    model = from_modules(gru)
    cfg, p = model.config, model.layers[0]
    gen = torch.Generator().manual_seed(1)
    B = 400
    h_q = torch.randint(-256, 257, (B, H), generator=gen)
    x_q = (torch.randn(B, I, generator=gen) * 512).round().long().clamp(-32768, 32767)
    sb = cfg.acc_frac - cfg.bias.frac
    m_x = (torch.cat([p.b_r, p.b_u, p.b_cx]) << sb) + x_q @ p.w_x.T
    m_x[:, : 2 * H] += h_q @ p.w_h[: 2 * H].T
    m_ch = (p.b_ch << sb) + h_q @ p.w_h[2 * H :].T
    h_new = gru_activation(cfg, m_x[:, :H], m_x[:, H : 2 * H], m_x[:, 2 * H :], m_ch, h_q)
    a, eps_sig, eps_tidx = table_error_constants(cfg)
    x, h = x_q.double() * a, h_q.double() * a
    g = float_gates(layer_float_params(model.float_params(), 0), x, h)
    assert g["A_cx"].abs().max() < 128 and g["A_ch"].abs().max() < 128  # the bound's premise
    bound = 2.5 * a + eps_tidx + eps_sig * (g["A_ch"].abs() + (h - g["n"]).abs())
    err = (h_new.double() * a - g["h"]).abs()
    assert (err <= bound + 1e-12).all(), float((err - bound).max())
    # The bound is tight enough to mean something: the worst case reaches a fair part of it.
    assert (err / bound).max() > 0.4
    if scale > 1:  # large weights: the table indices saturated and the bound still held
        assert g["A_r"].abs().max() > 8 and (g["A_cx"] + g["r"] * g["A_ch"]).abs().max() > 4


def first_order_bound(model, gru, head, x: torch.Tensor) -> torch.Tensor:
    """Bound on |golden - float| per output, per timestep, of docs/numerics.md (first order).

    Along the float trajectory: each layer-step injects a local error eta (datapath bound plus the
    parameter and input quantization errors through the gate sensitivities); errors propagate
    through the float network's Jacobians; |error_T| <= sum_k |R Phi(T, k) K_k| eta_k.
    """
    cfg = model.config
    L, H = cfg.num_layers, cfg.hidden_size
    a, eps_sig, eps_tidx = table_error_constants(cfg)
    sd = {k: v.detach().to(torch.float64) for k, v in gru.state_dict().items()}
    sdq = {k: v.to(torch.float64) for k, v in model.float_params().items()}
    fl = [layer_float_params(sd, l) for l in range(L)]
    qu = [layer_float_params(sdq, l) for l in range(L)]
    x_q, _ = model.quantize_input(x)
    dx = x_q.double() * a - x
    if cfg.has_head:
        w_o, b_o = head.weight.detach().double(), head.bias.detach().double()
        dw_o, db_o = (sdq["head.weight"].double() - w_o).abs(), (sdq["head.bias"] - b_o).abs()
    T = x.shape[0]
    h = [torch.zeros(H, dtype=torch.float64) for _ in range(L)]
    G: list[torch.Tensor] = []  # G[k] = Phi(t, k) K_k, (L*H, L*H)
    etas: list[torch.Tensor] = []
    bounds = []
    for t in range(T):
        v, dv = x[t], dx[t]
        Jstate = torch.zeros(L * H, L * H, dtype=torch.float64)  # d h_t / d h_{t-1} (stacked)
        K = torch.eye(L * H, dtype=torch.float64)  # d h_t / d eta_t (stacked)
        eta = torch.zeros(L * H, dtype=torch.float64)
        for l in range(L):
            p, q = fl[l], qu[l]
            g = float_gates(p, v, h[l])
            r, z, n, A_ch = g["r"], g["z"], g["n"], g["A_ch"]
            dn = (1 - z) * (1 - n**2)
            D_r, D_z, D_cx, D_ch = dn * A_ch * r * (1 - r), (h[l] - n) * z * (1 - z), dn, dn * r
            U, W = p["w_hh"], p["w_ih"]
            U_r, U_z, U_n = U[:H], U[H : 2 * H], U[2 * H :]
            W_r, W_z, W_n = W[:H], W[H : 2 * H], W[2 * H :]
            J_h = (torch.diag(z) + D_z[:, None] * U_z + D_cx[:, None] * (r[:, None] * U_n)
                   + D_r[:, None] * U_r)
            J_x = D_z[:, None] * W_z + D_cx[:, None] * W_n + D_r[:, None] * W_r
            # Parameter and input quantization: pre-activation errors P_g.
            dW, dU = (q["w_ih"] - W).abs(), (q["w_hh"] - U).abs()
            b_sum = p["b_ih"] + torch.cat([p["b_hh"][: 2 * H], torch.zeros(H, dtype=torch.float64)])
            db_x = (q["b_ih"] - b_sum).abs()
            db_ch = (q["b_hh"][2 * H :] - p["b_hh"][2 * H :]).abs()
            Px = dW @ v.abs() + W.abs() @ dv.abs() + db_x
            Ph = dU @ h[l].abs()
            P_r, P_z = Px[:H] + Ph[:H], Px[H : 2 * H] + Ph[H : 2 * H]
            P_cx, P_ch = Px[2 * H :], Ph[2 * H :] + db_ch
            local = 2.5 * a + eps_tidx + eps_sig * (A_ch.abs() + (h[l] - n).abs())
            sl = slice(l * H, (l + 1) * H)
            eta[sl] = (local + D_r.abs() * P_r + D_z.abs() * P_z + D_cx.abs() * P_cx
                       + D_ch.abs() * P_ch)
            Jstate[sl, sl] = J_h
            if l:
                prev = slice((l - 1) * H, l * H)
                Jstate[sl] += J_x @ Jstate[prev]
                K[sl, : l * H] = J_x @ K[prev, : l * H]
            h[l] = g["h"]
            v, dv = h[l], torch.zeros_like(h[l])
        G = [Jstate @ Gk for Gk in G] + [K]
        etas.append(eta)
        R = torch.zeros(H, L * H, dtype=torch.float64)
        R[:, (L - 1) * H :] = torch.eye(H, dtype=torch.float64)
        if cfg.has_head:
            R = w_o @ R
        bound = sum((R @ Gk).abs() @ e for Gk, e in zip(G, etas))
        if cfg.has_head:
            bound = bound + a / 2 + dw_o @ h[-1].abs() + db_o
        bounds.append(bound)
    return torch.stack(bounds)


def torch_reference(gru, head, x: torch.Tensor) -> torch.Tensor:
    """The float model the user trained: torch.nn.GRU (float32) and its Linear head."""
    with torch.no_grad():
        batch_first = gru.batch_first
        y, _ = gru(x.float() if batch_first else x.float().transpose(0, 1))
        y = y if batch_first else y.transpose(0, 1)
        if head is not None:
            y = head(y)
    return y.double()


@pytest.mark.parametrize(
    "I, H, L, O, smooth",
    [(8, 32, 1, 0, False), (13, 37, 2, 5, True), (16, 32, 1, 4, False), (8, 24, 2, 0, False)],
)
def test_fixed_point_tracks_float_gru_within_the_documented_bound(I, H, L, O, smooth):
    gru, head = make_gru(I, H, L, O, seed=100 + H)
    model = from_modules(gru, head)
    x = random_inputs(3, 30, I, seed=H, smooth=smooth)
    y_float = torch_reference(gru, head, x)
    x_q, _ = model.quantize_input(x)
    y_fixed = run_golden(model, x_q).outputs.double() * 2.0**-model.config.act.frac
    worst = 0.0
    for b in range(x.shape[0]):
        bound = first_order_bound(model, gru, head, x[b])
        err = (y_fixed[b] - y_float[b]).abs()
        # 1e-5 covers float32 rounding inside torch.nn.GRU; the rest is the documented bound.
        assert (err <= bound + 1e-5).all(), float((err - bound).max())
        worst = max(worst, float((err / bound).max()))
    assert worst > 0.05  # the bound is not vacuous
    # And the plain statement of docs/numerics.md for networks like these: a few LSBs.
    assert (y_fixed - y_float).abs().max() < 16 * 2.0**-8


# --------------------------------------------------------------------------------------------------
# Command line: python -m deltahw.golden
@pytest.fixture
def cli_files(tmp_path, checkpoint):
    x = random_inputs(3, 8, 13, seed=1, smooth=True).numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x2d.npy", x[0])
    return tmp_path, checkpoint, x


def test_cli_float_and_raw_outputs(cli_files, capsys):
    tmp, ckpt, x = cli_files
    from deltahw.model import load_model

    model = load_model(ckpt)
    x_q, _ = model.quantize_input(torch.from_numpy(x))
    expect = run_golden(model, x_q).outputs
    assert main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "y.npy")]) == 0
    y = np.load(tmp / "y.npy")
    assert y.dtype == np.float64 and y.shape == (3, 8, 5)
    np.testing.assert_array_equal(y, expect.numpy() / 256.0)
    assert "24 timesteps" in capsys.readouterr().out
    assert main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "raw.npy"),
                 "--raw"]) == 0
    raw = np.load(tmp / "raw.npy")
    assert raw.dtype == np.int64 and np.array_equal(raw, expect.numpy())
    # (T, I) input gives (T, O) output.
    assert main([str(ckpt), "--input", str(tmp / "x2d.npy"), "--output", str(tmp / "y2.npy"),
                 "--raw"]) == 0
    assert np.array_equal(np.load(tmp / "y2.npy"), expect[0].numpy())


def test_cli_stats(cli_files):
    tmp, ckpt, _x = cli_files
    assert main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "y.npy"),
                 "--stats", str(tmp / "s.json")]) == 0
    stats = json.loads((tmp / "s.json").read_text())
    assert stats["config"]["theta_x"] == [6, 3] and stats["config"]["lanes"] == 24
    s = stats["summary"]
    assert s["timesteps"] == 24 and s["input_saturated"] == 0
    assert s["macs"] < s["dense_macs"] and s["op_reduction"] == s["dense_macs"] / s["macs"]
    assert len(s["fired_x_fraction"]) == 2 and all(0 <= f <= 1 for f in s["fired_h_fraction"])
    per = stats["per_timestep"]
    assert np.array(per["fired_x"]).shape == (3, 8, 2)
    assert np.array(per["cycles"]).shape == (3, 8) and min(min(c) for c in per["cycles"]) > 0
    assert s["mean_cycles"] == pytest.approx(np.mean(per["cycles"]))


def test_cli_thresholds_override(cli_files):
    tmp, ckpt, _ = cli_files
    main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "a.npy"), "--stats",
          str(tmp / "a.json"), "--theta-x", "0", "--theta-h", "0"])
    main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "b.npy"), "--stats",
          str(tmp / "b.json"), "--theta-x", "0.1,0.05", "--theta-h", "0.009765625"])
    a = json.loads((tmp / "a.json").read_text())
    b = json.loads((tmp / "b.json").read_text())
    assert a["config"]["theta_x"] == [0, 0] and a["config"]["theta_head"] == 2  # kept
    assert a["summary"]["fired_x_fraction"] == a["summary"]["fired_h_fraction"] == [1.0, 1.0]
    # Real units to LSBs, rounded half up: 0.1 -> 25.6 -> 26, 0.05 -> 12.8 -> 13, 2.5/256 -> 3.
    assert b["config"]["theta_x"] == [26, 13] and b["config"]["theta_h"] == [3, 3]
    assert b["summary"]["op_reduction"] > 1.0


def test_cli_errors(cli_files, capsys):
    tmp, ckpt, _ = cli_files
    np.save(tmp / "ints.npy", np.zeros((4, 13), dtype=np.int32))
    np.save(tmp / "bad.npy", np.zeros((4, 7)))
    assert main([str(ckpt), "--input", str(tmp / "ints.npy"), "--output", str(tmp / "y.npy")]) == 2
    assert "error: --input must hold floats" in capsys.readouterr().err
    assert main([str(ckpt), "--input", str(tmp / "none.npy"), "--output", str(tmp / "y.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(ckpt), "--input", str(tmp / "bad.npy"), "--output", str(tmp / "y.npy")]) == 2
    assert "shape (T, 13) or (B, T, 13); got (4, 7)" in capsys.readouterr().err
    assert main([str(tmp / "nope.pt"), "--input", str(tmp / "x.npy"), "--output",
                 str(tmp / "y.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(ckpt), "--input", str(tmp / "x.npy"), "--output", str(tmp / "y.npy"),
                 "--theta-x", "0.1,0.1,0.1"]) == 2
    assert "theta_x needs one threshold per layer (2); got 3" in capsys.readouterr().err
    assert not (tmp / "y.npy").exists()


def test_cli_as_a_subprocess(cli_files):
    tmp, ckpt, _x = cli_files
    out = tmp / "sub.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "deltahw.golden", str(ckpt), "--input", str(tmp / "x.npy"),
         "--output", str(out), "--stats", str(tmp / "sub.json")],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "op reduction" in proc.stdout and out.is_file() and (tmp / "sub.json").is_file()
    proc = subprocess.run(
        [sys.executable, "-m", "deltahw.golden", str(ckpt), "--input", str(tmp / "x.npy")],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and "--output" in proc.stderr
