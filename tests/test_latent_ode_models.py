"""Latent ODE models: shapes, gradients, the masked likelihood, the KL, bounds, a tiny fit.

Numerics in float64 with fixed seeds; the fit runs in float32 (a few seconds on one thread).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
import torch
from sync_helpers import count_syncs
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from latentode.data import DataError, IrregularBatch, split_interpolation
from latentode.data.synthetic import make_spirals
from latentode.nn import (
    ODERNN,
    AggregatePosterior,
    GaussianDecoder,
    GRUBaseline,
    GRUEncoder,
    LatentODE,
    LatentODEConfig,
    ModelInputError,
    ODEFunc,
    ODERNNEncoder,
    Prediction,
    SolverSettings,
    flow_hidden,
    kl_standard_normal,
    masked_log_likelihood,
)
from latentode.solver import odeint

F64 = torch.float64
B, T, D, L = 4, 9, 2, 3
TIGHT = SolverSettings("dopri5", rtol=1e-10, atol=1e-12)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def seeded() -> Iterator[None]:
    """Seed torch's global RNG for model init and posterior samples; restore it afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


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


def scrambled(batch: IrregularBatch) -> dict[str, Tensor]:
    """The batch's tensors with junk (NaN, huge numbers) where the mask is 0."""
    junk = torch.where(batch.mask > 0, batch.values, torch.full_like(batch.values, 1e6))
    junk[batch.mask == 0] = torch.nan
    junk[0][batch.mask[0] == 0] = -3e5
    return {"times": batch.times, "values": junk, "mask": batch.mask}


# ---- every model class: shapes, gradients, finite loss ------------------------------------


def _latent(encoder: str, **kw: object) -> LatentODE:
    return LatentODE(LatentODEConfig(input_dim=D, latent_dim=L, encoder=encoder, **kw)).double()


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


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "LatentODE-gru": lambda: _latent("gru"),
    "LatentODE-odernn": lambda: _latent("odernn"),
    "LatentODE-centred": lambda: _latent("gru", center="mean"),
    "LatentODE-last": lambda: _latent("gru", center="last", encoder_time=True),
    "LatentODE-anchor-last": lambda: _latent("odernn", anchor="last"),
    "GRUBaseline": lambda: GRUBaseline(D, 8).double(),
    "ODERNN": lambda: ODERNN(D, 8, 8).double(),
}


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


