"""Simulated links for the host driver: a Python reference device, a fault injector, a clock.

* :class:`RefDevice` implements the device side of :mod:`deltahw.link` byte for byte as the RTL
  bridge does (sequence rule, duplicates, fresh flag, output slots) in front of a model of the core
  (its parameter and threshold registers and the bit-exact golden model), so the driver's framing,
  windowing, recovery, flow control and weight packing can be checked without RTL.
* :class:`FaultyLine` sits between the driver and any device transport (this reference device or
  the RTL bridge in simulation, :mod:`deltahw.link_faults`) and loses, damages, duplicates or
  truncates whole frames, inserts garbage, or resets the device, in either direction, following a
  :class:`Schedule`.

Both offer ``monotonic()``: the driver then measures its timeouts in simulated time, so a fault
campaign is deterministic, fast, and bounded (:class:`Hang` is raised past ``deadline``).
"""

from __future__ import annotations

import collections
import random
from dataclasses import dataclass, field

import numpy as np

from . import link, regmap

__all__ = ["RefDevice", "FaultyLine", "Schedule", "Hang", "FAULT_KINDS"]

#: Fault kinds a schedule can apply to a frame.
FAULT_KINDS = ("drop", "damage", "dup", "truncate", "garbage", "reset")


#: Golden-model outputs by (parameters, thresholds, inputs so far): a campaign repeats sessions.
_GOLDEN_CACHE: dict = {}


class Hang(Exception):
    """The simulated time passed the deadline: the driver did not finish or fail in time."""


