"""Failure modes: SolverError (stiffness, non-finite values, blow-up), SolverInputError (bad
arguments), and the number of host synchronisations of the adaptive loop."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from sync_helpers import count_syncs
from torch import nn

from latentode import SolverError, SolverInputError, odeint, solve
from latentode.solver import METHODS

F64 = torch.float64
ADAPTIVE = ("bosh3", "dopri5", "tsit5")


def numbers_in(message: str) -> list[float]:
    """Every decimal number written in ``message``."""
    return [float(s) for s in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", message)]


def assert_message_names_t(err: SolverError) -> None:
    """The message states the time (to 3 significant digits at least) and the step size."""
    message = str(err)
    assert any(abs(x - err.t) <= 1e-3 * max(1.0, abs(err.t)) for x in numbers_in(message)), message
    assert "step" in message.lower(), message


def test_error_types() -> None:
    assert issubclass(SolverError, RuntimeError)
    assert issubclass(SolverInputError, ValueError)


# --- SolverError --------------------------------------------------------------------------------
def stiff(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -1e6 * (y - torch.cos(t))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_stiff_problem_hits_max_num_steps(method: str) -> None:
    y0 = torch.zeros(1, dtype=F64)
    t = torch.tensor([0.0, 10.0], dtype=F64)
    with pytest.raises(SolverError) as info:
        odeint(stiff, y0, t, method=method, max_num_steps=50)
    err = info.value
    assert err.reason == "max_num_steps"
    assert 0.0 <= err.t < 1.0  # stuck at the explicit stability limit, h ~ 1e-6
    assert err.step_size is not None and 0.0 < err.step_size < 1e-2
    assert_message_names_t(err)


def nan_after_half(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    f = -y
    return torch.where(t > 0.5, torch.full_like(f, math.nan), f)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_nan_vector_field_midway(method: str) -> None:
    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(SolverError) as info:
        odeint(nan_after_half, y0, torch.linspace(0.0, 1.0, 5, dtype=F64), method=method)
    err = info.value
    assert err.reason == "non_finite"
    h = err.step_size if err.step_size is not None else 0.0
    assert abs(err.t - 0.5) <= h + 1e-12, f"t={err.t}, step size={err.step_size}"
    assert_message_names_t(err)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_nan_vector_field_from_start(method: str) -> None:
    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y * math.nan

    with pytest.raises(SolverError) as info:
        odeint(field, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method)
    err = info.value
    assert err.reason == "non_finite"
    h = err.step_size if err.step_size is not None else 0.0
    assert abs(err.t) <= h + 1e-12, f"t={err.t}, step size={err.step_size}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_nan_vector_field_fixed_step(method: str) -> None:
    # Fixed steps may check finiteness at read-out times only (no per-step sync): with a
    # read-out every step, t must still be within one step of where the NaN appeared.
    y0 = torch.ones(2, dtype=F64)
    t = torch.linspace(0.0, 1.0, 11, dtype=F64)
    with pytest.raises(SolverError) as info:
        odeint(nan_after_half, y0, t, method=method, step_size=0.1)
    assert info.value.reason == "non_finite"
    assert abs(info.value.t - 0.5) <= 0.1 + 1e-9, info.value.t


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", [*ADAPTIVE, "rk4"])
def test_finite_time_blow_up_raises(method: str) -> None:
    """dy/dt = y^2, y(0) = 1 has y = 1 / (1 - t): the solver must stop near t = 1 and say so."""

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y**2

    # Fixed steps may check finiteness at read-out times only: read out every 0.05.
    kw = {"step_size": 0.01} if method == "rk4" else {}
    y0 = torch.ones(1, dtype=F64)
    with pytest.raises(SolverError) as info:
        odeint(field, y0, torch.linspace(0.0, 2.0, 41, dtype=F64), method=method, **kw)
    err = info.value
    assert err.reason in {"step_size_underflow", "non_finite"}
    assert abs(err.t - 1.0) < (0.1 if method == "rk4" else 0.01), err.t
    assert_message_names_t(err)


# --- SolverInputError ---------------------------------------------------------------------------
Y0 = torch.tensor([1.0, 2.0], dtype=F64)
Y0_BATCH = torch.ones(2, 2, dtype=F64)
T = torch.linspace(0.0, 1.0, 3, dtype=F64)

BAD_INPUTS: dict[str, tuple[torch.Tensor | tuple, torch.Tensor, dict[str, Any]]] = {
    "unknown_option_key": (Y0, T, {"options": {"stepsize": 0.1}}),
    "unknown_keyword": (Y0, T, {"bogus_option": 1}),
    "unknown_gradient_mode": (Y0, T, {"gradient": "reverse_mode"}),
    "non_monotone_t": (Y0, torch.tensor([0.0, 1.0, 0.5], dtype=F64), {}),
    "repeated_t": (Y0, torch.tensor([0.0, 0.5, 0.5, 1.0], dtype=F64), {}),
    "empty_t": (Y0, torch.zeros(0, dtype=F64), {}),
    "3d_t": (Y0_BATCH, torch.zeros(2, 2, 2, dtype=F64), {}),
    "2d_t_different_starts": (Y0_BATCH, torch.tensor([[0.0, 1.0], [0.1, 1.0]], dtype=F64), {}),
    "2d_t_mixed_directions": (Y0_BATCH, torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=F64), {}),
    "2d_t_batch_mismatch": (Y0_BATCH, torch.tensor([[0.0, 1.0]] * 3, dtype=F64), {}),
    "2d_t_non_monotone_row": (
        Y0_BATCH,
        torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.7, 0.6]], dtype=F64),
        {},
    ),
    "integer_y0": (torch.tensor([1, 2]), T, {}),
    "mixed_dtype_tuple_y0": ((Y0, Y0.float()), T, {}),
    "fixed_method_2d_t_without_step_size": (
        Y0_BATCH,
        torch.tensor([[0.0, 0.4, 1.0], [0.0, 0.3, 0.9]], dtype=F64),
        {"method": "rk4"},
    ),
}
# step options and tolerances out of their range: (keywords, what the message names)
BAD_OPTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "per_component_atol": ({"atol": torch.tensor([1e-6, 1e-3])}, "atol must be one number"),
    "text_rtol": ({"rtol": "tight"}, "rtol must be a number"),
    "max_step_0": ({"max_step": 0.0}, "max_step must be a number > 0"),
    "max_step_negative": ({"max_step": -1.0}, "max_step must be a number > 0"),
    "first_step_nan": ({"first_step": math.nan}, "first_step must be a finite number > 0"),
    "step_size_nan": ({"method": "rk4", "step_size": math.nan}, "step_size must be"),
    "safety_0": ({"safety": 0.0}, "safety must be in (0, 1]"),
    "ifactor_below_1": ({"ifactor": 0.5}, "ifactor must be a finite number >= 1"),
    "dfactor_above_1": ({"dfactor": 2.0}, "dfactor must be in (0, 1)"),
    # 1: a rejected step was retried at the same size 10,000 times, then "raise max_num_steps"
    "dfactor_1": ({"dfactor": 1.0}, "dfactor must be in (0, 1) (1: a rejected step would"),
    # a state component at 0 had no error scale: a false "initial state contains NaN or inf"
    "atol_0": ({"atol": 0.0}, "atol must be a finite number > 0 (with atol=0 a state"),
    "adjoint_atol_0": ({"gradient": "adjoint", "adjoint_atol": 0.0}, "adjoint_atol must be"),
    # a fixed-step solve ignored them: max_step=0.01 with euler took one step over [0, 1]
    "max_step_with_euler": (
        {"method": "euler", "max_step": 0.01},
        "step option(s) ['max_step'] control an adaptive solve's steps, and this one takes "
        "fixed steps (the fixed-step method 'euler')",
    ),
    "safety_with_a_step_size": (
        {"step_size": 0.1, "safety": 0.5, "first_step": 0.2},
        "step option(s) ['safety', 'first_step'] control an adaptive solve's steps, and this "
        "one takes fixed steps (step_size=0.1)",
    ),
    "adjoint_min_step_with_rk4": (
        {"gradient": "adjoint", "adjoint_method": "rk4", "adjoint_options": {"min_step": 0.1}},
        "adjoint option(s) ['min_step'] control",
    ),
    "options_not_a_mapping": ({"options": ["step_size"]}, "options must be a mapping"),
    "gains_that_grow_the_step": ({"pcoeff": -5.0}, "pcoeff + icoeff must be > 0"),
    "fractional_max_num_steps": ({"max_num_steps": 2.5}, "max_num_steps must be a whole"),
    "min_step_above_max_step": ({"min_step": 0.5, "max_step": 0.1}, "min_step (0.5) must be"),
    "adjoint_safety": (
        {"gradient": "adjoint", "adjoint_options": {"safety": -1}},
        "adjoint option safety must be in (0, 1]",
    ),
    "adjoint_atol": ({"gradient": "adjoint", "adjoint_atol": -1.0}, "adjoint_atol must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_raises_before_any_work(case: str) -> None:
    y0, t, kw = BAD_INPUTS[case]
    calls = []

    def field(t: torch.Tensor, y: Any) -> Any:
        calls.append(t)
        return y

    with pytest.raises(SolverInputError) as info:
        odeint(field, y0, t, **kw)
    assert str(info.value), "the message must say what to change"
    assert not calls, "arguments must be checked before the vector field is evaluated"


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_options_out_of_range_are_named_before_any_work(case: str) -> None:
    """A step option or tolerance out of its range is named with what it must be, before the
    vector field is evaluated: a NaN first step once spun to max_num_steps (60,001
    evaluations), a zero max_step divided by zero, a zero safety ended in a step-size
    underflow that called the problem stiff, and a per-component atol raised a bare
    ValueError."""
    kw, message = BAD_OPTIONS[case]
    calls = []

    class Field(nn.Module):
        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls.append(t)
            return -y

    with pytest.raises(SolverInputError, match=re.escape(message)):
        odeint(Field(), Y0.clone().requires_grad_(True), T, **kw)
    assert not calls


def test_unknown_method_lists_valid_methods() -> None:
    with pytest.raises(SolverInputError) as info:
        odeint(lambda t, y: -y, Y0, T, method="rk45")
    message = str(info.value)
    for name in METHODS:
        assert name in message, f"{name!r} missing from: {message}"


# --- host synchronisations ----------------------------------------------------------------------
def test_sync_counter_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.tensor([1.5, 2.0])

    def run() -> list[Any]:
        index = [0, 1, 2][x[1].long()]  # __index__
        return [x[0].item(), x.tolist(), bool(x[0]), float(x[0]), int(x[1]), x.numpy(), index]

    _, n = count_syncs(monkeypatch, run)
    assert n == 7
    assert count_syncs(monkeypatch, lambda: x + 1)[1] == 0  # and restored afterwards


@pytest.mark.parametrize("grid", ["1d", "per_sample"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_loop_syncs_once_per_step(
    method: str,
    grid: str,
    monkeypatch: pytest.MonkeyPatch,
    make_mlp: Callable[..., nn.Module],
    rng: torch.Generator,
) -> None:
    field = make_mlp(dim=3, hidden=16)
    y0 = torch.randn(4, 3, dtype=F64, generator=rng)
    if grid == "1d":
        t = torch.linspace(0.0, 3.0, 50, dtype=F64)
    else:
        ends = torch.tensor([3.0, 2.0, 2.5, 1.0], dtype=F64)[:, None]
        t = torch.linspace(0.0, 1.0, 50, dtype=F64) * ends  # (B, 50)
    sol, syncs = count_syncs(monkeypatch, lambda: solve(field, y0, t, method=method))
    attempts = sol.stats.n_accepted + sol.stats.n_rejected
    assert sol.ys.shape == (50, 4, 3)
    assert syncs <= attempts + 4, f"{syncs} host syncs for {attempts} attempted steps"


def test_fixed_step_respects_max_num_steps() -> None:
    """A tiny fixed step is refused up front, before any evaluation, instead of running on."""
    calls = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return -y

    y0 = torch.ones(2, dtype=F64)
    with pytest.raises(SolverError) as info:
        odeint(field, y0, torch.tensor([0.0, 1.0], dtype=F64), method="rk4", step_size=1e-9)
    assert info.value.reason == "max_num_steps"
    assert "max_num_steps=10000" in str(info.value) and not calls
    ys = odeint(
        field,
        y0,
        torch.tensor([0.0, 1.0], dtype=F64),
        method="euler",
        step_size=0.01,
        max_num_steps=100,
    )
    assert torch.allclose(ys[-1], y0 * 0.99**100)


def test_the_steps_on_the_given_times_are_not_bounded_by_max_num_steps() -> None:
    """Without step_size a fixed-step method steps on ``t``, as many steps as the user asked
    for (20,000 were refused as "a fixed step of None ... more than max_num_steps")."""
    t = torch.linspace(0.0, 1.0, 20_001, dtype=F64)
    sol = solve(lambda t, y: -y, torch.ones(1, dtype=F64), t, method="rk4")
    assert sol.stats.n_accepted == 20_000
    assert abs(float(sol.ys[-1, 0]) - math.exp(-1.0)) < 1e-14


def test_min_step_bounds_the_first_step_too() -> None:
    """The first step is chosen within [min_step, max_step]: a first guess of 1e-4 below
    min_step=0.01 was taken, and the growing steps after it were stopped as "below
    min_step" on a problem that needs five steps."""
    t = torch.tensor([0.0, 1.0], dtype=F64)
    sol = solve(lambda t, y: t * torch.ones_like(y), torch.ones(1, dtype=F64), t, min_step=0.01)
    assert abs(float(sol.ys[-1, 0]) - 1.5) < 1e-9
    assert sol.stats.n_rejected == 0


def test_a_reused_output_buffer_is_refused_where_stages_are_kept() -> None:
    """With autograd the stages are kept as func returned them: a field writing into one
    buffer made every stage its last value (exp(-1) off by 1e-3). Refused there; fine
    without autograd, where each stage is copied, and for a constant returned unchanged."""
    buf = torch.zeros(2, dtype=F64)

    def into_buffer(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        buf.copy_(-y)
        return buf

    y0, t = torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    with pytest.raises(SolverInputError, match="a reused output buffer"):
        odeint(into_buffer, y0, t)
    with torch.no_grad():
        assert abs(float(odeint(into_buffer, y0, t)[-1, 0]) - math.exp(-1.0)) < 1e-8
    rate = torch.tensor([1.0, 2.0], dtype=F64)
    torch.testing.assert_close(odeint(lambda t, y: rate, y0, t)[-1], y0 + rate)


def test_a_field_that_turns_nan_says_so_not_only_the_state() -> None:
    with pytest.raises(SolverError, match="the vector field returns NaN or inf just past"):
        odeint(nan_after_half, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
