"""Test vectors for the RTL regression: models, stimuli and golden expectations.

Everything the cocotb testbench checks is computed here, in the pytest process, from the bit-exact
golden model (:func:`deltahw.golden.run_golden`), and written to one JSON file per scenario that the
testbench (``cocotb_core.py``) reads. The testbench itself never imports torch or the golden model.

A scenario is a list of operations run in order by the testbench:

* ``sequence``: one input sequence (the first beat carries ``first`` = 1), with the expected
  output beats, the expected ``CYCLES_LAST`` and ``FIRED_LAST`` values of every timestep (checked
  after each timestep in lock-step mode) or, in streaming mode, no per-timestep register reads;
  consecutive streaming sequences are sent back to back (a sequence reset in the middle of a run).
* ``write`` / ``expect``: register writes (with optional read-back) and reads with an expected
  value.
* ``param_write``: a run of ``PARAM_DATA`` writes into one lane's weight or bias memory.
* ``wait_idle``, ``clear_counters``, ``totals`` (counter checks over the streamed sequences).

Expected output beats are whole payload integers (data and ``last`` bit, zero padding included), so
the comparison is bit for bit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deltahw import cycles as cycle_model
from deltahw import regmap
from deltahw.config import DeltaGRUConfig, ceil_div
from deltahw.golden import run_golden
from deltahw.layout import Layout
from deltahw.model import QuantizedModel, from_modules, load_model
from deltahw.numerics import FixedFormat

__all__ = [
    "CoreCase",
    "CASES",
    "SCENARIOS",
    "USER_SCENARIOS",
    "scenarios_for",
    "gate_saturation",
    "case_from_path",
    "make_model",
    "build_scenario",
    "write_vectors",
    "pack_input_beats",
    "pack_output_beats",
    "unpack_beat",
]

VECTORS_FORMAT = 1


# ------------------------------------------------------------------------------------------------
# Configurations under test
@dataclass(frozen=True)
class CoreCase:
    """One hardware configuration of the regression, with the seed of its random model.

    ``config`` holds the network shape, formats and hardware parameters (thresholds are set per
    scenario). ``model_path`` is set for a user's own exported model folder (``CONFIG=folder``):
    its weights are used instead of a random GRU. ``timesteps`` is the sequence length of the
    scenarios (chosen so the whole regression stays within its time budget).
    """

    name: str
    config: DeltaGRUConfig
    seed: int = 1
    timesteps: int = 12
    model_path: str | None = None
    #: Multiplier of PyTorch's default GRU init range (1/sqrt(H)); see :func:`make_model`.
    weight_gain: float = 2.0
    #: Extra multiplier of the head's parameters (large values make the head outputs saturate).
    head_gain: float = 1.0
    #: A user's configuration (``CONFIG=``): also run it under its own thresholds.
    user: bool = False

    @property
    def key(self) -> str:
        return self.name


def _cfg(**kw) -> DeltaGRUConfig:
    return DeltaGRUConfig(**kw)


#: The built-in matrix: awkward sizes where lanes do not divide 3H, act/enc widths do not divide
#: H/I/O, two layers with and without a head, a tiny one-lane-per-element design, a wide one,
#: unusual formats where the head output saturates and a column is shorter than the MAC's
#: read-modify-write distance, and a three-layer one whose input and output each fit in one beat.
CASES: tuple[CoreCase, ...] = (
    CoreCase("tiny", _cfg(input_size=4, hidden_size=6, lanes=6, lanes_per_bank=3,
                          act_width=1, enc_width=1), seed=11, timesteps=20),
    CoreCase("awkward", _cfg(input_size=13, hidden_size=37, num_layers=2, lanes=12,
                             lanes_per_bank=4, act_width=2, enc_width=4), seed=12, timesteps=8),
    CoreCase("awkward_head", _cfg(input_size=13, hidden_size=37, num_layers=2, output_size=5,
                                  lanes=12, lanes_per_bank=4, act_width=2, enc_width=4),
             seed=13, timesteps=6),
    CoreCase("wide", _cfg(input_size=40, hidden_size=64, lanes=48, lanes_per_bank=4,
                          act_width=4, enc_width=8), seed=14, timesteps=3),
    CoreCase("odd_formats", _cfg(input_size=5, hidden_size=9, output_size=7, lanes=18,
                                 lanes_per_bank=3, act_width=1, enc_width=2,
                                 act=FixedFormat(10, 6), weight=FixedFormat(6, 5),
                                 bias=FixedFormat(10, 6), sigmoid_in=FixedFormat(8, 5),
                                 tanh_in=FixedFormat(9, 6)),
             seed=15, timesteps=16, weight_gain=3.0, head_gain=6.0),
    CoreCase("one_beat", _cfg(input_size=3, hidden_size=4, num_layers=3, output_size=2, lanes=6,
                              lanes_per_bank=2, act_width=2, enc_width=4),
             seed=16, timesteps=12),
    # 3H = P: every column is one cycle, so each lane updates the same accumulator word on
    # consecutive cycles (the MAC array's forwarding path, in the layers and in the head).
    CoreCase("one_cycle", _cfg(input_size=3, hidden_size=4, num_layers=2, output_size=3,
                               lanes=12, lanes_per_bank=4, act_width=2, enc_width=2),
             seed=17, timesteps=12),
    # 3A = 2P: split accumulators (Layout.acc_split = 2), an activation beat reads two row
    # groups; C = 3 is odd, so each layer's words start past a padding word, and the layers'
    # MAC phases drain a cycle for the second beat's read (cycles.act_read_lag).
    CoreCase("split", _cfg(input_size=7, hidden_size=19, num_layers=2, output_size=4, lanes=24,
                           lanes_per_bank=4, act_width=16, enc_width=4),
             seed=18, timesteps=10),
)

#: Scenario names, in the order the regression runs them for each case.
SCENARIOS: tuple[str, ...] = (
    "registers",
    "dense",
    "typical",
    "silent",
    "saturation",
    "threshold_edge",
    "stream",
    "reset_midrun",
    "theta_change",
    "param_write",
    "swap_weights",
)
#: Extra scenario of a user's configuration: its own thresholds, as the core comes out of reset.
USER_SCENARIOS: tuple[str, ...] = ("own_thresholds",)


def scenarios_for(case: CoreCase) -> tuple[str, ...]:
    return SCENARIOS + (USER_SCENARIOS if case.user else ())


def _timesteps_for(cfg: DeltaGRUConfig, budget_cycles: int = 12_000) -> int:
    """Sequence length whose dense run costs about ``budget_cycles`` compute cycles (4 to 16)."""
    dense = cycle_model.dense_cycles(cfg)
    return max(4, min(16, budget_cycles // max(1, dense)))


def case_from_path(path) -> CoreCase:
    """A case for a user's configuration: a config JSON (random weights) or an exported folder."""
    path = Path(path)
    if path.is_dir():
        model = load_model(path)
        cfg = model.config
        return CoreCase(f"user_{_slug(path.name)}", cfg, seed=21, timesteps=_timesteps_for(cfg),
                        model_path=str(path.resolve()), user=True)
    cfg = DeltaGRUConfig.load(path)
    return CoreCase(f"user_{_slug(path.stem)}", cfg, seed=21, timesteps=_timesteps_for(cfg),
                    user=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "config"


# ------------------------------------------------------------------------------------------------
# Models
def make_model(case: CoreCase, seed_offset: int = 0) -> QuantizedModel:
    """The case's model: the user's exported folder, or a seeded random ``torch.nn.GRU`` (+ head).

    PyTorch's default init (uniform in +-1/sqrt(H)) gives pre-activations far smaller than the
    sigmoid/tanh tables' range; ``weight_gain`` widens it so the gates span their whole range
    without all saturating (the regression reports the saturated fraction).
    """
    if case.model_path is not None and seed_offset == 0:
        return load_model(case.model_path)
    cfg = case.config
    gen = torch.Generator().manual_seed(1000 * case.seed + seed_offset)
    gru = torch.nn.GRU(cfg.input_size, cfg.hidden_size, num_layers=cfg.num_layers,
                       batch_first=True)
    head = torch.nn.Linear(cfg.hidden_size, cfg.output_size) if cfg.has_head else None
    bound = case.weight_gain / math.sqrt(cfg.hidden_size)
    with torch.no_grad():
        for p in gru.parameters():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        for p in head.parameters() if head is not None else ():
            p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
                    * case.head_gain)
    d = cfg.to_dict()
    d.pop("format_version")
    for k in ("input_size", "hidden_size", "num_layers", "output_size", "acc_bits"):
        d.pop(k)
    return from_modules(gru, head, **d)


