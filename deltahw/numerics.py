"""Fixed-point numerics contract of deltahw: formats, rounding, saturation and activation tables.

This module is the single source of truth for every bit width in the project. The golden model, the
exporter, the RTL generator, the firmware header and ``docs/numerics.md`` all take their numbers
from
here; nothing else restates a width by hand.

Conventions (see ``docs/numerics.md`` for the prose version):

* A value is stored as a two's-complement integer ``q`` and means ``q / 2**frac``.
* Every rescale to fewer fraction bits rounds **half up** (towards +inf):
  ``rshift_round(q, s) = floor((q + 2**(s-1)) / 2**s)``, which is an add and an arithmetic shift in
  hardware.
* Every narrowing **saturates** to the destination range (never wraps).
* The pre-activation accumulators are wide enough that they cannot overflow for the configured sizes
  (checked by :func:`accumulator_bits_needed`), so the delta network's running sums are exact and
  Theta = 0 reproduces the dense fixed-point GRU bit for bit.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "FixedFormat",
    "ActivationTable",
    "rshift_round",
    "saturate",
    "quantize_float",
    "dequantize",
    "sigmoid_table",
    "tanh_table",
    "accumulator_bits_needed",
    "threshold_to_lsb",
]


@dataclass(frozen=True)
class FixedFormat:
    """A signed two's-complement fixed-point format: ``bits`` total, ``frac`` fraction bits."""

    bits: int
    frac: int

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 48:
            raise ValueError(f"A fixed-point format needs 2 to 48 bits; got bits={self.bits!r}.")
        if not isinstance(self.frac, int) or not 0 <= self.frac < self.bits:
            raise ValueError(
                f"A fixed-point format with {self.bits} bits needs 0 <= frac < {self.bits}; "
                f"got frac={self.frac!r}."
            )

    @property
    def min_int(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1

    @property
    def lsb(self) -> float:
        return 2.0**-self.frac

    @property
    def min_value(self) -> float:
        return self.min_int * self.lsb

    @property
    def max_value(self) -> float:
        return self.max_int * self.lsb

    def name(self) -> str:
        """Q notation, e.g. ``Q8.8`` for 16 bits with 8 fraction bits (sign in the integer part)."""
        return f"Q{self.bits - self.frac}.{self.frac}"

    def to_dict(self) -> dict:
        return asdict(self)


def rshift_round(q: torch.Tensor, shift: int) -> torch.Tensor:
    """Divide an integer tensor by ``2**shift`` rounding half up (add half an LSB, arithmetic
    shift).

    ``shift`` may be zero (identity) or negative (exact left shift).
    """
    if shift > 0:
        return (q + (1 << (shift - 1))) >> shift
    if shift < 0:
        return q << (-shift)
    return q


def saturate(q: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    """Clamp an integer tensor to the range of ``fmt``."""
    return q.clamp(fmt.min_int, fmt.max_int)


def quantize_float(x: torch.Tensor, fmt: FixedFormat) -> tuple[torch.Tensor, int]:
    """Quantize a float tensor to ``fmt``: round half up to the grid, then saturate.

    Returns the int64 tensor and the number of elements that saturated. This is the only place
    where a
    float becomes a fixed-point integer (inputs on entry, parameters at import).
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"Cannot quantize a tensor holding {bad} NaN or infinite value(s).")
    # Exact round half up: floor(v + 0.5) in float64 would round v = 0.5 - 2**-54 up to 1, because
    # the sum itself rounds; comparing v with floor(v) + 0.5 (exact for |v| < 2**52) does not.
    v = x * (2.0**fmt.frac)
    q = torch.floor(v)
    q = torch.where(v >= q + 0.5, q + 1, q)
    clipped = int(((q < fmt.min_int) | (q > fmt.max_int)).sum())
    return q.clamp(fmt.min_int, fmt.max_int).to(torch.int64), clipped


def dequantize(q: torch.Tensor, frac: int) -> torch.Tensor:
    """Integer tensor with ``frac`` fraction bits to float64."""
    return q.to(torch.float64) / (2.0**frac)


@dataclass(frozen=True)
class ActivationTable:
    """A lookup table for sigmoid or tanh, shared bit for bit by the golden model and the RTL.

    The table input is the pre-activation rescaled to ``in_bits`` signed bits with ``in_frac``
    fraction
    bits (round half up, saturate): entry ``i`` (for ``i`` in ``[-2**(in_bits-1), 2**(in_bits-1))``)
    holds ``f(i / 2**in_frac)`` rounded half up to ``out_frac`` fraction bits. Entries are stored at
    address ``i mod 2**in_bits``, so the RTL indexes the table with the raw two's-complement bits.
    """

    kind: str
    in_bits: int
    in_frac: int
    out_frac: int
    values: tuple[int, ...]

    @property
    def size(self) -> int:
        return 1 << self.in_bits

    @property
    def out_bits(self) -> int:
        """Signed width that holds every entry."""
        lo, hi = min(self.values), max(self.values)
        bits = 1
        while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
            bits += 1
        return bits

    def index(self, pre: torch.Tensor, pre_frac: int) -> torch.Tensor:
        """Signed table index for a pre-activation with ``pre_frac`` fraction bits."""
        idx = rshift_round(pre, pre_frac - self.in_frac)
        return idx.clamp(-(1 << (self.in_bits - 1)), (1 << (self.in_bits - 1)) - 1)

    def lookup(self, pre: torch.Tensor, pre_frac: int) -> torch.Tensor:
        idx = self.index(pre, pre_frac) & (self.size - 1)
        return self.as_tensor()[idx]

    def as_tensor(self) -> torch.Tensor:
        t = _TABLE_CACHE.get(self)
        if t is None:
            t = _TABLE_CACHE[self] = torch.tensor(self.values, dtype=torch.int64)
        return t


_TABLE_CACHE: dict[ActivationTable, torch.Tensor] = {}


def _make_table(kind: str, fn, in_bits: int, in_frac: int, out_frac: int) -> ActivationTable:
    if not 4 <= in_bits <= 14:
        raise ValueError(f"An activation table needs 4 to 14 index bits; got in_bits={in_bits}.")
    size = 1 << in_bits
    values = []
    for addr in range(size):
        i = addr - size if addr >= size // 2 else addr
        # Float appears only here, when the constant table is generated, never in the datapath.
        values.append(math.floor(fn(i / 2.0**in_frac) * 2.0**out_frac + 0.5))
    return ActivationTable(kind, in_bits, in_frac, out_frac, tuple(values))


# Tables are pure functions of their integer arguments; caching them keeps the golden model from
# regenerating 2**in_bits entries on every timestep (config.sigmoid / config.tanh are properties).
@functools.lru_cache(maxsize=64)
def sigmoid_table(in_bits: int, in_frac: int, out_frac: int) -> ActivationTable:
    # Below -700, exp(-v) overflows a double; sigmoid is < 1e-304 there, which rounds to 0 in any
    # output format (found by make fuzz: a 12-bit index with 1 fraction bit reaches -1024).
    return _make_table("sigmoid", lambda v: 1.0 / (1.0 + math.exp(-v)) if v > -700 else 0.0,
                       in_bits, in_frac, out_frac)


@functools.lru_cache(maxsize=64)
def tanh_table(in_bits: int, in_frac: int, out_frac: int) -> ActivationTable:
    return _make_table("tanh", math.tanh, in_bits, in_frac, out_frac)


def accumulator_bits_needed(
    fan_in: int, act: FixedFormat, weight: FixedFormat, bias: FixedFormat, acc_frac: int
) -> int:
    """Smallest signed accumulator width that can never overflow.

    A delta accumulator telescopes: after any number of steps it holds exactly
    ``bias + sum_k W[:, k] * xhat[k]`` where ``xhat`` is the last transmitted vector. Its magnitude
    is
    therefore bounded by ``|bias| + fan_in * |w|max * |x|max`` whatever the sequence, and an
    accumulator
    that holds that bound never overflows (so it needs no saturation and stays exact).
    """
    bias_shift = acc_frac - bias.frac
    bound = (1 << (bias.bits - 1)) * (1 << bias_shift)
    bound += fan_in * (1 << (weight.bits - 1)) * (1 << (act.bits - 1))
    return bound.bit_length() + 1


def threshold_to_lsb(value: float, fmt: FixedFormat) -> int:
    """A delta threshold in real units (e.g. 0.05) as a whole number of ``fmt`` LSBs.

    The one conversion of real thresholds (command lines, training options, scripts): rounds
    ``value * 2**frac`` half up exactly like :func:`quantize_float` (0.05 in Q8.8 -> 12.8 -> 13
    LSBs). Raises ``ValueError`` for a negative, NaN or infinite value.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"A threshold must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"A threshold must be a finite number >= 0; got {value!r}.")
    s = v * (2.0**fmt.frac)  # exact: a power-of-two scaling
    q = math.floor(s)
    return int(q + 1 if s >= q + 0.5 else q)
