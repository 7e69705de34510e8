"""The FFJORD 2-D toy densities: seeding, support, known moments and entropy floors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from latentode.data.errors import DataError
from latentode.data.toy2d import (
    ENTROPY_FLOORS,
    TOY_DENSITIES,
    ToyDataError,
    sample_toy,
    toy_log_prob,
)

F64 = torch.float64


def test_the_eight_ffjord_toys_are_there() -> None:
    assert set(TOY_DENSITIES) == {
        "8gaussians",
        "pinwheel",
        "2spirals",
        "checkerboard",
        "moons",
        "circles",
        "rings",
        "swissroll",
    }


@pytest.mark.parametrize("name", TOY_DENSITIES)
def test_samplers_are_seeded(name: str) -> None:
    x = sample_toy(name, 500, seed=0)
    assert x.shape == (500, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    assert torch.equal(x, sample_toy(name, 500, seed=0))
    assert not torch.equal(x, sample_toy(name, 500, seed=1))
    gen = torch.Generator().manual_seed(0)
    first, second = sample_toy(name, 500, generator=gen), sample_toy(name, 500, generator=gen)
    assert torch.equal(first, x) and not torch.equal(first, second)  # the generator advances
    assert sample_toy(name, 3, seed=0, dtype=F64).dtype == F64


def test_checkerboard_lies_in_the_eight_squares_uniformly() -> None:
    x = sample_toy("checkerboard", 40_000, seed=0, dtype=F64)
    assert (x.abs() <= 4).all()
    cell = torch.floor(x / 2).long() + 2  # (n, 2) in 0..3
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16)
    occupied = counts[counts > 0]
    assert occupied.numel() == 8
    n, p = 40_000, 1 / 8
    assert ((occupied - n * p).abs() < 5 * math.sqrt(n * p * (1 - p))).all()
    assert torch.allclose(toy_log_prob("checkerboard", x), torch.tensor(-math.log(32), dtype=F64))


def test_eight_gaussians_entropy_floor_by_monte_carlo() -> None:
    """-E[log p(x)] over 200k samples matches ENTROPY_FLOORS['8gaussians'] within 4 SE."""
    x = sample_toy("8gaussians", 200_000, seed=0, dtype=F64)
    log_p = toy_log_prob("8gaussians", x)
    se = log_p.std().item() / math.sqrt(x.shape[0])
    assert abs(-log_p.mean().item() - ENTROPY_FLOORS["8gaussians"]) < 4 * se
    assert abs(ENTROPY_FLOORS["8gaussians"] - 2.83) < 0.01
    assert ENTROPY_FLOORS["checkerboard"] == pytest.approx(3.4657, abs=1e-4)


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard"])
def test_closed_form_densities_integrate_to_one(name: str) -> None:
    h = 0.02
    axis = torch.arange(-6 + h / 2, 6, h, dtype=F64)
    grid = torch.cartesian_prod(axis, axis)
    mass = toy_log_prob(name, grid).exp().sum().item() * h * h
    assert mass == pytest.approx(1.0, abs=1e-6)


def _radius(x: torch.Tensor) -> torch.Tensor:
    return x.norm(dim=1)


def test_ring_shaped_toys_have_the_right_radii() -> None:
    """circles: radii 1.5 and 3 (noise 0.24); rings: 0.75, 1.5, 2.25, 3 (noise 0.08)."""
    for name, radii, width in (
        ("circles", [1.5, 3.0], 0.24),
        ("rings", [0.75, 1.5, 2.25, 3.0], 0.08),
    ):
        r = _radius(sample_toy(name, 20_000, seed=0, dtype=F64))
        dist = (r.unsqueeze(1) - torch.tensor(radii, dtype=F64)).abs()  # (n, rings)
        assert (dist.min(dim=1).values < 5 * width).all(), name
        share = torch.bincount(dist.argmin(dim=1), minlength=len(radii)) / r.numel()
        assert ((share - 1 / len(radii)).abs() < 0.02).all(), name


def test_eight_gaussians_cluster_at_their_centres() -> None:
    x = sample_toy("8gaussians", 20_000, seed=0, dtype=F64)
    angle = torch.arange(8, dtype=F64) * math.pi / 4
    centres = torch.stack([angle.cos(), angle.sin()], dim=1) * 4 / 1.414  # (8, 2)
    dist = torch.cdist(x, centres).min(dim=1).values
    assert (dist < 6 * 0.5 / 1.414).all()


@pytest.mark.parametrize(
    ("name", "mean"),
    [
        ("moons", (0.0, 0.3)),  # 2 * ((0, 2/pi) + (1, 0.5 - 2/pi)) / 2 + (-1, -0.2)
        ("8gaussians", (0.0, 0.0)),
        ("pinwheel", (0.0, 0.0)),
        ("2spirals", (0.0, 0.0)),
        ("circles", (0.0, 0.0)),
        ("rings", (0.0, 0.0)),
        ("checkerboard", (0.0, 0.0)),
    ],
)
def test_means(name: str, mean: tuple[float, float]) -> None:
    x = sample_toy(name, 50_000, seed=0, dtype=F64)
    se = x.std(dim=0) / math.sqrt(x.shape[0])
    assert ((x.mean(dim=0) - torch.tensor(mean, dtype=F64)).abs() < 5 * se).all()


def test_swissroll_follows_its_spiral() -> None:
    """Noise-free points s (cos s, sin s) / 5 with s in [1.5 pi, 4.5 pi]: radius in [0.94, 2.83]."""
    r = _radius(sample_toy("swissroll", 20_000, seed=0, dtype=F64))
    assert r.min() > 0.94 - 1.0 and r.max() < 2.83 + 1.0  # noise std 0.2 per coordinate
    assert r.mean().item() == pytest.approx(3 * math.pi / 5, abs=0.05)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sample_toy("spiral", 10, seed=0), "choose one of"),
        (lambda: sample_toy("moons", 0, seed=0), "positive integer"),
        (lambda: sample_toy("moons", 10, seed=0, generator=torch.Generator()), "not both"),
        (lambda: toy_log_prob("moons", torch.zeros(3, 2)), "no closed-form"),
        (lambda: toy_log_prob("checkerboard", torch.zeros(3)), r"\(n, 2\)"),
    ],
    ids=["unknown-name", "n-zero", "seed-and-generator", "no-closed-form", "bad-shape"],
)
def test_bad_arguments_raise_a_value_error(call: Callable[[], object], match: str) -> None:
    with pytest.raises(ToyDataError, match=match) as info:
        call()
    assert isinstance(info.value, DataError)
