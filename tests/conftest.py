"""Shared fixtures: small seeded float64 vector fields; one torch thread for tiny models; a tiny
model fitted once on a CSV for the ``latentode`` CSV command tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from csv_cli_helpers import fit_tiny_model
from torch import nn


class MLPField(nn.Module):
    """A small time-dependent MLP vector field ``f(t, y) = W2 tanh(W1 [y, t] + b1) + b2``.

    Acts on the last dimension, so a batch ``(B, D)`` is B independent systems.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tt = t.expand(*y.shape[:-1], 1)  # (..., 1)
        return self.net(torch.cat([y, tt], dim=-1))  # (..., D)


@pytest.fixture
def make_mlp() -> Callable[..., MLPField]:
    """Factory for a seeded float64 `MLPField` (deterministic whatever ran before)."""

    def factory(dim: int = 3, hidden: int = 16, seed: int = 0) -> MLPField:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        field = MLPField(dim, hidden).to(torch.float64)
        torch.random.set_rng_state(gen_state)
        return field

    return factory


@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator for test data (keeps the global RNG untouched)."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (extra intra-op threads only contend with other
    jobs on the machine); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(checkpoint, data)``: a tiny model fitted for 3 steps on `write_csv`'s file, once per
    session (per xdist worker) and shared by the test_cli_csv_*.py tests; treat as read-only."""
    return fit_tiny_model(tmp_path_factory)


@pytest.fixture
def torch_seed_0() -> Iterator[None]:
    """Seed torch's global RNG with 0 for a test (model init, posterior samples) and restore
    it afterwards (the latent model tests use it for every test: their ``pytestmark``)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
