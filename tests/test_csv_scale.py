"""The CSV reader on a generated many-series file, and the benchmark's generator itself.

The file comes from `benchmarks/csv_read_benchmark.py` (the 1,000,000-row benchmark of issue 6),
at 20,000 rows / 2,000 series so the test stays fast: shuffled rows, irregular lengths, 10%
empty cells. The read must give back exactly the generated series, sorted by time.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from latentode.data.csv import read_series_csv
from latentode.data.table import SeriesTable

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "csv_read_benchmark.py"
ROWS, SERIES = 20_000, 2_000


def _benchmark() -> ModuleType:
    """The benchmark script as a module (loaded by path: benchmarks/ is not a package)."""
    if str(BENCHMARK.parent) not in sys.path:  # its sibling modules, as when run as a script
        sys.path.insert(0, str(BENCHMARK.parent))
    spec = importlib.util.spec_from_file_location("csv_read_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _benchmark()


def _expected(frame: pd.DataFrame) -> pd.DataFrame:
    """The generated rows in the reader's order: series by first appearance, then time."""
    first = {s: i for i, s in enumerate(pd.unique(frame["series_id"]))}
    key = frame["series_id"].map(first).to_numpy()
    order = np.lexsort((frame["_t"].to_numpy(), key))
    return frame.iloc[order].reset_index(drop=True)


def _check_table(table: SeriesTable, frame: pd.DataFrame) -> pd.DataFrame:
    """Counts, order and values of ``table`` against the generated ``frame``."""
    exp = _expected(frame)
    assert table.n_series == SERIES
    assert len(table.times) == ROWS
    assert table.series_ids == list(pd.unique(frame["series_id"]))
    lengths = frame["series_id"].value_counts()
    assert table.lengths.tolist() == lengths[table.series_ids].tolist()
    code = np.repeat(np.arange(SERIES), table.lengths)  # (N,)
    same = np.diff(code) == 0
    assert (np.diff(table.times)[same] > 0).all()  # strictly increasing within each series
    assert table.channels == list(bench.CHANNELS)
    missing = np.isnan(table.values).sum(axis=0)
    assert missing.tolist() == [int(frame[c].isna().sum()) for c in bench.CHANNELS]
    values = exp[list(bench.CHANNELS)].to_numpy()
    np.testing.assert_allclose(table.values, values, rtol=0, atol=1e-9)  # NaN where NaN
    return exp


def test_generator_shape_and_shuffle() -> None:
    frame = bench.generate_frame(ROWS, SERIES, "datetime", seed=0)
    assert list(frame.columns) == ["series_id", "time", *bench.CHANNELS]
    assert len(frame) == ROWS and frame["series_id"].nunique() == SERIES
    lengths = frame["series_id"].value_counts()
    assert lengths.sum() == ROWS and lengths.min() >= 4 and lengths.max() <= 16  # 0.4-1.6 x 10
    share = frame[list(bench.CHANNELS)].isna().to_numpy().mean(axis=0)
    assert np.all(np.abs(share - 0.1) < 0.01)
    assert not frame["series_id"].is_monotonic_increasing  # shuffled across series
    in_order = frame.groupby("series_id")["time"].agg(lambda t: t.is_monotonic_increasing)
    assert in_order.mean() < 0.1  # and within series
    again = bench.generate_frame(ROWS, SERIES, "datetime", seed=0)
    pd.testing.assert_frame_equal(frame, again)  # seeded


def test_series_lengths_sum_exactly() -> None:
    rng = np.random.default_rng(1)
    lengths = bench.series_lengths(1_000_000, 20_000, rng)
    assert lengths.sum() == 1_000_000 and lengths.min() >= 20 and lengths.max() <= 80
    assert sorted(bench.series_lengths(7, 3, rng).tolist()) == [2, 2, 3]  # lengths 2-3
    with pytest.raises(ValueError, match="two rows per series"):
        bench.series_lengths(5, 3, rng)


def test_read_generated_datetimes(tmp_path: Path) -> None:
    frame = bench.generate_frame(ROWS, SERIES, "datetime", seed=3)
    size = bench.write_csv(frame, tmp_path / "series.csv")
    assert size == (tmp_path / "series.csv").stat().st_size > 0
    table = read_series_csv(tmp_path / "series.csv")
    frame["_t"] = pd.to_datetime(frame["time"]).to_numpy().view(np.int64)
    exp = _check_table(table, frame)
    assert table.encoding.kind == "datetime" and table.encoding.resolution == "s"
    back = table.encoding.to_original(table.times)  # datetime64[ns], rounded to the second
    assert (back == pd.to_datetime(exp["time"]).to_numpy()).all()
    assert table.encoding.format(table.times[:3]) == exp["time"].iloc[:3].tolist()


def test_read_generated_floats(tmp_path: Path) -> None:
    frame = bench.generate_frame(ROWS, SERIES, "float", seed=4)
    bench.write_csv(frame, tmp_path / "series.csv")
    table = read_series_csv(tmp_path / "series.csv")
    frame["_t"] = frame["time"].to_numpy()
    exp = _check_table(table, frame)
    assert table.encoding.kind == "numeric"
    np.testing.assert_allclose(table.times, exp["time"].to_numpy(), rtol=0, atol=1e-9)
