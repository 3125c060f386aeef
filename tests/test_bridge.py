# amaranth: UnusedElaboratable=no
"""Bridge and UART against their Python references (Amaranth simulator).

The bridge is driven byte by byte (as the UART receiver would) with frames built by the protocol
module :mod:`deltahw.link`; a register file stands in for the core's bus, and testbench processes
stand in for the core's ``i``/``o`` streams, with random backpressure on both sides.
"""

import random
import re

import pytest
from amaranth.hdl import Module
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from deltahw import link as br
from deltahw.config import DeltaGRUConfig
from deltahw.gateware.bridge import Bridge, _Receiver
from deltahw.gateware.registers import BusSignature
from deltahw.gateware.uart import UARTRx, UARTTx, uart_divisor


class RegFile(wiring.Component):
    """64 read/write words with the core bus timing (read data the cycle after r_en)."""

    def __init__(self):
        super().__init__(BusSignature.flip())

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=32, depth=64, init=[])
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.addr.eq(self.addr), wp.data.eq(self.w_data), wp.en.eq(self.w_en),
                     rp.addr.eq(self.addr), rp.en.eq(self.r_en), self.r_data.eq(rp.data)]
        return m


def ref_beats(config, elements, first):
    """The ``i`` beats (data int, first) the core must see for a flat list of input elements."""
    E, ab, I = config.enc_width, config.act.bits, config.input_size
    mask = (1 << ab) - 1
    beats = []
    for t in range(0, len(elements), I):
        step = elements[t:t + I]
        for b in range(0, I, E):
            word = 0
            for s, v in enumerate(step[b:b + E]):
                word |= (v & mask) << (s * ab)
            beats.append((word, int(first and t == 0 and b == 0)))
    return beats


def ref_out_payload(config, beats):
    """OUT frame payload for a list of output beats (lists of A signed ints)."""
    eb = br.elem_bytes(config)
    return b"".join(int(v).to_bytes(eb, "little", signed=True) for beat in beats for v in beat)


class Harness:
    def __init__(self, config, *, rx_gap=2, tx_ready=0.7, i_ready=0.5, seed=1, rx_depth=256):
        self.config = config
        self.dut = Bridge(config, rx_depth=rx_depth)
        self.regs = RegFile()
        m = Module()
        m.submodules.bridge = self.dut
        m.submodules.regs = self.regs
        d, r = self.dut, self.regs
        wiring.connect(m, d.bus, r)
        self.m = m
        self.rx_gap, self.tx_ready, self.i_ready = rx_gap, tx_ready, i_ready
        self.rng = random.Random(seed)
        self.to_send = bytearray()
        self.out_beats = []  # list of (A-element list, last) to offer on o
        self.tx = bytearray()
        self.beats = []

    def run(self, cycles):
        sim = Simulator(self.m)
        sim.add_clock(1e-8)
        d = self.dut
        cfg = self.config
        A, ab = cfg.act_width, cfg.act.bits

        async def rx_proc(ctx):
            for byte in self.to_send:
                ctx.set(d.rx.payload, byte)
                ctx.set(d.rx.valid, 1)
                await ctx.tick()
                ctx.set(d.rx.valid, 0)
                for _ in range(self.rng.randint(0, self.rx_gap)):
                    await ctx.tick()

        async def tx_proc(ctx):
            while True:
                ctx.set(d.tx.ready, self.rng.random() < self.tx_ready)
                _, _, valid, ready, payload = await ctx.tick().sample(
                    d.tx.valid, d.tx.ready, d.tx.payload)
                if valid and ready:
                    self.tx.append(payload)

        async def i_proc(ctx):
            while True:
                ctx.set(d.i.ready, self.rng.random() < self.i_ready)
                _, _, valid, ready, payload = await ctx.tick().sample(
                    d.i.valid, d.i.ready, d.i.payload)
                if valid and ready:
                    self.beats.append((int(payload.data), int(payload.first)))

        async def o_proc(ctx):
            for vals, last in self.out_beats:
                assert len(vals) == A
                word = 0
                for e, v in enumerate(vals):
                    word |= (v & ((1 << ab) - 1)) << (e * ab)
                ctx.set(d.o.payload.data, word)
                ctx.set(d.o.payload.last, last)
                ctx.set(d.o.valid, 1)
                await ctx.tick().until(d.o.ready)
                ctx.set(d.o.valid, 0)

        sim.add_testbench(rx_proc)
        sim.add_testbench(tx_proc, background=True)
        sim.add_testbench(i_proc, background=True)
        sim.add_testbench(o_proc)
        sim.run_until(cycles * 1e-8)
        return self

    def frames(self):
        """Responses as (code, seq, status, next, body)."""
        dec = br.SlipDecoder()
        out = []
        for raw, ok in dec.feed(bytes(self.tx)):
            assert ok
            r = br.decode_response(raw)
            out.append((r.code, r.seq, r.status, r.next, r.body))
        return out


