"""Files the user wrote are never lost to what latentode writes: `write_whole`'s temporary
file is a new one (a user's own ``<out>.partial`` was replaced, then removed), and the
configuration a run saves replaces only a ``config.yaml`` that a latentode run saved (with
``--trainer.logger false`` Lightning replaced any ``config.yaml`` in
``--trainer.default_root_dir``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import run_cli

from latentode.cli.config_save import CONFIG_MARK
from latentode.data.errors import DataError
from latentode.paths import write_whole

# --- write_whole ------------------------------------------------------------------------------


def _listing(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` (hidden ones too) and its bytes."""
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_write_whole_leaves_a_users_partial_file_alone(tmp_path: Path) -> None:
    out = tmp_path / "forecast.csv"
    mine = tmp_path / "forecast.csv.partial"
    mine.write_bytes(b"my own notes\n")
    write_whole(out, lambda tmp: tmp.write_text("a,b\n1,2\n"))
    assert _listing(tmp_path) == {"forecast.csv": b"a,b\n1,2\n", mine.name: b"my own notes\n"}
    # again, over the file it wrote: replaced, nothing left beside it
    write_whole(out, lambda tmp: pd.DataFrame({"x": [3]}).to_csv(tmp, index=False))
    assert _listing(tmp_path) == {"forecast.csv": b"x\n3\n", mine.name: b"my own notes\n"}


def test_write_whole_gives_write_an_empty_new_file_it_overwrites(tmp_path: Path) -> None:
    """The temporary file exists (empty) when ``write`` gets it, beside ``path`` under
    another name; the file moved in has the permissions of a new file."""
    out = tmp_path / "out.csv"
    seen: list[tuple[Path, bytes]] = []

    def write(tmp: Path) -> None:
        seen.append((tmp, tmp.read_bytes()))
        tmp.write_text("whole\n")

    write_whole(out, write)
    [(tmp, held)] = seen
    assert held == b"" and tmp.parent == tmp_path and tmp.name != out.name
    assert tmp.name.startswith(".out.csv.") and tmp.name.endswith(".partial")
    assert not tmp.exists() and out.read_text() == "whole\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("bug")])
