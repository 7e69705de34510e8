"""Forecast metrics for one stage (torchmetrics): MSE, RMSE, MAE and Gaussian NLL.

Two point sets are scored and reported separately (ANCHORS: Rubanova's code mixes them):

- ``<stage>/mse`` etc.: the *held-out* target points, those the model did not condition on
  (interpolation: the hidden points; extrapolation: the whole prediction window);
- ``<stage>/mse_all`` etc.: every observed target point, conditioning points included.

A missing value is never counted (no zero error for an unobserved feature).

`ChannelErrors` scores the held-out points per channel in the user's units (a model trained on
a normalised CSV logs ``<stage>/rmse[<channel>]`` and ``<stage>/mae[<channel>]`` beside them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, Metric, MetricCollection

__all__ = ["ChannelErrors", "ForecastMetrics", "count_nfe"]


def _collection(prefix: str, suffix: str) -> MetricCollection:
    return MetricCollection(
        {
            "mse": MeanSquaredError(),
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "nll": MeanMetric(),
        },
        prefix=prefix,
        postfix=suffix,
        compute_groups=False,
    )


class ForecastMetrics(nn.Module):
    """Held-out and all-points metrics of one stage.

    Args:
        stage: ``"val"`` or ``"test"`` (the metric name prefix).
    """

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.heldout = _collection(f"{stage}/", "")
        self.all = _collection(f"{stage}/", "_all")

    @staticmethod
    def _update(col: MetricCollection, mean: Tensor, std: Tensor, y: Tensor, sel: Tensor) -> None:
        if not bool(sel.any()):
            return
        m, s, v = mean[sel], std[sel], y[sel]  # (n,)
        for name in ("mse", "rmse", "mae"):
            col[name].update(m, v)
        nll = 0.5 * ((v - m) / s) ** 2 + s.log() + 0.5 * math.log(2 * math.pi)  # (n,)
        col["nll"].update(nll)

    def update(
        self, mean: Tensor, std: Tensor, values: Tensor, target_mask: Tensor, heldout_mask: Tensor
    ) -> None:
        """Add a batch: predictions and targets ``[B, T, D]`` with their masks."""
        mean, std, values = mean.detach(), std.detach(), values.detach()
        self._update(self.heldout, mean, std, values, heldout_mask > 0)
        self._update(self.all, mean, std, values, target_mask > 0)

    def collections(self) -> tuple[MetricCollection, MetricCollection]:
        """Both collections, for ``LightningModule.log_dict``."""
        return self.heldout, self.all

    def compute(self) -> dict[str, float]:
        """Current values as plain floats (for reports)."""
        out = {}
        for col in self.collections():
            out.update({k: float(v) for k, v in col.compute().items()})
        return out

    def reset(self) -> None:
        """Forget every update."""
        for col in self.collections():
            col.reset()


class ChannelErrors(Metric):
    """RMSE and MAE per channel, in the user's units, over the masked points.

    The model sees values normalised per channel, ``(x - mean_c) / std_c``; an error in those
    units times ``std_c`` is the error in the user's (the mean cancels). Sums and counts are
    states reduced by summation, so under DDP every process's points count once.

    Args:
        channels: the channel names (the metric names' suffixes; characters other than
            letters, digits, ``_`` and ``-`` become ``_``).
        scale: per-channel ``std_c`` (1 for values not normalised).
    """

    full_state_update = False

    def __init__(self, channels: Sequence[str], scale: Sequence[float]) -> None:
        super().__init__()
        if len(channels) != len(scale):
            raise ValueError(f"{len(channels)} channels but {len(scale)} scales.")
        self.names = [re.sub(r"[^A-Za-z0-9_-]", "_", str(c)) for c in channels]
        self.register_buffer("scale", torch.tensor([float(v) for v in scale]), persistent=False)
        D = len(channels)
        for name in ("sse", "sae", "count"):
            self.add_state(name, default=torch.zeros(D, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, mean: Tensor, values: Tensor, mask: Tensor) -> None:
        """Add predictions and targets ``[B, T, D]`` scored where ``mask > 0``."""
        keep = mask > 0
        err = torch.where(keep, mean - values, torch.zeros_like(mean)).double()  # (B, T, D)
        err = err * self.scale.to(err)
        self.sse += (err**2).sum(dim=(0, 1))
        self.sae += err.abs().sum(dim=(0, 1))
        self.count += keep.sum(dim=(0, 1)).double()

    def compute(self) -> dict[str, Tensor]:
        """``{"rmse[<channel>]": ..., "mae[<channel>]": ...}`` for channels with scored points."""
        out = {}
        for i, name in enumerate(self.names):
            if self.count[i] > 0:
                out[f"rmse[{name}]"] = (self.sse[i] / self.count[i]).sqrt()
                out[f"mae[{name}]"] = self.sae[i] / self.count[i]
        return out


def count_nfe(module: nn.Module) -> int:
    """Total function evaluations counted by the vector fields inside ``module``."""
    return sum(int(m.nfe) for m in module.modules() if hasattr(m, "nfe") and m is not module)
