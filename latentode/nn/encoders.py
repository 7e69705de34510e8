"""Recognition networks ``q(z0 | x_1..x_N)``: a GRU and an ODE-RNN, both run backwards in time.

Both read ``times [T]`` (the batch's union grid), ``values [B, T, D]`` and ``mask [B, T, D]``
and return a diagonal `Normal` over ``z0``, the latent state at ``t0 = times[0]``.

- `GRUEncoder` (Chen et al. 2018): at each observation of a series, a GRU update fed
  ``[values * mask, mask, dt]``, with ``dt`` the gap to that series' previous (later)
  observation, and with ``time_input=True`` also ``t - t0``, the observation's time since
  ``t0``. The posterior head also sees the gap between the series' first observation and
  ``t0``. ``z0`` is the state at ``t0``, so where each observation lies relative to ``t0`` is
  what places the series' phase; from gaps alone the GRU has to add them up. On the spirals
  (``reports/spirals.md``) a 100-unit encoder with the time input forecasts with about half
  the error of Chen's 25-unit encoder without it; the report's notes separate the two.
- `ODERNNEncoder` (Rubanova et al. 2019): between observation times the hidden state follows
  ``dh/dt = f(h)`` through our solver (backwards in time), at an observation a GRU update.

Masked update: a series with no observed feature at a time keeps its hidden state (ODE-RNN: it
keeps evolving under the ODE only); time columns where no series observes anything are skipped.
A series' hidden state stays 0 until its own last observation, so its posterior does not depend
on the other series in the batch except through the ODE-RNN's discretisation (below).

ODE-RNN solver choice. Without a ``step_size`` (the default, `SolverSettings`
``(method="euler")``): one step per gap between consecutive observed union-grid times, for the
whole batch at once (all rows share the gap, so a 1-D ``t`` of two times suffices); one Euler
step per gap is one MLP call per observation time, computed directly by `flow_hidden` (no
solver set-up and no host read per gap). This is Rubanova's encoder, and like Rubanova's
implementation it steps at the observation times of the whole batch: with a fixed-step method
the other series' times are a series' step boundaries, and its encoding depends on its batch
(a periodic fit's val/mse 0.298 at batch 50, 0.313 at batch 1, same weights). Score such a
model at the batch size it was trained at.

With ``step_size=s`` each series steps on its own grid, every gap between its observations in
equal steps of at most ``s`` (`latentode.nn.row_flow`): its encoding is the one it gets alone,
to rounding. On the periodic data (one seed, 2000 iterations, s = 0.05, about the data's
spacing) this interpolated as well as the batch-union flow (MSE x 1e-2 at 10/20/30/50%
observed: 6.8/1.5/1.3/0.8 against 6.0/1.9/1.6/1.4) but extrapolated worse (17.0/8.8/8.8/11.5
against 14.2/4.3/2.4/2.0); one Euler step per own gap trained worse still (interpolation 36.7
against 22.9 at 10% after 300 iterations). ``method="dopri5"`` without ``step_size`` gives an
accurate flow, whose batch dependence is within its tolerance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Normal

from ..solver import odeint
from .base import (
    ModelInputError,
    SolverSettings,
    check_observations,
    check_solver_settings,
    observed_columns,
    param_dtype,
)
from .row_flow import check_row_flow, row_schedule, run_rows, steps_per_series
from .vector_fields import ODEFunc

__all__ = ["Encoder", "GRUEncoder", "ODERNNEncoder", "flow_hidden"]


def flow_hidden(func: nn.Module, h: Tensor, t: Tensor, solver: SolverSettings) -> Tensor:
    """An ODE-RNN's hidden state ``h [B, H]`` carried through the times ``t [n]``: ``[n, B, H]``.

    With ``solver`` Euler and no ``step_size`` (one step per interval) the steps are taken here,
    ``h_{i+1} = h_i + (t_{i+1} - t_i) f(t_i, h_i)``: the same values as `odeint`, at one
    evaluation per interval and without the solver's set-up and host reads. Any other
    settings go through `odeint`.
    """
    if solver.method != "euler" or solver.step_size is not None:
        return odeint(func, h, t, **solver.kwargs())
    out = [h]
    for i in range(t.shape[0] - 1):
        h = h + (t[i + 1] - t[i]) * func(t[i], h)  # (B, H)
        out.append(h)
    return torch.stack(out)  # (n, B, H)


class Encoder(nn.Module):
    """Base class: a hidden state read backwards through the data, then a Gaussian head.

    Subclasses implement `hidden` and set ``self.head_extra`` (extra head inputs, >= 0).

    Args:
        input_dim: number of features D.
        latent_dim: width of ``z0``.
        hidden: width of the hidden state.
        min_std: floor added to the posterior std (keeps ``log q`` finite).
        head_hidden: 0 (default): the posterior's mean and std are a linear map of the final
            hidden state; > 0: an MLP with one tanh layer of this width (Rubanova's heads:
            100 units for the ODE-RNN encoder, 50 for the RNN encoder).
    """

    head_extra: int = 0

    def __init__(
        self, input_dim: int, latent_dim: int, hidden: int, min_std: float, head_hidden: int = 0
    ) -> None:
        super().__init__()
        if head_hidden < 0:
            raise ModelInputError(f"head_hidden must be >= 0, got {head_hidden}.")
        self.input_dim = input_dim
        self.latent_dim = latent_dim
        self.hidden_dim = hidden
        self.min_std = min_std
        width = hidden + self.head_extra
        self.head: nn.Module = (
            nn.Sequential(
                nn.Linear(width, head_hidden), nn.Tanh(), nn.Linear(head_hidden, 2 * latent_dim)
            )
            if head_hidden
            else nn.Linear(width, 2 * latent_dim)
        )

    def hidden(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """The head's input ``[B, hidden + head_extra]`` after the backwards pass."""
        raise NotImplementedError

    def forward(self, times: Tensor, values: Tensor, mask: Tensor) -> Normal:
        """Encode a batch.

        Args:
            times: ``[T]`` strictly increasing union grid.
            values: ``[B, T, D]``; entries with ``mask == 0`` are ignored (may be NaN).
            mask: ``[B, T, D]``, 1 where observed.

        Returns:
            ``q(z0)``: ``Normal`` with mean and std ``[B, latent_dim]``.

        Raises:
            ModelInputError: for tensors of the wrong shape.
        """
        check_observations(times, values, mask, self.input_dim, param_dtype(self))
        values = torch.where(mask > 0, values, 0.0)  # (B, T, D)
        mask = mask.to(values.dtype)  # (B, T, D)
        h = self.hidden(times.to(values.dtype), values, mask)  # (B, H + extra)
        mean, raw = self.head(h).chunk(2, dim=-1)  # (B, L) each
        return Normal(mean, F.softplus(raw) + self.min_std, validate_args=False)


