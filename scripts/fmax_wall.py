"""Where the paths that a faster clock would fail are: a static timing pass over a nextpnr-ecp5
routed design's JSON report.

nextpnr prints one critical path per clock and a slack histogram, which says how many endpoints
a faster clock would fail (``deltahw.build.endpoints_slower_than``) but not where they are. This
script rebuilds the arrival time of every endpoint from the report's per-net routing delays
(``--report FILE --detailed-timing-report``) and a table of cell delays, and counts the endpoints
slower than each clock by the module of the path's start and end (the cell name's hierarchy,
``top.core.act.u3_...`` -> ``core.act``).

The cell delays are the ones nextpnr-ecp5 reports on this design's critical paths at speed grade
6 (``docs/benchmarks/fmax/reports/*.nextpnr.log``): a flip-flop's clock-to-out 0.52 ns, a LUT4
0.24 ns, a carry cell 0.45 ns into its carry out (0.07 along the chain) and 0.44 ns into its sum,
a wide-function mux 0.17-0.26 ns, a block RAM's registered read 5.83 ns, an unregistered
multiplier 3.93 ns. Each cell's arcs are taken from every input to every output of its kind (an
upper bound where a cell has fewer arcs), so an arrival can be slightly pessimistic; the script
prints its worst path's delay beside nextpnr's for comparison.

Usage: ``python scripts/fmax_wall.py REPORT.json [--clocks 80,90,100] [--depth 2]
[--json OUT.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict

#: Clock-to-out (ns) of the cells that start paths, by kind.
CLK_TO_OUT = {"ff": 0.52, "ebr": 5.83, "mult_reg": 0.74}


def setup_of(kind: str, port: str) -> float:
    """Setup (ns) of an endpoint port: a flip-flop's set/reset 0.42 (its data 0), a LUT RAM's
    write enable 0.39 (its data and address 0), a block RAM's or multiplier's input 0.08."""
    if kind == "ff":
        return 0.42 if port.startswith("LSR") else 0.0
    if kind == "comb":
        return 0.39 if port.startswith("WRE") else 0.0
    return 0.08
#: The design clock's endpoints only: ports that are inputs of sequential elements.
FF_INPUTS = ("DI", "M", "CE", "LSR")


def kind_of(cell: str, ports: set) -> str:
    """A cell's kind, from its name and the ports the report names."""
    if "MULT18X18D" in cell:
        return "mult"
    if "DP16KD" in cell or any(p.startswith(("DOA", "DOB")) for p in ports):
        return "ebr"
    if "RAMW" in cell or any(p.startswith(("WDO", "WADO")) for p in ports):
        return "ramw"
    if "Q" in ports or "TRELLIS_FF" in cell:
        return "ff"
    return "comb"


def arc_delay(kind: str, cell: str, in_port: str, out_port: str) -> float | None:
    """Delay (ns) from ``in_port`` to ``out_port`` of a combinational cell, None if no arc."""
    if kind == "mult":
        return 3.93 if out_port.startswith("P") else None
    if kind == "ramw":
        return 0.0
    if kind != "comb":
        return None
    if in_port.startswith(("WD", "WAD", "WRE", "WCK")):
        return None  # LUT RAM write ports: endpoints
    if out_port == "FCO":
        if in_port == "FCI":
            return 0.07 if cell.endswith("COMB0") else 0.0
        return 0.45
    if out_port == "F":
        return 0.44 if "CCU2" in cell else 0.24
    if out_port == "OFX":
        return 0.17 if in_port.startswith("F") else 0.26
    return 0.24


def analyse(report: dict, clocks, depth: int = 2) -> dict:
    nets = report.get("detailed_net_timings")
    if not nets:
        raise SystemExit("error: the report has no detailed_net_timings; run nextpnr with "
                         "--report FILE --detailed-timing-report.")
    ports = defaultdict(set)  # cell -> ports named
    fanin = defaultdict(list)  # (cell, in port) -> [(driver cell, driver port, route delay)]
    outs = defaultdict(set)
    for n in nets:
        d = (n["driver"], n["port"])
        ports[d[0]].add(d[1])
        outs[d[0]].add(d[1])
        for e in n["endpoints"]:
            ports[e["cell"]].add(e["port"])
            fanin[(e["cell"], e["port"])].append((d[0], d[1], float(e["delay"][1])))
    kinds = {c: kind_of(c, p) for c, p in ports.items()}
    ins = defaultdict(set)
    for (c, p) in fanin:
        ins[c].add(p)

    memo: dict = {}

    def out_arrival(cell, port):
        """(arrival ns, start cell) at a cell's output port."""
        key = (cell, port)
        if key in memo:
            return memo[key]
        k = kinds[cell]
        if k in ("ff", "ebr"):
            res = (CLK_TO_OUT[k], cell)
        else:
            memo[key] = (0.0, cell)  # a combinational loop (none expected) stops here
            best = (0.0, cell)
            for p in ins[cell]:
                a = arc_delay(k, cell, p, port)
                if a is None:
                    continue
                t, s = in_arrival(cell, p)
                if t + a > best[0]:
                    best = (t + a, s)
            res = best
        memo[key] = res
        return res

    def in_arrival(cell, port):
        best = (0.0, cell)
        for dc, dp, r in fanin[(cell, port)]:
            t, s = out_arrival(dc, dp)
            if t + r > best[0]:
                best = (t + r, s)
        return best

    sys.setrecursionlimit(100000)
    endpoints = []
    for (cell, port) in fanin:
        k = kinds[cell]
        is_end = ((k == "ff" and port.startswith(FF_INPUTS))
                  or (k == "ebr") or (k == "comb" and port.startswith(("WD", "WAD", "WRE"))))
        if not is_end:
            continue
        t, start = in_arrival(cell, port)
        endpoints.append((t + setup_of(k, port), start, cell, port))
    endpoints.sort(reverse=True)

    def module(cell):
        parts = cell.split(".")
        return ".".join(parts[1:1 + depth]) if parts[0] == "top" else parts[0][:40]

    result = {"endpoints": len(endpoints), "worst_ns": endpoints[0][0] if endpoints else None,
              "worst": endpoints[0][1:] if endpoints else None, "clocks": {}}
    for mhz in clocks:
        period = 1e3 / mhz
        slow = [e for e in endpoints if e[0] > period]
        pairs = Counter((module(s), module(c)) for _, s, c, _ in slow)
        result["clocks"][str(mhz)] = {"slower": len(slow),
                                      "by_module": [[a, b, n] for (a, b), n in
                                                    pairs.most_common()]}
    return result


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
    res = analyse(report, clocks, args.depth)
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
