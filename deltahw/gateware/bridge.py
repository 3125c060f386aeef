"""Host bridge: the link protocol of :mod:`deltahw.link` from a byte pipe (the UART) to the core.

The protocol (framing, CRC, sequence numbers, output slots, reset detection) is specified in
:mod:`deltahw.link`; this module is its RTL. In short: SLIP frames with a CRC-32; WRITE and INPUT
requests run exactly once in sequence order (duplicates acknowledged, gaps refused), every response
carries the next expected sequence number; READ and OUTPUT requests are idempotent; each timestep's
outputs wait in one of ``2**out_slots_log2`` slots until the host releases them; the device refuses
everything but INFO after a reset until the host connects again.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import crc, data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import link
from ..config import DeltaGRUConfig
from ..link import (
    CMD_INFO, CMD_INPUT, CMD_OUTPUT, CMD_READ, CMD_WRITE, CRC_BYTES, END, ESC, ESC_END,
    ESC_ESC, INFO_CLEAR_FRESH, MIN_FRAME, PROTOCOL_VERSION, RSP_ERR, RSP_INFO, RSP_OUTPUT,
    RSP_READ, STATUS_DUPLICATE, STATUS_FRESH, ErrorCode, elem_bytes,
)
from .registers import BusSignature

__all__ = ["BridgeLayouts", "Bridge", "SkidBuffer", "FrameEncoder", "elem_bytes", "crc_processor"]


def crc_processor():
    """The frame CRC (:data:`deltahw.link.CRC_PARAMS`) as an ``amaranth.lib.crc`` byte processor."""
    return crc.Algorithm(**link.CRC_PARAMS)(data_width=8).create()


class BridgeLayouts:
    """Stream payload layouts of the core's ``i`` and ``o`` ports for a config."""

    def __init__(self, config: DeltaGRUConfig):
        ab = config.act.bits
        self.input = data.StructLayout({"data": config.enc_width * ab, "first": 1})
        self.output = data.StructLayout({"data": config.act_width * ab, "last": 1})


_BYTE_LAST = data.StructLayout({"data": 8, "last": 1})