class RefDevice:
    """Python reference of the bridge and core behind a byte transport.

    Power-on weights are zeros; ``writes`` logs every register write the device executed
    (address, value), across resets, which a test compares with what the driver meant to
    write. ``read_wait`` is the simulated time a ``read`` without data waits.
    """

    def __init__(self, config, *, rx_depth=256, ident=regmap.ID_MAGIC, read_wait=0.001,
                 byte_time=1e-5, deadline=None):
        from .layout import Layout

        self.cfg = config
        self.r = regmap.by_name(config.num_layers)
        self.lay = Layout(config)
        self.rx_depth = rx_depth
        self.ident = ident
        self.eb = link.elem_bytes(config)
        width = config.output_size if config.output_size else config.hidden_size
        self.step_bytes = link.step_bytes(width, config.act_width, self.eb)
        self.slots = 1 << link.out_slots_log2(self.step_bytes)
        self.now = 0.0
        self.read_wait = read_wait
        self.byte_time = byte_time  # line time per byte (1 Mbaud): traffic takes time too
        self.deadline = deadline
        self.silent = False
        self.out = bytearray()
        self.flow_violations = 0
        self.resets = 0
        self.writes = []  # kept across resets: the log of every write ever executed
        self.reset()

    def reset(self):
        cfg = self.cfg
        self.dec = link.SlipDecoder()
        self.fresh = True
        self.nxt = 0
        self.w = np.zeros((self.lay.weight_depth, cfg.lanes), np.int64)
        self.b = np.zeros((self.lay.acc_depth, cfg.lanes), np.int64)
        self.regs = collections.defaultdict(int)
        self.elems = []
        self.seq_inputs = []
        self.fed = 0
        self.slot_data = {}  # step -> bytes, for head - slots <= step < head
        self.head = self.tail = 0
        self.backlog = collections.deque()  # outputs the core holds while every slot is full

    def reset_device(self):
        self.resets += 1
        self.reset()

    # ---- transport interface ----
    def monotonic(self) -> float:
        return self.now

    @property
    def in_waiting(self):
        return len(self.out)

    def read(self, n):
        if not self.out:
            self.now += self.read_wait
        data, self.out = bytes(self.out[:n]), self.out[n:]
        self.now += len(data) * self.byte_time
        if self.deadline is not None and self.now > self.deadline:
            raise Hang(f"simulated time passed {self.deadline} s")
        return data

    def write(self, data):
        self.now += len(data) * self.byte_time
        if self.silent:
            return
        for raw, ok in self.dec.feed(data):
            self.frame(raw, ok)

    # ---- the bridge ----
    def respond(self, code, seq, status, body=b""):
        self.out += link.encode_frame(code, seq, bytes([status, self.nxt]) + bytes(body))

    def frame(self, raw, ok):
        st = link.STATUS_FRESH if self.fresh else 0
        if not ok:
            return self.respond(link.RSP_ERR, 0, st, [link.ErrorCode.ESCAPE])
        if len(raw) < link.MIN_FRAME:
            return self.respond(link.RSP_ERR, raw[1] if len(raw) > 1 else 0, st,
                                [link.ErrorCode.SHORT])
        try:
            cmd, seq, payload = link.decode_frame(raw)
        except ValueError:
            return self.respond(link.RSP_ERR, raw[1], st, [link.ErrorCode.CRC])
        if len(raw) > self.rx_depth:
            return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.OVERFLOW])
        n = len(payload)
        length_ok = {link.CMD_INFO: n == 1, link.CMD_READ: n == 2,
                     link.CMD_WRITE: n >= 5 and (n - 1) % 4 == 0,
                     link.CMD_INPUT: n >= 1 + self.eb and (n - 1) % self.eb == 0,
                     link.CMD_OUTPUT: n == 3}
        if cmd not in length_ok:
            return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.COMMAND])
        if not length_ok[cmd]:
            return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.LENGTH])
        if cmd == link.CMD_INFO:
            self.nxt = (seq + 1) % link.SEQ_MOD
            if payload[0] & link.INFO_CLEAR_FRESH:
                self.fresh = False
            return self.respond(link.RSP_INFO, seq, st, link.info_body(dict(
                protocol_version=link.PROTOCOL_VERSION,
                rx_depth_log2=self.rx_depth.bit_length() - 1, elem_bytes=self.eb,
                enc_width=self.cfg.enc_width, act_width=self.cfg.act_width,
                out_slots_log2=self.slots.bit_length() - 1, step_bytes=self.step_bytes,
                fed=self.fed, head=self.head)))
        if self.fresh:
            return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.RESET])
        if cmd == link.CMD_READ:
            addr, count = payload
            if count == 0:
                return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.LENGTH])
            return self.respond(link.RSP_READ, seq, st, b"".join(
                self.reg_read((addr + i) & 0xFF).to_bytes(4, "little") for i in range(count)))
        if cmd == link.CMD_OUTPUT:
            pos = int.from_bytes(payload[:2], "little")
            if (pos - self.tail) % link.POS_MOD > (self.head - self.tail) % link.POS_MOD:
                return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.POSITION])
            pos_abs = self.tail + (pos - self.tail) % link.POS_MOD
            for s in range(self.tail, pos_abs):
                self.slot_data.pop(s, None)
            self.tail = pos_abs
            self._drain_backlog()
            steps = min(payload[2], self.head - pos_abs)
            return self.respond(link.RSP_OUTPUT, seq, st, payload[:2] + bytes([steps]) + b"".join(
                self.slot_data[pos_abs + j] for j in range(steps)))
        diff = link.seq_diff(seq, self.nxt)
        code = cmd | link.RSP_FLAG
        if diff >= link.SEQ_WINDOW:
            return self.respond(code, seq, st | link.STATUS_DUPLICATE)
        if diff != 0:
            return self.respond(link.RSP_ERR, seq, st, [link.ErrorCode.SEQUENCE])
        self.nxt = (self.nxt + 1) % link.SEQ_MOD
        if cmd == link.CMD_WRITE:
            addr = payload[0]
            for i in range(1, n, 4):
                self.reg_write(addr, int.from_bytes(payload[i:i + 4], "little"))
        else:
            if payload[0] & link.INPUT_FIRST:
                self.seq_inputs, self.elems = [], []
            dtype = {1: "i1", 2: "<i2", 4: "<i4"}[self.eb]
            self.elems += np.frombuffer(payload[1:], dtype).tolist()
            I = self.cfg.input_size
            while len(self.elems) >= I:
                self.seq_inputs.append(self.elems[:I])
                self.elems = self.elems[I:]
                self.fed += 1
                self.emit_output()
        return self.respond(code, seq, st)

    def _drain_backlog(self):
        while self.backlog and self.head - self.tail < self.slots:
            self.slot_data[self.head] = self.backlog.popleft()
            self.head += 1

    # ---- the core ----
    def reg_read(self, addr):
        cfg = self.cfg
        r = self.r
        if addr == r["ID"].addr:
            return self.ident
        if addr == r["VERSION"].addr:
            return regmap.VERSION
        if addr == r["SHAPE0"].addr:
            return cfg.input_size | cfg.hidden_size << 16
        if addr == r["SHAPE1"].addr:
            return (cfg.num_layers | cfg.output_size << 4 | cfg.lanes << 16
                    | (cfg.act_width.bit_length() - 1) << 27)
        return self.regs[addr]

    def reg_write(self, addr, value):
        self.writes.append((addr, value))
        r = self.r
        if addr == r["PARAM_DATA"].addr:
            sel, a = self.regs[r["PARAM_SEL"].addr], self.regs[r["PARAM_ADDR"].addr]
            kind, lane = sel & 1, sel >> 8
            bits = self.cfg.weight.bits if kind == 0 else self.cfg.bias.bits
            v = value & ((1 << bits) - 1)
            v = v - (1 << bits) if v >> (bits - 1) else v
            table = self.w if kind == 0 else self.b
            if a < table.shape[0] and lane < table.shape[1]:
                table[a, lane] = v
            self.regs[r["PARAM_ADDR"].addr] = a + 1
        elif addr == r["CTRL"].addr:
            if value & 1:
                self.regs[r["TIMESTEPS"].addr] = 0
        else:
            self.regs[addr] = value

    def model(self):
        import torch

        from .model import LayerParams, QuantizedModel

        cfg = self.cfg
        r = self.r
        th = dict(theta_x=tuple(self.regs[r[f"THETA_X{l}"].addr] for l in range(cfg.num_layers)),
                  theta_h=tuple(self.regs[r[f"THETA_H{l}"].addr] for l in range(cfg.num_layers)),
                  theta_head=self.regs[r["THETA_HEAD"].addr])
        z = torch.zeros(0, dtype=torch.int64)
        shell = QuantizedModel(cfg.with_thresholds(**th),
                               [LayerParams(z, z, z, z, z, z) for _ in range(cfg.num_layers)])
        self.lay.unpack_weights(torch.from_numpy(self.w), shell)
        self.lay.unpack_biases(torch.from_numpy(self.b), shell)
        return shell

    def emit_output(self):
        import torch

        from .golden import run_golden

        cfg = self.cfg
        r = self.r
        th = tuple(self.regs[r[f"{n}{l}"].addr] for n in ("THETA_X", "THETA_H")
                   for l in range(cfg.num_layers)) + (self.regs[r["THETA_HEAD"].addr],)
        key = (self.w.tobytes(), self.b.tobytes(), th,
               tuple(tuple(v) for v in self.seq_inputs))
        y = _GOLDEN_CACHE.get(key)
        if y is None:
            x = torch.tensor(self.seq_inputs, dtype=torch.int64)
            y = run_golden(self.model(), x).outputs[0, -1].tolist()
            if len(_GOLDEN_CACHE) > 4096:
                _GOLDEN_CACHE.clear()
            _GOLDEN_CACHE[key] = y
        y = list(y)
        y += [0] * (-len(y) % self.cfg.act_width)
        r = self.r
        self.regs[r["TIMESTEPS"].addr] += 1
        data = np.array(y, {1: "i1", 2: "<i2", 4: "<i4"}[self.eb]).tobytes()
        if self.head - self.tail >= self.slots:
            self.flow_violations += 1  # the RTL core would stall here until a slot is freed
        self.backlog.append(data)
        self._drain_backlog()


