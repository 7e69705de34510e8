"""ODE-Net, its baselines and (augmented) Neural ODEs: shapes, gradients, NFE, tiny fits."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from sync_helpers import count_syncs
from torch import Tensor, nn

from latentode.data.images import load_digits_tensors
from latentode.nn.base import ModelInputError
from latentode.nn.odenet import (
    AugmentedNeuralODE,
    ConvODEFunc,
    MLPClassifier,
    MLPODEFunc,
    NeuralODE,
    ODEBlock,
    ODENetClassifier,
    ODENetInputError,
    ResNetClassifier,
    RKNetClassifier,
)
from latentode.solver import SolverError

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def seeded(factory: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """Build a module under a fixed seed without touching the global RNG stream."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return factory()


IMAGE_MODELS: dict[str, Callable[..., nn.Module]] = {
    "odenet-adjoint": lambda s: ODENetClassifier(image_size=s, width=8),
    "odenet-backprop": lambda s: ODENetClassifier(image_size=s, width=8, gradient="backprop"),
    "odenet-checkpoint": lambda s: ODENetClassifier(image_size=s, width=8, gradient="checkpoint"),
    "odenet-augmented": lambda s: ODENetClassifier(image_size=s, width=8, augment_dim=3),
    "rknet": lambda s: RKNetClassifier(image_size=s, width=8),
    "resnet": lambda s: ResNetClassifier(image_size=s, width=8),
    "mlp": lambda s: MLPClassifier(image_size=s, hidden=16),
}
FEATURE_MODELS: dict[str, Callable[[], nn.Module]] = {
    "node-linear": lambda: NeuralODE(2, out_dim=1, hidden=8),
    "node-identity": lambda: NeuralODE(2, hidden=8, gradient="backprop"),
    "anode-linear": lambda: AugmentedNeuralODE(2, augment_dim=2, out_dim=1, hidden=8),
}


@pytest.mark.parametrize("size", [8, 28])
@pytest.mark.parametrize("name", list(IMAGE_MODELS))
def test_classifier_logits_shape(name: str, size: int) -> None:
    model = seeded(lambda: IMAGE_MODELS[name](size))
    x = torch.rand(3, 1, size, size)
    assert model(x).shape == (3, 10)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_paper() -> None:
    """Chen 2018 Table 1 (MNIST): MLP 0.24M, ResNet 0.60M, RK-Net and ODE-Net 0.22M."""
    paper = {MLPClassifier: 0.24e6, ResNetClassifier: 0.60e6, ODENetClassifier: 0.22e6}
    for cls, n_paper in paper.items():
        assert abs(_count(cls()) - n_paper) / n_paper < 0.1, cls.__name__
    assert _count(RKNetClassifier()) == _count(ODENetClassifier())


def _assert_all_grads(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} received a zero gradient"


@pytest.mark.parametrize("name", list(IMAGE_MODELS))
def test_every_parameter_receives_a_gradient_images(name: str) -> None:
    model = seeded(lambda: IMAGE_MODELS[name](8)).to(F64)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(4, 1, 8, 8, generator=gen, dtype=F64)
    y = torch.randint(0, 10, (4,), generator=gen)
    F.cross_entropy(model(x), y).backward()
    _assert_all_grads(model)


@pytest.mark.parametrize("name", list(FEATURE_MODELS))
def test_every_parameter_receives_a_gradient_features(name: str) -> None:
    model = seeded(FEATURE_MODELS[name]).to(F64)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    out = model(x)
    (out * torch.linspace(0.5, 1.5, out.numel(), dtype=F64).view_as(out)).sum().backward()
    _assert_all_grads(model)


FIELDS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    # Smooth activation: with ReLU the adjoint matches only to ~1e-4 (see ConvODEFunc).
    "conv": (lambda: ConvODEFunc(4, max_groups=2, activation="softplus"), (2, 4, 4, 4)),
    "mlp": (lambda: MLPODEFunc(3, hidden=8), (5, 3)),
}


@pytest.mark.parametrize("field", list(FIELDS))
@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_gradient_modes_agree_with_backprop(field: str, gradient: str) -> None:
    """float64, rtol 1e-10: adjoint within 1e-6 of backprop; checkpoint is exact (1e-10)."""
    make, shape = FIELDS[field]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    grads = {}
    for mode in ("backprop", gradient):
        opts = {"adjoint_rtol": 1e-10, "adjoint_atol": 1e-12} if mode == "adjoint" else {}
        block = seeded(lambda m=mode, o=opts: ODEBlock(make(), gradient=m, options=o)).to(F64)
        block.solve_kwargs.update(rtol=1e-10, atol=1e-12)
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        (out * torch.cos(torch.arange(out.numel(), dtype=F64)).view_as(out)).sum().backward()
        grads[mode] = [xi.grad, *(p.grad for p in block.parameters())]
    tol = 1e-6 if gradient == "adjoint" else 1e-10
    for g, g_ref in zip(grads[gradient], grads["backprop"], strict=True):
        assert ((g - g_ref).norm() / g_ref.norm()).item() < tol