def test_a_failed_write_leaves_no_temporary_file_and_the_old_output(
    tmp_path: Path, error: Exception
) -> None:
    """Half written, then refused by the system (a DataError naming the output) or failing
    otherwise (raised as it is): the earlier output and the user's ``.partial`` unchanged,
    no temporary file left."""
    out = tmp_path / "forecast.csv"
    out.write_bytes(b"earlier forecast\n")
    (tmp_path / "forecast.csv.partial").write_bytes(b"my own notes\n")
    before = _listing(tmp_path)

    def write(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise error

    if isinstance(error, OSError):
        with pytest.raises(DataError) as err:
            write_whole(out, write)
        assert str(err.value) == f"could not write {out}: No space left on device."
    else:
        with pytest.raises(RuntimeError, match="bug"):
            write_whole(out, write)
    assert _listing(tmp_path) == before


def test_write_whole_under_a_file_names_the_output(tmp_path: Path) -> None:
    """No temporary file can be made (its folder would be a file): a DataError naming the
    output, and nothing written."""
    data = tmp_path / "data.csv"
    data.write_bytes(b"x\n1\n")
    out = data / "f.csv"
    with pytest.raises(DataError, match=f"could not write {re.escape(str(out))}: "):
        write_whole(out, lambda tmp: tmp.write_text("x\n"))
    assert _listing(tmp_path) == {"data.csv": b"x\n1\n"}


# --- the configuration a run saves ------------------------------------------------------------


def _data(folder: Path) -> Path:
    """Eight series of ten whole times, one channel (the tiny fit of test_csv_audit)."""
    path = folder / "f.csv"
    rows = "".join(f"s{k},{t},{t * 0.1 + k}\n" for k in range(8) for t in range(10))
    path.write_text("series_id,time,v\n" + rows)
    return path


def _run(sub: str, data: Path, root: Path, *extra: str):
    """``latentode SUB`` of configs/csv.yaml on ``data``, logger off, root ``root``."""
    return run_cli(
        *(sub, "--config", "configs/csv.yaml", "--data.init_args.path", str(data)),
        *("--trainer.logger", "false", "--trainer.default_root_dir", str(root)),
        *("--trainer.enable_progress_bar", "false", *extra),
    )


def test_a_config_yaml_latentode_did_not_save_is_never_replaced(tmp_path: Path) -> None:
    """A ``config.yaml`` of the user's in the root folder (not given with --config) was
    replaced by fit, validate and test with ``--trainer.logger false``; now refused with the
    file and the ways round named, exit 2, and nothing written."""
    root = tmp_path / "run"
    root.mkdir()
    data = _data(root)
    mine = root / "config.yaml"
    mine.write_bytes(b"# my experiment notes\nlr: 0.01 # tried 0.1, diverged\n")
    before = _listing(root)
    for sub, extra in (("fit", ("--trainer.max_steps", "1")), ("validate", ())):
        res = _run(sub, data, root, *extra)
        assert res.returncode == 2, res.stderr[-2000:]
        assert "Traceback" not in res.stderr
        message = re.findall(r"latentode: error: (.*)", res.stderr)
        assert message == [
            f"{mine} exists and a latentode run did not save it (its first line is not "
            f"'# saved by latentode ...'): this {sub} saves its configuration there and would "
            "replace it (with --trainer.logger false the configuration is saved in "
            "--trainer.default_root_dir). Move it elsewhere, give another "
            "--trainer.default_root_dir, or leave the logger on (each run then saves it under "
            "<default_root_dir>/logs/version_N). Nothing was written."
        ], res.stderr[-2000:]
        assert _listing(root) == before  # byte-identical, no checkpoints, no other file
        assert not (root / "checkpoints").exists()


def test_a_saved_config_is_replaced_by_the_next_run_and_loads_as_a_config(
    tmp_path: Path,
) -> None:
    """With the logger off, a fit saves config.yaml (first line the latentode comment); its
    resume in the same root replaces it without complaint; the saved file runs a new fit
    with ``--config``."""
    root = tmp_path / "run"
    root.mkdir()
    data = _data(tmp_path)
    first = _run("fit", data, root, "--trainer.max_steps", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    saved = root / "config.yaml"
    lines = saved.read_text().splitlines()
    assert lines[0] == f"{CONFIG_MARK}fit: a later run in this folder replaces this file"
    assert "  max_steps: 1" in lines
    resumed = _run("fit", data, root, "--trainer.max_steps", "2", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "error" not in resumed.stderr
    lines = saved.read_text().splitlines()
    assert lines[0].startswith(f"{CONFIG_MARK}fit:") and "  max_steps: 2" in lines
    assert "  max_steps: 1" not in lines
    assert sorted(p.name for p in root.iterdir()) == ["checkpoints", "config.yaml"]
    # the saved configuration (comment and all) is a config for another run
    other = tmp_path / "other"
    again = run_cli("fit", "--config", str(saved), "--trainer.default_root_dir", str(other))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (other / "checkpoints" / "last.ckpt").is_file()
    assert (other / "config.yaml").read_text().startswith(f"{CONFIG_MARK}fit:")


def test_which_config_yaml_a_run_may_replace(tmp_path: Path) -> None:
    """None that is missing or that a latentode run saved; not the user's, nor a folder;
    with ``overwrite`` off (Lightning's default) none that exists."""
    from latentode.cli.config_save import SaveRunConfig

    target = tmp_path / "config.yaml"
    replaces = SaveRunConfig(None, None, overwrite=True)  # type: ignore[arg-type]
    keeps = SaveRunConfig(None, None, overwrite=False)  # type: ignore[arg-type]
    assert replaces._refusal(str(target), "fit") is None
    assert keeps._refusal(str(target), "fit") is None
    target.write_text(f"{CONFIG_MARK}test: a later run in this folder replaces this file\n")
    assert replaces._refusal(str(target), "fit") is None
    assert keeps._refusal(str(target), "fit").startswith(f"{target} exists: this fit saves")
    target.write_text("# saved by me\n")
    assert "a latentode run did not save it" in replaces._refusal(str(target), "test")
    target.unlink()
    target.mkdir()
    assert replaces._refusal(str(target), "validate").startswith(
        f"{target} is a directory, where this validate saves its configuration"
    )
