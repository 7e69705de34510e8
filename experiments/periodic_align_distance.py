"""Where the per-series anchor loses in interpolation: the held-out squared error of
`periodic_align.py`'s cached interpolation models (anchored at the batch's last conditioning
time and at each series' own), binned by each point's distance before its series' own last
conditioning time (negative: after it, where the anchored model solves forwards)::

    .venv/bin/python experiments/periodic_align_distance.py --seed 1 --fraction 0.3 \\
        --phase random --workdir runs/periodic_phase

The models are loaded from ``--workdir``, where `periodic_align.py` with the same ``--seed``,
``--step`` and ``--phase`` caches them (a missing one is trained first, as it would be
there). The test split is the one `periodic.evaluate` scores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import periodic
import periodic_align
import torch
from torch import nn

from latentode.data import Split, align_last

EDGES = (-10.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 10.0)  # distance bins, time units


def by_distance(model: nn.Module, split: Split, aligned: bool) -> str:
    """``model``'s mean held-out squared error (x 1e-2) on ``split``, overall and per `EDGES`
    bin of each point's distance before its series' own last conditioning time
    (``aligned``: the split's times are already relative to it, `align_last`)."""
    with torch.no_grad():
        mean, _ = periodic.predictor(model)(split)
    err = ((mean - split.target.values) ** 2 * split.heldout_mask).sum(-1)  # (B, T)
    held = split.heldout_mask.sum(-1) > 0  # (B, T)
    times = split.target.times[None, :].expand_as(held)  # (B, T)
    if aligned:
        dist = -times
    else:
        point = split.observed.point_mask  # (B, T_obs)
        obs_t = split.observed.times[None, :].expand_as(point)
        last = torch.where(point, obs_t, -torch.inf).amax(dim=1)  # (B,)
        dist = last[:, None] - times
    bins = torch.bucketize(dist, torch.tensor(EDGES))
    cells = []
    for k in range(1, len(EDGES)):
        m = held & (bins == k)
        if m.any():
            lo, hi = EDGES[k - 1], EDGES[k]
            cells.append(f"[{lo:g}, {hi:g}) {100 * float(err[m].mean()):.2f} (n={int(m.sum())})")
    return f"all {100 * float(err[held].mean()):.2f} | " + " | ".join(cells)


def main() -> None:
    """Print, for each anchoring, the mean held-out squared error (x 1e-2) per distance bin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.3, choices=periodic.FRACTIONS)
    parser.add_argument("--step", type=float, default=0.05)
    parser.add_argument("--phase", choices=("zero", "random"), default="zero")
    parser.add_argument("--workdir", type=Path, default=Path("runs/periodic"))
    cli = parser.parse_args()
    torch.set_num_threads(1)
    args = argparse.Namespace(
        seed=cli.seed, iters=2000, n_train=800, workdir=cli.workdir, step=cli.step, ode_depth=1
    )
    data = periodic_align.periodic_data(cli.phase)
    train_set, test = data[list(range(800))], data[list(range(800, 1000))]
    name = periodic_align.MODELS[0]
    for aligned in (False, True):
        make = lambda n: periodic_align.build(n, cli.step)  # noqa: E731
        model, _ = periodic.trained(name, "interpolation", args, train_set, make, aligned)
        seed = cli.seed + 1000  # as periodic_align.run scores
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + int(100 * cli.fraction))
        split = periodic.make_split(test, "interpolation", cli.fraction, gen)
        split = align_last(split) if aligned else split
        print(f"{periodic_align.ANCHORS[aligned]}: {by_distance(model, split, aligned)}")


if __name__ == "__main__":
    main()
