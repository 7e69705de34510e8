"""``latentode fit`` / ``predict`` on a user's CSV, run for real in subprocesses."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli

from latentode.data.errors import DataError


def write_csv(path: Path, seed: int = 0, n_series: int = 6) -> pd.DataFrame:
    """Six (``n_series``) irregular daily series, two channels around 1000 and -5, with gaps."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        days = np.sort(rng.choice(120, size=40, replace=False))
        for d in days:
            t = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(d))
            a = 1000 + 10 * np.sin(2 * np.pi * d / 30 + s) + rng.normal(0, 0.5)
            b = -5 + 0.02 * d + rng.normal(0, 0.1)
            rows.append((f"s{s}", t.strftime("%Y-%m-%d"), a, b if rng.random() > 0.2 else ""))
    frame = pd.DataFrame(rows, columns=["series_id", "time", "a", "b"])
    frame.sample(frac=1, random_state=seed).to_csv(path, index=False)  # unsorted on purpose
    return frame


def csv_fit_args(data: Path, run_dir: Path, steps: int) -> list[str]:
    """``latentode fit`` on ``data`` with configs/csv.yaml, tiny batches, ``steps`` steps."""
    return [
        "fit",
        "--config",
        "configs/csv.yaml",
        "--data.init_args.path",
        str(data),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.max_steps",
        str(steps),
        "--trainer.enable_progress_bar",
        "false",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.val_fraction",
        "0.2",
        "--data.init_args.test_fraction",
        "0.2",
        "--model.init_args.eval_samples",
        "2",
    ]


def csv_predict_args(ckpt: Path, data: Path) -> list[str]:
    """``latentode predict`` of ``ckpt`` on ``data``: 20 days ahead in steps of 5."""
    args = ["predict", "--ckpt_path", str(ckpt), "--data.path", str(data)]
    return [*args, "--horizon", "20D", "--step", "5D"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("csvrun")
    data = root / "series.csv"
    write_csv(data)
    fit = run_cli(*csv_fit_args(data, root / "run", 3))
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt, data


def test_fit_logs_validation_errors_per_channel_in_user_units(fitted) -> None:
    """Beside the normalised val/rmse, val/rmse[a] and val/rmse[b] are in the file's units:
    the validation forecast's errors times each channel's std (channel a's values vary about
    30 times more than b's, see `write_csv`)."""
    ckpt, _ = fitted
    logs = pd.read_csv(ckpt.parents[1] / "logs" / "version_0" / "metrics.csv")
    val = logs.dropna(subset=["val/rmse"])
    assert len(val) > 0
    norm = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]["normalisation"]
    std = dict(zip(norm["channels"], norm["std"], strict=True))
    assert std["a"] > 5 * std["b"]
    for ch in ("a", "b"):
        for name in (f"val/rmse[{ch}]", f"val/mae[{ch}]"):
            assert np.isfinite(val[name]).all() and (val[name] > 0).all()
        # a channel's error in user units over its std is an error in normalised units, and
        # the normalised RMSE over both channels lies between the two channels' (a weighted
        # mean of their squared errors)
        val = val.assign(**{f"z_{ch}": val[f"val/rmse[{ch}]"] / std[ch]})
    lo, hi = val[["z_a", "z_b"]].min(axis=1), val[["z_a", "z_b"]].max(axis=1)
    assert ((lo - 1e-5 <= val["val/rmse"]) & (val["val/rmse"] <= hi + 1e-5)).all()


