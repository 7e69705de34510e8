"""Time per training iteration of the spirals latent ODE: latentode's solver vs torchdiffeq.

The model is the one of ``configs/spirals.yaml`` (Chen 2018: GRU encoder 25, 4-D latent state,
dynamics MLP 20, decoder 20), dopri5 at rtol 1e-3 / atol 1e-4. The torchdiffeq variant is the
identical module with only ``integrate`` replaced by ``torchdiffeq.odeint`` (or
``odeint_adjoint``). The model is first trained for a while with latentode so its dynamics are
not trivially easy, then every variant starts each timed iteration from that same state and the
same random draws: forward (ELBO), backward, optimizer step.

    python benchmarks/latent_ode_step.py --output reports/latent_ode_step.md
    python benchmarks/latent_ode_step.py --pretrain 0 --repeats 1 --batch 2   # ~10 s smoke run
    python benchmarks/latent_ode_step.py --device cuda   # GPU: reports/latent_ode_step_cuda.md

With ``--device cuda`` the models and the data live on the GPU, pretraining included (the data
and the observed subsets are drawn on the CPU, as in a CPU run, then moved; the posterior
samples are drawn on the GPU), and every timed iteration is bracketed by
``torch.cuda.synchronize()``. On the CPU the run is single-threaded, as before.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchdiffeq
from report import device_lines
from timing import make_sync, parse_device

from latentode.data import IrregularBatch, make_spirals
from latentode.data.synthetic import Spirals
from latentode.nn import LatentODE, LatentODEConfig, SolverSettings

RTOL, ATOL = 1e-3, 1e-4


class TorchdiffeqLatentODE(LatentODE):
    """`LatentODE` integrating with torchdiffeq (1-D shared grids only)."""

    adjoint = False

    def integrate(self, z0: torch.Tensor, t0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        skip = int(bool(times[0] > t0))
        t = torch.cat([t0.view(1), times]) if skip else times  # (T + skip,)
        odeint = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        ys = odeint(self.dynamics, z0, t.to(z0), rtol=RTOL, atol=ATOL, method="dopri5")
        return ys[skip:].permute(1, 2, 0, 3)  # (K, B, T, L)


def default_output(device: torch.device | str) -> Path | None:
    """Default report path: none on the CPU (print only, as before); per device type otherwise."""
    kind = torch.device(device).type
    return None if kind == "cpu" else Path(f"reports/latent_ode_step_{kind}.md")


def _no_sync() -> None:
    """Nothing to wait for (CPU)."""


def make_model(gradient: str) -> LatentODE:
    """The spirals latent ODE of ``configs/spirals.yaml`` with latentode's `gradient` mode."""
    cfg = LatentODEConfig(
        input_dim=2,
        latent_dim=4,
        encoder="gru",
        obs_std=0.3,
        solver=SolverSettings("dopri5", RTOL, ATOL, gradient=gradient),
    )
    return LatentODE(cfg)


