"""Butcher tableaus of the explicit Runge-Kutta methods, each defined once.

A tableau states its coefficients, its order and (for embedded pairs) the weights of the error
estimate ``b - b_hat``. Every method is stored in *FSAL form*: when the last stage of the method
is not already ``f(t + h, y1)``, that evaluation is appended as an extra stage with ``c = 1`` and
``a = b``. The engine therefore always ends a step with ``f(t + h, y1)``, which is reused as the
first stage of the next step, so a non-FSAL method costs the same number of evaluations as usual.

Dense output is a polynomial in ``theta = (s - t) / h``:

    y(t + theta h) = y0 + h * sum_d theta^d * sum_s dense[d - 1, s] * k_s,

of the method's order: cubic Hermite (from y0, y1, f0, f1) for the low-order methods, Shampine's
quartic through the midpoint for dopri5, and Tsitouras' own interpolant for tsit5.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F

import numpy as np

__all__ = ["ADAPTIVE_METHODS", "FIXED_METHODS", "METHODS", "ButcherTableau"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta method in FSAL form.

    Attributes:
        name: method name as used in ``method=``.
        order: order of the propagated solution.
        error_order: order of the embedded solution (``None`` for fixed-step methods).
        c: stage times, shape ``(S,)``.
        a: strictly lower-triangular stage matrix, shape ``(S, S)``; row ``S - 1`` equals ``b``.
        b: solution weights, shape ``(S,)``.
        b_err: error-estimate weights ``b - b_hat``, shape ``(S,)`` (``None`` if fixed-step).
        dense: dense-output coefficients, shape ``(degree, S)``.
    """

    name: str
    order: int
    error_order: int | None
    c: np.ndarray
    a: np.ndarray
    b: np.ndarray
    b_err: np.ndarray | None
    dense: np.ndarray

    @property
    def adaptive(self) -> bool:
        """Whether the method carries an embedded error estimate."""
        return self.b_err is not None

    @property
    def n_stages(self) -> int:
        """Number of stages in FSAL form (evaluations per step, counting the reused one)."""
        return len(self.c)


def _make(name, order, c, a_rows, b, b_hat=None, error_order=None, dense=None) -> ButcherTableau:
    """Build a tableau in FSAL form from rows of exact fractions (or floats)."""
    c = [float(x) for x in c]
    b = [float(x) for x in b]
    rows = [[float(x) for x in row] for row in a_rows]
    fsal = c[-1] == 1.0 and len(rows) == len(c) - 1 and np.allclose(rows[-1] + [0.0], b)
    if not fsal:  # append the stage f(t + h, y1)
        c.append(1.0)
        rows.append(b[:])
        b = [*b, 0.0]
        if b_hat is not None:
            b_hat = [*b_hat, 0.0]
    S = len(c)
    a = np.zeros((S, S))
    for i, row in enumerate(rows, start=1):
        a[i, : len(row)] = row
    b_arr = np.array(b)
    b_err = None if b_hat is None else b_arr - np.array([float(x) for x in b_hat])
    if dense is None:
        dense = _hermite_dense(b_arr)
    return ButcherTableau(name, order, error_order, np.array(c), a, b_arr, b_err, dense)


def _hermite_dense(b: np.ndarray) -> np.ndarray:
    """Cubic Hermite interpolant through (y0, f0) and (y1, f1), written in stage weights.

    With ``D = (y1 - y0) / h = b . k``: ``y = y0 + h [theta f0 + theta^2 (3 D - 2 f0 - f1)
    + theta^3 (f0 + f1 - 2 D)]``; f0 is stage 0 and f1 is the last (FSAL) stage.
    """
    S = len(b)
    f0, f1 = np.eye(S)[0], np.eye(S)[S - 1]
    return np.stack([f0, 3 * b - 2 * f0 - f1, f0 + f1 - 2 * b])


def _midpoint_quartic_dense(b: np.ndarray, c_mid: np.ndarray) -> np.ndarray:
    """Quartic through y0, y1, y(1/2) = y0 + h c_mid . k, with slopes f0 and f1 (Shampine 1986)."""
    S = len(b)
    f0, f1 = np.eye(S)[0], np.eye(S)[S - 1]
    # Unknowns a2, a3, a4 (a1 = f0):  sum a = D - f0;  2a2 + 3a3 + 4a4 = f1 - f0;
    # a2/4 + a3/8 + a4/16 = M - f0/2.
    lhs = np.array([[1, 1, 1], [2, 3, 4], [1 / 4, 1 / 8, 1 / 16]])
    rhs = np.stack([b - f0, f1 - f0, c_mid - f0 / 2])
    return np.vstack([f0, np.linalg.solve(lhs, rhs)])


def _poly_dense(polys: list[np.poly1d], S: int) -> np.ndarray:
    """Dense coefficients from per-stage weight polynomials b_s(theta) with b_s(0) = 0."""
    degree = max(p.order for p in polys)
    dense = np.zeros((degree, S))
    for s, p in enumerate(polys):
        coeffs = p.coeffs[::-1]  # ascending powers
        dense[: len(coeffs) - 1, s] = coeffs[1:]
    return dense


