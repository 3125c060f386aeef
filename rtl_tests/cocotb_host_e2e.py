"""cocotb side of the end-to-end host test: the host driver's bytes on the top level's UART pins.

``deltahw.host.Device`` runs unchanged in a thread (``cocotb.task.bridge``); its transport turns
``write`` into bits on ``uart_rx`` and collects bytes sampled from ``uart_tx`` for ``read``, at
``E2E_DIVISOR`` clock cycles per bit. The pytest side (``test_host_e2e.py``) prepared the vectors
(``E2E_VECTORS``: inputs and the golden model's outputs and cycle counts) and reads the JSON report
(``E2E_REPORT``).
"""

import collections
import json
import os

import numpy as np
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer

import cocotb

DIV = int(os.environ.get("E2E_DIVISOR", "8"))


class SimUART:
    """Transport for ``deltahw.host.Device`` backed by the simulated UART pins."""

    def __init__(self, dut):
        self.dut = dut
        self.to_device = collections.deque()
        self.from_device = bytearray()
        self.tx_event = Event()
        self.rx_event = Event()
        self.bytes_sent = 0
        self.bytes_received = 0

    async def drive(self):
        self.dut.uart_rx.value = 1
        while True:
            if not self.to_device:
                self.tx_event.clear()
                await self.tx_event.wait()
                continue
            b = self.to_device.popleft()
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                self.dut.uart_rx.value = bit
                await ClockCycles(self.dut.clk, DIV)
            self.bytes_sent += 1

    async def monitor(self):
        while True:
            await FallingEdge(self.dut.uart_tx)
            await ClockCycles(self.dut.clk, DIV // 2)
            if int(self.dut.uart_tx.value) != 0:
                continue
            b = 0
            for i in range(8):
                await ClockCycles(self.dut.clk, DIV)
                b |= int(self.dut.uart_tx.value) << i
            await ClockCycles(self.dut.clk, DIV)
            assert int(self.dut.uart_tx.value) == 1, "the device sent a byte without a stop bit"
            self.from_device.append(b)
            self.bytes_received += 1
            self.rx_event.set()

    # --- transport interface (called from the host driver's thread) -----------------------------
    @property
    def in_waiting(self):
        return len(self.from_device)

    @resume
    async def write(self, data):
        self.to_device.extend(data)
        self.tx_event.set()

    @resume
    async def read(self, n):
        if not self.from_device:
            self.rx_event.clear()
            await First(self.rx_event.wait(), Timer(400 * DIV * 10, unit="ns"))
        data = bytes(self.from_device[:n])
        del self.from_device[:n]
        return data


def host_session(link, vectors, model_b):
    """The blocking host-side script: what a user's program does with a board."""
    from deltahw.host import Device

    report = {}
    dev = Device(link, timeout=120.0, quiet_time=0.001, name="simulated board")
    report["shape"] = dev.connect()
    x = vectors["x"]
    res = dev.run(x)  # the power-on weights from the .mem files
    report["power_on"] = {
        "match": bool(np.array_equal(res.outputs, vectors["expect_a"])),
        "mismatches": int((res.outputs != vectors["expect_a"]).sum()),
        "counters": res.counters,
        "golden_cycles_total": int(vectors["cycles_a"].sum()),
    }
    dev.load_model(model_b)  # new weights and thresholds over the link, no new bitstream
    res_b = dev.run(x)
    report["runtime_loaded"] = {
        "match": bool(np.array_equal(res_b.outputs, vectors["expect_b"])),
        "mismatches": int((res_b.outputs != vectors["expect_b"]).sum()),
        "counters": res_b.counters,
        "golden_cycles_total": int(vectors["cycles_b"].sum()),
    }
    report["link"] = dict(dev.stats)
    return report


@cocotb.test()
async def host_e2e(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.uart_rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 10)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 10)
    link = SimUART(dut)
    cocotb.start_soon(link.drive())
    cocotb.start_soon(link.monitor())
    vectors = dict(np.load(os.environ["E2E_VECTORS"]))
    report = await bridge(host_session)(link, vectors, os.environ["E2E_MODEL_B"])
    report["bytes_to_device"] = link.bytes_sent
    report["bytes_from_device"] = link.bytes_received
    report["sim_time_ns"] = cocotb.utils.get_sim_time("ns")
    with open(os.environ["E2E_REPORT"], "w") as f:
        json.dump(report, f, indent=1, default=str)
    assert report["power_on"]["match"], report["power_on"]
    assert report["runtime_loaded"]["match"], report["runtime_loaded"]
