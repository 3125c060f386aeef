"""Where the paths that a faster clock would fail are, from a nextpnr-ecp5 routed design's JSON
report.

nextpnr prints one critical path per clock and a slack histogram, which says how many endpoints
a faster clock would fail (``deltahw.build.endpoints_slower_than``) but not where they are. Its
JSON report with ``--detailed-timing-report`` gives, for every sink of every net, the arrival
time there (the worst path from a launching register, routing and cells included: the largest
is the critical path). This script takes the arrivals at the design clock's endpoints (the data,
enable and reset inputs of flip-flops, the inputs of block RAMs and the write ports of LUT RAMs),
adds their setup time, traces each one back through the latest input of every combinational
cell to the register or block RAM that launched it, and counts the endpoints slower than each
clock by the modules of the path's start and end (the cell name's hierarchy,
``top.core.act.u3_...`` -> ``core.act``).

The report leaves out some nets (those driven by a wide-function mux's output, for one), so a
trace can stop at a combinational cell, which then stands for the path's start; the arrivals,
and so the counts and the end modules, are nextpnr's own (the largest arrival is its critical
path, printed beside it).

Usage: ``python scripts/fmax_wall.py REPORT.json [--clocks 80,90,100] [--depth 2] [--top 12]
[--json OUT.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict

#: Ports of a flip-flop that end a path (its clock does not).
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


def setup_of(kind: str, port: str) -> float:
    """Setup (ns) of an endpoint port, as nextpnr-ecp5 reports them on this design's critical
    paths at speed grade 6: a flip-flop's set/reset 0.42 (its data and enable 0), a LUT RAM's
    write enable 0.39 (its data and address 0), a block RAM's input 0.08."""
    if kind == "ff":
        return 0.42 if port.startswith("LSR") else 0.0
    if kind == "comb":
        return 0.39 if port.startswith("WRE") else 0.0
    return 0.08


def is_endpoint(kind: str, port: str) -> bool:
    if kind == "ff":
        return port.startswith(FF_INPUTS)
    if kind == "ebr":
        return not port.startswith("CLK")
    return kind == "comb" and port.startswith(("WD", "WAD", "WRE"))


def analyse(report: dict, clocks, depth: int = 2) -> dict:
    nets = report.get("detailed_net_timings")
    if not nets:
        raise SystemExit("error: the report has no detailed_net_timings; run nextpnr with "
                         "--report FILE --detailed-timing-report.")
    ports = defaultdict(set)  # cell -> the ports the report names
    arrival = {}  # (cell, input port) -> (worst arrival ns, driver cell)
    inputs = defaultdict(list)  # cell -> its input ports with an arrival
    for n in nets:
        ports[n["driver"]].add(n["port"])
        for e in n["endpoints"]:
            if e.get("event", "").startswith("<async>"):
                continue
            key = (e["cell"], e["port"])
            ports[e["cell"]].add(e["port"])
            t = float(e["delay"][1])
            if key not in arrival:
                inputs[e["cell"]].append(e["port"])
            if key not in arrival or t > arrival[key][0]:
                arrival[key] = (t, n["driver"])
    kinds = {c: kind_of(c, p) for c, p in ports.items()}

    def launcher(cell: str) -> str:
        """The register or block RAM that launched the latest path into ``cell``'s output:
        back through each combinational cell's latest input."""
        for _ in range(10000):
            if kinds.get(cell) in ("ff", "ebr") or not inputs.get(cell):
                return cell
            # A LUT RAM's write ports end paths; its read output comes from the read address.
            through = [p for p in inputs[cell] if not p.startswith(("WD", "WAD", "WRE", "WCK"))]
            if not through:
                return cell
            port = max(through, key=lambda p: arrival[(cell, p)][0])
            cell = arrival[(cell, port)][1]
        return cell

    endpoints = []
    for (cell, port), (t, driver) in arrival.items():
        k = kinds[cell]
        if is_endpoint(k, port):
            endpoints.append((t + setup_of(k, port), launcher(driver), cell, port))
    endpoints.sort(reverse=True)

    def module(cell):
        """``depth`` levels of the hierarchy below ``top``; a level that names a signal (the
        third in ``top.core.act.u13_prod8_TRELLIS_FF_Q_5``) loses the cell suffix synthesis
        added and its numbers (``u#_prod#``), so that the A units' copies count together."""
        parts = cell.split(".")
        if parts[0] != "top":
            return re.sub(r"\d+", "#", parts[0].split("_TRELLIS")[0])[:40]
        levels = parts[1:1 + depth]
        last = re.split(r"_TRELLIS|_LUT4|_MULT18|_DP16KD|\$|_CCU2", levels[-1])[0] or \
            levels[-1].lstrip("$")[:30]
        return ".".join(levels[:-1] + [re.sub(r"\d+", "#", last)])

    result = {"endpoints": len(endpoints), "worst_ns": endpoints[0][0] if endpoints else None,
              "worst": list(endpoints[0][1:]) if endpoints else None, "clocks": {}}
    for mhz in clocks:
        slow = [e for e in endpoints if e[0] > 1e3 / mhz]
        pairs = Counter((module(s), module(c)) for _, s, c, _ in slow)
        result["clocks"][f"{mhz:g}"] = {"slower": len(slow),
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
