"""What a streaming schedule of today's datapath could reach: a schedule simulation (issue 11).

Today's schedule (:mod:`deltahw.cycles`) runs a timestep's phases one after another: a layer's
recurrent (h) columns wait until the whole previous activation has drained, because the queue
count must be final before the MAC phase starts. A *streaming* schedule would issue each fired
column as soon as its delta is in its queue, while the rest of the activation still drains, and
run the head's columns and the next timestep's columns in whatever order the MAC array is free.
This module simulates such a schedule on the **same datapath** (same P, A, column costs,
activation pipeline and queue latencies, one MAC array, one activation port) over the fired
units of real test timesteps, to say, before anyone builds it, how close to the issue's targets
(80 % of the op reduction on fsdd, 65 % on watch) a schedule change alone can get, and what else
(more activation units A, a shorter activation drain) it would need: the drain is swept, and the
report names, per schedule, the fewest drain cycles to remove for the target
(:func:`drain_needed`).

It is a **projection, not a measurement**: no RTL implements this schedule. The rules, each a
latency of today's hardware (:mod:`deltahw.cycles`):

* a layer's activation issues ``ceil(H/A)`` beats, unit ``j`` in beat ``j // A``; a beat issued at
  cycle ``c`` has its fired deltas in the queues (counted) at ``c + ACT_DRAIN + 1``, and a column
  from them issues at the earliest ``phase_fetch`` cycles later (today's fetch);
* a block (a layer at a timestep, or the head) knows it has no more columns at its sources' last
  beat ``+ ACT_DRAIN + 1`` (for layer 0's input columns: the cycle after the previous timestep's
  last layer-0 beat, as today's overlapped x phase); its activation (or the head's read-out) may
  start ``EMPTY_MAC_PHASE`` cycle after that, and after its last column's issue ``+ cost +
  mac_drain(cost)`` (``head_mac_drain`` for the head);
* the MAC array issues one column at a time, ``ceil(3H/P)`` cycles per layer column and
  ``ceil(O/P)`` per head column; a column of block (t+1, l) never issues before layer l's
  activation of t read its accumulators (its last beat), nor a head column of t+1 before the
  read-out of t;
* the activation port issues one beat per cycle (activations and read-outs share it), a job's
  beats back to back; among ready jobs the oldest (timestep, then layer) goes first.

The MAC array picks among the columns that are in their queue either the oldest block first
(``"oldest"``) or the layers' columns before the head's (``"layers_first"``: the next timestep's
recurrent columns before this timestep's head columns); both are reported. ``stream=False``
releases a block's columns only when its queues are final (no streaming): with ``"oldest"`` that
is the order of work of the schedule before the deferred head (session 22) under the same event
rules, a check that the simulation's latencies are the hardware's (its totals landed within a few
percent of that schedule's cycle model); with ``"layers_first"`` it is that schedule reordered,
close to the deferred head the core runs since session 23 (:mod:`deltahw.cycles`: the window).
Both orders assume the head's columns and
read-out can run on the MAC array while the activation port works (in today's hardware the head's
accumulators share the lanes' one LUT-RAM read port with the activation).

Cycles of a sequence: from its first cycle to the cycle after its last read-out beat (without a
head: until the last activation's deltas are counted), summed over sequences and divided by the
timesteps, the same accounting as the cycle model's compute cycles. Dense: every unit fires
(Theta = 0), a steady-state timestep inside a sequence.

Command line: ``python -m deltahw.bench.stream fsdd watch --out docs/benchmarks`` writes
``stream.json``, ``stream.md`` and ``stream.png``.
"""

from __future__ import annotations

import heapq
import json
import textwrap
from pathlib import Path

import numpy as np
import torch

from .. import cycles as cyc
from ..config import ceil_div
from ..golden import _encode
from ..util import atomic_write_bytes, atomic_write_text
from .analysis import analysis_main
from .skip import golden_with_hidden

__all__ = ["fire_masks", "fire_masks_and_golden", "simulate_sequence", "stream_stats", "VARIANTS",
           "drain_needed", "main"]