def test_predict_writes_forecasts_in_user_units(fitted, tmp_path: Path) -> None:
    ckpt, data = fitted
    out, plots = tmp_path / "forecast.csv", tmp_path / "plots"
    res = run_cli(
        *csv_predict_args(ckpt, data),
        "--output",
        str(out),
        "--plot",
        str(plots),
        "--n_samples",
        "50",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    f = pd.read_csv(out)
    assert list(f.columns) == ["series_id", "time", "channel", "mean", "std", "q05", "q50", "q95"]
    assert len(f) == 6 * 4 * 2  # series x (20 days / 5) x channels
    # 50 paths, the training file: the one note is that 20 days is past the validated leads
    # (the val series' last tenth: 11-12 days; the bands are not calibrated on 1 series)
    assert res.stdout.count("note:") == 1, res.stdout
    lead = re.search(
        r"note: forecasts reach 20D ahead, past the fit's validation forecasts "
        r"\(lead times up to ([0-9.]+)D\); how good they",
        res.stdout,
    )
    assert lead is not None and 10 <= float(lead.group(1)) <= 12.1, res.stdout
    numeric = f[["mean", "std", "q05", "q50", "q95"]].to_numpy()
    assert np.isfinite(numeric).all() and (f["std"] > 0).all()
    assert ((f.q05 <= f.q50) & (f.q50 <= f.q95)).all()
    # Normalisation inverted: channel a lives near 1000, channel b near -5 (not near 0).
    assert f.loc[f.channel == "a", "mean"].between(900, 1100).all()
    assert f.loc[f.channel == "b", "mean"].between(-30, 20).all()
    # Date-times round-trip: same ISO format, 5-day grid after each series' last observation.
    src = pd.read_csv(data)
    last = pd.to_datetime(src.groupby("series_id")["time"].max())
    times = pd.to_datetime(f["time"], format="%Y-%m-%d")
    for sid, group in f.assign(t=times).groupby("series_id"):
        expected = [last[sid] + pd.Timedelta(days=5 * k) for k in range(1, 5)]
        assert sorted(set(group["t"])) == expected
    assert sorted(p.name for p in plots.glob("*.png")) == [f"s{i}.png" for i in range(6)]


def test_a_new_fit_never_replaces_an_earlier_fits_checkpoints(fitted, tmp_path: Path) -> None:
    """`fit` without --ckpt_path into a run folder whose checkpoints/ holds an earlier fit's
    checkpoints stops before writing anything; --ckpt_path last resumes that fit instead."""
    ckpt, data = fitted
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(ckpt, folder / "last.ckpt")
    before = (folder / "last.ckpt").read_bytes()
    res = run_cli(*csv_fit_args(data, tmp_path / "run", 4))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{folder} holds the checkpoints of an earlier fit (last.ckpt)" in res.stderr
    assert "Resume that fit with --ckpt_path last" in res.stderr
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["last.ckpt"]
    assert (folder / "last.ckpt").read_bytes() == before
    res = run_cli(*csv_fit_args(data, tmp_path / "run", 4), "--ckpt_path", "last")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "LightningCLI's args parameter" not in res.stderr  # printed by every fit before
    assert "Tip" not in res.stdout + res.stderr  # nor Lightning's advertisement
    assert "LeafSpec" not in res.stderr  # nor its deprecation warning about torch
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 4


def test_predict_never_replaces_a_png_without_overwrite(fitted, tmp_path: Path) -> None:
    """A file of the user's in the --plot directory with a series' plot name is kept, and
    nothing is written, unless --overwrite is given; --plot naming a file is refused."""
    ckpt, data = fitted
    out, plots = tmp_path / "forecast.csv", tmp_path / "plots"
    plots.mkdir()
    (plots / "s3.png").write_bytes(b"the user's own")
    args = [*csv_predict_args(ckpt, data), "--output", str(out), "--n_samples", "5"]
    res = run_cli(*args, "--plot", str(plots))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "1 of the 6 PNGs exist already (s3.png); pass --overwrite" in res.stderr
    assert not out.exists() and sorted(p.name for p in plots.iterdir()) == ["s3.png"]
    assert (plots / "s3.png").read_bytes() == b"the user's own"
    (tmp_path / "file.txt").write_text("mine")
    res = run_cli(*args, "--plot", str(tmp_path / "file.txt"), "--overwrite")
    assert res.returncode == 2 and "file.txt is a file; name a directory" in res.stderr
    res = run_cli(*args, "--plot", str(plots), "--overwrite")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "note: --n_samples 5: the 5% and 95% quantiles of fewer than 20 paths" in res.stdout
    assert (plots / "s3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list(plots.glob("*.png"))) == 6


def test_predict_notes_histories_far_outside_the_training_data(fitted, tmp_path: Path) -> None:
    """A history in other units (channel a of s2 times 100) gets a note naming the series,
    the channel, its values and the training range; the training file itself gets none."""
    ckpt, data = fitted
    frame = pd.read_csv(data)
    frame.loc[frame.series_id == "s2", "a"] *= 100
    path, out = tmp_path / "units.csv", tmp_path / "f.csv"
    frame.to_csv(path, index=False)
    res = run_cli(*csv_predict_args(ckpt, path), "--output", str(out), "--n_samples", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    lo, hi = frame.loc[frame.series_id == "s2", "a"].agg(["min", "max"])
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    t_lo, t_hi = state["value_range"]["min"][0], state["value_range"]["max"][0]
    assert 980 < t_lo < t_hi < 1020
    assert (
        f"note: 1 history channel(s) hold values far outside the training data's: 's2' "
        f"(a: {lo:.4g} to {hi:.4g}; training {t_lo:.4g} to {t_hi:.4g})" in res.stdout
    )
    res = run_cli(*csv_predict_args(ckpt, data), "--output", str(out), "--overwrite")
    assert res.returncode == 0 and "far outside" not in res.stdout


def test_far_outside_is_judged_on_a_log_channels_own_scale() -> None:
    """On a channel modelled on a log scale, a history in kilograms for a fit in grams
    (0.05-0.2 against 50-200) is far outside where the model works, and noted; in user
    units no positive value lies a range's width below 50, so the same channel as it is
    gets no note. A history in grams gets none on either scale."""
    from types import SimpleNamespace

    from latentode.cli.predict_output import _outside_training
    from latentode.data.prep import Segment

    t = np.arange(4.0)
    kilos = Segment(0, 0.0, t, np.array([[0.05], [0.1], [0.2], [np.nan]]))
    grams = Segment(1, 0.0, t, np.array([[60.0], [190.0], [120.0], [80.0]]))
    table = SimpleNamespace(channels=("w",), series_ids=["kg", "g"])
    rng = {"min": [50.0], "max": [200.0]}
    as_is = {"value_range": rng, "normalisation": {"channels": ["w"], "mean": [0], "std": [1]}}
    logged = {**as_is, "normalisation": {**as_is["normalisation"], "transform": ["log"]}}
    note = _outside_training([kilos, grams], table, logged)
    assert "1 history channel(s)" in note and "'kg' (w: 0.05 to 0.2; training 50 to 200)" in note
    assert _outside_training([kilos, grams], table, as_is) == ""
    assert _outside_training([grams], table, logged) == ""


def test_a_history_with_times_of_another_kind_is_refused(fitted, tmp_path: Path) -> None:
    """The fit read date-times in days; a history with numeric times (days since 2020 here)
    used to be forecast on the model's axis as if the numbers were in its unit."""
    ckpt, data = fitted
    frame = pd.read_csv(data)
    frame["time"] = (pd.to_datetime(frame["time"]) - pd.Timestamp("2020-01-01")).dt.days
    path = tmp_path / "numbers.csv"
    frame.to_csv(path, index=False)
    out = tmp_path / "f.csv"
    res = run_cli(*csv_predict_args(ckpt, path)[:-4], "--horizon", "20", "--output", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert (
        f"{path}: its times are numbers, but the checkpoint was fitted on date-times" in res.stderr
    )


def test_plot_names_never_collide() -> None:
    """Ids that sanitise to the same name, also ignoring case, get their position appended;
    an id that already reads like a renamed one does not take another's name."""
    from latentode.cli import plot_names

    ids = ["a b", "a_b", "A/B", "c", "a_b__2", "x.y", "é"]
    assert plot_names(ids) == [
        "a_b__1.png",
        "a_b__2.png",
        "A_B__3.png",
        "c.png",
        "a_b__2_.png",
        "x.y.png",
        "_.png",
    ]


def test_histories_that_miss_a_channel_or_are_too_short(fitted, tmp_path: Path) -> None:
    """A history file where channel b is never observed: `predict` forecasts b from a and
    says which series it did that for; a series with one row is dropped with a one-line
    warning (no Python source line); `test` on series too short to hide a point in their
    held-out part scores the forecast and says interpolation was not scored."""
    ckpt, data = fitted
    frame = pd.read_csv(data)
    frame = frame[frame.series_id.isin(["s0", "s1"])].assign(b=np.nan)
    lone = frame.iloc[[0]].assign(series_id="lone")
    path = tmp_path / "no_b.csv"
    pd.concat([frame, lone]).to_csv(path, index=False)
    out = tmp_path / "f.csv"
    res = run_cli(*csv_predict_args(ckpt, path), "--output", str(out), "--n_samples", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    f = pd.read_csv(out)
    assert set(f.series_id) == {"s0", "s1"} and len(f) == 2 * 4 * 2
    assert np.isfinite(f.loc[f.channel == "b", ["mean", "q05", "q95"]].to_numpy()).all()
    assert "2 forecast(s) of a channel the series' history never observes" in res.stdout
    assert "'s0' (b)" in res.stdout and "'s1' (b)" in res.stdout
    assert "latentode: warning: " in res.stderr and "'lone'" in res.stderr
    assert "UserWarning" not in res.stderr and "read_series_csv(" not in res.stderr
    # eight observations a series: the held-out tenth holds one, nothing to interpolate
    short = tmp_path / "short.csv"
    pd.read_csv(data).groupby("series_id").head(8).to_csv(short, index=False)
    scores, stdout = _test_scores(ckpt, short, tmp_path / "scores.csv")
    assert set(scores.task) == {"extrapolation", "history gaps"}
    assert "Not scored: interpolation (no held-out part holds three observations" in stdout


def _days_after_last(data: Path, days: tuple[int, ...]) -> tuple[pd.Series, list[tuple[str, str]]]:
    """Each series' last time in ``data``, and ``--times`` rows ``(series_id, date)`` that
    many ``days`` after it (for each day, every series)."""
    last = pd.to_datetime(pd.read_csv(data).groupby("series_id")["time"].max())
    rows = [
        (sid, (t + pd.Timedelta(days=d)).strftime("%Y-%m-%d"))
        for d in days
        for sid, t in last.items()
    ]
    return last, rows


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


def test_predict_refuses_a_grid_too_fine_for_memory_before_anything_runs(
    fitted, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--step 1s`` over 20 days asks 200 paths at 1.7 million times per series: that used
    to be killed by the kernel after filling the memory, without a word. It is refused with
    the series, the count and what to change, before the calibration's forecasts run and with
    nothing written."""
    from latentode.cli import predict  # where run_predict looks `_calibration` up
    from latentode.cli.predict import predict_main

    ckpt, data = fitted
    out = tmp_path / "f.csv"
    ran = []
    monkeypatch.setattr(predict, "_calibration", lambda *a, **k: ran.append(1))
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--output", str(out)]
    capsys.readouterr()
    assert predict_main([*args, "--horizon", "20D", "--step", "1s"]) == 2
    err = capsys.readouterr().err
    assert re.search(r"series 's\d': 1,728,000 forecast times \(--horizon and --step\) x 200 ", err)
    assert "coarser --step" in err and "Traceback" not in err
    assert not out.exists() and not ran
    assert predict_main([*args, "--horizon", "20D", "--step", "1D", "--n_samples", "8"]) == 0
    assert ran and len(pd.read_csv(out)) == 6 * 20 * 2  # series x days x channels
    # --call_memory sets the budget: 1e-6 GB holds 2 path-times (1000 bytes at 360 each) ...
    small = [*args, "--horizon", "20D", "--step", "1D", "--overwrite", "--call_memory", "1e-6"]
    capsys.readouterr()
    assert predict_main([*small, "--n_samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "20 forecast times (--horizon and --step) x 1 paths need 20 path-times" in err
    assert "(2 with its channels, about 1e-06 GB)" in err and "raise --call_memory" in err
    assert predict_main([*small[:-1], "0", "--n_samples", "1"]) == 2
    assert "--call_memory 0.0: give the GB" in capsys.readouterr().err
    # ... only for the command it is given to
    assert predict_main([*args, "--horizon", "20D", "--overwrite", "--n_samples", "1"]) == 0


def test_call_memory_sets_the_budget_inside_its_block_only() -> None:
    from latentode.nn.base import ModelInputError
    from latentode.predictive import call_gb, call_memory, draws_per_call

    assert draws_per_call(48) == 766_471 and call_gb() == pytest.approx(1.51, abs=0.01)
    with call_memory(10.0):
        assert draws_per_call(48) == 10**10 // (290 + 35 * 48) and call_gb() == 10.0
    assert draws_per_call(48) == 766_471
    with pytest.raises(RuntimeError, match="inside"), call_memory(0.5):
        raise RuntimeError("inside")
    assert draws_per_call(2) == 2**22  # restored after an error too
    with call_memory(None):
        assert draws_per_call(2) == 2**22
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ModelInputError, match="--call_memory"), call_memory(bad):
            pass


def test_predict_refuses_to_overwrite_and_foreign_channels(fitted, tmp_path: Path) -> None:
    ckpt, data = fitted
    out = tmp_path / "f.csv"
    out.write_text("precious\n")
    args = ["--ckpt_path", str(ckpt), "--horizon", "10", "--output", str(out)]
    res = run_cli("predict", "--data.path", str(data), *args)
    assert res.returncode == 2 and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert out.read_text() == "precious\n"
    res = run_cli("predict", "--data.path", str(data), *args, "--overwrite", "--n_samples", "0")
    assert res.returncode == 2 and res.stderr.endswith(
        "latentode predict: error: --n_samples must be >= 1 (posterior paths per series); got 0.\n"
    )
    assert out.read_text() == "precious\n"
    other = tmp_path / "other.csv"
    pd.read_csv(data).rename(columns={"b": "c"}).to_csv(other, index=False)
    res = run_cli("predict", "--data.path", str(other), *args, "--overwrite")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no column 'b'" in res.stderr and "['a', 'b']" in res.stderr
    res = run_cli("predict", "--data.path", str(data), *args, "--overwrite")
    assert res.returncode == 0, res.stderr[-2000:]
    assert out.read_text() != "precious\n"


def test_predict_and_test_read_the_file_as_the_fit_did(tmp_path: Path) -> None:
    """A fit that averaged repeated rows and took one channel of two: `predict` and `test`
    read the same file the same way (the checkpoint keeps both settings), so they accept it
    as it is; ``--data.duplicates error`` overrides, and the refusal names the option."""
    data = tmp_path / "series.csv"
    frame = write_csv(data, seed=2)
    twice = frame.iloc[[5]].assign(a=frame.a.iloc[5] + 1.0)  # the same series and day again
    pd.concat([frame, twice]).to_csv(data, index=False)
    fit = run_cli(
        *csv_fit_args(data, tmp_path / "run", 2),
        "--data.init_args.duplicates",
        "mean",
        "--data.init_args.channels",
        "[a]",
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    # the fit says what it reads before it trains
    assert f"latentode fit: {data}: " in fit.stderr
    assert "channels modelled: 'a'; columns not read: 'b';" in fit.stderr
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    assert state["duplicates"] == "mean" and state["channels"] == ["a"]
    out = tmp_path / "f.csv"
    res = run_cli(*csv_predict_args(ckpt, data), "--output", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(pd.read_csv(out).channel) == {"a"} and len(pd.read_csv(out)) == 6 * 4
    scores, _ = _test_scores(ckpt, data, tmp_path / "scores.csv")
    assert np.isfinite(scores[["mse", "mae"]].to_numpy()).all()
    res = run_cli(
        *csv_predict_args(ckpt, data), "--output", str(tmp_path / "g.csv"),
        "--data.duplicates", "error",
    )  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "duplicate" in res.stderr and "--data.duplicates mean for predict" in res.stderr
    assert "--data.init_args.duplicates mean for `latentode fit`" in res.stderr
    no_a = tmp_path / "no_a.csv"
    frame.drop(columns="a").to_csv(no_a, index=False)
    res = run_cli(*csv_predict_args(ckpt, no_a), "--output", str(tmp_path / "h.csv"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no column 'a'" in res.stderr and "['a']" in res.stderr and "no_a.csv" in res.stderr
    no_t = tmp_path / "no_t.csv"  # the times under another name than the fit's
    frame.rename(columns={"time": "date"}).to_csv(no_t, index=False)
    res = run_cli(*csv_predict_args(ckpt, no_t), "--output", str(tmp_path / "h.csv"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no_t.csv: no column 'time': the checkpoint was fitted with its times" in res.stderr
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "h.csv").exists()


def test_a_file_of_three_series_fits_held_out_in_time(tmp_path: Path) -> None:
    """Three series: a tenth of them is none, so the fit holds out each series' last two
    blocks (it used to stop with 'no val series'); `test` scores every series' test block and
    says why its bands stay uncalibrated; `predict` forecasts all three."""
    data = tmp_path / "three.csv"
    write_csv(data, seed=3, n_series=3)
    args = csv_fit_args(data, tmp_path / "run", 2)
    for option in ("--data.init_args.val_fraction", "--data.init_args.test_fraction"):
        del args[args.index(option) : args.index(option) + 2]  # the defaults, 0.1 each
    fit = run_cli(*args)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    assert sorted(state["val_windows"]) == sorted(state["test_series"]) == ["s0", "s1", "s2"]
    scores, stdout = _test_scores(ckpt, data, tmp_path / "scores.csv")
    model = scores[(scores.task == "extrapolation") & (scores.method == "latent ODE")]
    assert np.isfinite(model[["mse", "mae"]].to_numpy()).all()
    assert "every series validates already (held out in time)" in stdout
    out = tmp_path / "f.csv"
    res = run_cli(*csv_predict_args(ckpt, data), "--output", str(out), "--n_samples", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(set(pd.read_csv(out).series_id)) == ["s0", "s1", "s2"]


def test_predict_with_two_processes_writes_one_output_in_order(fitted, tmp_path: Path) -> None:
    """Two CPU processes (gloo) share the series out by chunks of 2; the first process writes
    one file, identical to the single-process output (chunks are seeded by their index)."""
    ckpt, data = fitted
    common = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--horizon", "10D"]
    common += ["--step", "5D", "--n_samples", "20", "--chunk", "2"]
    one, two, plots = tmp_path / "one.csv", tmp_path / "two.csv", tmp_path / "plots"
    res = run_cli("predict", *common, "--output", str(one))
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("predict", *common, "--output", str(two), "--devices", "2", "--plot", str(plots))
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("latentode predict: wrote 24 rows for 6 series") == 1
    assert "(2 processes)" in res.stdout
    a, b = pd.read_csv(one), pd.read_csv(two)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    first_seen = list(pd.read_csv(data)["series_id"].unique())  # the input's series order
    assert list(b["series_id"].unique()) == first_seen
    assert sorted(p.name for p in plots.glob("*.png")) == [f"s{i}.png" for i in range(6)]
    assert not list(tmp_path.glob("*.partial"))
    # An input error reaches both processes; the first one reports it, once.
    bad = tmp_path / "times.csv"
    bad.write_text("series_id,time\nzz,2021-01-01\n")
    res = run_cli(
        "predict",
        *common,
        "--output",
        str(tmp_path / "x.csv"),
        "--devices",
        "2",
        "--times",
        str(bad),
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("latentode predict: error:") == 1, res.stderr[-2000:]
    assert "['zz'] are not in the history file" in res.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not found"),
        ("series_id,time,a\ns0,2020-01-01,1\ns0,2020-01-01,2\ns0,2020-01-03,2\n", "duplicate"),
        ("series_id,time,a\ns0,2020-01-01,1\ns0,yesterday,2\ns0,2020-01-03,2\n", "time"),
        ("series_id,time,a\ns0,2020-01-01,1\ns0,2020-01-02,oops\ns0,2020-01-03,2\n", "oops"),
    ],
    ids=["missing-file", "duplicates", "bad-time", "non-numeric"],
)
def test_fit_bad_csv_exits_with_a_message(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "bad.csv"
    if content is not None:
        path.write_text(content)
    res = run_cli(
        "fit",
        "--config",
        "configs/csv.yaml",
        "--data.init_args.path",
        str(path),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.max_steps",
        "1",
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert needle in res.stderr and "bad.csv" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_bad_csv_stops_a_multi_process_fit_with_one_message(tmp_path: Path) -> None:
    """The file is read before Lightning starts the other processes: one message and no
    process group. Processes that SLURM or torchrun started together fail alike; only the
    first (by its RANK) prints."""
    path = tmp_path / "bad.csv"
    path.write_text("series_id,time,a\ns0,2020-01-01,1\ns0,2020-01-02,oops\ns0,2020-01-03,2\n")
    args = ["fit", "--config", "configs/csv.yaml", "--data.init_args.path", str(path)]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "1"]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    res = run_cli(*args, *ddp)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-2000:]
    assert out.count("latentode: error:") == 1 and "'oops' (line 3)" in out
    assert "Initializing distributed" not in out and "Traceback" not in out
    for rank, shown in (("0", 1), ("1", 0)):
        res = run_cli(*args, env={"RANK": rank})
        assert res.returncode == 2, rank
        assert (res.stdout + res.stderr).count("latentode: error:") == shown, rank


def test_csv_fit_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "series.csv"
    write_csv(data, seed=1)
    first = run_cli(*csv_fit_args(data, tmp_path / "run", 2))
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)
    resumed = run_cli(*csv_fit_args(data, tmp_path / "run", 4), "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states" in resumed.stdout + resumed.stderr
    after = torch.load(last, weights_only=True)
    assert (before["global_step"], after["global_step"]) == (2, 4)
    # the user-unit mapping survives the resume unchanged
    state = after["hyper_parameters"]["data_state"]
    assert state == before["hyper_parameters"]["data_state"]
    assert state["channels"] == ["a", "b"] and state["normalisation"]["mean"][0] > 900


def test_csv_fit_resumed_mid_epoch_ends_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """Batches of one segment (several steps per epoch) and last.ckpt after every step: a fit
    stopped after step 2 (inside epoch 0) and resumed to step 9 ends on the weights of a fit
    run straight to step 9, the training loader's place in the epoch included."""
    data = tmp_path / "series.csv"
    write_csv(data, seed=1)
    often = ["--data.init_args.batch_size", "1", "--last_checkpoint.every_n_train_steps", "1"]

    def fit(root: Path, steps: int, *extra: str) -> dict:
        res = run_cli(*csv_fit_args(data, root, steps), *often, *extra)
        assert res.returncode == 0, res.stderr[-3000:]
        return torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)

    whole = fit(tmp_path / "whole", 9)
    stopped = fit(tmp_path / "run", 2)
    position = stopped["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert stopped["epoch"] == 0 and (position["finished"], position["complete"]) == (2, False)
    resumed = fit(tmp_path / "run", 9, "--ckpt_path", "last")
    assert resumed["global_step"] == whole["global_step"] == 9 and whole["epoch"] >= 1
    for name, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][name]), name


def _test_scores(ckpt: Path, data: Path, table: Path, *extra: str) -> tuple[pd.DataFrame, str]:
    """``latentode test`` with 20 paths (and ``extra`` options): the table it wrote, stdout."""
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "20"]
    res = run_cli("test", *args, *extra, "--output", str(table))
    assert res.returncode == 0, res.stderr[-3000:]
    return pd.read_csv(table), res.stdout


def test_test_help_is_the_csv_commands_unless_a_config_is_given() -> None:
    """``latentode test --help`` lists the CSV scoring options (--levels among them) and
    names Lightning's test; with --config it is Lightning's."""
    ours = run_cli("test", "--help")
    assert ours.returncode == 0 and "--levels PERCENT" in ours.stdout
    assert "latentode test --config FILE" in " ".join(ours.stdout.split())
    lightning = run_cli("test", "--config", "configs/csv.yaml", "--help")
    assert lightning.returncode == 0 and "--trainer" in lightning.stdout
    assert "--levels" not in lightning.stdout


def test_test_command_prints_model_and_baselines(fitted, tmp_path: Path) -> None:
    ckpt, data = fitted
    scores, stdout = _test_scores(ckpt, data, tmp_path / "scores.csv")
    res = run_cli(
        "test",
        "--ckpt_path",
        str(ckpt),
        "--data.path",
        str(data),
        "--output",
        str(tmp_path / "scores.csv"),
    )
    assert res.returncode == 2 and "scores.csv exists; pass --overwrite" in res.stderr
    assert pd.read_csv(tmp_path / "scores.csv").equals(scores)
    # --call_memory: calls of one series each score the same baselines, the model's finite
    small, _ = _test_scores(ckpt, data, tmp_path / "small.csv", "--call_memory", "1e-6")
    base = ~scores.method.str.startswith("latent ODE")
    pd.testing.assert_frame_equal(small[base], scores[base])
    assert np.isfinite(small.loc[~base, "mse"]).all()
    res = run_cli("test", "--ckpt_path", str(ckpt), "--data.path", str(data), "--call_memory", "0")
    assert res.returncode == 2 and "--call_memory 0.0: give the GB" in res.stderr
    methods = set(zip(scores.task, scores.method, strict=True))
    assert {
        ("extrapolation", "latent ODE"),
        ("extrapolation", "latent ODE, half-observed history"),
        ("extrapolation", "last value"),
        ("extrapolation", "linear trend"),
        ("interpolation", "latent ODE"),
        ("interpolation", "linear interpolation"),
        ("history gaps", "latent ODE"),
        ("history gaps", "linear interpolation"),
    } <= methods
    assert np.isfinite(scores[["mse", "mae"]].to_numpy()).all()
    model = scores[scores.method == "latent ODE"]
    assert model.coverage90.between(0, 1).all() and (model.width90 > 0).all()
    # one validation series of ~4 values per channel: too few to calibrate, and it says so
    assert "latent ODE, calibrated bands" not in set(scores.method)
    assert "not calibrated" in stdout and "fewer than 20" in stdout
    assert "latent ODE" in stdout and "linear interpolation" in stdout
    # --importance reaches the model's predictions and nothing else.
    iw, _ = _test_scores(ckpt, data, tmp_path / "weighted.csv", "--importance")
    is_model = iw.method.str.startswith("latent ODE")
    baselines = scores[~scores.method.str.startswith("latent ODE")]
    pd.testing.assert_frame_equal(iw[~is_model], baselines)
    assert np.isfinite(iw[["mse", "mae"]].to_numpy()).all()
    assert iw[is_model].coverage90.between(0, 1).all()
    plain = iw[iw.method == "latent ODE"]
    assert not np.allclose(plain.mse.to_numpy(), model.mse.to_numpy(), rtol=1e-6)
    # So does --refine (the posterior refined on each history); a negative count is refused.
    rf, _ = _test_scores(ckpt, data, tmp_path / "refined.csv", "--refine", "5")
    is_model = rf.method.str.startswith("latent ODE")
    pd.testing.assert_frame_equal(rf[~is_model], baselines)
    assert np.isfinite(rf[["mse", "mae"]].to_numpy()).all()
    plain = rf[rf.method == "latent ODE"]
    assert not np.allclose(plain.mse.to_numpy(), model.mse.to_numpy(), rtol=1e-6)
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--refine", "-1"]
    bad = run_cli("test", *args)
    assert bad.returncode == 2 and bad.stderr.endswith(
        "latentode test: error: --refine must be >= 0 (Adam steps on each history's ELBO; 0: "
        "none); got -1.\n"
    )
    bad = run_cli("test", *args[:-2], "--n_samples", "0")
    assert bad.returncode == 2 and bad.stderr.endswith(
        "latentode test: error: --n_samples must be >= 1 (posterior paths per series); got 0.\n"
    )


def test_lightning_test_on_a_csv_points_to_the_evaluation_in_user_units(
    fitted, tmp_path: Path
) -> None:
    """``latentode test --config ...`` is Lightning's test (normalised metrics); on a CSV it
    ends by naming the command that scores in the user's units, with this run's paths."""
    ckpt, data = fitted
    args = csv_fit_args(data, tmp_path / "run", 3)[1:]
    res = run_cli("test", *args, "--ckpt_path", str(ckpt))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test/mse" in res.stdout
    assert f"latentode test --ckpt_path {ckpt} --data.path {data}" in res.stderr


def _printed_bins(stdout: str) -> list[tuple[float, float, dict[str, float]]]:
    """The band factors of a calibration line: ``(lead from, lead to, {channel: factor})``
    per lead-time bin (``scaled a x0.72, b x1.3`` is one bin for every lead;
    ``scaled by lead time, a x0.7, b x1 (lead < 11.5); ...; a x2, b x3 (lead >= 26.5)``)."""
    number = r"\d+(?:\.\d+)?(?:e[+-]?\d+)?"
    text = stdout.split("scaled", 1)[1].split("\n", 1)[0].removeprefix(" by lead time,")
    bins = []
    for part in text.split(";"):
        factors = {ch: float(v) for ch, v in re.findall(rf"(\w) x({number})", part)}
        span = re.search(rf"\(lead (?:< ({number})|({number})-({number})|>= ({number}))\)", part)
        lo, hi = -np.inf, np.inf
        if span:
            below, a, b, above = span.groups()
            lo = float(a or above) if (a or above) else -np.inf
            hi = float(below or b) if (below or b) else np.inf
        bins.append((lo, hi, factors))
    return bins


def test_predict_and_test_calibrate_the_bands_on_the_validation_series(tmp_path: Path) -> None:
    """Ten of 20 series validate, a quarter of each held out (about 10 values a series):
    ``predict`` scales each forecast value's band about its median by the factor it prints
    for the value's lead-time bin and channel, the median unchanged (against
    ``--no-calibrate``); with ``--no-calibrate_by_lead``, one factor per channel for every
    lead; ``test`` adds the calibrated row, whose mean band width is the model's times
    factors between the printed ones."""
    data = tmp_path / "series.csv"
    frame = write_csv(data, seed=2, n_series=20)
    args = csv_fit_args(data, tmp_path / "run", 2)
    args += ["--data.init_args.val_fraction", "0.5", "--data.init_args.holdout", "0.25"]
    fit = run_cli(*args)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    common = [*csv_predict_args(ckpt, data), "--n_samples", "30"]
    runs = {
        "lead": run_cli(*common, "--output", str(tmp_path / "lead.csv")),
        "one": run_cli(*common, "--output", str(tmp_path / "one.csv"), "--no-calibrate_by_lead"),
        "raw": run_cli(*common, "--output", str(tmp_path / "raw.csv"), "--no-calibrate"),
        "tails": run_cli(*common, "--output", str(tmp_path / "tails.csv"), "--calibrate_tails"),
    }
    for res in runs.values():
        assert res.returncode == 0, res.stderr[-3000:]
    assert (
        "calibrated on" in runs["lead"].stdout and "of 10 validation series" in runs["lead"].stdout
    )
    assert "calibrated" not in runs["raw"].stdout
    # 10 validation series are too few for an end at 0.95 (19): the central factors, said so
    assert "q05 and q95 each on its own" in runs["tails"].stdout
    assert "not, each end of a 90% band needs at least 19 validation series" in runs["tails"].stdout
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "tails.csv"), pd.read_csv(tmp_path / "lead.csv")
    )
    raw = pd.read_csv(tmp_path / "raw.csv")
    last = pd.to_datetime(frame.groupby("series_id").time.max())  # each history's end
    lead = (pd.to_datetime(raw.time) - raw.series_id.map(last)).dt.days.to_numpy()
    assert set(lead) == {5, 10, 15, 20}
    for name in ("lead", "one"):
        bins = _printed_bins(runs[name].stdout)
        assert (len(bins) > 1) == (name == "lead")
        out = pd.read_csv(tmp_path / f"{name}.csv")
        pd.testing.assert_series_equal(out.q50, raw.q50)
        seen = set()
        for lo, hi, factors in bins:
            assert set(factors) == {"a", "b"}
            for ch, lam in factors.items():
                rows = (raw.channel == ch).to_numpy() & (lo <= lead) & (lead < hi)
                seen |= set(np.flatnonzero(rows))
                for q in ("q05", "q95"):
                    ratio = (out[q] - out.q50)[rows] / (raw[q] - raw.q50)[rows]
                    np.testing.assert_allclose(ratio, lam, rtol=5e-3)  # printed to 3 digits
                np.testing.assert_allclose(out["std"][rows] / raw["std"][rows], lam, rtol=5e-3)
        assert seen == set(range(len(raw)))  # every row has been checked against its bin
    used = {
        lam
        for lo, hi, f in _printed_bins(runs["lead"].stdout)
        for lam in f.values()
        if ((lo <= lead) & (lead < hi)).any()
    }
    assert len(used) > 2  # the forecast's leads fall in bins with different factors
    _check_levels(runs["lead"].stdout, common, tmp_path, raw, lead)
    scores, stdout = _test_scores(ckpt, data, tmp_path / "scores.csv")
    banded, more = _test_scores(ckpt, data, tmp_path / "bands.csv", "--levels", "80")
    assert list(banded.columns) == [*scores.columns, "coverage80", "width80"]
    assert "Calibration: 80% bands, where the model's own covered" in more
    model_rows = banded[banded.method.str.startswith("latent ODE")]
    assert (model_rows.width80 < model_rows.width90).all()
    ext = scores[scores.task == "extrapolation"].set_index("method")
    model, calibrated = ext.loc["latent ODE"], ext.loc["latent ODE, calibrated bands"]
    assert "Calibration: 5-95% bands calibrated on" in stdout
    assert "Scored:" not in stdout  # the training file: its test series only
    assert calibrated.n_values == model.n_values and 0 <= calibrated.coverage90 <= 1
    # each width is scaled by its bin's and channel's factor: the mean width by a weighted
    # mean of them
    lam = sorted(v for _, _, f in _printed_bins(stdout) for v in f.values())
    ratio = calibrated.width90 / model.width90
    assert lam[0] * (1 - 5e-3) <= ratio <= lam[-1] * (1 + 5e-3)
    # A file without the test series: every series is scored, the validation ones too, so
    # the calibrated bands are not scored there (they would be judged where they were fitted).
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    no_test = tmp_path / "no_test.csv"
    csv = pd.read_csv(data)
    csv[~csv.series_id.isin(state["test_series"])].to_csv(no_test, index=False)
    scores, stdout = _test_scores(ckpt, no_test, tmp_path / "scores_no_test.csv")
    assert "latent ODE, calibrated bands" not in set(scores.method)
    assert "Calibrated bands not scored" in stdout
    # ... and it is said what was scored: no test series, the validation ones, the others
    n_test, n_val = len(state["test_series"]), len(state["val_series"])
    n_other = csv.series_id.nunique() - n_test - n_val
    assert (
        f"Scored: the file lacks {n_test} of the fit's {n_test} test series, so all its "
        f"{n_val + n_other} series are scored: {n_val} validation series (they chose the "
        f"checkpoint and its bands), {n_other} other series (any the fit trained on"
    ) in stdout


def _check_levels(
    plain: str, common: list[str], tmp_path: Path, raw: pd.DataFrame, lead: np.ndarray
) -> None:
    """``--levels 50 80 95`` beside the default run (printed ``plain``): the 50% band's ends
    are scaled by the factors printed for it; ten validation series are too few for a 95%
    band's own (19), so it takes the 5-95% band's; every band holds the narrower ones, and
    the mean, std and median are the default run's. Bad levels exit 2 naming the value."""
    out = tmp_path / "levels.csv"
    res = run_cli(
        *common, "--output", str(out), "--levels", "50", "80", "95", "--plot", str(tmp_path / "png")
    )
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    first = next(i for i, x in enumerate(lines) if "5-95% bands calibrated on" in x)
    # the 5-95% band's factors are the default run's, unless nesting raised them (printed)
    assert lines[first] in plain or "raised by nesting" in lines[first]
    assert lines[first + 1].startswith("latentode predict: 50% bands, where the model's own")
    assert "95% bands" in lines[first + 3] and "the 5-95% band's factors" in lines[first + 3]
    assert "needs at least 19 validation series" in lines[first + 3]
    got = pd.read_csv(out)
    names = ["q02.5", "q05", "q10", "q25", "q50", "q75", "q90", "q95", "q97.5"]
    assert list(got.columns) == ["series_id", "time", "channel", "mean", "std", *names]
    for lo, hi, factors in _printed_bins(lines[first]):  # printed as applied
        for ch, lam in factors.items():
            rows = (raw.channel == ch).to_numpy() & (lo <= lead) & (lead < hi)
            for q in ("q05", "q95"):
                ratio = (got[q] - got.q50)[rows] / (raw[q] - raw.q50)[rows]
                np.testing.assert_allclose(ratio, lam, rtol=5e-3)
    default = pd.read_csv(tmp_path / "lead.csv")
    for column in ("mean", "std", "q50"):
        pd.testing.assert_series_equal(got[column], default[column])
    assert (got.q05 <= default.q05).all() and (got.q95 >= default.q95).all()
    assert (np.diff(got[names].to_numpy(), axis=1) >= 0).all()
    # the innermost band is never widened: its ends are its own factors' exactly
    bare = run_cli(
        *common, "--output", str(tmp_path / "bare.csv"), "--no-calibrate", "--levels", "50"
    )
    assert bare.returncode == 0, bare.stderr[-3000:]
    own = pd.read_csv(tmp_path / "bare.csv")
    pd.testing.assert_frame_equal(own[raw.columns], raw)  # the model's bands: no change
    for lo, hi, factors in _printed_bins(lines[first + 1]):
        for ch, lam in factors.items():
            rows = (raw.channel == ch).to_numpy() & (lo <= lead) & (lead < hi)
            for q in ("q25", "q75"):
                ratio = (got[q] - got.q50)[rows] / (own[q] - own.q50)[rows]
                np.testing.assert_allclose(ratio, lam, rtol=5e-3)
    assert len(list((tmp_path / "png").glob("*.png"))) == raw.series_id.nunique()
    for bad, needle in (
        ("0.8", "(80 for a share of 0.8)"),
        ("100", "--levels 100"),
        ("x", "--levels x"),
    ):
        res = run_cli(*common, "--output", str(tmp_path / "bad.csv"), "--levels", bad)
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_fit_and_predict_a_model_anchored_at_the_first_observation(tmp_path: Path) -> None:
    """``anchor: first`` and ``center: mean`` (configs/csv.yaml's are last / last) from the
    command line: the checkpoint keeps them, and predict writes finite, ordered forecasts on
    the 5-day grid after each series' last observation."""
    data = tmp_path / "series.csv"
    write_csv(data)
    args = csv_fit_args(data, tmp_path / "run", 3)
    first = ["--model.init_args.config.anchor", "first", "--model.init_args.config.center", "mean"]
    fit = run_cli(*args, *first)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert saved["hyper_parameters"]["config"]["anchor"] == "first"
    assert saved["hyper_parameters"]["config"]["center"] == "mean"
    out = tmp_path / "forecast.csv"
    res = run_cli(*csv_predict_args(ckpt, data), "--output", str(out), "--n_samples", "20")
    assert res.returncode == 0, res.stderr[-3000:]
    f = pd.read_csv(out)
    assert len(f) == 6 * 4 * 2
    assert np.isfinite(f[["mean", "std", "q05", "q50", "q95"]].to_numpy()).all()
    assert ((f.q05 <= f.q50) & (f.q50 <= f.q95)).all()
    assert f.loc[f.channel == "a", "mean"].between(900, 1100).all()


def test_predict_and_test_pool_several_checkpoints(fitted, tmp_path: Path) -> None:
    """``--ckpt_path A B``: a second fit of the same file with another seed is pooled with the
    first (each contributes --n_samples paths); the forecast mean is the average of the
    members' means within its Monte-Carlo error. Members fitted on another series split are
    refused with exit 2, naming both checkpoints and the field."""
    ckpt, data = fitted
    fit = run_cli(*csv_fit_args(data, tmp_path / "run1", 3), "--seed_everything", "1")
    assert fit.returncode == 0, fit.stderr[-3000:]
    other = tmp_path / "run1" / "checkpoints" / "last.ckpt"
    k = 1600
    frames = {}
    for name, ckpts in {"a": [ckpt], "b": [other], "ab": [ckpt, other]}.items():
        args = ["predict", "--ckpt_path", *map(str, ckpts), "--data.path", str(data)]
        out = tmp_path / f"{name}.csv"
        res = run_cli(
            *args, "--horizon", "20D", "--step", "5D", "--n_samples", str(k), "--output", str(out)
        )
        assert res.returncode == 0, res.stderr[-3000:]
        frames[name] = pd.read_csv(out)
        assert ("pooled" in res.stdout) == (name == "ab")
    a, b, ab = frames["a"], frames["b"], frames["ab"]
    assert (
        len(ab) == len(a)
        and (ab[["series_id", "time", "channel"]] == a[["series_id", "time", "channel"]])
        .all()
        .all()
    )
    # the calibration factor differs per model, so compare the model's own bands
    assert np.isfinite(ab[["mean", "std", "q05", "q50", "q95"]].to_numpy()).all()
    # a bound on the standard error of the difference (the std includes the noise, which the
    # means do not average over): its variance is at most (s_a^2 + s_b^2) / (2 k)
    se = np.sqrt(a["std"] ** 2 + b["std"] ** 2 + ab["std"] ** 2 * 2) / np.sqrt(k)
    assert (np.abs(ab["mean"] - (a["mean"] + b["mean"]) / 2) <= 5 * se).all()
    assert (np.abs(a["mean"] - b["mean"]) > 10 * se).any()  # two different fits
    table = tmp_path / "scores.csv"
    args = ["--ckpt_path", str(ckpt), str(other), "--data.path", str(data), "--n_samples", "20"]
    res = run_cli("test", *args, "--output", str(table))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 checkpoints pooled" in res.stdout
    assert np.isfinite(pd.read_csv(table)[["mse", "mae"]].to_numpy()).all()
    # another series split: refused before anything is forecast
    ck = torch.load(other, weights_only=False)
    ck["hyper_parameters"]["data_state"]["val_series"].append("another")
    moved = tmp_path / "moved.ckpt"
    torch.save(ck, moved)
    res = run_cli("test", "--ckpt_path", str(ckpt), str(moved), "--data.path", str(data))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{moved} and {ckpt} differ in their validation series" in res.stderr
    res = run_cli("test", "--ckpt_path", str(ckpt), str(ckpt), "--data.path", str(data))
    assert res.returncode == 2 and "names a checkpoint twice" in res.stderr


def test_transformed_channels_fit_forecast_bands_inside_their_domains(tmp_path: Path) -> None:
    """``--data.init_args.transform``: a concentration on a log scale, a count with zeros on
    a log1p scale and a percentage near 0 and 100 on a logit(0, 100) scale. The checkpoint
    keeps the transforms, the fit scores them on their scales, every forecast quantile stays
    in its channel's domain although the values sit near its edges with wide swings, and a
    history with a 0 concentration, or a share of 100, is refused by its line."""
    rng, shares = np.random.default_rng(5), np.random.default_rng(6)
    rows = []
    for s in range(6):
        for d in np.sort(rng.choice(120, size=40, replace=False)):
            rate = 0.3 * np.exp(np.sin(2 * np.pi * d / 30 + s) + rng.normal(0, 0.5))
            t = pd.Timestamp("2020-01-01") + pd.Timedelta(days=int(d))
            logit = (-1) ** s * 3.5 + np.sin(2 * np.pi * d / 30) + shares.normal(0, 0.5)
            share = 100 / (1 + np.exp(-logit))
            rows.append((f"s{s}", t.strftime("%Y-%m-%d"), rate, rng.poisson(rate), share))
    frame = pd.DataFrame(rows, columns=["series_id", "time", "a", "b", "c"])
    data = tmp_path / "pos.csv"
    frame.to_csv(data, index=False)
    assert (frame["b"] == 0).mean() > 0.3
    assert (frame["c"] < 3).mean() > 0.15 and (frame["c"] > 97).mean() > 0.15
    args = csv_fit_args(data, tmp_path / "run", 3)
    transform = "{a: log, b: log1p, c: 'logit(0, 100.0)'}"
    fit = run_cli(*args, "--data.init_args.transform", transform)
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    assert state["normalisation"]["transform"] == ["log", "log1p", "logit(0, 100)"]
    assert state["normalisation"]["mean"][0] == pytest.approx(-1.3, abs=0.6)  # log(0.3) ~ -1.2
    logs = pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    assert {"val/rmse[log_a]", "val/rmse[log1p_b]", "val/rmse[logit_c]"} <= set(logs.columns)
    out = tmp_path / "forecast.csv"
    res = run_cli(*csv_predict_args(ckpt, data), "--output", str(out), "--n_samples", "50")
    assert res.returncode == 0, res.stderr[-3000:]
    f = pd.read_csv(out)
    a, b, c = (f[f.channel == k] for k in "abc")
    assert len(a) == len(b) == len(c) == 6 * 4
    assert (a.q05 > 0).all() and (b.q05 >= 0).all() and (b.q05 == 0).any()
    assert (c.q05 > 0).all() and (c.q95 < 100).all() and (c["mean"].between(0, 100)).all()
    assert ((f.q05 <= f.q50) & (f.q50 <= f.q95) & (f["std"] > 0)).all()
    assert np.isfinite(f[["mean", "std", "q05", "q50", "q95"]].to_numpy()).all()
    assert (a.q95 - a.q50).sum() > (a.q50 - a.q05).sum()  # longer above the median
    refusals = [(3, "a", 0.0, "column 'a' is modelled on a log scale", "(line 5)")]
    refusals += [(7, "c", 100.0, "'c' is modelled on a logit(0, 100) scale", "(line 9)")]
    for row, column, value, said, line in refusals:
        bad = frame.copy()
        bad.loc[row, column] = value
        bad.to_csv(tmp_path / "bad.csv", index=False)
        res = run_cli(*csv_predict_args(ckpt, tmp_path / "bad.csv"), "--output", str(out) + "2")
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert said in res.stderr and line in res.stderr
        assert not Path(str(out) + "2").exists()


def test_validate_or_resume_on_a_file_read_otherwise_is_refused(fitted, tmp_path: Path) -> None:
    """`validate` (and a resumed `fit`) with ``--ckpt_path`` on a file whose channels come in
    another order, or whose values the data module normalises otherwise, stop with both named
    and exit 2, before the weights load (once: channel a scored as b without a word, and a
    state-dict size mismatch traceback for other channels). The fit's own file validates."""
    from latentode.systems.latent_ode import check_same_data

    ckpt, data = fitted
    frame = pd.read_csv(data)
    swapped = tmp_path / "swapped.csv"
    frame[["series_id", "time", "b", "a"]].to_csv(swapped, index=False)
    args = [a for a in csv_fit_args(data, tmp_path / "run", 3) if a != "fit"]
    path_at = args.index(str(data))
    for path, stage, message in (
        (swapped, "validate", "fitted on the channels ['a', 'b'], in this order; the data"),
        (swapped, "fit", "fitted on the channels ['a', 'b'], in this order; the data"),
    ):
        args[path_at] = str(path)
        res = run_cli(stage, *args, "--ckpt_path", str(ckpt))
        assert res.returncode == 2, res.stderr[-3000:]
        assert message in res.stderr and "Traceback" not in res.stderr
        assert "use `latentode test --ckpt_path CKPT --data.path FILE`" in res.stderr
    args[path_at] = str(data)
    res = run_cli("validate", *args, "--ckpt_path", str(ckpt))
    assert res.returncode == 0, res.stderr[-3000:]
    state = torch.load(ckpt, weights_only=True)["hyper_parameters"]["data_state"]
    check_same_data(state, state)
    other = {**state, "normalisation": {**state["normalisation"], "std": [1.0, 2.0]}}
    with pytest.raises(DataError, match="normalisation of the values differs"):
        check_same_data(state, other)
    with pytest.raises(DataError, match="time scale differs"):
        check_same_data(state, {**state, "time_scale": 2.0 * state["time_scale"]})
    dates = {**state, "time_encoding": {**state["time_encoding"], "unit": "W"}}
    with pytest.raises(DataError, match="in unit 'D'; the data module reads datetime in unit"):
        check_same_data(state, dates)


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


def test_output_paths_that_cannot_be_written_are_refused_before_any_work(
    fitted, tmp_path: Path, capsys
) -> None:
    """A directory as --output, a file under a file, --plot under a file, a directory or a
    data file as --ckpt_path: exit 2 with the option named and nothing written (before,
    tracebacks, one after the forecast had run and left ``DIR.partial``). ``--output -``
    writes the table to standard output and the summary to standard error."""
    from latentode.cli import predict_main, test_main

    ckpt, data = fitted
    folder = tmp_path / "folder"
    folder.mkdir()
    base = ["--data.path", str(data), "--horizon", "10D", "--n_samples", "4"]
    cases = {
        "directory": (
            [str(ckpt)],
            ["--output", str(folder), "--overwrite"],
            f"--output {folder} is a directory; name the file to write, such as "
            f"{folder / 'forecast.csv'}",
        ),
        "under a file": (
            [str(ckpt)],
            ["--output", f"{data}/f.csv"],
            f"--output {data}/f.csv: {data} is a file, so no directory can be made",
        ),
        "plot under a file": (
            [str(ckpt)],
            ["--output", str(tmp_path / "f.csv"), "--plot", f"{data}/pngs"],
            f"--plot {data}/pngs: {data} is a file",
        ),
        "checkpoint directory": (
            [str(ckpt.parent.parent)],
            ["--output", str(tmp_path / "f.csv")],
            f"--ckpt_path {ckpt.parent.parent} is a directory; name a checkpoint file, such "
            f"as {ckpt}",
        ),
        "data as checkpoint": (
            [str(data)],
            ["--output", str(tmp_path / "f.csv")],
            f"--ckpt_path {data} is not a checkpoint (a data file?)",
        ),
    }
    for name, (ckpts, extra, needle) in cases.items():
        capsys.readouterr()
        assert predict_main(["--ckpt_path", *ckpts, *base, *extra]) == 2, name
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (name, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # nothing written
    assert list(folder.iterdir()) == []

    capsys.readouterr()
    assert predict_main(["--ckpt_path", str(ckpt), *base, "--output", "-"]) == 0
    got = capsys.readouterr()
    table = pd.read_csv(io.StringIO(got.out))
    assert list(table.columns[:3]) == ["series_id", "time", "channel"] and len(table) > 0
    assert "wrote" in got.err and "standard output" in got.err

    capsys.readouterr()
    score = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    assert test_main([*score, "--output", str(folder)]) == 2
    assert f"such as {folder / 'scores.csv'}" in capsys.readouterr().err
    assert test_main([*score, "--output", "-"]) == 2
    assert "printed on standard output already" in capsys.readouterr().err


def test_fit_refuses_a_root_dir_that_is_a_file_and_a_ckpt_path_that_is_data(
    tmp_path: Path, capsys
) -> None:
    """Both stop before any work with the option named (before: NotADirectoryError after the
    model was built; an IndexError from the unpickler)."""
    from latentode.cli import main

    data = tmp_path / "series.csv"
    write_csv(data)
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    cases = {
        "root is a file": (
            ["--trainer.default_root_dir", str(afile)],
            f"--trainer.default_root_dir {afile} is a file; name a directory",
        ),
        "root under a file": (
            ["--trainer.default_root_dir", f"{afile}/run"],
            f"{afile} is a file, so no directory can be made in its place",
        ),
        "data as checkpoint": (
            ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(data)],
            f"--ckpt_path {data} is not a checkpoint (a data file?)",
        ),
        "folder as checkpoint": (
            ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(tmp_path)],
            f"--ckpt_path {tmp_path} is a directory; name a checkpoint file.",
        ),
        "missing checkpoint": (
            ["--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", "no.ckpt"],
            "--ckpt_path no.ckpt: no such file.",
        ),
    }
    for name, (extra, needle) in cases.items():
        capsys.readouterr()
        args = ["fit", "--config", "configs/csv.yaml", "--data.init_args.path", str(data)]
        with pytest.raises(SystemExit) as stop:
            main([*args, "--trainer.max_steps", "1", *extra])
        assert stop.value.code == 2, name
        err = capsys.readouterr().err
        assert needle in err, (name, err)
    assert afile.read_text() == "mine\n"
    assert not (tmp_path / "run").exists()


