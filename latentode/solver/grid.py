"""Output times: validation of ``t`` and the sorted read-out schedule the engine follows.

A 1-D ``t`` is one grid for the whole batch. A 2-D ``t`` of shape ``[B, T]`` gives every sample
its own grid (common start ``t[:, 0]``); all ``B * (T - 1)`` read-out times are merged into one
sorted schedule, and the engine reads each out by dense output inside the step that covers it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .errors import SolverInputError

__all__ = ["OutputGrid", "fixed_step_grid"]


def _time_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for read-out times on the state's device; MPS has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


@dataclass
class OutputGrid:
    """Where the solution is read out, in integration order.

    Attributes:
        t0: start time; t_end: last time reached; direction: +1.0 or -1.0.
        times: read-out times after the start, sorted in integration order (host floats).
        t_dev: the same times as a float64 tensor on the state's device (float32 on MPS, which
            has no float64), so that read-outs at large times keep their offsets in a step.
        batch: B for per-sample grids, else None.
        rows, cols: sample and time index of each read-out (per-sample grids), long ``[M]``.
        flat_index: index of each read-out into ``t.reshape(-1)``, long tensor ``[M]``.
        inverse: for per-sample grids, the sorted position of read-out ``(b, i)``, ``[B*(T-1)]``.
        T: number of times per grid (including the start).
        host: ``t`` as a float64 numpy array (for messages).
    """

    t0: float
    t_end: float
    direction: float
    times: list[float]
    t_dev: Tensor
    batch: int | None
    rows: Tensor | None
    cols: Tensor | None
    flat_index: Tensor
    inverse: Tensor | None
    T: int
    host: np.ndarray

    def __post_init__(self) -> None:
        self.tau = [self.direction * x for x in self.times]  # ascending

    @classmethod
    def build(cls, t: Tensor, dtype: torch.dtype, device: torch.device) -> OutputGrid:
        """Validate ``t`` and build the schedule (one host transfer of ``t``).

        Raises:
            SolverInputError: if ``t`` is not 1-D/2-D, not strictly monotone, or 2-D rows do not
                share their start or direction.
        """
        if not isinstance(t, Tensor):
            raise SolverInputError(f"t must be a torch.Tensor, got {type(t).__name__}.")
        if t.dim() not in (1, 2) or t.shape[-1] < 1:
            raise SolverInputError(
                f"t must be 1-D [T] or 2-D [batch, T] with T >= 1; got shape {tuple(t.shape)}."
            )
        host = t.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(host).all():
            raise SolverInputError("t contains NaN or infinite values.")
        T = host.shape[-1]
        if t.dim() == 1:
            return cls._build_1d(t, host, dtype, device)
        return cls._build_2d(t, host, T, dtype, device)

    @classmethod
    def _direction(cls, row: np.ndarray, what: str) -> float:
        if len(row) < 2:
            return 1.0
        d = np.diff(row)
        if (d > 0).all():
            return 1.0
        if (d < 0).all():
            return -1.0
        bad = int(np.nonzero((d <= 0) if d[0] > 0 else (d >= 0))[0][0]) + 1
        raise SolverInputError(
            f"{what} must be strictly increasing or strictly decreasing; it breaks at index "
            f"{bad} ({float(row[bad - 1])!r} -> {float(row[bad])!r}). Sort the times and drop "
            "duplicates."
        )

    @classmethod
    def _build_1d(cls, t: Tensor, host: np.ndarray, dtype, device) -> OutputGrid:
        direction = cls._direction(host, "t")
        times = host[1:].tolist()
        return cls(
            t0=float(host[0]),
            t_end=float(host[-1]),
            direction=direction,
            times=times,
            t_dev=t[1:].detach().to(device=device, dtype=_time_dtype(device)),
            batch=None,
            rows=None,
            cols=None,
            flat_index=torch.arange(1, len(host), device=t.device),
            inverse=None,
            T=len(host),
            host=host,
        )

    @classmethod
    def _build_2d(cls, t: Tensor, host: np.ndarray, T: int, dtype, device) -> OutputGrid:
        B = host.shape[0]
        directions = {cls._direction(row, f"t[{b}]") for b, row in enumerate(host)}
        if len(directions) > 1:
            raise SolverInputError("all rows of a 2-D t must run in the same direction.")
        if not (host[:, 0] == host[0, 0]).all():
            b = int(np.nonzero(host[:, 0] != host[0, 0])[0][0])
            raise SolverInputError(
                "rows of a 2-D t must share their start time: t[0, 0] = "
                f"{float(host[0, 0])!r} but t[{b}, 0] = {float(host[b, 0])!r}. Shift the series "
                "to a common origin (or prepend a common start time)."
            )
        direction = directions.pop()
        tau = direction * host[:, 1:].reshape(-1)
        order = np.argsort(tau, kind="stable")
        rows_np = order // (T - 1) if T > 1 else order
        cols_np = order % (T - 1) + 1 if T > 1 else order
        flat = rows_np * T + cols_np
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        times = host[:, 1:].reshape(-1)[order]
        t_end = float(times[-1]) if len(times) else float(host[0, 0])
        as_long = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return cls(
            t0=float(host[0, 0]),
            t_end=t_end,
            direction=direction,
            times=times.tolist(),
            t_dev=torch.as_tensor(times, dtype=_time_dtype(device), device=device),
            batch=B,
            rows=as_long(rows_np),
            cols=as_long(cols_np),
            flat_index=torch.as_tensor(flat, dtype=torch.long, device=t.device),
            inverse=as_long(inverse),
            T=T,
            host=host,
        )


def fixed_step_grid(
    t0: float, t_end: float, step_size: float | None, times: list[float], stops: list[float]
) -> list[float]:
    """Step boundaries for a fixed-step method, from ``t0`` to ``t_end`` inclusive.

    With a ``step_size``, equal steps and a last step that lands on ``t_end``; without one, the
    read-out times themselves. Stop times (where the adjoint receives jumps) are always
    boundaries.

    Raises:
        SolverInputError: if ``step_size`` is not positive.
    """
    direction = 1.0 if t_end >= t0 else -1.0
    span = abs(t_end - t0)
    if step_size is None:
        points = [*times, *stops]
    else:
        if not step_size > 0 or not math.isfinite(step_size):
            raise SolverInputError(f"step_size must be a positive number, got {step_size!r}.")
        n = max(1, math.ceil(span / step_size - 1e-9))
        points = [t0 + direction * step_size * k for k in range(1, n)] + list(stops)
    tau = sorted(
        {direction * p for p in points if 0 < direction * (p - t0) < span} | {direction * t_end}
    )
    return [t0] + [direction * x for x in tau]
