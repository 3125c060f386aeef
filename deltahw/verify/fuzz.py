"""Constrained-random legal configurations through the RTL regression: ``make fuzz``.

``python -m deltahw.verify.fuzz --n 50 --seed 1234 --out fuzz_out`` draws ``n`` legal
:class:`~deltahw.config.DeltaGRUConfig` s from the seed (1-4 layers, head on or off, lane counts
that do and do not divide 3H and that exceed 3H, activation and encoder widths (split accumulators,
3A > P, included), fixed-point formats, thresholds), writes each as a config JSON and runs the
regression of the generated core on it (``rtl_tests/test_rtl_core.py`` with ``CONFIG=`` that file,
on Verilator by default: deterministic generation, ``verilator --lint-only``, every scenario
bit-exact against the golden model and exact on the cycle counters).

The seed is printed first; the same seed draws the same configurations. A configuration whose run
fails is copied to ``<out>/failures/``; ``make sim SIM=verilator CONFIG=<that file>`` reruns it.
The passing configurations' simulator builds are deleted (the fuzz created them); the failing
ones' are kept. Results: ``<out>/fuzz.json`` and ``<out>/fuzz.md``, rewritten after every
configuration (progress is printed as each one ends).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .. import cycles
from ..config import ConfigError, DeltaGRUConfig

__all__ = ["draw_config", "draw_configs", "main"]

#: Runs of ``rtl_tests`` the fuzz asks for: the core's regression without the self-test of the
#: checker (it corrupts expectations on purpose and needs no new configuration).
PYTEST_SELECTION = ["rtl_tests/test_rtl_core.py", "--deselect",
                    "rtl_tests/test_rtl_core.py::test_regression_catches_mismatches"]


def draw_config(rng: random.Random, split_rng: random.Random | None = None) -> DeltaGRUConfig:
    """One legal configuration (retries internally until :class:`DeltaGRUConfig` accepts it).

    With ``split_rng``, a third of the configurations with P = 3A get A doubled or quadrupled
    where the config allows it (3A = 2P or 4P: split accumulators, ``Layout.acc_split``; a head
    needs O <= min(A, P)). The draw uses ``split_rng`` only, so ``rng`` draws what it drew before
    session 25 added this (the same seed's other configurations are unchanged)."""
    cfg = _draw(rng)
    if split_rng is None or cfg.lanes != 3 * cfg.act_width or split_rng.random() >= 1 / 3:
        return cfg
    for mult in split_rng.sample([2, 4], 2):
        try:
            return cfg.replace(act_width=cfg.act_width * mult)
        except ConfigError:
            continue
    return cfg


def _draw(rng: random.Random) -> DeltaGRUConfig:
    for _ in range(1000):
        L = rng.randint(1, 4)
        H = rng.choice([rng.randint(1, 8), rng.randint(9, 40)])
        I = rng.choice([rng.randint(1, 4), rng.randint(5, 40)])
        O = rng.choice([0, 0, rng.randint(1, 12)])
        A = rng.choice([a for a in (1, 2, 4, 8) if a <= max(1, H)])
        E = rng.choice([1, 2, 4, 8, 16])
        shape = rng.random()
        if shape < 0.25:  # P > 3H: more lanes than gate rows
            k = rng.randint(H // A + 1, H // A + 2)
        else:
            k = rng.randint(1, max(1, min(8, H // A)))
        P = 3 * A * k
        if P > 96:  # keeps one configuration's build and run within minutes
            continue
        lpb = rng.choice([d for d in range(1, 9) if P % d == 0])
        act_bits = rng.randint(6, 16)
        act_frac = rng.randint(3, act_bits - 2)
        w_bits = rng.randint(4, 12)
        w_frac = rng.randint(2, w_bits - 1)
        b_bits = rng.randint(8, 24)
        b_frac = rng.randint(0, min(b_bits - 1, act_frac + w_frac))
        s_bits = rng.randint(6, 12)
        t_bits = rng.randint(6, 12)
        s_frac = rng.randint(1, min(act_frac, s_bits - 1))
        t_frac = rng.randint(1, min(act_frac, t_bits - 1))
        top = min((1 << act_bits) - 1, 1 << act_frac)

        def theta(top=top):
            return rng.choice([0, rng.randint(1, max(1, top // 8)), rng.randint(0, top)])

        try:
            return DeltaGRUConfig(
                input_size=I, hidden_size=H, num_layers=L, output_size=O,
                act=(act_bits, act_frac), weight=(w_bits, w_frac), bias=(b_bits, b_frac),
                sigmoid_in=(s_bits, s_frac), tanh_in=(t_bits, t_frac),
                theta_x=tuple(theta() for _ in range(L)), theta_h=tuple(theta() for _ in range(L)),
                theta_head=theta(), lanes=P, lanes_per_bank=lpb, enc_width=E, act_width=A)
        except ConfigError:
            continue
    raise RuntimeError("No legal configuration in 1000 draws: the fuzz's ranges are broken.")


def _split_rng(seed: int) -> random.Random:
    return random.Random(f"{seed}/split")


def draw_configs(n: int, seed: int) -> list[DeltaGRUConfig]:
    rng, split_rng = random.Random(seed), _split_rng(seed)
    return [draw_config(rng, split_rng) for _ in range(n)]


def _features(cfg: DeltaGRUConfig) -> list[str]:
    out = []
    if cfg.lanes > 3 * cfg.hidden_size:
        out.append("P>3H")
    elif (3 * cfg.hidden_size) % cfg.lanes:
        out.append("P!|3H")
    out.append("head" if cfg.has_head else "no-head")
    if 3 * cfg.act_width > cfg.lanes:
        out.append(f"split{3 * cfg.act_width // cfg.lanes}")
    if cycles.act_capture(cfg):  # (cycles.captures: not the last layer of a headless network)
        out.append(f"capture{cycles.act_capture(cfg)}")
    return out


def _write_report(out: Path, doc: dict) -> None:
    (out / "fuzz.json").write_text(json.dumps(doc, indent=1) + "\n")
    forms = doc.get("forms", "portable")
    lines = [f"# deltahw fuzz: seed {doc['seed']}, simulator {doc['sim']}, {forms} forms", "",
             f"{doc['passed']} passed, {doc['failed']} failed of {len(doc['runs'])} run "
             f"({doc['requested']} requested) in {doc['wall_seconds']:.0f} s.", "",
             "| # | config | features | result | seconds |", "|---|---|---|---|---:|"]
    for r in doc["runs"]:
        lines.append(f"| {r['index']} | {r['summary']} | {', '.join(r['features'])} | "
                     f"{r['result']} | {r['seconds']:.0f} |")
    if doc["failed"]:
        lines += ["", "Rerun a failure with `make sim SIM=" + doc["sim"]
                  + (f" FORMS={forms}" if forms != "portable" else "") + " CONFIG=<file>`:", ""]
        lines += [f"- `{r['failure_file']}`" for r in doc["runs"] if r.get("failure_file")]
    (out / "fuzz.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltahw.verify.fuzz",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="configurations to run (default 50)")
    ap.add_argument("--seed", type=int, default=None, help="seed (default: from the clock)")
    ap.add_argument("--out", default="fuzz_out", help="results folder (default fuzz_out)")
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    ap.add_argument("--timeout", type=float, default=3600.0,
                    help="seconds one configuration may take before it counts as failed")
    ap.add_argument("--repo", default=None,
                    help="checkout holding rtl_tests/ (default: the one next to this package)")
    args = ap.parse_args(argv)
    if args.n < 1:
        print(f"error: --n must be at least 1; got {args.n}.", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000
    repo = Path(args.repo) if args.repo else Path(__file__).resolve().parents[2]
    if not (repo / "rtl_tests" / "test_rtl_core.py").is_file():
        print(f"error: {repo} holds no rtl_tests/test_rtl_core.py; pass --repo CHECKOUT.",
              file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    (out / "configs").mkdir(parents=True, exist_ok=True)
    from .sim import forms_family

    try:
        forms = forms_family()  # FORMS, passed on to the regression with the environment
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"fuzz seed {seed}: {args.n} configuration(s) on {args.sim}, {forms} forms "
          f"(rerun with FUZZ_SEED={seed})", flush=True)
    builds = out / "sim_build"
    doc = {"seed": seed, "sim": args.sim, "forms": forms, "requested": args.n, "passed": 0,
           "failed": 0,
           "wall_seconds": 0.0, "runs": []}
    t_all = time.time()
    rng, split_rng = random.Random(seed), _split_rng(seed)
    for i in range(args.n):
        cfg = draw_config(rng, split_rng)
        name = f"fuzz_{seed}_{i:03d}"
        path = out / "configs" / f"{name}.json"
        path.write_text(cfg.to_json() + "\n")
        env = dict(os.environ, SIM=args.sim, CONFIG=str(path), SIM_BUILD=str(builds),
                   PYTHONPATH=os.pathsep.join([str(repo)] + [
                       p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        log = out / "logs" / f"{name}.log"
        log.parent.mkdir(exist_ok=True)
        t0 = time.time()
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *PYTEST_SELECTION]
        try:
            with open(log, "w") as f:
                res = subprocess.run(cmd, cwd=repo, env=env, stdout=f, stderr=subprocess.STDOUT,
                                     timeout=args.timeout)
            result = "pass" if res.returncode == 0 else f"FAIL (pytest exit {res.returncode})"
        except subprocess.TimeoutExpired:
            result = f"FAIL (timeout after {args.timeout:.0f} s)"
        run = {"index": i, "name": name, "config": cfg.to_dict(), "summary": cfg.summary(),
               "features": _features(cfg), "result": result, "seconds": time.time() - t0,
               "log": str(log)}
        case_dir = builds / args.sim / f"user_{name}"
        if result == "pass":
            doc["passed"] += 1
            if case_dir.exists():
                shutil.rmtree(case_dir)
        else:
            doc["failed"] += 1
            fail = out / "failures" / path.name
            fail.parent.mkdir(exist_ok=True)
            shutil.copy(path, fail)
            run["failure_file"] = str(fail)
        doc["runs"].append(run)
        doc["wall_seconds"] = time.time() - t_all
        _write_report(out, doc)
        print(f"[{i + 1}/{args.n}] {name}: {result} in {run['seconds']:.0f} s - {cfg.summary()}"
              + (f"\n    rerun: make sim SIM={args.sim} FORMS={forms} "
                 f"CONFIG={run['failure_file']} "
                 f"(log {log})" if result != "pass" else ""), flush=True)
    print(f"fuzz seed {seed}: {doc['passed']} passed, {doc['failed']} failed; report "
          f"{out / 'fuzz.md'}", flush=True)
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
