"""The streaming-schedule projection (deltahw/bench/stream.py): its rules on cases worked by hand,
and its fire masks against the golden model."""

import dataclasses

import numpy as np
import pytest
import torch

from deltahw import cycles as cyc
from deltahw.bench import stream
from deltahw.config import DeltaGRUConfig
from deltahw.golden import run_golden

from conftest import random_inputs

D = cyc.ACT_DRAIN
F = cyc.FAST_FETCH
E = cyc.EMPTY_MAC_PHASE


def _cfg():
    # H = 12, A = 4: 3 beats; P = 12: 3 cycles per layer column; O = 2: 1 cycle per head column,
    # 1 read-out beat.
    return DeltaGRUConfig(3, 12, 1, 2, lanes=12, lanes_per_bank=4, act_width=4, enc_width=4)


def test_column_costs_of_the_hand_config():
    cfg = _cfg()
    assert (cyc.column_cost(cfg), cyc.head_column_cost(cfg)) == (3, 1)
    assert cyc.mac_drain(3) == 0 and cyc.head_mac_drain(1) == 0


def test_two_timesteps_worked_by_hand():
    """t = 0: one input column; t = 1: one recurrent column, from the second beat of t = 0."""
    cfg = _cfg()
    x0 = np.array([1, 0])
    hs = [np.array([[0, 0, 0], [0, 1, 0]])]
    head = np.zeros((2, 3), dtype=np.int64)
    # t = 0: the x column issues at F (its queue is final at 0), ends at F + 3; the activation's
    # beats at a0 = F + 3 .. a0 + 2. The h column of t = 1 (beat 1) is counted at a0 + 1 + D + 1
    # and issues F cycles later; the head's queue of t = 0 is final at a0 + 2 + D + 1, its
    # read-out (nothing fired) E cycles later, beside the h column. The h column ends 3 cycles
    # after its issue: the activation of t = 1 (3 beats), then the head of t = 1 (final D + 1
    # after the last beat, read-out E later) and its read-out beat.
    a0 = F + 3
    h_issue = a0 + 1 + D + 1 + F
    a1 = h_issue + 3
    assert a1 >= a0 + 2 + D + 1 + E  # (the column, not the count, decides)
    end = (a1 + 2) + D + 1 + E + 1
    got = stream.simulate_sequence(cfg, x0, [], hs, head, act_width=4, act_drain=D)
    assert got == end


@pytest.mark.parametrize("policy", stream.POLICIES)
def test_a_timestep_with_nothing_fired(policy):
    """Inside a sequence with nothing fired, a timestep is the activation beats, the drain, the
    count read and the read-out beat, as in the schedule before the deferred head (session 22's
    cycle model); today's schedule (``deltahw.cycles``) runs the head's count read and read-out
    inside the drain (the deferred head), and the h phase's count read in the drain's last cycle
    (``cycles.h_fetch_in_window``: nothing fired), two cycles fewer."""
    cfg = _cfg()
    T = 6
    z = np.zeros((T, 3), dtype=np.int64)

    def run(n):
        return stream.simulate_sequence(cfg, np.zeros(n, dtype=np.int64), [], [z[:n]], z[:n],
                                        act_width=4, act_drain=D, policy=policy)
    period = run(T) - run(T - 1)
    assert period == 3 + D + E + 1
    assert stream._steady_step(cfg, 4, D, policy, True, False) == period
    assert period == cyc.floor_cycles(cfg) + 2
    assert cyc.floor_cycles(cfg) == 3 + D  # 3 beats, the window


def test_streaming_starts_a_column_before_the_drain_ends():
    """A recurrent column from the second beat issues while the third beat still drains."""
    cfg = _cfg()
    T = 4
    z = np.zeros((T, 3), dtype=np.int64)
    early = z.copy()
    early[2] = [0, 1, 0]  # t = 2 consumes one delta from the second beat of t = 1

    def run(hs, stream_on):
        return stream.simulate_sequence(cfg, np.zeros(T, dtype=np.int64), [], [hs], z,
                                        act_width=4, act_drain=D, stream=stream_on)
    # With nothing fired, the next activation starts after the last beat's count + E and the
    # read-out beat of t = 1 (1 cycle; the oldest job goes first). Streaming: the column (3
    # cycles) issues at the second beat's count + F, a cycle before the last (third) beat's
    # count, and the read-out beat runs beside it.
    assert run(early, True) - run(z, True) == (F + 3) - 1 - (E + 1)
    # Without streaming the column waits for the last beat's count: fetch F, then 3 cycles.
    assert run(early, False) - run(z, False) == (F + 3) - (E + 1)


