"""Continuous normalizing flows: argument and input checks (bad settings, fixed-step methods
without a step size, non-finite points, other dtypes) and the cnf_step benchmark smoke."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from cnf_helpers import F64, make_flow, points
from sync_helpers import count_syncs

from latentode.nn.base import ModelInputError
from latentode.nn.cnf import CNF, CNFInputError, _Dynamics
from latentode.solver import SolverError, solve
from latentode.systems import CNFSystem

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"hidden": ()},
        {"hidden": (16, 0)},
        {"activation": "relu"},
        {"divergence": "trace"},
        {"noise": "uniform"},
        {"method": "rk45"},
        {"gradient": "reverse"},
        {"T": 0.0},
        {"T": math.inf},
        {"T": "1"},
        {"hidden": 64},
        {"hidden": [8.7, 3.2]},
        {"kinetic_weight": -0.1},
        {"kinetic_weight": math.inf},
        {"jacobian_weight": math.nan},
        {"method": "rk4", "step_size": 2.0},
        {"method": "rk4", "step_size": 0.0},
        {"options": {"rtol": 1e-3}},
        {"options": {"adjoint_params": ()}},
    ],
)
def test_bad_arguments_raise_a_value_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(CNFInputError) as info:
        CNF(**{"dim": 2, **kwargs})
    assert isinstance(info.value, ModelInputError) and str(info.value)


def test_bad_inputs_raise_a_value_error() -> None:
    flow = make_flow()
    with pytest.raises(CNFInputError, match=r"\(B, 2\)"):
        flow.log_prob(torch.zeros(4, 3, dtype=F64))
    with pytest.raises(CNFInputError, match="positive integer"):
        flow.sample(0)
    with pytest.raises(CNFInputError, match=r"CNF sets \['adjoint_params'\] itself"):
        CNF(2, options={"adjoint_params": ()})
    with pytest.raises(CNFInputError, match=r"pass \['rtol'\] as CNF arguments"):
        CNF(2, options={"rtol": 1e-3})


FIXED_STEP_ADVICE = (
    "CNF: method '{}' takes fixed steps and needs step_size (e.g. step_size=0.05: 20 steps over "
    "[0, T=1]); without it the solver takes one step over the whole interval. Give step_size, "
    "or an adaptive method (bosh3, dopri5, tsit5)."
)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk4"])
def test_a_fixed_step_method_needs_a_step_size(method: str) -> None:
    """One step over [0, T] is no ODE solve: trained that way, the density integrated to 7.8
    (rk4) or 1.2e5 (euler) and the NLL fell below the data's entropy. Refused, in `CNF` and
    in `CNFSystem`, which now passes its ``step_size`` on."""
    for build in (lambda: CNF(2, method=method), lambda: CNFSystem(method=method)):
        with pytest.raises(CNFInputError) as info:
            build()
        assert str(info.value) == FIXED_STEP_ADVICE.format(method)
    with pytest.raises(CNFInputError) as info:
        CNF(2, method=method, step_size=5.0)  # above T, which ODEBlock refused already
    assert str(info.value) == "CNF: step_size must be a number in (0, T=1], got 5.0."
    system = CNFSystem(hidden=[8], method=method, step_size=0.125)
    assert system.hparams["step_size"] == 0.125 and system.flow.solve_kwargs["step_size"] == 0.125


def test_a_fixed_step_flow_integrates_to_one() -> None:
    """rk4 at h = 0.1 on a flow with enlarged random weights (the points move by up to 4):
    the density's mass on a 200 x 200 midpoint grid over [-10, 10]^2 is 1 within 1e-5. The
    one Euler step that a missing step_size used to give loses 5% of it."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        system = CNFSystem(hidden=[16, 16], method="rk4", step_size=0.1).to(F64)
    with torch.no_grad():
        for p in system.parameters():
            p.mul_(2.5)
    h = 0.1
    axis = torch.arange(-10 + h / 2, 10, h, dtype=F64)  # (200,)
    grid = torch.cartesian_prod(axis, axis)  # (40000, 2)
    with torch.no_grad():
        out = system.flow(grid)
    assert (out.z - grid).abs().max() > 3  # far from the identity
    assert abs(out.log_prob.exp().sum().item() * h * h - 1) < 1e-5
    system.flow.solve_kwargs.update(method="euler", step_size=1.0)
    with torch.no_grad():
        one_step = system.flow.log_prob(grid).exp().sum().item() * h * h
    assert abs(one_step - 1) > 0.04


