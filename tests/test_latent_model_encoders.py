"""Latent ODE encoders and baselines: anchor-last encoding, centring on each series' level,
masked updates, independence of series, the GRU encoder's backward read, causality of the
baselines, configured encoder sizes and old checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from latent_model_helpers import F64, LOSSES, TIGHT, B, D, L, T, _latent, make_batch
from torch import Tensor, nn

from latentode.data import IrregularBatch
from latentode.nn import GRUBaseline, GRUEncoder, ModelInputError, ODERNNEncoder

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed_0")


@pytest.mark.parametrize("encoder", ["gru", "odernn"])
def test_anchor_last_runs_the_encoder_forwards_to_the_last_observed_time(encoder: str) -> None:
    model, batch = _latent(encoder, anchor="last", encoder_time=encoder == "gru"), make_batch()
    batch.mask[:, -1] = 0.0
    end = T - 1  # the grid up to the last observed column, reversed, on the axis -t
    q = model.encode(batch)
    direct = model.encoder(
        -batch.times[:end].flip(0), batch.values[:, :end].flip(1), batch.mask[:, :end].flip(1)
    )
    torch.testing.assert_close(q.mean, direct.mean, rtol=0, atol=0)
    torch.testing.assert_close(q.stddev, direct.stddev, rtol=0, atol=0)
    # Unobserved columns after the anchor change nothing; the latest value changes q.
    trimmed = IrregularBatch(batch.times[:end], batch.values[:, :end], batch.mask[:, :end])
    torch.testing.assert_close(model.encode(trimmed).mean, q.mean, rtol=0, atol=0)
    moved = batch.values.clone()
    moved[:, end - 1] += 1.0
    shifted = model.encode(IrregularBatch(batch.times, moved, batch.mask)).mean
    observed_last = (batch.mask[:, end - 1] > 0).any(dim=-1)  # (B,)
    assert bool(((shifted - q.mean).abs().sum(-1) > 1e-6)[observed_last].all())
    # The default anchor is unchanged: z0 at t0, the encoder run backwards.
    first = _latent(encoder, encoder_time=encoder == "gru")
    first.load_state_dict(model.state_dict())
    torch.testing.assert_close(
        first.encode(batch).mean, first.encoder(batch.times, batch.values, batch.mask).mean
    )
    assert float(first.anchor_time(batch)) == float(batch.times[0])


def _last_observed(batch: IrregularBatch) -> Tensor:
    """Each series' last observed value per feature, by a loop (0 where never observed)."""
    out = torch.zeros(batch.values.shape[0], batch.values.shape[2], dtype=F64)
    for b in range(out.shape[0]):
        for d in range(out.shape[1]):
            seen = torch.nonzero(batch.mask[b, :, d] > 0).flatten()
            if len(seen):
                out[b, d] = batch.values[b, seen[-1], d]
    return out


@pytest.mark.parametrize("center", ["mean", "last"])
def test_centred_model_moves_with_the_level_of_each_series(center: str) -> None:
    model, batch = _latent("odernn", center=center), make_batch()
    if center == "mean":
        observed = batch.values.where(batch.mask > 0, torch.zeros_like(batch.values))
        count = batch.mask.sum(1)  # (B, D)
        expected = observed.sum(1) / count.clamp(min=1)
    else:
        expected = _last_observed(batch)
        assert not torch.equal(batch.mask[:, -1], torch.ones_like(batch.mask[:, -1]))
    torch.testing.assert_close(model.level(batch), expected)
    shift = torch.tensor([[3.0, -2.0], [10.0, 0.5], [-7.0, 1.0], [0.25, 4.0]], dtype=F64)
    moved = IrregularBatch(batch.times, batch.values + shift[:, None, :], batch.mask)
    future = batch.times[-1] + torch.linspace(0.1, 1.0, 5, dtype=F64)
    with torch.no_grad():
        torch.manual_seed(3)
        pred = model.forecast(batch, future, n_samples=4)
        torch.manual_seed(3)
        pred_moved = model.forecast(moved, future, n_samples=4)
    # the same posterior and paths; only the level differs, by exactly the shift
    torch.testing.assert_close(pred_moved.mean, pred.mean + shift[:, None, :])
    torch.testing.assert_close(pred_moved.std, pred.std)
    # a feature a series never observes has level 0 rather than a division by zero
    empty = IrregularBatch(batch.times, batch.values, batch.mask.clone())
    empty.mask[1, :, 1] = 0.0
    assert model.level(empty)[1, 1] == 0.0
    plain = _latent("odernn")
    plain.load_state_dict(model.state_dict())
    assert torch.equal(plain.level(batch), torch.zeros(B, D, dtype=F64))
    with pytest.raises(ModelInputError, match="center must be"):
        _latent("gru", center="median")


