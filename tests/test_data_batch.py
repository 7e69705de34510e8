"""Irregular batches: validation, collation round trips, interpolation / extrapolation splits."""

from __future__ import annotations

import pytest
import torch

from latentode.data import (
    DataError,
    IrregularBatch,
    Series,
    collate_series,
    split_extrapolation,
    split_interpolation,
    subsample_observations,
)

F64 = torch.float64


def _random_series(gen: torch.Generator, n_series: int = 5, D: int = 3) -> list[Series]:
    """Series of different lengths and times; every time has at least one observed feature."""
    out = []
    for i in range(n_series):
        n = 3 + 4 * i
        # a shared coarse grid makes times collide across series; the rest are unique
        t = torch.cat([torch.arange(3, dtype=F64), 3 + torch.rand(n - 3, generator=gen, dtype=F64)])
        t = t.sort().values
        mask = (torch.rand(n, D, generator=gen) < 0.6).to(F64)
        mask[torch.arange(n), torch.randint(D, (n,), generator=gen)] = 1.0
        values = torch.randn(n, D, generator=gen, dtype=F64) * mask
        out.append(Series(t, values, mask))
    return out


def test_collate_round_trips(rng: torch.Generator) -> None:
    series = _random_series(rng)
    batch = collate_series(series)
    n_distinct = len(torch.unique(torch.cat([s.times for s in series])))
    assert batch.values.shape == (5, n_distinct, 3)
    assert batch.lengths.tolist() == [len(s.times) for s in series]
    back = batch.uncollate()
    for s, r in zip(series, back, strict=True):
        assert torch.equal(s.times, r.times)
        assert torch.equal(s.values, r.values)
        assert torch.equal(s.mask, r.mask)
    # collating the round trip again gives the same batch
    again = collate_series(back)
    assert torch.equal(again.times, batch.times)
    assert torch.equal(again.values, batch.values) and torch.equal(again.mask, batch.mask)


def test_collate_nan_means_missing_and_values_zeroed() -> None:
    t = torch.tensor([0.0, 1.0, 2.0], dtype=F64)
    x = torch.tensor([[1.0, float("nan")], [2.0, 3.0], [float("nan"), float("nan")]], dtype=F64)
    batch = collate_series([(t, x, None), (t[:2] + 0.5, torch.ones(2, 2, dtype=F64))])
    assert batch.times.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert batch.mask[0, :, 0].tolist() == [1, 0, 1, 0, 0]
    assert batch.mask[0, :, 1].tolist() == [0, 0, 1, 0, 0]
    assert torch.isfinite(batch.values).all() and batch.values[0, 0, 1] == 0
    assert batch.lengths.tolist() == [2, 2]


