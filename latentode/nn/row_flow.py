"""ODE-RNN hidden states on a step grid per series: batch-independent fixed steps.

An ODE-RNN carries a series' hidden state ``h`` from one of its observations to the next
under ``dh/dt = f(t, h)``. A batch sits on the union of its series' times. Without a
``step_size`` the ODE-RNN takes one step per gap of that union (Rubanova's implementation
does the same), so with a fixed-step method the other series' times are a series' step
boundaries and its encoding depends on its batch. With ``step_size = s`` each row ``b`` of
``h [B, H]`` steps on boundaries of its own instead:

- its own observation times, each gap between two of them split into ``ceil(gap / s)``
  equal steps (every step at most ``s``, no slivers);
- past its last observation (a forecast), steps of exactly ``s``.

All rows advance together, row ``b`` by its own ``dt[i, b]`` at loop step ``i`` (``dt = 0``
leaves a row exactly where it is), so a batch costs ``max_b`` (steps of row ``b``) field
evaluations, and each row's result is the one it gets alone (to rounding). Query times are
read out by one step of the method from the boundary before them (`readout`), so they do not
move the grid: for Euler this is the piecewise-linear interpolant of the steps.

These flows are differentiated by backpropagation through their steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..solver import METHODS, ButcherTableau
from .base import ModelInputError, SolverSettings

__all__ = [
    "RowSchedule",
    "check_row_flow",
    "readout",
    "rk_step",
    "row_schedule",
    "run_rows",
    "steps_per_series",
]


def steps_per_series(solver: SolverSettings) -> bool:
    """Whether an ODE-RNN with ``solver`` steps each series on its own grid: when it has a
    ``step_size`` (any method then takes fixed steps; an adaptive one with its higher-order
    solution)."""
    return solver.step_size is not None


def check_row_flow(solver: SolverSettings, what: str) -> None:
    """Refuse settings the fixed-step row flow cannot honour.

    Raises:
        ModelInputError: a ``gradient`` other than backprop with a ``step_size``.
    """
    if steps_per_series(solver) and solver.gradient != "backprop":
        raise ModelInputError(
            f"{what}: with a step_size each series steps on its own grid, differentiated by "
            f"backpropagation through the steps, so gradient={solver.gradient!r} does not "
            "apply; use gradient: backprop, or no step_size."
        )


@dataclass
class RowSchedule:
    """Each row's steps, padded to a common length ``L`` (host arrays, float64 times).

    Attributes:
        start: ``[L, B]`` the time each row's step ``i`` starts from.
        end: ``[L, B]`` where it ends (``end == start``: the row stays).
        col: ``[L, B]`` the column of ``times`` a row observes at the end of step ``i`` (a
            GRU update there), -1 where none.
        first: ``[B]`` each row's first boundary time (nan for a row without observations).
    """

    start: np.ndarray
    end: np.ndarray
    col: np.ndarray
    first: np.ndarray

    @property
    def n_steps(self) -> int:
        """``L``, the loop length."""
        return self.start.shape[0]


def row_schedule(
    times: np.ndarray,
    point: np.ndarray,
    solver: SolverSettings,
    what: str,
    *,
    backward: bool,
    end: float | None = None,
) -> RowSchedule:
    """Build each row's step boundaries from its own observations.

    Args:
        times: ``[T]`` the batch's increasing times (host).
        point: ``[B, T]`` bool, row ``b`` observes something at ``times[t]``.
        solver: settings with a ``step_size`` (`steps_per_series`).
        what: the setting's name for messages.
        backward: visit each row's observations latest first (an encoder) or earliest first.
        end: a time every observed row is carried to after its observations (an encoder's
            ``t0``, in equal steps; a forecast's last query time, in steps of ``step_size``).

    Returns:
        The padded `RowSchedule`; step 0 of every observed row is its first update.

    Raises:
        ModelInputError: a row needs more than ``solver.max_num_steps`` steps.
    """
    B = point.shape[0]
    step = float(solver.step_size)  # type: ignore[arg-type]
    rows: list[list[tuple[float, float, int]]] = []  # per row: (start, end, col) steps
    first = np.full(B, np.nan)
    for b in range(B):
        cols = np.flatnonzero(point[b])[::-1] if backward else np.flatnonzero(point[b])
        if len(cols) == 0:
            rows.append([])
            continue
        bounds = [(float(times[c]), int(c)) for c in cols]
        if end is not None and (end < bounds[-1][0] if backward else end > bounds[-1][0]):
            bounds.append((float(end), -1))
        t_now, steps = bounds[0][0], [(bounds[0][0], bounds[0][0], bounds[0][1])]
        first[b] = t_now
        for t_next, c in bounds[1:]:
            n = max(1, math.ceil(abs(t_next - t_now) / step - 1e-9))
            if c < 0 and not backward:  # past the last observation: steps of exactly `step`,
                pieces = [t_now + step * k for k in range(1, n + 1)]  # not bent to `end`
            else:
                pieces = [t_now + (t_next - t_now) * k / n for k in range(1, n)] + [t_next]
            for k, t_piece in enumerate(pieces):
                steps.append((t_now, t_piece, c if k == len(pieces) - 1 else -1))
                t_now = t_piece
        if len(steps) - 1 > solver.max_num_steps:
            raise ModelInputError(
                f"{what}: series {b} needs {len(steps) - 1} steps of at most step_size={step} "
                f"over its span, more than max_num_steps={solver.max_num_steps}; raise "
                "step_size or max_num_steps."
            )
        rows.append(steps)
    L = max((len(r) for r in rows), default=0)
    start = np.zeros((L, B))
    stop = np.zeros((L, B))
    col = np.full((L, B), -1, dtype=np.int64)
    for b, r in enumerate(rows):
        if r:
            arr = np.asarray(r)  # (n, 3)
            start[: len(r), b], stop[: len(r), b], col[: len(r), b] = (
                arr[:, 0],
                arr[:, 1],
                arr[:, 2],
            )
            start[len(r) :, b] = stop[len(r) :, b] = arr[-1, 1]
    return RowSchedule(start, stop, col, first)


def _combine(coefs: np.ndarray, ks: list[Tensor]) -> Tensor:
    """``sum_i coefs[i] ks[i]`` over the nonzero coefficients."""
    terms = [k if c == 1 else float(c) * k for c, k in zip(coefs, ks, strict=False) if c != 0]
    out = terms[0]
    for term in terms[1:]:
        out = out + term
    return out


def rk_step(func: nn.Module, h: Tensor, t: Tensor, dt: Tensor, tab: ButcherTableau) -> Tensor:
    """One explicit Runge-Kutta step of ``tab`` with its own ``dt [N]`` per row of ``h [N, H]``.

    ``h + dt * sum_i b_i k_i`` with ``k_i = f(t + c_i dt, h + dt * sum_j a_ij k_j)``; ``t [N]``
    reaches the field as ``[N, 1]``. The tableau's FSAL stage (``b = 0``) is not evaluated.
    """
    n_stages = max(i for i, w in enumerate(tab.b) if w != 0) + 1
    step = dt.unsqueeze(-1)  # (N, 1)
    ks = [func(t.unsqueeze(-1), h)]  # (N, H)
    for i in range(1, n_stages):
        t_i = (t + float(tab.c[i]) * dt).unsqueeze(-1)  # (N, 1)
        ks.append(func(t_i, h + step * _combine(tab.a[i], ks)))  # (N, H)
    return h + step * _combine(tab.b, ks)  # (N, H)


def readout(
    func: nn.Module,
    states: Tensor,
    sched: RowSchedule,
    t_out: np.ndarray,
    solver: SolverSettings,
) -> Tensor:
    """Hidden states at the query times ``t_out [Q]`` of a forward schedule: ``[B, Q, H]``.

    A query in ``(start, end]`` of a row's step ``i`` is one step of the method from
    ``states[i]`` (the state at ``start``, after any update there) of length ``t - start``; a
    query at or before a row's first observation reads 0 (nothing seen yet).

    Args:
        func: the field; states: ``[L, B, H]`` each row's state at the start of each step.
        sched: the forward `RowSchedule`; t_out: ``[Q]`` increasing queries (host).
        solver: the settings whose method steps.
    """
    L, B, H = states.shape
    Q = len(t_out)
    if L == 0:  # no row observes anything: every query reads the unseen state 0
        return states.new_zeros(B, Q, H)
    index = np.full((B, Q), -1, dtype=np.int64)  # flat index into states, -1: zero state
    start = np.zeros((B, Q))
    for b in range(B):
        if np.isnan(sched.first[b]):
            continue
        moving = sched.end[:, b] > sched.start[:, b]  # (L,)
        ends = np.where(moving, sched.end[:, b], -np.inf)  # (L,)
        i = np.searchsorted(np.maximum.accumulate(ends), t_out, side="left")  # (Q,)
        ok = (t_out > sched.first[b]) & (i < L)
        index[b, ok] = i[ok] * B + b
        start[b, ok] = sched.start[i[ok], b]
    flat = torch.as_tensor(index.reshape(-1), device=states.device)  # (B*Q,)
    keep = flat >= 0  # (B*Q,)
    h0 = states.reshape(L * B, H)[flat.clamp(min=0)]  # (B*Q, H)
    t0 = torch.as_tensor(start.reshape(-1), dtype=states.dtype, device=states.device)
    tq = torch.as_tensor(np.tile(t_out, B), dtype=states.dtype, device=states.device)
    h = rk_step(func, h0, t0, torch.where(keep, tq - t0, 0.0), METHODS[solver.method])
    return torch.where(keep.unsqueeze(-1), h, 0.0).reshape(B, Q, H)  # (B, Q, H)


def run_rows(
    func: nn.Module,
    cell: nn.GRUCell,
    values: Tensor,
    mask: Tensor,
    sched: RowSchedule,
    solver: SolverSettings,
    record: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Run an ODE-RNN over ``sched``: a step of the method, then a GRU update where a row
    observes (fed ``[values, mask]`` of that column).

    Args:
        func: the hidden-state field; cell: the GRU.
        values, mask: ``[B, T, D]`` (values 0 where unobserved), in the model's dtype.
        sched: the rows' steps (`row_schedule`); solver: the settings whose method steps.
        record: also return each row's state at the start of each step (for `readout`).

    Returns:
        ``(h [B, H], states [L, B, H] or None)``; rows without observations stay 0.
    """
    B = values.shape[0]
    h = values.new_zeros(B, cell.hidden_size)  # (B, H)
    L = sched.n_steps
    if L == 0:
        return h, h.new_zeros(0, B, cell.hidden_size) if record else None
    kw = {"dtype": values.dtype, "device": values.device}
    col = torch.as_tensor(sched.col, device=values.device)  # (L, B)
    xs = torch.cat([values, mask], dim=-1)  # (B, T, 2D)
    x_at = xs[torch.arange(B, device=values.device), col.clamp(min=0)]  # (L, B, 2D)
    start = torch.as_tensor(sched.start, **kw)  # (L, B)
    dt = torch.as_tensor(sched.end - sched.start, **kw)  # (L, B)
    update = (col >= 0).unsqueeze(-1)  # (L, B, 1)
    moves = (sched.end != sched.start).any(axis=1).tolist()  # host, per step
    updates = (sched.col >= 0).any(axis=1).tolist()
    tab = METHODS[solver.method]
    states: list[Tensor] = []
    for i in range(L):
        if record:
            states.append(h)
        if moves[i]:
            h = rk_step(func, h, start[i], dt[i], tab)  # (B, H)
        if updates[i]:
            h = torch.where(update[i], cell(x_at[i], h), h)  # (B, H)
    return h, torch.stack(states) if record else None
