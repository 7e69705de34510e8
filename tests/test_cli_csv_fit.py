"""``latentode fit`` on a user's CSV, run for real in subprocesses: metrics in user units,
how the file is read, held-out splits, anchoring and transformed channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli
from csv_cli_helpers import _test_scores, csv_fit_args, csv_predict_args, write_csv


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
