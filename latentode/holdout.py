"""The held-out problems of ``latentode test`` and the model's predictives on them.

A `Case` is one series' problem: condition on a history, score the values at target times.
`held_out_cases` builds the extrapolation and interpolation cases of each series' held-out
part; `half_observed` and `history_gaps` derive the half-observed forecast and the
gap-filling problem from a case; `case_predictives` / `case_stats` draw the model's predictive
at every case's targets, each case seeded on its own (`case_seeds`). Used by
`latentode.evaluate` and `latentode.calibration`. `validation_cases` gives the fit's own
validation forecasts, which `latentode.calibration.calibrate` scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .data.prep import Segment, _observed_rows, forecast_segment, holdout_length
from .data.table import SeriesTable
from .ensemble import Ensemble
from .nn.base import ModelInputError
from .nn.latent_ode import AggregatePosterior, LatentODE
from .predictive import Predictive, draw_seeds, iter_predictives

__all__ = [
    "Case",
    "case_predictives",
    "case_seeds",
    "case_stats",
    "half_observed",
    "held_out_cases",
    "history_gaps",
    "validation_cases",
]


@dataclass
class Case:
    """One series' held-out problem: condition on ``hist``, score ``target`` at ``t_target``."""

    series: int
    hist: Segment
    t_target: np.ndarray  # (m,)
    target: np.ndarray  # (m, D), NaN where missing

    @property
    def lead(self) -> np.ndarray:
        """``[m]`` how far past the history's last observation each target lies."""
        return self.t_target - self.hist.times[-1]


def held_out_cases(
    table: SeriesTable, series: list[int], holdout: float, history: float | None, task: str
) -> list[Case]:
    """The evaluation problems of ``task`` (``"extrapolation"`` / ``"interpolation"``)."""
    cases = []
    for s in series:
        t, x = _observed_rows(table, s)
        t_split = t[-1] - holdout_length(t[-1] - t[0], holdout)
        lo = -np.inf if history is None else t_split - history
        if task == "extrapolation":
            past, future = (t >= lo) & (t < t_split), t >= t_split
        else:
            window = np.flatnonzero(t >= t_split)
            hidden = np.zeros(len(t), dtype=bool)
            hidden[window[1:-1:2]] = True  # every other interior point of the window
            past, future = (t >= lo) & ~hidden, hidden
        if past.sum() < 2 or future.sum() < 1:
            continue
        hist = Segment(s, float(t[past][0]), t[past], x[past])
        cases.append(Case(s, hist, t[future], x[future]))
    return cases


def _kept(n: int) -> np.ndarray:
    """The indices of ``n`` observations `half_observed` keeps: the last, the third last, ..."""
    return np.arange(n - 1, -1, -2)[::-1]


def half_observed(case: Case) -> Case:
    """The case with every other history observation dropped, counting back from the last
    (which is kept): the same series observed half as often, the same targets."""
    h = case.hist
    keep = _kept(len(h.times))
    hist = Segment(h.series, float(h.times[keep[0]]), h.times[keep], h.values[keep])
    return Case(case.series, hist, case.t_target, case.target)


def history_gaps(case: Case) -> Case | None:
    """The gap-filling problem inside ``case``'s history: condition on the observations
    `half_observed` keeps and the first, score the others (all interior, so every one lies
    between two conditioned observations). None for a history of fewer than 3 observations."""
    h = case.hist
    n = len(h.times)
    keep = np.zeros(n, dtype=bool)
    keep[_kept(n)] = True
    keep[0] = True
    if keep.all():
        return None
    hist = Segment(h.series, float(h.times[0]), h.times[keep], h.values[keep])
    return Case(case.series, hist, h.times[~keep], h.values[~keep])


def case_stats(
    model: LatentODE | Ensemble,
    cases: list[Case],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    chunk: int = 128,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
    levels: Sequence[float] | None = None,
) -> np.ndarray:
    """``[M, D, 5]`` predictive summaries (`Predictive.summary`; ``[M, D, 2 + Q]`` with the
    bands of ``levels``) at every case's targets, in order, ``chunk`` cases per model call,
    case ``i``'s draws seeded by ``seeds[i]`` (`case_seeds`)."""
    preds = case_predictives(
        model, cases, data_state, n_samples, seeds, importance, chunk, refine, prior
    )
    return np.concatenate([p.summary(levels=levels) for p in preds])


