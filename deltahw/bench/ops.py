"""Operation reduction, the task's metric and the cycle model over a test split (golden model).

Everything here runs the bit-exact integer golden model (:func:`deltahw.golden.run_golden`) on the
integer inputs the hardware sees. The task's metric (accuracy at the last timestep, per-timestep
accuracy, or RMSE / MAE in data units) is counted by :class:`deltahw.train.evaluate.TaskTally`, the
implementation training and calibration use; the per-timestep fired-delta counts give
the cycle model's cycles (:mod:`deltahw.cycles`, the RTL matches it exactly) for every test
timestep, at the model's lane count and at any other.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import cycles as cyc
from ..config import DeltaGRUConfig
from ..golden import run_golden
from .rtl import decompose, ideal_per_step, useful_macs

__all__ = ["split_stats", "cycle_stats", "dense_config"]


def dense_config(config: DeltaGRUConfig) -> DeltaGRUConfig:
    L = config.num_layers
    return config.with_thresholds(theta_x=(0,) * L, theta_h=(0,) * L, theta_head=0)


def split_stats(model, x_q: torch.Tensor, lengths: torch.Tensor, chunk: int = 256,
                targets=None, tally=None) -> dict:
    """Golden run over a padded split: last-step outputs and per-timestep counts of real steps.

    With ``targets`` (the split's, as :meth:`deltahw.train.data.Dataset.targets` gives them) and a
    ``tally`` (:func:`deltahw.train.evaluate.model_tally`), every chunk's outputs are counted into
    the tally, whose ``result()`` is then the task's metrics.

    Returns ``last`` (B, W) outputs at each sequence's last timestep and flat arrays over the real
    timesteps (sequence-major): ``fired_layers`` (N, L) x + h fired columns, ``fired_head`` (N,),
    ``fired_x0`` (N,) layer 0's x columns, ``h0_early`` (N,) layer 0's h columns counted early
    (``GoldenResult.h0_early``), ``first`` (N,) the timestep starts its sequence,
    ``macs`` and ``dense_macs`` (N,), ``cycles`` (N,) from the cycle model, ``seq`` (N,) index.
    """
    lasts, fl, fh, x0, early, first, macs, dense, cycles, seq = ([] for _ in range(10))
    for a in range(0, x_q.shape[0], chunk):
        ln = lengths[a: a + chunk]
        res = run_golden(model, x_q[a: a + chunk, : int(ln.max())], ln)
        idx = torch.arange(res.outputs.shape[0])
        lasts.append(res.outputs[idx, ln - 1])
        if tally is not None:
            tally.add(res.outputs.double() * model.config.act.lsb, ln, targets[a: a + chunk])
        m = res.mask
        fl.append((res.fired_x + res.fired_h)[m])
        fh.append(res.fired_head[m])
        x0.append(res.fired_x[..., 0][m])
        early.append(res.h0_early[m])
        first.append((torch.arange(m.shape[1]) == 0).expand_as(m)[m])
        macs.append(res.macs[m])
        dense.append(res.dense_macs[m])
        cycles.append(res.cycles[m])
        seq.append((torch.arange(a, a + len(ln))[:, None].expand_as(m))[m])
    cat = lambda xs: torch.cat(xs).numpy()  # noqa: E731
    return {"last": torch.cat(lasts), "fired_layers": cat(fl), "fired_head": cat(fh),
            "fired_x0": cat(x0), "h0_early": cat(early), "first": cat(first),
            "macs": cat(macs), "dense_macs": cat(dense), "cycles": cat(cycles), "seq": cat(seq)}


def cycle_stats(config: DeltaGRUConfig, fired_layers, fired_head, cycles=None, *, fired_x0,
                first, h0_early=None) -> dict:
    """Cycle-model figures of a set of timesteps at ``config``'s lane count.

    ``cycles`` (optional) are cycles computed elsewhere for the same config (the golden run's);
    they must equal the cycle model's (checked). ``fired_x0`` (layer 0's x columns), ``first``
    (the timestep starts a sequence) and ``h0_early`` (``GoldenResult.h0_early``, of a config with
    ``config``'s act width and layers) per timestep, as the cycle model needs them.
    """
    fl = np.asarray(fired_layers, dtype=np.int64).reshape(-1, config.num_layers)
    fh = np.asarray(fired_head, dtype=np.int64)
    x0 = np.asarray(fired_x0, dtype=np.int64)
    fs = np.asarray(first, dtype=bool)
    early = None if h0_early is None else np.asarray(h0_early, dtype=np.int64)
    model_cycles = np.asarray(cyc.run_cycles(
        config, [fl[:, l] for l in range(config.num_layers)], fh, fired_x0=x0, first=fs,
        h0_early=early), dtype=np.int64).reshape(-1)
    if cycles is not None and not np.array_equal(model_cycles, np.asarray(cycles)):
        raise AssertionError("The golden model's cycles differ from "
                             "deltahw.cycles.run_cycles.")
    cols = cyc.dense_columns(config)
    head = config.hidden_size if config.has_head else 0
    dense = cyc.dense_cycles(config)
    dense_ideal = int(cyc.ideal_cycles(config, cols, head))
    ideal = ideal_per_step(config, fl, fh)
    useful = useful_macs(config, fl, fh)
    parts = decompose(config, fl, fh, fired_x0=x0, first=fs, h0_early=early)
    n = len(model_cycles)
    mean = float(model_cycles.mean()) if n else 0.0
    dense_useful = int(useful_macs(config, [cols], [head])[0])
    words = np.asarray(cyc.weight_words_read(config, [fl[:, l] for l in range(config.num_layers)],
                                             fh), dtype=np.int64).reshape(-1)
    dense_words = int(cyc.weight_words_read(config, cols, head))
    return {
        "lanes": config.lanes,
        "timesteps": n,
        "mean_cycles": mean,
        "p50_cycles": float(np.percentile(model_cycles, 50)) if n else 0.0,
        "p99_cycles": float(np.percentile(model_cycles, 99)) if n else 0.0,
        "max_cycles": int(model_cycles.max()) if n else 0,
        "dense_cycles": dense,
        "speedup_vs_dense": dense / mean if mean else None,
        "mean_ideal_cycles": float(ideal.mean()) if n else 0.0,
        "measured_over_ideal": float(model_cycles.sum() / ideal.sum()) if n else None,
        "dense_ideal_cycles": dense_ideal,
        "dense_over_ideal": dense / dense_ideal,
        "lane_utilisation": (float(useful.sum() / (config.lanes * model_cycles.sum()))
                             if n else None),
        "dense_lane_utilisation": dense_useful / (config.lanes * dense),
        "phases_mean": {k: float(v.mean()) for k, v in parts.items()},
        # The paper's memory cost: weight words read per timestep (P per issue cycle), and the
        # weights actually used (= MACs); bytes at the weight format's width.
        "weight_words_per_timestep": float(words.mean()) if n else 0.0,
        "dense_weight_words": dense_words,
        "weights_used_per_timestep": float(useful.mean()) if n else 0.0,
        "dense_weights_used": dense_useful,
        "weight_bits": config.weight.bits,
        "histogram": dict(zip(("cycles", "count"),
                              (v.tolist() for v in np.unique(model_cycles, return_counts=True)))),
    }
