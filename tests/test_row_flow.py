"""With a step_size the ODE-RNN steps each series on its own grid (`latentode.nn.row_flow`):
a series' encoding and its baseline predictions are the ones it gets alone, whatever else
shares its batch, and the flow converges to the exact one at the method's order."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from latentode.nn import ODERNN, GRUBaseline, ODERNNEncoder, SolverSettings
from latentode.nn.base import ModelInputError
from latentode.nn.latent_ode import LatentODE, LatentODEConfig

F64 = torch.float64
B, T, D = 6, 15, 2


def _data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Six series on a shared irregular grid over [0, 3], each observing about 30% of it."""
    gen = torch.Generator().manual_seed(seed)
    times = torch.sort(torch.rand(T, generator=gen, dtype=F64) * 3).values
    times[0] = 0.0
    values = torch.randn(B, T, D, generator=gen, dtype=F64)
    mask = (torch.rand(B, T, D, generator=gen) < 0.3).to(F64)
    mask[:, -1, 0] = 1.0  # every series observes something
    return times, values, mask


def _encoder(solver: SolverSettings) -> ODERNNEncoder:
    torch.manual_seed(0)
    return ODERNNEncoder(D, 4, hidden=8, ode_hidden=16, solver=solver).double()


def _baseline(solver: SolverSettings) -> ODERNN:
    torch.manual_seed(0)
    return ODERNN(D, hidden=8, ode_hidden=16, solver=solver).double()


FIXED = [
    SolverSettings("euler", step_size=0.1),
    SolverSettings("euler", step_size=5.0),  # one step per gap, the gaps a series' own
    SolverSettings("midpoint", step_size=0.3),
    SolverSettings("rk4", step_size=0.25),
    SolverSettings("dopri5", step_size=0.2),  # fixed steps of its 5th-order solution
]


@pytest.mark.parametrize("solver", FIXED, ids=lambda s: f"{s.method}-{s.step_size}")
def test_a_series_is_encoded_and_predicted_as_it_is_alone(solver: SolverSettings) -> None:
    """Before, a step_size capped the steps inside each gap of the batch's union grid, so a
    series' encoding moved with its batch (here by up to 2e-5 at the initial weights)."""
    times, values, mask = _data()
    t_out = torch.cat([times, torch.linspace(3.1, 4.0, 5, dtype=F64)])
    enc, base = _encoder(solver), _baseline(solver)
    with torch.no_grad():
        q = enc(times, values, mask)
        p = base(times, values, mask, t_out)
        for b in range(B):
            alone = enc(times, values[b : b + 1], mask[b : b + 1])
            torch.testing.assert_close(alone.mean[0], q.mean[b], rtol=0, atol=1e-13)
            torch.testing.assert_close(alone.stddev[0], q.stddev[b], rtol=0, atol=1e-13)
            p_alone = base(times, values[b : b + 1], mask[b : b + 1], t_out)
            torch.testing.assert_close(p_alone.mean[0], p.mean[b], rtol=0, atol=1e-13)


def test_a_step_larger_than_every_gap_is_one_euler_step_per_own_gap() -> None:
    """``h <- h + (t_prev - t) f(h)`` between a series' own observations (none of the other
    series' times in between), a GRU update at each, a last step to ``t0``."""
    times, values, mask = _data()
    enc = _encoder(SolverSettings("euler", step_size=5.0))
    b = 2
    cols = (mask[b] > 0).any(-1).nonzero().flatten().tolist()
    with torch.no_grad():
        h = torch.zeros(1, 8, dtype=F64)
        t_prev = times[cols[-1]]
        for c in reversed(cols):
            h = h + (times[c] - t_prev) * enc.ode_func(times[c], h)
            x = torch.cat([values[b : b + 1, c] * mask[b : b + 1, c], mask[b : b + 1, c]], -1)
            h = enc.cell(x, h)
            t_prev = times[c]
        h = h + (times[0] - t_prev) * enc.ode_func(times[0], h)
        got = enc.hidden(times, torch.where(mask > 0, values, 0.0), mask)[b]
    torch.testing.assert_close(got, h[0], rtol=0, atol=1e-14)