CFG = DeltaGRUConfig(input_size=5, hidden_size=4, output_size=3, lanes=12, enc_width=4,
                     act_width=2)


def word_bytes(*words):
    return b"".join(w.to_bytes(4, "little") for w in words)


def info(seq, clear=True):
    return br.encode_frame(br.CMD_INFO, seq, br.info_payload(br.INFO_CLEAR_FRESH if clear else 0))


def test_info_write_read():
    h = Harness(CFG)
    h.to_send += info(7)
    h.to_send += br.encode_frame(br.CMD_WRITE, 8, br.write_payload(3, [0xDEADBEEF]))
    h.to_send += br.encode_frame(br.CMD_WRITE, 9, br.write_payload(4, [0xC0DBC0DB]))
    h.to_send += br.encode_frame(br.CMD_WRITE, 10, br.write_payload(5, [1, 2, 0x12345678]))
    h.to_send += br.encode_frame(br.CMD_READ, 200, br.read_payload(3, 3))
    frames = h.run(6000).frames()
    code, seq, status, nxt, body = frames[0]
    assert (code, seq, status, nxt) == (br.RSP_INFO, 7, br.STATUS_FRESH, 8)
    sb = br.step_bytes(CFG.output_size, CFG.act_width, 2)
    assert br.parse_info(body) == dict(
        protocol_version=br.PROTOCOL_VERSION, rx_depth_log2=8, elem_bytes=2, enc_width=4,
        act_width=2, out_slots_log2=br.out_slots_log2(sb), step_bytes=sb, fed=0, head=0)
    assert frames[1] == (br.RSP_WRITE, 8, 0, 9, b"")
    assert frames[2] == (br.RSP_WRITE, 9, 0, 10, b"")
    assert frames[3] == (br.RSP_WRITE, 10, 0, 11, b"")
    # The burst wrote 1, 2, 0x12345678 to the same register: the last one stays.
    assert frames[4] == (br.RSP_READ, 200, 0, 11, word_bytes(0xDEADBEEF, 0xC0DBC0DB, 0x12345678))
    assert len(frames) == 5


def enc(vals):
    return b"".join(v.to_bytes(2, "little", signed=True) for v in vals)


