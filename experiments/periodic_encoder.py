"""Periodic toy data: does the Latent ODE's ODE-RNN encoder trail the ODE-RNN for want of size?

Up to session 16 `periodic.py` gave the Latent ODE's ODE-RNN encoder a 20-wide state with a
20-unit vector field and a linear posterior head (`SESSION16`), while its ODE-RNN baseline has
a 100-unit vector field; since then it uses `RUBANOVA`.
Rubanova's code gives the encoder's vector field 100 units (``--units``), maps the final state
to q(z0) through a 100-unit tanh MLP (``transform_z0``) and caps the encoder's Euler step at
1/50 of the time range; its decoder is one linear layer, where `periodic.py`'s has 100 hidden
units. This script trains the Latent ODE (ODE-RNN enc.) with each of those
changes, on the same data, seeds, iterations and objective as `periodic.py`, beside the ODE-RNN,
and writes the held-out test MSE of each (20 posterior paths for the Latent ODEs)::

    python experiments/periodic_encoder.py --iters 2000 --jobs 12 \\
        --output reports/periodic_encoder.md

Each (variant, task) trains in its own process on one torch thread; trained models are cached
in ``--workdir``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import periodic

from latentode.data import IrregularBatch, make_periodic
from latentode.nn import LatentODE, SolverSettings

# The encoder `periodic.py` had up to session 16: state 20, a 20-unit field, a linear head.
SESSION16 = {"encoder_hidden": 20, "encoder_ode_hidden": None, "encoder_head_hidden": 0}
RUBANOVA = {"encoder_hidden": 40, "encoder_ode_hidden": 100, "encoder_head_hidden": 100}
# name -> LatentODEConfig fields set on `periodic.latent_config("Latent ODE (ODE-RNN enc.)")`
VARIANTS: dict[str, dict] = {
    "as periodic.py (ODE 20, linear head)": SESSION16,
    "ODE 100": {**SESSION16, "encoder_ode_hidden": 100},
    "ODE 100, MLP head 100": {**SESSION16, "encoder_ode_hidden": 100, "encoder_head_hidden": 100},
    "ODE 100, MLP head 100, Euler step <= 0.1": {
        **SESSION16,
        "encoder_ode_hidden": 100,
        "encoder_head_hidden": 100,
        "encoder_solver": SolverSettings("euler", step_size=0.1),
    },
    # what `periodic.py` uses since session 17
    "ODE 100, MLP head 100, state 40": RUBANOVA,
    # Rubanova's decoder is one linear layer (``Decoder`` in lib/encoder_decoder.py)
    "ODE 100, MLP head 100, state 40, linear decoder": {**RUBANOVA, "decoder_depth": 0},
    # extrapolation only: the ELBO also scores the conditioning points (`periodic.trained`)
    "ODE 100, MLP head 100, state 40" + periodic.BOTH: RUBANOVA,
}
BASELINE = "ODE-RNN"


def build(variant: str) -> nn.Module:
    """The Latent ODE of `periodic.py` with ``VARIANTS[variant]``, or the ODE-RNN baseline."""
    if variant == BASELINE:
        return periodic.build(BASELINE)
    config = periodic.latent_config(periodic.MODELS[0])
    if replace(config, **RUBANOVA) != config:
        raise RuntimeError("periodic.py's encoder is no longer RUBANOVA: update VARIANTS")
    return LatentODE(replace(config, **VARIANTS[variant]))


def run_one(
    variant: str, task: str, args: argparse.Namespace, train_set: IrregularBatch, test_set
) -> tuple[str, str, float, dict]:
    """Train (or load) one (variant, task) and score it; returns (variant, task, wall, MSEs)."""
    torch.set_num_threads(1)
    model, wall = periodic.trained(variant, task, args, train_set, make=build)
    seed = args.seed + 1000
    torch.manual_seed(seed)
    scores = periodic.evaluate(periodic.predictor(model), test_set, task, seed)
    print(f"{variant}, {task}: {scores}", flush=True)
    return variant, task, wall, scores


def main() -> None:
    """Train every variant and the ODE-RNN on both tasks; write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="reports/periodic_encoder.md")
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", choices=periodic.TASKS, default=list(periodic.TASKS))
    parser.add_argument(
        "--variants", nargs="+", choices=[*VARIANTS, BASELINE], default=[*VARIANTS, BASELINE]
    )
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic_encoder"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 iterations")
    args = parser.parse_args()
    n_train, n_test = (100, 40) if args.quick else (800, 200)
    args.n_train = n_train
    if args.quick:
        args.iters = 4
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    start = time.perf_counter()
    data = make_periodic(n=1000, seed=0).batch
    train_set = data[list(range(n_train))]
    test_set = data[list(range(800, 800 + n_test))]
    runs = [
        (v, t)
        for t in args.tasks
        for v in args.variants
        if not (v.endswith(periodic.BOTH) and t == "interpolation")
    ]
    res: dict[tuple[str, str], dict] = {}
    walls: dict[tuple[str, str], float] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        jobs = [pool.submit(run_one, v, t, args, train_set, test_set) for v, t in runs]
        for job in jobs:
            variant, task, wall, scores = job.result()
            res[variant, task] = scores
            walls[variant, task] = wall
    total = time.perf_counter() - start
    fracs = " | ".join(f"{int(100 * f)}%" for f in periodic.FRACTIONS)
    lines = [
        "# Periodic: the Latent ODE's ODE-RNN encoder at Rubanova's sizes",
        "",
        f"Command: `python experiments/periodic_encoder.py {shlex.join(sys.argv[1:])}` "
        f"(seed {args.seed}; {total / 60:.1f} min wall, one torch thread "
        "per run). Data, objective, optimiser and scoring as `periodic.py`; held-out test MSE "
        f"x 1e-2 ({n_test} test series; Latent ODEs: mean of 20 posterior paths).",
        "",
    ]
    for task in args.tasks:
        lines += [f"## {task.capitalize()}", "", f"| model | {fracs} | train s |"]
        lines.append("|---|" + "---:|" * (len(periodic.FRACTIONS) + 1))
        for variant in args.variants:
            if (variant, task) not in res:
                continue
            scores = res[variant, task]
            row = " | ".join(f"{100 * scores[f][0]:.3f}" for f in periodic.FRACTIONS)
            name = variant if variant == BASELINE else f"Latent ODE, encoder {variant}"
            lines.append(f"| {name} | {row} | {walls[variant, task]:.0f} |")
        lines.append("")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(out.read_text())


if __name__ == "__main__":
    main()
