"""Gradients through the solver: gradcheck, agreement of the three modes, closed forms,
per-sample time grids."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from solver_gradients_helpers import F64, GRADIENTS, TIGHT, loss_and_grads, mode_kwargs, rel_err
from torch import nn

from latentode import odeint

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tanh_field(W: torch.Tensor) -> Field:
    """f(t, z) = tanh(W z) + 0.2 sin(t) z, closing over W (a plain function, not a Module)."""

    def field(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ W.T) + 0.2 * torch.sin(t) * z

    return field


def gradcheck_inputs(n_t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z0, W, t) leaves requiring grad, with t = linspace(0, 1, n_t)."""
    z0 = torch.tensor([0.7, -0.4], dtype=F64, requires_grad=True)
    W = torch.tensor([[-0.3, 1.0], [-0.8, -0.2]], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, n_t, dtype=F64).requires_grad_(True)
    return z0, W, t


# --- gradcheck ----------------------------------------------------------------------------------
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_gradcheck_adaptive(gradient: str) -> None:
    """dopri5 at rtol 1e-10: d/dz0, d/dW and d/dt all match finite differences."""

    def fn(z0: torch.Tensor, W: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        kw = mode_kwargs(gradient, (W,))
        return odeint(tanh_field(W), z0, t, method="dopri5", **TIGHT, **kw)

    inputs = gradcheck_inputs(n_t=3)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_gradcheck_fixed_grid_y0_and_params(gradient: str) -> None:
    """rk4 stepping on t itself: backprop and checkpoint are exact for the discrete solution."""
    z0, W, t = gradcheck_inputs(n_t=6)
    t = t.detach()

    def fn(z0: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return odeint(tanh_field(W), z0, t, method="rk4", **mode_kwargs(gradient, (W,)))

    assert torch.autograd.gradcheck(fn, (z0, W), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint"])
def test_gradcheck_fixed_step_readout_times(gradient: str) -> None:
    """Interior read-out times off the rk4 step grid: their gradient is the exact derivative
    of the dense output (the step grid, fixed by t[0] and step_size, does not move)."""
    z0, W, _ = gradcheck_inputs(n_t=2)
    z0, W = z0.detach(), W.detach()
    ends = torch.tensor([0.0, 1.0], dtype=F64)
    inner = torch.tensor([0.13, 0.4, 0.77], dtype=F64, requires_grad=True)

    def fn(inner: torch.Tensor) -> torch.Tensor:
        t = torch.cat([ends[:1], inner, ends[1:]])
        kw = mode_kwargs(gradient, ())
        return odeint(tanh_field(W), z0, t, method="rk4", step_size=0.125, **kw)

    assert torch.autograd.gradcheck(fn, (inner,), eps=1e-6, atol=1e-7, rtol=1e-6)


# --- the three modes agree ----------------------------------------------------------------------
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_modes_agree_with_backprop_on_mlp(
    gradient: str, make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=3, hidden=16)
    y0 = torch.randn(3, dtype=F64, generator=rng)
    t = torch.tensor([0.0, 1.5], dtype=F64)
    weights = torch.randn(2, 3, dtype=F64, generator=rng)
    ref = loss_and_grads(field, y0, t, weights, method="dopri5", gradient="backprop", **TIGHT)
    got = loss_and_grads(field, y0, t, weights, method="dopri5", **TIGHT, **mode_kwargs(gradient))
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_modes_agree_with_many_output_times(
    gradient: str, direction: str, make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=3, hidden=16, seed=1)
    y0 = torch.randn(4, 3, dtype=F64, generator=rng)  # a batch of 4 on one grid
    t = torch.linspace(0.0, 2.0, 21, dtype=F64)
    if direction == "reverse":
        t = t.flip(0)
    weights = torch.randn(21, 4, 3, dtype=F64, generator=rng)
    ref = loss_and_grads(field, y0, t, weights, method="dopri5", gradient="backprop", **TIGHT)
    got = loss_and_grads(field, y0, t, weights, method="dopri5", **TIGHT, **mode_kwargs(gradient))
    assert rel_err(got, ref) < 1e-6


@pytest.mark.parametrize(
    ("method", "options"), [("rk4", {"step_size": 0.05}), ("dopri5", {"rtol": 1e-6})]
)
def test_checkpoint_is_exact_gradient_of_discrete_solution(
    method: str, options: dict, make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    """Same discrete solution, two exact gradients of it: agreement to round-off."""
    field = make_mlp(dim=3, hidden=16, seed=2)
    y0 = torch.randn(3, dtype=F64, generator=rng)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=F64)
    weights = torch.randn(3, 3, dtype=F64, generator=rng)
    ref = loss_and_grads(field, y0, t, weights, method=method, gradient="backprop", **options)
    got = loss_and_grads(field, y0, t, weights, method=method, gradient="checkpoint", **options)
    assert rel_err(got, ref) < 1e-10


# --- the seed paper's linear example ------------------------------------------------------------
class LinearField(nn.Module):
    """dz/dt = W z."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.W = nn.Parameter(W.clone())

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T


LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sum": lambda z: z.sum(),
    "half_sq": lambda z: 0.5 * (z**2).sum(),
}


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_linear_ode_gradient_matches_matrix_exponential(
    gradient: str, loss_name: str, rng: torch.Generator
) -> None:
    """z(T) = expm(W T) z0, so dL/dW and dL/dz0 follow by autograd through matrix_exp."""
    loss_fn = LOSSES[loss_name]
    T = 1.5
    W = 0.5 * torch.randn(3, 3, dtype=F64, generator=rng)
    z0 = torch.randn(3, dtype=F64, generator=rng)

    W_ref, z0_ref = W.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    loss_ref = loss_fn(torch.linalg.matrix_exp(W_ref * T) @ z0_ref)
    dW_ref, dz0_ref = torch.autograd.grad(loss_ref, [W_ref, z0_ref])

    field = LinearField(W)
    z0 = z0.clone().requires_grad_(True)
    zs = odeint(field, z0, torch.tensor([0.0, T], dtype=F64), **TIGHT, **mode_kwargs(gradient))
    dW, dz0 = torch.autograd.grad(loss_fn(zs[-1]), [field.W, z0])
    assert rel_err(dW, dW_ref) < 1e-7
    assert rel_err(dz0, dz0_ref) < 1e-7


# --- per-sample time grids ----------------------------------------------------------------------
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_per_sample_grid_gradients_match_separate_solves(
    gradient: str, make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=2, hidden=8, seed=3)
    ends = torch.tensor([1.0, 2.0, 1.5], dtype=F64)
    inner, _ = torch.sort(torch.rand(3, 4, dtype=F64, generator=rng) * ends[:, None], dim=1)
    t = torch.cat([torch.zeros(3, 1, dtype=F64), inner, ends[:, None]], dim=1)  # (B, T)
    y0 = torch.randn(3, 2, dtype=F64, generator=rng)
    weights = torch.randn(6, 3, 2, dtype=F64, generator=rng)  # (T, B, D)
    params = list(field.parameters())
    kw = {"method": "dopri5", **TIGHT, **mode_kwargs(gradient)}

    def loss_of(ys: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (w * ys).sum() + 0.5 * (ys**2).sum()

    y0_j, t_j = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss_j = loss_of(odeint(field, y0_j, t_j, **kw), weights)
    g_joint = torch.autograd.grad(loss_j, [y0_j, t_j, *params])

    y0_s, t_s = y0.clone().requires_grad_(True), t.clone().requires_grad_(True)
    loss_s = sum(loss_of(odeint(field, y0_s[b], t_s[b], **kw), weights[:, b]) for b in range(3))
    g_sep = torch.autograd.grad(loss_s, [y0_s, t_s, *params])

    assert rel_err(g_joint[0], g_sep[0]) < 1e-6  # y0
    assert rel_err(g_joint[1][:, 1:], g_sep[1][:, 1:]) < 1e-6  # output times
    # The shared start is one time: compare its total gradient, however it is split.
    start_j, start_s = g_joint[1][:, 0].sum(), g_sep[1][:, 0].sum()
    assert abs((start_j - start_s).item()) < 1e-6 * max(1.0, abs(start_s.item()))
    flat = [torch.cat([g.reshape(-1) for g in gs[2:]]) for gs in (g_joint, g_sep)]
    assert rel_err(flat[0], flat[1]) < 1e-6  # parameters