def test_augment_dim_appends_zero_channels() -> None:
    block = seeded(lambda: ODEBlock(ConvODEFunc(5), augment_dim=3, gradient="backprop"))
    x = torch.randn(2, 2, 4, 4)
    traj = block.trajectory(x, torch.linspace(0, 1, 3))
    assert traj.shape == (3, 2, 5, 4, 4)
    assert torch.equal(traj[0, :, :2], x) and torch.equal(traj[0, :, 2:], torch.zeros(2, 3, 4, 4))
    assert block(x).shape == (2, 5, 4, 4)
    assert not torch.allclose(traj[-1, :, 2:], torch.zeros(2, 3, 4, 4))  # the zeros do move
    anode = seeded(lambda: AugmentedNeuralODE(1, augment_dim=2))
    assert anode(torch.randn(4, 1)).shape == (4, 1)
    assert anode.block.trajectory(torch.randn(4, 1), torch.linspace(0, 1, 5)).shape == (5, 4, 3)
    model = seeded(lambda: ODENetClassifier(image_size=8, width=8, augment_dim=2))
    assert model.fc.in_features == 10 and model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_nfe_of_the_last_forward_and_backward() -> None:
    model = seeded(lambda: ODENetClassifier(image_size=8, width=8))
    assert model.block.nfe_forward == 0 and model.block.nfe_backward == 0
    logits = model(torch.rand(4, 1, 8, 8))
    assert model.block.nfe_forward >= 6 and model.block.nfe_backward == 0
    logits.sum().backward()
    assert model.block.nfe_backward > 0
    # RK-Net: rk4 uses 4 evaluations per step; halving the step adds 4 steps.
    counts = []
    for step in (0.25, 0.125):
        rk = seeded(lambda s=step: RKNetClassifier(image_size=8, width=8, step_size=s))
        rk(torch.rand(2, 1, 8, 8)).sum().backward()
        counts.append(rk.block.nfe_forward)
        assert rk.block.nfe_backward == 0  # plain backprop
    assert counts[1] - counts[0] == 16


@pytest.mark.parametrize(
    "build",
    [
        lambda: ODEBlock(MLPODEFunc(2), gradient="reverse"),
        lambda: ODEBlock(MLPODEFunc(2), method="rk45"),
        lambda: ODEBlock(MLPODEFunc(2), t1=0.0),
        lambda: ODEBlock(MLPODEFunc(2), method="rk4", step_size=2.0),
        lambda: ODEBlock(MLPODEFunc(2), method="rk4"),
        lambda: ODEBlock(MLPODEFunc(2), t1=math.inf),
        lambda: NeuralODE(2, method="euler"),
        lambda: RKNetClassifier(step_size=None),  # type: ignore[arg-type]
        lambda: ODEBlock(MLPODEFunc(2), augment_dim=-1),
        lambda: ODEBlock(MLPODEFunc(2), options={"step_size": 0.1}),
        lambda: ODEBlock(MLPODEFunc(2), options={"gradient": "adjoint"}),
        lambda: RKNetClassifier(method="dopri5"),
        lambda: ODENetClassifier(image_size=2),
        lambda: ResNetClassifier(num_blocks=0),
        lambda: AugmentedNeuralODE(2, augment_dim=0),
        lambda: ODENetClassifier(image_size=8, width=4)(torch.rand(2, 3, 8, 8)),
        lambda: NeuralODE(2)(torch.rand(4, 3)),
    ],
)
def test_bad_arguments_raise_a_value_error(build: Callable[[], object]) -> None:
    with pytest.raises(ODENetInputError) as info:
        build()
    assert isinstance(info.value, ModelInputError) and str(info.value)


@pytest.mark.parametrize("activation", ["gelu", "relu"])
def test_mlp_field_needs_a_smooth_activation(activation: str) -> None:
    with pytest.raises(ModelInputError, match="activation"):
        MLPODEFunc(2, activation=activation)


