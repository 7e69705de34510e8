"""Shared fixtures: small seeded float64 vector fields; one torch thread for tiny models."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
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
