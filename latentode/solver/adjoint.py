"""The continuous adjoint (backsolve), as in Chen et al. (2018), with one backward pass.

Forward: solve without autograd, keep only the read-outs and the final state. Backward: integrate
the augmented state ``s = [z, a, a_theta]`` from ``t_end`` back to ``t0``:

    dz/dt = f(t, z),   da/dt = -a^T df/dz,   da_theta/dt = -a^T df/dtheta,

starting from ``z = y(t_end)``, ``a = dL/dy(t_end)``, ``a_theta = 0``. At each read-out time the
step lands exactly, ``a`` receives its jump ``dL/dy(t_i)`` and ``z`` is reset to the forward
value; the step-size controller keeps its state (no restart, unlike torchdiffeq). With the
seminorm (Kidger et al. 2021) only ``[z, a]`` enter the error norm: ``a_theta`` is a plain
integral and must not drive step rejection. Memory is constant in the number of steps.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .errors import BacksolveDriftWarning, SolverInputError
from .problem import Problem
from .rk import integrate
from .state import RHS, autocast_state, solver_arithmetic

__all__ = ["DRIFT_WARN", "BacksolveAdjoint", "first_order", "versions"]


class AugmentedRHS:
    """``(t, [z, a, a_theta]) -> [f, -a^T f_z, -a^T f_theta]``, one VJP per evaluation."""

    def __init__(self, rhs: RHS, params: tuple[Tensor, ...], n: int) -> None:
        self.rhs, self.params, self.n = rhs, params, n
        self.nfe = 0
        self.zeros = [p.new_zeros(1, p.numel()) for p in params]

    def __call__(self, t: float, s: Tensor) -> Tensor:
        self.nfe += 1
        n = self.n
        with torch.enable_grad():
            z = s[:, :n].detach().requires_grad_(True)
            f = self.rhs(t, z)  # (1, N)
            if f.requires_grad:
                grads = torch.autograd.grad(
                    f, (z, *self.params), -s[:, n : 2 * n], allow_unused=True
                )
            else:
                grads = (None,) * (1 + len(self.params))
        pieces = [f.detach(), torch.zeros_like(f) if grads[0] is None else grads[0]]
        pieces += [
            z0 if g is None else g.reshape(1, -1)
            for g, z0 in zip(grads[1:], self.zeros, strict=True)
        ]
        return torch.cat(pieces, dim=1)


def _groups(times: list[float]) -> list[tuple[float, int, int]]:
    """Runs of equal read-out times: ``(time, lo, hi)`` in integration order."""
    groups, lo = [], 0
    for i in range(1, len(times) + 1):
        if i == len(times) or times[i] != times[lo]:
            groups.append((times[lo], lo, i))
            lo = i
    return groups


def versions(params: tuple[Tensor, ...]) -> tuple[int, ...]:
    """The in-place version counters of ``params``, kept by the forward pass for
    `first_order`'s check."""
    return tuple(p._version for p in params)


def first_order(gradient: str) -> Callable:
    """Decorates an adjoint's ``backward``: refuse a backward pass that builds a graph, or one
    whose parameters were changed in place since the forward pass.

    With ``create_graph=True`` (a gradient penalty, a Hessian, any double backward) the
    engine runs ``backward`` with grad mode on. An adjoint's gradients are computed without a
    graph (`once_differentiable`), so their second-order terms would silently be zero. A
    parameter changed in place between the passes (an optimizer step, ``W.mul_(2)``) would
    give the gradient at the new values; autograd refuses that for backprop, and so is it here.

    Raises:
        SolverInputError: in such a backward pass, naming ``gradient`` and what to use.
    """

    def wrap(backward: Callable) -> Callable:
        @functools.wraps(backward)
        def checked(ctx, *grads: Tensor):
            if torch.is_grad_enabled():
                raise SolverInputError(
                    f"gradient={gradient!r} gives first derivatives only, but this backward "
                    "pass builds a graph (create_graph=True: a gradient penalty, a Hessian or "
                    "another double backward), whose second-order terms through the solve "
                    "would be dropped. Solve with gradient='backprop' to differentiate twice."
                )
            if versions(ctx.problem.params) != ctx.versions:
                raise SolverInputError(
                    f"a parameter of the vector field was changed in place between the solve "
                    f"and its backward pass (gradient={gradient!r}): the gradient would be "
                    "that of the changed field. Call backward() before changing parameters "
                    "(optimizer.step() after it), or change them out of place."
                )
            return backward(ctx, *grads)

        return checked

    return wrap


# The backward solve's y may stray this many tolerances from the forward's before a warning.
DRIFT_WARN = 1000.0


def _drift(z: Tensor, forward: Tensor, ctl) -> Tensor:
    """The error of the backward solve's ``z`` against the forward values, row by row in
    units of ``rtol * |y| + atol * sqrt(n)`` (Euclidean norms), the largest row's (0-d).

    Norms, not components: a component decayed to 1e-9 that comes back at 4e-7 is hundreds
    of its own tolerances off, yet leaves the gradient accurate to 1e-5."""
    n = z.shape[-1]
    err = torch.linalg.vector_norm(z - forward, dim=-1)
    size = torch.linalg.vector_norm(forward, dim=-1)
    return (err / size.mul_(ctl.rtol).add_(ctl.atol * math.sqrt(n))).amax()