def test_nfe_counted_by_the_vector_field_matches_the_solver() -> None:
    model, batch = _latent("gru"), make_batch()
    model.dynamics.reset_nfe()
    model.elbo(batch, batch)
    assert model.last_stats is not None and model.dynamics.nfe == model.last_stats.nfe > 0


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_training_step_syncs_with_the_host_about_once_per_solver_step(
    gradient: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GRU-encoder latent ODE's loss and backward read from the device about once per
    attempted solver step (forward and backward), plus a fixed dozen per training step: the
    initial step size of each solve (a few norms), the read-out grid, the input checks, and
    for the adjoint one read of its backward solve's drift from the forward solution.
    Measured: backprop 19 reads for 11 attempts, adjoint 36 for 25, checkpoint 19 for 22."""
    batch = make_batch()
    model = _latent("gru", solver=SolverSettings("dopri5", 1e-10, 1e-12, gradient=gradient))

    def step() -> None:
        model.loss(batch, batch, n_samples=2).backward()

    _, syncs = count_syncs(monkeypatch, step)
    stats = model.last_stats
    assert stats is not None
    attempts = stats.n_accepted + stats.n_rejected
    attempts += (stats.n_accepted_backward or 0) + (stats.n_rejected_backward or 0)
    assert attempts > 10
    fixed = 12 + (gradient == "adjoint")  # the drift check (`adjoint._check_drift`)
    assert syncs <= attempts + fixed, f"{syncs} host syncs for {attempts} attempted solver steps"


def test_direct_euler_hidden_flow_matches_the_solver_at_one_evaluation_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    func, batch = ODEFunc(8, 16).double(), make_batch()
    h0 = torch.randn(B, 8, dtype=F64, requires_grad=True)
    grid = batch.times
    got = flow_hidden(func, h0, grid, SolverSettings("euler"))  # (T, B, 8)
    assert func.reset_nfe() == T - 1
    want = odeint(func, h0, grid, method="euler")
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
    # gradients to the state and the parameters agree; to the times they differ by design: the
    # solver gives the continuous-time formula, the direct steps their exact discrete gradient
    weights = torch.randn_like(got)
    g_got = torch.autograd.grad((got * weights).sum(), (h0, *func.parameters()))
    g_want = torch.autograd.grad((want * weights).sum(), (h0, *func.parameters()))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # other settings still go through the solver
    capped = flow_hidden(func, h0, grid, SolverSettings("euler", step_size=0.05))
    torch.testing.assert_close(capped, odeint(func, h0, grid, method="euler", step_size=0.05))
    # the ODE-RNN encoder reads nothing back from the device per gap
    enc = ODERNNEncoder(D, L, 8, 8).double()
    _, syncs = count_syncs(monkeypatch, lambda: enc(batch.times, batch.values, batch.mask))
    assert syncs <= 3, f"{syncs} host syncs for one encoder pass over {T} times"


@pytest.mark.parametrize("anchor", ["first", "last"])
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_adjoint_gradients_match_backprop(gradient: str, anchor: str) -> None:
    """Also through the backwards-in-time solve of ``anchor="last"``."""
    batch, grads = make_batch(), {}
    for method in ("backprop", gradient):
        torch.manual_seed(0)
        solver = SolverSettings("dopri5", 1e-10, 1e-12, gradient=method)
        model = _latent("gru", solver=solver, anchor=anchor)
        model.loss(batch, batch, n_samples=2).backward()
        grads[method] = torch.cat([p.grad.flatten() for p in model.parameters()])
    if anchor == "first":  # one solve; two (summed forward counts only) for "last"
        assert model.last_stats is not None and model.last_stats.nfe_backward > 0
    assert model.dynamics.nfe > 0
    torch.testing.assert_close(grads[gradient], grads["backprop"], rtol=1e-6, atol=1e-6)


def test_decoder_decodes_long_inputs_in_blocks_without_autograd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without autograd (forecasts), the decoder runs blocks of `DECODE_ROWS` states at a time,
    so a long forecast's hidden activations are not all held at once: the same means."""
    from latentode.nn import decoders

    torch.manual_seed(0)
    dec = decoders.GaussianDecoder(L, 3, hidden=16, depth=2).double()
    z = torch.randn(5, 4, 7, L, dtype=F64)  # 140 rows
    whole = dec(z).mean.detach()
    monkeypatch.setattr(decoders, "DECODE_ROWS", 9)  # 16 blocks, the last one short
    with torch.no_grad():
        blocks = dec(z)
    assert blocks.mean.shape == (5, 4, 7, 3) and blocks.stddev.shape == (5, 4, 7, 3)
    torch.testing.assert_close(blocks.mean, whole, rtol=1e-14, atol=1e-14)


# ---- integration grids and predictions ----------------------------------------------------


def test_integrate_per_series_grids_agree_with_the_shared_grid() -> None:
    model = _latent("gru", solver=TIGHT)
    z0 = torch.randn(2, 3, L, dtype=F64)  # (K, B, L)
    t0 = torch.tensor(0.0, dtype=F64)
    grid = torch.linspace(0.0, 1.5, 7, dtype=F64)
    shared = model.integrate(z0, t0, grid)  # (K, B, 7, L)
    cols = torch.tensor([[0, 2, 3, 6], [0, 1, 4, 5], [0, 3, 5, 6]])  # each row starts at t0
    rows = model.integrate(z0, t0, grid[cols])  # (K, B, 4, L)
    torch.testing.assert_close(
        rows,
        shared.gather(2, cols.expand(2, 3, 4).unsqueeze(-1).expand(2, 3, 4, L)),
        rtol=1e-8,
        atol=1e-8,
    )
    later = model.integrate(z0, t0, grid[cols[:, 1:]])  # rows start after t0: t0 is prepended
    torch.testing.assert_close(later, rows[:, :, 1:], rtol=1e-8, atol=1e-8)
    # Rows that are all one grid (a forecast at one step for every series) take the shared
    # grid's solve: the same numbers exactly.
    assert torch.equal(model.integrate(z0, t0, grid.expand(3, -1)), shared)
    torch.testing.assert_close(model.integrate(z0, t0, grid[2:]), shared[:, :, 2:])
    with pytest.raises(ModelInputError, match="all start at t0 or all after"):
        model.integrate(z0, t0, torch.stack([grid[:3], grid[1:4], grid[:3]]))
    with pytest.raises(ModelInputError, match="before the first observation"):
        model.integrate(z0, t0, grid - 0.1)
    flipped = r"increasing in the model's torch\.float64; they are not at index 1"
    with pytest.raises(ModelInputError, match=flipped):
        model.integrate(z0, t0, grid.flip(0))
    rows_bad = torch.stack([grid, grid, grid.where(torch.arange(7) != 4, grid[3])])  # (3, 7)
    with pytest.raises(ModelInputError, match="they are not at row 2, index 4"):
        model.integrate(z0, t0, rows_bad)
    # float64 times 1e8 apart by 1 coincide in float32 (spacing 8): the message says so
    far = 1e8 + torch.arange(7, dtype=torch.float64)  # (7,)
    with pytest.raises(ModelInputError, match=r"torch\.float32; they are not at index 1.*float32"):
        copy.deepcopy(model).float().integrate(z0.float(), far[0].float(), far)
    with pytest.raises(ModelInputError, match="query times must be finite numbers"):
        model.integrate(z0, t0, grid.where(torch.arange(7) != 3, math.nan))
    # times as a list or an array are read as the tensor of them
    assert torch.equal(model.integrate(z0, t0, grid.tolist()), shared)


def test_observed_that_is_not_a_batch_of_tensors_is_named() -> None:
    """A SeriesTable or a dict passed as ``observed`` was an AttributeError or a TypeError
    deep inside the encoder."""
    model = _latent("gru")
    batch = make_batch()
    as_dict = {"times": batch.times, "values": batch.values, "mask": batch.mask}
    for call in (model.encode, lambda o: model.predict(o, batch.times, 2), model):
        with pytest.raises(ModelInputError, match="observed must hold tensors times, values and "
                           "mask \\(an IrregularBatch\\), got dict"):  # fmt: skip
            call(as_dict)


@pytest.mark.parametrize("name", ["gru", "odernn", "GRUBaseline", "ODERNN"])
def test_float64_times_that_coincide_in_the_float32_model_are_refused(name: str) -> None:
    """Times 1e8 + 0, 1, ..., T - 1 are distinct in float64, but float32's spacing there is
    8: the encoders compute with the values' dtype, so several became one time. The ODE-RNN's
    solve refused them as "t must be strictly increasing ... Sort the times" (the times were
    sorted), the GRU encoder read gaps of 0; now the model names the precision."""
    batch = make_batch()
    values, mask = batch.values.float(), batch.mask.float()  # (B, T, D)
    if name in ("gru", "odernn"):
        encoder = _latent(name).float().encoder
        run = lambda t: encoder(t, values, mask).mean  # noqa: E731
    else:
        model = GRUBaseline(D, 8) if name == "GRUBaseline" else ODERNN(D, 8, 8)
        run = lambda t: model(t, values, mask, t[-2:]).mean  # noqa: E731
    times = 1e8 + torch.arange(T, dtype=F64)  # (T,)
    msg = r"strictly increasing in torch.float64 but not in the model's torch.float32: at index 1"
    with pytest.raises(ModelInputError, match=msg):
        run(times)
    assert torch.isfinite(run(times - 1e8)).all()  # the same times from 0: read


@pytest.mark.parametrize("name", ["gru", "odernn", "GRUBaseline", "ODERNN"])
def test_observations_out_of_order_non_finite_or_of_another_dtype_are_refused(name: str) -> None:
    """The encoders and the baselines check what they are given, in one read from the
    device: unsorted or repeated times (once encoded without a word, the posterior moved), a
    NaN or inf where the mask says observed (once a NaN loss, or in `predict` a solver error
    about the learning rate), NaN times, and values of another dtype than the parameters (once
    a bare matmul error). A NaN where the mask is 0 is a missing value, as before."""
    if name in ("gru", "odernn"):
        model = _latent(name)
        run = lambda b: model.elbo(b, b).loss  # noqa: E731
    else:
        model = (GRUBaseline(D, 8) if name == "GRUBaseline" else ODERNN(D, 8, 8)).double()
        run = lambda b: model(b.times, b.values, b.mask, b.times[-2:]).mean  # noqa: E731
    batch = make_batch()  # Obs: an IrregularBatch refuses unsorted times itself
    Obs = lambda times, values, mask: SimpleNamespace(times=times, values=values, mask=mask)  # noqa: E731
    batch.values[batch.mask == 0] = math.nan
    assert torch.isfinite(run(batch)).all()
    swapped = batch.times.clone()
    swapped[[2, 3]] = swapped[[3, 2]]
    with pytest.raises(ModelInputError, match=r"strictly increasing; they break at index 3"):
        run(Obs(swapped, batch.values, batch.mask))
    with pytest.raises(ModelInputError, match="times contain NaN"):
        run(Obs(batch.times.where(torch.arange(T) != 4, math.nan), batch.values, batch.mask))
    with pytest.raises(DataError, match=r"times\[4\] is nan; every time must be finite"):
        IrregularBatch(batch.times.where(torch.arange(T) != 4, math.nan), batch.values, batch.mask)
    b, t, d = torch.nonzero(batch.mask)[5].tolist()
    values = batch.values.clone()
    values[b, t, d] = math.inf
    with pytest.raises(ModelInputError, match=rf"values\[{b}, {t}, {d}\] is inf where mask is 1"):
        run(Obs(batch.times, values, batch.mask))
    with pytest.raises(ModelInputError, match=r"values are torch.float32 but the model's param"):
        run(Obs(batch.times.float(), batch.values.float(), batch.mask.float()))


def test_anchor_last_integrates_both_ways_from_the_last_observed_time() -> None:
    """``anchor="last"`` against the closed form ``z(t) = expm(A (t - t_a)) z_a`` of linear
    dynamics, on a shared grid and on per-series rows on both sides of ``t_a``."""
    model, A, _ = _linear_gaussian(anchor="last")
    batch = make_batch()
    batch.mask[:, -1] = 0.0  # the last grid column unobserved: the anchor is the one before
    t_a = model.anchor_time(batch)
    assert float(t_a) == float(batch.times[-2])
    z_a = torch.randn(2, 3, L, dtype=F64)  # (K, B, L)

    def exact(times: Tensor) -> Tensor:  # (..., L) states at times [...], per K and B
        prop = torch.linalg.matrix_exp(A * (times - t_a).unsqueeze(-1).unsqueeze(-1))
        return torch.einsum("...ij,kbj->kb...i", prop, z_a)

    grid = torch.linspace(-0.5, 3.0, 8, dtype=F64)  # before t0, between, after the anchor
    got = model.integrate(z_a, t_a, grid)  # (K, B, 8, L)
    torch.testing.assert_close(got, exact(grid), rtol=1e-8, atol=1e-9)
    assert model.last_stats is not None and model.last_stats.nfe > 0  # two solves, summed
    rows = torch.stack([grid[[0, 2, 5]], grid[[3, 6, 7]], grid[[1, 4, 7]]])  # (B, 3)
    got_rows = model.integrate(z_a, t_a, rows)  # the union of the rows, read back per row
    want = torch.stack([exact(rows[b])[:, b] for b in range(3)], dim=1)  # (K, B, 3, L)
    torch.testing.assert_close(got_rows, want, rtol=1e-8, atol=1e-9)
    later = rows[:, 1:] + 2.0  # every row after the anchor: one solve per row
    want_later = torch.stack([exact(later[b])[:, b] for b in range(3)], dim=1)
    torch.testing.assert_close(model.integrate(z_a, t_a, later), want_later, rtol=1e-8, atol=1e-9)
    with pytest.raises(ModelInputError, match="strictly increasing"):
        model.integrate(z_a, t_a, grid.flip(0))


@pytest.mark.parametrize("encoder", ["gru", "odernn"])
def test_anchor_last_runs_the_encoder_forwards_to_the_last_observed_time(encoder: str) -> None:
    model, batch = _latent(encoder, anchor="last", encoder_time=encoder == "gru"), make_batch()
    batch.mask[:, -1] = 0.0
    end = T - 1  # the grid up to the last observed column, reversed, on the axis -t
    q = model.encode(batch)
    direct = model.encoder(
        -batch.times[:end].flip(0), batch.values[:, :end].flip(1), batch.mask[:, :end].flip(1)
    )
    torch.testing.assert_close(q.mean, direct.mean, rtol=0, atol=0)
    torch.testing.assert_close(q.stddev, direct.stddev, rtol=0, atol=0)
    # Unobserved columns after the anchor change nothing; the latest value changes q.
    trimmed = IrregularBatch(batch.times[:end], batch.values[:, :end], batch.mask[:, :end])
    torch.testing.assert_close(model.encode(trimmed).mean, q.mean, rtol=0, atol=0)
    moved = batch.values.clone()
    moved[:, end - 1] += 1.0
    shifted = model.encode(IrregularBatch(batch.times, moved, batch.mask)).mean
    observed_last = (batch.mask[:, end - 1] > 0).any(dim=-1)  # (B,)
    assert bool(((shifted - q.mean).abs().sum(-1) > 1e-6)[observed_last].all())
    # The default anchor is unchanged: z0 at t0, the encoder run backwards.
    first = _latent(encoder, encoder_time=encoder == "gru")
    first.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        first.encode(batch).mean, first.encoder(batch.times, batch.values, batch.mask).mean
    )
    assert float(first.anchor_time(batch)) == float(batch.times[0])


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


