"""Peak-memory probe: one forward+backward solve in a fresh process, measured by peak RSS.

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
from runners import build_configs, run_once
from workload import make_field, make_problem

__all__ = ["BASE_STEPS", "measure"]

BASE_STEPS = 20  # max_step = t_end / (BASE_STEPS * factor)


def _status_kib(field: str) -> int:
    """A memory field of /proc/self/status (`VmRSS`, `VmHWM`) in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _probe(key: str, batch: int, factor: int, t_end: float) -> dict[str, Any]:
    torch.set_num_threads(1)
    field = make_field()
    max_step = t_end / (BASE_STEPS * factor)
    cfg = build_configs(field, (key,), max_step=max_step)[key]
    tiny_cfg = build_configs(field, (key,), max_step=t_end / BASE_STEPS)[key]
    y0_tiny, t_tiny = make_problem(1, t_end=t_end / 10)
    run_once(tiny_cfg, field, y0_tiny, t_tiny)
    field.zero_grad(set_to_none=True)
    y0, t = make_problem(batch, t_end=t_end)
    del y0_tiny, t_tiny
    gc.collect()
    reset = _reset_peak()
    rss_before, peak_before = _status_kib("VmRSS"), _status_kib("VmHWM")
    start = time.perf_counter()
    out = run_once(cfg, field, y0, t)
    elapsed = time.perf_counter() - start
    peak_after = _status_kib("VmHWM")
    return {
        "key": key,
        "batch": batch,
        "factor": factor,
        "max_step": max_step,
        "nfe_fwd": out.nfe_fwd,
        "nfe_bwd": out.nfe_bwd,
        "rss_before_mib": rss_before / 1024,
        "growth_mib": (peak_after - rss_before) / 1024,
        "peak_reset": reset,
        "upper_bound": not reset and peak_after <= peak_before,
        "elapsed_s": elapsed,
    }


def _run_probe(key: str, batch: int, factor: int, t_end: float, timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), key, str(batch), str(factor), str(t_end)]
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
) -> list[dict[str, Any]]:
    """Run every (key, factor) probe `repeats[i]` times (i: the factor's index).

    Probes run `workers` subprocesses at a time: peak RSS is per process, so running them side
    by side does not change what each measures (only their wall time).
    """
    jobs = [
        (k, batch, f, t_end, timeout_s)
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
    args = parser.parse_args()
    print(json.dumps(_probe(args.key, args.batch, args.factor, args.t_end)))


if __name__ == "__main__":
    main()
