"""Where a CSV fit's reconstruction error comes from: underfitting, or the encoder.

For a checkpoint fitted with `CSVDataModule` on many series, prints

1. ``latentode test``'s held-out table for the fit's test series and, in-sample, for the first
   ``--train-series`` training series (the model saw their whole span in training);
2. the reconstruction MSE (user units) of those training series' observed values, conditioned
   on all of them, from the encoder's mean ``z0`` and from ``z0`` optimised per series (MAP
   under the model's prior and learned noise, the weights fixed): the amortisation gap.

Usage (reports/csv_fertility.md, session 22)::

    .venv/bin/python experiments/csv_fit_gap.py --ckpt runs/fertility/checkpoints/best-*.ckpt \\
        --data data/fertility_worldbank.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from latentode.cli.forecaster import _load_forecaster
from latentode.data.csv_module import split_series
from latentode.data.prep import Segment, collate_segments
from latentode.evaluate import evaluate


def _map_gap(model, table, state, series: list[int], steps: int) -> tuple[float, float]:
    """Reconstruction MSE of ``series`` from the encoder's mean z0 and from the MAP z0."""
    norm, scale = state["normalisation"], float(state["time_scale"])
    segs = []
    for s in series:
        t, x = table.series(s)
        keep = ~np.isnan(x).all(axis=1)
        segs.append(Segment(s, float(t[keep][0]), t[keep], x[keep]))
    obs = collate_segments(segs, norm, scale, dtype=torch.float64)
    level = model.level(obs) if model.config.center != "none" else None
    anchor = model._anchor_index(obs)
    t0, sigma = obs.times[anchor], model.decoder.log_std.detach().exp()
    std2 = torch.tensor(norm["std"], dtype=torch.float64) ** 2 if norm else 1.0

    def mean_path(z0: torch.Tensor) -> torch.Tensor:
        return model._decode(model.integrate(z0[None], t0, obs.times), level).loc[0]

    def mse(m: torch.Tensor) -> float:
        err = (m - obs.values).square() * obs.mask * std2
        return float(err.sum() / obs.mask.sum())

    with torch.no_grad():
        z = model._encode(obs, level, anchor).mean.clone()
        before = mse(mean_path(z))
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(steps):
        resid = (mean_path(z) - obs.values) / sigma
        loss = 0.5 * (resid.square() * obs.mask).sum() + 0.5 * z.square().sum()
        (grad,) = torch.autograd.grad(loss, [z])
        z.grad = grad
        opt.step()
    with torch.no_grad():
        return before, mse(mean_path(z))


def main() -> None:
    """Print the in-sample / held-out tables and the amortisation gap of one checkpoint."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--train-series", type=int, default=60)
    p.add_argument("--map-series", type=int, default=24)
    p.add_argument("--map-steps", type=int, default=400)
    p.add_argument("--n_samples", type=int, default=100)
    args = p.parse_args()
    model, state, table = _load_forecaster([args.ckpt], args.data)
    model = model.double().eval()
    for w in model.parameters():
        w.requires_grad_(False)
    train, _, test = split_series(table.n_series, 0.1, 0.1, 0)
    if [table.series_ids[s] for s in test] != state.get("test_series"):
        raise SystemExit("the fit's series split is not the default one (seed 0, 10% / 10%).")
    fmt = {"float_format": lambda v: f"{v:.4g}", "index": False}
    print(f"{args.ckpt}: learned noise std (normalised) {model.decoder.log_std.exp().tolist()}")
    ids = {"test series": state["test_series"]}
    ids[f"first {args.train_series} training series (in-sample)"] = [
        table.series_ids[s] for s in train[: args.train_series]
    ]
    for name, chosen in ids.items():
        frame = evaluate(model, table, dict(state, test_series=chosen), args.n_samples, 0)
        print(f"\n{name}\n{frame.to_string(**fmt)}")
    before, after = _map_gap(model, table, state, list(train[: args.map_series]), args.map_steps)
    print(
        f"\nreconstruction MSE of the first {args.map_series} training series, conditioned on "
        f"all their values: encoder's mean z0 {before:.4g}, MAP z0 ({args.map_steps} Adam "
        f"steps) {after:.4g}"
    )


if __name__ == "__main__":
    main()
