"""The model that ``latentode predict`` and ``latentode test`` forecast with (one checkpoint,
or several pooled) and the band calibration they share."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..calibration import Calibration, calibrate
from ..data.errors import DataError
from ..ensemble import Ensemble
from ..evaluate import scored_series
from ..forecast import read_history
from .checkpoints import check_ckpt_path
from .errors import USER_ERRORS
from .launch import gather_shards
from .options import _draws, _levels

__all__: list[str] = []


def _load_system(ckpt_path: str):
    """The latent ODE system of a CSV checkpoint and its data description."""
    from ..systems.latent_ode import LatentODESystem

    ckpt = Path(ckpt_path)
    check_ckpt_path(ckpt_path)
    try:
        system = LatentODESystem.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # a foreign or damaged file: say so instead of a traceback
        raise DataError(f"{ckpt}: not a latentode latent ODE checkpoint ({e}).") from e
    state = system.hparams.get("data_state")
    if not state:
        raise DataError(
            f"{ckpt} was not trained on a CSV file (no data description stored); "
            "fit it with a CSVDataModule config such as configs/csv.yaml."
        )
    return system, state


def _pooled(model: Ensemble, n_samples: int) -> str:
    return (
        f"the forecasts of {len(model)} checkpoints pooled with equal weights "
        f"({n_samples} paths from each)"
    )


def _load_forecaster(ckpt_paths: list[str], data_path: str, duplicates: str | None = None):
    """``(model, data_state, table)``: one checkpoint's latent ODE, or several pooled into an
    `Ensemble` (they must share their data settings, `latentode.ensemble.shared_state`), and
    the file read as they read theirs (`latentode.history.read_history`)."""
    if len(set(ckpt_paths)) != len(ckpt_paths):
        raise DataError(f"--ckpt_path names a checkpoint twice: {ckpt_paths}.")
    loaded = [_load_system(c) for c in ckpt_paths]
    if len(loaded) == 1:
        model, state = loaded[0][0].model, loaded[0][1]
    else:
        model = Ensemble([s.model for s, _ in loaded], [st for _, st in loaded], ckpt_paths)
        state = model.state
    return model, state, read_history(data_path, state, duplicates)


def _calibration(
    args: argparse.Namespace,
    model,
    state,
    table,
    rank: int = 0,
    world: int = 1,
    chunk: int = 128,
) -> Calibration:
    """The band factors, computed by the first process and shared with the others."""
    cal, failure = None, None
    if rank == 0:
        try:
            cal = calibrate(
                model,
                table,
                state,
                chunk=chunk,
                by_lead=args.calibrate_by_lead,
                levels=_levels(args.levels),
                tails=args.calibrate_tails,
                **_draws(args),
            )
        except USER_ERRORS as e:
            if world == 1:
                raise
            failure = e
    return gather_shards(cal, failure, world)[0] if world > 1 else cal


def _overlap(table, state) -> bool:
    """Whether `latentode test` would score validation series (the file lacks the test ids)."""
    val = set(state.get("val_series") or [])
    return any(table.series_ids[s] in val for s in scored_series(table, state))
