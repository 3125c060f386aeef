"""The core's schedule: which phase of which block runs in every cycle of a timestep.

This is the one place in the gateware that decides *when* things happen; the datapath in
:mod:`deltahw.gateware.core` only does what the strobes below say. The cycle model
(:mod:`deltahw.cycles`) counts exactly the cycles of this state machine, and its waits come from
there (derived from the blocks' exported latencies). To change the schedule, change this file and
:mod:`deltahw.cycles` together; the regression compares the two on every timestep.

A timestep, per block b (layers 0..L-1, then the head if any), in order:

* ``MAC_FETCH`` (1 cycle): the phase's queue counts are read (``latch_fired``, or ``latch_x0`` for
  layer 0's x phase); nothing fired: the phase ends here (``cycles.EMPTY_MAC_PHASE``). A phase
  that reads one queue (layer 0's x or h phase, the head: ``is_fast``) takes entry 0 here out of
  its queue's first-entry register (``take_first``, ``first_h``: its weight address is
  registered) with entry 1 already on the read port, and issues next cycle
  (``cycles.FAST_FETCH`` = 1). Layers 1.. put entry 0 on the read port (its position in the x
  queue or in the h queue, ``q_h``) and go on with
* ``MAC_FETCH2`` (1 cycle, layers 1..): entry 0 is taken (``take``), entry 1 addressed
  (``cycles.MAC_FETCH`` = 2 cycles in all before the first issue).
* ``MAC_RUN``: ``issue`` for every row group ``g`` of every fired column, ``groups`` cycles per
  column, no bubbles (one entry of look-ahead on the queue read port). With capture
  (``cycles.act_capture`` G > 0, in the layers ``cycles.captures`` names, not in layer 0's x
  phase), the last column's cycles ``g`` = ``ACC_WRITE_LATENCY`` + b also issue activation beat
  b (``act_cap``), b = 0 .. G - 1: the beat takes the words that column updated out of the MAC
  pipeline; ``ACT_RUN`` goes on from beat G.
* ``MAC_DRAIN``: ``cycles.layer_mac_drain`` cycles until the last column's sums are readable
  (``cycles.head_mac_drain``, 0, for the head: its read-out reads through the MAC's forwarding).
* ``ACT_RUN`` (layers): ceil(H/A) activation beats (``act_issue``, ``act_beat``, ``act_k``; the
  accumulator word ``rd_group``), then, for layers 0..L-2, ``ACT_DRAIN`` (``cycles.ACT_DRAIN``)
  until the new h values and their fired deltas are in the queues; the next block starts after it.
* ``OUT_RUN`` (head): ceil(O/A) read-out beats (``ro_issue``, ``ro_beat``, ``ro_k``,
  ``ro_group``), issued by a small read-out engine once started (``ro_go``).

Layer 0 runs two MAC phases: its **x phase** (the input deltas; ``release`` hands the input vector
back at its end), then its **h phase**; layers 1.. sweep x then h entries in one phase.

**The window** (``cycles`` module docstring): the last layer's drain after its last activation
beat (``ACT_DRAIN`` cycles, W), counted by ``wcnt`` (``win``). In the cycle of that last beat the
schedule decides ``ovl``: the next input vector is in and continues the sequence. The window
then runs the **head slot** (with a head, unless the timestep starts its sequence, ``slot_ok``):
the deferred head of the previous timestep (``pend``) and its read-out, or, when that head ran in
place, ``PAD`` for as many cycles (``pad_len``, measured when it ran); then, with ``ovl``, the
next timestep's x phase (``X`` mode ``OVL``), from the slot's last cycle on: the head's last
read-out beat is issued by the read-out engine on its own, so the x phase's fetch runs beside it
(``after_slot`` decides a cycle before the slot ends; the pad's last cycle likewise). The
timestep closes (``step_done``) in the window cycle in which the drain and the slot are both done
(``cycles``: ``max(W, S)`` cycles), wherever the state machine is then (``WIN_WAIT`` if nothing
else runs); the window's later cycles are the next timestep's. After the close and the x
phase: with ``ovl`` the next h phase (the head of this timestep is deferred: ``pend``), without it
the head runs **in place** (``inplace``: its MAC phase and read-out are stall cycles,
``cycles.flush_cycles``) and the next input is awaited. Where the x phase was over by the
window's last cycle (or ends in it with columns) and layer 0's h queue already shows its
first entry there (``h0_before`` > 0, or nothing pending in its input registers either:
``cycles.h_fetch_in_window``), the next h phase's fetch runs in that cycle (``merged_h_fetch``
with ``in_window``; the counters latch its counts a cycle later, ``late_latch``, when they are
final).

The head's x queue is double-buffered: the last layer's activation of each timestep fills the
other buffer (``head_wbuf``, switched at its first beat), so the deferred head reads its own
(``head_rbuf``) while the next timestep's deltas come in. The accumulator words the overlapped x
phase writes were all read by layer 0's activation beats (its first issue is at least
``cycles.FAST_FETCH`` + 1 cycles after the last beat); the h queue is complete when the h phase
reads its count (after the close, so after the drain).

Cycle accounting (``counting``: a compute cycle of the running timestep, which is the next one
from the cycle after ``step_done``; ``stalling``): every cycle counts but these stall: waiting
for output room (``WAIT_OUT``), an in-place head, and the first ``hide_lim`` cycles of a **late**
x phase (``LATE``: its input was not in at the decision), the part of it the window would have
hidden (``cycles.lost_overlap``: ``W`` less the slot that window held, plus the slot's last
cycle), and its h phase's fetch where that window's last cycle would have run it (``e_ok``,
``h_lost``). Stall cycles do not
advance the window. After a sequence reset (``FIRST``) the x phase is all compute. So the
compute cycles of a timestep never depend on the input timing (``cycles.run_cycles``).

Before the phase that writes the output FIFO (the head's read-out, or the last layer's activation)
the schedule waits in ``WAIT_OUT`` until there is room for a timestep (``out_room``). A new input
vector with ``r_reset`` first runs the ``RESET`` phase (``cycles.reset_cycles``: accumulators <-
biases, states cleared, ``resetting`` with ``reset_addr``; ``resetting_next`` and
``reset_addr_next`` are their values of the next cycle, from which the datapath registers copies
of them next to their consumers); it never overlaps (the reset reloads every accumulator). With
nothing to do the schedule waits in ``IDLE`` (not counted).

Latency and throughput: one state per cycle, no internal pipelining; the outputs are
combinational from the state (``q_h`` and the strobes) or registers (``block``, ``g``, beat
counters, ``head_wbuf``/``head_rbuf``); the queue read addresses are given for the next cycle
(``q_addr_next``, ``q_addr_h_next``, ``q_addr_head_next``, combinational) and each queue
registers its own copy.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import cycles
from ..config import DeltaGRUConfig, ceil_div
from ..layout import Layout
from .frontend import bits_for

__all__ = ["Schedule"]


class Schedule(wiring.Component):
    """The controller state machine (see the module docstring for the phases).

    ``drain_trim`` (tests only): shorten the waits by the given cycles, ``{"act": n, "mac": n,
    "head_mac": n}``, to show that each is the minimum that stays bit-exact.
    """

    def __init__(self, config: DeltaGRUConfig, *, drain_trim=None):
        self.config = config
        self.drain_trim = dict(drain_trim or {})
        L, P, A = config.num_layers, config.lanes, config.act_width
        nb = ceil_div(config.hidden_size, A)
        nbo = ceil_div(config.output_width, A)
        super().__init__({
            # status from the datapath
            "r_full": In(1),
            "r_reset": In(1),
            "nx": In(16),  # fired entries in the current block's x queue
            "nh": In(16),  # ... and in its h queue
            # layer 0's h queue, straight from it (no select by ``block``), a cycle ahead of its
            # count (DeltaQueue's look-ahead): the entries before the beat in its input
            # registers, and whether that beat holds a delta. Read by the h phase's fetch merged
            # into the x phase's last cycle or the window's (merged_h_fetch), where ``block`` is
            # 0 anyway; through nh, ``block`` -> the count select -> ``last_e`` was the ECP5's
            # critical path at 100 MHz (98.58 MHz; session 24)
            "h0_before": In(16),
            "h0_pending": In(1),
            "out_room": In(1),
            # where the timestep is
            "block": Out(range(L + 1)),  # L = the head
            "release": Out(1),
            "resetting": Out(1),
            "resetting_next": Out(1),  # ``resetting`` of the next cycle (for registered copies)
            "reset_addr": Out(16),
            "reset_addr_next": Out(16),  # ``reset_addr`` of the next cycle (for registered copies)
            # MAC phase
            "latch_fired": Out(1),  # a MAC phase reads its counts (not layer 0's x phase)
            "latch_x0": Out(1),  # layer 0's x phase reads its count
            "n_x": Out(16),  # x entries the current phase sweeps (0 in layer 0's h phase)
            "n_h": Out(16),  # h entries the current phase sweeps (0 in layer 0's x phase)
            # The queues' read addresses of the next cycle (each queue registers its own copy):
            "q_addr_next": Out(16),  # entry put on the x queues' read port ...
            "q_addr_h_next": Out(16),  # ... its position in the h queue ...
            "q_addr_head_next": Out(16),  # the head's x queue's (q_addr_next in its phase)
            "q_h": Out(1),  # the entry on the ports in this cycle is the h queue's (else x's)
            "take": Out(1),  # the entry addressed in the previous cycle becomes the column
            # the phase's first column is entry 0 out of the block's queue's first-entry register
            # (the h queue's with first_h: layer 0's h phase, else the x queue's)
            "take_first": Out(1),
            "first_h": Out(1),
            "issue": Out(1),
            "g": Out(bits_for(max(cycles.column_cost(config),
                                  cycles.head_column_cost(config) if config.has_head else 1))),
            # ^ row group of the current column
            # activation and read-out
            "rd_group": Out(16),  # accumulator word read by the current beat
            "act_issue": Out(1),
            "act_cap": Out(1),  # the beat is issued in the last column (cycles.act_capture)
            "act_beat": Out(bits_for(nb)),
            "act_k": Out(bits_for(max(1, P // (3 * A)))),
            "ro_issue": Out(1),
            "ro_beat": Out(bits_for(nbo)),
            "ro_k": Out(bits_for(max(1, P // A))),
            "ro_group": Out(16),  # head accumulator word read by the current read-out beat
            # accounting
            "counting": Out(1),
            "stalling": Out(1),
            "step_done": Out(1),
            "latch_block": Out(range(L + 1)),  # the block whose counts latch_fired latches ...
            "latch_nx": Out(16),  # ... and its x count
            # the head's x queue: the buffer the activation fills, the one the head phase reads
            "head_wbuf": Out(1),
            "head_rbuf": Out(1),
        })


    def elaborate(self, platform):  # noqa: C901 - one state machine, read top to bottom
        m = Module()
        cfg = self.config
        L, P, A, head = cfg.num_layers, cfg.lanes, cfg.act_width, cfg.has_head
        lay = Layout(cfg)
        nb = ceil_div(cfg.hidden_size, A)
        nbo = ceil_div(cfg.output_width, A)

        def table(values):
            width = max(1, max(int(v).bit_length() for v in values))
            return Array(Const(int(v), width) for v in values)

        costs = [cycles.column_cost(cfg)] * L + ([cycles.head_column_cost(cfg)] if head else [])
        assert costs == [lay.groups] * L + ([lay.head_groups] if head else []), (
            "a column issues one row group per cycle")
        # The overlapped x phase may write an accumulator word in the cycle after its first issue
        # at the earliest; the last activation beat read its word in its own issue cycle, which
        # is at least FAST_FETCH + 1 cycles earlier.
        assert cycles.FAST_FETCH >= 1 and cycles.ACC_WRITE_LATENCY >= 1
        # The fetch states below: MAC_FETCH (the empty phase's one cycle, a fast phase's fetch)
        # and MAC_FETCH2 (a slow phase's second cycle).
        assert cycles.MAC_FETCH == 2 and cycles.FAST_FETCH == 1 and cycles.EMPTY_MAC_PHASE == 1
        trim = self.drain_trim
        drains = [cycles.layer_mac_drain(cfg) - trim.get("mac", 0)] * L
        if head:
            drains.append(cycles.head_mac_drain(costs[L]) - trim.get("head_mac", 0))
        act_drain = cycles.ACT_DRAIN - trim.get("act", 0)
        # Capture (cycles.act_capture): the first beats in the last column's cycles
        # ACC_WRITE_LATENCY + b, of the layers cycles.captures names.
        cap_at = cycles.ACC_WRITE_LATENCY - trim.get("cap", 0)
        cap_blocks = [l for l in range(L) if cycles.captures(config=cfg, layer=l)]
        assert min(drains) >= 0 and act_drain >= 2, "a drain cannot be trimmed that far"
        t_groups, t_drain = table(costs), table(drains)
        # The head slot's cycles, S = 1 + n * ceil(O/P) + ceil(O/A) for n fired columns (its
        # fetch or empty phase, its columns, no drain, its read-out beats): cycles.head_slot.
        if head:
            hc = costs[L]
            assert drains[L] == 0 and all(
                cycles.head_slot(cfg, n) == 1 + n * hc + nbo for n in (0, 1, 2)), (
                "the head slot's length below is cycles.head_slot")
            s_max = cycles.head_slot(cfg, cfg.hidden_size)
        else:
            s_max = 1  # (no slot; one bit, not a zero-width vector, for Verilator's lint)

        block, g = self.block, self.g
        # ``block`` is a register; ``block_n`` its value of the next cycle (the states below set
        # it), from which the head's queue's next read address is derived.
        block_n = Signal.like(block, name="block_next")
        m.d.comb += block_n.eq(block)
        m.d.sync += block.eq(block_n)
        # reset_addr is the register of reset_addr_next (which holds it but where a state below
        # sets it), so the datapath can register copies of it from reset_addr_next.
        m.d.comb += self.reset_addr_next.eq(self.reset_addr)
        m.d.sync += self.reset_addr.eq(self.reset_addr_next)
        px, ph = Signal(), Signal()  # the phase sweeps the block's x / h entries
        m.d.comb += [self.n_x.eq(Mux(px, self.nx, 0)), self.n_h.eq(Mux(ph, self.nh, 0))]
        n_x = self.n_x
        n_total = self.n_x + self.n_h
        # The column being swept is the phase's last: a register, set when the sweep moves on to
        # a column (the counts are constant during a phase), so no adder and compare of the live
        # counts decides the phase's end in MAC_RUN (Fmax).
        last_e = Signal()
        e = Signal(16)  # entry whose column is being swept
        cnt = Signal(16)  # drain counter
        act_beat, act_k, rd_group = self.act_beat, self.act_k, self.rd_group
        ro_beat, ro_k = self.ro_beat, self.ro_k
        final_block = L if head else L - 1
        # Layer 0's x phase: xseg, its mode; a late one's stall counter (saturating at hide_lim).
        OVL, LATE, FIRST = 0, 1, 2
        xseg = Signal()
        xmode = Signal(2)
        seg = Signal(range(act_drain + 1))
        hide_lim = Signal(range(act_drain + 1), init=act_drain)
        # The window (module docstring): its counted cycles, the next input's decision, the slot.
        w_max = max(act_drain, s_max)
        win = Signal()
        wcnt = Signal(range(w_max + 1))
        ovl = Signal()  # the next timestep's x phase runs in this window
        slot_fin = Signal()  # the window's slot is in its last cycle or done (or there is none)
        pend = Signal()  # the head of the previous timestep was deferred to this window
        slot_ok = Signal()  # the running timestep does not start a sequence (a slot in its window)
        inplace = Signal()  # the head phase running is an in-place head (stall cycles)
        s_len = Signal(range(s_max + 1))  # the slot's cycles in this window
        pad_len = Signal(range(s_max + 1))  # the cycles of the head that ran in place last
        pcnt = Signal(range(s_max + 1))
        hb = Signal()  # the head queue buffer the last layer's activation fills
        hb_n = Signal()  # ... its value of the next cycle
        hrb = Signal()  # the one the head phase reads
        m.d.comb += hb_n.eq(hb)
        m.d.sync += hb.eq(hb_n)
        m.d.comb += [self.head_wbuf.eq(hb), self.head_rbuf.eq(hrb)]
        # Read-out engine: issues the head's ceil(O/A) beats once started (ro_go).
        ro_go = Signal()  # the first read-out beat issues next cycle
        ro_active = Signal()
        ro_group = self.ro_group
        if head:
            m.d.comb += self.ro_issue.eq(ro_active)
            with m.If(ro_active):
                m.d.sync += ro_beat.eq(ro_beat + 1)
                with m.If(ro_k == max(1, P // A) - 1):
                    m.d.sync += [ro_k.eq(0), ro_group.eq(ro_group + 1)]
                with m.Else():
                    m.d.sync += ro_k.eq(ro_k + 1)
                with m.If(ro_beat == nbo - 1):
                    # The read-out pipeline (cycles.READOUT_STAGES) finishes on its own.
                    m.d.sync += ro_active.eq(0)
            with m.If(ro_go):
                m.d.sync += [ro_active.eq(1), ro_beat.eq(0), ro_k.eq(0), ro_group.eq(0)]

        m.d.comb += [self.latch_block.eq(block), self.latch_nx.eq(self.n_x)]

        # The queue read addresses are registers (Fmax: the queues' LUT RAMs are read straight
        # from flip-flops): ``qi`` is the entry on the read ports in this cycle, ``qi_h`` the same
        # entry's position in the h queue (``qi - n_x``; the x count is constant during a phase).
        # Each fetching state sets next cycle's entry (``qi_n``, ``qi_h_n``): 0 at a phase's start
        # (begin_mac), then 1, then one step each cycle in which the sweep moves on to the next
        # entry. The queues get the next values and register their own copies (with the read
        # cursor's decisions: ``DeltaQueue``). ``qi1``/``qi_h1`` hold them plus one, so a step is
        # a select, not an adder after the step's logic.
        max_entries = max([cfg.layer_input_size(l) + cfg.hidden_size for l in range(L)]
                          + ([cfg.hidden_size] if head else []))
        qbits = (max_entries + 2).bit_length()
        qi, qi_h = Signal(qbits), Signal(qbits)
        qi1, qi_h1 = Signal(qbits, init=1), Signal(qbits, init=1)
        regs = (qi, qi1, qi_h, qi_h1)
        qi_n, qi1_n, qi_h_n, qi_h1_n = nexts = [Signal.like(r, name=f"{r.name}_next")
                                                for r in regs]
        for r, n in zip(regs, nexts):
            m.d.comb += n.eq(r)
            m.d.sync += r.eq(n)
        m.d.comb += [self.q_addr_next.eq(qi_n), self.q_addr_h_next.eq(qi_h_n),
                     self.q_h.eq(qi >= n_x)]

        def is_fast(blk):
            """The block's MAC phases read one queue (layer 0's x or h phase, the head), whose
            first entry is in a register: ``cycles.FAST_FETCH``. Layers 1.. sweep two queues
            (x then h, the h position known only from the x count read in MAC_FETCH):
            ``cycles.MAC_FETCH``."""
            return (blk == 0) | ((blk == L) if head else Const(0, 1))

        # The first-entry register a fast phase's take_first reads: the h queue's in layer 0's
        # h phase, the x queue's in its x phase's fetch and in the head's. A register (not ~px):
        # after the x phase's fetch it points at the h queue already, for the h phase's fetch
        # merged into the x phase's last cycle (merged_h_fetch).
        fh = Signal()
        m.d.comb += self.first_h.eq(fh)
        # The head's x queue is read at entry 1 outside the head's phase, so that its phase's
        # fetch finds entry 1 on the read port.
        if head:
            m.d.comb += self.q_addr_head_next.eq(Mux(block_n == L, qi_n, 1))

        def fetch_next(step):
            """Next cycle's entry is this one plus ``step`` (0 or 1)."""
            m.d.comb += [qi_n.eq(Mux(step, qi1, qi)), qi1_n.eq(Mux(step, qi1 + 1, qi1)),
                         qi_h_n.eq(Mux(step, qi_h1, qi_h)),
                         qi_h1_n.eq(Mux(step, qi_h1 + 1, qi_h1))]

        def fetch_at(index, index_h):
            """Next cycle's entry is ``index`` (``index_h`` in the h queue)."""
            m.d.comb += [qi_n.eq(index), qi1_n.eq(index + 1), qi_h_n.eq(index_h),
                         qi_h1_n.eq(index_h + 1)]

        # ``g_last``: the current row group is its column's last (a register, Fmax).
        g_last = Signal()

        def begin_mac(blk, use_x, use_h, mode=None):
            """Start a MAC phase of block ``blk`` next cycle (``mode``: layer 0's x phase)."""
            m.d.comb += block_n.eq(blk)
            m.d.sync += [px.eq(use_x), ph.eq(use_h), xseg.eq(mode is not None), fh.eq(not use_x)]
            # MAC_FETCH reads entry 0 (of either queue); a fast phase takes entry 0 from the
            # first-entry register there, with entry 1 already on the read port.
            first = Mux(is_fast(blk), 1, 0)
            fetch_at(first, first)
            if mode is not None:
                m.d.sync += [xmode.eq(mode), seg.eq(0)]
            m.next = "MAC_FETCH"

        def begin_head(in_place):
            """Start a head phase next cycle: the deferred head of the previous timestep (its
            buffer is the one the last activation did not fill) or this timestep's, in place."""
            m.d.sync += [inplace.eq(in_place), hrb.eq(hb_n if in_place else ~hb_n)]
            begin_mac(L, 1, 1)

        def start_step():
            """After a timestep that closed without its successor's x phase (or in IDLE): start
            the next one if its input is in."""
            with m.If(self.r_full):
                with m.If(self.r_reset):
                    m.d.comb += block_n.eq(0)
                    m.d.comb += self.reset_addr_next.eq(0)
                    m.d.comb += self.resetting_next.eq(1)
                    m.d.sync += slot_ok.eq(0)
                    m.next = "RESET"
                with m.Else():
                    m.d.sync += slot_ok.eq(1)
                    begin_mac(0, 1, 0, LATE)
            with m.Else():
                m.next = "IDLE"

        # Layer 0's h queue a cycle ahead (the schedule's h0_before / h0_pending inputs): its
        # first entry is known in this cycle (stored: h0_before > 0; or the queue stays empty).
        # Only the window's last cycle has a beat pending (with one layer: the last activation
        # beat's deltas), where the h phase's fetch may run when this holds
        # (cycles.h_fetch_in_window); ``e_ok`` keeps it from the close for a late x phase, whose
        # h fetch is then a stall cycle (``h_lost``) as the window would have hidden it.
        h0_known = (self.h0_before != 0) | ~self.h0_pending
        e_ok, h_lost = Signal(), Signal()
        late_latch = Signal()  # the h phase's counts latch next cycle (they are final then)

        # ---- the window: its count, the close ------------------------------------------------
        close = Signal()  # the running timestep closes in this cycle
        m.d.comb += close.eq(win & self.counting & (wcnt >= act_drain - 1) & slot_fin)
        m.d.comb += self.step_done.eq(close)
        with m.If(win & self.counting):
            m.d.sync += wcnt.eq(wcnt + 1)
        with m.If(close):
            # A late next x phase stalls for what this window would have hidden of it: all of
            # the drain without a slot, else from the slot's last cycle on, which is in the
            # window (cycles.x_phase_hidden); and its h fetch where this cycle would have taken
            # it (e_ok: cycles.h_fetch_in_window).
            m.d.sync += e_ok.eq(h0_known)
            m.d.sync += [win.eq(0),
                         hide_lim.eq(Mux(s_len == 0, act_drain,
                                         Mux(s_len >= act_drain, 1, act_drain + 1 - s_len)))]

        def post_window():
            """The window closes this cycle and the slot (and the overlapped x phase) are done:
            the next h phase, or this timestep's head in place (or the next input)."""
            with m.If(ovl):
                m.d.sync += pend.eq(1 if head else 0)
                begin_mac(0, 0, 1)
            with m.Else():
                m.d.sync += pend.eq(0)
                if head:
                    begin_head(True)
                else:
                    start_step()

        def after_slot(go):
            """The slot's last cycle is the next one (or, without a slot, the window's first):
            the overlapped x phase starts there (its fetch beside the read-out's last beat,
            which is the read-out engine's), or wait for the close. ``close`` cannot be true in
            this cycle: the slot is not in its last cycle yet (or the window not begun)."""
            m.d.sync += slot_fin.eq(1)
            with m.If(go):
                begin_mac(0, 1, 0, OVL)
            with m.Else():
                m.next = "WIN_WAIT"

        def start_readout():
            """The head's read-out beats issue from the next cycle on (the read-out engine). A
            head in the window (not ``inplace``) hands the MAC array to the x phase in the
            read-out's last beat: with one beat that is the next cycle."""
            m.d.comb += ro_go.eq(1)
            if nbo == 1:
                with m.If(inplace):
                    m.next = "OUT_RUN"
                with m.Else():
                    after_slot(ovl)
            else:
                m.next = "OUT_RUN"

        def account():
            """Whose cycle this is (module docstring, cycle accounting)."""
            def in_place():
                m.d.comb += self.stalling.eq(1)

            def h_fetch_lost():  # (a late x phase's h fetch, in MAC_FETCH: one cycle)
                m.d.comb += self.stalling.eq(1)
                m.d.sync += h_lost.eq(0)

            def late_x():
                lost = seg < hide_lim
                m.d.sync += seg.eq(Mux(lost, seg + 1, seg))
                m.d.comb += [self.stalling.eq(lost), self.counting.eq(~lost)]

            # An If/Elif chain of the conditions that exist (no constant one: Verilator's lint
            # flags the overlapping case patterns a constant condition leaves, CASEOVERLAP).
            chain = ([(inplace & (block == L), in_place)] if head else []) + [
                (h_lost, h_fetch_lost), (xseg & (xmode == LATE), late_x)]
            for i, (cond, action) in enumerate(chain):
                with (m.If(cond) if i == 0 else m.Elif(cond)):
                    action()
            with m.Else():
                m.d.comb += self.counting.eq(1)

        def merged_h_fetch(in_window=False):
            """Layer 0's h phase's fetch in this cycle: the x phase's last
            (``cycles.h_fetch_merged``: a compute cycle of the timestep, so its window has closed
            and the h queue is final, after an x phase with columns of at least 2 cycles each),
            or, ``in_window``, the window's last cycle (``cycles.h_fetch_in_window``: the x phase
            is over or in its last cycle, and ``h0_known``; the counts are final a cycle later,
            so the counters latch them then, and a first column whose count may still grow takes
            ``last_e`` then too): what MAC_FETCH does for it, beside the x phase's last issue (or
            drain). Entry 0 comes out of the h queue's first-entry register (``fh`` is set since
            the x phase's fetch); entry 1 is addressed next cycle, in time for the first
            column's last cycle, the earliest ``take``."""
            m.d.comb += self.take_first.eq(1)
            if in_window:
                m.d.sync += late_latch.eq(1)
            else:
                m.d.comb += self.latch_fired.eq(1)
            m.d.sync += [px.eq(0), ph.eq(1), xseg.eq(0), e.eq(0), g.eq(0), cnt.eq(0),
                         g_last.eq(0), last_e.eq((self.h0_before == 1) & ~self.h0_pending),
                         rd_group.eq(0), act_k.eq(0), act_beat.eq(0)]
            fetch_at(1, 1)
            with m.If(xmode == OVL):  # (post_window's decision: the head is deferred)
                m.d.sync += pend.eq(1 if head else 0)
            with m.If((self.h0_before == 0) & ~self.h0_pending):
                if final_block == 0:  # the activation writes the output FIFO
                    with m.If(~self.out_room):
                        m.next = "WAIT_OUT"
                    with m.Else():
                        m.next = "ACT_RUN"
                else:
                    m.next = "ACT_RUN"
            with m.Else():
                m.next = "MAC_RUN"

        def mac_done(may_merge=False):
            """The MAC phase ends this cycle: on to the next phase. ``may_merge``: the x phase's
            last cycle may take the h phase's fetch (not in its fetch: an empty x phase)."""
            with m.If(xseg):
                m.d.comb += self.release.eq(1)  # the input vector's queue has been read
                fast_cols = cycles.column_cost(cfg) >= 2
                if may_merge and fast_cols:
                    merge = ~win & self.counting
                    in_window = (xmode == OVL) & close & h0_known
                else:
                    merge = in_window = Const(0, 1)
                if fast_cols:
                    # A late x phase: its h fetch is a stall cycle where the window would have
                    # taken it (the x phase's last cycle lost, the fetch's cycle in the window).
                    lost_last = seg < hide_lim
                    fits = (seg + 1 < hide_lim) if not may_merge else Const(1, 1)
                    m.d.sync += h_lost.eq((xmode == LATE) & e_ok & lost_last & fits)
                with m.If(merge):
                    merged_h_fetch()
                with m.Elif(in_window):
                    merged_h_fetch(in_window=True)
                with m.Elif(xmode == OVL):
                    with m.If(~win | close):
                        post_window()
                    with m.Else():
                        m.next = "WIN_WAIT"
                with m.Else():
                    begin_mac(0, 0, 1)
            with m.Elif((block == final_block) & ~self.out_room):
                m.next = "WAIT_OUT"
            if head:
                with m.Elif(block == L):
                    start_readout()
            with m.Else():
                m.next = "ACT_RUN"

        last_layer = block == L - 1

        def act_step():
            """Issue an activation beat (``act_beat``, reading word ``rd_group``)."""
            m.d.comb += self.act_issue.eq(1)
            m.d.sync += act_beat.eq(act_beat + 1)
            # (a beat reads the row groups of P // 3A... beats, or Layout.acc_split of them)
            with m.If(act_k == max(1, P // (3 * A)) - 1):
                m.d.sync += [act_k.eq(0), rd_group.eq(rd_group + lay.acc_split)]
            with m.Else():
                m.d.sync += act_k.eq(act_k + 1)
            if head:  # the last layer's activation fills the other buffer of the head queue
                with m.If(last_layer & (act_beat == 0)):
                    m.d.comb += hb_n.eq(~hb)

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                start_step()
            with m.State("RESET"):
                m.d.comb += self.resetting.eq(1)
                m.d.comb += self.reset_addr_next.eq(self.reset_addr + 1)
                with m.If(self.reset_addr == cycles.reset_cycles(cfg) - 1):
                    begin_mac(0, 1, 0, FIRST)
                with m.Else():
                    m.d.comb += self.resetting_next.eq(1)
            with m.State("MAC_FETCH"):
                account()
                m.d.comb += [self.latch_fired.eq(~xseg), self.latch_x0.eq(xseg)]
                # Slow phase: entry 0 on the read ports; next cycle entry 1 (its h position from
                # the count read now; it is only used when n_x <= 1). Fast phase: entry 0 taken
                # from the first-entry register, entry 1 on the read ports; next cycle the entry
                # MAC_RUN's look-ahead wants there (2 with one-cycle columns). begin_mac below
                # overrides this.
                fast = is_fast(block)
                m.d.sync += [e.eq(0), g.eq(0), cnt.eq(0), g_last.eq(t_groups[block] == 1)]
                with m.If(xseg):  # (merged_h_fetch: the h queue's first entry from here on)
                    m.d.sync += fh.eq(1)
                with m.If(fast):
                    m.d.comb += self.take_first.eq(1)
                    fetch_next(t_groups[block] == 1)
                with m.Else():
                    fetch_at(1, 1 - n_x)
                with m.If(~xseg):  # (the overlapped x phase runs after the last beat)
                    m.d.sync += [rd_group.eq(0), act_k.eq(0), act_beat.eq(0)]
                if head:
                    # The head slot's length (cycles.head_slot), or the pad's for the next window.
                    with m.If(block == L):
                        s_now = 1 + n_x * costs[L] + nbo
                        with m.If(inplace):
                            m.d.sync += pad_len.eq(s_now)
                        with m.Else():
                            m.d.sync += s_len.eq(s_now)
                m.d.sync += last_e.eq(n_total == 1)
                with m.If((self.n_x == 0) & (self.n_h == 0)):  # n_total == 0, without the adder
                    mac_done()  # cycles.EMPTY_MAC_PHASE
                with m.Elif(fast):
                    m.next = "MAC_RUN"  # cycles.FAST_FETCH
                with m.Else():
                    m.next = "MAC_FETCH2"  # cycles.MAC_FETCH
            with m.State("MAC_FETCH2"):
                account()
                m.d.comb += self.take.eq(1)
                # Entry 1 on the read ports; MAC_RUN starts at column 0, group 0.
                fetch_next(g_last)
                m.next = "MAC_RUN"
            with m.State("MAC_RUN"):
                account()
                m.d.comb += self.issue.eq(1)
                with m.If(late_latch):  # (the first cycle after a fetch in the window's last)
                    m.d.sync += last_e.eq(n_total == 1)
                # The entry taken in a column's last cycle was addressed the cycle before: in
                # the column's previous cycle, or (one-cycle columns) in the previous column's.
                last_g = g_last  # g == groups - 1
                g_last_next = Mux(last_g, t_groups[block] == 1, g + 2 == t_groups[block])
                m.d.sync += g_last.eq(g_last_next)
                # On the read ports: entry e + 2 in the column's last cycle, else e + 1 (qi); the
                # next cycle's is one further when that cycle is a column's last.
                fetch_next(g_last_next)
                if cap_blocks:
                    # Capture: the layer's first beats in its last column (not layer 0's x phase:
                    # its h phase follows), from the column's cycle ``cap_at`` on.
                    in_cap = Const(0, 1)
                    for l in cap_blocks:
                        in_cap = in_cap | (block == l)
                    with m.If(in_cap & ~xseg & last_e & (g >= cap_at)):
                        m.d.comb += self.act_cap.eq(1)
                        act_step()
                with m.If(last_g):
                    m.d.sync += [g.eq(0), e.eq(e + 1)]
                    m.d.comb += self.take.eq(1)
                    m.d.sync += last_e.eq(e + 2 == n_total)
                    with m.If(last_e):  # e + 1 == n_total
                        with m.If(t_drain[block] == 0):
                            mac_done(may_merge=True)
                        with m.Else():
                            m.next = "MAC_DRAIN"
                with m.Else():
                    m.d.sync += g.eq(g + 1)
            with m.State("MAC_DRAIN"):
                # Until the last column's first accumulator word is readable (cycles.mac_drain).
                account()
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == t_drain[block] - 1):
                    m.d.sync += cnt.eq(0)
                    mac_done(may_merge=True)
            with m.State("WAIT_OUT"):
                m.d.comb += self.stalling.eq(1)
                with m.If(self.out_room):
                    if head:
                        start_readout()
                    else:
                        m.next = "ACT_RUN"
            with m.State("ACT_RUN"):
                m.d.comb += self.counting.eq(1)
                act_step()
                with m.If(act_beat == nb - 1):
                    m.d.sync += cnt.eq(0)
                    with m.If(last_layer):
                        # The window starts next cycle; decide whether the next timestep's x
                        # phase runs in it (its input is in and continues the sequence).
                        go = self.r_full & ~self.r_reset
                        m.d.sync += [win.eq(1), wcnt.eq(0), ovl.eq(go)]
                        if head:
                            m.d.sync += slot_ok.eq(go)  # the next timestep's (start_step else)
                            with m.If(slot_ok & pend):
                                m.d.sync += slot_fin.eq(0)
                                begin_head(False)
                            with m.Elif(slot_ok & (pad_len != 0)):
                                # (pad_len is 0 only before any head ran: a run whose first
                                # input did not start a sequence, which no model describes)
                                # (pcnt counts the pad's cycles from 2: its last cycle, s_len
                                # - 1, runs beside the x phase's fetch, as a head's last
                                # read-out beat does)
                                m.d.sync += [slot_fin.eq(0), s_len.eq(pad_len), pcnt.eq(2)]
                                m.next = "PAD"
                            with m.Else():
                                m.d.sync += s_len.eq(0)
                                after_slot(go)
                        else:
                            m.d.sync += s_len.eq(0)
                            after_slot(go)
                    with m.Else():
                        m.next = "ACT_DRAIN"
            with m.State("ACT_DRAIN"):
                # Layers 0..L-2: until the new h values and their deltas are in the queues.
                m.d.comb += self.counting.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == act_drain - 1):
                    m.d.sync += cnt.eq(0)
                    begin_mac(block + 1, 1, 1)
            with m.State("PAD"):
                # The empty head slot (the previous head ran in place): as many cycles as it took,
                # its last one beside the x phase's fetch (after_slot).
                m.d.comb += self.counting.eq(1)
                m.d.sync += pcnt.eq(pcnt + 1)
                with m.If(pcnt == s_len):
                    after_slot(ovl)
            with m.State("WIN_WAIT"):
                # The rest of the window (the drain, or the slot's overflow is past already).
                m.d.comb += self.counting.eq(1)
                with m.If(close):
                    if cycles.column_cost(cfg) >= 2:
                        with m.If(ovl & h0_known):  # (the x phase ran in the window)
                            merged_h_fetch(in_window=True)
                        with m.Else():
                            post_window()
                    else:
                        post_window()
            with m.State("OUT_RUN"):
                # The read-out engine issues the beats.
                if head:
                    with m.If(inplace):
                        m.d.comb += self.stalling.eq(1)
                        with m.If(ro_beat == nbo - 1):
                            m.d.sync += inplace.eq(0)
                            start_step()
                    with m.Else():
                        # (only with nbo > 1: a one-beat slot's head goes on from mac_done)
                        m.d.comb += self.counting.eq(1)
                        if nbo > 1:
                            with m.If(ro_beat == nbo - 2):
                                after_slot(ovl)  # the x phase's fetch beside the last beat
        # The counts of an h phase fetched in the window's last cycle, a cycle later (whatever
        # state that is: its columns, its activation, or the wait for output room).
        with m.If(late_latch):
            m.d.comb += self.latch_fired.eq(1)
            m.d.sync += late_latch.eq(0)
        return m
