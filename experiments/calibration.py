"""How well the conformal band calibration of ``latentode predict`` holds on held-out series.

For each CSV checkpoint: forecast the held-out end of every series the fit did not train on
(its validation and test series), once, with the same draws as ``latentode test``. Then, for
four rules (one factor with the values as units; one with the series as units; one per
lead-time bin with the series as units, `latentode predict`'s default; the same with each
end of the band calibrated on its own, ``--calibrate_tails``):

- the fit's own split: factors from the validation series, coverage and width on the test
  series (what ``latentode test`` reports as ``latent ODE, calibrated bands``);
- ``--splits`` random halvings of the same pooled series: factors from one half, coverage on
  the other. Conformal prediction promises at least 90% on average over such splits when
  series are exchangeable; the spread shows what one split of this size can give;
- coverage by lead time (pooled over the random splits);
- where the misses fall: the shares below q05 and above q95 (at most 0.05 each is what a
  user reading q05 and q95 as quantiles expects);
- the interval score of each rule's band (a proper score: width plus 20 times each miss's
  distance), as a ratio to the default rule's on the same halvings;
- the median and the mean: the share of values above q50, the mean error, and whether
  moving the forecast mean by the other half's mean error lowers its MSE.

Usage (from the repository root; checkpoints fitted as ``reports/calibration_notes.md``
says, with ``configs/csv.yaml``)::

    .venv/bin/python experiments/calibration.py \\
        --ckpt runs/csv_seeds/keep5_d0_s0/checkpoints/best-*.ckpt \\
        runs/csv_seeds/keep5_d0_s1/checkpoints/best-*.ckpt \\
        runs/csv_seeds/keep5_d1_s0/checkpoints/best-*.ckpt \\
        runs/csv_seeds/keep5_d2_s0/checkpoints/best-*.ckpt \\
        --data data/fertility_worldbank.csv --n_samples 200 --splits 1000 \\
        --output reports/calibration.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report_notes import publish  # noqa: E402

from latentode.calibration import (  # noqa: E402
    band_scores,
    bin_index,
    conformal_scale,
    lead_scales,
    tail_scales,
)
from latentode.cli.forecaster import _load_forecaster  # noqa: E402
from latentode.evaluate import case_seeds, held_out_cases, interval_score  # noqa: E402
from latentode.forecast import predictive_summary, scale_bands  # noqa: E402

KEYS = ("stats", "target", "lead")


def held_out(ckpt: str, data: str, n_samples: int, seed: int, levels: tuple = ()) -> dict:
    """Per held-out series: stats ``[m, 1, 5]`` (``[m, 1, 2 + Q]`` with the bands of
    ``levels``), target ``[m, 1]``, lead times, and its role. ``ckpt``: one checkpoint, or
    several joined by commas (pooled as `latentode.ensemble`)."""
    model, state, table = _load_forecaster(ckpt.split(","), data)
    if table.n_channels != 1:
        raise SystemExit("this study is written for one channel")
    roles = {i: "val" for i in state["val_series"]} | {i: "test" for i in state["test_series"]}
    index = [table.index_of(i) for i in roles]
    cases = held_out_cases(table, index, float(state["holdout"]), state["history"], "extrapolation")
    stats = predictive_summary(
        model,
        [c.hist for c in cases],
        [c.t_target for c in cases],
        state,
        n_samples,
        case_seeds(seed, table, cases, "extrapolation"),  # as `latentode test` draws them
        levels=levels,
    )
    return {
        "stats": stats,
        "target": [c.target for c in cases],
        "lead": [c.lead for c in cases],
        "role": np.array([roles[table.series_ids[c.series]] for c in cases]),
    }


METHODS = {
    "values": "values as units",
    "series": "series as units, one factor",
    "lead": "series as units, by lead time",
    "tails": "series as units, by lead time, each end on its own",
}


def factor(stats: list, target: list, lead: list, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Lead-time bin edges and ``[B, 1]`` factors from the given series: the values as units
    (one factor), the series as units (one factor) or per lead-time bin (`lead_scales`); for
    ``tails`` ``[2, B, 1]``, the lower end's and the upper end's (`tail_scales`)."""
    scores = band_scores(np.concatenate(stats), np.concatenate(target))  # (M, 1)
    groups = np.concatenate([np.full(len(y), i) for i, y in enumerate(target)])
    if method == "tails":
        low, up = (
            band_scores(np.concatenate(stats), np.concatenate(target), e)
            for e in ("lower", "upper")
        )
        ends = tail_scales(low, up, groups, np.concatenate(lead))
        assert ends is not None, "too few series to calibrate each end"
        return ends[0], np.stack(ends[1:])
    if method == "values":
        return np.zeros(0), np.array([[conformal_scale(scores.ravel())]])
    found = lead_scales(scores, groups, np.concatenate(lead), by_lead=method == "lead")
    assert found is not None, "too few series to calibrate"
    return found


