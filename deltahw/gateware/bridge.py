"""Host bridge: a framed byte protocol from a UART (or any byte pipe) to the core's bus and streams.

Framing (both directions)
-------------------------
Frames are SLIP-delimited (RFC 1055): every frame starts and ends with ``END`` (0xC0); inside a
frame ``END`` is sent as ``ESC ESC_END`` (0xDB 0xDC) and ``ESC`` as ``ESC ESC_ESC`` (0xDB 0xDD).
Because ``END`` never appears inside a frame, the receiver resynchronises at the next ``END``
after any garbage: a damaged or partial frame is dropped (and answered with an error frame), the
frame after it is received intact. The decoded frame is::

    code (1) | seq (1) | payload (n) | CRC-16 (2, big endian)

CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; Python's
``binascii.crc_hqx(data, 0xFFFF)``) over code, seq and payload. Running the CRC over the whole
frame including its CRC gives 0, which is how the receiver checks it.

Requests (host to device), answered in order, one response each:

* ``CMD_INFO``  (0x00), no payload: bridge parameters (``RSP_INFO``, :data:`INFO_FIELDS`).
* ``CMD_READ``  (0x01), ``addr, count``: read ``count`` (1..255) registers from ``addr`` upwards;
  the response carries ``count`` little-endian 32-bit words.
* ``CMD_WRITE`` (0x02), ``addr, word...``: write 1 or more little-endian 32-bit words, all to
  ``addr`` (a burst to ``PARAM_DATA`` streams a whole lane memory in one frame).
* ``CMD_INPUT`` (0x03), ``flags, element...``: input elements in the act format, ``elem_bytes``
  bytes each, little endian. The bridge packs them into the core's ``i`` beats, I elements per
  timestep, padding the last beat of each timestep; a frame may carry any number of elements (any
  number of whole timesteps). ``flags`` bit 0 (``INPUT_FIRST``) starts a new sequence: the next beat
  carries ``first`` and the element position restarts at 0.

Sequence numbers: ``INFO`` always runs and (re)starts the numbering; every other request runs only
if its ``seq`` is the previous request's plus one (mod 256). A request with the previous ``seq``
is a repeat: a WRITE or INPUT is acknowledged with ``STATUS_DUPLICATE`` and not executed again, a
READ runs again. Anything else is refused with ``ERR_SEQUENCE`` and not executed, so after a lost
frame the host resends from that frame on (go-back-N) and the core sees every register write and
input element exactly once, in order.

Responses (device to host): ``code | seq | status | payload``, where ``seq`` echoes the request and
``status`` has bit 0 ``STATUS_FRESH`` (this is the first frame executed since the bridge was
reset: a device reset between two frames is visible to the host) and bit 1 ``STATUS_DUPLICATE``
(a repeated WRITE or INPUT frame was not executed again).
Response codes are ``0x80 | command``; ``RSP_ERR`` (0xE0) carries one error byte
(:class:`ErrorCode`) and echoes the damaged frame's second byte as ``seq``.

Output frames (device to host, unsolicited): ``RSP_OUT`` (0x90) ``| count | beats`` where
``count`` is a timestep counter (mod 256) and each of the timestep's ``o`` beats contributes A
elements of ``elem_bytes`` bytes (sign-extended, little endian). They are independent of the
request path, so outputs never wait for a request (and the core never deadlocks on output space).

Flow control: the receive buffer (``rx_depth`` bytes, reported by INFO) holds decoded frames until
they are executed; the host keeps the total size of its unanswered frames (code + seq + payload +
CRC) at or below it. A frame that does not fit is dropped with ``ERR_OVERFLOW``.
"""


