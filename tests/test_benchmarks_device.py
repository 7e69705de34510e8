"""Device plumbing of the benchmarks (issue 6, GPU readiness), checked without a GPU.

`benchmarks/solver_benchmark.py` and `benchmarks/latent_ode_step.py` take `--device cuda`. Here
the CPU path runs for real (each script's quick mode in a subprocess, writing to a temporary
path), and the CUDA branches are checked with fakes of the `torch.cuda` functions they call:
the timing helper synchronises only for CUDA, the memory probe reads the allocator and gets the
device passed through its subprocess, and the reports name the device and, on CUDA, the GPU
target. torchdiffeq and torchode are benchmark-only extras: without them this module is skipped.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
import torch

pytest.importorskip("torchdiffeq")
pytest.importorskip("torchode")

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _bench(name: str) -> ModuleType:
    """A module of benchmarks/ by name (not a package: the scripts run with it on sys.path)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


QUICK_ARGS = {  # each script's quick mode on the CPU
    "solver_benchmark.py": ["--quick", "--no-memory", "--libs", "latentode,torchdiffeq"],
    "latent_ode_step.py": ["--pretrain", "0", "--repeats", "1", "--batch", "2"],
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str, Path]]:
    """Both scripts' quick modes, started side by side (each single-threaded) from the root.

    Returns, per script, its exit code, the end of its stderr and the report it wrote.
    """
    tmp = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = {}
    for script, args in QUICK_ARGS.items():
        out = tmp / script.replace(".py", ".md")
        cmd = [sys.executable, str(BENCH / script), *args, "--output", str(out)]
        procs[script] = (
            subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            ),
            out,
        )
    results = {}
    for script, (proc, out) in procs.items():
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        results[script] = (proc.returncode, err[-2000:], out)
    return results