def test_input_packing_and_output_slots():
    rng = random.Random(5)
    h = Harness(CFG, i_ready=0.3)
    I = CFG.input_size
    seq1 = [rng.randint(-32768, 32767) for _ in range(3 * I)]
    seq2 = [rng.randint(-32768, 32767) for _ in range(2 * I)]
    h.to_send += info(0)
    h.to_send += br.encode_frame(br.CMD_INPUT, 1, br.input_payload(True, enc(seq1[:2 * I])))
    h.to_send += br.encode_frame(br.CMD_INPUT, 2, br.input_payload(False, enc(seq1[2 * I:])))
    h.to_send += br.encode_frame(br.CMD_INPUT, 3, br.input_payload(True, enc(seq2)))
    h.to_send += br.encode_frame(br.CMD_OUTPUT, 50, br.output_payload(0, 2))
    h.to_send += br.encode_frame(br.CMD_OUTPUT, 51, br.output_payload(1, 9))  # repeats step 1
    h.to_send += br.encode_frame(br.CMD_OUTPUT, 52, br.output_payload(3, 9))  # releases all
    h.to_send += br.encode_frame(br.CMD_OUTPUT, 53, br.output_payload(1, 9))  # released: refused
    h.to_send += info(60, clear=False)
    outs = [[[rng.randint(-32768, 32767) for _ in range(2)] for _ in range(2)] for _ in range(3)]
    for step in outs:
        for j, beat in enumerate(step):
            h.out_beats.append((beat, j == len(step) - 1))
    frames = h.run(12000).frames()
    assert h.beats == ref_beats(CFG, seq1, True) + ref_beats(CFG, seq2, True)
    assert [f[:4] for f in frames[1:4]] == [(br.RSP_INPUT, 1, 0, 2), (br.RSP_INPUT, 2, 0, 3),
                                           (br.RSP_INPUT, 3, 0, 4)]
    payload = [ref_out_payload(CFG, step) for step in outs]
    assert frames[4] == (br.RSP_OUTPUT, 50, 0, 4, bytes([0, 0, 2]) + payload[0] + payload[1])
    assert frames[5] == (br.RSP_OUTPUT, 51, 0, 4, bytes([1, 0, 2]) + payload[1] + payload[2])
    assert frames[6] == (br.RSP_OUTPUT, 52, 0, 4, bytes([3, 0, 0]))
    assert frames[7] == (br.RSP_ERR, 53, 0, 4, bytes([br.ErrorCode.POSITION]))
    info_after = br.parse_info(frames[8][4])
    assert (info_after["fed"], info_after["head"]) == (5, 3)  # 5 input timesteps, 3 outputs
    assert len(frames) == 9


def test_sequence_rule_and_errors():
    h = Harness(CFG)
    corrupt = bytearray(br.encode_frame(br.CMD_WRITE, 21, br.write_payload(1, [0x22])))
    corrupt[4] ^= 0x40
    h.to_send += info(20)
    h.to_send += bytes([0x13, 0x37, br.ESC, 0x00, 0x55])  # line noise, a bad escape
    h.to_send += bytes(corrupt)
    h.to_send += br.encode_frame(br.CMD_WRITE, 21, br.write_payload(1, [0x11]))
    h.to_send += br.encode_frame(br.CMD_WRITE, 21, br.write_payload(1, [0x33]))  # duplicate
    h.to_send += bytes([0x42, 0xC0])  # a short frame
    h.to_send += br.encode_frame(0x7F, 22)  # unknown command
    h.to_send += br.encode_frame(br.CMD_READ, 99, bytes([1]))  # bad length
    h.to_send += br.encode_frame(br.CMD_WRITE, 30, br.write_payload(1, [0x44]))  # ahead: a gap
    h.to_send += br.encode_frame(br.CMD_WRITE, 22, br.write_payload(1, [0x55]))
    h.to_send += br.encode_frame(br.CMD_WRITE, 23 + 127, br.write_payload(1, [0x66]))  # ahead
    h.to_send += br.encode_frame(br.CMD_WRITE, 23 + 128, br.write_payload(1, [0x77]))  # behind
    h.to_send += br.encode_frame(br.CMD_READ, 98, br.read_payload(1, 1))
    frames = h.run(12000).frames()
    assert frames[0][:4] == (br.RSP_INFO, 20, br.STATUS_FRESH, 21)
    # A damaged frame's answer echoes its second byte as seq, whatever that was.
    assert frames[1][0] == br.RSP_ERR and frames[1][2:] == (0, 21, bytes([br.ErrorCode.ESCAPE]))
    assert frames[2][0] == br.RSP_ERR and frames[2][2:] == (0, 21, bytes([br.ErrorCode.CRC]))
    assert frames[3] == (br.RSP_WRITE, 21, 0, 22, b"")
    assert frames[4] == (br.RSP_WRITE, 21, br.STATUS_DUPLICATE, 22, b"")
    assert frames[5][0] == br.RSP_ERR and frames[5][2:] == (0, 22, bytes([br.ErrorCode.SHORT]))
    assert frames[6] == (br.RSP_ERR, 22, 0, 22, bytes([br.ErrorCode.COMMAND]))
    assert frames[7] == (br.RSP_ERR, 99, 0, 22, bytes([br.ErrorCode.LENGTH]))
    assert frames[8] == (br.RSP_ERR, 30, 0, 22, bytes([br.ErrorCode.SEQUENCE]))
    assert frames[9] == (br.RSP_WRITE, 22, 0, 23, b"")
    assert frames[10] == (br.RSP_ERR, 150, 0, 23, bytes([br.ErrorCode.SEQUENCE]))
    assert frames[11] == (br.RSP_WRITE, 151, br.STATUS_DUPLICATE, 23, b"")
    # Only the in-order writes ran: 0x11, then 0x55.
    assert frames[12] == (br.RSP_READ, 98, 0, 23, word_bytes(0x55))
    assert len(frames) == 13