# ------------------------------------------------------------------------------------------------
# Beat packing (the port contract of docs/architecture.md)
def _field_mask(bits: int) -> int:
    return (1 << bits) - 1


def pack_input_beats(cfg: DeltaGRUConfig, x_q: torch.Tensor, rng: np.random.Generator,
                     first: bool) -> list[list[int]]:
    """Input beats of a sequence (T, I): per timestep ceil(I/E) payloads, ``first`` on beat 0.

    Elements past I in a timestep's last beat are filled with random bits: the core must ignore
    them.
    """
    E, ab, I = cfg.enc_width, cfg.act.bits, cfg.input_size
    out = []
    for t in range(x_q.shape[0]):
        row = [int(v) for v in x_q[t]]
        row += [int(rng.integers(0, 1 << ab)) for _ in range(ceil_div(I, E) * E - I)]
        out.append([_pack_beat(row[b * E:(b + 1) * E], ab, first and t == 0 and b == 0)
                    for b in range(ceil_div(I, E))])
    return out


def pack_output_beats(cfg: DeltaGRUConfig, y: torch.Tensor) -> list[list[int]]:
    """Expected output beats (T, W): ceil(W/A) payloads per timestep, ``last`` on the final one."""
    A, ab, W = cfg.act_width, cfg.act.bits, cfg.output_width
    n = ceil_div(W, A)
    out = []
    for t in range(y.shape[0]):
        row = [int(v) for v in y[t]] + [0] * (n * A - W)
        out.append([_pack_beat(row[b * A:(b + 1) * A], ab, b == n - 1) for b in range(n)])
    return out


