"""The one validated configuration object of a deltahw accelerator (network shape, formats,
hardware).

Everything that shapes the golden model, the weight layout, the cycle model and the generated RTL is
in :class:`DeltaGRUConfig`. It round-trips through JSON (``to_json``/``from_json``) and every
invalid
value raises a full-sentence :class:`ConfigError` naming the value and the allowed range.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from . import regmap
from .errors import DeltahwError
from .numerics import (
    ActivationTable,
    FixedFormat,
    accumulator_bits_needed,
    sigmoid_table,
    tanh_table,
)

__all__ = ["ConfigError", "DeltaGRUConfig", "FORMAT_VERSION", "LIMITS", "MAX_ACC_BITS",
           "ceil_div", "json_type"]

#: Version of the config/manifest schema; bumped when a field changes meaning.
FORMAT_VERSION = 1


class ConfigError(DeltahwError, ValueError):
    """A configuration value is out of range or inconsistent."""


#: Widest accumulator: the golden model (and the cycle-exact reference) accumulate in torch.int64.
MAX_ACC_BITS = 64


def _limits() -> dict[str, tuple[int, int, str]]:
    """Allowed range of each size and width of a config, with the reason for its upper end.

    The one place the config's limits are stated. The hardware's limits are derived from the
    register map (:mod:`deltahw.regmap`: a value the host reads back must fit its register field)
    and the 32-bit control bus (a parameter is written through PARAM_DATA, a threshold through its
    register); the generator's own limits (memory and lane counts it is tested up to, the DSP
    multiplier's operand width, the activation tables) are the remaining bounds; the lower of the
    two applies.
    """
    regs = regmap.by_name(1)

    def field(reg: str, name: str) -> tuple[int, str]:
        f = regs[reg].field(name)
        return f.max, f"the {f.width}-bit {reg}.{name} register field"

    bus = regmap.BUS_DATA_BITS

    def tighter(*options):
        return min(options, key=lambda o: o[0])

    fired_x = regs["FIRED_LAST0"].field("x")
    out: dict[str, tuple[int, int, str]] = {}
    out["input_size"] = (1, *tighter(field("SHAPE0", "input_size"),
                                     (fired_x.max, "the 16-bit FIRED_LAST.x counter"),
                                     (4096, "the generator's tested range")))
    out["hidden_size"] = (1, *tighter(field("SHAPE0", "hidden_size"),
                                      (2048, "the generator's tested range")))
    out["num_layers"] = (1, *tighter(field("SHAPE1", "num_layers"),
                                     (regmap.MAX_LAYERS, "the register map's per-layer registers")))
    out["output_size"] = (0, *field("SHAPE1", "output_size"))
    lane_sel = regs["PARAM_SEL"].field("lane")
    out["lanes"] = (3, *tighter(field("SHAPE1", "lanes"),
                                (lane_sel.max + 1, "the PARAM_SEL.lane register field"),
                                (1536, "the generator's tested range")))
    out["lanes_per_bank"] = (1, 64, "the generator's tested range")
    out["enc_width"] = (1, 64, "the generator's tested range")
    log2 = regs["SHAPE1"].field("act_width_log2")
    out["act_width"] = (1, *tighter((1 << log2.max, "the SHAPE1.act_width_log2 register field"),
                                    (32, "the generator's tested range")))
    out["act.bits"] = (2, *tighter((bus, f"the {bus}-bit threshold registers"),
                                   (24, "the activation datapath")))
    out["weight.bits"] = (2, *tighter((bus, f"the {bus}-bit PARAM_DATA register"),
                                      (18, "the DSP multipliers' operand width")))
    out["bias.bits"] = (2, bus, f"the {bus}-bit PARAM_DATA register")
    out["acc_bits"] = (2, MAX_ACC_BITS, "the golden model's 64-bit integer arithmetic")
    return out


#: ``name -> (lowest, highest, why the highest)`` for every bounded size and width of a config.
LIMITS = _limits()


def json_type(v) -> str:
    """How JSON calls the type of a parsed value ("an array", "null", ...), for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    return "an array" if isinstance(v, list) else "an object"


