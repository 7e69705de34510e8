"""Is the aggregate-prior floor in `reports/periodic.md` the sampling or the model's paths?

Scores one cached model of ``experiments/periodic.py`` (run that first) under its
aggregate-posterior prior on validation series: training series 700-799, the prior built from
series 0-699, so that nothing here looks at the test series. Each setting prints the held-out
MSE (x 1e-2) and the median effective sample size at 10 / 20 / 30 / 50% observed. Settings:
the prior's component stds multiplied by ``--widen`` factors, and the likelihood std used by
the weights set to ``--obs-std`` values (the model is trained with 0.01)::

    .venv/bin/python experiments/periodic_prior_check.py \\
        --model 'Latent ODE (RNN enc. + time)' --task interpolation \\
        --widen 1 3 10 30 --obs-std 0.03 0.1 0.3

(about 4 minutes on one core; the session-16 notes in ``reports/periodic_notes.md`` quote it).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from periodic import FRACTIONS, MODELS, TASKS, make_split, trained, training_windows

from latentode.data import IrregularBatch, make_periodic
from latentode.nn import AggregatePosterior, LatentODE


@torch.no_grad()
def scores(
    model: LatentODE, prior: AggregatePosterior, val: IrregularBatch, task: str, k: int
) -> str:
    """``MSE (ess median)`` at each fraction, ``k`` paths, 50 series at a time."""
    row = []
    for frac in FRACTIONS:
        split = make_split(val, task, frac, torch.Generator().manual_seed(7 + int(100 * frac)))
        torch.manual_seed(0)
        obs, times = split.observed, split.target.times
        preds = [
            model.predict(obs[lo : lo + 50], times, k, importance=True, prior=prior)
            for lo in range(0, obs.batch_size, 50)
        ]
        mean = torch.cat([p.mean for p in preds])
        ess = torch.cat([p.ess for p in preds if p.ess is not None])
        m = split.heldout_mask
        mse = float(((mean - split.target.values).square() * m).sum() / m.sum())
        row.append(f"{100 * mse:.3f} (ess {float(ess.median()):.1f})")
    return " | ".join(row)


def main() -> None:
    """Print one line per setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    latent = [m for m in MODELS if m.startswith("Latent ODE")]
    parser.add_argument("--model", choices=latent, default="Latent ODE (RNN enc. + time)")
    parser.add_argument("--task", choices=TASKS, default="interpolation")
    parser.add_argument("--paths", type=int, default=5000)
    parser.add_argument("--widen", type=float, nargs="*", default=[1.0, 3.0, 10.0, 30.0])
    parser.add_argument("--obs-std", type=float, nargs="*", default=[0.03, 0.1, 0.3])
    parser.add_argument("--iters", type=int, default=2000, help="of the cached run")
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic"))
    args = parser.parse_args()
    args.n_train, args.seed = 800, 0
    torch.set_num_threads(1)
    data = make_periodic(n=1000, seed=0).batch
    model, _ = trained(args.model, args.task, args, data[list(range(800))])
    assert isinstance(model, LatentODE)
    fit, val = data[list(range(700))], data[list(range(700, 800))]
    base = model.aggregate_posterior(training_windows(fit, args.task))
    for h in args.widen:
        prior = AggregatePosterior(base.loc, base.scale * h, base.time)
        print(
            f"components x{h:g}, obs std 0.01: {scores(model, prior, val, args.task, args.paths)}"
        )
    trained_log_std = model.decoder.log_std.clone()
    for sigma in args.obs_std:
        model.decoder.log_std.fill_(math.log(sigma))
        line = scores(model, base, val, args.task, args.paths)
        print(f"components x1, obs std {sigma:g}: {line}", flush=True)
    model.decoder.log_std.copy_(trained_log_std)


if __name__ == "__main__":
    main()
