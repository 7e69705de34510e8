"""Lightning systems and data modules of the ODE-Net classifiers and the CNF, and their CLI."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import run_cli
from lightning_helpers import quiet_trainer

from latentode.cli import LatentODECLI
from latentode.data.errors import SAME_ON_EVERY_PROCESS, DataError
from latentode.data.image_modules import DigitsDataModule, MNISTDataModule
from latentode.data.toy_modules import Toy2DDataModule
from latentode.nn.cnf import CNFInputError
from latentode.nn.odenet import (
    MLPClassifier,
    ODENetClassifier,
    ResNetClassifier,
    RKNetClassifier,
)
from latentode.parse_errors import ConciseParser
from latentode.systems import CNFSystem, ODENetSystem
from latentode.systems.classifier import ClassifierConfigError


def _reload(trainer: pl.Trainer, system: pl.LightningModule, path: Path) -> pl.LightningModule:
    trainer.save_checkpoint(path)
    assert "state_dict" in torch.load(path, weights_only=True)  # no code run from the file
    return type(system).load_from_checkpoint(path, weights_only=True)


@pytest.mark.parametrize("model", ["odenet", "resnet", "rknet", "mlp"])
def test_odenet_system_trains_logs_and_reloads(tmp_path: Path, model: str) -> None:
    pl.seed_everything(0)
    system = ODENetSystem(model=model, width=8)
    dm = DigitsDataModule(batch_size=32, eval_batch_size=64)
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=1, limit_test_batches=1
    )
    trainer.fit(system, dm)
    logged = {k: float(v) for k, v in trainer.logged_metrics.items()}
    assert math.isfinite(logged["train/loss"]) and 0 < logged["train/loss"] < 10
    assert 0 <= logged["val/acc"] <= 1 and math.isfinite(logged["val/loss"])
    if model == "odenet":  # dopri5 + adjoint: >= 1 step of 6 stages + set-up, both ways
        assert logged["train/nfe_forward"] >= 8 and logged["train/nfe_backward"] >= 8
    elif model == "rknet":  # rk4, step 1/4: 16 evaluations + the initial one; backprop
        assert logged["train/nfe_forward"] == 17 and logged["train/nfe_backward"] == 0
    else:
        assert "train/nfe_forward" not in logged
    reloaded = _reload(trainer, system, tmp_path / "model.ckpt")
    x, _ = next(iter(dm.test_dataloader()))
    system.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(system(x), reloaded(x))
    (metrics,) = trainer.test(system, dm, verbose=False)
    assert 0 <= metrics["test/acc"] <= 1


def test_mlp_system_learns_digits(tmp_path: Path) -> None:
    """Three epochs of the MLP on the digits give > 85% validation accuracy."""
    pl.seed_everything(0)
    system = ODENetSystem(model="mlp", width=64, lr=3e-3)
    trainer = quiet_trainer(tmp_path, max_epochs=3)
    trainer.fit(system, DigitsDataModule(batch_size=32))
    assert float(trainer.logged_metrics["val/acc"]) > 0.85


def test_odenet_system_rejects_unknown_model() -> None:
    with pytest.raises(ClassifierConfigError, match="choose one of"):
        ODENetSystem(model="transformer")
    with pytest.raises(ClassifierConfigError, match="num_blocks"):
        ODENetSystem(model="mlp", model_kwargs={"num_blocks": 3})


def test_cnf_system_trains_logs_and_reloads(tmp_path: Path) -> None:
    pl.seed_everything(0)
    system = CNFSystem(
        hidden=[16, 16],
        divergence="hutchinson",
        rtol=1e-3,
        atol=1e-3,
        kinetic_weight=0.01,
        jacobian_weight=0.01,
    )
    dm = Toy2DDataModule("8gaussians", batch_size=64, steps_per_epoch=3, n_val=128, n_test=128)
    trainer = quiet_trainer(tmp_path, max_epochs=1)
    trainer.fit(system, dm)
    logged = {k: float(v) for k, v in trainer.logged_metrics.items()}
    for key in ("train/loss", "train/nll", "train/kinetic", "train/jacobian", "val/nll"):
        assert math.isfinite(logged[key]), key
    assert logged["train/loss"] > logged["train/nll"]  # the RNODE penalty is added
    assert logged["train/nfe_forward"] >= 8 and logged["train/nfe_backward"] == 0
    bpd = logged["val/nll"] / (2 * math.log(2))
    assert math.isclose(logged["val/bits_per_dim"], bpd, rel_tol=1e-5)
    # Validation uses the exact trace: its NLL is the exact -log p of the fixed sample.
    with torch.no_grad():
        exact = -system.evaluate_log_prob(dm.val_x).mean()
    assert math.isclose(logged["val/nll"], float(exact), rel_tol=1e-5)
    assert system.flow.divergence == "hutchinson"  # restored after evaluation
    reloaded = _reload(trainer, system, tmp_path / "flow.ckpt")
    x = dm.test_x[:50]
    assert torch.equal(system.evaluate_log_prob(x), reloaded.evaluate_log_prob(x))
    (metrics,) = trainer.test(system, dm, verbose=False)
    assert math.isfinite(metrics["test/nll"]) and metrics["test/nfe"] >= 8


def test_cnf_system_cosine_schedule_reaches_zero(tmp_path: Path) -> None:
    pl.seed_everything(0)
    system = CNFSystem(hidden=[8], rtol=1e-3, atol=1e-3, lr=4e-3, lr_schedule="cosine")
    dm = Toy2DDataModule("8gaussians", batch_size=32, steps_per_epoch=2, n_val=32, n_test=32)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    seen: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(Record())
    trainer.fit(system, dm)
    expected = [2e-3 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]  # T_max = 4 steps
    assert seen == pytest.approx(expected, rel=1e-12)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(CNFInputError, match="lr_schedule"):
        CNFSystem(lr_schedule="linear")


def test_cosine_schedule_needs_the_runs_length(tmp_path) -> None:
    """A cosine over an unbounded run used to take one epoch (the classifier: T_max = 1 for
    max_epochs=-1) and then climb back up, as the cosine is periodic."""
    dm = Toy2DDataModule("8gaussians", batch_size=32, steps_per_epoch=2, n_val=32, n_test=32)
    trainer = quiet_trainer(tmp_path, max_epochs=-1, limit_val_batches=0)
    advice = r"has no end; set --trainer.max_epochs N or --trainer.max_steps N"
    with pytest.raises(CNFInputError, match=advice):
        trainer.fit(CNFSystem(hidden=[8], lr_schedule="cosine"), dm)
    system = ODENetSystem(model="mlp", lr_schedule="cosine")
    system.trainer = quiet_trainer(tmp_path, max_epochs=-1)
    with pytest.raises(ClassifierConfigError, match=advice):
        system.configure_optimizers()
    # bounded by max_steps alone, the classifier's per-epoch cosine runs per step instead
    system.trainer = quiet_trainer(tmp_path, max_epochs=-1, max_steps=7)
    sched = system.configure_optimizers()["lr_scheduler"]
    assert sched["interval"] == "step" and sched["scheduler"].T_max == 7
    system.trainer = quiet_trainer(tmp_path, max_epochs=3)
    sched = system.configure_optimizers()["lr_scheduler"]
    assert sched["interval"] == "epoch" and sched["scheduler"].T_max == 3


def test_toy_module_is_seeded() -> None:
    a, b = (Toy2DDataModule("checkerboard", batch_size=32, steps_per_epoch=2) for _ in range(2))
    xa, xb = list(a.train_dataloader()), list(b.train_dataloader())
    assert len(xa) == 2 and xa[0].shape == (32, 2)
    assert torch.equal(xa[0], xb[0]) and not torch.equal(xa[0], xa[1])
    assert not torch.equal(next(iter(a.train_dataloader())), xa[0])  # the next epoch is fresh
    assert torch.equal(a.val_x, b.val_x) and not torch.equal(a.val_x[:10], a.test_x[:10])
    fixed = Toy2DDataModule("moons", batch_size=10, train_size=100)
    assert sum(len(x) for x in fixed.train_dataloader()) == 100


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_module_reads_a_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    dm = MNISTDataModule(str(tmp_path), val_size=6, batch_size=8)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and float(x.max()) <= 1.0 and y.dtype == torch.int64
    assert sum(len(b[1]) for b in dm.val_dataloader()) == 6
    assert sum(len(b[1]) for b in dm.test_dataloader()) == 10


def test_cli_fits_odenet_digits(tmp_path: Path) -> None:
    args = ["fit", "--config", "configs/odenet_digits.yaml"]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "2"]
    args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    args += ["--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "16"]
    args += ["--model.init_args.width", "8"]
    out = run_cli(*args, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    last = tmp_path / "checkpoints" / "last.ckpt"
    best = list((tmp_path / "checkpoints").glob("best-*.ckpt"))  # monitored on val/acc
    assert last.is_file() and len(best) == 1
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2 and state["hyper_parameters"]["model"] == "odenet"
    system = ODENetSystem.load_from_checkpoint(last, weights_only=True)
    assert system.hparams.width == 8


def _digits_cli(tmp_path: Path, *args: str) -> LatentODECLI:
    """`latentode fit --config configs/odenet_digits.yaml ARGS`, parsed and instantiated in
    this process (nothing run)."""
    common = ["--config", "configs/odenet_digits.yaml", "--trainer.logger", "false"]
    return LatentODECLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        auto_configure_optimizers=False,
        parser_class=ConciseParser,
        args=[*common, "--trainer.default_root_dir", str(tmp_path), *args],
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # jsonargparse's, inside Lightning
def test_the_configs_baseline_switch_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The config documents ``--model.init_args.model resnet | rknet | mlp``; each used to fail
    on the ODE-Net's solver settings in the config's model_kwargs. The ODE-Net keeps Chen et
    al.'s solver (its defaults), RK-Net its rk4 at h = 1/4."""
    monkeypatch.setattr("sys.argv", ["latentode"])  # the CLI reads only the args given
    built = {
        "odenet": ODENetClassifier,
        "resnet": ResNetClassifier,
        "rknet": RKNetClassifier,
        "mlp": MLPClassifier,
    }
    for name, cls in built.items():
        model = _digits_cli(tmp_path, "--model.init_args.model", name).model.model
        assert type(model) is cls, name
    odenet = _digits_cli(tmp_path).model.model.block.solve_kwargs
    assert {k: odenet[k] for k in ("gradient", "method", "rtol", "atol", "step_size")} == {
        "gradient": "adjoint",
        "method": "dopri5",
        "rtol": 1e-3,
        "atol": 1e-3,
        "step_size": None,
    }
    rknet = _digits_cli(tmp_path, "--model.init_args.model", "rknet").model.model.block
    assert (rknet.solve_kwargs["method"], rknet.solve_kwargs["step_size"]) == ("rk4", 0.25)
    solver = "{gradient: adjoint, method: dopri5, rtol: 1.0e-3, atol: 1.0e-3}"
    with pytest.raises(ClassifierConfigError) as info:
        _digits_cli(
            tmp_path, "--model.init_args.model", "resnet", "--model.init_args.model_kwargs", solver
        )
    assert str(info.value) == (
        "model 'resnet' does not take model_kwargs ['atol', 'gradient', 'method', 'rtol'] "
        "(atol, gradient, method, rtol: the ODE-Net's solver settings; 'rknet' takes method and "
        "step_size of them, 'resnet' and 'mlp' none); it takes ['num_blocks']. Give only those, "
        "or none for its defaults: --model.init_args.model_kwargs '{}'."
    )


