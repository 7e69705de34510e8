"""Lightning systems: metrics, NFE logging, checkpoints that load safely."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from lightning_helpers import quiet_trainer, tiny_odernn_config

from latentode.data.datamodules import PeriodicDataModule, SpiralsDataModule
from latentode.systems import GRUBaselineSystem, LatentODESystem, ODERNNSystem
from latentode.systems.metrics import ChannelErrors, ForecastMetrics

# A solve under torch.inference_mode (Lightning's default for validate / test) that is the
# first of its method and dtype in the process leaves inference tensors in the solver's cache
# of tableau coefficients, and a later training solve in the same process then fails
# ('Inference tensors cannot be saved for backward'). Tests that evaluate before any training
# run without inference mode, so that they do not break the tests after them in a worker.
NO_INFERENCE_MODE = {"inference_mode": False}


def test_forecast_metrics_match_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    mean, values = torch.randn(3, 5, 2, generator=g), torch.randn(3, 5, 2, generator=g)
    std = torch.rand(3, 5, 2, generator=g) + 0.5
    target = (torch.rand(3, 5, 2, generator=g) > 0.3).float()
    heldout = target * (torch.rand(3, 5, 2, generator=g) > 0.5).float()
    metrics = ForecastMetrics("val")
    metrics.update(mean, std, values, target, heldout)
    out = metrics.compute()
    for suffix, mask in (("", heldout), ("_all", target)):
        sel = mask.bool()
        err = mean[sel] - values[sel]
        nll = -torch.distributions.Normal(mean[sel], std[sel]).log_prob(values[sel]).mean()
        assert math.isclose(out[f"val/mse{suffix}"], float((err**2).mean()), rel_tol=1e-5)
        assert math.isclose(out[f"val/rmse{suffix}"], float((err**2).mean().sqrt()), rel_tol=1e-5)
        assert math.isclose(out[f"val/mae{suffix}"], float(err.abs().mean()), rel_tol=1e-5)
        assert math.isclose(out[f"val/nll{suffix}"], float(nll), rel_tol=1e-5)


def test_forecast_metrics_ignore_unobserved_values() -> None:
    """A missing value is never scored: garbage (even NaN) where mask == 0 changes nothing."""
    g = torch.Generator().manual_seed(1)
    mean, values = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    std = torch.ones(2, 4, 3)
    mask = (torch.rand(2, 4, 3, generator=g) > 0.4).float()
    a, b = ForecastMetrics("test"), ForecastMetrics("test")
    a.update(mean, std, values, mask, mask)
    b.update(mean, std, torch.where(mask > 0, values, float("nan")), mask, mask)
    assert a.compute() == b.compute()


def test_channel_errors_are_in_user_units_per_channel() -> None:
    """Errors in normalised units times each channel's std; missing values (NaN) and a
    channel without scored points are left out; two batches add up like one."""
    g = torch.Generator().manual_seed(2)
    mean, values = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    mask = (torch.rand(4, 6, 3, generator=g) > 0.3).float()
    mask[..., 2] = 0.0  # channel "c.2" is never scored
    scale = [2.0, 0.1, 5.0]
    metric = ChannelErrors(["a", "b x", "c.2"], scale)
    poisoned = torch.where(mask > 0, values, float("nan"))
    metric.update(mean[:2], poisoned[:2], mask[:2])
    metric.update(mean[2:], poisoned[2:], mask[2:])
    out = {k: float(v) for k, v in metric.compute().items()}
    assert sorted(out) == ["mae[a]", "mae[b_x]", "rmse[a]", "rmse[b_x]"]
    for i, name in enumerate(["a", "b_x"]):
        sel = mask[..., i].bool()
        err = (mean[..., i][sel] - values[..., i][sel]) * scale[i]
        assert math.isclose(out[f"rmse[{name}]"], float((err**2).mean().sqrt()), rel_tol=1e-6)
        assert math.isclose(out[f"mae[{name}]"], float(err.abs().mean()), rel_tol=1e-6)
    with pytest.raises(ValueError, match="2 channels but 1 scales"):
        ChannelErrors(["a", "b"], [1.0])


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_latent_ode_system_logs_nfe(tmp_path, gradient: str) -> None:
    pl.seed_everything(0)
    dm = SpiralsDataModule(n=40, n_observed=30, batch_size=16)
    system = LatentODESystem(
        {
            "input_dim": 2,
            "latent_dim": 4,
            "encoder_hidden": 8,
            "dynamics_hidden": 8,
            "decoder_hidden": 8,
            "solver": {"method": "dopri5", "gradient": gradient},
        }
    )
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(system, dm)
    logged = trainer.logged_metrics
    assert math.isfinite(float(logged["train/loss"]))
    assert float(logged["train/nfe_forward"]) >= 8  # dopri5: >= 1 step + set-up
    nfe_bwd = float(logged["train/nfe_backward"])
    assert nfe_bwd > 0 if gradient != "backprop" else nfe_bwd == 0
    assert float(logged["val/mse"]) > 0 and "val/mse_all" in logged


@pytest.mark.parametrize(
    "system",
    [
        lambda: GRUBaselineSystem(input_dim=1, hidden=8),
        lambda: ODERNNSystem(input_dim=1, hidden=8),
        lambda: LatentODESystem(tiny_odernn_config()),
    ],
    ids=["gru", "odernn", "latent_odernn"],
)
def test_systems_train_and_reload_safely(tmp_path, system) -> None:
    """Each system trains a step, tests, and its checkpoint loads with weights_only=True."""
    pl.seed_everything(0)
    dm = PeriodicDataModule(n=60, task="extrapolation", frac_observed=0.5, batch_size=20)
    model = system()
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=1)
    trainer.fit(model, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # no code executed from the file
    assert "state_dict" in ckpt
    reloaded = type(model).load_from_checkpoint(path, weights_only=True)
    split = next(iter(dm.test_dataloader()))
    model.eval(), reloaded.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        a = model.predict_split(split).mean
    torch.manual_seed(0)
    with torch.no_grad():
        b = reloaded.predict_split(split).mean
    assert torch.equal(a, b)
    (metrics,) = trainer.test(model, dm, verbose=False)
    assert math.isfinite(metrics["test/mse"]) and metrics["test/mse"] > 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: LatentODESystem({"latent_dim": 0}),
            "model sizes must be 1 or more; got latent_dim = 0.",
        ),
        (
            lambda: LatentODESystem({"encoder": "odernn", "encoder_ode_hidden": 0}),
            "model sizes must be 1 or more; got encoder_ode_hidden = 0.",
        ),
        (lambda: LatentODESystem({"obs_std": 0.0}), "obs_std must be a positive number; got 0.0."),
        (lambda: LatentODESystem({}, lr=-1.0), "lr must be a positive number; got -1.0."),
        (lambda: GRUBaselineSystem(lr=float("nan")), "lr must be a positive number; got nan."),
        (
            lambda: ODERNNSystem(weight_decay=-0.1),
            "weight_decay must be 0 or more; got -0.1.",
        ),
        (
            lambda: LatentODESystem({}, lr_decay=1.5),
            "lr_decay multiplies the learning rate every step: 0 < lr_decay <= 1 (1: constant, "
            "Rubanova 0.999); got 1.5.",
        ),
        (
            lambda: SpiralsDataModule(val_fraction=0.6, test_fraction=0.4),
            "val_fraction 0.6 and test_fraction 0.4 are the shares of the series held out for "
            "validation and test: each in [0, 1), together below 1 (the default is 0.1 each).",
        ),
        # the baselines' sizes and observation std (before: hidden 0 trained, hidden -3 gave
        # a torch traceback, the ODE-RNN's hidden 0 an IndexError at its first step)
        (lambda: GRUBaselineSystem(hidden=0), "model sizes must be 1 or more; got hidden = 0."),
        (lambda: ODERNNSystem(hidden=-3), "model sizes must be 1 or more; got hidden = -3."),
        (
            lambda: GRUBaselineSystem(input_dim=0),
            "model sizes must be 1 or more; got input_dim = 0.",
        ),
        (lambda: ODERNNSystem(obs_std=-1.0), "obs_std must be a positive number; got -1.0."),
        # the latent ODE system's own settings (before: accepted; kl_anneal_steps -3 meant no
        # annealing, eval_samples 0 failed at validation naming n_samples)
        (
            lambda: LatentODESystem({}, n_samples=0),
            "n_samples (posterior samples per training series) must be a whole number >= 1; got 0.",
        ),
        (
            lambda: LatentODESystem({}, n_samples=2.5),
            "n_samples (posterior samples per training series) must be a whole number >= 1; "
            "got 2.5.",
        ),
        (
            lambda: LatentODESystem({}, eval_samples=0),
            "eval_samples (posterior paths per evaluated series) must be a whole number >= 1; "
            "got 0.",
        ),
        (
            lambda: LatentODESystem({}, kl_anneal_steps=-3),
            "kl_anneal_steps (steps of KL annealing; 0: none) must be a whole number >= 0; got -3.",
        ),
        # solver settings, named, at construction (before: at the first step, unnamed)
        (
            lambda: LatentODESystem({"encoder": "odernn", "encoder_solver": {"rtol": -1.0}}),
            "encoder_solver: rtol must be a finite number >= 0, got -1.0.",
        ),
        (
            lambda: LatentODESystem({"solver": {"atol": 0.0}}),
            "solver: atol must be a finite number > 0 (with atol=0 a state component at 0 has "
            "no error scale; for a relative tolerance alone give an atol far below the state's "
            "size, e.g. 1e-12), got 0.0.",
        ),
        (
            lambda: ODERNNSystem(step_size=-0.1),
            "ODERNNSystem (method, step_size): step_size must be a finite number > 0 (or null: "
            "the method's own steps), got -0.1.",
        ),
    ],
    ids=[
        "latent",
        "ode_hidden",
        "obs_std",
        "lr",
        "lr_nan",
        "weight_decay",
        "decay",
        "fractions",
        "gru_hidden",
        "odernn_hidden",
        "gru_input",
        "odernn_obs_std",
        "n_samples",
        "n_samples_float",
        "eval_samples",
        "kl_anneal",
        "encoder_rtol",
        "solver_atol",
        "odernn_step",
    ],
)
def test_bad_settings_are_refused_when_built(build, message: str) -> None:
    """Before, a latent size of 0 trained until the solver met an empty state ('the initial
    state contains NaN or inf'), and a negative learning rate reached torch's optimizer as a
    bare ValueError once training started."""
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message


def test_baselines_take_the_latent_odes_observation_std(tmp_path) -> None:
    """``obs_std`` / ``learn_std`` as `LatentODESystem`'s: the NLL of a baseline given the
    spirals' noise std 0.3 is that of a Gaussian of std 0.3 (before, the baselines fixed it at
    0.01 and refused the setting: the GRU's val/nll on the spirals was 103,425)."""
    dm = SpiralsDataModule(n=40, n_observed=30, batch_size=20)
    for system in (GRUBaselineSystem(obs_std=0.3), ODERNNSystem(input_dim=2, obs_std=0.3)):
        pl.seed_everything(0)
        (metrics,) = quiet_trainer(tmp_path, **NO_INFERENCE_MODE).validate(
            system, dm, verbose=False
        )
        split = next(iter(dm.val_dataloader()))
        with torch.no_grad():
            pred = system.predict_split(split)
        torch.testing.assert_close(pred.std, torch.full_like(pred.std, 0.3))
        held = split.heldout_mask > 0
        err = (pred.mean - split.target.values)[held]
        nll = float((0.5 * (err / 0.3) ** 2 + math.log(0.3) + 0.5 * math.log(2 * math.pi)).mean())
        assert math.isclose(metrics["val/nll"], nll, rel_tol=1e-5) and nll < 1e3
    learned = ODERNNSystem(obs_std=0.3, learn_std=True)
    assert any(p is learned.model.decoder.log_std for p in learned.parameters())
    assert learned.hparams["obs_std"] == 0.3 and learned.hparams["learn_std"] is True


def test_a_test_run_scores_the_same_twice(tmp_path) -> None:
    """Test draws its posterior samples from the evaluation stream, as validation does: the
    same weights score the same at every ``trainer.test``, whatever the global generator did
    in between (before, two tests in one process gave test/mse 1.2536 and 1.2894 here)."""
    pl.seed_everything(0)
    dm = PeriodicDataModule(n=60, task="extrapolation", frac_observed=0.5, batch_size=20)
    system = LatentODESystem(tiny_odernn_config(), eval_samples=3)
    trainer = quiet_trainer(tmp_path, **NO_INFERENCE_MODE)
    first = trainer.test(system, dm, verbose=False)[0]["test/mse"]
    torch.rand(7)
    second = trainer.test(system, dm, verbose=False)[0]["test/mse"]
    assert first == second > 0


def test_a_model_for_other_channels_is_refused_before_training(tmp_path) -> None:
    """The model's input_dim against the synthetic module's channels, at setup (before: the
    first step raised 'values must be [B, T, 2]; got shape (20, 100, 1)')."""
    dm = PeriodicDataModule(n=60, task="extrapolation", frac_observed=0.5, batch_size=20)
    for system in (LatentODESystem({"input_dim": 2}), GRUBaselineSystem(input_dim=2)):
        with pytest.raises(ValueError) as err:
            quiet_trainer(tmp_path, max_steps=1).fit(system, dm)
        assert str(err.value) == (
            "the model's input_dim is 2 but PeriodicDataModule has 1 channel: set the model's "
            "input_dim to 1."
        )
    model = GRUBaselineSystem(input_dim=3).model
    split = next(iter(dm.val_dataloader()))
    with pytest.raises(ValueError) as err:
        model.predict(split.observed, split.target.times)
    assert str(err.value) == (
        "the model's input_dim is 3 but the data have 1 channel (values of shape (6, 54, 1)): "
        "set the model's input_dim to 1, or give it data with 3 channels."
    )


def test_a_model_built_in_inference_mode_leaves_training_solves_alone(monkeypatch) -> None:
    """The solver-settings check at construction runs a trial solve, which fills the solver's
    cache of tableau tensors; under torch.inference_mode (a model built in a predict) those
    were inference tensors, and a later training solve of the same method failed with
    'Inference tensors cannot be saved for backward' (four CNF tests did, in one worker)."""
    from latentode.solver import odeint, rk

    monkeypatch.setattr(rk, "_COEF_CACHE", {})
    with torch.inference_mode():
        LatentODESystem({"solver": {"method": "bosh3"}})
    field = torch.nn.Linear(2, 2).double()
    y0 = torch.ones(3, 2, dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    odeint(lambda t, y: field(y), y0, t, method="bosh3").sum().backward()
    assert field.weight.grad is not None and float(field.weight.grad.abs().sum()) > 0
