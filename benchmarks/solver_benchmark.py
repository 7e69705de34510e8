"""Speed and memory of latentode's ODE solver core against torchdiffeq and torchode.

Usage:

    python benchmarks/solver_benchmark.py --output reports/solver_benchmark.md   # ~10 min
    python benchmarks/solver_benchmark.py --quick --output /tmp/smoke.md         # ~1 min smoke run
    python benchmarks/solver_benchmark.py --device cuda  # GPU: reports/solver_benchmark_cuda.md

Workload and method are described in the report it writes (see `workload.py` for the field).
Timings are medians of interleaved repeats after a warm-up, single-threaded on the CPU (on CUDA
each timed run ends with `torch.cuda.synchronize()`); every ratio in the report compares numbers
measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import memory_probe
import report
import torch
import torchdiffeq
from runners import FORWARD_KEYS, GRAD_KEYS, LABELS, build_configs, import_latentode
from targets import gpu_target_rows, target_rows
from timing import Measured, make_sync, parse_device, time_group
from workload import (
    ATOL,
    BATCH_SIZES,
    MLP_SCALE,
    N_OUT,
    OMEGA_MAX,
    OMEGA_MIN,
    REPO_ROOT,
    RTOL,
    SEED,
    T_END,
    make_call_timer,
    make_field,
    make_problem,
    reference_gradient,
    reference_solution,
)

try:  # a benchmark-only extra: without it the other libraries are still benchmarked
    import torchode
except ImportError:
    torchode = None

LIBRARIES = ("latentode", "torchdiffeq", "torchode")
MEMORY_KEYS = (
    "latentode-adjoint",
    "latentode-checkpoint",
    "latentode-backprop",
    "torchdiffeq-backprop",
    "torchdiffeq-adjoint",
)


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats of one benchmark run."""

    batch_sizes: tuple[int, int]  # (large, small): the targets refer to these two
    t_end: float
    fwd_repeats: int
    grad_repeats: int
    budget_s: float  # timed seconds allowed per configuration and batch size
    mem_batch: int
    mem_factors: tuple[int, ...]
    mem_repeats: tuple[int, ...]  # fresh processes per steps factor
    mem_t_end: float
    ref_check: bool  # cross-check the reference gradient with a second method
    skip_large: tuple[str, ...] = ()  # configurations not run at the large batch size
    mem_keys: tuple[str, ...] = MEMORY_KEYS


FULL = Settings(
    batch_sizes=BATCH_SIZES,
    t_end=T_END,
    fwd_repeats=11,
    grad_repeats=5,
    budget_s=15.0,
    mem_batch=256,  # big enough that tensors, not allocator slack, dominate the 1x baseline
    mem_factors=(1, 10, 100),
    mem_repeats=(4, 2, 1),
    mem_t_end=T_END / 4,
    ref_check=True,
)
QUICK = Settings(
    batch_sizes=BATCH_SIZES,
    t_end=T_END / 4,
    fwd_repeats=3,
    grad_repeats=2,
    budget_s=1.0,
    mem_batch=16,
    mem_factors=(1, 10),
    mem_repeats=(1, 1),
    mem_t_end=T_END / 4,
    ref_check=False,
    skip_large=("torchode-backsolve-I",),
    mem_keys=("latentode-adjoint", "torchdiffeq-backprop"),
)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT).stdout.strip()
    except OSError:
        return ""


def default_output(device: torch.device | str) -> Path:
    """The report's default path: the CPU report, or a separate one per device type (CUDA)."""
    kind = torch.device(device).type
    return Path(
        "reports/solver_benchmark.md" if kind == "cpu" else f"reports/solver_benchmark_{kind}.md"
    )


def environment(
    argv: list[str],
    settings: Settings,
    with_latentode: bool,
    device: torch.device | str = "cpu",
) -> list[str]:
    """Header lines: command, date, versions, device, CPU, threads, git state."""
    lscpu = _run(["lscpu"])
    model = next(
        (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln), "-"
    )
    commit = _run(["git", "rev-parse", "--short", "HEAD"]) or "-"
    solver_dirty = _run(["git", "status", "--porcelain", "--", "latentode/solver"])
    dirty = "uncommitted changes" if solver_dirty else "no uncommitted changes"
    lo_version = "not run"
    if with_latentode:
        lo_version = getattr(import_latentode(), "__version__", "this checkout")
    td_version = torchode.__version__ if torchode is not None else "not installed"
    threads = f"{torch.get_num_threads()} (`torch.set_num_threads(1)`)"
    if torch.device(device).type != "cpu":
        threads = f"{torch.get_num_threads()} (host side; not limited on a {device} run)"
    mode = "full"
    if settings is QUICK:
        mode = "--quick (smoke run: a quarter of the span, fewer repeats, smaller memory sweep)"
    return [
        f"- command: `{shlex.join(['python', *argv])}` (interpreter `{sys.executable}`)",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- git: {commit}, {dirty} under latentode/solver",
        f"- torch {torch.__version__}, torchdiffeq {torchdiffeq.__version__}, "
        f"torchode {td_version}, latentode {lo_version}, "
        f"Python {platform.python_version()}",
        *report.device_lines(device),
        f"- CPU: {model} (platform.processor: `{platform.processor() or '-'}`), "
        f"{platform.machine()}, os.cpu_count() = {os.cpu_count()}",
        f"- torch threads: {threads}",
        f"- mode: {mode}",
    ]


