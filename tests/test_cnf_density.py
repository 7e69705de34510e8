"""Continuous normalizing flows: outputs, gradients (adjoint vs backprop), the density,
carried Jacobian and Hutchinson divergence estimators, inversion, RNODE, a tiny fit."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from cnf_helpers import F64, make_flow, points
from torch import Tensor, nn

from latentode.nn.cnf import CNF, divergence_exact, divergence_hutchinson

MU = torch.tensor([1.0, -0.5])
STD = torch.tensor([0.5, 1.5])
ENTROPY = math.log(2 * math.pi * math.e) + math.log(0.5 * 1.5)  # of N(MU, diag(STD^2))


pytestmark = pytest.mark.usefixtures("one_thread")


def gaussian_data(n: int, gen: torch.Generator) -> Tensor:
    return MU + STD * torch.randn(n, 2, generator=gen)


@pytest.fixture(scope="module")
def fitted() -> tuple[CNF, float, float]:
    """A small flow fitted to N(MU, diag(STD^2)): ``(flow, nll_before, nll_after)`` (test NLL)."""
    gen = torch.Generator().manual_seed(0)
    x_test = gaussian_data(2000, gen)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        flow = CNF(2, hidden=(32, 32), rtol=1e-4, atol=1e-4)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    with torch.no_grad():
        before = -flow.log_prob(x_test).mean().item()
    for _ in range(100):
        loss = -flow.log_prob(gaussian_data(256, gen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = -flow.log_prob(x_test).mean().item()
    return flow, before, after


def test_shapes_and_outputs() -> None:
    flow = make_flow(rtol=1e-5, atol=1e-5, kinetic_weight=0.01, jacobian_weight=0.02)
    x = points(5)
    out = flow(x)
    assert out.log_prob.shape == (5,) and out.z.shape == (5, 2) and out.penalty.shape == (5,)
    assert out.kinetic.shape == (5,) and out.jacobian.shape == (5,)
    assert torch.allclose(out.penalty, 0.01 * out.kinetic + 0.02 * out.jacobian)
    assert flow.nfe_forward > 0 and flow.nfe_backward == 0
    plain = make_flow(rtol=1e-5, atol=1e-5)(x)
    assert plain.kinetic is None and plain.jacobian is None and not plain.penalty.any()
    assert flow.log_prob(x).shape == (5,)
    assert flow.sample(7).shape == (7, 2)
    xs, lp = flow.sample_and_log_prob(7)
    assert xs.shape == (7, 2) and lp.shape == (7,)
    assert flow.transform(x).shape == (5, 2) and flow.inverse(x).shape == (5, 2)


CASES = [
    ("backprop", "exact", False),
    ("adjoint", "exact", False),
    ("checkpoint", "exact", False),
    ("backprop", "hutchinson", True),
    ("adjoint", "hutchinson", True),
]


@pytest.mark.parametrize(("gradient", "divergence", "rnode"), CASES)
def test_every_parameter_receives_a_gradient(gradient: str, divergence: str, rnode: bool) -> None:
    weights = {"kinetic_weight": 0.01, "jacobian_weight": 0.01} if rnode else {}
    flow = make_flow(gradient=gradient, divergence=divergence, rtol=1e-5, atol=1e-5, **weights)
    out = flow(points(6), generator=torch.Generator().manual_seed(1))
    (out.penalty - out.log_prob).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"
    if gradient != "backprop":
        assert flow.nfe_backward > 0


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_adjoint_gradient_matches_backprop(divergence: str) -> None:
    """Same weights and noise, rtol 1e-10: the adjoint's gradient is within 1e-6 of backprop's."""
    grads = {}
    for gradient in ("backprop", "adjoint"):
        opts = {"adjoint_rtol": 1e-10, "adjoint_atol": 1e-10}
        flow = make_flow(gradient=gradient, divergence=divergence, rtol=1e-10, atol=1e-10,
                         kinetic_weight=0.1, jacobian_weight=0.1, options=opts)  # fmt: skip
        out = flow(points(4), generator=torch.Generator().manual_seed(2))
        (out.penalty - out.log_prob).sum().backward()
        grads[gradient] = torch.cat([p.grad.reshape(-1) for p in flow.parameters()])
    err = (grads["adjoint"] - grads["backprop"]).norm() / grads["backprop"].norm()
    assert err.item() < 1e-6


def test_density_integrates_to_one(fitted: tuple[CNF, float, float]) -> None:
    """Midpoint rule on a 200 x 200 grid over [-10, 10]^2 (the fitted density has std <= 1.5)."""
    flow = copy.deepcopy(fitted[0]).to(F64)
    flow.solve_kwargs.update(rtol=1e-7, atol=1e-7)
    h = 0.1
    axis = torch.arange(-10 + h / 2, 10, h, dtype=F64)  # (200,)
    grid = torch.cartesian_prod(axis, axis)  # (40000, 2)
    with torch.no_grad():
        out = flow(grid)
    mass = out.log_prob.exp().sum().item() * h * h
    assert abs(mass - 1) < 0.01
    # The test has teeth: dropping the log-determinant loses the normalisation.
    mass_no_logdet = flow.base_log_prob(out.z).exp().sum().item() * h * h
    assert abs(mass_no_logdet - 1) > 0.1


@pytest.mark.parametrize("activation", ["softplus", "tanh"])
def test_carried_jacobian_matches_autograd(activation: str) -> None:
    """`forward_with_jacobian` against `torch.autograd.functional.jacobian` per sample, its
    trace and Frobenius norm against `divergence_exact`, and the parameter gradient of a loss
    built on the trace against the same loss built with double backward."""
    field = make_flow(hidden=(8, 8, 8), activation=activation).field
    z = points(5, seed=7).mul(3)  # (5, 2): spread into the activations' curved parts
    t = torch.tensor(0.7, dtype=F64)
    f, jac = field.forward_with_jacobian(t, z)  # (5, 2), (2, 5, 2)
    torch.testing.assert_close(f, field(t, z), rtol=0, atol=1e-14)
    for b in range(z.shape[0]):
        ref = torch.autograd.functional.jacobian(lambda x: field(t, x[None])[0], z[b])
        torch.testing.assert_close(jac[:, b, :].T, ref, rtol=1e-12, atol=1e-13)
    zz = z.clone().requires_grad_(True)
    div, frob = divergence_exact(field(t, zz), zz, create_graph=True)
    torch.testing.assert_close(jac.diagonal(dim1=0, dim2=2).sum(1), div, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(jac.pow(2).sum(dim=(0, 2)), frob, rtol=1e-12, atol=1e-13)
    params = tuple(field.parameters())
    g_ref = torch.autograd.grad((div.sin() + frob).sum(), params, allow_unused=True)
    g = torch.autograd.grad(
        (jac.diagonal(dim1=0, dim2=2).sum(1).sin() + jac.pow(2).sum((0, 2))).sum(),
        params,
        allow_unused=True,
    )
    assert sum(a is not None for a in g) > len(params) // 2
    for a, b in zip(g, g_ref, strict=True):  # None: no effect on the Jacobian (last bias)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(noise: str) -> None:
    """Mean of K one-probe estimates vs the exact trace and Frobenius norm, within 5 SE."""
    field = make_flow().field
    K = 20_000
    gen = torch.Generator().manual_seed(3)
    z = torch.tensor([[0.3, -1.1]], dtype=F64).expand(K, 2).clone().requires_grad_(True)
    dz = field(torch.tensor(0.4, dtype=F64), z)  # (K, 2)
    if noise == "gaussian":
        e = torch.randn(K, 2, generator=gen, dtype=F64)
    else:
        e = torch.randint(0, 2, (K, 2), generator=gen).to(F64) * 2 - 1
    div_h, frob_h = divergence_hutchinson(dz, z, e)
    div_x, frob_x = divergence_exact(dz, z)
    for est, exact in ((div_h, div_x[0]), (frob_h, frob_x[0])):
        se = est.std() / math.sqrt(K)
        assert se > 0 and abs(est.mean() - exact) < 5 * se


def test_hutchinson_log_prob_is_unbiased() -> None:
    """Three points, 500 noise draws each (one per solve row): mean within 5 SE of exact."""
    x = points(3, seed=4).repeat_interleave(500, dim=0)  # (1500, 2)
    with torch.no_grad():
        exact = make_flow(rtol=1e-6, atol=1e-6).log_prob(x[::500])  # (3,)
        flow = make_flow(rtol=1e-6, atol=1e-6, divergence="hutchinson", noise="gaussian")
        est = flow.log_prob(x, generator=torch.Generator().manual_seed(5)).view(3, 500)
    se = est.std(dim=1) / math.sqrt(500)
    assert (se > 0).all() and ((est.mean(dim=1) - exact).abs() < 5 * se).all()


class LinearField(nn.Module):
    """``f(t, z) = A z`` with a trainable ``A``."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.A = nn.Parameter(A)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return z @ self.A.T


