"""Where the endpoints that a faster clock would fail are, in a nextpnr-ecp5 JSON report written
with ``--report FILE --detailed-timing-report`` (:func:`deltahw.slack.where_slower`).

Usage: ``python scripts/fmax_wall.py REPORT.json [--clocks 80,90,100] [--depth 3] [--top 12]
[--json OUT.json]``. An ECP5 build (``python -m deltahw.build ... --board ulx3s``) writes such a
report as ``nextpnr_report.json`` and puts the same counts in its ``report.json``.
"""

from __future__ import annotations

import argparse
import json

from deltahw.slack import where_slower


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", help="nextpnr --report JSON with --detailed-timing-report")
    ap.add_argument("--clocks", default="80,90,100", help="clocks in MHz (comma-separated)")
    ap.add_argument("--depth", type=int, default=2, help="hierarchy levels of a module name")
    ap.add_argument("--top", type=int, default=12, help="module pairs printed per clock")
    ap.add_argument("--json", help="write the result here too")
    args = ap.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    clocks = [float(c) for c in args.clocks.split(",")]
    try:
        res = where_slower(report, clocks, args.depth)
    except ValueError as e:
        print(f"error: {e}")
        return 2
    crit = report.get("critical_paths") or []
    npr = sum(seg["delay"] for seg in crit[0]["path"]) if crit else None
    print(f"{res['endpoints']} endpoints; worst arrival {res['worst_ns']:.2f} ns "
          f"({res['worst'][0]} -> {res['worst'][1]}.{res['worst'][2]})"
          + (f"; nextpnr's critical path {npr:.2f} ns" if npr is not None else ""))
    for mhz, c in res["clocks"].items():
        print(f"\n{mhz} MHz: {c['slower']} endpoints slower")
        for a, b, n in c["by_module"][:args.top]:
            print(f"  {n:6d}  {a} -> {b}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