def test_fire_masks_match_the_golden_model(small_model):
    cfg = small_model.config
    x = random_inputs(3, 9, cfg.input_size, seed=2, scale=1.0, smooth=True)
    xq, _ = small_model.quantize_input(x.float())
    lengths = torch.tensor([9, 5, 7])
    masks = stream.fire_masks(small_model, xq, lengths)  # raises if counts disagree
    g = run_golden(small_model, xq, lengths)
    assert torch.equal(masks["x0"].sum(-1), g.fired_x[..., 0])
    assert torch.equal(masks["h"][1].sum(-1), g.fired_h[..., 1])
    assert torch.equal(masks["head"].sum(-1), g.fired_head)
    assert not masks["x0"][1, 5:].any() and not masks["h"][0][2, 7:].any()
    assert masks["x"][0].shape == (3, 9, cfg.hidden_size)


@pytest.mark.parametrize("thresholds", [False, True])
def test_no_streaming_stays_near_the_cycle_model(small_model, thresholds):
    """The simulation with streaming off is today's order of work under the same latencies: its
    total is within 10 % of the cycle model's (differences: the overlaps' details)."""
    if thresholds:
        small_model = dataclasses.replace(small_model, config=dataclasses.replace(
            small_model.config, theta_x=(6, 3), theta_h=(4, 5), theta_head=2))
    cfg = small_model.config
    x = random_inputs(2, 12, cfg.input_size, seed=5, scale=1.0, smooth=True)
    xq, _ = small_model.quantize_input(x.float())
    lengths = torch.tensor([12, 12])
    masks = stream.fire_masks(small_model, xq, lengths)
    sim = sum(stream.simulate_sequence(cfg, *s, act_width=cfg.act_width, act_drain=D,
                                       stream=False)
              for s in stream._sequences(cfg, masks, lengths, cfg.act_width))
    g = run_golden(small_model, xq, lengths)
    model = int(g.cycles.sum())
    assert bool((g.fired_h < cfg.hidden_size).any()) == thresholds
    assert abs(sim - model) <= 0.10 * model, (sim, model)


def test_report_files(small_model, tmp_path):
    """stream_stats over a few sequences: one row per variant and schedule, rendered as
    Markdown and a PNG."""
    small_model = dataclasses.replace(small_model, config=dataclasses.replace(
        small_model.config, theta_x=(6, 3), theta_h=(4, 5), theta_head=2))
    x = random_inputs(2, 8, small_model.config.input_size, seed=1, scale=1.0, smooth=True)
    xq, _ = small_model.quantize_input(x.float())
    stats = stream.stream_stats(small_model, xq, torch.tensor([8, 6]), progress=lambda s: None)
    assert stats["timesteps"] == 14
    assert len(stats["rows"]) == len(stream.VARIANTS) * len(stream.SCHEDULES)
    # More activation units, or a shorter drain, never make a timestep slower, all else equal.
    by = {(r["act_width"], r["act_drain"], r["policy"], r["stream"]): r["delta_cycles"]
          for r in stats["rows"]}
    A = small_model.config.act_width
    pairs = 0
    for (a, d, p, s), v in by.items():
        if (2 * a, d, p, s) in by:
            assert by[(2 * a, d, p, s)] <= v
            pairs += 1
        for (a2, d2, p2, s2), v2 in by.items():
            if (a2, p2, s2) == (a, p, s) and d2 < d:
                assert v2 <= v, ((a, d, p, s), d2)
                pairs += 1
    assert pairs > len(stream.SCHEDULES) and (A, cyc.ACT_DRAIN - 6, "oldest", False) in by
    results = {"models": {"tiny": stats}}
    md = stream.render_markdown(results)
    assert md.count("| no streaming (check) |") == len(stream.VARIANTS)
    assert "What" not in md  # "tiny" has no target
    md = stream.render_markdown({"models": {"watch": stats}})
    assert f"**What watch needs for the issue's 65 %** at A = {A}:" in md
    assert stream.render_plot(results).startswith(b"\x89PNG\r\n\x1a\n")


def test_drain_needed_picks_the_smallest_cut_that_reaches_the_target():
    rows = [{"act_width": 4, "act_drain": d, "policy": p, "stream": st, "realized": r}
            for p, st in stream.SCHEDULES
            for d, r in ((12, 0.5), (10, 0.6 if st else 0.5), (9, 0.7), (6, 0.8))]
    rows.append({"act_width": 8, "act_drain": 12, "policy": "oldest", "stream": False,
                 "realized": 0.9})  # 2A: not a drain cut
    need = stream.drain_needed(rows, 0.6)
    assert need[("oldest", True)] == 2 and need[("oldest", False)] == 3
    assert stream.drain_needed(rows, 0.5)[("layers_first", False)] == 0
    assert stream.drain_needed(rows, 0.85)[("oldest", False)] is None