class FakeCuda:
    """Records calls of the patched `torch.cuda` functions; fakes the allocator's statistics."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.allocated = 1 << 20  # bytes "in use" before the measured run
        self.peak = 3 << 20
        for name in ("synchronize", "reset_peak_memory_stats"):
            monkeypatch.setattr(torch.cuda, name, self._recorder(name))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: self.peak)

    def _recorder(self, name: str):
        def record(device: object = None) -> None:
            self.calls.append(name)

        return record

    def count(self, name: str) -> int:
        return self.calls.count(name)


def _tiny_problem(workload: ModuleType, batch: int = 2, t_end: float = 0.5):
    field = workload.make_field()
    y0, t = workload.make_problem(batch, t_end=t_end)
    return field, y0, t, workload.reference_solution(batch, t_end)


# --- timing: synchronise only on CUDA --------------------------------------------------------


def test_make_sync_synchronises_only_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    timing = _bench("timing")
    fake = FakeCuda(monkeypatch)
    timing.make_sync("cpu")()
    timing.make_sync(torch.device("cpu"))()
    assert fake.calls == []
    timing.make_sync("cuda")()
    timing.make_sync(torch.device("cuda", 0))()
    assert fake.count("synchronize") == 2


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_time_group_brackets_every_run_on_cuda(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    """Warm-up and each timed run: one sync before the clock starts, one before it stops.

    The tensors stay on the CPU; only `device` says CUDA, so the fake sees what a GPU run does.
    """
    timing, runners, workload = _bench("timing"), _bench("runners"), _bench("workload")
    fake = FakeCuda(monkeypatch)
    field, y0, t, ref = _tiny_problem(workload)
    configs = runners.build_configs(field, ("torchdiffeq",))
    res = timing.time_group(configs, field, y0, t, 2, 60.0, ref, None, device=device)
    m = res["torchdiffeq"]
    assert m.ok and len(m.times) == 2
    assert m.sol_err is not None and m.sol_err < 1e-2
    assert fake.count("synchronize") == (2 * (1 + 2) if device == "cuda" else 0)


def test_call_timer_uses_the_sync_it_is_given() -> None:
    workload = _bench("workload")
    calls: list[int] = []
    block = workload.make_call_timer(2, n_inner=2, sync=lambda: calls.append(1))
    assert len(calls) == 2 * 3  # three warm-up blocks
    assert block() > 0
    assert len(calls) == 2 * 4


# --- memory probe: allocator statistics on CUDA, device passed to the subprocess -------------


def test_memory_probe_cuda_branch_reads_the_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    memory_probe, runners, workload = (
        _bench("memory_probe"),
        _bench("runners"),
        _bench("workload"),
    )
    fake = FakeCuda(monkeypatch)
    field, y0, t, _ = _tiny_problem(workload)
    cfg = runners.build_configs(field, ("latentode-adjoint",))["latentode-adjoint"]
    out = memory_probe._measure_cuda(cfg, field, y0, t, torch.device("cuda"))
    assert out["growth_mib"] == pytest.approx(2.0)
    assert out["allocated_before_mib"] == pytest.approx(1.0)
    assert out["nfe_bwd"] > 0 and not out["upper_bound"]
    assert fake.count("reset_peak_memory_stats") == 1
    assert fake.count("synchronize") == 2
    summary = _bench("report").memory_summary(
        [{"key": "latentode-adjoint", "factor": 1, "max_step": 0.1, **out}]
    )
    assert summary[("latentode-adjoint", 1)]["growth"] == pytest.approx(2.0)


def test_memory_probe_passes_the_device_to_its_subprocess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memory_probe = _bench("memory_probe")
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(cmd)
        i = cmd.index("--device")
        line = json.dumps({"key": cmd[2], "factor": int(cmd[4]), "device": cmd[i + 1]})
        return subprocess.CompletedProcess(cmd, 0, stdout=line + "\n", stderr="")

    monkeypatch.setattr(memory_probe.subprocess, "run", fake_run)
    res = memory_probe._run_probe("latentode-adjoint", 16, 10, 5.0, 60.0, "cuda")
    assert res["device"] == "cuda"
    assert seen[-1][-2:] == ["--device", "cuda"]


def test_memory_probe_cpu_subprocess() -> None:
    """One real probe in a fresh process on the CPU: the RSS path still works end to end."""
    memory_probe = _bench("memory_probe")
    (res,) = memory_probe.measure(
        ("latentode-adjoint",), 4, (1,), (1,), 0.5, workers=1, timeout_s=120, device="cpu"
    )
    assert "error" not in res, res
    assert res["device"] == "cpu" and "rss_before_mib" in res and res["nfe_bwd"] > 0


# --- reports: the device in the header, per-device paths, the GPU target ---------------------


def test_device_lines_name_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    report = _bench("report")

    def no_cuda(*args: object) -> None:
        raise AssertionError("the CPU path must not call torch.cuda")

    monkeypatch.setattr(torch.cuda, "get_device_name", no_cuda)
    assert report.device_lines("cpu") == ["- device: cpu"]
    props = SimpleNamespace(total_memory=80 * 2**30, major=9, minor=0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA Fake H100")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=None: props)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    (line,) = report.device_lines("cuda:0")
    assert "NVIDIA Fake H100" in line and "CUDA 12.8" in line and torch.__version__ in line
    header = _bench("solver_benchmark").environment(
        ["benchmarks/solver_benchmark.py", "--device", "cuda:0"],
        _bench("solver_benchmark").QUICK,
        False,
        "cuda:0",
    )
    assert line in header


def test_default_report_paths_per_device() -> None:
    sb, lo = _bench("solver_benchmark"), _bench("latent_ode_step")
    assert sb.default_output("cpu") == Path("reports/solver_benchmark.md")
    assert sb.default_output("cuda") == Path("reports/solver_benchmark_cuda.md")
    assert sb.default_output("cuda:1") == Path("reports/solver_benchmark_cuda.md")
    assert sb.parse_args([]).output == Path("reports/solver_benchmark.md")  # CPU unchanged
    assert lo.default_output("cpu") is None  # printed only, as before
    assert lo.default_output("cuda") == Path("reports/latent_ode_step_cuda.md")
    assert lo.parse_args([]).output is None
    if not torch.cuda.is_available():
        for parse in (sb.parse_args, lo.parse_args):
            with pytest.raises(SystemExit):
                parse(["--device", "cuda"])


def _measured(key: str, seconds: float, sol_err: float) -> object:
    timing, runners = _bench("timing"), _bench("runners")
    m = timing.Measured(key, runners.LABELS[key], False, times=[seconds], sol_err=sol_err)
    m.outcome = runners.Outcome(torch.zeros(1, 1, 1), 100, 0, None, {})
    return m


@pytest.mark.parametrize(("ours", "verdict"), [(0.04, "**met**"), (0.08, "**not met**")])
def test_gpu_target_row(ours: float, verdict: str) -> None:
    targets = _bench("targets")
    fwd = {
        "latentode": _measured("latentode", ours, 0.1),
        "torchdiffeq": _measured("torchdiffeq", 0.1, 0.2),
    }
    (row,) = targets.gpu_target_rows({256: {"fwd": fwd, "grad": {}}})
    assert row[0] == "GPU: forward throughput vs torchdiffeq, batch 256"
    assert row[2] == ">= 2x" and row[3] == verdict
    assert f"{0.1 / ours:.2f}x" in row[1]
    (missing,) = targets.gpu_target_rows({16: {"fwd": fwd, "grad": {}}})
    assert missing[3] == "not measured"


def test_render_lists_the_gpu_target_only_on_cuda() -> None:
    sb = _bench("solver_benchmark")
    runs = {
        b: {
            "fwd": {
                "latentode": _measured("latentode", 0.04, 0.1),
                "torchdiffeq": _measured("torchdiffeq", 0.1, 0.2),
            },
            "grad": {},
        }
        for b in sb.QUICK.batch_sizes
    }
    tm = sb.Timings(runs, {b: 1e-4 for b in sb.QUICK.batch_sizes}, None)
    gpu = "\n".join(sb.render(["- device: cuda:0, fake"], sb.QUICK, tm, {}, "cuda:0"))
    cpu = "\n".join(sb.render(["- device: cpu"], sb.QUICK, tm, {}, "cpu"))
    assert "| GPU: forward throughput vs torchdiffeq, batch 256 | 2.50x" in gpu
    assert "torch.cuda.synchronize()" in gpu and " on cuda:0" in gpu.splitlines()[0]
    assert "GPU:" not in cpu and "synchronize" not in cpu
    assert "| forward vs torchdiffeq, batch 256 |" in cpu


# --- the scripts' quick modes on the CPU, for real --------------------------------------------


def test_solver_benchmark_quick_cpu(quick_runs: dict[str, tuple[int, str, Path]]) -> None:
    code, err, out = quick_runs["solver_benchmark.py"]
    assert code == 0, err
    text = out.read_text()
    assert "\n- device: cpu\n" in text
    assert "- torch threads: 1 (`torch.set_num_threads(1)`)" in text
    assert "| forward vs torchdiffeq, batch 256 |" in text
    assert "GPU:" not in text


def test_latent_ode_step_quick_cpu(quick_runs: dict[str, tuple[int, str, Path]]) -> None:
    code, err, out = quick_runs["latent_ode_step.py"]
    assert code == 0, err
    text = out.read_text()
    assert "one thread." in text and "\nDevice: cpu.\n" in text
    assert "| latentode | backprop |" in text and "| torchdiffeq | adjoint |" in text
