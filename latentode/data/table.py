"""Validated series read from a CSV: one long sorted table plus the time encoding.

A `SeriesTable` holds S series with D channels as one long array sorted by (series, time):
``times [N]`` (float64, the model's time axis), ``values [N, D]`` (float64, NaN = missing) and
``offsets [S + 1]`` (series ``s`` is rows ``offsets[s]:offsets[s + 1]``), in file order.

A `TimeEncoding` says how the float axis maps back to the user's time column: numbers are kept
as they are; date-times become ``(timestamp - origin) / unit`` and come back rounded to the
resolution of the input (a day, a second, ...), so they round-trip exactly.

Usage::

    table = read_series_csv("data/co2_mauna_loa_weekly.csv")   # latentode.data.csv
    t, x = table.series(0)                                      # [n], [n, D]
    table.encoding.to_original(t)                               # back to datetime64 / numbers
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["TIME_UNITS", "SeriesTable", "TimeEncoding", "has_offset"]

# Nanoseconds per unit of the float time axis for date-times ("Y" is a Julian year).
TIME_UNITS: dict[str, int] = {
    "s": 10**9,
    "min": 60 * 10**9,
    "h": 3600 * 10**9,
    "D": 86400 * 10**9,
    "W": 7 * 86400 * 10**9,
    "Y": 31_557_600 * 10**9,
}
# A time of day followed by a UTC offset: "...T10:00Z", "... 10:00:00.5+01:00", "...-0500".
_OFFSET = r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|[+-]\d\d(?::?\d\d)?)$"


def has_offset(values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
    """Which date-time values carry a UTC offset (boolean ``[N]``); datetimes count by their
    time zone, strings by a ``Z`` or ``+hh:mm`` after the time of day."""
    text = pd.Series(values).astype(str).str.strip()
    return text.str.contains(_OFFSET, regex=True).to_numpy(dtype=bool)


def in_ns_range(dt: pd.Series) -> np.ndarray:
    """Which date-times (naive, NaT allowed) lie in the range of nanosecond timestamps,
    1677-09-21 to 2262-04-11, where latentode's time axis is exact (boolean ``[N]``; NaT
    counts as inside)."""
    lo, hi = pd.Timestamp.min.ceil("us"), pd.Timestamp.max.floor("us")
    return (dt.isna() | ((dt >= lo) & (dt <= hi))).to_numpy(dtype=bool)


MAX_OFFSET_NS = 2**63 - 1  # the farthest two date-times can lie apart: 292.3 years
NS_RANGE_FIX = (
    "date-times are read from 1677-09-22 to 2262-04-11, and at most 292 years apart "
    "(nanosecond timestamps); write such times as numbers (years, say) instead"
)


# Resolutions a date-time column is rounded back to, coarsest first.
_RESOLUTIONS: dict[str, int] = {"D": 86400 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


@dataclass(frozen=True)
class TimeEncoding:
    """How the float time axis maps to the file's time column.

    Attributes:
        kind: ``"numeric"`` (times are the file's numbers) or ``"datetime"``.
        unit: for date-times, a key of `TIME_UNITS`; for numbers, a free label (may be "").
        origin: for date-times, the ISO timestamp at float time 0 (naive, or UTC if ``tz``).
        resolution: for date-times, the precision of the input (``"D"``, ``"s"``, ``"ms"``,
            ``"us"``, ``"ns"``); outputs are rounded to it.
        tz: ``"UTC"`` if the input carried time-zone offsets (converted to UTC), else None.
    """

    kind: Literal["numeric", "datetime"] = "numeric"
    unit: str = ""
    origin: str | None = None
    resolution: str | None = None
    tz: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (for checkpoint hyperparameters)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TimeEncoding:
        """Inverse of `to_dict`."""
        return cls(**d)

    def _origin_ns(self) -> int:
        if self.origin is None or self.unit not in TIME_UNITS:
            raise DataError(f"a datetime encoding needs an origin and a unit; got {self}.")
        return int(pd.Timestamp(self.origin).value)

    def encode_ns(self, ns: np.ndarray) -> np.ndarray:
        """Float times from int64 nanoseconds since the epoch. The offset from the origin is
        taken in whole seconds and nanoseconds apart, so that it cannot overflow int64 (two
        date-times 292 years or more apart); float64 then holds it to about 1e-16 of its
        size (nanoseconds exactly up to 104 days, 64 ns over ten years)."""
        sec, sub = np.divmod(np.asarray(ns, dtype=np.int64), 10**9)
        osec, osub = divmod(self._origin_ns(), 10**9)
        offset = (sec - osec).astype(np.float64) * 1e9 + (sub - osub).astype(np.float64)
        return offset / TIME_UNITS[self.unit]

    def encode(self, values: Sequence[Any] | np.ndarray | pd.Series) -> np.ndarray:
        """Float times from the user's values (numbers, or ISO strings / datetimes).

        Raises:
            DataError: if a value cannot be read in this encoding.
        """
        if self.kind == "numeric":
            try:
                return np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise DataError(f"times must be numbers for this data: {e}") from e
        aware = has_offset(values)
        if aware.any() if self.tz is None else not aware.all():
            odd = int(np.flatnonzero(aware if self.tz is None else ~aware)[0])
            data, this = (
                ("carry UTC offsets", "has none") if self.tz else ("have no UTC offset", "has one")
            )
            raise DataError(
                f"this data's times {data} and {pd.Series(values).iloc[odd]!r} (value "
                f"{odd + 1}) {this}, so its instant would be a guess; write it as the data does."
            )
        try:
            ts = pd.to_datetime(pd.Series(values), format="ISO8601", utc=self.tz is not None)
        except (TypeError, ValueError) as e:
            raise DataError(f"times must be ISO date-times for this data: {e}") from e
        if self.tz is not None:
            ts = ts.dt.tz_localize(None)
        inside = in_ns_range(ts)
        if not inside.all():
            odd = int(np.flatnonzero(~inside)[0])
            raise DataError(
                f"{pd.Series(values).iloc[odd]!r} (value {odd + 1}) is outside the range of "
                f"date-times: {NS_RANGE_FIX}, and refit on such times."
            )
        return self.encode_ns(ts.astype("datetime64[ns]").to_numpy().view(np.int64))

    def latest(self) -> float:
        """The last float time that `to_original` maps to a date-time, rounding included
        (pandas' ``Timestamp.max`` is in 2262); infinite for numeric times."""
        if self.kind == "numeric":
            return math.inf
        res = _RESOLUTIONS[self.resolution or "ns"]
        # the last date-time, or the last int64 offset from the origin (292 years on)
        room = min(pd.Timestamp.max.value - self._origin_ns(), MAX_OFFSET_NS)
        last = room // res * res  # on the rounding grid
        return (last - res / 2) / TIME_UNITS[self.unit]

    def earliest(self) -> float:
        """The first float time that `to_original` maps to a date-time (pandas'
        ``Timestamp.min`` is in 1677, and an offset reaches 292 years back at most); minus
        infinity for numeric times."""
        if self.kind == "numeric":
            return -math.inf
        res = _RESOLUTIONS[self.resolution or "ns"]
        room = min(self._origin_ns() - pd.Timestamp.min.value, MAX_OFFSET_NS)
        return -((room // res * res - res / 2) / TIME_UNITS[self.unit])

    def to_original(self, t: np.ndarray | Sequence[float]) -> np.ndarray:
        """The file's time values: float64 numbers, or ``datetime64[ns]`` rounded to resolution.

        Raises:
            DataError: a time past `latest` (it would wrap around to the 17th century).
        """
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "numeric":
            return t
        if t.size and t.max() > self.latest():
            raise DataError(
                f"time {t.max():g} {self.unit} after {self.origin} is past the last "
                f"date-time that can be written: {NS_RANGE_FIX}."
            )
        if t.size and t.min() < self.earliest():
            raise DataError(
                f"time {t.min():g} {self.unit} after {self.origin} is before the first "
                f"date-time that can be written: {NS_RANGE_FIX}."
            )
        res = _RESOLUTIONS[self.resolution or "ns"]
        ns = np.rint(t * TIME_UNITS[self.unit]).astype(np.int64)  # offset from the origin
        ns = np.rint(ns / res).astype(np.int64) * res + self._origin_ns()
        return ns.view("datetime64[ns]")

    def off_resolution(self, t: np.ndarray | Sequence[float]) -> np.ndarray:
        """Which float times fall between the steps of the file's resolution (a forecast at
        noon of data in whole days): written in its format they would round to a neighbour,
        and two such times could be written as one. All False for numeric times."""
        t = np.asarray(t, dtype=np.float64)
        if self.kind == "numeric" or self.resolution in (None, "ns"):
            return np.zeros(t.shape, dtype=bool)
        steps = t * (TIME_UNITS[self.unit] / _RESOLUTIONS[self.resolution])
        return np.abs(steps - np.rint(steps)) > 1e-3

    def format(self, t: np.ndarray | Sequence[float]) -> list[str]:
        """Times as strings in the file's format: ISO dates / date-times, or numbers (whole
        ones as integers, ``102`` rather than ``102.0``; others as ``repr`` floats, which read
        back to the same float)."""
        orig = self.to_original(t)
        if self.kind == "numeric":
            whole = (orig == np.round(orig)) & (np.abs(orig) < 2.0**53)
            return [str(int(v)) if w else repr(float(v)) for v, w in zip(orig, whole, strict=True)]
        idx = pd.DatetimeIndex(orig)
        if self.resolution == "D":
            return list(idx.strftime("%Y-%m-%d"))
        if self.resolution == "s":
            out = list(idx.strftime("%Y-%m-%dT%H:%M:%S"))
        else:
            out = [ts.isoformat() for ts in idx]
        return [s + "Z" for s in out] if self.tz else out


@dataclass(frozen=True, eq=False)
class SeriesTable:
    """S series with D channels in one long array sorted by (series, time).

    Attributes:
        times: ``[N]`` float64 times, strictly increasing within each series.
        values: ``[N, D]`` float64, NaN where a channel is not observed.
        offsets: ``[S + 1]`` int64 row offsets of the series.
        series_ids: the S series ids (strings), in order of first appearance in the file.
        channels: the D channel names.
        encoding: how ``times`` map back to the file's time column.
        source: where the data came from (a path), for messages.
        dropped: ids the reader left out (fewer than two observed times), for messages.
    """

    times: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    series_ids: list[str]
    channels: list[str]
    encoding: TimeEncoding
    source: str = "<memory>"
    dropped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Refuse arrays that do not fit together (a table built by hand): shapes, offsets
        and the order of times within each series.

        Raises:
            DataError: naming the array and what it should be.
        """
        t, x, off = self.times, self.values, self.offsets
        n, d, s = len(t) if t.ndim == 1 else -1, len(self.channels), len(self.series_ids)
        problems = []
        if t.ndim != 1:
            problems.append(f"times must be [N], got shape {t.shape}")
        elif x.ndim != 2 or x.shape != (n, d):
            problems.append(f"values must be [N, D] = [{n}, {d}], got shape {x.shape}")
        if off.ndim != 1 or len(off) != s + 1:
            problems.append(f"offsets must be [S + 1] = [{s + 1}], got shape {off.shape}")
        elif off[0] != 0 or off[-1] != n or (np.diff(off) < 0).any():
            problems.append(f"offsets must rise from 0 to N = {n}, got {off[:3]}...{off[-1:]}")
        if problems:
            raise DataError(f"{self.source}: a SeriesTable's " + "; ".join(problems) + ".")
        step = np.diff(t)  # (N - 1,) within a series where the next row is not a series start
        within = np.ones(max(n - 1, 0), dtype=bool)
        within[off[1:-1][(off[1:-1] > 0) & (off[1:-1] < n)] - 1] = False
        bad = within & ~(step > 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 1
            sid = self.series_ids[int(np.searchsorted(off, row, side="right")) - 1]
            raise DataError(
                f"{self.source}: series {sid!r}: times must increase strictly within a "
                f"series; row {row} has {float(t[row])!r} after {float(t[row - 1])!r}."
            )

    @property
    def n_series(self) -> int:
        """S."""
        return len(self.series_ids)

    @property
    def n_channels(self) -> int:
        """D."""
        return len(self.channels)

    @property
    def mask(self) -> np.ndarray:
        """``[N, D]`` bool, True where observed."""
        return ~np.isnan(self.values)

    @property
    def lengths(self) -> np.ndarray:
        """``[S]`` rows per series (including rows with every channel missing)."""
        return np.diff(self.offsets)

    def _position(self, s: int) -> int:
        """``s`` as a position in ``0..S-1`` (negative counts from the end, as in a list).

        Raises:
            DataError: ``s`` is not a whole number or out of range.
        """
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise DataError(f"a series position must be an integer, got {s!r}.")
        S = self.n_series
        if not -S <= s < S:
            raise DataError(f"{self.source}: series position {s} is out of range ({S} series).")
        return int(s) % S

    def series(self, s: int) -> tuple[np.ndarray, np.ndarray]:
        """Times ``[n]`` and values ``[n, D]`` (NaN: missing; views) of series ``s`` (-1: the last).

        Raises:
            DataError: ``s`` out of range.
        """
        s = self._position(s)
        a, b = int(self.offsets[s]), int(self.offsets[s + 1])
        return self.times[a:b], self.values[a:b]

    def index_of(self, series_id: str) -> int:
        """The position of a series id.

        Raises:
            DataError: if the id is unknown.
        """
        try:
            return self.series_ids.index(str(series_id))
        except ValueError:
            raise DataError(f"{self.source}: no series {series_id!r}.") from None

    def select(self, index: Sequence[int] | np.ndarray) -> SeriesTable:
        """The table of the series at ``index`` (in that order; negative positions count
        from the end), or where a boolean ``[S]`` mask is True.

        Raises:
            DataError: a position out of range, or a mask of another length than S.
        """
        index = np.asarray(index)
        if index.dtype == bool:
            if index.shape != (self.n_series,):
                raise DataError(
                    f"a boolean selection must have one entry per series ({self.n_series}), "
                    f"got shape {index.shape}."
                )
            index = np.flatnonzero(index)
        index = [self._position(s) for s in index.reshape(-1).tolist()]
        rows = [np.arange(self.offsets[s], self.offsets[s + 1]) for s in index]
        rows_all = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        return replace(  # the same channels, encoding, source and dropped ids
            self,
            times=self.times[rows_all],
            values=self.values[rows_all],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            series_ids=[self.series_ids[s] for s in index],
            channels=list(self.channels),
        )

    def before(self, t_end: float | np.ndarray) -> SeriesTable:
        """The rows with ``times < t_end`` (series left empty are dropped); ``t_end`` is one
        time for every series or ``[S]``, one per series.

        Raises:
            DataError: ``t_end`` has another shape.
        """
        end = np.asarray(t_end, dtype=np.float64)
        if end.ndim not in (0, 1) or (end.ndim == 1 and len(end) != self.n_series):
            raise DataError(
                f"t_end must be one time or one per series ({self.n_series}), got shape "
                f"{end.shape}."
            )
        code = np.repeat(np.arange(self.n_series), self.lengths)  # (N,)
        bound = end[code] if end.ndim == 1 else float(end)
        keep = self.times < bound  # (N,)
        code = code[keep]  # (N',)
        counts = np.bincount(code, minlength=self.n_series)  # (S,)
        alive = np.flatnonzero(counts > 0)
        offsets = np.concatenate([[0], np.cumsum(counts[alive])]).astype(np.int64)
        ids = [self.series_ids[s] for s in alive]
        return replace(
            self,
            times=self.times[keep],
            values=self.values[keep],
            offsets=offsets,
            series_ids=ids,
            channels=list(self.channels),
        )

    def to_frame(self) -> pd.DataFrame:
        """Long data frame ``series_id, time, <channels>`` with times in the file's format."""
        ids = np.repeat(np.array(self.series_ids, dtype=object), self.lengths)
        frame = pd.DataFrame({"series_id": ids, "time": self.encoding.to_original(self.times)})
        for d, name in enumerate(self.channels):
            frame[name] = self.values[:, d]
        return frame
