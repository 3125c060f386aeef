"""nextpnr-ecp5's timing results beyond the clock and the critical path: how many endpoints a
faster clock would fail, and where they are.

nextpnr prints one critical path per clock and a post-route slack histogram, which says how many
endpoints a faster clock would fail (:func:`endpoints_slower_than`) but not where they are. Its
JSON report with ``--detailed-timing-report`` gives, for every sink of every net, the arrival
time there (the worst path from a launching register, routing and cells included: the largest
is the critical path). :func:`where_slower` takes the arrivals at the design clock's endpoints
(the data, enable and reset inputs of flip-flops, the inputs of block RAMs and the write ports
of LUT RAMs), adds their setup time, traces each one back through the latest input of every
combinational cell to the register or block RAM that launched it, and counts the endpoints
slower than each clock by the modules of the path's start and end (the cell name's hierarchy,
``top.core.act.u3_...`` -> ``core.act``).

The report leaves out some nets (those into a LUT RAM's read address and out of a wide-function
mux, for two), so a trace can stop at a combinational cell or a LUT RAM, which then stands for
the path's start; the arrivals, and so the counts and the end modules, are nextpnr's own.
``deltahw.build`` puts both in an ECP5 build's report; ``scripts/fmax_wall.py`` runs
:func:`where_slower` on any report.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

__all__ = ["parse_slack_histogram", "endpoints_slower_than", "faster_clocks", "where_slower"]


def parse_slack_histogram(text: str) -> dict | None:
    """nextpnr's last (post-route) slack histogram: ``{"target_mhz", "bins"}``, each bin
    ``{"from_ps", "to_ps", "min", "max"}`` with the endpoints whose slack at the target clock
    is in ``[from_ps, to_ps)``. nextpnr draws each ``*`` as a fixed number of endpoints and a
    trailing ``+`` as 1 to that number less one, so a bin's count is a range. None if the log
    has no histogram."""
    start = text.rfind("Slack histogram:")
    if start < 0:
        return None
    unit = re.search(r"\* represents (\d+) endpoint", text[start:])
    targets = re.findall(r"\((?:PASS|FAIL) at ([\d.]+) MHz\)", text[:start])
    if not unit or not targets:
        return None
    n = int(unit.group(1))
    bins = []
    for m in re.finditer(r"^Info: \[\s*(-?\d+),\s*(-?\d+)\) \|(\**)(\+?)\s*$",
                         text[start:], re.M):
        stars, plus = len(m.group(3)), bool(m.group(4))
        bins.append({"from_ps": int(m.group(1)), "to_ps": int(m.group(2)),
                     "min": stars * n + plus, "max": stars * n + plus * (n - 1)})
    return {"target_mhz": float(targets[-1]), "bins": bins} if bins else None


def endpoints_slower_than(histogram: dict, mhz: float) -> tuple[int, int]:
    """How many endpoints of a post-route :func:`parse_slack_histogram` have a path longer than
    a ``mhz`` clock's period, as (at least, at most): the bins wholly below the slack that
    clock needs count in both, the bin that straddles it in the second only."""
    need_ps = 1e6 / histogram["target_mhz"] - 1e6 / mhz  # slack at the target for mhz's period
    lo = sum(b["min"] for b in histogram["bins"] if b["to_ps"] <= need_ps)
    hi = sum(b["max"] for b in histogram["bins"] if b["from_ps"] < need_ps)
    return lo, hi


def faster_clocks(fmax: float, steps: int = 3) -> list[int]:
    """The next ``steps`` multiples of 10 MHz above ``fmax``."""
    first = int(fmax // 10 + 1) * 10
    return [first + 10 * k for k in range(steps)]


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


def where_slower(report: dict, clocks, depth: int = 2) -> dict:
    """Endpoints of a nextpnr JSON ``report`` (``--detailed-timing-report``) slower than each of
    ``clocks`` (MHz), by module pair: ``{"endpoints", "worst_ns", "worst": [start, end cell,
    port], "clocks": {"80": {"slower": n, "by_module": [[start module, end module, n], ...]}}}``,
    ``depth`` levels of hierarchy per module name. A ValueError if the report has no detailed
    net timings."""
    nets = report.get("detailed_net_timings")
    if not nets:
        raise ValueError("The nextpnr report has no detailed_net_timings; expected one written "
                         "with --report FILE --detailed-timing-report.")
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
