"""``latentode fit`` on a user's CSV: resuming from checkpoints, and the bad files, run
folders and checkpoints it refuses before any work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_helpers import run_cli
from csv_cli_helpers import csv_fit_args, write_csv

from latentode.data.errors import DataError


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
