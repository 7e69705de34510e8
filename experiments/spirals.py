"""Chen et al. (2018) Table 2: bi-directional spirals, Latent ODE against the RNN baseline.

Regenerate the report (25 minutes on the shared, loaded 2-core CPU: 5 Latent ODE, 20 RNN)::

    .venv/bin/python experiments/spirals.py --iters 2000 --lr-final 0.01 --output reports/spirals.md

Diagnostic: the Latent ODE alone, longer and with a decaying learning rate (no RNN, no target)::

    .venv/bin/python experiments/spirals.py --iters 4000 --lr-final 0.001 --latent-only \
        --output reports/spirals_latent_long.md

Smoke run (about a minute, numbers meaningless)::

    .venv/bin/python experiments/spirals.py --quick --output /tmp/spirals.md

Protocol: ``make_spirals`` (Archimedean, b = 0.3, noise std 0.3, windows of 100 + 100 points on
the 500-point grid over [0, 6 pi]); 1000 training spirals (seed 0), 200 test spirals (seed 1).
Both models train on the same batches: each batch conditions on n in {30, 50, 100} random points
of the first 100 (n drawn per batch) and is scored on all 200 points of the window. Test: for
each n, RMSE of the predictive mean on the next 100 points against the noisy values (the
paper's setting) and against the clean spiral.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from report_notes import notes
from torch import Tensor, nn

from latentode.data import IrregularBatch, Spirals, make_spirals, subsample_observations
from latentode.nn import GRUBaseline, LatentODE, LatentODEConfig, SolverSettings
from latentode.plots import plot_latent_pca, plot_spirals

N_OBSERVED = (30, 50, 100)
PAPER = {"RNN": (0.3937, 0.3202, 0.1813), "Latent ODE": (0.1642, 0.1502, 0.1346)}
NOISE_STD = 0.3


def conditioning(batch: IrregularBatch, n_sample: int, n: int, gen: torch.Generator) -> Tensor:
    """Mask ``[B, W, 2]`` keeping ``n`` random points of each series' first ``n_sample``."""
    first = batch.subset_times(slice(0, n_sample))
    kept = subsample_observations(first, n_observed=n, generator=gen).mask  # (B, n_sample, 2)
    pad = torch.zeros_like(batch.mask[:, n_sample:])  # (B, W - n_sample, 2)
    return torch.cat([kept, pad], dim=1)  # (B, W, 2)


