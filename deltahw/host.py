"""Host driver for a deltahw board over its UART (pyserial), speaking the bridge's framed protocol.

    from deltahw.host import Device
    with Device.open("/dev/ttyUSB1") as dev:          # checks ID, VERSION and the network shape
        dev.load_model("models/fsdd/export")           # weights, biases, thresholds at run time
        res = dev.run(x_q)                             # (T, I) int inputs in the act format
        res.outputs, res.counters                      # (T, W) int outputs, performance counters

Protocol: :mod:`deltahw.gateware.bridge` (SLIP frames with CRC-16, in-order sequence numbers). The
driver keeps several frames in flight (never more unanswered bytes than the device's receive
buffer), so a sequence streams at the line rate. After a damaged or lost frame it waits for the line
to go quiet and resends from the first unanswered frame; the device executes every frame exactly
once. Errors are :class:`DeviceError` subclasses with a full-sentence message: no device, wrong
bitstream, checksum failures that persist, a device reset in the middle of a session, timeouts.

``python -m deltahw.host --port PORT info | load MODEL | run MODEL --input x.npy`` is the command
line front end.
"""

import argparse
import collections
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import DeltahwError
from . import regmap
from .config import DeltaGRUConfig
from .gateware import bridge as proto
from .layout import Layout

__all__ = ["Device", "RunResult", "DeviceError", "NoDeviceError", "WrongBitstreamError",
           "ChecksumError", "DeviceResetError", "DeviceTimeoutError", "ProtocolError",
           "DEFAULT_BAUD", "main"]

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


@dataclass
class RunResult:
    """Outputs of one sequence: ``outputs`` (T, W) int64 in the act format and the counters."""

    outputs: np.ndarray
    counters: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class _Request:
    cmd: int
    payload: bytes
    index: int
    seq: int = -1
    wire: bytes = b""

    @property
    def size(self) -> int:
        return len(self.payload) + 4


_TRANSMISSION_ERRORS = {proto.ErrorCode.CRC, proto.ErrorCode.ESCAPE, proto.ErrorCode.SHORT,
                        proto.ErrorCode.OVERFLOW, proto.ErrorCode.SEQUENCE}


