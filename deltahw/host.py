"""Host driver for a deltahw board over its UART (pyserial), speaking the bridge's framed protocol.

    from deltahw.host import Device
    with Device.open("/dev/ttyUSB1") as dev:          # checks ID, VERSION and the network shape
        dev.load_model("models/fsdd/export")           # weights, biases, thresholds at run time
        res = dev.run(x_q)                             # (T, I) int inputs in the act format
        res.outputs, res.counters                      # (T, W) int outputs, performance counters

Protocol: :mod:`deltahw.link` (SLIP frames with CRC-32; register writes and inputs run exactly
once in sequence order, every answer says which have run; reads and output requests are
idempotent; outputs wait in the device until the driver releases them). The driver keeps several
frames in flight (never more unanswered bytes than the device's receive buffer, never more input
timesteps than the device has output slots for), so a sequence streams at the line rate. It
recovers from any pattern of lost, damaged, duplicated or truncated frames and garbage on the line,
in both directions, by resending from the first request the device has not run; if the link does
not recover it raises a :class:`DeviceError` within ``(retries + 1) * timeout`` seconds without
progress. A device reset after ``connect()`` is always reported (:class:`DeviceResetError`) until
``connect()`` is called again. After any other error the next call resynchronises by itself. The
driver does not import Amaranth.

``python -m deltahw.host --port PORT info | load MODEL | run MODEL --input x.npy [--labels y.npy]``
is the command line front end (``load`` and ``run`` take the model options of the other commands:
``--theta-x/--theta-h/--theta-head`` in real units, which ``run`` without ``--load`` writes to the
device alone, ``--config``, ``--allow-clipping``, ``--trust-pickle``); with ``--labels`` it
reports the model's task metric on the device's outputs (accuracy at the last timestep,
per-timestep accuracy, or RMSE / MAE in the data's units:
:class:`deltahw.train.evaluate.TaskTally`, the implementation training and the bench use).
"""

import argparse
import collections
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import link as proto
from . import regmap
from .config import DeltaGRUConfig
from .errors import DeltahwError
from .layout import Layout

__all__ = ["Device", "RunResult", "DeviceError", "NoDeviceError", "WrongBitstreamError",
           "ChecksumError", "DeviceResetError", "DeviceTimeoutError", "ProtocolError",
           "LinkLostError", "DEFAULT_BAUD", "main"]

DEFAULT_BAUD = 1_000_000


class DeviceError(DeltahwError, RuntimeError):
    """Base class of every error the driver raises."""


class NoDeviceError(DeviceError):
    """The port cannot be opened or nothing answers on it."""


class WrongBitstreamError(DeviceError):
    """The device answers but is not a deltahw accelerator of the expected version or shape."""


class ChecksumError(DeviceError):
    """Frames keep arriving damaged (CRC or escape errors) after the retries."""


class DeviceResetError(DeviceError):
    """The device was reset during the session (its state, thresholds and weights may be lost)."""


class DeviceTimeoutError(DeviceError):
    """The device stopped answering."""


class ProtocolError(DeviceError):
    """The device refused a request as malformed (a driver/bitstream mismatch)."""


class LinkLostError(NoDeviceError):
    """The serial port failed while in use (adapter unplugged, port closed)."""


@dataclass
class RunResult:
    """Outputs of one sequence: ``outputs`` (T, W) int64 in the act format and the counters."""

    outputs: np.ndarray
    counters: dict = field(default_factory=dict)
    seconds: float = 0.0


