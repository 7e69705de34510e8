"""Latent ODE models and the solver: NFE counts, host syncs per solver step, the direct
Euler hidden flow, adjoint gradients, block-wise decoding, integration on shared and
per-series grids, and integration both ways from the last observed time."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from latent_model_helpers import F64, TIGHT, B, D, L, T, _latent, _linear_gaussian, make_batch
from sync_helpers import count_syncs
from torch import Tensor

from latentode.nn import ModelInputError, ODEFunc, ODERNNEncoder, SolverSettings, flow_hidden
from latentode.solver import odeint

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed_0")


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


# ---- integration grids --------------------------------------------------------------------


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
