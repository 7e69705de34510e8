"""Augmented Neural ODEs (Dupont et al. 2019): where a plain Neural ODE fails, and the fix.

Two tasks, each trained with a plain `NeuralODE` and an `AugmentedNeuralODE` (one extra zero
coordinate), MLP field (tanh, 2 x 32 hidden), dopri5 at tolerance 1e-3, backprop, Adam:

- the 1-D map ``g(1) = -1, g(-1) = 1``, read out as the first coordinate of ``h(1)`` (identity
  readout: what the flow alone represents). A 1-D flow preserves order, so the best a plain
  Neural ODE can do is map both points towards 0: MSE >= 1;
- concentric circles in 2-D: ``||x|| <= 0.5`` is class -1, ``1 <= ||x|| <= 1.5`` class +1; a
  linear readout of ``h(1)`` trained with MSE on the labels (Dupont's setting); accuracy is
  the sign. A homeomorphism of the plane cannot pull the disk out of the annulus, so a plain
  Neural ODE can only approximate it with contorted, expensive flows.

Measured: final training loss, test accuracy (circles, 20,000 fresh points), forward NFE at the
end of training, for seeds 0, 1, 2; figure of the learned flows (trajectories).

Command (about 10 min on a shared 2-core CPU)::

    .venv/bin/python experiments/anode.py --output reports/anode.md
    .venv/bin/python experiments/anode.py --output /tmp/anode.md --quick   # smoke run
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import matplotlib
import torch
from torch import Tensor

from latentode.nn.odenet import AugmentedNeuralODE, NeuralODE

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["circles", "main"]

SOLVER = {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3, "gradient": "backprop"}


def circles(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` points, half in the disk ``r <= 0.5`` (label -1), half in ``1 <= r <= 1.5`` (+1).

    Radii are uniform in each range, angles uniform. Returns ``(x, y)``: ``(n, 2)``, ``(n, 1)``.
    """
    inner = torch.rand(n, generator=generator) < 0.5  # (n,)
    u = torch.rand(n, generator=generator)
    radius = torch.where(inner, 0.5 * u, 1.0 + 0.5 * u)  # (n,)
    angle = 2 * math.pi * torch.rand(n, generator=generator)
    x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)  # (n, 2)
    y = torch.where(inner, -1.0, 1.0).unsqueeze(1)  # (n, 1)
    return x, y


def make_model(task: str, augmented: bool) -> NeuralODE:
    """The model of one task: identity readout for the 1-D map, linear for the circles."""
    dim, out_dim = (1, None) if task == "map1d" else (2, 1)
    kw: dict[str, Any] = {"out_dim": out_dim, "hidden": 32, "depth": 2, "activation": "tanh"}
    if augmented:
        return AugmentedNeuralODE(dim, augment_dim=1, **kw, **SOLVER)
    return NeuralODE(dim, **kw, **SOLVER)


