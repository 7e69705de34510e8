"""The posterior predictive of a fitted latent ODE at future times, in the user's units.

For each segment: condition on it, draw ``K`` posterior paths (`LatentODE.predict`), and map
them and the decoder's observation noise back through the stored normalisation. Given its
path, a value is Gaussian: path ``k`` has mean ``mu_k`` (its decoded mean) and std ``s_k``
(the noise), so the predictive is the equal-weight mixture of ``K`` Gaussians (of every
member's paths for pooled fits). A `Predictive` keeps the paths and the noise (and one noisy
draw per path, samples for whoever needs them), and summarises them as (mean, std, q05, q50,
q95) per time and channel (with the ends of other central bands before and after q50 when
asked: `quantile_probs`), optionally with each band scaled about its median by calibration
factors (`latentode.calibration`).

This module draws them from a model (`iter_predictives`, `predictives`,
`predictive_summary`). The `Predictive` and the mathematics of its summaries (the mixture's
quantiles, a transformed channel's moments) are in `latentode.posterior_predictive`, the
band arithmetic in `latentode.bands`, and the memory one model call may hold and the draws'
seeds in `latentode.draws`; their public names are re-exported here.

Usage::

    seeds = draw_seeds(0, [str(g.series) for g in segs])  # one per segment (see draw_seeds)
    preds = predictives(model, segs, future, data_state, 200, seeds)
    stats = preds[0].summary()                   # (n, D, 5)
    wide = preds[0].summary(np.full(D, 1.3))     # the band 1.3x as wide about the median
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .bands import _TINY as _TINY  # re-exported: tests import it from here
from .bands import (
    LEVEL,
    QUANTILES,
    band_columns,
    band_levels,
    band_scores,
    center_factor,
    percent,
    quantile_names,
    quantile_probs,
    scale_bands,
)
from .data.batch import IrregularBatch
from .data.prep import Segment, collate_segments, denormalise, denormalise_std
from .data.transforms import kinds_of
from .draws import (
    CALL_BYTES,
    PATH_TIME_BYTES,
    call_gb,
    call_memory,
    draw_seeds,
    draws_held,
    draws_per_call,
)
from .ensemble import Ensemble
from .mixture import mixture_quantiles
from .nn.base import ModelInputError
from .nn.latent_ode import AggregatePosterior, LatentODE
from .posterior_predictive import HERMITE_NODES as HERMITE_NODES
from .posterior_predictive import Predictive
from .posterior_predictive import _logit_normal_moments as _logit_normal_moments  # for tests

__all__ = [
    "CALL_BYTES",
    "LEVEL",
    "PATH_TIME_BYTES",
    "QUANTILES",
    "Predictive",
    "band_columns",
    "band_levels",
    "band_scores",
    "call_gb",
    "call_memory",
    "center_factor",
    "conditioned_batch",
    "draw_seeds",
    "draws_held",
    "draws_per_call",
    "iter_predictives",
    "mixture_quantiles",
    "percent",
    "predictive_summary",
    "predictives",
    "quantile_names",
    "quantile_probs",
    "scale_bands",
]


def conditioned_batch(
    model: LatentODE, segs: list[Segment], data_state: dict[str, Any]
) -> tuple[IrregularBatch, list[float]]:
    """The segments as ``model`` conditions on them, and each one's time origin.

    Normalised by the checkpoint's statistics, on the model's time axis, each aligned as in
    training: at its first observation, or at its last for a model anchored there; in the
    model's dtype and on its device.
    """
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    param = next(model.parameters())
    last = model.config.anchor == "last"
    origins = [float(g.times[-1]) if last else g.t0 for g in segs]
    batch = collate_segments(segs, norm, scale, dtype=param.dtype, origins=origins)
    return batch.to(param.device), origins


@torch.no_grad()
def iter_predictives(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> Iterator[Predictive]:
    """Per segment its `Predictive` at its times ``future``, lazily: the draws of one model
    call are freed once its predictives are consumed (`predictives` gives them as a list).

    The predictive is the mixture of the ``n_samples`` posterior paths' Gaussians (each path's
    mean and its observation noise), its quantiles the mixture's (`mixture_quantiles`); each
    path also gets one draw of the noise (`Predictive.draws`). Every draw of segment ``i`` (its
    paths, their noise, refinement and resampling) comes from a generator seeded with
    ``seeds[i]`` alone (`draw_seeds`), so its predictive does not depend on the other segments
    of the call, their order or how they are split into calls, up to the solver's tolerance (a
    call's segments share the adaptive steps of one solve). ``importance``: the paths are the
    importance-resampled ones of `LatentODE.predict` (the model's posterior, not the encoder's),
    the mean and std its weighted moments. ``refine``: Adam steps refining each series'
    ``q(z0)`` on its own ELBO first (`LatentODE.refine`). An `Ensemble`: ``n_samples`` paths
    from each member (read through its own ``data_state``; the one given is ignored), pooled
    with equal weights: the quantiles are those of the mixture of every member's paths, the mean
    the members' average and the variance the mixture's. ``prior``: with ``importance``, the
    paths are drawn from this aggregate posterior instead of the encoder's ``q``
    (`LatentODE.aggregate_posterior`; one model only, its states at the segments' aligned anchor
    time). Segments whose draws exceed `draws_per_call` (`draws_held`) are taken in halves, one
    after the other, until each part fits or is one segment.

    Raises:
        ModelInputError: ``prior`` with an `Ensemble`, members with different channel
            transforms, or not one seed per segment.
    """
    if len(seeds) != len(segs):
        raise ModelInputError(f"one seed per segment is needed: {len(seeds)} for {len(segs)}.")
    if prior is not None and isinstance(model, Ensemble):
        raise ModelInputError("prior= belongs to one model's encoder; not with an Ensemble.")
    on_history = importance or refine > 0
    budget = draws_per_call(segs[0].values.shape[-1]) if segs else 0
    if len(segs) > 1 and draws_held(model, segs, future, n_samples, on_history) > budget:
        half = len(segs) // 2
        args = (importance, refine, prior)
        yield from iter_predictives(
            model, segs[:half], future[:half], data_state, n_samples, seeds[:half], *args
        )
        yield from iter_predictives(
            model, segs[half:], future[half:], data_state, n_samples, seeds[half:], *args
        )
        return
    pairs = model.pairs() if isinstance(model, Ensemble) else [(model, data_state)]
    D = segs[0].values.shape[-1]
    kinds = [kinds_of(s.get("normalisation"), D) for _, s in pairs]
    if any(k != kinds[0] for k in kinds):
        raise ModelInputError(f"the checkpoints model their channels on other scales: {kinds}.")
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]  # drawn from in turn
    parts = [
        _member_predictive(m, segs, future, s, n_samples, generators, importance, refine, prior)
        for m, s in pairs
    ]
    draws, paths, noise = (np.concatenate([p[i] for p in parts]) for i in (0, 3, 4))
    mean = np.mean([p[1] for p in parts], axis=0)  # (B, n, D)
    second = np.mean([p[2] ** 2 + p[1] ** 2 for p in parts], axis=0)
    std = np.sqrt(np.maximum(second - mean**2, 0.0)) if len(parts) > 1 else parts[0][2]
    for b, m in enumerate(len(f) for f in future):
        yield Predictive(draws[:, b, :m], mean[b, :m], std[b, :m], paths[:, b, :m], noise, kinds[0])


def predictives(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> list[Predictive]:
    """`iter_predictives` as a list."""
    return list(
        iter_predictives(
            model, segs, future, data_state, n_samples, seeds, importance, refine, prior
        )
    )


def predictive_summary(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
    levels: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Per segment ``[n, D, 5]`` (mean, std, q05, q50, q95) at its times ``future`` (user
    units), ``[n, D, 2 + Q]`` with the bands of ``levels`` too: `Predictive.summary` of each
    of `predictives`."""
    preds = predictives(
        model, segs, future, data_state, n_samples, seeds, importance, refine, prior
    )
    return [p.summary(levels=levels) for p in preds]


