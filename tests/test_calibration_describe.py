"""`Calibration.describe` prints the band factors a forecast applies (after `nested_factors`),
and says which nesting raised."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from test_tails import audit_tie

from latentode.calibration import BandFactors, Calibration, calibrate
from latentode.data.csv_module import CSVDataModule
from latentode.forecast import forecast
from latentode.nn.latent_ode import LatentODE, LatentODEConfig
from latentode.predictive import band_columns, band_levels, quantile_names

DATA = Path(__file__).resolve().parents[1] / "data"
NUMBER = r"\d+(?:\.\d+)?(?:e[+-]?\d+)?"


def printed(text: str) -> dict[str | None, list[tuple[float, float, float]]]:
    """The factors of one band's words (one channel): per end (its column, None: both ends
    alike), ``(lead from, lead to, factor)`` per bin (``scaled x x0.5`` is one bin for every
    lead; ``scaled by lead time, x x0.3 (lead < 1.5); ...; x x0.6 (lead >= 3.5)``)."""
    out = {}
    for m in re.finditer(r"(?:(q[\d.]+) )?scaled (.*?)(?=; q[\d.]+ scaled|$)", text):
        bins = []
        for part in m.group(2).removeprefix("by lead time, ").split("; "):
            factor = re.match(rf"\w+ x({NUMBER})", part)
            if factor is None:  # a clause after the bins
                continue
            span = re.search(
                rf"\(lead (?:< ({NUMBER})|({NUMBER})-({NUMBER})|>= ({NUMBER}))\)$", part
            )
            lo, hi = -np.inf, np.inf
            if span:
                below, a, b, above = (None if g is None else float(g) for g in span.groups())
                lo = a if a is not None else above if above is not None else -np.inf
                hi = below if below is not None else b if b is not None else np.inf
            bins.append((lo, hi, float(factor.group(1))))
        out[m.group(1)] = bins
    return out


def test_describe_prints_the_raised_factors_and_says_so() -> None:
    """The 5-95% band's own factors 0.4 / 0.6 (bins at lead 2.5), the 50% band's 0.3 / 0.7 /
    0.5 (bins at 1.5 and 3.5): nested, the 5-95% band is at least the 50% band's, so 0.7
    from lead 1.5 to 3.5, and the 95% band (own 0.55, one bin) is 0.55 / 0.7 / 0.6. Before,
    `describe` printed the own factors (``x0.4 (lead < 2.5)``, ``scaled x x0.55``) while the
    forecast applied these."""
    one = np.zeros(0)
    cal = Calibration(
        np.array([[0.4], [0.6]]),
        np.array([40]),
        20,
        1.0,
        6.0,
        edges=np.array([2.5]),
        others=(
            BandFactors(0.5, np.array([1.5, 3.5]), np.array([[0.3], [0.7], [0.5]]), 1.0),
            BandFactors(0.95, one, np.array([[0.55]]), 1.0),
        ),
    )
    lines = cal.describe(["x"]).splitlines()
    assert lines[0].endswith(
        ": scaled by lead time, x x0.4 (lead < 1.5); "
        "x x0.7 (raised by nesting from 0.4 to the 50% band's) (lead 1.5-2.5); "
        "x x0.7 (raised by nesting from 0.6 to the 50% band's) (lead 2.5-3.5); "
        "x x0.6 (lead >= 3.5); the mean and std by its own factors, before nesting"
    )
    assert lines[1].endswith(
        ": scaled by lead time, x x0.3 (lead < 1.5); x x0.7 (lead 1.5-3.5); x x0.5 (lead >= 3.5)"
    )
    assert lines[2].endswith(
        ": scaled by lead time, x x0.55 (lead < 1.5); "
        "x x0.7 (raised by nesting from 0.55 to the 50% band's) (lead 1.5-3.5); "
        "x x0.6 (raised by nesting from 0.55 to the 90% band's) (lead >= 3.5)"
    )
    levels = (0.5, 0.95)
    lead = np.array([0.0, 1.5, 2.0, 2.5, 3.0, 3.5, 9.0])
    applied = cal.factors(lead, levels)[..., 0]  # (3, n): 50, 90, 95
    for row, line in zip(applied[[1, 0, 2]], lines, strict=True):  # lines: 90, 50, 95
        (bins,) = printed(line).values()
        for lo, hi, factor in bins:
            inside = (lo <= lead) & (lead < hi)
            assert inside.any() and (row[inside] == factor).all(), (line, row, factor)


def test_describe_gives_each_end_where_nesting_raised_them_apart() -> None:
    """The audit's tie (`tests/test_tails.py`): the 5-95% band's ends at 0.8 and 0.7 on their
    own, the 95% band too few for its ends, at its central 0.5. Applied, q02.5 is at 0.8 and
    q97.5 at 0.7; before, its line read ``scaled a x0.5``."""
    cal = audit_tie()
    lines = cal.describe(["a", "b"]).splitlines()
    assert lines[0].endswith(
        ": the mean and std scaled a x0.6, b x0.6; q05 and q95 each on its own (below)"
    )
    raised = "(raised by nesting from 0.5 to q{}'s)"
    assert lines[1] == (
        "95% bands, where the model's own covered 100%: "
        f"q02.5 scaled a x0.8 {raised.format('05')}, b x0.8 {raised.format('05')}; "
        f"q97.5 scaled a x0.7 {raised.format('95')}, b x0.7 {raised.format('95')}"
    )
    assert lines[2].endswith(": q05 scaled a x0.8, b x0.8; q95 scaled a x0.7, b x0.7")
    assert lines[3].endswith(": not, too few")
    factors = cal.factors(np.array([1.0]), [0.95])  # (2, 2, 1, 2): ends, 90/95, lead, channel
    assert (factors[:, 1, 0, 0] == [0.8, 0.7]).all()


def test_the_printed_factors_are_those_of_the_forecast_quantiles() -> None:
    """An untrained tiny model on 19 fertility validation series, bands 50 / 80 / 90 / 95 /
    99%: every factor `describe` prints for a band and lead bin is the ratio of that band's
    calibrated to its own half-band in `forecast`'s output at those leads, to the printed
    three digits; nesting raised some of them and the lines say so."""
    dm = CSVDataModule(str(DATA / "fertility_worldbank.csv"), holdout=10.0, seed=2)
    dm.setup()
    state = dm.data_state()
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, encoder_hidden=8)).double()
    levels = band_levels((0.5, 0.8, 0.95, 0.99))
    cal = calibrate(model, dm.table, state, n_samples=30, seed=0, chunk=16, levels=levels)
    kw = {"n_samples": 30, "seed": 0, "chunk": 64, "levels": levels}
    raw = forecast(model, dm.table, state, 12.0, 1.0, **kw)
    out = forecast(model, dm.table, state, 12.0, 1.0, calibration=cal, **kw)
    lead = np.concatenate([f - g.times[-1] for g, f in zip(out.history, out.future, strict=True)])
    s, r = np.concatenate(out.summary)[:, 0], np.concatenate(raw.summary)[:, 0]  # (n, 2 + Q)
    text = cal.describe(["fertility"])
    lines = dict(zip((0.9, 0.5, 0.8, 0.95, 0.99), text.splitlines(), strict=True))
    names = quantile_names(levels)
    checked = 0
    for level, line in lines.items():
        lo, mid, hi = band_columns(levels, level)
        for name, bins in printed(line).items():
            cols = [c for c in (lo, hi) if name in (None, names[c - 2])]  # the ends it names
            assert cols
            for col in cols:
                ratio = (s[:, col] - s[:, mid]) / (r[:, col] - r[:, mid])  # the applied factor
                for a, b, factor in bins:
                    inside = (a <= lead) & (lead < b)
                    digit = 10.0 ** (np.floor(np.log10(factor)) - 2)  # printed to 3 digits
                    assert inside.any()
                    assert (abs(ratio[inside] - factor) <= 0.5001 * digit).all(), (line, factor)
                    checked += inside.sum()
    assert checked >= 5 * len(lead)
    assert "raised by nesting" in text
