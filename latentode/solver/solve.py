"""Entry points: `solve` (returns a `Solution`), `odeint` and `odeint_adjoint`.

``odeint(func, y0, t)`` has torchdiffeq's call shape, so switching is a change of import.
Gradients reach ``y0``, the parameters and ``t`` in each of three ways:

- ``gradient="backprop"``: autograd through the solver's operations;
- ``gradient="adjoint"``: the continuous backsolve adjoint (`adjoint`), O(1) memory in steps;
- ``gradient="checkpoint"``: the checkpointed adjoint (`checkpoint`), exact discrete gradient.

Time gradients use ``dL/dt_i = <dL/dy(t_i), f(t_i, y(t_i))>`` for read-out times (with ``f``
from the dense output's derivative) and ``dL/dt_0 = -<dL/dy_0, f(t_0, y_0)>``.

The arguments are checked and turned into step control in `arguments` before any work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .adjoint import BacksolveAdjoint
from .arguments import (
    _ADAPTIVE_ONLY,
    _check_adjoint_steps,
    _check_resolution,
    _control,
    _mapping,
    _method,
    _params,
)
from .checkpoint import CheckpointAdjoint
from .errors import SolverError, SolverInputError
from .grid import OutputGrid
from .problem import Problem, SolveStats
from .rk import Coefficients, Control, integrate
from .state import HALF, RHS, Packer, State, autocast_state, promote_half, solver_arithmetic
from .tableaus import METHODS

__all__ = ["GRADIENTS", "Solution", "odeint", "odeint_adjoint", "solve"]

GRADIENTS = ("backprop", "adjoint", "checkpoint")


@dataclass
class Solution:
    """The result of `solve`.

    Attributes:
        ys: the solution at ``ts``: ``[T, *y0.shape]`` (a tuple for tuple states); for a 2-D
            ``t`` of shape ``[B, T]``, ``[T, B, ...]`` with ``ys[i, b] = y_b(t[b, i])``.
        ts: the output times as given.
        stats: evaluation and step counts; the backward ones are filled in by ``backward()``.
        method: the method's name.
    """

    ys: State
    ts: Tensor
    stats: SolveStats
    method: str


def _empty_solution(y0: State, t: Tensor, method: str) -> Solution:
    """The solution of a state with no elements (a batch of 0, a width of 0): ``y0`` repeated
    at each time, ``[T, *shape]``, without evaluating ``func``. ``t`` is checked as always,
    except a 2-D ``t`` without rows, which has no times to check."""
    pieces = tuple(y0) if isinstance(y0, tuple | list) else (y0,)
    per_sample = isinstance(t, Tensor) and t.dim() == 2
    Packer(y0, t.shape[0] if per_sample else None)  # dtypes, devices, batch dimension
    if not (per_sample and t.shape[0] == 0 and t.shape[1] >= 1):  # no rows: no times to check
        OutputGrid.build(t, pieces[0].dtype, pieces[0].device)  # shape, monotone, starts
    T = t.shape[-1]
    ys = tuple(p.unsqueeze(0).repeat(T, *([1] * p.dim())) for p in pieces)
    return Solution(ys if isinstance(y0, tuple | list) else ys[0], t, SolveStats(), method)


def solve(
    func: Callable[[Tensor, State], State],
    y0: State,
    t: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: Mapping[str, Any] | None = None,
    gradient: str = "backprop",
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
    seminorm: bool = True,
    **step_options: Any,
) -> Solution:
    """Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, and read the solution out at ``t``.

    The gradient for ``t`` is the exact flow's ``<dL/dy(t_i), f(t_i, y(t_i))>``: for fixed
    steps it differs from the discrete solution's by the discretisation error.

    Called under ``torch.autocast``, ``func`` runs under it (also in the backward passes)
    while the state, the stage sums and the error control stay float32: a float16 / bfloat16
    ``y0`` is promoted and the result is float32. Outside autocast a half-precision state is
    integrated as given; its ``rtol`` must be at least the dtype's resolution.

    Args:
        func: the vector field ``func(t, y)``; ``t`` is a 0-d tensor of the state's dtype
            (the solver keeps time in float64 and lands on ``t`` exactly, but a float32 ``t``
            handed to ``func`` near 1e6 is rounded to 0.06: shift the time origin, or solve in
            float64, if ``func`` reads small differences of large times).
        y0: initial state, a floating tensor or a tuple of them.
        t: ``[T]`` strictly monotone times, or ``[B, T]`` per-sample grids sharing ``t[:, 0]``.
        method: one of ``METHODS`` (euler, midpoint, heun, rk4, bosh3, dopri5, tsit5). An
            adaptive method given ``step_size`` takes fixed steps of its higher-order
            solution, without error control.
        rtol, atol: relative and absolute tolerances (adaptive methods).
        options: step options as a mapping (torchdiffeq style); same keys as ``step_options``.
        gradient: ``"backprop"``, ``"adjoint"`` or ``"checkpoint"``.
        adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options: backward solve settings
            of the adjoint (default: the forward's). A fixed-step ``adjoint_method`` after an
            adaptive forward needs ``adjoint_options={"step_size": ...}``.
        adjoint_params: tensors to differentiate for ``adjoint``/``checkpoint``, each once
            (default: the parameters of ``func`` if it is an ``nn.Module``; a tensor ``func``
            reads that is not among them gets no gradient from these two).
        seminorm: leave the parameter channels out of the adjoint's error norm.
        **step_options: ``step_size``, ``first_step``, ``max_step``, ``min_step``,
            ``max_num_steps``, ``safety``, ``ifactor``, ``dfactor``, and the PI gains
            ``pcoeff``, ``icoeff`` (step factor ``safety * r_n^-(p+i)/k * r_{n-1}^(p/k)``;
            the default 0.2/0.65 is Hairer's DOPRI5 setting, 0/1 is a plain I controller).

    Returns:
        A `Solution`.

    Raises:
        SolverInputError: invalid arguments (also ``func`` returning another dtype than the
            state outside autocast, or an ``rtol`` below a half-precision state's resolution).
        SolverError: the integration failed.
    """
    method = _method(method)
    if gradient not in GRADIENTS:
        raise SolverInputError(f"unknown gradient {gradient!r}; choose one of {list(GRADIENTS)}.")
    options = _mapping("options", options)
    clash = set(options) & set(step_options)
    if clash:
        raise SolverInputError(f"option(s) {sorted(clash)} given both in options= and as keywords.")
    opts = {**options, **step_options}
    ctl = _control(method, rtol, atol, opts, "step")
    pieces = tuple(y0) if isinstance(y0, tuple | list) else (y0,)
    first = pieces[0] if pieces and isinstance(pieces[0], Tensor) else None
    device = first.device if first is not None else getattr(t, "device", None)
    amp = autocast_state(device)
    dtype = first.dtype if first is not None else None
    if amp is not None:  # the state is integrated in float32; func runs under autocast
        y0 = promote_half(y0)
        dtype = torch.float32 if dtype in HALF else dtype
    _check_resolution(ctl, dtype, method, "")
    if first is not None and all(isinstance(p, Tensor) and p.numel() == 0 for p in pieces):
        return _empty_solution(y0, t, method)
    with solver_arithmetic(device, amp):
        grid = OutputGrid.build(t, dtype or torch.get_default_dtype(), device or t.device)
        packer = Packer(y0, grid.batch)
        if not METHODS[method].adaptive and ctl.step_size is None and grid.batch is not None:
            raise SolverInputError(
                f"fixed-step method {method!r} with per-sample time grids needs step_size=...; "
                "(without it the grid would be the union of all samples' times)."
            )
        stats = SolveStats()
        y0_row = packer.pack(y0)  # (1, N)
        if grid.T == 1:  # a copy, as ys[0] is when T > 1: writing to ys leaves y0 as it is
            rows = y0_row.clone() if grid.batch is None else y0_row.view(1, grid.batch, -1).clone()
            return Solution(packer.unpack_series(rows), t, stats, method)

        params = _params(func, adjoint_params) if gradient != "backprop" else ()
        want_t_grad = t.requires_grad and torch.is_grad_enabled()
        problem = Problem(
            RHS(func, packer, amp),
            grid,
            Coefficients.get(METHODS[method], dtype, device),
            ctl,
            params,
            stats,
            want_derivs=want_t_grad,
        )
        if gradient == "adjoint":
            adj_method = _method(adjoint_method or method, "adjoint_method")
            own = _mapping("adjoint_options", adjoint_options)
            adj_opts = {**opts, **own}
            if not METHODS[adj_method].adaptive or own.get("step_size") is not None:
                # the forward's step control is not the fixed-step backward solve's to refuse
                adj_opts = {
                    k: v for k, v in adj_opts.items() if k in own or k not in _ADAPTIVE_ONLY
                }
            problem.adj_coef = Coefficients.get(METHODS[adj_method], dtype, device)
            problem.adj_ctl = _control(
                adj_method,
                rtol if adjoint_rtol is None else adjoint_rtol,
                atol if adjoint_atol is None else adjoint_atol,
                adj_opts,
                "adjoint",
                given=own,
            )
            _check_adjoint_steps(method, ctl, adj_method, problem.adj_ctl)
            problem.adj_ctl.norm_n = 2 * packer.n if seminorm else None
            _check_resolution(problem.adj_ctl, dtype, adj_method, "adjoint_")

        y_start = y0_row
        if want_t_grad:
            t0 = t[0] if grid.batch is None else t[:, 0]
            y_start = _StartTimeGrad.apply(y0_row, t0, problem)
        if not torch.is_grad_enabled():  # nothing to differentiate, whatever the gradient mode
            rows = _solve_into_buffer(problem, y0_row)
            return Solution(packer.unpack_series(rows), t, stats, method)
        if gradient == "backprop":
            nfe0 = problem.rhs.nfe
            run = integrate(problem.rhs, y_start, grid, problem.coef, ctl, derivs=want_t_grad)
            problem.record_forward(run, problem.rhs.nfe - nfe0)
            outputs = run.outputs
        elif gradient == "adjoint":
            outputs = BacksolveAdjoint.apply(y_start, problem, *params)
        else:
            outputs = CheckpointAdjoint.apply(y_start, problem, *params)
        if not problem.coef.tab.adaptive or ctl.step_size is not None:
            _check_finite(outputs if grid.batch is None else outputs[grid.inverse], grid, ctl)
        if want_t_grad:
            t_out = t.reshape(-1)[grid.flat_index]
            outputs = _ReadoutTimeGrad.apply(outputs, t_out, problem.run.derivs)

        if grid.batch is None:
            rows = torch.cat([y0_row, outputs])  # (T, N)
        else:
            B, T = grid.batch, grid.T
            per = outputs[grid.inverse].view(B, T - 1, -1)  # (B, T-1, D)
            rows = torch.cat([y0_row.view(B, 1, -1), per], dim=1).transpose(0, 1)  # (T, B, D)
        return Solution(packer.unpack_series(rows), t, stats, method)


def _solve_into_buffer(problem: Problem, y0_row: Tensor) -> Tensor:
    """Forward solve without autograd, read-outs written straight into the output tensor."""
    grid, ctl = problem.grid, problem.ctl
    if grid.batch is None:
        dest = y0_row.new_empty(grid.T, y0_row.shape[1])  # (T, N)
        dest[0] = y0_row[0]
    else:
        dest = y0_row.new_empty(grid.batch, grid.T, y0_row.shape[1] // grid.batch)  # (B, T, D)
        dest[:, 0] = y0_row.view(grid.batch, -1)
    nfe0 = problem.rhs.nfe
    run = integrate(problem.rhs, y0_row, grid, problem.coef, ctl, dest=dest)
    problem.record_forward(run, problem.rhs.nfe - nfe0)
    if grid.batch is not None:
        dest = dest.transpose(0, 1)  # (T, B, D)
    if not problem.coef.tab.adaptive or ctl.step_size is not None:
        _check_finite(dest[1:], grid, ctl)
    return dest


def _check_finite(values: Tensor, grid: OutputGrid, ctl: Control) -> None:
    """Fixed-step solves have no error test: check the read-outs once, at the end.

    ``values`` holds the read-outs after the start: ``[T-1, N]`` for a 1-D grid; for per-sample
    grids either ``[T-1, B, D]`` or ``[B * (T-1), D]`` in (sample, time) order.
    """
    if grid.batch is None:
        bad = ~torch.isfinite(values).all(dim=1)  # (T-1,)
    elif values.dim() == 3:
        bad = ~torch.isfinite(values).all(dim=2).T  # (B, T-1)
    else:
        bad = ~torch.isfinite(values).all(dim=1).view(grid.batch, grid.T - 1)
    if bool(bad.any()):
        times = grid.host[..., 1:][bad.cpu().numpy()]
        first = times.min() if grid.direction > 0 else times.max()
        raise SolverError(
            "non_finite",
            float(first),
            ctl.step_size,
            "the solution became NaN or inf by this read-out time",
        )


def odeint(
    func: Callable,
    y0: State,
    t: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> State:
    """Solve an ODE and return the solution at ``t`` (torchdiffeq's call shape).

    Takes every keyword of `solve`, including ``gradient=``; see there.

    Returns:
        ``[len(t), *y0.shape]`` (tuple for tuple ``y0``); ``[T, B, ...]`` for 2-D ``t``.
    """
    return solve(func, y0, t, method=method, rtol=rtol, atol=atol, options=options, **kwargs).ys


def odeint_adjoint(
    func: Callable,
    y0: State,
    t: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> State:
    """`odeint` with gradients by the continuous backsolve adjoint (O(1) memory in steps).

    Keywords as `solve`: ``adjoint_rtol``, ``adjoint_atol``, ``adjoint_method``,
    ``adjoint_options``, ``adjoint_params``, ``seminorm``.
    """
    if kwargs.setdefault("gradient", "adjoint") != "adjoint":
        raise SolverInputError("odeint_adjoint uses gradient='adjoint'; call odeint for others.")
    return odeint(func, y0, t, method=method, rtol=rtol, atol=atol, options=options, **kwargs)


class _StartTimeGrad(torch.autograd.Function):
    """Identity on ``y0``; gives ``t0`` the gradient ``-<dL/dy0, f(t0, y0)>``."""

    @staticmethod
    def forward(ctx, y0: Tensor, t0: Tensor, problem: Problem) -> Tensor:
        ctx.problem, ctx.t0_shape = problem, t0.shape
        return y0.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        f0 = ctx.problem.run.f0
        prod = (g * f0).view(ctx.t0_shape.numel() or 1, -1).sum(dim=1)
        return g, -prod.view(ctx.t0_shape).to(g.dtype), None


class _ReadoutTimeGrad(torch.autograd.Function):
    """Identity on the read-outs; gives each read-out time ``<dL/dy(t_i), dy/dt(t_i)>``."""

    @staticmethod
    def forward(ctx, outputs: Tensor, t_out: Tensor, derivs: Tensor) -> Tensor:
        ctx.save_for_backward(derivs)
        return outputs.clone()

    @staticmethod
    def backward(ctx, g: Tensor):
        (derivs,) = ctx.saved_tensors
        return g, (g * derivs).sum(dim=1), None