def test_anode_learns_the_reflection_a_node_cannot() -> None:
    """g(1) = -1, g(-1) = 1 (Dupont 2019): a 1-D flow preserves order, so its MSE is >= 1."""
    x = torch.tensor([[1.0], [-1.0]], dtype=F64)
    losses = {}
    kw = {"hidden": 16, "method": "rk4", "step_size": 0.1, "gradient": "backprop"}
    for name, cls, aug in (("node", NeuralODE, 0), ("anode", AugmentedNeuralODE, 1)):
        model = seeded(lambda c=cls, a=aug: c(1, augment_dim=a, **kw)).to(F64)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(150):
            loss = (model(x) + x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses[name] = loss.item()
    assert losses["node"] > 0.99
    assert losses["anode"] < 1e-3


def test_odenet_fits_a_digits_subset() -> None:
    """ODE-Net (adjoint, dopri5 1e-3) on 256 digits: validation loss from 2.3 to below 1.0."""
    splits = load_digits_tensors(seed=0)
    x, y = splits.train.images[:256], splits.train.labels[:256]
    model = seeded(lambda: ODENetClassifier(image_size=8, width=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        perm = torch.randperm(256, generator=gen)
        for i in range(0, 256, 32):
            idx = perm[i : i + 32]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        logits = model(splits.val.images)
    assert F.cross_entropy(logits, splits.val.labels).item() < 1.0
    assert (logits.argmax(1) == splits.val.labels).float().mean().item() > 0.75


def test_a_fixed_step_block_needs_a_step_size() -> None:
    """As the CNF: one step over [0, t1] is no ODE solve, so a fixed-step method without a
    step_size is refused (it was taken silently)."""
    with pytest.raises(ODENetInputError) as info:
        ODENetClassifier(image_size=8, width=4, method="rk4")
    assert str(info.value) == (
        "ODEBlock: method 'rk4' takes fixed steps and needs step_size (e.g. step_size=0.05: 20 "
        "steps over [0, t1=1]); without it the solver takes one step over the whole interval. "
        "Give step_size, or an adaptive method (bosh3, dopri5, tsit5)."
    )
    block = ODEBlock(MLPODEFunc(2), method="rk4", step_size=0.25, gradient="backprop")
    block(torch.zeros(3, 2))
    assert block.nfe_forward == 17  # four rk4 steps and the first evaluation


IMAGE_SIZE_ADVICE = "Build the model with image_size=28, or resize the images to 8x8."


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            torch.rand(2, 1, 28, 28),
            "expected images (B, 1, 8, 8) (in_channels=1, image_size=8), got (2, 1, 28, 28). "
            + IMAGE_SIZE_ADVICE,
        ),
        (
            torch.rand(2, 1, 1, 1),
            "expected images (B, 1, 8, 8) (in_channels=1, image_size=8), got (2, 1, 1, 1). "
            "Resize the images to 8x8.",
        ),
        (
            torch.rand(2, 8, 8),
            "expected images (B, 1, 8, 8) (in_channels=1, image_size=8), got (2, 8, 8). Add the "
            "channel dimension: pass x.unsqueeze(1).",
        ),
        (
            torch.rand(2, 1, 8, 8, dtype=F64),
            "the images are torch.float64 but the model's parameters are torch.float32: pass "
            "x.to(torch.float32), or convert the model with model.to(torch.float64).",
        ),
        (
            torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
            "the images are torch.uint8; the model takes torch.float32: pass x.to(torch.float32) "
            "/ 255 for 8-bit pixels (the model takes images in [0, 1]).",
        ),
    ],
    ids=["28x28", "1x1", "no-channel", "float64", "uint8"],
)
@pytest.mark.parametrize("name", ["odenet-adjoint", "rknet", "resnet", "mlp"])
def test_images_of_another_shape_or_dtype_are_refused(name: str, x: Tensor, message: str) -> None:
    """Each used to fail inside torch (a dtype or shape mismatch) or, for the convolutional
    models on 28x28 images, to run at the wrong resolution without a word."""
    model = seeded(lambda: IMAGE_MODELS[name](8))
    with pytest.raises(ODENetInputError) as info:
        model(x)
    assert str(info.value) == message


def test_non_finite_inputs_are_named_not_blamed_on_training() -> None:
    """A NaN pixel used to surface as the solver's "initial state contains NaN ... lower the
    learning rate"; the images' rows are named now, and a finite input whose solve fails
    keeps the solver's error."""
    x = torch.rand(4, 1, 8, 8)
    x[2, 0, 3, 3] = math.nan
    model = seeded(lambda: ODENetClassifier(image_size=8, width=4))
    with pytest.raises(ODENetInputError) as info:
        model(x)
    assert str(info.value) == (
        "the images contain NaN or inf in rows [2] (1 of 4); the model needs finite inputs. "
        "Drop or impute those rows before calling it."
    )
    assert isinstance(info.value.__cause__, SolverError)
    node = seeded(lambda: NeuralODE(2, hidden=8))
    with pytest.raises(ODENetInputError, match=r"the inputs contain NaN or inf in rows \[0\]"):
        node(torch.tensor([[math.inf, 0.0], [0.0, 0.0]]))
    with torch.no_grad():
        model.block.func.conv1.weight.fill_(math.nan)
    with pytest.raises(SolverError, match="vector field returned NaN or inf"):
        model(torch.rand(4, 1, 8, 8))


def test_the_input_checks_add_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The classifier reads from the device exactly as often as its layers called by hand."""
    model = seeded(lambda: ODENetClassifier(image_size=8, width=4))
    x = torch.rand(3, 1, 8, 8)
    _, want = count_syncs(
        monkeypatch, lambda: model.fc(model.pool(model.block(model.stem(x))).flatten(1))
    )
    _, got = count_syncs(monkeypatch, lambda: model(x))
    assert want > 0 and got == want