@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_the_fixed_step_flow_converges_at_the_method_order(method: str, order: int) -> None:
    """Against dopri5 at 1e-11 on the same weights: halving the step divides the error of the
    encoding and of the baseline's predictions by about ``2**order``."""
    times, values, mask = _data()
    t_out = torch.linspace(0.2, 4.0, 9, dtype=F64)
    exact = SolverSettings("dopri5", rtol=1e-11, atol=1e-11)
    with torch.no_grad():
        q_ref = _encoder(exact)(times, values, mask).mean
        p_ref = _baseline(exact)(times, values, mask, t_out).mean
        errs = []
        for h in (0.1, 0.05):
            solver = SolverSettings(method, step_size=h)
            e_q = (_encoder(solver)(times, values, mask).mean - q_ref).abs().max()
            e_p = (_baseline(solver)(times, values, mask, t_out).mean - p_ref).abs().max()
            errs.append((float(e_q), float(e_p)))
    for k in range(2):
        rate = math.log2(errs[0][k] / errs[1][k])
        assert order - 0.35 < rate < order + 0.6, (method, k, errs)


def test_baseline_queries_do_not_move_the_grid_and_euler_reads_the_polygon() -> None:
    """With a step_size the queries are read off the grid (one step from the boundary before
    each), so asking for fewer times gives the same values; for Euler that read-out is linear
    between two boundaries."""
    times, values, mask = _data()
    base = _baseline(SolverSettings("euler", step_size=0.2))
    t_out = torch.linspace(0.5, 4.5, 41, dtype=F64)
    with torch.no_grad():
        full = base(times, values, mask, t_out).mean  # (B, 41, D)
        some = base(times, values, mask, t_out[::4]).mean
        torch.testing.assert_close(some, full[:, ::4], rtol=0, atol=1e-13)
        # past the last observation (t = 3 at most) the grid is t_last + 0.2 k: three
        # queries inside one step lie on a line
        a = float(times[-1]) + 0.2 * 2
        q = torch.tensor([a + 0.01, a + 0.08, a + 0.17], dtype=F64)
        h = base._hidden_rows(times, torch.where(mask > 0, values, 0.0), mask, q)  # (B, 3, H)
    slope1 = (h[:, 1] - h[:, 0]) / 0.07
    slope2 = (h[:, 2] - h[:, 1]) / 0.09
    torch.testing.assert_close(slope1, slope2, rtol=1e-9, atol=1e-11)


def test_a_batch_observing_nothing_reads_the_unseen_state_as_before() -> None:
    """With a step_size a batch without any observation ended in an IndexError; it predicts
    what the batch-union flow predicts there, the decoded state 0."""
    times, values, _ = _data()
    none = torch.zeros(B, T, D, dtype=F64)
    with torch.no_grad():
        got = _baseline(SolverSettings("euler", step_size=0.1))(times, values, none, times)
        want = _baseline(SolverSettings("euler"))(times, values, none, times)
    torch.testing.assert_close(got.mean, want.mean, rtol=0, atol=0)
    assert got.mean.shape == (B, T, D)


def test_fixed_step_flow_settings_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ModelInputError, match=r"encoder_solver.*backpropagation"):
        LatentODE(
            LatentODEConfig(
                input_dim=D,
                latent_dim=3,
                encoder="odernn",
                encoder_solver=SolverSettings("euler", step_size=0.1, gradient="adjoint"),
            )
        )
    times, values, mask = _data()
    enc = _encoder(SolverSettings("euler", step_size=1e-3, max_num_steps=100))
    with pytest.raises(
        ModelInputError, match=r"series \d needs \d+ steps of at most.*max_num_steps=100"
    ):
        enc(times, values, mask)
    # without a step_size the settings go through the solver, adjoint included
    LatentODE(
        LatentODEConfig(
            input_dim=D,
            latent_dim=3,
            encoder="odernn",
            encoder_solver=SolverSettings("dopri5", gradient="adjoint"),
        )
    )


def test_the_baselines_name_a_bad_depth() -> None:
    """Their MLP depth errors said 'depth' (helper-22 named the latent ODE's)."""
    with pytest.raises(ModelInputError, match=r"^ode_depth is the number of hidden layers"):
        ODERNN(D, ode_depth=-1)
    with pytest.raises(ModelInputError, match=r"^decoder_depth is the number of hidden layers"):
        GRUBaseline(D, decoder_depth=1.5)  # type: ignore[arg-type]
