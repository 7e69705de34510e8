"""The adjoint and checkpoint backward passes: the odeint_adjoint entry point, backward
statistics, adjoint settings, and backward passes refused or warned about."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
from solver_gradients_helpers import F64, GRADIENTS, TIGHT, loss_and_grads, mode_kwargs, rel_err
from torch import nn

from latentode import SolverError, SolverInputError, odeint, odeint_adjoint, solve
from latentode.solver import BacksolveDriftWarning


# --- odeint_adjoint entry point and backward statistics -----------------------------------------
def test_odeint_adjoint_plain_function_needs_adjoint_params(rng: torch.Generator) -> None:
    W = (0.5 * torch.randn(2, 2, dtype=F64, generator=rng)).requires_grad_(True)
    z0 = torch.tensor([1.0, -1.0], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def field(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ W.T

    with pytest.raises(SolverInputError):
        odeint_adjoint(field, z0, t)
    with pytest.raises(SolverInputError):
        odeint(field, z0, t, gradient="adjoint")

    adjoint_kw = {"adjoint_params": (W,), "adjoint_rtol": 1e-10, "adjoint_atol": 1e-12}
    zs = odeint_adjoint(field, z0, t, method="dopri5", **TIGHT, **adjoint_kw)
    dW, dz0 = torch.autograd.grad(zs[-1].sum(), [W, z0])
    W_ref, z0_ref = W.detach().requires_grad_(True), z0.detach().requires_grad_(True)
    ref = torch.autograd.grad((torch.linalg.matrix_exp(W_ref) @ z0_ref).sum(), [W_ref, z0_ref])
    assert rel_err(dW, ref[0]) < 1e-7
    assert rel_err(dz0, ref[1]) < 1e-7


def test_odeint_adjoint_forward_equals_odeint(make_mlp: Callable[..., nn.Module]) -> None:
    field = make_mlp(dim=3, hidden=16)
    y0 = torch.tensor([0.1, 0.2, -0.3], dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    a = odeint_adjoint(field, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
    b = odeint(field, y0, t, method="dopri5", rtol=1e-7, atol=1e-9)
    assert (a - b).abs().max().item() < 1e-12


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_backward_stats_and_every_parameter_gets_a_gradient(
    gradient: str, make_mlp: Callable[..., nn.Module]
) -> None:
    field = make_mlp(dim=3, hidden=16)
    y0 = torch.tensor([0.1, 0.2, -0.3], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    sol = solve(field, y0, t, method="dopri5", rtol=1e-7, atol=1e-9, gradient=gradient)
    nfe_forward = sol.stats.nfe
    (sol.ys**2).sum().backward()
    assert sol.stats.nfe == nfe_forward
    if gradient == "backprop":
        assert sol.stats.nfe_backward == 0
    else:
        assert sol.stats.nfe_backward > 0
    if gradient == "adjoint":
        assert sol.stats.n_accepted_backward > 0
    assert y0.grad is not None and y0.grad.abs().sum().item() > 0
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum().item() > 0, name


# --- adjoint settings ---------------------------------------------------------------------------
def test_seminorm_same_gradient_fewer_backward_steps(
    make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=3, hidden=16, seed=4)
    y0 = torch.randn(2, 3, dtype=F64, generator=rng)
    t = torch.linspace(0.0, 2.0, 5, dtype=F64)
    weights = torch.randn(5, 2, 3, dtype=F64, generator=rng)
    grads, nfe_backward = [], []
    for seminorm in (True, False):
        kw = {"rtol": 1e-9, "atol": 1e-11, "adjoint_rtol": 1e-9, "adjoint_atol": 1e-11}
        sol = solve(field, y0, t, gradient="adjoint", seminorm=seminorm, **kw)
        loss = (weights * sol.ys).sum()
        grads.append(
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, field.parameters())])
        )
        nfe_backward.append(sol.stats.nfe_backward)
    assert rel_err(grads[0], grads[1]) < 1e-6
    assert 0 < nfe_backward[0] <= nfe_backward[1]


@pytest.mark.parametrize("adjoint_method", ["tsit5", "rk4"])
def test_adjoint_method_and_options_are_used(
    adjoint_method: str, make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=3, hidden=16, seed=5)
    y0 = torch.randn(3, dtype=F64, generator=rng)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    weights = torch.randn(3, 3, dtype=F64, generator=rng)
    options = {"step_size": 0.01} if adjoint_method == "rk4" else {}
    ref = loss_and_grads(field, y0, t, weights, gradient="backprop", **TIGHT)
    adjoint_kw = {"adjoint_method": adjoint_method, "adjoint_options": options}
    adjoint_kw.update(adjoint_rtol=1e-10, adjoint_atol=1e-12)
    got = loss_and_grads(field, y0, t, weights, gradient="adjoint", **TIGHT, **adjoint_kw)
    assert rel_err(got, ref) < 1e-6
    if adjoint_method == "tsit5":  # max_num_steps bounds the adaptive loop
        # A backward step budget of 3 cannot cover [0, 1] at these tolerances.
        y0 = y0.clone().requires_grad_(True)
        budget = {"max_num_steps": 3}
        ys = odeint(
            field, y0, t, gradient="adjoint", adjoint_method="tsit5", adjoint_options=budget
        )
        with pytest.raises(SolverError) as info:
            ys.sum().backward()
        assert info.value.reason == "max_num_steps"


def test_a_fixed_step_adjoint_needs_a_step_size_after_an_adaptive_forward(
    make_mlp: Callable[..., nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=3, hidden=16, seed=5)
    y0 = torch.randn(3, dtype=F64, generator=rng, requires_grad=True)
    t = torch.tensor([0.0, 1.5, 3.0], dtype=F64)
    # dopri5 forward, rk4 backward on the output grid: one coarse step per interval
    with pytest.raises(SolverInputError, match=r"adjoint_options=\{'step_size'"):
        odeint(field, y0, t, gradient="adjoint", adjoint_method="rk4")
    # a forward on the output grid may be matched by a backward on it
    weights = torch.randn(3, 3, dtype=F64, generator=rng)
    grid = {"method": "rk4", "gradient": "adjoint", "adjoint_method": "rk4"}
    got = loss_and_grads(field, y0, t, weights, **grid)
    ref = loss_and_grads(field, y0, t, weights, method="rk4", gradient="backprop")
    # both coarse, 2 steps of 1.5: the continuous against the discrete gradient (1e-3 here)
    assert rel_err(got, ref) < 5e-3


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_tuple_state_gradients_agree_with_backprop(gradient: str, rng: torch.Generator) -> None:
    W = (0.5 * torch.randn(2, 2, dtype=F64, generator=rng)).requires_grad_(True)
    a0 = torch.randn(2, dtype=F64, generator=rng, requires_grad=True)
    b0 = torch.randn(3, dtype=F64, generator=rng, requires_grad=True)

    def field(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = y
        return torch.tanh(a @ W.T) + 0.1 * b.sum(), -0.5 * b + torch.sin(t) * a.sum()

    t = torch.linspace(0.0, 1.5, 4, dtype=F64)
    grads = {}
    for mode in ("backprop", gradient):
        a, b = odeint(field, (a0, b0), t, **TIGHT, **mode_kwargs(mode, (W,)))
        loss = (a**2).sum() + b.sum()
        grads[mode] = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [a0, b0, W])])
    assert rel_err(grads[gradient], grads["backprop"]) < 1e-6


class _Quadratic(nn.Module):
    """``dy/dt = -k y^2``: second derivatives in ``y0`` and ``k`` that are not zero."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -self.k * y * y


