"""Per-channel value transforms: the model works on ``log x`` or ``logit x``, not on ``x``.

Counts, prices, rates and concentrations cannot go below zero, and their changes are often
multiplicative. A Gaussian predictive on the raw values puts mass below zero (its 5% quantile
turns negative for a small value with wide uncertainty) and gives one band width at every
level. Modelled on ``log x`` (``log(1 + x)`` for counts that can be zero), the predictive is
log-normal per posterior path: it stays positive, and its band widens with the level and is
longer above the median than below it.

Shares, fractions and percentages are bounded on both sides. Modelled on
``logit u = log(u / (1 - u))`` with ``u = (x - LO) / (HI - LO)`` (``"logit"``: LO = 0,
HI = 1; ``"logit(0, 100)"`` for percentages), the predictive is logit-normal per path: it
stays strictly between the bounds, and its band narrows and turns lopsided near either one.

A transform is named per channel (``{"sales": "log"}``); the others stay as they are
(``"none"``). It is applied before the per-channel normalisation (`latentode.data.prep`), so
a normalisation dict carries it (``norm["transform"]``, one name per channel; a dict without
it, from a checkpoint written before transforms existed, means none). Quantiles map through
the inverse exactly (the transforms are increasing); means and spreads do not, so they are
the moments of the mixture over posterior paths (`latentode.posterior_predictive.Predictive`).

Usage::

    kinds = transform_kinds(["sales", "share"], {"sales": "log1p", "share": "logit(0, 100)"})
    z = forward(x, kinds)                                             # (..., D)
    x_back = inverse(z, kinds)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from .errors import DataError

__all__ = [
    "TRANSFORMS",
    "base_of",
    "bounds_of",
    "domain_of",
    "forward",
    "inverse",
    "kinds_of",
    "outside_domain",
    "transform_kinds",
    "transform_of",
]

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)

# base name -> the values it takes (said in errors; `domain_of` names a logit's bounds)
TRANSFORMS: dict[str, str] = {
    "none": "any value",
    "log": "greater than 0",
    "log1p": "0 or greater",
    "logit": "strictly between LO and HI ('logit': 0 and 1)",
}

_LOGIT = re.compile(r"logit\(\s*([^,()\s]+)\s*,\s*([^,()\s]+)\s*\)")
_SPLIT = re.compile(r"\s*logit\([^,()]*")  # the part before the comma
_USE = (
    "use 'log' (values > 0), 'log1p' (values >= 0, such as counts), 'logit' (values strictly "
    "between 0 and 1, such as shares) or 'logit(LO, HI)' (strictly between LO and HI, such as "
    "'logit(0, 100)' for percentages; quote it inside a {...} on the command line)"
)


def _number(text: str) -> str:
    """A bound as written in a canonical name: the shortest repr, ``100`` not ``100.0``."""
    return repr(float(text)).removesuffix(".0")


def _canonical(kind: str, channel: str) -> str | None:
    """The stored form of a transform name (``"logit(0, 1)"`` is ``"logit"``, spacing and
    number formats are normalised), or None for a name that is not one.

    Raises:
        DataError: a ``logit(LO, HI)`` whose bounds are not finite numbers with LO < HI.
    """
    if not isinstance(kind, str):
        return None
    kind = kind.strip()
    if kind in TRANSFORMS:
        return kind
    m = _LOGIT.fullmatch(kind)
    if m is None:
        return None
    try:
        lo, hi = float(m[1]), float(m[2])
    except ValueError:
        lo = hi = float("nan")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(
            f"transform {kind!r} of channel {channel!r}: the bounds must be finite numbers "
            "with LO below HI, such as "
            "'logit(0, 100)'."
        )
    if (lo, hi) == (0.0, 1.0):
        return "logit"
    return f"logit({_number(m[1])}, {_number(m[2])})"


def base_of(kind: str) -> str:
    """The transform's family: ``"none"``, ``"log"``, ``"log1p"`` or ``"logit"``."""
    return "logit" if kind.startswith("logit") else kind


def bounds_of(kind: str) -> tuple[float, float]:
    """A logit transform's ``(LO, HI)``; ``(0, 1)`` for ``"logit"``."""
    m = _LOGIT.fullmatch(kind)
    return (0.0, 1.0) if m is None else (float(m[1]), float(m[2]))


