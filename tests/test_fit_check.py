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


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['part']}-A{r['act_width']}" for r in ROWS])
def test_estimate_within_10_percent(config, row):
    est = estimate(config.replace(act_width=row["act_width"]), PARTS[row["part"]])
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