def test_a_double_backward_is_refused_by_the_adjoints_and_exact_by_backprop() -> None:
    """A gradient penalty differentiates the gradient again. Backprop gives its closed form
    (``y(1) = y0 / (1 + k y0)``); the adjoint and the checkpoint compute their gradients
    without a graph, so they refuse a backward pass that builds one, instead of returning
    a penalty whose second-order terms are silently zero (they once did)."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.tensor([1.0, 0.5], dtype=F64, requires_grad=True)
    q = _Quadratic()
    (grad,) = torch.autograd.grad(odeint(q, y0, t, **TIGHT)[-1].sum(), y0, create_graph=True)
    (grad**2).sum().backward()
    # dy(1)/dy0 = (1 + k y0)^-2; d/dk of sum (1 + k y0)^-4 = sum -4 y0 (1 + k y0)^-5
    y0d = y0.detach()
    torch.testing.assert_close(grad.detach(), (1 + y0d) ** -2, rtol=1e-7, atol=0)
    expected = (-4 * y0d * (1 + y0d) ** -5).sum()
    torch.testing.assert_close(q.k.grad, expected, rtol=1e-6, atol=0)
    for gradient in ("adjoint", "checkpoint"):
        out = odeint(q, y0, t, gradient=gradient, **TIGHT)[-1].sum()
        with pytest.raises(SolverInputError, match=rf"gradient='{gradient}' gives first deriv"):
            torch.autograd.grad(out, y0, create_graph=True)
        (first,) = torch.autograd.grad(odeint(q, y0, t, gradient=gradient, **TIGHT)[-1].sum(), y0)
        torch.testing.assert_close(first, (1 + y0d) ** -2, rtol=1e-6, atol=0)


def test_the_backsolve_adjoint_warns_when_it_loses_the_forward_solution() -> None:
    """On contracting dynamics the backward solve of y is unstable: with rates -1 and -20
    over [0, 2] and no read-out between, y(0) came back as 65,566 instead of 1 and dL/dA[0,1]
    as 528 instead of 0.022, without a word. The distance to the forward values is measured
    in tolerances and warned about; read-outs every 0.1 reset it and keep it small."""
    A = torch.tensor([[-1.0, 0.0], [1.0, -20.0]], dtype=F64, requires_grad=True)
    y0 = torch.ones(2, dtype=F64)

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ A.T

    grads, drifts = {}, {}
    for n, mode in ((2, "backprop"), (2, "adjoint"), (21, "adjoint")):
        sol = solve(field, y0, torch.linspace(0.0, 2.0, n, dtype=F64), gradient=mode,
                    adjoint_params=(A,))  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (grads[n, mode],) = torch.autograd.grad(sol.ys[-1].sum(), A)
        drifts[n, mode] = sol.stats.backsolve_drift
        warned = [w for w in caught if issubclass(w.category, BacksolveDriftWarning)]
        assert len(warned) == int((n, mode) == (2, "adjoint")), (n, mode, drifts)
    exact = grads[2, "backprop"][0, 1]
    assert abs(float(grads[2, "adjoint"][0, 1] / exact)) > 1e3  # the failure, still there
    assert drifts[2, "adjoint"] > 1e6 and drifts[2, "backprop"] == 0.0
    assert drifts[21, "adjoint"] < 10
    assert abs(float(grads[21, "adjoint"][0, 1] / exact) - 1) < 1e-6


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_a_tensor_listed_twice_in_adjoint_params_gets_its_gradient_once(gradient: str) -> None:
    W = torch.tensor([[-1.0, 0.5], [0.0, -2.0]], dtype=F64, requires_grad=True)
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.linspace(0.0, 1.0, 5, dtype=F64)

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y @ W.T

    (ref,) = torch.autograd.grad(odeint(field, y0, t, **TIGHT).sum(), W)
    twice = odeint(field, y0, t, gradient=gradient, adjoint_params=(W, W), **TIGHT)
    (got,) = torch.autograd.grad(twice.sum(), W)  # was 2x: 3.0951 against 1.5475
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_a_parameter_changed_in_place_before_backward_is_refused(
    gradient: str, make_mlp: Callable[..., nn.Module]
) -> None:
    """Backprop refuses it (autograd's version check); the adjoints gave the gradient at the
    changed values."""
    field = make_mlp(dim=3, hidden=8)
    ys = odeint(field, torch.ones(3, dtype=F64), torch.linspace(0, 1, 3, dtype=F64),
                gradient=gradient)  # fmt: skip
    with torch.no_grad():
        next(field.parameters()).mul_(2.0)
    with pytest.raises(SolverInputError, match="changed in place between the solve and its"):
        ys.sum().backward()
