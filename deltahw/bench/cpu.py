"""CPU reference on the machine running the benchmark: ``torch.nn.GRU`` (float32, batch 1)
per-timestep latency and streaming throughput, and the golden model's throughput."""

from __future__ import annotations

import os
import time

import torch

from ..golden import run_golden

__all__ = ["torch_gru_reference", "golden_throughput", "dense_macs_per_timestep", "machine_info"]


def _timeit(fn, min_time=0.5):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_time:
            return el / n


def dense_macs_per_timestep(cfg) -> int:
    """MACs of one dense GRU timestep (all layers and the head)."""
    return sum(3 * cfg.hidden_size * (cfg.layer_input_size(l) + cfg.hidden_size)
               for l in range(cfg.num_layers)) + cfg.hidden_size * cfg.output_size


def machine_info() -> dict:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "load_average": list(os.getloadavg())}


def torch_gru_reference(model, threads: int = 1, steps: int = 200, min_time=0.5) -> dict:
    """Float ``torch.nn.GRU`` of the model's shape (its dequantized weights), batch 1.

    ``latency_us``: one timestep at a time (a streaming application's per-sample latency).
    ``throughput_steps_s``: a whole sequence of ``steps`` timesteps in one call.
    """
    cfg = model.config
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    try:
        gru = torch.nn.GRU(cfg.input_size, cfg.hidden_size, cfg.num_layers)
        sd = model.float_params()
        gru.load_state_dict({k: v for k, v in sd.items() if not k.startswith("head.")})
        head = None
        if cfg.has_head:
            head = torch.nn.Linear(cfg.hidden_size, cfg.output_size)
            head.weight.data, head.bias.data = sd["head.weight"], sd["head.bias"]
        gru.eval()
        x1 = torch.randn(1, 1, cfg.input_size)
        xs = torch.randn(steps, 1, cfg.input_size)
        h = torch.zeros(cfg.num_layers, 1, cfg.hidden_size)
        with torch.inference_mode():
            def one():
                y, _ = gru(x1, h)
                if head is not None:
                    head(y)

            def seq():
                y, _ = gru(xs, h)
                if head is not None:
                    head(y)

            lat = _timeit(one, min_time)
            thr = _timeit(seq, min_time)
    finally:
        torch.set_num_threads(old)
    dense_macs = dense_macs_per_timestep(cfg)
    return {
        "threads": threads,
        "latency_us": lat * 1e6,
        "throughput_steps_s": steps / thr,
        "effective_gops": 2 * dense_macs * steps / thr / 1e9,
        "latency_gops": 2 * dense_macs / lat / 1e9,
        "load_average_1min": [load0, os.getloadavg()[0]],
    }


def golden_throughput(model, x_q, lengths=None, threads: int = 2) -> dict:
    """Timesteps (and layer-timesteps) per second of the integer golden model on a batch."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0]
    try:
        t0 = time.perf_counter()
        res = run_golden(model, x_q, lengths)
        el = time.perf_counter() - t0
    finally:
        torch.set_num_threads(old)
    steps = int(res.mask.sum())
    return {"threads": threads, "batch": int(x_q.shape[0]), "seconds": el, "timesteps": steps,
            "timesteps_s": steps / el,
            "layer_timesteps_s": steps * model.config.num_layers / el,
            "load_average_1min": [load0, os.getloadavg()[0]]}
