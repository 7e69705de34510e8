"""Latent ODE models: shapes and gradients of every model class, finite losses that ignore
masked values, the masked likelihood, the KL, the ELBO and IWAE bounds, a tiny fit.

Numerics in float64 with fixed seeds; the fit runs in float32 (a few seconds on one thread).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from latent_model_helpers import F64, LOSSES, B, D, L, T, _latent, make_batch
from torch import Tensor, nn
from torch.distributions import Normal, kl_divergence

from latentode.data import IrregularBatch, split_interpolation
from latentode.data.synthetic import make_spirals
from latentode.nn import (
    ODERNN,
    GaussianDecoder,
    GRUBaseline,
    GRUEncoder,
    LatentODE,
    LatentODEConfig,
    ODEFunc,
    ODERNNEncoder,
    kl_standard_normal,
    masked_log_likelihood,
)

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed_0")


def scrambled(batch: IrregularBatch) -> dict[str, Tensor]:
    """The batch's tensors with junk (NaN, huge numbers) where the mask is 0."""
    junk = torch.where(batch.mask > 0, batch.values, torch.full_like(batch.values, 1e6))
    junk[batch.mask == 0] = torch.nan
    junk[0][batch.mask[0] == 0] = -3e5
    return {"times": batch.times, "values": junk, "mask": batch.mask}


# ---- every model class: shapes, gradients, finite loss ------------------------------------


CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[nn.Module, IrregularBatch], Tensor]]] = {
    "ODEFunc": (
        lambda: ODEFunc(L, 8).double(),
        lambda m, b: m(torch.tensor(0.3, dtype=F64), b.values[..., :1].expand(B, T, L)),
    ),
    "ODEFunc-time": (
        lambda: ODEFunc(L, 8, activation="softplus", time_dependent=True).double(),
        lambda m, b: m(torch.tensor(0.3, dtype=F64), b.values[..., :1].expand(B, T, L)),
    ),
    "GaussianDecoder": (
        lambda: GaussianDecoder(L, D, 8, learn_std=True).double(),
        lambda m, b: m(b.values[..., :1].expand(B, T, L)).rsample(),
    ),
    "GRUEncoder": (
        lambda: GRUEncoder(D, L, 8).double(),
        lambda m, b: m(b.times, b.values, b.mask).rsample(),
    ),
    "GRUEncoder-time": (
        lambda: GRUEncoder(D, L, 8, time_input=True).double(),
        lambda m, b: m(b.times, b.values, b.mask).rsample(),
    ),
    "ODERNNEncoder": (
        lambda: ODERNNEncoder(D, L, 8, 8).double(),
        lambda m, b: m(b.times, b.values, b.mask).rsample(),
    ),
    "ODERNNEncoder-mlp-head": (
        lambda: ODERNNEncoder(D, L, 8, 12, head_hidden=6).double(),
        lambda m, b: m(b.times, b.values, b.mask).rsample(),
    ),
    "LatentODE-gru": (
        lambda: _latent("gru", learn_std=True, time_dependent=True),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    "LatentODE-odernn": (
        lambda: _latent("odernn", learn_std=True),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    "LatentODE-odernn-sized": (
        lambda: _latent("odernn", encoder_hidden=8, encoder_ode_hidden=12, encoder_head_hidden=6),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    "LatentODE-gru-mlp-head": (
        lambda: _latent("gru", encoder_hidden=8, encoder_head_hidden=6),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    # z at the last observed time: the query times lie on both sides of it
    "LatentODE-gru-anchor-last": (
        lambda: _latent("gru", anchor="last", encoder_time=True),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    "LatentODE-odernn-anchor-last": (
        lambda: _latent("odernn", anchor="last"),
        lambda m, b: m(b, b.times, n_samples=2).p_x.rsample(),
    ),
    "GRUBaseline": (
        lambda: GRUBaseline(D, 8, learn_std=True).double(),
        lambda m, b: m(b.times, b.values, b.mask, b.times + 0.1).rsample(),
    ),
    "ODERNN": (
        lambda: ODERNN(D, 8, 8, learn_std=True).double(),
        lambda m, b: m(b.times, b.values, b.mask, b.times + 0.1).rsample(),
    ),
}


SHAPES = {
    "ODEFunc": (B, T, L),
    "ODEFunc-time": (B, T, L),
    "GaussianDecoder": (B, T, D),
    "GRUEncoder": (B, L),
    "GRUEncoder-time": (B, L),
    "ODERNNEncoder": (B, L),
    "ODERNNEncoder-mlp-head": (B, L),
    "LatentODE-gru": (2, B, T, D),
    "LatentODE-odernn": (2, B, T, D),
    "LatentODE-odernn-sized": (2, B, T, D),
    "LatentODE-gru-mlp-head": (2, B, T, D),
    "LatentODE-gru-anchor-last": (2, B, T, D),
    "LatentODE-odernn-anchor-last": (2, B, T, D),
    "GRUBaseline": (B, T, D),
    "ODERNN": (B, T, D),
}


@pytest.mark.parametrize("name", list(CASES))
def test_shapes_and_every_parameter_gets_a_gradient(name: str) -> None:
    build, run = CASES[name]
    model, batch = build(), make_batch()
    out = run(model, batch)
    assert out.shape == SHAPES[name]
    loss = out.square().mean()
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}.{pname}"


def _loss(model: nn.Module, observed: object, target: object) -> Tensor:
    torch.manual_seed(1)  # the same posterior samples for every call
    return model.loss(observed, target)  # type: ignore[operator]


@pytest.mark.parametrize("name", list(LOSSES))
def test_losses_are_finite_and_ignore_masked_values(name: str) -> None:
    model, batch = LOSSES[name](), make_batch()
    split = split_interpolation(batch, 0.5, generator=torch.Generator().manual_seed(0))
    loss = _loss(model, split.observed, split.target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the same loss when the unobserved entries hold junk (raw tensors bypass IrregularBatch)
    observed, target = (SimpleNamespace(**scrambled(x)) for x in (split.observed, split.target))
    assert torch.equal(_loss(model, observed, target), loss)


def test_masked_log_likelihood_matches_a_direct_sum_and_ignores_masked_values() -> None:
    batch = make_batch()
    mean = torch.randn(2, B, T, D, dtype=F64, requires_grad=True)
    p_x = Normal(mean, torch.full_like(mean, 0.3))
    ll = masked_log_likelihood(p_x, batch.values, batch.mask)  # (2, B)
    direct = (p_x.log_prob(batch.values) * batch.mask).sum(dim=(-1, -2))
    torch.testing.assert_close(ll, direct, rtol=1e-14, atol=1e-12)
    junk = scrambled(batch)["values"]
    assert torch.equal(masked_log_likelihood(p_x, junk, batch.mask), ll)
    ll.sum().backward()
    assert bool((mean.grad[:, batch.mask == 0] == 0).all())  # no gradient from masked entries
    assert bool((mean.grad[:, batch.mask > 0] != 0).all())


# ---- KL, ELBO, IWAE -----------------------------------------------------------------------


def test_kl_matches_closed_form_and_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(0)
    q = Normal(
        torch.randn(5, L, generator=gen, dtype=F64),
        0.2 + torch.rand(5, L, generator=gen, dtype=F64),
    )
    prior = Normal(torch.zeros(5, L, dtype=F64), torch.ones(5, L, dtype=F64))
    kl = kl_standard_normal(q)  # (5,)
    torch.testing.assert_close(kl, kl_divergence(q, prior).sum(-1), rtol=1e-13, atol=1e-13)
    z = q.sample((200_000,))  # (S, 5, L)
    log_ratio = (q.log_prob(z) - prior.log_prob(z)).sum(-1)  # (S, 5)
    stderr = log_ratio.std(0) / 200_000**0.5
    assert bool(((log_ratio.mean(0) - kl).abs() < 4 * stderr).all())


def test_elbo_terms_and_iwae_bound() -> None:
    model, batch = _latent("gru"), make_batch()
    terms = model.elbo(batch, batch, n_samples=3, kl_weight=0.25)
    torch.testing.assert_close(terms.kl, kl_standard_normal(model.encode(batch)))
    torch.testing.assert_close(terms.bound, terms.log_lik - 0.25 * terms.kl)
    assert int(terms.n_observed) == batch.n_observed
    torch.testing.assert_close(terms.loss, -terms.bound.sum() / batch.n_observed)
    # IWAE >= the Monte-Carlo ELBO of the same samples (Jensen), equal for K = 1
    for K in (1, 8):
        torch.manual_seed(2)
        iwae = model.elbo(batch, batch, n_samples=K, iwae=True).bound  # (B,)
        torch.manual_seed(2)
        out = model(batch, batch.times, n_samples=K)
        prior = Normal(torch.zeros_like(out.z0), torch.ones_like(out.z0))
        log_w = masked_log_likelihood(out.p_x, batch.values, batch.mask) + (
            prior.log_prob(out.z0) - out.q_z0.log_prob(out.z0)
        ).sum(-1)  # (K, B)
        if K == 1:
            torch.testing.assert_close(iwae, log_w[0])
        else:
            assert bool((iwae > log_w.mean(0)).all())
            torch.testing.assert_close(iwae, torch.logsumexp(log_w, 0) - torch.tensor(8.0).log())


# ---- a tiny seeded fit on spirals ---------------------------------------------------------


def test_tiny_fit_on_spirals_beats_trivial_forecasts() -> None:
    """Chen 2018's set-up shrunk: 32 spirals, observe 50 of the first 100 points, predict the
    next 100 of 32 *new* spirals. 200 Adam steps take ~10 s on one thread."""
    train, test = make_spirals(n=32, seed=0), make_spirals(n=32, seed=1)
    config = LatentODEConfig(input_dim=2, latent_dim=4, obs_std=0.3)
    model = LatentODE(config)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(0)
    for it in range(200):
        split = train.forecast_split(n_observed=50, generator=gen)
        opt.zero_grad()
        model.loss(split.observed, train.batch, kl_weight=min(1.0, it / 50)).backward()
        opt.step()
    split = test.forecast_split(n_observed=50, generator=torch.Generator().manual_seed(5))
    truth = test.clean[:, 100:]  # (n, 100, 2)
    with torch.no_grad():
        mse = (model.forecast(split.observed, split.target.times, 1).mean - truth).square().mean()
    obs = split.observed
    last_idx = (obs.point_mask * torch.arange(100)).argmax(dim=1)  # (n,)
    persistence = obs.values[torch.arange(32), last_idx].unsqueeze(1)  # (n, 1, 2)
    average = (obs.values.sum(1) / obs.mask.sum(1)).unsqueeze(1)  # (n, 1, 2)
    trivial = min(float((p - truth).square().mean()) for p in (persistence, average))
    assert trivial > 10.0  # sanity: the spirals move far in the forecast window
    assert float(mse) < 0.35 * trivial, f"forecast MSE {float(mse):.3f}, trivial {trivial:.3f}"
