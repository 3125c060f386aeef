"""Host driver against a Python reference device (bridge protocol + register map + golden model).

The reference device implements the bridge's documented behaviour (framing, sequence rule,
duplicates, fresh flag, output frames) and the core's parameter registers, and computes outputs
with the golden model from the parameters the driver loaded, so these tests check the driver's
framing, windowing, recovery and weight packing. The real RTL is exercised by
``rtl_tests/test_host_e2e.py``.
"""

import collections

import numpy as np
import pytest
import torch

from deltahw import regmap
from deltahw.config import DeltaGRUConfig
from deltahw.gateware import bridge as proto
from deltahw.golden import run_golden
from deltahw.host import (
    ChecksumError,
    Device,
    DeviceResetError,
    DeviceTimeoutError,
    NoDeviceError,
    WrongBitstreamError,
)
from deltahw.layout import Layout
from deltahw.model import LayerParams, QuantizedModel, from_modules


class RefDevice:
    """A byte-level stand-in for a board; ``faults`` hooks damage traffic in chosen places."""

    def __init__(self, config, rx_depth=256, ident=regmap.ID_MAGIC):
        self.cfg = config
        self.lay = Layout(config)
        self.rx_depth = rx_depth
        self.ident = ident
        self.dec = proto.SlipDecoder()
        self.out = bytearray()
        self.timeout = 0.01
        self.reset()
        self.drop_request = set()  # indices of received frames to damage
        self.drop_response = set()  # indices of responses to damage
        self.n_req = self.n_rsp = 0
        self.reset_at = None  # reset the device before this request index
        self.silent = False

    def reset(self):
        cfg = self.cfg
        self.last_seq = None
        self.fresh = True
        self.w = np.zeros((self.lay.weight_depth, cfg.lanes), np.int64)
        self.b = np.zeros((self.lay.acc_depth, cfg.lanes), np.int64)
        self.regs = collections.defaultdict(int)
        self.elems = []
        self.seq_inputs = []
        self.out_count = 0

    # transport interface
    @property
    def in_waiting(self):
        return len(self.out)

    def read(self, n):
        data, self.out = bytes(self.out[:n]), self.out[n:]
        return data

    def write(self, data):
        if self.silent:
            return
        for raw, ok in self.dec.feed(data):
            idx = self.n_req
            self.n_req += 1
            if idx in self.drop_request:
                raw = bytes([raw[0] ^ 1]) + raw[1:] if raw else raw
            if idx == self.reset_at:
                self.reset()
            self.frame(raw, ok)

    def respond(self, code, seq, status, payload=b""):
        idx = self.n_rsp
        self.n_rsp += 1
        wire = proto.encode_frame(code, seq, bytes([status]) + payload)
        if idx in self.drop_response:
            wire = wire[:3] + bytes([wire[3] ^ 0x10]) + wire[4:]
        self.out += wire

    def frame(self, raw, ok):
        if not ok:
            return self.respond(proto.RSP_ERR, 0, 0, bytes([proto.ErrorCode.ESCAPE]))
        try:
            cmd, seq, payload = proto.decode_frame(raw)
        except ValueError:
            return self.respond(proto.RSP_ERR, raw[1] if len(raw) > 1 else 0, 0,
                                bytes([proto.ErrorCode.CRC]))
        dup = self.last_seq == seq
        in_order = self.last_seq is None or seq == (self.last_seq + 1) & 0xFF or cmd == 0
        if not in_order and not dup:
            return self.respond(proto.RSP_ERR, seq, 0, bytes([proto.ErrorCode.SEQUENCE]))
        status = proto.STATUS_FRESH if self.fresh else 0
        self.fresh = False
        self.last_seq = seq
        if dup and not in_order and cmd in (proto.CMD_WRITE, proto.CMD_INPUT):
            return self.respond(cmd | 0x80, seq, status | proto.STATUS_DUPLICATE, b"\0")
        if cmd == proto.CMD_INFO:
            cfg = self.cfg
            return self.respond(proto.RSP_INFO, seq, status, bytes([
                proto.PROTOCOL_VERSION, self.rx_depth.bit_length() - 1, proto.elem_bytes(cfg),
                cfg.enc_width, cfg.act_width]))
        if cmd == proto.CMD_READ:
            addr, count = payload
            words = [self.reg_read(addr + i) for i in range(count)]
            return self.respond(proto.RSP_READ, seq, status,
                                b"".join(w.to_bytes(4, "little") for w in words))
        if cmd == proto.CMD_WRITE:
            addr = payload[0]
            for i in range(1, len(payload), 4):
                self.reg_write(addr, int.from_bytes(payload[i:i + 4], "little"))
            return self.respond(proto.RSP_WRITE, seq, status, b"\0")
        if cmd == proto.CMD_INPUT:
            if payload[0] & proto.INPUT_FIRST:
                self.seq_inputs, self.elems = [], []
            vals = np.frombuffer(payload[1:], "<i2").tolist()
            self.elems += vals
            I = self.cfg.input_size
            while len(self.elems) >= I:
                self.seq_inputs.append(self.elems[:I])
                self.elems = self.elems[I:]
                self.emit_output()
            return self.respond(proto.RSP_INPUT, seq, status, b"\0")
        raise AssertionError(cmd)

    def reg_read(self, addr):
        cfg = self.cfg
        r = regmap.by_name(cfg.num_layers)
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
        r = regmap.by_name(self.cfg.num_layers)
        if addr == r["PARAM_DATA"].addr:
            sel, a = self.regs[r["PARAM_SEL"].addr], self.regs[r["PARAM_ADDR"].addr]
            kind, lane = sel & 1, sel >> 8
            bits = self.cfg.weight.bits if kind == 0 else self.cfg.bias.bits
            v = value & ((1 << bits) - 1)
            v = v - (1 << bits) if v >> (bits - 1) else v
            (self.w if kind == 0 else self.b)[a, lane] = v
            self.regs[r["PARAM_ADDR"].addr] = a + 1
        elif addr == r["CTRL"].addr:
            if value & 1:
                self.regs[r["TIMESTEPS"].addr] = 0
        else:
            self.regs[addr] = value

    def model(self):
        cfg = self.cfg
        r = regmap.by_name(cfg.num_layers)
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
        x = torch.tensor(self.seq_inputs, dtype=torch.int64)
        y = run_golden(self.model(), x).outputs[0, -1].tolist()
        A = self.cfg.act_width
        y += [0] * (-len(y) % A)
        r = regmap.by_name(self.cfg.num_layers)
        self.regs[r["TIMESTEPS"].addr] += 1
        idx = self.n_rsp
        self.n_rsp += 1
        wire = proto.encode_frame(proto.RSP_OUT, self.out_count & 0xFF,
                                  np.array(y, "<i2").tobytes())
        if idx in self.drop_response:
            wire = wire[:3] + bytes([wire[3] ^ 0x10]) + wire[4:]
        self.out_count += 1
        self.out += wire


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    gru, head = torch.nn.GRU(5, 8, 2, batch_first=True), torch.nn.Linear(8, 3)
    return from_modules(gru, head, theta_x=(6, 4), theta_h=(5, 3), lanes=6, act_width=1,
                        lanes_per_bank=3, enc_width=2)


