"""The ODE-Net's and the CNF's solver settings are checked when the model is built, and the
CNF system checks the dimension of its data module's points before the first step.

Before, a bad ``rtol`` or step option passed construction and stopped the fit in the sanity
check ("validation stopped at epoch 0, validation batch 0 (global step 0): rtol must be ..."),
and so did a CNF whose ``dim`` differs from the data's ("expected points (B, 3), got shape
(2000, 2).").
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_helpers import ROOT
from lightning_helpers import quiet_trainer
from torch.utils.data import DataLoader

from latentode.data.toy_modules import Toy2DDataModule
from latentode.nn.cnf import CNF, CNFInputError
from latentode.nn.odenet import NeuralODE, ODENetClassifier, ODENetInputError
from latentode.systems import CNFSystem, ODENetSystem
from latentode.systems.guard import TrainingStoppedError

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL_RULE = (
    "atol must be a finite number > 0 (with atol=0 a state component at 0 has no error scale; "
    "for a relative tolerance alone give an atol far below the state's size, e.g. 1e-12), got "
)

# (solver keywords of the model, the solver's reason): the tolerances, the step options and,
# for the adjoint gradient, the adjoint's own
BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"rtol": -1}, "rtol must be a finite number >= 0, got -1."),
    ({"atol": 0.0}, ATOL_RULE + "0.0."),
    (
        {"options": {"max_num_steps": -3}},
        "step option max_num_steps must be a whole number >= 1, got -3.",
    ),
    ({"options": {"safety": 0}}, "step option safety must be in (0, 1], got 0."),
    (
        {"gradient": "adjoint", "options": {"adjoint_rtol": -2}},
        "adjoint_rtol must be a finite number >= 0, got -2.",
    ),
    (
        {"gradient": "adjoint", "options": {"adjoint_options": {"safety": 2}}},
        "adjoint option safety must be in (0, 1], got 2.",
    ),
    (
        {"options": {"max_stpes": 5}},
        "unknown step option(s) ['max_stpes']; valid options are ['first_step', 'max_step', "
        "'min_step', 'max_num_steps', 'safety', 'ifactor', 'dfactor', 'pcoeff', 'icoeff', "
        "'step_size'].",
    ),
]


@pytest.mark.parametrize(("kwargs", "reason"), BAD_SETTINGS)
def test_ode_block_refuses_bad_solver_settings_when_built(
    kwargs: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ODENetInputError) as info:
        NeuralODE(2, **kwargs)
    assert str(info.value) == f"ODEBlock: {reason}"
    with pytest.raises(ODENetInputError) as info:
        ODENetClassifier(image_size=8, width=4, **kwargs)
    assert str(info.value) == f"ODEBlock: {reason}"


@pytest.mark.parametrize(("kwargs", "reason"), BAD_SETTINGS)
def test_cnf_refuses_bad_solver_settings_when_built(kwargs: dict[str, Any], reason: str) -> None:
    with pytest.raises(CNFInputError) as info:
        CNF(2, [4], **kwargs)
    assert str(info.value) == f"CNF: {reason}"


def test_systems_refuse_bad_solver_settings_when_built() -> None:
    """The systems build their models in their constructors: the refusal comes before any
    trainer; settings only a solve can judge (a step limit of 1) are left to the solve."""
    with pytest.raises(CNFInputError) as info:
        CNFSystem(hidden=[4], rtol=-1.0)
    assert str(info.value) == "CNF: rtol must be a finite number >= 0, got -1.0."
    with pytest.raises(CNFInputError) as info:
        CNFSystem(hidden=[4], atol=math.inf)
    assert str(info.value) == "CNF: " + ATOL_RULE + "inf."
    with pytest.raises(ODENetInputError) as info:
        ODENetSystem(width=4, model_kwargs={"options": {"max_num_steps": 0}})
    reason = "step option max_num_steps must be a whole number >= 1, got 0."
    assert str(info.value) == f"ODEBlock: {reason}"
    # the check integrates nothing: a step limit of 1 and a thousand fixed steps are accepted
    NeuralODE(2, options={"max_num_steps": 1})
    CNF(2, [4], method="rk4", step_size=1e-3, options={"max_num_steps": 10})
    # and leaves the solver fit for training: adjoint gradients of a model built after it
    torch.manual_seed(0)
    model = NeuralODE(2, gradient="adjoint", rtol=1e-6, atol=1e-6)
    model(torch.ones(3, 2)).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    assert model.block.nfe_backward > 0


def test_cnf_system_checks_the_dimension_of_the_points_before_any_step(tmp_path: Path) -> None:
    dm = Toy2DDataModule("8gaussians", batch_size=8, steps_per_epoch=1, n_val=8, n_test=8)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    with pytest.raises(CNFInputError) as info:
        trainer.fit(CNFSystem(dim=3, hidden=[4]), dm)
    assert str(info.value) == (
        "the points of Toy2DDataModule are 2-D but the model takes dim=3: set "
        "--model.init_args.dim 2."
    )
    assert trainer.global_step == 0
    # without a data module the step itself refuses the points, as before
    loader = DataLoader([torch.zeros(4, 2)], batch_size=None)
    with pytest.raises(TrainingStoppedError, match=r"expected points \(B, 3\), got shape \(4, 2\)"):
        quiet_trainer(tmp_path, max_steps=1).fit(CNFSystem(dim=3, hidden=[4]), loader)


def _fit(tmp_path: Path, config: str, *args: str) -> None:
    from latentode.cli import main

    root = ["--trainer.default_root_dir", str(tmp_path), "--trainer.max_epochs", "1"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.limit_train_batches", "1"]
    main(["fit", "--config", str(ROOT / "configs" / config), *root, *quiet, *args])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jsonargparse's, inside Lightning
@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        (
            "odenet_digits.yaml",
            ["--model.init_args.model_kwargs", '{"options": {"max_num_steps": -3}}'],
            "ODEBlock: step option max_num_steps must be a whole number >= 1, got -3.",
        ),
        (
            "cnf_checkerboard.yaml",
            ["--model.init_args.dim", "3"],
            "the points of Toy2DDataModule are 2-D but the model takes dim=3: set "
            "--model.init_args.dim 2.",
        ),
    ],
)
def test_cli_stops_before_the_sanity_check(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    config: str,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.setattr("sys.argv", ["latentode"])  # the CLI reads only the args given
    with pytest.raises(SystemExit) as stop:
        _fit(tmp_path, config, *args)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"latentode: error: {message}", err[-2000:]
    assert "Sanity Checking" not in err and "Traceback" not in err


def test_the_data_checks_are_printed_by_the_first_process_only() -> None:
    """The CNF's and the classifier's data checks run in every process of a multi-process run
    and fail alike there (the whole data's dimension, labels and image shape), so the
    ``latentode`` command prints them from the first process only, as it does a bad file."""
    from latentode.data.errors import SAME_ON_EVERY_PROCESS
    from latentode.systems.classifier import ClassifierConfigError

    checks = [
        (CNFInputError, lambda: CNFSystem(dim=3, hidden=[4]).check_data("Toy", 2)),
        (
            ClassifierConfigError,
            lambda: ODENetSystem(model="mlp", width=8, num_classes=5).check_data(
                "Digits", (0, 9), (1, 8, 8)
            ),
        ),
        (
            ClassifierConfigError,
            lambda: ODENetSystem(model="mlp", width=8).check_data("Digits", (0, 9), (1, 28, 28)),
        ),
    ]
    for error, check in checks:
        with pytest.raises(error) as info:
            check()
        assert getattr(info.value, SAME_ON_EVERY_PROCESS, False) is True, info.value
