"""Round-robin wall-clock timing of solve configurations, with errors against references.

On a CUDA device kernels run asynchronously, so every timed run is bracketed by
`torch.cuda.synchronize()` (see `make_sync`): the clock starts with no work queued and stops only
once the run's kernels have finished. On the CPU nothing is synchronised (nothing needs to be).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from runners import Config, Outcome, run_once
from torch import Tensor
from workload import CountingField

__all__ = ["Measured", "make_sync", "parse_device", "time_group"]


def _no_sync() -> None:
    """Nothing to wait for: CPU work has finished when the call returns."""


def parse_device(parser: argparse.ArgumentParser, value: str) -> torch.device:
    """The ``--device`` option as a device, or a parser error (cpu or an available cuda[:N])."""
    try:
        device = torch.device(value)
    except RuntimeError as exc:
        parser.error(f"--device: {exc}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:N], not {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {value}: torch {torch.__version__} sees no CUDA device")
    return device


def make_sync(device: torch.device | str) -> Callable[[], None]:
    """A function that waits until the work queued on `device` has finished.

    For a CUDA device it calls `torch.cuda.synchronize(device)` (looked up at call time); for
    any other device it does nothing, so the CPU path never touches `torch.cuda`.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return _no_sync

    def sync() -> None:
        torch.cuda.synchronize(dev)

    return sync


@dataclass
class Measured:
    """Timings and the first outcome of one configuration at one batch size."""

    key: str
    label: str
    needs_grad: bool
    warm_s: float = 0.0
    times: list[float] = field(default_factory=list)
    outcome: Outcome | None = None
    error: str | None = None  # the exception, if the configuration failed
    notes: list[str] = field(default_factory=list)
    sol_err: float | None = None  # max abs error of the outputs vs the float64 reference
    grad_err: float | None = None  # relative L2 error of the parameter gradient

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.times)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)


def _attempt(
    m: Measured,
    cfg: Config,
    fld: CountingField,
    y0: Tensor,
    t: Tensor,
    sync: Callable[[], None] = _no_sync,
) -> float | None:
    gc.collect()
    sync()  # nothing queued from before may count towards this run
    start = time.perf_counter()
    try:
        out = run_once(cfg, fld, y0, t)
        sync()  # the run ends when its kernels have finished, not when they are queued
    except Exception as exc:  # a failing library is reported, not hidden
        m.error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        return None
    elapsed = time.perf_counter() - start
    if m.outcome is None:
        m.outcome = out
    elif (out.nfe_fwd, out.nfe_bwd) != (m.outcome.nfe_fwd, m.outcome.nfe_bwd):
        m.notes.append(
            f"NFE changed between identical runs: {m.outcome.nfe_fwd}/{m.outcome.nfe_bwd} "
            f"then {out.nfe_fwd}/{out.nfe_bwd}"
        )
    return elapsed


def time_group(
    configs: dict[str, Config],
    fld: CountingField,
    y0: Tensor,
    t: Tensor,
    repeats: int,
    budget_s: float,
    ref_ys: Tensor,
    ref_grad: Tensor | None,
    call_timer: Callable[[], float] | None = None,
    call_samples: list[float] | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Measured]:
    """Warm up every configuration, then time them in turns (round robin) `repeats` times.

    Interleaving means slow drifts in machine load hit every configuration alike, so ratios
    from one group are comparable. A configuration whose warm-up takes longer than
    `budget_s / repeats` gets fewer timed runs (at least one), so the group stays in budget;
    one whose warm-up alone exceeds `budget_s` is timed by that run only (flagged in `notes`).
    With `call_timer`, three blocks of single vector-field calls are timed in every round too
    (appended to `call_samples`), so the per-call time sees the same load as the solves.

    `device` is where `fld`, `y0` and `t` live: on CUDA every run (warm-up included) is
    bracketed by `torch.cuda.synchronize()`. `ref_ys` and `ref_grad` may live on the CPU:
    outputs and gradients are compared after `.cpu()`.
    """
    sync = make_sync(device)
    results: dict[str, Measured] = {}
    for key, cfg in configs.items():
        m = Measured(key, cfg.label, cfg.needs_grad)
        m.warm_s = _attempt(m, cfg, fld, y0, t, sync) or 0.0
        results[key] = m
    wanted = {
        key: max(1, min(repeats, int(budget_s / max(m.warm_s, 1e-9)))) for key, m in results.items()
    }
    for m in results.values():
        if m.error is None and m.warm_s > budget_s:  # too slow to repeat: keep the warm-up run
            m.times.append(m.warm_s)
            m.notes.append(f"slower than the {budget_s:g} s budget: timed once, by the warm-up run")
    for _ in range(repeats):
        if call_timer is not None and call_samples is not None:
            call_samples += [call_timer() for _ in range(3)]
        for key, cfg in configs.items():
            m = results[key]
            if m.error is None and len(m.times) < wanted[key]:
                elapsed = _attempt(m, cfg, fld, y0, t, sync)
                if elapsed is not None:
                    m.times.append(elapsed)
    for m in results.values():
        if m.outcome is None:
            continue
        ys = m.outcome.ys.detach().double().cpu()  # (T, B, D)
        m.sol_err = float((ys - ref_ys.cpu()).abs().max())
        if m.outcome.grad is not None and ref_grad is not None:
            ref = ref_grad.cpu()
            m.grad_err = float((m.outcome.grad.cpu() - ref).norm() / ref.norm())
    return results
