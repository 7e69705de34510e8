"""The checkpointed adjoint: the exact gradient of the discrete solution.

Forward: solve without autograd and keep only the start state of each accepted step. Backward:
walk the steps in reverse, in segments of up to `SEGMENT` steps; recompute each segment with
autograd from its first stored state (the FSAL stage passed from step to step, as in the
forward) and backpropagate the cotangent of its end state, plus those of the read-outs inside
it, in one pass. The result equals backpropagation through the solver's operations, at the
memory cost of the states plus one segment's graph.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .adjoint import first_order, versions
from .problem import Problem
from .rk import integrate, read_out, step_autograd
from .state import autocast_state, solver_arithmetic

__all__ = ["SEGMENT", "CheckpointAdjoint"]

SEGMENT = 16  # steps recomputed per autograd pass (bounds the graph held at once)


class CheckpointAdjoint(torch.autograd.Function):
    """Autograd function: ``(y0 [1, N], problem, *params) -> read-outs``."""

    @staticmethod
    def forward(ctx, y0: Tensor, problem: Problem, *params: Tensor) -> Tensor:
        nfe0 = problem.rhs.nfe
        with torch.no_grad():
            p = problem
            run = integrate(p.rhs, y0, p.grid, p.coef, p.ctl, derivs=p.want_derivs, record=True)
        problem.record_forward(run, problem.rhs.nfe - nfe0)
        ctx.problem, ctx.versions = problem, versions(params)
        return run.outputs

    @staticmethod
    @first_order("checkpoint")
    @once_differentiable
    def backward(ctx, g: Tensor):
        device = ctx.problem.rhs.packer.device
        with solver_arithmetic(device, autocast_state(device)):  # as in the forward
            return CheckpointAdjoint._backward(ctx.problem, *ctx.saved_tensors, g)

    @staticmethod
    def _backward(p: Problem, g: Tensor) -> tuple:
        run = p.run
        g = g.contiguous()
        a = torch.zeros_like(run.y_end)  # dL/dy at the end of the current step
        grads = [torch.zeros_like(q) for q in p.params]
        nfe0 = p.rhs.nfe
        steps = run.steps
        for start in reversed(range(0, len(steps), SEGMENT)):
            segment = steps[start : start + SEGMENT]
            with torch.enable_grad():
                y0 = segment[0][3].detach().requires_grad_(True)
                y, k0 = y0, p.rhs(segment[0][0], y0)
                outs, cots = [], []
                for t, t_new, dt, _, lo, hi in segment:
                    y1, K = step_autograd(p.rhs, t, dt, y, k0, p.coef)
                    if hi > lo:
                        values, _ = read_out(p.grid, p.coef, lo, hi, t, t_new, dt, y, y1, K, False)
                        outs.append(values)
                        cots.append(g[lo:hi])
                    y, k0 = y1, K[-1:]
                outs.append(y)
                cots.append(a)
                seg_grads = torch.autograd.grad(outs, (y0, *p.params), cots, allow_unused=True)
            a = seg_grads[0] if seg_grads[0] is not None else torch.zeros_like(a)
            for acc, sg in zip(grads, seg_grads[1:], strict=True):
                if sg is not None:
                    acc += sg
        p.stats.nfe_backward += p.rhs.nfe - nfe0
        p.stats.n_accepted_backward += len(run.steps)
        return (a, None, *grads)
