"""``latentode predict --times`` and forecast times: explicit times files, how they are
read, and times that fall between the history's days."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from csv_cli_helpers import _days_after_last


def test_predict_at_explicit_times_and_refusals(fitted, tmp_path: Path, capsys) -> None:
    """``--times``: rows at exactly the given times (unsorted in the file), formatted as the
    history's; a time inside a history, a series not in the history file, a row without a
    time or an unreadable one stop with the file, line or series named and nothing written."""
    from latentode.cli import predict_main

    ckpt, data = fitted
    last, rows = _days_after_last(data, (9, 2))
    times, out = tmp_path / "times.csv", tmp_path / "f.csv"
    pd.DataFrame(rows, columns=["series_id", "time"]).to_csv(times, index=False)
    args = [
        "--ckpt_path",
        str(ckpt),
        "--data.path",
        str(data),
        "--horizon",
        "1",
        "--n_samples",
        "8",
    ]
    assert predict_main([*args, "--times", str(times), "--output", str(out)]) == 0
    f = pd.read_csv(out)
    assert len(f) == 6 * 2 * 2  # series x times x channels
    for sid, group in f.groupby("series_id"):
        expected = [(last[sid] + pd.Timedelta(days=d)).strftime("%Y-%m-%d") for d in (2, 9)]
        assert list(group["time"].unique()) == expected
    s5 = last["s5"].strftime("%Y-%m-%d")
    cases = {
        "inside": (
            [*rows[:-1], ("s5", s5)],
            f"series 's5': --times has {s5}, not after its last observation {s5}",
        ),
        "unknown": ([*rows, ("zz", "2020-06-01")], "['zz'] are not in the history file"),
        "no time": ([*rows, ("s0", "")], "line 14 has no 'time'"),
        "unreadable": ([*rows, ("s0", "soon")], "'soon' is not a time"),
    }
    for name, (bad_rows, needle) in cases.items():
        bad, target = tmp_path / f"{name}.csv", tmp_path / f"{name}_out.csv"
        pd.DataFrame(bad_rows, columns=["series_id", "time"]).to_csv(bad, index=False)
        capsys.readouterr()
        assert predict_main([*args, "--times", str(bad), "--output", str(target)]) == 2, name
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (name, err)
        assert not target.exists()
    # A negative span written as a separate word (argparse alone takes it for an option)
    for option, value in (("--horizon", "-5D"), ("--step", "-1D")):
        target = tmp_path / "negative.csv"
        capsys.readouterr()
        spans = {"--horizon": "10D", option: value}
        words = [w for o, v in spans.items() for w in (o, v)]
        assert predict_main([*args[:4], *words, "--output", str(target)]) == 2, option
        err = capsys.readouterr().err
        assert f"{option} must be positive, got '{value}'" in err, err
        assert not target.exists()


def test_predict_times_honour_a_spreadsheets_separator_line(fitted, tmp_path: Path, capsys) -> None:
    """A ``--times`` file whose first line is Excel's ``sep=;`` is read as the history file
    would be (`latentode.data.csv`): the line skipped, ``;`` the delimiter, and counted in the
    line numbers. It gives the forecast the comma-separated file gives; it used to be read as
    one column named 'sep=;' and refused."""
    from latentode.cli import predict_main

    ckpt, data = fitted
    rows = _days_after_last(data, (3, 7))[1]
    comma, semi = tmp_path / "comma.csv", tmp_path / "semi.csv"
    pd.DataFrame(rows, columns=["series_id", "time"]).to_csv(comma, index=False)
    semi.write_text("sep=;\nseries_id;time\n" + "".join(f"{s};{t}\n" for s, t in rows))
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--horizon", "1"]
    args += ["--n_samples", "4", "--no-calibrate"]
    outs = {}
    for name, path in (("comma", comma), ("semi", semi)):
        outs[name] = tmp_path / f"{name}_out.csv"
        assert predict_main([*args, "--times", str(path), "--output", str(outs[name])]) == 0
    want, got = pd.read_csv(outs["comma"]), pd.read_csv(outs["semi"])
    assert len(want) == 6 * 2 * 2  # series x times x channels
    assert sorted(set(zip(got.series_id, got.time, strict=True))) == sorted(set(rows))
    pd.testing.assert_frame_equal(got, want)
    # the sep= line counts: the first data row is line 3
    blank = tmp_path / "blank.csv"
    blank.write_text("sep=;\nseries_id;time\ns0;\n")
    capsys.readouterr()
    target = tmp_path / "blank_out.csv"
    assert predict_main([*args, "--times", str(blank), "--output", str(target)]) == 2
    assert f"{blank}: line 3 has no 'time'" in capsys.readouterr().err
    assert not target.exists()


def test_forecast_times_between_the_historys_days_are_refused(
    fitted, tmp_path: Path, capsys
) -> None:
    """The history's times are whole days: a 12-hour step, a 36-hour horizon or a --times at
    noon would be written rounded to days (once: the same date three times, each with other
    values, and the first forecast dated on the last observation). Refused, nothing written;
    whole days are written as asked."""
    from latentode.cli import predict_main

    ckpt, data = fitted
    out = tmp_path / "f.csv"
    base = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    last = pd.to_datetime(pd.read_csv(data).groupby("series_id")["time"].max())
    noon = tmp_path / "noon.csv"
    rows = [(s, (t + pd.Timedelta(hours=36)).isoformat()) for s, t in last.items()]
    pd.DataFrame(rows, columns=["series_id", "time"]).to_csv(noon, index=False)
    for words in (
        ["--horizon", "3D", "--step", "12h"],
        ["--horizon", "36h"],
        ["--horizon", "1", "--times", str(noon)],
    ):
        assert predict_main([*base, *words, "--output", str(out)]) == 2, words
        assert "fall between the history's times, which are written in whole days" in (
            capsys.readouterr().err
        )
        assert not out.exists()
    assert predict_main([*base, "--horizon", "3D", "--step", "1D", "--output", str(out)]) == 0
    f = pd.read_csv(out)
    for sid, group in f.groupby("series_id"):
        want = [(last[sid] + pd.Timedelta(days=d)).strftime("%Y-%m-%d") for d in (1, 2, 3)]
        assert list(group["time"].unique()) == want


def test_predict_times_files_are_read_as_the_history_is(
    fitted, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-series history without a series column (its series named after the file) takes
    a --times file without one too (it was refused: "missing column(s) ['series_id']", a
    column the history lacks); ids padded with spaces name the series they name in the history,
    whose ids are stripped (they were "not in the history file"); values past the header's
    columns are refused (they shifted every column, "series ['...'] are not in the history
    file"); a missing or directory --times is refused naming the option before the checkpoint
    is read (it was '[Errno 2] No such file...' after it, and a traceback)."""
    from latentode.cli import predict  # where run_predict looks `_load_forecaster` up

    ckpt, data = fitted
    last, rows = _days_after_last(data, (3, 1))
    base = ["--ckpt_path", str(ckpt), "--horizon", "1", "--n_samples", "4", "--no-calibrate"]
    one, times = tmp_path / "one.csv", tmp_path / "times.csv"
    frame = pd.read_csv(data)
    frame[frame.series_id == "s0"].drop(columns="series_id").to_csv(one, index=False)
    times.write_text("time\n" + "".join(f"{t}\n" for s, t in rows if s == "s0"))
    out = tmp_path / "one_out.csv"
    assert predict.predict_main([*base, "--data.path", str(one), "--times", str(times),
                                 "--output", str(out)]) == 0  # fmt: skip
    got = pd.read_csv(out)
    want = [(last["s0"] + pd.Timedelta(days=d)).strftime("%Y-%m-%d") for d in (1, 3)]
    assert set(got.series_id) == {"one"} and list(got.time.unique()) == want
    padded, plain = tmp_path / "padded.csv", tmp_path / "plain.csv"
    padded.write_text("series_id,time\n" + "".join(f"  {s} ,{t}\n" for s, t in rows))
    plain.write_text("series_id,time\n" + "".join(f"{s},{t}\n" for s, t in rows))
    on_data = [*base, "--data.path", str(data)]
    for path in (padded, plain):
        target = tmp_path / f"{path.stem}_out.csv"
        assert predict.predict_main([*on_data, "--times", str(path), "--output", str(target)]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "padded_out.csv"), pd.read_csv(tmp_path / "plain_out.csv")
    )
    extra, columns = tmp_path / "extra.csv", tmp_path / "columns.csv"
    extra.write_text("series_id,time\n" + "".join(f"{s},{t},1\n" for s, t in rows))
    columns.write_text("time\n" + "".join(f"{t}\n" for s, t in rows))
    cases = {
        extra: f"{extra}: its rows hold more values than the header names columns; name the "
        "extra column in the header, or remove the values past the last column.",
        columns: f"{columns}: missing column(s) ['series_id']; found ['time']. The history "
        "file holds 6 series: name each row's series.",
    }
    for path, message in cases.items():
        capsys.readouterr()
        target = tmp_path / "refused.csv"
        assert predict.predict_main([*on_data, "--times", str(path), "--output", str(target)]) == 2
        assert capsys.readouterr().err == f"latentode predict: error: {message}\n"
        assert not target.exists()
    loaded = []
    monkeypatch.setattr(predict, "_load_forecaster", lambda *a: loaded.append(a))
    for path, message in (
        (tmp_path / "nope.csv", f"--times {tmp_path / 'nope.csv'}: no such file."),
        (tmp_path, f"--times {tmp_path} is a directory; name a CSV file."),
    ):
        capsys.readouterr()
        target = tmp_path / "refused.csv"
        assert predict.predict_main([*on_data, "--times", str(path), "--output", str(target)]) == 2
        assert capsys.readouterr().err == f"latentode predict: error: {message}\n"
    assert not loaded and not (tmp_path / "refused.csv").exists()


