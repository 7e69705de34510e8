"""How much one model call of `latentode.predictive.predictives` may draw, and the seeds
its draws come from.

A call holds every path of every segment it takes at each of the segment's times: its
path-times (`draws_held`). `draws_per_call` is how many fit in the memory one call may hold
(`CALL_BYTES`, or what `call_memory` sets within a block) at `PATH_TIME_BYTES` each; a longer
list of segments is taken in halves (`latentode.predictive.iter_predictives`). Each segment's
draws come from a generator seeded by `draw_seeds` from the run's seed and the series' own
name, so they do not depend on the segment's place in the call.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from .data.prep import Segment
from .ensemble import Ensemble
from .nn.base import ModelInputError
from .nn.latent_ode import LatentODE

__all__ = [
    "CALL_BYTES",
    "PATH_TIME_BYTES",
    "call_gb",
    "call_memory",
    "draw_seeds",
    "draws_held",
    "draws_per_call",
]

CALL_BYTES = 360 * 2**22
"""About the most memory one model call of `predictives` holds above the loaded process
(1.5 GB), counted as path-times (paths x segments x times, `draws_held`) at `PATH_TIME_BYTES`
each: `draws_per_call`. A larger list of segments is taken in halves, and a series that
alone needs more is refused (`latentode.horizon.future_times`)."""

PATH_TIME_BYTES = (290, 35)
"""The bytes one path-time holds in a call: a fixed part (the latent path, the solver's
stages) and one per channel (the decoded means, the noisy draws and their copies as they
are summarised). Fitted to the peaks of ``predict`` with the CSV default model at 2, 16 and
48 channels: 335, 720 and 1,950 bytes per path-time (`reports/predict_memory_48.md`)."""


_CALL = {"bytes": CALL_BYTES}  # what `call_memory` sets for the calls inside it


def draws_per_call(n_channels: int) -> int:
    """The most path-times one model call holds with ``n_channels`` channels: `CALL_BYTES`
    (or what `call_memory` set) over `PATH_TIME_BYTES`; 4,194,304 (2^22) for one or two
    channels, 766,471 for 48."""
    fixed, per_channel = PATH_TIME_BYTES
    return max(1, _CALL["bytes"] // (fixed + per_channel * max(n_channels, 2)))


def call_gb() -> float:
    """The memory one model call may hold now, in GB (`CALL_BYTES` or `call_memory`'s)."""
    return _CALL["bytes"] / 1e9


@contextmanager
def call_memory(gb: float | None) -> Iterator[None]:
    """Within the block, one model call holds about ``gb`` GB instead of `CALL_BYTES` (None:
    unchanged): ``latentode predict --call_memory``, for a machine with memory to spare.

    Raises:
        ModelInputError: ``gb`` is not a positive number.
    """
    if gb is None:
        yield
        return
    if not (math.isfinite(gb) and gb > 0):
        raise ModelInputError(f"--call_memory {gb}: give the GB one model call may hold, > 0.")
    before = _CALL["bytes"]
    _CALL["bytes"] = int(gb * 1e9)
    try:
        yield
    finally:
        _CALL["bytes"] = before


def draw_seeds(seed: int, keys: Sequence[str]) -> list[int]:
    """One seed per key (a series id, with whatever else tells its draws apart): a hash of
    ``seed`` and the key, so a series' draws follow from the seed and its own name alone, not
    from its place in the file or the call (`iter_predictives`)."""
    out = []
    for key in keys:
        digest = hashlib.blake2b(f"{int(seed)}\x1f{key}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little") >> 1)  # below 2**63: any torch seed
    return out


def draws_held(
    model: LatentODE | Ensemble,
    segs: list[Segment],
    future: list[np.ndarray],
    n_samples: int,
    on_history: bool = False,
) -> int:
    """Path-times one call of `predictives` holds for these segments: ``n_samples`` paths of
    each segment on the padded grid of ``future`` (its widest row), and with ``on_history``
    (importance weights or refinement, which decode every path at the observed times too)
    also on the union of the histories' times as the model aligns them."""
    width = max(len(f) for f in future)
    if on_history:
        members = model.members if isinstance(model, Ensemble) else [model]
        width += max(_history_grid(m, segs) for m in members)
    return n_samples * len(segs) * width


def _history_grid(model: LatentODE, segs: list[Segment]) -> int:
    """The number of distinct observed times of ``segs`` on ``model``'s aligned time axis
    (`conditioned_batch`'s union grid)."""
    last = model.config.anchor == "last"
    aligned = [g.times - (g.times[-1] if last else g.t0) for g in segs]
    return len(np.unique(np.concatenate(aligned)))
