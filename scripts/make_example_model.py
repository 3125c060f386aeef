"""Build the shipped example model: ``models/example/`` (checkpoint, exported folder, sample input).

    python scripts/make_example_model.py [--out models/example] [--steps 300]

The model is a seeded ``torch.nn.GRU`` (I=16, H=32, one layer) with a ``torch.nn.Linear`` head
(O=4), trained for a few seconds on a toy task that suits a delta network: tell four frequencies of
a slowly varying 16-channel signal apart (each channel a delayed, scaled copy of one sinusoid plus
noise), with a class decision at every timestep. It is saved with ``deltahw.model.save_checkpoint``
together with the hardware parameters the examples use (24 MAC lanes, 4 lanes per weight bank,
encoder width 4, activation width 4) and delta thresholds of 0.03 (8 LSBs of Q8.8) for x and h.
The script then exports it with ``python -m deltahw.export`` into ``OUT/export``, checks that the
golden model gives bit-identical results from the checkpoint and from the exported folder, and
writes ``OUT/input.npy`` (test sequences for ``python -m deltahw.golden``) and ``OUT/README.md``
(accuracies of the float, fixed-point dense and delta models and the operation savings).

Everything is seeded and runs single-threaded, so the files are reproducible bit for bit with the
same torch version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone, not installed

import numpy as np
import torch

from deltahw.config import DeltaGRUConfig
from deltahw.export import load_exported
from deltahw.golden import run_golden
from deltahw.model import load_model, save_checkpoint
from deltahw.numerics import FixedFormat, threshold_to_lsb
from deltahw.util import atomic_write_bytes, atomic_write_text

REPO = Path(__file__).resolve().parents[1]

INPUT, HIDDEN, OUTPUT = 16, 32, 4
FREQS = (0.01, 0.015, 0.02, 0.025)  # cycles per timestep, one per class
NOISE = 0.03  # standard deviation of the noise added to every channel
STEPS, WARMUP = 60, 15  # sequence length; timesteps before the decision counts
THETA = 0.03  # delta thresholds for x and h, in real units
HW = {"lanes": 24, "lanes_per_bank": 4, "enc_width": 4, "act_width": 4}


def make_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, STEPS, 16) float32 signals and (n,) labels."""
    y = torch.randint(0, len(FREQS), (n,), generator=gen)
    f = torch.tensor(FREQS)[y][:, None, None]
    t = torch.arange(STEPS, dtype=torch.float32)[None, :, None]
    delay = torch.linspace(0, 12, INPUT)[None, None, :]
    gain = 0.3 + 0.7 * torch.rand(n, 1, INPUT, generator=gen)
    phase = torch.rand(n, 1, 1, generator=gen) * 2 * math.pi
    x = gain * torch.sin(2 * math.pi * f * (t - delay) + phase)
    x = x + NOISE * torch.randn(n, STEPS, INPUT, generator=gen)
    return x, y


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(INPUT, HIDDEN, batch_first=True)
        self.fc = torch.nn.Linear(HIDDEN, OUTPUT)

    def forward(self, x):
        return self.fc(self.gru(x)[0])


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of (sequence, timestep >= WARMUP) decisions that name the right class."""
    pred = logits[:, WARMUP:].argmax(-1)
    return float((pred == y[:, None]).float().mean())


def train(steps: int, seed: int) -> tuple[Net, dict]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        x, y = make_data(64, gen)
        logits = net(x)[:, WARMUP:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, OUTPUT), y[:, None].expand(-1, STEPS - WARMUP).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net, {"train_steps": steps, "final_loss": round(loss.item(), 4)}


def fixed_point_accuracy(model, x, y) -> tuple[float, dict]:
    x_q, _ = model.quantize_input(x)
    res = run_golden(model, x_q)
    return accuracy(res.outputs.double(), y), res.summary(model.config)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "models" / "example"))
    ap.add_argument("--steps", type=int, default=300, help="training steps (batch 64)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)

    net, info = train(args.steps, args.seed)
    net.eval()
    x_test, y_test = make_data(200, torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        float_acc = accuracy(net(x_test), y_test)

    theta = threshold_to_lsb(THETA, FixedFormat(16, 8))  # real units -> Q8.8 LSBs
    cfg = DeltaGRUConfig(INPUT, HIDDEN, 1, OUTPUT, theta_x=(theta,), theta_h=(theta,), **HW)
    meta = {
        "name": "deltahw example",
        "task": f"frequency of a 16-channel sinusoid, {len(FREQS)} classes {list(FREQS)} "
                f"cycles/step, decision at every timestep >= {WARMUP} of {STEPS}",
        "made_by": "scripts/make_example_model.py",
        "seed": args.seed,
        **info,
        "float_accuracy": round(float_acc, 4),
    }
    # Fixed-point accuracies go into the metadata too: quantize once to measure them.
    save_checkpoint(out / "model.pt", cfg, net.gru.state_dict(), net.fc.state_dict(), meta=meta)
    delta = load_model(out / "model.pt")
    dense = delta.with_config(delta.config.with_thresholds(theta_x=(0,), theta_h=(0,)))
    dense_acc, _ = fixed_point_accuracy(dense, x_test, y_test)
    delta_acc, summary = fixed_point_accuracy(delta, x_test, y_test)
    # Cycle counts are left out on purpose: they follow deltahw/cycles.py, which tracks the RTL.
    meta.update(fixed_dense_accuracy=round(dense_acc, 4), fixed_delta_accuracy=round(delta_acc, 4),
                delta_op_reduction=round(summary["op_reduction"], 3))
    save_checkpoint(out / "model.pt", cfg, net.gru.state_dict(), net.fc.state_dict(), meta=meta)

    proc = subprocess.run(
        [sys.executable, "-m", "deltahw.export", str(out / "model.pt"), "--out",
         str(out / "export")], check=False, cwd=REPO, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        return proc.returncode

    # Round trip: the exported folder runs bit-identically to the checkpoint.
    sample = x_test[:4].numpy().astype(np.float32)
    back = load_exported(out / "export")
    a = run_golden(delta, delta.quantize_input(sample)[0])
    b = run_golden(back, back.quantize_input(sample)[0])
    if not (torch.equal(a.outputs, b.outputs) and torch.equal(a.cycles, b.cycles)):
        print("error: the exported folder does not reproduce the checkpoint", file=sys.stderr)
        return 1
    import io

    buf = io.BytesIO()
    np.save(buf, sample)
    atomic_write_bytes(out / "input.npy", buf.getvalue())
    atomic_write_text(out / "labels.json", json.dumps(y_test[:4].tolist()) + "\n")
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    atomic_write_text(out / "README.md", readme(cfg, meta, digest))
    print(f"float accuracy {float_acc:.3f}, fixed-point dense {dense_acc:.3f}, delta "
          f"(theta {THETA}) {delta_acc:.3f} with {summary['op_reduction']:.2f}x fewer operations")
    print(f"wrote {out}/model.pt, {out}/export/, {out}/input.npy, {out}/README.md")
    return 0


def readme(cfg: DeltaGRUConfig, meta: dict, digest: str) -> str:
    return f"""# Example model

