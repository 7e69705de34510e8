"""Chen et al. (2018) Table 1 and Fig. 3 on scikit-learn's 8x8 digits: MLP, ResNet, RK-Net, ODE-Net.

Every model is trained with the Lightning `ODENetSystem` on `DigitsDataModule` (stratified
split 70/10/20 by ``--split-seed``), Adam with a cosine schedule, for the same epochs. Measured:

- test error of the final model, averaged over ``--seeds`` (each seed its own init and shuffle);
- parameters;
- peak training memory, two ways, each in a fresh subprocess per model running one training
  step on a batch of ``--mem-batch`` images: (a) growth of the process's peak RSS
  (``ru_maxrss``) over its value just before the step, (b) the bytes of the tensors autograd
  saves for backward during the forward pass (``torch.autograd.graph.saved_tensors_hooks``;
  the adjoint's forward solve saves none, its backward's transient graphs are not counted);
- training time per epoch (wall, one thread), forward and backward NFE per step (ODE models);
- the ODE-Net's NFE over training (the paper's Fig. 3).

Command (about 40 min on a shared, loaded 2-core CPU; 3 seeds x 4 models x 30 epochs)::

    .venv/bin/python experiments/odenet.py --output reports/odenet.md
    .venv/bin/python experiments/odenet.py --output /tmp/odenet.md --quick   # smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from latentode.data.image_modules import DigitsDataModule
from latentode.data.images import load_digits_tensors
from latentode.systems import ODENetSystem

__all__ = ["main"]

MODELS = ("mlp", "resnet", "rknet", "odenet")
LABELS = {
    "mlp": "1-layer MLP",
    "resnet": "ResNet (6 blocks)",
    "rknet": "RK-Net (rk4, h=0.25, backprop)",
    "odenet": "ODE-Net (dopri5, tol 1e-3, adjoint)",
}


def system_kwargs(model: str, width: int) -> dict[str, Any]:
    """The `ODENetSystem` arguments of each model (MLP: 300 hidden units, as the paper)."""
    kw: dict[str, Any] = {"model": model, "width": width, "lr": 3e-3, "lr_schedule": "cosine"}
    if model == "mlp":
        kw["width"] = 300
    if model == "odenet":
        kw["model_kwargs"] = {"gradient": "adjoint", "method": "dopri5", "rtol": 1e-3, "atol": 1e-3}
    return kw


class Recorder(Callback):
    """Per-step NFE and per-epoch training wall time."""

    def __init__(self) -> None:
        self.nfe_forward: list[int] = []
        self.nfe_backward: list[int] = []
        self.epoch_times: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_times.append(time.perf_counter() - self._t0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.nfe_forward.append(pl_module.nfe_forward)
        self.nfe_backward.append(pl_module.nfe_backward)


def train_one(model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model with one seed; return its test error, NFE trace and times."""
    pl.seed_everything(seed, verbose=False)
    system = ODENetSystem(**system_kwargs(model, args.width))
    dm = DigitsDataModule(batch_size=args.batch_size, seed=args.split_seed)
    rec = Recorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[rec],
    )
    trainer.fit(system, dm)
    (test,) = trainer.test(system, dm, verbose=False)
    return {
        "test_error": 100.0 * (1.0 - test["test/acc"]),
        "params": sum(p.numel() for p in system.model.parameters()),
        "epoch_time": sum(rec.epoch_times[1:]) / max(1, len(rec.epoch_times) - 1),
        "nfe_forward": rec.nfe_forward,
        "nfe_backward": rec.nfe_backward,
    }


def measure_memory(model: str, width: int, batch: int) -> dict[str, float]:
    """One training step in this (fresh) process: peak RSS growth and saved-tensor bytes."""
    torch.manual_seed(0)
    system = ODENetSystem(**system_kwargs(model, width))
    splits = load_digits_tensors(seed=0)
    idx = torch.randint(0, len(splits.train), (batch,))
    x, y = splits.train.images[idx], splits.train.labels[idx]  # (batch, 1, 8, 8), (batch,)
    saved = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[0] += t.numel() * t.element_size()
        return t

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = F.cross_entropy(system(x), y)
    loss.backward()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rss_mib": (rss1 - rss0) / 1024.0, "saved_mib": saved[0] / 2**20}