def _format(name: str, val) -> FixedFormat:
    """A format field given as a FixedFormat, ``{"bits": b, "frac": f}`` or ``[b, f]``."""
    expect = (f'{name} must be a fixed-point format written {{"bits": B, "frac": F}} or [B, F] '
              f'(e.g. {{"bits": 16, "frac": 8}} for Q8.8)')
    if isinstance(val, FixedFormat):
        return val
    if isinstance(val, dict):
        if set(val) != {"bits", "frac"}:
            raise ConfigError(f"{expect}; got {val!r}.")
        args = (val["bits"], val["frac"])
    elif isinstance(val, (list, tuple)) and len(val) == 2:
        args = tuple(val)
    else:
        raise ConfigError(f"{expect}; got {val!r}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in args):
        raise ConfigError(f"{expect} with integers; got {val!r}.")
    try:
        return FixedFormat(*args)
    except ValueError as e:
        raise ConfigError(f"{name}: {e}") from None


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


@dataclass(frozen=True)
class DeltaGRUConfig:
    """Network shape, fixed-point formats, thresholds and hardware parameters.

    Network:
        input_size (I), hidden_size (H), num_layers (L), output_size (O, 0 = no linear head).
    Formats (``(bits, frac)`` pairs, see ``docs/numerics.md``):
        act: inputs, hidden state, deltas' operands, gate outputs and head outputs (default Q8.8).
        weight: all weight matrices (default Q1.7, as EdgeDRNN).
        bias: biases, aligned to the accumulator on load (default Q8.8).
        acc_bits: accumulator width; ``None`` picks the smallest width that cannot overflow.
        sigmoid_in / tanh_in: index format of the activation lookup tables.
    Thresholds, in LSBs of ``act`` (0 = every element fires, i.e. the dense GRU):
        theta_x[l], theta_h[l] per layer, theta_head for the head's input encoder.
    Hardware:
        lanes (P): MAC lanes; a fired column costs ceil(3H / P) cycles (``deltahw.cycles``).
        lanes_per_bank: lanes sharing one weight BRAM word (the BRAM word is lanes_per_bank
        weights);
            ``None`` picks the largest divisor of lanes up to 4 (a 32-bit word of Q1.7 weights).
        enc_width (E): input elements compared per cycle by the input delta encoder (power of two).
        act_width (A): hidden units activated per cycle; also the output beat width (power of two);
            the MAC lane count must be a multiple of 3A so one unit's three gates sit side by side,
            or a multiple of 3 that divides 3A: a beat then reads 3A / P row groups at once, from
            as many accumulator memories per lane (``Layout.acc_split``; with a head, O <=
            min(A, P)).
        clock_mhz: target clock used for latency predictions and timing checks.
        capture: where the shape allows it (P = 3A and ceil(3H/P) > 3, ``cycles.act_capture``),
            a layer's first activation beats run inside its MAC phase's last column, taking the
            sums out of the MAC pipeline: ceil(3H/P) - 3 cycles less per layer phase with
            columns, for a 2:1 select per gate word of every activation unit (~80 LUT6 or ~150
            LUT4 per unit). ``deltahw.build`` turns it off where the part has no room for it.
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    output_size: int = 0
    act: FixedFormat = FixedFormat(16, 8)
    weight: FixedFormat = FixedFormat(8, 7)
    bias: FixedFormat = FixedFormat(16, 8)
    acc_bits: int | None = None
    sigmoid_in: FixedFormat = FixedFormat(10, 6)
    tanh_in: FixedFormat = FixedFormat(10, 7)
    theta_x: tuple[int, ...] = field(default=())
    theta_h: tuple[int, ...] = field(default=())
    theta_head: int = 0
    lanes: int = 12
    lanes_per_bank: int | None = None
    enc_width: int = 4
    act_width: int = 2
    clock_mhz: float = 100.0
    capture: bool = True

    def __post_init__(self):
        # Normalise thresholds: empty means 0 for every layer; a single value applies to all layers.
        for name in ("theta_x", "theta_h"):
            val = getattr(self, name)
            if isinstance(val, int) and not isinstance(val, bool):
                val = (val,)
            if not isinstance(val, (list, tuple)):
                raise ConfigError(
                    f"{name} must be a list of integer thresholds in LSBs, one per layer (or one "
                    f"for all layers); got {val!r}. For thresholds in real units use "
                    f"deltahw.DeltaNetwork(..., {name}=...) or the CLIs' "
                    f"--{name.replace('_', '-')}."
                )
            val = tuple(val)
            if len(val) == 0:
                val = (0,) * self.num_layers if isinstance(self.num_layers, int) else ()
            elif len(val) == 1 and isinstance(self.num_layers, int) and self.num_layers > 1:
                val = val * self.num_layers
            object.__setattr__(self, name, val)
        for name in ("act", "weight", "bias", "sigmoid_in", "tanh_in"):
            object.__setattr__(self, name, _format(name, getattr(self, name)))
        if self.lanes_per_bank is None and isinstance(self.lanes, int) and self.lanes > 0:
            object.__setattr__(
                self, "lanes_per_bank", max(d for d in range(1, 5) if self.lanes % d == 0)
            )
        self._validate()
        if self.acc_bits is None:
            object.__setattr__(self, "acc_bits", self.acc_bits_needed)

    # ----------------------------------------------------------------------------------------------
    def _validate(self):
        def check_int(name, lo, hi, value=None):
            v = getattr(self, name) if value is None else value
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be an integer from {lo} to {hi}; got {v!r}.")

        def check_limit(name, value=None):
            lo, hi, why = LIMITS[name]
            v = getattr(self, name) if value is None else value
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ConfigError(f"{name} must be an integer from {lo} to {hi} ({hi} is set by "
                                  f"{why}); got {v!r}.")

        for name in ("input_size", "hidden_size", "num_layers", "output_size", "lanes",
                     "lanes_per_bank", "enc_width", "act_width"):
            check_limit(name)
        for fmt in ("act", "weight", "bias"):
            lo, hi, why = LIMITS[f"{fmt}.bits"]
            if not lo <= getattr(self, fmt).bits <= hi:
                raise ConfigError(f"The {fmt} format must have at most {hi} bits ({hi} is set by "
                                  f"{why}); got {getattr(self, fmt)}.")
        if not _is_pow2(self.enc_width):
            raise ConfigError(
                f"enc_width must be a power of two (1, 2, 4, ...); got {self.enc_width}."
            )
        if not _is_pow2(self.act_width):
            raise ConfigError(
                f"act_width must be a power of two (1, 2, 4, ...); got {self.act_width}."
            )
        three_a = 3 * self.act_width
        if self.lanes % three_a and (self.lanes % 3 or three_a % self.lanes):
            good = sorted({three_a * k for k in range(1, 9)}
                          | {three_a // k for k in (2, 4, 8) if three_a % (3 * k) == 0})
            raise ConfigError(
                f"lanes must be a multiple of 3 x act_width = {three_a} (a hidden unit's three "
                f"gate rows land in neighbouring lanes of the row group its activation beat "
                f"reads), or a multiple of 3 that divides it (an activation beat then reads "
                f"{three_a} // lanes row groups at once, from that many accumulator memories per "
                f"lane); got lanes={self.lanes} (try one of {good})."
            )
        if (three_a > self.lanes and self.output_size > 0
                and self.output_size > min(self.act_width, self.lanes)):
            raise ConfigError(
                f"With 3 x act_width = {three_a} > lanes = {self.lanes} the head's read-out "
                f"takes its beat out of one row group, so output_size must be at most "
                f"min(act_width, lanes) = {min(self.act_width, self.lanes)}; got "
                f"output_size={self.output_size}."
            )
        if self.lanes % self.lanes_per_bank:
            raise ConfigError(
                f"lanes_per_bank must divide lanes={self.lanes}; got {self.lanes_per_bank}."
            )
        if self.act.frac < 1:
            raise ConfigError(f"The act format must have at least 1 fraction bit; got {self.act}.")
        if self.bias.frac > self.acc_frac:
            raise ConfigError(
                f"bias.frac={self.bias.frac} cannot exceed the accumulator's fraction bits "
                f"act.frac + weight.frac = {self.acc_frac}."
            )
        for name in ("sigmoid_in", "tanh_in"):
            fmt = getattr(self, name)
            if fmt.frac > self.act.frac or not 4 <= fmt.bits <= 14:
                raise ConfigError(
                    f"{name} must have 4 to 14 bits and at most act.frac={self.act.frac} "
                    f"fraction "
                    f"bits; got {fmt}."
                )
        for name in ("theta_x", "theta_h"):
            val = getattr(self, name)
            if len(val) != self.num_layers:
                raise ConfigError(
                    f"{name} needs one threshold per layer ({self.num_layers}); got {len(val)}: "
                    f"{list(val)}."
                )
            for t in val:
                check_int(name, 0, (1 << self.act.bits) - 1, t)
        check_int("theta_head", 0, (1 << self.act.bits) - 1)
        if (not isinstance(self.clock_mhz, (int, float)) or isinstance(self.clock_mhz, bool)
                or not 1 <= self.clock_mhz <= 1000):
            raise ConfigError(f"clock_mhz must be from 1 to 1000; got {self.clock_mhz!r}.")
        if not isinstance(self.capture, bool):
            raise ConfigError(f"capture must be true or false; got {self.capture!r}.")
        need = self.acc_bits_needed
        lo, hi, why = LIMITS["acc_bits"]
        if need > hi:
            raise ConfigError(
                f"This config needs a {need}-bit accumulator (from its fan-in and its act, weight "
                f"and bias formats) but at most {hi} bits are supported ({why}); use narrower "
                "formats or smaller layers.")
        if self.acc_bits is not None:
            check_int("acc_bits", max(lo, need), hi)

    # ----------------------------------------------------------------------------------------------
    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.hidden_size

    @property
    def acc_frac(self) -> int:
        return self.act.frac + self.weight.frac

    @property
    def delta_bits(self) -> int:
        """Width of a delta ``v - vhat`` of two act-format values (one bit more than act)."""
        return self.act.bits + 1

    @property
    def acc_bits_needed(self) -> int:
        fan_in = max(self.layer_input_size(l) + self.hidden_size for l in range(self.num_layers))
        fan_in = max(fan_in, self.hidden_size if self.output_size else 0)
        return accumulator_bits_needed(fan_in, self.act, self.weight, self.bias, self.acc_frac)

    @property
    def acc(self) -> FixedFormat:
        return FixedFormat(self.acc_bits, self.acc_frac)

    @property
    def sigmoid(self) -> ActivationTable:
        return sigmoid_table(self.sigmoid_in.bits, self.sigmoid_in.frac, self.act.frac)

    @property
    def tanh(self) -> ActivationTable:
        return tanh_table(self.tanh_in.bits, self.tanh_in.frac, self.act.frac)

    @property
    def has_head(self) -> bool:
        return self.output_size > 0

    @property
    def output_width(self) -> int:
        """Number of values the accelerator emits per timestep (O with a head, else H)."""
        return self.output_size if self.has_head else self.hidden_size

    def with_thresholds(self, theta_x=None, theta_h=None, theta_head=None) -> DeltaGRUConfig:
        return replace(
            self,
            theta_x=self.theta_x if theta_x is None else theta_x,
            theta_h=self.theta_h if theta_h is None else theta_h,
            theta_head=self.theta_head if theta_head is None else theta_head,
        )

    def replace(self, **kw) -> DeltaGRUConfig:
        if "acc_bits" not in kw:
            kw["acc_bits"] = None
        return replace(self, **kw)

    # ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        d["theta_x"] = list(self.theta_x)
        d["theta_h"] = list(self.theta_h)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DeltaGRUConfig:
        if not isinstance(d, dict):
            got = "null" if d is None else type(d).__name__
            raise ConfigError(f"A config must be a JSON object; got {got}.")
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ConfigError(
                f"This config has format_version {version}; this deltahw reads version "
                f"{FORMAT_VERSION}."
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"Unknown config key(s) {unknown}; allowed keys are {sorted(known)}.")
        for req in ("input_size", "hidden_size"):
            if req not in d:
                raise ConfigError(f"The config is missing the required key '{req}'.")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeltaGRUConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"The config is not valid JSON: {e}.") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path) -> DeltaGRUConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist.")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"Config file {path} cannot be read: {e}.") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"Config file {path} is not valid JSON: {e}.") from None
        if not isinstance(d, dict):
            raise ConfigError(f"A config must be a JSON object {{...}}; {path} holds "
                              f"{json_type(d)}.")
        return cls.from_dict(d)

    def summary(self) -> str:
        head = f", head O={self.output_size}" if self.has_head else ""
        return (
            f"delta-GRU I={self.input_size} H={self.hidden_size} L={self.num_layers}{head}; "
            f"act {self.act.name()}, weight {self.weight.name()}, acc {self.acc_bits} bits; "
            f"P={self.lanes} lanes, E={self.enc_width}, A={self.act_width}"
            + ("" if self.capture else ", capture off")
        )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