def case_predictives(
    model: LatentODE | Ensemble,
    cases: list[Case],
    data_state: dict[str, Any],
    n_samples: int,
    seeds: Sequence[int],
    importance: bool = False,
    chunk: int = 128,
    refine: int = 0,
    prior: AggregatePosterior | None = None,
) -> Iterator[Predictive]:
    """Every case's `Predictive` at its targets, in order, ``chunk`` cases per model call
    (lazily: a chunk's draws are freed once its predictives are consumed), case ``i``'s draws
    seeded by ``seeds[i]`` (`case_seeds`; so they do not depend on ``chunk``)."""
    if len(seeds) != len(cases):
        raise ModelInputError(f"one seed per case is needed: {len(seeds)} for {len(cases)}.")
    for lo in range(0, len(cases), chunk):
        part = cases[lo : lo + chunk]
        hist, times = [c.hist for c in part], [c.t_target for c in part]
        yield from iter_predictives(
            model,
            hist,
            times,
            data_state,
            n_samples,
            seeds[lo : lo + chunk],
            importance,
            refine,
            prior,
        )


def case_seeds(seed: int, table: SeriesTable, cases: Sequence[Case], task: str) -> list[int]:
    """One draw seed per case (`draw_seeds`): from ``seed``, the ``task`` the cases pose
    (draws for one task stay apart from another's), the case's series id and its place among
    that series' cases; so a case's draws do not depend on the other series scored with it."""
    count: dict[str, int] = {}
    keys = []
    for c in cases:
        sid = table.series_ids[c.series]
        keys.append(f"{task}\x1f{sid}\x1f{count.get(sid, 0)}")
        count[sid] = count.get(sid, 0) + 1
    return draw_seeds(seed, keys)


def _block_case(seg: Segment, t_val: float) -> Case:
    """A validation block's forecast: condition on ``seg`` before ``t_val``, score the rest."""
    before = seg.times < t_val
    hist = Segment(seg.series, float(seg.times[before][0]), seg.times[before], seg.values[before])
    return Case(seg.series, hist, seg.times[~before], seg.values[~before])


def validation_cases(table: SeriesTable, data_state: dict[str, Any]) -> tuple[list[Case], str]:
    """The fit's validation forecasts found in ``table``: ``(cases, "")`` or ``([], why not)``.

    Many series: each validation series (``data_state["val_series"]``) conditioned on its
    history and scored on its last ``holdout``, as the fit validated. One series: the
    validation block ``data_state["val_window"]``, conditioned on the history before it
    (`calibrate` reports its coverage but does not calibrate on one block). Several series
    held out in time: each series' own block (``data_state["val_windows"]``).
    """
    history = data_state.get("history")
    window = data_state.get("val_window")
    if window is not None:
        t_val, t_test = window
        seg = None
        if table.n_series == 1:
            seg = forecast_segment(table, 0, t_val, history, t_test)
        if seg is None:
            return [], "the file does not hold the fit's validation block of its one series"
        return [_block_case(seg, t_val)], ""
    windows = data_state.get("val_windows")
    if windows is not None:  # held out in time: every series' own validation block
        cases = []
        for sid in (i for i in table.series_ids if i in windows):
            t_val, t_test = windows[sid]
            seg = forecast_segment(table, table.index_of(sid), t_val, history, t_test)
            if seg is not None:
                cases.append(_block_case(seg, t_val))
        return cases, "" if cases else "the file holds none of the fit's validation blocks"
    ids = data_state.get("val_series")
    if ids is None:
        return [], "the checkpoint stores no validation series (fitted before calibration)"
    present = set(table.series_ids)
    index = [table.index_of(i) for i in ids if i in present]
    if not index:
        return [], "the file holds none of the fit's validation series"
    holdout = float(data_state.get("holdout") or 0.1)
    return held_out_cases(table, index, holdout, history, "extrapolation"), ""
