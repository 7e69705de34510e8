"""Per-channel value transforms for positive quantities: the model works on ``log x``.

Counts, prices, rates and concentrations cannot go below zero, and their changes are often
multiplicative. A Gaussian predictive on the raw values puts mass below zero (its 5% quantile
turns negative for a small value with wide uncertainty) and gives one band width at every
level. Modelled on ``log x`` (``log(1 + x)`` for counts that can be zero), the predictive is
log-normal per posterior path: it stays positive, and its band widens with the level and is
longer above the median than below it.

A transform is named per channel (``{"sales": "log"}``); the others stay as they are
(``"none"``). It is applied before the per-channel normalisation (`latentode.data.prep`), so
a normalisation dict carries it (``norm["transform"]``, one name per channel; a dict without
it, from a checkpoint written before transforms existed, means none). Quantiles map through
the inverse exactly (the transforms are increasing); means and spreads do not, so they are
the closed-form moments of the log-normal mixture over posterior paths
(`latentode.predictive.Predictive`).

Usage::

    kinds = transform_kinds(["sales", "price"], {"sales": "log1p"})  # ["log1p", "none"]
    z = forward(x, kinds)                                             # (..., D)
    x_back = inverse(z, kinds)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = [
    "TRANSFORMS",
    "forward",
    "inverse",
    "kinds_of",
    "outside_domain",
    "transform_kinds",
    "transform_of",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)

# name -> the values it takes (said in errors)
TRANSFORMS: dict[str, str] = {
    "none": "any value",
    "log": "greater than 0",
    "log1p": "0 or greater",
}


def transform_kinds(channels: Sequence[str], transform: Mapping[str, str] | None) -> list[str]:
    """One transform name per channel: the given ones, ``"none"`` for the rest.

    Raises:
        DataError: a channel that is not one of ``channels``, or a name not in `TRANSFORMS`.
    """
    transform = dict(transform or {})
    unknown = [c for c in transform if c not in channels]
    if unknown:
        raise DataError(
            f"transform names channel(s) {unknown}, but the channels are {list(channels)}; "
            "name the value columns to transform."
        )
    bad = {c: k for c, k in transform.items() if k not in TRANSFORMS}
    if bad:
        raise DataError(
            f"unknown transform {bad}; use 'log' (values > 0) or 'log1p' (values >= 0, such "
            "as counts)."
        )
    return [transform.get(c, "none") for c in channels]


def kinds_of(norm: Mapping[str, Any] | None, n_channels: int) -> list[str]:
    """The transform per channel a normalisation dict carries (all ``"none"`` without one)."""
    if norm is None or "transform" not in norm:
        return ["none"] * n_channels
    return list(norm["transform"])


def transform_of(data_state: Mapping[str, Any]) -> dict[str, str]:
    """The transformed channels of a checkpoint's ``data_state``, ``{channel: name}``."""
    norm = data_state.get("normalisation")
    if not norm or "transform" not in norm:
        return {}
    channels = norm.get("channels") or data_state["channels"]
    return {c: k for c, k in zip(channels, norm["transform"], strict=True) if k != "none"}


def outside_domain(x: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """``[N, D]`` True where an observed value is outside its channel's transform's domain."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape, dtype=bool)
    for d, kind in enumerate(kinds):
        col = x[..., d]
        if kind == "log":
            out[..., d] = col <= 0  # NaN compares False: missing values pass
        elif kind == "log1p":
            out[..., d] = col < 0
    return out


def _apply(x: ArrayT, kinds: Sequence[str], fns: dict[str, tuple[Any, Any]]) -> ArrayT:
    if len(kinds) != x.shape[-1]:
        raise DataError(
            f"{len(kinds)} channel transforms {list(kinds)}, values have {x.shape[-1]}."
        )
    if all(k == "none" for k in kinds):
        return x
    numpy = not isinstance(x, Tensor)
    parts = []
    for d, kind in enumerate(kinds):
        col = x[..., d]
        if kind != "none":
            col = fns[kind][0 if numpy else 1](col)
        parts.append(col)
    return np.stack(parts, axis=-1) if numpy else torch.stack(parts, dim=-1)


def forward(x: ArrayT, kinds: Sequence[str]) -> ArrayT:
    """The transformed values (``log x``, ``log(1 + x)`` or ``x`` per channel, last dim).

    Values outside the domain (checked where files are read, `outside_domain`) give NaN or
    ``-inf``; NaN (missing) stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _apply(x, kinds, {"log": (np.log, torch.log), "log1p": (np.log1p, torch.log1p)})


def inverse(z: ArrayT, kinds: Sequence[str]) -> ArrayT:
    """Inverse of `forward`: back to the user's values."""
    with np.errstate(over="ignore"):
        return _apply(z, kinds, {"log": (np.exp, torch.exp), "log1p": (np.expm1, torch.expm1)})
