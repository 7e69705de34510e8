"""The generic explicit Runge-Kutta engine.

A tableau's coefficients as cached tensors (`Coefficients`), the dense output read at the grid's
times (`read_out`), and two loops over steps: fixed-step and adaptive (`integrate`). One step,
its error ratio and the step-size settings are in `step`; the tableaus (in FSAL form) in
`tableaus`. The loops keep time and step size as host floats; the adaptive loop reads one number
from the device per attempted step (the error ratio) and nothing else, so on a GPU it
synchronises once per step.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

import torch
from torch import Tensor

from .errors import SolverError
from .grid import OutputGrid, fixed_step_grid
from .step import Control, _Stages, error_ratio, initial_step
from .step import step_autograd as step_autograd  # re-exported: `checkpoint` imports it from here
from .step import step_buffered as step_buffered  # re-exported: the old import path
from .tableaus import ButcherTableau

__all__ = ["Coefficients", "Control", "Run", "integrate"]

_COEF_CACHE: dict[tuple, Coefficients] = {}


class Coefficients:
    """A tableau's coefficients as tensors of one dtype and device (cached)."""

    def __init__(self, tab: ButcherTableau, dtype: torch.dtype, device: torch.device) -> None:
        self.tab = tab
        self.S = tab.n_stages
        self.c = [float(x) for x in tab.c]
        a = torch.as_tensor(tab.a, dtype=dtype, device=device)
        self.a_rows = [a[i : i + 1, :i] for i in range(self.S)]  # (1, i)
        self.b_err = (
            None
            if tab.b_err is None
            else torch.as_tensor(tab.b_err, dtype=dtype, device=device)[None]
        )  # (1, S)
        self.dense = torch.as_tensor(tab.dense, dtype=dtype, device=device)  # (deg, S)
        degree = tab.dense.shape[0]
        self.powers = torch.arange(1, degree + 1, dtype=dtype, device=device)  # (deg,)
        q = tab.order if tab.error_order is None else min(tab.order, tab.error_order)
        self.err_exponent = 1.0 / (q + 1)

    @classmethod
    def get(cls, tab: ButcherTableau, dtype: torch.dtype, device: torch.device) -> Coefficients:
        """Coefficients for ``tab`` on ``dtype``/``device``, built once, outside inference
        mode: tensors built inside it (a first solve in Lightning's validate or test) cannot
        be saved for backward, and every later training solve in the process failed."""
        key = (tab.name, dtype, device)
        if key not in _COEF_CACHE:
            with torch.inference_mode(False):
                _COEF_CACHE[key] = cls(tab, dtype, device)
        return _COEF_CACHE[key]

    def weights(self, theta: Tensor) -> Tensor:
        """Dense-output stage weights ``b_s(theta)`` for read-outs at ``theta``: (m, S)."""
        return torch.mm(theta.unsqueeze(1) ** self.powers, self.dense)

    def weights_deriv(self, theta: Tensor) -> Tensor:
        """``d b_s / d theta``, so that ``dy/dt = weights_deriv @ K``: (m, S)."""
        return torch.mm(theta.unsqueeze(1) ** (self.powers - 1) * self.powers, self.dense)


@dataclass
class Run:
    """What a pass over ``[t0, t_end]`` produced.

    Attributes:
        outputs: read-outs in schedule order, ``[M, N]`` (1-D grids) or ``[M, D]`` rows.
        derivs: ``dy/dt`` at the read-outs (only if asked for), same shape.
        y_end: the state at ``t_end``, ``[1, N]``.
        f0: ``f(t0, y0)``, ``[1, N]``.
        n_accepted, n_rejected: step counts.
        steps: accepted steps ``(t, t_new, dt, y, lo, hi)`` when recording (checkpointed adjoint).
        last_step: size of the last accepted step.
    """

    outputs: Tensor | None
    derivs: Tensor | None
    y_end: Tensor
    f0: Tensor
    n_accepted: int = 0
    n_rejected: int = 0
    steps: list[tuple[float, float, float, Tensor, int, int]] = field(default_factory=list)
    last_step: float = 0.0


