"""Multi-process ``latentode predict``: one process failing on its series stops all of them.

Two CPU processes (gloo), started with ``torch.multiprocessing.spawn``: process 1 fails as
`forecast` would on a series of its shard; both must raise `ForecastStoppedError` naming
process 1 and its error, instead of process 0 waiting in the gather.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from latentode.cli import USER_ERRORS, ForecastStoppedError, gather_shards
from latentode.solver import SolverError


def _worker(rank: int, init: str, out: Path, fail: bool) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        failure = None
        if fail and rank == 1:
            failure = SolverError("non_finite", 3.0, 0.1, "the vector field returned NaN")
        result = None if failure else {"rank": rank}
        try:
            parts = gather_shards(result, failure, 2)
            (out / f"{rank}.txt").write_text(f"ok {parts}")
        except ForecastStoppedError as e:
            (out / f"{rank}.txt").write_text(f"stopped {e}")
    finally:
        dist.destroy_process_group()


def _run(tmp_path: Path, fail: bool) -> dict[int, str]:
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_worker, args=(init, tmp_path, fail), nprocs=2, join=True)
    return {rank: (tmp_path / f"{rank}.txt").read_text() for rank in (0, 1)}


def test_every_process_gets_every_shard(tmp_path: Path) -> None:
    got = _run(tmp_path, fail=False)
    assert got == {r: "ok [{'rank': 0}, {'rank': 1}]" for r in (0, 1)}


def test_a_failure_in_one_process_stops_both_with_its_message(tmp_path: Path) -> None:
    got = _run(tmp_path, fail=True)
    for rank in (0, 1):
        assert got[rank].startswith("stopped process 1 of 2 could not forecast its series")
        assert "nothing was written" in got[rank]
        assert "SolverError: the vector field returned NaN (at t=3" in got[rank]
    assert ForecastStoppedError in USER_ERRORS  # the CLI prints it and exits with status 2
