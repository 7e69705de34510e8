"""``latentode predict`` on a user's CSV: forecasts in user units, notes on unusual
histories, two processes, plot names, the memory budget and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli
from csv_cli_helpers import _test_scores, csv_predict_args


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