# ----------------------------------------------------------------------------- fixed step
EULER = _make("euler", 1, [0], [], [1])
MIDPOINT = _make("midpoint", 2, [0, F(1, 2)], [[F(1, 2)]], [0, 1])
HEUN = _make("heun", 2, [0, 1], [[1]], [F(1, 2), F(1, 2)])
RK4 = _make(
    "rk4",
    4,
    [0, F(1, 2), F(1, 2), 1],
    [[F(1, 2)], [0, F(1, 2)], [0, 0, 1]],
    [F(1, 6), F(1, 3), F(1, 3), F(1, 6)],
)

# ----------------------------------------------------------------------------- adaptive
# Bogacki-Shampine 3(2); FSAL.
BOSH3 = _make(
    "bosh3",
    3,
    [0, F(1, 2), F(3, 4), 1],
    [[F(1, 2)], [0, F(3, 4)], [F(2, 9), F(1, 3), F(4, 9)]],
    [F(2, 9), F(1, 3), F(4, 9), 0],
    b_hat=[F(7, 24), F(1, 4), F(1, 3), F(1, 8)],
    error_order=2,
)

# Dormand-Prince 5(4); FSAL.
_DP_B = [F(35, 384), 0, F(500, 1113), F(125, 192), F(-2187, 6784), F(11, 84), 0]
_DP_C_MID = (
    np.array(
        [
            6025192743 / 30085553152,
            0,
            51252292925 / 65400821598,
            -2691868925 / 45128329728,
            187940372067 / 1594534317056,
            -1776094331 / 19743644256,
            11237099 / 235043384,
        ]
    )
    / 2
)
DOPRI5 = _make(
    "dopri5",
    5,
    [0, F(1, 5), F(3, 10), F(4, 5), F(8, 9), 1, 1],
    [
        [F(1, 5)],
        [F(3, 40), F(9, 40)],
        [F(44, 45), F(-56, 15), F(32, 9)],
        [F(19372, 6561), F(-25360, 2187), F(64448, 6561), F(-212, 729)],
        [F(9017, 3168), F(-355, 33), F(46732, 5247), F(49, 176), F(-5103, 18656)],
        _DP_B[:6],
    ],
    _DP_B,
    b_hat=[
        F(5179, 57600),
        0,
        F(7571, 16695),
        F(393, 640),
        F(-92097, 339200),
        F(187, 2100),
        F(1, 40),
    ],
    error_order=4,
    dense=_midpoint_quartic_dense(np.array([float(x) for x in _DP_B]), _DP_C_MID),
)

# Tsitouras 5(4) (Tsitouras 2011); FSAL. The error weights are the published b - b_hat, with
# the sign of the last one corrected (it is misprinted in the paper).
_TS_B = [
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
]
_TS_ERR = [
    0.00178001105222577714,
    0.0008164344596567469,
    -0.007880878010261995,
    0.1447110071732629,
    -0.5823571654525552,
    0.45808210592918697,
    -1 / 66,
]
_P = np.poly1d
_THETA = _P([1, 0])
_TS_DENSE = _poly_dense(
    [
        -1.0530884977290216
        * _THETA
        * _P([1, -1.3299890189751412])
        * _P([1, -1.4364028541716351, 0.7139816917074209]),
        0.1017 * _THETA**2 * _P([1, -2.1966568338249754, 1.2949852507374631]),
        2.490627285651252793 * _THETA**2 * _P([1, -2.38535645472061657, 1.57803468208092486]),
        -16.54810288924490272
        * _P([1, -1.21712927295533244])
        * _P([1, -0.61620406037800089])
        * _THETA**2,
        47.37952196281928122
        * _P([1, -1.203071208372362603])
        * _P([1, -0.658047292653547382])
        * _THETA**2,
        -34.87065786149660974 * _P([1, -1.2]) * _P([1, -0.666666666666666667]) * _THETA**2,
        2.5 * _P([1, -1]) * _P([1, -0.6]) * _THETA**2,
    ],
    7,
)
TSIT5 = _make(
    "tsit5",
    5,
    [0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1],
    [
        [0.161],
        [-0.008480655492356989, 0.335480655492357],
        [2.8971530571054935, -6.359448489975075, 4.3622954328695815],
        [5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525],
        [
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.02826905039406838,
        ],
        _TS_B[:6],
    ],
    _TS_B,
    b_hat=list(np.array(_TS_B) - np.array(_TS_ERR)),
    error_order=4,
    dense=_TS_DENSE,
)

METHODS: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, HEUN, RK4, BOSH3, DOPRI5, TSIT5)
}
FIXED_METHODS: tuple[str, ...] = tuple(n for n, tab in METHODS.items() if not tab.adaptive)
ADAPTIVE_METHODS: tuple[str, ...] = tuple(n for n, tab in METHODS.items() if tab.adaptive)