import binascii
import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import DeltaGRUConfig

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC",
    "CMD_INFO", "CMD_READ", "CMD_WRITE", "CMD_INPUT",
    "RSP_INFO", "RSP_READ", "RSP_WRITE", "RSP_INPUT", "RSP_OUT", "RSP_ERR",
    "STATUS_FRESH", "STATUS_DUPLICATE", "INPUT_FIRST", "PROTOCOL_VERSION", "INFO_FIELDS",
    "ErrorCode", "crc16", "slip_encode", "SlipDecoder", "encode_frame", "decode_frame",
    "elem_bytes", "BridgeLayouts", "Bridge", "FrameEncoder", "input_frame_elements",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

CMD_INFO, CMD_READ, CMD_WRITE, CMD_INPUT = 0x00, 0x01, 0x02, 0x03
RSP_INFO, RSP_READ, RSP_WRITE, RSP_INPUT = 0x80, 0x81, 0x82, 0x83
RSP_OUT, RSP_ERR = 0x90, 0xE0
STATUS_FRESH, STATUS_DUPLICATE = 0x01, 0x02
INPUT_FIRST = 0x01
#: Version of this byte protocol (reported by INFO; the register map has its own version).
PROTOCOL_VERSION = 1
#: Bytes of the INFO payload, in order.
INFO_FIELDS = ("protocol_version", "rx_depth_log2", "elem_bytes", "enc_width", "act_width")


class ErrorCode(enum.IntEnum):
    CRC = 1  #: the frame's CRC did not match
    OVERFLOW = 2  #: the frame did not fit in the receive buffer
    SHORT = 3  #: fewer than 4 bytes between two END bytes
    ESCAPE = 4  #: ESC followed by a byte other than ESC_END / ESC_ESC
    COMMAND = 5  #: unknown command code
    LENGTH = 6  #: payload length not valid for the command
    SEQUENCE = 7  #: seq is neither the previous frame's nor its successor: frame not executed


# --------------------------------------------------------------------------------------------------
# Reference (Python) side of the protocol, used by the host driver and the tests.

def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    return binascii.crc_hqx(bytes(data), crc)


def slip_encode(frame: bytes) -> bytes:
    out = bytearray([END])
    for b in frame:
        if b == END:
            out += bytes([ESC, ESC_END])
        elif b == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(b)
    out.append(END)
    return bytes(out)


def encode_frame(code: int, seq: int, payload: bytes = b"") -> bytes:
    """A complete wire frame (SLIP-escaped, with CRC) for ``code``/``seq``/``payload``."""
    body = bytes([code & 0xFF, seq & 0xFF]) + bytes(payload)
    return slip_encode(body + crc16(body).to_bytes(2, "big"))


class SlipDecoder:
    """Incremental SLIP decoder: feed bytes, get complete raw frames (CRC not yet checked)."""

    def __init__(self):
        self._buf = bytearray()
        self._esc = False
        self._bad = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """Returns ``(frame, escape_ok)`` for every frame completed by ``data``."""
        frames = []
        for b in data:
            if b == END:
                if self._buf or self._bad:
                    frames.append((bytes(self._buf), not self._bad))
                self._buf.clear()
                self._esc = self._bad = False
            elif self._esc:
                self._esc = False
                if b == ESC_END:
                    self._buf.append(END)
                elif b == ESC_ESC:
                    self._buf.append(ESC)
                else:
                    self._bad = True
            elif b == ESC:
                self._esc = True
            else:
                self._buf.append(b)
        return frames


def decode_frame(raw: bytes) -> tuple[int, int, bytes]:
    """Check the CRC of a decoded frame; returns ``(code, seq, payload)`` or raises ValueError."""
    if len(raw) < 4:
        raise ValueError(f"A frame needs at least 4 bytes (code, seq, CRC); got {len(raw)}.")
    if crc16(raw) != 0:
        raise ValueError(f"Frame CRC mismatch (frame {raw[:8].hex()}..., {len(raw)} bytes).")
    return raw[0], raw[1], raw[2:-2]


def elem_bytes(config: DeltaGRUConfig) -> int:
    """Bytes per act-format element on the wire (1, 2 or 4; 24-bit formats use 4)."""
    bits = config.act.bits
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