def test_fresh_device_refuses_until_connect():
    h = Harness(CFG)
    h.to_send += br.encode_frame(br.CMD_WRITE, 0, br.write_payload(1, [0x12]))
    h.to_send += br.encode_frame(br.CMD_READ, 5, br.read_payload(1, 1))
    h.to_send += br.encode_frame(br.CMD_OUTPUT, 6, br.output_payload(0, 1))
    h.to_send += info(7, clear=False)  # a resync does not clear the reset flag
    h.to_send += br.encode_frame(br.CMD_READ, 8, br.read_payload(1, 1))
    h.to_send += info(9)  # connect does
    h.to_send += br.encode_frame(br.CMD_READ, 11, br.read_payload(1, 1))
    frames = h.run(6000).frames()
    fresh = br.STATUS_FRESH
    assert frames[0] == (br.RSP_ERR, 0, fresh, 0, bytes([br.ErrorCode.RESET]))
    assert frames[1] == (br.RSP_ERR, 5, fresh, 0, bytes([br.ErrorCode.RESET]))
    assert frames[2] == (br.RSP_ERR, 6, fresh, 0, bytes([br.ErrorCode.RESET]))
    assert frames[3][:4] == (br.RSP_INFO, 7, fresh, 8)
    assert frames[4] == (br.RSP_ERR, 8, fresh, 8, bytes([br.ErrorCode.RESET]))
    assert frames[5][:4] == (br.RSP_INFO, 9, fresh, 10)
    assert frames[6] == (br.RSP_READ, 11, 0, 10, word_bytes(0))  # the refused write did not run
    assert len(frames) == 7


def test_overflow_frame_is_rejected():
    h = Harness(CFG, rx_depth=64)
    h.to_send += info(0)
    h.to_send += br.encode_frame(br.CMD_WRITE, 1, br.write_payload(1, list(range(20))))
    h.to_send += br.encode_frame(br.CMD_READ, 2, br.read_payload(1, 1))
    frames = h.run(4000).frames()
    assert frames[1][0] == br.RSP_ERR and frames[1][4] == bytes([br.ErrorCode.OVERFLOW])
    assert frames[2] == (br.RSP_READ, 2, 0, 1, word_bytes(0))


def test_reference_codec_roundtrip():
    rng = random.Random(3)
    dec = br.SlipDecoder()
    for _ in range(200):
        payload = bytes(rng.choice([0xC0, 0xDB, 0xDC, 0xDD, rng.randrange(256)])
                        for _ in range(rng.randrange(40)))
        wire = br.encode_frame(rng.randrange(256), rng.randrange(256), payload)
        assert wire.count(br.END) == 2
        [(raw, ok)] = dec.feed(wire)
        assert ok and br.decode_frame(raw)[2] == payload


def test_crc_is_amaranths_and_one_definition():
    """The driver's CRC, the generic table code and amaranth.lib.crc built from the same
    parameters agree (the gateware instantiates exactly that Algorithm)."""
    from amaranth.lib import crc

    alg = crc.Algorithm(**br.CRC_PARAMS)(data_width=8)
    rng = random.Random(4)
    for n in range(60):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert br.crc(data) == br.crc(data, generic=True) == alg.compute(data)
    assert br.crc(b"123456789") == 0xCBF43926  # the published check value of CRC-32/ISO-HDLC


def test_bridge_config_errors():
    with pytest.raises(ValueError, match="power of two"):
        Bridge(CFG, rx_depth=100)
    with pytest.raises(TypeError, match="DeltaGRUConfig"):
        Bridge({"input_size": 3})


