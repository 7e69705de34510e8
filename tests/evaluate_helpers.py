"""Shared by the evaluation and forecast tests: an exactly solved latent ODE anchored last."""

from __future__ import annotations

import torch

from latentode.nn import LatentODE, LatentODEConfig, SolverSettings


def _exact_anchor_last_model(seed: int = 0) -> LatentODE:
    """A float64 latent ODE anchored at the last observation, solved to 1e-10."""
    torch.manual_seed(seed)
    cfg = LatentODEConfig(
        input_dim=1,
        latent_dim=3,
        anchor="last",
        solver=SolverSettings("dopri5", rtol=1e-10, atol=1e-12),
    )
    return LatentODE(cfg).double()
