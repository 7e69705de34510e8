"""Baselines for honest comparison: a GRU with time gaps (Chen 2018's RNN) and an ODE-RNN.

Both run forwards in time over the conditioning observations and predict ``p(x(t))`` at any
query times ``t_out [T_out]``. The prediction at ``t`` uses only observations strictly before
``t`` (at a time that is both observed and queried, the prediction comes before the update), so
scoring the conditioning points themselves measures one-step-ahead prediction, not copying.

- `GRUBaseline`: a GRU updated at each observation with ``[values * mask, mask, dt]``; the
  prediction at ``t`` decodes ``[h, t - t_last]``. Past a series' last observation it
  extrapolates autoregressively: each prediction is fed back as a fully observed input.
- `ODERNN` (Rubanova et al. 2019): between events the hidden state follows ``dh/dt = f(h)``
  through our solver; GRU update at observations; the prediction at ``t`` decodes ``h(t)``.
  Forecasting is the ODE flow of the hidden state after the last observation.

A series' hidden state is 0 until its first observation. Its predictions depend on the other
series in the batch only through the ODE-RNN's discretisation without a ``step_size``: each
stretch between two event times of the batch is one solve, so with a fixed-step solver the other
series' times (and the query times) are step boundaries (an extrapolation moved by up to 0.15
between a batch of 12 and the series alone). With a ``step_size`` each series steps on its own
grid and the queries are read off it (`latentode.nn.row_flow`): a series' predictions are the
ones it gets alone, whichever times are asked for. On the periodic data (one seed, 2000
iterations, step 0.05) this scored as the batch-union flow (README, "Known limitations").

Losses are negative log-likelihoods per observed target value, as in `LatentODE.elbo`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal

from .base import (
    ModelInputError,
    Observations,
    Prediction,
    SolverSettings,
    check_obs_std,
    check_observations,
    check_sizes,
    check_solver_settings,
    observed_columns,
    param_dtype,
)
from .decoders import GaussianDecoder, masked_log_likelihood
from .encoders import flow_hidden
from .row_flow import check_row_flow, readout, row_schedule, run_rows, steps_per_series
from .vector_fields import ODEFunc, check_depth

__all__ = ["ODERNN", "GRUBaseline", "RecurrentBaseline"]


def _events(times: Tensor, mask: Tensor, t_out: Tensor) -> tuple[Tensor, list[int], list[int]]:
    """Merge observed columns and query times into one sorted event list.

    Returns:
        ``(ev [E], col_at, out_at)``: event times, and per event the column of ``times`` it
        observes and the index into ``t_out`` it answers (-1 where none).
    """
    cols = observed_columns(mask)  # (C,)
    merged = torch.cat([times[cols], t_out.to(times)])  # (C + T_out,)
    ev, inverse = torch.unique(merged, sorted=True, return_inverse=True)  # (E,), (C + T_out,)
    col_at, out_at = [-1] * len(ev), [-1] * len(ev)
    inv, C = inverse.tolist(), len(cols)
    for j, c in enumerate(cols.tolist()):
        col_at[inv[j]] = c
    for j in range(len(t_out)):
        out_at[inv[C + j]] = j
    return ev, col_at, out_at


class RecurrentBaseline(nn.Module):
    """Shared API of the baselines: ``forward(times, values, mask, t_out) -> Normal``.

    Args:
        input_dim: number of features D.
        hidden: width of the hidden state.
        sizes: the subclass's other widths, checked with these (each 1 or more).

    Raises:
        ModelInputError: a width below 1.
    """

    def __init__(self, input_dim: int, hidden: int, **sizes: int) -> None:
        super().__init__()
        check_sizes(input_dim=input_dim, hidden=hidden, **sizes)
        self.input_dim = input_dim
        self.hidden_dim = hidden

    def _prepare(
        self, times: Tensor, values: Tensor, mask: Tensor, t_out: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Check the inputs; return times, values (0 where unobserved) and mask in one dtype."""
        check_observations(times, values, mask, self.input_dim, param_dtype(self))
        if t_out.dim() != 1 or len(t_out) < 1:
            raise ModelInputError(
                f"t_out must be 1-D [T_out] (shared by the batch); got {tuple(t_out.shape)}."
            )
        if len(t_out) > 1 and not bool((t_out.diff() > 0).all()):
            raise ModelInputError("t_out must be strictly increasing (sort, drop duplicates).")
        values = torch.where(mask > 0, values, 0.0)  # (B, T, D)
        return times.to(values.dtype), values, mask.to(values.dtype)

    def predict(self, observed: Observations, times: Tensor) -> Prediction:
        """Predictive mean and std ``[B, T, D]`` at ``times`` ``[T]``."""
        p_x = self(observed.times, observed.values, observed.mask, times)
        return Prediction(p_x.mean, p_x.stddev)

    def reconstruct(self, observed: Observations, times: Tensor | None = None) -> Prediction:
        """Interpolation: `predict` at ``times`` (default: the observed grid)."""
        return self.predict(observed, observed.times if times is None else times)

    def forecast(self, observed: Observations, future_times: Tensor) -> Prediction:
        """Extrapolation: `predict` at ``future_times``."""
        return self.predict(observed, future_times)

    def loss(self, observed: Observations, target: Observations) -> Tensor:
        """Negative log-likelihood of ``target`` per observed target value (scalar)."""
        p_x = self(observed.times, observed.values, observed.mask, target.times)
        log_lik = masked_log_likelihood(p_x, target.values, target.mask)  # (B,)
        n_observed = (target.mask > 0).sum().clamp(min=1).to(log_lik.dtype)
        return -log_lik.sum() / n_observed