def inputs(model, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.cumsum(torch.randn(T, model.config.input_size, generator=g) * 0.3, 0)
    return model.quantize_input(x)[0]


def connect(dev_model, **kw):
    ref = RefDevice(dev_model.config, **kw)
    return ref, Device(ref, timeout=0.05, quiet_time=0.005)


def test_load_run_bit_exact(model):
    ref, dev = connect(model)
    shape = dev.connect()
    assert shape["hidden_size"] == 8 and shape["num_layers"] == 2 and shape["lanes"] == 6
    dev.load_model(model)
    assert np.array_equal(ref.w, Layout(model.config).lane_weights(model).numpy())
    x = inputs(model)
    res = dev.run(x.numpy())
    assert np.array_equal(res.outputs, run_golden(model, x).outputs[0].numpy())
    assert res.counters["timesteps"] == len(x)
    # A second sequence restarts from the reset state (first beat flag).
    x2 = inputs(model, T=4, seed=3)
    assert np.array_equal(dev.run(x2.numpy()).outputs, run_golden(model, x2).outputs[0].numpy())


def test_long_sequence_spans_many_frames(model):
    ref, dev = connect(model, rx_depth=64)
    dev.connect()
    dev.load_model(model)
    x = inputs(model, T=30, seed=5)
    assert np.array_equal(dev.run(x.numpy()).outputs, run_golden(model, x).outputs[0].numpy())
    assert dev.stats["frames_sent"] > 10


def test_recovers_from_damaged_frames(model):
    ref, dev = connect(model)
    dev.connect()
    ref.drop_request = {5, 9, 40}
    ref.drop_response = {12, 30}
    dev.load_model(model)
    assert np.array_equal(ref.w, Layout(model.config).lane_weights(model).numpy())
    assert np.array_equal(ref.b, Layout(model.config).lane_biases(model).numpy())
    assert dev.stats["resends"] > 0


def test_wrong_bitstream_and_shape(model):
    ref = RefDevice(model.config, ident=0x12345678)
    with pytest.raises(WrongBitstreamError, match="not a deltahw accelerator"):
        Device(ref, timeout=0.05).connect()
    other = from_modules(torch.nn.GRU(5, 6, 2), torch.nn.Linear(6, 3), lanes=6, act_width=1,
                         lanes_per_bank=3, enc_width=2)
    ref, dev = connect(model)
    dev.connect()
    with pytest.raises(WrongBitstreamError, match="hidden_size: model 6, device 8"):
        dev.load_model(other)


def test_no_device_and_timeouts(model):
    ref = RefDevice(model.config)
    ref.silent = True
    with pytest.raises(NoDeviceError, match="Nothing answers"):
        Device(ref, timeout=0.02, retries=1, quiet_time=0.001).connect()
    ref, dev = connect(model)
    dev.connect()
    ref.silent = True
    with pytest.raises(DeviceTimeoutError, match="stopped answering"):
        dev.read("STATUS")
    with pytest.raises(NoDeviceError, match="Cannot open serial port"):
        Device.open("/dev/does-not-exist-deltahw")


def test_device_reset_is_reported(model):
    ref, dev = connect(model)
    dev.connect()
    ref.reset_at = ref.n_req + 1
    dev.read("STATUS")
    with pytest.raises(DeviceResetError, match="was reset"):
        dev.read("STATUS")


def test_persistent_damage_gives_checksum_error(model):
    ref, dev = connect(model)
    dev.connect()
    ref.drop_request = set(range(ref.n_req, ref.n_req + 100))
    with pytest.raises(ChecksumError, match="keeps damaging"):
        dev.write("THETA_X0", 3)


def test_input_validation(model):
    ref, dev = connect(model)
    dev.connect()
    with pytest.raises(ValueError, match=r"\(T, 5\)"):
        dev.run(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="quantize first"):
        dev.run(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="one per layer"):
        dev.set_thresholds(theta_x=[1, 2, 3])


def test_config_check_uses_elem_bytes():
    cfg = DeltaGRUConfig(input_size=3, hidden_size=2, lanes=6, act_width=1, lanes_per_bank=3)
    assert proto.elem_bytes(cfg) == 2
