"""Time per CNF training step: the exact trace carried forward vs double backward vs Hutchinson.

The flow is the one of ``experiments/cnf.py`` (concat-squash 2-64-64-64-2, softplus, T = 1) on
a batch of checkerboard points. Every variant integrates with the same fixed-step RK4 grid, so
each makes the same number of function evaluations and only the cost of one evaluation and its
backward pass differs:

- ``carried``: what `CNF` does for its own field: the Jacobian carried through the layers
  (`CNFField.forward_with_jacobian`), then ordinary backprop;
- ``vjp``: `divergence_exact`: ``d`` vector-Jacobian products with ``create_graph``, then
  backprop through them (double backward), what `CNF` did before;
- ``hutchinson``: one vector-Jacobian product with Rademacher noise (an estimate).

Variants are timed round-robin (forward, backward, optimizer step from the same parameters and
points), one torch thread, median over repeats; the two exact variants' losses and gradients are
checked to agree.

    .venv/bin/python benchmarks/cnf_step.py --output reports/cnf_step.md
    .venv/bin/python benchmarks/cnf_step.py --repeats 3 --output /tmp/cnf_step.md   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from latentode.data.toy2d import sample_toy
from latentode.nn.cnf import CNF, _Dynamics
from latentode.solver import solve


class _Opaque(nn.Module):
    """The same field behind a plain module, so `CNF`'s dynamics take the generic exact path
    (`divergence_exact`: ``d`` vector-Jacobian products) instead of the carried Jacobian."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        return self.field(t, z)


def make_dynamics(flow: CNF, variant: str, noise: Tensor) -> _Dynamics:
    """The ``(z, dlogp)`` field of one variant: `CNF`'s own dynamics object in every case."""
    if variant == "carried":
        return _Dynamics(flow.field, None, regularize=False)
    if variant == "vjp":
        return _Dynamics(_Opaque(flow.field), None, regularize=False)
    return _Dynamics(flow.field, noise, regularize=False)


def step(flow: CNF, opt: torch.optim.Optimizer, variant: str, x: Tensor, n_steps: int) -> float:
    """One training step: ``-mean log p(x)`` through RK4 with ``n_steps`` steps; the loss."""
    noise = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)).to(x) * 2 - 1
    t = torch.tensor([0.0, 1.0])
    sol = solve(
        make_dynamics(flow, variant, noise),
        (x, x.new_zeros(x.shape[0])),
        t,
        method="rk4",
        step_size=1.0 / n_steps,
    )
    z, dlogp = sol.ys[0][-1], sol.ys[1][-1]
    loss = -(flow.base_log_prob(z) - dlogp).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def main(argv: list[str] | None = None) -> None:
    """Time the variants and write the markdown report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("reports/cnf_step.md"))
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rk4-steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = CNF(2, (64, 64, 64), "softplus")
    x = sample_toy("checkerboard", args.batch, seed=0)  # (B, 2)
    variants = ("carried", "vjp", "hutchinson")
    start = copy.deepcopy(base.state_dict())
    # exactness: one step of each exact variant from the same parameters
    grads = {}
    for v in ("carried", "vjp"):
        base.load_state_dict(start)
        opt = torch.optim.SGD(base.parameters(), lr=0.0)
        loss = step(base, opt, v, x, args.rk4_steps)
        grads[v] = (loss, [q.grad.clone() for q in base.parameters() if q.grad is not None])
    loss_gap = abs(grads["carried"][0] - grads["vjp"][0])
    grad_gap = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
        for a, b in zip(grads["carried"][1], grads["vjp"][1], strict=True)
    )
    times: dict[str, list[float]] = {v: [] for v in variants}
    flows = {v: copy.deepcopy(base) for v in variants}
    opts = {v: torch.optim.Adam(flows[v].parameters(), lr=1e-3) for v in variants}
    for i in range(args.repeats + 2):
        for v in variants:
            flows[v].load_state_dict(start)
            t0 = time.perf_counter()
            step(flows[v], opts[v], v, x, args.rk4_steps)
            if i >= 2:  # warm-up
                times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    cmd = " ".join(
        shlex.quote(a) for a in [".venv/bin/python", "benchmarks/cnf_step.py", *sys.argv[1:]]
    )
    lines = [
        "# CNF training step: exact trace carried forward vs double backward",
        "",
        f"Command: `{cmd}`",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        "1 thread, float32.",
        f"Flow 2-64-64-64-2 concat-squash softplus, batch {args.batch} checkerboard points, RK4 "
        f"with {args.rk4_steps} steps ({4 * args.rk4_steps} evaluations), Adam step; median of "
        f"{args.repeats} round-robin repeats.",
        "",
        "| variant | trace | ms / step | vs carried |",
        "|---|---|---:|---:|",
    ]
    kinds = {"carried": "exact", "vjp": "exact", "hutchinson": "estimate (1 probe)"}
    for v in variants:
        lines.append(f"| {v} | {kinds[v]} | {1e3 * med[v]:.1f} | {med[v] / med['carried']:.2f}x |")
    lines += [
        "",
        f"Carried vs vjp, same parameters: loss differs by {loss_gap:.1e}, gradients by at most "
        f"{grad_gap:.1e} (relative to each tensor's largest entry).",
    ]
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