class FrameEncoder(wiring.Component):
    """Raw frame bytes (``data``, ``last`` on the final byte) in, SLIP bytes with CRC out.

    Emits ``END``, the escaped bytes, the escaped CRC (:data:`deltahw.link.CRC_BYTES` bytes, least
    significant first) and ``END``. At most one output byte per cycle; an input byte is taken when
    its (possibly escaped) output is sent.
    """

    i: In(stream.Signature(_BYTE_LAST))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crcp = crc_processor()
        # The byte being sent in the DATA/CRC phases and whether its escape byte has gone out.
        escaped = Signal()
        cur = Signal(8)
        crc_idx = Signal(range(CRC_BYTES))
        special = (cur == END) | (cur == ESC)
        esc_code = Mux(cur == END, ESC_END, ESC_ESC)
        m.d.comb += crcp.data.eq(cur)

        def send_escaped(on_done):
            # Send `cur`, escaped if needed; run `on_done` when it is out.
            m.d.comb += self.o.valid.eq(1)
            with m.If(special & ~escaped):
                m.d.comb += self.o.payload.eq(ESC)
                with m.If(self.o.ready):
                    m.d.sync += escaped.eq(1)
            with m.Else():
                m.d.comb += self.o.payload.eq(Mux(special, esc_code, cur))
                with m.If(self.o.ready):
                    m.d.sync += escaped.eq(0)
                    on_done()

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += crcp.start.eq(1)
                m.d.sync += [escaped.eq(0), crc_idx.eq(0)]
                with m.If(self.i.valid):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(END)]
                    with m.If(self.o.ready):
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += cur.eq(self.i.payload.data)

                def take():
                    m.d.comb += [self.i.ready.eq(1), crcp.valid.eq(1)]
                    with m.If(self.i.payload.last):
                        m.next = "CRC"

                with m.If(self.i.valid):
                    send_escaped(take)
            with m.State("CRC"):
                m.d.comb += cur.eq(crcp.crc.word_select(crc_idx, 8))

                def crc_done():
                    m.d.sync += crc_idx.eq(crc_idx + 1)
                    with m.If(crc_idx == CRC_BYTES - 1):
                        m.next = "CLOSE"

                send_escaped(crc_done)
            with m.State("CLOSE"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(END)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m


class _Receiver(wiring.Component):
    """SLIP decoder, CRC check and receive ring buffer.

    Every byte from ``rx`` is taken in the cycle it arrives (``rx.ready`` is always 1). Decoded
    bytes go into the ring at a speculative pointer; at ``END`` a good frame is committed (its
    code/seq/payload become readable on ``r``, CRC bytes dropped) and a descriptor
    (``length`` = code + seq + payload bytes, ``error``, ``seq``) is queued on ``desc``; a bad frame
    is rewound and queued as an error descriptor with length 0. The CRC is checked by the residue of
    an ``amaranth.lib.crc`` processor run over the whole frame including its CRC.

    ``r`` is a FIFO view of the committed bytes with registered ``payload`` and ``valid`` (the
    memory's read data passes an output register first). Latency: a frame's first byte is offered
    on ``r`` three cycles after its ``END`` is taken (commit, memory read, output register), one
    more than without the register, but no later than the bridge's executor asks for it: the
    frame's descriptor appears on ``desc`` two cycles after the ``END`` (through a
    ``SyncFIFOBuffered``) and the executor reads ``r`` from the cycle after it takes the
    descriptor. Throughput: one byte per cycle while ``r.ready`` is held.
    """

    def __init__(self, depth_log2: int, desc_depth: int = link.DESC_DEPTH):
        self._log2 = depth_log2
        self._depth = 1 << depth_log2
        self.desc_layout = data.StructLayout({
            "length": depth_log2 + 1, "error": 4, "seq": 8})
        self._desc_depth = desc_depth
        super().__init__({
            "rx": In(stream.Signature(8)),
            "r": Out(stream.Signature(8)),
            "desc": Out(stream.Signature(self.desc_layout)),
            "bad_frame": Out(1),
            "good_frame": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        depth, log2 = self._depth, self._log2
        m.submodules.mem = mem = memory.Memory(shape=8, depth=depth, init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        m.submodules.descq = descq = fifo.SyncFIFOBuffered(
            width=self.desc_layout.size, depth=self._desc_depth)

        commit = Signal(log2 + 1)  # first byte not yet committed (wraps at 2*depth)
        rd = Signal(log2 + 1)  # next byte to fetch
        count = Signal(log2 + 1)  # bytes of the current frame stored so far
        seq = Signal(8)
        m.submodules.crc = crcp = crc_processor()
        esc = Signal()
        err = Signal(4)  # sticky error of the frame being received (ESCAPE or OVERFLOW)

        m.d.comb += self.rx.ready.eq(1)
        byte = Signal(8)
        is_data = Signal()
        rx_b = self.rx.payload
        with m.If(self.rx.valid):
            with m.If(esc):
                m.d.comb += [is_data.eq(1), byte.eq(Mux(rx_b == ESC_END, END, ESC))]
            with m.Elif((rx_b != END) & (rx_b != ESC)):
                m.d.comb += [is_data.eq(1), byte.eq(rx_b)]

        used = Signal(log2 + 2)
        m.d.comb += used.eq((commit + count - rd)[: log2 + 1])
        full = used >= depth

        desc = Signal(self.desc_layout)
        m.d.comb += [descq.w_data.eq(desc), self.bad_frame.eq(0), self.good_frame.eq(0)]
        with m.If(self.rx.valid):
            with m.If(rx_b == END):
                m.d.comb += crcp.start.eq(1)
                m.d.sync += [count.eq(0), esc.eq(0), err.eq(0)]
                with m.If((count != 0) | (err != 0)):
                    # A full descriptor queue drops even a good frame (the host times out and
                    # resends): committing it without a descriptor would desynchronise the reader.
                    ok = (err == 0) & (count >= MIN_FRAME) & crcp.match_detected & descq.w_rdy
                    with m.If(err != 0):
                        m.d.comb += desc.error.eq(err)
                    with m.Elif(count < MIN_FRAME):
                        m.d.comb += desc.error.eq(ErrorCode.SHORT)
                    with m.Elif(~crcp.match_detected):
                        m.d.comb += desc.error.eq(ErrorCode.CRC)
                    m.d.comb += [desc.seq.eq(seq), descq.w_en.eq(1)]
                    with m.If(ok):
                        m.d.comb += [desc.length.eq(count - CRC_BYTES), self.good_frame.eq(1)]
                        m.d.sync += commit.eq(commit + count - CRC_BYTES)
                    with m.Else():
                        m.d.comb += self.bad_frame.eq(1)
            with m.Elif(esc & (rx_b != ESC_END) & (rx_b != ESC_ESC)):
                m.d.sync += [esc.eq(0), err.eq(ErrorCode.ESCAPE)]
            with m.Elif(~esc & (rx_b == ESC)):
                m.d.sync += esc.eq(1)
            with m.Elif(is_data & (err == 0)):
                m.d.sync += esc.eq(0)
                with m.If(full):
                    m.d.sync += err.eq(ErrorCode.OVERFLOW)
                with m.Else():
                    m.d.comb += [wp.en.eq(1), wp.addr.eq((commit + count)[:log2]),
                                 wp.data.eq(byte)]
                    m.d.comb += [crcp.valid.eq(1), crcp.data.eq(byte)]
                    m.d.sync += count.eq(count + 1)
                    with m.If(count == 1):
                        m.d.sync += seq.eq(byte)
            with m.Else():
                m.d.sync += esc.eq(0)

        # Read side: a FIFO view of the committed bytes. The memory's read data goes into
        # flip-flops before anything else sees it: an ECP5 block RAM without its output register
        # has a 5.8 ns clock-to-out, and ``r.payload`` taken straight from it fed the executor's
        # decisions and the core's ready into the executor's clock enables (the 73 MHz critical
        # path, docs/benchmarks/fmax). ``r`` is served from a two-entry queue of registers:
        # ``head`` (``r.payload``) and ``skid`` behind it. A read issued in one cycle (``fetch``)
        # delivers its byte (``pend``) in the next, when it joins the queue; a read is issued only
        # if the queue will have room for it whatever ``r.ready`` does next, so with ``r.ready``
        # held the queue sustains one byte per cycle.
        head = Signal(8)
        head_valid = Signal()
        skid = Signal(8)
        skid_valid = Signal()  # implies head_valid: bytes enter at the head first
        pend = Signal()  # rp.data holds a byte fetched in the previous cycle
        pop = self.r.valid & self.r.ready
        avail = rd != commit
        # Bytes in the queue after this cycle: head_valid + skid_valid - pop + pend; one more may
        # arrive next cycle (from this cycle's fetch) while nothing is popped.
        after = Signal(2)
        m.d.comb += after.eq(head_valid + skid_valid - pop + pend)
        fetch = avail & (after <= 1)
        m.d.comb += [rp.en.eq(fetch), rp.addr.eq(rd[:log2]),
                     self.r.payload.eq(head), self.r.valid.eq(head_valid)]
        m.d.sync += pend.eq(fetch)
        with m.If(fetch):
            m.d.sync += rd.eq(rd + 1)
        with m.If(pop | ~head_valid):
            # The head moves on: the skid's byte (if any) becomes the head, the arriving byte
            # (if any) goes behind it or straight to the head.
            with m.If(skid_valid):
                m.d.sync += [head.eq(skid), skid.eq(rp.data), skid_valid.eq(pend)]
            with m.Else():
                m.d.sync += [head.eq(rp.data), head_valid.eq(pend)]
        with m.Elif(pend):
            # The head is held, so the skid is empty (``fetch`` saw ``after`` <= 1).
            m.d.sync += [skid.eq(rp.data), skid_valid.eq(1)]

        m.d.comb += [self.desc.payload.eq(descq.r_data), self.desc.valid.eq(descq.r_rdy),
                     descq.r_en.eq(self.desc.ready)]
        return m


class _OutputSlots(wiring.Component):
    """Output slots: the core's ``o`` beats, one timestep per slot, kept until the host frees them.

    Timestep ``s`` (counted since reset, mod 2**16: ``head`` is the next one to be written) goes to
    slot ``s mod 2**slots_log2`` as ``step_bytes`` bytes (every element sign-extended to
    ``elem_bytes`` bytes, little endian). A beat is accepted only while ``head - tail`` is below the
    slot count, so the core stalls rather than overwrite a timestep the host has not released;
    ``tail`` moves when the executor releases up to a position (``release``/``release_pos``).
    ``o.ready`` comes from a flip-flop (computed a cycle ahead), so a release frees its slots
    for the core one cycle after ``tail`` has moved.
    Throughput: one byte per cycle (a beat of A elements takes ``A * elem_bytes`` cycles). Read
    port: ``rd_data`` is the byte at ``rd_addr`` one cycle after ``rd_en``.
    """

    def __init__(self, config: DeltaGRUConfig):
        self._cfg = config
        self._eb = elem_bytes(config)
        width = config.output_size if config.output_size else config.hidden_size
        self.step_bytes = link.step_bytes(width, config.act_width, self._eb)
        self.slots_log2 = link.out_slots_log2(self.step_bytes)
        self.slot_log2 = link.slot_bytes_log2(self.step_bytes)
        self.depth = 1 << (self.slots_log2 + self.slot_log2)
        super().__init__({
            "o": In(stream.Signature(BridgeLayouts(config).output)),
            "head": Out(16),
            "tail": Out(16),
            "release": In(1),
            "release_pos": In(16),
            "rd_addr": In(self.slots_log2 + self.slot_log2),
            "rd_en": In(1),
            "rd_data": Out(8),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, eb = self._cfg, self._eb
        A, ab = cfg.act_width, cfg.act.bits
        nbytes = A * eb
        m.submodules.mem = mem = memory.Memory(shape=8, depth=self.depth, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [rp.addr.eq(self.rd_addr), rp.en.eq(self.rd_en), self.rd_data.eq(rp.data)]

        beat = Signal(A * ab)
        beat_last = Signal()
        idx = Signal(range(nbytes))
        woff = Signal(max(1, self.slot_log2))  # byte offset within the timestep's slot
        # Sign-extend every element to eb bytes, element 0 first.
        wide = Cat(*[beat.word_select(e, ab) if ab == 8 * eb else
                     Cat(beat.word_select(e, ab),
                         beat.word_select(e, ab)[-1].replicate(8 * eb - ab))
                     for e in range(A)])
        slot = self.head[:self.slots_log2]
        # ``o.ready`` is a flip-flop: "idle, and head - tail below the slot count", computed a
        # cycle ahead from the next head (this block's own FSM) and the current tail. A release
        # therefore frees its slots for the core one cycle after ``tail`` moves; a stale tail can
        # only understate the room, so no slot is ever overwritten. Neither the executor's release
        # logic nor the 16-bit subtract and compare sits in front of the core's output FIFO read
        # enable any more (fmax9-1's ECP5 critical path, and with the release folded in exactly,
        # the next build's: docs/benchmarks/fmax).
        # The room is compared before ``head`` moves: with ``occupied = head - tail`` (never
        # above the slot count N: a beat is accepted only below it, and the executor releases
        # only positions between tail and head), ``head + 1 - tail < N`` is ``occupied < N - 1``,
        # so both compares run beside the byte counter that decides the increment, and only a
        # select follows it (the ECP5's critical path at 77.3 MHz was idx -> increment -> 16-bit
        # subtract -> compare, docs/benchmarks/fmax).
        inc = Signal()  # the timestep's last byte is written: head moves on
        idle_next = Signal()
        ready = Signal(init=1)  # after reset: idle, head == tail
        occupied = Signal(16)
        n_slots = 1 << self.slots_log2
        room_now = occupied < n_slots
        room_after = occupied < n_slots - 1  # link.out_slots_log2: at least 2 slots
        m.d.comb += [occupied.eq((self.head - self.tail)[:16]), self.o.ready.eq(ready)]
        with m.If(inc):
            m.d.sync += self.head.eq(self.head + 1)
        m.d.sync += ready.eq(idle_next & Mux(inc, room_after, room_now))
        with m.If(self.release):
            m.d.sync += self.tail.eq(self.release_pos)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += idle_next.eq(1)
                with m.If(self.o.valid & ready):
                    m.d.sync += [beat.eq(self.o.payload.data), beat_last.eq(self.o.payload.last),
                                 idx.eq(0)]
                    m.d.comb += idle_next.eq(0)
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [wp.en.eq(1), wp.data.eq(wide.word_select(idx, 8)),
                             wp.addr.eq(Cat(woff[:self.slot_log2], slot))]
                m.d.sync += [idx.eq(idx + 1), woff.eq(woff + 1)]
                with m.If(idx == nbytes - 1):
                    with m.If(beat_last):
                        m.d.comb += inc.eq(1)
                        m.d.sync += woff.eq(0)
                    m.d.comb += idle_next.eq(1)
                    m.next = "IDLE"
        return m


class _Executor(wiring.Component):
    """Executes committed frames one at a time and sends one response per frame.

    Implements the request rules of :mod:`deltahw.link`: the fresh flag, the sequence rule for
    WRITE/INPUT (run once, acknowledge duplicates, refuse gaps), READ, OUTPUT (release and send
    output slots) and INFO.
    """

    def __init__(self, config: DeltaGRUConfig, depth_log2: int, desc_layout, slots):
        self._cfg = config
        self._log2 = depth_log2
        self._eb = elem_bytes(config)
        self._slots = slots
        lay = BridgeLayouts(config)
        super().__init__({
            "desc": In(stream.Signature(desc_layout)),
            "r": In(stream.Signature(8)),
            "rsp": Out(stream.Signature(_BYTE_LAST)),
            "i": Out(stream.Signature(lay.input)),
            "bus": Out(BusSignature),
            "head": In(16),
            "tail": In(16),
            "release": Out(1),
            "release_pos": Out(16),
            "rd_addr": Out(slots.slots_log2 + slots.slot_log2),
            "rd_en": Out(1),
            "rd_data": In(8),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, eb, sl = self._cfg, self._eb, self._slots
        E, ab, I = cfg.enc_width, cfg.act.bits, cfg.input_size

        n = Signal(self._log2 + 1)  # payload bytes left in the current frame
        cmd = Signal(8)
        seq = Signal(8)
        code = Signal(8)
        status = Signal(8)
        arg = Signal(8)  # error code of an RSP_ERR response
        nxt = Signal(8)  # the sequence number the next WRITE/INPUT must carry
        fresh = Signal(init=1)
        addr = Signal(8)
        cnt = Signal(8)
        word = Signal(32)
        k = Signal(2)
        fed = Signal(16)  # input timesteps passed to the core since reset
        pos = Signal(16)  # OUTPUT: first timestep to send
        steps = Signal(8)  # OUTPUT: timesteps to send
        # OUTPUT's position check, registered (OUT_MAX, OUT_CHECK): pos - tail, head - tail,
        # head - pos; pos within the kept timesteps; fewer than ``steps`` available.
        pos_off, kept, avail = Signal(16), Signal(16), Signal(16)
        pos_ok, fewer = Signal(), Signal()
        j = Signal(8)
        b = Signal(range(max(2, sl.step_bytes)))
        info = Signal(8)
        info_vals = [PROTOCOL_VERSION, self._log2, eb, E, cfg.act_width, sl.slots_log2,
                     sl.step_bytes & 0xFF, sl.step_bytes >> 8,
                     fed[:8], fed[8:], self.head[:8], self.head[8:]]
        assert len(info_vals) == link.INFO_BYTES
        info_idx = Signal(range(len(info_vals)))

        # Input packing state (persists across frames so timesteps may span frames).
        beat = Signal(E * ab)
        slot = Signal(range(E))
        ipos = Signal(range(I))
        first_pending = Signal()
        step_end = Signal()  # the beat being offered ends a timestep
        elem = Signal(8 * eb)
        eidx = Signal(range(eb))

        m.d.comb += [self.bus.addr.eq(addr), self.bus.w_data.eq(word)]
        m.d.comb += [self.i.payload.data.eq(beat), self.i.payload.first.eq(first_pending)]
        m.d.comb += self.release_pos.eq(pos)

        take = self.r.valid & self.r.ready

        def rsp(value, last=0):
            m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(value),
                         self.rsp.payload.last.eq(last)]

        def error(err):
            m.d.sync += [code.eq(RSP_ERR), arg.eq(err)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.desc.ready.eq(1)
                with m.If(self.desc.valid):
                    d = self.desc.payload
                    m.d.sync += [n.eq(d.length), seq.eq(d.seq), status.eq(0)]
                    with m.If(d.error != 0):
                        m.d.sync += [code.eq(RSP_ERR), arg.eq(d.error), n.eq(0),
                                     status.eq(Mux(fresh, STATUS_FRESH, 0))]
                        m.next = "RSP_CODE"
                    with m.Else():
                        m.next = "CMD"
            with m.State("CMD"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [cmd.eq(self.r.payload), n.eq(n - 1)]
                    m.next = "SEQ"
            with m.State("SEQ"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [seq.eq(self.r.payload), n.eq(n - 1)]
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += status.eq(Mux(fresh, STATUS_FRESH, 0))
                length_ok = Signal()
                with m.Switch(cmd):
                    with m.Case(CMD_INFO):
                        m.d.comb += length_ok.eq(n == 1)
                    with m.Case(CMD_READ):
                        m.d.comb += length_ok.eq(n == 2)
                    with m.Case(CMD_WRITE):
                        m.d.comb += length_ok.eq((n >= 5) & ((n - 1)[:2] == 0))
                    with m.Case(CMD_INPUT):
                        m.d.comb += length_ok.eq((n >= 1 + eb) & (((n - 1) & (eb - 1)) == 0))
                    with m.Case(CMD_OUTPUT):
                        m.d.comb += length_ok.eq(n == 3)
                known = cmd <= CMD_OUTPUT
                diff = (seq - nxt)[:8]
                m.d.sync += [code.eq(cmd | link.RSP_FLAG), info_idx.eq(0)]
                with m.If(~known):
                    error(ErrorCode.COMMAND)
                    m.next = "DRAIN"
                with m.Elif(~length_ok):
                    error(ErrorCode.LENGTH)
                    m.next = "DRAIN"
                with m.Elif(cmd == CMD_INFO):
                    m.d.sync += nxt.eq(seq + 1)
                    m.next = "INFO_FLAGS"
                with m.Elif(fresh):
                    error(ErrorCode.RESET)
                    m.next = "DRAIN"
                with m.Elif(cmd == CMD_READ):
                    m.next = "RD_ADDR"
                with m.Elif(cmd == CMD_OUTPUT):
                    m.next = "OUT_P0"
                with m.Elif(diff == 0):
                    # The expected WRITE or INPUT: it runs, exactly once.
                    m.d.sync += nxt.eq(nxt + 1)
                    with m.If(cmd == CMD_WRITE):
                        m.next = "WR_ADDR"
                    with m.Else():
                        m.next = "IN_FLAGS"
                with m.Elif(diff[7]):
                    # Behind `nxt`: it already ran; acknowledge it again without running it.
                    m.d.sync += status.eq(Mux(fresh, STATUS_FRESH, 0) | STATUS_DUPLICATE)
                    m.next = "DRAIN"
                with m.Else():
                    # Ahead of `nxt`: an earlier frame was lost; the host sends again from `nxt`.
                    error(ErrorCode.SEQUENCE)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.r.ready.eq(n != 0)
                with m.If(take):
                    m.d.sync += n.eq(n - 1)
                with m.If(n == 0):
                    m.next = "RSP_CODE"

            # --- INFO: flags byte ---------------------------------------------------------------
            with m.State("INFO_FLAGS"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += n.eq(n - 1)
                    with m.If(self.r.payload & INFO_CLEAR_FRESH):
                        m.d.sync += fresh.eq(0)
                    m.next = "RSP_CODE"

            # --- register write: addr, then 4-byte words to that address ------------------------
            with m.State("WR_ADDR"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [addr.eq(self.r.payload), n.eq(n - 1), k.eq(0)]
                    m.next = "WR_BYTE"
            with m.State("WR_BYTE"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [word.eq(Cat(word[8:], self.r.payload)), n.eq(n - 1), k.eq(k + 1)]
                    with m.If(k == 3):
                        m.next = "WR_DO"
            with m.State("WR_DO"):
                m.d.comb += self.bus.w_en.eq(1)
                with m.If(n == 0):
                    m.next = "RSP_CODE"
                with m.Else():
                    m.next = "WR_BYTE"

            # --- register read: addr, count; response words follow the header -------------------
            with m.State("RD_ADDR"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [addr.eq(self.r.payload), n.eq(n - 1)]
                    m.next = "RD_CNT"
            with m.State("RD_CNT"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [cnt.eq(self.r.payload), n.eq(n - 1)]
                    with m.If(self.r.payload == 0):
                        error(ErrorCode.LENGTH)
                    m.next = "RSP_CODE"
            with m.State("RD_ISSUE"):
                m.d.comb += self.bus.r_en.eq(1)
                m.next = "RD_LATCH"
            with m.State("RD_LATCH"):
                m.d.sync += [word.eq(self.bus.r_data), k.eq(0)]
                m.next = "RD_BYTE"
            with m.State("RD_BYTE"):
                rsp(word[:8], (k == 3) & (cnt == 1))
                with m.If(self.rsp.ready):
                    m.d.sync += [word.eq(word >> 8), k.eq(k + 1)]
                    with m.If(k == 3):
                        with m.If(cnt == 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [cnt.eq(cnt - 1), addr.eq(addr + 1)]
                            m.next = "RD_ISSUE"

            # --- input elements -> beats ---------------------------------------------------------
            with m.State("IN_FLAGS"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [n.eq(n - 1), eidx.eq(0)]
                    with m.If(self.r.payload[0]):
                        m.d.sync += [first_pending.eq(1), ipos.eq(0), slot.eq(0), beat.eq(0)]
                    m.next = "IN_BYTE"
            with m.State("IN_BYTE"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    new_elem = Cat(elem[8:], self.r.payload) if eb > 1 else self.r.payload
                    m.d.sync += [elem.eq(new_elem), n.eq(n - 1)]
                    with m.If(eidx == eb - 1):
                        m.d.sync += eidx.eq(0)
                        with m.Switch(slot):
                            for s in range(E):
                                with m.Case(s):
                                    m.d.sync += beat.word_select(s, ab).eq(new_elem[:ab])
                        emit = (slot == E - 1) | (ipos == I - 1)
                        m.d.sync += [slot.eq(Mux(emit, 0, slot + 1)),
                                     ipos.eq(Mux(ipos == I - 1, 0, ipos + 1)),
                                     step_end.eq(ipos == I - 1)]
                        with m.If(emit):
                            m.next = "IN_BEAT"
                        with m.Elif(n == 1):
                            m.next = "RSP_CODE"
                    with m.Else():
                        m.d.sync += eidx.eq(eidx + 1)
            with m.State("IN_BEAT"):
                m.d.comb += self.i.valid.eq(1)
                with m.If(self.i.ready):
                    m.d.sync += [beat.eq(0), first_pending.eq(0)]
                    with m.If(step_end):
                        m.d.sync += fed.eq(fed + 1)
                    with m.If(n == 0):
                        m.next = "RSP_CODE"
                    with m.Else():
                        m.next = "IN_BYTE"

            # --- OUTPUT: pos (u16), max steps; release the slots before pos ----------------------
            with m.State("OUT_P0"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [pos[:8].eq(self.r.payload), n.eq(n - 1)]
                    m.next = "OUT_P1"
            with m.State("OUT_P1"):
                m.d.comb += self.r.ready.eq(1)
                with m.If(take):
                    m.d.sync += [pos[8:].eq(self.r.payload), n.eq(n - 1)]
                    m.next = "OUT_MAX"
            with m.State("OUT_MAX"):
                m.d.comb += self.r.ready.eq(1)
                # pos is complete: the position check's differences are registered here (every
                # cycle, so they see the slots as of this state's last cycle), compared in
                # OUT_CHECK and acted on in OUT_DECIDE, so no subtract-compare chain ends at the
                # executor's enables (the ECP5's critical path at 75 MHz, slots.tail -> this check
                # -> ``arg``, docs/benchmarks/fmax). Exact: ``tail`` moves only on this executor's
                # release, and ``head`` only grows, so a position valid here stays valid; a
                # timestep written in these two cycles is reported by the next OUTPUT command.
                m.d.sync += [pos_off.eq((pos - self.tail)[:16]),
                             kept.eq((self.head - self.tail)[:16]),
                             avail.eq((self.head - pos)[:16])]
                with m.If(take):
                    m.d.sync += [steps.eq(self.r.payload), n.eq(n - 1)]
                    m.next = "OUT_CHECK"
            with m.State("OUT_CHECK"):
                # Valid positions lie between the oldest kept timestep and the newest written.
                m.d.sync += [pos_ok.eq(pos_off <= kept), fewer.eq(avail < steps)]
                m.next = "OUT_DECIDE"
            with m.State("OUT_DECIDE"):
                with m.If(pos_ok):
                    m.d.comb += self.release.eq(1)
                    with m.If(fewer):
                        m.d.sync += steps.eq(avail[:8])
                with m.Else():
                    error(ErrorCode.POSITION)
                m.next = "RSP_CODE"

            # --- response: code, seq, status, next, then the command's body ----------------------
            with m.State("RSP_CODE"):
                rsp(code)
                with m.If(self.rsp.ready):
                    m.next = "RSP_SEQ"
            with m.State("RSP_SEQ"):
                rsp(seq)
                with m.If(self.rsp.ready):
                    m.next = "RSP_STATUS"
            with m.State("RSP_STATUS"):
                rsp(status)
                with m.If(self.rsp.ready):
                    m.next = "RSP_NEXT"
            with m.State("RSP_NEXT"):
                no_body = (code != RSP_READ) & (code != RSP_INFO) & (code != RSP_OUTPUT) & \
                    (code != RSP_ERR)
                rsp(nxt, no_body)
                with m.If(self.rsp.ready):
                    with m.If(code == RSP_READ):
                        m.next = "RD_ISSUE"
                    with m.Elif(code == RSP_INFO):
                        m.next = "RSP_INFO"
                    with m.Elif(code == RSP_OUTPUT):
                        m.next = "OUT_POS0"
                    with m.Elif(code == RSP_ERR):
                        m.next = "RSP_ARG"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("RSP_ARG"):
                rsp(arg, 1)
                with m.If(self.rsp.ready):
                    m.next = "IDLE"
            with m.State("RSP_INFO"):
                with m.Switch(info_idx):
                    for x, v in enumerate(info_vals):
                        with m.Case(x):
                            m.d.comb += info.eq(v)
                rsp(info, info_idx == len(info_vals) - 1)
                with m.If(self.rsp.ready):
                    m.d.sync += info_idx.eq(info_idx + 1)
                    with m.If(info_idx == len(info_vals) - 1):
                        m.next = "IDLE"
            with m.State("OUT_POS0"):
                rsp(pos[:8])
                with m.If(self.rsp.ready):
                    m.next = "OUT_POS1"
            with m.State("OUT_POS1"):
                rsp(pos[8:])
                with m.If(self.rsp.ready):
                    m.next = "OUT_CNT"
            with m.State("OUT_CNT"):
                rsp(steps, steps == 0)
                with m.If(self.rsp.ready):
                    m.d.sync += [j.eq(0), b.eq(0)]
                    with m.If(steps == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "OUT_FETCH"
            with m.State("OUT_FETCH"):
                m.d.comb += [self.rd_en.eq(1),
                             self.rd_addr.eq(Cat(b[:sl.slot_log2], (pos + j)[:sl.slots_log2]))]
                m.next = "OUT_BYTE"
            with m.State("OUT_BYTE"):
                step_done = b == sl.step_bytes - 1
                rsp(self.rd_data, step_done & (j == steps - 1))
                with m.If(self.rsp.ready):
                    m.d.sync += b.eq(Mux(step_done, 0, b + 1))
                    with m.If(step_done):
                        m.d.sync += j.eq(j + 1)
                        with m.If(j == steps - 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "OUT_FETCH"
                    with m.Else():
                        m.next = "OUT_FETCH"
        return m


class SkidBuffer(wiring.Component):
    """A stream register slice that registers both directions: ``o.valid``/``o.payload`` and
    ``i.ready`` are flip-flop outputs, so no combinational path runs from ``o.ready`` to
    ``i.ready`` or from ``i.valid`` to ``o.valid``.

    Latency: a beat taken on ``i`` is offered on ``o`` the next cycle. Throughput: one beat per
    cycle while ``o.ready`` is high; when ``o`` stalls, one more beat is taken into the skid
    register (``i.ready`` falls the cycle after), and it follows the stalled one out in order.
    """

    def __init__(self, payload_shape):
        super().__init__({
            "i": In(stream.Signature(payload_shape)),
            "o": Out(stream.Signature(payload_shape)),
        })

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload, name="skid")
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):  # the output register takes a beat
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):  # the output stalls: keep the new beat aside
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class Bridge(wiring.Component):
    """Byte-level host bridge for a :class:`~deltahw.gateware.core.DeltaGRUCore` of ``config``.

    Ports: ``rx`` (bytes from the host; never back-pressured), ``tx`` (bytes to the host), the
    core-facing ``i``/``o`` streams with the core's payload layouts (:class:`BridgeLayouts`), the
    register ``bus`` (:data:`~deltahw.gateware.registers.BusSignature`, joined to the core's with
    ``wiring.connect``), plus one-cycle ``good_frame``/``bad_frame`` strobes for status LEDs.

    Throughput: one received byte per cycle (so any UART speed); about one transmitted byte per
    cycle plus escapes (output bytes one per two cycles); a request runs after its last byte and CRC
    arrived (no side effect of a damaged frame); an input frame streams into ``i`` at one element
    per ``elem_bytes`` cycles. Latency from a request's closing ``END`` to its response's first byte
    is a few cycles (the response bytes pass a 3-entry registered FIFO before the SLIP encoder).
    Buffers: ``rx_depth`` bytes of received frames (at most :data:`deltahw.link.DESC_DEPTH`
    frames) and ``2**out_slots_log2`` timesteps of outputs.
    """

    def __init__(self, config: DeltaGRUConfig, *, rx_depth: int = 1024):
        if not isinstance(config, DeltaGRUConfig):
            raise TypeError(f"Bridge needs a DeltaGRUConfig; got {type(config).__name__}.")
        if rx_depth < 64 or rx_depth & (rx_depth - 1):
            raise ValueError(f"rx_depth must be a power of two >= 64; got {rx_depth}.")
        self.config = config
        self.rx_depth = rx_depth
        self._log2 = rx_depth.bit_length() - 1
        lay = BridgeLayouts(config)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "i": Out(stream.Signature(lay.input)),
            "o": In(stream.Signature(lay.output)),
            "bus": Out(BusSignature),
            "good_frame": Out(1),
            "bad_frame": Out(1),
        })

    @property
    def max_input_elements(self) -> int:
        """Elements one INPUT frame can carry (the frame must fit in the receive buffer)."""
        return (self.rx_depth - link.FRAME_OVERHEAD - 1) // elem_bytes(self.config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rcv = _Receiver(self._log2)
        m.submodules.slots = slots = _OutputSlots(self.config)
        m.submodules.executor = exe = _Executor(self.config, self._log2, rcv.desc_layout, slots)
        m.submodules.encoder = enc = FrameEncoder()

        wiring.connect(m, wiring.flipped(self.rx), rcv.rx)
        wiring.connect(m, rcv.r, exe.r)
        wiring.connect(m, rcv.desc, exe.desc)
        # The response bytes pass through a small registered FIFO: the executor's response
        # select and the encoder's escape / CRC logic (and the transmitter's ready) are then in
        # separate cycles (Fmax). Three entries keep one byte per cycle (the FIFO's write side does
        # not see a read in the same cycle); it adds a cycle of latency.
        m.submodules.rsp_fifo = rsp_fifo = fifo.SyncFIFOBuffered(width=_BYTE_LAST.size,
                                                                 depth=3)
        m.d.comb += [
            rsp_fifo.w_data.eq(exe.rsp.payload), rsp_fifo.w_en.eq(exe.rsp.valid),
            exe.rsp.ready.eq(rsp_fifo.w_rdy),
            enc.i.payload.eq(rsp_fifo.r_data), enc.i.valid.eq(rsp_fifo.r_rdy),
            rsp_fifo.r_en.eq(enc.i.ready),
        ]
        wiring.connect(m, enc.o, wiring.flipped(self.tx))
        # The input beats pass a skid buffer: the executor's beat register (E elements, the
        # core's input payload) and its state machine then never wait on the core's ``i.ready``
        # across the die and back (the ECP5's critical path at 80 MHz, 12.75 ns of routing:
        # docs/benchmarks/fmax). It adds a cycle of latency to the input stream.
        m.submodules.i_skid = i_skid = SkidBuffer(exe.i.payload.shape())
        wiring.connect(m, exe.i, i_skid.i)
        wiring.connect(m, i_skid.o, wiring.flipped(self.i))
        wiring.connect(m, wiring.flipped(self.o), slots.o)
        wiring.connect(m, exe.bus, wiring.flipped(self.bus))
        m.d.comb += [
            exe.head.eq(slots.head), exe.tail.eq(slots.tail),
            slots.release.eq(exe.release), slots.release_pos.eq(exe.release_pos),
            slots.rd_addr.eq(exe.rd_addr), slots.rd_en.eq(exe.rd_en), exe.rd_data.eq(slots.rd_data),
            self.good_frame.eq(rcv.good_frame), self.bad_frame.eq(rcv.bad_frame),
        ]
        return m

