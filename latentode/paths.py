"""Where the commands write: output files and directories checked before any work is done,
and files written whole or not at all.

A path the user names is checked up front, so that a forecast that ran for minutes is not
lost to a name that cannot be written (a directory, a file where a directory is needed, a
folder this user cannot write to), and the user reads which option to change instead of a
traceback.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .data.errors import DataError

__all__ = ["STDOUT", "check_output_dir", "check_output_file", "write_whole"]

STDOUT = "-"  # ``--output -``: the table goes to standard output


def _first_existing(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists."""
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")  # pragma: no cover - the root exists


def _check_writable_under(path: Path, option: str, named: Path) -> None:
    """Refuse ``path`` (a directory to use or to create) when its nearest existing ancestor
    is a file or cannot be written to; the message names ``option`` and its value
    ``named``."""
    there = _first_existing(path.absolute())
    if not there.is_dir():
        raise DataError(
            f"{option} {named}: {there} is a file, so no directory can be made in its place; "
            "name another directory (nothing was written)."
        )
    if not os.access(there, os.W_OK | os.X_OK):
        raise DataError(
            f"{option} {named}: this user cannot write in {there}; name a directory you can "
            "write to (nothing was written)."
        )


def check_output_dir(path: str | Path, option: str) -> Path:
    """``path`` as a directory the command can create or write PNGs / checkpoints into.

    Raises:
        DataError: ``path`` is a file, lies under a file, or under a folder this user cannot
            write to; the message names ``option``.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError(f"{option} {out} is a file; name a directory (nothing was written).")
    _check_writable_under(out, option, out)
    return out


def check_output_file(
    path: str | Path, overwrite: bool, option: str = "--output", example: str = "forecast.csv"
) -> Path:
    """``path`` as a file the command may write, checked before any work is done.

    Raises:
        DataError: ``path`` is a directory (the message suggests ``example`` in it), exists
            and ``overwrite`` is False, or its folder cannot be created or written.
    """
    out = Path(path)
    if out.is_dir():
        raise DataError(
            f"{option} {out} is a directory; name the file to write, such as "
            f"{out / example} (nothing was written)."
        )
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; pass --overwrite to replace it (nothing was written).")
    _check_writable_under(out.parent, option, out)
    return out


def _umask(status: str = "/proc/self/status") -> int:
    """This process's umask: on Linux the ``Umask:`` line of ``status`` (octal), read without
    changing it; elsewhere (no such file or line) by setting it and back, which a thread
    creating a file in between would see as 0o022."""
    with (
        contextlib.suppress(OSError, ValueError),
        open(status, encoding="ascii", errors="replace") as f,
    ):
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split(":", 1)[1].strip(), 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a new temporary file beside ``path`` and move it onto ``path``: a
    reader never sees half a file, and an existing ``path`` is replaced only by a complete
    one.

    The temporary file (``.<name>.<random>.partial`` in ``path``'s folder) is created afresh,
    so it is never a file that was already there: a user's own ``<name>.partial`` is left
    alone. ``write`` is given it existing and empty, and must overwrite it (open it ``"w"``).
    It gets the permissions a new file would (not ``mkstemp``'s owner-only ones). Whatever
    ``write`` raises, the temporary file is removed.

    Raises:
        DataError: the system refused the write (disk full, permissions changed meanwhile);
            the message names ``path``.
    """
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        tmp = Path(name)
        os.close(fd)
        tmp.chmod(0o666 & ~_umask())
        write(tmp)
        tmp.replace(path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise DataError(f"could not write {path}: {e.strerror or e}.") from None
        raise
