"""Matplotlib figures: spirals (Chen 2018 Fig. 8), posterior samples, and forecasts.

Plain functions that take tensors and return a ``Figure`` (Agg backend, nothing is shown)::

    fig = plot_spirals(times, observed, clean, pred_mean, t_split=float(times[100]))
    fig.savefig("reports/spirals.png", dpi=120)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from .predictive import band_columns, band_levels, percent, quantile_probs

__all__ = ["pca_2d", "plot_forecast", "plot_latent_pca", "plot_posterior_samples", "plot_spirals"]


def pca_2d(z: Tensor) -> Tensor:
    """Project points ``[..., L]`` onto their first two principal components.

    Args:
        z: points, any leading shape.

    Returns:
        ``[..., 2]`` projections (centred on the mean of all points).
    """
    flat = z.reshape(-1, z.shape[-1]).double()  # (N, L)
    centred = flat - flat.mean(dim=0)  # (N, L)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v (L, L)
    return (centred @ v[:2].T).reshape(*z.shape[:-1], 2).float()  # (..., 2)


def plot_spirals(
    times: Tensor,
    observed: Tensor,
    observed_mask: Tensor,
    clean: Tensor,
    predictions: dict[str, Tensor],
    t_split: float,
    titles: list[str] | None = None,
) -> Figure:
    """Observations, reconstruction and extrapolation of a few 2-D spirals (Chen 2018 Fig. 8).

    Args:
        times: ``[T]`` times of the window.
        observed: ``[B, T, 2]`` noisy values; only those with ``observed_mask`` are drawn.
        observed_mask: ``[B, T, 2]`` the conditioning points.
        clean: ``[B, T, 2]`` the true noise-free trajectories.
        predictions: model name -> ``[B, T, 2]`` predicted mean over the whole window.
        t_split: first time of the extrapolation window (solid before, dashed after).
        titles: one title per series.

    Returns:
        A figure with one panel per series.
    """
    B = observed.shape[0]
    cols = min(B, 4)
    rows = (B + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.4 * rows), squeeze=False)
    before = times < t_split  # (T,)
    colours = ["tab:green", "tab:red", "tab:purple"]
    for b in range(B):
        ax = axes[b // cols][b % cols]
        ax.plot(clean[b, :, 0], clean[b, :, 1], color="0.75", lw=3, label="truth")
        seen = observed_mask[b, :, 0] > 0  # (T,)
        ax.scatter(observed[b, seen, 0], observed[b, seen, 1], s=9, c="k", label="observed")
        for (name, pred), colour in zip(predictions.items(), colours, strict=False):
            p = pred[b]  # (T, 2)
            ax.plot(p[before, 0], p[before, 1], color=colour, lw=1.4, label=f"{name} recon.")
            ax.plot(p[~before, 0], p[~before, 1], color=colour, lw=1.4, ls="--",
                    label=f"{name} extrap.")  # fmt: skip
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[b], fontsize=9)
    for b in range(B, rows * cols):
        axes[b // cols][b % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_latent_pca(zt: Tensor, groups: Tensor, t_split_index: int) -> Figure:
    """Latent trajectories projected onto their first two principal components.

    Args:
        zt: ``[B, T, L]`` latent paths (e.g. from the posterior mean of ``z0``).
        groups: ``[B]`` bool, colours the two groups (e.g. clockwise or not).
        t_split_index: first index of the extrapolation window (dashed from there).

    Returns:
        A one-panel figure; circles mark ``z(t0)``.
    """
    proj = pca_2d(zt)  # (B, T, 2)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for b in range(proj.shape[0]):
        colour = "tab:blue" if bool(groups[b]) else "tab:orange"
        p = proj[b]  # (T, 2)
        ax.plot(p[: t_split_index + 1, 0], p[: t_split_index + 1, 1], color=colour, lw=0.8)
        ax.plot(p[t_split_index:, 0], p[t_split_index:, 1], color=colour, lw=0.8, ls="--")
        ax.scatter(p[0, 0], p[0, 1], color=colour, s=10)
    ax.plot([], [], color="tab:blue", label="clockwise")
    ax.plot([], [], color="tab:orange", label="counter-clockwise")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Latent trajectories (PCA); dashed: extrapolation", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_posterior_samples(
    times: Tensor,
    values: Tensor,
    observed_mask: Tensor,
    samples: Tensor,
    t_split: float | None = None,
    titles: list[str] | None = None,
) -> Figure:
    """Posterior sample paths of 1-D series over the conditioning and prediction windows.

    Args:
        times: ``[T]`` query times.
        values: ``[B, T]`` the true (noisy) values at ``times``.
        observed_mask: ``[B, T]`` the conditioning points among ``times``.
        samples: ``[K, B, T]`` decoded posterior sample paths.
        t_split: start of the prediction window (a vertical line), None for interpolation.
        titles: one title per series.

    Returns:
        A figure with one panel per series.
    """
    B = values.shape[0]
    fig, axes = plt.subplots(1, B, figsize=(3.6 * B, 2.8), squeeze=False)
    for b in range(B):
        ax = axes[0][b]
        for k in range(samples.shape[0]):
            ax.plot(times, samples[k, b], color="tab:blue", alpha=0.25, lw=0.8)
        ax.plot(times, values[b], color="0.6", lw=1.0, label="data")
        seen = observed_mask[b] > 0  # (T,)
        ax.scatter(times[seen], values[b, seen], s=10, c="k", zorder=3, label="observed")
        ax.plot([], [], color="tab:blue", label="posterior samples")
        if t_split is not None:
            ax.axvline(t_split, color="k", ls=":", lw=1)
        if titles is not None:
            ax.set_title(titles[b], fontsize=9)
        ax.set_xlabel("t")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def plot_forecast(
    t_hist: Sequence[Any],
    y_hist: np.ndarray,
    t_future: Sequence[Any],
    summary: np.ndarray,
    channels: Sequence[str],
    title: str,
    levels: Sequence[float] | None = None,
) -> Figure:
    """One series' forecast: observations, posterior mean and its bands, per channel.

    The history and forecast regions are shaded differently.

    Args:
        t_hist: ``[n]`` observation times (numbers or datetimes).
        y_hist: ``[n, D]`` observed values (NaN where missing).
        t_future: ``[m]`` forecast times.
        summary: ``[m, D, 5]`` (mean, std, q05, q50, q95) per time and channel, or
            ``[m, D, 2 + Q]`` with the bands of ``levels`` (`Predictive.summary`).
        channels: the D channel names.
        title: the figure title (the series id).
        levels: the bands ``summary`` holds (None: the 5-95% one); each is shaded, the
            narrower ones darker.

    Returns:
        The figure (one row per channel).
    """
    levels = band_levels(levels)
    probs = quantile_probs(levels)
    D = len(channels)
    fig, axes = plt.subplots(D, 1, figsize=(9, 2.6 * D), sharex=True, squeeze=False)
    for d, ax in enumerate(axes[:, 0]):
        ax.axvspan(t_hist[0], t_hist[-1], color="0.93", label="history")
        ax.axvspan(t_hist[-1], t_future[-1], color="#e8f0fb", label="forecast")
        ax.plot(t_hist, y_hist[:, d], ".", ms=3, color="0.25", label="observed")
        for v in reversed(levels):  # widest first, the narrower ones on top
            lo, _, hi = band_columns(levels, v)
            name = f"{percent(probs[lo - 2])}-{percent(probs[hi - 2])}%"
            alpha = 0.3 if len(levels) == 1 else 0.15 + 0.3 * (1 - v)
            ax.fill_between(
                t_future,
                summary[:, d, lo],
                summary[:, d, hi],
                color="C0",
                alpha=alpha,
                lw=0,
                label=name,
            )
        ax.plot(t_future, summary[:, d, 0], color="C0", lw=1.5, label="mean")
        ax.set_ylabel(channels[d])
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=5)
    fig.tight_layout()
    return fig
