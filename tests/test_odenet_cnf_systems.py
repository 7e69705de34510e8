"""Lightning systems and data modules of the ODE-Net classifiers and the CNF, and their CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from cli_helpers import run_cli
from lightning_helpers import quiet_trainer

from latentode.data.image_modules import DigitsDataModule, MNISTDataModule
from latentode.data.toy_modules import Toy2DDataModule
from latentode.nn.cnf import CNFInputError
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
