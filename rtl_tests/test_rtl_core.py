"""RTL regression of the generated ``deltahw_core``: every scenario on every configuration.

For each configuration (the built-in matrix of ``deltahw.verify.vectors.CASES``, or
``CONFIG=path``):

* the generator's output is deterministic, its ``.mem`` files equal the exporter's and its Verilog
  passes ``verilator --lint-only``;
* every scenario of ``deltahw.verify.vectors.SCENARIOS`` runs in cocotb against the golden model,
  bit for bit on every output beat and exactly on the cycle and fired-delta counters.
"""

from __future__ import annotations

import filecmp
import json
import tempfile
import warnings
from pathlib import Path

import pytest
from deltahw.verify.sim import _generate, build_core, run_scenario, selected_cases
from deltahw.verify.vectors import scenarios_for

CASES = selected_cases()


def _case_id(case):
    return case.name


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_generated_files(case):
    """Deterministic generation; .mem files identical to the exporter's; manifest config."""
    from deltahw.export import bank_files

    build = build_core(case)
    rtl = build.rtl_dir
    manifest = json.loads((rtl / "manifest.json").read_text())
    assert manifest["config"] == build.model.config.to_dict(), "manifest config differs"
    for name, (text, _, depth) in bank_files(build.model).items():
        path = rtl / name
        assert path.is_file(), f"the generator wrote no {name}"
        assert path.read_text() == text, f"{name} differs from deltahw.export's ({depth} words)"
    with tempfile.TemporaryDirectory() as tmp:
        again = Path(tmp) / "rtl"
        _generate(build.model, again)
        cmp = filecmp.dircmp(rtl, again)
        assert not (cmp.left_only or cmp.right_only), (
            f"generating twice gave different file sets: {cmp.left_only} vs {cmp.right_only}")
        _, mismatch, errors = filecmp.cmpfiles(rtl, again, cmp.common_files, shallow=False)
        assert not mismatch and not errors, f"generation is not deterministic: {mismatch}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_verilator_lint(case):
    """The generated Verilog passes ``verilator --lint-only`` (with the generator's waivers)."""
    from deltahw.generate import lint

    lint(build_core(case).rtl_dir)


@pytest.mark.parametrize(("case", "scenario"),
                         [(c, s) for c in CASES for s in scenarios_for(c)],
                         ids=[f"{c.name}-{s}" for c in CASES for s in scenarios_for(c)])
def test_core(case, scenario):
    """One scenario: outputs bit-exact, CYCLES_LAST / FIRED_LAST / totals exact."""
    result = run_scenario(case, scenario)
    rep = result.report
    assert rep["beats_checked"] > 0, "no output beat was checked"
    for what in result.not_exercised:
        warnings.warn(f"{case.name}/{scenario} does not exercise {what}.", UserWarning,
                      stacklevel=1)


def test_regression_catches_mismatches():
    """Against the real core, corrupted expectations must fail with precise messages.

    One bit of one expected output beat, one expected ``CYCLES_LAST`` and one expected
    ``FIRED_LAST`` value are changed; the run must report exactly these three, each with its
    sequence and timestep (so a real RTL bug is reported as precisely).
    """
    from deltahw.verify.sim import SimulationFailed
    from deltahw.verify.vectors import build_scenario, write_vectors

    case = CASES[0]
    build = build_core(case)
    sc = build_scenario(case, "typical", build.model)
    seq = next(o for o in sc.ops if o["op"] == "sequence")
    T = len(seq["outputs"])
    assert T >= 4
    t_out, t_cyc, t_fired = 1, 2, 3
    seq["outputs"][t_out][0] ^= 1
    seq["cycles"][t_cyc] += 1
    seq["fired_x"][t_fired][0] += 1
    vectors = build.root / "vectors" / "selftest.json"
    write_vectors(case, sc, vectors, seed=7)
    with pytest.raises(SimulationFailed) as info:
        build.run(vectors, "selftest")
    msg = str(info.value)
    assert "3 error(s)" in msg, msg
    assert f"sequence A timestep {t_out} beat 0: expected payload" in msg, msg
    assert (f"sequence A timestep {t_cyc}: CYCLES_LAST expected {seq['cycles'][t_cyc]}"
            in msg), msg
    assert (f"sequence A timestep {t_fired}: FIRED_LAST0 expected "
            f"x={seq['fired_x'][t_fired][0]}" in msg), msg
