"""Latent ODE predictions: forecasts and reconstructions, refinement of q(z0), importance-
weighted prediction against the exact posterior predictive of a linear-Gaussian model,
aggregate-posterior priors, chunked scoring of shared paths, per-series generators."""

from __future__ import annotations

import pytest
import torch
from latent_model_helpers import F64, TIGHT, B, D, L, T, _latent, _linear_gaussian, make_batch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal

from latentode.data import IrregularBatch
from latentode.nn import AggregatePosterior, LatentODE, ModelInputError, Prediction

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed_0")


def test_forecast_and_reconstruct_outputs() -> None:
    model, batch = _latent("odernn"), make_batch()
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    with torch.no_grad():
        pred = model.forecast(batch, future, n_samples=6)
        rec = model.reconstruct(batch)
    assert pred.samples is not None and pred.samples.shape == (6, B, 5, D)
    assert pred.mean.shape == pred.std.shape == (B, 5, D)
    torch.testing.assert_close(pred.mean, pred.samples.mean(0))
    assert bool((pred.std >= 0.01 - 1e-12).all())  # at least the observation noise
    assert rec.mean.shape == (B, T, D) and rec.samples is not None and rec.samples.shape[0] == 1
    torch.testing.assert_close(rec.std, torch.full_like(rec.std, 0.01))  # K = 1: noise only


