"""Ensembles of fitted latent ODEs: an equal-weight mixture of their posterior predictives.

Fits of one config that differ only in their seed (initial weights, batches, draws) land in
different optima; each one's posterior spread says nothing about that. Pooling their
predictives (a deep ensemble, Lakshminarayanan et al. 2017) averages out part of each fit's
error and widens the bands where the fits disagree. On the shipped fertility data, with the
session-23 default of ``configs/csv.yaml`` one fit in three or four landed well above the
others, and its validation score did not flag it; pooled pairs of seeds forecast at or below
their members' mean MSE on three series splits (0.64x last value's, against 0.76x for single
fits). With the session-24 default the fits agree more closely, and pairs forecast at 0.43x
against 0.47x for single fits, with calibrated coverage 0.93-1.00 (``reports/csv_seeds.md``).

The mixture gives each member the same weight: ``n_samples`` paths from each, each path a
Gaussian with that member's observation noise, all pooled into one mixture whose quantiles
are solved exactly (`latentode.predictive.mixture_quantiles`); the mean is the members'
average mean and the variance the mixture's (law of total variance). Each member
reads the history through its own normalisation and time scale and keeps its own anchor and
encoder, so members may differ in architecture; they must agree on what the data are: the
channels, the time encoding, the conditioning history and the series split (the calibration
and ``latentode test`` score the validation and test series, which no member may have
trained on).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from .data.errors import DataError
from .data.transforms import transform_of
from .nn.latent_ode import LatentODE

__all__ = ["SHARED_KEYS", "Ensemble", "shared_state"]

# What every member's data description must hold alike, and what a difference means.
SHARED_KEYS = {
    "channels": "channels",
    "time_encoding": "time encoding (the time column's unit and origin)",
    "time_column": "time column",
    "series_column": "series column",
    "history": "conditioning history (data.history)",
    "holdout": "held-out span (data.holdout)",
    "val_series": "validation series (data.seed, data.val_fraction or the file)",
    "test_series": "test series (data.seed, data.test_fraction or the file)",
    "val_window": "validation block (data.holdout or the file)",
    "val_windows": "validation blocks (data.split, data.holdout or the file)",
    "transform": "channel transforms (data.transform)",
}


def shared_state(states: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The data description the members share: the first's, after checking the others agree.

    Args:
        states: each member's checkpoint ``data_state``.
        names: the members' names for messages (their checkpoint paths).

    Returns:
        ``states[0]``.

    Raises:
        DataError: a member differs from the first in one of `SHARED_KEYS`; the message names
            both checkpoints, the field and how to make them agree.
    """
    if len(states) != len(names) or not states:
        raise ValueError("one name per state, at least one state")
    first = _shared_view(states[0])
    for state, name in zip(states[1:], names[1:], strict=True):
        view = _shared_view(state)
        for key, what in SHARED_KEYS.items():
            if view.get(key) != first.get(key):
                raise DataError(
                    f"{name} and {names[0]} differ in their {what}: an ensemble's members "
                    "must be fitted on the same file with the same data settings (only the "
                    "model, its seed_everything and the trainer may differ)."
                )
    return states[0]


def _shared_view(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its channel transforms as a key of their own (they sit inside the
    normalisation, whose statistics may differ between members)."""
    return {**state, "transform": transform_of(state)}


class Ensemble(nn.Module):
    """Fitted latent ODEs whose forecasts are pooled (`latentode.forecast.predictive_summary`).

    Args:
        members: the fitted models.
        states: each one's ``data_state`` (its normalisation and time scale are used for its
            own paths).
        names: for messages, e.g. the checkpoint paths.

    Raises:
        DataError: the members' data descriptions disagree (`shared_state`).
    """

    def __init__(
        self,
        members: Sequence[LatentODE],
        states: Sequence[dict[str, Any]],
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(members) != len(states):
            raise ValueError("one data_state per member")
        names = list(names) if names is not None else [f"member {i}" for i in range(len(states))]
        shared_state(states, names)
        self.members = nn.ModuleList(members)
        self.states = list(states)

    @property
    def state(self) -> dict[str, Any]:
        """The data description the members share (the first's; `shared_state`)."""
        return self.states[0]

    def __len__(self) -> int:
        return len(self.members)

    def pairs(self) -> list[tuple[LatentODE, dict[str, Any]]]:
        """``(model, its data_state)`` per member."""
        return list(zip(self.members, self.states, strict=True))
