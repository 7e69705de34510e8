"""Outputs of ``latentode predict`` / ``test`` on a CSV: files never replaced without
--overwrite (nor inputs ever), unwritable paths and clashing --levels columns refused."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pandas as pd
from cli_helpers import run_cli
from csv_cli_helpers import _days_after_last, csv_predict_args


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
    """Column names keep the quantiles to 12 digits: ``--levels 50.0000000001 50`` would
    write q25, q25, q75, q75 (with 6 digits, before session 46, 50.000001 did too), a table
    whose columns cannot be told apart. `predict` and `test` refuse them naming both levels;
    a level given twice is one band, as before; a band whose ends are the quantiles 0 and 1
    to 12 digits is refused."""
    from latentode.cli import predict_main, test_main

    ckpt, data = fitted
    out = tmp_path / "f.csv"
    base = ["--ckpt_path", str(ckpt), "--data.path", str(data), "--n_samples", "4"]
    clash = "(column names keep the quantiles to 12 digits); give levels that differ within them."
    cases = {
        ("50.0000000001", "50"): "--levels 50: its band would be written in column q25, as the "
        f"50.0000000001% band is {clash}",
        ("99.9999999999",): "--levels 99.9999999999: a band this close to 100% has its ends at "
        "quantiles that are 0 and 1 to 12 digits, the least and greatest draw; give at most "
        "99.9999999998.",
    }
    for levels, message in cases.items():
        for run, prog, extra in (
            (predict_main, "predict", ["--horizon", "2D", "--no-calibrate", "--output", str(out)]),
            (test_main, "test", ["--output", str(out)]),
        ):
            capsys.readouterr()
            assert run([*base, *extra, "--levels", *levels]) == 2, (prog, levels)
            assert capsys.readouterr().err == f"latentode {prog}: error: {message}\n"
            assert not out.exists()
    args = [*base, "--horizon", "2D", "--no-calibrate", "--output", str(out)]
    assert predict_main([*args, "--levels", "50", "50"]) == 0
    assert list(pd.read_csv(out).columns[3:]) == ["mean", "std", "q05", "q25", "q50", "q75", "q95"]
