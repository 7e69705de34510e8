"""The checkpointed adjoint: the exact gradient of the discrete solution.

Forward: solve without autograd and keep only the start state of each accepted step. Backward:
walk the steps in reverse; recompute each one with autograd from its stored state and
backpropagate the cotangent of its end state (plus those of the read-outs inside it) through it.
The result equals backpropagation through the solver's operations, at the memory cost of the
states alone and without building the whole graph at once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .problem import Problem
from .rk import integrate, read_out, step_autograd

__all__ = ["CheckpointAdjoint"]


class CheckpointAdjoint(torch.autograd.Function):
    """Autograd function: ``(y0 [1, N], problem, *params) -> read-outs``."""

    @staticmethod
    def forward(ctx, y0: Tensor, problem: Problem, *params: Tensor) -> Tensor:
        nfe0 = problem.rhs.nfe
        with torch.no_grad():
            p = problem
            run = integrate(p.rhs, y0, p.grid, p.coef, p.ctl, derivs=p.want_derivs, record=True)
        problem.record_forward(run, problem.rhs.nfe - nfe0)
        ctx.problem = problem
        return run.outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        p: Problem = ctx.problem
        run = p.run
        g = g.contiguous()
        a = torch.zeros_like(run.y_end)  # dL/dy at the end of the current step
        grads = [torch.zeros_like(q) for q in p.params]
        nfe0 = p.rhs.nfe
        for t, t_new, dt, y, lo, hi in reversed(run.steps):
            with torch.enable_grad():
                y = y.detach().requires_grad_(True)
                y1, K = step_autograd(p.rhs, t, dt, y, p.rhs(t, y), p.coef)
                outs, cots = [y1], [a]
                if hi > lo:
                    values, _ = read_out(p.grid, p.coef, lo, hi, t, t_new, dt, y, y1, K, False)
                    outs.append(values)
                    cots.append(g[lo:hi])
                step_grads = torch.autograd.grad(outs, (y, *p.params), cots, allow_unused=True)
            a = step_grads[0] if step_grads[0] is not None else torch.zeros_like(a)
            for acc, sg in zip(grads, step_grads[1:], strict=True):
                if sg is not None:
                    acc += sg
        p.stats.nfe_backward += p.rhs.nfe - nfe0
        p.stats.n_accepted_backward += len(run.steps)
        return (a, None, *grads)