def memory_in_subprocess(model: str, width: int, batch: int) -> dict[str, float]:
    """`measure_memory` in a fresh interpreter, so earlier allocations do not hide the peak."""
    cmd = [sys.executable, __file__, "--memory-probe", model, "--width", str(width)]
    cmd += ["--mem-batch", str(batch)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot_nfe(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """The ODE-Net's forward and backward NFE per training step (seed 0), as Fig. 3."""
    run = runs["odenet"][0]
    fwd, bwd = torch.tensor(run["nfe_forward"]), torch.tensor(run["nfe_backward"])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    axes[0].plot(fwd, lw=0.8, label="forward")
    axes[0].plot(bwd, lw=0.8, label="backward")
    axes[0].set(xlabel="training step", ylabel="NFE", title="ODE-Net NFE over training")
    axes[0].legend()
    axes[1].scatter(fwd, bwd, s=4, alpha=0.5)
    lim = float(max(fwd.max(), bwd.max())) * 1.05
    axes[1].plot([0, lim], [0, lim], "k--", lw=0.6, label="backward = forward")
    axes[1].plot([0, lim], [0, lim / 2], "k:", lw=0.6, label="backward = forward / 2")
    axes[1].set(xlabel="forward NFE", ylabel="backward NFE", title="backward vs forward")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean_std(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    if len(values) == 1:
        return f"{float(t[0]):.2f}"
    return f"{float(t.mean()):.2f} ± {float(t.std()):.2f}"


def _nfe_sentence(run: dict[str, Any]) -> str:
    """How the NFE moved over training (medians of the first and last 50 steps)."""
    fwd, bwd = torch.tensor(run["nfe_forward"]), torch.tensor(run["nfe_backward"])
    f0, f1 = int(fwd[:50].median()), int(fwd[-50:].median())
    b0, b1 = int(bwd[:50].median()), int(bwd[-50:].median())
    return (
        f"Median NFE over the first / last 50 steps: forward {f0} -> {f1}, backward {b0} -> "
        f"{b1}. As in the paper's Fig. 3 the NFE grow during training; unlike it, the backward "
        f"solve does not stay at about half the forward: it is {b0 / f0:.2f}x the forward early "
        f"and {b1 / f1:.2f}x at the end (our adjoint solves the augmented state at the same "
        "tolerance 1e-3, with the error measured over all of it)."
    )


def write_report(
    runs: dict[str, list[dict[str, Any]]],
    memory: dict[str, dict[str, float]],
    args: argparse.Namespace,
    wall: float,
    figure: Path,
) -> str:
    """The markdown report."""
    lines = [
        "# ODE-Net on 8x8 digits (Chen et al. 2018, Table 1 and Fig. 3)",
        "",
        f"Command: `.venv/bin/python experiments/odenet.py --output {args.output}"
        + (" --quick`" if args.quick else "`"),
        f"Wall time: {wall / 60:.1f} min on a shared 2-core CPU (torch threads = 1).",
        f"Seeds: training {args.seeds}; split seed {args.split_seed} (1257 train / 180 val / "
        "360 test images, stratified).",
        f"Training: {args.epochs} epochs, batch {args.batch_size}, Adam lr 3e-3 cosine to 0, "
        f"width {args.width} channels after the stem (one stride-2 downsampling, 8x8 -> 4x4).",
        "",
        "| model | test error (%) | params | peak RSS growth (MiB) | saved for backward (MiB) "
        "| time / epoch (s) | NFE fwd | NFE bwd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in MODELS:
        r = runs[m]
        err = _mean_std([x["test_error"] for x in r])
        ep = sum(x["epoch_time"] for x in r) / len(r)
        nfe_f = nfe_b = "-"
        if m in ("rknet", "odenet"):
            last = [v for x in r for v in x["nfe_forward"][-20:]]
            nfe_f = f"{sum(last) / len(last):.1f}"
            lastb = [v for x in r for v in x["nfe_backward"][-20:]]
            nfe_b = f"{sum(lastb) / len(lastb):.1f}"
        mem = memory[m]
        lines.append(
            f"| {LABELS[m]} | {err} | {r[0]['params'] / 1e3:.1f}k | {mem['rss_mib']:.1f} "
            f"| {mem['saved_mib']:.1f} | {ep:.2f} | {nfe_f} | {nfe_b} |"
        )
    ode, res, rk = runs["odenet"], runs["resnet"], runs["rknet"]
    gap = sum(x["test_error"] for x in ode) / len(ode) - sum(x["test_error"] for x in res) / len(
        res
    )
    fewer = ode[0]["params"] < res[0]["params"]
    lower = memory["odenet"]["rss_mib"] < memory["rknet"]["rss_mib"]
    lines += [
        "",
        "Test error: mean ± std over seeds of the final model (no checkpoint selection). NFE: "
        "mean over the last 20 training steps of every seed (RK-Net: 4 stages x 4 steps + 1 "
        "initial evaluation, no backward solve). Memory: one training step on a batch of "
        f"{args.mem_batch} images in a fresh subprocess per model; 'peak RSS growth' is the rise "
        "of ru_maxrss over the step (includes allocator slack), 'saved for backward' sums the "
        "bytes autograd saves during the forward pass (saved_tensors_hooks). Times per epoch "
        "are wall times on a machine shared with other jobs: compare them only roughly.",
        "",
        "## Targets",
        "",
        f"- ODE-Net test error within 0.5 points of ResNet's: gap {gap:+.2f} points -> "
        + ("met" if gap <= 0.5 else "missed"),
        f"- ODE-Net has fewer parameters than ResNet ({ode[0]['params']} vs "
        f"{res[0]['params']}) -> " + ("met" if fewer else "missed"),
        f"- ODE-Net peak memory below RK-Net's ({memory['odenet']['rss_mib']:.1f} vs "
        f"{memory['rknet']['rss_mib']:.1f} MiB RSS growth) -> " + ("met" if lower else "missed"),
        "",
        f"RK-Net params: {rk[0]['params']} (same field as the ODE-Net).",
        "",
        "## Function evaluations over training (Fig. 3)",
        "",
        f"![ODE-Net NFE]({figure.name})",
        "",
        "Forward NFE of dopri5 (6 per step + the initial-step selection) and backward NFE of the "
        "adjoint solve, per training step of seed 0.",
        "",
        _nfe_sentence(ode[0]),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("reports/odenet.md"))
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 seed: a smoke run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--mem-batch", type=int, default=1024)
    p.add_argument("--memory-probe", choices=MODELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds = 2, [0]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run the experiment and write the report and its figure."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    if args.memory_probe:
        print(json.dumps(measure_memory(args.memory_probe, args.width, args.mem_batch)))
        return
    start = time.perf_counter()
    memory = {m: memory_in_subprocess(m, args.width, args.mem_batch) for m in MODELS}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODELS}
    for seed in args.seeds:
        for m in MODELS:
            runs[m].append(train_one(m, seed, args))
            err = runs[m][-1]["test_error"]
            print(f"{m} seed {seed}: test error {err:.2f}%", flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure = args.output.with_name(args.output.stem + "_nfe.png")
    plot_nfe(runs, figure)
    text = write_report(runs, memory, args, time.perf_counter() - start, figure)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
