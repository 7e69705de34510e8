"""The benchmark workload: an MLP vector field with a rotation term, its problem and references.

The field is

    f(t, y) = s * MLP(y) + y @ A,
    MLP = Linear(16, 64) - Tanh - Linear(64, 64) - Tanh - Linear(64, 16)

with `A` block-diagonal and skew-symmetric (eight 2x2 rotations with angular frequencies
`OMEGA_MIN .. OMEGA_MAX`). The rotation keeps the trajectory oscillating, so dopri5 needs a steady
number of steps per unit time; the MLP (scaled by `s`) makes it nonlinear. Every library calls the
same `CountingField`, so function evaluations are counted identically for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchdiffeq
from torch import Tensor, nn

__all__ = [
    "ATOL",
    "BATCH_SIZES",
    "MLP_SCALE",
    "N_OUT",
    "OMEGA_MAX",
    "OMEGA_MIN",
    "REPO_ROOT",
    "RTOL",
    "SEED",
    "STATE",
    "T_END",
    "CountingField",
    "flat_grad",
    "make_call_timer",
    "make_field",
    "make_problem",
    "reference_gradient",
    "reference_solution",
]

REPO_ROOT = Path(__file__).resolve().parents[1]

STATE, HIDDEN = 16, 64
MLP_SCALE = 2.0
OMEGA_MIN, OMEGA_MAX = 1.0, 3.0
T_END = 20.0
N_OUT = 100
RTOL, ATOL = 1e-3, 1e-4
BATCH_SIZES = (256, 16)
SEED = 0


class CountingField(nn.Module):
    """`f(t, y) = s * MLP(y) + y @ A`, counting its calls in `nfe`.

    Accepts `t` of any shape (a 0-d tensor from latentode / torchdiffeq, a `[B]` tensor from
    torchode); the field is autonomous.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(STATE, HIDDEN),
            nn.Tanh(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.Tanh(),
            nn.Linear(HIDDEN, STATE),
        )
        omega = torch.linspace(OMEGA_MIN, OMEGA_MAX, STATE // 2)
        rot = torch.zeros(STATE, STATE)
        idx = torch.arange(0, STATE, 2)
        rot[idx, idx + 1] = omega
        rot[idx + 1, idx] = -omega
        self.register_buffer("rot", rot)  # a constant, not a parameter: no gradient
        self.nfe = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return MLP_SCALE * self.net(y) + y @ self.rot  # (B, STATE)


def make_field(
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> CountingField:
    """The seeded field (default PyTorch init under `torch.manual_seed(SEED)`) on `device`.

    The parameters are drawn on the CPU and then moved, so every device gets the same field.
    """
    torch.manual_seed(SEED)
    return CountingField().to(device=device, dtype=dtype)


def make_problem(
    batch: int,
    dtype: torch.dtype = torch.float32,
    t_end: float = T_END,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """`y0 ~ N(0, I)` (seeded, `[batch, STATE]`) and `N_OUT` equally spaced times on [0, t_end].

    Drawn on the CPU and then moved to `device`, so every device gets the same problem.
    """
    gen = torch.Generator().manual_seed(SEED + 1)
    y0 = torch.randn(batch, STATE, generator=gen).to(device=device, dtype=dtype)  # (B, D)
    t = torch.linspace(0.0, t_end, N_OUT, dtype=torch.float64).to(device=device, dtype=dtype)
    return y0, t  # (B, D), (T,)


def flat_grad(field: nn.Module) -> Tensor:
    """All parameter gradients of `field`, flattened in a fixed order (float64)."""
    grads = []
    for p in field.parameters():
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        grads.append(g.detach().flatten().double())
    return torch.cat(grads)


def reference_solution(batch: int, t_end: float = T_END) -> Tensor:
    """Tight solution: torchdiffeq dopri5, float64, rtol = atol = 1e-10. Shape `[N_OUT, B, D]`."""
    field = make_field(torch.float64)
    y0, t = make_problem(batch, torch.float64, t_end)
    with torch.no_grad():
        return torchdiffeq.odeint(field, y0, t, rtol=1e-10, atol=1e-10, method="dopri5")


def reference_gradient(
    batch: int, t_end: float = T_END, adjoint_check: bool = False
) -> tuple[Tensor, float | None]:
    """Tight gradient of `sum(ys ** 2)` w.r.t. the MLP parameters.

    torchdiffeq backprop through dopri5 in float64 at rtol = atol = 1e-9, in chunks of 64
    samples (the loss is a sum over independent samples, so chunk gradients add up exactly).
    With `adjoint_check`, also compute torchdiffeq's seminorm adjoint at 1e-9 and return the
    relative L2 difference between the two as an estimate of the reference's own error.
    """
    field = make_field(torch.float64)
    y0, t = make_problem(batch, torch.float64, t_end)
    for chunk in y0.split(64):
        ys = torchdiffeq.odeint(field, chunk, t, rtol=1e-9, atol=1e-9, method="dopri5")
        ys.pow(2).sum().backward()
    ref = flat_grad(field)
    if not adjoint_check:
        return ref, None
    field.zero_grad(set_to_none=True)
    ys = torchdiffeq.odeint_adjoint(
        field, y0, t, rtol=1e-9, atol=1e-9, method="dopri5", adjoint_options={"norm": "seminorm"}
    )
    ys.pow(2).sum().backward()
    other = flat_grad(field)
    return ref, float((other - ref).norm() / ref.norm())


def _no_sync() -> None:
    """Nothing to wait for (CPU)."""


def make_call_timer(
    batch: int,
    n_inner: int = 50,
    device: torch.device | str = "cpu",
    sync: Callable[[], None] = _no_sync,
) -> Callable[[], float]:
    """A timer for one no-grad call of the float32 field at `batch` on `device`.

    Each call of the returned function times a block of `n_inner` calls and returns seconds
    per call; the benchmark calls it between solves so that it sees the same machine load.
    `sync` waits for the device's queued work (`timing.make_sync(device)`); it is called before
    the clock starts and before it stops.
    """
    field = make_field(device=device)
    y, _ = make_problem(batch, device=device)
    t0 = torch.zeros((), device=device)

    def block() -> float:
        with torch.no_grad():
            sync()
            start = time.perf_counter()
            for _ in range(n_inner):
                field(t0, y)
            sync()
            return (time.perf_counter() - start) / n_inner

    for _ in range(3):  # warm-up
        block()
    return block