class Device:
    """A connection to one accelerator. ``transport`` is an open pyserial ``Serial`` (or any object
    with ``write(bytes)``, ``read(n)`` that waits at most its timeout, and ``in_waiting``).

    ``timeout`` is how long the driver waits without receiving anything before it resends, and
    ``retries`` how often it resends before giving up.
    """

    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 3, name: str = "device",
                 quiet_time: float = 0.05):
        self.t = transport
        self.timeout = timeout
        self.retries = retries
        self.name = name
        self.quiet_time = quiet_time
        self._seq = 0
        self._decoder = proto.SlipDecoder()
        self._outputs = collections.deque()
        self._out_count = None
        self.info = None
        self.shape = None
        self.regs = regmap.by_name(1)
        self.stats = collections.Counter()

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
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self) -> dict:
        """Resynchronise the link, read INFO and the ID/VERSION/SHAPE registers, and check them."""
        self._flush_input()
        try:
            [payload] = self._exchange([(proto.CMD_INFO, b"")], allow_fresh=True)
        except DeviceTimeoutError:
            raise NoDeviceError(
                f"Nothing answers on {self.name}: check that the board is connected, that the "
                f"deltahw bitstream is loaded and that the baud rate matches the build "
                f"(report.json 'baud')."
            ) from None
        if len(payload) < len(proto.INFO_FIELDS):
            raise WrongBitstreamError(f"The INFO answer from {self.name} is {len(payload)} bytes; "
                                      f"expected {len(proto.INFO_FIELDS)}.")
        info = dict(zip(proto.INFO_FIELDS, payload))
        if info["protocol_version"] != proto.PROTOCOL_VERSION:
            raise WrongBitstreamError(
                f"{self.name} speaks bridge protocol version {info['protocol_version']}; this "
                f"driver speaks version {proto.PROTOCOL_VERSION}: rebuild the bitstream or update "
                "deltahw.")
        info["rx_depth"] = 1 << info["rx_depth_log2"]
        self.info = info
        ident, version, shape0, shape1 = self.read_block(self.regs["ID"].addr, 4)
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
        if not 1 <= count <= 255:
            raise ValueError(f"A register read covers 1 to 255 registers; got {count}.")
        [payload] = self._exchange([(proto.CMD_READ, bytes([addr & 0xFF, count]))])
        if len(payload) != 4 * count:
            raise ProtocolError(f"A read of {count} registers returned {len(payload)} bytes.")
        return [int.from_bytes(payload[4 * i:4 * i + 4], "little") for i in range(count)]

    def write(self, reg, *values: int) -> None:
        self.write_many([(reg, list(values))])

    def write_many(self, writes) -> None:
        """Pipelined register writes: ``[(reg, [value, ...]), ...]`` (bursts go to one address)."""
        reqs = []
        limit = max(1, (self.rx_depth // 2 - 8) // 4)
        for reg, values in writes:
            addr = self._addr(reg)
            values = [regmap.to_word(v) for v in values]
            for i in range(0, len(values), limit):
                chunk = values[i:i + limit]
                reqs.append((proto.CMD_WRITE, bytes([addr]) + b"".join(
                    v.to_bytes(4, "little") for v in chunk)))
        self._exchange(reqs)

    @property
    def rx_depth(self) -> int:
        return self.info["rx_depth"] if self.info else 64

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
        t0 = time.monotonic()
        flat = x.astype(f"<i{eb}" if eb in (2, 4) else "i1").reshape(-1).tobytes()
        per_frame = max(1, (self.rx_depth // 2 - 8) // eb)
        if per_frame >= I:
            per_frame -= per_frame % I  # whole timesteps per frame
        reqs = []
        for i in range(0, len(flat), per_frame * eb):
            flags = proto.INPUT_FIRST if (first and i == 0) else 0
            reqs.append((proto.CMD_INPUT, bytes([flags]) + flat[i:i + per_frame * eb]))
        self._outputs.clear()
        self._exchange(reqs, want_outputs=T)
        outs = [self._outputs.popleft() for _ in range(T)]
        res = RunResult(np.stack(outs) if outs else np.zeros((0, self.width), np.int64))
        res.seconds = time.monotonic() - t0
        if counters:
            res.counters = self.counters()
        return res

    @property
    def width(self) -> int:
        s = self.shape
        return s["output_size"] if s["output_size"] else s["hidden_size"]

    # ---- link layer ----
    def _flush_input(self):
        """Send an END (closing any partial frame on the device) and discard pending input."""
        self.t.write(bytes([proto.END]))
        end = time.monotonic() + self.quiet_time
        while time.monotonic() < end:
            if self._read_some(wait=False):
                end = time.monotonic() + self.quiet_time
            else:
                time.sleep(0.005)
        self._decoder = proto.SlipDecoder()

    def _read_some(self, wait=True) -> bytes:
        n = getattr(self.t, "in_waiting", 0)
        if not n and not wait:
            return b""
        return self.t.read(max(1, n))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _exchange(self, requests, *, allow_fresh=False, want_outputs=0):
        """Send requests in order with a window; return the response payloads (after status)."""
        todo = collections.deque(_Request(cmd, payload, i)
                                 for i, (cmd, payload) in enumerate(requests))
        results = [None] * len(todo)
        pending = collections.deque()
        window = self.rx_depth
        failures = 0
        last_rx = time.monotonic()
        for r in todo:
            if r.size > window:
                raise ValueError(f"A {r.size}-byte frame does not fit the device's "
                                 f"{window}-byte receive buffer.")

        def send(req):
            if req.seq < 0:
                req.seq = self._next_seq() if req.cmd != proto.CMD_INFO else self._seq
                req.wire = proto.encode_frame(req.cmd, req.seq, req.payload)
            self.t.write(req.wire)
            self.stats["frames_sent"] += 1

        if requests and requests[0][0] == proto.CMD_INFO:
            self._seq = (self._seq + 17) & 0xFF  # a fresh number the device has not just seen
        while todo or pending or len(self._outputs) < want_outputs:
            while todo and sum(p.size for p in pending) + todo[0].size <= window:
                req = todo.popleft()
                send(req)
                pending.append(req)
            data = self._read_some()
            now = time.monotonic()
            resend = False
            if not data:
                if now - last_rx < self.timeout:
                    continue
                failures += 1
                self.stats["timeouts"] += 1
                if failures > self.retries:
                    what = (f"{len(pending)} unanswered request(s)" if pending else
                            f"{want_outputs - len(self._outputs)} missing output vector(s)")
                    raise DeviceTimeoutError(
                        f"{self.name} stopped answering ({what} after {self.retries} retries of "
                        f"{self.timeout:g} s).")
                resend = True
            else:
                last_rx = now
            for raw, ok in self._decoder.feed(data):
                try:
                    if not ok:
                        raise ValueError("bad escape")
                    code, seq, payload = proto.decode_frame(raw)
                except ValueError:
                    self.stats["damaged_frames"] += 1
                    resend = True
                    continue
                if code == proto.RSP_OUT:
                    self._take_output(seq, payload)
                    continue
                if len(payload) < 1:
                    resend = True
                    continue
                status, body = payload[0], payload[1:]
                if status & proto.STATUS_FRESH and not allow_fresh:
                    raise DeviceResetError(
                        f"{self.name} was reset during the session (its registers and any "
                        "weights loaded at run time are back to their power-on values); "
                        "reconnect and load the model again.")
                head = pending[0] if pending else None
                if code == proto.RSP_ERR:
                    err = body[0] if body else 0
                    if err in _TRANSMISSION_ERRORS:
                        self.stats[f"err_{proto.ErrorCode(err).name.lower()}"] += 1
                        resend = True
                        continue
                    if head is not None and seq == head.seq:
                        raise ProtocolError(
                            f"{self.name} refused request 0x{head.cmd:02X} "
                            f"({_error_name(err)}); the bitstream and the driver disagree about "
                            "the protocol.")
                    continue
                if head is not None and seq == head.seq and code == head.cmd | 0x80:
                    pending.popleft()
                    results[head.index] = body
                    failures = 0
                    allow_fresh = False
                # Anything else answers an earlier copy of a resent frame: ignore it.
            if resend and pending:
                failures += 1 if data else 0
                if failures > self.retries:
                    raise ChecksumError(
                        f"The link to {self.name} keeps damaging frames ({dict(self.stats)}); "
                        "check the cable and lower the baud rate.")
                self._drain(pending, results)
                for req in pending:
                    send(req)
                self.stats["resends"] += len(pending)
                last_rx = time.monotonic()
        return results

    def _drain(self, pending, results):
        """Read until the line is quiet, accepting in-order answers; leaves the rest pending."""
        end = time.monotonic() + self.quiet_time
        while time.monotonic() < end:
            data = self._read_some(wait=False)
            if not data:
                time.sleep(0.002)
                continue
            end = time.monotonic() + self.quiet_time
            for raw, ok in self._decoder.feed(data):
                try:
                    code, seq, payload = proto.decode_frame(raw) if ok else (None, None, None)
                except ValueError:
                    continue
                if code == proto.RSP_OUT:
                    self._take_output(seq, payload)
                elif code is not None and pending and seq == pending[0].seq and \
                        code == pending[0].cmd | 0x80:
                    results[pending.popleft().index] = payload[1:]

    def _take_output(self, count: int, payload: bytes):
        eb, A = self.shape["elem_bytes"], self.shape["act_width"]
        if len(payload) % (A * eb):
            raise ProtocolError(f"An output frame of {len(payload)} bytes is not a whole number "
                                f"of {A}-element beats.")
        if self._out_count is not None and count != (self._out_count + 1) & 0xFF:
            raise ChecksumError(
                f"Output vector {(self._out_count + 1) & 0xFF} from {self.name} was lost (got "
                f"{count}); the sequence must be run again.")
        self._out_count = count
        dtype = {1: "i1", 2: "<i2", 4: "<i4"}[eb]
        vals = np.frombuffer(payload, dtype=dtype).astype(np.int64)
        self._outputs.append(vals[:self.width])


def _error_name(err: int) -> str:
    try:
        return proto.ErrorCode(err).name
    except ValueError:
        return f"error {err}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deltahw.host",
                                 description="Talk to a deltahw board over its UART.")
    ap.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    ap.add_argument("--timeout", type=float, default=1.0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info", help="print the device's shape, status and counters")
    p = sub.add_parser("load", help="load a model's weights, biases and thresholds")
    p.add_argument("model")
    p = sub.add_parser("run", help="run float inputs (.npy, (T, I)) and compare with the golden "
                                   "model")
    p.add_argument("model")
    p.add_argument("--input", required=True)
    p.add_argument("--load", action="store_true", help="load the model's weights first")
    args = ap.parse_args(argv)
    try:
        if args.cmd in ("load", "run"):
            from .model import load_model

            model = load_model(args.model)  # checked before the device is touched
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
            if args.cmd == "run":
                import torch

                from .golden import run_golden

                x_q, clipped = model.quantize_input(torch.from_numpy(np.load(args.input)))
                res = dev.run(x_q.numpy())
                gold = run_golden(model, x_q).outputs[0].numpy()
                same = np.array_equal(res.outputs, gold)
                print(f"{len(res.outputs)} timesteps in {res.seconds:.3f} s; outputs "
                      f"{'match' if same else 'DIFFER from'} the golden model")
                print(f"counters: {res.counters}")
                return 0 if same else 1
    except DeltahwError as e:  # DeviceError, and a model or input that cannot be used
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