def _exact_predictive(
    model: LatentODE,
    A: Tensor,
    W: Tensor,
    batch: IrregularBatch,
    times: Tensor,
    prior: list[tuple[Tensor, Tensor]] | None = None,
    t0: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean and std ``[B, T', D]`` of ``p(x(times) | batch)`` for `_linear_gaussian` models,
    one series at a time. Under each prior component ``N(m, diag(s^2))`` (default the model's
    ``N(0, I)``) z0's posterior is ``N(P^-1 r, P^-1)`` with ``P = diag(s^-2) + sum H^T H / s2``
    over the observed entries; the components (equally weighted a priori) are weighted by their
    evidence ``N(y; H m + c, H diag(s^2) H^T + s2 I)``. The prior is that of the state at
    ``t0`` (default: the model's anchor time for ``batch``)."""
    c, s2 = model.decoder.net[0].bias.detach(), 0.25
    t0 = model.anchor_time(batch) if t0 is None else t0
    level = model.level(batch)  # (B, D), zeros unless centred
    H = lambda t: W @ torch.linalg.matrix_exp(A * (t - t0))  # noqa: E731  (D, L)
    Hq = torch.stack([H(t) for t in times])  # (T', D, L)
    ones = torch.ones(L, dtype=F64)
    prior = [(torch.zeros(L, dtype=F64), ones)] if prior is None else prior
    means, stds = [], []
    for b in range(batch.values.shape[0]):
        rows = [
            (H(t)[d], batch.values[b, i, d] - level[b, d] - c[d])
            for i, t in enumerate(batch.times)
            for d in range(D)
            if batch.mask[b, i, d] > 0
        ]
        Ho = torch.stack([h for h, _ in rows])  # (n_obs, L)
        y = torch.stack([v for _, v in rows])  # (n_obs,)
        log_ev, mean_k, var_k = [], [], []
        for m, sd in prior:
            cov = torch.linalg.inv(torch.diag(sd**-2) + Ho.T @ Ho / s2)
            mu = cov @ (m / sd**2 + Ho.T @ y / s2)
            marginal = Ho @ torch.diag(sd**2) @ Ho.T + s2 * torch.eye(len(y), dtype=F64)
            log_ev.append(MultivariateNormal(Ho @ m, marginal).log_prob(y))
            mean_k.append(Hq @ mu + c + level[b])  # (T', D)
            var_k.append(torch.einsum("tdl,lk,tdk->td", Hq, cov, Hq) + s2)
        pi = torch.softmax(torch.stack(log_ev), dim=0)[:, None, None]  # (C, 1, 1)
        mk, vk = torch.stack(mean_k), torch.stack(var_k)  # (C, T', D)
        mean = (pi * mk).sum(dim=0)
        means.append(mean)
        stds.append(((pi * (vk + mk.square())).sum(dim=0) - mean.square()).sqrt())
    return torch.stack(means), torch.stack(stds)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("anchor", ["first", "last"])
def test_refine_moves_q_to_the_best_diagonal_gaussian_of_the_exact_posterior(anchor: str) -> None:
    """`LatentODE.refine` maximises each series' ELBO over a diagonal Gaussian ``q(z0)``. For
    the linear-Gaussian model z0's posterior is ``N(mu, P^-1)``; the best diagonal Gaussian has
    mean ``mu`` and variances ``1 / diag(P)`` (mean-field on a Gaussian). The refined ``q``
    reaches both from the untrained encoder's, the weights get no gradient, and `predict`
    with ``refine`` draws its paths from the refined ``q``."""
    model, A, W = _linear_gaussian("none", anchor)
    batch = make_batch()
    t0 = model.anchor_time(batch)
    s2 = 0.25
    mus, diag_p = [], []
    for b in range(B):
        rows = [
            W[d] @ torch.linalg.matrix_exp(A * (t - t0))
            for i, t in enumerate(batch.times)
            for d in range(D)
            if batch.mask[b, i, d] > 0
        ]
        y = torch.stack(
            [
                batch.values[b, i, d] - model.decoder.net[0].bias[d]
                for i in range(T)
                for d in range(D)
                if batch.mask[b, i, d] > 0
            ]
        ).detach()
        Ho = torch.stack(rows)  # (n_obs, L)
        P = torch.eye(L, dtype=F64) + Ho.T @ Ho / s2
        mus.append(torch.linalg.solve(P, Ho.T @ y / s2))
        diag_p.append(torch.diagonal(P))
    mu, std = torch.stack(mus), torch.stack(diag_p).rsqrt()  # (B, L)
    torch.manual_seed(0)
    with torch.no_grad():
        q0 = model.encode(batch)
        q = model.refine(batch, steps=400, lr=0.03, n_samples=32)
    assert all(p.grad is None for p in model.parameters())
    assert float((q0.mean - mu).abs().max()) > 0.3  # the untrained encoder is far off
    assert bool(((q.mean - mu).abs() <= 0.1 * std).all())  # a tenth of a posterior std
    torch.testing.assert_close(q.stddev, std, rtol=0.05, atol=0.0)
    # predict(refine=...) draws from the refined q: its mean path at the observed times.
    torch.manual_seed(1)
    with torch.no_grad():
        pred = model.predict(batch, batch.times, n_samples=2000, refine=150)
    H = torch.stack([W @ torch.linalg.matrix_exp(A * (t - t0)) for t in batch.times])  # (T,D,L)
    want = torch.einsum("tdl,bl->btd", H, mu) + model.decoder.net[0].bias.detach()
    torch.testing.assert_close(pred.mean, want, rtol=0.0, atol=0.08)
    with pytest.raises(ModelInputError, match="refine needs"):
        model.refine(batch, steps=-1)
    with pytest.raises(ModelInputError, match="inference_mode"), torch.inference_mode():
        model.refine(batch, steps=1)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize(
    ("center", "anchor"), [("none", "first"), ("last", "first"), ("none", "last")]
)
def test_importance_weighted_prediction_recovers_the_exact_posterior_predictive(
    center: str, anchor: str, device: str
) -> None:
    model, A, W = _linear_gaussian(center, anchor)
    batch = make_batch()
    future = batch.times[-1] + torch.linspace(0.2, 3.0, 4, dtype=F64)
    if anchor == "last":  # also times before the anchor, reached by the backwards solve
        future = torch.cat([batch.times[1:2], batch.times[6:7] - 0.01, future[2:]])
    exact_mean, exact_std = _exact_predictive(model, A, W, batch, future)
    model, on_device = model.to(device), batch.to(device)
    with torch.no_grad():
        plain = model.forecast(on_device, future.to(device), n_samples=4000)
        pred = model.predict(
            on_device, future.to(device), n_samples=4000, importance=True, proposal_scale=2.0
        )
    assert pred.mean.device.type == device
    pred = Prediction(*(x.cpu() for x in (pred.mean, pred.std, pred.samples, pred.ess)))
    plain = Prediction(plain.mean.cpu(), plain.std.cpu())
    assert pred.ess is not None and pred.samples is not None
    assert pred.samples.shape == (4000, B, 4, D) and pred.ess.shape == (B,)
    assert bool((pred.ess > 40).all())  # of 4000: the untrained encoder is a poor proposal
    # Monte-Carlo tolerance: 5 standard errors of a weighted mean with the weights' ESS.
    path_std = (exact_std.square() - 0.25).sqrt()  # (B, T', D) posterior std of W z(t)
    tol = 5 * path_std / pred.ess.sqrt()[:, None, None] + 1e-9
    assert bool(((pred.mean - exact_mean).abs() <= tol).all())
    torch.testing.assert_close(pred.std, exact_std, rtol=0.08, atol=0.0)
    # The resampled paths are unweighted draws of the same posterior.
    torch.testing.assert_close(pred.samples.mean(0), pred.mean, rtol=0.0, atol=float(tol.max()) * 3)
    # Control: the untrained encoder's q alone is far from the posterior.
    assert float((plain.mean - exact_mean).abs().max()) > 4 * float(tol.max())


def test_importance_weighted_prediction_on_per_series_times_and_bad_arguments() -> None:
    model, batch = _latent("gru"), make_batch()
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    per_series = future.expand(B, 5)
    with torch.no_grad():
        torch.manual_seed(3)
        shared = model.predict(batch, future, n_samples=7, importance=True)
        torch.manual_seed(3)
        rows = model.predict(batch, per_series, n_samples=7, importance=True)
    torch.testing.assert_close(rows.mean, shared.mean)
    torch.testing.assert_close(rows.std, shared.std)
    assert shared.ess is not None and bool(((shared.ess >= 1) & (shared.ess <= 7 + 1e-9)).all())
    with pytest.raises(ModelInputError, match="proposal_scale"):
        model.predict(batch, future, importance=True, proposal_scale=0.0)
    with pytest.raises(ModelInputError, match="n_samples"):
        model.predict(batch, future, n_samples=0, importance=True)


@pytest.mark.parametrize(
    ("anchor", "where"), [("first", None), ("first", "before"), ("last", None), ("last", "inside")]
)
def test_prediction_under_an_aggregate_posterior_prior_matches_the_exact_mixture_posterior(
    anchor: str, where: str | None
) -> None:
    """The mixture is the prior of the state at its ``time``: the batch's anchor time when
    ``None``, else wherever the training series' anchor was (``"before"`` the batch's first
    time, or ``"inside"`` its grid, before its last observed time)."""
    torch.manual_seed(0)  # the decoder weights W
    model, A, W = _linear_gaussian(anchor=anchor)
    batch = make_batch()
    future = batch.times[-1] + torch.linspace(0.2, 3.0, 4, dtype=F64)
    time = {None: None, "before": float(batch.times[0]) - 1.5, "inside": float(batch.times[1])}
    # Two components far apart: the posterior is a two-component Gaussian mixture.
    loc = torch.tensor([[1.5, 0.0, 0.5], [-1.0, 1.0, -0.5]], dtype=F64)
    scale = torch.tensor([[0.4, 0.3, 0.5], [0.3, 0.5, 0.4]], dtype=F64)
    prior = AggregatePosterior(loc, scale, time[where])
    exact_mean, exact_std = _exact_predictive(
        model, A, W, batch, future, list(zip(loc, scale, strict=True)), time[where]
    )
    standard_mean, _ = _exact_predictive(model, A, W, batch, future)
    # The same mixture placed at the batch's own anchor time.
    misplaced, _ = _exact_predictive(model, A, W, batch, future, list(zip(loc, scale, strict=True)))
    with torch.no_grad():
        pred = model.forecast(batch, future, n_samples=20000, importance=True, prior=prior)
    assert pred.ess is not None and pred.samples is not None
    assert pred.samples.shape == (20000, B, 4, D) and bool((pred.ess > 50).all())
    path_std = (exact_std.square() - 0.25).sqrt()  # (B, T', D)
    tol = 5 * path_std / pred.ess.sqrt()[:, None, None] + 1e-9
    assert bool(((pred.mean - exact_mean).abs() <= tol).all())
    # A moved prior explains the series less well: fewer effective paths, a looser std.
    torch.testing.assert_close(pred.std, exact_std, rtol=0.03 if where is None else 0.05, atol=0.0)
    # Control: the prior matters here; N(0, I)'s posterior predictive is far from this one,
    # and so is the same mixture placed at the batch's anchor instead of its own time.
    control = standard_mean if where is None else misplaced
    assert float((control - exact_mean).abs().max()) > 4 * float(tol.max())
    # The mixture's density, against a loop over its components.
    z = torch.randn(5, L, dtype=F64)
    by_loop = (
        torch.stack([Normal(loc[i], scale[i]).log_prob(z).sum(-1) for i in range(2)])
        .exp()
        .mean(0)
        .log()
    )
    torch.testing.assert_close(prior.log_prob(z), by_loop)


def test_aggregate_posterior_collects_the_encoder_posteriors_and_rejects_misuse() -> None:
    model, batch = _latent("gru"), make_batch()
    with torch.no_grad():
        q = model.encode(batch)
        agg = model.aggregate_posterior(batch, chunk=2)  # chunks of 2, 2 and 1 series
    torch.testing.assert_close(agg.loc, q.mean)
    torch.testing.assert_close(agg.scale, q.stddev)
    assert agg.time == float(batch.times[0])  # the anchor of the encoded series
    last = _latent("gru", anchor="last")
    assert last.aggregate_posterior(batch).time == float(last.anchor_time(batch))
    observed_times = batch.times[batch.mask.sum(dim=(0, 2)) > 0]  # columns someone observes
    assert last.aggregate_posterior(batch).time == float(observed_times[-1]) != agg.time
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    with torch.no_grad():
        torch.manual_seed(4)
        shared = model.predict(batch, future, n_samples=9, importance=True, prior=agg)
        torch.manual_seed(4)
        rows = model.predict(batch, future.expand(B, 5), n_samples=9, importance=True, prior=agg)
    torch.testing.assert_close(rows.mean, shared.mean)
    torch.testing.assert_close(rows.std, shared.std)
    with pytest.raises(ModelInputError, match="importance=True"):
        model.predict(batch, future, prior=agg)
    wrong = AggregatePosterior(agg.loc[:, :1], agg.scale[:, :1])
    with pytest.raises(ModelInputError, match="latent dimensions"):
        model.predict(batch, future, importance=True, prior=wrong)
    later = AggregatePosterior(agg.loc, agg.scale, float(batch.times[1]))
    with pytest.raises(ModelInputError, match="after this batch's first time"):
        model.predict(batch, future, importance=True, prior=later)
    with pytest.raises(ModelInputError, match="chunk"):
        model.aggregate_posterior(batch, chunk=0)


def test_shared_prior_paths_are_scored_a_chunk_of_series_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Paths drawn from a prior are shared by the series; their log-likelihood is computed a
    chunk of series at a time and their moments without a ``[K, B, T, D]`` product. Neither
    may change a number: one series per chunk, the default, and per-series times (which take
    the per-series formulas, checked against the exact posterior with a centred model above)
    agree, with a centred model (the level added back)."""
    import latentode.nn.latent_paths as latent_paths

    model, batch = _latent("gru", center="mean"), make_batch()
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    with torch.no_grad():
        prior = model.aggregate_posterior(batch)
        runs = {}
        for name, elements, times in [
            ("default", latent_paths._CHUNK_ELEMENTS, future),
            ("one series per chunk", 1, future),
            ("per-series times", latent_paths._CHUNK_ELEMENTS, future.expand(B, 5)),
        ]:
            monkeypatch.setattr(latent_paths, "_CHUNK_ELEMENTS", elements)
            torch.manual_seed(5)
            runs[name] = model.predict(batch, times, n_samples=64, importance=True, prior=prior)
    ref = runs.pop("default")
    assert ref.samples is not None and ref.ess is not None
    assert ref.samples.shape == (64, B, 5, D)
    for pred in runs.values():
        assert pred.samples is not None and pred.ess is not None
        torch.testing.assert_close(pred.mean, ref.mean)
        torch.testing.assert_close(pred.std, ref.std)
        torch.testing.assert_close(pred.samples, ref.samples)
        torch.testing.assert_close(pred.ess, ref.ess)


@pytest.mark.parametrize(("importance", "refine"), [(False, 0), (True, 0), (False, 3), (True, 3)])
def test_predict_with_generators_gives_each_series_its_own_draws(
    importance: bool, refine: int
) -> None:
    """``generators=``: series ``b``'s draws (z0, refinement, resampling) come from
    ``generators[b]`` alone, so its prediction in a batch is its prediction in any other batch
    (here: two of the series, in the other order), to the solver's tolerance; one generator
    per series is required."""
    # a wide observation std: weights far from one path, so the resampling matters
    model = _latent("gru", solver=TIGHT, encoder_hidden=8, dynamics_hidden=8, obs_std=5.0)
    batch = make_batch()
    query = batch.times[-1] + torch.linspace(0.1, 1.0, 4, dtype=F64)

    def predict(rows: list[int], seed: int = 10) -> Tensor:
        gens = [torch.Generator().manual_seed(seed + b) for b in rows]
        with torch.no_grad():
            pred = model.predict(batch[rows], query, 7, importance, refine=refine, generators=gens)
        return torch.cat([pred.mean, pred.std, *pred.samples.unbind(0)], dim=-1)  # (B, T, .)

    whole, part = predict(list(range(B))), predict([2, 0])
    torch.testing.assert_close(part, whole[[2, 0]], rtol=0, atol=1e-8)
    assert (predict([2, 0], seed=20) - part).abs().max() > 1e-3  # the seeds decide the draws
    with pytest.raises(ModelInputError, match="one generator per series"):
        model.predict(batch, query, 7, generators=[torch.Generator()])
