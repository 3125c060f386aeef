"""cocotb side of the end-to-end host test: the host driver's bytes on the top level's UART pins.

``deltahw.host.Device`` runs unchanged in a thread (``cocotb.task.bridge``); its transport turns
``write`` into bits on ``uart_rx`` and collects bytes sampled from ``uart_tx`` for ``read``, at
``E2E_DIVISOR`` clock cycles per bit, and gives the driver the simulated time as its clock (so its
timeouts are in simulated seconds). A :class:`deltahw.linksim.FaultyLine` between the driver and
the pins resets the device in the middle of one run, and loses, damages, duplicates and truncates
frames and inserts garbage in both directions during another. The pytest side
(``test_host_e2e.py``) prepared the vectors (``E2E_VECTORS``: inputs and the golden model's outputs
and cycle counts) and reads the JSON report (``E2E_REPORT``). Progress goes to stdout.
"""

import collections
import json
import os
import time

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
    async def monotonic(self):
        return cocotb.utils.get_sim_time("ns") * 1e-9

    @resume
    async def reset_device(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

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


def _progress(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _check(res, expect, cycles):
    return {
        "match": bool(np.array_equal(res.outputs, expect)),
        "mismatches": int((res.outputs != expect).sum()) if res.outputs.shape == expect.shape
        else -1,
        "counters": res.counters,
        "golden_cycles_total": int(cycles.sum()),
    }


def host_session(uart, vectors, model_b):
    """The blocking host-side script: what a user's program does with a board."""
    from deltahw.host import Device, DeviceResetError
    from deltahw.linksim import FaultyLine, Schedule

    report = {}
    line = FaultyLine(uart, Schedule())
    line.enabled = False
    # Timeouts in simulated seconds: a few full receive buffers at the simulated baud rate.
    byte_time = 10 * DIV * 10e-9
    dev = Device(line, timeout=2000 * byte_time, retries=4, quiet_time=50 * byte_time,
                 name="simulated board")
    _progress("connect")
    report["shape"] = dev.connect()
    x = vectors["x"]
    _progress(f"run {len(x)} timesteps on the power-on weights")
    res = dev.run(x)  # the power-on weights from the .mem files
    report["power_on"] = _check(res, vectors["expect_a"], vectors["cycles_a"])
    _progress(f"power-on run: match={report['power_on']['match']}")

    # A device reset in the middle of a run: reported (never a silent wrong output); connect
    # recovers, and the weights in BRAM and the registers are the power-on ones again.
    line.count = {"down": 0, "up": 0}
    line.schedule = Schedule(faults={("down", 2): "reset"})
    line.enabled = True
    _progress("run with a device reset in the middle")
    try:
        dev.run(x)
        report["reset"] = {"raised": None}
    except DeviceResetError as e:
        report["reset"] = {"raised": type(e).__name__, "message": str(e)}
    line.enabled = False
    dev.connect()
    res_r = dev.run(x)
    report["reset"].update(_check(res_r, vectors["expect_a"], vectors["cycles_a"]))
    _progress(f"after the reset: {report['reset']['raised']}; reconnected, "
              f"match={report['reset']['match']}; load model B over the link")

    dev.load_model(model_b)  # new weights and thresholds over the link, no new bitstream
    _progress(f"loaded ({dev.stats['bytes_sent']} bytes sent so far); run again")
    res_b = dev.run(x)
    report["runtime_loaded"] = _check(res_b, vectors["expect_b"], vectors["cycles_b"])
    _progress(f"run-time-loaded run: match={report['runtime_loaded']['match']}")

    # Faults on the line during a run, both directions: the outputs must not change.
    before = dict(dev.stats)
    line.count = {"down": 0, "up": 0}
    line.injected.clear()
    line.schedule = Schedule(faults={("down", 1): "drop", ("up", 2): "damage",
                                     ("down", 3): "garbage", ("up", 4): "dup",
                                     ("down", 5): "truncate", ("up", 6): "drop",
                                     ("down", 7): "dup", ("up", 8): "truncate"})
    line.enabled = True
    _progress("run with faults injected on the line")
    res_f = dev.run(x)
    line.enabled = False
    report["faulty_line"] = _check(res_f, vectors["expect_b"], vectors["cycles_b"])
    report["faulty_line"]["injected"] = dict(line.injected)
    report["faulty_line"]["link"] = {k: v - before.get(k, 0) for k, v in dev.stats.items()}
    _progress(f"faulty-line run: match={report['faulty_line']['match']}, injected "
              f"{dict(line.injected)}")
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
    for run in ("power_on", "runtime_loaded", "faulty_line", "reset"):
        assert report[run]["match"], report[run]
    assert report["reset"]["raised"] == "DeviceResetError", report["reset"]
