"""The paths a forecast draws: seeded by series id, time origins of a model anchored last,
the predictive's moments, draws in halves past the budget, draws from a prior."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from evaluate_helpers import _exact_anchor_last_model

from latentode.data.csv import read_series_csv
from latentode.data.prep import Segment, collate_segments
from latentode.ensemble import Ensemble
from latentode.forecast import forecast, predictive_summary
from latentode.nn import LatentODE, LatentODEConfig, ModelInputError, SolverSettings
from latentode.nn.latent_ode import AggregatePosterior
from latentode.predictive import draw_seeds


def test_a_series_forecast_follows_from_its_id_not_from_the_chunk_or_the_other_series(
    tmp_path: Path,
) -> None:
    """Each series' draws are seeded by the seed and its id alone (`draw_seeds`): the same
    forecast whatever ``chunk`` is, and from a file holding it among other series in another
    order, up to the solver's tolerance (tight here: the series of a call share its adaptive
    steps); another seed draws other paths."""
    torch.manual_seed(0)
    settings = SolverSettings("dopri5", 1e-10, 1e-12)
    model = LatentODE(LatentODEConfig(input_dim=1, latent_dim=3, solver=settings)).double()
    rng = np.random.default_rng(0)
    rows = {
        s: [f"{s},{t:.3f},{np.sin(t + k):.4f}\n" for t in np.sort(rng.uniform(0, 8, 6 + k))]
        for k, s in enumerate("abcde")
    }
    state = {"channels": ["x"], "normalisation": None, "time_scale": 2.0}

    def run(order: str, name: str, **kw: object) -> dict[str, np.ndarray]:
        path = tmp_path / f"{name}.csv"
        path.write_text("series_id,time,x\n" + "".join(r for s in order for r in rows[s]))
        table = read_series_csv(path)
        out = forecast(model, table, state, 2.0, 0.5, n_samples=20, **kw)
        return {
            table.series_ids[g.series]: z for g, z in zip(out.history, out.summary, strict=True)
        }

    whole = run("abcde", "whole")
    for other in (run("abcde", "chunked", chunk=2), run("dbe", "fewer", chunk=1)):
        for sid, z in other.items():
            np.testing.assert_allclose(z, whole[sid], rtol=0, atol=1e-8)
    reseeded = run("abcde", "reseeded", seed=1)
    for sid, z in reseeded.items():
        assert np.abs(z[..., 2:] - whole[sid][..., 2:]).max() > 1e-3  # the quantiles moved


def test_forecast_of_a_model_anchored_last_does_not_depend_on_the_other_series() -> None:
    """`predictive_summary` puts each series' time origin at its last observation for a model
    with ``anchor="last"``: a short series forecast beside longer ones gets the forecast it
    gets alone (with the first time as origin, its latent state would be inferred at the
    longest series' end instead). A near-deterministic model (posterior and noise stds ~0)."""
    model = _exact_anchor_last_model()
    with torch.no_grad():
        model.encoder.head.weight[3:].zero_()
        model.encoder.head.bias[3:].fill_(-40.0)  # posterior std: the floor 1e-4
        model.decoder.log_std.fill_(-40.0)
    t = np.arange(1960.0, 2012.0)
    gappy = t[10:][np.random.default_rng(0).random(42) < 0.7]  # from 1970 on, with gaps
    segs = [
        Segment(0, 1960.0, t, np.sin(t / 7.0)[:, None]),
        Segment(1, 1960.0, t[:30], np.cos(t[:30] / 5.0)[:, None]),  # ends in 1989
        Segment(2, float(gappy[0]), gappy, 0.1 * gappy[:, None] - 200.0),
    ]
    future = [g.times[-1] + np.array([1.0, 2.0, 5.0]) for g in segs]
    state = {"normalisation": None, "time_scale": 5.0}

    def summary(rows: list[int]) -> list[np.ndarray]:
        seeds = draw_seeds(1, [str(i) for i in rows])
        return predictive_summary(
            model, [segs[i] for i in rows], [future[i] for i in rows], state, 4, seeds
        )

    together = summary([0, 1, 2])
    for i in range(3):
        alone = summary([i])[0]  # (3, D, 5)
        np.testing.assert_allclose(together[i][..., 3], alone[..., 3], rtol=0, atol=2e-3)
    assert float(np.abs(together[1][..., 3] - together[0][..., 3]).max()) > 0.01  # not one path


def test_predictive_mean_and_std_come_from_the_paths_not_the_noise_draws() -> None:
    """The summary's mean and std are the predictive's moments from the posterior paths
    (`LatentODE.predict`), mapped to the user's units: independent of the observation-noise
    draws (which the summary does not use), and equal to ``mean_k path`` and
    ``sqrt(var_k path + sigma^2)`` times the channel's std. Averaging the noisy draws instead
    would add ``sigma^2 / K`` of Monte-Carlo variance to the point forecast."""
    torch.manual_seed(0)
    cfg = LatentODEConfig(input_dim=2, latent_dim=3, learn_std=True, obs_std=0.3)
    model = LatentODE(cfg).double()
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(0, 0.0, t, np.stack([np.sin(t), np.cos(t)], 1)),
        Segment(1, 2.0, t[2:9], np.stack([t[2:9] / 5, -t[2:9] / 5], 1)),
    ]
    future = [g.times[-1] + np.array([0.5, 1.0, 3.0]) for g in segs]
    norm = {"channels": ["a", "b"], "mean": [10.0, -1.0], "std": [2.0, 0.5]}
    state = {"normalisation": norm, "time_scale": 4.0}

    seeds = [7, 8]
    with torch.no_grad():
        a = predictive_summary(model, segs, future, state, 16, seeds)
    # The same paths by hand (each series' z0 are the first draws of its generator): the
    # model's own predictive moments, in the user's units.
    observed = collate_segments(segs, norm, 4.0, dtype=torch.float64)
    grid = torch.tensor(np.stack([(f - g.t0) / 4.0 for f, g in zip(future, segs, strict=True)]))
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    with torch.no_grad():
        pred = model.predict(observed, grid, 16, generators=generators)
    sigma = model.decoder.log_std.detach().exp().numpy()  # (D,)
    paths = pred.samples.numpy()  # (K, B, n, D), normalised units
    scale, shift = np.array(norm["std"]), np.array(norm["mean"])
    want_mean = paths.mean(0) * scale + shift
    want_std = np.sqrt(paths.var(0) + sigma**2) * scale
    for b_, s in enumerate(a):
        np.testing.assert_allclose(s[..., 0], want_mean[b_], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(s[..., 1], want_std[b_], rtol=1e-12, atol=1e-12)
        # The quantiles are the predictive's (the paths with their noise), not the paths'.
        path_median = np.median(paths[:, b_], axis=0) * scale + shift
        assert np.abs(s[..., 3] - path_median).max() > 1e-3


def test_predictives_past_the_budget_are_drawn_in_halves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments whose paths at their times exceed `draws_per_call` are taken in halves, one
    model call each, and give exactly what separate calls on the halves give (the same draws
    in the same order); each call holds at most the budget."""
    from latentode import predictive

    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=2, latent_dim=3, anchor="last")).double()
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(b, float(b), t[b:], np.stack([np.sin(t[b:] + b), np.cos(t[b:])], 1))
        for b in range(5)
    ]
    future = [g.times[-1] + np.linspace(0.5, 3.0, 4 + b) for b, g in enumerate(segs)]  # 4..8
    state = {"normalisation": None, "time_scale": 4.0}
    calls = []
    predict = model.predict

    def counted(observed, times, n_samples, *args, **kw):
        calls.append(n_samples * times.shape[0] * times.shape[-1])
        return predict(observed, times, n_samples, *args, **kw)

    monkeypatch.setattr(model, "predict", counted)

    def draws(groups: list[list[int]], budget: int) -> list[np.ndarray]:
        def per_call(n_channels: int) -> int:
            asked.append(n_channels)
            return budget

        monkeypatch.setattr(predictive, "draws_per_call", per_call)
        out = []
        for rows in groups:
            part = [segs[i] for i in rows], [future[i] for i in rows]
            seeds = draw_seeds(4, [str(i) for i in rows])
            out += [p.draws for p in predictive.predictives(model, *part, state, 6, seeds)]
        return out

    asked: list[int] = []
    split = draws([[0, 1, 2, 3, 4]], budget=6 * 2 * 8)  # two segments of 8 times at most
    assert set(asked) == {2}  # the budget of the segments' two channels
    assert calls == [6 * 2 * 5, 6 * 1 * 6, 6 * 2 * 8]  # [0, 1], then [2, 3, 4] halved again
    assert max(calls) <= 6 * 2 * 8
    apart = draws([[0, 1], [2], [3, 4]], budget=10**9)
    for a, b in zip(split, apart, strict=True):
        np.testing.assert_array_equal(a, b)
    assert [a.shape for a in split] == [(6, 4 + b, 2) for b in range(5)]
    calls.clear()
    draws([[0, 1, 2, 3, 4]], budget=10**9)
    assert calls == [6 * 5 * 8]  # within the budget: one call, as before


def test_predictive_summary_under_a_prior_draws_the_paths_from_it() -> None:
    """With ``prior`` (and ``importance``) the paths come from the mixture, not the encoder: a
    one-component prior of std ~0 gives every series the path of that component's state,
    solved from the aligned anchor (0, each series' last observation) to its own future,
    whatever its history. An `Ensemble` is refused (each member has its own encoder)."""
    model = _exact_anchor_last_model()
    with torch.no_grad():
        model.decoder.log_std.fill_(-40.0)
    t = np.arange(0.0, 12.0)
    segs = [
        Segment(0, 0.0, t, np.sin(t)[:, None]),
        Segment(1, 3.0, t[3:8], 5.0 + t[3:8, None]),
    ]
    lead = np.array([1.0, 2.0, 5.0])
    future = [g.times[-1] + lead for g in segs]
    state = {"normalisation": None, "time_scale": 5.0}
    z = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    prior = AggregatePosterior(z, torch.full_like(z, 1e-9), 0.0)
    seeds = [0, 1]
    stats = predictive_summary(model, segs, future, state, 8, seeds, True, prior=prior)
    with torch.no_grad():
        zt = model.integrate(z[None], torch.tensor(0.0).double(), torch.tensor(lead / 5.0))
        path = model.decoder(zt).mean[0, 0].numpy()  # (3, 1)
    for s in stats:
        np.testing.assert_allclose(s[..., 0], path, rtol=0, atol=1e-6)  # mean
        np.testing.assert_allclose(s[..., 3], path, rtol=0, atol=1e-6)  # median
    other = _exact_anchor_last_model(seed=1)
    pair = Ensemble([model, other], [state, state])
    with pytest.raises(ModelInputError, match="not with an Ensemble"):
        predictive_summary(pair, segs, future, state, 8, seeds, True, prior=prior)
