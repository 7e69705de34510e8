"""The issue's targets, evaluated from the measured results (nothing here is hard-coded)."""

from __future__ import annotations

from typing import Any

from report import ms, ratio, sci
from timing import Measured

__all__ = ["GPU_FORWARD_SPEEDUP", "GPU_TARGET_BATCH", "gpu_target_rows", "target_rows"]

# The GPU target (CUDA runs only): at least 2x torchdiffeq's throughput on the solver
# workload at batch 256, i.e. a forward solve of the same batch in at most half the time.
GPU_TARGET_BATCH = 256
GPU_FORWARD_SPEEDUP = 2.0


def _speed(res: dict[str, Measured], peer: str, key: str) -> float | None:
    a, b = res.get(peer), res.get(key)
    return a.median_s / b.median_s if a and b and a.ok and b.ok else None


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _err_ok(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a <= b


def target_rows(
    runs: dict[int, dict[str, dict[str, Measured]]],
    batch_sizes: tuple[int, int],
    t_calls: dict[int, float],
    mem: dict[tuple[str, int], dict[str, Any]],
    mem_factors: tuple[int, ...],
) -> list[list[str]]:
    """Each target of the issue: what was measured, the threshold, whether it is met.

    Args:
        runs: batch size -> {"fwd": ..., "grad": ...} timing results of that batch size.
        batch_sizes: (large, small); the forward targets are 1.5x at large, 3x at small.
        t_calls: batch size -> seconds of one vector-field call (for the overhead ratio).
        mem: memory summary keyed by (configuration, steps factor).
        mem_factors: the steps factors of the memory sweep.

    Returns:
        Rows of [target, measured, threshold, result].
    """
    big, small = batch_sizes
    rows = []
    for b, need in ((big, 1.5), (small, 3.0)):
        fwd = runs[b]["fwd"]
        s = _speed(fwd, "torchdiffeq", "latentode")
        lo, td = fwd.get("latentode"), fwd.get("torchdiffeq")
        e_ok = _err_ok(lo and lo.sol_err, td and td.sol_err)
        ok = None if s is None or e_ok is None else (s >= need and e_ok)
        errs = f"error {sci(lo and lo.sol_err)} vs {sci(td and td.sol_err)}"
        rows.append(
            [
                f"forward vs torchdiffeq, batch {b}",
                f"{ratio(s)}; {errs}",
                f">= {need}x, error <= torchdiffeq's",
                _verdict(ok),
            ]
        )
    lo = runs[big]["fwd"].get("latentode")
    over = (
        lo.median_s / (lo.outcome.nfe_fwd * t_calls[big]) if lo and lo.ok and lo.outcome else None
    )
    rows.append(
        [
            f"forward overhead ratio, batch {big}",
            "-" if over is None else f"{over:.2f}",
            "<= 1.3",
            _verdict(None if over is None else over <= 1.3),
        ]
    )
    for b in (big, small):
        g = runs[b]["grad"]
        s = _speed(g, "torchdiffeq-adjoint-seminorm", "latentode-adjoint")
        la, ts = g.get("latentode-adjoint"), g.get("torchdiffeq-adjoint-seminorm")
        e_ok = _err_ok(la and la.grad_err, ts and ts.grad_err)
        ok = None if s is None or e_ok is None else (s >= 3.0 and e_ok)
        errs = f"grad error {sci(la and la.grad_err)} vs {sci(ts and ts.grad_err)}"
        rows.append(
            [
                f"backsolve adjoint vs td adjoint seminorm, batch {b}",
                f"{ratio(s)}; {errs}",
                ">= 3x, grad error <= torchdiffeq's",
                _verdict(ok),
            ]
        )
    for b in (big, small):
        g = runs[b]["grad"]
        s_adj = _speed(g, "torchdiffeq-adjoint", "latentode-checkpoint")
        s_bp = _speed(g, "torchdiffeq-backprop", "latentode-checkpoint")
        ok = None if s_adj is None or s_bp is None else (s_adj >= 8.0 and s_bp >= 1.0)
        rows.append(
            [
                f"checkpoint vs td adjoint / td backprop, batch {b}",
                f"{ratio(s_adj)} / {ratio(s_bp)}",
                ">= 8x / >= 1.0x",
                _verdict(ok),
            ]
        )
    rows.append(_memory_row(mem, max(mem_factors)))
    return rows


def _memory_row(mem: dict[tuple[str, int], dict[str, Any]], top: int) -> list[str]:
    """latentode adjoint: median peak growth at `top`x steps over that at 1x."""
    lo1, lo_top = mem.get(("latentode-adjoint", 1), {}), mem.get(("latentode-adjoint", top), {})
    growth = (lo_top["growth"] / lo1["growth"]) if "growth" in lo1 and "growth" in lo_top else None
    detail = "-"
    if growth is not None:
        detail = (
            f"{lo1['growth']:.2f} -> {lo_top['growth']:.2f} MiB ({growth:.2f}x; spread over "
            f"processes: {lo1['min']:.2f}-{lo1['max']:.2f} at 1x, {lo_top['min']:.2f}-"
            f"{lo_top['max']:.2f} at {top}x; NFE {lo1['nfe_fwd']}/{lo1['nfe_bwd']} -> "
            f"{lo_top['nfe_fwd']}/{lo_top['nfe_bwd']})"
        )
    return [
        f"latentode adjoint peak memory, steps x{top}",
        detail,
        "<= 1.10x",
        _verdict(None if growth is None else growth <= 1.10),
    ]


def gpu_target_rows(runs: dict[int, dict[str, dict[str, Measured]]]) -> list[list[str]]:
    """The issue's GPU target, for CUDA runs: forward throughput vs torchdiffeq at batch 256.

    Throughput is samples per second of the forward solve; both libraries solve the same batch,
    so the throughput ratio is torchdiffeq's median wall time over latentode's. Both errors
    against the float64 reference are shown; the verdict is on the ratio alone.

    Args:
        runs: batch size -> {"fwd": ..., "grad": ...} timing results measured on the GPU.

    Returns:
        One row of [target, measured, threshold, result] ("not measured" without batch 256).
    """
    fwd = runs.get(GPU_TARGET_BATCH, {}).get("fwd", {})
    s = _speed(fwd, "torchdiffeq", "latentode")
    lo, td = fwd.get("latentode"), fwd.get("torchdiffeq")
    detail = "-"
    if s is not None and lo is not None and td is not None:
        detail = (
            f"{ratio(s)} ({ms(lo.median_s)} ms vs torchdiffeq {ms(td.median_s)} ms per solve); "
            f"error {sci(lo.sol_err)} vs {sci(td.sol_err)}"
        )
    return [
        [
            f"GPU: forward throughput vs torchdiffeq, batch {GPU_TARGET_BATCH}",
            detail,
            f">= {GPU_FORWARD_SPEEDUP:g}x",
            _verdict(None if s is None else s >= GPU_FORWARD_SPEEDUP),
        ]
    ]
