"""The host link's byte protocol: one plain-Python description shared by the driver and the RTL.

:mod:`deltahw.host` (the driver), :mod:`deltahw.gateware.bridge` (the RTL) and the reference
device (:mod:`deltahw.linksim`) all take their constants, frame codec, CRC parameters and payload
layouts from here. This module imports neither Amaranth nor torch.

Framing (both directions)
-------------------------
Frames are SLIP-delimited (RFC 1055): a frame starts and ends with ``END`` (0xC0); inside a frame
``END`` is sent as ``ESC ESC_END`` (0xDB 0xDC) and ``ESC`` as ``ESC ESC_ESC`` (0xDB 0xDD). A
receiver resynchronises at the next ``END`` after any garbage. The decoded frame is::

    code (1) | seq (1) | payload (n) | CRC (4, little endian)

The CRC is CRC-32/ISO-HDLC (:data:`CRC_PARAMS`, the zlib/Ethernet CRC) over code, seq and payload.
A 32-bit CRC (not 16) because a link test injects thousands of damaged, truncated and merged frames:
with 16 bits about one in 65536 of them would pass the check and could change a weight silently.

Requests (host to device) and what makes the protocol safe to repeat
--------------------------------------------------------------------
* ``CMD_INFO``   (0x00) ``flags``: resynchronises the sequence numbers (the next sequenced request
  must carry ``seq + 1``) and reports the bridge's parameters (:data:`INFO_FIELDS`). With
  ``INFO_CLEAR_FRESH`` it also clears the device's *fresh* flag (only :meth:`Device.connect` does).
* ``CMD_READ``   (0x01) ``addr, count``: read 1..255 registers. Not sequenced: reads have no side
  effect, so a repeated READ simply runs again.
* ``CMD_WRITE``  (0x02) ``addr, word...``: write words to one address. **Sequenced.**
* ``CMD_INPUT``  (0x03) ``flags, element...``: input elements (``elem_bytes`` each, little endian);
  ``INPUT_FIRST`` starts a new sequence. **Sequenced.**
* ``CMD_OUTPUT`` (0x04) ``pos (u16), max_steps (u8)``: "I have every output timestep before
  ``pos``; send me up to ``max_steps`` from ``pos`` on." Not sequenced: it frees the device's output
  slots before ``pos`` (idempotent) and reads, so it can be repeated freely.

Sequenced requests (WRITE, INPUT) run exactly once and in order. The device keeps ``next``, the seq
it will execute next. A frame with ``seq == next`` runs and ``next`` advances; a frame up to 127
behind ``next`` already ran and is acknowledged with ``STATUS_DUPLICATE`` without running again; a
frame ahead of ``next`` (an earlier one was lost) is refused with ``ERR_SEQUENCE`` and not run.
Every response carries ``next``, so any response tells the host exactly which of its requests
have run (cumulative acknowledgement): the host keeps at most :data:`MAX_IN_FLIGHT` frames and
at most ``rx_depth`` bytes unanswered, and after a refusal or a timeout sends again every frame
from ``next`` on (go-back-N).

Outputs are pulled, never pushed: the bridge writes each timestep's outputs into one of
``2**out_slots_log2`` slots and the core stalls rather than overwrite a slot the host has not
released with an OUTPUT request. The host sends an input timestep only when it knows a slot is free
for its output (flow control), so the core never blocks the request path; a lost or duplicated
OUTPUT answer is simply asked for again.

Device reset: the device powers up *fresh*. While fresh it refuses everything except INFO with
``ERR_RESET``; only ``CMD_INFO`` with ``INFO_CLEAR_FRESH`` (sent by ``connect``) clears the flag. So
a reset at any moment after ``connect`` makes every later request fail with a clear error until the
host connects again (and reloads what the reset lost); it can never be answered silently.

Responses (device to host): ``code | seq | status | next | body``, ``code = 0x80 | command`` or
``RSP_ERR`` (body: one :class:`ErrorCode` byte; ``seq`` echoes the frame's second byte).
``status``: ``STATUS_FRESH`` (the device is fresh), ``STATUS_DUPLICATE`` (a repeat, not run again).
Bodies: INFO: :data:`INFO_FIELDS`; READ: ``count`` little-endian words; WRITE/INPUT: nothing;
OUTPUT: ``pos (u16), steps (u8)`` then ``steps * step_bytes`` bytes (each timestep's ``W`` outputs
padded to whole beats of ``A`` elements, ``elem_bytes`` each, sign-extended, little endian).
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC",
    "CMD_INFO", "CMD_READ", "CMD_WRITE", "CMD_INPUT", "CMD_OUTPUT", "SEQUENCED",
    "RSP_INFO", "RSP_READ", "RSP_WRITE", "RSP_INPUT", "RSP_OUTPUT", "RSP_ERR", "RSP_FLAG",
    "STATUS_FRESH", "STATUS_DUPLICATE", "INPUT_FIRST", "INFO_CLEAR_FRESH", "PROTOCOL_VERSION",
    "INFO_FIELDS", "INFO_WORDS", "INFO_BYTES", "info_body", "ErrorCode", "CRC_PARAMS",
    "CRC_BYTES", "HEADER_BYTES",
    "RSP_HEADER_BYTES", "FRAME_OVERHEAD", "MIN_FRAME", "SEQ_MOD", "SEQ_WINDOW", "POS_MOD",
    "MAX_IN_FLIGHT", "DESC_DEPTH", "MAX_READ", "crc", "slip_encode", "SlipDecoder",
    "encode_frame", "decode_frame", "Response", "decode_response", "seq_diff", "elem_bytes",
    "step_bytes", "out_slots_log2", "slot_bytes_log2", "out_buffer_bytes", "info_payload",
    "parse_info", "write_payload",
    "read_payload", "output_payload", "input_payload", "input_steps",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

CMD_INFO, CMD_READ, CMD_WRITE, CMD_INPUT, CMD_OUTPUT = 0x00, 0x01, 0x02, 0x03, 0x04
#: Commands that run exactly once, in sequence-number order.
SEQUENCED = (CMD_WRITE, CMD_INPUT)
RSP_FLAG = 0x80
RSP_INFO, RSP_READ, RSP_WRITE, RSP_INPUT, RSP_OUTPUT = (RSP_FLAG | c for c in range(5))
RSP_ERR = 0xE0
STATUS_FRESH, STATUS_DUPLICATE = 0x01, 0x02
INPUT_FIRST = 0x01
INFO_CLEAR_FRESH = 0x01
#: Version of this byte protocol (reported by INFO; the register map has its own version).
PROTOCOL_VERSION = 2
#: The INFO body: one byte each, then ``step_bytes``, ``fed`` and ``head`` as u16
#: (see :func:`parse_info`).
INFO_FIELDS = ("protocol_version", "rx_depth_log2", "elem_bytes", "enc_width", "act_width",
               "out_slots_log2")
INFO_WORDS = ("step_bytes", "fed", "head")
INFO_BYTES = len(INFO_FIELDS) + 2 * len(INFO_WORDS)


class ErrorCode(enum.IntEnum):
    CRC = 1  #: the frame's CRC did not match
    OVERFLOW = 2  #: the frame did not fit in the receive buffer (or too many frames queued)
    SHORT = 3  #: fewer than MIN_FRAME bytes between two END bytes
    ESCAPE = 4  #: ESC followed by a byte other than ESC_END / ESC_ESC
    COMMAND = 5  #: unknown command code
    LENGTH = 6  #: payload length not valid for the command
    SEQUENCE = 7  #: a sequenced frame ahead of ``next``: an earlier frame was lost, not run
    RESET = 8  #: the device is fresh (reset since the last connect): not run
    POSITION = 9  #: an OUTPUT request's ``pos`` is not between the released and the newest output


#: The frame check: CRC-32/ISO-HDLC in the parameter names of ``amaranth.lib.crc.Algorithm`` (the
#: gateware builds its CRC from exactly this dict), appended little endian.
CRC_PARAMS = dict(crc_width=32, polynomial=0x04C11DB7, initial_crc=0xFFFFFFFF,
                  reflect_input=True, reflect_output=True, xor_output=0xFFFFFFFF)
CRC_BYTES = CRC_PARAMS["crc_width"] // 8
#: code + seq
HEADER_BYTES = 2
#: code + seq + status + next
RSP_HEADER_BYTES = 4
#: Bytes a request frame occupies in the device's receive buffer besides its payload.
FRAME_OVERHEAD = HEADER_BYTES + CRC_BYTES
MIN_FRAME = HEADER_BYTES + CRC_BYTES
SEQ_MOD = 256
#: A sequenced frame at most this far behind ``next`` is a duplicate; ahead of it, a gap.
SEQ_WINDOW = 128
#: Output positions (timestep numbers) are sent modulo this.
POS_MOD = 1 << 16
#: Most request frames the host leaves unanswered; the bridge queues DESC_DEPTH frame descriptors.
MAX_IN_FLIGHT = 12
DESC_DEPTH = 16
MAX_READ = 255


def _reflect(value: int, width: int) -> int:
    return int(f"{value:0{width}b}"[::-1], 2)


def _crc_table(p) -> list[int]:
    w, poly = p["crc_width"], p["polynomial"]
    top, mask = 1 << (w - 1), (1 << w) - 1
    table = []
    for byte in range(256):
        reg = byte << (w - 8)
        for _ in range(8):
            reg = ((reg << 1) ^ poly) & mask if reg & top else (reg << 1) & mask
        table.append(reg)
    return table


_TABLE = _crc_table(CRC_PARAMS)
_ZLIB = dict(crc_width=32, polynomial=0x04C11DB7, initial_crc=0xFFFFFFFF, reflect_input=True,
             reflect_output=True, xor_output=0xFFFFFFFF)


def crc(data: bytes, *, generic: bool = False) -> int:
    """The frame CRC of ``data`` (:data:`CRC_PARAMS`). ``generic`` forces the table implementation
    that follows the parameters (otherwise zlib's C code is used when the parameters are its)."""
    p = CRC_PARAMS
    if p == _ZLIB and not generic:
        return zlib.crc32(bytes(data))
    w = p["crc_width"]
    mask = (1 << w) - 1
    reg = p["initial_crc"]
    for b in bytes(data):
        if p["reflect_input"]:
            b = _reflect(b, 8)
        reg = ((reg << 8) & mask) ^ _TABLE[((reg >> (w - 8)) ^ b) & 0xFF]
    if p["reflect_output"]:
        reg = _reflect(reg, w)
    return reg ^ p["xor_output"]


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
    return slip_encode(body + crc(body).to_bytes(CRC_BYTES, "little"))


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
    if len(raw) < MIN_FRAME:
        raise ValueError(f"A frame needs at least {MIN_FRAME} bytes (code, seq, CRC); got "
                         f"{len(raw)}.")
    if crc(raw[:-CRC_BYTES]) != int.from_bytes(raw[-CRC_BYTES:], "little"):
        raise ValueError(f"Frame CRC mismatch (frame {raw[:8].hex()}..., {len(raw)} bytes).")
    return raw[0], raw[1], raw[2:-CRC_BYTES]


@dataclass(frozen=True)
class Response:
    """A decoded device response."""

    code: int
    seq: int
    status: int
    next: int
    body: bytes

    @property
    def error(self) -> int:
        return self.body[0] if self.code == RSP_ERR and self.body else 0


def decode_response(raw: bytes) -> Response:
    """CRC-check and split a response frame; raises ValueError if damaged or too short."""
    code, seq, payload = decode_frame(raw)
    if len(payload) < RSP_HEADER_BYTES - HEADER_BYTES:
        raise ValueError(f"A response needs status and next bytes; got {len(payload)} bytes.")
    return Response(code, seq, payload[0], payload[1], bytes(payload[2:]))


def seq_diff(a: int, b: int) -> int:
    """``a - b`` modulo :data:`SEQ_MOD`, in 0..255."""
    return (a - b) % SEQ_MOD


def elem_bytes(config) -> int:
    """Bytes per act-format element on the wire (1, 2 or 4; 24-bit formats use 4)."""
    bits = config.act.bits
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def step_bytes(width: int, act_width: int, elem_bytes_: int) -> int:
    """Bytes of one timestep's outputs: ``width`` values in whole beats of ``act_width``."""
    beats = -(-width // act_width)
    return beats * act_width * elem_bytes_


def out_slots_log2(step_bytes_: int, budget: int = 2048) -> int:
    """log2 of the output slots the bridge keeps: as many as fit ``budget`` bytes, at least 2."""
    slot = 1 << slot_bytes_log2(step_bytes_)
    n = max(2, budget // slot)
    return n.bit_length() - 1


def slot_bytes_log2(step_bytes_: int) -> int:
    """log2 of one output slot's size: the step's bytes rounded up to a power of two."""
    return max(0, (step_bytes_ - 1).bit_length())


def out_buffer_bytes(step_bytes_: int) -> int:
    """Bytes of the bridge's output slot memory."""
    return 1 << (out_slots_log2(step_bytes_) + slot_bytes_log2(step_bytes_))


def info_payload(flags: int = 0) -> bytes:
    return bytes([flags])


def parse_info(body: bytes) -> dict:
    """INFO body to a dict: :data:`INFO_FIELDS`, then ``step_bytes`` (bytes of one timestep's
    outputs), ``fed`` (input timesteps the bridge has passed to the core, mod 2**16) and ``head``
    (output timesteps written to the slots, mod 2**16)."""
    if len(body) != INFO_BYTES:
        raise ValueError(f"An INFO body has {INFO_BYTES} bytes; got {len(body)}.")
    info = dict(zip(INFO_FIELDS, body))
    n = len(INFO_FIELDS)
    for i, name in enumerate(INFO_WORDS):
        info[name] = int.from_bytes(body[n + 2 * i:n + 2 * i + 2], "little")
    return info


def info_body(fields: dict) -> bytes:
    """The INFO body for a dict as :func:`parse_info` returns it (the reference device's side)."""
    return bytes(fields[k] for k in INFO_FIELDS) + b"".join(
        (fields[k] % POS_MOD).to_bytes(2, "little") for k in INFO_WORDS)


def write_payload(addr: int, values) -> bytes:
    return bytes([addr & 0xFF]) + b"".join((int(v) & 0xFFFFFFFF).to_bytes(4, "little")
                                           for v in values)


def read_payload(addr: int, count: int) -> bytes:
    return bytes([addr & 0xFF, count])


def output_payload(pos: int, max_steps: int) -> bytes:
    return (pos % POS_MOD).to_bytes(2, "little") + bytes([max_steps])


def input_payload(first: bool, data: bytes) -> bytes:
    return bytes([INPUT_FIRST if first else 0]) + bytes(data)


def input_steps(start_elem: int, n_elems: int, input_size: int) -> int:
    """Timesteps an INPUT frame completes when it carries elements ``start .. start+n`` of a
    sequence."""
    return (start_elem + n_elems) // input_size - start_elem // input_size
