"""Config limits follow from the hardware (register fields, 32-bit bus): issue 10, defect 5."""

import json

import pytest

from deltahw import generate, regmap
from deltahw.config import LIMITS, MAX_ACC_BITS, ConfigError, DeltaGRUConfig
from deltahw.generate import main as generate_main


def test_bias_wider_than_the_bus_is_refused():
    """PARAM_DATA carries 32 bits: a 33-bit bias could not be written at run time."""
    DeltaGRUConfig(4, 8, bias=(regmap.BUS_DATA_BITS, 15))
    with pytest.raises(ConfigError, match=r"bias format must have at most 32 bits .*PARAM_DATA"):
        DeltaGRUConfig(4, 8, bias=(regmap.BUS_DATA_BITS + 1, 15))
    # The host and the regression convert each parameter with to_word, which refuses the rest.
    assert regmap.to_word(-1) == (1 << regmap.BUS_DATA_BITS) - 1
    assert regmap.to_word(-(1 << 31)) == 1 << 31
    for bad in (1 << 32, -(1 << 31) - 1):
        with pytest.raises(regmap.RegmapError, match="does not fit"):
            regmap.to_word(bad)


def test_widest_legal_config_has_a_reloadable_accumulator():
    """acc_bits derived from the widest legal formats stays within what a reload accepts."""
    lim = {k: v[1] for k, v in LIMITS.items()}
    cfg = DeltaGRUConfig(lim["input_size"], lim["hidden_size"], output_size=lim["output_size"],
                         act=(lim["act.bits"], 8), weight=(lim["weight.bits"], 7),
                         bias=(lim["bias.bits"], 15), lanes=1536, act_width=32)
    assert cfg.acc_bits <= MAX_ACC_BITS
    assert DeltaGRUConfig.from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(ConfigError, match=r"acc_bits must be an integer from \d+ to 64"):
        DeltaGRUConfig(4, 8, acc_bits=MAX_ACC_BITS + 1)


def test_output_size_must_fit_its_shape_field():
    """O = 4096 does not fit SHAPE1.output_size (12 bits): the host would decode O = 0."""
    field = regmap.by_name(1)["SHAPE1"].field("output_size")
    with pytest.raises(ConfigError, match=rf"output_size must be an integer from 0 to {field.max} "
                                          r"\(.*12-bit SHAPE1\.output_size register field\)"):
        DeltaGRUConfig(4, 8, output_size=field.max + 1)
    cfg = DeltaGRUConfig(4, 8, output_size=field.max)
    shape1 = regmap.by_name(1)["SHAPE1"]
    word = shape1.pack(num_layers=1, output_size=cfg.output_size, lanes=cfg.lanes,
                       act_width_log2=cfg.act_width.bit_length() - 1)
    assert shape1.unpack(word)["output_size"] == field.max
    assert shape1.unpack(word)["lanes"] == cfg.lanes


@pytest.mark.parametrize("name", sorted(n for n, v in LIMITS.items() if "register field" in v[2]))
def test_field_limits_are_the_field_widths(name):
    lo, hi, why = LIMITS[name]
    reg_name, field_name = why.split()[-3].split(".")
    f = regmap.by_name(1)[reg_name].field(field_name)
    value = hi if name != "act_width" else hi.bit_length() - 1
    assert regmap.by_name(1)[reg_name].pack(**{field_name: value}) >> f.offset == value
    if name != "act_width":
        assert hi <= f.max


def test_lanes_fit_the_lane_select_field():
    lane = regmap.by_name(1)["PARAM_SEL"].field("lane")
    assert LIMITS["lanes"][1] - 1 <= lane.max
    assert LIMITS["num_layers"][1] <= regmap.MAX_LAYERS


def test_one_input_one_layer_no_head_passes_lint(tmp_path):
    """I = 1, L = 1, no head: a 1-bit queue count made a constant comparison (CMPCONST)."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"input_size": 1, "hidden_size": 4, "num_layers": 1,
                               "output_size": 0, "lanes": 6}))
    out = tmp_path / "rtl"
    assert generate_main([str(cfg), "--out", str(out), "--lint"]) == 0


def test_generate_lint_failure_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """A lint failure after writing ends in one error message and exit 1, not a traceback."""
    fake = tmp_path / "verilator"
    fake.write_text("#!/bin/sh\necho '%Error: something is wrong'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(generate, "verilator_bin", lambda: fake)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"input_size": 3, "hidden_size": 4, "lanes": 6}))
    out = tmp_path / "rtl"
    assert generate_main([str(cfg), "--out", str(out), "--lint"]) != 0
    err = capsys.readouterr().err
    assert "error: verilator --lint-only failed on" in err
    assert "something is wrong" in err and "Traceback" not in err


def test_wide_sigmoid_index_range_builds_its_table():
    """make fuzz (seed 7301, config 3): sigmoid_in Q11.1 indexes down to -1024, where exp overflowed
    (OverflowError from a legal config). The table saturates to 0 and 2**act.frac instead."""
    cfg = DeltaGRUConfig(16, 4, act=(9, 5), sigmoid_in=(12, 1), tanh_in=(7, 4))
    vals = cfg.sigmoid.values
    assert min(vals) == 0 and max(vals) == 1 << cfg.act.frac
    # Unchanged wherever the plain formula worked (here: the default formats).
    import math

    default = DeltaGRUConfig(4, 8)
    fmt = default.sigmoid_in
    size = 1 << fmt.bits
    plain = [math.floor(1.0 / (1.0 + math.exp(-((a - size if a >= size // 2 else a)
                                                 / 2.0**fmt.frac))) * 2.0**default.act.frac + 0.5)
             for a in range(size)]
    assert list(default.sigmoid.values) == plain