# ----------------------------------------------------------------------------- read-outs
READ_BLOCK = 2**22  # elements of gathered stages per block of per-sample read-outs


def read_out(
    grid: OutputGrid,
    coef: Coefficients,
    lo: int,
    hi: int,
    t: float,
    t_new: float,
    dt: float,
    y: Tensor,
    y1: Tensor,
    K: Tensor,
    derivs: bool,
    dest: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """The solution (and optionally dy/dt) at read-outs ``lo:hi``, all inside ``(t, t_new]``.

    Returns ``(values, derivatives)`` of shape (m, N) for 1-D grids, (m, D) per-sample. With
    ``dest`` (the whole output, ``[T, N]`` or ``[B, T, D]``, no autograd) the values are written
    in place instead and ``None`` is returned for them.
    """
    if grid.batch is None:
        end_hit = grid.times[hi - 1] == t_new
        m = hi - lo - end_hit
        parts, dparts = [], []
        if m:
            theta = ((grid.t_dev[lo : lo + m] - t) / dt).to(y.dtype)  # (m,) exact offsets
            if dest is None:
                parts.append(torch.addmm(y, coef.weights(theta), K, alpha=dt))  # (m, N)
            else:
                torch.addmm(y, coef.weights(theta), K, alpha=dt, out=dest[lo + 1 : lo + 1 + m])
            if derivs:
                dparts.append(torch.mm(coef.weights_deriv(theta), K))
        if end_hit:
            if dest is None:
                parts.append(y1)
            else:
                dest[hi].copy_(y1[0])
            if derivs:
                dparts.append(K[-1:])
        values = None if dest is not None else parts[0] if len(parts) == 1 else torch.cat(parts)
        return values, (torch.cat(dparts) if derivs else None)
    B = grid.batch
    S, N = K.shape
    D = N // B
    theta = ((grid.t_dev[lo:hi] - t) / dt).to(y.dtype)  # (m,) offsets taken in float64
    w = coef.weights(theta).unsqueeze(1)  # (m, 1, S)
    wd = coef.weights_deriv(theta).unsqueeze(1) if derivs else None
    Ks = K.view(S, B, D).transpose(0, 1)  # (B, S, D) each sample's stages
    yb = y.view(B, D)
    # Each read-out gathers its sample's stages, [S, D]; in blocks of READ_BLOCK elements, so
    # that many read-outs in one step (a long grid) do not gather S copies of the output.
    size = max(1, READ_BLOCK // (S * D))
    parts, dparts = [], []
    for a in range(0, hi - lo, size):
        end = min(hi, lo + a + size)
        rows = grid.rows[lo + a : end]  # (b,)
        Kb = Ks[rows]  # (b, S, D)
        v = torch.baddbmm(yb[rows].unsqueeze(1), w[a : a + size], Kb, alpha=dt)[:, 0]  # (b, D)
        if derivs:
            dparts.append(torch.bmm(wd[a : a + size], Kb)[:, 0])
        if dest is None:
            parts.append(v)
        else:
            dest.index_put_((rows, grid.cols[lo + a : end]), v)
    cat = lambda xs: xs[0] if len(xs) == 1 else torch.cat(xs)  # noqa: E731
    return (cat(parts) if dest is None else None), (cat(dparts) if derivs else None)


# ----------------------------------------------------------------------------- loops
Stop = Callable[[int, float, Tensor], Tensor]


def integrate(
    rhs,
    y0: Tensor,
    grid: OutputGrid,
    coef: Coefficients,
    ctl: Control,
    *,
    t0: float | None = None,
    t_end: float | None = None,
    stops: list[float] = (),
    on_stop: Stop | None = None,
    record: bool = False,
    derivs: bool = False,
    readouts: bool = True,
    dest: Tensor | None = None,
) -> Run:
    """Integrate from ``t0`` to ``t_end`` (default: the grid's), reading out the grid's times.

    Args:
        rhs: ``(t: float, y: [1, N]) -> [1, N]``.
        y0: initial state, ``[1, N]``.
        grid: read-out schedule (ignored when ``readouts`` is False).
        coef, ctl: method coefficients and step control.
        stops: times (in integration order) where the step must land and ``on_stop(j, t, y)``
            may replace the state (the adjoint's jumps); the first stage is then re-evaluated.
        record: keep the accepted steps' start states (checkpointed adjoint).
        derivs: also return dy/dt at the read-outs.
        readouts: read the grid's times out (False for the adjoint's backward pass).
        dest: write read-outs into this output tensor (no autograd; see `read_out`).

    Raises:
        SolverError: step-size underflow, step limit, or a non-finite state / vector field.
    """
    t0 = grid.t0 if t0 is None else t0
    t_end = grid.t_end if t_end is None else t_end
    loop = _adaptive if coef.tab.adaptive and ctl.step_size is None else _fixed
    return loop(
        rhs, y0, grid, coef, ctl, t0, t_end, list(stops), on_stop, record, derivs, readouts, dest
    )


class _Collector:
    """Accumulates read-outs and (optionally) recorded steps."""

    def __init__(self, grid, coef, readouts: bool, derivs: bool, record: bool, dest) -> None:
        self.grid, self.coef, self.derivs, self.record = grid, coef, derivs, record
        self.dest = dest
        self.tau = grid.tau if readouts else []
        self.pos = 0
        self.values: list[Tensor] = []
        self.dvalues: list[Tensor] = []
        self.steps: list = []

    def add(self, t: float, t_new: float, dt: float, y: Tensor, y1: Tensor, K: Tensor) -> None:
        lo = self.pos
        hi = bisect_right(self.tau, self.grid.direction * t_new, lo)
        if hi > lo:
            v, d = read_out(
                self.grid, self.coef, lo, hi, t, t_new, dt, y, y1, K, self.derivs, self.dest
            )
            if v is not None:
                self.values.append(v)
            if d is not None:
                self.dvalues.append(d)
        if self.record:
            self.steps.append((t, t_new, dt, y, lo, hi))
        self.pos = hi

    def finish(self, y_end, f0, n_acc, n_rej, last) -> Run:
        cat = lambda xs: torch.cat(xs) if xs else None  # noqa: E731
        return Run(cat(self.values), cat(self.dvalues), y_end, f0, n_acc, n_rej, self.steps, last)


def _fixed(rhs, y, grid, coef, ctl, t0, t_end, stops, on_stop, record, derivs, readouts, dest):
    times = grid.times if readouts else []
    # Without step_size the steps are the given times, as many as asked for; with it they
    # are bounded by max_num_steps, so that a step_size off by orders of magnitude is named.
    if (
        ctl.step_size
        and (n_steps := math.ceil(abs(t_end - t0) / ctl.step_size)) > ctl.max_num_steps
    ):
        raise SolverError(
            "max_num_steps",
            t0,
            ctl.step_size,
            f"a fixed step of {ctl.step_size} from t={t0:.6g} to t={t_end:.6g} needs about "
            f"{n_steps} steps, more than max_num_steps={ctl.max_num_steps}",
        )
    bounds = fixed_step_grid(t0, t_end, ctl.step_size, times, stops)
    stages = _Stages(rhs, y, t0, coef)
    f0 = stages.first.clone()
    out = _Collector(grid, coef, readouts, derivs, record, dest)
    stop_at = {s: j for j, s in enumerate(stops)}
    for t, t_new in pairwise(bounds):
        dt = t_new - t
        y1, K = stages.step(rhs, t, dt, y)
        out.add(t, t_new, dt, y, y1, K)
        stages.accept(K)
        y = y1
        if t_new in stop_at and on_stop is not None:
            y = on_stop(stop_at[t_new], t_new, y)
            stages.restart(rhs, t_new, y)
    n = len(bounds) - 1
    return out.finish(y, f0, n, 0, abs(bounds[-1] - bounds[-2]) if n else 0.0)


def _adaptive(rhs, y, grid, coef, ctl, t0, t_end, stops, on_stop, record, derivs, readouts, dest):
    direction = 1.0 if t_end >= t0 else -1.0
    stages = _Stages(rhs, y, t0, coef)
    f0 = stages.first.clone()
    out = _Collector(grid, coef, readouts, derivs, record, dest)
    with torch.no_grad():
        h = ctl.first_step or initial_step(rhs, t0, y, f0, direction, coef, ctl)
    # within [min_step, max_step]: an initial guess below min_step (1e-4 on a smooth problem
    # with min_step=0.01) was taken, and the growing steps after it stopped the solve as
    # having "fallen below min_step"
    h = max(min(abs(h), ctl.max_step), ctl.min_step)
    targets = [direction * s for s in stops] + [direction * t_end]
    tau, tau_end, j = direction * t0, direction * t_end, 0
    inv_sqrt_n = 1.0 / math.sqrt(ctl.norm_n or y.shape[1])
    ay = y.detach().abs()  # |y| of the current step's start, reused as |y1| is accepted
    # PI gains: factor = safety * r_n^-beta1 * r_{n-1}^beta2 (Hairer & Wanner II, IV.2).
    beta1 = (ctl.pcoeff + ctl.icoeff) * coef.err_exponent
    beta2 = ctl.pcoeff * coef.err_exponent
    r_prev, n_acc, n_rej, non_finite, last = 1.0, 0, 0, False, 0.0
    while tau < tau_end:
        if n_acc + n_rej >= ctl.max_num_steps:
            raise SolverError(
                "max_num_steps",
                direction * tau,
                h,
                f"reached max_num_steps={ctl.max_num_steps} ({n_acc} accepted, {n_rej} "
                f"rejected) before t={t_end:.6g}",
            )
        target = targets[j]
        clipped = 1.01 * h >= target - tau  # no sliver steps before a landing
        h_step = target - tau if clipped else h
        t, dt = direction * tau, direction * h_step
        y1, K = stages.step(rhs, t, dt, y)
        ay1 = y1.detach().abs()
        r = error_ratio(ay, ay1, K, coef, ctl).item() * h_step * inv_sqrt_n
        if r <= 1.0:
            tau_new = target if clipped else tau + h_step
            t_new = direction * tau_new
            out.add(t, t_new, dt, y, y1, K)
            stages.accept(K)
            y, ay, tau, last, non_finite = y1, ay1, tau_new, h_step, False
            n_acc += 1
            if clipped and j < len(stops):
                if on_stop is not None:
                    y = on_stop(j, t_new, y)
                    ay = y.detach().abs()
                    stages.restart(rhs, t_new, y)
                j += 1
            factor = ctl.safety * max(r, 1e-10) ** -beta1 * r_prev**beta2
            factor = min(ctl.ifactor, max(ctl.dfactor, factor))
            r_prev = max(r, 1e-4)
            h_next = max(h_step * factor, h) if clipped else h_step * factor
        else:
            n_rej += 1
            if not math.isfinite(r):
                if not bool(torch.isfinite(stages.first).all()):
                    raise SolverError(
                        "non_finite",
                        t,
                        None,
                        "the vector field returned NaN or inf at a finite state",
                    )
                non_finite, factor = True, ctl.dfactor
            else:
                factor = max(ctl.dfactor, ctl.safety * r**-coef.err_exponent)
            h_next = h_step * min(1.0, factor)
        h = min(h_next, ctl.max_step)
        if tau < tau_end and (h < ctl.min_step or tau + h <= tau):
            if non_finite:
                raise SolverError(
                    "non_finite",
                    direction * tau,
                    h,
                    "the step's stages became NaN or inf for every step size tried: the "
                    "vector field returns NaN or inf just past this time, or the solution "
                    "blows up here",
                )
            raise SolverError(
                "step_size_underflow",
                direction * tau,
                h,
                "the step size fell below "
                + ("min_step" if h < ctl.min_step else "machine precision"),
            )
    return out.finish(y, f0, n_acc, n_rej, last)
