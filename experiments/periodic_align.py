"""The periodic data's anchored latent ODE, each series anchored at its own last
conditioning time against the batch's.

`reports/periodic.md`'s ", anchored last" models put the latent state at the batch's last
conditioning time. `experiments/periodic.py` calls the model on whole batches, and in a
batch of 50 some series observes close to the window's end, so most series were anchored
after their own last observation. `latentode fit` anchors each series at its own (the
synthetic and CSV data modules' ``align_to``, `align_last`: each series' times shifted so
that its last conditioning time is 0, the batch on the union of the shifted times). This
trains the anchored models that way on `periodic.py`'s protocol, loads the batch-anchored
runs from `periodic.py`'s cache (training them when missing), and scores every model both
ways, printing the test MSE at 10/20/30/50% observed::

    .venv/bin/python experiments/periodic_align.py --iters 2000 --seed 0 [--step 0.05]

``--step`` gives the ODE-RNN encoder each series' own grid (`latentode.nn.row_flow`), so
that its encoding does not depend on the batch either.

An aligned batch holds several times the columns of an unaligned one (the union of 50
shifted grids), so an aligned training run takes 4-8 times as long: about 10 minutes for
extrapolation and 25 for interpolation on a busy 2-core CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import periodic
import torch

from latentode.data import IrregularBatch, align_last, make_periodic
from latentode.nn import LatentODE, SolverSettings

MODELS = (
    "Latent ODE (ODE-RNN enc.), anchored last",
    "Latent ODE (ODE-RNN enc.), anchored last, both halves",
)
ANCHORS = {False: "batch's last time", True: "own last time"}


def build(name: str, step: float | None) -> LatentODE:
    """``periodic.build``'s latent ODE ``name``; with a ``step``, its ODE-RNN encoder steps
    on each series' own grid (Euler steps of at most ``step``, `latentode.nn.row_flow`)
    instead of the batch's union of observed times."""
    config = periodic.latent_config(name)
    if step is not None:
        solver = SolverSettings("euler", step_size=step)
        config = dataclasses.replace(config, encoder_solver=solver)
    return LatentODE(config)


def periodic_data(phase: str) -> IrregularBatch:
    """`make_periodic`'s 1000 series (data seed 0); ``phase="random"``: each series shifted
    by its own phase drawn from U(0, 2 pi) (seeded), the frequencies, offsets and noise kept,
    so that where t = 0 lies no longer tells the phase."""
    series = make_periodic(n=1000, seed=0)
    batch = series.batch
    if phase == "zero":
        return batch
    gen = torch.Generator().manual_seed(0)
    shift = 2 * torch.pi * torch.rand(1000, 1, generator=gen)  # (N, 1)
    arg = 2 * torch.pi * series.frequency[:, None] * series.times[None, :] + shift  # (N, T)
    clean = torch.sin(arg) + series.offset[:, None]  # (N, T)
    values = (clean[..., None] + series.values - series.clean).to(batch.values.dtype)
    return IrregularBatch(batch.times, values, batch.mask)


def run(name: str, task: str, aligned: bool, args: argparse.Namespace) -> list[str]:
    """Train (or load) one model, anchored as ``aligned`` says during training, and score it
    anchored both ways; one table row per scoring."""
    torch.set_num_threads(1)
    data = periodic_data(args.phase)
    train_set, test_set = data[list(range(800))], data[list(range(800, 1000))]
    make = lambda n: build(n, args.step)  # noqa: E731
    model, wall = periodic.trained(name, task, args, train_set, make=make, aligned=aligned)
    rows = []
    for scored in (False, True):
        seed = args.seed + 1000
        torch.manual_seed(seed)
        predict = periodic.predictor(model)
        prepare = align_last if scored else None
        scores = periodic.evaluate(predict, test_set, task, seed, prepare=prepare)
        mse = " / ".join(f"{100 * scores[f][0]:.2f}" for f in periodic.FRACTIONS)
        grid = "union" if args.step is None else f"own, {args.step:g}"
        rows.append(
            f"| {name}, {task} | {grid} | {ANCHORS[aligned]} | {ANCHORS[scored]} | {mse} | "
            f"{wall:.0f} |"
        )
    return rows


def main() -> None:
    """Train every (model, task, anchoring), two at a time, and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--tasks", nargs="+", choices=periodic.TASKS, default=list(periodic.TASKS))
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic"))
    parser.add_argument(
        "--phase",
        choices=("zero", "random"),
        default="zero",
        help="zero (default): Rubanova's series, all of phase 0 at t = 0; random: each series "
        "with its own phase (give another --workdir: cache names do not say which)",
    )
    parser.add_argument(
        "--step",
        type=float,
        default=None,
        help="the ODE-RNN encoder's Euler step on each series' own grid (default: none, one "
        "step per gap of the batch's union of observed times, as periodic.py)",
    )
    args = parser.parse_args()
    args.batch_size, args.n_train = 50, 800
    runs = [
        (name, task, aligned, args)
        for name in args.models
        for task in args.tasks
        if not (name.endswith(periodic.BOTH) and task == "interpolation")
        for aligned in (True, False)
    ]
    start = time.perf_counter()
    head = "| model, task | encoder grid | trained anchored at | scored anchored at |"
    print(head + " MSE x 1e-2, 10/20/30/50% | train s |")
    print("|---|---|---|---|---|---|")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for rows in pool.map(run, *zip(*runs, strict=True)):
            print("\n".join(rows), flush=True)
    print(f"\nwall {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
