"""Round-robin wall-clock timing of solve configurations, with errors against references."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from runners import Config, Outcome, run_once
from torch import Tensor
from workload import CountingField

__all__ = ["Measured", "time_group"]


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


def _attempt(m: Measured, cfg: Config, fld: CountingField, y0: Tensor, t: Tensor) -> float | None:
    gc.collect()
    start = time.perf_counter()
    try:
        out = run_once(cfg, fld, y0, t)
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
) -> dict[str, Measured]:
    """Warm up every configuration, then time them in turns (round robin) `repeats` times.

    Interleaving means slow drifts in machine load hit every configuration alike, so ratios
    from one group are comparable. A configuration whose warm-up takes longer than
    `budget_s / repeats` gets fewer timed runs (at least one), so the group stays in budget;
    one whose warm-up alone exceeds `budget_s` is timed by that run only (flagged in `notes`).
    With `call_timer`, three blocks of single vector-field calls are timed in every round too
    (appended to `call_samples`), so the per-call time sees the same load as the solves.
    """
    results: dict[str, Measured] = {}
    for key, cfg in configs.items():
        m = Measured(key, cfg.label, cfg.needs_grad)
        m.warm_s = _attempt(m, cfg, fld, y0, t) or 0.0
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
                elapsed = _attempt(m, cfg, fld, y0, t)
                if elapsed is not None:
                    m.times.append(elapsed)
    for m in results.values():
        if m.outcome is None:
            continue
        m.sol_err = float((m.outcome.ys.double() - ref_ys).abs().max())
        if m.outcome.grad is not None and ref_grad is not None:
            m.grad_err = float((m.outcome.grad - ref_grad).norm() / ref_grad.norm())
    return results
