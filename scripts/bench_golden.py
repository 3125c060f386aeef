"""Golden-model throughput: layer-timesteps per second for I=40, H=128, batch 256, as a ratio to
``torch.nn.GRU`` in float32 measured in the same run.

A layer-timestep is one GRU layer advancing one sequence by one timestep, so a run over a batch of B
sequences of T steps through L layers does B*T*L of them. The golden model is what users run over
whole test sets and what threshold calibration runs in its inner loop, so this is the figure that
says how long a data set takes to evaluate. The reference is the float32 ``torch.nn.GRU`` of the
same shape on the same batch (inference, ``torch.no_grad``), timed the same way in the same
process, so the ratio holds up on a machine shared with other jobs better than either figure.

    python scripts/bench_golden.py [--out docs/benchmarks/golden] [--threads 2] [--steps 100]

Cases: 1 and 2 layers, thresholds 0 (dense) and a typical value (0.0625 = 16 LSBs of Q8.8 for x and
h), on smooth random-walk inputs (the kind of signal delta networks are used on). Each case runs
the golden model's default (float64) path, its int64 path (``--paths``) and the float32 GRU
``--repeats`` times after a warm-up, interleaved; the best and the median wall time are reported,
and the ratio is taken between the best times. The two golden paths' outputs are compared bit for
bit on every run.

Each OpenMP wait policy runs in its own process (the policy is fixed when the OpenMP runtime
starts): ``default`` (worker threads spin while waiting, the fastest on an idle machine) and
``PASSIVE`` (they sleep). On a machine shared with other jobs the spinning policy can be many times
slower, because every parallel region waits for a thread the scheduler has parked; the report
shows both, and the load average, so the figures can be read in context. Writes ``golden.json``
and ``golden.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed

import torch

from deltahw.golden import run_golden
from deltahw.model import from_modules
from deltahw.numerics import FixedFormat, threshold_to_lsb
from deltahw.util import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
TARGET = 100_000  # layer-timesteps per second (issue 2)
TARGET_RATIO = 0.5  # of torch.nn.GRU float32 throughput (issue 12)
POLICIES = ("default", "PASSIVE")


def make_case(input_size: int, hidden: int, layers: int, theta: float, seed: int = 0):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(input_size, hidden, layers)
    t = threshold_to_lsb(theta, FixedFormat(16, 8))  # Q8.8, the default act format
    return from_modules(gru, theta_x=(t,) * layers, theta_h=(t,) * layers)


def smooth_inputs(batch: int, steps: int, size: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, size, generator=gen, dtype=torch.float64) * 0.1
    return torch.cumsum(x, dim=1).clamp(-4, 4)


def _timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall and CPU seconds of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    times, cpu, res = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, res


def bench_case(model, x, repeats: int, paths: list[str]) -> dict:
    """Time the golden model on each path and the float32 torch.nn.GRU on the same inputs."""
    x_q, _ = model.quantize_input(x)
    B, T, _ = x_q.shape
    cfg = model.config
    L = cfg.num_layers
    gru = torch.nn.GRU(cfg.input_size, cfg.hidden_size, L)  # the shape, float32, untrained
    x32 = x.to(torch.float32).transpose(0, 1).contiguous()  # (T, B, I), GRU's default layout

    def run_gru():
        with torch.no_grad():
            return gru(x32)

    runs = {p: [] for p in paths}
    runs["gru"] = []
    results = {}
    # Interleave the contenders repeat by repeat, so a change of machine load hits all of them.
    for p in paths:
        run_golden(model, x_q[:, :5], path=p)  # warm-up: allocator, thread pool, table cache
    run_gru()
    for _ in range(repeats):
        for p in paths:
            t, c, results[p] = _timed(lambda p=p: run_golden(model, x_q, path=p), 1)
            runs[p].append((t[0], c[0]))
        t, c, _ = _timed(run_gru, 1)
        runs["gru"].append((t[0], c[0]))
    ref = results[paths[0]]
    for p in paths[1:]:
        for f in ("outputs", "fired_x", "fired_h", "macs", "cycles"):
            if not torch.equal(getattr(ref, f), getattr(results[p], f)):
                raise SystemExit(f"error: the {p} path differs from the {paths[0]} path in {f}.")
    summary = ref.summary(cfg)

    def speeds(name):
        times = [w for w, _ in runs[name]]
        best, median = min(times), statistics.median(times)
        return {
            "seconds_best": best,
            "seconds_median": median,
            "cpu_seconds_best": min(c for _, c in runs[name]),  # summed over threads
            "layer_timesteps_per_s": B * T * L / best,
            "layer_timesteps_per_s_median": B * T * L / median,
        }

    golden = {p: speeds(p) for p in paths}
    gru_speed = speeds("gru")
    return {
        "layers": L,
        "theta_lsb": cfg.theta_x[0],
        "theta": cfg.theta_x[0] / 2**cfg.act.frac,
        "batch": B,
        "steps": T,
        **golden[paths[0]],
        "paths": golden,
        "torch_gru_float32": gru_speed,
        "ratio_to_gru": gru_speed["seconds_best"] / golden[paths[0]]["seconds_best"],
        "ratio_to_gru_median": gru_speed["seconds_median"] / golden[paths[0]]["seconds_median"],
        "op_reduction": summary["op_reduction"],
        "fired_x_fraction": summary["fired_x_fraction"],
        "fired_h_fraction": summary["fired_h_fraction"],
        "mean_cycles": summary["mean_cycles"],
        "dense_cycles": summary["dense_cycles"],
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # not available on every platform
        return None


def worker(args) -> dict:
    """Run every case in this process (one OpenMP wait policy); returns the cases and context."""
    torch.set_num_threads(args.threads)
    load_before = _loadavg()
    cases = []
    for layers in (1, 2):
        for theta in (0.0, args.theta):
            model = make_case(args.input_size, args.hidden_size, layers, theta)
            x = smooth_inputs(args.batch, args.steps, args.input_size)
            cases.append(bench_case(model, x, args.repeats, args.paths.split(",")))
    return {"load_before": load_before, "load_after": _loadavg(), "cases": cases}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Golden-model throughput",
        "",
        f"Command: `{report['command']}`",
        "",
        (f"Machine: {m['cpu_count']} CPUs ({m['processor'] or m['machine']}), "
         f"torch {m['torch']} with {report['threads']} threads, Python {m['python']}. Other "
         f"jobs share the CPUs: the load average (1, 5, 15 min) is given for each run."),
        (f"Network: I={report['input_size']}, H={report['hidden_size']}, no head; batch "
         f"{report['batch']} sequences x {report['steps']} timesteps of smooth random-walk "
         f"inputs; best of {report['repeats']} runs (median in brackets)."),
        (f"Golden model paths: {', '.join(report['paths'])} (the first is the one reported as "
         f"\"golden\"; every path gave the same outputs, fired counts, MACs and cycles). "
         f"Reference: `torch.nn.GRU` float32 of the same shape on the same batch, same process, "
         f"interleaved; ratio = golden / GRU throughput (best times)."),
        "",
    ]
    for run in report["runs"]:
        lines += [
            f"## OpenMP wait policy: {run['omp_wait_policy']}",
            "",
            f"Load average before / after: {run['load_before']} / {run['load_after']}.",
            "",
            "| layers | theta (x, h) | golden layer-timesteps/s | s per run | "
            + " | ".join(f"{p} path" for p in report["paths"][1:])
            + (" | " if len(report["paths"]) > 1 else "")
            + "torch.nn.GRU float32 | ratio to GRU | op reduction | fired x / h |",
            "|---:|---:|---:|---:|" + "---:|" * (len(report["paths"]) - 1) + "---:|---:|---:|---:|",
        ]
        for c in run["cases"]:
            fx = "/".join(f"{v:.2f}" for v in c["fired_x_fraction"])
            fh = "/".join(f"{v:.2f}" for v in c["fired_h_fraction"])
            others = "".join(
                f"{c['paths'][p]['layer_timesteps_per_s']:,.0f} | " for p in report["paths"][1:]
            )
            g = c["torch_gru_float32"]
            lines.append(
                f"| {c['layers']} | {c['theta']:.4g} ({c['theta_lsb']} LSB) | "
                f"{c['layer_timesteps_per_s']:,.0f} ({c['layer_timesteps_per_s_median']:,.0f}) | "
                f"{c['seconds_best']:.3f} | {others}"
                f"{g['layer_timesteps_per_s']:,.0f} ({g['layer_timesteps_per_s_median']:,.0f}) | "
                f"{c['ratio_to_gru']:.2f} ({c['ratio_to_gru_median']:.2f}) | "
                f"{c['op_reduction']:.2f}x | {fx} / {fh} |"
            )
        lines.append("")
    best = report["best_min_layer_timesteps_per_s"]
    verdict = "meets" if best >= TARGET else "is below"
    ratio = report["best_min_ratio_to_gru"]
    rverdict = "meets" if ratio >= TARGET_RATIO else "is below"
    lines += [(f"Slowest case under the better policy: {best:,.0f} layer-timesteps/s, which "
               f"{verdict} the absolute target of {TARGET:,}; the lowest ratio to the float32 "
               f"`torch.nn.GRU` under the better policy is {ratio:.2f}, which {rverdict} the "
               f"target of {TARGET_RATIO}."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "golden"),
                    help="folder for golden.json and golden.md")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--input-size", type=int, default=40)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--theta", type=float, default=0.0625,
                    help="the 'typical' threshold for x and h, in real units")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help="OpenMP wait policies to run, comma separated (default, PASSIVE, ACTIVE)")
    ap.add_argument("--paths", default="float64,int64",
                    help="golden-model paths to time, comma separated; the first is reported "
                         "(float64, int64, auto)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    argv = sys.argv[1:] if argv is None else list(argv)
    runs = []
    for policy in args.policies.split(","):
        env = dict(os.environ)
        if policy != "default":
            env["OMP_WAIT_POLICY"] = policy
        else:
            env.pop("OMP_WAIT_POLICY", None)
        proc = subprocess.run([sys.executable, __file__, *argv, "--worker"], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.stderr.write(proc.stderr)
            return proc.returncode
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        run["omp_wait_policy"] = policy
        runs.append(run)
        for c in run["cases"]:
            others = ", ".join(f"{p} {c['paths'][p]['layer_timesteps_per_s']:,.0f}"
                               for p in args.paths.split(",")[1:])
            print(f"OMP {policy:<8} L={c['layers']} theta={c['theta']:<7g} "
                  f"{c['layer_timesteps_per_s']:>10,.0f} layer-timesteps/s  (median "
                  f"{c['layer_timesteps_per_s_median']:,.0f}{'; ' if others else ''}{others}); "
                  f"GRU float32 {c['torch_gru_float32']['layer_timesteps_per_s']:,.0f}: ratio "
                  f"{c['ratio_to_gru']:.2f}; op reduction {c['op_reduction']:.2f}x", flush=True)
    mins = [min(c["layer_timesteps_per_s"] for c in run["cases"]) for run in runs]
    ratios = [min(c["ratio_to_gru"] for c in run["cases"]) for run in runs]
    report = {
        "command": "python scripts/bench_golden.py " + " ".join(argv),
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "input_size": args.input_size,
        "hidden_size": args.hidden_size,
        "repeats": args.repeats,
        "paths": args.paths.split(","),
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "config": make_case(args.input_size, args.hidden_size, 1, 0.0).config.to_dict(),
        "runs": runs,
        "best_min_layer_timesteps_per_s": max(mins),
        "target_layer_timesteps_per_s": TARGET,
        "best_min_ratio_to_gru": max(ratios),
        "target_ratio_to_gru": TARGET_RATIO,
    }
    out = Path(args.out)
    atomic_write_text(out / "golden.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "golden.md", markdown(report))
    print(f"golden model: {max(mins):,.0f} layer-timesteps/s in the slowest case (target "
          f"{TARGET:,}), lowest ratio to torch.nn.GRU float32 {max(ratios):.2f} (target "
          f"{TARGET_RATIO}); wrote {out}/golden.json and golden.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