# --------------------------------------------------------------------------------------------------
def _crc16_byte(crc, byte):
    """Combinational CRC-16/CCITT update of a 16-bit value with one byte (MSB first)."""
    c = crc ^ Cat(Const(0, 8), byte)
    for _ in range(8):
        c = Cat(Const(0, 1), c[:15]) ^ Mux(c[15], 0x1021, 0)
    return c


class BridgeLayouts:
    """Stream payload layouts of the core's ``i`` and ``o`` ports for a config."""

    def __init__(self, config: DeltaGRUConfig):
        ab = config.act.bits
        self.input = data.StructLayout({"data": config.enc_width * ab, "first": 1})
        self.output = data.StructLayout({"data": config.act_width * ab, "last": 1})


_BYTE_LAST = data.StructLayout({"data": 8, "last": 1})


class FrameEncoder(wiring.Component):
    """Raw frame bytes (``data``, ``last`` on the final byte) in, SLIP bytes with CRC out.

    Emits ``END``, the escaped bytes, the escaped CRC (high byte first) and ``END``. At most one
    output byte per cycle; an input byte is taken when its (possibly escaped) output is sent.
    """

    i: In(stream.Signature(_BYTE_LAST))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16, init=0xFFFF)
        # The byte being sent in the DATA/CRC phases and whether its escape byte has gone out.
        escaped = Signal()
        cur = Signal(8)
        special = (cur == END) | (cur == ESC)
        esc_code = Mux(cur == END, ESC_END, ESC_ESC)

        def send_escaped(next_state, on_done):
            # Send `cur`, escaped if needed; run `on_done` (list of statements) when it is out.
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
                    m.next = next_state

        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += [crc.eq(0xFFFF), escaped.eq(0)]
                with m.If(self.i.valid):
                    m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(END)]
                    with m.If(self.o.ready):
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += cur.eq(self.i.payload.data)

                def take():
                    m.d.comb += self.i.ready.eq(1)
                    m.d.sync += crc.eq(_crc16_byte(crc, cur))

                with m.If(self.i.valid):
                    with m.If(self.i.payload.last):
                        send_escaped("CRC_HI", take)
                    with m.Else():
                        send_escaped("DATA", take)
            with m.State("CRC_HI"):
                m.d.comb += cur.eq(crc[8:])
                send_escaped("CRC_LO", lambda: None)
            with m.State("CRC_LO"):
                m.d.comb += cur.eq(crc[:8])
                send_escaped("CLOSE", lambda: None)
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
    (``length`` = payload length + 2, ``error``, ``seq``) is queued on ``desc``; a bad frame is
    rewound and queued as an error descriptor with length 0.
    """

    def __init__(self, depth_log2: int, desc_depth: int = 16):
        self._log2 = depth_log2
        self._depth = 1 << depth_log2
        self.desc_layout = data.StructLayout({
            "length": depth_log2 + 1, "error": 3, "seq": 8})
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
        crc = Signal(16, init=0xFFFF)
        esc = Signal()
        err = Signal(3)  # sticky error of the frame being received (ESCAPE or OVERFLOW)

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
                m.d.sync += [count.eq(0), crc.eq(0xFFFF), esc.eq(0), err.eq(0)]
                with m.If((count != 0) | (err != 0)):
                    # A full descriptor queue drops even a good frame (the host times out and
                    # resends): committing it without a descriptor would desynchronise the reader.
                    ok = (err == 0) & (count >= 4) & (crc == 0) & descq.w_rdy
                    with m.If(err != 0):
                        m.d.comb += desc.error.eq(err)
                    with m.Elif(count < 4):
                        m.d.comb += desc.error.eq(ErrorCode.SHORT)
                    with m.Elif(crc != 0):
                        m.d.comb += desc.error.eq(ErrorCode.CRC)
                    m.d.comb += [desc.seq.eq(seq), descq.w_en.eq(1)]
                    with m.If(ok):
                        m.d.comb += [desc.length.eq(count - 2), self.good_frame.eq(1)]
                        m.d.sync += commit.eq(commit + count - 2)
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
                    m.d.sync += [count.eq(count + 1), crc.eq(_crc16_byte(crc, byte))]
                    with m.If(count == 1):
                        m.d.sync += seq.eq(byte)
            with m.Else():
                m.d.sync += esc.eq(0)

        # Read side: a plain FIFO view of the committed bytes, one-cycle memory latency.
        avail = rd != commit
        fetch = avail & (~self.r.valid | self.r.ready)
        m.d.comb += [rp.en.eq(fetch), rp.addr.eq(rd[:log2]), self.r.payload.eq(rp.data)]
        with m.If(fetch):
            m.d.sync += [rd.eq(rd + 1), self.r.valid.eq(1)]
        with m.Elif(self.r.ready):
            m.d.sync += self.r.valid.eq(0)

        m.d.comb += [self.desc.payload.eq(descq.r_data), self.desc.valid.eq(descq.r_rdy),
                     descq.r_en.eq(self.desc.ready)]
        return m


class _Executor(wiring.Component):
    """Executes committed frames: bus reads/writes, input beats; emits one response per frame."""

    def __init__(self, config: DeltaGRUConfig, depth_log2: int, desc_layout):
        self._cfg = config
        self._log2 = depth_log2
        self._eb = elem_bytes(config)
        lay = BridgeLayouts(config)
        super().__init__({
            "desc": In(stream.Signature(desc_layout)),
            "r": In(stream.Signature(8)),
            "rsp": Out(stream.Signature(_BYTE_LAST)),
            "i": Out(stream.Signature(lay.input)),
            "bus_addr": Out(8),
            "bus_w_data": Out(32),
            "bus_w_en": Out(1),
            "bus_r_en": Out(1),
            "bus_r_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, eb = self._cfg, self._eb
        E, ab, I = cfg.enc_width, cfg.act.bits, cfg.input_size

        n = Signal(self._log2 + 1)  # payload bytes left in the current frame
        cmd = Signal(8)
        seq = Signal(8)
        code = Signal(8)
        status = Signal(8)
        arg = Signal(8)  # error code or single payload byte of the response
        last_seq = Signal(8)
        last_seq_valid = Signal()
        fresh = Signal(init=1)
        addr = Signal(8)
        cnt = Signal(8)
        word = Signal(32)
        k = Signal(2)
        info = Signal(8)
        info_idx = Signal(range(len(INFO_FIELDS)))
        info_vals = [PROTOCOL_VERSION, self._log2, eb, E, cfg.act_width]

        # Input packing state (persists across frames so timesteps may span frames).
        beat = Signal(E * ab)
        slot = Signal(range(E))
        pos = Signal(range(I))
        first_pending = Signal()
        elem = Signal(8 * eb)
        eidx = Signal(range(eb))

        m.d.comb += [self.bus_addr.eq(addr), self.bus_w_data.eq(word)]
        m.d.comb += [self.i.payload.data.eq(beat), self.i.payload.first.eq(first_pending)]

        take = self.r.valid & self.r.ready

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.desc.ready.eq(1)
                with m.If(self.desc.valid):
                    d = self.desc.payload
                    m.d.sync += n.eq(d.length), seq.eq(d.seq), status.eq(0)
                    with m.If(d.error != 0):
                        m.d.sync += [code.eq(RSP_ERR), arg.eq(d.error), n.eq(0)]
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
                # Sequence rule: INFO always runs and (re)starts the numbering; any other frame
                # runs only as the successor of the previous one (or, as a repeat of it, is
                # acknowledged without running again: reads run again, they have no effect).
                dup = last_seq_valid & (seq == last_seq)
                in_order = ~last_seq_valid | (seq == (last_seq + 1)[:8]) | (cmd == CMD_INFO)
                fresh_bit = Mux(fresh, STATUS_FRESH, 0)
                m.d.sync += status.eq(fresh_bit)
                elem_ok = (n >= 1 + eb) & (((n - 1) & (eb - 1)) == 0)
                length_ok = Signal()
                with m.Switch(cmd):
                    with m.Case(CMD_INFO):
                        m.d.comb += length_ok.eq(n == 0)
                    with m.Case(CMD_READ):
                        m.d.comb += length_ok.eq(n == 2)
                    with m.Case(CMD_WRITE):
                        m.d.comb += length_ok.eq((n >= 5) & ((n - 1)[:2] == 0))
                    with m.Case(CMD_INPUT):
                        m.d.comb += length_ok.eq(elem_ok)
                known = (cmd == CMD_INFO) | (cmd == CMD_READ) | (cmd == CMD_WRITE) | \
                    (cmd == CMD_INPUT)
                with m.If(~in_order & ~dup):
                    # Not executed and not counted: the host resends from its first lost frame.
                    m.d.sync += [code.eq(RSP_ERR), arg.eq(ErrorCode.SEQUENCE)]
                    m.next = "DRAIN"
                with m.Else():
                    m.d.sync += [last_seq.eq(seq), last_seq_valid.eq(1), fresh.eq(0)]
                    with m.If(~known):
                        m.d.sync += [code.eq(RSP_ERR), arg.eq(ErrorCode.COMMAND)]
                        m.next = "DRAIN"
                    with m.Elif(~length_ok):
                        m.d.sync += [code.eq(RSP_ERR), arg.eq(ErrorCode.LENGTH)]
                        m.next = "DRAIN"
                    with m.Elif(dup & ((cmd == CMD_WRITE) | (cmd == CMD_INPUT)) & ~in_order):
                        m.d.sync += [code.eq(cmd | 0x80), arg.eq(0),
                                     status.eq(STATUS_DUPLICATE | fresh_bit)]
                        m.next = "DRAIN"
                    with m.Else():
                        m.d.sync += [code.eq(cmd | 0x80), arg.eq(0), info_idx.eq(0)]
                        with m.Switch(cmd):
                            with m.Case(CMD_INFO):
                                m.next = "RSP_CODE"
                            with m.Case(CMD_READ):
                                m.next = "RD_ADDR"
                            with m.Case(CMD_WRITE):
                                m.next = "WR_ADDR"
                            with m.Case(CMD_INPUT):
                                m.next = "IN_FLAGS"
            with m.State("DRAIN"):
                m.d.comb += self.r.ready.eq(n != 0)
                with m.If(take):
                    m.d.sync += n.eq(n - 1)
                with m.If(n == 0):
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
                m.d.comb += self.bus_w_en.eq(1)
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
                        m.d.sync += [code.eq(RSP_ERR), arg.eq(ErrorCode.LENGTH)]
                    m.next = "RSP_CODE"
            with m.State("RD_ISSUE"):
                m.d.comb += self.bus_r_en.eq(1)
                m.next = "RD_LATCH"
            with m.State("RD_LATCH"):
                m.d.sync += [word.eq(self.bus_r_data), k.eq(0)]
                m.next = "RD_BYTE"
            with m.State("RD_BYTE"):
                final = (k == 3) & (cnt == 1)
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(word[:8]),
                             self.rsp.payload.last.eq(final)]
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
                        m.d.sync += [first_pending.eq(1), pos.eq(0), slot.eq(0), beat.eq(0)]
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
                        emit = (slot == E - 1) | (pos == I - 1)
                        m.d.sync += [slot.eq(Mux(emit, 0, slot + 1)),
                                     pos.eq(Mux(pos == I - 1, 0, pos + 1))]
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
                    with m.If(n == 0):
                        m.next = "RSP_CODE"
                    with m.Else():
                        m.next = "IN_BYTE"

            # --- response header and short payloads ----------------------------------------------
            with m.State("RSP_CODE"):
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(code)]
                with m.If(self.rsp.ready):
                    m.next = "RSP_SEQ"
            with m.State("RSP_SEQ"):
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(seq)]
                with m.If(self.rsp.ready):
                    m.next = "RSP_STATUS"
            with m.State("RSP_STATUS"):
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(status)]
                with m.If(self.rsp.ready):
                    with m.If(code == RSP_READ):
                        m.next = "RD_ISSUE"
                    with m.Elif(code == RSP_INFO):
                        m.next = "RSP_INFO"
                    with m.Else():
                        m.next = "RSP_ARG"
            with m.State("RSP_ARG"):
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(arg),
                             self.rsp.payload.last.eq(1)]
                with m.If(self.rsp.ready):
                    m.next = "IDLE"
            with m.State("RSP_INFO"):
                with m.Switch(info_idx):
                    for j, v in enumerate(info_vals):
                        with m.Case(j):
                            m.d.comb += info.eq(v)
                m.d.comb += [self.rsp.valid.eq(1), self.rsp.payload.data.eq(info),
                             self.rsp.payload.last.eq(info_idx == len(info_vals) - 1)]
                with m.If(self.rsp.ready):
                    m.d.sync += info_idx.eq(info_idx + 1)
                    with m.If(info_idx == len(info_vals) - 1):
                        m.next = "IDLE"
        return m


class _OutputFramer(wiring.Component):
    """Turns each timestep's ``o`` beats (up to ``last``) into one ``RSP_OUT`` frame."""

    def __init__(self, config: DeltaGRUConfig):
        self._cfg = config
        self._eb = elem_bytes(config)
        super().__init__({
            "o": In(stream.Signature(BridgeLayouts(config).output)),
            "frame": Out(stream.Signature(_BYTE_LAST)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, eb = self._cfg, self._eb
        A, ab = cfg.act_width, cfg.act.bits
        nbytes = A * eb
        step = Signal(8)
        beat = Signal(A * ab)
        beat_last = Signal()
        idx = Signal(range(nbytes))
        # Sign-extend every element to eb bytes, element 0 first.
        wide = Cat(*[beat.word_select(e, ab) if ab == 8 * eb else
                     Cat(beat.word_select(e, ab),
                         beat.word_select(e, ab)[-1].replicate(8 * eb - ab))
                     for e in range(A)])
        byte = Signal(8)
        m.d.comb += byte.eq(wide.word_select(idx, 8))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.o.valid):
                    m.d.comb += [self.frame.valid.eq(1), self.frame.payload.data.eq(RSP_OUT)]
                    with m.If(self.frame.ready):
                        m.next = "COUNT"
            with m.State("COUNT"):
                m.d.comb += [self.frame.valid.eq(1), self.frame.payload.data.eq(step)]
                with m.If(self.frame.ready):
                    m.next = "BEAT"
            with m.State("BEAT"):
                m.d.comb += self.o.ready.eq(1)
                with m.If(self.o.valid):
                    m.d.sync += [beat.eq(self.o.payload.data), beat_last.eq(self.o.payload.last),
                                 idx.eq(0)]
                    m.next = "BYTES"
            with m.State("BYTES"):
                final = beat_last & (idx == nbytes - 1)
                m.d.comb += [self.frame.valid.eq(1), self.frame.payload.data.eq(byte),
                             self.frame.payload.last.eq(final)]
                with m.If(self.frame.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == nbytes - 1):
                        with m.If(beat_last):
                            m.d.sync += step.eq(step + 1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "BEAT"
        return m


class _FrameArbiter(wiring.Component):
    """Round-robin choice between two frame sources, switching only between frames."""

    a: In(stream.Signature(_BYTE_LAST))
    b: In(stream.Signature(_BYTE_LAST))
    o: Out(stream.Signature(_BYTE_LAST))

    def elaborate(self, platform):
        m = Module()
        locked = Signal()
        sel_b = Signal()
        prefer_b = Signal()
        choose_b = Mux(locked, sel_b, (self.b.valid & (prefer_b | ~self.a.valid)))
        with m.If(choose_b):
            m.d.comb += [self.o.payload.eq(self.b.payload), self.o.valid.eq(self.b.valid),
                         self.b.ready.eq(self.o.ready)]
        with m.Else():
            m.d.comb += [self.o.payload.eq(self.a.payload), self.o.valid.eq(self.a.valid),
                         self.a.ready.eq(self.o.ready)]
        # Hold the choice from the first offered byte to the transfer of the last one (the encoder
        # may be half-way through an escape sequence while it waits).
        with m.If(self.o.valid):
            with m.If(self.o.ready & self.o.payload.last):
                m.d.sync += [locked.eq(0), prefer_b.eq(~choose_b)]
            with m.Else():
                m.d.sync += [locked.eq(1), sel_b.eq(choose_b)]
        return m


class Bridge(wiring.Component):
    """Byte-level host bridge for a :class:`~deltahw.gateware.core.DeltaGRUCore` of ``config``.

    Ports: ``rx`` (bytes from the host; never back-pressured), ``tx`` (bytes to the host), the
    core-facing ``i``/``o`` streams with the core's payload layouts (:class:`BridgeLayouts`) and the
    bus (``bus_addr``, ``bus_w_data``, ``bus_w_en``, ``bus_r_en``, ``bus_r_data``, read data one
    cycle after ``bus_r_en``, as the core's ``bus``), plus one-cycle ``good_frame``/``bad_frame``
    strobes for status LEDs.

    Throughput: one received byte per cycle (so any UART speed), about one transmitted byte per
    cycle plus escapes; a request is executed after its last byte and CRC arrived (no side effect of
    a damaged frame), an input frame streams into ``i`` at one element per ``elem_bytes`` cycles.
    Latency from a request's closing ``END`` to its response's first byte is a few cycles.
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
            "bus_addr": Out(8),
            "bus_w_data": Out(32),
            "bus_w_en": Out(1),
            "bus_r_en": Out(1),
            "bus_r_data": In(32),
            "good_frame": Out(1),
            "bad_frame": Out(1),
        })

    @property
    def max_input_elements(self) -> int:
        """Elements one INPUT frame can carry (the frame must fit in the receive buffer)."""
        return (self.rx_depth - 5) // elem_bytes(self.config)

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rcv = _Receiver(self._log2)
        m.submodules.executor = exe = _Executor(self.config, self._log2, rcv.desc_layout)
        m.submodules.outframer = ofr = _OutputFramer(self.config)
        m.submodules.arbiter = arb = _FrameArbiter()
        m.submodules.encoder = enc = FrameEncoder()

        wiring.connect(m, wiring.flipped(self.rx), rcv.rx)
        wiring.connect(m, rcv.r, exe.r)
        wiring.connect(m, rcv.desc, exe.desc)
        wiring.connect(m, exe.rsp, arb.a)
        wiring.connect(m, ofr.frame, arb.b)
        wiring.connect(m, arb.o, enc.i)
        wiring.connect(m, enc.o, wiring.flipped(self.tx))
        wiring.connect(m, exe.i, wiring.flipped(self.i))
        wiring.connect(m, wiring.flipped(self.o), ofr.o)
        m.d.comb += [
            self.bus_addr.eq(exe.bus_addr), self.bus_w_data.eq(exe.bus_w_data),
            self.bus_w_en.eq(exe.bus_w_en), self.bus_r_en.eq(exe.bus_r_en),
            exe.bus_r_data.eq(self.bus_r_data),
            self.good_frame.eq(rcv.good_frame), self.bad_frame.eq(rcv.bad_frame),
        ]
        return m


def input_frame_elements(config: DeltaGRUConfig, rx_depth: int) -> int:
    """Whole timesteps' worth of elements that fit in one INPUT frame."""
    per_frame = (rx_depth - 5) // elem_bytes(config)
    steps = max(1, per_frame // config.input_size)
    return steps * config.input_size if per_frame >= config.input_size else per_frame

