"""The dtypes of an `IrregularBatch`'s times beside its values: another floating dtype is
kept and read by the models as the times cast to theirs (times that coincide once cast are
refused by the model, naming both dtypes); integer, boolean and complex times are refused."""

from __future__ import annotations

import pytest
import torch

from latentode.data import DataError, IrregularBatch, collate_series
from latentode.data.batch import align_last, split_extrapolation
from latentode.data.prep import split_at
from latentode.nn import LatentODE, LatentODEConfig
from latentode.nn.base import ModelInputError

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, D = 3, 8, 2


def _parts(times_dtype: torch.dtype, values_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Times in [0, 2) that float32 cannot hold exactly, values and a partial mask."""
    g = torch.Generator().manual_seed(0)
    times = torch.sort(torch.rand(T, generator=g, dtype=torch.float64)).values * 2.0
    values = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, D, generator=g) < 0.7).to(values_dtype)
    mask[:, 0] = 1.0
    return times.to(times_dtype), values.to(values_dtype), mask


@pytest.mark.parametrize(
    "times",
    [torch.arange(T), torch.arange(T, dtype=torch.uint8), torch.arange(T) > 3, torch.zeros(T) * 1j],
    ids=["int64", "uint8", "bool", "complex64"],
)
def test_times_that_are_not_floating_point_are_refused_naming_both_dtypes(
    times: torch.Tensor,
) -> None:
    """Integer times were taken: `split_at` compares in the times' dtype, so a split time of
    2.5 became 2 and the series was conditioned on its times 0 and 1 only; boolean ones were
    read as 0 and 1 (these, as unsorted), and complex ones failed inside torch (a
    NotImplementedError)."""
    _, values, mask = _parts(torch.float64, torch.float32)
    with pytest.raises(DataError) as refused:
        IrregularBatch(times, values, mask)
    assert str(refused.value) == (
        f"times must be floating point; got {times.dtype} times beside torch.float32 values. "
        "Pass times.to(torch.float32)."
    )
    with pytest.raises(DataError, match=r"got torch\.int64 times beside torch\.float32"):
        collate_series([(torch.tensor([0, 1, 2]), torch.zeros(3, 1))])  # whole numbers
    cast = IrregularBatch(torch.arange(T).to(values.dtype), values, torch.ones_like(values))
    assert split_at(cast, torch.full((B,), 2.5)).observed.lengths.tolist() == [3, 3, 3]


@pytest.mark.parametrize(
    ("times_dtype", "values_dtype"),
    [(torch.float64, torch.float32), (torch.float32, torch.float64)],
)
def test_times_of_another_floating_dtype_are_kept_and_read_as_cast_to_the_models(
    times_dtype: torch.dtype, values_dtype: torch.dtype
) -> None:
    """Float64 times beside float32 values (what `collate_series` gives for float64 times,
    it promotes times and values apart) and the other way round: the batch, its selections
    and splits keep both dtypes, and a latent ODE of the values' dtype gives exactly the ELBO
    and forecast of the times cast to it (encoders, anchor at the last observation, the
    solve: it computes with times in its own dtype; no mixed-precision solve)."""
    times, values, mask = _parts(times_dtype, values_dtype)
    batch = IrregularBatch(times, values, mask)
    same = IrregularBatch(times.to(values_dtype), values, mask)
    assert (batch.times.dtype, batch.values.dtype, batch.mask.dtype) == (
        times_dtype,
        values_dtype,
        values_dtype,
    )
    series = batch.uncollate()
    again = collate_series(series)
    assert again.times.dtype == times_dtype and torch.equal(again.times, batch.times)
    for part in (batch[1], batch.compact(), split_extrapolation(batch).target):
        assert (part.times.dtype, part.values.dtype) == (times_dtype, values_dtype)
    aligned = align_last(split_extrapolation(batch))
    assert aligned.observed.times.dtype == times_dtype
    assert aligned.observed.values.dtype == values_dtype
    ahead = times[-1] + torch.tensor([0.5, 1.0], dtype=times_dtype)  # (2,) query times
    for kw in ({"encoder": "gru"}, {"encoder": "odernn"}, {"anchor": "last", "center": "last"}):
        torch.manual_seed(0)
        model = LatentODE(LatentODEConfig(input_dim=D, latent_dim=3, **kw)).to(values_dtype)
        out = []
        for b in (batch, same):
            torch.manual_seed(1)
            loss = model.elbo(b, b).loss.detach()
            torch.manual_seed(2)
            out.append((loss, model.predict(b, ahead, n_samples=3).mean.detach()))
        assert out[0][0].dtype == out[0][1].dtype == values_dtype, kw
        assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1]), kw


def test_float64_times_that_coincide_in_float32_are_refused_by_the_model_with_the_cause() -> None:
    """Times 1e8 + 0, 1, ... are distinct in float64 and one time in float32 (its spacing
    there is 8): kept as given, the float32 model refuses them naming both dtypes and what to
    do; cast before building the batch, they would be refused as repeated times, without the
    cause. A float64 model takes them."""
    _, values, mask = _parts(torch.float64, torch.float32)
    far = 1e8 + torch.arange(T, dtype=torch.float64)  # (T,)
    batch = IrregularBatch(far, values, mask)
    torch.manual_seed(0)
    model = LatentODE(LatentODEConfig(input_dim=D, latent_dim=3))
    msg = (
        r"times are strictly increasing in torch\.float64 but not in the model's torch\.float32: "
        r"at index 1, 100000000\.0 and 100000001\.0 both become 100000000\.0\. Shift the times"
    )
    with pytest.raises(ModelInputError, match=msg):
        model.elbo(batch, batch)
    with pytest.raises(DataError, match=r"times\[0\] = 100000000\.0 -> times\[1\] = 100000000\.0"):
        IrregularBatch(far.float(), values, mask)
    wide = batch.to(dtype=torch.float64)
    assert torch.isfinite(model.double().elbo(wide, wide).loss)