class GRUEncoder(Encoder):
    """A GRU run backwards over the observations, fed values, mask and time gaps.

    Args:
        input_dim: number of features D.
        latent_dim: width of ``z0``.
        hidden: GRU width (Chen 2018: 25).
        min_std: floor of the posterior std.
        time_input: also feed each observation's time since ``t0`` (module docstring).
        head_hidden: width of the posterior head's hidden layer (0: linear; `Encoder`).
    """

    head_extra = 1

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: int = 25,
        min_std: float = 1e-4,
        time_input: bool = False,
        head_hidden: int = 0,
    ) -> None:
        super().__init__(input_dim, latent_dim, hidden, min_std, head_hidden)
        self.time_input = time_input
        self.cell = nn.GRUCell(2 * input_dim + 1 + int(time_input), hidden)

    def hidden(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """GRU updates at each series' observations, latest first; see the module docstring.

        Every step's input is built before the loop (`_gap_inputs`), so that the loop holds
        only the cell and the masked update: the same values as building them step by step,
        at a third of the operations per step (the recurrence dominates a spirals training
        iteration, `benchmarks/latent_ode_step.py`).
        """
        B = values.shape[0]
        x, obs, lead = self._gap_inputs(times, values, mask)  # (B, T, F), (B, T, 1), (B,)
        h = values.new_zeros(B, self.hidden_dim)  # (B, H)
        for c in reversed(observed_columns(mask).tolist()):
            h = torch.where(obs[:, c], self.cell(x[:, c], h), h)  # (B, H)
        return torch.cat([h, lead.unsqueeze(-1)], dim=-1)  # (B, H + 1)

    def _gap_inputs(
        self, times: Tensor, values: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The GRU's input at every time column, ``[B, T, 2D + 1 (+ 1)]``: values, mask, the
        gap ``dt`` to the series' next (later) observed time (0 at its last), and with
        ``time_input`` the time since ``t0``; which rows observe at each column, ``[B, T, 1]``;
        and the gap from ``t0`` to each series' first observation, ``[B]`` (0 if none)."""
        B, T, _ = values.shape
        obs = (mask > 0).any(dim=-1, keepdim=True)  # (B, T, 1)
        at = torch.where(obs[..., 0], times, torch.inf)  # (B, T) observed times, else inf
        # the earliest observed time after each column: a running minimum from the end
        later = torch.cat([at[:, 1:], at.new_full((B, 1), torch.inf)], dim=1)  # (B, T)
        t_next = later.flip(1).cummin(dim=1).values.flip(1)  # (B, T)
        seen = torch.isfinite(t_next)  # (B, T) some observation after the column
        dt = torch.where(seen, t_next - times, 0.0)  # (B, T)
        inputs = [values, mask, dt.unsqueeze(-1)]
        if self.time_input:
            inputs.append((times - times[0]).expand(B, T).unsqueeze(-1))
        first = at.min(dim=1).values  # (B,)
        lead = torch.where(torch.isfinite(first), first - times[0], 0.0)  # (B,)
        return torch.cat(inputs, dim=-1), obs, lead


class ODERNNEncoder(Encoder):
    """ODE-RNN run backwards in time (Rubanova et al. 2019).

    Args:
        input_dim: number of features D.
        latent_dim: width of ``z0``.
        hidden: width of the hidden state (and of the GRU).
        ode_hidden: hidden width of the hidden-state vector field.
        ode_depth: hidden layers of that vector field.
        activation: its (smooth) activation.
        solver: how the gaps are integrated (default: one Euler step per gap).
        min_std: floor of the posterior std.
        head_hidden: width of the posterior head's hidden layer (0: linear; `Encoder`).

    Attributes:
        ode_func: the `ODEFunc` of the hidden state (its ``nfe`` counts evaluations).
    """

    def __init__(
        self,
        input_dim: int,
        latent_dim: int,
        hidden: int = 25,
        ode_hidden: int = 25,
        ode_depth: int = 1,
        activation: str = "tanh",
        solver: SolverSettings | None = None,
        min_std: float = 1e-4,
        head_hidden: int = 0,
    ) -> None:
        super().__init__(input_dim, latent_dim, hidden, min_std, head_hidden)
        self.solver = solver or SolverSettings(method="euler")
        check_solver_settings(self.solver, "solver")
        check_row_flow(self.solver, "solver")
        self.cell = nn.GRUCell(2 * input_dim, hidden)
        self.ode_func = ODEFunc(hidden, ode_hidden, ode_depth, activation)

    def evolve(self, h: Tensor, t_from: Tensor, t_to: Tensor) -> Tensor:
        """Integrate the hidden state ``[B, H]`` from ``t_from`` to ``t_to`` (0-d tensors)."""
        t = torch.stack([t_from, t_to])  # (2,)
        return flow_hidden(self.ode_func, h, t, self.solver)[-1]  # (B, H)

    def hidden(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """ODE between observations, GRU at observations, latest first; ends at ``t0``."""
        if steps_per_series(self.solver):
            return self._hidden_rows(times, values, mask)
        B = values.shape[0]
        h = values.new_zeros(B, self.hidden_dim)  # (B, H)
        seen = torch.zeros(B, 1, dtype=torch.bool, device=values.device)  # (B, 1)
        t_prev: Tensor | None = None
        for c in reversed(observed_columns(mask).tolist()):
            if t_prev is not None:
                h = torch.where(seen, self.evolve(h, t_prev, times[c]), h)  # (B, H)
            m = mask[:, c]  # (B, D)
            obs = (m > 0).any(dim=-1, keepdim=True)  # (B, 1)
            x = torch.cat([values[:, c], m], dim=-1)  # (B, 2D)
            h = torch.where(obs, self.cell(x, h), h)  # (B, H)
            seen = seen | obs
            t_prev = times[c]
        if t_prev is not None and bool(t_prev > times[0]):
            h = torch.where(seen, self.evolve(h, t_prev, times[0]), h)  # (B, H)
        return h

    def _hidden_rows(self, times: Tensor, values: Tensor, mask: Tensor) -> Tensor:
        """The fixed-step flow: each series steps on its own grid (`latentode.nn.row_flow`)."""
        point = (mask > 0).any(dim=-1)  # (B, T)
        host = torch.cat([times.unsqueeze(0), point.to(times.dtype)]).cpu().numpy()  # (1+B, T)
        sched = row_schedule(
            host[0], host[1:] > 0, self.solver, "encoder solver", backward=True, end=host[0, 0]
        )
        return run_rows(self.ode_func, self.cell, values, mask, sched, self.solver)[0]
