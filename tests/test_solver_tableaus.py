"""Tableau order conditions, dense-output order, and where the stages are evaluated."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latentode import odeint
from latentode.solver import ADAPTIVE_METHODS, METHODS
from latentode.solver.rk import Coefficients

F64 = torch.float64


def order_conditions(b: np.ndarray, A: np.ndarray, c: np.ndarray, order: int) -> list[float]:
    """Residuals of the Runge-Kutta order conditions up to ``order`` (at most 5)."""
    res = [b.sum() - 1]
    if order >= 2:
        res.append(b @ c - 1 / 2)
    if order >= 3:
        res += [b @ c**2 - 1 / 3, b @ A @ c - 1 / 6]
    if order >= 4:
        res += [
            b @ c**3 - 1 / 4,
            b @ (c * (A @ c)) - 1 / 8,
            b @ A @ c**2 - 1 / 12,
            b @ A @ A @ c - 1 / 24,
        ]
    if order >= 5:
        Ac, Ac2 = A @ c, A @ c**2
        res += [
            b @ c**4 - 1 / 5,
            b @ (c**2 * Ac) - 1 / 10,
            b @ (c * Ac2) - 1 / 15,
            b @ (c * (A @ Ac)) - 1 / 30,
            b @ Ac**2 - 1 / 20,
            b @ A @ c**3 - 1 / 20,
            b @ A @ (c * Ac) - 1 / 40,
            b @ A @ Ac2 - 1 / 60,
            b @ A @ A @ Ac - 1 / 120,
        ]
    return res


@pytest.mark.parametrize("name", list(METHODS))
def test_order_conditions(name: str) -> None:
    tab = METHODS[name]
    assert np.allclose(tab.a.sum(axis=1), tab.c, atol=1e-14)  # row-sum condition
    assert np.allclose(tab.a[-1], tab.b)  # FSAL form: last stage is f(t + h, y1)
    assert max(map(abs, order_conditions(tab.b, tab.a, tab.c, tab.order))) < 1e-12
    if tab.order < 5:  # and not of one order higher (the order is exact)
        assert max(map(abs, order_conditions(tab.b, tab.a, tab.c, tab.order + 1))) > 1e-3


@pytest.mark.parametrize("name", ADAPTIVE_METHODS)
def test_embedded_order_conditions(name: str) -> None:
    tab = METHODS[name]
    b_hat = tab.b - tab.b_err
    assert max(map(abs, order_conditions(b_hat, tab.a, tab.c, tab.error_order))) < 1e-12
    assert max(map(abs, order_conditions(b_hat, tab.a, tab.c, tab.error_order + 1))) > 1e-4


@pytest.mark.parametrize("name", list(METHODS))
def test_dense_output_local_order(name: str) -> None:
    """One step of y' = y: the interpolant's error inside the step is O(h^(q+1))."""
    tab = METHODS[name]
    coef = Coefficients(tab, F64, torch.device("cpu"))
    theta = torch.linspace(0.05, 0.95, 19, dtype=F64)
    errors, hs = [], [0.2, 0.1, 0.05, 0.025]
    for h in hs:
        # Exact stages would make the test about the interpolant alone; use the method's own.
        k = torch.zeros(tab.n_stages, 1, dtype=F64)
        for i in range(tab.n_stages):
            k[i] = 1.0 + h * float(torch.tensor(tab.a[i]) @ k[:, 0])
        y = 1.0 + h * (coef.weights(theta) @ k)[:, 0]
        errors.append(float((y - torch.exp(theta * h)).abs().max()))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    expected = min(tab.order, tab.dense.shape[0]) + 1
    assert slope > expected - 0.3, (slope, errors)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rk4"])
@pytest.mark.parametrize("reverse", [False, True])
def test_stage_times_stay_inside_interval(method: str, reverse: bool) -> None:
    seen: list[float] = []

    def field(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(float(t))
        return -y + torch.sin(3 * t)

    t = torch.tensor([0.0, 0.33, 0.7, 1.3], dtype=F64)
    t = t.flip(0) if reverse else t
    odeint(
        field,
        torch.ones(3, dtype=F64),
        t,
        method=method,
        rtol=1e-6,
        atol=1e-8,
        step_size=0.17 if method == "rk4" else None,
    )
    assert min(seen) >= 0.0 and max(seen) <= 1.3, (min(seen), max(seen))
    assert math.isclose(max(seen), 1.3) and math.isclose(min(seen), 0.0)