def _pack_beat(values: list[int], bits: int, flag: bool) -> int:
    """One payload: ``values`` as ``bits``-wide fields from bit 0 up, then the flag bit above."""
    m = _field_mask(bits)
    word = 0
    for e, v in enumerate(values):
        word |= (v & m) << (e * bits)
    return word | (int(flag) << (len(values) * bits))


def unpack_beat(word: int, count: int, bits: int) -> tuple[list[int], int]:
    """Split a payload into ``count`` signed ``bits``-wide elements and the flag bit above them."""
    m = _field_mask(bits)
    vals = []
    for e in range(count):
        v = (word >> (e * bits)) & m
        vals.append(v - (1 << bits) if v >> (bits - 1) else v)
    return vals, (word >> (count * bits)) & 1


# ------------------------------------------------------------------------------------------------
# Stimuli
def _smooth_inputs(cfg: DeltaGRUConfig, T: int, rng: np.random.Generator) -> torch.Tensor:
    """Slowly varying inputs (random walks with occasional jumps): sparse deltas, as sensor data."""
    x = np.zeros((T, cfg.input_size))
    cur = rng.uniform(-1.0, 1.0, cfg.input_size)
    for t in range(T):
        cur = cur + rng.normal(0.0, 0.03, cfg.input_size)
        jump = rng.random(cfg.input_size) < 0.05
        cur = np.where(jump, rng.uniform(-2.0, 2.0, cfg.input_size), cur)
        cur = np.clip(cur, -3.0, 3.0)
        x[t] = cur
    return _quantize(cfg, x)


def _dense_inputs(cfg: DeltaGRUConfig, T: int, rng: np.random.Generator) -> torch.Tensor:
    return _quantize(cfg, rng.uniform(-2.0, 2.0, (T, cfg.input_size)))


def _limit_inputs(cfg: DeltaGRUConfig, T: int, rng: np.random.Generator) -> torch.Tensor:
    """Inputs at the format limits: most elements at min/max (full-scale deltas), some near them."""
    lo, hi = cfg.act.min_int, cfg.act.max_int
    choices = np.array([lo, hi, lo, hi, lo + 1, hi - 1, 0])
    x = rng.choice(choices, size=(T, cfg.input_size))
    x[0] = np.where(np.arange(cfg.input_size) % 2, hi, lo)
    return torch.as_tensor(x, dtype=torch.int64)


#: Signed steps from the last transmitted value that the threshold-edge scenario takes, as
#: multiples of (theta, 1): theta, -theta, theta - 1, 1 - theta, theta + 1, -theta - 1, 0.
_EDGE_STEPS = ((1, 0), (-1, 0), (1, -1), (-1, 1), (1, 1), (-1, -1), (0, 0))


def edge_steps_needed() -> int:
    """Timesteps the threshold-edge stimulus needs so that every element takes every step."""
    return len(_EDGE_STEPS)


