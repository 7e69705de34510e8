"""Shared data and model builders for the latent ODE model tests (test_latent_model_*.py):
a float64 batch with partial masks, small latent ODEs, a linear-Gaussian latent ODE."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

from latentode.data import IrregularBatch
from latentode.nn import ODERNN, GRUBaseline, LatentODE, LatentODEConfig, SolverSettings

F64 = torch.float64
B, T, D, L = 4, 9, 2, 3
TIGHT = SolverSettings("dopri5", rtol=1e-10, atol=1e-12)


def make_batch(seed: int = 0) -> IrregularBatch:
    """Float64 batch: partial masks, series 3 misses the first times, column 5 is empty."""
    gen = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(T, generator=gen, dtype=F64)).values * 2.0
    values = torch.randn(B, T, D, generator=gen, dtype=F64)
    mask = (torch.rand(B, T, D, generator=gen) < 0.6).to(F64)
    mask[:, 0, 0] = 1.0  # every series but the last observes the first time
    mask[3, :3] = 0.0
    mask[:, 5] = 0.0
    return IrregularBatch(times, values, mask)


def _latent(encoder: str, **kw: object) -> LatentODE:
    return LatentODE(LatentODEConfig(input_dim=D, latent_dim=L, encoder=encoder, **kw)).double()


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "LatentODE-gru": lambda: _latent("gru"),
    "LatentODE-odernn": lambda: _latent("odernn"),
    "LatentODE-centred": lambda: _latent("gru", center="mean"),
    "LatentODE-last": lambda: _latent("gru", center="last", encoder_time=True),
    "LatentODE-anchor-last": lambda: _latent("odernn", anchor="last"),
    "GRUBaseline": lambda: GRUBaseline(D, 8).double(),
    "ODERNN": lambda: ODERNN(D, 8, 8).double(),
}


def _linear_gaussian(
    center: str = "none", anchor: str = "first"
) -> tuple[LatentODE, Tensor, Tensor]:
    """A latent ODE whose posterior is Gaussian in closed form: linear dynamics ``dz/dt = A z``
    and a linear decoder ``x = W z + c``, so ``x(t) = W expm(A (t - t_a)) z_a + c`` + noise 0.5
    with ``t_a`` the anchor (``t0``, or the last observed time for ``anchor="last"``).
    Returns the model (encoder untrained) with ``A`` and ``W``."""
    cfg = LatentODEConfig(
        input_dim=D, latent_dim=L, dynamics_depth=0, decoder_depth=0, obs_std=0.5, solver=TIGHT
    )
    model = LatentODE(dataclasses.replace(cfg, center=center, anchor=anchor)).double()
    A = torch.tensor([[-0.1, 1.0, 0.0], [-1.0, -0.1, 0.3], [0.0, -0.3, 0.05]], dtype=F64)
    with torch.no_grad():
        lin = model.dynamics.net[0]
        lin.weight.copy_(A)
        lin.bias.zero_()
    return model, A, model.decoder.net[0].weight.detach()
