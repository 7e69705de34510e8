"""Input checks shared by the models in `latentode.nn`, and the error they raise.

Each check refuses what a model cannot use with a `ModelInputError` (or a subclass a model
passes in) whose message says what to change: model sizes and noise levels, solver step sizes,
dtypes, non-finite inputs after a failed solve, observations ``(times, values, mask)`` and
query times. `latentode.nn.base` re-exports all of them.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from ..solver import ADAPTIVE_METHODS, METHODS

__all__ = [
    "ModelInputError",
    "check_dtype",
    "check_obs_std",
    "check_observations",
    "check_observed_type",
    "check_query_times",
    "check_sizes",
    "check_step_size",
    "finite_real",
    "param_dtype",
    "refuse_non_finite",
]


class ModelInputError(ValueError):
    """The tensors given to a model do not fit it; the message says what to change."""


def finite_real(value: object) -> bool:
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_sizes(**sizes: int | None) -> None:
    """Refuse model widths below 1 (None: not given, not checked); one message for all.

    Raises:
        ModelInputError: ``model sizes must be 1 or more; got hidden = 0, ...``.
    """
    small = [f"{name} = {v}" for name, v in sizes.items() if v is not None and not v >= 1]
    if small:
        raise ModelInputError(f"model sizes must be 1 or more; got {', '.join(small)}.")


def check_obs_std(obs_std: float) -> None:
    """Refuse an observation std that is not a finite number > 0.

    Raises:
        ModelInputError: naming the value.
    """
    if not (finite_real(obs_std) and obs_std > 0):
        raise ModelInputError(f"obs_std must be a positive number; got {obs_std}.")


def check_step_size(
    owner: str,
    method: str,
    step_size: float | None,
    span: float,
    span_name: str,
    error: type[ModelInputError] = ModelInputError,
) -> None:
    """Refuse a fixed-step ``method`` without ``step_size``, and a ``step_size`` outside
    ``(0, span]``, for a model that integrates over one interval ``[0, span]``.

    Without a step size a fixed-step method takes one step over the whole interval: for a CNF
    the "density" of one Euler step is not normalised and training exploits it (its NLL falls
    below the data's entropy).

    Args:
        owner: the constructor's name, for the messages.
        method: a name in ``latentode.solver.METHODS``.
        step_size: the step of the fixed-step methods, or None.
        span: the length of the interval (positive).
        span_name: the argument that sets it (``"T"``, ``"t1"``).
        error: the `ModelInputError` subclass to raise.

    Raises:
        error: a fixed-step method without step_size, or a step_size not in ``(0, span]``.
    """
    if step_size is None:
        if not METHODS[method].adaptive:
            raise error(
                f"{owner}: method {method!r} takes fixed steps and needs step_size (e.g. "
                f"step_size={span / 20:g}: 20 steps over [0, {span_name}={span:g}]); without "
                "it the solver takes one step over the whole interval. Give step_size, or an "
                f"adaptive method ({', '.join(ADAPTIVE_METHODS)})."
            )
        return
    if not finite_real(step_size) or not 0 < step_size <= span:
        raise error(
            f"{owner}: step_size must be a number in (0, {span_name}={span:g}], got {step_size!r}."
        )


def check_dtype(
    x: Tensor,
    dtype: torch.dtype | None,
    what: str,
    error: type[ModelInputError] = ModelInputError,
    cast: str | None = None,
) -> None:
    """Refuse an input whose dtype is not the model's (its parameters' ``dtype``; None: not
    checked). Reads only metadata, nothing from the device.

    Args:
        x: the input.
        dtype: the model's dtype.
        what: the input's name in the messages (``"the points"``).
        error: the `ModelInputError` subclass to raise.
        cast: the conversion to advise for a non-floating input (default ``x.to(dtype)``).

    Raises:
        error: ``x`` is not floating point, or another floating dtype than the model's.
    """
    if dtype is None or x.dtype == dtype:
        return
    if not x.is_floating_point():
        raise error(
            f"{what} are {x.dtype}; the model takes {dtype}: pass {cast or f'x.to({dtype})'}."
        )
    raise error(
        f"{what} are {x.dtype} but the model's parameters are {dtype}: pass x.to({dtype}), or "
        f"convert the model with model.to({x.dtype})."
    )


def refuse_non_finite(
    x: Tensor, what: str, cause: BaseException, error: type[ModelInputError] = ModelInputError
) -> None:
    """After a failed solve, raise ``error`` if the model's input ``x`` (``(B, ...)``) holds NaN
    or inf, naming its rows; return otherwise (the caller re-raises the solver's error).

    Called on the failure path only, so the happy path keeps its host reads; this one reads
    a flag per row.

    Raises:
        error: ``x`` has a non-finite entry (chained to ``cause``).
    """
    if x.dim() == 0 or x.shape[0] == 0:
        return
    bad = ~torch.isfinite(x.detach()).reshape(x.shape[0], -1).all(dim=1)  # (B,)
    rows = torch.nonzero(bad).flatten().tolist()  # one host read
    if not rows:
        return
    shown = ", ".join(str(r) for r in rows[:10]) + (", ..." if len(rows) > 10 else "")
    raise error(
        f"{what} contain NaN or inf in rows [{shown}] ({len(rows)} of {x.shape[0]}); the model "
        "needs finite inputs. Drop or impute those rows before calling it."
    ) from cause


def param_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first parameter (None without parameters)."""
    first = next(module.parameters(), None)
    return None if first is None else first.dtype


def check_observed_type(observed: object) -> None:
    """Refuse an ``observed`` that is not `Observations`: tensors ``times``, ``values`` and
    ``mask`` (an `IrregularBatch`, which a `SeriesTable` becomes through
    `latentode.predictive.conditioned_batch` or `latentode.data.collate_segments`).

    Raises:
        ModelInputError: naming what was given.
    """
    fields = ("times", "values", "mask")
    if not all(isinstance(getattr(observed, f, None), Tensor) for f in fields):
        raise ModelInputError(
            f"observed must hold tensors times, values and mask (an IrregularBatch), got "
            f"{type(observed).__name__}; a SeriesTable's series become one through "
            "latentode.data.collate_segments or latentode.predictive.conditioned_batch."
        )


def check_observations(
    times: Tensor,
    values: Tensor,
    mask: Tensor,
    input_dim: int,
    dtype: torch.dtype | None = None,
) -> None:
    """Check ``(times, values, mask)`` against a model expecting ``input_dim`` features of
    ``dtype`` (its parameters'; None: not checked).

    Beyond the shapes, one read from the device checks the contents: ``times`` finite and
    strictly increasing (as given, and in ``values``' dtype, which the encoders compute
    with), and every observed value (``mask`` nonzero) finite. Unsorted times were once
    encoded without a word (the posterior moved), a NaN at an observed entry turned the loss
    into NaN, and in `predict` was reported as a solver failure; float64 times that coincide
    in float32 reached the solver as "not strictly increasing".

    Raises:
        ModelInputError: on a shape or dtype mismatch, unsorted or non-finite times, times
            that coincide once cast to ``values``' dtype, or a non-finite observed value
            (named by series, time index and feature).
    """
    if values.dim() != 3:
        raise ModelInputError(
            f"values must be [B, T, D] (series, times, channels); got shape {tuple(values.shape)}."
        )
    if values.shape[-1] != input_dim:
        D = values.shape[-1]
        raise ModelInputError(
            f"the model's input_dim is {input_dim} but the data have {D} channel"
            f"{'s' if D != 1 else ''} (values of shape {tuple(values.shape)}): set the "
            f"model's input_dim to {D}, or give it data with {input_dim} channels."
        )
    if mask.shape != values.shape:
        raise ModelInputError(
            f"mask must have the shape of values {tuple(values.shape)}; got {tuple(mask.shape)}."
        )
    if times.dim() != 1 or times.shape[0] != values.shape[1]:
        raise ModelInputError(
            f"times must be 1-D with T = {values.shape[1]} entries (one grid shared by the "
            f"batch); got shape {tuple(times.shape)}. Collate per-series times into a union "
            "grid first (latentode.data.collate_series)."
        )
    if not values.is_floating_point():
        raise ModelInputError(f"values must be floating point; got {values.dtype}.")
    if dtype is not None and values.dtype != dtype:
        raise ModelInputError(
            f"values are {values.dtype} but the model's parameters are {dtype}: cast one to "
            f"the other (values.to({dtype}) and times alike, or model.to({values.dtype}))."
        )
    bad_value = ~torch.isfinite(values) & (mask != 0)  # (B, T, D)
    cast = times.to(values.dtype)  # (T,) the times the model computes with
    no = times.new_zeros((), dtype=torch.bool)
    flags = torch.stack(
        [
            ~torch.isfinite(times).all(),
            (times.diff() <= 0).any() if len(times) > 1 else no,
            bad_value.any(),
            (cast.diff() <= 0).any() if len(times) > 1 and cast is not times else no,
        ]
    ).tolist()  # one read from the device
    if flags[0]:
        raise ModelInputError("times contain NaN or inf; give finite observation times.")
    if flags[1]:
        i = int(torch.nonzero(times.diff() <= 0)[0]) + 1
        raise ModelInputError(
            f"times must be strictly increasing; they break at index {i} "
            f"({float(times[i - 1])!r} -> {float(times[i])!r}). Sort the observations by "
            "time and merge repeated times (latentode.data.collate_series does both)."
        )
    if flags[3]:  # increasing as given, not once cast: the encoder would see repeated times
        i = int(torch.nonzero(cast.diff() <= 0)[0]) + 1
        raise ModelInputError(
            f"times are strictly increasing in {times.dtype} but not in the model's "
            f"{values.dtype}: at index {i}, {float(times[i - 1])!r} and {float(times[i])!r} "
            f"both become {float(cast[i])!r}. Shift the times to start near 0 (subtract the "
            "first time) or rescale them to a coarser unit, or run the model in float64 "
            "(model.double(), values and times alike)."
        )
    if flags[2]:
        b, t, d = torch.nonzero(bad_value)[0].tolist()
        raise ModelInputError(
            f"values[{b}, {t}, {d}] is {float(values[b, t, d])} where mask is 1 (series {b}, "
            f"time index {t}, feature {d}): an observed value must be finite. Set the mask to 0 "
            "where a value is missing."
        )


def check_query_times(
    times: Tensor, t0: Tensor, batch: int, before_t0: bool = False
) -> tuple[Tensor, float]:
    """Check query times ``[T]`` or ``[B, T]``: sorted, strictly increasing and ``>= t0``
    (with ``before_t0``, times before ``t0`` are allowed too: a model that integrates
    backwards from ``t0`` as well).

    The times are copied to the host once (one device sync) and checked there.

    Returns:
        The host copy of ``times`` and ``t0`` as a float, for further host-side decisions.

    Raises:
        ModelInputError: if the times cannot be read out from a solve that starts at ``t0``.
    """
    if times.dim() not in (1, 2) or times.shape[-1] < 1:
        raise ModelInputError(f"times must be [T] or [B, T]; got shape {tuple(times.shape)}.")
    if times.dim() == 2 and times.shape[0] != batch:
        raise ModelInputError(
            f"per-series times must be [B={batch}, T]; got shape {tuple(times.shape)}."
        )
    both = torch.cat([t0.detach().reshape(1), times.detach().reshape(-1)]).cpu()  # one sync
    start, host = float(both[0]), both[1:].reshape(times.shape)
    finite = torch.isfinite(host).all()
    ordered = (host.diff(dim=-1) > 0).all() if times.shape[-1] > 1 else finite
    if not bool(finite & ordered):  # one read of both on the host
        if not bool(finite):
            raise ModelInputError("query times must be finite numbers; some are NaN or infinite.")
        *row, i = torch.nonzero(host.diff(dim=-1) <= 0)[0].tolist()
        where = f"row {row[0]}, index {i + 1}" if row else f"index {i + 1}"
        raise ModelInputError(
            f"query times must be strictly increasing in the model's {times.dtype}; they are "
            f"not at {where}. Sort them and drop duplicates (times far from 0 can coincide in "
            "float32: shift them to start near 0, or use float64)."
        )
    if not before_t0 and bool((host[..., 0] < start).any()):
        raise ModelInputError(
            f"query times start before the first observation time t0 = {start:.6g}; "
            "the latent state is defined from t0 on."
        )
    return host, start
