"""Host driver against the Python reference device (:class:`deltahw.linksim.RefDevice`).

The reference device implements the link protocol's device side (sequence rule, duplicates, the
fresh flag, output slots) and the core's parameter registers, and computes outputs with the golden
model from the parameters the driver loaded, so these tests check the driver's framing, windowing,
recovery, flow control and weight packing. :class:`deltahw.linksim.FaultyLine` injects faults at
chosen frames; time is simulated (the device's clock), so timeouts cost no wall time. The RTL
bridge is exercised by ``tests/test_bridge.py``, ``tests/test_link_faults.py`` and
``rtl_tests/test_host_e2e.py``.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from deltahw import link
from deltahw.config import DeltaGRUConfig
from deltahw.golden import run_golden
from deltahw.host import (
    ChecksumError,
    Device,
    DeviceError,
    DeviceResetError,
    DeviceTimeoutError,
    LinkLostError,
    NoDeviceError,
    WrongBitstreamError,
)
from deltahw.layout import Layout
from deltahw.linksim import FaultyLine, RefDevice, Schedule
from deltahw.model import from_modules


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


def connect(dev_model, schedule=None, *, timeout=0.05, retries=3, **kw):
    ref = RefDevice(dev_model.config, deadline=1000.0, **kw)
    line = FaultyLine(ref, schedule or Schedule())
    return ref, line, Device(line, timeout=timeout, retries=retries, quiet_time=0.005)


def expected_writes(model, x=None):
    """The register writes a clean session (connect, load_model[, run]) executes."""
    ref, _, dev = connect(model)
    dev.connect()
    dev.load_model(model)
    if x is not None:
        dev.run(x.numpy())
    return ref.writes


def test_load_run_bit_exact(model):
    ref, _, dev = connect(model)
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
    assert ref.flow_violations == 0


def test_long_sequence_spans_many_frames(model):
    ref, _, dev = connect(model, rx_depth=64)
    dev.connect()
    dev.load_model(model)
    x = inputs(model, T=30, seed=5)
    assert np.array_equal(dev.run(x.numpy()).outputs, run_golden(model, x).outputs[0].numpy())
    assert dev.stats["frames_sent"] > 10
    assert ref.flow_violations == 0


def _frames_of(model, phase):
    """(first, count) of the up/down frame indices of ``phase`` in a clean session."""
    ref, line, dev = connect(model)
    dev.connect()
    start = dict(line.count)
    dev.load_model(model)
    if phase == "run":
        start = dict(line.count)
        dev.run(inputs(model).numpy())
    return start, {d: line.count[d] - start[d] for d in start}


@pytest.mark.parametrize("kind", ["drop", "damage"])
def test_one_lost_or_damaged_answer_during_load_model(model, kind):
    """Regression: with several requests in flight, one lost or damaged answer stalled the
    driver for ever (go-back-N against one-deep duplicate detection)."""
    start, n = _frames_of(model, "load")
    want = expected_writes(model)
    assert n["up"] >= 20  # many requests in flight: the case that failed
    for i in range(0, n["up"], 2):
        ref, _, dev = connect(model, Schedule(faults={("up", start["up"] + i): kind}))
        dev.connect()
        dev.load_model(model)
        assert ref.writes == want, f"answer {i} {kind}: the device ran other writes"
        assert ref.now < 1.0


@pytest.mark.parametrize("kind", ["drop", "damage", "dup", "truncate", "garbage"])
def test_one_fault_in_each_direction_during_run(model, kind):
    """Lost, damaged, duplicated, truncated output answers or requests: outputs stay exact (a lost
    or repeated output frame used to be reported as lost)."""
    start, n = _frames_of(model, "run")
    kind_offset = {"drop": 0, "damage": 1, "dup": 2, "truncate": 3, "garbage": 4}
    x = inputs(model)
    gold = run_golden(model, x).outputs[0].numpy()
    for direction in ("down", "up"):
        for i in range(kind_offset[kind], n[direction], 5):
            ref, line, dev = connect(model, Schedule(faults={(direction, start[direction] + i):
                                                             kind}))
            dev.connect()
            dev.load_model(model)
            assert np.array_equal(dev.run(x.numpy()).outputs, gold), (direction, i)
            assert sum(line.injected.values()) == 1


def test_connect_returns_on_a_line_that_never_goes_quiet(model):
    """Regression: connect() waited for silence without a bound."""

    class Chatty(RefDevice):
        def read(self, n):
            if not self.out:
                self.now += self.read_wait
                return b"\x55"  # never quiet: noise between the frames
            return super().read(n)

        @property
        def in_waiting(self):
            return max(1, len(self.out))

    ref = Chatty(model.config, deadline=100.0)
    dev = Device(ref, timeout=0.05, quiet_time=0.005)
    assert dev.connect()["hidden_size"] == 8
    assert ref.now < 1.0


def test_failed_run_does_not_poison_the_device(model):
    """Regression: after a failed run the same Device failed every later run."""
    ref, line, dev = connect(model)
    dev.connect()
    dev.load_model(model)
    x = inputs(model)
    gold = run_golden(model, x).outputs[0].numpy()
    ref.silent = True
    with pytest.raises(DeviceTimeoutError, match="stopped answering"):
        dev.run(x.numpy())
    ref.silent = False
    assert np.array_equal(dev.run(x.numpy()).outputs, gold)  # resynchronised by itself
    # A run that fails half-way (lost inputs and outputs after a few frames) and a new connect.
    line.schedule = Schedule(rate=1.0, kinds=("drop",))
    with pytest.raises(DeviceError):
        dev.run(x.numpy())
    line.enabled = False
    dev.connect()
    assert np.array_equal(dev.run(x.numpy()).outputs, gold)


def test_device_reset_is_reported_until_connect(model):
    ref, _, dev = connect(model)
    dev.connect()
    dev.load_model(model)
    dev.read("STATUS")
    ref.reset_device()
    for _ in range(2):  # every later call says so, not only the first
        with pytest.raises(DeviceResetError, match="was reset"):
            dev.read("STATUS")
    with pytest.raises(DeviceResetError):
        dev.run(inputs(model).numpy())
    dev.connect()
    dev.load_model(model)
    x = inputs(model)
    assert np.array_equal(dev.run(x.numpy()).outputs, run_golden(model, x).outputs[0].numpy())


def test_reset_during_load_is_never_silent(model):
    start, n = _frames_of(model, "load")
    for i in range(0, n["down"], 7):
        ref, _, dev = connect(model, Schedule(faults={("down", start["down"] + i): "reset"}))
        dev.connect()
        with pytest.raises(DeviceResetError):
            dev.load_model(model)
            dev.run(inputs(model).numpy())


def test_unplugged_adapter_is_a_device_error(model):
    """Regression: an OSError from the port escaped as a traceback."""

    class Unplugged(RefDevice):
        def write(self, data):
            if self.gone:
                raise OSError(5, "Input/output error")
            super().write(data)

    ref = Unplugged(model.config, deadline=100.0)
    ref.gone = False
    dev = Device(ref, timeout=0.05, quiet_time=0.005)
    dev.connect()
    ref.gone = True
    with pytest.raises(LinkLostError, match="failed .*Input/output error.*adapter") as e:
        dev.read("STATUS")
    assert isinstance(e.value, DeviceError)


def test_host_does_not_import_amaranth():
    code = ("import sys, deltahw.host, deltahw.link, deltahw.linksim; "
            "assert 'amaranth' not in sys.modules, sorted(m for m in sys.modules "
            "if m.startswith('amaranth'))")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrong_bitstream_and_shape(model):
    ref = RefDevice(model.config, ident=0x12345678)
    with pytest.raises(WrongBitstreamError, match="not a deltahw accelerator"):
        Device(ref, timeout=0.05).connect()
    other = from_modules(torch.nn.GRU(5, 6, 2), torch.nn.Linear(6, 3), lanes=6, act_width=1,
                         lanes_per_bank=3, enc_width=2)
    ref, _, dev = connect(model)
    dev.connect()
    with pytest.raises(WrongBitstreamError, match="hidden_size: model 6, device 8"):
        dev.load_model(other)


def test_no_device_and_timeouts(model):
    ref = RefDevice(model.config)
    ref.silent = True
    with pytest.raises(NoDeviceError, match="Nothing answers"):
        Device(ref, timeout=0.02, retries=1, quiet_time=0.001).connect()
    assert ref.now < 0.1  # bounded: (retries + 1) timeouts plus the quiet wait
    ref, _, dev = connect(model)
    with pytest.raises(NoDeviceError, match="not connected"):
        dev.read("STATUS")
    dev.connect()
    ref.silent = True
    with pytest.raises(DeviceTimeoutError, match="stopped answering"):
        dev.read("STATUS")
    with pytest.raises(NoDeviceError, match="Cannot open serial port"):
        Device.open("/dev/does-not-exist-deltahw")


def test_persistent_damage_gives_checksum_error_in_bounded_time(model):
    ref, line, dev = connect(model)
    dev.connect()
    line.schedule = Schedule(rate=1.0, kinds=("damage",))
    t0 = ref.now
    with pytest.raises(ChecksumError, match="keeps damaging"):
        dev.write("THETA_X0", 3)
    assert ref.now - t0 <= (dev.retries + 2) * dev.timeout


def test_input_validation(model):
    ref, _, dev = connect(model)
    dev.connect()
    with pytest.raises(ValueError, match=r"\(T, 5\)"):
        dev.run(np.zeros((3, 4), np.int64))
    with pytest.raises(ValueError, match="quantize first"):
        dev.run(np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="one per layer"):
        dev.set_thresholds(theta_x=[1, 2, 3])


def test_config_check_uses_elem_bytes():
    cfg = DeltaGRUConfig(input_size=3, hidden_size=2, lanes=6, act_width=1, lanes_per_bank=3)
    assert link.elem_bytes(cfg) == 2


@pytest.mark.parametrize("task", ["classification", "timestep-classification",
                                  "timestep-regression"])
def test_cli_run_reports_the_task_metric(model, task, tmp_path, monkeypatch, capsys):
    """``python -m deltahw.host run MODEL --input x.npy --labels y.npy`` on the reference device:
    the model's task metric of the device's outputs, per timestep for the per-timestep tasks
    (expected values computed here by hand from the golden model's outputs)."""
    from deltahw import host
    from deltahw.export import export_model

    T, lsb = 9, model.config.act.lsb
    rng = np.random.default_rng(4)
    meta = {"task": task}
    if task == "classification":
        y = np.array(2)
    elif task == "timestep-classification":
        y = rng.integers(0, 3, T)
    else:
        y = rng.normal(1.0, 3.0, (T, 3))
        meta.update(target_mean=[1.0, 0.0, -1.0], target_std=[3.0, 1.0, 0.5])
    m = model.with_config(model.config)
    m.meta = meta
    export_model(m, tmp_path / "exp")
    g = torch.Generator().manual_seed(0)
    x = torch.cumsum(torch.randn(T, 5, generator=g) * 0.3, 0).numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)

    def fake_open(port, **kw):
        _, _, dev = connect(model)
        dev.connect()
        return dev

    monkeypatch.setattr(host.Device, "open", staticmethod(fake_open))
    args = ["--port", "sim", "run", str(tmp_path / "exp"), "--input", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"), "--load"]
    assert host.main(args) == 0
    text = capsys.readouterr().out
    assert "outputs match the golden model" in text
    out = run_golden(model, model.quantize_input(torch.from_numpy(x))[0]).outputs[0].numpy() * lsb
    if task == "classification":
        assert "classification: accuracy 100.00 %" in text if out[-1].argmax() == 2 else \
            "classification: accuracy 0.00 %" in text
    elif task == "timestep-classification":
        assert f"per-timestep accuracy {100 * np.mean(out.argmax(-1) == y):.2f} %" in text
    else:
        pred = out * np.array([3.0, 1.0, 0.5]) + np.array([1.0, 0.0, -1.0])
        rmse, mae = np.sqrt(np.mean((pred - y) ** 2)), np.mean(np.abs(pred - y))
        assert f"RMSE {rmse:.4g}, MAE {mae:.4g} (data units" in text
    # Labels that do not fit the task: one sentence, before the device is touched.
    np.save(tmp_path / "bad.npy", np.zeros((T + 1, 3)) if task == "timestep-regression"
            else np.full(T if task != "classification" else (), 7))
    monkeypatch.setattr(host.Device, "open", None)  # never reached
    args[-2] = str(tmp_path / "bad.npy")
    assert host.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert ("expected finite targets of shape (9, 3)" in err if task == "timestep-regression"
            else "the model has 3 classes (0..2)" in err)