# ---- masked updates, independence of series, causality of the baselines -------------------


@pytest.mark.parametrize(
    "encoder",
    [
        lambda: GRUEncoder(D, L, 8).double(),
        lambda: GRUEncoder(D, L, 8, time_input=True).double(),
        lambda: ODERNNEncoder(D, L, 8, 8, solver=TIGHT).double(),
    ],
    ids=["gru", "gru-time", "odernn"],
)
def test_posterior_of_a_series_ignores_the_other_series(encoder: Callable[[], nn.Module]) -> None:
    enc, batch = encoder(), make_batch()
    q = enc(batch.times, batch.values, batch.mask)
    other = make_batch(seed=7)  # other series 1..3: other values, other observation times
    values = torch.cat([batch.values[:1], other.values[1:]])
    mask = torch.cat([batch.mask[:1], other.mask[1:]])
    mask[1:, 5] = 1.0  # a time only the other series observe
    q2 = enc(batch.times, values, mask)
    torch.testing.assert_close(q2.mean[0], q.mean[0], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(q2.stddev[0], q.stddev[0], rtol=1e-7, atol=1e-9)
    assert not torch.allclose(q2.mean[1:], q.mean[1:])


@pytest.mark.parametrize("time_input", [False, True])
def test_gru_encoder_reads_each_series_backwards_with_gaps_and_times(time_input: bool) -> None:
    """The posterior equals a per-series loop over its own observations, latest first, each
    step fed ``[values * mask, mask, gap to the later observation, (t - t0)]``."""
    enc, batch = GRUEncoder(D, L, 8, time_input=time_input).double(), make_batch()
    q = enc(batch.times, batch.values, batch.mask)
    t0 = batch.times[0]
    for b in range(B):
        h = torch.zeros(1, 8, dtype=F64)
        later = None
        cols = torch.nonzero((batch.mask[b] > 0).any(-1)).flatten().tolist()
        for c in reversed(cols):
            m = batch.mask[b, c]
            t = batch.times[c]
            gap = (later - t) if later is not None else torch.zeros((), dtype=F64)
            x = [batch.values[b, c] * m, m, gap.view(1)]
            if time_input:
                x.append((t - t0).view(1))
            h = enc.cell(torch.cat(x).unsqueeze(0), h)
            later = t
        lead = (later - t0).view(1, 1)
        mean, raw = enc.head(torch.cat([h, lead], -1)).chunk(2, -1)
        torch.testing.assert_close(q.mean[b], mean[0])
        torch.testing.assert_close(q.stddev[b], torch.nn.functional.softplus(raw[0]) + 1e-4)
    with pytest.raises(ModelInputError, match="encoder_time"):
        _latent("odernn", encoder_time=True)


@pytest.mark.parametrize("name", ["GRUBaseline", "ODERNN"])
def test_baselines_predict_from_strictly_earlier_observations(name: str) -> None:
    model, batch = LOSSES[name](), make_batch()
    t_out = torch.cat([batch.times, batch.times[-1] + torch.tensor([0.5, 1.0], dtype=F64)])
    last = int(torch.nonzero(batch.point_mask[0])[-1])  # series 0's last observation
    changed = batch.values.clone()
    changed[0, last] += 5.0
    p = model(batch.times, batch.values, batch.mask, t_out)
    p2 = model(batch.times, changed, batch.mask, t_out)
    torch.testing.assert_close(p2.mean[0, : last + 1], p.mean[0, : last + 1])  # up to and at it
    assert bool((p2.mean[0, last + 1 :] != p.mean[0, last + 1 :]).all())  # after it
    torch.testing.assert_close(p2.mean[1:], p.mean[1:])  # other series untouched


def test_gru_baseline_extrapolates_autoregressively() -> None:
    model, batch = GRUBaseline(D, 8).double(), make_batch()
    t_far = batch.times[-1] + torch.tensor([1.0], dtype=F64)
    t_both = torch.cat([batch.times[-1:] + 0.5, t_far])
    direct = model(batch.times, batch.values, batch.mask, t_far).mean[:, 0]
    via = model(batch.times, batch.values, batch.mask, t_both).mean[:, 1]
    assert not torch.allclose(direct, via)  # the prediction at +0.5 was fed back


def test_encoder_sizes_are_the_configured_ones_and_the_defaults_keep_old_checkpoints() -> None:
    sized = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=12, encoder_head_hidden=6)
    enc = sized.encoder
    widths = [m.out_features for m in enc.ode_func.net if isinstance(m, nn.Linear)]
    assert widths == [12, 8]  # state 8 -> 12 hidden units -> 8
    assert [m.out_features for m in enc.head if isinstance(m, nn.Linear)] == [6, 2 * L]
    assert isinstance(enc.head[1], nn.Tanh)
    deep = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=12, encoder_ode_depth=2)
    widths = [m.out_features for m in deep.encoder.ode_func.net if isinstance(m, nn.Linear)]
    assert widths == [12, 12, 8]  # two hidden layers
    assert len(deep.encoder.ode_func.net) == 5 and isinstance(deep.encoder.ode_func.net[3], nn.Tanh)
    # q(z0) is the MLP head of the final hidden state
    batch = make_batch()
    h = enc.hidden(batch.times, torch.where(batch.mask > 0, batch.values, 0.0), batch.mask)
    mean, raw = enc.head(h).chunk(2, dim=-1)
    q = enc(batch.times, batch.values, batch.mask)
    torch.testing.assert_close(q.mean, mean)
    torch.testing.assert_close(q.stddev, nn.functional.softplus(raw) + enc.min_std)
    # unset sizes build the previous architecture: the same state-dict keys and shapes, so a
    # checkpoint saved before the options existed still loads
    torch.manual_seed(0)
    default = _latent("odernn", encoder_hidden=8)
    shapes = {k: tuple(v.shape) for k, v in default.state_dict().items()}
    assert shapes["encoder.head.weight"] == (2 * L, 8)
    assert shapes["encoder.ode_func.net.0.weight"] == (8, 8)
    torch.manual_seed(1)
    explicit = _latent("odernn", encoder_hidden=8, encoder_ode_hidden=8, encoder_head_hidden=0)
    explicit.load_state_dict(default.state_dict())
    assert {k: tuple(v.shape) for k, v in explicit.state_dict().items()} == shapes