def domain_of(kind: str) -> str:
    """The values a transform takes, in words (for errors)."""
    if base_of(kind) != "logit":
        return TRANSFORMS[kind]
    lo, hi = bounds_of(kind)
    return f"strictly between {lo:g} and {hi:g}"


def transform_kinds(
    channels: Sequence[str], transform: Mapping[str, str | None] | None
) -> list[str]:
    """One transform name per channel: the given ones (canonical, `_canonical`), ``"none"``
    for the rest.

    Raises:
        DataError: a channel that is not one of ``channels``, or a name that is not a
            transform (`TRANSFORMS`, or ``logit(LO, HI)`` with finite ``LO < HI``).
    """
    transform = dict(transform or {})
    split = [c for c, k in transform.items() if isinstance(k, str) and _SPLIT.fullmatch(k)]
    if split:  # YAML's {...} splits an unquoted 'logit(LO, HI)' at its comma
        raise DataError(
            f"transform {transform}: the name of channel {split[0]!r} was cut at its comma "
            "(inside {...}, YAML reads a comma as the end of an entry); quote it, as in "
            "--data.init_args.transform \"{share: 'logit(0, 100)'}\"."
        )
    unknown = [c for c in transform if c not in channels]
    if unknown:
        raise DataError(
            f"transform names channel(s) {unknown}, but the channels are {list(channels)}; "
            "name the value columns to transform."
        )
    named = {c: _canonical(k, c) for c, k in transform.items()}
    bad = {c: transform[c] for c, k in named.items() if k is None}
    if bad:
        raise DataError(f"unknown transform {bad}; {_USE}.")
    return [named.get(c) or "none" for c in channels]


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
        col, base = x[..., d], base_of(kind)  # NaN compares False: missing values pass
        if base == "log":
            out[..., d] = col <= 0
        elif base == "log1p":
            out[..., d] = col < 0
        elif base == "logit":
            lo, hi = bounds_of(kind)
            out[..., d] = (col <= lo) | (col >= hi)
    return out


def _sigmoid(z: ArrayT) -> ArrayT:
    """``1 / (1 + e^-z)`` (an overflow of ``e^-z`` gives 0, as it should)."""
    return torch.sigmoid(z) if isinstance(z, Tensor) else 1 / (1 + np.exp(-z))


def _column(col: ArrayT, kind: str, back: bool) -> ArrayT:
    """One channel's values through its transform (``back``: through the inverse)."""
    lib: Any = torch if isinstance(col, Tensor) else np
    base = base_of(kind)
    if base == "log":
        return lib.exp(col) if back else lib.log(col)
    if base == "log1p":
        return lib.expm1(col) if back else lib.log1p(col)
    lo, hi = bounds_of(kind)  # logit: log((x - lo) / (hi - x)), exact near either bound
    if not back:
        return lib.log(col - lo) - lib.log(hi - col)
    # measured from the nearer bound, so a value next to HI keeps its distance to it
    return lib.where(col > 0, hi - (hi - lo) * _sigmoid(-col), lo + (hi - lo) * _sigmoid(col))


def _apply(x: ArrayT, kinds: Sequence[str], back: bool) -> ArrayT:
    if len(kinds) != x.shape[-1]:
        raise DataError(
            f"{len(kinds)} channel transforms {list(kinds)}, values have {x.shape[-1]}."
        )
    if all(k == "none" for k in kinds):
        return x
    parts = [x[..., d] if k == "none" else _column(x[..., d], k, back) for d, k in enumerate(kinds)]
    return torch.stack(parts, dim=-1) if isinstance(x, Tensor) else np.stack(parts, axis=-1)


def forward(x: ArrayT, kinds: Sequence[str]) -> ArrayT:
    """The transformed values (``log x``, ``log(1 + x)``, ``logit`` of ``x`` between its
    bounds, or ``x`` per channel, last dim).

    Values outside the domain (checked where files are read, `outside_domain`) give NaN or
    ``-inf``; NaN (missing) stays NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _apply(x, kinds, back=False)


def inverse(z: ArrayT, kinds: Sequence[str]) -> ArrayT:
    """Inverse of `forward`: back to the user's values."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _apply(z, kinds, back=True)