def _edge_inputs(cfg: DeltaGRUConfig, theta: int, T: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, set[int], list[str]]:
    """Inputs whose deltas from the last transmitted value are exactly theta, theta - 1, theta + 1.

    The encoder fires on ``|x - xhat| >= theta``: a delta of theta must fire, theta - 1 must not.
    The last transmitted values are tracked here exactly as the encoder updates them. Every element
    takes every step once in its first :func:`edge_steps_needed` timesteps (in a rotated order, so
    neighbouring elements differ), then random ones; a step that would leave the act format is
    taken in the other direction (same magnitude). Returns the inputs, the set of deltas |x - xhat|
    produced, and what could not be produced for this format (with the reason).
    """
    steps = np.array([a * theta + b for a, b in _EDGE_STEPS])
    lo, hi = cfg.act.min_int, cfg.act.max_int
    I = cfg.input_size
    xhat = np.zeros(I, dtype=np.int64)
    out = np.zeros((T, I), dtype=np.int64)
    seen: set[int] = set()
    for t in range(T):
        if t < len(steps):
            pick = steps[(t + np.arange(I)) % len(steps)]
        else:
            pick = rng.choice(steps, I)
        x = xhat + pick
        flip = (x < lo) | (x > hi)
        x = np.where(flip, xhat - pick, x)
        x = np.clip(x, lo, hi)
        out[t] = x
        seen |= set(np.abs(x - xhat).tolist())
        xhat = np.where(np.abs(x - xhat) >= theta, x, xhat)
    missing = []
    for d, what in ((theta, "theta (must fire)"), (theta - 1, "theta - 1 (must not fire)")):
        if d < 0:
            missing.append(f"delta {what}: theta is 0, so every delta fires")
        elif d not in seen:
            missing.append(f"delta {what} = {d}: the act format {cfg.act.name()} cannot reach it "
                           f"from the values it passes through")
    return torch.as_tensor(out), seen, missing


def _quantize(cfg: DeltaGRUConfig, x: np.ndarray) -> torch.Tensor:
    q = np.floor(x * 2.0**cfg.act.frac + 0.5)
    return torch.as_tensor(np.clip(q, cfg.act.min_int, cfg.act.max_int), dtype=torch.int64)


def _typical_theta(cfg: DeltaGRUConfig, real: float) -> int:
    return max(1, int(round(real * 2**cfg.act.frac)))


def _thresholds(cfg: DeltaGRUConfig, kind: str) -> dict:
    L = cfg.num_layers
    if kind == "zero":
        return {"theta_x": (0,) * L, "theta_h": (0,) * L, "theta_head": 0}
    if kind == "high":
        top = (1 << cfg.act.bits) - 1
        return {"theta_x": (top,) * L, "theta_h": (top,) * L, "theta_head": top}
    if kind == "typical":
        return {"theta_x": tuple(_typical_theta(cfg, 0.06 + 0.02 * l) for l in range(L)),
                "theta_h": tuple(_typical_theta(cfg, 0.04 + 0.02 * l) for l in range(L)),
                "theta_head": _typical_theta(cfg, 0.03)}
    if kind == "typical2":
        # Another set that differs from "typical" in every register, and between layers, by
        # construction (rounding real thresholds to few fraction bits can make them all 1).
        top = (1 << cfg.act.bits) - 1
        t1 = _thresholds(cfg, "typical")
        return {"theta_x": tuple(min(top, v + 1 + l) for l, v in enumerate(t1["theta_x"])),
                "theta_h": tuple(min(top, v + 2 + (l % 2)) for l, v in enumerate(t1["theta_h"])),
                "theta_head": min(top, t1["theta_head"] + 1)}
    raise ValueError(f"Unknown threshold set {kind!r}.")


# ------------------------------------------------------------------------------------------------
@dataclass
class Scenario:
    """Operations of one scenario plus what pytest reports about it."""

    name: str
    ops: list = field(default_factory=list)
    idle: float = 0.0
    backpressure: float = 0.0
    notes: dict = field(default_factory=dict)
    #: What the scenario claims but cannot exercise for this configuration, each with the reason
    #: (reported as a warning by the regression, never counted as checked).
    not_exercised: list = field(default_factory=list)
    test_dir_model: QuantizedModel | None = None  # swap_weights: model whose .mem files to load


def _reg_addrs(cfg: DeltaGRUConfig) -> dict[str, int]:
    return {r.name: r.addr for r in regmap.register_map(cfg.num_layers)}


def _theta_writes(cfg: DeltaGRUConfig, th: dict) -> list[dict]:
    ops = []
    for l in range(cfg.num_layers):
        ops.append({"op": "write", "reg": f"THETA_X{l}", "value": th["theta_x"][l],
                    "readback": True})
        ops.append({"op": "write", "reg": f"THETA_H{l}", "value": th["theta_h"][l],
                    "readback": True})
    if cfg.has_head:
        ops.append({"op": "write", "reg": "THETA_HEAD", "value": th["theta_head"],
                    "readback": True})
    return ops


