"""Gradients through the solver: gradcheck, agreement of the three modes, closed forms."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import nn

from latentode import SolverError, SolverInputError, odeint, odeint_adjoint, solve
from latentode.solver import BacksolveDriftWarning

F64 = torch.float64
GRADIENTS = ("backprop", "adjoint", "checkpoint")
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mode_kwargs(gradient: str, params: Sequence[torch.Tensor] | None = None) -> dict[str, Any]:
    """Keywords selecting a gradient mode; tight backward tolerances for the adjoint."""
    kw: dict[str, Any] = {"gradient": gradient}
    if gradient != "backprop" and params is not None:
        kw["adjoint_params"] = tuple(params)
    if gradient == "adjoint":
        kw.update(adjoint_rtol=1e-10, adjoint_atol=1e-12)
    return kw


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||."""
    return ((a - b).norm() / b.norm()).item()


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
def loss_and_grads(
    field: nn.Module, y0: torch.Tensor, t: torch.Tensor, weights: torch.Tensor, **kw: Any
) -> torch.Tensor:
    """Flattened gradient of a loss using every output w.r.t. (y0, *field.parameters())."""
    y0 = y0.detach().clone().requires_grad_(True)
    ys = odeint(field, y0, t, **kw)  # (T, *y0.shape)
    loss = (weights * ys).sum() + 0.5 * (ys[-1] ** 2).sum()
    grads = torch.autograd.grad(loss, [y0, *field.parameters()])
    return torch.cat([g.reshape(-1) for g in grads])


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