def method_lines(
    settings: Settings,
    t_calls: dict[int, float],
    ref_check: float | None,
    device: torch.device | str = "cpu",
) -> list[str]:
    """The report's Method section (workload, measurements, references) as markdown bullets."""
    big, small = settings.batch_sizes
    lines = [
        f"- Vector field: `f(t, y) = {MLP_SCALE} * MLP(y) + y @ A`, MLP = Linear(16, 64)-Tanh-"
        "Linear(64, 64)-Tanh-Linear(64, 16) (default init under `torch.manual_seed("
        f"{SEED})`), `A` block-diagonal skew-symmetric: eight 2x2 rotations with angular "
        f"frequencies linspace({OMEGA_MIN}, {OMEGA_MAX}). The rotation keeps the state "
        "oscillating (a steady number of steps per unit time); the scaled MLP makes it nonlinear.",
        f"- Problem: float32, y0 ~ N(0, I) (seeded), batch {big} and {small}, {N_OUT} equally "
        f"spaced output times on [0, {settings.t_end:g}], dopri5, rtol {RTOL:g}, atol {ATOL:g}; "
        "adjoints use the same tolerances backwards. torchode gets the grid as per-sample `t_eval` "
        "[B, T] and runs eagerly (no `torch.compile` / JIT).",
        "- NFE: calls of the vector-field module, counted by the module itself, identical for "
        "every library (one call evaluates the whole batch). 'NFE bwd' counts calls during "
        "backward.",
        "- Wall time: median of interleaved repeats after one warm-up run per configuration; a "
        f"configuration gets fewer repeats when its runs exceed the {settings.budget_s:g} s "
        "budget (n in the tables). Forward+backward times include `sum(ys ** 2).backward()`.",
        "- Solution error: max abs difference over all outputs from torchdiffeq dopri5 in float64 "
        "at rtol = atol = 1e-10.",
        "- Gradient error: relative L2 error of the MLP-parameter gradient of `sum(ys ** 2)` "
        "against torchdiffeq backprop in float64 at rtol = atol = 1e-9.",
        "- Overhead ratio: wall / (NFE x one vector-field call at that batch size); the call is "
        "timed alone (no grad; blocks of 50 calls, three blocks between every round of the "
        f"forward solves, median of {3 * settings.fwd_repeats} blocks): "
        + ", ".join(f"batch {b}: {t * 1e6:.1f} us" for b, t in t_calls.items())
        + ". 1.0 would mean the solver costs nothing beyond its function evaluations.",
    ]
    if torch.device(device).type == "cuda":
        lines.append(
            f"- Device: field, y0 and t live on `{device}` (the same tensors for every library); "
            "each timed run (and each block of vector-field calls) is bracketed by "
            "`torch.cuda.synchronize()`, so the clock stops when the GPU has finished. The "
            "float64 references are computed on the CPU; outputs and gradients are compared "
            "after `.cpu()`."
        )
    if ref_check is not None:
        lines.append(
            f"- Reference check (batch {small}): torchdiffeq seminorm adjoint in float64 at 1e-9 "
            f"differs from the reference gradient by {ref_check:.1e} (relative L2)."
        )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; `--output` defaults to a per-device path (`default_output`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report path (default: reports/solver_benchmark.md on the CPU, "
        "reports/solver_benchmark_cuda.md with --device cuda)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: smaller, fewer repeats")
    parser.add_argument(
        "--libs",
        default=None,
        help="comma-separated subset of latentode,torchdiffeq,torchode (default: all three; "
        "torchode is left out, and the header says so, when it is not installed)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory sweep")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the field, y0 and t live: cpu (default, one thread) or cuda[:N]",
    )
    args = parser.parse_args(argv)
    device = parse_device(parser, args.device)
    if args.output is None:
        args.output = default_output(device)
    if args.libs is None:
        args.libs = ",".join(lib for lib in LIBRARIES if lib != "torchode" or torchode is not None)
    unknown = set(args.libs.split(",")) - set(LIBRARIES)
    if unknown:
        parser.error(f"--libs: unknown {', '.join(sorted(unknown))}")
    if "torchode" in args.libs.split(",") and torchode is None:
        parser.error("--libs names torchode, which is not installed")
    return args


