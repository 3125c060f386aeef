"""The numerics contract (docs/numerics.md) at its corners, and config validation.

Every rounding is checked against exact rational arithmetic (``fractions.Fraction``), so these tests
do not share a single line of arithmetic with the implementation they check.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from deltahw.config import ConfigError, DeltaGRUConfig
from deltahw.numerics import (
    FixedFormat,
    accumulator_bits_needed,
    dequantize,
    quantize_float,
    rshift_round,
    saturate,
    sigmoid_table,
    tanh_table,
)

Q88 = FixedFormat(16, 8)
Q17 = FixedFormat(8, 7)


def exact_round_half_up(value: Fraction) -> int:
    """floor(value + 1/2) in exact arithmetic: the contract's rounding rule."""
    return math.floor(value + Fraction(1, 2))


def t64(values):
    return torch.tensor(values, dtype=torch.int64)


# --------------------------------------------------------------------------------------------------
# FixedFormat
def test_default_formats_match_the_reference_design():
    cfg = DeltaGRUConfig(40, 128)
    assert (cfg.act.bits, cfg.act.frac, cfg.act.name()) == (16, 8, "Q8.8")
    assert (cfg.weight.bits, cfg.weight.frac, cfg.weight.name()) == (8, 7, "Q1.7")
    assert (cfg.bias.bits, cfg.bias.frac) == (16, 8)
    assert cfg.acc_frac == 15
    assert cfg.delta_bits == 17


def test_format_limits():
    assert (Q88.min_int, Q88.max_int) == (-32768, 32767)
    assert Q88.lsb == 1 / 256
    assert Q88.min_value == -128.0 and Q88.max_value == 127 + 255 / 256
    assert (Q17.min_int, Q17.max_int) == (-128, 127)
    assert Q17.min_value == -1.0 and Q17.max_value == 127 / 128
    assert FixedFormat(2, 0).name() == "Q2.0"
    assert Q88.to_dict() == {"bits": 16, "frac": 8}


@pytest.mark.parametrize(
    "bits, frac, match",
    [
        (1, 0, r"2 to 48 bits; got bits=1\."),
        (49, 8, r"2 to 48 bits; got bits=49\."),
        (16, 16, r"0 <= frac < 16; got frac=16\."),
        (16, -1, r"0 <= frac < 16; got frac=-1\."),
        (16.0, 8, r"got bits=16\.0\."),
    ],
)
def test_format_validation(bits, frac, match):
    with pytest.raises(ValueError, match=match):
        FixedFormat(bits, frac)


# --------------------------------------------------------------------------------------------------
# rshift_round: add half an LSB, arithmetic shift (round half up, towards +inf on ties)
def test_rshift_round_ties_go_up():
    q = t64([1, -1, 3, -3, 2, -2, 5, -5, 0])
    assert rshift_round(q, 1).tolist() == [1, 0, 2, -1, 1, -1, 3, -2, 0]
    # 1.5 -> 2, -1.5 -> -1, 0.5 -> 1, -0.5 -> 0 (with shift 2: value/4)
    assert rshift_round(t64([6, -6, 2, -2, 7, -7]), 2).tolist() == [2, -1, 1, 0, 2, -2]


def test_rshift_round_zero_and_negative_shift():
    q = t64([-5, 0, 7])
    assert rshift_round(q, 0).tolist() == [-5, 0, 7]
    assert rshift_round(q, -3).tolist() == [-40, 0, 56]


def test_rshift_round_at_accumulator_limits():
    # Accumulators of the largest configs are well inside int64: the ends of a 48-bit range round
    # correctly and do not wrap.
    lo, hi = -(1 << 47), (1 << 47) - 1
    out = rshift_round(t64([lo, hi, lo + 1, hi - 1]), 15)
    expect = [exact_round_half_up(Fraction(v, 1 << 15)) for v in (lo, hi, lo + 1, hi - 1)]
    assert out.tolist() == expect


@given(st.integers(-(1 << 50), (1 << 50)), st.integers(0, 30))
def test_rshift_round_is_exact_round_half_up(value, shift):
    out = int(rshift_round(t64([value]), shift)[0])
    assert out == exact_round_half_up(Fraction(value, 1 << shift))


# --------------------------------------------------------------------------------------------------
# saturate
def test_saturate_clamps_at_both_ends_and_passes_the_range():
    q = t64([-40000, -32769, -32768, -1, 0, 32767, 32768, 1 << 40])
    assert saturate(q, Q88).tolist() == [-32768, -32768, -32768, -1, 0, 32767, 32767, 32767]
    assert saturate(t64([-129, -128, 127, 128]), Q17).tolist() == [-128, -128, 127, 127]