A small delta-GRU, made by `python scripts/make_example_model.py` (seeded; re-running it
reproduces these files with torch 2.13.0). It is the default model of the README's main command.

- Network: `torch.nn.GRU(16, 32)` and `torch.nn.Linear(32, 4)`, trained for
  {meta['train_steps']} Adam steps on a toy task: {meta['task']}.
- Hardware parameters: {cfg.lanes} MAC lanes, {cfg.lanes_per_bank} lanes per weight bank, encoder
  width {cfg.enc_width}, activation width {cfg.act_width}; formats {cfg.act.name()} activations,
  {cfg.weight.name()} weights, {cfg.acc_bits}-bit accumulators.
- Thresholds: theta_x = theta_h = {cfg.theta_x[0]} LSBs ({cfg.theta_x[0] / 256:g}),
  theta_head = {cfg.theta_head}.

| model | accuracy (200 test sequences, timesteps >= {WARMUP}) |
|---|---:|
| float (`torch.nn.GRU`) | {meta['float_accuracy']:.3f} |
| fixed point, theta 0 (dense) | {meta['fixed_dense_accuracy']:.3f} |
| fixed point, delta (theta {cfg.theta_x[0] / 256:g}) | {meta['fixed_delta_accuracy']:.3f} |

The delta model does {meta['delta_op_reduction']:.2f}x fewer multiply-accumulates than the dense
one on the test sequences. For the predicted hardware cycles per timestep, run the golden model
with `--stats` (below): they follow `deltahw/cycles.py`, the cycle model the RTL matches.

Files:

- `model.pt`: deltahw checkpoint (float parameters, config, metadata); sha256 `{digest}`.
- `export/`: BRAM init files and `manifest.json`, written by
  `python -m deltahw.export models/example/model.pt --out models/example/export`.
- `input.npy`: four test sequences, float32 (4, {STEPS}, 16); their classes are in `labels.json`.

Try it:

```sh
python -m deltahw.golden models/example/export --input models/example/input.npy \\
    --output y.npy --stats stats.json
```
"""


if __name__ == "__main__":
    sys.exit(main())