def _member_predictive(
    model: LatentODE,
    segs: list[Segment],
    future: list[np.ndarray],
    data_state: dict[str, Any],
    n_samples: int,
    generators: Sequence[torch.Generator],
    importance: bool,
    refine: int,
    prior: AggregatePosterior | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One model's noisy predictive draws ``[K, B, n, D]`` and its mean and std ``[B, n, D]``
    in user units, its paths ``[K, B, n, D]`` and noise std ``[K, D]`` on the channels'
    transformed scales, on the padded grid of ``future``."""
    norm, scale = data_state.get("normalisation"), float(data_state.get("time_scale", 1.0))
    observed, origins = conditioned_batch(model, segs, data_state)
    dtype, device = observed.values.dtype, observed.values.device
    width = max(len(f) for f in future)
    grid = np.stack(
        [
            np.pad(
                (f - o) / scale,
                (0, width - len(f)),
                mode="linear_ramp",
                end_values=((f[-1] - o) / scale + width),
            )
            for f, o in zip(future, origins, strict=True)
        ]
    )  # (B, n) strictly increasing rows
    query = torch.as_tensor(grid, dtype=dtype, device=device)
    pred = model.predict(
        observed, query, n_samples, importance, prior=prior, refine=refine, generators=generators
    )
    paths = pred.samples  # (K, B, n, D) decoded means of the posterior paths
    noise_std = model.decoder.log_std.to(paths).exp()  # (D,) the same for every path
    K, D = paths.shape[0], paths.shape[-1]
    eps = torch.zeros(paths.shape, dtype=dtype)  # (K, B, n, D); each series' own times only
    for b, (g, f) in enumerate(zip(generators, future, strict=True)):
        eps[:, b, : len(f)] = torch.randn(K, len(f), D, generator=g, dtype=dtype)
    eps = eps.to(device)
    draws = (paths + noise_std * eps).double().cpu().numpy()  # (K, B, n, D)
    mean, std = pred.mean.double().cpu().numpy(), pred.std.double().cpu().numpy()  # (B, n, D)
    paths = paths.double().cpu().numpy()
    noise = np.broadcast_to(noise_std.double().cpu().numpy(), (len(paths), paths.shape[-1]))
    if norm is not None:
        draws = denormalise(draws, norm)
        mean, std = denormalise(mean, norm, transformed=True), denormalise_std(std, norm)
        paths, noise = denormalise(paths, norm, transformed=True), denormalise_std(noise, norm)
    return draws, mean, std, paths, noise
