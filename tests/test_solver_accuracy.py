"""Accuracy of the solver: convergence orders, dense output, closed forms and scipy references."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from latentode import odeint, solve
from latentode.solver import ADAPTIVE_METHODS, FIXED_METHODS, METHODS

F64 = torch.float64
FIXED_ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
ADAPTIVE = ("bosh3", "dopri5", "tsit5")
# Max abs error allowed at rtol=1e-8, atol=1e-10 (global error is a multiple of the local
# tolerance; the low-order bosh3 accumulates more of it).
TIGHT_BOUND = {"bosh3": 1e-5, "dopri5": 1e-6, "tsit5": 1e-6}

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# --- dy/dt = -y + sin t: closed form (y0 + 1/2) e^{-t} + (sin t - cos t) / 2 -------------------
Y0_FORCED = torch.tensor([1.0, -0.5, 2.0], dtype=F64)


def forced_decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -y + torch.sin(t)


def forced_decay_exact(t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
    """Closed form at times ``t`` (shape (T,)) from ``y(0) = y0``; returns (T, D)."""
    t = t[:, None]
    return (y0 + 0.5) * torch.exp(-t) + 0.5 * (torch.sin(t) - torch.cos(t))


def _slope(hs: list[float], errs: list[float]) -> float:
    """Least-squares slope of log(err) against log(h)."""
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


def test_method_registry() -> None:
    assert set(FIXED_METHODS) == set(FIXED_ORDERS)
    assert set(ADAPTIVE_METHODS) == set(ADAPTIVE)
    assert set(METHODS) == set(FIXED_ORDERS) | set(ADAPTIVE)


@pytest.mark.parametrize("method", sorted(FIXED_ORDERS))
def test_fixed_step_convergence_order(method: str) -> None:
    order = FIXED_ORDERS[method]
    # Dyadic steps divide T = 2 exactly; rk4 gets coarser steps to stay above round-off.
    ks = (2, 3, 4, 5) if order == 4 else (4, 5, 6, 7)
    hs = [2.0**-k for k in ks]
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = forced_decay_exact(t, Y0_FORCED)[-1]
    errs = []
    for h in hs:
        y = odeint(forced_decay, Y0_FORCED, t, method=method, step_size=h)
        errs.append((y[-1] - exact).abs().max().item())
    slope = _slope(hs, errs)
    assert abs(slope - order) < 0.2, f"{method}: observed order {slope:.3f}, errors {errs}"


@pytest.mark.parametrize("method", sorted(FIXED_ORDERS))
def test_fixed_step_dense_output_converges(method: str) -> None:
    """Output times off the step grid are interpolated with an error that shrinks with h."""
    order = FIXED_ORDERS[method]
    ks = (2, 3, 4, 5) if order == 4 else (4, 5, 6, 7)
    hs = [2.0**-k for k in ks]
    t_grid = torch.arange(9, dtype=F64) * 0.25  # on the step grid for every h
    t_off = torch.linspace(0.01, 1.99, 40, dtype=F64)  # never on a dyadic grid
    t, _ = torch.sort(torch.cat([t_grid, t_off]))
    on_grid = torch.isin(t, t_grid)
    exact = forced_decay_exact(t, Y0_FORCED)
    err_grid, err_off = [], []
    for h in hs:
        y = odeint(forced_decay, Y0_FORCED, t, method=method, options={"step_size": h})
        err = (y - exact).abs().amax(dim=-1)  # (T,)
        err_grid.append(err[on_grid].max().item())
        err_off.append(err[~on_grid].max().item())
    # |y''| <= 4 here, so even linear interpolation adds at most h^2 / 2 to the grid error.
    for h, eg, ed in zip(hs, err_grid, err_off, strict=True):
        assert ed <= 1.5 * eg + 0.5 * h**2, f"{method} h={h}: off-grid {ed:.3e}, grid {eg:.3e}"
    slope = _slope(hs, err_off)
    assert slope > min(order, 2) - 0.2, f"{method}: dense output order {slope:.3f}"


@pytest.mark.parametrize("method", ADAPTIVE)
def test_an_adaptive_method_given_a_step_size_takes_fixed_steps_of_its_order(method: str) -> None:
    """``step_size`` turns the error control off: exactly ``T / h`` steps, none rejected, and
    the error falls at the order of the tableau's propagated solution."""
    order = {"bosh3": 3, "dopri5": 5, "tsit5": 5}[method]
    hs = [2.0**-k for k in (3, 4, 5, 6)]
    t = torch.tensor([0.0, 2.0], dtype=F64)
    exact = forced_decay_exact(t, Y0_FORCED)[-1]
    errs = []
    for h in hs:
        sol = solve(forced_decay, Y0_FORCED, t, method=method, step_size=h)
        assert (sol.stats.n_accepted, sol.stats.n_rejected) == (round(2.0 / h), 0)
        errs.append((sol.ys[-1] - exact).abs().max().item())
    slope = _slope(hs, errs)
    assert abs(slope - order) < 0.5, f"{method}: observed order {slope:.3f}, errors {errs}"