#: The hardware variants projected: (name, act width multiplier, activation drain change). The
#: drain (``deltahw.cycles.ACT_DRAIN``: accumulator read, activation pipeline, queue count) is
#: swept to say how much shorter the activation loop must get for each schedule to reach the
#: issue's targets; 2A needs twice the activation units' multipliers (at the shipped A = 16, 112
#: DSPs with P = 48, more than the Arty A7-35T's 90).
VARIANTS = (
    ("today's datapath", 1, 0),
    ("activation drain 2 cycles shorter", 1, -2),
    ("activation drain 3 cycles shorter", 1, -3),
    ("activation drain 4 cycles shorter", 1, -4),
    ("activation drain 6 cycles shorter", 1, -6),
    ("twice the activation units (2A)", 2, 0),
    ("2A and a drain 3 cycles shorter", 2, -3),
)
POLICIES = ("oldest", "layers_first")
POLICY_LABELS = {"oldest": "oldest block first", "layers_first": "layers' columns first"}
#: The schedules projected: (policy, stream). ("oldest", False) is the order of work before the
#: deferred head (the check); ("layers_first", False) reorders it without streaming.
SCHEDULES = (("oldest", True), ("layers_first", True), ("oldest", False), ("layers_first", False))


def schedule_label(policy: str, stream: bool) -> str:
    if stream:
        return f"streaming, {POLICY_LABELS[policy]}"
    if policy == "oldest":
        return "no streaming (check)"
    return f"no streaming, {POLICY_LABELS[policy]}"


def fire_masks(model, x_q: torch.Tensor, lengths) -> dict:
    """See :func:`fire_masks_and_golden` (the masks only)."""
    return fire_masks_and_golden(model, x_q, lengths)[0]


def fire_masks_and_golden(model, x_q: torch.Tensor, lengths):
    """Which units fired, per timestep: ``x0`` (B, T, I) layer 0's input deltas, ``x`` a list
    (layers 1..) of (B, T, H) input deltas, ``h`` a list per layer of (B, T, H) recurrent deltas
    (the deltas of h_{t-1} consumed at t), ``head`` (B, T, H) the head's input deltas (None
    without a head), and the golden model's result. Rebuilt from the golden model's h sequences
    with the golden model's own encoder (``golden._encode``) and checked against its fired
    counts; False past a sequence's end."""
    cfg = model.config
    T = x_q.shape[1]
    active, g, hs = golden_with_hidden(model, x_q, lengths)

    def encode_seq(v: torch.Tensor, theta: int, shift: bool) -> torch.Tensor:
        """Fired masks of the delta encoder run over v (B, T, N); ``shift``: the encoder at t
        sees v_{t-1} (zero at t = 0)."""
        if shift:
            v = torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)
        vhat = torch.zeros_like(v[:, 0])
        out = torch.zeros(v.shape, dtype=torch.bool)
        for t in range(T):
            _, new_vhat, fired = _encode(v[:, t], vhat, theta)
            a = active[:, t:t + 1]
            vhat = torch.where(a, new_vhat, vhat)
            out[:, t] = fired & a
        return out

    masks = {"x0": encode_seq(x_q, cfg.theta_x[0], False), "x": [], "h": [], "head": None}
    for l in range(cfg.num_layers):
        if l > 0:
            masks["x"].append(encode_seq(hs[l - 1], cfg.theta_x[l], False))
        masks["h"].append(encode_seq(hs[l], cfg.theta_h[l], True))
    if cfg.has_head:
        masks["head"] = encode_seq(hs[-1], cfg.theta_head, False)
    # Self-check: the rebuilt masks count what the golden model counted, on every timestep.
    fx = [masks["x0"]] + masks["x"]
    for l in range(cfg.num_layers):
        if not torch.equal(fx[l].sum(-1), g.fired_x[..., l]) or not torch.equal(
                masks["h"][l].sum(-1), g.fired_h[..., l]):
            raise AssertionError(f"layer {l}: rebuilt fire masks disagree with the golden model")
    if cfg.has_head and not torch.equal(masks["head"].sum(-1), g.fired_head):
        raise AssertionError("head: rebuilt fire masks disagree with the golden model")
    return masks, g


def _per_beat(mask: np.ndarray, A: int) -> np.ndarray:
    """(T, N) bool -> (T, ceil(N/A)) fired units per activation beat of A units."""
    T, N = mask.shape
    nb = ceil_div(N, A)
    pad = np.zeros((T, nb * A), dtype=np.int64)
    pad[:, :N] = mask
    return pad.reshape(T, nb, A).sum(-1)


