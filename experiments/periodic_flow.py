"""The ODE-RNN's flow between observations on the periodic data: the batch's union grid against
each series' own grid (a ``step_size``), for the latent ODE (ODE-RNN encoder) and the ODE-RNN.

Without a ``step_size`` the ODE-RNN takes one Euler step per gap of the batch's observation
times, so a series' encoding depends on its batch; with one, each series steps on its own
grid (`latentode.nn.row_flow`). This trains both on `periodic.py`'s protocol (800 training
series, batches of 50, Adamax, one seed) and prints the test MSE at 10/20/30/50% observed::

    .venv/bin/python experiments/periodic_flow.py --iters 2000

(about 45 minutes on 2 busy cores; the README's table, "Known limitations", came from it).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor

import periodic
import torch
from torch import nn

from latentode.data import make_periodic
from latentode.nn import ODERNN, LatentODE, SolverSettings

MODELS = ("Latent ODE (ODE-RNN encoder)", "ODE-RNN")


def build(name: str, step: float | None) -> nn.Module:
    """``periodic.build``'s model ``name`` with the ODE-RNN flow's Euler ``step`` (None: the
    batch's union grid)."""
    solver = SolverSettings("euler", step_size=step)
    if name.startswith("Latent ODE"):
        config = dataclasses.replace(periodic.latent_config(name), encoder_solver=solver)
        return LatentODE(config)
    return ODERNN(1, hidden=20, ode_hidden=100, decoder_hidden=100, obs_std=0.01, solver=solver)


def run(name: str, task: str, step: float | None, iters: int, seed: int) -> tuple[str, dict]:
    """Train and score one (model, task, step) in its own process, one torch thread."""
    torch.set_num_threads(1)
    data = make_periodic(n=1000, seed=0).batch
    train_set, test_set = data[list(range(800))], data[list(range(800, 1000))]
    args = argparse.Namespace(seed=seed, iters=iters, batch_size=50, n_train=800)
    torch.manual_seed(seed)
    model = build(name, step)
    start = time.perf_counter()
    periodic.train(f"{name}, {task}, step {step}", model, train_set, task, args)
    wall = time.perf_counter() - start
    torch.manual_seed(seed + 1000)
    scores = periodic.evaluate(periodic.predictor(model.eval()), test_set, task, seed + 1000)
    mse = " / ".join(f"{100 * scores[f][0]:.2f}" for f in periodic.FRACTIONS)
    return f"| {name}, {task} | {step} | {mse} | {wall:.0f} |", scores


def main() -> None:
    """Train every (model, task, step), two at a time, and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=float, nargs="+", default=[0.05])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=periodic.TASKS, default=list(periodic.TASKS))
    args = parser.parse_args()
    runs = [
        (name, task, step, args.iters, args.seed)
        for name in args.models
        for task in args.tasks
        for step in [None, *args.steps]
    ]
    print("| model, task | step (None: batch union) | MSE x 1e-2, 10/20/30/50% | train s |")
    print("|---|---|---|---|")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for row, _ in pool.map(run, *zip(*runs, strict=True)):
            print(row, flush=True)


if __name__ == "__main__":
    main()
