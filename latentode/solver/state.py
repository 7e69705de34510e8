"""Packing of tensor / tuple states into the flat ``[1, N]`` rows the engine works on.

The engine stores stages as rows of one ``[S, N]`` matrix, so a stage combination is a single
``addmm``. A single-tensor state is a view; a tuple is concatenated. With per-sample time grids
the layout is sample-major (``[B, D]`` flattened), so sample ``b`` owns columns
``b * D .. (b + 1) * D``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import SolverInputError

__all__ = ["RHS", "Packer", "autocast_state", "promote_half", "solver_arithmetic"]

State = Tensor | tuple[Tensor, ...]
HALF = (torch.float16, torch.bfloat16)


class Autocast(NamedTuple):
    """The autocast region a solve was called in: its dtype and whether it caches casts."""

    dtype: torch.dtype
    cache: bool


def autocast_state(device: torch.device | None) -> Autocast | None:
    """The autocast region active for ``device``'s type here, or None."""
    if device is None:
        return None
    try:
        if torch.is_autocast_enabled(device.type):
            dtype = torch.get_autocast_dtype(device.type)
            return Autocast(dtype, torch.is_autocast_cache_enabled())
    except (RuntimeError, ValueError):  # a device type autocast does not know
        pass
    return None


def promote_half(y: State) -> State:
    """A state with its float16 / bfloat16 pieces as float32 (differentiably)."""
    if isinstance(y, tuple | list):
        return tuple(promote_half(p) for p in y)
    return y.float() if isinstance(y, Tensor) and y.dtype in HALF else y


def solver_arithmetic(device: torch.device | None, amp: Autocast | None) -> AbstractContextManager:
    """Autocast switched off for the solver's own operations where it is on (``amp``).

    Under ``torch.autocast`` (Lightning's ``precision="16-mixed"`` / ``"bf16-mixed"``) the
    stage combinations and the error estimate would otherwise run as half-precision matrix
    products, rounding the state to 3 significant digits every step; the vector field still
    runs under autocast (`RHS`).
    """
    return torch.autocast(device.type, enabled=False) if amp is not None else nullcontext()


