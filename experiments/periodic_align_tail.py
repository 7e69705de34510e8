"""A test of why the per-series anchor loses in interpolation after each series' last
conditioning time (`periodic_align_distance.py`): there the anchored model solves forwards,
which interpolation training with the own anchor seldom asks for. This trains the
own-anchored interpolation model with the conditioning points of the last ``--tail`` of the
window held out in training (so that a share of every training target lies after the
anchor), scores it on the usual interpolation test split and bins its error as
`periodic_align_distance.py` does::

    .venv/bin/python experiments/periodic_align_tail.py --seed 1 --tail 0.2 --phase random

Trained models are cached in ``--workdir`` (default ``runs/periodic_tail``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import periodic
import periodic_align
import torch
from periodic_align_distance import by_distance

from latentode.data import Split, align_last


def tail_held_out(tail: float) -> Callable[[Split], Split]:
    """The training `prepare`: conditioning points in the last ``tail`` of the window
    dropped (scored as held out), then `align_last`."""

    def prepare(split: Split) -> Split:
        obs = split.observed
        t_cut = float(obs.times[0]) + (1 - tail) * float(obs.times[-1] - obs.times[0])
        keep = (obs.times <= t_cut).to(obs.mask.dtype)[None, :, None]  # (1, T, 1)
        observed = obs.with_mask(obs.mask * keep)
        held = split.target.mask * (1 - observed.mask)  # (B, T, D), same grid in interpolation
        return align_last(Split(observed, split.target, held))

    return prepare


def run(seed: int, args: argparse.Namespace) -> list[str]:
    """Train (or load) the tail-trained own-anchored model of ``seed``; its score lines."""
    torch.set_num_threads(1)
    data = periodic_align.periodic_data(args.phase)
    train_set, test = data[list(range(800))], data[list(range(800, 1000))]
    name = periodic_align.MODELS[0]
    path = args.workdir / f"tail{args.tail:g}_{args.phase}_step{args.step:g}_s{seed}.pt"
    model = periodic_align.build(name, args.step)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        model.load_state_dict(saved["state"])
        wall = float(saved["wall"])
    else:
        torch.manual_seed(seed)
        targs = argparse.Namespace(seed=seed, iters=args.iters, batch_size=50)
        label = f"tail {args.tail:g}, seed {seed}"
        wall = periodic.train(
            label, model, train_set, "interpolation", targs, prepare=tail_held_out(args.tail)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": model.state_dict(), "wall": wall}, path)
    model.eval()
    scoring_seed = seed + 1000  # as periodic_align.run
    torch.manual_seed(scoring_seed)
    predict = periodic.predictor(model)
    scores = periodic.evaluate(predict, test, "interpolation", scoring_seed, prepare=align_last)
    mse = " / ".join(f"{100 * scores[f][0]:.2f}" for f in periodic.FRACTIONS)
    lines = [f"seed {seed}: interpolation MSE x 1e-2 at 10/20/30/50%: {mse} (train {wall:.0f} s)"]
    gen = torch.Generator().manual_seed(scoring_seed + 30)
    split = align_last(periodic.make_split(test, "interpolation", 0.3, gen))
    torch.manual_seed(scoring_seed)
    lines.append(f"seed {seed}, 30% by distance: {by_distance(model, split, aligned=True)}")
    return lines


def main() -> None:
    """Train the seeds two at a time and print their scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tail", type=float, default=0.2)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--phase", choices=("zero", "random"), default="random")
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic_tail"))
    args = parser.parse_args()
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, args.seeds, [args] * len(args.seeds)))
    for lines in results:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
