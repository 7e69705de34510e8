"""Where the spirals Latent ODE's forecast error comes from: the encoder or the generative model.

Loads a Latent ODE trained by ``experiments/spirals.py`` (from its cache) and, for the first
``--n-series`` test spirals, compares three choices of z0 with the dynamics and decoder frozen:

- *encoder*: the posterior mean of q(z0 | n observed points);
- *MAP on the observations*: z0 optimised from there on the n noisy observed points plus the
  N(0, I) prior (what a test-time refinement without the answers can do);
- *oracle*: z0 optimised on all 200 clean points, conditioning and forecast window (the best
  the generative model can do for that spiral; it uses the answers, so it is a bound, not a
  method).

Clean RMSE per coordinate on the conditioning window and on the forecast window. Usage (about
two minutes on 2 cores)::

    .venv/bin/python experiments/spirals_diagnose.py \\
        --model runs/spirals/latent_s0_it4000_lr0.001_n1000_b100.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from spirals import LATENT, N_OBSERVED, NOISE_STD, build, scored_observations
from torch import Tensor

from latentode.data import make_spirals
from latentode.nn import LatentODE


def decode_path(model: LatentODE, z0: Tensor, times: Tensor) -> Tensor:
    """Decoded mean ``[B, W, 2]`` of the paths from ``z0 [B, L]``."""
    zt = model.integrate(z0.unsqueeze(0), times[0], times)[0]  # (B, W, L)
    return model.decoder(zt).mean


def refine(
    model: LatentODE, z0: Tensor, times: Tensor, values: Tensor, weight: Tensor, prior: bool
) -> Tensor:
    """z0 after 200 Adam steps (lr 0.02) on the weighted squared error (plus the prior)."""
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.02)
    for _ in range(200):
        err = ((decode_path(model, z, times) - values).square() * weight).sum()
        loss = err / (2 * NOISE_STD**2) + (0.5 * z.square().sum() if prior else 0.0)
        opt.zero_grad()
        (loss / z.shape[0]).backward()
        opt.step()
    return z.detach()


def main() -> None:
    """Print the three z0 choices' clean RMSE per n as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a cached Latent ODE (.pt)")
    parser.add_argument("--latent-config", type=json.loads, default={})
    parser.add_argument("--n-series", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the spirals.py run's seed")
    args = parser.parse_args()
    model = build(LATENT, args.latent_config)
    assert isinstance(model, LatentODE)
    model.load_state_dict(torch.load(args.model, weights_only=True)["state"])
    model.eval().requires_grad_(False)
    test = make_spirals(n=200, noise_std=NOISE_STD, seed=1)
    ns, sel = test.n_sample, torch.arange(args.n_series)
    clean, times = test.clean[sel], test.times
    for n in N_OBSERVED:
        observed = scored_observations(test, n, args.seed)[sel]
        with torch.no_grad():
            z_enc = model.encode(observed).mean  # (B, L)
        z0 = {
            "encoder": z_enc,
            "MAP on the observations": refine(
                model, z_enc, times, observed.values, observed.mask, prior=True
            ),
            "oracle (all 200 clean points)": refine(
                model, z_enc, times, clean, torch.ones_like(clean), prior=False
            ),
        }
        row: dict[str, object] = {"n": n}
        for name, z in z0.items():
            with torch.no_grad():
                err = (decode_path(model, z, times) - clean).square()  # (B, W, 2)
            row[name] = {
                "conditioning window": round(float(err[:, :ns].mean().sqrt()), 4),
                "forecast window": round(float(err[:, ns:].mean().sqrt()), 4),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