def simulate_sequence(cfg, x0: np.ndarray, xs: list, hs: list, head, *, act_width: int,
                      act_drain: int, policy: str = "oldest", stream: bool = True) -> int:
    """Cycles of one sequence under the schedule of the module docstring (``stream=False``: the
    columns of a block wait until its queues are final).

    ``x0`` (T,) fired input columns of layer 0 per timestep; ``xs`` for layers 1.. (T, nb) fired
    input units per beat of the layer below; ``hs`` per layer (T, nb) fired recurrent units per
    beat of the layer's previous activation (row t: consumed at t); ``head`` (T, nb) or None.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}; got {policy!r}.")
    L, H, O = cfg.num_layers, cfg.hidden_size, cfg.output_size
    T = len(x0)
    nb = ceil_div(H, act_width)
    nbo = ceil_div(O, act_width) if cfg.has_head else 0
    cc, hc = cyc.column_cost(cfg), cyc.head_column_cost(cfg)
    D = act_drain
    HEADB = L  # block index of the head
    nblk = L + (1 if cfg.has_head else 0)

    def cost(l):
        return hc if l == HEADB else cc

    def drain(l):
        return cyc.head_mac_drain(hc) if l == HEADB else cyc.layer_mac_drain(cfg)

    def fetch(l):
        return cyc.phase_fetch(cyc.HEAD if l == HEADB else l)

    total = np.zeros((T, nblk), dtype=np.int64)  # columns per block
    total[:, 0] = np.asarray(x0) + np.asarray(hs[0]).sum(-1)
    for l in range(1, L):
        total[:, l] = np.asarray(xs[l - 1]).sum(-1) + np.asarray(hs[l]).sum(-1)
    if cfg.has_head:
        total[:, HEADB] = np.asarray(head).sum(-1)
    issued = np.zeros_like(total)
    last_end = np.full((T, nblk), -1, dtype=np.int64)  # issue + cost + drain of the last column
    # Cycles at which a block's sources are final: two sources per layer block (x, h), one for
    # the head; -1 = not known yet.
    final = np.full((T, nblk, 2), -1, dtype=np.int64)
    final[0, :L, 1] = 0  # the recurrent queues of a sequence's first timestep: the reset state
    lastbeat = np.full((T, nblk), -1, dtype=np.int64)  # last activation / read-out beat
    started = np.zeros((T, nblk), dtype=bool)
    # Column groups waiting for the MAC array: heap of (priority, release, t, block, count).
    groups: list = []
    held: dict = {}  # stream=False: (t, block) -> columns held until the block's queues are final

    def prio(t, l):
        return (t, l) if policy == "oldest" else (l == HEADB, t, l)

    def add_group(t, l, release, count):
        if count:
            heapq.heappush(groups, (prio(t, l), release, t, l, int(count)))

    def push(t, l, release, count):
        if stream:
            add_group(t, l, release, count)
        elif count:
            held[(t, l)] = held.get((t, l), 0) + int(count)

    def gate(t, l):
        """The first cycle a column of block (t, l) may issue because of the accumulators (the
        block's activation / read-out of t - 1 read them), or None while that is not issued."""
        if t == 0:
            return 0
        lb = lastbeat[t - 1, l]
        return None if lb < 0 else int(lb) + 1

    def release_x0(t, at):
        """Layer 0's input columns of t, with their queue final at ``at`` (its count read)."""
        final[t, 0, 0] = at
        add_group(t, 0, at + fetch(0), x0[t])

    def ready_time(t, l):
        """The cycle block (t, l)'s activation / read-out may start, or None if not yet known."""
        nsrc = 1 if l == HEADB else 2
        fin = final[t, l, :nsrc]
        if (fin < 0).any() or issued[t, l] < total[t, l]:
            return None
        return max(int(fin.max()) + cyc.EMPTY_MAC_PHASE, int(last_end[t, l]))

    def release_held():
        for (bt, bl) in list(held):
            nsrc = 1 if bl == HEADB else 2
            fin = final[bt, bl, :nsrc]
            if (fin >= 0).all():
                add_group(bt, bl, int(fin.max()) + fetch(bl), held.pop((bt, bl)))

    def on_beats(t, l, first_cycle, n):
        """Activation (or read-out) of (t, l) issued at first_cycle .. first_cycle + n - 1:
        release the columns its deltas feed."""
        last = first_cycle + n - 1
        lastbeat[t, l] = last
        if l == HEADB:
            return
        counted = [first_cycle + k + D + 1 for k in range(n)]
        fin = last + D + 1
        if t + 1 < T:
            if l == 0:
                release_x0(t + 1, last + 1)
            final[t + 1, l, 1] = fin  # recurrent deltas for (t + 1, l)
            for k in range(n):
                push(t + 1, l, counted[k] + fetch(l), hs[l][t + 1, k])
        nxt = l + 1 if l + 1 < L else (HEADB if cfg.has_head else None)
        if nxt is not None:
            final[t, nxt, 0] = fin
            src = xs[l] if nxt < L else head
            for k in range(n):
                push(t, nxt, counted[k] + fetch(nxt), src[t, k])
        if not stream:
            release_held()

    release_x0(0, 0)
    for l in range(L):  # recurrent columns at t = 0 (only with Theta = 0: h starts at zero)
        push(0, l, fetch(l), hs[l][0].sum())
    if not stream:
        release_held()

    tau, act_free, mac_free = 0, 0, 0
    next_job = [0, 0]  # the oldest activation job not started: (t, block)
    end = None
    while end is None:
        progressed = False
        # Activation port: the oldest ready job.
        if act_free <= tau:
            for t in range(next_job[0], min(T, next_job[0] + 2)):
                for l in range(nblk):
                    if started[t, l]:
                        continue
                    if l > 0 and l < HEADB and not started[t, l - 1]:
                        break
                    r = ready_time(t, l)
                    if r is not None and r <= tau:
                        n = nbo if l == HEADB else nb
                        started[t, l] = True
                        act_free = tau + n
                        on_beats(t, l, tau, n)
                        progressed = True
                        break
                if progressed:
                    break
            while next_job[0] < T and started[next_job[0]].all():
                next_job[0] += 1
        # MAC array: the best released column.
        if mac_free <= tau and groups:
            skipped = []
            while groups:
                g = heapq.heappop(groups)
                gt = gate(g[2], g[3])
                if g[1] <= tau and gt is not None and gt <= tau:
                    _, rel, t, l, count = g
                    mac_free = tau + cost(l)
                    issued[t, l] += 1
                    last_end[t, l] = tau + cost(l) + drain(l)
                    if count > 1:
                        heapq.heappush(groups, (g[0], rel, t, l, count - 1))
                    progressed = True
                    break
                skipped.append(g)
            for g in skipped:
                heapq.heappush(groups, g)
        if next_job[0] >= T:
            if cfg.has_head:
                end = int(lastbeat[T - 1, HEADB]) + 1
            else:
                end = int(lastbeat[T - 1, L - 1]) + D + 1
            break
        if progressed:
            continue
        # Nothing happened at tau: jump to the next cycle at which something may.
        cands = [act_free, mac_free]
        for g in groups:
            gt = gate(g[2], g[3])
            if gt is not None:
                cands.append(max(g[1], gt))
        t0 = next_job[0]
        for t in range(t0, min(T, t0 + 2)):
            for l in range(nblk):
                if not started[t, l]:
                    r = ready_time(t, l)
                    if r is not None:
                        cands.append(r)
        later = [c for c in cands if c > tau]
        if not later:
            raise AssertionError(f"schedule simulation stuck at cycle {tau}")
        tau = min(later)
    return end


def _sequences(cfg, masks, lengths, A):
    """Per sequence: (x0, xs, hs, head) as :func:`simulate_sequence` takes them."""
    for b, n in enumerate(lengths.tolist()):
        x0 = masks["x0"][b, :n].sum(-1).numpy()
        xs = [_per_beat(m[b, :n].numpy(), A) for m in masks["x"]]
        hs = [_per_beat(m[b, :n].numpy(), A) for m in masks["h"]]
        head = _per_beat(masks["head"][b, :n].numpy(), A) if masks["head"] is not None else None
        yield x0, xs, hs, head


def _steady_step(cfg, A, D, policy, stream, fired: bool, T=12) -> float:
    """Steady-state cycles of a timestep inside a sequence in which every unit fires (``fired``:
    the dense reference) or none does (the floor: what a timestep costs whatever the data)."""
    nb = ceil_div(cfg.hidden_size, A)
    full = np.full((T, nb), A, dtype=np.int64)
    full[:, -1] = cfg.hidden_size - A * (nb - 1)
    if not fired:
        full[:] = 0
    hs = [full.copy() for _ in range(cfg.num_layers)]
    for h in hs:
        h[0] = 0  # nothing to transmit at a sequence's first timestep
    x0 = np.full(T, cfg.input_size if fired else 0)
    xs = [full.copy() for _ in range(cfg.num_layers - 1)]
    head = full.copy() if cfg.has_head else None

    def run(n):
        return simulate_sequence(cfg, x0[:n], [x[:n] for x in xs], [h[:n] for h in hs],
                                 None if head is None else head[:n], act_width=A, act_drain=D,
                                 policy=policy, stream=stream)
    return (run(T) - run(T // 2)) / (T - T // 2)


def stream_stats(model, x_q, lengths, *, progress=print) -> dict:
    """The projections of :data:`VARIANTS` x :data:`POLICIES` (streaming) and the non-streaming
    check, over the real timesteps of ``x_q`` (B, T, I)."""
    cfg = model.config
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    masks, g = fire_masks_and_golden(model, x_q, lengths)
    steps = int(lengths.sum())
    today = float(g.cycles.sum()) / steps
    op_reduction = float(g.dense_macs.sum()) / float(g.macs.sum())
    rows = []
    for name, mult, dd in VARIANTS:
        A, D = cfg.act_width * mult, cyc.ACT_DRAIN + dd
        for policy, stream in SCHEDULES:
            progress(f"stream: {name}, {policy}{'' if stream else ', no streaming'} ...")
            tot = sum(simulate_sequence(cfg, *s, act_width=A, act_drain=D, policy=policy,
                                        stream=stream)
                      for s in _sequences(cfg, masks, lengths, A))
            delta = tot / steps
            dense = _steady_step(cfg, A, D, policy, stream, True)
            floor = _steady_step(cfg, A, D, policy, stream, False)
            rows.append({"variant": name, "act_width": A, "act_drain": D, "policy": policy,
                         "stream": stream, "delta_cycles": delta, "dense_cycles": dense,
                         "floor_cycles": floor, "speedup": dense / delta,
                         "realized": dense / delta / op_reduction,
                         "realized_ceiling": dense / floor / op_reduction})
    return {"timesteps": steps, "op_reduction": op_reduction, "today_model_cycles": today,
            "today_dense_cycles": cyc.dense_cycles(cfg),
            "today_realized": cyc.dense_cycles(cfg) / today / op_reduction, "rows": rows}


def render_markdown(results: dict) -> str:
    lines = ["# A streaming schedule on today's datapath: projection (issue 11)", "",
             "Generated by `python -m deltahw.bench.stream` (module docstring: the schedule's "
             "rules). **Projections, not measurements**: no RTL implements this schedule. "
             "Realized = (dense cycles / delta cycles) / op reduction; the issue asks for 80 % "
             "on fsdd and 65 % on watch.", "", "![realized share per variant](stream.png)", ""]
    for name, r in results["models"].items():
        lines += [f"## {name}", "",
                  f"{r['timesteps']} test timesteps, op reduction {r['op_reduction']:.2f}x. "
                  f"Today's cycle model: {r['today_model_cycles']:.2f} cycles per timestep, dense "
                  f"{r['today_dense_cycles']}, **{100 * r['today_realized']:.1f} %** realized.", "",
                  "| datapath | A | activation drain | schedule | delta cycles | dense cycles | "
                  "speedup | realized | nothing fired: cycles (ceiling) |",
                  "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            sched = schedule_label(row["policy"], row["stream"])
            lines.append(f"| {row['variant']} | {row['act_width']} | {row['act_drain']} | {sched} "
                         f"| {row['delta_cycles']:.2f} | {row['dense_cycles']:.1f} | "
                         f"{row['speedup']:.2f}x | {100 * row['realized']:.1f} % | "
                         f"{row['floor_cycles']:.0f} ({100 * row['realized_ceiling']:.0f} %) |")
        lines.append("")
        lines += _drain_sentence(name, r["rows"])
    lines += ["Nothing fired: the cycles of a timestep in which no unit fires, the least any "
              "timestep costs on that datapath and schedule; (ceiling): the realized share if "
              "every timestep cost only that, which no data can exceed.", "",
              "The no-streaming rows apply the simulation's rules to today's order of work; "
              "they land within a few percent of today's cycle model (the overlaps differ in "
              "detail), which checks the simulated latencies. The dense column is the same "
              "datapath and schedule with every unit firing, so each ratio compares like with "
              "like.", ""]
    return "\n".join(lines)


#: The issue's targets (share of the op reduction realized as speedup), per shipped model.
TARGETS = {"fsdd": 0.80, "watch": 0.65}


def drain_needed(rows: list, target: float) -> dict:
    """Per schedule ``(policy, stream)``: the fewest cycles the activation drain must lose, at
    the model's own A (the rows' smallest act width), for the realized share to reach ``target``
    (0: today's drain does), or None if no simulated drain does."""
    A = min(r["act_width"] for r in rows)
    today = max(r["act_drain"] for r in rows if r["act_width"] == A)
    out = {}
    for policy, stream in SCHEDULES:
        cuts = [today - r["act_drain"] for r in rows if r["act_width"] == A
                and r["policy"] == policy and r["stream"] == stream and r["realized"] >= target]
        out[(policy, stream)] = min(cuts) if cuts else None
    return out


def _drain_sentence(name: str, rows: list) -> list:
    """The Markdown lines saying what drain each schedule needs for the model's target."""
    if name not in TARGETS:
        return []
    A = min(r["act_width"] for r in rows)
    today = max(r["act_drain"] for r in rows if r["act_width"] == A)
    shortest = min(r["act_drain"] for r in rows if r["act_width"] == A)
    parts = []
    for (policy, stream), cut in drain_needed(rows, TARGETS[name]).items():
        label = schedule_label(policy, stream)
        if cut is None:
            parts.append(f"{label}: not with any drain simulated (down to {shortest})")
        elif cut == 0:
            parts.append(f"{label}: today's drain ({today})")
        else:
            parts.append(f"{label}: a drain {cut} cycles shorter ({today - cut})")
    return [f"**What {name} needs for the issue's {100 * TARGETS[name]:.0f} %** at A = {A}: "
            + "; ".join(parts) + ".", ""]


def render_plot(results: dict) -> bytes:
    """Bars of the realized share per datapath variant and schedule, one panel per model, with
    today's share and the issue's target as lines."""
    from .report import _plt, _png

    plt = _plt()
    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(8 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        r = results["models"][name]
        variants = [v[0] for v in VARIANTS]
        kinds = SCHEDULES
        labels = [schedule_label(p, st) for p, st in kinds]
        width = 0.8 / len(kinds)
        for k, (pol, st) in enumerate(kinds):
            vals = [100 * next(row["realized"] for row in r["rows"] if row["variant"] == v
                               and row["policy"] == pol and row["stream"] == st)
                    for v in variants]
            ax.bar(np.arange(len(variants)) + (k - (len(kinds) - 1) / 2) * width, vals, width,
                   label=labels[k])
        ax.axhline(100 * r["today_realized"], color="k", lw=1, ls="--", label="today (cycle model)")
        if name in TARGETS:
            ax.axhline(100 * TARGETS[name], color="r", lw=1, label="issue 11 target")
        ax.set_xticks(np.arange(len(variants)))
        ax.set_xticklabels([textwrap.fill(v, 16) for v in variants], fontsize=6)
        ax.set_ylabel("speedup over dense / op reduction (%)")
        ax.set_title(f"{name}: op reduction {r['op_reduction']:.2f}x (projection)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def main(argv=None) -> int:
    return analysis_main(argv, name="stream", description=__doc__.split("\n")[0],
                         files="stream.json, stream.md and stream.png", analyse=_analyse,
                         write=_write)


def _analyse(name, model, xq, lengths) -> dict:
    return stream_stats(model, xq, lengths, progress=lambda s: print(f"{name}: {s}", flush=True))


def _write(out: Path, results: dict) -> None:
    atomic_write_text(out / "stream.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out / "stream.md", render_markdown(results))
    atomic_write_bytes(out / "stream.png", render_plot(results))
    print(f"stream: wrote {out / 'stream.json'}, {out / 'stream.md'} and {out / 'stream.png'}",
          flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
