"""cocotb test of the testbench itself on ``echo_design.EchoCore`` (``test_rtl_toolchain.py``)."""

from __future__ import annotations

import os
import random

from deltahw.verify.tb import TB, Expected

import cocotb

KEY_ADDR = 0x20
ID_MAGIC = 0x44485731


@cocotb.test()
async def echo(dut):
    elems, bits = int(os.environ["ECHO_ELEMS"]), int(os.environ["ECHO_BITS"])
    broken = os.environ.get("ECHO_BROKEN") == "1"
    tb = TB(dut, in_elems=elems, out_elems=elems, elem_bits=bits, seed=5, idle=0.4,
            backpressure=0.5)
    await tb.reset()
    assert await tb.bus.read(0x00) == ID_MAGIC
    rng = random.Random(1)
    w = elems * bits
    for key in (0, 0x5A5A5A5A, 0xFFFFFFFF):
        await tb.bus.write(KEY_ADDR, key)
        assert await tb.bus.read(KEY_ADDR) == key
        mask = sum((key & ((1 << bits) - 1)) << (e * bits) for e in range(elems))
        beats = [rng.getrandbits(w + 1) for _ in range(300)]
        tb.expect(Expected((b & ((1 << w) - 1) ^ mask) | (b >> w) << w, "echo", k, 0, [])
                  for k, b in enumerate(beats))
        tb.source.send(beats)
        await tb.wait_outputs(20_000, "echo beats")
        await tb.source.wait_idle()
    await tb.check_nothing_left()
    if broken:
        assert any("valid dropped" in e for e in tb.errors), (
            f"the sink did not catch the broken design's protocol violation: {tb.errors[:3]}")
        assert tb.checked == 900
    else:
        assert not tb.errors, tb.errors[:5]
        assert tb.checked == 900 and tb.source.sent == 900
