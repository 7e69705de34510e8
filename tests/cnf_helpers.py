"""Shared builders for the continuous normalizing flow tests (test_cnf_*.py): a small
seeded float64 flow and seeded points."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from latentode.nn.cnf import CNF

F64 = torch.float64


def make_flow(seed: int = 0, **kw: Any) -> CNF:
    """A small float64 flow with tight tolerances, built under a fixed seed."""
    kw = {"hidden": (16, 16), "rtol": 1e-8, "atol": 1e-8, **kw}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return CNF(2, **kw).to(F64)


def points(n: int, seed: int = 0) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