def _last_observed(batch: IrregularBatch) -> Tensor:
    """Each series' last observed value per feature, by a loop (0 where never observed)."""
    out = torch.zeros(batch.values.shape[0], batch.values.shape[2], dtype=F64)
    for b in range(out.shape[0]):
        for d in range(out.shape[1]):
            seen = torch.nonzero(batch.mask[b, :, d] > 0).flatten()
            if len(seen):
                out[b, d] = batch.values[b, seen[-1], d]
    return out


@pytest.mark.parametrize("center", ["mean", "last"])
def test_centred_model_moves_with_the_level_of_each_series(center: str) -> None:
    model, batch = _latent("odernn", center=center), make_batch()
    if center == "mean":
        observed = batch.values.where(batch.mask > 0, torch.zeros_like(batch.values))
        count = batch.mask.sum(1)  # (B, D)
        expected = observed.sum(1) / count.clamp(min=1)
    else:
        expected = _last_observed(batch)
        assert not torch.equal(batch.mask[:, -1], torch.ones_like(batch.mask[:, -1]))
    torch.testing.assert_close(model.level(batch), expected)
    shift = torch.tensor([[3.0, -2.0], [10.0, 0.5], [-7.0, 1.0], [0.25, 4.0]], dtype=F64)
    moved = IrregularBatch(batch.times, batch.values + shift[:, None, :], batch.mask)
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    with torch.no_grad():
        torch.manual_seed(3)
        pred = model.forecast(batch, future, n_samples=4)
        torch.manual_seed(3)
        pred_moved = model.forecast(moved, future, n_samples=4)
    # the same posterior and paths; only the level differs, by exactly the shift
    torch.testing.assert_close(pred_moved.mean, pred.mean + shift[:, None, :])
    torch.testing.assert_close(pred_moved.std, pred.std)
    # a feature a series never observes has level 0 rather than a division by zero
    empty = IrregularBatch(batch.times, batch.values, batch.mask.clone())
    empty.mask[1, :, 1] = 0.0
    assert model.level(empty)[1, 1] == 0.0
    plain = _latent("odernn")
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.level(batch), torch.zeros(B, D, dtype=F64))
    with pytest.raises(ModelInputError, match="center must be"):
        _latent("gru", center="median")


