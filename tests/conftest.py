"""Shared pytest setup: one torch thread, repo on sys.path, hypothesis profile, model factories."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, even when not installed
from deltahw.config import DeltaGRUConfig
from deltahw.model import from_modules, save_checkpoint

REPO = Path(__file__).resolve().parents[1]

# The machine has 2 cores shared with other jobs: keep every test single-threaded.
torch.set_num_threads(1)

settings.register_profile(
    "deltahw",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deltahw"))


def make_gru(input_size, hidden_size, num_layers=1, output_size=0, seed=0, scale=1.0,
             batch_first=False):
    """A seeded ``torch.nn.GRU`` (default init times ``scale``) and an optional Linear head."""
    gen = torch.Generator().manual_seed(seed)
    gru = torch.nn.GRU(input_size, hidden_size, num_layers, batch_first=batch_first)
    with torch.no_grad():
        for p in gru.parameters():
            bound = scale / hidden_size**0.5
            p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
    head = None
    if output_size:
        head = torch.nn.Linear(hidden_size, output_size)
        with torch.no_grad():
            for p in head.parameters():
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) / hidden_size**0.5)
    return gru, head


def random_inputs(batch, steps, size, seed=0, scale=1.0, smooth=False):
    """Float inputs (B, T, I): white noise, or a random walk (smooth, as delta networks like)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, size, generator=gen, dtype=torch.float64) * scale
    if smooth:
        x = torch.cumsum(x * 0.2, dim=1).clamp(-4, 4)
    return x


@pytest.fixture
def gru_factory():
    return make_gru


@pytest.fixture
def small_model():
    """A quantized I=13, H=37, L=2 model with a head O=5 (awkward sizes on purpose)."""
    gru, head = make_gru(13, 37, 2, 5, seed=3)
    return from_modules(gru, head)


@pytest.fixture
def checkpoint(tmp_path):
    """A deltahw checkpoint file (I=13, H=37, L=2, O=5, non-zero thresholds, 24 lanes)."""
    gru, head = make_gru(13, 37, 2, 5, seed=4)
    cfg = DeltaGRUConfig(13, 37, 2, 5, theta_x=(6, 3), theta_h=(4, 5), theta_head=2, lanes=24,
                         lanes_per_bank=4, act_width=4, enc_width=4)
    path = tmp_path / "model.pt"
    save_checkpoint(path, cfg, gru.state_dict(), head.state_dict(), meta={"test": True})
    return path