@dataclass
class Timings:
    """Timing results: per batch size the forward and forward+backward groups."""

    runs: dict[int, dict[str, dict[str, Measured]]]
    t_calls: dict[int, float]  # seconds of one vector-field call, per batch size
    ref_check: float | None  # reference gradient cross-check (relative L2), if run


def measure_timings(
    settings: Settings,
    fwd_keys: tuple[str, ...],
    grad_keys: tuple[str, ...],
    start: float,
    device: torch.device | str = "cpu",
) -> Timings:
    """References, then the forward and forward+backward groups at each batch size.

    The field and problem live on `device`; the float64 references are computed on the CPU.
    """
    field = make_field(device=device)
    out = Timings({}, {}, None)
    for b in settings.batch_sizes:
        print(f"{time.perf_counter() - start:6.1f} s  [batch {b}] references", flush=True)
        ref_ys = reference_solution(b, settings.t_end)
        check = settings.ref_check and b == settings.batch_sizes[1]
        ref_grad, rc = reference_gradient(b, settings.t_end, adjoint_check=check)
        out.ref_check = rc if rc is not None else out.ref_check
        y0, t = make_problem(b, t_end=settings.t_end, device=device)
        configs = build_configs(field, fwd_keys + grad_keys)
        skip = settings.skip_large if b == settings.batch_sizes[0] else ()
        fwd_cfgs = {k: configs[k] for k in fwd_keys}
        grad_cfgs = {k: configs[k] for k in grad_keys if k not in skip}
        print(f"{time.perf_counter() - start:6.1f} s  [batch {b}] forward", flush=True)
        samples: list[float] = []
        fwd = time_group(
            fwd_cfgs,
            field,
            y0,
            t,
            settings.fwd_repeats,
            settings.budget_s,
            ref_ys,
            None,
            call_timer=make_call_timer(b, device=device, sync=make_sync(device)),
            call_samples=samples,
            device=device,
        )
        out.t_calls[b] = statistics.median(samples)
        print(f"{time.perf_counter() - start:6.1f} s  [batch {b}] forward+backward", flush=True)
        grad = time_group(
            grad_cfgs,
            field,
            y0,
            t,
            settings.grad_repeats,
            settings.budget_s,
            ref_ys,
            ref_grad,
            device=device,
        )
        out.runs[b] = {"fwd": fwd, "grad": grad}
    return out


