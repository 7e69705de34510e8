"""Checking and normalising the arguments of `solve` before any work is done.

Step options and tolerances become a checked `Control` (`_control`); method names, option
mappings and the adjoint's parameters are checked here too, and so are the combinations that
would silently give a poor solution (a tolerance below a half-precision state's resolution, a
fixed-step backward solve after an adaptive forward one). Each problem is a `SolverInputError`
that names the argument and what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor, nn

from .errors import SolverInputError
from .state import HALF
from .step import Control
from .tableaus import METHODS

__all__: list[str] = []  # helpers of `solve` only: nothing public

_STEP_OPTIONS = tuple(f.name for f in fields(Control) if f.name not in ("rtol", "atol", "norm_n"))


def _number(label: str, value: Any, test: Callable[[float], bool], must: str) -> float:
    """``value`` as a float that passes ``test``, or a `SolverInputError` saying what
    ``label`` must be (a bool, a text or a NaN never passes)."""
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several values
        raise SolverInputError(f"{label} must be a number, got {value!r}.") from None
    if isinstance(value, bool) or math.isnan(number) or not test(number):
        raise SolverInputError(f"{label} must be {must}, got {value!r}.")
    return number


def _tolerance(name: str, value: Any) -> float:
    """``rtol`` (>= 0) / ``atol`` (> 0) as a float, or a `SolverInputError` naming it.

    ``atol = 0`` is refused: a state component at 0 then has no error scale, its error ratio
    is 0/0, and the solve stopped with a false "the initial state contains NaN or inf"."""
    if isinstance(value, Tensor) and value.numel() != 1:
        raise SolverInputError(
            f"{name} must be one number; got a tensor of shape {tuple(value.shape)}. "
            "Per-component tolerances are not supported: rescale the state's components so "
            "that one tolerance suits them all."
        )
    if name.endswith("atol"):
        return _number(
            name,
            value,
            lambda v: 0 < v < math.inf,
            "a finite number > 0 (with atol=0 a state component at 0 has no error scale; for "
            "a relative tolerance alone give an atol far below the state's size, e.g. 1e-12)",
        )
    return _number(name, value, lambda v: 0 <= v < math.inf, "a finite number >= 0")


# option -> (test, what it must be); None values (the defaults of first_step and step_size)
# are not tested
_OPTION_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "first_step": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "step_size": (lambda v: 0 < v < math.inf, "a finite number > 0"),
    "max_step": (lambda v: v > 0, "a number > 0 (inf: no limit)"),
    "min_step": (lambda v: 0 <= v < math.inf, "a finite number >= 0"),
    "max_num_steps": (lambda v: v >= 1 and v.is_integer(), "a whole number >= 1"),
    "safety": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "ifactor": (lambda v: 1 <= v < math.inf, "a finite number >= 1"),
    "dfactor": (lambda v: 0 < v < 1, "in (0, 1) (1: a rejected step would never shrink)"),
    "pcoeff": (math.isfinite, "a finite number"),
    "icoeff": (math.isfinite, "a finite number"),
}


def _check_options(kw: dict[str, Any], what: str) -> None:
    """Each step option a number in its range, converted in place, so that a bad one is
    named before any work (a NaN first step would otherwise spin to max_num_steps, a safety
    of 0 end in a step-size underflow that blames the problem's stiffness)."""
    for name, value in kw.items():
        kw[name] = _number(f"{what} option {name}", value, *_OPTION_RULES[name])
    kw["max_num_steps"] = int(kw.get("max_num_steps", Control.max_num_steps))
    pcoeff, icoeff = kw.get("pcoeff", Control.pcoeff), kw.get("icoeff", Control.icoeff)
    if pcoeff + icoeff <= 0:
        raise SolverInputError(
            f"{what} options pcoeff + icoeff must be > 0 (a larger error must shrink the step), "
            f"got {pcoeff!r} + {icoeff!r}."
        )
    min_step, max_step = kw.get("min_step", Control.min_step), kw.get("max_step", Control.max_step)
    if min_step >= max_step:
        raise SolverInputError(
            f"{what} option min_step ({min_step!r}) must be below max_step ({max_step!r})."
        )


# options only an error-controlled solve reads: a fixed-step one would ignore them
_ADAPTIVE_ONLY = ("max_step", "min_step", "safety", "ifactor", "dfactor", "pcoeff", "icoeff")


def _control(
    method: str,
    rtol: Any,
    atol: Any,
    options: Mapping[str, Any],
    what: str,
    given: Iterable[str] | None = None,
) -> Control:
    """The checked `Control` of a solve (``what``: "step" or "adjoint").

    ``given``: the option names the user gave for this solve (default: all of ``options``;
    the adjoint's inherits the forward's, which are not its own to refuse).

    Raises:
        SolverInputError: an unknown option, one out of its range, or one of step control
            given to a solve that takes fixed steps (it would be ignored: ``max_step=0.01``
            with euler took one step over [0, 1]).
    """
    unknown = sorted(set(options) - set(_STEP_OPTIONS))
    if unknown:
        raise SolverInputError(
            f"unknown {what} option(s) {unknown}; valid options are {list(_STEP_OPTIONS)}."
        )
    kw = {k: v for k, v in options.items() if v is not None}
    _check_options(kw, what)
    prefix = "adjoint_" if what == "adjoint" else ""
    rtol, atol = _tolerance(f"{prefix}rtol", rtol), _tolerance(f"{prefix}atol", atol)
    ctl = Control(rtol=rtol, atol=atol, **kw)
    adaptive = METHODS[method].adaptive
    mine = set(kw) & set(options if given is None else given)
    ignored = sorted(mine & set(_ADAPTIVE_ONLY))
    if adaptive and ctl.step_size is not None and "first_step" in mine:
        ignored.append("first_step")
    if ignored and (not adaptive or ctl.step_size is not None):
        why = f"step_size={ctl.step_size}" if adaptive else f"the fixed-step method {method!r}"
        raise SolverInputError(
            f"{what} option(s) {ignored} control an adaptive solve's steps, and this one takes "
            f"fixed steps ({why}): they would be ignored. Leave them out, or use an adaptive "
            "method without step_size."
        )
    if not adaptive and ctl.step_size is None and ctl.first_step is not None:
        ctl.step_size = ctl.first_step
    return ctl


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    """``options`` / ``adjoint_options`` as a mapping (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SolverInputError(
            f"{name} must be a mapping of option names to values, such as "
            f"{{'step_size': 0.1}}; got {type(value).__name__} {value!r}."
        )
    return value


def _check_resolution(ctl: Control, dtype: torch.dtype | None, method: str, what: str) -> None:
    """Refuse an adaptive solve of a float16 / bfloat16 state at a relative tolerance below the
    dtype's resolution: its steps shrink until ``y + h f`` rounds back to ``y``, and the
    solution stalls where it is without any error (bfloat16 at the default 1e-7: ``exp(-1)``
    came out 0.992)."""
    if dtype not in HALF or not METHODS[method].adaptive or ctl.step_size is not None:
        return
    eps = torch.finfo(dtype).eps
    if ctl.rtol < eps:
        raise SolverInputError(
            f"{what}rtol={ctl.rtol:g} is below the resolution of the {dtype} state ({eps:.2g}): "
            "steps that small leave it unchanged and the solution stalls. Give "
            f"{what}rtol >= {eps:.2g}, or integrate in float32 (y0.float())."
        )


def _check_adjoint_steps(method: str, ctl: Control, adj_method: str, adj_ctl: Control) -> None:
    """Refuse a fixed-step backward solve without ``step_size`` after an error-controlled
    forward one: it would take one step per output interval, backwards, and the gradient of an
    accurate solution would come out of a coarse one without a word (an MLP field on [0, 3]
    read out at 3 times, dopri5 forward at rtol 1e-7: rk4 backwards in 2 steps gave a
    relative gradient error of 5e-4, dopri5 backwards 2e-7). A fixed-step forward on the
    output grid may be matched by one."""
    forward_adaptive = METHODS[method].adaptive and ctl.step_size is None
    if forward_adaptive and not METHODS[adj_method].adaptive and adj_ctl.step_size is None:
        raise SolverInputError(
            f"adjoint_method={adj_method!r} takes fixed steps, and no adjoint step_size is "
            f"given: the backward solve of this adaptive {method!r} forward would take one step "
            "per output interval. Give adjoint_options={'step_size': ...} (or "
            "adjoint_options={'first_step': ...}), or an adaptive adjoint_method."
        )


def _method(name: str, what: str = "method") -> str:
    if name not in METHODS:
        raise SolverInputError(f"unknown {what} {name!r}; choose one of {list(METHODS)}.")
    return name


def _params(func: Callable, adjoint_params: Iterable[Tensor] | None) -> tuple[Tensor, ...]:
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise SolverInputError(
                "the adjoint and checkpoint gradients need the parameters of func: make func "
                "an nn.Module, or pass adjoint_params=(tensors...) explicitly."
            )
        adjoint_params = func.parameters()
    # each tensor once: a shared parameter listed twice (the parameters of two modules that
    # share one, concatenated) would receive its gradient twice
    unique = {id(p): p for p in adjoint_params if p.requires_grad}
    return tuple(unique.values())
