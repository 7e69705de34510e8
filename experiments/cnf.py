"""Continuous normalizing flows on the eight FFJORD 2-D toys, with and without RNODE.

Every toy is fitted by maximum likelihood with a `CNF` (concat-squash field 2 -> 64 -> 64 -> 64
-> 2, softplus, T = 1, exact trace, dopri5 at rtol = atol = ``--train-tol``, backprop through
the solver), Adam with a cosine learning-rate decay, fresh samples every step (seeded). The
two toys with a target (checkerboard, 8gaussians) are trained longer (``--steps-main``), at
each training tolerance of ``--train-tols-main`` (1e-3 and FFJORD's 1e-5), without and with
the RNODE penalties (kinetic energy and Jacobian Frobenius norm, weights ``--rnode-weights``,
Finlay et al.'s 0.01 by default) for the same steps; stronger weights (``--sweep-weights``)
are trained at ``--train-tol`` only.

Measured per flow: test NLL in nats on 10,000 fresh points (seeded), exact trace, dopri5 at
rtol = atol = 1e-5; the entropy floor where known (`ENTROPY_FLOORS`); function evaluations per
solve (mean over the last 20 training solves, and of the test solve at the training tolerance);
a density heat map (``exp log p`` on a grid) and 2,000 samples.

Runs are cached in ``--workdir`` (one ``.pt`` per flow); ``--jobs`` trains flows in parallel
processes, one torch thread each.

Command (about 110 CPU-process minutes for all flows, about an hour with the default 2 jobs)::

    .venv/bin/python experiments/cnf.py --output reports/cnf.md
    .venv/bin/python experiments/cnf.py --output /tmp/cnf.md --quick   # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import matplotlib
import torch
from report_notes import notes

from latentode.data.toy2d import ENTROPY_FLOORS, TOY_DENSITIES, sample_toy
from latentode.nn.cnf import CNF

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["main", "train_flow"]

TARGET_TOYS = ("checkerboard", "8gaussians")
RNODE_WEIGHT = 0.01  # Finlay et al.; the targets are judged at this weight
LIM = 4.5  # heat maps and samples on [-LIM, LIM]^2
Key = tuple[str, float, float]  # (toy, RNODE weight, training tolerance)


def make_flow(w: float, tol: float) -> CNF:
    """The flow of every run, with RNODE weights ``w`` (kinetic and Jacobian; 0: plain)."""
    return CNF(
        2,
        (64, 64, 64),
        "softplus",
        rtol=tol,
        atol=tol,
        divergence="exact",
        gradient="backprop",
        kinetic_weight=w,
        jacobian_weight=w,
    )


@torch.no_grad()
def evaluate(flow: CNF, name: str, seed: int, n_test: int, train_tol: float) -> dict[str, Any]:
    """Test NLL (tight tolerance), NFE of the test solve, heat map and samples."""
    x_test = sample_toy(name, n_test, seed=10_000 + seed)  # (n_test, 2)
    out: dict[str, Any] = {}
    for key, tol in (("train_tol", train_tol), ("eval_tol", 1e-5)):
        flow.solve_kwargs.update(rtol=tol, atol=tol)
        nll = -flow.log_prob(x_test).mean()
        out[f"nll_{key}"], out[f"nfe_test_{key}"] = float(nll), flow.nfe_forward
    grid = torch.linspace(-LIM, LIM, 121)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1)  # (121^2, 2)
    flow.solve_kwargs.update(rtol=1e-4, atol=1e-4)
    out["density"] = flow.log_prob(pts).exp().reshape(121, 121)  # (121, 121)
    out["samples"] = flow.sample(2000, torch.Generator().manual_seed(seed))  # (2000, 2)
    flow.solve_kwargs.update(rtol=train_tol, atol=train_tol)
    return out


def train_flow(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one flow; cache the result in ``job["path"]``."""
    path = Path(job["path"])
    if path.is_file():
        return {**torch.load(path, weights_only=True), "weight": job["weight"]}
    torch.set_num_threads(1)
    torch.manual_seed(job["seed"])
    name, steps = job["name"], job["steps"]
    flow = make_flow(job["weight"], job["train_tol"])
    opt = torch.optim.Adam(flow.parameters(), lr=job["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(job["seed"])
    nll_curve, nfe_curve = [], []
    start = time.perf_counter()
    for _ in range(steps):
        x = sample_toy(name, job["batch"], generator=gen)  # (B, 2)
        out = flow(x)
        nll = -out.log_prob.mean()
        loss = nll + out.penalty.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        sched.step()
        nll_curve.append(nll.item())
        nfe_curve.append(flow.nfe_forward)
    train_time = time.perf_counter() - start
    result = {**{k: v for k, v in job.items() if k != "path"}, "train_time": train_time}
    result["nll_curve"], result["nfe_curve"] = nll_curve, nfe_curve
    result["nfe_train"] = sum(nfe_curve[-20:]) / len(nfe_curve[-20:])
    result.update(evaluate(flow, name, job["seed"], job["n_test"], job["train_tol"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, path)
    return result


def plot_toys(results: dict[Key, dict[str, Any]], tol: float, path: Path) -> None:
    """For every toy trained: data, model density, model samples (plain flows trained at
    ``tol``, or at the first tolerance they were trained at where not at ``tol``)."""
    toys = [n for n in TOY_DENSITIES if any(t == n and not w for t, w, _ in results)]
    fig, axes = plt.subplots(3, len(toys), figsize=(2.2 * len(toys), 6.8), squeeze=False)
    for j, name in enumerate(toys):
        res = results.get((name, 0.0, tol))
        if res is None:
            res = next(r for (toy, w, _), r in results.items() if toy == name and not w)
        data = sample_toy(name, 2000, seed=1)
        axes[0, j].scatter(data[:, 0], data[:, 1], s=1, alpha=0.4)
        axes[1, j].imshow(
            res["density"], extent=(-LIM, LIM, -LIM, LIM), origin="lower", cmap="viridis"
        )
        s = res["samples"]
        axes[2, j].scatter(s[:, 0], s[:, 1], s=1, alpha=0.4, color="C1")
        axes[0, j].set_title(name, fontsize=10)
        for i in range(3):
            axes[i, j].set(xlim=(-LIM, LIM), ylim=(-LIM, LIM), xticks=[], yticks=[])
            axes[i, j].set_aspect("equal")
    for i, label in enumerate(("data", "model density", "model samples")):
        axes[i, 0].set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_rnode(results: dict[Key, dict[str, Any]], toys: list[str], path: Path) -> None:
    """NFE per training solve and training NLL, with and without RNODE."""
    fig, axes = plt.subplots(1, 2 * len(toys), figsize=(6.5 * len(toys), 3.0), squeeze=False)
    axes = axes[0]
    for j, name in enumerate(toys):
        for (toy, w, tol), res in sorted(results.items()):
            if toy != name:
                continue
            label = (f"RNODE {w:g}" if w else "plain") + f", tol {tol:g}"
            axes[2 * j].plot(res["nfe_curve"], lw=0.8, label=label)
            nll = torch.tensor(res["nll_curve"])
            k = 25
            smooth = nll.unfold(0, k, 1).mean(1) if len(nll) > k else nll
            axes[2 * j + 1].plot(smooth, lw=0.8, label=label)
        if name in ENTROPY_FLOORS:
            axes[2 * j + 1].axhline(ENTROPY_FLOORS[name], color="k", ls="--", lw=0.6)
        axes[2 * j].set(title=f"{name}: NFE per solve", xlabel="step")
        axes[2 * j + 1].set(title=f"{name}: train NLL", xlabel="step")
        axes[2 * j + 1].set_ylim(
            ENTROPY_FLOORS.get(name, 2) - 0.2, ENTROPY_FLOORS.get(name, 2) + 1.5
        )
        axes[2 * j].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_tradeoff(
    results: dict[Key, dict[str, Any]], toys: list[str], tol: float, path: Path
) -> None:
    """Test NLL against NFE of the tight test solve for each RNODE weight (trained at ``tol``),
    with the target region: at least 2x fewer evaluations, at most 0.05 nats worse."""
    fig, axes = plt.subplots(1, len(toys), figsize=(4.2 * len(toys), 3.4), squeeze=False)
    for ax, name in zip(axes[0], toys, strict=True):
        runs = sorted((w, r) for (toy, w, t), r in results.items() if toy == name and t == tol)
        if not runs or runs[0][0] != 0.0:
            continue
        plain = runs[0][1]
        nfe0, nll0 = plain["nfe_test_eval_tol"], plain["nll_eval_tol"]
        xs = [r["nfe_test_eval_tol"] for _, r in runs]
        ys = [r["nll_eval_tol"] for _, r in runs]
        lo, hi = min(ys) - 0.02, max(*ys, nll0 + 0.05) + 0.02
        ax.fill_between([0, nfe0 / 2], lo, nll0 + 0.05, color="C2", alpha=0.15,
                        label="target: 2x fewer, <= +0.05 nats")  # fmt: skip
        ax.plot(xs, ys, "o-", color="C0")
        for (w, _), x, y in zip(runs, xs, ys, strict=True):
            ax.annotate(f"{w:g}" if w else "plain", (x, y), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)  # fmt: skip
        ax.set(title=f"{name}, trained at {tol:g}", xlabel="NFE per test solve (1e-5)",
               ylabel="test NLL (nats)", xlim=(0, 1.1 * max(xs)), ylim=(lo, hi))  # fmt: skip
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    results: dict[Key, dict[str, Any]],
    args: argparse.Namespace,
    wall: float,
    figures: tuple[Path, Path, Path],
) -> str:
    """The markdown report."""
    lines = [
        "# Continuous normalizing flows on the FFJORD 2-D toys",
        "",
        f"Command: `.venv/bin/python experiments/cnf.py {args.command}`",
        f"Wall time: {wall / 60:.1f} min for this invocation on a shared 2-core CPU "
        f"({args.jobs} worker processes, 1 torch thread each; cached runs in {args.workdir} are "
        "reused); training alone, summed over all flows: "
        f"{sum(r['train_time'] for r in results.values()) / 60:.1f} CPU-process min.",
        f"Seed: {args.seed} (init, training stream; test points seed {10_000 + args.seed}).",
        f"Training: batch {args.batch} fresh points per step, Adam lr {args.lr} with cosine "
        f"decay, grad-norm clip 10; {args.steps_main} steps on {', '.join(args.target_toys)} with "
        "dopri5 rtol = atol = "
        + " and ".join(f"{t:g}" for t in args.train_tols_main)
        + " (column 'train tol'), without and with RNODE (column 'RNODE': the weight of both "
        "penalties; "
        + ", ".join(f"{w:g}" for w in args.rnode_weights)
        + " at every training tolerance"
        + (
            ", " + ", ".join(f"{w:g}" for w in args.sweep_weights) + f" at {args.train_tol:g}"
            if args.sweep_weights
            else ""
        )
        + f"); {args.steps_other} steps on the others at {args.train_tol:g}; "
        "exact trace; field 2-64-64-64-2 concat-squash, softplus, T = 1.",
        f"Test: {args.n_test} fresh points, exact trace, dopri5 rtol = atol = 1e-5.",
        "",
        "| toy | train tol | RNODE | test NLL (nats) | entropy floor | gap | NFE / solve (train) "
        "| NFE test solve (train tol) | NFE test solve (1e-5) | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in TOY_DENSITIES:
        for (toy, w, tol), r in sorted(results.items(), key=lambda kv: (-kv[0][2], kv[0][1])):
            if toy != name:
                continue
            floor = ENTROPY_FLOORS.get(name)
            gap = "-" if floor is None else f"{r['nll_eval_tol'] - floor:+.3f}"
            fl = "-" if floor is None else f"{floor:.3f}"
            lines.append(
                f"| {name} | {tol:g} | {f'{w:g}' if w else '-'} | {r['nll_eval_tol']:.3f} | {fl} "
                f"| {gap} | {r['nfe_train']:.1f} | {r['nfe_test_train_tol']} "
                f"| {r['nfe_test_eval_tol']} | {r['train_time']:.0f} |"
            )
    lines += ["", "## Targets", ""]
    for name, tol in itertools.product(
        args.target_toys, sorted(args.train_tols_main, reverse=True)
    ):
        plain = results.get((name, 0.0, tol))
        if plain is None:
            continue
        gap = plain["nll_eval_tol"] - ENTROPY_FLOORS[name]
        lines.append(
            f"- {name}, trained at {tol:g}: test NLL within 0.15 nats of the floor: gap "
            f"{gap:+.3f} -> " + ("met" if gap <= 0.15 else f"missed by {gap - 0.15:.3f} nats")
        )
        for (toy, w, t), reg in sorted(results.items()):
            if toy != name or t != tol or not w:
                continue
            ratio = plain["nfe_test_eval_tol"] / reg["nfe_test_eval_tol"]
            ratio_train = plain["nfe_train"] / reg["nfe_train"]
            worse = reg["nll_eval_tol"] - plain["nll_eval_tol"]
            ok = ratio >= 2 and worse <= 0.05
            lines.append(
                f"- {name}, trained at {tol:g}: RNODE ({w:g}) NFE per test solve at 1e-5 "
                f"{reg['nfe_test_eval_tol']} vs "
                f"{plain['nfe_test_eval_tol']} ({ratio:.2f}x fewer; target >= 2x; at the "
                f"training tolerance {ratio_train:.2f}x), NLL {worse:+.3f} nats (target <= "
                "+0.05) -> "
                + ("met" if ok else "missed")
                + ("" if w == RNODE_WEIGHT else f" (weight {w:g}, not Finlay's {RNODE_WEIGHT:g})")
            )
    lines += [
        "",
        "## Densities and samples",
        "",
        f"![toys]({figures[0].name})",
        "",
        "Top: data; middle: the model density exp(log p) on a 121 x 121 grid over [-4.5, 4.5]^2 "
        "(dopri5 1e-4); bottom: 2,000 samples of the reverse flow.",
        "",
        "## RNODE",
        "",
        f"![rnode]({figures[1].name})",
        "",
        "NFE per training solve and training NLL (moving average of 25 steps; dashed: floor).",
        "",
        f"![tradeoff]({figures[2].name})",
        "",
        f"Test NLL against evaluations per tight test solve, flows trained at {args.train_tol:g} "
        "with each RNODE weight (labels); the shaded corner is the target.",
    ]
    return "\n".join(lines) + "\n" + notes(args.output)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("reports/cnf.md"))
    p.add_argument("--workdir", type=Path, default=Path("runs/cnf_report"))
    p.add_argument("--quick", action="store_true", help="a few steps per toy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-toys", nargs="+", choices=TARGET_TOYS, default=list(TARGET_TOYS))
    p.add_argument("--steps-main", type=int, default=4000)
    p.add_argument("--steps-other", type=int, default=1000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--train-tol", type=float, default=1e-3, help="the toys without a target")
    p.add_argument("--train-tols-main", type=float, nargs="+", default=[1e-3, 1e-5])
    p.add_argument("--n-test", type=int, default=10_000)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--rnode-weights", type=float, nargs="+", default=[RNODE_WEIGHT])
    p.add_argument(
        "--sweep-weights",
        type=float,
        nargs="*",
        default=[0.03, 0.05, 0.1],
        help="further RNODE weights, trained at --train-tol only",
    )
    args = p.parse_args(argv)
    args.command = shlex.join(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.steps_main, args.steps_other, args.batch, args.n_test = 6, 3, 128, 500
        args.train_tols_main, args.sweep_weights = [1e-3], []
        args.workdir = args.workdir.with_name(args.workdir.name + "_quick")
    return args


def main(argv: list[str] | None = None) -> None:
    """Train (or reuse) every flow, then write the report and figures."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    jobs = []
    runs = [
        (name, w, tol)
        for name in args.target_toys
        for w in (0.0, *args.rnode_weights)
        for tol in args.train_tols_main
    ]
    runs += [(name, w, args.train_tol) for name in args.target_toys for w in args.sweep_weights]
    runs += [(name, 0.0, args.train_tol) for name in TOY_DENSITIES if name not in TARGET_TOYS]
    runs = list(dict.fromkeys(runs))  # a sweep weight may repeat a --rnode-weights run
    for name, w, tol in runs:  # the target toys first: they take longest
        steps = args.steps_main if name in TARGET_TOYS else args.steps_other
        kind = "plain" if not w else f"rnode{w:g}"
        tag = f"{name}_{kind}_s{args.seed}_n{steps}_b{args.batch}_tol{tol:g}_lr{args.lr:g}"
        jobs.append(
            {
                "name": name,
                "weight": w,
                "steps": steps,
                "seed": args.seed,
                "batch": args.batch,
                "lr": args.lr,
                "train_tol": tol,
                "n_test": args.n_test,
                "path": str(args.workdir / f"{tag}.pt"),
            }
        )
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(train_flow, jobs))
    results = {(r["name"], r["weight"], r["train_tol"]): r for r in done}
    for r in done:
        print(
            f"{r['name']} rnode={r['weight']} tol={r['train_tol']:g}: NLL {r['nll_eval_tol']:.3f} "
            f"NFE {r['nfe_train']:.1f} ({r['train_time']:.0f} s)",
            flush=True,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figures = (
        args.output.with_name(args.output.stem + "_toys.png"),
        args.output.with_name(args.output.stem + "_rnode.png"),
        args.output.with_name(args.output.stem + "_tradeoff.png"),
    )
    plot_toys(results, args.train_tol, figures[0])
    plot_rnode(results, args.target_toys, figures[1])
    plot_tradeoff(results, args.target_toys, args.train_tol, figures[2])
    text = write_report(results, args, time.perf_counter() - start, figures)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