NON_FINITE = (
    "the points contain NaN or inf in rows [{}] ({} of {}); the model needs finite inputs. Drop "
    "or impute those rows before calling it."
)


def test_non_finite_points_are_named_not_blamed_on_training() -> None:
    """NaN or inf in the points used to surface as the solver's "initial state contains NaN
    ... lower the learning rate"; now every entry point names the rows."""
    flow = make_flow()
    x = points(5)
    x[1, 0], x[3, 1] = math.nan, math.inf
    calls = {
        "log_prob": lambda: flow.log_prob(x),
        "forward": lambda: flow(x),
        "transform": lambda: flow.transform(x),
        "inverse": lambda: flow.inverse(x),
    }
    for name, call in calls.items():
        with pytest.raises(CNFInputError) as info:
            call()
        assert str(info.value) == NON_FINITE.format("1, 3", 2, 5), name
        assert isinstance(info.value.__cause__, SolverError)
    broken = make_flow()  # finite points, a field gone NaN: still the solver's own error
    with torch.no_grad():
        broken.field.layers[0].layer.weight.fill_(math.nan)
    with pytest.raises(SolverError, match="vector field returned NaN or inf"):
        broken.log_prob(points(5))


def test_the_input_checks_add_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """log_prob reads from the device exactly as often as the bare solve it wraps."""
    flow, x = make_flow(), points(8)

    def bare() -> object:
        state = (x, x.new_zeros(8))
        return solve(_Dynamics(flow.field, None, False), state, flow.t, **flow.solve_kwargs)

    _, want = count_syncs(monkeypatch, bare)
    _, got = count_syncs(monkeypatch, lambda: flow.log_prob(x))
    assert want > 0 and got == want


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            torch.zeros(3, 2),
            "the points are torch.float32 but the model's parameters are torch.float64: pass "
            "x.to(torch.float64), or convert the model with model.to(torch.float32).",
        ),
        (
            torch.zeros(3, 2, dtype=torch.long),
            "the points are torch.int64; the model takes torch.float64: pass x.to(torch.float64).",
        ),
        (
            [[0.0, 0.0]],
            "expected a tensor of points (B, 2), got list; convert it with torch.as_tensor(x, "
            "dtype=torch.float64).",
        ),
    ],
    ids=["float32", "int64", "list"],
)
def test_points_of_another_dtype_are_refused(x: object, message: str) -> None:
    flow = make_flow()
    with pytest.raises(CNFInputError) as info:
        flow.log_prob(x)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_cnf_step_benchmark_smoke(tmp_path: Path) -> None:
    """`benchmarks/cnf_step.py` runs end to end on a tiny batch, and its two exact variants
    agree (the report states the loss and gradient differences)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cnf_step.py"
    spec = importlib.util.spec_from_file_location("cnf_step", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cnf_step.md"
    module.main(["--batch", "16", "--rk4-steps", "2", "--repeats", "1", "--output", str(out)])
    text = out.read_text()
    assert text.count("| carried |") == 1 and "| vjp |" in text and "| hutchinson |" in text
    gaps = re.search(r"loss differs by (\S+), gradients by at most (\S+) ", text)
    assert gaps is not None
    assert float(gaps.group(1)) < 1e-5 and float(gaps.group(2)) < 1e-4