def test_labels_and_image_shape_are_checked_against_the_model(tmp_path: Path) -> None:
    """num_classes 5 on the 10 digit classes used to stop in cross_entropy ("IndexError:
    Target 6 is out of bounds"); it is refused at setup, before any step, and data given
    without a data module get the same advice from the loss."""
    dm = DigitsDataModule(batch_size=32)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    system = ODENetSystem(model="mlp", width=8, num_classes=5)
    with pytest.raises(ClassifierConfigError) as info:
        trainer.fit(system, dm)
    assert str(info.value) == (
        "num_classes=5 but the labels of DigitsDataModule run from 0 to 9; the labels must lie "
        "in 0..num_classes - 1: set --model.init_args.num_classes 10."
    )
    assert trainer.global_step == 0
    with pytest.raises(ClassifierConfigError) as info:
        quiet_trainer(tmp_path, max_steps=1).fit(ODENetSystem(model="mlp", image_size=28), dm)
    assert str(info.value) == (
        "the images of DigitsDataModule are 1x8x8 (channels x height x width) but the model "
        "takes in_channels=1, image_size=28: set --model.init_args.in_channels 1 "
        "--model.init_args.image_size 8."
    )
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 6, 1, 2])
    with pytest.raises(ClassifierConfigError, match=r"^a label lies outside 0..4 \(num_classes=5"):
        system.training_step((x, y), 0)


