"""Band calibration of ``latentode predict`` / ``test`` on the validation series: factors
per lead-time bin and channel, --levels bands, and calibrated scores."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cli_helpers import run_cli
from csv_cli_helpers import _test_scores, csv_fit_args, csv_predict_args, write_csv


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