def run_receiver(wire, *, ready, rx_gap=0, seed=0, depth_log2=8, cycles=None):
    """Feed ``wire`` into a :class:`_Receiver`, ``ready(cycle)`` on ``r.ready``.

    Returns the ``r`` transfers as (cycle, byte), ``r.valid`` of every cycle, the (valid, ready,
    payload) of every cycle and the descriptors taken (``desc.ready`` is always 1)."""
    rng = random.Random(seed)
    rcv = _Receiver(depth_log2)
    got, valids, trace, descs = [], [], [], []
    end_cycles = []

    async def rx_proc(ctx):
        cycle = 0
        for byte in wire:
            ctx.set(rcv.rx.payload, byte)
            ctx.set(rcv.rx.valid, 1)
            if byte == br.END:
                end_cycles.append(cycle)
            await ctx.tick()
            cycle += 1
            ctx.set(rcv.rx.valid, 0)
            for _ in range(rng.randint(0, rx_gap)):
                await ctx.tick()
                cycle += 1

    async def r_proc(ctx):
        ctx.set(rcv.desc.ready, 1)
        cycle = 0
        while True:
            ctx.set(rcv.r.ready, ready(cycle))
            _, _, valid, rdy, payload, dvalid, dpayload = await ctx.tick().sample(
                rcv.r.valid, rcv.r.ready, rcv.r.payload, rcv.desc.valid, rcv.desc.payload)
            valids.append(valid)
            trace.append((valid, rdy, payload))
            if valid and rdy:
                got.append((cycle, payload))
            if dvalid:
                descs.append((int(dpayload.length), int(dpayload.error)))
            cycle += 1

    sim = Simulator(rcv)
    sim.add_clock(1e-8)
    sim.add_testbench(rx_proc)
    sim.add_testbench(r_proc, background=True)
    sim.run_until((cycles or len(wire) * (rx_gap + 1) + 600) * 1e-8)
    return got, valids, trace, descs, end_cycles


def test_receiver_r_stream_sustains_one_byte_per_cycle():
    """Frames committed while ``r`` is held, then ``r.ready`` held high: every byte, in order,
    one per cycle (the registered output stage keeps the memory's throughput)."""
    rng = random.Random(11)
    frames = [(rng.randrange(256), rng.randrange(256),
               bytes(rng.choice([br.END, br.ESC, rng.randrange(256)])
                     for _ in range(rng.randrange(1, 40)))) for _ in range(5)]
    wire = b"".join(br.encode_frame(*f) for f in frames)
    expect = b"".join(bytes([c, s]) + p for c, s, p in frames)
    assert len(expect) < 200  # fits the 256-byte ring with r held
    start = len(wire) + 20
    got, valids, _, descs, _ = run_receiver(wire, ready=lambda c: c >= start)
    assert bytes(b for _, b in got) == expect
    assert [c for c, _ in got] == list(range(start, start + len(expect)))
    assert descs == [(2 + len(p), 0) for _, _, p in frames]
    assert not any(valids[start + len(expect):])


def test_receiver_r_stream_under_backpressure():
    """Random gaps on ``rx``, random ``r.ready`` and damaged frames in between: the good frames'
    bytes come out exactly, and a byte offered on ``r`` stays put until it is taken."""
    rng = random.Random(12)
    wire, expect, descs_expect = bytearray(), bytearray(), []
    for k in range(40):
        code, seq = rng.randrange(256), rng.randrange(256)
        payload = bytes(rng.choice([br.END, br.ESC, rng.randrange(256)])
                        for _ in range(rng.randrange(0, 30)))
        frame = bytearray(br.encode_frame(code, seq, payload))
        if k % 7 == 3:
            frame[2] ^= 0x01  # a CRC error: the frame is dropped from the ring
            if frame[2] in (br.END, br.ESC):
                frame[2] ^= 0x03
            descs_expect.append(None)
        else:
            expect += bytes([code, seq]) + payload
            descs_expect.append((2 + len(payload), 0))
        wire += frame
    ready_bits = [rng.random() < 0.6 for _ in range(20000)]
    got, _, trace, descs, _ = run_receiver(bytes(wire), ready=lambda c: ready_bits[c], rx_gap=2,
                                           seed=13, cycles=len(ready_bits) - 10)
    assert bytes(b for _, b in got) == bytes(expect)
    assert len(descs) == len(descs_expect)
    for d, e in zip(descs, descs_expect):
        assert d == e if e else (d[0] == 0 and d[1] == br.ErrorCode.CRC)
    for (v0, r0, p0), (v1, _, p1) in zip(trace, trace[1:]):
        if v0 and not r0:
            assert v1 and p1 == p0


