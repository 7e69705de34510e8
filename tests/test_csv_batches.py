"""From a series table to batches: normalisation, windows, splits, conditioning cuts,
alignment at the last observation and thinning of the training history."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from csv_data_helpers import DATA

from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError
from latentode.data.prep import (
    collate_segments,
    denormalise,
    denormalise_std,
    fit_normalisation,
    holdout_bounds,
    make_windows,
    normalise,
    split_at,
    split_series,
    whole_series,
)
from latentode.data.table import SeriesTable, TimeEncoding


def _table(n_series: int = 6, seed: int = 0) -> SeriesTable:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 12, n_series)
    times = np.concatenate([np.sort(rng.uniform(0, 10, n)) for n in lengths])
    values = rng.normal(3.0, 2.0, (len(times), 2))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[:, 0] = np.where(np.isnan(values).all(axis=1), 1.0, values[:, 0])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = [f"s{i}" for i in range(n_series)]
    return SeriesTable(times, values, offsets, ids, ["u", "v"], TimeEncoding())


def test_normalisation_fits_training_only_and_inverts() -> None:
    table = _table()
    train, _, _ = split_series(table.n_series, 0.2, 0.2, seed=1)
    norm = fit_normalisation(table.select(train))
    sub = table.select(train).values
    np.testing.assert_allclose(norm["mean"], np.nanmean(sub, axis=0), rtol=1e-12)
    np.testing.assert_allclose(norm["std"], np.nanstd(sub, axis=0), rtol=1e-12)
    assert norm["mean"] != fit_normalisation(table)["mean"]
    assert all(type(v) is float for v in norm["mean"] + norm["std"])
    z = normalise(table.values, norm)
    np.testing.assert_allclose(np.nanmean(normalise(sub, norm), axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(denormalise(z, norm), table.values, rtol=1e-14, atol=1e-14)
    zt = torch.from_numpy(z)
    np.testing.assert_allclose(denormalise(zt, norm).numpy(), table.values, rtol=1e-14)
    s = denormalise_std(torch.ones(2, dtype=torch.float64), norm)
    np.testing.assert_allclose(s.numpy(), norm["std"])
    const = SeriesTable(
        np.arange(3.0), np.ones((3, 1)), np.array([0, 3]), ["c"], ["k"], TimeEncoding()
    )
    assert fit_normalisation(const)["std"] == [1.0]


def test_windows_cover_with_length_and_stride() -> None:
    t = np.arange(0.0, 50.0, 0.5)
    table = SeriesTable(t, np.sin(t)[:, None], np.array([0, len(t)]), ["x"], ["y"], TimeEncoding())
    wins = make_windows(table, window=10.0, stride=3.0)
    starts = np.array([w.t0 for w in wins])
    np.testing.assert_allclose(np.diff(starts[:-1]), 3.0)
    assert starts[-1] == pytest.approx(49.5 - 10.0)
    assert all(w.times[-1] - w.t0 <= 10.0 for w in wins)
    assert all(len(w.times) == 21 for w in wins)  # 10 units at 0.5 spacing, both ends
    covered = np.unique(np.concatenate([w.times for w in wins]))
    np.testing.assert_array_equal(covered, t)
    short = make_windows(table, window=100.0, stride=3.0)
    assert len(short) == 1 and len(short[0].times) == len(t)


def test_series_splits_seeded_and_disjoint() -> None:
    a = split_series(50, 0.1, 0.2, seed=3)
    assert a == split_series(50, 0.1, 0.2, seed=3) != split_series(50, 0.1, 0.2, seed=4)
    tr, va, te = (set(p) for p in a)
    assert (len(tr), len(va), len(te)) == (35, 5, 10)
    assert tr | va | te == set(range(50)) and not (tr & va or tr & te or va & te)
    assert holdout_bounds(0.0, 10.0, 2.0) == [6.0, 8.0]
    assert holdout_bounds(0.0, 10.0, 0.25) == [5.0, 7.5]


def test_split_at_conditions_before_and_scores_after() -> None:
    table = _table()
    segs = whole_series(table)
    batch = collate_segments(segs, fit_normalisation(table), dtype=torch.float64)
    assert float(batch.times[0]) == 0.0 and batch.batch_size == table.n_series
    t_split = torch.full((batch.batch_size,), 2.0, dtype=torch.float64)
    for score in ("future", "all"):
        split = split_at(batch, t_split, score=score)
        before = (batch.times < 2.0)[None, :, None]
        assert bool((split.observed.mask[:, ~before[0, :, 0]] == 0).all())
        torch.testing.assert_close(split.observed.mask + split.heldout_mask, batch.mask)
    assert split_at(batch, t_split, "future").target.n_observed == int(split.heldout_mask.sum())
    # A float32 grid time equal to its float64 split time is forecast, not conditioned on:
    # (2001 - 1990) / 5.1 rounds down in float32 and once compared below the split.
    seg = whole_series(table)[0]
    t = np.array([1990.0, 1995.0, 2001.0, 2002.0])
    one = type(seg)(0, 1990.0, t, np.ones((4, table.n_channels)))
    small = collate_segments([one], time_scale=5.1)  # float32
    split = split_at(small, torch.tensor([(2001.0 - 1990.0) / 5.1], dtype=torch.float64))
    assert split.observed.point_mask[0].tolist() == [True, True, False, False]
    assert split.heldout_mask[0].any(-1).tolist() == [False, False, True, True]


def test_table_before_cuts_each_series_at_its_own_time() -> None:
    table = _table(3)
    cuts = np.array([5.0, -1.0, 20.0])  # series 1 is left empty and dropped
    before = table.before(cuts)
    assert before.series_ids == ["s0", "s2"]
    for new, old in ((0, 0), (1, 2)):
        t, x = table.series(old)
        np.testing.assert_array_equal(before.series(new)[0], t[t < cuts[old]])
        np.testing.assert_array_equal(before.series(new)[1], x[t < cuts[old]])
    np.testing.assert_array_equal(table.before(5.0).times, table.times[table.times < 5.0])


def test_data_module_aligns_batches_at_the_last_conditioning_time_for_anchor_last() -> None:
    """``align_to("last")``: the same rows and draws as the default alignment, each row's
    times shifted so that its last conditioning observation sits at 0."""

    def batches(anchor: str) -> list:
        dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, batch_size=16)
        dm.setup()
        dm.align_to(anchor)  # type: ignore[arg-type]
        return [next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))]

    for start, end in zip(batches("first"), batches("last"), strict=True):
        assert start.observed.batch_size == end.observed.batch_size == 16
        for b in range(16):
            seen_s, seen_e = start.observed.point_mask[b], end.observed.point_mask[b]
            ts, te = start.observed.times[seen_s], end.observed.times[seen_e]
            assert float(te[-1]) == 0.0  # the anchor of every row
            torch.testing.assert_close(te, ts - ts[-1])
            torch.testing.assert_close(
                end.observed.values[b][seen_e], start.observed.values[b][seen_s]
            )
            fut_s, fut_e = start.heldout_mask[b].any(-1), end.heldout_mask[b].any(-1)
            torch.testing.assert_close(end.target.times[fut_e], start.target.times[fut_s] - ts[-1])
            assert bool((end.target.times[fut_e] > 0).all())
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"))
    with pytest.raises(DataError, match="anchor must be 'first' or 'last'"):
        dm.align_to("middle")  # type: ignore[arg-type]


def test_train_keep_thins_the_conditioned_times_and_scores_the_dropped_ones() -> None:
    """``train_keep=0.4``: the same segments and cuts as ``train_keep=1``; each row keeps a
    subset of its conditioned times (on average 0.7 of them: rates uniform on [0.4, 1]),
    always its last one (the anchor at 0), and the dropped times join the held-out mask
    while the target keeps everything. Validation batches are not thinned."""

    def first_batches(keep: float) -> tuple:
        dm = CSVDataModule(
            str(DATA / "fertility_worldbank.csv"), holdout=10.0, batch_size=64, train_keep=keep
        )
        dm.setup()
        dm.align_to("last")
        return next(iter(dm.train_dataloader())), next(iter(dm.val_dataloader()))

    (full, val_full), (thin, val_thin) = first_batches(1.0), first_batches(0.4)
    torch.testing.assert_close(thin.target.values, full.target.values)
    torch.testing.assert_close(thin.target.mask, full.target.mask)
    assert bool((thin.observed.mask <= full.observed.mask).all())
    seen_full, seen_thin = full.observed.point_mask, thin.observed.point_mask  # (B, T)
    at_zero = thin.observed.times == 0.0
    assert bool((seen_thin[:, at_zero] & seen_full[:, at_zero]).all())  # the last is kept
    share = seen_thin.sum(1).double() / seen_full.sum(1).double()  # (64,)
    assert 0.6 < float(share.mean()) < 0.8 and float(share.min()) >= 0.3
    dropped = full.observed.mask * (1.0 - thin.observed.mask)
    torch.testing.assert_close(thin.heldout_mask, full.heldout_mask + dropped)
    torch.testing.assert_close(val_thin.observed.mask, val_full.observed.mask)
    with pytest.raises(DataError, match="0 < train_keep <= 1"):
        CSVDataModule(str(DATA / "fertility_worldbank.csv"), train_keep=0.0)
