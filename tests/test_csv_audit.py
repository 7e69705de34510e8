"""Unusual input to ``latentode fit`` that was read wrong, passed NaN on, failed late with
the wrong advice, or replaced a user's file: each is now refused (or warned about) with a
message that names the file, the option or the series, and what to change."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import pytest
from cli_helpers import ROOT, run_cli

from latentode.data.csv import CSVDataError, read_series_csv
from latentode.data.csv_module import CSVDataModule
from latentode.data.errors import DataError
from latentode.data.prep import split_series


def _write(tmp_path: Path, text: str, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_channel_observed_only_in_held_out_parts_is_named(tmp_path: Path) -> None:
    """Its normalisation was NaN and the message said its values were too large to compute
    (or, with normalise false, the fit went on with a NaN value range)."""
    test_series = split_series(10, 0.1, 0.1, 0)[2]  # the series CSVDataModule tests on
    rows = "".join(
        f"s{s},{t},{t + s},{t * 0.5 if s in test_series else ''}\n"
        for s in range(10)
        for t in range(8)
    )
    many = _write(tmp_path, "series_id,time,x,y\n" + rows)
    one = _write(
        tmp_path,
        "series_id,time,x,y\n" + "".join(f"a,{t},{t},{t if t >= 18 else ''}\n" for t in range(20)),
        "one.csv",
    )
    for path, normalise in ((many, True), (many, False), (one, True), (one, False)):
        with pytest.raises(DataError) as err:
            CSVDataModule(str(path), normalise=normalise).setup()
        assert str(err.value) == (
            f"{path}: channel(s) ['y'] have no observed value in the training part: they are "
            "observed only in the series or the times held out for validation and test, so "
            "the model cannot learn their scale; give them values in more series (or earlier "
            "times), or leave them out of the channels (--data.init_args.channels [...] lists "
            "the ones to model)."
        )
    assert CSVDataModule(str(one), channels=["x"]).setup() is None  # without it: fine


def _gap_rows(series: list[str], gapped: set[str]) -> str:
    """Ten whole times per series; a gapped series' last time is 1000 instead of 9."""
    return "".join(
        f"{s},{1000 if s in gapped and t == 9 else t},{t * 0.1 + k}\n"
        for k, s in enumerate(series)
        for t in range(10)
    )


def test_an_empty_validation_block_is_explained(tmp_path: Path) -> None:
    """A gap before the last observation left the validation block empty: the fit failed at
    its first validation with "no val series; raise val_fraction or holdout", advice that
    does not apply to blocks held out in time (and a series not scored said nothing)."""
    header = "series_id,time,v\n"
    one = CSVDataModule(str(_write(tmp_path, header + _gap_rows(["a"], {"a"}), "one.csv")))
    one.setup()
    with pytest.raises(DataError) as err:
        one.val_dataloader()
    fix = (
        "holds no observed time, or none is observed before it within the history; the "
        "observations there are too far apart (a gap). Give a holdout in time units (a value "
        ">= 1) whose two blocks each hold observations with some before them, or a longer "
        "--data.init_args.history."
    )
    assert str(err.value) == (
        f"{one.path}: no validation forecast: the validation block (holdout 0.1) at the end "
        f"of the series {fix}"
    )
    every = CSVDataModule(
        str(_write(tmp_path, header + _gap_rows(["a", "b", "c"], {"a", "b", "c"})))
    )
    every.setup()
    with pytest.raises(DataError) as err:
        every.val_dataloader()
    assert str(err.value) == (
        f"{every.path}: no validation forecast: the validation block (holdout 0.1) at the end "
        f"of any of the 3 series {fix}"
    )
    some = CSVDataModule(str(_write(tmp_path, header + _gap_rows(["a", "b", "c"], {"a"}), "s.csv")))
    with pytest.warns(UserWarning) as seen:
        some.setup()
    assert [str(w.message) for w in seen] == [
        f"{some.path}: 1 series have no observation in their validation block, or none "
        "before it within the history, and are not scored in it: 'a'."
    ]
    assert len(some.val_segments) == 2 and len(some.test_segments) == 3


def test_too_few_series_to_hold_out_whole_names_the_fraction(tmp_path: Path) -> None:
    path = _write(tmp_path, "series_id,time,v\n" + _gap_rows(["a", "b", "c"], set()))
    data = CSVDataModule(str(path), split="series")
    data.setup()
    with pytest.raises(DataError) as err:
        data.val_dataloader()
    assert str(err.value) == (
        f"{path}: no val series: val_fraction 0.1 of 3 series rounds to none; give "
        "--data.init_args.val_fraction 0.333 or more, or --data.init_args.split time (the "
        "last holdout blocks of every series)."
    )
    assert round(0.333 * 3) == 1  # the advice works