def test_receiver_latency():
    """A frame's first byte is offered on ``r`` three cycles after its closing ``END`` is taken:
    the commit, the memory read, the output register."""
    wire = br.encode_frame(br.CMD_INFO, 5, b"\x01")
    got, valids, _, _, ends = run_receiver(wire, ready=lambda c: 1)
    assert valids.index(1) - ends[-1] == 3
    assert [b for _, b in got] == [br.CMD_INFO, 5, 1]


def _rtlil_driver(il, wire):
    """The type and port of the cell whose output is exactly ``wire`` in RTLIL text ``il``."""
    for cell in re.finditer(r"^  cell (\S+) \S+\n(.*?)^  end", il, re.M | re.S):
        for port, sig in re.findall(r"connect \\(\w+) (\S+)", cell.group(2)):
            if sig == "\\" + wire and port in ("Q", "DATA", "Y"):
                return cell.group(1), port
    return None


def test_receiver_r_stream_comes_from_flip_flops():
    """``r.payload`` and ``r.valid`` are flip-flop outputs, not the memory's read data: an ECP5
    block RAM without its output register has a 5.8 ns clock-to-out, too slow to feed the
    executor's logic at 100 MHz (docs/benchmarks/fmax)."""
    from amaranth.back import rtlil

    il = rtlil.convert(_Receiver(6))
    assert _rtlil_driver(il, "r__payload") == ("$dff", "Q")
    assert _rtlil_driver(il, "r__valid") == ("$dff", "Q")


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_loopback(divisor):
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF, 0x55]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def send(ctx):
        for b in data:
            ctx.set(tx.i.payload, b)
            ctx.set(tx.i.valid, 1)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)

    async def recv(ctx):
        ctx.set(rx.o.ready, 1)
        while True:
            _, _, valid, payload, err = await ctx.tick().sample(rx.o.valid, rx.o.payload, rx.error)
            assert not err
            if valid:
                got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(send)
    sim.add_testbench(recv, background=True)
    sim.run_until((len(data) + 2) * 10 * divisor * 1e-8)
    assert got == data


def test_uart_framing_error():
    m = Module()
    m.submodules.rx = rx = UARTRx(8)
    seen = {"error": 0, "valid": 0}

    async def drive(ctx):
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(20)
        ctx.set(rx.rx, 0)  # start bit, eight 0 data bits and a stop bit that reads 0 (a break)
        await ctx.tick().repeat(8 * 12)
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(40)

    async def watch(ctx):
        ctx.set(rx.o.ready, 1)
        async for _, _, err, valid in ctx.tick().sample(rx.error, rx.o.valid):
            seen["error"] += err
            seen["valid"] += valid

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert seen == {"error": 1, "valid": 0}


def test_uart_divisor_checks():
    assert uart_divisor(100e6, 1_000_000) == 100
    assert uart_divisor(25e6, 115200) == 217
    with pytest.raises(ValueError, match="off by"):
        uart_divisor(25e6, 3_000_000, max_error=0.01)
    with pytest.raises(ValueError, match="at least"):
        uart_divisor(10e6, 5_000_000)