def train(
    name: str,
    model: nn.Module,
    loss_fn: Callable[[IrregularBatch, IrregularBatch, int], Tensor],
    data: Spirals,
    iters: int,
    batch_size: int,
    seed: int,
    lr_final: float = 0.01,
) -> float:
    """Adam (lr 0.01, decaying exponentially to ``lr_final``) on mini-batches; n observed drawn
    per batch. Returns the wall time (s)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    full = data.batch
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    gamma = (lr_final / 0.01) ** (1.0 / max(1, iters))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma)
    start = time.perf_counter()
    for it in range(iters):
        idx = torch.randperm(full.batch_size, generator=gen)[:batch_size]
        target = full[idx]
        n = N_OBSERVED[int(torch.randint(len(N_OBSERVED), (1,), generator=gen))]
        observed = target.with_mask(conditioning(target, data.n_sample, n, gen))
        loss = loss_fn(observed, target, it)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if it % max(1, iters // 10) == 0 or it == iters - 1:
            wall = time.perf_counter() - start
            msg = f"[{name}] iter {it:5d} loss {float(loss.detach()):9.4f} {wall:7.1f}s"
            print(msg, flush=True)
    return time.perf_counter() - start


@torch.no_grad()
def predict_window(model: nn.Module, observed: IrregularBatch, times: Tensor) -> Tensor:
    """Predictive mean ``[B, W, 2]`` over the whole window (reconstruction + extrapolation)."""
    if isinstance(model, LatentODE):
        return model.predict(observed, times, n_samples=20).mean
    return model.predict(observed, times).mean


def evaluate(models: dict[str, nn.Module], test: Spirals, seed: int) -> dict[str, dict]:
    """RMSE on the forecast window for each model and n (same conditioning points for all)."""
    out: dict[str, dict] = {name: {} for name in models}
    full, ns = test.batch, test.n_sample
    for n in N_OBSERVED:
        gen = torch.Generator().manual_seed(seed + n)
        observed = full.with_mask(conditioning(full, ns, n, gen))
        for name, model in models.items():
            pred = predict_window(model, observed, test.times)[:, ns:]  # (B, 100, 2)
            noisy = (pred - test.values[:, ns:]).square().mean().sqrt()
            clean = (pred - test.clean[:, ns:]).square().mean().sqrt()
            out[name][n] = (float(noisy), float(clean))
    return out


def figures(
    model: LatentODE, gru: GRUBaseline | None, test: Spirals, out_dir: Path, stem: str
) -> None:
    """Fig. 8 style: a few spirals with n = 30 observations, and the latent PCA."""
    ns, full = test.n_sample, test.batch
    observed = full.with_mask(conditioning(full, ns, 30, torch.Generator().manual_seed(7)))
    cw = torch.nonzero(test.clockwise).flatten()[:4]
    ccw = torch.nonzero(~test.clockwise).flatten()[:4]
    pick = torch.cat([cw, ccw])
    obs = observed[pick]
    preds = {"Latent ODE": predict_window(model, obs, test.times)}
    if gru is not None:
        preds["RNN"] = predict_window(gru, obs, test.times)
    titles = [("clockwise" if bool(test.clockwise[i]) else "counter-clockwise") for i in pick]
    fig = plot_spirals(
        test.times, obs.values, obs.mask, test.clean[pick], preds, test.t_split, titles
    )
    fig.savefig(out_dir / f"{stem}.png", dpi=110)
    with torch.no_grad():
        sel = torch.arange(min(60, test.values.shape[0]))
        q = model.encode(observed[sel])
        zt = model.integrate(q.mean.unsqueeze(0), test.times[0], test.times)[0]  # (60, W, L)
    fig = plot_latent_pca(zt, test.clockwise[sel], ns)
    fig.savefig(out_dir / f"{stem}_latent.png", dpi=110)


def report(args: argparse.Namespace, res: dict, walls: dict[str, float], total: float) -> str:
    """The markdown report."""
    out = Path(args.output)
    cmd = ".venv/bin/python experiments/spirals.py" + (
        " --quick" if args.quick else f" --iters {args.iters} --lr-final {args.lr_final:g}"
    )
    cmd += " --latent-only" if args.latent_only else ""
    lines = [
        "# Spirals: Chen et al. (2018) Table 2 reproduced",
        "",
        f"Command: `{cmd} --output {args.output}` (seed {args.seed}; total wall time "
        f"{total / 60:.1f} min on a shared 2-core CPU, `torch.set_num_threads(1)`).",
        "",
        "## Setup",
        "",
        f"- Data: `make_spirals` (Archimedean r = 0.3 theta, half clockwise, 500-point grid on "
        f"[0, 6 pi], windows of 100 + 100 points), Gaussian noise std {NOISE_STD}. "
        f"{args.n_train} training spirals (data seed 0), {args.n_test} test spirals (data seed 1).",
        "- Training (both models, same batches): each batch of "
        f"{args.batch_size} spirals conditions on n in {{30, 50, 100}} random points of the first "
        "100 (n drawn per batch) and is scored on all 200 points (the 100 conditioning-window "
        "points and the next 100). Adam lr 0.01 "
        + (
            "(constant)"
            if args.lr_final == 0.01
            else f"decaying exponentially to {args.lr_final:g}"
        )
        + f", gradient clip 10, {args.iters} iterations each.",
        "- Latent ODE: GRU encoder (25 hidden) run backwards, 4-D latent, dynamics MLP 20 hidden "
        "(tanh), decoder MLP 20 hidden, fixed observation std 0.3, ELBO with 1 sample, KL weight "
        f"annealed 0 -> 1 over {args.iters // 4} iterations, dopri5 rtol 1e-3 atol 1e-4. "
        "Prediction: mean of 20 posterior paths.",
        "- RNN: `GRUBaseline` (25 hidden, fed values, mask and time gap; decoder MLP 20 hidden), "
        "Gaussian NLL with std 0.3 (= MSE); it rolls out autoregressively after its last "
        "observation.",
        "- Score: RMSE of the predictive mean over the next 100 points (both coordinates), on the "
        "test spirals, with the same random conditioning points for both models. *Noisy*: against "
        "the noisy values (noise alone contributes 0.3 to this RMSE: sqrt(mse_clean + 0.09)). "
        "*Clean*: against the noise-free spiral.",
        "",
        "Training wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in walls.items()) + ".",
        "",
        "## Results (predictive RMSE, next 100 points)",
        "",
        "| observed points | " + " | ".join(str(n) for n in N_OBSERVED) + " |",
        "|---|" + "---|" * len(N_OBSERVED),
    ]
    for name in ("RNN", "Latent ODE"):
        paper = " | ".join(f"{v:.4f}" for v in PAPER[name])
        lines.append(f"| {name}, paper | {paper} |")
    for name in [m for m in ("RNN", "Latent ODE") if m in res]:
        for j, kind in enumerate(("noisy", "clean")):
            row = " | ".join(f"{res[name][n][j]:.4f}" for n in N_OBSERVED)
            lines.append(f"| {name}, ours ({kind}) | {row} |")
    paper_ratio = [r / lo for r, lo in zip(PAPER["RNN"], PAPER["Latent ODE"], strict=True)]
    paper_row = " | ".join(f"{r:.2f}" for r in paper_ratio)
    lines.append(f"| ratio RNN / Latent ODE, paper | {paper_row} |")
    met = {}
    for j, kind in enumerate(("noisy", "clean") if len(res) == 2 else ()):
        ratios = [res["RNN"][n][j] / res["Latent ODE"][n][j] for n in N_OBSERVED]
        met[kind] = [r >= p for r, p in zip(ratios, paper_ratio, strict=True)]
        lines.append(
            f"| ratio RNN / Latent ODE, ours ({kind}) | "
            + " | ".join(f"{r:.2f}" for r in ratios)
            + " |"
        )
    lines += [
        "",
        "Target (issue 3): Latent ODE better than the RNN at every n by at least the paper's "
        "ratio"
        + (". " if met else " (not checked: one model only).")
        + "; ".join(
            f"{kind}: "
            + ", ".join(
                f"n={n} {'met' if ok else 'missed'}" for n, ok in zip(N_OBSERVED, m, strict=True)
            )
            for kind, m in met.items()
        )
        + ("." if met else ""),
        "",
        "The paper does not state its noise level, so its absolute RMSE is not comparable with "
        "ours; the ratio is the part that transfers (ANCHORS section 2).",
        "",
        "## Figures",
        "",
        f"![spirals]({out.stem}.png)",
        "",
        "Test spirals conditioned on 30 noisy points (black) of the first 100: grey the true "
        "spiral, solid the reconstruction over the conditioning window, dashed the extrapolation "
        "over the next 100 points. The RNN's solid line starts with its predictions before its "
        "first observation (from an empty state, hence the straight stroke from outside the "
        "spiral); from then on it predicts each point from the observations before it.",
        "",
        f"![latent]({out.stem}_latent.png)",
        "",
        "Latent ODE paths z(t) from the posterior mean of z0 for 60 test spirals (n = 30), "
        "projected on their first two principal components; the two directions separate.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Train both models, score them, write the report and the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="reports/spirals.md")
    parser.add_argument("--quick", action="store_true", help="~1-minute smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--rnn-iters", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--lr-final", type=float, default=0.01, help="end of the lr decay")
    parser.add_argument("--latent-only", action="store_true", help="skip the RNN (diagnostic)")
    args = parser.parse_args()
    if args.quick:
        args.iters, args.n_train, args.n_test, args.batch_size = 40, 200, 50, 50
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    train_data = make_spirals(n=args.n_train, noise_std=NOISE_STD, seed=0)
    test_data = make_spirals(n=args.n_test, noise_std=NOISE_STD, seed=1)

    torch.manual_seed(args.seed)
    solver = SolverSettings("dopri5", rtol=1e-3, atol=1e-4)
    lode = LatentODE(LatentODEConfig(input_dim=2, latent_dim=4, obs_std=NOISE_STD, solver=solver))
    anneal = max(1, args.iters // 4)

    def lode_loss(observed: IrregularBatch, target: IrregularBatch, it: int) -> Tensor:
        return lode.loss(observed, target, n_samples=1, kl_weight=min(1.0, it / anneal))

    gru = GRUBaseline(2, hidden=25, obs_std=NOISE_STD)

    def gru_loss(observed: IrregularBatch, target: IrregularBatch, it: int) -> Tensor:
        return gru.loss(observed, target)

    common = (train_data, args.iters, args.batch_size, args.seed, args.lr_final)
    walls = {"Latent ODE": train("latent", lode, lode_loss, *common)}
    models: dict[str, nn.Module] = {"Latent ODE": lode.eval()}
    if not args.latent_only:
        rnn_args = (train_data, args.rnn_iters or args.iters, *common[2:])
        walls["RNN"] = train("rnn", gru, gru_loss, *rnn_args)
        models["RNN"] = gru.eval()
    res = evaluate(models, test_data, args.seed + 100)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures(lode, None if args.latent_only else gru, test_data, out.parent, out.stem)
    total = time.perf_counter() - t_start
    out.write_text(report(args, res, walls, total) + notes(out))
    print(out.read_text())
    if not math.isfinite(total):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