def render(
    header: list[str],
    settings: Settings,
    tm: Timings,
    mem: dict[tuple[str, int], dict[str, Any]],
    device: torch.device | str = "cpu",
) -> list[str]:
    """The report's markdown lines (on CUDA with the issue's GPU target first among the targets)."""
    big, small = settings.batch_sizes
    on_gpu = torch.device(device).type == "cuda"
    title = "# Solver benchmark: latentode vs torchdiffeq vs torchode"
    lines = [title + (f" on {device}" if on_gpu else ""), "", *header, ""]
    lines += ["## Method", "", *method_lines(settings, tm.t_calls, tm.ref_check, device), ""]
    for b in settings.batch_sizes:
        lines += [f"## (a) Forward only, batch {b}", ""]
        lines += [*report.forward_table(tm.runs[b]["fwd"], tm.t_calls[b]), ""]
    for b in settings.batch_sizes:
        lines += [f"## (b)-(d) Forward + backward, batch {b}", ""]
        lines += [
            "Backprop through the solver, backsolve adjoints (c) and latentode's checkpointed "
            "adjoint (d). 'vs td ...' = that torchdiffeq configuration's median wall / this "
            "row's (above 1 = faster than torchdiffeq).",
            "",
        ]
        lines += [*report.grad_table(tm.runs[b]["grad"]), ""]
    if mem:
        lines += memory_lines(settings, mem, device)
    rows = target_rows(tm.runs, settings.batch_sizes, tm.t_calls, mem, settings.mem_factors)
    if on_gpu:
        rows = gpu_target_rows(tm.runs) + rows
    lines += ["## Targets", ""]
    lines += [*report.table(["target", "measured", "threshold", "result"], rows), ""]
    if on_gpu:
        lines += [
            "The first row is the issue's GPU target (CUDA runs only). The other rows are the "
            "issue's CPU targets, evaluated on this GPU run for information.",
            "",
        ]
    lines += [
        f"Targets use batch {big} and {small}"
        + (" (quick run: a quarter of the span, fewer repeats)." if settings is QUICK else "."),
        "Speed-ups are ratios of medians measured in this run.",
        "",
        "## Notes and consistency checks",
        "",
    ]
    for b in settings.batch_sizes:
        found = report.checks(tm.runs[b]["fwd"], tm.runs[b]["grad"])
        lines += [f"- batch {b}:"] + ["  " + ln for ln in found]
    analysis = Path(__file__).with_name("solver_benchmark_analysis.md")
    if analysis.is_file():
        lines += ["", analysis.read_text().rstrip()]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the report (see the module docstring)."""
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    libs = set(args.libs.split(","))
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    start, load0 = time.perf_counter(), os.getloadavg()[0]
    keep = lambda keys: tuple(k for k in keys if k.split("-")[0] in libs)  # noqa: E731
    header = environment(
        sys.argv if argv is None else [sys.argv[0], *argv], settings, "latentode" in libs, device
    )
    if torchode is None:
        header.append("- torchode: not installed, left out of this run")
    tm = measure_timings(settings, keep(FORWARD_KEYS), keep(GRAD_KEYS), start, device)
    mem: dict[tuple[str, int], dict[str, Any]] = {}
    mem_keys = keep(settings.mem_keys)
    if not args.no_memory and mem_keys:
        print(f"{time.perf_counter() - start:6.1f} s  [memory] probes", flush=True)
        probes = memory_probe.measure(
            mem_keys,
            settings.mem_batch,
            settings.mem_factors,
            settings.mem_repeats,
            settings.mem_t_end,
            device=device,
        )
        mem = report.memory_summary(probes)
    header.append(f"- benchmark wall time: {time.perf_counter() - start:.0f} s")
    header.append(
        f"- load average (1 min) at start / end: {load0:.1f} / {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs (other work shares the machine; hence medians, interleaving)"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(render(header, settings, tm, mem, device)))
    print(f"wrote {args.output} in {time.perf_counter() - start:.0f} s")


def memory_lines(
    settings: Settings,
    mem: dict[tuple[str, int], dict[str, Any]],
    device: torch.device | str = "cpu",
) -> list[str]:
    """The peak-memory section: workload, method (RSS on the CPU, allocator on CUDA), table."""
    factors = ", ".join(f"{f}x" for f in settings.mem_factors)
    method = (
        "Method: PyTorch keeps no allocator statistics on CPU, so each row runs in a fresh "
        "subprocess: after a warm-up solve on a tiny problem (batch 1, a tenth of the span) it "
        "resets the kernel's peak-RSS mark (`/proc/self/clear_refs`), reads the resident set "
        "size (`VmRSS`), runs the measured solve and backward pass, and reports the peak RSS "
        "since the reset (`VmHWM`) minus `VmRSS` before: the peak growth, which includes memory "
        "the allocator holds but has not returned to the system. 'upper bound' marks rows where "
        "the reset was not permitted. Each row is the median of n fresh processes, run two at a "
        "time (peak RSS is per process); the min-max column shows their spread, i.e. the "
        "resolution of the method."
    )
    if torch.device(device).type == "cuda":
        method = (
            f"Method (on `{device}`): each row runs in a fresh subprocess with the field and "
            "problem on the GPU: after a warm-up solve on a tiny problem (batch 1, a tenth of the "
            "span) it calls `torch.cuda.reset_peak_memory_stats()`, reads "
            "`torch.cuda.memory_allocated()`, runs the measured solve and backward pass, and "
            "reports `torch.cuda.max_memory_allocated()` minus the allocated bytes before: the "
            "peak growth of memory held by live tensors (the caching allocator's unused cached "
            "blocks do not count; host memory is not measured). Each row is the median of n "
            "fresh processes, run two at a time (allocator statistics are per process); the "
            "min-max column shows their spread."
        )
    return [
        f"## Peak memory as the number of steps grows ({factors})",
        "",
        f"Batch {settings.mem_batch}, the same field, tolerances and {N_OUT} output times, on "
        f"[0, {settings.mem_t_end:g}] (shorter than the timing span, to keep the 100x runs "
        f"short), forward + backward of `sum(ys ** 2)`. Steps are forced by `max_step = "
        f"{settings.mem_t_end:g} / ({memory_probe.BASE_STEPS} x factor)` (also in the adjoint's "
        "backward solve, via `adjoint_options`), so the span, the outputs and the trajectory "
        "stay fixed while the step count grows with the factor (see the NFE columns).",
        "",
        method,
        "",
        *report.memory_table(mem, LABELS),
        "",
    ]


if __name__ == "__main__":
    main()
