"""Precision: the solver under autocast (Lightning's mixed precision), half and float64 states,
and the trainer precisions the systems take or refuse."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from lightning_helpers import quiet_trainer, tiny_odernn_config
from torch import nn

from latentode import SolverInputError, odeint, solve
from latentode.data.datamodules import PeriodicDataModule
from latentode.nn.base import ModelInputError
from latentode.systems import LatentODESystem

BF16 = torch.bfloat16


class Field(nn.Module):
    """A small MLP field that records, per call, whether autocast was on and its input dtype."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
        self.calls: list[tuple[bool, torch.dtype]] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls.append((torch.is_autocast_enabled("cpu"), y.dtype))
        return self.net(y)


def test_autocast_leaves_the_solver_arithmetic_in_float32() -> None:
    """Under autocast the stage combinations and the error estimate are matrix products, which
    autocast would run in bfloat16; they must not. An elementwise field is not autocast, so the
    solution must equal the one computed without autocast, bit for bit."""
    y0 = torch.linspace(-1.0, 1.0, 6).view(2, 3)
    t = torch.linspace(0.0, 3.0, 7)
    k = torch.tensor([0.5, -1.0, 2.0])

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sin(y) * k

    plain = odeint(f, y0, t, rtol=1e-6, atol=1e-8)
    with torch.autocast("cpu", dtype=BF16):
        mixed = solve(f, y0, t, rtol=1e-6, atol=1e-8)
    assert mixed.ys.dtype == torch.float32
    assert torch.equal(mixed.ys, plain)
    with torch.autocast("cpu", dtype=BF16):  # a bfloat16 y0 is integrated in float32
        promoted = odeint(f, y0.to(BF16), t, rtol=1e-6, atol=1e-8)
    assert promoted.dtype == torch.float32
    assert torch.equal(promoted, odeint(f, y0.to(BF16).float(), t, rtol=1e-6, atol=1e-8))


@pytest.mark.parametrize("gradient", ["adjoint", "checkpoint"])
def test_backward_passes_run_the_field_under_the_forwards_autocast(gradient: str) -> None:
    """The adjoint and checkpoint backward passes call the field outside the caller's autocast
    region; they must give it the forward's autocast back (before: a dtype mismatch), and their
    gradients must match backpropagation through the same mixed-precision solve."""
    y0, t = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), torch.linspace(0, 1, 5)
    grads = {}
    for mode in ("backprop", gradient):
        field = Field()
        with torch.autocast("cpu", dtype=BF16, cache_enabled=False):  # as Lightning's
            ys = solve(field, y0, t, rtol=1e-5, atol=1e-7, gradient=mode).ys
        n_forward = len(field.calls)
        ys.pow(2).sum().backward()
        assert ys.dtype == torch.float32
        assert all(on and dtype == torch.float32 for on, dtype in field.calls)
        if mode != "backprop":
            assert len(field.calls) > n_forward  # the backward pass did call the field
        grads[mode] = torch.cat([p.grad.reshape(-1) for p in field.parameters()])
    err = (grads[gradient] - grads["backprop"]).norm() / grads["backprop"].norm()
    # checkpoint: the same discrete gradient; adjoint: the continuous one, at the tolerance
    # and the field's bfloat16 rounding
    assert float(err) < (1e-5 if gradient == "checkpoint" else 2e-2)


@pytest.mark.parametrize("gradient", ["backprop", "checkpoint", "adjoint"])
def test_autocasts_weight_cache_does_not_sum_a_solves_gradients_in_bfloat16(gradient: str) -> None:
    """Under torch.autocast's default weight cache, one bfloat16 copy of W served every call
    of the solve, and backpropagation summed the 275 calls' gradients into it in bfloat16:
    dL/dW was 20% off the float32 one. Where a graph is built the field now runs without
    the cache, so each call's gradient reaches the float32 weight (at the tolerances here,
    about 100 steps: 9% off before, 0.4% after)."""
    lin = nn.Linear(4, 4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nn.init.normal_(lin.weight)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lin(y)

    y0, t = torch.ones(2, 4), torch.linspace(0, 1, 3)
    tol = {"rtol": 1e-5, "atol": 1e-7}
    ref = torch.autograd.grad(solve(f, y0, t, **tol).ys.sum(), lin.weight)[0]
    kw = {"gradient": gradient, "adjoint_params": tuple(lin.parameters()), **tol}
    with torch.autocast("cpu", dtype=BF16):  # cache_enabled=True, torch's default
        sol = solve(f, y0, t, **kw)
    got = torch.autograd.grad(sol.ys.sum(), lin.weight)[0]
    assert sol.stats.n_accepted > 50
    assert float((got - ref).norm() / ref.norm()) < 2e-2


def test_half_precision_states_solve_accurately() -> None:
    """Half-precision states at tolerances they can resolve; float16 with the default atol
    1e-9, whose reciprocal is past float16's range: the error norm is taken in float32 (before:
    'the initial state contains NaN or inf' for a state with a zero, at rtol 1e-3)."""
    t = torch.tensor([0.0, 1.0, 3.0])
    exact = torch.exp(-t).double()
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float16)  # 0 / (0 + atol) is 0 / 0 in float16
    ys = odeint(lambda t, y: -y, y0, t.half(), rtol=1e-3)
    assert ys.dtype == torch.float16
    assert float((ys[:, 0].double() - exact).abs().max()) < 2e-3 and not ys[:, 1].any()
    ys = odeint(lambda t, y: -y, torch.ones(4, dtype=BF16), t.to(BF16), rtol=1e-2, atol=1e-3)
    assert float((ys[:, 0].double() - exact).abs().max()) < 1.6e-2


