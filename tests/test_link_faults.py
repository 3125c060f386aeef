"""A fast sample of the host link's fault-injection campaign (the full one: ``make link-faults``).

Against the Python reference device: single faults of every kind at a spread of frame positions in
both directions, and random multi-fault schedules. Against the RTL bridge (Amaranth simulation,
the real :class:`deltahw.gateware.bridge.Bridge`): a loss, a damaged answer, a duplicate, a garbage
burst and a device reset. Every schedule must end bit-exact, or in a ``DeviceError`` after which
the same driver recovers on a clean line (see :func:`deltahw.link_faults.run_schedule`).
"""

from deltahw import link_faults as lf
from deltahw.linksim import FAULT_KINDS, Schedule


def test_reference_device_sample():
    report = lf.campaign(which=("ref",), quick=True, progress=lambda msg: None)
    [t] = report["targets"]
    assert t["failed"] == 0, t["failures"]
    assert t["schedules"] >= 6 * 2 * 5
    assert t["outcomes"].get("exact", 0) > 0 and t["outcomes"].get("error", 0) > 0
    assert set(k.split(":")[1] for k in t["faults_injected"]) == set(FAULT_KINDS)
    assert t["max_sim_seconds"] <= t["bound_sim_seconds"]


def test_rtl_bridge_sample(tmp_path):
    [t] = lf._targets(("rtl",), T_ref=6, T_rtl=6)
    lf._clean_run(t)
    bound = t.clean_sim_seconds * 3 + 12 * t.driver_kw["timeout"] * (t.driver_kw["retries"] + 1)
    mid = {d: n // 2 for d, n in t.clean_frames.items()}
    schedules = [Schedule(faults={("down", mid["down"]): "drop", ("up", mid["up"] + 3): "damage"}),
                 Schedule(faults={("up", mid["up"]): "dup", ("down", mid["down"] + 2): "garbage",
                                  ("down", mid["down"] + 5): "truncate"}),
                 Schedule(faults={("down", mid["down"]): "reset"})]
    recs = [lf.run_schedule(t, s, bound) for s in schedules]
    assert all(r["ok"] for r in recs), recs
    assert [r["outcome"] for r in recs] == ["exact", "exact", "error"]
    assert recs[2]["error"] == "DeviceResetError"
    lf.write_report({"quick": True, "seed": 0, "fault_kinds": list(FAULT_KINDS), "targets": []},
                    tmp_path)
    assert (tmp_path / "report.json").is_file() and (tmp_path / "README.md").is_file()