@pytest.mark.parametrize(
    ("option", "value"),
    [("stride", 0.0), ("history", -5.0), ("window", 0.0), ("window", float("nan"))],
)
def test_windows_strides_and_histories_must_be_positive(
    tmp_path: Path, option: str, value: float
) -> None:
    """A stride of 0 was silently the default (window / 10); a negative history failed at
    setup with "use a smaller holdout"; a window of 0 at setup without the option's name."""
    path = _write(tmp_path, "series_id,time,v\n" + _gap_rows(["a", "b"], set()))
    with pytest.raises(DataError) as err:
        CSVDataModule(str(path), **{"window": 5.0, option: value})
    assert str(err.value) == (
        f"{option} must be a positive number of time units (or null for the default); got "
        f"{value!r}. Give --data.init_args.{option} a value > 0."
    )


@pytest.mark.parametrize(
    ("text", "options", "problem"),
    [
        (  # a series named '' (two series of blank ids became one)
            "series_id,time,x\na,1,1\na,2,2\n  ,1,3\n  ,2,4\n",
            {},
            "empty 'series_id' (lines 4, 5). Every row needs a series id.",
        ),
        (  # "unreadable times in column 'time', e.g. ''"
            "series_id,time,x\na,1,1\na,  ,2\na,3,4\n",
            {},
            "empty time in 'time' (line 3). Every row needs a time.",
        ),
        (  # "no series has two observed times": each time was its own series
            "series_id,time,x\na,1,1\na,2,2\n",
            {"series_column": "time"},
            "time_column and series_column both name 'time'; the series ids and the times "
            "need a column each (--data.init_args.series_column null reads the file as one "
            "series).",
        ),
        (  # every numeric column read, as if channels were not given
            "series_id,time,x,y\na,1,1,5\na,2,2,6\n",
            {"channels": []},
            "channels is an empty list; list the value columns to model, or leave channels "
            "out (null) to model every numeric column.",
        ),
    ],
    ids=["blank-id", "blank-time", "series-is-time", "no-channels"],
)
def test_blank_cells_and_contradictory_columns_are_refused(
    tmp_path: Path, text: str, options: dict, problem: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CSVDataError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_series_csv(path, **options)
    assert str(err.value) == f"{path}: {problem}"


def test_a_fit_never_saves_its_configuration_over_the_config_it_was_given(
    tmp_path: Path,
) -> None:
    """With ``--trainer.logger false`` Lightning saves the configuration as config.yaml in
    the root folder, and replaced the user's own config.yaml there (comments and all)."""
    data = _write(tmp_path, "series_id,time,v\n" + _gap_rows([f"s{k}" for k in range(8)], set()))
    config = tmp_path / "config.yaml"
    shutil.copy(ROOT / "configs" / "csv.yaml", config)
    config.write_text(config.read_text() + "# my notes\n")
    before = config.read_text()
    res = run_cli(
        *("fit", "--config", str(config), "--data.init_args.path", str(data)),
        *("--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)),
        *("--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"),
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert config.read_text() == before
    assert not (tmp_path / "checkpoints").exists() and "Traceback" not in res.stderr
    message = re.search(r"latentode: error: (.*)", res.stderr)
    assert message is not None, res.stderr[-2000:]
    assert message.group(1) == (
        f"--config {config}: this run saves its configuration as {config.resolve()}, which "
        "would replace that file (with --trainer.logger false the configuration is saved in "
        "--trainer.default_root_dir). Keep the config elsewhere (copy it), give another "
        "--trainer.default_root_dir, or leave the logger on (each run then saves it under "
        "<default_root_dir>/logs/version_N)."
    )


_HEADER_FIX = "The header (the column names) must be the first line"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (  # "missing column 'time'. The file has columns 'My data export'; name the ..."
            "My data export\nseries_id,time,value\na,1,2\na,2,3\n",
            f"missing column 'time'. {_HEADER_FIX}, but line 1 holds 'My data export', which "
            "looks like a title or a comment, and the column names ('series_id', 'time', "
            "'value') are on line 2: delete line 1.",
        ),
        (  # "missing column 'time'. The file has columns ; name the ..."
            "\nseries_id,time,value\na,1,2\na,2,3\n",
            f"missing column 'time'. {_HEADER_FIX}, but line 1 is blank, and the column names "
            "('series_id', 'time', 'value') are on line 2: delete line 1.",
        ),
        (
            "# exported, 2024\n\ntime,value\n1,2\n2,3\n",
            f"missing column 'time'. {_HEADER_FIX}, but line 1 holds '# exported, 2024', which "
            "looks like a title or a comment, and the column names ('time', 'value') are on "
            "line 3: delete lines 1 to 2.",
        ),
        (  # "the file is empty"
            "\n\ntime,value\n1,2\n2,3\n",
            f"the file starts with 2 blank lines (lines 1, 2). {_HEADER_FIX}: delete the blank "
            "lines above line 3, 'time,value'.",
        ),
    ],
    ids=["title", "blank-line", "comment-and-blank", "two-blank-lines"],
)
def test_lines_above_the_header_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(CSVDataError) as err:
        read_series_csv(path)
    assert str(err.value) == f"{path}: {message}"


def test_whole_number_times_beyond_2_53_that_read_alike_are_refused(tmp_path: Path) -> None:
    """Epoch nanoseconds lose their last digits as float64: rows at different written times
    were called duplicates, or averaged into one with ``duplicates: mean``."""
    times = (1700000000000000000, 1700000000000000001, 1700000000000000100)
    path = _write(tmp_path, "series_id,time,v\n" + "".join(f"a,{t},{t % 7}\n" for t in times))
    for duplicates in ("error", "mean"):
        with pytest.raises(CSVDataError) as err:
            read_series_csv(path, duplicates=duplicates)
        assert str(err.value) == (
            f"{path}: the times in 'time' are too large for their digits to be kept: "
            "'1700000000000000000' and '1700000000000000001' differ but read as the same "
            "number (a floating-point number holds whole numbers exactly only up to 2**53, "
            "about 9.007e15) (lines 2, 3). Rescale the times to a coarser unit (nanoseconds "
            "since 1970 to seconds: divide by 1e9), subtract one constant near the first time "
            "from all of them, or write ISO date-times (2023-11-14T22:13:20.000000001)."
        )
    # the same time written twice (or in another notation) is a duplicate, as before
    same = _write(tmp_path, "series_id,time,v\na,1.7e18,1\na,1700000000000000000,2\n", "d.csv")
    with pytest.raises(CSVDataError, match=r"duplicate \(series, time\) rows"):
        read_series_csv(same)


def test_averaging_a_file_read_as_one_series_names_the_likely_series_column(
    tmp_path: Path,
) -> None:
    """``series_column: null`` and ``duplicates: mean`` on a file with a series column: the
    series were averaged into one without a word."""
    path = _write(
        tmp_path, "region,time,v\n" + "".join(f"{s},{t},{t}\n" for t in (0, 1) for s in "ab")
    )
    with pytest.warns(UserWarning) as seen:
        table = read_series_csv(path, series_column=None, duplicates="mean")
    assert [str(w.message) for w in seen] == [
        f"{path}: the file was read as one series (no series column given), but rows at the "
        "same time '0' differ in column 'region' ('a' and 'b') (lines 2, 3). If 'region' "
        "names the series, say so: --data.init_args.series_column region (`latentode fit`; "
        "series_column='region' in the library); averaging mixes the rows of different "
        "series into one. If it does not, these are repeated rows of one series. They are "
        "averaged, as asked."
    ]
    assert table.n_series == 1 and len(table.times) == 2
    with warnings.catch_warnings():  # the column named the series: nothing to say
        warnings.simplefilter("error")
        assert read_series_csv(path, series_column="region").n_series == 2


def test_a_stride_longer_than_the_window_warns(tmp_path: Path) -> None:
    """Training windows 5 units long every 8 units never trained on the 3 units between."""
    path = _write(tmp_path, "time,v\n" + "".join(f"{t},{t % 7}\n" for t in range(100)))
    fix = (
        "whose observations are never trained on. Give a stride no longer than the window "
        "(--data.init_args.stride; the default is window / 10) to train on every observation."
    )
    with pytest.warns(UserWarning) as seen:
        CSVDataModule(str(path), window=5.0, stride=8.0)
    assert [str(w.message) for w in seen] == [
        "stride 8 is longer than window 5: the training windows leave out the 3 time units "
        "between one window's end and the next one's start (about 38% of each series' "
        f"training part), {fix}"
    ]
    data = CSVDataModule(str(path), stride=40.0)  # the window left to its default: 29.7
    with pytest.warns(UserWarning) as seen:
        data.setup()
    assert [str(w.message) for w in seen] == [
        "stride 40 is longer than the default window 29.7 (three holdout blocks): the training "
        "windows leave out the 10.3 time units between one window's end and the next one's "
        f"start (about 26% of each series' training part), {fix}"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CSVDataModule(str(path), window=5.0, stride=5.0).setup()