def test_plot_names_of_very_long_ids_fit_a_file_system_and_stay_apart() -> None:
    """File systems take 255 bytes per name: stems are cut to PLOT_STEM characters, and two
    ids cut to the same start are numbered."""
    from latentode.cli import PLOT_STEM, plot_names

    ids = ["x" * 300, "x" * 300 + "y", "short"]
    names = plot_names(ids)
    assert names == [
        "x" * PLOT_STEM + "__1.png",
        "x" * PLOT_STEM + "__2.png",
        "short.png",
    ]
    assert max(len(n.encode()) for n in names) < 255


def test_the_readmes_python_forecast_is_what_predict_writes(fitted, tmp_path: Path) -> None:
    """The README's code block, run on this fit and file, gives the table `latentode predict`
    writes with the same settings, to every digit."""
    from latentode.cli import predict_main

    ckpt, data = fitted
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index("```python\nfrom latentode.calibration import calibrate")
    code = text[start + len("```python\n") : text.index("```", start + 10)]
    code = code.replace("runs/csv/checkpoints/last.ckpt", str(ckpt))
    code = code.replace("data/fertility_worldbank.csv", str(data))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = tmp_path / "f.csv"
    args = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--horizon", "10", "--step", "1"]
    assert predict_main([*args, "--output", str(out)]) == 0
    written = pd.read_csv(out)
    assert len(written) == 6 * 10 * 2
    pd.testing.assert_frame_equal(scope["result"].frame.reset_index(drop=True), written,
                                  check_dtype=False)  # fmt: skip


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