@given(st.integers(-(1 << 40), 1 << 40), st.integers(2, 24))
def test_saturate_property(value, bits):
    fmt = FixedFormat(bits, 0)
    out = int(saturate(t64([value]), fmt)[0])
    assert fmt.min_int <= out <= fmt.max_int
    if fmt.min_int <= value <= fmt.max_int:
        assert out == value
    else:
        assert out == (fmt.max_int if value > 0 else fmt.min_int)


# --------------------------------------------------------------------------------------------------
# quantize_float: round half up to the grid, then saturate; count saturations
def test_quantize_ties_and_limits():
    lsb = 2.0**-8
    x = torch.tensor(
        [0.5 * lsb, -0.5 * lsb, 1.5 * lsb, -1.5 * lsb, 0.49999999999999994 * lsb,
         Q88.max_value, Q88.max_value + 0.49 * lsb, Q88.max_value + 0.5 * lsb,
         Q88.min_value, Q88.min_value - 0.5 * lsb, Q88.min_value - 0.51 * lsb, 1e300, -1e300],
        dtype=torch.float64,
    )
    q, clipped = quantize_float(x, Q88)
    assert q.dtype == torch.int64
    assert q.tolist() == [1, 0, 2, -1, 0, 32767, 32767, 32767, -32768, -32768, -32768, 32767,
                          -32768]
    # max + 0.5 LSB rounds to 32768 (out of range); min - 0.51 LSB rounds to -32769; +-1e300.
    assert clipped == 4


def test_quantize_weight_format_range():
    q, clipped = quantize_float(torch.tensor([-1.0, 1.0, 0.99, -1.01, 0.004, 0.0039]), Q17)
    assert q.tolist() == [-128, 127, 127, -128, 1, 0]
    assert clipped == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_quantize_rejects_non_finite(bad):
    with pytest.raises(ValueError, match=r"holding 1 NaN or infinite value\(s\)\."):
        quantize_float(torch.tensor([0.0, bad, 1.0]), Q88)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(finite, st.integers(2, 24).flatmap(lambda b: st.tuples(st.just(b), st.integers(0, b - 1))))
def test_quantize_property_exact_rule(x, fmt_args):
    fmt = FixedFormat(*fmt_args)
    q, clipped = quantize_float(torch.tensor([x], dtype=torch.float64), fmt)
    exact = exact_round_half_up(Fraction(x) * (1 << fmt.frac))
    assert int(q[0]) == min(max(exact, fmt.min_int), fmt.max_int)
    assert clipped == int(not fmt.min_int <= exact <= fmt.max_int)


@given(st.floats(min_value=-128.0, max_value=127.99, allow_nan=False))
def test_quantize_error_is_at_most_half_an_lsb_inside_the_range(x):
    q, clipped = quantize_float(torch.tensor([x], dtype=torch.float64), Q88)
    assert clipped == 0
    assert abs(float(dequantize(q, 8)[0]) - x) <= Q88.lsb / 2


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=50))
def test_quantize_dequantize_round_trip_is_identity(values):
    q = t64(values)
    back, clipped = quantize_float(dequantize(q, 8), Q88)
    assert clipped == 0 and torch.equal(back, q)


@given(finite, finite)
def test_quantize_is_monotone(a, b):
    assume(a <= b)
    qa, _ = quantize_float(torch.tensor([a], dtype=torch.float64), Q88)
    qb, _ = quantize_float(torch.tensor([b], dtype=torch.float64), Q88)
    assert int(qa[0]) <= int(qb[0])


# --------------------------------------------------------------------------------------------------
# Activation tables
def exact_table_entry(fn, i, in_frac, out_frac):
    return math.floor(fn(i / 2.0**in_frac) * 2.0**out_frac + 0.5)


def test_default_tables_shape_and_extremes():
    cfg = DeltaGRUConfig(40, 128)
    sig, tnh = cfg.sigmoid, cfg.tanh
    assert sig.size == tnh.size == 1024
    assert (sig.in_bits, sig.in_frac, sig.out_frac) == (10, 6, 8)
    assert (tnh.in_bits, tnh.in_frac, tnh.out_frac) == (10, 7, 8)
    # Address = index mod 1024: 0 is f(0), 511 the largest input, 512 the smallest (-2**9).
    assert sig.values[0] == 128 and sig.values[511] == 256 and sig.values[512] == 0
    assert tnh.values[0] == 0 and tnh.values[511] == 256 and tnh.values[512] == -256
    assert sig.out_bits == 10 and tnh.out_bits == 10
    assert min(sig.values) == 0 and max(sig.values) == 256
    assert min(tnh.values) == -256 and max(tnh.values) == 256