@dataclass
class Schedule:
    """Which frames get which fault. ``faults`` maps ``(direction, index)`` to a kind of
    :data:`FAULT_KINDS` (direction ``"down"``: host to device, ``"up"``: device to host; index
    counts that direction's frames from 0); ``rate`` adds random faults to every other frame
    with that probability. ``limit`` stops injecting after that many faults (then the line is
    clean)."""

    faults: dict = field(default_factory=dict)
    rate: float = 0.0
    kinds: tuple = FAULT_KINDS
    seed: int = 0
    limit: int | None = None

    def describe(self) -> str:
        parts = [f"{d}[{i}]={k}" for (d, i), k in sorted(self.faults.items())]
        if self.rate:
            parts.append(f"random {self.rate:g} of {'/'.join(self.kinds)} seed {self.seed}")
        return ", ".join(parts) or "clean"


class FaultyLine:
    """A transport wrapper that injects a :class:`Schedule`'s faults, frame by frame, both ways.

    ``inner`` is a transport with ``write``, ``read``, ``in_waiting``, ``monotonic`` and
    ``reset_device()``. ``enabled`` switches the injection off (a clean line) at any time.
    """

    def __init__(self, inner, schedule: Schedule):
        self.inner = inner
        self.schedule = schedule
        self.rng = random.Random(schedule.seed)
        self.count = {"down": 0, "up": 0}
        self.partial = {"down": bytearray(), "up": bytearray()}
        self.buf = bytearray()
        self.enabled = True
        self.injected = collections.Counter()

    def _fault(self, direction):
        i = self.count[direction]
        self.count[direction] += 1
        if not self.enabled:
            return None
        s = self.schedule
        if s.limit is not None and sum(self.injected.values()) >= s.limit:
            return None
        kind = s.faults.get((direction, i))
        if kind is None and s.rate and self.rng.random() < s.rate:
            kind = self.rng.choice(s.kinds)
        if kind is not None:
            self.injected[f"{direction}:{kind}"] += 1
        return kind

    def _transform(self, direction, data: bytes) -> bytes:
        """Split ``data`` at END into frames and apply the faults; partial frames wait."""
        buf = self.partial[direction]
        out = bytearray()
        for b in data:
            if b != link.END:
                buf.append(b)
                continue
            if not buf:
                continue
            body = bytes(buf)
            buf.clear()
            kind = self._fault(direction)
            frame = bytes([link.END]) + body + bytes([link.END])
            if kind is None:
                out += frame
            elif kind == "drop":
                pass
            elif kind == "damage":
                b2 = bytearray(body)
                for _ in range(self.rng.randint(1, 3)):
                    b2[self.rng.randrange(len(b2))] ^= 1 << self.rng.randrange(8)
                out += bytes([link.END]) + bytes(b2) + bytes([link.END])
            elif kind == "dup":
                out += frame + frame
            elif kind == "truncate":
                out += bytes([link.END]) + body[:self.rng.randrange(len(body))]
            elif kind == "garbage":
                out += bytes(self.rng.choice([link.END, link.ESC, self.rng.randrange(256)])
                             for _ in range(self.rng.randint(1, 24)))
                out += frame
            elif kind == "reset":
                if direction == "down":
                    self._flush_down(out)
                    out.clear()
                    self.inner.reset_device()
                    out += frame
                else:
                    out += frame
                    self.inner.reset_device()
        return bytes(out)

    def _flush_down(self, out):
        if out:
            self.inner.write(bytes(out))

    # ---- transport interface ----
    def monotonic(self) -> float:
        return self.inner.monotonic()

    def write(self, data):
        out = self._transform("down", data)
        if out:
            self.inner.write(out)

    def _pull(self):
        n = self.inner.in_waiting
        if n:
            self.buf += self._transform("up", self.inner.read(n))

    @property
    def in_waiting(self):
        self._pull()
        return len(self.buf)

    def read(self, n):
        self._pull()
        if not self.buf:
            data = self.inner.read(max(1, n))  # waits (simulated time passes)
            self.buf += self._transform("up", data)
        data, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return data

    def reset_device(self):
        self.inner.reset_device()