def train(task: str, augmented: bool, seed: int, iters: int) -> dict[str, Any]:
    """Train one model; return it with its loss curve, final loss, accuracy and NFE."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model(task, augmented)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if task == "map1d" else 3e-3)
    if task == "map1d":
        x_train = torch.tensor([[1.0], [-1.0]])  # (2, 1)
        y_train = -x_train
    else:
        x_train, y_train = circles(1000, gen)
    losses, nfes = [], []
    for _ in range(iters):
        opt.zero_grad()
        loss = (model(x_train) - y_train).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        nfes.append(model.block.nfe_forward)
    with torch.no_grad():
        final = float((model(x_train) - y_train).pow(2).mean())
        out: dict[str, Any] = {"model": model, "losses": losses, "loss": final}
        out["nfe"] = sum(nfes[-20:]) / len(nfes[-20:])
        hit = [i for i, v in enumerate(losses) if v < 0.05]
        out["iters_to_0.05"] = hit[0] + 1 if hit else None
        if task == "circles":
            x_test, y_test = circles(20_000, torch.Generator().manual_seed(1000 + seed))
            out["accuracy"] = float((model(x_test).sign() == y_test).float().mean())
            out["test_loss"] = float((model(x_test) - y_test).pow(2).mean())
        else:
            out["accuracy"] = float((model(x_train).sign() == y_train).float().mean())
    return out


def plot_flows(runs: dict[tuple[str, bool], list[dict[str, Any]]], path: Path) -> None:
    """Trajectories of the learned flows (seed 0): 1-D map and circles, NODE vs ANODE."""
    t = torch.linspace(0, 1, 41)
    fig = plt.figure(figsize=(12, 6.5))
    with torch.no_grad():
        # 1-D map: h(t) against t for the plain flow; the (h, a) plane for the augmented one.
        for col, aug in enumerate((False, True)):
            model = runs[("map1d", aug)][0]["model"]
            x = torch.linspace(-1.2, 1.2, 13).unsqueeze(1)  # (13, 1)
            traj = model.block.trajectory(x, t)  # (T, 13, 1 + A)
            ax = fig.add_subplot(2, 4, 1 + 2 * col)
            for i in range(x.shape[0]):
                c = "C3" if float(x[i]) > 0 else "C0"
                ax.plot(
                    t, traj[:, i, 0], color=c, lw=1.5 if abs(abs(float(x[i])) - 1) < 1e-6 else 0.6
                )
            ax.set(xlabel="t", ylabel="h(t)", title=("ANODE" if aug else "NODE") + ": g(±1) = ∓1")
            ax.axhline(0, color="k", lw=0.4)
            if aug:
                ax2 = fig.add_subplot(2, 4, 2 + 2 * col)
                for i in range(x.shape[0]):
                    c = "C3" if float(x[i]) > 0 else "C0"
                    ax2.plot(traj[:, i, 0], traj[:, i, 1], color=c, lw=0.8)
                    ax2.plot(traj[-1, i, 0], traj[-1, i, 1], "k.", ms=3)
                ax2.set(xlabel="h", ylabel="augmented a", title="ANODE flow in (h, a)")
            else:
                ax2 = fig.add_subplot(2, 4, 2)
                loss = runs[("map1d", aug)][0]["losses"]
                loss_a = runs[("map1d", True)][0]["losses"]
                ax2.semilogy(loss, label="NODE")
                ax2.semilogy(loss_a, label="ANODE")
                ax2.set(xlabel="iteration", ylabel="MSE", title="1-D map: training loss")
                ax2.legend()
        # Circles: the plane's trajectories (NODE) and the final features (both).
        x, y = circles(300, torch.Generator().manual_seed(7))
        colors = ["C0" if float(v) < 0 else "C3" for v in y[:, 0]]
        for col, aug in enumerate((False, True)):
            model = runs[("circles", aug)][0]["model"]
            traj = model.block.trajectory(x, t)  # (T, 300, 2 + A)
            ax = fig.add_subplot(2, 4, 5 + 2 * col)
            for i in range(0, x.shape[0], 3):
                ax.plot(traj[:, i, 0], traj[:, i, 1], color=colors[i], lw=0.4, alpha=0.6)
            ax.scatter(traj[-1, :, 0], traj[-1, :, 1], c=colors, s=4)
            ax.set(title=("ANODE" if aug else "NODE") + ": circles, flow in (h1, h2)")
            ax.set_aspect("equal")
            if aug:
                ax3 = fig.add_subplot(2, 4, 6 + 2 * col, projection="3d")
                ax3.scatter(traj[-1, :, 0], traj[-1, :, 1], traj[-1, :, 2], c=colors, s=4)
                ax3.set(title="ANODE h(1) in 3-D", xlabel="h1", ylabel="h2", zlabel="a")
            else:
                ax3 = fig.add_subplot(2, 4, 6)
                score = model(x)[:, 0]  # (300,)
                r = x.norm(dim=1)
                ax3.scatter(r, score, c=colors, s=4)
                ax3.axhline(0, color="k", lw=0.4)
                ax3.set(xlabel="|x|", ylabel="readout", title="NODE: readout of h(1) vs |x|")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(values: list[float], pct: bool = False) -> str:
    t = torch.tensor(values, dtype=torch.float64) * (100.0 if pct else 1.0)
    return (
        f"{float(t.mean()):.3g} ± {float(t.std()):.2g}" if len(values) > 1 else f"{float(t[0]):.3g}"
    )


def _iters(runs: list[dict[str, Any]]) -> str:
    """Iterations to MSE < 0.05 per seed ("never" when not reached)."""
    return ", ".join(
        "never" if x["iters_to_0.05"] is None else str(x["iters_to_0.05"]) for x in runs
    )


def write_report(
    runs: dict[tuple[str, bool], list[dict[str, Any]]],
    args: argparse.Namespace,
    wall: float,
    figure: Path,
) -> str:
    """The markdown report."""
    lines = [
        "# Augmented Neural ODEs: the 1-D map and concentric circles (Dupont et al. 2019)",
        "",
        f"Command: `.venv/bin/python experiments/anode.py --output {args.output}"
        + (" --quick`" if args.quick else "`"),
        f"Wall time: {wall / 60:.1f} min on a shared 2-core CPU (torch threads = 1).",
        f"Seeds: {args.seeds} (init and data); iterations: 1-D map {args.iters_map}, circles "
        f"{args.iters_circles} (full batch, 1000 points; test on 20,000 fresh points).",
        "Model: MLP field [h, t] -> 32 -> 32 -> D (tanh), dopri5 rtol = atol = 1e-3, backprop; "
        "ANODE appends 1 zero coordinate. Mean ± std over seeds.",
        "",
        "| task | model | final train MSE | accuracy (%) | forward NFE (end) "
        "| iterations to MSE < 0.05 |",
        "|---|---|---|---|---|---|",
    ]
    for task, name in (("map1d", "g(±1) = ∓1 (1-D)"), ("circles", "concentric circles (2-D)")):
        for aug in (False, True):
            r = runs[(task, aug)]
            lines.append(
                f"| {name} | {'ANODE (+1 dim)' if aug else 'Neural ODE'} "
                f"| {_fmt([x['loss'] for x in r])} | {_fmt([x['accuracy'] for x in r], True)} "
                f"| {_fmt([x['nfe'] for x in r])} | {_iters(r)} |"
            )
    node_map = min(x["loss"] for x in runs[("map1d", False)])
    anode_map = max(x["loss"] for x in runs[("map1d", True)])
    node, anode = runs[("circles", False)], runs[("circles", True)]

    def mean(rs: list[dict[str, Any]], key: str) -> float:
        return sum(float(x[key]) for x in rs) / len(rs)

    def iters(rs: list[dict[str, Any]]) -> float:
        hit = [x for x in rs if x["iters_to_0.05"] is not None]
        return mean(hit, "iters_to_0.05") if hit else float("nan")

    wrong = [20_000 * (1 - mean(r, "accuracy")) for r in (node, anode)]
    lines += [
        "",
        "Accuracy: 1-D map, sign of h(1) on the two training points; circles, sign of the "
        "readout on the 20,000 test points.",
        "",
        "## Outcome",
        "",
        f"- 1-D map, a strict failure: the plain Neural ODE's best seed ends at MSE {node_map:.3f}"
        " (the bound for an order-preserving map is 1: both points squeezed to 0, each on the "
        f"wrong side), while ANODE's worst seed reaches {anode_map:.2g}.",
        f"- Circles, a failure in cost rather than accuracy: the plain Neural ODE reaches "
        f"{mean(node, 'accuracy') * 100:.2f}% test accuracy (ANODE "
        f"{mean(anode, 'accuracy') * 100:.2f}%). It cannot represent the map (a homeomorphism "
        "of the plane keeps the disk inside the annulus), so it stretches the annulus into a "
        "thin band with a narrow neck that the disk is pushed past; the points near the neck "
        f"stay misclassified ({wrong[0]:.0f} of 20,000 per seed on average vs {wrong[1]:.0f} "
        f"for ANODE). It needs {iters(node):.0f} iterations on average to reach MSE 0.05 "
        f"(ANODE {iters(anode):.0f}), ends at {mean(node, 'loss') / mean(anode, 'loss'):.1f}x "
        f"ANODE's MSE, with {mean(node, 'nfe'):.0f} vs {mean(anode, 'nfe'):.0f} function "
        "evaluations per forward solve. Dupont et al. report the same: NODEs fit this map only "
        "approximately, with more complex flows and more evaluations.",
        "",
        f"![learned flows]({figure.name})",
        "",
        "Seed 0. Top: the 1-D map. The plain flow's trajectories cannot cross, so +1 (red) and "
        "-1 (blue) both end near 0; with one augmented coordinate they pass each other in the "
        "(h, a) plane. Bottom: circles. The plain flow squeezes the annulus (red) into a thin "
        "band around the disk (blue); its readout against |x| shows the misclassified sliver. "
        "ANODE lifts the disk along the extra axis, where a plane separates the classes.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("reports/anode.md"))
    p.add_argument("--quick", action="store_true", help="few iterations, 1 seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iters-map", type=int, default=300)
    p.add_argument("--iters-circles", type=int, default=600)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.iters_map, args.iters_circles = [0], 30, 30
    return args


def main(argv: list[str] | None = None) -> None:
    """Train every (task, model, seed), then write the report and the figure."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    runs: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for task in ("map1d", "circles"):
        iters = args.iters_map if task == "map1d" else args.iters_circles
        for aug in (False, True):
            runs[(task, aug)] = []
            for seed in args.seeds:
                res = train(task, aug, seed, iters)
                runs[(task, aug)].append(res)
                print(
                    f"{task} aug={aug} seed={seed}: loss {res['loss']:.4f} "
                    f"acc {res['accuracy']:.3f} nfe {res['nfe']:.0f}",
                    flush=True,
                )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure = args.output.with_name(args.output.stem + "_flows.png")
    plot_flows(runs, figure)
    text = write_report(runs, args, time.perf_counter() - start, figure)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
