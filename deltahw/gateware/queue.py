"""Nonzero-delta queue: the FIFO of (column index, delta) pairs between a delta encoder and the MAC
array.

An encoder that compares K elements per cycle can fire anywhere from 0 to K of them, so the queue
takes up to K entries per cycle and packs them densely ("compaction"): entry ``n`` of a fill lives
in bank ``n % K`` at word ``n // K``, and the fired elements of a cycle go to consecutive entries
after the current count. The MAC array reads one entry per column (every few cycles) by position.

With ``buffers=2`` the queue is double-buffered: an encoder fills one buffer (``w_buf``) while the
MAC array reads the other (``r_buf``), which lets the input encoder work on x_{t+1} during step t.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DeltaQueue"]


class DeltaQueue(wiring.Component):
    """Compacting queue of up to ``depth`` entries per buffer, ``width`` writes per cycle.

    Write side: ``w_valid[i]`` marks element ``i`` (with ``w_index[i]``, ``w_delta[i]``) as fired;
    fired elements are appended in order of ``i`` to buffer ``w_buf``. With ``w_first`` the buffer
    is emptied first (the first beat of a new fill; with no valid bits it just clears). The write
    inputs are registered (so an encoder's compare and the compaction never share a cycle): the
    entries are stored one cycle after they are presented, and ``count[b]`` (the number of entries
    in buffer ``b``) and the stored entries are visible two cycles after. One write per cycle.

    Read side: ``r_index``/``r_delta`` hold entry ``r_addr`` of buffer ``r_buf`` one cycle after the
    address (latency 1, one read per cycle). Entries written in a cycle can be read from the next.
    """

    #: Cycles from ``r_addr`` to ``r_index``/``r_delta``.
    READ_LATENCY = 1
    #: Cycles from an entry presented on the write inputs until ``count`` includes it (input
    #: register, then the count register).
    COUNT_LATENCY = 2

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
            "r_addr": In(self.count_bits),
            "r_buf": In(1),
            "r_index": Out(index_bits),
            "r_delta": Out(signed(delta_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        K = self.width
        kbits = (K - 1).bit_length()
        words = -(-self.depth // K)
        entry = data.StructLayout({"index": unsigned(self.index_bits),
                                   "delta": signed(self.delta_bits)})
        # Input register stage.
        w_valid = Signal.like(self.w_valid)
        w_index = Signal.like(self.w_index)
        w_delta = Signal.like(self.w_delta)
        w_first, w_buf = Signal(), Signal()
        m.d.sync += [w_valid.eq(self.w_valid), w_index.eq(self.w_index),
                     w_delta.eq(self.w_delta), w_first.eq(self.w_first), w_buf.eq(self.w_buf)]
        wbuf = w_buf if self.buffers == 2 else Const(0, 1)
        rbuf = self.r_buf if self.buffers == 2 else Const(0, 1)
        count = Signal(self.count_bits)
        m.d.comb += count.eq(Mux(w_first, 0, self.count[wbuf]))

        # prefix[i] = number of fired elements before element i; n = total fired this cycle.
        prefix = [Signal(range(K + 1), name=f"prefix{i}") for i in range(K + 1)]
        m.d.comb += prefix[0].eq(0)
        for i in range(K):
            m.d.comb += prefix[i + 1].eq(prefix[i] + w_valid[i])
        n = prefix[K]

        r_bank = Signal(max(1, kbits))
        m.d.sync += r_bank.eq(self.r_addr[:kbits] if kbits else 0)
        read_words = []
        for b in range(K):
            mem = memory.Memory(shape=entry, depth=max(words * self.buffers, 2), init=[])
            m.submodules[f"bank{b}"] = mem
            wp, rp = mem.write_port(), mem.read_port()
            # Bank b takes the j-th fired element of this cycle, j = (b - count) mod K.
            j = Signal(max(1, kbits), name=f"j{b}")
            m.d.comb += j.eq((b - count)[:kbits] if kbits else 0)
            pos = Signal(self.count_bits + 1, name=f"pos{b}")
            m.d.comb += pos.eq(count + j)
            m.d.comb += [
                wp.en.eq(j < n),
                wp.addr.eq(wbuf * words + (pos >> kbits)),
            ]
            for i in range(K):
                with m.If(w_valid[i] & (prefix[i] == j)):
                    m.d.comb += [wp.data.index.eq(w_index[i]),
                                 wp.data.delta.eq(w_delta[i])]
            m.d.comb += rp.addr.eq(rbuf * words + (self.r_addr >> kbits))
            read_words.append(rp.data)
        with m.Switch(r_bank):
            for b in range(K):
                with m.Case(b):
                    m.d.comb += [self.r_index.eq(read_words[b].index),
                                 self.r_delta.eq(read_words[b].delta)]

        with m.If(w_first | w_valid.any()):
            m.d.sync += self.count[wbuf].eq(count + n)
        return m