def scaled(stats: np.ndarray, lead: np.ndarray, fac: tuple) -> np.ndarray:
    """One series' predictive scaled by the factors of its values' lead-time bins (each
    end's where there are two; the mean and std, unused here, left as they are)."""
    edges, scale = fac
    b = bin_index(edges, lead)
    if scale.ndim == 3:  # (2, B, 1): the two ends
        return scale_bands(stats, scale[:, None, b], center=np.ones(1))
    return scale_bands(stats, scale[b])


def cover_width(stats: list, target: list, lead: list, fac: tuple) -> tuple[float, ...]:
    """Coverage, mean width, the shares below and above, and the mean interval score of the
    scaled 5-95% bands over the given series. The interval score (Gneiting and Raftery 2007,
    eq. 43) is the width plus 2 / 0.1 times the distance by which a value misses the band: a
    proper score, so a rule that buys its coverage with needless width pays for it."""
    s = np.concatenate([scaled(x, t, fac) for x, t in zip(stats, lead, strict=True)])
    y = np.concatenate(target)
    ok = ~np.isnan(y)
    lo, up, y = s[..., 2][ok], s[..., 4][ok], y[ok]
    below, above = y < lo, y > up
    inside = ~below & ~above
    score = interval_score(lo, up, y)  # the 5-95% band's
    return tuple(float(v.mean()) for v in (inside, up - lo, below, above, score))


def hits_by_lead(
    stats: np.ndarray, target: np.ndarray, lead: np.ndarray, fac: tuple, into: dict
) -> None:
    """Append to ``into[lead rounded]`` whether each of one series' values is inside its
    scaled band, and whether it is above it."""
    s = scaled(stats, lead, fac)
    inside = (s[..., 2] <= target) & (target <= s[..., 4])
    above = target > s[..., 4]
    for t, hit, up in zip(np.round(lead), inside[:, 0], above[:, 0], strict=True):
        into.setdefault(int(t), []).append((bool(hit), bool(up)))