def test_output_slots_ready_is_registered_and_exact():
    """``o.ready`` of the output slots is a flip-flop, and on every cycle it equals the rule: not
    writing a beat, and ``head - tail`` below the slot count, with the tail of the cycle before
    (a release frees its slots one cycle later: a stale tail only understates the room). The
    core is offered beats at random and the executor releases at random, so the slots run full,
    empty and wrap the 16-bit counters' low bits."""
    from amaranth.back import rtlil

    from deltahw.gateware.bridge import _OutputSlots

    cfg = CFG
    slots = _OutputSlots(cfg)
    assert _rtlil_driver(rtlil.convert(_OutputSlots(cfg)), "o__ready") == ("$dff", "Q")
    nbytes = cfg.act_width * br.elem_bytes(cfg)
    beats_per_step = -(-cfg.output_size // cfg.act_width)
    rng = random.Random(21)
    checked = {"cycles": 0, "full": 0, "accepted": 0}

    async def bench(ctx):
        writing = 0  # cycles of the current beat's byte writes still to come
        beat_in_step = 0
        prev_tail = 0
        for cycle in range(9000):
            valid = rng.random() < 0.8
            ctx.set(slots.o.valid, valid)
            ctx.set(slots.o.payload.last, beat_in_step == beats_per_step - 1)
            head, tail = ctx.get(slots.head), ctx.get(slots.tail)
            # No releases for the first 4000 cycles (the slots fill up), then frequent ones.
            release = cycle > 4000 and rng.random() < 0.1 and head != tail
            ctx.set(slots.release, release)
            pos = (tail + rng.randint(1, (head - tail) % 65536)) % 65536 if release else 0
            ctx.set(slots.release_pos, pos)
            expect = writing == 0 and (head - prev_tail) % 65536 < (1 << slots.slots_log2)
            prev_tail = tail
            assert ctx.get(slots.o.ready) == expect, (checked["cycles"], head, tail, writing)
            checked["cycles"] += 1
            checked["full"] += (head - tail) % 65536 == (1 << slots.slots_log2)
            if writing:
                writing -= 1
            elif valid and expect:
                writing = nbytes
                checked["accepted"] += 1
                beat_in_step = (beat_in_step + 1) % beats_per_step
            await ctx.tick()

    sim = Simulator(slots)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert checked["full"] > 100 and checked["accepted"] > 200


@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.7, 0.4), (0.3, 0.9)])
def test_skid_buffer(p_valid, p_ready):
    """The skid buffer passes every beat once, in order, under random valid and ready; a beat
    offered on ``o`` stays until taken; ``o.valid``/``o.payload`` and ``i.ready`` are flip-flop
    outputs; with both sides always willing it moves one beat per cycle, one cycle late."""
    from amaranth.back import rtlil

    from deltahw.gateware.bridge import SkidBuffer

    il = rtlil.convert(SkidBuffer(12))
    for wire in ("o__valid", "o__payload", "skid_valid"):
        assert _rtlil_driver(il, wire) == ("$dff", "Q"), wire
    # i.ready is the inverse of the skid_valid flip-flop, nothing else.
    cell = next(c for c in il.split("  cell ")[1:] if "connect \\Y \\i__ready\n" in c)
    assert cell.startswith("$not ") and "connect \\A \\skid_valid" in cell, cell
    dut = SkidBuffer(12)
    rng = random.Random(int(p_valid * 10 + p_ready * 100))
    sent, got, trace = [], [], []
    n = 400

    async def src(ctx):
        k = 0
        while k < n:
            if rng.random() < p_valid:
                ctx.set(dut.i.payload, k)
                ctx.set(dut.i.valid, 1)
                await ctx.tick().until(dut.i.ready)
                sent.append(k)
                k += 1
                ctx.set(dut.i.valid, 0)
            else:
                await ctx.tick()

    async def sink(ctx):
        cycle = 0
        while True:
            ctx.set(dut.o.ready, rng.random() < p_ready)
            _, _, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            trace.append((valid, ready, payload))
            if valid and ready:
                got.append((cycle, payload))
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(src)
    sim.add_testbench(sink, background=True)
    sim.run_until(40 * n * 1e-8)
    assert [v for _, v in got] == sent == list(range(n))
    for (v0, r0, p0), (v1, _, p1) in zip(trace, trace[1:]):
        if v0 and not r0:
            assert v1 and p1 == p0
    if p_valid == 1.0 and p_ready == 1.0:
        assert [c for c, _ in got] == list(range(1, n + 1))
