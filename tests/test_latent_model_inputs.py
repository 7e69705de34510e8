"""Latent ODE models and baselines refuse bad inputs and settings with a ModelInputError
that names the problem: non-batch inputs, times that coincide in float32, unsorted or
non-finite observations, bad constructor arguments and MLP depths."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from latent_model_helpers import F64, D, L, T, _latent, make_batch

from latentode.data import DataError, IrregularBatch
from latentode.nn import (
    ODERNN,
    GRUBaseline,
    GRUEncoder,
    LatentODE,
    LatentODEConfig,
    ModelInputError,
    ODEFunc,
    SolverSettings,
)

pytestmark = pytest.mark.usefixtures("one_thread", "torch_seed_0")


def test_observed_that_is_not_a_batch_of_tensors_is_named() -> None:
    """A SeriesTable or a dict passed as ``observed`` was an AttributeError or a TypeError
    deep inside the encoder."""
    model = _latent("gru")
    batch = make_batch()
    as_dict = {"times": batch.times, "values": batch.values, "mask": batch.mask}
    for call in (model.encode, lambda o: model.predict(o, batch.times, 2), model):
        with pytest.raises(ModelInputError, match="observed must hold tensors times, values and "
                           "mask \\(an IrregularBatch\\), got dict"):  # fmt: skip
            call(as_dict)


@pytest.mark.parametrize("name", ["gru", "odernn", "GRUBaseline", "ODERNN"])
def test_float64_times_that_coincide_in_the_float32_model_are_refused(name: str) -> None:
    """Times 1e8 + 0, 1, ..., T - 1 are distinct in float64, but float32's spacing there is
    8: the encoders compute with the values' dtype, so several became one time. The ODE-RNN's
    solve refused them as "t must be strictly increasing ... Sort the times" (the times were
    sorted), the GRU encoder read gaps of 0; now the model names the precision."""
    batch = make_batch()
    values, mask = batch.values.float(), batch.mask.float()  # (B, T, D)
    if name in ("gru", "odernn"):
        encoder = _latent(name).float().encoder
        run = lambda t: encoder(t, values, mask).mean  # noqa: E731
    else:
        model = GRUBaseline(D, 8) if name == "GRUBaseline" else ODERNN(D, 8, 8)
        run = lambda t: model(t, values, mask, t[-2:]).mean  # noqa: E731
    times = 1e8 + torch.arange(T, dtype=F64)  # (T,)
    msg = r"strictly increasing in torch.float64 but not in the model's torch.float32: at index 1"
    with pytest.raises(ModelInputError, match=msg):
        run(times)
    assert torch.isfinite(run(times - 1e8)).all()  # the same times from 0: read


@pytest.mark.parametrize("name", ["gru", "odernn", "GRUBaseline", "ODERNN"])
def test_observations_out_of_order_non_finite_or_of_another_dtype_are_refused(name: str) -> None:
    """The encoders and the baselines check what they are given, in one read from the
    device: unsorted or repeated times (once encoded without a word, the posterior moved), a
    NaN or inf where the mask says observed (once a NaN loss, or in `predict` a solver error
    about the learning rate), NaN times, and values of another dtype than the parameters (once
    a bare matmul error). A NaN where the mask is 0 is a missing value, as before."""
    if name in ("gru", "odernn"):
        model = _latent(name)
        run = lambda b: model.elbo(b, b).loss  # noqa: E731
    else:
        model = (GRUBaseline(D, 8) if name == "GRUBaseline" else ODERNN(D, 8, 8)).double()
        run = lambda b: model(b.times, b.values, b.mask, b.times[-2:]).mean  # noqa: E731
    batch = make_batch()  # Obs: an IrregularBatch refuses unsorted times itself
    Obs = lambda times, values, mask: SimpleNamespace(times=times, values=values, mask=mask)  # noqa: E731
    batch.values[batch.mask == 0] = math.nan
    assert torch.isfinite(run(batch)).all()
    swapped = batch.times.clone()
    swapped[[2, 3]] = swapped[[3, 2]]
    with pytest.raises(ModelInputError, match=r"strictly increasing; they break at index 3"):
        run(Obs(swapped, batch.values, batch.mask))
    with pytest.raises(ModelInputError, match="times contain NaN"):
        run(Obs(batch.times.where(torch.arange(T) != 4, math.nan), batch.values, batch.mask))
    with pytest.raises(DataError, match=r"times\[4\] is nan; every time must be finite"):
        IrregularBatch(batch.times.where(torch.arange(T) != 4, math.nan), batch.values, batch.mask)
    b, t, d = torch.nonzero(batch.mask)[5].tolist()
    values = batch.values.clone()
    values[b, t, d] = math.inf
    with pytest.raises(ModelInputError, match=rf"values\[{b}, {t}, {d}\] is inf where mask is 1"):
        run(Obs(batch.times, values, batch.mask))
    with pytest.raises(ModelInputError, match=r"values are torch.float32 but the model's param"):
        run(Obs(batch.times.float(), batch.values.float(), batch.mask.float()))


def test_bad_arguments_raise_model_input_error() -> None:
    batch = make_batch()
    with pytest.raises(ModelInputError, match="encoder must be"):
        LatentODE(LatentODEConfig(encoder="lstm"))  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="anchor must be 'first' or 'last'"):
        LatentODE(LatentODEConfig(anchor="middle"))  # type: ignore[arg-type]
    with pytest.raises(ModelInputError, match="encoder_ode_hidden sizes the ODE-RNN"):
        LatentODE(LatentODEConfig(encoder="gru", encoder_ode_hidden=50))
    with pytest.raises(ModelInputError, match="leave encoder_ode_depth unset"):
        LatentODE(LatentODEConfig(encoder="gru", encoder_ode_depth=2))
    with pytest.raises(ModelInputError, match="encoder_ode_depth is the number of hidden"):
        LatentODE(LatentODEConfig(encoder="odernn", encoder_ode_depth=-1))
    with pytest.raises(ModelInputError, match="head_hidden must be >= 0"):
        GRUEncoder(D, L, head_hidden=-1)
    with pytest.raises(ModelInputError, match="smooth activation"):
        ODEFunc(L, activation="relu")
    with pytest.raises(ModelInputError, match="unknown solver method"):
        SolverSettings("rk45")
    with pytest.raises(ModelInputError, match="the model's input_dim is 3 but the data have 2"):
        GRUEncoder(3, L)(batch.times, batch.values, batch.mask)
    with pytest.raises(ModelInputError, match="union grid"):
        GRUEncoder(D, L)(batch.times[:-1], batch.values, batch.mask)
    with pytest.raises(ModelInputError, match="t_out must be strictly increasing"):
        ODERNN(D).double()(batch.times, batch.values, batch.mask, batch.times.flip(0))


@pytest.mark.parametrize(
    ("setting", "value"), [("dynamics_depth", -1), ("decoder_depth", -2), ("decoder_depth", 1.5)]
)
def test_a_bad_depth_names_its_setting(setting: str, value: float) -> None:
    """make_mlp said 'depth must be >= 0, got -1.', naming neither the setting nor the network
    (the latent ODE has two MLPs); a fractional depth was a TypeError from list repetition."""
    with pytest.raises(ModelInputError) as err:
        LatentODE(LatentODEConfig(**{setting: value}))
    assert str(err.value) == (
        f"{setting} is the number of hidden layers of an MLP: a whole number >= 0 (0: one "
        f"linear layer); got {value!r}. Set {setting} to 0 or more."
    )
    assert len(LatentODE(LatentODEConfig(**{setting: 0})).state_dict()) > 0  # 0 is linear
