"""``latentode test`` on a CSV: the model against baselines in user units, Lightning's
test, and forecasts and scores pooled over several checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from cli_helpers import run_cli
from csv_cli_helpers import _test_scores, csv_fit_args


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
