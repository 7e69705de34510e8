"""The eight 2-D toy densities of FFJORD (Grathwohl et al. 2019), as seeded samplers.

Each generator follows the mathematical description of FFJORD's ``toy_data.py`` (same scales,
widths and noise levels); moons, circles and swissroll use our own closed forms with the same
geometry instead of scikit-learn. Where the density is known in closed form
(``checkerboard``, ``8gaussians``) `toy_log_prob` evaluates it and `ENTROPY_FLOORS` gives the
data entropy, the floor of any model's test NLL.

Usage::

    x = sample_toy("checkerboard", 10_000, seed=0)  # (10000, 2)
    floor = ENTROPY_FLOORS["checkerboard"]  # ln 32 = 3.466 nats
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .errors import DataError

__all__ = ["ENTROPY_FLOORS", "TOY_DENSITIES", "ToyDataError", "sample_toy", "toy_log_prob"]

Sampler = Callable[[int, torch.Generator], Tensor]

# 8gaussians: centres on a circle of radius 4 with std 0.5, all divided by 1.414 (FFJORD).
_G8_SCALE = 1.414
_G8_STD = 0.5 / _G8_SCALE
_G8_CENTRES = torch.tensor(
    [[math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)] for k in range(8)], dtype=torch.float64
) * (4.0 / _G8_SCALE)  # (8, 2)

#: Data entropy in nats where known: the lowest achievable expected test NLL.
#: checkerboard: uniform on 8 squares of side 2, ln(32) = 3.4657. 8gaussians: 2.83188, by
#: quadrature of -p ln p over [-5.5, 5.5]^2 (grid steps 0.01 to 0.0025 agree to 1e-12); the
#: no-overlap formula ln 8 + ln(2 pi e std^2) = 2.8382 is 0.0063 too high because neighbouring
#: components (6.1 std apart) overlap slightly.
ENTROPY_FLOORS: dict[str, float] = {"checkerboard": math.log(32.0), "8gaussians": 2.83188}


class ToyDataError(DataError):
    """Invalid arguments to a toy sampler; the message says what to change."""


def _randn(n: int, g: torch.Generator, d: int = 1) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)  # (n, d)


def _rand(n: int, g: torch.Generator, d: int = 1) -> Tensor:
    return torch.rand(n, d, generator=g, dtype=torch.float64)  # (n, d)


def _randint(high: int, n: int, g: torch.Generator) -> Tensor:
    return torch.randint(0, high, (n, 1), generator=g)  # (n, 1)


def _polar(radius: Tensor, angle: Tensor) -> Tensor:
    return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)  # (n, 2)


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    centres = _G8_CENTRES[_randint(8, n, g).squeeze(1)]  # (n, 2)
    return centres + _G8_STD * _randn(n, g, 2)


def _pinwheel(n: int, g: torch.Generator) -> Tensor:
    # Five arms: a point (1 + 0.3 e1, 0.1 e2) rotated by 2 pi k / 5 + 0.25 exp(1 + 0.3 e1).
    arm = _randint(5, n, g).to(torch.float64)  # (n, 1)
    feats = _randn(n, g, 2) * torch.tensor([0.3, 0.1], dtype=torch.float64)  # (n, 2)
    feats[:, 0] += 1.0
    angle = 2 * math.pi * arm[:, 0] / 5 + 0.25 * torch.exp(feats[:, 0])  # (n,)
    c, s = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([c * feats[:, 0] - s * feats[:, 1], s * feats[:, 0] + c * feats[:, 1]])
    return 2.0 * rotated.T  # (n, 2)


def _two_spirals(n: int, g: torch.Generator) -> Tensor:
    # theta = sqrt(u) * 3 pi; arm (-theta cos theta, theta sin theta), the second arm mirrored.
    theta = torch.sqrt(_rand(n, g)) * 3 * math.pi  # (n, 1)
    arm = torch.cat([-theta * torch.cos(theta), theta * torch.sin(theta)], dim=1)  # (n, 2)
    arm = arm + 0.5 * _rand(n, g, 2)
    sign = 2.0 * _randint(2, n, g).to(torch.float64) - 1.0  # (n, 1)
    return sign * arm / 3.0 + 0.1 * _randn(n, g, 2)


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    # x1 ~ U[-2, 2); x2 in [0, 1) or [-2, -1), shifted up by floor(x1) mod 2; then scaled by 2:
    # uniform on the 8 squares of side 2 in [-4, 4]^2 whose cell indices have an even sum.
    x1 = 4.0 * _rand(n, g) - 2.0  # (n, 1)
    x2 = _rand(n, g) - 2.0 * _randint(2, n, g).to(torch.float64) + torch.floor(x1).remainder(2)
    return 2.0 * torch.cat([x1, x2], dim=1)  # (n, 2)


def _moons(n: int, g: torch.Generator) -> Tensor:
    # Upper half circle (cos a, sin a) and lower (1 - cos a, 0.5 - sin a), noise 0.1,
    # then scaled by 2 and shifted by (-1, -0.2) as FFJORD does with scikit-learn's moons.
    angle = math.pi * _rand(n, g)  # (n, 1)
    upper = _randint(2, n, g).bool()  # (n, 1)
    x = torch.where(upper, torch.cos(angle), 1.0 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    pts = torch.cat([x, y], dim=1) + 0.1 * _randn(n, g, 2)  # (n, 2)
    return 2.0 * pts + torch.tensor([-1.0, -0.2], dtype=torch.float64)


def _circles(n: int, g: torch.Generator) -> Tensor:
    # Two concentric circles of radii 1 and 0.5, noise 0.08, scaled by 3.
    radius = 1.0 - 0.5 * _randint(2, n, g).to(torch.float64)  # (n, 1)
    pts = _polar(radius, 2 * math.pi * _rand(n, g)) + 0.08 * _randn(n, g, 2)
    return 3.0 * pts


def _rings(n: int, g: torch.Generator) -> Tensor:
    # Four circles of radii 0.75, 1.5, 2.25, 3, then noise 0.08.
    radius = 0.75 * (_randint(4, n, g).to(torch.float64) + 1.0)  # (n, 1)
    return _polar(radius, 2 * math.pi * _rand(n, g)) + 0.08 * _randn(n, g, 2)


def _swissroll(n: int, g: torch.Generator) -> Tensor:
    # The swiss roll's (x, z) plane: s = 1.5 pi (1 + 2u), (s cos s, s sin s) + N(0, 1), / 5.
    s = 1.5 * math.pi * (1.0 + 2.0 * _rand(n, g))  # (n, 1)
    return (_polar(s, s) + _randn(n, g, 2)) / 5.0


_SAMPLERS: dict[str, Sampler] = {
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "swissroll": _swissroll,
}

#: The names `sample_toy` accepts, in FFJORD's order.
TOY_DENSITIES: tuple[str, ...] = tuple(_SAMPLERS)


def _check_name(name: str) -> None:
    if name not in _SAMPLERS:
        raise ToyDataError(f"unknown toy density {name!r}; choose one of {list(TOY_DENSITIES)}.")


def sample_toy(
    name: str,
    n: int,
    seed: int | None = None,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Draw ``n`` points from one of the FFJORD toy densities.

    Args:
        name: one of `TOY_DENSITIES`.
        n: number of points.
        seed: seed of a fresh CPU generator (same seed, same points); with neither ``seed``
            nor ``generator`` the draw is randomly seeded.
        generator: a CPU generator to draw from instead of ``seed`` (advances it).
        dtype: floating dtype of the result (draws are made in float64).

    Returns:
        ``(n, 2)`` points.

    Raises:
        ToyDataError: unknown name, bad ``n``, or both ``seed`` and ``generator`` given.
    """
    _check_name(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ToyDataError(f"n must be a positive integer, got {n!r}.")
    if seed is not None and generator is not None:
        raise ToyDataError("give either seed= or generator=, not both.")
    if generator is None:
        generator = torch.Generator()
        if seed is None:
            generator.seed()  # non-deterministic, like torch's global generator
        else:
            generator.manual_seed(seed)
    return _SAMPLERS[name](n, generator).to(dtype)


def toy_log_prob(name: str, x: Tensor) -> Tensor:
    """The true log-density of ``checkerboard`` or ``8gaussians`` at ``x``: ``(n, 2) -> (n,)``.

    Raises:
        ToyDataError: for the other densities (their densities have no closed form here).
    """
    _check_name(name)
    if x.dim() != 2 or x.shape[1] != 2:
        raise ToyDataError(f"expected points (n, 2), got shape {tuple(x.shape)}.")
    if name == "checkerboard":
        cell = torch.floor(x / 2.0)  # (n, 2): cell indices in -2..1 inside the board
        inside = (x.abs() <= 4.0).all(dim=1) & ((cell[:, 0] + cell[:, 1]).remainder(2) == 0)
        floor = torch.full_like(x[:, 0], -math.log(32.0))
        return torch.where(inside, floor, torch.full_like(floor, -math.inf))
    if name == "8gaussians":
        diff = x.unsqueeze(1) - _G8_CENTRES.to(x)  # (n, 8, 2)
        comp = -0.5 * diff.pow(2).sum(dim=2) / _G8_STD**2  # (n, 8)
        log_norm = math.log(8.0) + math.log(2 * math.pi * _G8_STD**2)
        return torch.logsumexp(comp, dim=1) - log_norm
    raise ToyDataError(
        f"no closed-form density for {name!r}; toy_log_prob supports 'checkerboard' and "
        "'8gaussians'."
    )