def _gru_hidden_step_by_step(enc: GRUEncoder, times: Tensor, values: Tensor, mask: Tensor):
    """The GRU encoder's recurrence with every input built inside the loop, as it was up to
    session 44: the reference for the inputs `GRUEncoder` now builds before it."""
    B = values.shape[0]
    h = values.new_zeros(B, enc.hidden_dim)
    t_next = values.new_zeros(B)
    seen = torch.zeros(B, 1, dtype=torch.bool)
    for c in reversed(torch.nonzero((mask > 0).any(2).any(0)).flatten().tolist()):
        m = mask[:, c]
        obs = (m > 0).any(dim=-1, keepdim=True)
        dt = torch.where(seen[:, 0], t_next - times[c], 0.0)
        inputs = [values[:, c], m, dt.unsqueeze(-1)]
        if enc.time_input:
            inputs.append((times[c] - times[0]).expand(B, 1))
        h = torch.where(obs, enc.cell(torch.cat(inputs, dim=-1), h), h)
        t_next = torch.where(obs[:, 0], times[c], t_next)
        seen = seen | obs
    lead = torch.where(seen[:, 0], t_next - times[0], 0.0)
    return torch.cat([h, lead.unsqueeze(-1)], dim=-1)


@pytest.mark.parametrize("time_input", [False, True])
def test_gru_encoder_inputs_built_before_the_loop_equal_the_step_by_step_ones(
    time_input: bool,
) -> None:
    """Same hidden state, bit for bit, and the same gradients: with series observing some
    features, series observing nothing, and columns no series observes."""
    enc = GRUEncoder(3, 4, hidden=7, time_input=time_input).to(F64)
    times = torch.sort(torch.rand(12, dtype=F64) * 5).values
    values = torch.randn(5, 12, 3, dtype=F64)
    mask = (torch.rand(5, 12, 3) < 0.4).to(F64)
    mask[3] = 0.0  # a series with no observation
    mask[:, 7] = 0.0  # a column nobody observes
    mask[:, -1] = 0.0  # nor the last
    values = torch.where(mask > 0, values, 0.0)
    new = enc.hidden(times, values, mask)
    old = _gru_hidden_step_by_step(enc, times, values, mask)
    assert torch.equal(new, old)
    assert new[3].abs().sum() == 0  # nothing observed: the state and the lead stay 0
    grads_new = torch.autograd.grad(new.square().sum(), list(enc.cell.parameters()))
    grads_old = torch.autograd.grad(old.square().sum(), list(enc.cell.parameters()))
    for a, b in zip(grads_new, grads_old, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
