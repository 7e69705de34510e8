"""Shared by the experiment scripts: the hand-written analysis kept beside a report."""

from __future__ import annotations

from pathlib import Path

__all__ = ["notes", "publish"]


def notes(out: Path) -> str:
    """The hand-written analysis kept beside the report (``<stem>_notes.md``), if any."""
    path = out.with_name(f"{out.stem}_notes.md")
    return "\n" + path.read_text() if path.exists() else ""


def publish(text: str, output: str | None) -> Path | None:
    """Print a report and, given ``output``, write it there with its notes appended."""
    print(text)
    if not output:
        return None
    out = Path(output)
    out.write_text(text + notes(out))
    return out