# ---- masked updates, independence of series, causality of the baselines -------------------


@pytest.mark.parametrize(
    "encoder",
    [
        lambda: GRUEncoder(D, L, 8).double(),
        lambda: GRUEncoder(D, L, 8, time_input=True).double(),
        lambda: ODERNNEncoder(D, L, 8, 8, solver=TIGHT).double(),
    ],
    ids=["gru", "gru-time", "odernn"],
)
def test_posterior_of_a_series_ignores_the_other_series(encoder: Callable[[], nn.Module]) -> None:
    enc, batch = encoder(), make_batch()
    q = enc(batch.times, batch.values, batch.mask)
    other = make_batch(seed=7)  # other series 1..3: other values, other observation times
    values = torch.cat([batch.values[:1], other.values[1:]])
    mask = torch.cat([batch.mask[:1], other.mask[1:]])
    mask[1:, 5] = 1.0  # a time only the other series observe
    q2 = enc(batch.times, values, mask)
    torch.testing.assert_close(q2.mean[0], q.mean[0], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(q2.stddev[0], q.stddev[0], rtol=1e-7, atol=1e-9)
    assert not torch.allclose(q2.mean[1:], q.mean[1:])


@pytest.mark.parametrize("time_input", [False, True])
def test_gru_encoder_reads_each_series_backwards_with_gaps_and_times(time_input: bool) -> None:
    """The posterior equals a per-series loop over its own observations, latest first, each
    step fed ``[values * mask, mask, gap to the later observation, (t - t0)]``."""
    enc, batch = GRUEncoder(D, L, 8, time_input=time_input).double(), make_batch()
    q = enc(batch.times, batch.values, batch.mask)
    t0 = batch.times[0]
    for b in range(B):
        h = torch.zeros(1, 8, dtype=F64)
        later = None
        cols = torch.nonzero((batch.mask[b] > 0).any(-1)).flatten().tolist()
        for c in reversed(cols):
            m = batch.mask[b, c]
            t = batch.times[c]
            gap = (later - t) if later is not None else torch.zeros((), dtype=F64)
            x = [batch.values[b, c] * m, m, gap.view(1)]
            if time_input:
                x.append((t - t0).view(1))
            h = enc.cell(torch.cat(x).unsqueeze(0), h)
            later = t
        lead = (later - t0).view(1, 1)
        mean, raw = enc.head(torch.cat([h, lead], -1)).chunk(2, -1)
        torch.testing.assert_close(q.mean[b], mean[0])
        torch.testing.assert_close(q.stddev[b], torch.nn.functional.softplus(raw[0]) + 1e-4)
    with pytest.raises(ModelInputError, match="encoder_time"):
        _latent("odernn", encoder_time=True)


@pytest.mark.parametrize("name", ["GRUBaseline", "ODERNN"])
def test_baselines_predict_from_strictly_earlier_observations(name: str) -> None:
    model, batch = LOSSES[name](), make_batch()
    t_out = torch.cat([batch.times, batch.times[-1] + torch.tensor([0.5, 1.0], dtype=F64)])
    last = int(torch.nonzero(batch.point_mask[0])[-1])  # series 0's last observation
    changed = batch.values.clone()
    changed[0, last] += 5.0
    p = model(batch.times, batch.values, batch.mask, t_out)
    p2 = model(batch.times, changed, batch.mask, t_out)
    torch.testing.assert_close(p2.mean[0, : last + 1], p.mean[0, : last + 1])  # up to and at it
    assert bool((p2.mean[0, last + 1 :] != p.mean[0, last + 1 :]).all())  # after it
    torch.testing.assert_close(p2.mean[1:], p.mean[1:])  # other series untouched


def test_gru_baseline_extrapolates_autoregressively() -> None:
    model, batch = GRUBaseline(D, 8).double(), make_batch()
    t_far = batch.times[-1] + torch.tensor([1.0], dtype=F64)
    t_both = torch.cat([batch.times[-1:] + 0.5, t_far])
    direct = model(batch.times, batch.values, batch.mask, t_far).mean[:, 0]
    via = model(batch.times, batch.values, batch.mask, t_both).mean[:, 1]
    assert not torch.allclose(direct, via)  # the prediction at +0.5 was fed back


def test_encoder_sizes_are_the_configured_ones_and_the_defaults_keep_old_checkpoints() -> None:
    sized = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=12, encoder_head_hidden=6)
    enc = sized.encoder
    widths = [m.out_features for m in enc.ode_func.net if isinstance(m, nn.Linear)]
    assert widths == [12, 8]  # state 8 -> 12 hidden units -> 8
    assert [m.out_features for m in enc.head if isinstance(m, nn.Linear)] == [6, 2 * L]
    assert isinstance(enc.head[1], nn.Tanh)
    deep = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=12, encoder_ode_depth=2)
    widths = [m.out_features for m in deep.encoder.ode_func.net if isinstance(m, nn.Linear)]
    assert widths == [12, 12, 8]  # two hidden layers
    assert len(deep.encoder.ode_func.net) == 5 and isinstance(deep.encoder.ode_func.net[3], nn.Tanh)
    # q(z0) is the MLP head of the final hidden state
    batch = make_batch()
    h = enc.hidden(batch.times, torch.where(batch.mask > 0, batch.values, 0.0), batch.mask)
    mean, raw = enc.head(h).chunk(2, dim=-1)
    q = enc(batch.times, batch.values, batch.mask)
    torch.testing.assert_close(q.mean, mean)
    torch.testing.assert_close(q.stddev, nn.functional.softplus(raw) + enc.min_std)
    # unset sizes build the previous architecture: the same state-dict keys and shapes, so a
    # checkpoint saved before the options existed still loads
    torch.manual_seed(0)
    default = _latent("odernn", encoder_hidden=8)
    shapes = {k: tuple(v.shape) for k, v in default.state_dict().items()}
    assert shapes["encoder.head.weight"] == (2 * L, 8)
    assert shapes["encoder.ode_func.net.0.weight"] == (8, 8)
    torch.manual_seed(1)
    explicit = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=8, encoder_head_hidden=0)
    explicit.load_state_dict(default.state_dict())
    assert {k: tuple(v.shape) for k, v in explicit.state_dict().items()} == shapes


