"""What ``--ckpt_path`` brings with it: the checkpoint's model settings, checked against the
configuration given.

Lightning builds the model of ``fit``/``validate``/``test --ckpt_path FILE`` from the settings
saved in the checkpoint, whatever the configuration says, so that the weights fit the model;
``--ckpt_path last`` it resumed from the configuration instead. Either way a difference went
unsaid: another model class ran with another data module (a CNF config resumed from a latent
ODE checkpoint ended in a traceback about dataloader states), a learning rate given on the
command line was replaced by the checkpoint's, a changed width ended in a ``state_dict`` size
mismatch and a changed activation resumed the weights under another function. Here both
paths use the checkpoint's settings, a class mismatch is refused, and each given setting the
checkpoint overrides is named.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .data.errors import DataError
from .systems.guard import newest_file

__all__ = [
    "check_classes",
    "data_differences",
    "differences",
    "last_candidate",
    "overridden_note",
    "saved_settings",
]

# Saved hyperparameters that record the fit's data rather than a setting the user gives.
_NOT_SETTINGS = frozenset({"_class_path", "_instantiator", "data_state"})
# Data-module settings that do not change the data (how it is loaded, not what it holds).
_LOADING_ONLY = frozenset({"num_workers"})


def last_candidate(root: str | Path | None) -> str | None:
    """The newest of ``<root>/checkpoints/last*.ckpt`` and ``<root>/hpc_ckpt_*.ckpt``: the
    file ``--ckpt_path last`` will resume from (`cli.resolve_last` picks it the same way
    once the trainer exists), or None."""
    root = Path(root or ".")
    return newest_file([*root.glob("checkpoints/last*.ckpt"), *root.glob("hpc_ckpt_*.ckpt")])


def saved_settings(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the data module's saved hyperparameters (``{}`` where none), read
    without loading the weights into memory (``mmap``)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return dict(ckpt.get("hyper_parameters") or {}), dict(
        ckpt.get("datamodule_hyper_parameters") or {}
    )


def _short(class_path: str | None) -> str:
    return (class_path or "?").rsplit(".", 1)[-1]


def check_classes(
    ckpt: str, model: Mapping[str, Any], data: Mapping[str, Any], given: Mapping[str, Any]
) -> None:
    """Refuse a checkpoint of another model class, or (when resuming a fit) one fitted with
    another data module class, than the configuration's.

    Args:
        ckpt: the checkpoint's path, for the message.
        model, data: the checkpoint's saved hyperparameters (`saved_settings`).
        given: ``{"model": class path, "data": class path or None, "subcommand": ...}``.

    Raises:
        DataError: naming both classes and where the fit's own configuration is.
    """
    fix = (
        " Give the configuration the checkpoint was fitted with (the run's logs/version_*/"
        "config.yaml holds it), or start a new fit without --ckpt_path."
    )
    saved = model.get("_class_path")
    if saved and given.get("model") and saved != given["model"]:
        raise DataError(
            f"--ckpt_path {ckpt} holds a {_short(saved)} ({saved}); the configuration gives "
            f"a {_short(given['model'])} ({given['model']})." + fix
        )
    saved = data.get("_class_path")
    if given.get("subcommand") == "fit" and saved and given.get("data") not in (None, saved):
        raise DataError(
            f"--ckpt_path {ckpt} was fitted on a {_short(saved)} ({saved}); the configuration "
            f"resumes it on a {_short(given['data'])} ({given['data']})." + fix
        )


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NOT_SETTINGS:
            continue
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(given: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """``"key GIVEN (checkpoint: SAVED)"`` for each setting present in both, flattened to
    dotted keys, whose values differ (numbers compared as numbers)."""
    a, b = _flat(given), _flat(saved)
    return [
        f"{k} {a[k]!r} (checkpoint: {b[k]!r})" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]
    ]


def overridden_note(ckpt: str, model: list[str], data: list[str]) -> None:
    """Warn about the given settings the checkpoint overrides (``model``) and, when resuming
    a fit, the data settings that differ from the fit's (``data``)."""
    if model:
        warnings.warn(
            f"--ckpt_path {ckpt}: the model is built with the checkpoint's settings, which its "
            f"weights were fitted with; these given ones differ and are not used: "
            f"{'; '.join(model)}.",
            stacklevel=2,
        )
    if data:
        warnings.warn(
            f"--ckpt_path {ckpt}: the fit resumes on data settings other than it started "
            f"with: {'; '.join(data)}. The rest of the fit sees other data.",
            stacklevel=2,
        )


def data_differences(given: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """`differences` of the data-module settings, leaving out those that only change how
    the data is loaded (``num_workers``)."""
    keep = {k: v for k, v in given.items() if k not in _LOADING_ONLY}
    return differences(keep, saved)
