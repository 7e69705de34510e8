"""Tuple states, per-sample time grids [B, T], and the `Solution` / `SolveStats` bookkeeping."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from latentode import SolverInputError, odeint, solve
from latentode.solver import Solution, SolveStats

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
# New function evaluations per attempted step (all three methods are FSAL).
EVALS_PER_STEP = {"bosh3": 3, "dopri5": 6, "tsit5": 6}
STATS_FIELDS = (
    "nfe",
    "n_accepted",
    "n_rejected",
    "nfe_backward",
    "n_accepted_backward",
    "n_rejected_backward",
)

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class CountingField:
    """Wraps a vector field and counts its calls."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.calls = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, y)


def forced_decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y + torch.sin(t)


# --- tuple states -------------------------------------------------------------------------------
def pair_field(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Coupled dynamics on a = (2, 2), b = (3,)."""
    a, b = y
    da = -0.5 * a + 0.2 * torch.sin(t) * b.sum()
    db = -0.3 * b + 0.1 * torch.cos(t) * a.sum() - 0.05 * b**2
    return da, db


def pair_field_flat(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The same dynamics on the concatenated state (7,)."""
    da, db = pair_field(t, (y[:4].reshape(2, 2), y[4:]))
    return torch.cat([da.reshape(-1), db])


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_tuple_state_matches_concatenated(method: str) -> None:
    a0 = torch.tensor([[1.0, -0.5], [0.3, 2.0]], dtype=F64)
    b0 = torch.tensor([0.5, -1.0, 0.25], dtype=F64)
    # rk4 with a 1-D t and no step_size steps on t itself: both solves take identical steps.
    t = torch.linspace(0.0, 2.0, 21, dtype=F64)
    a, b = odeint(pair_field, (a0, b0), t, method=method, **TIGHT)
    assert a.shape == (21, 2, 2) and b.shape == (21, 3)
    assert torch.equal(a[0], a0) and torch.equal(b[0], b0)
    flat = odeint(pair_field_flat, torch.cat([a0.reshape(-1), b0]), t, method=method, **TIGHT)
    bound = 1e-12 if method == "rk4" else 1e-7
    assert (a.reshape(21, 4) - flat[:, :4]).abs().max().item() < bound
    assert (b - flat[:, 4:]).abs().max().item() < bound


# --- per-sample time grids ----------------------------------------------------------------------
def irregular_grid(rng: torch.Generator, ends: list[float], n: int) -> torch.Tensor:
    """(B, n) rows 0 < ... < end_b with n - 2 uniform random interior times."""
    rows = []
    for end in ends:
        inner, _ = torch.sort(torch.rand(n - 2, dtype=F64, generator=rng) * end)
        rows.append(torch.cat([torch.zeros(1, dtype=F64), inner, torch.tensor([end], dtype=F64)]))
    return torch.stack(rows)


@pytest.mark.parametrize("direction", ["forward", "reverse"])
@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_per_sample_grid_matches_separate_solves(
    method: str, direction: str, make_mlp: Callable[..., torch.nn.Module], rng: torch.Generator
) -> None:
    field = make_mlp(dim=2, hidden=8)
    # Ends are multiples of 2^-6, so the rk4 step grids of the joint and the separate solves
    # coincide and only the interpolated outputs are compared.
    t = irregular_grid(rng, [2.0, 3.0, 1.25], n=9)  # (B, T)
    if direction == "reverse":
        t = 3.0 - t  # all rows start at 3 and decrease
    y0 = torch.randn(3, 2, dtype=F64, generator=rng)
    kw = {"step_size": 2.0**-6} if method == "rk4" else TIGHT
    with torch.no_grad():
        ys = odeint(field, y0, t, method=method, **kw)  # (T, B, D)
        assert ys.shape == (9, 3, 2)
        assert torch.equal(ys[0], y0)
        for b in range(3):
            alone = odeint(field, y0[b], t[b], method=method, **kw)  # (T, D)
            err = (ys[:, b] - alone).abs().max().item()
            assert err < (1e-12 if method == "rk4" else 1e-7), f"sample {b}: {err:.3e}"


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_per_sample_grid_costs_no_extra_evaluations(
    method: str, make_mlp: Callable[..., torch.nn.Module], rng: torch.Generator
) -> None:
    """Dense output: 25 irregular times per row cost the same as one solve to the last end."""
    field = make_mlp(dim=2, hidden=8)
    t = irregular_grid(rng, [2.0, 3.0, 1.25, 2.6], n=25)  # (B, T)
    y0 = torch.randn(4, 2, dtype=F64, generator=rng)
    with torch.no_grad():
        per_sample = solve(field, y0, t, method=method, rtol=1e-6, atol=1e-8)
        t_single = torch.tensor([0.0, 3.0], dtype=F64)
        single = solve(field, y0, t_single, method=method, rtol=1e-6, atol=1e-8)
    assert per_sample.ys.shape == (25, 4, 2)
    assert per_sample.stats.nfe <= single.stats.nfe + EVALS_PER_STEP[method]
    assert per_sample.stats.n_accepted <= single.stats.n_accepted + 1


@pytest.mark.parametrize("grad", [False, True])
def test_per_sample_read_outs_in_blocks_match_one_block(
    grad: bool,
    make_mlp: Callable[..., torch.nn.Module],
    rng: torch.Generator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many read-outs in one step are gathered in blocks (bounded memory): the values, the
    gradients and the read-out times' gradients are those of one block, for a state with
    trailing dimensions ([B, K, D]: K paths sharing their sample's grid)."""
    from latentode.solver import rk

    field = make_mlp(dim=2, hidden=8)
    t = irregular_grid(rng, [2.0, 3.0, 1.25], n=200)  # many read-outs per step
    y0 = torch.randn(3, 4, 2, dtype=F64, generator=rng)  # (B, K, D)

    def run() -> tuple[torch.Tensor, ...]:
        tt, y = t.clone().requires_grad_(grad), y0.clone().requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            sol = solve(field, y, tt, rtol=1e-8, atol=1e-10)
            steps = torch.tensor(sol.stats.n_accepted)
            if not grad:
                return sol.ys, steps
            loss = (sol.ys**2).sum()
            gy, gt = torch.autograd.grad(loss, [y, tt])
            return sol.ys.detach(), gy, gt, steps

    whole = run()
    monkeypatch.setattr(rk, "READ_BLOCK", 7 * 8 * 3)  # dopri5: 3 read-outs of [7, 8] per block
    blocks = run()
    assert whole[0].shape == (200, 3, 4, 2)
    # 3 x 199 read-outs in fewer than 199 steps: some step reads out more than one block of 3
    assert int(whole[-1]) < 199
    for a, b in zip(whole, blocks, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    alone = odeint(field, y0[1, 2], t[1], rtol=1e-8, atol=1e-10)  # (T, D): sample 1, path 2
    assert (blocks[0][:, 1, 2] - alone).abs().max().item() < 1e-6


# --- Solution and SolveStats --------------------------------------------------------------------
def test_solution_fields() -> None:
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.linspace(0.0, 2.0, 7, dtype=F64)
    sol = solve(forced_decay, y0, t)
    assert isinstance(sol, Solution)
    assert isinstance(sol.stats, SolveStats)
    assert sol.method == "dopri5"  # the default
    assert torch.equal(sol.ts, t)
    assert torch.equal(sol.ys, odeint(forced_decay, y0, t))
    for name in STATS_FIELDS:
        assert isinstance(getattr(sol.stats, name), int), name
    assert sol.stats.n_accepted > 0
    assert sol.stats.nfe > 0
    # Nothing ran backwards.
    assert sol.stats.nfe_backward == 0
    assert sol.stats.n_accepted_backward == 0
    assert sol.stats.n_rejected_backward == 0


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_tight_tolerance_takes_more_steps(method: str) -> None:
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, 4.0], dtype=F64)

    def vdp(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])

    loose = solve(vdp, y0, t, method=method, rtol=1e-4, atol=1e-6).stats
    tight = solve(vdp, y0, t, method=method, rtol=1e-8, atol=1e-10).stats
    assert loose.n_accepted > 0
    assert tight.n_accepted > 2 * loose.n_accepted


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_adaptive_nfe_counts_calls_and_fsal(
    method: str, make_mlp: Callable[..., torch.nn.Module]
) -> None:
    field = CountingField(make_mlp(dim=3, hidden=16))
    y0 = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    t = torch.linspace(0.0, 3.0, 30, dtype=F64)
    with torch.no_grad():
        stats = solve(field, y0, t, method=method, rtol=1e-7, atol=1e-9).stats
    assert stats.nfe == field.calls
    attempts = stats.n_accepted + stats.n_rejected
    per_step = EVALS_PER_STEP[method]
    assert per_step * attempts < stats.nfe <= per_step * attempts + 4, (
        f"{method}: nfe={stats.nfe}, accepted={stats.n_accepted}, rejected={stats.n_rejected}"
    )


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5"])
def test_max_step_bounds_the_step(method: str) -> None:
    """An easy problem would take a few large steps; max_step=0.01 forces at least 100."""
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    free = solve(forced_decay, y0, t, method=method, rtol=1e-4, atol=1e-6)
    capped = solve(forced_decay, y0, t, method=method, rtol=1e-4, atol=1e-6, max_step=0.01)
    assert free.stats.n_accepted < 50
    assert 100 <= capped.stats.n_accepted <= 102
    assert (capped.ys - free.ys).abs().max().item() < 1e-3


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_fixed_step_stats(method: str) -> None:
    field = CountingField(forced_decay)
    y0 = torch.tensor([1.0, -0.5], dtype=F64)
    t = torch.linspace(0.0, 1.0, 5, dtype=F64)
    stats = solve(field, y0, t, method=method, step_size=0.125).stats
    assert stats.nfe == field.calls
    assert stats.n_accepted == 8
    assert stats.n_rejected == 0
    stages = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]
    # At most one evaluation per stage per step, plus the first f(t0, y0) or a final one.
    assert stats.nfe <= stages * 8 + 1


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_a_state_without_elements_gives_an_empty_solution(gradient: str) -> None:
    """A batch of 0 (the last, empty batch of a split) or a width of 0: ``[T, *shape]`` of
    nothing, ``func`` never called. The error norm once divided by the size and reported
    a NaN initial state."""

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2, dtype=torch.float64)

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            raise AssertionError("func called for an empty state")

    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    y0 = torch.zeros(0, 2, dtype=torch.float64, requires_grad=True)
    ys = odeint(Field(), y0, t, gradient=gradient)
    assert ys.shape == (3, 0, 2)
    assert odeint(Field(), torch.zeros(4, 0, dtype=torch.float64), t).shape == (3, 4, 0)
    a, b = odeint(Field(), (y0, torch.zeros(0, dtype=torch.float64)), t)
    assert a.shape == (3, 0, 2) and b.shape == (3, 0)
    assert odeint(Field(), y0, torch.zeros(0, 3)).shape == (3, 0, 2)  # per-sample, no rows
    with pytest.raises(SolverInputError, match="strictly increasing"):
        odeint(Field(), y0, torch.tensor([0.0, 1.0, 0.5]))
    with pytest.raises(SolverInputError, match="leading batch dimension 2"):
        odeint(Field(), y0, torch.zeros(2, 3))


def test_one_output_time_returns_a_copy_of_y0() -> None:
    """``t`` of one time: ``ys[0]`` equals ``y0`` and is a copy, as it is for longer ``t``."""
    for y0, t in (
        (torch.ones(3), torch.tensor([0.0])),
        (torch.ones(2, 3), torch.tensor([[0.0], [0.0]])),
    ):
        ys = odeint(lambda t, y: -y, y0, t)
        assert torch.equal(ys[0], y0)
        ys.fill_(5.0)
        assert torch.equal(y0, torch.ones_like(y0))


def test_a_first_solve_in_inference_mode_leaves_training_solves_working() -> None:
    """The method's coefficient tensors are cached by the first solve of a process; built in
    inference mode (Lightning's validate before fit) they could not be saved for backward,
    and every later training solve failed."""
    from latentode.solver import rk

    rk._COEF_CACHE.clear()
    w = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)
    y0, t = torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.inference_mode():
        odeint(lambda t, y: w * y, y0, t, method="tsit5")
    (grad,) = torch.autograd.grad(odeint(lambda t, y: w * y, y0, t, method="tsit5")[-1].sum(), w)
    assert abs(float(grad) - 2 * math.exp(-0.7)) < 1e-6  # d/dw 2 e^w at w = -0.7
