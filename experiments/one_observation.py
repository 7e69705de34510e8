"""Forecasting from a single observation: worth it, or is `predict` right to drop such series?

For a checkpoint fitted with `CSVDataModule` (series split), each test series is cut at 90% of
its time range. Its values after the cut are forecast twice: from the whole history before the
cut, and from that history's last observation alone (what `predict` would do with a series of
one row, were it not dropped). Prints the forecast MSE, last value's MSE and the share of values
inside the 5-95% band, with `predict`'s default calibration and with the model's own bands.

Usage (reports/csv_fertility.md, session 39)::

    .venv/bin/python experiments/one_observation.py --ckpt runs/fertility/checkpoints/best-*.ckpt \\
        --data data/fertility_worldbank.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from latentode.calibration import calibrate
from latentode.cli.forecaster import _load_forecaster
from latentode.data.table import SeriesTable
from latentode.forecast import forecast


def _last_only(table: SeriesTable) -> SeriesTable:
    """Each series of ``table`` reduced to its last row."""
    last = table.offsets[1:] - 1  # (S,)
    return SeriesTable(
        table.times[last],
        table.values[last],
        np.arange(table.n_series + 1, dtype=np.int64),
        list(table.series_ids),
        list(table.channels),
        table.encoding,
        table.source,
    )


def main() -> None:
    """Print one row per (history, bands)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--cut", type=float, default=0.9, help="share of each range kept as history")
    args = p.parse_args()
    model, state, table = _load_forecaster([args.ckpt], args.data)
    tests = table.select([table.index_of(s) for s in state["test_series"]])  # the fit's
    spans = [tests.series(s)[0] for s in range(tests.n_series)]
    cuts = np.array([t[0] + args.cut * (t[-1] - t[0]) for t in spans])  # (S,)
    history = tests.before(cuts)
    truth, times, last = [], {}, {}
    for s, sid in enumerate(tests.series_ids):
        t, x = tests.series(s)
        after = t >= cuts[s]
        times[sid] = t[after]
        truth.append(pd.DataFrame({"series_id": sid, "t": t[after], "value": x[after, 0]}))
        last[sid] = history.series(history.index_of(sid))[1][-1, 0]
    truth = pd.concat(truth, ignore_index=True)
    cal = calibrate(model, table, state)
    for name, hist in (("whole history", history), ("last observation", _last_only(history))):
        for bands, c in (("calibrated", cal), ("model's own", None)):
            out = forecast(model, hist, state, 1.0, times=times, calibration=c).frame
            f = truth.merge(out.assign(t=out["time"].astype(float)), on=["series_id", "t"])
            err = f["mean"] - f["value"]
            naive = f["series_id"].map(last) - f["value"]
            inside = ((f["q05"] <= f["value"]) & (f["value"] <= f["q95"])).mean()
            print(
                f"{name:17s} {bands:12s} values {len(f)} series {f.series_id.nunique()} "
                f"MSE {np.mean(err**2):.4f} last value MSE {np.mean(naive**2):.4f} "
                f"inside 5-95% {inside:.3f} mean width {(f.q95 - f.q05).mean():.3f}"
            )


if __name__ == "__main__":
    main()
