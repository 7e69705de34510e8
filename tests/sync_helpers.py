"""Counting host synchronisations: the Tensor methods that copy a value to the host."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")


def count_syncs(monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``run()`` with the host-synchronising Tensor methods wrapped by counters."""
    count = 0

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            return original(self, *args, **kwargs)

        return wrapper

    with monkeypatch.context() as patch:
        for name in SYNC_METHODS:
            patch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        result = run()
    return result, count