def _sequence_op(model: QuantizedModel, x_q: torch.Tensor, label: str, lockstep: bool,
                 rng: np.random.Generator) -> tuple[dict, dict]:
    """A ``sequence`` op with golden expectations, and its statistics."""
    cfg = model.config
    res = run_golden(model, x_q)
    T = x_q.shape[0]
    L = cfg.num_layers
    fired = [[int(res.fired_x[0, t, l] + res.fired_h[0, t, l]) for l in range(L)] for t in range(T)]
    fired_head = [int(v) for v in res.fired_head[0]]
    op = {
        "op": "sequence",
        "label": label,
        "lockstep": lockstep,
        "inputs": pack_input_beats(cfg, x_q, rng, first=True),
        "outputs": pack_output_beats(cfg, res.outputs[0]),
        "values": res.outputs[0].tolist(),
        "cycles": [int(v) for v in res.cycles[0]],
        "fired_x": res.fired_x[0].tolist(),
        "fired_h": res.fired_h[0].tolist(),
        "fired_head": fired_head,
        # The cycle model's h0_early (layer 0's h deltas counted a cycle ahead of the rest:
        # cycles.h_fetch_in_window), from the golden model; no counter shows it.
        "h0_early": [int(v) for v in res.h0_early[0]],
        # Stall cycles the sequence costs run lock-step (every input late: the part of its x
        # phase the previous window would have hidden; every head in place), and streamed with
        # its inputs in time (the last timestep's head runs in place): cycles.lockstep_stall,
        # cycles.flush_cycles.
        "stall_lockstep": int(cycle_model.lockstep_stall(
            cfg, res.fired_x[0, :, 0], res.fired_head[0], torch.arange(T) == 0,
            fired_h0=res.fired_h[0, :, 0], h0_early=res.h0_early[0]).sum()),
        "stall_streamed": int(cycle_model.flush_cycles(cfg, fired_head[-1])),
        # MAC_BUSY counts column issue cycles: each timestep's own columns and head, wherever
        # they run (cycles.mac_issue_cycles).
        "mac_busy": [int(cycle_model.mac_issue_cycles(cfg, f, fh))
                     for f, fh in zip(fired, fired_head)],
    }
    stats = {
        "timesteps": T,
        "fired_fraction": float(res.macs[0].sum()) / max(1, float(res.dense_macs[0].sum())),
        "mean_cycles": float(res.cycles[0].float().mean()),
    }
    return op, stats


def gate_saturation(model: QuantizedModel, x_q: torch.Tensor) -> dict:
    """Fraction of saturated gate values (sigmoid outside 0.02..0.98, |tanh| > 0.98) per gate.

    A diagnostic of the test models (computed in float from the dequantized parameters): a model
    whose gates all saturate would hide datapath errors behind the flat ends of the tables.
    """
    cfg = model.config
    sd = model.float_params()
    x = x_q.to(torch.float64) / 2**cfg.act.frac
    H = cfg.hidden_size
    sat = {"r": [], "u": [], "c": []}
    for l in range(cfg.num_layers):
        w_ih, w_hh = sd[f"weight_ih_l{l}"].double(), sd[f"weight_hh_l{l}"].double()
        b_ih, b_hh = sd[f"bias_ih_l{l}"].double(), sd[f"bias_hh_l{l}"].double()
        h = torch.zeros(H, dtype=torch.float64)
        outs = []
        for t in range(x.shape[0]):
            gi, gh = w_ih @ x[t] + b_ih, w_hh @ h + b_hh
            r = torch.sigmoid(gi[:H] + gh[:H])
            u = torch.sigmoid(gi[H:2 * H] + gh[H:2 * H])
            c = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
            h = (1 - u) * c + u * h
            outs.append(h)
            for k, v in (("r", r), ("u", u)):
                sat[k].append(float(((v < 0.02) | (v > 0.98)).double().mean()))
            sat["c"].append(float((c.abs() > 0.98).double().mean()))
        x = torch.stack(outs)
    return {k: sum(v) / len(v) for k, v in sat.items()}


def input_keeps_up(cfg: DeltaGRUConfig) -> bool:
    """Whether input vectors streamed back to back always arrive before the core needs them, so
    that a streamed sequence whose output is always read stalls for no cycle (a sufficient
    condition, not a necessary one).

    A vector's ceil(I/E) beats go into the input buffer the x phase two timesteps earlier
    released, and are needed (``InputFrontEnd.FULL_LATENCY`` cycles after the last one) by the
    last activation beat of the timestep before theirs, where the overlapped x phase is decided
    (``deltahw.cycles``). In between lie at least the rest of a timestep after its x phase and
    the next timestep's h phase and activation beats: more than the compute cycles of a
    timestep in which nothing fires. When the beats take longer (a wide input on a narrow
    encoder, say I = 24 at E = 1 beside H = 7), a streamed input can come late and lose its
    overlap: stall cycles that are correct, not an error (``cycles.lost_overlap``)."""
    from deltahw.gateware.frontend import InputFrontEnd

    beats = ceil_div(cfg.input_size, cfg.enc_width)
    floor = cycle_model.floor_cycles(cfg)
    return beats + InputFrontEnd.FULL_LATENCY + 1 <= floor


