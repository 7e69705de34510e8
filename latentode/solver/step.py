"""One explicit Runge-Kutta step and its size: the stages, the error ratio, the first step.

Two ways to hold the stages (`_Stages`). Without autograd, stages live as rows of a preallocated
``[S, N]`` buffer and each stage input is one ``addmm`` (`step_buffered`). With autograd, stages
are concatenated afresh (`step_autograd`; in place writes would invalidate saved tensors).

The step-size settings (`Control`), the embedded error estimate that accepts or rejects a step
(`error_ratio`) and the first step's size (`initial_step`) live here too; the loops that use
them are in `rk`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .errors import SolverError
from .state import HALF

if TYPE_CHECKING:
    from .rk import Coefficients

__all__ = ["Control", "error_ratio", "initial_step", "step_autograd", "step_buffered"]


@dataclass
class Control:
    """Step-size control settings (host floats)."""

    rtol: float = 1e-7
    atol: float = 1e-9
    first_step: float | None = None
    max_step: float = math.inf
    min_step: float = 0.0
    max_num_steps: int = 10_000
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    pcoeff: float = 0.2
    icoeff: float = 0.65
    step_size: float | None = None
    norm_n: int | None = None  # only the first norm_n columns enter the error norm


# ----------------------------------------------------------------------------- one step
def step_buffered(rhs, t: float, dt: float, y: Tensor, coef: Coefficients, K, rows, prefix):
    """Fill stages 1..S-1 of the buffer ``K`` (row 0 holds f(t, y)); return y1 (no autograd)."""
    yi = y
    for i in range(1, coef.S):
        yi = torch.addmm(y, coef.a_rows[i], prefix[i], alpha=dt)  # (1, N)
        rows[i].copy_(rhs(t + coef.c[i] * dt, yi))
    return yi


def step_autograd(rhs, t: float, dt: float, y: Tensor, k0: Tensor, coef: Coefficients):
    """One step with autograd; returns ``(y1, K)`` with K of shape (S, N)."""
    ks = [k0]
    yi = y
    for i in range(1, coef.S):
        yi = torch.addmm(y, coef.a_rows[i], torch.cat(ks), alpha=dt)  # (1, N)
        ks.append(rhs(t + coef.c[i] * dt, yi))
    return yi, torch.cat(ks)


def error_ratio(ay: Tensor, ay1: Tensor, K: Tensor, coef: Coefficients, ctl: Control) -> Tensor:
    """RMS of the embedded error estimate over ``atol + rtol * max(|y|, |y1|)``, divided by |dt|.

    Takes ``|y|`` and ``|y1|`` (detached) so the loop computes each state's magnitude once: the
    accepted ``|y1|`` is the next step's ``|y|``. Step control is not differentiated.

    Returns a 0-d tensor; the caller multiplies by ``|dt| / sqrt(n)``.
    """
    err = torch.mm(coef.b_err, K.detach())  # (1, N)
    if err.dtype in HALF:  # atol and err / scale leave half precision's range
        err, ay, ay1 = err.float(), ay.float(), ay1.float()
    if ctl.norm_n is not None:
        err, ay, ay1 = err[:, : ctl.norm_n], ay[:, : ctl.norm_n], ay1[:, : ctl.norm_n]
    scale = torch.maximum(ay, ay1).mul_(ctl.rtol).add_(ctl.atol)
    return torch.linalg.vector_norm(err.div_(scale))


class _Stages:
    """Holds the current step's stages in either representation."""

    def __init__(self, rhs, y0: Tensor, t0: float, coef: Coefficients) -> None:
        self.grad = torch.is_grad_enabled()
        self.coef = coef
        k0 = rhs(t0, y0)
        if self.grad:
            self.k0 = k0
        else:
            self.K = y0.new_empty(coef.S, y0.shape[1])  # (S, N)
            self.rows = [self.K[i : i + 1] for i in range(coef.S)]
            self.prefix = [self.K[:i] for i in range(coef.S)]
            self.rows[0].copy_(k0)

    @property
    def first(self) -> Tensor:
        """f(t, y) at the current step's start."""
        return self.k0 if self.grad else self.rows[0]

    def step(self, rhs, t: float, dt: float, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.grad:
            return step_autograd(rhs, t, dt, y, self.k0, self.coef)
        return step_buffered(rhs, t, dt, y, self.coef, self.K, self.rows, self.prefix), self.K

    def accept(self, K: Tensor) -> None:
        if self.grad:
            self.k0 = K[-1:]
        else:
            self.rows[0].copy_(self.rows[-1])

    def restart(self, rhs, t: float, y: Tensor) -> None:
        if self.grad:
            self.k0 = rhs(t, y)
        else:
            self.rows[0].copy_(rhs(t, y))


# ----------------------------------------------------------------------------- step size
def _rms(x: Tensor, scale: Tensor, n: int | None) -> Tensor:
    if x.dtype in HALF:
        x, scale = x.float(), scale.float()
    if n is not None:
        x, scale = x[:, :n], scale[:, :n]
    return torch.linalg.vector_norm(x / scale) / math.sqrt(x.numel())


def initial_step(rhs, t0: float, y0: Tensor, f0: Tensor, direction: float, coef, ctl) -> float:
    """Hairer, Norsett & Wanner (1993), II.4: a first step from two derivative estimates.

    Costs one function evaluation and two host reads. Also rejects a non-finite start.
    """
    ay = y0.abs().float() if y0.dtype in HALF else y0.abs()  # atol underflows in float16
    scale = ay.mul(ctl.rtol).add(ctl.atol)
    d0, d1 = torch.stack([_rms(y0, scale, ctl.norm_n), _rms(f0, scale, ctl.norm_n)]).tolist()
    if not math.isfinite(d0):
        raise SolverError("non_finite", t0, None, "the initial state contains NaN or inf")
    if not math.isfinite(d1):
        raise SolverError(
            "non_finite", t0, None, "the vector field returned NaN or inf at the initial state"
        )
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, ctl.max_step)
    f1 = rhs(t0 + direction * h0, y0 + (direction * h0) * f0)
    d2 = _rms(f1 - f0, scale, ctl.norm_n).item() / h0
    if not math.isfinite(d2):
        return h0 * 1e-3
    dmax = max(d1, d2)
    order = coef.tab.order
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (order + 1))
    return min(100 * h0, h1, ctl.max_step)
