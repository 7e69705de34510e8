"""Peak-memory probe: one forward+backward solve in a fresh process, by peak RSS (or CUDA).

PyTorch keeps no allocator statistics on CPU, so each configuration runs in its own subprocess:

1. build the field and problem, run the same configuration once on a tiny problem (batch 1,
   a tenth of the span) so that lazy initialisation (kernels, autograd engine) is paid first;
2. reset the kernel's peak-RSS mark (write "5" to /proc/self/clear_refs, Linux >= 4.0) and read
   the resident set size `rss_before` (`VmRSS` in /proc/self/status);
3. run the measured solve + `sum(ys ** 2).backward()`;
4. peak growth = `VmHWM` (peak RSS since the reset) - `rss_before`.

`VmHWM` is used rather than `ru_maxrss`, which on Linux also carries the parent's peak across
fork + exec. If the reset is not permitted, the peak since process start is used and a growth
that does not exceed the warm-up's peak is flagged as an upper bound. Run as a script this
prints one JSON line; `measure` runs the probes from the parent process.

With `--device cuda` the field and problem live on the GPU and the CUDA caching allocator's own
statistics replace RSS (steps 2 and 4): after the warm-up, `torch.cuda.reset_peak_memory_stats()`
and `before = torch.cuda.memory_allocated()`; then peak growth = `torch.cuda.max_memory_allocated()
- before`, bytes held by live tensors at the peak (exact, no upper bound; the allocator's cached
but unused blocks do not count). Each probe still runs in a fresh process, so nothing from an
earlier configuration is cached.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from procmem import status_kib
from runners import Config, build_configs, run_once
from torch import Tensor
from workload import CountingField, make_field, make_problem

__all__ = ["BASE_STEPS", "measure"]

BASE_STEPS = 20  # max_step = t_end / (BASE_STEPS * factor)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _probe(key: str, batch: int, factor: int, t_end: float, device: str = "cpu") -> dict[str, Any]:
    dev = torch.device(device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    field = make_field(device=dev)
    max_step = t_end / (BASE_STEPS * factor)
    cfg = build_configs(field, (key,), max_step=max_step)[key]
    tiny_cfg = build_configs(field, (key,), max_step=t_end / BASE_STEPS)[key]
    y0_tiny, t_tiny = make_problem(1, t_end=t_end / 10, device=dev)
    run_once(tiny_cfg, field, y0_tiny, t_tiny)
    field.zero_grad(set_to_none=True)
    y0, t = make_problem(batch, t_end=t_end, device=dev)
    del y0_tiny, t_tiny
    gc.collect()
    result: dict[str, Any] = {
        "key": key,
        "batch": batch,
        "factor": factor,
        "max_step": max_step,
        "device": str(dev),
    }
    if dev.type == "cuda":
        return {**result, **_measure_cuda(cfg, field, y0, t, dev)}
    reset = _reset_peak()
    rss_before, peak_before = status_kib("VmRSS"), status_kib("VmHWM")
    start = time.perf_counter()
    out = run_once(cfg, field, y0, t)
    elapsed = time.perf_counter() - start
    peak_after = status_kib("VmHWM")
    return {
        **result,
        "nfe_fwd": out.nfe_fwd,
        "nfe_bwd": out.nfe_bwd,
        "rss_before_mib": rss_before / 1024,
        "growth_mib": (peak_after - rss_before) / 1024,
        "peak_reset": reset,
        "upper_bound": not reset and peak_after <= peak_before,
        "elapsed_s": elapsed,
    }


def _measure_cuda(
    cfg: Config, field: CountingField, y0: Tensor, t: Tensor, dev: torch.device
) -> dict[str, Any]:
    """Peak growth of the CUDA allocator's live bytes over one measured run (see the docstring)."""
    torch.cuda.synchronize(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    start = time.perf_counter()
    out = run_once(cfg, field, y0, t)
    torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev)
    return {
        "nfe_fwd": out.nfe_fwd,
        "nfe_bwd": out.nfe_bwd,
        "allocated_before_mib": before / 2**20,
        "growth_mib": (peak - before) / 2**20,
        "peak_reset": True,
        "upper_bound": False,
        "elapsed_s": elapsed,
    }


def _run_probe(
    key: str, batch: int, factor: int, t_end: float, timeout_s: float, device: str = "cpu"
) -> dict[str, Any]:
    script = str(Path(__file__).resolve())
    cmd = [sys.executable, script, key, str(batch), str(factor), str(t_end), "--device", device]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"key": key, "batch": batch, "factor": factor, "error": f"timeout {timeout_s:.0f}s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {"key": key, "batch": batch, "factor": factor, "error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(
    keys: tuple[str, ...],
    batch: int,
    factors: tuple[int, ...],
    repeats: tuple[int, ...],
    t_end: float,
    workers: int = 2,
    timeout_s: float = 600.0,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """Run every (key, factor) probe `repeats[i]` times (i: the factor's index).

    Probes run `workers` subprocesses at a time: peak RSS (and, on CUDA, the allocator's peak)
    is per process, so running them side by side does not change what each measures (only
    their wall time). `device` ("cpu", "cuda", "cuda:1", ...) is passed to every probe.
    """
    jobs = [
        (k, batch, f, t_end, timeout_s, str(device))
        for k in keys
        for f, n in zip(factors, repeats, strict=True)
        for _ in range(n)
    ]
    results: list[dict[str, Any]] = [{} for _ in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_probe, *job): i for i, job in enumerate(jobs)}
        for done, fut in enumerate(as_completed(futures), 1):
            res = results[futures[fut]] = fut.result()
            what = res.get("error") or f"{res['growth_mib']:.2f} MiB in {res['elapsed_s']:.0f} s"
            print(f"  probe {done}/{len(jobs)} {res['key']} x{res['factor']}: {what}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("key")
    parser.add_argument("batch", type=int)
    parser.add_argument("factor", type=int)
    parser.add_argument("t_end", type=float)
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS) or cuda[:N] (allocator)")
    args = parser.parse_args()
    print(json.dumps(_probe(args.key, args.batch, args.factor, args.t_end, args.device)))


if __name__ == "__main__":
    main()