def _input_bound_note(cfg: DeltaGRUConfig, what: str) -> str:
    """The ``not_exercised`` entry of a scenario that cannot claim zero stall (input_keeps_up)."""
    beats = ceil_div(cfg.input_size, cfg.enc_width)
    floor = cycle_model.floor_cycles(cfg)
    return (f"{what}: an input vector takes {beats} beats (I={cfg.input_size}, "
            f"E={cfg.enc_width}), and a timestep with nothing fired only {floor} cycles, so a "
            "streamed input can come late and stall")


def _counter_totals(seq_ops: list[dict], stall_zero: bool) -> dict:
    """A ``totals`` op. ``stall_zero``: the output is always read and streamed inputs come in
    time, so the only stall cycles are what lock-step sequences lose and the in-place heads of
    streamed sequences' last timesteps (``stall_lockstep``, ``stall_streamed``): ``STALL_TOTAL``
    is checked exactly against that."""
    return {
        "op": "totals",
        "timesteps": sum(len(s["cycles"]) for s in seq_ops),
        "cycles": sum(sum(s["cycles"]) for s in seq_ops),
        "mac_busy": sum(sum(s["mac_busy"]) for s in seq_ops),
        "stall_zero": stall_zero,
        "stall": sum(s["stall_lockstep"] if s["lockstep"] else s["stall_streamed"]
                     for s in seq_ops),
    }


def _param_writes(model: QuantizedModel) -> list[dict]:
    """Bus writes that load ``model``'s weights and biases into every lane's memories."""
    lay = Layout(model.config)
    ops = []
    for kind, table in ((regmap.PARAM_KIND_WEIGHT, lay.lane_weights(model)),
                        (regmap.PARAM_KIND_BIAS, lay.lane_biases(model))):
        for lane in range(lay.lanes):
            ops.append({"op": "param_write", "kind": kind, "lane": lane,
                        "data": [regmap.to_word(v) for v in table[:, lane]]})
    return ops