def test_a_tolerance_below_half_precision_is_refused() -> None:
    """bfloat16 at the default rtol 1e-7: steps shrink until ``y + h f`` rounds back to ``y``
    and the solution stalls without an error (exp(-1) came out 0.992)."""
    t = torch.tensor([0.0, 1.0], dtype=BF16)
    with pytest.raises(SolverInputError) as err:
        odeint(lambda t, y: -y, torch.ones(4, dtype=BF16), t)
    assert str(err.value) == (
        "rtol=1e-07 is below the resolution of the torch.bfloat16 state (0.0078): steps that "
        "small leave it unchanged and the solution stalls. Give rtol >= 0.0078, or integrate "
        "in float32 (y0.float())."
    )
    field = nn.Linear(2, 2).to(BF16)
    with pytest.raises(SolverInputError, match=r"^adjoint_rtol=0.001 is below"):
        solve(
            lambda t, y: field(y),
            torch.ones(1, 2, dtype=BF16),
            t,
            rtol=1e-2,
            atol=1e-3,
            gradient="adjoint",
            adjoint_rtol=1e-3,
            adjoint_params=tuple(field.parameters()),
        )


def test_a_field_of_another_dtype_is_refused_outside_autocast() -> None:
    y0 = torch.ones(2, dtype=torch.float64)
    with pytest.raises(SolverInputError) as err:
        odeint(lambda t, y: (-y).float(), y0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert str(err.value) == (
        "func(t, y) returned dtype torch.float32 for a state of dtype torch.float64; return "
        "the state's dtype (or run the solve under torch.autocast, which casts it)."
    )


def test_grid_messages_print_plain_numbers() -> None:
    y0 = torch.ones(2, 1)
    with pytest.raises(SolverInputError) as err:
        odeint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0, 1.0]))
    assert "it breaks at index 2 (1.0 -> 1.0)." in str(err.value)
    with pytest.raises(SolverInputError) as err:
        odeint(lambda t, y: -y, y0, torch.tensor([[0.0, 1.0], [0.5, 2.0]]))
    assert "t[0, 0] = 0.0 but t[1, 0] = 0.5." in str(err.value)


def _latent_system() -> LatentODESystem:
    solver = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4, "gradient": "checkpoint"}
    return LatentODESystem(tiny_odernn_config(solver=solver))


@pytest.mark.parametrize("precision", ["bf16-mixed", "64-true"])
def test_latent_ode_system_trains_in_mixed_and_double_precision(tmp_path, precision) -> None:
    """bf16-mixed: the times must stay float32 (the encoder's bfloat16 z0 once rounded the
    periodic series' times into duplicates) and the checkpoint backward must run; 64-true:
    Lightning converts the batch, which a frozen dataclass refused."""
    pl.seed_everything(0)
    dm = PeriodicDataModule(n=60, task="extrapolation", frac_observed=0.5, batch_size=20)
    system = _latent_system()
    dtypes: list[torch.dtype] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, *args: object) -> None:
            dtypes.append(batch.observed.times.dtype)

    trainer = quiet_trainer(
        tmp_path, max_steps=2, limit_val_batches=1, precision=precision, callbacks=[Record()]
    )
    trainer.fit(system, dm)
    assert math.isfinite(float(trainer.logged_metrics["train/loss"]))
    (scores,) = trainer.validate(system, dm, verbose=False)  # predicts under autocast
    assert math.isfinite(scores["val/mse"])
    want = torch.float64 if precision == "64-true" else torch.float32
    assert dtypes == [want, want]
    assert {p.dtype for p in system.parameters()} == {want}


@pytest.mark.parametrize("precision", ["16-true", "bf16-true"])
def test_half_precision_weights_are_refused_for_series(tmp_path, precision) -> None:
    dm = PeriodicDataModule(n=60, task="extrapolation", frac_observed=0.5, batch_size=20)
    trainer = quiet_trainer(tmp_path, max_steps=1, precision=precision)
    with pytest.raises(ModelInputError) as err:
        trainer.fit(_latent_system(), dm)
    mixed = precision.split("-")[0] + "-mixed"
    assert f"Use --trainer.precision {mixed} (half precision matrix products" in str(err.value)
