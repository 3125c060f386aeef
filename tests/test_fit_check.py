"""The fit check's estimate against recorded open-synthesis results
(``docs/benchmarks/fit_check.json``).

The measurements are data from real builds (not computed by the estimator); the estimate must stay
within 10 % of those of the current gateware (``current_gateware``: the rows measured on it) on LUTs
and FFs, and equal them on block RAM and multipliers, on both families. Rows of earlier gateware are
kept as history (rendered in ``fit_check.md``), not held to the estimate: the estimator is fitted to
what the generator emits today.
"""

import json
from pathlib import Path

import pytest

from deltahw.boards import PARTS
from deltahw.model import load_model
from deltahw.resources import estimate

REPO = Path(__file__).resolve().parent.parent
DATA = json.loads((REPO / "docs" / "benchmarks" / "fit_check.json").read_text())
CURRENT = DATA["current_gateware"]
ROWS = [r for r in DATA["measurements"] if r["gateware"] == CURRENT]


@pytest.fixture(scope="module")
def config():
    return load_model(REPO / DATA["model"]).config


def _row_id(r):
    return f"{r['part']}-A{r['act_width']}" + ("-capture" if r.get("capture", False) else "")


@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_estimate_within_10_percent(config, row):
    est = estimate(config.replace(act_width=row["act_width"], capture=row.get("capture", False)),
                   PARTS[row["part"]])
    for key in ("luts", "ffs"):
        err = getattr(est, key) / row[key] - 1
        assert abs(err) <= 0.10, f"{key}: estimate {getattr(est, key)} vs {row[key]} ({err:+.1%})"
    assert est.bram == row["bram"]
    assert est.dsps == row["dsps"]


def test_both_families_covered():
    assert {PARTS[r["part"]].family for r in ROWS} == {"xc7", "ecp5"}


def test_current_gateware_spans_activation_widths():
    """The per-unit costs are fitted across A: the current gateware is measured at A = 4, 8, 16
    on the xc7 (one family is enough to pin the slope; the ECP5 factor scales it)."""
    assert {r["act_width"] for r in ROWS if PARTS[r["part"]].family == "xc7"} >= {4, 8, 16}


class _Series7:
    """A stand-in platform: the core asks its platform for nothing but ``family``."""

    family = "series7"


@pytest.mark.parametrize("layers,head", [(1, True), (2, False), (3, True)])
def test_state_memories_are_block_ram_on_series7_and_in_the_estimate(layers, head):
    """The h state memories carry ``ram_style = "block"`` on a Xilinx 7-series platform only
    (``state_memory_attrs``), all 2 L + targets of them and no other memory, and the estimate
    counts exactly those in block RAM on an xc7 part and in LUT RAM on an ECP5 part."""
    from amaranth.back import rtlil

    from deltahw.config import DeltaGRUConfig
    from deltahw.gateware import Forms
    from deltahw.gateware.core import DeltaGRUCore

    cfg = DeltaGRUConfig(3, 12, layers, 2 if head else 0, lanes=12, lanes_per_bank=4,
                         act_width=4, enc_width=4)
    n_state = 2 * layers + (layers if head else layers - 1)
    marked = rtlil.convert(DeltaGRUCore(cfg), platform=_Series7()).count('\\ram_style "block"')
    assert marked == n_state
    assert rtlil.convert(DeltaGRUCore(cfg)).count("ram_style") == 0
    forced = DeltaGRUCore(cfg, forms=Forms.for_family("series7"))  # as the xc7 simulation runs
    assert rtlil.convert(forced).count('\\ram_style "block"') == n_state
    for part, kind in (("xc7a35t", "bram"), ("LFE5U-85F", "lutram")):
        rows = {mm[0]: mm for mm in estimate(cfg, PARTS[part]).memories}
        assert rows["h_state"][3] == n_state and rows["h_state"][4] == kind
        assert rows["h_queues"][4] == "lutram"  # the shallow memories that are not state stay


def test_generate_family_picks_the_forms_and_refuses_an_unknown_one(monkeypatch):
    """``python -m deltahw.generate --family`` and the regression's ``FORMS``: ``series7`` gives
    the Xilinx forms (block-RAM state memories, plain h encoders: no registered bounds), the
    default the portable ones; an unknown family is a one-sentence error naming it."""
    from deltahw.config import ConfigError, DeltaGRUConfig
    from deltahw.generate import verilog_source
    from deltahw.verify.sim import forms_family

    cfg = DeltaGRUConfig(3, 12, 1, 2, lanes=12, lanes_per_bank=4, act_width=4, enc_width=4)
    portable, xc7 = verilog_source(cfg), verilog_source(cfg, family="series7")
    assert "ram_style" not in portable and xc7.count('ram_style = "block"') == 3
    # The registered bounds of a vhat_ahead encoder (``olo``/``ohi``) exist in the portable form
    # only.
    assert "olo0" in portable and "olo0" not in xc7
    with pytest.raises(ConfigError, match="'virtex2'"):
        verilog_source(cfg, family="virtex2")
    monkeypatch.setenv("FORMS", "series7")
    assert forms_family() == "series7"
    monkeypatch.setenv("FORMS", "ecp9")
    with pytest.raises(ValueError, match="FORMS must be one of portable, series7; got 'ecp9'"):
        forms_family()
