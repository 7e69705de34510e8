"""Training variants of the spirals Latent ODE: do any of them close the gap to the RNN?

Each variant changes one thing of ``experiments/spirals.py``'s Latent ODE training (same data,
batches, test spirals, conditioning points and scoring; Chen 2018's sizes unless named)
and reports the clean RMSE on the forecast window for n = 30 / 50 / 100 observed points
(``--seed``: initial weights, batches, conditioning and posterior draws, as spirals.py's):

- ``base``: spirals.py's model as it is (4000 iterations, lr 0.01 -> 0.001, batches of 100;
  read from spirals.py's cache, trained and stored there if missing);
- ``scale3``: the spirals divided by 3 (coordinates within about +-2, as a standardised input;
  observation std 0.1), scored back in the original units;
- ``full_batch``: torchdiffeq's regime, 2000 iterations on all 1000 spirals at once;
- ``encoder_steps1``: one extra update of the encoder alone before every joint update (He et
  al. 2019's aggressive inference-network training, against an amortisation gap);
- ``odernn_lr0.003``: the ODE-RNN encoder at lr 0.003 -> 0.0003 (at lr 0.01 it did not train);
- ``encoder100_lr0.005``: the 100-unit GRU encoder at lr 0.005 -> 0.0005;
- ``refit_encoder``: the ``base`` model with dynamics and decoder frozen and 2000 more
  encoder-only iterations at lr 0.003 (is the encoder short of training?);
- ``clip1``: gradients clipped to norm 1 instead of 10 (the training loss jumps);
- ``ema0.995``: the exponential moving average of the parameters (decay 0.995 per update)
  instead of the last iterate;
- ``grow2000``: a curriculum on the horizon: the scored part of each window grows from the
  110 first points to all 200 over the first 2000 iterations (long ODE fits are easier to
  train from short ones);
- ``consistency1``: the ELBO plus a consistency term (weight 1): the state the latent path
  from the window's posterior mean reaches at a random later time t_k (k in 10..60) should be
  the posterior mean the encoder gives for the window that starts at t_k (same n of its first
  100 points), as a squared distance relative to the batch variance of those encodings. The
  dynamics are otherwise only trained along the paths the encoder starts;
- ``latent2``, ``latent3``: a 2-D or 3-D latent state instead of 4-D (a 2-D autonomous flow can
  draw both spirals, one around each centre: fewer directions off the paths the encoder
  starts, where the dynamics are untrained).
- ``elu_ema``: the report's Latent ODE (ELU dynamics, parameter average 0.995), as
  ``spirals.py --ema 0.995 --latent-config '{"dynamics_activation": "elu"}'`` trains it;
- ``elu_ema_kl1``, ``elu_ema_kl4``: the same with the KL weight held at 1 or 4 from the first
  iteration instead of annealed from 0 (does the annealing let the posterior spread over more
  latent directions than the data need?).
- ``elu_ema_abstime``, ``elu_ema_abstime_enc100``: ``elu_ema`` with the GRU encoder also fed
  each observation's time since ``t0`` besides the gap to the previous one (`LatentODEConfig`'s
  ``encoder_time``), with 25 or 100 hidden units. z0 is the state at ``t0``: a phase error of
  one grid step costs about 0.15 of RMSE here, and without this input the encoder must add up
  the gaps to place a point.

Models are cached in ``--workdir``; a rerun only rescores. Usage (about 45 minutes for all of
them with the two worker processes on the 2-core CPU, if the base model is cached by
spirals.py)::

    .venv/bin/python experiments/spirals_variants.py
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from spirals import (
    LATENT,
    N_OBSERVED,
    NOISE_STD,
    LossFn,
    build,
    conditioning,
    evaluate,
    loss_fn,
    train,
)

from latentode.data import IrregularBatch, Spirals, make_spirals
from latentode.nn import LatentODE

BASE = "runs/spirals/latent_s{seed}_it4000_lr0.001_n1000_b100.pt"

#: name -> (LatentODEConfig overrides, train() keyword arguments, data scale)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any], float]] = {
    "base": ({}, {}, 1.0),
    "scale3": ({"obs_std": NOISE_STD / 3}, {}, 3.0),
    "full_batch": ({}, {"batch_size": 1000, "iters": 2000}, 1.0),
    "encoder_steps1": ({}, {"encoder_steps": 1}, 1.0),
    "odernn_lr0.003": ({"encoder": "odernn"}, {"lr": 0.003, "lr_final": 0.0003}, 1.0),
    "encoder100_lr0.005": ({"encoder_hidden": 100}, {"lr": 0.005, "lr_final": 0.0005}, 1.0),
    "refit_encoder": ({}, {"iters": 2000, "lr": 0.003, "lr_final": 0.003}, 1.0),
    "clip1": ({}, {"clip": 1.0}, 1.0),
    "ema0.995": ({}, {"ema": 0.995}, 1.0),
    "grow2000": ({}, {"grow": 2000}, 1.0),
    "consistency1": ({}, {}, 1.0),
    "latent2": ({"latent_dim": 2}, {}, 1.0),
    "latent3": ({"latent_dim": 3}, {}, 1.0),
    "elu_ema": ({"dynamics_activation": "elu"}, {"ema": 0.995}, 1.0),
    "elu_ema_kl1": ({"dynamics_activation": "elu"}, {"ema": 0.995}, 1.0),
    "elu_ema_kl4": ({"dynamics_activation": "elu"}, {"ema": 0.995}, 1.0),
    "elu_ema_abstime": (
        {"dynamics_activation": "elu", "encoder_time": True},
        {"ema": 0.995},
        1.0,
    ),
    "elu_ema_abstime_enc100": (
        {"dynamics_activation": "elu", "encoder_hidden": 100, "encoder_time": True},
        {"ema": 0.995},
        1.0,
    ),
}
#: variants whose KL weight is held fixed from the first iteration (no annealing)
KL_WEIGHTS = {"elu_ema_kl1": 1.0, "elu_ema_kl4": 4.0}


def build_variant(name: str) -> LatentODE:
    """The untrained Latent ODE of variant ``name``."""
    model = build(LATENT, VARIANTS[name][0])
    assert isinstance(model, LatentODE)
    return model


def scaled(data: Spirals, scale: float) -> Spirals:
    """``data`` with values, clean points, paths and noise std divided by ``scale``."""
    return dataclasses.replace(
        data,
        values=data.values / scale,
        clean=data.clean / scale,
        paths=data.paths / scale,
        noise_std=data.noise_std / scale,
    )


def refit_loss(
    model: LatentODE, observed: IrregularBatch, target: IrregularBatch, it: int
) -> torch.Tensor:
    """The ELBO at full KL weight (the ``refit_encoder`` loss; ``it`` unused)."""
    return model.loss(observed, target, n_samples=1, kl_weight=1.0)


def consistency_loss(
    model: LatentODE, elbo: LossFn, n_sample: int, weight: float, seed: int
) -> LossFn:
    """``elbo`` plus ``weight`` times the ``consistency1`` term (see the module docstring);
    the shifts and the shifted windows' conditioning points come from a generator seeded with
    ``seed``."""
    gen = torch.Generator().manual_seed(seed + 7)

    def loss(observed: IrregularBatch, target: IrregularBatch, it: int) -> torch.Tensor:
        k = int(torch.randint(10, 61, (1,), generator=gen))
        n = int(observed.mask[0, :n_sample, 0].sum())
        later = target.subset_times(slice(k, None))  # the window starting at t_k
        later = later.with_mask(conditioning(later, n_sample, n, gen))
        z_k = model.encode(later).mean  # (B, L)
        z0 = model.encode(observed).mean  # (B, L)
        reached = model.integrate(z0.unsqueeze(0), observed.times[0], target.times[k : k + 1])
        scale = z_k.detach().var(dim=0).sum().clamp(min=1e-6)
        term = (reached[0, :, 0] - z_k).square().sum(-1).mean() / scale
        return elbo(observed, target, it) + weight * term

    return loss


def fit(name: str, workdir: Path, base: Path, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """Train variant ``name`` with ``seed`` (or load it from the cache); its state and training
    wall time. ``base`` is stored where spirals.py caches the same model."""
    path = base if name == "base" else workdir / f"{name}_s{seed}.pt"
    if path.is_file():
        saved = torch.load(path, weights_only=True)
        return saved["state"], saved["wall"]
    if name == "refit_encoder" and not base.is_file():
        raise SystemExit(f"{base} is missing: run experiments/spirals.py --seed {seed} first.")
    torch.set_num_threads(1)
    _, kwargs, scale = VARIANTS[name]
    kwargs = {"iters": 4000, "batch_size": 100, "lr_final": 0.001, **kwargs}
    torch.manual_seed(seed)
    data = scaled(make_spirals(n=1000, noise_std=NOISE_STD, seed=0), scale)
    model = build_variant(name)
    if name == "refit_encoder":
        model.load_state_dict(torch.load(base, weights_only=True)["state"])
        model.requires_grad_(False)
        model.encoder.requires_grad_(True)
    if name == "refit_encoder":  # the base model's KL weight is already 1: no annealing
        loss = functools.partial(refit_loss, model)
    else:
        loss = loss_fn(LATENT, model, kwargs["iters"], data.n_sample, KL_WEIGHTS.get(name))
    if name == "consistency1":
        loss = consistency_loss(model, loss, data.n_sample, 1.0, seed)
    iters, batch_size = kwargs.pop("iters"), kwargs.pop("batch_size")
    wall = train(name, model, loss, data, iters, batch_size, seed, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "wall": wall}, path)
    return model.state_dict(), wall


def main() -> None:
    """Train (or reuse) the variants and print their clean forecast RMSE as a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/spirals/variants"))
    parser.add_argument("--seed", type=int, default=0, help="as spirals.py's --seed")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    base = Path(BASE.format(seed=args.seed))
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        jobs = [pool.submit(fit, name, args.workdir, base, args.seed) for name in args.variants]
        fitted = [job.result() for job in jobs]
    test = make_spirals(n=200, noise_std=NOISE_STD, seed=1)
    print("| variant | clean RMSE n = 30 / 50 / 100 | training wall (s) |")
    print("|---|---|---|")
    for name, (state, wall) in zip(args.variants, fitted, strict=True):
        scale = VARIANTS[name][2]
        model = build_variant(name)
        model.load_state_dict(state)
        res = evaluate({LATENT: model.eval()}, scaled(test, scale), args.seed)[LATENT]
        rmse = " / ".join(f"{res[n][1] * scale:.3f}" for n in N_OBSERVED)
        print(f"| {name} | {rmse} | {wall:.0f} |", flush=True)
    print(json.dumps({"wall_min": round((time.perf_counter() - start) / 60, 1)}))


if __name__ == "__main__":
    main()