def pretrain(model: LatentODE, data: Spirals, iters: int, target: IrregularBatch) -> None:
    """`iters` Adam steps on the spirals; `target` is ``data.batch`` on the model's device.

    The observed subsets are drawn on the CPU (the same draws on every device) and then moved.
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(iters):
        observed = data.forecast_split(100, gen).observed
        if observed.values.device != target.values.device:
            observed = observed.to(target.values.device)
        loss = model.loss(observed, target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def time_variant(
    model: LatentODE,
    state: dict[str, torch.Tensor],
    observed: IrregularBatch,
    target: IrregularBatch,
    repeats: int,
    sync: Callable[[], None] = _no_sync,
) -> tuple[float, int, int]:
    """Median seconds per iteration and forward / backward NFE of the dynamics.

    `sync` waits for the device's queued work (`timing.make_sync`): called before the clock
    starts and before it stops, so a CUDA iteration is timed to its last kernel.
    """
    times, fwd, bwd = [], 0, 0
    for r in range(repeats + 1):
        model.load_state_dict(state)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        torch.manual_seed(r)
        sync()
        start = time.perf_counter()
        loss = model.loss(observed, target)
        n_fwd = model.dynamics.reset_nfe()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        elapsed = time.perf_counter() - start
        n_bwd = model.dynamics.reset_nfe()
        if r:  # the first is a warm-up
            times.append(elapsed)
            fwd, bwd = n_fwd, n_bwd
    return statistics.median(times), fwd, bwd


def time_solve_only(
    model: LatentODE,
    state: dict[str, torch.Tensor],
    observed: IrregularBatch,
    target: IrregularBatch,
    repeats: int,
    sync: Callable[[], None] = _no_sync,
) -> float:
    """Median seconds of the latent solve alone (fixed z0, forward + backward); `sync` as above."""
    model.load_state_dict(state)
    with torch.no_grad():
        z0 = model.encode(observed).mean.unsqueeze(0)  # (1, B, L)
    times = []
    for r in range(repeats + 1):
        z = z0.clone().requires_grad_(True)
        sync()
        start = time.perf_counter()
        zt = model.integrate(z, observed.times[0], target.times)  # (1, B, T, L)
        (zt**2).sum().backward()
        sync()
        if r:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; `--output` defaults to `default_output(--device)`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report path (default: none on the CPU, the report is printed; "
        "reports/latent_ode_step_cuda.md with --device cuda)",
    )
    parser.add_argument("--pretrain", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="cpu (default, one thread) or cuda[:N]")
    args = parser.parse_args(argv)
    device = parse_device(parser, args.device)
    if args.output is None:
        args.output = default_output(device)
    return args


def main(argv: list[str] | None = None) -> None:
    """Pretrain, time every variant, print the report (and write it to `--output`)."""
    args = parse_args(argv)
    device = torch.device(args.device)
    sync = make_sync(device)
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    data = make_spirals(n=args.batch, seed=0)
    target = data.batch.to(device)
    base = make_model("backprop").to(device)
    t0 = time.perf_counter()
    pretrain(base, data, args.pretrain, target)
    state = copy.deepcopy(base.state_dict())
    observed = data.forecast_split(100, torch.Generator().manual_seed(2)).observed.to(device)

    rows = []
    variants = [
        ("latentode", "backprop"),
        ("latentode", "checkpoint"),
        ("latentode", "adjoint"),
        ("torchdiffeq", "backprop"),
        ("torchdiffeq", "adjoint"),
    ]
    for lib, gradient in variants:
        if lib == "latentode":
            model = make_model(gradient)
        else:
            model = TorchdiffeqLatentODE(make_model("backprop").config)
            model.adjoint = gradient == "adjoint"
        model = model.to(device)
        sec, fwd, bwd = time_variant(model, state, observed, target, args.repeats, sync)
        solve_sec = time_solve_only(model, state, observed, target, args.repeats, sync)
        rows.append((lib, gradient, sec, fwd, bwd, solve_sec))
        print(
            f"{lib:12s} {gradient:10s} {sec * 1e3:8.1f} ms  nfe fwd {fwd:4d} bwd {bwd:4d}"
            f"  solve only {solve_sec * 1e3:8.1f} ms"
        )

    ref = {g: s for lib, g, s, _, _, _ in rows if lib == "torchdiffeq"}
    ref_solve = {g: s for lib, g, _, _, _, s in rows if lib == "torchdiffeq"}
    argv_shown = sys.argv[1:] if argv is None else argv
    on_gpu = device.type == "cuda"
    where = (
        f"{device}, every timed iteration bracketed by `torch.cuda.synchronize()`"
        if on_gpu
        else "one thread"
    )
    lines = [
        "# Latent ODE training iteration: latentode vs torchdiffeq"
        + (f" on {device}" if on_gpu else ""),
        "",
        f"Command: `{shlex.join(['python', 'benchmarks/latent_ode_step.py', *argv_shown])}` "
        f"(pretrain {args.pretrain} iterations, median of {args.repeats} timed iterations).",
        f"Date: {datetime.date.today()}; torch {torch.__version__}, torchdiffeq "
        f"{getattr(torchdiffeq, '__version__', '?')}; {platform.processor() or platform.machine()}"
        f"; {where}.",
        *(ln.replace("- device:", "Device:", 1) + "." for ln in device_lines(device)),
        "",
        f"Spirals model of `configs/spirals.yaml`, batch {args.batch} spirals, 100 observed "
        "points, ELBO over the 100 observed + 100 future points (200 read-out times), dopri5 "
        f"rtol {RTOL} atol {ATOL}. An iteration is forward + backward + Adam step. NFE counts the "
        "dynamics MLP's calls (the backward column counts calls made during `backward()`: "
        "adjoint evaluations or checkpoint recomputation; backprop makes none).",
        "",
        "The last two columns time the latent solve alone (encoder output fixed, forward + "
        "backward of the solve), the only part that differs between the variants; the GRU "
        "encoder's 100-step recurrence, identical in all variants, weighs heavily in a whole "
        "iteration.",
        "",
        "| solver | gradient | ms / iteration | NFE forward | NFE backward "
        "| speed-up vs torchdiffeq (same gradient kind) | solve only, ms | solve speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for lib, gradient, sec, fwd, bwd, solve_sec in rows:
        kind = "adjoint" if gradient == "adjoint" else "backprop"
        lines.append(
            f"| {lib} | {gradient} | {sec * 1e3:.1f} | {fwd} | {bwd} | {ref[kind] / sec:.2f}x "
            f"| {solve_sec * 1e3:.1f} | {ref_solve[kind] / solve_sec:.2f}x |"
        )
    ours = [r for r in rows if r[0] == "latentode"]
    best_ours = min(r[2] for r in ours)
    best_solve = min(r[5] for r in ours)
    lines += [
        "",
        f"Fastest latentode mode vs torchdiffeq backprop: **{ref['backprop'] / best_ours:.2f}x**; "
        f"vs torchdiffeq adjoint: **{ref['adjoint'] / best_ours:.2f}x** "
        f"(target: at least 2x at the same tolerances). Latent solve alone, fastest latentode "
        f"mode vs torchdiffeq backprop: **{ref_solve['backprop'] / best_solve:.2f}x**. "
        "Total wall time "
        f"{time.perf_counter() - t0:.0f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)


if __name__ == "__main__":
    main()