def build_scenario(case: CoreCase, name: str, model: QuantizedModel | None = None) -> Scenario:
    """Operations, expected values and statistics of one scenario of ``case``."""
    if name not in SCENARIOS + USER_SCENARIOS:
        raise ValueError(f"Unknown scenario {name!r}; known: "
                         f"{', '.join(SCENARIOS + USER_SCENARIOS)}.")
    base = model if model is not None else make_model(case)
    cfg0 = base.config
    rng = np.random.default_rng([case.seed, (SCENARIOS + USER_SCENARIOS).index(name)])
    T = case.timesteps
    sc = Scenario(name)

    def with_theta(m: QuantizedModel, kind: str) -> tuple[QuantizedModel, dict]:
        th = _thresholds(m.config, kind)
        return m.with_config(m.config.with_thresholds(**th)), th

    if name == "registers":
        regs = regmap.by_name(cfg0.num_layers)
        shape0 = regs["SHAPE0"].pack(input_size=cfg0.input_size, hidden_size=cfg0.hidden_size)
        shape1 = regs["SHAPE1"].pack(num_layers=cfg0.num_layers, output_size=cfg0.output_size,
                                     lanes=cfg0.lanes,
                                     act_width_log2=int(math.log2(cfg0.act_width)))
        status_mask = sum(f.mask for f in regs["STATUS"].fields)
        sc.ops += [
            {"op": "expect", "reg": "ID", "value": regmap.ID_MAGIC},
            {"op": "expect", "reg": "VERSION", "value": regmap.VERSION},
            {"op": "expect", "reg": "SHAPE0", "value": shape0},
            {"op": "expect", "reg": "SHAPE1", "value": shape1},
            {"op": "expect", "reg": "STATUS", "value": 0, "mask": status_mask},
        ]
        # The threshold registers come out of reset holding the generated config's thresholds.
        for l in range(cfg0.num_layers):
            sc.ops.append({"op": "expect", "reg": f"THETA_X{l}", "value": cfg0.theta_x[l]})
            sc.ops.append({"op": "expect", "reg": f"THETA_H{l}", "value": cfg0.theta_h[l]})
        if cfg0.has_head:
            sc.ops.append({"op": "expect", "reg": "THETA_HEAD", "value": cfg0.theta_head})
        # Every threshold register holds act.bits bits independently of the others.
        top = (1 << cfg0.act.bits) - 1
        pattern = [(0x5A5A5A5A + 977 * k) & top for k in range(2 * cfg0.num_layers + 1)]
        k = 0
        for l in range(cfg0.num_layers):
            for reg in (f"THETA_X{l}", f"THETA_H{l}"):
                sc.ops.append({"op": "write", "reg": reg, "value": pattern[k], "readback": True})
                k += 1
        if cfg0.has_head:
            sc.ops.append({"op": "write", "reg": "THETA_HEAD", "value": pattern[k],
                           "readback": True})
        # Counters count, then clear.
        m, th = with_theta(base, "typical")
        sc.ops += _theta_writes(m.config, th)
        seq, stats = _sequence_op(m, _smooth_inputs(m.config, 2, rng), "A", False, rng)
        keeps_up = input_keeps_up(m.config)
        if not keeps_up:
            sc.not_exercised.append(_input_bound_note(m.config, "STALL_TOTAL = 0 after a "
                                                      "streamed sequence"))
        sc.ops += [{"op": "clear_counters"}, seq, {"op": "wait_idle"},
                   _counter_totals([seq], stall_zero=keeps_up), {"op": "clear_counters"}]
        for reg in ("CYCLES_TOTAL", "STALL_TOTAL", "TIMESTEPS", "MAC_BUSY"):
            sc.ops.append({"op": "expect", "reg": reg, "value": 0})
        sc.notes.update(stats)
        return sc

    if name in ("dense", "typical", "silent", "saturation"):
        kind = {"dense": "zero", "typical": "typical", "silent": "high",
                "saturation": "typical"}[name]
        m, th = with_theta(base, kind)
        if name == "dense":
            x = _dense_inputs(m.config, T, rng)
        elif name == "saturation":
            x = _limit_inputs(m.config, T, rng)
        else:
            x = _smooth_inputs(m.config, T, rng)
        sc.idle, sc.backpressure = {"dense": (0.3, 0.3), "typical": (0.5, 0.5),
                                    "silent": (0.2, 0.0), "saturation": (0.1, 0.7)}[name]
        seq, stats = _sequence_op(m, x, "A", True, rng)
        sc.ops += _theta_writes(m.config, th) + [{"op": "clear_counters"}, seq,
                                                 {"op": "wait_idle"},
                                                 _counter_totals([seq], stall_zero=False)]
        sc.notes.update(stats)
        if name == "silent":
            assert not any(any(v) for v in seq["fired_x"] + seq["fired_h"]), "silent fired"
        return sc

    if name == "threshold_edge":
        m, th = with_theta(base, "typical")
        x, seen, missing = _edge_inputs(m.config, m.config.theta_x[0],
                                        max(edge_steps_needed(), T // 2 + 1), rng)
        sc.idle, sc.backpressure = 0.3, 0.3
        seq, stats = _sequence_op(m, x, "A", True, rng)
        sc.ops += _theta_writes(m.config, th) + [seq]
        sc.notes.update(stats)
        sc.notes["edge_deltas"] = sorted(d for d in seen if d <= m.config.theta_x[0] + 1)
        sc.not_exercised += missing
        return sc

    if name == "stream":
        # Full speed: inputs back to back, output always ready: no stall cycles but the last
        # timestep's head, run in place (stall_streamed), unless the input itself cannot keep
        # up (input_keeps_up); then STALL_TOTAL is checked exactly
        # against the stall cycles the testbench counts instead (op_stall_check: the same
        # sequence again, output always ready).
        m, th = with_theta(base, "typical")
        seq, stats = _sequence_op(m, _smooth_inputs(m.config, 2 * T, rng), "A", False, rng)
        keeps_up = input_keeps_up(m.config)
        sc.ops += _theta_writes(m.config, th) + [{"op": "clear_counters"}, seq,
                                                 {"op": "wait_idle"},
                                                 _counter_totals([seq], stall_zero=keeps_up)]
        if not keeps_up:
            sc.not_exercised.append(_input_bound_note(m.config, "streaming with no stall"))
            sc.ops.append({"op": "stall_check", "sequences": [seq], "backpressure": 0.0,
                           "hold_cycles": 0, "must_stall": False,
                           "reset_cycles": cycle_model.reset_cycles(m.config)})
        sc.notes.update(stats)
        sc.notes["input_keeps_up"] = keeps_up
        return sc

    if name == "reset_midrun":
        # Three sequences streamed back to back with random idle and backpressure: each new
        # sequence's first beat arrives while the previous one is still in flight.
        m, th = with_theta(base, "typical")
        lens = [max(2, T // 2 + 1), max(2, T // 3 + 1), max(2, T // 2)]
        seqs = []
        for k, n in enumerate(lens):
            gen = _smooth_inputs if k != 1 else _dense_inputs
            seq, stats = _sequence_op(m, gen(m.config, n, rng), "ABC"[k], False, rng)
            seqs.append(seq)
        sc.idle, sc.backpressure = 0.3, 0.4
        sc.ops += _theta_writes(m.config, th) + [{"op": "clear_counters"}, *seqs,
                                                 {"op": "wait_idle"},
                                                 _counter_totals(seqs, stall_zero=False)]
        # The same sequences again, under heavier backpressure, with STALL_TOTAL checked exactly
        # against the stall cycles the testbench counts (op_stall_check).
        again = [_sequence_op(m, gen(m.config, n, rng), f"S{k}", False, rng)[0]
                 for k, (n, gen) in enumerate(zip(lens, (_smooth_inputs, _dense_inputs,
                                                         _smooth_inputs)))]
        # Not reading for as long as the first three timesteps take (plus the input's arrival)
        # fills the two timesteps of output space: the third timestep must stall.
        first3 = [c for s in again for c in s["cycles"]][:3]
        in_beats = ceil_div(m.config.input_size, m.config.enc_width)
        hold = (2 * sum(first3) + 3 * cycle_model.reset_cycles(m.config)
                + 3 * (4 * in_beats + 60) + 200)
        sc.ops.append({"op": "stall_check", "sequences": again, "backpressure": 0.6,
                       "hold_cycles": hold, "must_stall": True,
                       "reset_cycles": len(again) * cycle_model.reset_cycles(m.config)})
        sc.notes["sequence_lengths"] = lens
        return sc

    if name == "theta_change":
        # Sequence A under one threshold set, thresholds rewritten while idle, sequence B under
        # another (different per layer), then a shorter dense one (all thresholds 0).
        sc.idle, sc.backpressure = 0.2, 0.3
        x = _smooth_inputs(cfg0, T, rng)
        for label, kind in (("A", "typical"), ("B", "typical2"), ("C", "zero")):
            m, th = with_theta(base, kind)
            seq, stats = _sequence_op(m, x if label != "C" else x[: max(2, T // 2)], label,
                                      True, rng)
            sc.ops += [{"op": "wait_idle"}, *_theta_writes(m.config, th), seq]
            sc.notes[f"fired_fraction_{label}"] = stats["fired_fraction"]
        a, b = _thresholds(cfg0, "typical"), _thresholds(cfg0, "typical2")
        if a == b:
            sc.not_exercised.append("a threshold change: the act format's largest threshold "
                                    "leaves no second value")
        elif cfg0.num_layers > 1 and len(set(b["theta_x"])) == 1:
            sc.not_exercised.append("different thresholds per layer: the act format's largest "
                                    "threshold leaves no room")
        return sc

    if name == "param_write":
        # Load a different model's weights and biases through the bus, then run on them.
        other = make_model(case, seed_offset=1).with_config(base.config)
        m, th = with_theta(other, "typical")
        sc.idle, sc.backpressure = 0.2, 0.2
        seq, stats = _sequence_op(m, _smooth_inputs(m.config, max(2, T // 2), rng), "A",
                                  True, rng)
        sc.ops += [{"op": "wait_idle"}, *_param_writes(other), *_theta_writes(m.config, th), seq]
        sc.notes.update(stats)
        sc.notes["param_words"] = sum(len(o["data"]) for o in sc.ops if o["op"] == "param_write")
        return sc

    if name == "own_thresholds":
        # The configuration's own thresholds, straight out of reset (no register writes).
        sc.idle, sc.backpressure = 0.2, 0.2
        seq, stats = _sequence_op(base, _smooth_inputs(cfg0, T, rng), "A", True, rng)
        sc.ops += [seq]
        sc.notes.update(stats)
        return sc

    if name == "swap_weights":
        # Same simulator binary, other .mem files in the working directory ($readmemh at start).
        other = make_model(case, seed_offset=2).with_config(base.config)
        m, th = with_theta(other, "typical")
        sc.idle, sc.backpressure = 0.2, 0.2
        seq, stats = _sequence_op(m, _smooth_inputs(m.config, max(2, T // 2), rng), "A",
                                  True, rng)
        sc.ops += [*_theta_writes(m.config, th), seq]
        sc.notes.update(stats)
        sc.test_dir_model = other
        return sc

    raise AssertionError(name)


def write_vectors(case: CoreCase, scenario: Scenario, path: Path, seed: int) -> None:
    """Write the JSON the testbench reads (``DELTAHW_VECTORS``)."""
    cfg = case.config
    doc = {
        "format": VECTORS_FORMAT,
        "case": case.name,
        "scenario": scenario.name,
        "seed": seed,
        "config": cfg.to_dict(),
        "summary": cfg.summary(),
        "in_elems": cfg.enc_width,
        "out_elems": cfg.act_width,
        "elem_bits": cfg.act.bits,
        "input_size": cfg.input_size,
        "output_width": cfg.output_width,
        "num_layers": cfg.num_layers,
        "has_head": cfg.has_head,
        "regs": _reg_addrs(cfg),
        "idle": scenario.idle,
        "backpressure": scenario.backpressure,
        "ops": scenario.ops,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