class GRUBaseline(RecurrentBaseline):
    """GRU fed time gaps, extrapolating autoregressively (Chen 2018's RNN baseline).

    Args:
        input_dim: number of features D.
        hidden: GRU width (Chen 2018: 25).
        decoder_hidden, decoder_depth: the head MLP reading ``[h, dt]``.
        obs_std, learn_std: the Gaussian observation std (fixed or learned).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int = 25,
        decoder_hidden: int = 20,
        decoder_depth: int = 1,
        obs_std: float = 0.01,
        learn_std: bool = False,
    ) -> None:
        super().__init__(input_dim, hidden, decoder_hidden=decoder_hidden)
        check_depth(decoder_depth, "decoder_depth")
        check_obs_std(obs_std)
        self.cell = nn.GRUCell(2 * input_dim + 1, hidden)
        self.decoder = GaussianDecoder(
            hidden + 1, input_dim, decoder_hidden, decoder_depth, "relu", obs_std, learn_std
        )

    def forward(self, times: Tensor, values: Tensor, mask: Tensor, t_out: Tensor) -> Normal:
        """Predict ``p(x(t))`` at ``t_out [T_out]``; a ``Normal`` of shape ``[B, T_out, D]``."""
        times, values, mask = self._prepare(times, values, mask, t_out)
        B = values.shape[0]
        ev, col_at, out_at = _events(times, mask, t_out)
        point = (mask > 0).any(dim=-1)  # (B, T)
        last_obs = torch.where(point, times, -torch.inf).amax(dim=1)  # (B,)
        h = values.new_zeros(B, self.hidden_dim)  # (B, H)
        t_last = values.new_zeros(B)  # (B,)
        seen = torch.zeros(B, 1, dtype=torch.bool, device=values.device)  # (B, 1)
        means: list[Tensor] = [values] * len(t_out)
        stds: list[Tensor] = [values] * len(t_out)
        for e, t_e in enumerate(ev):
            dt = torch.where(seen[:, 0], t_e - t_last, 0.0).unsqueeze(-1)  # (B, 1)
            if out_at[e] >= 0:
                p = self.decoder(torch.cat([h, dt], dim=-1))  # (B, D)
                means[out_at[e]], stds[out_at[e]] = p.mean, p.stddev
                feed = (t_e > last_obs).unsqueeze(-1)  # (B, 1) past the last observation
                x = torch.cat([p.mean, torch.ones_like(p.mean), dt], dim=-1)  # (B, 2D + 1)
                h = torch.where(feed, self.cell(x, h), h)  # (B, H)
                t_last = torch.where(feed[:, 0], t_e, t_last)
                seen = seen | feed
                dt = torch.where(feed, 0.0, dt)  # (B, 1)
            c = col_at[e]
            if c >= 0:
                m = mask[:, c]  # (B, D)
                obs = (m > 0).any(dim=-1, keepdim=True)  # (B, 1)
                x = torch.cat([values[:, c], m, dt], dim=-1)  # (B, 2D + 1)
                h = torch.where(obs, self.cell(x, h), h)  # (B, H)
                t_last = torch.where(obs[:, 0], t_e, t_last)
                seen = seen | obs
        return Normal(torch.stack(means, dim=1), torch.stack(stds, dim=1), validate_args=False)


class ODERNN(RecurrentBaseline):
    """ODE-RNN run forwards in time, used directly for interpolation and forecasting.

    Args:
        input_dim: number of features D.
        hidden: width of the hidden state.
        ode_hidden, ode_depth, activation: the hidden-state vector field.
        decoder_hidden, decoder_depth: the head MLP ``h -> x`` (depth 0: linear).
        obs_std, learn_std: the Gaussian observation std.
        solver: integration between events (default: one Euler step per gap, see
            `latentode.nn.encoders`).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int = 25,
        ode_hidden: int = 25,
        ode_depth: int = 1,
        activation: str = "tanh",
        decoder_hidden: int = 20,
        decoder_depth: int = 1,
        obs_std: float = 0.01,
        learn_std: bool = False,
        solver: SolverSettings | None = None,
    ) -> None:
        super().__init__(input_dim, hidden, ode_hidden=ode_hidden, decoder_hidden=decoder_hidden)
        check_depth(ode_depth, "ode_depth")
        check_depth(decoder_depth, "decoder_depth")
        check_obs_std(obs_std)
        self.solver = solver or SolverSettings(method="euler")
        check_solver_settings(self.solver, "solver")
        check_row_flow(self.solver, "solver")
        self.cell = nn.GRUCell(2 * input_dim, hidden)
        self.ode_func = ODEFunc(hidden, ode_hidden, ode_depth, activation)
        self.decoder = GaussianDecoder(
            hidden, input_dim, decoder_hidden, decoder_depth, obs_std=obs_std, learn_std=learn_std
        )

    def forward(self, times: Tensor, values: Tensor, mask: Tensor, t_out: Tensor) -> Normal:
        """Predict ``p(x(t))`` at ``t_out [T_out]``; a ``Normal`` of shape ``[B, T_out, D]``.

        Each stretch between two observation times is one solve that also reads out every
        query time inside it.
        """
        times, values, mask = self._prepare(times, values, mask, t_out)
        if steps_per_series(self.solver):
            return self.decoder(self._hidden_rows(times, values, mask, t_out))
        B = values.shape[0]
        ev, col_at, out_at = _events(times, mask, t_out)
        h = values.new_zeros(B, self.hidden_dim)  # (B, H)
        seen = torch.zeros(B, 1, dtype=torch.bool, device=values.device)  # (B, 1)
        h_out: list[Tensor] = [h] * len(t_out)
        start = 0
        while True:
            if out_at[start] >= 0:
                h_out[out_at[start]] = h  # prediction before the update
            c = col_at[start]
            if c >= 0:
                m = mask[:, c]  # (B, D)
                obs = (m > 0).any(dim=-1, keepdim=True)  # (B, 1)
                x = torch.cat([values[:, c], m], dim=-1)  # (B, 2D)
                h = torch.where(obs, self.cell(x, h), h)  # (B, H)
                seen = seen | obs
            if start == len(ev) - 1:
                break
            stop = next((e for e in range(start + 1, len(ev)) if col_at[e] >= 0), len(ev) - 1)
            hs = flow_hidden(self.ode_func, h, ev[start : stop + 1], self.solver)  # (n, B, H)
            hs = torch.where(seen, hs, h)  # (n, B, H) unseen series stay at 0
            for e in range(start + 1, stop):
                if out_at[e] >= 0:
                    h_out[out_at[e]] = hs[e - start]
            h, start = hs[-1], stop
        return self.decoder(torch.stack(h_out, dim=1))  # (B, T_out, D)

    def _hidden_rows(self, times: Tensor, values: Tensor, mask: Tensor, t_out: Tensor) -> Tensor:
        """The fixed-step flow read out at ``t_out``: ``[B, T_out, H]``; each series steps on
        its own grid (`latentode.nn.row_flow`)."""
        point = (mask > 0).any(dim=-1)  # (B, T)
        T = times.shape[0]
        flat = torch.cat([times, t_out.to(times), point.to(times.dtype).flatten()])
        host = flat.cpu().numpy()  # one read: times, queries, observed points
        t_host, q_host = host[:T], host[T : T + len(t_out)]
        p_host = host[T + len(t_out) :].reshape(point.shape) > 0  # (B, T)
        sched = row_schedule(t_host, p_host, self.solver, "solver", backward=False, end=q_host[-1])
        _, states = run_rows(self.ode_func, self.cell, values, mask, sched, self.solver, True)
        return readout(self.ode_func, states, sched, q_host, self.solver)  # (B, T_out, H)