def test_toy_fixed_sample_refuses_shards_smaller_than_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under DDP each process trains on ceil(train_size / processes) points; with the last
    incomplete batch dropped, a shard below batch_size used to leave every process without a
    batch, and the construction check (on the whole sample) passed it."""
    import latentode.data.toy_modules as toy_modules

    monkeypatch.setattr(toy_modules, "process_rank", lambda: (0, 2))
    with pytest.raises(DataError) as info:
        Toy2DDataModule("moons", batch_size=32, train_size=40).train_dataloader()
    assert str(info.value) == (
        "train_size=40 split over 2 processes gives each 20 points, fewer than "
        "batch_size=32: training drops the incomplete last batch, so no process would have a "
        "batch. Give train_size >= 64, batch_size <= 20 (the batch is per process), or "
        "train_size null (fresh points every step)."
    )
    assert getattr(info.value, SAME_ON_EVERY_PROCESS)  # every process raises it: printed once
    # 63 points: shards of 32 (Lightning's sampler pads the second), one batch each.
    loader = Toy2DDataModule("moons", batch_size=32, train_size=63).train_dataloader()
    assert len(loader) == 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: Toy2DDataModule(batch_size=32, train_size=10),
            "train_size=10 is smaller than batch_size=32: training drops the incomplete last "
            "batch, so no batch would be left. Give train_size >= 32, batch_size <= 10, or "
            "train_size null (fresh points every step).",
        ),
        (lambda: Toy2DDataModule(n_val=0), "n_val must be an integer >= 1, got 0."),
        (lambda: Toy2DDataModule(n_test=-5), "n_test must be an integer >= 1, got -5."),
        (lambda: Toy2DDataModule(train_size=0), "train_size must be an integer >= 1, got 0."),
        (
            lambda: Toy2DDataModule(eval_batch_size=0),
            "eval_batch_size must be an integer >= 1, got 0.",
        ),
        (lambda: Toy2DDataModule(batch_size=2.5), "batch_size must be an integer >= 1, got 2.5."),
        (
            lambda: DigitsDataModule(num_workers=-1),
            "num_workers must be an integer >= 0, got -1.",
        ),
        (
            lambda: DigitsDataModule(eval_batch_size=0),
            "eval_batch_size must be an integer >= 1, got 0.",
        ),
        (
            lambda: DigitsDataModule(val_fraction=0.6, test_fraction=0.5),
            "val_fraction=0.6 and test_fraction=0.5 must lie in [0, 1) and sum to less than 1.",
        ),
        (
            lambda: MNISTDataModule("/nowhere", val_size=-1),
            "val_size must be an integer >= 0, got -1.",
        ),
    ],
    ids=[
        "train-below-batch",
        "n_val",
        "n_test",
        "train_size",
        "toy-eval-batch",
        "toy-batch-float",
        "workers",
        "digits-eval-batch",
        "fractions",
        "val_size",
    ],
)
def test_data_modules_refuse_bad_settings_at_construction(
    build: Callable[[], object], message: str
) -> None:
    """Each used to fail later: train_size < batch_size left no training batch (the run then
    blamed the schedule, "this run has no end", or finished untrained), the others failed
    inside the sampler or the DataLoader without naming the setting."""
    with pytest.raises(DataError) as info:
        build()
    assert str(info.value) == message
