"""Where the spirals Latent ODE's forecast error comes from: the encoder or the generative model.

Loads a Latent ODE trained by ``experiments/spirals.py`` (from its cache) and, for the first
``--n-series`` test spirals, compares three choices of z0 with the dynamics and decoder frozen:

- *encoder*: the posterior mean of q(z0 | n observed points);
- *MAP on the observations*: z0 optimised from there on the n noisy observed points plus the
  N(0, I) prior (what a test-time refinement without the answers can do);
- *oracle*: z0 optimised on all 200 clean points, conditioning and forecast window (the best
  the generative model can do for that spiral; it uses the answers, so it is a bound, not a
  method).

Clean RMSE per coordinate on the conditioning window and on the forecast window. Then, on all
200 test spirals and for each model (the Latent ODE, and the RNN given ``--rnn``), where the
predictive mean of ``spirals.py``'s scoring errs: the conditioning window, the forecast window
by horizon, and the spread of the per-series forecast RMSE. ``--data train`` does all this on
the first 200 training spirals instead (underfitting or overfitting?). Usage (about two minutes
on 2 cores)::

    .venv/bin/python experiments/spirals_diagnose.py \\
        --model runs/spirals/latent_s0_it4000_lr0.001_n1000_b100.pt \\
        --rnn runs/spirals/rnn_s0_it4000_lr0.001_n1000_b100.pt

``--generative`` asks what the generative model alone can learn, without an encoder: the
dynamics and decoder of a fresh Latent ODE (``--latent-config``) with a free z0 per training
spiral (an auto-decoder), all fitted together by the mean squared error on the 200 noisy
points of each of the 1000 training windows (spirals.py's batches of 100 and Adam schedule,
4000 iterations), then scored by the clean RMSE over all 1000 windows. About 1.5 minutes at
Chen 2018's sizes::

    .venv/bin/python experiments/spirals_diagnose.py --generative \\
        --latent-config '{"dynamics_activation": "elu"}'

``--two-stage ITERS`` then trains the encoder alone, by regression, to give each training
spiral's fitted z0 from n random points of its conditioning window (dynamics and decoder fixed),
and scores the forecasts of the 200 test spirals beside the Bayes-optimal forecast
(`Spirals.bayes_forecast`). A second way to train the same Latent ODE, with no ODE solve in the
encoder's loss: about 2.5 minutes per 4000 encoder iterations.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from spirals import (
    LATENT,
    N_OBSERVED,
    NOISE_STD,
    RNN,
    build,
    conditioning,
    scored_observations,
    scored_prediction,
    training_windows,
)
from torch import Tensor, nn
from torch.distributions import Normal

from latentode.data import IrregularBatch, Spirals, make_spirals
from latentode.nn import LatentODE, masked_log_likelihood

HORIZONS = (1, 25, 50, 75, 90, 100)


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


def adam_loop(
    params: list[Tensor],
    loss_of: Callable[[Tensor], Tensor],
    iters: int,
    gen: torch.Generator,
    tag: str,
    n_series: int,
) -> None:
    """spirals.py's optimisation for the diagnostics: Adam lr 0.01 decaying to 0.001 over
    ``iters``, each step on ``loss_of(idx)`` for 100 of the ``n_series`` training spirals drawn
    from ``gen``, gradients clipped to norm 10."""
    opt = torch.optim.Adam(params, lr=0.01)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (0.001 / 0.01) ** (1 / iters))
    for it in range(iters):
        loss = loss_of(torch.randperm(n_series, generator=gen)[:100])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        if it % (iters // 10) == 0:
            print(f"[{tag}] iter {it:5d} loss {float(loss.detach()):.4f}", flush=True)


def fit_generative(
    latent_config: dict, seed: int, iters: int = 4000
) -> tuple[LatentODE, Tensor, dict[str, float]]:
    """Fit a fresh model's dynamics and decoder with one free z0 per training spiral (see the
    module docstring). Returns the model (its encoder untrained), the fitted z0 ``[1000, L]``,
    and the final clean RMSE over the 1000 training windows with the wall time."""
    torch.manual_seed(seed)
    data = make_spirals(n=1000, noise_std=NOISE_STD, seed=0)
    model = build(LATENT, latent_config)
    assert isinstance(model, LatentODE)
    z0 = nn.Parameter(0.1 * torch.randn(data.values.shape[0], model.config.latent_dim))
    params = [*model.dynamics.parameters(), *model.decoder.parameters(), z0]
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()

    def mse(idx: Tensor) -> Tensor:
        return (decode_path(model, z0[idx], data.times) - data.values[idx]).square().mean()

    adam_loop(params, mse, iters, gen, "generative", z0.shape[0])
    with torch.no_grad():
        err = torch.cat(
            [
                (decode_path(model, z0[i : i + 200], data.times) - data.clean[i : i + 200])
                .square()
                .flatten(1)
                for i in range(0, z0.shape[0], 200)
            ]
        )
    return (
        model,
        z0.detach(),
        {
            "clean RMSE, 1000 training windows": round(float(err.mean().sqrt()), 4),
            "wall (s)": round(time.perf_counter() - start),
        },
    )


def fit_encoder_to(model: LatentODE, z0: Tensor, iters: int, seed: int) -> float:
    """Train ``model``'s encoder alone to give the fitted ``z0`` of each training spiral from n
    random points of its conditioning window (n drawn per batch as spirals.py draws it): the
    negative log-density of z0 under q(z0 | observed), Adam lr 0.01 decaying to 0.001, batches
    of 100, clip 10. The second stage of ``--two-stage``; returns the wall time (s)."""
    data = make_spirals(n=1000, noise_std=NOISE_STD, seed=0)
    full, gen = data.batch, torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()

    def neg_log_q(idx: Tensor) -> Tensor:
        n = N_OBSERVED[int(torch.randint(len(N_OBSERVED), (1,), generator=gen))]
        batch = full[idx]
        observed = batch.with_mask(conditioning(batch, data.n_sample, n, gen))
        return -model.encode(observed).log_prob(z0[idx]).sum(-1).mean()

    adam_loop(list(model.encoder.parameters()), neg_log_q, iters, gen, "encoder", z0.shape[0])
    return time.perf_counter() - start


def two_stage_scores(model: LatentODE, seed: int) -> list[dict[str, object]]:
    """Clean forecast RMSE on the 200 test spirals per n, from 20 posterior draws (as spirals.py
    scores) and from the decoded posterior mean, beside the Bayes-optimal forecast."""
    test = make_spirals(n=200, noise_std=NOISE_STD, seed=1)
    ns, rows = test.n_sample, []
    for n in N_OBSERVED:
        observed = scored_observations(test, n, seed)
        with torch.no_grad():
            preds = {
                "20 posterior draws": scored_prediction(model, observed, test, n, seed),
                "posterior mean": decode_path(model, model.encode(observed).mean, test.times),
                "Bayes-optimal": test.bayes_forecast(observed),
            }
        rmse = {k: (p - test.clean)[:, ns:].square().mean().sqrt() for k, p in preds.items()}
        rows.append({"n": n, **{k: round(float(v), 4) for k, v in rmse.items()}})
    return rows


def likelihood_weights(observed: IrregularBatch, refs: Tensor, std: Tensor) -> Tensor:
    """``[B, M]`` weights of the reference paths ``refs`` ``[M, W, 2]`` for each observed spiral,
    proportional to the Gaussian likelihood (``std`` per coordinate) of its observed points,
    self-normalised; 50 spirals at a time (memory)."""
    log_lik = torch.cat(
        [
            masked_log_likelihood(Normal(refs, std), v[:, None], m[:, None])  # (50, M)
            for v, m in zip(observed.values.split(50), observed.mask.split(50), strict=True)
        ]
    )
    return torch.softmax(log_lik, dim=1)


@torch.no_grad()
def aggregate_prior_scores(model: LatentODE, draws: int, seed: int) -> list[dict[str, object]]:
    """Forecasts of the 200 test spirals under the aggregate-posterior prior (see the module
    docstring), per n: clean forecast RMSE of the likelihood-weighted mean of ``draws`` paths
    per training window, of the analog control, of the encoder's forecast and of the Bayes
    floor; the weights' median effective sample size; the clean RMSE of the best single path
    per spiral."""
    train = make_spirals(n=1000, noise_std=NOISE_STD, seed=0).values  # (N, W, 2) all values
    test = make_spirals(n=200, noise_std=NOISE_STD, seed=1)
    ns = test.n_sample
    prior = model.aggregate_posterior(training_windows(1000))  # (1000, L) components
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn((draws, *prior.loc.shape), generator=gen)  # (draws, 1000, L)
    z0 = (prior.loc + prior.scale * eps).reshape(-1, prior.loc.shape[-1])  # (M, L)
    paths = torch.cat([decode_path(model, z, test.times) for z in z0.split(1000)])  # (M, W, 2)
    sigma = model.decoder.log_std.exp()  # (2,)
    rows = []
    for n in N_OBSERVED:
        observed = scored_observations(test, n, seed)
        weights = likelihood_weights(observed, paths, sigma)  # (B, M)
        pred = torch.einsum("bm,mwd->bwd", weights, paths)  # (B, W, 2)
        # Control without any model: the training windows' own noisy values, weighted by how
        # well their conditioning points match the observed ones (noise of both: 2 sigma^2).
        noise = torch.tensor(NOISE_STD * 2**0.5)
        analog_w = likelihood_weights(observed, train, noise)  # (B, N)
        analog = torch.einsum("bn,nwd->bwd", analog_w, train)
        preds = {
            "aggregate prior": pred,
            "analog (training windows)": analog,
            "encoder (spirals.py)": scored_prediction(model, observed, test, n, seed),
            "Bayes-optimal": test.bayes_forecast(observed),
        }
        row: dict[str, object] = {"n": n}
        for name, p in preds.items():
            row[name] = round(float((p - test.clean)[:, ns:].square().mean().sqrt()), 4)
        row["median ESS"] = round(float((1 / weights.square().sum(dim=1)).median()), 1)
        best = torch.cat(  # (B,) the lowest clean forecast MSE of any one path
            [
                (paths[:, ns:] - c[:, None, ns:]).square().mean(dim=(-1, -2)).min(dim=1).values
                for c in test.clean.split(50)
            ]
        )
        row["best single path"] = round(float(best.mean().sqrt()), 4)
        rows.append(row)
    return rows


def error_profile(model: nn.Module, test: Spirals, n: int, seed: int) -> dict[str, object]:
    """Clean RMSE of the predictive mean that `spirals.evaluate` scores, for ``n`` observed
    points: over the conditioning window, at forecast horizons 1 / 25 / 50 / 75 / 90 / 100
    (across series), and the 10 / 50 / 90% quantiles of the per-series forecast RMSE."""
    ns = test.n_sample
    pred = scored_prediction(model, scored_observations(test, n, seed), test, n, seed)
    err = (pred - test.clean).square().mean(dim=-1)  # (B, W)
    horizon = err[:, ns:].mean(dim=0).sqrt()  # (W - ns,)
    per_series = err[:, ns:].mean(dim=1).sqrt()  # (B,)
    quantiles = per_series.quantile(torch.tensor([0.1, 0.5, 0.9]))
    return {
        "conditioning window": round(float(err[:, :ns].mean().sqrt()), 3),
        "forecast window": round(float(err[:, ns:].mean().sqrt()), 3),
        "horizon 1/25/50/75/90/100": [round(float(horizon[h - 1]), 3) for h in HORIZONS],
        "per-series q10/q50/q90": [round(float(q), 3) for q in quantiles],
    }


def main() -> None:
    """Print the three z0 choices' clean RMSE per n as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a cached Latent ODE (.pt)")
    parser.add_argument(
        "--generative", action="store_true", help="fit the generative model alone (see above)"
    )
    parser.add_argument(
        "--two-stage",
        type=int,
        metavar="ITERS",
        help="after --generative, train the encoder alone for ITERS iterations to give the "
        "fitted z0, then score the forecasts (see above)",
    )
    parser.add_argument("--rnn", type=Path, help="a cached RNN (.pt) to profile beside it")
    parser.add_argument("--latent-config", type=json.loads, default={})
    parser.add_argument("--n-series", type=int, default=100)
    parser.add_argument(
        "--data",
        choices=("test", "train"),
        default="test",
        help="the 200 test spirals, or the first 200 training spirals (fit against "
        "generalisation: the same conditioning draws and scoring)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the spirals.py run's seed")
    parser.add_argument(
        "--aggregate-prior",
        type=int,
        metavar="DRAWS",
        help="with --model: forecast under the aggregate-posterior prior instead (see above)",
    )
    args = parser.parse_args()
    if args.two_stage and not args.generative:
        parser.error("--two-stage needs --generative (it trains that model's encoder)")
    if args.generative:
        torch.set_num_threads(1)
        model, z0, fitted = fit_generative(args.latent_config, args.seed)
        print(json.dumps({"generative": args.latent_config, "seed": args.seed, **fitted}))
        if args.two_stage:
            wall = fit_encoder_to(model, z0, args.two_stage, args.seed)
            print(json.dumps({"encoder iterations": args.two_stage, "wall (s)": round(wall)}))
            for row in two_stage_scores(model.eval(), args.seed):
                print(json.dumps(row), flush=True)
        return
    if args.model is None:
        parser.error("--model is required unless --generative is given")
    model = build(LATENT, args.latent_config)
    assert isinstance(model, LatentODE)
    model.load_state_dict(torch.load(args.model, weights_only=True)["state"])
    model.eval().requires_grad_(False)
    if args.aggregate_prior:
        for row in aggregate_prior_scores(model, args.aggregate_prior, args.seed):
            print(json.dumps(row), flush=True)
        return
    test = make_spirals(n=200, noise_std=NOISE_STD, seed=1)
    if args.data == "train":
        train = make_spirals(n=1000, noise_std=NOISE_STD, seed=0)
        head = {"values": train.values[:200], "clean": train.clean[:200]}
        head.update(clockwise=train.clockwise[:200], start_index=train.start_index[:200])
        test = dataclasses.replace(train, **head)
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

    profiled: dict[str, nn.Module] = {LATENT: model}
    if args.rnn is not None:
        rnn = build(RNN)
        rnn.load_state_dict(torch.load(args.rnn, weights_only=True)["state"])
        profiled[RNN] = rnn.eval()
    for n in N_OBSERVED:
        row = {"n": n, "profile": True}
        row.update({name: error_profile(m, test, n, args.seed) for name, m in profiled.items()})
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
