"""Markdown tables for the solver benchmark report. Every number comes from the run's results."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch
from timing import Measured

__all__ = [
    "checks",
    "device_lines",
    "forward_table",
    "grad_table",
    "memory_summary",
    "memory_table",
    "table",
]

TD_FWD, TD_BP, TD_ADJ, TD_SEMI = (
    "torchdiffeq",
    "torchdiffeq-backprop",
    "torchdiffeq-adjoint",
    "torchdiffeq-adjoint-seminorm",
)


def device_lines(device: torch.device | str) -> list[str]:
    """Report-header lines naming the device the benchmark ran on.

    CPU: `- device: cpu`. CUDA: the GPU's name (`torch.cuda.get_device_name`), its memory and
    compute capability, the CUDA version torch was built with and the torch version. Only a
    CUDA device calls into `torch.cuda`.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return [f"- device: {dev.type}"]
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    name = torch.cuda.get_device_name(index)
    props = torch.cuda.get_device_properties(index)
    return [
        f"- device: cuda:{index}, {name} ({props.total_memory / 2**30:.0f} GiB, compute "
        f"capability {props.major}.{props.minor}); CUDA {torch.version.cuda} (torch "
        f"{torch.__version__}); {torch.cuda.device_count()} visible GPU(s)"
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table (first column left-aligned, the rest right-aligned)."""
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "---|" + "---:|" * (len(header) - 1))
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def sci(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _spread(m: Measured) -> str:
    if len(m.times) < 2:
        return f"n={len(m.times)}"
    return f"{min(m.times) * 1e3:.1f}-{max(m.times) * 1e3:.1f} (n={len(m.times)})"


def _speedup(res: dict[str, Measured], peer: str, m: Measured) -> float | None:
    p = res.get(peer)
    if p is None or not p.ok or not m.ok:
        return None
    return p.median_s / m.median_s


def _failed_row(m: Measured, width: int) -> list[str]:
    return [m.label, f"FAILED: {m.error}"] + ["-"] * (width - 2)


def forward_table(res: dict[str, Measured], t_call: float) -> list[str]:
    """Forward-only solves: wall, NFE, error, overhead ratio, speed-up over torchdiffeq."""
    header = [
        "configuration",
        "wall ms (median)",
        "min-max ms",
        "NFE",
        "max abs error",
        "overhead ratio",
        "speed-up vs torchdiffeq",
    ]
    rows = []
    for m in res.values():
        if not m.ok or m.outcome is None:
            rows.append(_failed_row(m, len(header)))
            continue
        nfe = m.outcome.nfe_fwd
        rows.append(
            [
                m.label,
                ms(m.median_s),
                _spread(m),
                str(nfe),
                sci(m.sol_err),
                f"{m.median_s / (nfe * t_call):.2f}",
                ratio(_speedup(res, TD_FWD, m)),
            ]
        )
    return table(header, rows)


def grad_table(res: dict[str, Measured]) -> list[str]:
    """Forward+backward solves: wall, NFE both ways, gradient error, speed-ups over torchdiffeq."""
    header = [
        "configuration",
        "wall ms (median)",
        "min-max ms",
        "NFE fwd",
        "NFE bwd",
        "grad rel. L2 error",
        "vs td backprop",
        "vs td adjoint",
        "vs td adjoint seminorm",
    ]
    rows = []
    for m in res.values():
        if not m.ok or m.outcome is None:
            rows.append(_failed_row(m, len(header)))
            continue
        rows.append(
            [
                m.label,
                ms(m.median_s),
                _spread(m),
                str(m.outcome.nfe_fwd),
                str(m.outcome.nfe_bwd),
                sci(m.grad_err),
                ratio(_speedup(res, TD_BP, m)),
                ratio(_speedup(res, TD_ADJ, m)),
                ratio(_speedup(res, TD_SEMI, m)),
            ]
        )
    return table(header, rows)


def memory_summary(probes: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Group probe results by (key, factor): median growth, spread, NFE, failures."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for p in probes:
        groups.setdefault((p["key"], p["factor"]), []).append(p)
    summary = {}
    for k, ps in groups.items():
        good = [p for p in ps if "error" not in p]
        if not good:
            summary[k] = {"error": ps[0]["error"]}
            continue
        growth = [p["growth_mib"] for p in good]
        summary[k] = {
            "growth": statistics.median(growth),
            "min": min(growth),
            "max": max(growth),
            "n": len(good),
            "nfe_fwd": good[0]["nfe_fwd"],
            "nfe_bwd": good[0]["nfe_bwd"],
            "max_step": good[0]["max_step"],
            "upper_bound": any(p["upper_bound"] for p in good),
            # RSS on the CPU, the CUDA allocator's live bytes on a GPU (see memory_probe.py)
            "before": statistics.median(
                p["rss_before_mib"] if "rss_before_mib" in p else p["allocated_before_mib"]
                for p in good
            ),
        }
    return summary


def memory_table(
    summary: dict[tuple[str, int], dict[str, Any]], labels: dict[str, str]
) -> list[str]:
    header = [
        "configuration",
        "steps factor",
        "max_step",
        "NFE fwd",
        "NFE bwd",
        "peak growth MiB (median)",
        "min-max MiB",
        "vs 1x",
    ]
    rows = []
    for (key, factor), s in summary.items():
        if "error" in s:
            rows.append([labels[key], f"{factor}x", f"FAILED: {s['error']}"] + ["-"] * 5)
            continue
        base = summary.get((key, 1), {}).get("growth")
        flag = " (upper bound)" if s["upper_bound"] else ""
        rows.append(
            [
                labels[key],
                f"{factor}x",
                f"{s['max_step']:.4g}",
                str(s["nfe_fwd"]),
                str(s["nfe_bwd"]),
                f"{s['growth']:.2f}{flag}",
                f"{s['min']:.2f}-{s['max']:.2f} (n={s['n']})",
                ratio(s["growth"] / base if base else None),
            ]
        )
    return table(header, rows)


def checks(fwd: dict[str, Measured], grad: dict[str, Measured]) -> list[str]:
    """Facts worth a second look: library-reported stats vs our counter, failures, statuses."""
    lines = []
    for m in [*fwd.values(), *grad.values()]:
        lines += [f"- {m.label}: {note}" for note in m.notes]
        if m.outcome is None:
            continue
        info = m.outcome.info
        if info.get("torchode_ok") is False:
            lines.append(f"- {m.label}: torchode status is not 0 (success) for every sample")
        stats = info.get("stats")
        if stats is not None:
            nfe, nfe_bwd = getattr(stats, "nfe", None), getattr(stats, "nfe_backward", None)
            acc, rej = getattr(stats, "n_accepted", None), getattr(stats, "n_rejected", None)
            same = nfe == m.outcome.nfe_fwd and (not m.needs_grad or nfe_bwd == m.outcome.nfe_bwd)
            lines.append(
                f"- {m.label}: SolveStats nfe={nfe}, nfe_backward={nfe_bwd}, accepted={acc}, "
                f"rejected={rej}; counted NFE {m.outcome.nfe_fwd}/{m.outcome.nfe_bwd} "
                f"({'consistent' if same else 'MISMATCH'})"
            )
    td, lo = fwd.get(TD_FWD), fwd.get("latentode")
    if td and lo and td.outcome and lo.outcome and td.sol_err and lo.sol_err is not None:
        nfe_ratio = lo.outcome.nfe_fwd / td.outcome.nfe_fwd
        lines.append(
            f"- forward: latentode / torchdiffeq NFE = {nfe_ratio:.2f}, "
            f"error ratio = {lo.sol_err / td.sol_err:.2f}"
        )
    return lines