@pytest.mark.parametrize("kind", ["sigmoid", "tanh"])
@pytest.mark.parametrize("in_bits, in_frac, out_frac", [(10, 6, 8), (10, 7, 8), (8, 4, 6),
                                                        (12, 8, 10), (4, 0, 3)])
def test_tables_entries_symmetry_and_monotonicity(kind, in_bits, in_frac, out_frac):
    maker, fn = {"sigmoid": (sigmoid_table, lambda v: 1 / (1 + math.exp(-v))),
                 "tanh": (tanh_table, math.tanh)}[kind]
    tab = maker(in_bits, in_frac, out_frac)
    half = 1 << (in_bits - 1)
    signed = list(range(-half, half))
    vals = [tab.values[i % tab.size] for i in signed]
    assert vals == [exact_table_entry(fn, i, in_frac, out_frac) for i in signed]
    assert vals == sorted(vals)  # monotone non-decreasing in the signed index
    one = 1 << out_frac
    for i in range(1, half):
        if kind == "sigmoid":
            assert tab.values[i] + tab.values[-i % tab.size] == one
        else:
            assert tab.values[-i % tab.size] == -tab.values[i]


def test_table_lookup_rounds_and_saturates_the_index():
    cfg = DeltaGRUConfig(4, 4)
    sig = cfg.sigmoid
    acc_frac = cfg.acc_frac  # 15; sigmoid index has 6 fraction bits -> shift by 9
    half = 1 << 8  # half an index LSB in accumulator units
    pre = t64([0, half - 1, half, -half, -half - 1, 511 << 9, (511 << 9) + half, 1 << 40,
               -(512 << 9), -(1 << 40)])
    assert sig.index(pre, acc_frac).tolist() == [0, 0, 1, 0, -1, 511, 511, 511, -512, -512]
    out = sig.lookup(pre, acc_frac).tolist()
    assert out[:5] == [128, 128, sig.values[1], 128, sig.values[-1]]
    assert out[5:8] == [256, 256, 256] and out[8:] == [0, 0]
    tnh = cfg.tanh  # index has 7 fraction bits, input in act format (8 fraction bits): shift 1
    pre = t64([1, -1, 2, 1023, 1024, 32767, -32768])
    assert tnh.index(pre, 8).tolist() == [1, 0, 1, 511, 511, 511, -512]
    assert tnh.lookup(t64([32767, -32768]), 8).tolist() == [256, -256]


def test_tables_are_cached_objects():
    assert sigmoid_table(10, 6, 8) is sigmoid_table(10, 6, 8)
    assert DeltaGRUConfig(4, 4).tanh is DeltaGRUConfig(9, 9).tanh


@pytest.mark.parametrize("in_bits", [3, 15])
def test_table_size_limits(in_bits):
    with pytest.raises(ValueError, match=rf"4 to 14 index bits; got in_bits={in_bits}\."):
        sigmoid_table(in_bits, 2, 8)


# --------------------------------------------------------------------------------------------------
# Accumulator width
@pytest.mark.parametrize("fan_in", [1, 2, 3, 13 + 37, 40 + 128, 255, 256, 1024 + 1024])
def test_accumulator_never_overflows_and_is_tight(fan_in):
    act, w, b = Q88, Q17, Q88
    acc_frac = act.frac + w.frac
    bits = accumulator_bits_needed(fan_in, act, w, b, acc_frac)
    acc = FixedFormat(bits, acc_frac)
    shift = acc_frac - b.frac
    # Extremes of bias + sum_k w_k * v_k over every representable operand.
    most = (b.max_int << shift) + fan_in * (w.min_int * act.min_int)
    least = (b.min_int << shift) + fan_in * min(w.min_int * act.max_int, w.max_int * act.min_int)
    assert acc.min_int <= least and most <= acc.max_int
    # One bit fewer would overflow on the largest sum, except when the bound is a power of two.
    narrower = FixedFormat(bits - 1, acc_frac)
    if (fan_in + 1) & fan_in:
        assert most > narrower.max_int


def test_config_accumulator_width_covers_every_block():
    cfg = DeltaGRUConfig(40, 128)
    assert cfg.acc_bits == accumulator_bits_needed(168, cfg.act, cfg.weight, cfg.bias, 15) == 31
    wide_head = DeltaGRUConfig(4, 8, output_size=3)
    assert wide_head.acc_bits == accumulator_bits_needed(12, Q88, Q17, Q88, 15)
    with pytest.raises(ConfigError, match=r"acc_bits must be an integer from 31 to 64; got 24\."):
        DeltaGRUConfig(40, 128, acc_bits=24)
    assert DeltaGRUConfig(40, 128, acc_bits=40).acc_bits == 40