class Device:
    """A connection to one accelerator. ``transport`` is an open pyserial ``Serial`` (or any object
    with ``write(bytes)``, ``read(n)`` that waits at most its timeout, and ``in_waiting``; it may
    also offer ``monotonic()``, the clock the driver's timeouts use, e.g. a simulation's time).

    ``timeout`` is how long the driver waits without progress before it resends, and ``retries``
    how often it resends before giving up; ``quiet_time`` is the silence ``connect`` waits for
    (at most ``timeout``) before it starts.
    """

    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 3, name: str = "device",
                 quiet_time: float = 0.05):
        self.t = transport
        self.timeout = timeout
        self.retries = retries
        self.name = name
        self.quiet_time = quiet_time
        self._clock = getattr(transport, "monotonic", None) or time.monotonic
        self._rng = random.Random()
        self.info = None
        self.shape = None
        self.regs = regmap.by_name(1)
        self.stats = collections.Counter()
        self._reset_link()
        self._state = "new"  # new | ok | resync | reset

    def _reset_link(self):
        self._seq = 0  # seq of the next WRITE/INPUT (the device's `next`)
        self._tag = self._rng.randrange(proto.SEQ_MOD)  # seq of the next READ/OUTPUT/INFO
        self._decoder = proto.SlipDecoder()
        self._fed = 0  # input timesteps sent to the device (absolute count)
        self._got = 0  # output timesteps received
        self._released = 0  # output timesteps the device is known to have released

    # ---- opening ----
    @classmethod
    def open(cls, port: str, *, baud: int = DEFAULT_BAUD, timeout: float = 1.0, **kw) -> "Device":
        try:
            import serial
        except ImportError:
            raise NoDeviceError("pyserial is not installed: pip install pyserial.") from None
        try:
            ser = serial.Serial(port, baudrate=baud, timeout=min(timeout, 0.1))
        except (serial.SerialException, OSError, ValueError) as e:
            raise NoDeviceError(f"Cannot open serial port {port} at {baud} baud: {e}") from None
        dev = cls(ser, timeout=timeout, name=port, **kw)
        try:
            dev.connect()
        except BaseException:
            ser.close()
            raise
        return dev

    def close(self):
        close = getattr(self.t, "close", None)
        if close:
            try:
                close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self) -> dict:
        """(Re)start the session: resynchronise the link, clear the device's reset flag, flush
        outputs left by an interrupted run, read INFO and the ID/VERSION/SHAPE registers and check
        them. Call it again after a :class:`DeviceResetError` (then reload the model)."""
        self._reset_link()
        self._state = "new"
        self._flush_input()
        try:
            _, info = self._sync(clear_fresh=True)
        except DeviceTimeoutError:
            raise NoDeviceError(
                f"Nothing answers on {self.name}: check that the board is connected, that the "
                f"deltahw bitstream is loaded and that the baud rate matches the build "
                f"(report.json 'baud')."
            ) from None
        self.info = info
        self._state = "ok"
        try:
            ident, version, shape0, shape1 = self.read_block(self.regs["ID"].addr, 4)
        except BaseException:
            self._state = "new"
            raise
        if ident != regmap.ID_MAGIC:
            raise WrongBitstreamError(
                f"{self.name} answers but its ID register reads 0x{ident:08X}, not "
                f"0x{regmap.ID_MAGIC:08X} ('DHW1'): it is not a deltahw accelerator.")
        if version != regmap.VERSION:
            raise WrongBitstreamError(
                f"{self.name} has register map version {version}; this driver needs version "
                f"{regmap.VERSION}: rebuild the bitstream or update deltahw.")
        try:
            s0, s1 = self.regs["SHAPE0"].unpack(shape0), self.regs["SHAPE1"].unpack(shape1)
        except regmap.RegmapError as e:
            raise WrongBitstreamError(f"{self.name} answers with a malformed shape: {e}") from None
        self.shape = {
            "input_size": s0["input_size"],
            "hidden_size": s0["hidden_size"],
            "num_layers": s1["num_layers"],
            "output_size": s1["output_size"],
            "lanes": s1["lanes"],
            "act_width": 1 << s1["act_width_log2"],
            "enc_width": info["enc_width"],
            "elem_bytes": info["elem_bytes"],
        }
        if self.shape["act_width"] != info["act_width"]:
            raise WrongBitstreamError(
                f"{self.name} reports act_width {info['act_width']} in INFO and "
                f"{self.shape['act_width']} in SHAPE1: the bitstream is inconsistent.")
        if info["step_bytes"] != proto.step_bytes(self.width, self.shape["act_width"],
                                                  self.shape["elem_bytes"]):
            raise WrongBitstreamError(
                f"{self.name} sends {info['step_bytes']} output bytes per timestep, which does not "
                f"match its shape {self.shape}: the bitstream and the driver disagree.")
        self.regs = regmap.by_name(self.shape["num_layers"])
        return self.shape

    # ---- registers ----
    def _addr(self, reg) -> int:
        if isinstance(reg, str):
            if reg not in self.regs:
                raise KeyError(f"Unknown register {reg!r}; known: {sorted(self.regs)}.")
            return self.regs[reg].addr
        return int(reg)

    def read(self, reg) -> int:
        return self.read_block(self._addr(reg), 1)[0]

    def read_block(self, addr: int, count: int) -> list[int]:
        if not 1 <= count <= proto.MAX_READ:
            raise ValueError(f"A register read covers 1 to {proto.MAX_READ} registers; got "
                             f"{count}.")
        self._ensure()
        body = self._call(proto.CMD_READ, proto.read_payload(addr, count),
                          lambda r: r.body if len(r.body) == 4 * count else None)
        return [int.from_bytes(body[4 * i:4 * i + 4], "little") for i in range(count)]

    def write(self, reg, *values: int) -> None:
        self.write_many([(reg, list(values))])

    def write_many(self, writes) -> None:
        """Pipelined register writes: ``[(reg, [value, ...]), ...]`` (bursts go to one address)."""
        reqs = []
        limit = max(1, (self.rx_depth // 2 - proto.FRAME_OVERHEAD - 1) // 4)
        for reg, values in writes:
            addr = self._addr(reg)
            values = [regmap.to_word(v) for v in values]
            for i in range(0, len(values), limit):
                reqs.append((proto.CMD_WRITE, proto.write_payload(addr, values[i:i + limit]), 0))
        self._stream(reqs)

    @property
    def rx_depth(self) -> int:
        return 1 << self.info["rx_depth_log2"] if self.info else 64

    @property
    def out_slots(self) -> int:
        return 1 << self.info["out_slots_log2"] if self.info else 2

    # ---- model, thresholds, counters ----
    def check_config(self, config: DeltaGRUConfig) -> None:
        want = {"input_size": config.input_size, "hidden_size": config.hidden_size,
                "num_layers": config.num_layers, "output_size": config.output_size,
                "lanes": config.lanes, "act_width": config.act_width,
                "enc_width": config.enc_width, "elem_bytes": proto.elem_bytes(config)}
        bad = {k: (v, self.shape[k]) for k, v in want.items() if self.shape[k] != v}
        if bad:
            diff = ", ".join(f"{k}: model {a}, device {b}" for k, (a, b) in bad.items())
            raise WrongBitstreamError(
                f"The bitstream on {self.name} was built for another network shape ({diff}); "
                "rebuild it for this model or load a model of the device's shape.")

    def load_model(self, model, thresholds=True) -> None:
        """Write every weight and bias of ``model`` (a QuantizedModel or a path) to the device."""
        if not hasattr(model, "config"):
            from .model import load_model

            model = load_model(model)
        cfg = model.config
        self.check_config(cfg)
        lay = Layout(cfg)
        weights = lay.lane_weights(model).numpy()
        biases = lay.lane_biases(model).numpy()
        sel = self.regs["PARAM_SEL"]
        writes = []
        for kind, table in ((regmap.PARAM_KIND_WEIGHT, weights), (regmap.PARAM_KIND_BIAS, biases)):
            for lane in range(cfg.lanes):
                writes.append(("PARAM_SEL", [sel.pack(kind=kind, lane=lane)]))
                writes.append(("PARAM_ADDR", [0]))
                writes.append(("PARAM_DATA", table[:, lane].tolist()))
        self.write_many(writes)
        if thresholds:
            self.set_thresholds(cfg.theta_x, cfg.theta_h, cfg.theta_head)

    def set_thresholds(self, theta_x=None, theta_h=None, theta_head=None) -> None:
        """Thresholds in LSBs of the act format (one per layer, or one for all layers)."""
        L = self.shape["num_layers"]
        writes = []
        for name, vals in (("THETA_X", theta_x), ("THETA_H", theta_h)):
            if vals is None:
                continue
            vals = [int(vals)] * L if np.isscalar(vals) else [int(v) for v in vals]
            if len(vals) != L:
                raise ValueError(f"{name.lower()} needs {L} values (one per layer); got {vals}.")
            writes += [(f"{name}{l}", [v]) for l, v in enumerate(vals)]
        if theta_head is not None:
            writes.append(("THETA_HEAD", [int(theta_head)]))
        self.write_many(writes)

    def clear_counters(self) -> None:
        self.write("CTRL", self.regs["CTRL"].pack(clear_counters=1))

    def counters(self) -> dict:
        first = self.regs["CYCLES_LAST"].addr
        names = [r.name for r in sorted(self.regs.values(), key=lambda r: r.addr)
                 if first <= r.addr <= self.regs["FIRED_HEAD_LAST"].addr]
        vals = self.read_block(first, self.regs["FIRED_HEAD_LAST"].addr - first + 1)
        by_addr = {r.addr: r.name for r in self.regs.values()}
        out = {by_addr[first + i].lower(): v for i, v in enumerate(vals)
               if by_addr.get(first + i) in names}
        L = self.shape["num_layers"]
        fired = self.read_block(self.regs["FIRED_LAST0"].addr, L)
        fired = [self.regs[f"FIRED_LAST{l}"].unpack(w) for l, w in enumerate(fired)]
        out["fired_x_last"] = [f["x"] for f in fired]
        out["fired_h_last"] = [f["h"] for f in fired]
        return out

    def status(self) -> dict:
        return self.regs["STATUS"].unpack(self.read("STATUS"))

    # ---- streaming ----
    def run(self, x_q, *, first: bool = True, counters: bool = True) -> RunResult:
        """Stream a (T, I) integer sequence through the core and collect its T output vectors.

        ``first`` starts a new sequence (resets the core's state); with ``first=False`` the
        sequence continues the previous one.
        """
        x = np.asarray(x_q)
        I, eb = self.shape["input_size"], self.shape["elem_bytes"]
        if x.ndim != 2 or x.shape[1] != I:
            raise ValueError(f"run() takes a (T, {I}) array of quantized inputs; got shape "
                             f"{x.shape}.")
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"run() takes integers in the act format (quantize first); got "
                             f"{x.dtype}.")
        lo, hi = -(1 << (8 * eb - 1)), (1 << (8 * eb - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"Inputs must lie in [{lo}, {hi}] for {eb}-byte elements.")
        T = x.shape[0]
        if counters:
            self.clear_counters()
        else:
            self._ensure()
        t0 = self._clock()
        flat = x.astype(f"<i{eb}" if eb in (2, 4) else "i1").reshape(-1).tobytes()
        per_frame = max(1, (self.rx_depth // 2 - proto.FRAME_OVERHEAD - 1) // eb)
        if per_frame >= I:
            # Whole timesteps per frame, and no more than the device has output slots for.
            per_frame = I * min(per_frame // I, self.out_slots)
        reqs = []
        for e in range(0, x.size, per_frame):
            n = min(per_frame, x.size - e)
            reqs.append((proto.CMD_INPUT,
                         proto.input_payload(first and e == 0, flat[e * eb:(e + n) * eb]),
                         proto.input_steps(e, n, I)))
        outs = self._stream(reqs, want_outputs=T)
        res = RunResult(np.stack(outs) if outs else np.zeros((0, self.width), np.int64))
        res.seconds = self._clock() - t0
        if counters:
            res.counters = self.counters()
        return res

    @property
    def width(self) -> int:
        s = self.shape
        return s["output_size"] if s["output_size"] else s["hidden_size"]

    # ---- link layer ----
    def _io(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:  # pyserial's SerialException is an OSError too
            self._state = "resync" if self._state == "ok" else self._state
            raise LinkLostError(f"The serial port {self.name} failed ({e}); check that the adapter "
                                "is still connected, then open the device again.") from None

    def _write(self, data: bytes):
        self._io(self.t.write, data)
        self.stats["bytes_sent"] += len(data)

    def _read_some(self, wait=True) -> bytes:
        n = self._io(lambda: getattr(self.t, "in_waiting", 0))
        if not n and not wait:
            return b""
        data = self._io(self.t.read, max(1, n))
        self.stats["bytes_received"] += len(data)
        return data

    def _responses(self, wait=True):
        """Responses completed by the bytes that arrive now; ``None`` stands for a damaged one."""
        out = []
        for raw, ok in self._decoder.feed(self._read_some(wait)):
            try:
                if not ok:
                    raise ValueError("bad escape")
                out.append(proto.decode_response(raw))
            except ValueError:
                self.stats["damaged_frames"] += 1
                out.append(None)
        return out

    def _flush_input(self):
        """Close any partial frame on the device and discard pending input: wait for
        ``quiet_time`` of silence, but never longer than ``timeout`` (a line that never goes quiet
        is left to the CRC and the frame matching)."""
        self._write(bytes([proto.END]))
        start = last = self._clock()
        while self._clock() - last < self.quiet_time and self._clock() - start < self.timeout:
            if self._read_some(wait=False):
                last = self._clock()
            elif getattr(self.t, "monotonic", None) is None:
                time.sleep(min(0.005, self.quiet_time))
            else:
                self._read_some(wait=True)  # a simulated line: let its time pass
        self._decoder = proto.SlipDecoder()

    def _next_tag(self) -> int:
        self._tag = (self._tag + 1) % proto.SEQ_MOD
        return self._tag

    def _fail(self, exc):
        """Mark the link for resynchronisation (or as reset) and return ``exc`` to raise."""
        self._state = "reset" if isinstance(exc, DeviceResetError) else (
            "resync" if self._state in ("ok", "resync") else self._state)
        return exc

    def _reset_error(self):
        return self._fail(DeviceResetError(
            f"{self.name} was reset during the session (its registers and any weights loaded at "
            "run time are back to their power-on values); call connect() and load the model "
            "again."))

    def _check(self, rsp, *, allow_fresh=False):
        if rsp.status & proto.STATUS_FRESH and not allow_fresh:
            raise self._reset_error()

    def _give_up(self, what, damaged):
        if damaged:
            return self._fail(ChecksumError(
                f"The link to {self.name} keeps damaging frames ({what}; {damaged} damaged "
                f"frames after {self.retries} retries of {self.timeout:g} s; "
                f"{dict(self.stats)}); check the cable and lower the baud rate."))
        return self._fail(DeviceTimeoutError(
            f"{self.name} stopped answering ({what} after {self.retries} retries of "
            f"{self.timeout:g} s)."))

    def _ensure(self):
        """Before a request: refuse after a reset, resynchronise after an earlier failure."""
        if self._state == "reset":
            raise self._reset_error()
        if self._state == "new":
            raise NoDeviceError(f"{self.name} is not connected: call connect() first.")
        if self._state == "resync":
            self._sync(clear_fresh=False)
            self._state = "ok"

    def _sync(self, *, clear_fresh):
        """INFO exchange (sets the device's expected seq), then release every output the device
        holds or will still produce for inputs of an interrupted run."""
        self._decoder = proto.SlipDecoder()
        flags = proto.INFO_CLEAR_FRESH if clear_fresh else 0
        tag = self._next_tag()
        status, body = self._call(proto.CMD_INFO, proto.info_payload(flags),
                                  lambda r: (r.status, r.body) if len(r.body) == proto.INFO_BYTES
                                  else None, tag=tag, allow_fresh=True)
        if status & proto.STATUS_FRESH and not clear_fresh:
            raise self._reset_error()
        info = proto.parse_info(body)
        if info["protocol_version"] != proto.PROTOCOL_VERSION:
            raise self._fail(WrongBitstreamError(
                f"{self.name} speaks link protocol version {info['protocol_version']}; this "
                f"driver speaks version {proto.PROTOCOL_VERSION}: rebuild the bitstream or update "
                "deltahw."))
        self.info = info
        self._seq = (tag + 1) % proto.SEQ_MOD
        if self.shape is not None and info["step_bytes"] != proto.step_bytes(
                self.width, self.shape["act_width"], self.shape["elem_bytes"]):
            raise self._fail(WrongBitstreamError(
                f"{self.name} now reports {info['step_bytes']} output bytes per timestep, not "
                "what its shape implies: another bitstream was loaded; call connect() again."))
        # Outputs: skip what the slots hold, wait for what the core still owes, release it all.
        pos, fed = info["head"], info["fed"]
        last = self._clock()
        while True:
            want = min(255, (fed - pos) % proto.POS_MOD)
            p, steps, _ = self._call(proto.CMD_OUTPUT, proto.output_payload(pos, want),
                                     self._output_reply(pos))
            if want == 0:
                break
            pos = (pos + steps) % proto.POS_MOD
            if steps:
                last = self._clock()
            elif self._clock() - last > self.timeout * (self.retries + 1):
                raise self._fail(DeviceTimeoutError(
                    f"{self.name} still owes {want} output timestep(s) of an interrupted run and "
                    "produces none: the core is stuck; reset the board."))
        self._fed = self._got = self._released = fed
        return status, info

    def _output_reply(self, pos):
        def accept(r):
            if len(r.body) < 3 or int.from_bytes(r.body[:2], "little") != pos % proto.POS_MOD:
                return None
            steps = r.body[2]
            if len(r.body) != 3 + steps * self.info["step_bytes"]:
                return None
            return pos, steps, r.body[3:]
        return accept

    def _call(self, cmd, payload, accept, *, tag=None, allow_fresh=False):
        """One idempotent request (INFO, READ, OUTPUT), stop-and-wait: resend after ``timeout``
        without its answer. ``accept(response)`` returns the result or None (not this answer)."""
        tag = self._next_tag() if tag is None else tag
        wire = proto.encode_frame(cmd, tag, payload)
        damaged = 0
        for attempt in range(self.retries + 1):
            self._write(wire)
            self.stats["frames_sent"] += 1
            if attempt:
                self.stats["resends"] += 1
            start = self._clock()
            while self._clock() - start < self.timeout:
                for rsp in self._responses():
                    if rsp is None:
                        damaged += 1
                        continue
                    if rsp.seq != tag:
                        continue  # an answer to an earlier request
                    if rsp.code == cmd | proto.RSP_FLAG:
                        self._check(rsp, allow_fresh=allow_fresh)
                        result = accept(rsp)
                        if result is not None:
                            return result
                    elif rsp.code == proto.RSP_ERR:
                        self._check_error(rsp, allow_fresh)
        raise self._give_up(f"no answer to request 0x{cmd:02X}", damaged)

    def _check_error(self, rsp, allow_fresh=False):
        """An error answer: a reset or a refused (malformed) request raise, the rest is counted
        (a damaged or out-of-order frame: the resend logic handles it)."""
        err = rsp.error
        if err == proto.ErrorCode.RESET and not allow_fresh:
            raise self._reset_error()
        if err in (proto.ErrorCode.COMMAND, proto.ErrorCode.LENGTH, proto.ErrorCode.POSITION):
            raise self._fail(ProtocolError(
                f"{self.name} refused a request ({_error_name(err)}); the bitstream and the "
                "driver disagree about the protocol."))
        self.stats[f"err_{_error_name(err).lower()}"] += 1

    def _stream(self, requests, *, want_outputs=0):
        """Send WRITE/INPUT requests ``(cmd, payload, timesteps)`` go-back-N style and, with
        ``want_outputs``, collect that many output timesteps. Returns the output vectors."""
        self._ensure()
        todo = collections.deque(requests)
        pending = collections.deque()  # [seq, wire, size, steps], oldest first
        outs = []
        target = self._got + want_outputs
        window, slots = self.rx_depth, self.out_slots
        sb = self.info["step_bytes"]
        eb, W = (self.shape["elem_bytes"], self.width) if want_outputs else (1, 0)
        max_steps = max(1, min(255, 1024 // sb)) if sb else 0
        poll = None  # (pos, size) of the OUTPUT request in flight
        poll_size = proto.FRAME_OVERHEAD + 3
        nak_base = None
        failures = damaged = 0
        last_progress = self._clock()
        for _, payload, _ in todo:
            if len(payload) + proto.FRAME_OVERHEAD > window:
                raise ValueError(f"A {len(payload) + proto.FRAME_OVERHEAD}-byte frame does not "
                                 f"fit the device's {window}-byte receive buffer.")

        def send_poll():
            nonlocal poll
            n = min(max_steps, self._fed - self._got)
            wire = proto.encode_frame(proto.CMD_OUTPUT, self._next_tag(),
                                      proto.output_payload(self._got, n))
            self._write(wire)
            self.stats["frames_sent"] += 1
            poll = (self._got % proto.POS_MOD, poll_size)

        def resend_all():
            for p in pending:
                self._write(p[1])
            self.stats["resends"] += len(pending)
            self.stats["frames_sent"] += len(pending)

        try:
            while todo or pending or self._got < target:
                while todo:
                    cmd, payload, steps = todo[0]
                    size = len(payload) + proto.FRAME_OVERHEAD
                    used = sum(p[2] for p in pending) + (poll[1] if poll else 0)
                    if len(pending) >= proto.MAX_IN_FLIGHT - 1 or used + size > window:
                        break
                    if steps and self._fed + steps > self._released + slots:
                        break  # no free output slot for it yet: ask for outputs first
                    todo.popleft()
                    wire = proto.encode_frame(cmd, self._seq, payload)
                    pending.append([self._seq, wire, size, steps])
                    self._seq = (self._seq + 1) % proto.SEQ_MOD
                    self._fed += steps
                    self._write(wire)
                    self.stats["frames_sent"] += 1
                if want_outputs and poll is None and self._got < self._fed:
                    send_poll()
                progress = False
                for rsp in self._responses():
                    if rsp is None:
                        damaged += 1
                        continue
                    self._check(rsp)
                    if rsp.code == proto.RSP_OUTPUT:
                        progress |= self._take_outputs(rsp, outs, sb, eb, W)
                        if poll and len(rsp.body) >= 2 and \
                                int.from_bytes(rsp.body[:2], "little") == poll[0]:
                            poll = None
                        continue
                    if rsp.code == proto.RSP_ERR:
                        self._check_error(rsp)
                    elif rsp.code not in (proto.RSP_WRITE, proto.RSP_INPUT):
                        continue  # an answer to an earlier READ/INFO
                    if not pending:
                        continue
                    # Cumulative acknowledgement: every request before rsp.next has run.
                    k = proto.seq_diff(rsp.next, pending[0][0])
                    if 0 < k <= len(pending):
                        for _ in range(k):
                            pending.popleft()
                        progress = True
                    elif k == 0 and rsp.code == proto.RSP_ERR and nak_base != pending[0][0]:
                        # The device waits for our oldest request: it was lost or damaged.
                        nak_base = pending[0][0]
                        resend_all()
                now = self._clock()
                if progress:
                    last_progress, failures, damaged = now, 0, 0
                elif now - last_progress > self.timeout:
                    failures += 1
                    self.stats["timeouts"] += 1
                    if failures > self.retries:
                        what = (f"{len(pending)} unanswered request(s)" if pending else
                                f"{target - self._got} missing output timestep(s)")
                        raise self._give_up(what, damaged)
                    resend_all()
                    nak_base = None
                    if want_outputs and self._got < self._fed:
                        send_poll()
                    last_progress = now
        except BaseException as e:
            if not isinstance(e, DeviceError):
                self._state = "resync" if self._state == "ok" else self._state
            elif self._state == "ok":
                self._fail(e)
            raise
        return outs

    def _take_outputs(self, rsp, outs, sb, eb, W) -> bool:
        """Append the new timesteps of an OUTPUT answer; True if there were any."""
        body = rsp.body
        if len(body) < 3:
            return False
        back = (self._got - int.from_bytes(body[:2], "little")) % proto.POS_MOD
        if back >= proto.POS_MOD // 2:
            return False  # not a position this session asked for
        pos, steps = self._got - back, body[2]
        if len(body) != 3 + steps * sb:
            return False
        self._released = max(self._released, pos)
        new = pos + steps - self._got
        if new <= 0:
            return False
        dtype = {1: "i1", 2: "<i2", 4: "<i4"}[eb]
        vals = np.frombuffer(body[3:], dtype=dtype).astype(np.int64).reshape(steps, -1)
        for row in vals[steps - new:]:
            outs.append(row[:W])
        self._got += new
        return True


def _error_name(err: int) -> str:
    try:
        return proto.ErrorCode(err).name
    except ValueError:
        return f"error {err}"


class HostInputError(DeltahwError, ValueError):
    """A ``run`` input or labels file that cannot be used."""


def _run_inputs(path) -> np.ndarray:
    """The float inputs of ``run``: one sequence (T, I) (or (1, T, I))."""
    from .golden import load_inputs

    x = load_inputs(path)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise HostInputError(f"{path} has shape {x.shape}; run takes one sequence (T, I).")
    return x


def _run_labels(path, model, T: int):
    """The targets of one sequence for the model's task, checked against it."""
    import torch

    from .train.data import CLASSIFICATION, STEP_REGRESSION, task_of

    task, O = task_of(model.meta), model.config.output_size
    try:
        y = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise HostInputError(f"{path} is not a readable .npy file of numbers: {e}.") from None
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "biuf":
        raise HostInputError(f"{path} must hold one numeric .npy array.")
    if task == STEP_REGRESSION:
        if y.shape == (T,) and O == 1:
            y = y[:, None]
        if y.shape != (T, O) or not np.isfinite(y).all():
            raise HostInputError(f"{path} has shape {y.shape}; the model's task is {task}: "
                                 f"expected finite targets of shape ({T}, {O}), one row per "
                                 "timestep in the data's units.")
        return torch.from_numpy(y.astype(np.float64))
    want = () if task == CLASSIFICATION else (T,)
    if task == CLASSIFICATION and y.shape == (1,):
        y = y.reshape(())
    if y.shape != want or y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise HostInputError(f"{path} has shape {y.shape} (dtype {y.dtype}); the model's task is "
                             f"{task}: expected "
                             + ("one integer class label." if task == CLASSIFICATION else
                                f"{T} integer class labels, one per timestep."))
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= O:
        raise HostInputError(f"{path} holds the label {int(y.max() if y.max() >= O else y.min())}"
                             f"; the model has {O} classes (0..{O - 1}).")
    return torch.from_numpy(y)


def _task_line(model, outputs, y) -> str:
    """The model's task metric of one sequence's device outputs (raw integers, (T, W))."""
    import torch

    from .train.evaluate import metrics_text, model_tally

    tally = model_tally(model)
    out = torch.as_tensor(np.asarray(outputs)).double()[None] * model.config.act.lsb
    tally.add(out, torch.tensor([out.shape[1]]), y[None])
    return f"{tally.task}: {metrics_text(tally.result(), tally.task)} (the device's outputs)"


def main(argv=None) -> int:
    from .util import add_model_arguments, run_cli

    ap = argparse.ArgumentParser(prog="python -m deltahw.host",
                                 description="Talk to a deltahw board over its UART.")
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    ap.add_argument("--timeout", type=float, default=1.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the device's shape, status and counters")
    p = sub.add_parser("load", help="load a model's weights, biases and thresholds")
    add_model_arguments(p)
    p = sub.add_parser("run", help="run float inputs (.npy, (T, I)) and compare with the golden "
                                   "model")
    add_model_arguments(p)
    p.add_argument("--input", required=True, help="float inputs of one sequence, (T, I), .npy")
    p.add_argument("--load", action="store_true", help="load the model's weights first")
    p.add_argument("--labels", help="the sequence's targets (.npy), to report the model's task "
                   "metric: one class label (sequence classification), T labels (per-timestep "
                   "classification) or (T, O) targets in the data's units (per-timestep "
                   "regression)")
    args = ap.parse_args(argv)
    return run_cli(_main, args)


def _main(args) -> int:
    x = y = None
    if args.cmd in ("load", "run"):
        from .golden import model_from_arguments

        model = model_from_arguments(args)  # checked before the device is touched
    if args.cmd == "run":
        x = _run_inputs(args.input)
        if args.labels:
            y = _run_labels(args.labels, model, len(x))
    with Device.open(args.port, baud=args.baud, timeout=args.timeout) as dev:
        if args.cmd == "info":
            print(f"shape: {dev.shape}")
            print(f"status: {dev.status()}")
            print(f"counters: {dev.counters()}")
            return 0
        if args.cmd == "load" or args.load:
            t0 = time.monotonic()
            dev.load_model(model)
            print(f"loaded {model.config.summary()} in {time.monotonic() - t0:.2f} s")
        elif any(getattr(args, k) is not None for k in ("theta_x", "theta_h", "theta_head")):
            cfg = model.config  # new thresholds for the weights already on the device
            dev.check_config(cfg)
            dev.set_thresholds(cfg.theta_x, cfg.theta_h, cfg.theta_head)
        if args.cmd == "run":
            import torch

            from .golden import run_golden

            x_q, clipped = model.quantize_input(torch.from_numpy(x))
            res = dev.run(x_q.numpy())
            gold = run_golden(model, x_q).outputs[0].numpy()
            same = np.array_equal(res.outputs, gold)
            print(f"{len(res.outputs)} timesteps in {res.seconds:.3f} s; outputs "
                  f"{'match' if same else 'DIFFER from'} the golden model")
            print(f"counters: {res.counters}")
            if y is not None:
                print(_task_line(model, res.outputs, y))
            return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
