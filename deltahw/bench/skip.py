"""Exact skipping: how often can a layer's activation provably be skipped? (issue 11)

A layer's new hidden state is a function of its accumulators and its previous state only
(``golden.gru_activation``). When no column of layer l fired at timestep t, its accumulators are
those of t - 1; if moreover its h did not change at t - 1 (h_{t-1} == h_{t-2}, every unit, bit for
bit), the activation would compute h_{t-1} again: h_t = h_{t-1}, no h delta fires, and the whole
activation phase (ceil(H/A) beats and the drain) could be skipped with no error at all. This
module measures how often that holds on real test data, with the golden model's own arithmetic:
each layer's h sequence is the output of the network cut after that layer (no head), run through
:func:`deltahw.golden.run_golden`.

The figure decides whether the skip is worth hardware: a skip that applies to a negligible share of
timesteps saves nothing, however cheap each skipped timestep becomes. ``skippable`` is the share of
timesteps where the condition holds; ``zero_fired`` the share where no column of the layer fired
(the condition's first half, the most a skip keyed on firing alone could cover, not exact);
``h_unchanged`` the share where h_t == h_{t-1}. ``saved_cycles_bound`` is ``skippable`` times the
layer's activation beats and drain (:mod:`deltahw.cycles`): an upper bound of the cycles per
timestep an exact skip could save.

Command line: ``python -m deltahw.bench.skip fsdd watch --out docs/benchmarks/skip`` (the models
as ``python -m deltahw.bench`` takes them, their test split) writes ``skip.json`` and ``skip.md``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .. import cycles
from ..config import ceil_div
from ..golden import run_golden
from ..util import atomic_write_text
from .analysis import analysis_main

__all__ = ["layer_hidden_sequences", "golden_with_hidden", "skip_stats", "main"]


def _truncated(model, layers: int):
    """The model cut after ``layers`` layers, without its head: its outputs are that layer's h."""
    cfg = model.config
    sub = dataclasses.replace(cfg, num_layers=layers, output_size=0,
                              theta_x=tuple(cfg.theta_x[:layers]),
                              theta_h=tuple(cfg.theta_h[:layers]))
    return dataclasses.replace(model, config=sub, layers=list(model.layers[:layers]),
                               head_w=None, head_b=None)


def layer_hidden_sequences(model, x_q: torch.Tensor, lengths) -> list[torch.Tensor]:
    """h of every layer at every timestep, (B, T, H) each, from the golden model (zero past a
    sequence's end, as the golden model's outputs are)."""
    return [run_golden(_truncated(model, l + 1), x_q, lengths).outputs
            for l in range(model.config.num_layers)]


def golden_with_hidden(model, x_q: torch.Tensor, lengths):
    """(active, golden, hs): the (B, T) mask of real timesteps, the golden model's result and
    every layer's h sequence (:func:`layer_hidden_sequences`) over ``x_q`` with ``lengths``."""
    T = x_q.shape[1]
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    active = torch.arange(T)[None, :] < lengths[:, None]
    return active, run_golden(model, x_q, lengths), layer_hidden_sequences(model, x_q, lengths)


def skip_stats(model, x_q: torch.Tensor, lengths) -> dict:
    """The shares of timesteps described in the module docstring, per layer, over the real
    timesteps of ``x_q`` (B, T, I) with ``lengths`` (B,)."""
    cfg = model.config
    mask, g, hs = golden_with_hidden(model, x_q, lengths)
    n = int(mask.sum())
    act_cycles = ceil_div(cfg.hidden_size, cfg.act_width) + cycles.ACT_DRAIN
    out = {"timesteps": n, "act_width": cfg.act_width, "activation_cycles": act_cycles,
           "layers": []}
    for l, h in enumerate(hs):
        # h_{t-1} (zeros before the first timestep: the reset state).
        prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        unchanged = (h == prev).all(-1)  # h_t == h_{t-1}
        unchanged_before = torch.cat([torch.zeros_like(unchanged[:, :1]), unchanged[:, :-1]],
                                     dim=1)  # h_{t-1} == h_{t-2}; never at t = 0
        zero = (g.fired_x[..., l] + g.fired_h[..., l]) == 0
        skippable = zero & unchanged_before
        # The condition is sufficient: where it holds, h must not change (a self-check of the
        # reasoning above on every timestep measured).
        if bool((skippable & mask & ~unchanged).any()):
            raise AssertionError(f"layer {l}: a timestep met the skip condition but its h changed")
        share = {k: float((v & mask).sum()) / max(1, n)
                 for k, v in (("zero_fired", zero), ("h_unchanged", unchanged),
                              ("skippable", skippable))}
        out["layers"].append({**share, "skippable_timesteps": int((skippable & mask).sum()),
                              "saved_cycles_bound": share["skippable"] * act_cycles})
    return out


def render_markdown(results: dict) -> str:
    lines = ["# Exact skipping of the activation (issue 11)", "",
             "Generated by `python -m deltahw.bench.skip` (module docstring: the condition and "
             "what each column means). A layer's activation can be skipped exactly when none of "
             "its columns fired and its h did not change in the previous timestep.", "",
             "| model | layer | timesteps | no column fired | h unchanged | skippable (exact) "
             "| cycles saved per timestep, at most |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results["models"].items():
        for l, s in enumerate(r["layers"]):
            lines.append(f"| {name} | {l} | {r['timesteps']} | {100 * s['zero_fired']:.2f} % | "
                         f"{100 * s['h_unchanged']:.3f} % | {100 * s['skippable']:.3f} % "
                         f"({s['skippable_timesteps']}) | {s['saved_cycles_bound']:.3f} |")
    lines += ["", "A timestep whose layer fired nothing is not enough: its h still moves "
              "(h = c + u (h_prev - c) converges towards c over several timesteps), so the "
              "activation must run. The cycles bound is the share of skippable timesteps times "
              "the activation beats and drain of a layer."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    return analysis_main(argv, name="skip", description=__doc__.split("\n")[0],
                         files="skip.json and skip.md", analyse=_analyse, write=_write)


def _analyse(name, model, xq, lengths) -> dict:
    stats = skip_stats(model, xq, lengths)
    for l, s in enumerate(stats["layers"]):
        print(f"skip: {name} layer {l}: {100 * s['skippable']:.3f} % of timesteps "
              f"skippable ({100 * s['zero_fired']:.2f} % fired nothing)", flush=True)
    return stats


def _write(out: Path, results: dict) -> None:
    atomic_write_text(out / "skip.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "skip.md", render_markdown(results))
    print(f"skip: wrote {out / 'skip.json'} and {out / 'skip.md'}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