def test_noise_is_drawn_once_per_solve() -> None:
    """For f = A z and a fixed Rademacher e, dlogp(T) = -T e^T A e exactly, and
    e^T A e = tr A +- (A12 + A21); a noise redrawn per evaluation would blend the two values."""
    A = torch.tensor([[0.3, 0.8], [-0.2, -0.5]], dtype=F64)
    flow = make_flow(divergence="hutchinson", noise="rademacher", T=1.5)
    flow.field = LinearField(A)
    with torch.no_grad():
        out = flow(points(64), generator=torch.Generator().manual_seed(6))
    r = out.log_prob - flow.base_log_prob(out.z) - 1.5 * torch.trace(A)  # (64,)
    offdiag = 1.5 * abs(A[0, 1] + A[1, 0]).item()
    assert torch.allclose(r.abs(), torch.full_like(r, offdiag), atol=1e-7)
    assert (r > 0).any() and (r < 0).any()
    again = flow.log_prob(points(64), generator=torch.Generator().manual_seed(6))
    assert torch.equal(again.detach(), out.log_prob)


def test_sample_then_log_prob_is_consistent(fitted: tuple[CNF, float, float]) -> None:
    flow = copy.deepcopy(fitted[0]).to(F64)
    flow.solve_kwargs.update(rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        x, lp_sampling = flow.sample_and_log_prob(64, generator=torch.Generator().manual_seed(7))
        lp = flow.log_prob(x)
    assert (lp - lp_sampling).abs().max().item() < 1e-6


def test_forward_then_reverse_returns_x(fitted: tuple[CNF, float, float]) -> None:
    """float32 at the default tolerances (1e-5): x -> z -> x within 1e-4."""
    flow = copy.deepcopy(fitted[0])
    flow.solve_kwargs.update(rtol=1e-5, atol=1e-5)
    x = gaussian_data(256, torch.Generator().manual_seed(8))
    with torch.no_grad():
        z = flow.transform(x)
        back = flow.inverse(z)
    assert (z - x).abs().max() > 0.1  # the flow moves the points
    assert (back - x).abs().max().item() < 1e-4


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_rnode_terms(divergence: str) -> None:
    """Non-negative; zero for a zero field; closed forms for a rotation f = w J z."""
    kw = {"divergence": divergence, "kinetic_weight": 0.01, "jacobian_weight": 0.01}
    x = points(8, seed=9)
    with torch.no_grad():
        out = make_flow(**kw)(x)
        assert (out.kinetic >= 0).all() and (out.jacobian >= 0).all() and out.kinetic.sum() > 0
        zero = make_flow(**kw)
        for p in zero.parameters():
            p.zero_()
        out = zero(x)
        assert not out.kinetic.any() and not out.jacobian.any()
        assert torch.allclose(out.log_prob, zero.base_log_prob(x)) and torch.equal(out.z, x)
        w, T = 0.7, 2.0
        rot = make_flow(T=T, **kw)
        rot.field = LinearField(torch.tensor([[0.0, -w], [w, 0.0]], dtype=F64))
        out = rot(x)
    # |f| = w |z| is conserved along a rotation; ||J||_F^2 = 2 w^2 (and ||e^T J||^2 = 2 w^2
    # exactly for Rademacher e).
    assert torch.allclose(out.kinetic, w**2 * x.pow(2).sum(1) * T, rtol=1e-6)
    assert torch.allclose(out.jacobian, torch.full_like(out.jacobian, 2 * w**2 * T), rtol=1e-6)
    assert torch.allclose(out.log_prob, rot.base_log_prob(x), atol=1e-7)


def test_tiny_fit_reaches_the_entropy(fitted: tuple[CNF, float, float]) -> None:
    """100 Adam steps on a 2-D Gaussian: test NLL from > H + 0.5 to within 0.1 nats of H."""
    _, before, after = fitted
    assert before > ENTROPY + 0.5
    assert after < ENTROPY + 0.1