def test_output_never_replaces_an_input_file(fitted, tmp_path: Path, capsys) -> None:
    """``--output`` naming the command's own --data.path, --times or --ckpt_path file (or a
    link to one) is refused, also with --overwrite, and the file is kept: `predict` wrote
    the forecast over the history, times or checkpoint it read, and `test` its table of errors
    over the history or checkpoint. An --output that is a series' --plot PNG is refused too
    (the plot replaced the forecast, which was reported written there)."""
    from latentode.cli import predict_main, test_main

    ckpt, data = (shutil.copy(p, tmp_path / p.name) for p in fitted)  # copies, kept or not
    times = tmp_path / "times.csv"
    pd.DataFrame(_days_after_last(data, (2,))[1], columns=["series_id", "time"]).to_csv(
        times, index=False
    )
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    kept = {p: p.read_bytes() for p in (ckpt, data, times)}
    inputs = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    cases = [
        (predict_main, ["--times", str(times)], times, "--times", "the forecast"),
        (predict_main, [], data, "--data.path", "the forecast"),
        (predict_main, [], link, "--data.path", "the forecast"),
        (predict_main, [], ckpt, "--ckpt_path", "the forecast"),
        (test_main, [], data, "--data.path", "the table of errors"),
        (test_main, [], ckpt, "--ckpt_path", "the table of errors"),
    ]
    for run, extra, out, option, what in cases:
        horizon = ["--horizon", "2D", "--no-calibrate"] if run is predict_main else []
        capsys.readouterr()
        assert run([*inputs, *horizon, *extra, "--output", str(out), "--overwrite"]) == 2
        prog = "predict" if run is predict_main else "test"
        assert capsys.readouterr().err == (
            f"latentode {prog}: error: --output {out} is the {option} file; {what} would "
            "replace it. Name another file for --output (nothing was written).\n"
        )
        assert {p: p.read_bytes() for p in kept} == kept, (prog, out)
    plots = tmp_path / "plots"  # the PNG of s3 replaced the forecast written there first
    target = plots / "s3.png"
    args = [*inputs, "--horizon", "2D", "--no-calibrate", "--plot", str(plots)]
    capsys.readouterr()
    assert predict_main([*args, "--output", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"latentode predict: error: --output {target} is the --plot file of series 's3'; its "
        "plot would replace the forecast. Name another file for --output, or another --plot "
        "directory (nothing was written).\n"
    )
    assert not plots.exists()


def test_levels_whose_columns_would_share_a_name_are_refused(
    fitted, tmp_path: Path, capsys
) -> None:
    """Column names keep 6 digits: ``--levels 50.000001 50`` wrote q25, q25, q75, q75 (and
    99.99999 with 99.999991 q100 twice, 90.0000001 a second q05), a table whose columns cannot
    be told apart. `predict` and `test` refuse them naming both levels; a level given twice is
    one band, as before."""
    from latentode.cli import predict_main, test_main

    ckpt, data = fitted
    out = tmp_path / "f.csv"
    base = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    cases = {
        ("50.000001", "50"): "--levels 50: its band would be written in column q25, as the "
        "50.000001% band is",
        ("99.99999", "99.999991"): "--levels 99.999991: its band would be written in column "
        "q100, as the 99.99999% band is",
        ("90.0000001",): "--levels 90.0000001: its band would be written in column q05, as the "
        "90% band is",
    }
    for levels, message in cases.items():
        for run, prog, extra in (
            (predict_main, "predict", ["--horizon", "2D", "--no-calibrate", "--output", str(out)]),
            (test_main, "test", ["--output", str(out)]),
        ):
            capsys.readouterr()
            assert run([*base, *extra, "--levels", *levels]) == 2, (prog, levels)
            assert capsys.readouterr().err == (
                f"latentode {prog}: error: {message} (column names keep 6 digits); give levels "
                "that differ within them.\n"
            )
            assert not out.exists()
    args = [*base, "--horizon", "2D", "--no-calibrate", "--output", str(out)]
    assert predict_main([*args, "--levels", "50", "50"]) == 0
    assert list(pd.read_csv(out).columns[3:]) == ["mean", "std", "q05", "q25", "q50", "q75", "q95"]