def test_times_naming_a_series_the_history_reader_dropped_say_why(
    fitted, tmp_path: Path, capsys
) -> None:
    """A series with one observation is dropped from the history (with a warning); --times
    rows naming it were refused as "not in the history file", which it is."""
    from latentode.cli import predict

    ckpt, data = fitted
    hist, times = tmp_path / "hist.csv", tmp_path / "times.csv"
    frame = pd.read_csv(data)
    lone = frame.iloc[[0]].assign(series_id="lone")
    pd.concat([frame, lone]).to_csv(hist, index=False)
    times.write_text(
        f"series_id,time\nlone,{pd.Timestamp(lone.time.iloc[0]) + pd.Timedelta(days=1):%Y-%m-%d}\n"
    )
    args = ["--ckpt_path", str(ckpt), "--data.path", str(hist), "--times", str(times)]
    args += ["--horizon", "1", "--n_samples", "4", "--no-calibrate"]
    with pytest.warns(UserWarning, match="dropped 1 series with fewer than two observed times"):
        status = predict.predict_main([*args, "--output", str(tmp_path / "out.csv")])
    assert status == 2
    assert capsys.readouterr().err == (
        f"latentode predict: error: {times}: series ['lone'] have fewer than two observed "
        f"times in {hist}, which leaves them out; give them two or more values, or leave out "
        "their rows.\n"
    )
