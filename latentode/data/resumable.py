"""A training DataLoader that a fit resumes in the middle of an epoch exactly.

Lightning saves the state of a training loader that has ``state_dict`` / ``load_state_dict``
with every checkpoint and restores it on resume. A plain `DataLoader` has neither, so a fit
resumed from a mid-epoch checkpoint (the SLURM requeue's ``hpc_ckpt_*.ckpt``, or one saved
every N steps) starts the epoch's remaining steps on a fresh shuffle: some series are seen twice
in that epoch, others not at all, and the fit leaves the path of the uninterrupted one.

`ResumableLoader` stores where the epoch's pass stood: the shuffle generator's state when the
pass began (it draws the loader's base seed and the `RandomSampler`'s permutation) and how many
of the pass's batches the fit has finished. On resume it rewinds the generator, draws the same
permutation, and skips the finished batches' indices without collating them (collation draws
the observed subsets from the data module's own generator, which `RNGCheckpoint` restores as
it was at the checkpoint). Under DDP the sampler is Lightning's `DistributedSampler`, whose
permutation depends on the epoch only; the skip is the same.

"Finished" is Lightning's notion (the batch's ``on_train_batch_end`` ran): `RNGCheckpoint`
reports it with `finished`, and marks the pass complete at the epoch's last batch, so that a
checkpoint saved at an epoch's end resumes with a fresh pass. A checkpoint saved inside a
training step (a signal) has the batch unfinished, and Lightning repeats it: so does the loader.

Usage (what the data modules' ``train_dataloader`` return)::

    ResumableLoader(range(n), batch_size=32, shuffle=True, generator=gen, collate_fn=collate)
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

import torch
from torch.utils.data import DataLoader

from .errors import DataError

__all__ = ["ResumableLoader", "check_num_workers"]


class _Skipping:
    """An index sampler whose first pass starts ``skip`` batches in (later passes are whole)."""

    def __init__(self, base: Any, skip: int) -> None:
        self.base, self.skip = base, skip

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        return islice(iter(self.base), skip, None)

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


class ResumableLoader(DataLoader):
    """A `DataLoader` whose position in an epoch is saved with Lightning's checkpoints.

    Takes `DataLoader`'s arguments. ``state_dict()`` is ``{}`` until `finished` has been
    called in the current pass (nothing known: a resume then starts a fresh pass, as a plain
    `DataLoader` does).
    """

    _skip = 0  # batches to skip when the next pass begins (set only while it begins)
    _pass_start: torch.Tensor | None = None  # the generator's state when the pass began
    _finished: int | None = None  # batches of the pass whose training step finished
    _complete = False  # the pass is over (the epoch ended)
    _resume: dict[str, Any] | None = None  # a loaded state, applied when the next pass begins

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return self._pass()

    def _pass(self) -> Iterator[Any]:
        # A generator: this runs at the pass's first batch, after Lightning has loaded the state
        # (and set the sampler's epoch), as DataLoader's own draws would.
        resume, self._resume = self._resume, None
        skip = 0
        if resume and not resume["complete"]:
            if self.generator is not None and resume["pass_start"] is not None:
                self.generator.set_state(resume["pass_start"])
            skip = int(resume["finished"])
        self._pass_start = None if self.generator is None else self.generator.get_state()
        self._finished, self._complete = (skip if resume else None), False
        self._skip = skip
        try:
            batches = super().__iter__()  # reads _index_sampler: the skip applies to this pass
        finally:
            self._skip = 0
        yield from batches

    @property
    def _index_sampler(self) -> Any:
        base = super()._index_sampler
        return _Skipping(base, self._skip) if self._skip else base

    def finished(self, n: int, last: bool = False) -> None:
        """Record that the first ``n`` batches of the current pass are trained on; ``last``:
        the pass is over (the epoch's last batch)."""
        self._finished, self._complete = n, last

    def state_dict(self) -> dict[str, Any]:
        """Where the current pass stands (Lightning stores it with each checkpoint)."""
        if self._finished is None:
            return {}
        return {
            "pass_start": self._pass_start,
            "finished": self._finished,
            "complete": self._complete,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` when the next pass begins (Lightning calls this on resume)."""
        self._resume = state or None


def check_num_workers(num_workers: int) -> None:
    """Refuse DataLoader workers for a data module that draws its training batches' random
    parts (observed subsets, conditioned spans) from its own generator while collating.

    Raises:
        DataError: ``num_workers`` other than 0.
    """
    if num_workers != 0:
        raise DataError(
            f"num_workers={num_workers!r}: this data module draws which points of each training "
            "batch are conditioned on from one seeded generator as it collates the batch, and "
            "every worker process would copy that generator and repeat the others' draws. The "
            "data are in memory and collate quickly: set num_workers 0."
        )