# --- adaptive methods against closed forms and scipy --------------------------------------------
SPIRAL_A = np.array([[-0.1, 1.0], [-1.0, -0.1]])


def _decay(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -0.7 * y


def _harmonic(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], -y[0]])


def _spiral(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y @ torch.as_tensor(SPIRAL_A, dtype=y.dtype).T


def _vdp(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])


def _lotka(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _scipy_ref(field: Field, y0: list[float], t: np.ndarray) -> np.ndarray:
    """DOP853 at rtol = atol = 1e-12 on the same field (evaluated through torch)."""

    def rhs(s: float, y: np.ndarray) -> np.ndarray:
        return field(torch.tensor(s, dtype=F64), torch.tensor(y, dtype=F64)).numpy()

    sol = solve_ivp(rhs, (t[0], t[-1]), y0, method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
    assert sol.success
    return sol.y.T


def _reference(name: str, t: np.ndarray) -> tuple[Field, list[float], np.ndarray]:
    """Field, y0 and the true solution at ``t`` (T, D) for a named test problem."""
    if name == "decay":
        y0 = [1.0, -2.0]
        return _decay, y0, np.exp(-0.7 * t)[:, None] * np.array(y0)
    if name == "harmonic":
        return _harmonic, [1.0, 0.0], np.stack([np.cos(t), -np.sin(t)], axis=-1)
    if name == "spiral":
        y0 = [2.0, 0.0]
        return _spiral, y0, np.stack([expm(SPIRAL_A * s) @ np.array(y0) for s in t])
    field = {"vdp": _vdp, "lotka": _lotka}[name]
    y0 = [2.0, 0.0] if name == "vdp" else [1.0, 1.0]
    return field, y0, _scipy_ref(field, y0, t)


PROBLEMS = ("decay", "harmonic", "spiral", "vdp", "lotka")


@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_matches_reference(method: str, problem: str) -> None:
    t_np = np.linspace(0.0, 4.0, 11)
    field, y0, ref = _reference(problem, t_np)
    y0_t = torch.tensor(y0, dtype=F64)
    y = odeint(field, y0_t, torch.tensor(t_np), method=method, rtol=1e-8, atol=1e-10)
    err = np.abs(y.numpy() - ref).max()
    assert err < TIGHT_BOUND[method], f"{method} on {problem}: max error {err:.3e}"


@pytest.mark.parametrize("problem", ["vdp", "spiral"])
@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_error_falls_with_tolerance(method: str, problem: str) -> None:
    t_np = np.linspace(0.0, 4.0, 11)
    field, y0, ref = _reference(problem, t_np)
    errs = []
    for rtol in (1e-4, 1e-6, 1e-8):
        y0_t = torch.tensor(y0, dtype=F64)
        y = odeint(field, y0_t, torch.tensor(t_np), method=method, rtol=rtol, atol=rtol * 1e-2)
        errs.append(np.abs(y.numpy() - ref).max())
    assert errs[0] > errs[1] > errs[2], f"{method} on {problem}: errors {errs}"
    assert errs[2] < errs[0] / 100, f"{method} on {problem}: errors {errs}"


# --- reverse time -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [*ADAPTIVE, "rk4"])
def test_reverse_time_matches_closed_form(method: str) -> None:
    # rk4 with a 1-D t and no step_size steps on t itself (41 points, |h| = 0.05).
    n = 41 if method == "rk4" else 6
    t = torch.linspace(2.0, 0.0, n, dtype=F64)
    y_start = forced_decay_exact(t[:1], Y0_FORCED)[0]  # y(2) on the same trajectory
    y = odeint(forced_decay, y_start, t, method=method, rtol=1e-8, atol=1e-10)
    exact = forced_decay_exact(t, Y0_FORCED)
    err = (y - exact).abs().max().item()
    bound = 1e-6 if method == "rk4" else TIGHT_BOUND[method]
    assert err < bound, f"{method} backwards in time: max error {err:.3e}"


def test_forward_then_reverse_returns_to_start() -> None:
    t = torch.tensor([0.0, 3.0], dtype=F64)
    y0 = torch.tensor([2.0, 0.0], dtype=F64)
    y_end = odeint(_vdp, y0, t, rtol=1e-10, atol=1e-12)[-1]
    y_back = odeint(_vdp, y_end, t.flip(0), rtol=1e-10, atol=1e-12)[-1]
    assert (y_back - y0).abs().max().item() < 1e-7


# --- output conventions -------------------------------------------------------------------------
def _any_options(method: str) -> dict[str, float]:
    """A step size for fixed-step methods, nothing for adaptive ones."""
    return {"step_size": 0.01} if method in FIXED_ORDERS else {}


@pytest.mark.parametrize("method", [*sorted(FIXED_ORDERS), *ADAPTIVE])
def test_first_output_is_y0_and_shape(method: str, rng: torch.Generator) -> None:
    y0 = torch.randn(2, 3, dtype=F64, generator=rng)
    t = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=F64)
    y = odeint(forced_decay, y0, t, method=method, **_any_options(method))
    assert y.shape == (4, 2, 3)
    assert y.dtype == F64
    assert torch.equal(y[0], y0)
    exact = torch.stack([forced_decay_exact(t, row) for row in y0], dim=1)  # (T, 2, 3)
    assert (y - exact).abs().max().item() < 1e-2  # coarse: the point is the layout


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_float32_in_float32_out(method: str) -> None:
    y0 = Y0_FORCED.to(torch.float32)
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float32)
    y = odeint(forced_decay, y0, t, method=method, rtol=1e-5, atol=1e-6, **_any_options(method))
    assert y.dtype == torch.float32
    assert torch.equal(y[0], y0)
    exact = forced_decay_exact(t.double(), Y0_FORCED)
    assert (y.double() - exact).abs().max().item() < 1e-4


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_float32_read_outs_at_large_times_keep_their_offsets(method: str, per_sample: bool) -> None:
    """Read-outs between steps at times near 1e6 (days since 1990 are near 1e4), float32
    state: ``y' = 1`` gives ``y = t - t0`` to float32's resolution of the values (about 1e-6
    at 10), not of the times (0.06 at 1e6). Dense output once took its offsets in the state's
    dtype and missed by 2.3e-2 here."""
    t = 1e6 + torch.linspace(0.0, 10.0, 41, dtype=F64)  # 40 read-outs, few steps
    if per_sample:
        t = t.expand(3, -1)
    y0 = torch.zeros(3 if per_sample else 1, 1)
    options = {"step_size": 2.5} if method == "rk4" else {}
    ys = odeint(lambda t, y: torch.ones_like(y), y0, t, method=method, **options)
    exact = (t - t[..., :1]).T if per_sample else (t - t[0]).unsqueeze(1)  # (T, B)
    assert (ys[..., 0].double() - exact).abs().max().item() < 1e-5


def test_func_receives_0d_time_of_y0_dtype() -> None:
    seen: list[tuple[int, torch.dtype]] = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append((t.dim(), t.dtype))
        return -y

    odeint(field, torch.ones(2, dtype=torch.float32), torch.tensor([0.0, 1.0]))
    assert seen
    assert set(seen) == {(0, torch.float32)}
