"""The spirals' anchored latent ODE, each spiral anchored at its own last observation
against the batch's.

`reports/spirals_anchored.md` infers the latent state at the batch's last observed time
(`experiments/spirals.py` calls the model on whole batches of 100 spirals, one of which
always observes the conditioning window's last point). `latentode fit` anchors each series at
its own last observation (`align_last`), so that a forecast does not depend on the batch.
This trains the anchored Latent ODE both ways on `spirals.py`'s protocol (the same data,
batches, conditioning draws and parameter average) and scores each both ways, beside the
RNN (trained anew, or loaded from `spirals.py`'s cache in ``--workdir``)::

    .venv/bin/python experiments/spirals_align.py --seeds 0 [--no-rnn]

Scoring at the own anchor groups the test spirals by the index of their last conditioning
point: a group shares one anchor, which is then every member's own, so each group is one
`LatentODE.predict` call on the window's grid shifted to that anchor (exactly what a
per-series prediction gives, without a union grid). Training uses `align_last`'s union grid.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import spirals
import torch
from torch import Tensor, nn

from latentode.data import IrregularBatch, Split, align_last, make_spirals
from latentode.nn import LatentODE, Prediction

CONFIG = {
    "dynamics_activation": "elu",
    "encoder_hidden": 100,
    "encoder_time": True,
    "dynamics_hidden": 50,
    "decoder_hidden": 50,
    "anchor": "last",
}  # `reports/spirals_anchored.md`'s Latent ODE
BATCH, OWN = "batch's last time", "own last time"


class OwnAnchor(nn.Module):
    """A latent ODE anchored at each series' own last observation: the series are grouped by
    the index of their last observed time and each group is predicted on the grid shifted so
    that it is 0 (``n_samples`` posterior paths, as `spirals.predict_window`)."""

    def __init__(self, model: LatentODE, n_samples: int = 20) -> None:
        super().__init__()
        self.model, self.n_samples = model, n_samples

    @torch.no_grad()
    def predict(self, observed: IrregularBatch, times: Tensor) -> Prediction:
        """The predictive mean and std ``[B, W, D]`` at ``times`` (= ``observed.times``)."""
        point = observed.point_mask  # (B, W)
        columns = torch.arange(point.shape[1]).expand_as(point)  # (B, W)
        last = torch.where(point, columns, -1).amax(dim=1)  # (B,)
        mean = observed.values.new_zeros(observed.batch_size, len(times), observed.n_features)
        std = torch.zeros_like(mean)  # (B, W, D)
        for k in torch.unique(last).tolist():
            rows = torch.nonzero(last == k)[:, 0]
            shifted = observed.times - observed.times[k]  # (W,) group's anchor at 0
            group = IrregularBatch(shifted, observed.values[rows], observed.mask[rows])
            pred = self.model.predict(group, times - times[k], n_samples=self.n_samples)
            mean[rows], std[rows] = pred.mean, pred.std
        return Prediction(mean, std)


def aligned_loss(loss: spirals.LossFn) -> spirals.LossFn:
    """``loss`` on the split aligned at each series' last conditioning time (`align_last`)."""

    def wrapped(observed: IrregularBatch, target: IrregularBatch, it: int) -> Tensor:
        split = align_last(Split(observed, target, target.mask))
        return loss(split.observed, split.target, it)

    return wrapped


def fit(job: dict[str, Any]) -> tuple[dict[str, Tensor], float]:
    """Train ``job``'s model (or load it from ``job["path"]``): `spirals.fit`, with the loss on
    aligned splits when ``job["aligned"]``. Returns its state and training wall time."""
    path = Path(job["path"])
    if not job["aligned"] or path.is_file():
        return spirals.fit(job)
    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    data = make_spirals(n=job["n_train"], noise_std=spirals.NOISE_STD, seed=0)
    model = spirals.build(job["name"], job["latent_config"], job["rnn_hidden"])
    loss = aligned_loss(spirals.loss_fn(job["name"], model, job["iters"], data.n_sample))
    args = (data, job["iters"], job["batch_size"], job["seed"], job["lr_final"], None)
    wall = spirals.train(f"{job['name']}, aligned", model, loss, *args, ema=job["ema"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "wall": wall}, path)
    return model.state_dict(), wall


def jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One job per (seed, model): the Latent ODE trained anchored at the batch's last time
    and at its own (tags as `spirals.py`'s, ``_aligned`` added), and the RNN."""
    out = []
    kinds = [(spirals.LATENT, False), (spirals.LATENT, True)]
    kinds += [] if args.no_rnn else [(spirals.RNN, False)]
    for seed, (name, aligned) in itertools.product(args.seeds, kinds):
        key = "latent" if name == spirals.LATENT else "rnn"
        tag = f"{key}_s{seed}_it{args.iters}_lr0.001_n1000_b100_ema0.995"
        if name == spirals.LATENT:
            tag += "_" + "_".join(f"{k}{v}" for k, v in sorted(CONFIG.items()))
        out.append(
            {
                "name": name,
                "aligned": aligned,
                "iters": args.iters,
                "seed": seed,
                "n_train": 1000,
                "batch_size": 100,
                "lr_final": 0.001,
                "fit_window": "all",
                "ema": 0.995,
                "latent_config": CONFIG if name == spirals.LATENT else None,
                "rnn_hidden": 25,
                "path": str(args.workdir / f"{tag}{'_aligned' if aligned else ''}.pt"),
            }
        )
    return out


def main() -> None:
    """Train (or load) the models, score every latent ODE anchored both ways, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--iters", type=int, default=4000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("runs/spirals"))
    parser.add_argument("--no-rnn", action="store_true", help="leave out the RNN")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    todo = jobs(args)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        fitted = list(pool.map(fit, todo))
    test = make_spirals(n=200, noise_std=spirals.NOISE_STD, seed=1)
    print(
        "| model | trained anchored at | scored anchored at | seed | noisy RMSE, n = 30 / 50 /"
        " 100 | clean RMSE, n = 30 / 50 / 100 | train s |"
    )
    print("|---|---|---|---|---|---|---|")
    for job, (state, wall) in zip(todo, fitted, strict=True):
        model = spirals.build(job["name"], job["latent_config"], job["rnn_hidden"])
        model.load_state_dict(state)
        model.eval()
        if isinstance(model, LatentODE):
            ways = {BATCH: model, OWN: OwnAnchor(model)}
        else:
            ways = {"-": model}
        trained = (OWN if job["aligned"] else BATCH) if job["name"] == spirals.LATENT else "-"
        for scored, predictor in ways.items():
            res = spirals.evaluate({job["name"]: predictor}, test, job["seed"])[job["name"]]
            noisy, clean = (
                " / ".join(f"{res[n][j]:.3f}" for n in spirals.N_OBSERVED) for j in (0, 1)
            )
            print(
                f"| {job['name']} | {trained} | {scored} | {job['seed']} | {noisy} | {clean} | "
                f"{wall:.0f} |",
                flush=True,
            )
    print(f"\nwall {time.perf_counter() - start:.0f} s; config {json.dumps(CONFIG)}")


if __name__ == "__main__":
    main()