def _check_drift(p: Problem, drift: float) -> None:
    """Record ``drift`` and warn when the backward solve lost the forward trajectory.

    The backsolve adjoint integrates y backwards alongside the adjoint; on contracting
    dynamics that is unstable, and the gradient is evaluated along a wrong path (a linear
    field with rates -1 and -20 on [0, 2]: y(0) came back as 65,566 instead of 1 and one
    entry of dL/dA as 528 instead of 0.022). The forward values at the read-out times and at
    t0 show it: their distance from the backward ones is the ``drift``.
    """
    p.stats.backsolve_drift = max(p.stats.backsolve_drift, drift)
    if not drift <= DRIFT_WARN:  # NaN included
        warnings.warn(
            f"the backsolve adjoint's backward solve strayed from the forward solution by "
            f"{drift:.3g} times its tolerance (adjoint_rtol/adjoint_atol) at a read-out time "
            "or at t0, so the gradient was computed along another path and may be far off. "
            "The dynamics are probably contracting, where integrating backwards is unstable. "
            "Use gradient='checkpoint' (exact gradients; memory for the accepted steps), more "
            "read-out times (the backward solve is reset to the forward value at each), or "
            "tighter adjoint tolerances.",
            BacksolveDriftWarning,
            stacklevel=2,
        )


class BacksolveAdjoint(torch.autograd.Function):
    """Autograd function: ``(y0 [1, N], problem, *params) -> read-outs``."""

    @staticmethod
    def forward(ctx, y0: Tensor, problem: Problem, *params: Tensor) -> Tensor:
        nfe0 = problem.rhs.nfe
        with torch.no_grad():
            p = problem
            run = integrate(p.rhs, y0, p.grid, p.coef, p.ctl, derivs=p.want_derivs)
        problem.record_forward(run, problem.rhs.nfe - nfe0)
        ctx.problem, ctx.versions = problem, versions(params)
        ctx.save_for_backward(run.outputs, run.y_end, y0)
        return run.outputs

    @staticmethod
    @first_order("adjoint")
    @once_differentiable
    def backward(ctx, g: Tensor):
        device = ctx.problem.rhs.packer.device
        with solver_arithmetic(device, autocast_state(device)):  # as in the forward
            return BacksolveAdjoint._backward(ctx.problem, *ctx.saved_tensors, g)

    @staticmethod
    def _backward(p: Problem, outputs: Tensor, y_end: Tensor, y0: Tensor, g: Tensor) -> tuple:
        grid, N = p.grid, y_end.shape[1]
        g = g.contiguous()
        # the backward z where it lands on a read-out (and t0), beside the forward values
        landed: list[Tensor] = []
        forward: list[Tensor] = []
        measure = p.adj_coef.tab.adaptive and p.adj_ctl.step_size is None  # fixed: no tolerance

        def jump(s: Tensor, lo: int, hi: int) -> Tensor:
            s = s.clone()
            if grid.batch is None:
                if measure:
                    landed.append(s[:, :N].clone())
                    forward.append(outputs[lo:hi])
                s[:, :N] = outputs[lo:hi]
                s[:, N : 2 * N] += g[lo:hi]
            else:
                rows = grid.rows[lo:hi]
                z = s[:, :N].view(grid.batch, -1)
                if measure:
                    landed.append(z[rows])
                    forward.append(outputs[lo:hi])
                z[rows] = outputs[lo:hi]
                s[:, N : 2 * N].view(grid.batch, -1).index_add_(0, rows, g[lo:hi])
            return s

        groups = _groups(grid.times)
        P = sum(q.numel() for q in p.params)
        s = jump(
            torch.cat([y_end, torch.zeros_like(y_end), y_end.new_zeros(1, P)], dim=1),
            *groups[-1][1:],
        )
        inner = list(reversed(groups[:-1]))
        aug = AugmentedRHS(p.rhs, p.params, N)
        with torch.no_grad():
            run = integrate(
                aug,
                s,
                grid,
                p.adj_coef,
                p.adj_ctl,
                t0=grid.t_end,
                t_end=grid.t0,
                stops=[time for time, _, _ in inner],
                on_stop=lambda j, t, s: jump(s, *inner[j][1:]),
                readouts=False,
            )
        p.stats.nfe_backward += aug.nfe
        p.stats.n_accepted_backward += run.n_accepted
        p.stats.n_rejected_backward += run.n_rejected
        s = run.y_end
        if measure:  # [0]: y_end itself, exact; t0 compared by rows alike
            z0 = s[:, :N] if grid.batch is None else s[:, :N].view(grid.batch, -1)
            y0_rows = y0 if grid.batch is None else y0.view(grid.batch, -1)
            drift = _drift(
                torch.cat([*landed[1:], z0]), torch.cat([*forward[1:], y0_rows]), p.adj_ctl
            )
            _check_drift(p, float(drift))
        grad_params = torch.split(s[0, 2 * N :], [q.numel() for q in p.params])
        return (
            s[:, N : 2 * N],
            None,
            *(gp.view_as(q) for gp, q in zip(grad_params, p.params, strict=True)),
        )