def study(h: dict, splits: int, seed: int, method: str) -> dict:
    """Fit split, random halvings and coverage by lead time for one checkpoint and method."""
    pick = lambda m: [[h[k][i] for i in np.flatnonzero(m)] for k in KEYS]  # noqa: E731
    val, test = h["role"] == "val", h["role"] == "test"
    fac = factor(*pick(val), method)
    one = (np.zeros(0), np.ones((1, 1)))  # the model's own band
    out = {
        "n_val": int(val.sum()),
        "n_test": int(test.sum()),
        "factors": fac[1][..., 0],  # (B,), or (2, B) for the two ends
        "val_raw": cover_width(*pick(val), one),
        "test_raw": cover_width(*pick(test), one),
        "test_cal": cover_width(*pick(test), fac),
    }
    rng = np.random.default_rng(seed)
    n = len(h["role"])
    covers, widths, below, above, scores, by_lead = [], [], [], [], [], {}
    for _ in range(splits):
        a = np.zeros(n, dtype=bool)
        a[rng.permutation(n)[: n // 2]] = True
        fac_r = factor(*pick(a), method)
        c, w, lo, up, sc = cover_width(*pick(~a), fac_r)
        covers.append(c)
        widths.append(w)
        below.append(lo)
        above.append(up)
        scores.append(sc)
        for i in np.flatnonzero(~a):
            hits_by_lead(h["stats"][i], h["target"][i], h["lead"][i], fac_r, by_lead)
    out["splits"] = (np.array(covers), np.array(widths))
    out["tails"] = (np.array(below), np.array(above))
    out["score"] = np.array(scores)
    out["by_lead"] = {k: (*np.mean(v, axis=0), len(v)) for k, v in sorted(by_lead.items())}
    raw_lead: dict[int, list[tuple]] = {}
    for s, y, lead in zip(h["stats"], h["target"], h["lead"], strict=True):
        hits_by_lead(s, y, lead, one, raw_lead)
    out["raw_by_lead"] = {k: tuple(np.mean(v, axis=0)) for k, v in raw_lead.items()}
    return out


def point_study(h: dict, splits: int, seed: int) -> dict:
    """The median and the mean of one checkpoint's forecasts on its held-out series: the share
    of values above q50 and the mean error (value minus the forecast mean); then, over the
    same random halvings as `study`, the forecast MSE on one half after the mean is moved by
    the other half's mean error (one shift, and one per lead-time bin of the ``lead`` rule),
    as a ratio to the MSE unmoved. A bias the validation series could correct would show as
    ratios below 1."""
    flat = lambda idx: [  # noqa: E731
        np.concatenate([h[k][i] for i in idx]) for k in ("stats", "target", "lead")
    ]
    s, y, _ = flat(range(len(h["role"])))
    ok = ~np.isnan(y[:, 0])
    out = {
        "above_q50": float((y[ok, 0] > s[ok, 0, 3]).mean()),
        "error": float((y[ok, 0] - s[ok, 0, 0]).mean()),
        "mse": float(((y[ok, 0] - s[ok, 0, 0]) ** 2).mean()),
    }
    rng = np.random.default_rng(seed)  # the halvings of `study`
    n = len(h["role"])
    ratios = []
    for _ in range(splits):
        a = np.zeros(n, dtype=bool)
        a[rng.permutation(n)[: n // 2]] = True
        edges, _ = factor(*[[h[k][i] for i in np.flatnonzero(a)] for k in KEYS], "lead")
        (sa, ya, la), (sb, yb, lb) = flat(np.flatnonzero(a)), flat(np.flatnonzero(~a))
        ea, eb = (ya - sa[..., 0])[:, 0], (yb - sb[..., 0])[:, 0]
        oka, okb = ~np.isnan(ea), ~np.isnan(eb)
        ba, bb = bin_index(edges, la)[oka], bin_index(edges, lb)[okb]
        ea, eb = ea[oka], eb[okb]
        by_bin = np.array([ea[ba == b].mean() for b in range(len(edges) + 1)])
        mse = (eb**2).mean()
        ratios.append((((eb - ea.mean()) ** 2).mean() / mse, ((eb - by_bin[bb]) ** 2).mean() / mse))
    out["shift"] = np.array(ratios)  # (splits, 2): one shift, by lead bin
    return out


def _factors(f: np.ndarray) -> str:
    """A rule's factors by lead bin, the two ends' as ``q05 ...; q95 ...``."""
    row = lambda v: " / ".join(f"{x:.3f}" for x in v)  # noqa: E731
    return f"q05 {row(f[0])}; q95 {row(f[1])}" if f.ndim == 2 else row(f)


def report(args: argparse.Namespace, results: dict, points: dict, wall: float) -> str:
    """The markdown report: ``results`` by checkpoint and rule (`study`), ``points`` by
    checkpoint (`point_study`)."""
    cmd = " ".join(["`.venv/bin/python experiments/calibration.py", *sys.argv[1:]]) + "`"
    lines = [
        "# Calibrated forecast bands on held-out series (`latentode.calibration`)",
        "",
        f"Command: {cmd} ({wall:.0f} s on this 2-core machine, {args.n_samples} paths per series).",
        "",
        "The 5-95% band of `latentode predict` is the model's posterior predictive scaled "
        "about its median by a factor, the split-conformal quantile of how many half-bands "
        "the validation series' held-out values lie from the median (module docstring of "
        "`latentode/calibration.py`). *Values as units*: one factor, the plain split-conformal "
        "rule over the held-out values. *Series as units, one factor* (`latentode predict "
        "--no-calibrate_by_lead`, the default until session 25): each series weighs one, "
        "shared by its values, and the level's finite-sample correction counts series. "
        "*Series as units, by lead time* (what `latentode predict` does): the same rule in "
        "each lead-time bin (`lead_bins`: here one bin per year ahead where the values fill "
        "it), each value scaled by its bin's factor. *Each end on its own* (`latentode predict "
        "--calibrate_tails`): the same bins, the lower and the upper end each with its own "
        "factors at level 0.95 from signed half-bands (`tail_scales`), so that at most 5% fall "
        "past each end. Coverage: share of held-out values inside the band (0.90 is "
        "calibrated); width: its mean width, in the data's units; below / above: the shares "
        "under q05 and over q95 (0.05 each is what a reader of q05 and q95 expects).",
        "",
        "## The fit's own split: factor from the validation series, scored on the test series",
        "",
        "| checkpoint | val series | test series | factor(s), by lead bin | "
        "val coverage, model | "
        "test coverage, model | test coverage, calibrated | test width, model / calibrated |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['n_val']} | {r['n_test']} | "
            f"{_factors(r['factors'])} | "
            f"{r['val_raw'][0]:.3f} | {r['test_raw'][0]:.3f} | {r['test_cal'][0]:.3f} | "
            f"{r['test_raw'][1]:.3f} / {r['test_cal'][1]:.3f} |"
        )
    lines += [
        "",
        f"## {args.splits} random halvings of the same held-out series",
        "",
        "| checkpoint | mean coverage | coverage 10% / 50% / 90% of splits | "
        "share of splits below 0.80 | mean width | width 10% / 50% / 90% of splits | "
        "mean share below q05 / above q95 | mean interval score | "
        "interval score / by lead time's (mean; share of splits below 1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        c, w = r["splits"]
        q = np.quantile(c, [0.1, 0.5, 0.9])
        qw = np.quantile(w, [0.1, 0.5, 0.9])
        lo, up = r["tails"]
        ratio = r["score"] / results[f"`{r['ckpt']}`, {METHODS['lead']}"]["score"]
        lines.append(
            f"| {name} | {c.mean():.3f} | {q[0]:.3f} / {q[1]:.3f} / {q[2]:.3f} | "
            f"{(c < 0.8).mean():.3f} | {w.mean():.3f} | "
            f"{qw[0]:.3f} / {qw[1]:.3f} / {qw[2]:.3f} | {lo.mean():.3f} / {up.mean():.3f} | "
            f"{r['score'].mean():.3f} | {ratio.mean():.3f}; {(ratio < 1).mean():.2f} |"
        )
    lines += [
        "",
        "## The median and the mean: is the forecast biased, and would the validation "
        "series correct it?",
        "",
        "Over all held-out values: the share above the forecast median q50 (0.50 if the "
        "median is calibrated) and the mean error, value minus forecast mean. Over the same "
        "halvings: the MSE of the mean on one half after moving it by the other half's mean "
        "error, as a ratio to the MSE of the mean unmoved.",
        "",
        "| checkpoint | share above q50 | mean error | MSE | one shift: MSE ratio (mean; "
        "share of splits below 1) | a shift per lead bin: MSE ratio (mean; share below 1) |",
        "|---|---|---|---|---|---|",
    ]
    for ck, pt in points.items():
        one, per_bin = pt["shift"].T
        lines.append(
            f"| `{ck}` | {pt['above_q50']:.3f} | {pt['error']:+.4f} | {pt['mse']:.4f} | "
            f"{one.mean():.3f}; {(one < 1).mean():.2f} | "
            f"{per_bin.mean():.3f}; {(per_bin < 1).mean():.2f} |"
        )
    leads = sorted({k for r in results.values() for k in r["by_lead"]})  # every fit's
    lines += [
        "",
        "## Coverage by lead time (rounded to whole time units), pooled over the halvings; "
        "in brackets the model's own, then the share above q95",
        "",
        "| checkpoint | " + " | ".join(f"lead {k}" for k in leads) + " |",
        "|---|" + "---|" * len(leads),
    ]
    for name, r in results.items():
        cells = [
            f"{r['by_lead'][k][0]:.2f} (model "
            f"{r['raw_by_lead'].get(k, (float('nan'),))[0]:.2f}; above {r['by_lead'][k][1]:.3f})"
            if k in r["by_lead"]
            else ""
            for k in leads
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def arguments(doc: str, n_samples: int) -> argparse.Namespace:
    """The options of a calibration study (this one's and ``calibration_levels.py``'s), with
    one torch thread set for it."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument(
        "--ckpt", nargs="+", required=True, help="checkpoints; A,B,C: one ensemble of three"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--n_samples", type=int, default=n_samples)
    p.add_argument("--splits", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None)
    torch.set_num_threads(1)
    return p.parse_args()


def main() -> None:
    """Run the study for each checkpoint and write the report."""
    args = arguments(__doc__, 100)
    start = time.perf_counter()
    results, points = {}, {}
    for ck in args.ckpt:
        h = held_out(ck, args.data, args.n_samples, args.seed)
        for method, label in METHODS.items():
            results[f"`{ck}`, {label}"] = study(h, args.splits, args.seed, method) | {"ckpt": ck}
        points[ck] = point_study(h, args.splits, args.seed)
    text = report(args, results, points, time.perf_counter() - start)
    publish(text, args.output)


if __name__ == "__main__":
    main()