# --------------------------------------------------------------------------------------------------
# Config validation and JSON
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_size": 0}, r"input_size must be an integer from 1 to 4096 \(.*\); got 0\."),
        ({"input_size": 2.5}, r"input_size must be an integer from 1 to 4096 .*; got 2\.5\."),
        ({"hidden_size": 5000}, r"hidden_size must be an integer from 1 to 2048 .*; got 5000\."),
        ({"hidden_size": True}, r"hidden_size must be an integer from 1 to 2048 .*; got True\."),
        ({"num_layers": 9}, r"num_layers must be an integer from 1 to 8 \(.*\); got 9\."),
        ({"output_size": -1}, r"output_size must be an integer from 0 to 4095 .*; got -1\."),
        ({"lanes": 2}, r"lanes must be an integer from 3 to 1536 \(.*\); got 2\."),
        ({"enc_width": 3}, r"enc_width must be a power of two \(1, 2, 4, \.\.\.\); got 3\."),
        ({"act_width": 6}, r"act_width must be a power of two \(1, 2, 4, \.\.\.\); got 6\."),
        ({"lanes": 15}, r"lanes must be a multiple of 3 x act_width = 6 .* got lanes=15"),
        ({"lanes_per_bank": 5}, r"lanes_per_bank must divide lanes=12; got 5\."),
        ({"act": (32, 8)}, r"act format must have at most 24 bits .* got FixedFormat\(bits=32"),
        ({"act": (16, 0)}, r"at least 1 fraction bit; got FixedFormat\(bits=16, frac=0\)"),
        ({"weight": (20, 7)}, r"weight format must have at most 18 bits \(.*\); got FixedFormat"),
        ({"bias": (24, 16)}, r"bias\.frac=16 cannot exceed .* act\.frac \+ weight\.frac = 15\."),
        ({"sigmoid_in": (10, 9)}, r"sigmoid_in must have .* at most act\.frac=8 fraction bits"),
        ({"theta_x": (1, 2, 3)}, r"theta_x needs one threshold per layer \(1\); got 3: "),
        ({"theta_h": (-1,)}, r"theta_h must be an integer from 0 to 65535; got -1\."),
        ({"theta_head": 70000}, r"theta_head must be an integer from 0 to 65535; got 70000\."),
        ({"clock_mhz": 0}, r"clock_mhz must be from 1 to 1000; got 0\."),
        ({"capture": "yes"}, r"capture must be true or false; got 'yes'\."),
        ({"act": (1, 0)}, r"2 to 48 bits; got bits=1\."),
    ],
)
def test_config_validation_messages(kwargs, match):
    args = {"input_size": 4, "hidden_size": 8}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as err:
        DeltaGRUConfig(**args)
    assert str(err.value).endswith(".")  # a full sentence


def test_config_thresholds_broadcast():
    cfg = DeltaGRUConfig(4, 8, num_layers=3, theta_x=(5,), theta_h=7)
    assert cfg.theta_x == (5, 5, 5) and cfg.theta_h == (7, 7, 7)
    assert DeltaGRUConfig(4, 8, num_layers=2).theta_x == (0, 0)


def test_config_json_round_trip(tmp_path):
    cfg = DeltaGRUConfig(13, 37, 2, 5, theta_x=(3, 4), theta_h=(5, 6), theta_head=2, lanes=24,
                         act_width=4, enc_width=8, lanes_per_bank=6, act=(16, 9),
                         sigmoid_in=(9, 5), clock_mhz=80.0)
    text = cfg.to_json()
    assert json.loads(text)["format_version"] == 1
    assert DeltaGRUConfig.from_json(text) == cfg
    path = tmp_path / "cfg.json"
    path.write_text(text)
    assert DeltaGRUConfig.load(path) == cfg
    again = cfg.replace(hidden_size=64)
    assert again.acc_bits == again.acc_bits_needed and again.hidden_size == 64


def test_config_from_dict_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"Unknown config key\(s\) \['hiden_size'\]; allowed"):
        DeltaGRUConfig.from_dict({"input_size": 3, "hidden_size": 4, "hiden_size": 4})
    with pytest.raises(ConfigError, match=r"missing the required key 'hidden_size'\."):
        DeltaGRUConfig.from_dict({"input_size": 3})
    with pytest.raises(ConfigError, match=r"format_version 7; this deltahw reads version 1\."):
        DeltaGRUConfig.from_dict({"input_size": 3, "hidden_size": 4, "format_version": 7})
    with pytest.raises(ConfigError, match=r"A config must be a JSON object; got list\."):
        DeltaGRUConfig.from_dict([1, 2])
    with pytest.raises(ConfigError, match=r"does not exist\."):
        DeltaGRUConfig.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"is not valid JSON"):
        DeltaGRUConfig.load(bad)
