"""One solve configuration per (library, gradient mode), all called the same way.

A `Config.solve(field, y0, t)` returns the outputs time-first, `[N_OUT, B, D]`, plus a dict of
library-reported extras (latentode's `SolveStats`, torchode's status). `run_once` counts function
evaluations with the field's own counter, before and after the backward pass.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq
from torch import Tensor
from workload import ATOL, REPO_ROOT, RTOL, CountingField, flat_grad

__all__ = ["FORWARD_KEYS", "GRAD_KEYS", "Config", "Outcome", "build_configs", "run_once"]

SolveFn = Callable[[CountingField, Tensor, Tensor], tuple[Tensor, dict[str, Any]]]

FORWARD_KEYS = ("latentode", "torchdiffeq", "torchode-I", "torchode-PID")
GRAD_KEYS = (
    "latentode-backprop",
    "latentode-adjoint",
    "latentode-checkpoint",
    "torchdiffeq-backprop",
    "torchdiffeq-adjoint",
    "torchdiffeq-adjoint-seminorm",
    "torchode-backprop-I",
    "torchode-backprop-PID",
    "torchode-backsolve-I",
)

LABELS = {
    "latentode": "latentode `solve`",
    "torchdiffeq": "torchdiffeq `odeint`",
    "torchode-I": "torchode AutoDiffAdjoint, IntegralController",
    "torchode-PID": "torchode AutoDiffAdjoint, PIDController(0.2, 0.5, 0)",
    "latentode-backprop": 'latentode gradient="backprop"',
    "latentode-adjoint": 'latentode gradient="adjoint" (seminorm default)',
    "latentode-checkpoint": 'latentode gradient="checkpoint"',
    "torchdiffeq-backprop": "torchdiffeq `odeint` backprop",
    "torchdiffeq-adjoint": "torchdiffeq `odeint_adjoint`",
    "torchdiffeq-adjoint-seminorm": 'torchdiffeq `odeint_adjoint`, norm="seminorm"',
    "torchode-backprop-I": "torchode AutoDiffAdjoint backprop, I",
    "torchode-backprop-PID": "torchode AutoDiffAdjoint backprop, PID",
    "torchode-backsolve-I": "torchode BacksolveAdjoint, I",
}


@dataclass(frozen=True)
class Config:
    """A solve configuration: `key` names it, `needs_grad` selects forward+backward."""

    key: str
    label: str
    needs_grad: bool
    solve: SolveFn


@dataclass
class Outcome:
    """What one run produced: outputs, counted NFE, gradient and library extras."""

    ys: Tensor  # (T, B, D)
    nfe_fwd: int
    nfe_bwd: int
    grad: Tensor | None
    info: dict[str, Any]


def import_latentode() -> Any:
    """Import latentode from this checkout (it need not be installed)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import latentode

    return latentode


def _latentode(gradient: str, max_step: float | None) -> SolveFn:
    lo = import_latentode()
    kwargs: dict[str, Any] = {"method": "dopri5", "rtol": RTOL, "atol": ATOL, "gradient": gradient}
    if gradient == "adjoint":
        kwargs.update(adjoint_rtol=RTOL, adjoint_atol=ATOL)
    if max_step is not None:
        kwargs.update(max_step=max_step, max_num_steps=10**7)
        if gradient == "adjoint":
            kwargs["adjoint_options"] = {"max_step": max_step}

    def solve(field: CountingField, y0: Tensor, t: Tensor) -> tuple[Tensor, dict[str, Any]]:
        sol = lo.solve(field, y0, t, **kwargs)
        return sol.ys, {"stats": sol.stats}

    return solve


def _torchdiffeq(adjoint: bool, seminorm: bool, max_step: float | None) -> SolveFn:
    options = None if max_step is None else {"max_step": max_step}

    def solve(field: CountingField, y0: Tensor, t: Tensor) -> tuple[Tensor, dict[str, Any]]:
        if not adjoint:
            ys = torchdiffeq.odeint(
                field, y0, t, rtol=RTOL, atol=ATOL, method="dopri5", options=options
            )
            return ys, {}
        adjoint_options = dict(options or {})
        if seminorm:
            adjoint_options["norm"] = "seminorm"
        ys = torchdiffeq.odeint_adjoint(
            field,
            y0,
            t,
            rtol=RTOL,
            atol=ATOL,
            method="dopri5",
            options=options,
            adjoint_rtol=RTOL,
            adjoint_atol=ATOL,
            adjoint_options=adjoint_options,
        )
        return ys, {}

    return solve


def _torchode(field: CountingField, controller: str, backsolve: bool) -> SolveFn:
    import torchode  # imported here: the memory probes never need it (0.8 s per process)

    term = torchode.ODETerm(field)
    step = torchode.Dopri5(term=term)
    if controller == "I":
        ctrl = torchode.IntegralController(atol=ATOL, rtol=RTOL, term=term)
    else:  # torchode's own default PID coefficients (solve_ivp)
        ctrl = torchode.PIDController(
            atol=ATOL, rtol=RTOL, pcoeff=0.2, icoeff=0.5, dcoeff=0.0, term=term
        )
    if backsolve:
        solver: Any = torchode.BacksolveAdjoint(term, step, ctrl)
    else:
        solver = torchode.AutoDiffAdjoint(step, ctrl)

    def solve(f: CountingField, y0: Tensor, t: Tensor) -> tuple[Tensor, dict[str, Any]]:
        if f is not field:
            raise ValueError("a torchode config is bound to the field it was built with")
        t_eval = t.expand(y0.shape[0], -1)  # (B, T): torchode takes per-sample grids
        sol = solver.solve(torchode.InitialValueProblem(y0=y0, t_eval=t_eval))
        ok = bool((sol.status == 0).all())
        return sol.ys.transpose(0, 1), {"torchode_ok": ok}  # (B, T, D) -> (T, B, D)

    return solve


def build_configs(
    field: CountingField, keys: tuple[str, ...], max_step: float | None = None
) -> dict[str, Config]:
    """Build the configurations named by `keys` (see FORWARD_KEYS, GRAD_KEYS) for `field`.

    `max_step` (latentode and torchdiffeq only) caps the step size in the forward solve and in
    the adjoint's backward solve, to force more steps for the memory sweep.
    """
    configs = {}
    for key in keys:
        lib, _, variant = key.partition("-")
        needs_grad = key in GRAD_KEYS
        if lib == "latentode":
            fn = _latentode(variant or "backprop", max_step)
        elif lib == "torchdiffeq":
            fn = _torchdiffeq("adjoint" in variant, "seminorm" in variant, max_step)
        elif lib == "torchode" and max_step is None:
            fn = _torchode(field, variant.rsplit("-", 1)[-1], "backsolve" in variant)
        else:
            raise ValueError(f"unknown or unsupported configuration {key!r}")
        configs[key] = Config(key, LABELS[key], needs_grad, fn)
    return configs


def run_once(cfg: Config, field: CountingField, y0: Tensor, t: Tensor) -> Outcome:
    """Run `cfg` once: forward (no grad), or forward + backward of `sum(ys ** 2)`."""
    field.zero_grad(set_to_none=True)
    field.nfe = 0
    if not cfg.needs_grad:
        with torch.no_grad():
            ys, info = cfg.solve(field, y0, t)
        return Outcome(ys, field.nfe, 0, None, info)
    ys, info = cfg.solve(field, y0, t)
    nfe_fwd = field.nfe
    ys.pow(2).sum().backward()
    return Outcome(ys.detach(), nfe_fwd, field.nfe - nfe_fwd, flat_grad(field), info)
