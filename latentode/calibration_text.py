"""`latentode.calibration.Calibration.describe` in words: what was calibrated on and the
factors each band is scaled by, each raise by nesting (`latentode.conformal.nested_factors`)
named with the factor it replaced."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import numpy as np

from .predictive import LEVEL, band_columns, band_levels, percent, quantile_names

if TYPE_CHECKING:  # calibration imports this module
    from .calibration import Calibration

__all__ = ["describe"]


def describe(cal: Calibration, channels: list[str]) -> str:
    """`latentode.calibration.Calibration.describe`: ``cal``'s factors in words, one line
    per band and per band whose ends were calibrated on their own (``channels``: the
    channels' names)."""
    if cal.scale is None:
        line = f"5-95% bands are the model's own, not calibrated: {cal.reason}"
        if cal.others:
            line += f" (so are the {_listed(b.level for b in cal.others)} bands)"
        return line
    w = _applied(cal, channels)
    head = (
        f"5-95% bands calibrated on {int(cal.n_values.sum())} held-out values of "
        f"{cal.n_series} validation series "
        f"(lead times up to {cal.max_lead:.4g}), where the model's own band covered "
        f"{cal.raw_coverage:.0%}"
    )
    if LEVEL in w.ends:
        mid = _spans(cal.edges, _rows(cal.scale, channels))
        lines = [f"{head}: the mean and std {mid}; q05 and q95 each on its own (below)"]
    else:
        text = w.band(LEVEL, cal.edges)
        if w.raised(LEVEL):
            text += "; the mean and std by its own factors, before nesting"
        lines = [f"{head}: {text}"]
    for b in cal.others:
        name = f"{percent(b.level)}% bands, where the model's own covered {b.raw_coverage:.0%}"
        if b.level in w.ends:
            lines.append(f"{name}: each end on its own (below)")
        elif b.scale is None:
            own = w.band(b.level, cal.edges)
            lines.append(f"{name}: the 5-95% band's factors, {b.reason}; {own}")
        else:
            lines.append(f"{name}: {w.band(b.level, b.edges)}")
    for t in cal.tails:
        low, high = w.column(0, t.level), w.column(1, t.level)
        name = (
            f"{low} and {high} each on its own (the model's own {percent(t.level)}% band "
            f"left {t.below:.1%} below it and {t.above:.1%} above)"
        )
        if t.level not in w.ends:
            lines.append(f"{name}: not, {t.reason}")
        else:
            ends = f"{low} {w.end(0, t.level, t.edges)}; {high} {w.end(1, t.level, t.edges)}"
            lines.append(f"{name}: {ends}")
    return "\n".join(lines)


def _applied(cal: Calibration, channels: list[str]) -> _Applied:
    """The factors `Calibration.factors` applies with the levels calibrated (its ``others``'
    and `LEVEL`), on the bins of every band and end together, beside each end's own."""
    assert cal.scale is not None
    levels = band_levels([b.level for b in cal.others])
    found = [cal.edges, *(b.edges for b in cal.others), *(t.edges for t in cal.tails)]
    edges = np.unique(np.concatenate(found))  # (P - 1,)
    lead = np.concatenate([[-np.inf], edges])  # (P,) each piece's first lead (`bin_index`)
    shape = (2, len(levels), len(lead), cal.scale.shape[1])
    own = np.broadcast_to(cal._own(lead, levels), shape)
    applied = np.broadcast_to(cal.factors(lead, levels), shape)  # what a forecast is scaled by
    ends = {t.level for t in cal.tails if t.lower is not None and t.upper is not None}
    return _Applied(levels, edges, applied, own, frozenset(ends), channels)


@dataclass(frozen=True)
class _Applied:
    """The factors of every band's ends as applied, in words (`Calibration.describe`).

    Attributes:
        levels: the bands, ascending (`band_levels`).
        pieces: ``[P - 1]`` the edges of every band's and end's lead-time bins together.
        applied, own: ``[2, L, P, D]`` each end's factor in each piece, after and before
            `nested_factors`.
        ends: the levels whose ends were calibrated on their own.
        channels: the channels' names.
    """

    levels: tuple[float, ...]
    pieces: np.ndarray
    applied: np.ndarray
    own: np.ndarray
    ends: frozenset[float]
    channels: list[str]

    def column(self, e: int, level: float) -> str:
        """The forecast CSV's column of end ``e`` (0 lower, 1 upper) of band ``level``."""
        names = quantile_names(self.levels)
        return names[band_columns(self.levels, level)[2 * e] - 2]  # (after mean and std)

    def raised(self, level: float) -> bool:
        """Whether nesting raised either end of band ``level`` anywhere."""
        i = self.levels.index(level)
        return bool((self.applied[:, i] > self.own[:, i]).any())

    def end(self, e: int, level: float, edges: np.ndarray) -> str:
        """End ``e`` of band ``level`` in words, by its own bins ``edges`` (split where a
        raise differs within one), each raise named."""
        i = self.levels.index(level)
        rows = []
        for p in range(len(self.pieces) + 1):
            cells = []
            for d, c in enumerate(self.channels):
                v, mine = self.applied[e, i, p, d], self.own[e, i, p, d]
                cell = f"{c} x{v:.3g}"
                if v > mine:
                    j = next(j for j in range(i) if self.own[e, j, p, d] == v)
                    by = self.levels[j]  # the band (or end) whose factor it took
                    by = self.column(e, by) if by in self.ends else f"the {percent(by)}% band"
                    a, b = _apart(v, mine)
                    cell = f"{c} x{a} (raised by nesting from {b} to {by}'s)"
                cells.append(cell)
            rows.append(", ".join(cells))
        return _spans(self.pieces, rows, edges)

    def band(self, level: float, edges: np.ndarray) -> str:
        """Band ``level`` in words: one text for both ends where they agree."""
        low, high = self.end(0, level, edges), self.end(1, level, edges)
        if low == high:
            return low
        return f"{self.column(0, level)} {low}; {self.column(1, level)} {high}"


def _listed(levels: Iterable[float]) -> str:
    """Levels as ``80% and 95%``."""
    names = [f"{percent(v)}%" for v in levels]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to 3 significant digits, or as many more (up to 9) as tell them apart."""
    for digits in range(3, 10):
        x, y = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if x != y:
            break
    return x, y


def _rows(scale: np.ndarray, channels: list[str]) -> list[str]:
    """``[B, D]`` factors in words, one text per bin: ``a x0.5, b x1``."""
    return [", ".join(f"{c} x{v:.3g}" for c, v in zip(channels, row, strict=True)) for row in scale]


def _spans(edges: np.ndarray, per_bin: list[str], keep: np.ndarray | None = None) -> str:
    """A band's factors in words (``per_bin``: one text per bin of ``edges``): ``scaled a
    x0.5`` or, by lead time, each bin's. With ``keep``: neighbouring bins whose texts are
    equal are one unless an edge of ``keep`` (the band's own bins) lies between them."""
    if keep is not None:
        cut = [j for j, e in enumerate(edges) if e in keep or per_bin[j] != per_bin[j + 1]]
        edges, per_bin = edges[cut], [per_bin[0], *(per_bin[j + 1] for j in cut)]
    if len(per_bin) == 1:
        return f"scaled {per_bin[0]}"
    e = [f"{v:.4g}" for v in edges]
    spans = [f"lead < {e[0]}"] + [f"lead {a}-{b}" for a, b in pairwise(e)]
    spans.append(f"lead >= {e[-1]}")
    bins = "; ".join(f"{f} ({span})" for f, span in zip(per_bin, spans, strict=True))
    return f"scaled by lead time, {bins}"
