"""Forecast metrics for one stage (torchmetrics): MSE, RMSE, MAE and Gaussian NLL.

Two point sets are scored and reported separately (ANCHORS: Rubanova's code mixes them):

- ``<stage>/mse`` etc.: the *held-out* target points, those the model did not condition on
  (interpolation: the hidden points; extrapolation: the whole prediction window);
- ``<stage>/mse_all`` etc.: every observed target point, conditioning points included.

A missing value is never counted (no zero error for an unobserved feature).
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, MetricCollection

__all__ = ["ForecastMetrics", "count_nfe"]


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


def count_nfe(module: nn.Module) -> int:
    """Total function evaluations counted by the vector fields inside ``module``."""
    return sum(int(m.nfe) for m in module.modules() if hasattr(m, "nfe") and m is not module)
