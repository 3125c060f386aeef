"""Push a user's own input through the generated RTL: ``python -m deltahw.simulate MODEL --input
x.npy --output y.npy [--sim verilator]`` and :func:`simulate_rtl`.

The model's RTL is generated and compiled once (the RTL regression's build cache of
:mod:`deltahw.verify.sim`, ``sim_build/<sim>/sim_<name>``, reused while unchanged), then
each sequence runs in lock-step through the cocotb harness: the testbench checks every output beat
against the bit-exact golden model and every timestep's ``CYCLES_LAST``, ``FIRED_LAST<l>``,
``FIRED_HEAD_LAST`` and ``MAC_BUSY`` against the cycle model, and records what the hardware
emitted and counted. The outputs returned are the payloads the core sent, unpacked here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .errors import DeltahwError
from .model import QuantizedModel

__all__ = ["SimulationError", "SimResult", "simulate_rtl", "main"]

SIMULATORS = ("verilator", "icarus")


class SimulationError(DeltahwError, RuntimeError):
    """The RTL simulation could not run, or the hardware disagreed with the golden model."""


@dataclass
class SimResult:
    """What the simulated hardware emitted and counted, per sequence and timestep."""

    outputs: list  # per sequence: int64 (T, O or H) in the act format, as the core sent them
    cycles: list  # per sequence: CYCLES_LAST of every timestep
    fired_x: list  # per sequence: (T, L) fired input deltas (FIRED_LAST<l> low half)
    fired_h: list  # per sequence: (T, L) fired hidden deltas
    fired_head: list  # per sequence: (T,) FIRED_HEAD_LAST
    mac_busy: list  # per sequence: (T,) MAC_BUSY increments
    simulator: str = "verilator"
    sim_cycles: int = 0  # simulated clock cycles of the whole run (registers and idle included)
    info: dict = field(default_factory=dict)


def _harness():
    from .bench.rtl import _rtl_imports, _simulator_env

    try:
        sim_mod, vec = _rtl_imports()
    except ImportError as e:
        raise SimulationError(f"The RTL simulation harness (deltahw.verify) cannot be imported: "
                              f"{e}.") from None
    return sim_mod, vec, _simulator_env


def simulate_rtl(model: QuantizedModel, sequences, sim: str = "verilator", log=print,
                 quiet: bool = True) -> SimResult:
    """Run int64 quantized sequences (list of (T_i, I) tensors) on the model's simulated RTL."""
    if sim not in SIMULATORS:
        raise SimulationError(f"sim must be one of {', '.join(SIMULATORS)}; got {sim!r}.")
    cfg = model.config
    seqs = [torch.as_tensor(s, dtype=torch.int64) for s in sequences]
    for i, s in enumerate(seqs):
        if s.dim() != 2 or s.shape[1] != cfg.input_size or s.shape[0] == 0:
            raise SimulationError(f"Sequence {i} has shape {tuple(s.shape)}; expected (T >= 1, "
                                  f"{cfg.input_size}).")
    sim_mod, vec, sim_env = _harness()
    sim_env(sim)
    from .artifacts import bank_files
    from .bench.rtl import _captured

    # The build is keyed by the model's parameters and config, so a rebuild happens only when
    # they change (the harness reuses a build whose generated files are unchanged).
    h = hashlib.sha256(cfg.to_json().encode())
    for name, (text, _, _) in sorted(bank_files(model).items()):
        h.update(name.encode() + (text if isinstance(text, bytes) else text.encode()))
    name = f"sim_{h.hexdigest()[:12]}"
    root = sim_mod.sim_build_root() / sim / name
    sim_log = root / "simulate.log"
    # The harness builds a case from an exported folder: export this very model there.
    from .export import export_model

    model_dir = root.parent / f"{name}.model"
    try:
        export_model(model, model_dir)
    except DeltahwError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SimulationError(f"Cannot export the model for simulation to {model_dir}: {e}.") \
            from None
    case = vec.CoreCase(name, cfg, seed=1, timesteps=max(len(s) for s in seqs),
                        model_path=str(model_dir.resolve()))
    log(f"building the {sim} model of {cfg.summary()} (cached in {root}) ...")
    try:
        with _captured(sim_log, quiet):
            build = sim_mod.build_core(case, sim=sim, waves=False)
    except Exception as e:  # noqa: BLE001 - tool failures become one sentence
        raise SimulationError(f"Building the {sim} simulation failed ({type(e).__name__}: {e}); "
                              f"see {sim_log}.") from None
    log(f"build {'reused' if build.reused else 'done'}; simulating {len(seqs)} sequence(s), "
        f"{sum(len(s) for s in seqs)} timesteps ...")
    rng = np.random.default_rng(1)
    th = {"theta_x": cfg.theta_x, "theta_h": cfg.theta_h, "theta_head": cfg.theta_head}
    sc = vec.Scenario("simulate")
    sc.ops += vec._theta_writes(cfg, th) + [{"op": "clear_counters"}]
    ops = []
    for i, x in enumerate(seqs):
        op, _ = vec._sequence_op(model, x, f"U{i}", True, rng)
        ops.append(op)
    sc.ops += ops
    vectors = build.root / "vectors" / "simulate.json"
    vec.write_vectors(case, sc, vectors, 1)
    try:
        with _captured(sim_log, quiet):
            report = build.run(vectors, "simulate", test_module="deltahw.cocotb_simulate",
                               testcase="run_simulate")
    except AssertionError as e:
        raise SimulationError(f"The RTL disagreed with the golden model: {e}") from None
    except Exception as e:  # noqa: BLE001
        raise SimulationError(f"The {sim} simulation failed ({type(e).__name__}: {e}); see "
                              f"{sim_log}.") from None
    # Unpack what the core sent: ceil(W/A) payloads per timestep.
    W, A, bits = cfg.output_width, cfg.act_width, cfg.act.bits
    n = -(-W // A)
    beats = report["beats"]
    if len(beats) != n * sum(len(s) for s in seqs):
        raise SimulationError(f"The core sent {len(beats)} output beats; expected "
                              f"{n * sum(len(s) for s in seqs)}.")
    res = SimResult([], [], [], [], [], [], simulator=sim, sim_cycles=report["sim_cycles"],
                    info={"build_reused": build.reused, "beats_checked": report["beats_checked"],
                          "build_dir": str(build.root)})
    k = 0
    for i, x in enumerate(seqs):
        rows = []
        for _t in range(len(x)):
            vals = []
            for _b in range(n):
                v, _last = vec.unpack_beat(beats[k], A, bits)
                vals += v
                k += 1
            rows.append(vals[:W])
        res.outputs.append(torch.tensor(rows, dtype=torch.int64))
        rec = report["measured"][f"U{i}"]
        res.cycles.append(list(rec["cycles"]))
        res.fired_x.append([[f[0] for f in step] for step in rec["fired"]])
        res.fired_h.append([[f[1] for f in step] for step in rec["fired"]])
        res.fired_head.append(list(rec["fired_head"]))
        res.mac_busy.append(list(rec["mac_busy"]))
    log(f"simulation passed: {report['beats_checked']} output beats bit-exact with the golden "
        f"model, {report['sim_cycles']} clock cycles")
    return res


def main(argv=None) -> int:
    from .golden import add_model_arguments, model_from_arguments
    from .util import atomic_write_bytes, atomic_write_text, run_cli

    ap = argparse.ArgumentParser(
        prog="python -m deltahw.simulate",
        description="Run your own input (.npy, float, (T, I) or (B, T, I)) through the model's "
                    "generated RTL in simulation; outputs and hardware counters.")
    add_model_arguments(ap)
    ap.add_argument("--input", required=True, help="float inputs, (T, I) or (B, T, I), .npy")
    ap.add_argument("--output", help="write the RTL outputs (floats, or --raw integers) here")
    ap.add_argument("--raw", action="store_true", help="write raw integers")
    ap.add_argument("--stats", help="write the hardware counters per timestep (JSON)")
    ap.add_argument("--sim", default="verilator", choices=SIMULATORS)
    args = ap.parse_args(argv)

    def body():
        from .api import DeltaNetwork
        from .golden import load_inputs

        from .util import check_output_file

        x = load_inputs(args.input)  # every check before the (long) simulation
        for path, what in ((args.output, "--output file"), (args.stats, "--stats file")):
            if path:
                check_output_file(Path(path), what)
        net = DeltaNetwork(model_from_arguments(args))
        res = net.simulate(x, sim=args.sim, raw=args.raw)
        if args.output:
            buf = io.BytesIO()
            np.save(buf, res["outputs"])
            atomic_write_bytes(Path(args.output), buf.getvalue())
        if args.stats:
            atomic_write_text(Path(args.stats), json.dumps(
                {"config": net.config.to_dict(), "simulator": res["simulator"],
                 "sim_cycles": res["sim_cycles"], "input_saturated": res["input_saturated"],
                 "per_sequence": [{"cycles": c, "fired_x": fx, "fired_h": fh, "fired_head": fo,
                                   "mac_busy": mb} for c, fx, fh, fo, mb in
                                  zip(res["cycles"], res["fired_x"], res["fired_h"],
                                      res["fired_head"], res["mac_busy"])]}, indent=1))
        cycles = res["cycles"]
        steps = sum(len(c) for c in cycles)
        mean = sum(sum(c) for c in cycles) / max(1, steps)
        print(f"{steps} timesteps through the RTL ({res['simulator']}): {mean:.1f} cycles/timestep "
              f"(CYCLES_LAST), outputs bit-exact with the golden model"
              + (f"; wrote {args.output}" if args.output else ""))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