class Packer:
    """Converts between the user's state (tensor or tuple) and flat rows.

    Args:
        y0: the initial state.
        batch: the batch size for per-sample time grids (sample-major layout), else None.
    """

    def __init__(self, y0: State, batch: int | None) -> None:
        self.is_tuple = isinstance(y0, tuple | list)
        pieces = tuple(y0) if self.is_tuple else (y0,)
        if not pieces:
            raise SolverInputError("y0 is an empty tuple: give at least one state tensor.")
        for i, p in enumerate(pieces):
            name = f"y0[{i}]" if self.is_tuple else "y0"
            if not isinstance(p, Tensor):
                raise SolverInputError(f"{name} must be a torch.Tensor, got {type(p).__name__}.")
            if not p.is_floating_point():
                raise SolverInputError(
                    f"{name} has dtype {p.dtype}; the state must be floating point "
                    "(use y0.float() or y0.double())."
                )
            if p.dtype != pieces[0].dtype or p.device != pieces[0].device:
                raise SolverInputError(
                    "all state tensors must share one dtype and device; got "
                    f"{[(q.dtype, str(q.device)) for q in pieces]}."
                )
            if batch is not None and (p.dim() == 0 or p.shape[0] != batch):
                raise SolverInputError(
                    f"per-sample time grids have {batch} rows, so {name} must have leading "
                    f"batch dimension {batch}; got shape {tuple(p.shape)}."
                )
        self.shapes = [p.shape for p in pieces]
        self.dtype, self.device = pieces[0].dtype, pieces[0].device
        self.batch = batch
        self.numels = [p.numel() for p in pieces]
        self.n = sum(self.numels)
        # Per-sample widths (columns of one sample) in the sample-major layout.
        self.widths = [n // batch for n in self.numels] if batch else None
        self.width = self.n // batch if batch else self.n

    def pack(self, y: State) -> Tensor:
        """Flatten a state to a ``[1, N]`` row (a view for a single contiguous tensor)."""
        if not self.is_tuple:
            return y.reshape(1, self.n)
        if self.batch is None:
            return torch.cat([p.reshape(1, -1) for p in y], dim=1)
        return torch.cat([p.reshape(self.batch, -1) for p in y], dim=1).reshape(1, self.n)

    def pack_out(self, out: State, cast: bool = False) -> Tensor:
        """Flatten the vector field's output, checking it has the state's structure and dtype
        (``cast``: an output of another dtype is cast to the state's, as under autocast)."""
        if not self.is_tuple:
            if not isinstance(out, Tensor) or out.shape != self.shapes[0]:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise SolverInputError(
                    f"func(t, y) returned {got}; it must return a tensor of the state's shape "
                    f"{tuple(self.shapes[0])}."
                )
            if out.dtype != self.dtype:
                out = self._cast(out, cast)
            return out.reshape(1, self.n)
        if not isinstance(out, tuple | list) or len(out) != len(self.shapes):
            raise SolverInputError(
                f"func(t, y) must return a tuple of {len(self.shapes)} tensors like the state."
            )
        for o, s in zip(out, self.shapes, strict=True):
            if not isinstance(o, Tensor) or o.shape != s:
                got = tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__
                raise SolverInputError(
                    f"func(t, y) returned a piece {got} for a state piece of shape {tuple(s)}."
                )
        return self.pack(tuple(o if o.dtype == self.dtype else self._cast(o, cast) for o in out))

    def _cast(self, out: Tensor, cast: bool) -> Tensor:
        """``out`` (of another dtype than the state) cast to the state's, or refused."""
        if cast:
            return out.to(self.dtype)
        raise SolverInputError(
            f"func(t, y) returned dtype {out.dtype} for a state of dtype {self.dtype}; return "
            "the state's dtype (or run the solve under torch.autocast, which casts it)."
        )

    def unpack(self, row: Tensor) -> State:
        """Inverse of `pack` for one ``[1, N]`` row."""
        if not self.is_tuple:
            return row.view(self.shapes[0])
        if self.batch is None:
            parts = torch.split(row, self.numels, dim=1)
            return tuple(p.reshape(s) for p, s in zip(parts, self.shapes, strict=True))
        parts = torch.split(row.view(self.batch, self.width), self.widths, dim=1)
        return tuple(p.reshape(s) for p, s in zip(parts, self.shapes, strict=True))

    def unpack_series(self, rows: Tensor) -> State:
        """Unpack ``[T, N]`` (1-D grids) or ``[T, B, D]`` (per-sample grids) to ``[T, *shape]``."""
        T = rows.shape[0]
        if not self.is_tuple:
            return rows.reshape(T, *self.shapes[0])
        if self.batch is None:
            parts = torch.split(rows, self.numels, dim=1)
            return tuple(p.reshape(T, *s) for p, s in zip(parts, self.shapes, strict=True))
        parts = torch.split(rows.reshape(T, self.batch, self.width), self.widths, dim=2)
        return tuple(p.reshape(T, *s) for p, s in zip(parts, self.shapes, strict=True))


class RHS:
    """The vector field as the engine sees it: ``(t: float, y: [1, N]) -> [1, N]``.

    Counts function evaluations. The time is handed to ``func`` as a 0-d tensor of the state's
    dtype and device, created with ``torch.full`` (a fill, not a host-to-device copy).
    """

    def __init__(
        self,
        func: Callable[[Tensor, State], State],
        packer: Packer,
        amp: Autocast | None = None,
    ) -> None:
        self.func = func
        self.packer = packer
        self.amp = amp  # the autocast region the solve was called in: func runs under it
        self.nfe = 0
        self._last: tuple[weakref.ref, int] | None = None  # the last output's storage, version

    def _check_reused(self, out: State) -> None:
        """Refuse an output that is the previous call's tensor, changed in place since.

        With autograd the stages of a step are kept as ``func`` returned them until the step
        is combined; a field that writes into one preallocated buffer and returns it made
        every stage its last value (an error of 1e-3 instead of 4e-9 on ``y' = -y``). A
        constant tensor returned again, unchanged, is fine. Metadata only: no device read."""
        if not isinstance(out, Tensor):  # a tuple is concatenated into a new tensor
            return
        root = out if out._base is None else out._base
        last = self._last
        if last is not None and last[0]() is root and root._version != last[1]:
            raise SolverInputError(
                "func returned the tensor it returned on its previous call, written over in "
                "place since (a reused output buffer): the solver keeps each stage's value, "
                "so every stage would read the last one. Return a new tensor on each call "
                "(e.g. torch.empty_like(y) filled, or an out-of-place expression)."
            )
        self._last = (weakref.ref(root), root._version)

    def __call__(self, t: float, y: Tensor) -> Tensor:
        self.nfe += 1
        p = self.packer
        tt = torch.full((), t, dtype=p.dtype, device=p.device)
        if self.amp is None:
            out = self.func(tt, p.unpack(y))
            if torch.is_grad_enabled():
                self._check_reused(out)
            return p.pack_out(out)
        # The solver's operations run with autocast off (`solver_arithmetic`), and a backward
        # pass runs outside the caller's region: func gets the forward's autocast back.
        # Without its weight cache where a graph is built: one cached half-precision copy of a
        # weight used by every call of a solve sums all their gradients in half precision (a
        # 20% error in dL/dW over 275 steps in bfloat16 under backprop); a cast per call
        # sends each call's gradient to the float32 weight, which sums them in float32.
        cache = self.amp.cache and not torch.is_grad_enabled()
        with torch.autocast(p.device.type, dtype=self.amp.dtype, cache_enabled=cache):
            out = self.func(tt, p.unpack(y))
        if torch.is_grad_enabled():
            self._check_reused(out)
        return p.pack_out(out, cast=True)


def flatten_params(params: Sequence[Tensor]) -> Tensor:
    """Concatenate parameters into one ``[1, P]`` row."""
    return torch.cat([p.reshape(1, -1) for p in params], dim=1)
