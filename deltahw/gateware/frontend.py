"""Input front end: the input stream delta-encoded into a double-buffered queue, ahead of the core.

It holds up to two input vectors: the one the core computes on (read buffer) and the next one,
encoded while the current timestep runs. ``i.ready`` falls while both are full.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig, ceil_div
from .encoder import DeltaEncoder
from .queue import DeltaQueue

__all__ = ["InputFrontEnd", "input_layout", "bits_for", "column_bits", "mem_depth"]


def input_layout(config: DeltaGRUConfig) -> data.StructLayout:
    """Payload of the input stream: E elements (element e at bits [e*ab, (e+1)*ab)), then
    ``first`` (a sequence's first beat)."""
    return data.StructLayout(
        {"data": data.ArrayLayout(signed(config.act.bits), config.enc_width), "first": 1}
    )


def mem_depth(n: int) -> int:
    """Memory depth of at least 2 words (a 1-word memory has a zero-width address in Verilog)."""
    return max(n, 2)


def bits_for(n: int) -> int:
    """Unsigned width that can hold values 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def column_bits(base: int, stride: int, n: int) -> int:
    """Width of a queue entry holding ``base + k * stride`` for elements k = 0..n-1 (a column's
    weight address, or the element index itself with base 0 and stride 1)."""
    return bits_for(base + (n - 1) * stride + 1)


class InputFrontEnd(wiring.Component):
    """Input encoder and the double-buffered x queue of layer 0.

    Input side: ``i`` takes one beat of E elements per cycle while a buffer is free (ceil(I/E)
    beats per vector). A beat is compared with the last transmitted input (threshold ``theta``) the
    cycle after it is accepted and its fired (index, delta) pairs reach the queue
    (``DeltaQueue.COUNT_LATENCY`` cycles later they are counted); ``i.ready`` comes from a
    flip-flop. Latency: ``r_full`` rises ``FULL_LATENCY`` (2) cycles after a vector's last beat
    is accepted (the beat's compare register, then the buffer's full flag) and
    ``count`` is complete one cycle later, the first cycle in which the core (which starts a
    timestep the cycle after it sees ``r_full``) reads it. Throughput: one beat per cycle. The
    last transmitted word of a beat is read from its LUT RAM in the accept cycle into a register,
    and the encoder's new word is registered and written back a cycle later (the words not yet
    written forwarded into the read), so the encoder's read-compare-write loop starts and ends at
    flip-flops, with no LUT-RAM read or write port in it.

    Core side: ``r_full`` says the read buffer holds a complete vector (``r_reset``: it starts a
    sequence), ``count`` its fired entries, read by position with ``r_addr_next`` (the address of
    the next cycle, registered in the queue) -> ``r_index`` / ``r_delta`` in the order a MAC phase
    reads them (from entry 0 or 1, a step or a hold per
    cycle: ``DeltaQueue``; latency ``DeltaQueue.READ_LATENCY``; ``r_index`` is the element's
    index, or ``base + index * stride`` with ``column=(base, stride)``);
    ``first_index``/``first_delta`` hold entry 0 with no read (``DeltaQueue``). A ``release``
    pulse hands the buffer back (the core has read all its entries) and switches to the other
    one.
    """

    #: Cycles from accepting a vector's last beat until ``r_full`` says the vector is in (stage
    #: ``s1``, then ``full``; the testbenches use it to tell whether a streamed input can come
    #: late).
    FULL_LATENCY = 2

    def __init__(self, config: DeltaGRUConfig, *, column=(0, 1)):
        self.config = config
        I = config.input_size
        # ``column = (base, stride)``: the queue stores ``base + index * stride`` for the element
        # ``index`` (``r_index``); the core passes its layer 0 x columns' weight address and row
        # groups, so the queue holds each fired column's weight address and no multiply-add
        # follows the queue read (Fmax). The default stores the element index itself.
        self.column_base, self.column_stride = base, stride = column
        if base < 0 or stride < 1:
            raise ValueError(f"column = (base, stride) must have base >= 0 and stride >= 1; "
                             f"got {column!r}.")
        index_bits = column_bits(base, stride, I)
        self.queue = DeltaQueue(width=config.enc_width, depth=I, index_bits=index_bits,
                                delta_bits=config.delta_bits, buffers=2)
        count_bits = self.queue.count_bits
        super().__init__({
            "i": In(stream.Signature(input_layout(config))),
            "theta": In(unsigned(config.act.bits)),
            "release": In(1),
            "r_full": Out(1),
            "r_reset": Out(1),
            "count": Out(count_bits),
            "r_addr_next": In(count_bits),
            "r_index": Out(index_bits),
            "r_delta": Out(signed(config.delta_bits)),
            "first_index": Out(index_bits),
            "first_delta": Out(signed(config.delta_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        I, E, ab = cfg.input_size, cfg.enc_width, cfg.act.bits
        act = signed(ab)
        nbi = ceil_div(I, E)  # input beats per vector
        m.submodules.xq0 = xq0 = self.queue
        # `ahead`: the encoder takes the beat's values (and theta) in the accept cycle, with s1, so
        # its read-compare-write loop through xhat0 is one compare chain (Fmax).
        m.submodules.enc_in = enc_in = DeltaEncoder(width=E, act_bits=ab, ahead=True)
        xhat0 = memory.Memory(shape=data.ArrayLayout(act, E), depth=mem_depth(nbi), init=[])
        m.submodules.xhat0 = xhat0
        # The last transmitted word is read in the accept cycle (asynchronous read of the LUT
        # RAM) into a register, ``vhat``, so that the encoder's loop starts at a flip-flop, with
        # no LUT-RAM read in it (a synchronous read port was mapped as address register +
        # asynchronous read, which put the read into the loop: the ECP5's critical path,
        # docs/benchmarks/fmax). The loop ends at a flip-flop too: stage 1's ``new_vhat`` is
        # registered (``wb``) and written into the LUT RAM in the next cycle, so the path is vhat
        # -> compare -> select -> register beside the encoder, not into the LUT RAM's write data
        # (the ECP5's critical path at 66.67 MHz). The words not yet in the memory when a beat is
        # read in its accept cycle are forwarded into ``vhat``: the one ``wb`` writes in that
        # cycle (the beat accepted two cycles before: the same word only with at most two beats
        # per vector) and stage 1's (the beat accepted the cycle before: the same word only with
        # one beat per vector, E >= I).
        xhat0_w = xhat0.write_port()
        xhat0_r = xhat0.read_port(domain="comb")
        vhat = Signal(data.ArrayLayout(act, E), name="xhat0_vhat", reset_less=True)
        wb = Signal(data.StructLayout({"beat": bits_for(nbi), "data": data.ArrayLayout(act, E)}),
                    name="xhat0_wb", reset_less=True)
        wb_valid = Signal(name="xhat0_wb_valid")

        full = [Signal(name="buf_full0"), Signal(name="buf_full1")]
        reset_tag = [Signal(name="buf_reset0"), Signal(name="buf_reset1")]
        wbuf = Signal()  # buffer the encoder fills
        rbuf = Signal()  # buffer the core reads
        in_beat = Signal(bits_for(nbi))
        vec_clear = Signal()  # the vector being received starts a sequence
        release = self.release

        # ``i.ready`` is a flip-flop: "the buffer being filled is not full", computed one cycle
        # ahead from the next ``wbuf`` and ``full`` (below), so it has exactly the value the
        # combinational expression would have, and the bridge's (or AXI adapter's) beat register
        # enable does not wait on this decode across the die (docs/benchmarks/fmax).
        full_next = [Signal(name="buf_full0_next"), Signal(name="buf_full1_next")]
        wbuf_next = Signal()
        ready = Signal(init=1, name="i_ready")  # after reset both buffers are free
        m.d.comb += self.i.ready.eq(ready)
        m.d.sync += ready.eq(~Mux(wbuf_next, full_next[1], full_next[0]))
        accept = self.i.valid & self.i.ready
        is_first_beat = in_beat == 0
        clear_now = Mux(is_first_beat, self.i.payload.first, vec_clear)
        m.d.comb += xhat0_r.addr.eq(in_beat)
        # Stage 1 of the input encoder: compare with the last transmitted values and push.
        s1 = Signal(
            data.StructLayout(
                {
                    "valid": 1,
                    "beat": bits_for(nbi),
                    "buf": 1,
                    "clear": 1,
                    "last": 1,
                    "first": 1,
                }
            )
        )
        m.d.sync += [
            s1.valid.eq(accept),
            s1.beat.eq(in_beat),
            s1.buf.eq(wbuf),
            s1.clear.eq(clear_now),
            s1.last.eq(in_beat == nbi - 1),
            s1.first.eq(is_first_beat),
        ]
        m.d.comb += wbuf_next.eq(wbuf)
        m.d.sync += wbuf.eq(wbuf_next)
        with m.If(accept):
            m.d.sync += vec_clear.eq(clear_now)
            with m.If(in_beat == nbi - 1):
                m.d.sync += in_beat.eq(0)
                m.d.comb += wbuf_next.eq(~wbuf)
            with m.Else():
                m.d.sync += in_beat.eq(in_beat + 1)
        in_range = Signal(E)
        for e in range(E):
            m.d.comb += in_range[e].eq(s1.beat * E + e < I)
        # Stage 1's new word is written back one cycle later, from ``wb``.
        m.d.sync += [wb_valid.eq(s1.valid), wb.beat.eq(s1.beat), wb.data.eq(enc_in.new_vhat)]
        read = xhat0_r.data
        if nbi <= 2:
            # wb's write lands at the end of this cycle (its beat was accepted two cycles ago).
            read = Mux(wb_valid & (wb.beat == in_beat), wb.data, read)
        if nbi == 1:
            # Stage 1's word (accepted the cycle before) is written from wb in the next cycle.
            read = Mux(s1.valid, enc_in.new_vhat, read)
        m.d.sync += vhat.eq(read)
        m.d.comb += [
            enc_in.v.eq(self.i.payload.data),  # registered inside (LATENCY_V = 1)
            enc_in.vhat.eq(vhat),
            enc_in.theta.eq(self.theta),
            enc_in.clear.eq(clear_now),  # registered inside, per element, like v
            enc_in.in_range.eq(in_range),
            xhat0_w.addr.eq(wb.beat),
            xhat0_w.data.eq(wb.data),
            xhat0_w.en.eq(wb_valid),
            xq0.w_valid.eq(Mux(s1.valid, enc_in.fire, 0)),
            xq0.w_first.eq(s1.valid & s1.first),
            xq0.w_buf.eq(s1.buf),
            xq0.w_delta.eq(enc_in.diff),  # only fired entries are stored
        ]
        for e in range(E):
            m.d.comb += xq0.w_index[e].eq(s1.beat * (E * self.column_stride)
                                          + (self.column_base + e * self.column_stride))
        for b in range(2):
            m.d.comb += full_next[b].eq(full[b])
            m.d.sync += full[b].eq(full_next[b])
            with m.If(s1.valid & s1.last & (s1.buf == b)):
                m.d.comb += full_next[b].eq(1)
                m.d.sync += reset_tag[b].eq(s1.clear)
            with m.Elif(release & (rbuf == b)):
                m.d.comb += full_next[b].eq(0)
        with m.If(release):
            m.d.sync += rbuf.eq(~rbuf)
        m.d.comb += [
            self.r_full.eq(Mux(rbuf, full[1], full[0])),
            self.r_reset.eq(Mux(rbuf, reset_tag[1], reset_tag[0])),
            self.count.eq(xq0.count[rbuf]),
            xq0.r_buf.eq(rbuf),
            xq0.r_addr_next.eq(self.r_addr_next),
            self.r_index.eq(xq0.r_index),
            self.r_delta.eq(xq0.r_delta),
            self.first_index.eq(xq0.first_index),
            self.first_delta.eq(xq0.first_delta),
        ]
        return m
