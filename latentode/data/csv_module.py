"""`CSVDataModule`: a user's CSV of irregular series as `Split` batches for the latent ODE.

``setup`` reads and validates the file (`read_series_csv`), divides it, fits the per-channel
normalisation on the training part only, and cuts training segments:

- one series (e.g. the CO2 record): the last two blocks of ``holdout`` time units are the
  validation and test forecasts; training windows of ``window`` units every ``stride`` are cut
  from the time before them;
- many series: a seeded share of the series is held out for validation / test, where each is
  conditioned on its history and scored on its last ``holdout`` units; training series are
  used whole, or cut into windows when ``window`` is set;
- a few series (``split="time"``, which ``"auto"`` picks when the share of series held out
  would round to none): the last two ``holdout`` blocks of every series are its validation
  and test forecasts, and training uses each series before them.

Training batches condition each segment on a random first part (a fraction drawn from
``train_condition`` per segment and batch) and score the whole segment: the model learns to
reconstruct what it saw and to forecast from histories of varying length. Validation and test
splits are fixed and score only the forecast. Times in a batch are ``(t - t0) / time_scale``
with ``t0`` each segment's first observed time; for a latent ODE anchored at the last
observation (``anchor: last``, which `LatentODESystem` passes on through `align_to` at setup)
``t0`` is instead each segment's last conditioning time, so that every series' latent state
is inferred at its own latest observation.

`channels`, `time_encoding`, `normalisation` and `time_scale` are plain values for the
checkpoint (`data_state` gathers them), so a forecast can be put back in the user's units.
The division is in `latentode.data.csv_split`, the checks in `latentode.data.csv_checks`.

Usage::

    dm = CSVDataModule("data/co2_mauna_loa_weekly.csv", time_unit="Y", window=6, holdout=2)
    dm.setup()
    split = next(iter(dm.train_dataloader()))   # Split of IrregularBatch, values [B, T, 1]
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from . import csv_checks
from .batch import Split
from .csv import csv_columns, read_series_csv
from .csv_split import divide_in_time, divide_series, divide_single, split_summary
from .errors import DataError
from .prep import (
    Segment,
    collate_segments,
    fit_normalisation,
    segment_spans,
    split_at,
    value_range,
)
from .resumable import ResumableLoader
from .sharding import eval_loader
from .table import SeriesTable

__all__ = ["CSVDataModule"]


class CSVDataModule(pl.LightningDataModule):
    """Serve `Split` batches from a long-format CSV of irregular series.

    Args:
        path: the CSV file.
        time_column, series_column, channels, time_unit, duplicates: as `read_series_csv`.
        window: training window length in time units (None: one series is cut into windows of
            three ``holdout`` blocks; many series are used whole).
        stride: distance between window starts (None: ``window / 10``; unused, with a
            warning, for several series without a window).
        holdout: length of each held-out forecast in time units (a value below 1 is a fraction
            of the series' time span; setup logs the lengths it comes to).
        history: time units of history conditioned on at validation / test (None: ``window -
            holdout`` for windows when positive, else everything before the forecast).
        val_fraction, test_fraction: shares of the series held out (``split="series"``).
        split: how several series are held out. ``"series"``: whole series, ``val_fraction``
            and ``test_fraction`` of them, forecast over their last ``holdout``; ``"time"``:
            the last two ``holdout`` blocks of every series (validation, then test; each
            conditioned on what comes before it), training on what comes before both, as for
            one series; ``"auto"``: ``"series"`` unless it would leave no validation or no
            test series (fewer than 6 series with the default fractions), then ``"time"``.
            One series is always held out in time.
        train_condition: range of the conditioned fraction of each training segment.
        train_keep: thin the training histories: each segment keeps a share of its
            conditioned times drawn uniformly from ``[train_keep, 1]`` per segment and batch
            (its last one always), and the dropped ones are scored as reconstruction. The
            encoder then sees sparser and more uneven histories than the file's, and the
            model learns to fill gaps (1: every conditioned time is kept). `configs/csv.yaml`
            sets 0.5: on the fertility data it forecast from half-observed histories 1.9x
            better and filled gaps 8.5x better, the ordinary forecast unchanged or better
            (`reports/csv_fertility.md`, session 26).
        time_scale: time units per model time unit (None: chosen so that the median training
            segment spans 10 model time units, whatever the file's time unit).
        normalise: fit per-channel mean / std on the training part (else values as they are).
        transform: channels to model on a log scale, ``{"sales": "log"}`` (values > 0) or
            ``"log1p"`` (values >= 0, such as counts): for positive quantities, whose forecast
            bands then stay positive and widen with the level; or on a logit scale,
            ``"logit"`` (values strictly between 0 and 1) or ``"logit(0, 100)"`` (strictly
            between the bounds given): for shares and percentages, whose bands then stay
            between the bounds (`latentode.data.transforms`).
            Applied before the normalisation; kept in the checkpoint, so ``predict`` and
            ``test`` apply it too.
        batch_size: segments per batch.
        seed: seeds the series division and the training draws.
        num_workers: DataLoader workers: 0 (the training draws are made while collating;
            `check_num_workers`).
    """

    def __init__(
        self,
        path: str,
        time_column: str = "time",
        series_column: str | None = "series_id",
        channels: list[str] | None = None,
        time_unit: str = "D",
        duplicates: Literal["error", "mean"] = "error",
        window: float | None = None,
        stride: float | None = None,
        holdout: float = 0.1,
        history: float | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split: Literal["auto", "series", "time"] = "auto",
        train_condition: tuple[float, float] = (0.5, 0.8),
        train_keep: float = 1.0,
        time_scale: float | None = None,
        normalise: bool = True,
        transform: dict[str, str | None] | None = None,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        csv_checks.check_options(
            path,
            holdout,
            val_fraction,
            test_fraction,
            split,
            train_condition,
            train_keep,
            time_scale,
            batch_size,
            num_workers,
        )
        csv_checks.check_cuts(window, stride, history)
        lo, hi = train_condition
        self.save_hyperparameters()
        self.path, self.time_unit, self.duplicates = path, time_unit, duplicates
        self.time_column, self.series_column = time_column, series_column
        self.channel_names = channels
        self.window, self.stride, self.holdout, self.history = window, stride, holdout, history
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split = split
        self.train_condition = (float(lo), float(hi))
        self.train_keep = float(train_keep)
        self.time_scale = None if time_scale is None else float(time_scale)
        self.use_normalisation, self.batch_size = normalise, batch_size
        self.transform = dict(transform or {})
        self.seed, self.num_workers = seed, num_workers
        self.table: SeriesTable | None = None
        self.train_segments: list[Segment] = []
        self.val_segments: list[Segment] = []
        self.test_segments: list[Segment] = []
        self._norm: dict[str, Any] | None = None
        self._range: dict[str, list[float]] = {}
        self.anchor: Literal["first", "last"] = "first"  # the model's; see `align_to`
        self.eval_history: float | None = history  # history conditioned on when forecasting
        self.test_series: list[str] | None = None  # held-out series ids (many series)
        self.val_series: list[str] | None = None  # validation series ids (many series)
        self.val_window: list[float] | None = None  # [t_val, t_test] (one series)
        self.val_windows: dict[str, list[float]] | None = None  # the same per series (time)
        self._train_gen = torch.Generator()
        self._shuffle_gen = torch.Generator()

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str | None = None) -> None:
        """Read and validate the file, divide it and fit the normalisation (once)."""
        if self.table is not None:
            return
        table = read_series_csv(
            self.path,
            time_column=self.time_column,
            series_column=self.series_column,
            channels=self.channel_names,
            time_unit=self.time_unit,
            duplicates=self.duplicates,
            transform=self.transform,
        )
        cut = (self.window, self.stride, self.holdout, self.history)  # as given
        if table.n_series == 1:
            division = divide_single(self.path, table, *cut)
        elif self.split_mode(table.n_series) == "time":
            division = divide_in_time(self.path, table, *cut)
        else:
            division = divide_series(
                self.path, table, *cut, self.val_fraction, self.test_fraction, self.seed
            )
        csv_checks.note_fractional_holdout(self.path, table, self.holdout, division)
        train = division.train
        self.train_segments = division.train_segments
        self.val_segments, self.test_segments = division.val_segments, division.test_segments
        self.eval_history = division.eval_history
        self.test_series, self.val_series = division.test_series, division.val_series
        self.val_window, self.val_windows = division.val_window, division.val_windows
        self._norm = None
        csv_checks.check_training_channels(self.path, table, train)
        if self.use_normalisation or self.transform:
            self._norm = fit_normalisation(
                train, transform=self.transform, centre=self.use_normalisation
            )
        self._range = value_range(train)
        csv_checks.check_training_part(self.path, table, self._range, self.train_segments)
        if self.time_scale is None:
            span = float(segment_spans(self.train_segments).median())
            self.time_scale = span / 10 if span > 0 else 1.0
        self._train_gen = torch.Generator().manual_seed(self.seed * 10 + 1)
        self._shuffle_gen = torch.Generator().manual_seed(self.seed * 10 + 4)
        self.table = table

    def generators(self) -> dict[str, torch.Generator]:
        """The generators training draws from (the conditioned fractions, the shuffle); a
        checkpoint stores their states so that a resumed fit repeats the uninterrupted one."""
        return {"fractions": self._train_gen, "shuffle": self._shuffle_gen}

    def split_mode(self, n_series: int) -> Literal["series", "time"]:
        """How ``n_series`` (> 1) series are held out (``split``, with ``"auto"`` resolved)."""
        if self.split != "auto":
            return self.split
        few = round(self.val_fraction * n_series) < 1 or round(self.test_fraction * n_series) < 1
        return "time" if few else "series"

    # ------------------------------------------------------------------ what a model keeps
    def _ready(self) -> SeriesTable:
        self.setup()
        if self.table is None:  # setup() always sets it; this narrows the type
            raise DataError("the data module has no data; call setup() first.")
        return self.table

    @property
    def channels(self) -> list[str]:
        """The channel names, in the order of the value dimension."""
        return list(self._ready().channels)

    @property
    def time_encoding(self) -> dict[str, Any]:
        """The `TimeEncoding` of the file as a plain dict."""
        return self._ready().encoding.to_dict()

    @property
    def normalisation(self) -> dict[str, Any] | None:
        """The per-channel transform, mean and std fitted on the training part (None with
        neither a normalisation nor a transform)."""
        self._ready()
        return None if self._norm is None else dict(self._norm)

    @property
    def value_range(self) -> dict[str, list[float]]:
        """The per-channel least and greatest value of the training part (`value_range`)."""
        self._ready()
        return dict(self._range)

    def describe(self) -> str:
        """One line on what the fit reads: the file's series and observed times, the channels
        modelled and the columns left out, and how the series are held out."""
        table = self._ready()
        n_obs = int(table.mask.any(axis=-1).sum())
        used = {self.time_column, self.series_column, *table.channels}
        left = [c for c in csv_columns(self.path) if c.strip() not in used]
        split = split_summary(
            table.n_series,
            self.holdout,
            self.val_series,
            self.test_series,
            self.val_window,
            self.val_windows,
            encoding=table.encoding,
        )
        channels = ", ".join(map(repr, table.channels))
        return (
            f"{self.path}: {table.n_series} series, {n_obs} observed times; channels "
            f"modelled: {channels}"
            + (f"; columns not read: {', '.join(map(repr, left))}" if left else "")
            + f"; {split}."
        )

    def data_state(self) -> dict[str, Any]:
        """Everything a checkpoint needs to map model outputs back to the user's file."""
        return {
            "channels": self.channels,
            "time_encoding": self.time_encoding,
            "normalisation": self.normalisation,
            "value_range": self.value_range,
            "time_scale": self.time_scale,
            "time_column": self.time_column,
            "series_column": self.series_column,
            "duplicates": self.duplicates,
            "history": self.eval_history,
            "holdout": self.holdout,
            "test_series": self.test_series,
            "val_series": self.val_series,
            "val_window": self.val_window,
            "val_windows": self.val_windows,
        }

    def align_to(self, anchor: Literal["first", "last"]) -> None:
        """Align the batches for a latent ODE anchored at ``anchor`` (`LatentODEConfig`):
        ``"first"`` (default) puts every segment's first time at 0, ``"last"`` its last
        conditioning time. `LatentODESystem.setup` calls this with its model's anchor."""
        if anchor not in ("first", "last"):
            raise DataError(f"anchor must be 'first' or 'last', got {anchor!r}.")
        self.anchor = anchor

    # ------------------------------------------------------------------ batches
    def _collate(self, segs: list[Segment], cuts: Tensor, score: Literal["future", "all"]) -> Split:
        """``segs`` conditioned on their times before ``t0 + cuts`` (``[B]``, user units)."""
        if self.anchor == "first":
            batch = collate_segments(segs, self._norm, self.time_scale)
            return split_at(batch, (cuts / self.time_scale).clamp(min=1e-12), score=score)
        ends = [g.t0 + float(c) for g, c in zip(segs, cuts, strict=True)]
        origins = [_last_before(g, e) for g, e in zip(segs, ends, strict=True)]
        batch = collate_segments(segs, self._norm, self.time_scale, origins=origins)
        rel = torch.tensor([e - o for e, o in zip(ends, origins, strict=True)])  # (B,) > 0
        return split_at(batch, (rel.double() / self.time_scale).clamp(min=1e-12), score=score)

    def _collate_train(self, index: list[int]) -> Split:
        segs = [self.train_segments[i] for i in index]
        lo, hi = self.train_condition
        frac = lo + (hi - lo) * torch.rand(len(segs), generator=self._train_gen)  # (B,)
        split = self._collate(segs, frac.double() * segment_spans(segs), "all")
        return split if self.train_keep == 1 else self._thin(split)

    def _thin(self, split: Split) -> Split:
        """Drop conditioned times at a per-segment rate (``train_keep``); the last stays."""
        obs = split.observed
        point = obs.point_mask  # (B, T)
        B, T = point.shape
        gen = self._train_gen
        rate = self.train_keep + (1 - self.train_keep) * torch.rand(B, 1, generator=gen)
        keep = torch.rand(B, T, generator=gen) < rate  # (B, T)
        last = (point * torch.arange(1, T + 1)).argmax(dim=1)  # (B,) last conditioned time
        keep[torch.arange(B), last] = True
        observed = obs.with_mask(obs.mask * keep.unsqueeze(-1).to(obs.mask.dtype))
        return Split(observed, split.target, split.target.mask * (1.0 - observed.mask))

    def _collate_eval(self, all_segs: list[Segment], index: list[int]) -> Split:
        segs = [all_segs[i] for i in index]
        cuts = torch.tensor([(g.t_split or 0.0) - g.t0 for g in segs], dtype=torch.float64)
        return self._collate(segs, cuts, "future")

    def train_dataloader(self) -> DataLoader:
        """Shuffled training segments; a new conditioned fraction for every batch."""
        self._ready()
        return ResumableLoader(
            range(len(self.train_segments)),
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._shuffle_gen,
            collate_fn=self._collate_train,
            num_workers=self.num_workers,
        )

    def _eval_loader(self, segs: list[Segment], stage: str) -> DataLoader:
        self._ready()
        if not segs:
            raise csv_checks.no_forecast_error(self, stage)
        return eval_loader(
            range(len(segs)),
            self.batch_size,
            f"{self.path}: the {stage} split",
            "series",
            collate_fn=partial(self._collate_eval, segs),
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """The fixed validation forecasts."""
        return self._eval_loader(self.val_segments, "val")

    def test_dataloader(self) -> DataLoader:
        """The fixed test forecasts."""
        return self._eval_loader(self.test_segments, "test")

    def predict_dataloader(self) -> DataLoader:
        """The test forecasts again (for figures)."""
        return self.test_dataloader()


def _last_before(seg: Segment, t: float) -> float:
    """The segment's last time before ``t`` (its first time if none is)."""
    before = seg.times[seg.times < t]
    return float(before[-1]) if len(before) else seg.t0