@pytest.mark.parametrize(
    ("series", "match"),
    [
        ([], "at least one"),
        ([(torch.tensor([0.0, 0.0]), torch.zeros(2, 1))], "strictly increasing"),
        ([(torch.tensor([1.0, 0.5]), torch.zeros(2, 1))], "series 0: times must be strictly"),
        ([(torch.zeros(2), torch.zeros(2))], r"reshape\(-1, 1\)"),
        ([(torch.zeros(1), torch.zeros(1, 2)), (torch.ones(1), torch.zeros(1, 3))], "features"),
        ([(torch.arange(2.0), torch.zeros(2, 1), torch.ones(3, 1))], "series 0: mask"),
    ],
)
def test_collate_rejects_bad_series(series: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        collate_series(series)


def test_batch_validation() -> None:
    v = torch.zeros(2, 3, 1, dtype=F64)
    ones = torch.ones_like(v)
    with pytest.raises(DataError, match="strictly increasing"):
        IrregularBatch(torch.tensor([0.0, 2.0, 1.0]), v, ones)
    with pytest.raises(DataError, match="only 0 and 1"):
        IrregularBatch(torch.arange(3.0), v, ones * 0.5)
    with pytest.raises(DataError, match=r"\[T=3\]"):
        IrregularBatch(torch.arange(4.0), v, ones)
    bad = v.clone()
    bad[1, 2, 0] = float("inf")
    with pytest.raises(DataError, match="series 1 has a non-finite observed value at time 2"):
        IrregularBatch(torch.arange(3.0), bad, ones)
    # the same value under a 0 mask is fine and becomes 0; a bool mask becomes 0/1 floats
    mask = ones.bool()
    mask[1, 2, 0] = False
    batch = IrregularBatch(torch.arange(3.0), bad, mask)
    assert batch.values[1, 2, 0] == 0 and batch.mask.dtype == F64 and batch.mask.sum() == 5


def test_batch_helpers(rng: torch.Generator) -> None:
    batch = collate_series(_random_series(rng))
    sub = batch[[0, 2]]
    assert sub.batch_size == 2 and torch.equal(sub.values[1], batch.values[2])
    assert batch[1].batch_size == 1
    first = batch.subset_times(slice(0, 3))
    assert first.n_times == 3 and torch.equal(first.mask, batch.mask[:, :3])
    sparse = batch[[0]].compact()
    assert sparse.n_times == int(batch.lengths[0]) and bool(sparse.point_mask.all())
    f32 = batch.to(dtype=torch.float32)
    assert f32.values.dtype == f32.times.dtype == f32.mask.dtype == torch.float32
    assert batch.n_observed == int(batch.mask.sum())


def test_split_interpolation_partitions(rng: torch.Generator) -> None:
    batch = collate_series(_random_series(rng))
    split = split_interpolation(batch, 0.5, generator=torch.Generator().manual_seed(0))
    obs, target, held = split.observed.mask, split.target.mask, split.heldout_mask
    assert split.target is batch
    assert torch.equal(obs * held, torch.zeros_like(obs))  # disjoint
    assert torch.equal(obs + held, target)  # together: every target point
    # whole time points are kept: round(0.5 * n_i), at least 1, per series
    expected = torch.floor(batch.lengths * 0.5 + 0.5).clamp(min=1)
    assert split.observed.lengths.tolist() == expected.long().tolist()
    kept = split.observed.point_mask.unsqueeze(-1)  # (B, T, 1)
    assert torch.equal(obs, target * kept)
    # seeded: same generator seed, same split; another seed, another split
    again = split_interpolation(batch, 0.5, generator=torch.Generator().manual_seed(0))
    other = split_interpolation(batch, 0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again.observed.mask, obs)
    assert not torch.equal(other.observed.mask, obs)


def test_subsample_counts_and_errors(rng: torch.Generator) -> None:
    batch = collate_series(_random_series(rng))
    sub = subsample_observations(batch, n_observed=4, generator=rng)
    assert sub.lengths.tolist() == batch.lengths.clamp(max=4).tolist()
    with pytest.raises(DataError, match="exactly one"):
        subsample_observations(batch, 0.5, n_observed=3)
    with pytest.raises(DataError, match=r"\(0, 1\]"):
        subsample_observations(batch, 1.5)
    with pytest.raises(DataError, match="int >= 1"):
        subsample_observations(batch, n_observed=0)


def test_split_extrapolation(rng: torch.Generator) -> None:
    batch = collate_series(_random_series(rng))
    split = split_extrapolation(batch, 2.0)
    assert bool((split.observed.times < 2.0).all()) and bool((split.target.times >= 2.0).all())
    assert torch.equal(torch.cat([split.observed.times, split.target.times]), batch.times)
    assert torch.equal(torch.cat([split.observed.mask, split.target.mask], 1), batch.mask)
    assert torch.equal(split.heldout_mask, split.target.mask)
    middle = split_extrapolation(batch)  # default: middle of the time range
    t_mid = 0.5 * float(batch.times[0] + batch.times[-1])
    assert float(middle.target.times[0]) >= t_mid > float(middle.observed.times[-1])
    sel = split.select([1, 3])
    assert sel.observed.batch_size == 2 and torch.equal(sel.target.values[0], batch.values[1, 2:])
    with pytest.raises(DataError, match="one side empty"):
        split_extrapolation(batch, -1.0)


def test_eval_shards_partition_the_set_and_refuse_empty_shards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under W processes, process r scores samples r, r + W, ... (no padding: each once); a
    set smaller than W would leave a process without a batch, which is a clear error."""
    from latentode.data import sharding
    from latentode.data.errors import DataError

    assert sharding.eval_sampler(5) is None  # one process: the loader's own order
    shards = []
    for rank in range(3):
        monkeypatch.setattr(sharding, "process_rank", lambda r=rank: (r, 3))
        sampler = sharding.eval_sampler(7)
        assert sampler is not None and len(sampler) == len(list(sampler))
        shards.append(list(sampler))
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    with pytest.raises(DataError, match=r"the val split has 2 samples for 3 processes"):
        sharding.eval_sampler(2, "the val split")
    with pytest.raises(DataError, match=r"the val split has 1 series for 3 processes"):
        sharding.eval_sampler(1, "the val split", "series")
    with pytest.raises(DataError, match=r"the test sample has 1 sample for 3 processes"):
        sharding.eval_sampler(1, "the test sample")
