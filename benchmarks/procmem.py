"""Process memory from /proc/self/status (Linux), without heavy imports."""

from __future__ import annotations

__all__ = ["status_kib"]


def status_kib(field: str) -> int:
    """A memory field of /proc/self/status (`VmRSS`, `VmHWM`) in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")