def test_bad_arguments_raise_model_input_error() -> None:
    batch = make_batch()
    with pytest.raises(ModelInputError, match="encoder must be"):
        LatentODE(LatentODEConfig(encoder="lstm"))  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="anchor must be 'first' or 'last'"):
        LatentODE(LatentODEConfig(anchor="middle"))  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="encoder_ode_hidden sizes the ODE-RNN"):
        LatentODE(LatentODEConfig(encoder="gru", encoder_ode_hidden=50))
    with pytest.raises(ModelInputError, match="leave encoder_ode_depth unset"):
        LatentODE(LatentODEConfig(encoder="gru", encoder_ode_depth=2))
    with pytest.raises(ModelInputError, match="encoder_ode_depth is the number of hidden"):
        LatentODE(LatentODEConfig(encoder="odernn", encoder_ode_depth=-1))
    with pytest.raises(ModelInputError, match="head_hidden must be >= 0"):
        GRUEncoder(D, L, head_hidden=-1)
    with pytest.raises(ModelInputError, match="smooth activation"):
        ODEFunc(L, activation="relu")
    with pytest.raises(ModelInputError, match="unknown solver method"):
        SolverSettings("rk45")
    with pytest.raises(ModelInputError, match="the model's input_dim is 3 but the data have 2"):
        GRUEncoder(3, L)(batch.times, batch.values, batch.mask)
    with pytest.raises(ModelInputError, match="union grid"):
        GRUEncoder(D, L)(batch.times[:-1], batch.values, batch.mask)
    with pytest.raises(ModelInputError, match="t_out must be strictly increasing"):
        ODERNN(D).double()(batch.times, batch.values, batch.mask, batch.times.flip(0))


@pytest.mark.parametrize(
    ("setting", "value"), [("dynamics_depth", -1), ("decoder_depth", -2), ("decoder_depth", 1.5)]
)
def test_a_bad_depth_names_its_setting(setting: str, value: float) -> None:
    """make_mlp said 'depth must be >= 0, got -1.', naming neither the setting nor the network
    (the latent ODE has two MLPs); a fractional depth was a TypeError from list repetition."""
    with pytest.raises(ModelInputError) as err:
        LatentODE(LatentODEConfig(**{setting: value}))
    assert str(err.value) == (
        f"{setting} is the number of hidden layers of an MLP: a whole number >= 0 (0: one "
        f"linear layer); got {value!r}. Set {setting} to 0 or more."
    )
    assert len(LatentODE(LatentODEConfig(**{setting: 0})).state_dict()) > 0  # 0 is linear


# ---- a tiny seeded fit on spirals ----------------------------------------------------------


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
