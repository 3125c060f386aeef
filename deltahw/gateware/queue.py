"""Nonzero-delta queue: the FIFO of (column index, delta) pairs between a delta encoder and the MAC
array.

An encoder that compares K elements per cycle can fire anywhere from 0 to K of them in a beat. The
queue stores a beat's K elements as one word, with its mask of fired elements, and only the beats
in which something fired (word ``w`` of a fill is its ``w``-th such beat). Nothing moves between
words or lanes when a beat is written, so the write side is K registers wide and has no
crossbar: an earlier queue packed the fired elements densely into K banks, a K x K select whose
wiring was the ECP5's critical path and whose LUTs grew with K^2 (most of what an activation unit
cost above A = 8). The fired elements are found on the read side instead, one per cycle, in
order: the MAC array reads its columns one after another.

With ``buffers=2`` the queue is double-buffered: an encoder fills one buffer (``w_buf``) while the
MAC array reads the other (``r_buf``), which lets the input encoder work on x_{t+1} during step t.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from . import KEEP

__all__ = ["DeltaQueue"]


def _lowest(m, bits, name):
    """One-hot of the lowest set bit of ``bits`` (0 if none): a priority chain of LUTs."""
    onehot = Signal(len(bits), name=name)
    for i in range(len(bits)):
        below = bits[:i].any() if i else Const(0, 1)
        m.d.comb += onehot[i].eq(bits[i] & ~below)
    return onehot


def _pick(m, onehot, entries, layout, name):
    """The entry ``onehot`` selects (an AND-OR over the K entries; 0 if none)."""
    out = Signal(layout, name=name)
    acc = 0
    for i in range(len(onehot)):
        acc = acc | Mux(onehot[i], entries[i].as_value(), 0)
    m.d.comb += out.eq(acc)
    return out


class DeltaQueue(wiring.Component):
    """Queue of up to ``depth`` entries per buffer, ``width`` (K) writes per cycle.

    Write side: ``w_valid[i]`` marks element ``i`` (with ``w_index[i]``, ``w_delta[i]``) as fired;
    fired elements are appended in order of ``i`` to buffer ``w_buf``. With ``w_first`` the buffer
    is emptied first (the first beat of a new fill; with no valid bits it just clears). The write
    inputs are registered (so an encoder's compare and the queue's write never share a cycle): the
    beat is stored one cycle after it is presented, and ``count[b]`` (the number of entries in
    buffer ``b``) and the stored entries are visible two cycles after. One beat per cycle.

    Read side: ``r_addr_next`` is the read address of the next cycle (the queue registers it, with
    the decisions the read cursor takes from it, so its read side starts at flip-flops of its own:
    ``r_addr`` below is that register). ``r_index``/``r_delta`` hold entry ``r_addr`` of buffer
    ``r_buf`` one cycle after the address (latency 1, one read per cycle), for the read patterns a
    MAC phase makes: from one cycle to the next ``r_addr`` stays, moves on by one, or starts again
    at 0 or 1. Entries 0 and 1
    are registers of their own (written with the beat that brings them), so a read of either sees
    everything stored up to the previous cycle, also while the buffer is being filled (the head's
    queue is held at entry 1 while the last layer's activation writes it); the entries from 2 on
    come from a read cursor that steps through the stored words (the word holding the current
    entry and the next word are read from the LUT RAM, the lowest fired element left is selected).
    Any other jump of ``r_addr`` reads something undefined. Entries written in a cycle can be read
    from the next. ``first_index``/``first_delta`` hold entry 0 of buffer ``r_buf`` with no read at
    all: a MAC phase takes its first column from there in the cycle the count becomes final, while
    the read port already holds entry 1 (``deltahw.cycles.FAST_FETCH``).

    Look-ahead: ``w_pending`` says the beat in the input registers (stored at the end of this
    cycle, counted from the next) holds a fired element, ``w_before`` how many entries its fill
    holds before it (0 on a fill's first beat). With ``w_before`` > 0 (one buffer),
    ``first_index`` is already the fill's entry 0; with ``w_before`` = 0 and nothing pending the
    fill is empty. Combinational from registers.
    """

    #: Cycles from ``r_addr`` to ``r_index``/``r_delta``.
    READ_LATENCY = 1
    #: Cycles from an entry presented on the write inputs until ``count`` includes it (input
    #: register, then the count register).
    COUNT_LATENCY = 2
    #: Entries per LUT RAM of the read side, each with its own copy of the read cursor (Fmax:
    #: the fanout of one read address).
    ENTRIES_PER_GROUP = 2

    def __init__(self, *, width: int, depth: int, index_bits: int, delta_bits: int, buffers=1):
        if width & (width - 1) or width < 1:
            raise ValueError(f"The queue's write width must be a power of two; got {width}.")
        if buffers not in (1, 2):
            raise ValueError(f"A delta queue has 1 or 2 buffers; got {buffers}.")
        self.width, self.depth, self.buffers = width, depth, buffers
        self.index_bits, self.delta_bits = index_bits, delta_bits
        # At least 2 bits: the controller compares a count with its look-ahead position 1; on a
        # 1-bit count (depth 1, e.g. I = 1) that comparison is constant and Verilator's lint
        # rejects the generated Verilog (CMPCONST).
        self.count_bits = max(2, depth.bit_length())
        super().__init__({
            "w_valid": In(width),
            "w_index": In(data.ArrayLayout(unsigned(index_bits), width)),
            "w_delta": In(data.ArrayLayout(signed(delta_bits), width)),
            "w_first": In(1),
            "w_buf": In(1),
            "count": Out(data.ArrayLayout(unsigned(self.count_bits), buffers)),
            "r_addr_next": In(self.count_bits),
            "r_buf": In(1),
            "r_index": Out(index_bits),
            "r_delta": Out(signed(delta_bits)),
            "first_index": Out(index_bits),
            "first_delta": Out(signed(delta_bits)),
            "w_pending": Out(1),
            "w_before": Out(self.count_bits),
        })

    def elaborate(self, platform):
        m = Module()
        K = self.width
        B = self.buffers
        # Words per buffer (at most one per beat), rounded up to a power of two so that the buffer
        # select is the top address bit (no adder between the read address and the memory).
        words = 1 << max(0, (-(-self.depth // K) - 1).bit_length())
        abits = (words - 1).bit_length()  # word address bits in a buffer (0: one word)
        wbits = max(1, abits)  # the word counters (at least one bit, to lint)

        def addr(w, buf):
            """Memory address of word ``w`` of buffer ``buf``."""
            if B == 1:
                return w[:abits] if abits else Const(0, 1)
            return Cat(w[:abits], buf) if abits else buf

        entry = data.StructLayout({"index": unsigned(self.index_bits),
                                   "delta": signed(self.delta_bits)})
        # A word: the beat's K entries, its first fired entry picked out already and the fired
        # elements after that one (so a read cursor that moves on to a word needs no priority
        # select after the LUT RAM, only for the entries after a word's first).

        # ---- write side ------------------------------------------------------------------------
        # KEEP on both fire-bit registers (w_valid here, w_fire below): with it on one only,
        # Yosys merges the other into it (same input; 1484738 had one register).
        w_valid = Signal.like(self.w_valid, attrs=KEEP)
        w_index = Signal.like(self.w_index)
        w_delta = Signal.like(self.w_delta)
        w_first, w_buf = Signal(), Signal()
        m.d.sync += [w_valid.eq(self.w_valid), w_index.eq(self.w_index),
                     w_delta.eq(self.w_delta), w_first.eq(self.w_first), w_buf.eq(self.w_buf)]
        wbuf = w_buf if B == 2 else Const(0, 1)
        rbuf = self.r_buf if B == 2 else Const(0, 1)

        # count: the entries already in the buffer being written (0 on a fill's first beat). It is
        # a register, computed a cycle ahead from the unregistered w_first/w_buf (Fmax: no count
        # select before the write).
        count = Signal(self.count_bits)
        updating = Signal()
        m.d.comb += updating.eq(w_first | w_valid.any())
        next_buf = self.w_buf if B == 2 else Const(0, 1)

        # n = total fired this beat: a small lookup table of the valid bits (two LUT levels).
        def popcount(bits, width, name):
            out = Signal(range(width + 1), name=name)
            if width > 6:  # two tables and one small adder
                lo = popcount(bits, 6, f"{name}_lo")
                hi = popcount(bits[6:], width - 6, f"{name}_hi")
                m.d.comb += out.eq(lo + hi)
                return out
            table = Array(Const(bin(v).count("1"), len(out)) for v in range(1 << width))
            m.d.comb += out.eq(table[bits[:width]])
            return out

        # The beat in the input registers, for a reader that looks a cycle ahead of ``count``
        # (the schedule's h fetch in the window's last cycle): whether it holds a fired element,
        # and the entries of its fill before it (0 on a fill's first beat, whatever ``count``
        # still says).
        m.d.comb += [self.w_pending.eq(w_valid.any()), self.w_before.eq(count)]

        n = popcount(w_valid, K, "n")
        new_count = Signal(self.count_bits)
        m.d.comb += new_count.eq(count + n)
        with m.If(updating):
            m.d.sync += self.count[wbuf].eq(new_count)
        count_next = Signal(self.count_bits)
        m.d.comb += count_next.eq(
            Mux(self.w_first, 0,
                Mux(updating & (wbuf == next_buf), new_count, self.count[next_buf])))
        m.d.sync += count.eq(count_next)

        # Entries 0 and 1 of each buffer in registers, and where the read cursor goes on after
        # entry 1 (its word and the fired elements of that word still to come).
        # The entry-0/1 logic (two priority picks in series, two K-way selects) reads its own
        # registered copy of the fire bits, kept apart (KEEP): with one register, the fire bits
        # also drive the popcount and the word write, and at K = 16 their routing from the one
        # register to both was the ECP5's critical path (docs/benchmarks/fmax, lead18-1). The two
        # registers: A=16 at 74.43 MHz against 70.49 with one (lead19-9, lead19-1).
        w_fire = Signal(K, name="w_fire_entries", attrs=KEEP)
        m.d.sync += w_fire.eq(self.w_valid)
        lo1 = _lowest(m, w_fire, "w_lo1")
        rest1 = Signal(K, name="w_rest1")
        m.d.comb += rest1.eq(w_fire & ~lo1)
        lo2 = _lowest(m, rest1, "w_lo2")
        rest2 = Signal(K, name="w_rest2")
        m.d.comb += rest2.eq(rest1 & ~lo2)
        w_entries = Signal(data.ArrayLayout(entry, K))
        for i in range(K):
            m.d.comb += [w_entries[i].index.eq(w_index[i]), w_entries[i].delta.eq(w_delta[i])]
        pick1 = _pick(m, lo1, w_entries, entry, "w_pick1")
        pick2 = _pick(m, lo2, w_entries, entry, "w_pick2")

        # The beat is one word, written at the fill's next word if anything fired.
        wp = Signal(wbits)  # words of the fill written so far (registered, like count)
        wp_now = Mux(w_first, 0, wp)
        fired = w_valid.any()
        m.d.sync += wp.eq(wp_now + fired)
        # The word is stored in several LUT RAMs, each read at its own copy of the read cursor's
        # word address (below): the head of the word (``rest``, whether ``rest`` has a bit set,
        # ``first``), read only at the word after the cursor's, and the K entries in groups of
        # ``ENTRIES_PER_GROUP``, read only at the cursor's word.
        head_shape = data.StructLayout({"rest": unsigned(K), "rest_any": unsigned(1),
                                        "first": entry})
        n_groups = -(-K // self.ENTRIES_PER_GROUP)
        groups = [range(gi * self.ENTRIES_PER_GROUP, min(K, (gi + 1) * self.ENTRIES_PER_GROUP))
                  for gi in range(n_groups)]
        mem_depth = max(words * B, 2)
        mem_head = memory.Memory(shape=head_shape, depth=mem_depth, init=[])
        m.submodules.words_head = mem_head
        mem_e = [memory.Memory(shape=data.ArrayLayout(entry, len(grp)), depth=mem_depth, init=[])
                 for grp in groups]
        for gi, mem in enumerate(mem_e):
            m.submodules[f"words_e{gi}"] = mem
        w_head = Signal(head_shape)
        m.d.comb += [w_head.rest.eq(rest1), w_head.rest_any.eq(rest1.any()),
                     w_head.first.eq(pick1)]
        wport = mem_head.write_port()
        m.d.comb += [wport.en.eq(fired), wport.addr.eq(addr(wp_now, wbuf)), wport.data.eq(w_head)]
        for grp, mem in zip(groups, mem_e):
            wport = mem.write_port()
            m.d.comb += [wport.en.eq(fired), wport.addr.eq(addr(wp_now, wbuf))]
            for j, i in enumerate(grp):
                m.d.comb += wport.data[j].eq(w_entries[i])

        e0 = [Signal(entry, name=f"entry0_{b}", reset_less=True) for b in range(B)]
        e1 = [Signal(entry, name=f"entry1_{b}", reset_less=True) for b in range(B)]
        s1_w = [Signal(wbits, name=f"snap1_word{b}") for b in range(B)]
        s1_rest = [Signal(K, name=f"snap1_rest{b}") for b in range(B)]
        s1_any = [Signal(name=f"snap1_rest_any{b}") for b in range(B)]
        empty = count == 0
        for b in range(B):
            with m.If(fired & (wbuf == b)):
                with m.If(empty):
                    m.d.sync += e0[b].eq(pick1)
                    with m.If(rest1.any()):  # entry 1 is in the same beat
                        m.d.sync += [e1[b].eq(pick2), s1_w[b].eq(0), s1_rest[b].eq(rest2),
                                     s1_any[b].eq(rest2.any())]
                with m.Elif(count == 1):
                    m.d.sync += [e1[b].eq(pick1), s1_w[b].eq(wp_now[:wbits]),
                                 s1_rest[b].eq(rest1), s1_any[b].eq(rest1.any())]

        def of_buf(regs, buf):
            return regs[0] if B == 1 else Mux(buf, regs[1], regs[0])

        first = data.View(entry, of_buf(e0, rbuf))
        m.d.comb += [self.first_index.eq(first.index), self.first_delta.eq(first.delta)]

        # ---- read cursor -----------------------------------------------------------------------
        # ``r_addr``: this cycle's read address, a register of ``r_addr_next``. The cursor: the word
        # holding that entry (``cur_w``, and ``cur_w1`` the word after it, both with their buffer
        # bit) and the fired elements of it still to come (``cur_rest``, and ``cur_any``: whether
        # there are any). While the address is 0 or 1 the cursor is loaded every cycle with where
        # it goes on after entry 1 (entry 1's registers, which a beat may still be writing; the
        # schedule steps on to entry 2 no earlier than the cycle after the one in which the count
        # is final, so the cursor loaded then is complete).
        r_addr = Signal(self.count_bits, name="r_addr")
        p_rbuf, at0, at1 = Signal(), Signal(), Signal()
        abuf = abits + (B == 2)  # memory address bits
        cur_w1 = Signal(max(1, abuf), name="cur_word1")
        cur_rest = Signal(K, name="cur_rest")
        cur_any = Signal(name="cur_rest_any")
        out = Signal(entry, name="r_entry", reset_less=True)
        m.d.sync += [r_addr.eq(self.r_addr_next), p_rbuf.eq(rbuf), at0.eq(r_addr == 0),
                     at1.eq(r_addr == 1)]
        # The words at the cursor come out of synchronous read ports addressed with the cursor's
        # next value (so the LUT RAMs' data are registered; the select of the entry works from
        # flip-flops). Not transparent: the words a step reads were written at least two cycles
        # before it (see above).
        rp_next = mem_head.read_port()
        w_nxt = data.View(head_shape, rp_next.data)
        lo_cur = _lowest(m, cur_rest, "r_lo_cur")

        def next_word(w):
            """The address of the word after ``w`` in the same buffer."""
            if not abits:
                return w
            low = (w[:abits] + 1)[:abits]
            return Cat(low, w[abits:]) if B == 2 else low

        # The read contract (the address stays, steps by one, or restarts at 0 or 1) lets both
        # decisions look at few bits: a restart is an address with no bit set above bit 0, and
        # past a restart an address steps exactly when its lowest bit changed. (A compare of the
        # whole address with the last one, a carry chain, sat in front of the LUT RAM's read
        # address: an ECP5 critical path of 59.93 MHz, docs/benchmarks/fmax lead17-1.) Both are
        # registered from the next address, so no logic but the cursor's own selects sits
        # between a flip-flop and the LUT RAMs' read addresses (the head's queue's read,
        # 13.4-13.7 ns on the ECP5 with the decisions taken from the address: lead20-1, lead21-1).
        restart = Signal(name="r_restart", init=1)  # r_addr has no bit set above bit 0
        step = Signal(name="r_step")  # r_addr's bit 0 differs from last cycle's
        m.d.sync += [restart.eq(~self.r_addr_next[1:].any()),
                     step.eq(self.r_addr_next[0] ^ r_addr[0])]
        # The cursor moves on to the next word: a step with no fired element left in this one
        # (``cur_any`` is a register, so no OR over the K bits sits in front of the addresses).
        advance = Signal(name="r_advance")
        m.d.comb += advance.eq(step & ~cur_any)
        s1 = of_buf(s1_w, rbuf)
        w1_restart = addr(s1 + 1, rbuf)
        cur_w1_n = Signal.like(cur_w1, name="cur_word1_next")
        m.d.comb += cur_w1_n.eq(Mux(restart, w1_restart, Mux(advance, next_word(cur_w1), cur_w1)))
        m.d.sync += cur_w1.eq(cur_w1_n)
        m.d.comb += rp_next.addr.eq(cur_w1_n)
        # Each group of entries has its own copy of the cursor's word (KEEP: Yosys would merge
        # the copies) and of its next value: the read address of one copy reaches the LUT RAMs
        # of ``ENTRIES_PER_GROUP`` entries, not all K. With one copy, that address fanned out to
        # all 105 LUT RAM cells of the head's queue at A = 16, the ECP5's second-slowest path
        # (13.36 ns, docs/benchmarks/fmax lead20-1).
        w_cur = []
        for gi, mem in enumerate(mem_e):
            cw = Signal(max(1, abuf), name=f"cur_word_g{gi}", attrs=KEEP)
            cw_n = Signal.like(cw, name=f"cur_word_next_g{gi}")
            m.d.comb += cw_n.eq(Mux(restart, addr(s1, rbuf), Mux(advance, cur_w1, cw)))
            m.d.sync += cw.eq(cw_n)
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(cw_n)
            w_cur.extend(rp.data[j] for j in range(len(groups[gi])))
        pick_cur = _pick(m, lo_cur, w_cur, entry, "r_pick_cur")
        # Two or more fired elements left: one is left after this step takes the lowest.
        rest_after = Signal(K, name="r_rest_after")
        m.d.comb += rest_after.eq(cur_rest & ~lo_cur)
        with m.If(restart):
            m.d.sync += [cur_rest.eq(of_buf(s1_rest, rbuf)), cur_any.eq(of_buf(s1_any, rbuf))]
        with m.Elif(step):
            with m.If(cur_any):
                m.d.sync += [out.eq(pick_cur), cur_rest.eq(rest_after),
                             cur_any.eq(rest_after.any())]
            with m.Else():
                m.d.sync += [out.eq(w_nxt.first), cur_rest.eq(w_nxt.rest),
                             cur_any.eq(w_nxt.rest_any)]
        # Entries 0 and 1 straight from their registers (of the buffer read last cycle).
        res = data.View(entry, Mux(at0, of_buf(e0, p_rbuf),
                                   Mux(at1, of_buf(e1, p_rbuf), out)))
        m.d.comb += [self.r_index.eq(res.index), self.r_delta.eq(res.delta)]
        return m
