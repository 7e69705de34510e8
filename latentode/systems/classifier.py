"""Lightning system of the image classifiers of Chen et al. (2018, Table 1).

One system wraps any of the four classifiers of `latentode.nn.odenet` by name; it trains with
cross-entropy, scores accuracy with one torchmetrics object per stage, and for the models with
an `ODEBlock` logs the function evaluations of each training step's forward and backward pass
(the paper's Fig. 3).

Usage::

    latentode fit --config configs/odenet_digits.yaml
"""

from __future__ import annotations

import inspect
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from ..data.errors import same_on_every_process
from ..nn.base import ModelInputError
from ..nn.odenet import (
    MLPClassifier,
    ODEBlock,
    ODENetClassifier,
    ResNetClassifier,
    RKNetClassifier,
)
from .guard import guarded
from .rng import ExactResume
from .schedules import check_optimizer, check_schedule, make_schedule

__all__ = ["CLASSIFIERS", "ClassifierConfigError", "ODENetSystem", "build_classifier", "ode_blocks"]

#: Names accepted by `ODENetSystem` and the classes they build.
CLASSIFIERS: dict[str, type[nn.Module]] = {
    "odenet": ODENetClassifier,
    "resnet": ResNetClassifier,
    "rknet": RKNetClassifier,
    "mlp": MLPClassifier,
}


#: The ODE solver settings of `ODENetClassifier` among its keywords.
_SOLVER_KEYS = frozenset({"gradient", "method", "rtol", "atol", "step_size", "options"})


class ClassifierConfigError(ModelInputError):
    """An unknown classifier name or argument, or data the model does not fit; the message
    says what to change."""


def build_classifier(
    model: str,
    in_channels: int,
    image_size: int,
    num_classes: int,
    width: int,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Instantiate a classifier by name.

    Args:
        model: one of `CLASSIFIERS` (``"odenet"``, ``"resnet"``, ``"rknet"``, ``"mlp"``).
        in_channels, image_size, num_classes: the data's shape.
        width: channels of the convolutional models; hidden units of the MLP.
        model_kwargs: further keyword arguments of the class (e.g. ``gradient``, ``rtol``,
            ``augment_dim`` for the ODE-Net, ``num_blocks`` for the ResNet).

    Raises:
        ClassifierConfigError: unknown name, or a keyword the class does not take.
    """
    if model not in CLASSIFIERS:
        raise ClassifierConfigError(f"unknown model {model!r}; choose one of {list(CLASSIFIERS)}.")
    kw = dict(model_kwargs or {})
    size_key = "hidden" if model == "mlp" else "width"
    _check_model_kwargs(model, size_key, kw)
    try:
        return CLASSIFIERS[model](in_channels, image_size, num_classes, **{size_key: width}, **kw)
    except TypeError as err:
        raise ClassifierConfigError(f"bad model_kwargs {kw!r} for model {model!r}: {err}") from err


def _check_model_kwargs(model: str, size_key: str, kw: dict[str, Any]) -> None:
    """Refuse keywords the class of ``model`` does not take, saying which it does."""
    own = ("in_channels", "image_size", "num_classes", size_key)
    if given := sorted(set(kw) & set(own)):
        raise ClassifierConfigError(
            f"set {given} as ODENetSystem arguments (--model.init_args.{given[0]} ...), not in "
            "model_kwargs."
        )
    params = inspect.signature(CLASSIFIERS[model]).parameters
    takes = [name for name in params if name not in own]
    unknown = sorted(set(kw) - set(takes))
    if not unknown:
        return
    solver = sorted(set(unknown) & _SOLVER_KEYS)
    why = (
        f" ({', '.join(solver)}: the ODE-Net's solver settings; 'rknet' takes method and "
        "step_size of them, 'resnet' and 'mlp' none)"
        if solver
        else ""
    )
    raise ClassifierConfigError(
        f"model {model!r} does not take model_kwargs {unknown}{why}; it takes "
        f"{takes or 'none'}. Give only those, or none for its defaults: "
        "--model.init_args.model_kwargs '{}'."
    )


def ode_blocks(module: nn.Module) -> list[ODEBlock]:
    """The `ODEBlock` s inside ``module`` (empty for the ResNet and the MLP)."""
    return [m for m in module.modules() if isinstance(m, ODEBlock)]


class ODENetSystem(ExactResume, pl.LightningModule):
    """Cross-entropy training of an ODE-Net, RK-Net, ResNet or MLP classifier.

    Logs ``train/loss``, ``train/acc``, ``train/nfe_forward``, ``train/nfe_backward`` (ODE
    models), and ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc`` per epoch.

    Args:
        model: ``"odenet"``, ``"resnet"``, ``"rknet"`` or ``"mlp"``.
        in_channels, image_size, num_classes: the data (8x8 digits: 1, 8, 10; MNIST: 1, 28, 10).
        width: channels of the convolutional models (paper: 64); hidden units of the MLP.
        model_kwargs: further arguments of the classifier class.
        lr: Adam learning rate.
        weight_decay: L2 penalty.
        lr_schedule: ``"constant"`` or ``"cosine"`` (to zero over ``trainer.max_epochs``, or
            per step over ``max_steps`` for a run without an epoch limit;
            `latentode.systems.schedules`).

    Raises:
        ClassifierConfigError: in `setup`, a data module whose labels or image shape do not
            fit ``num_classes``, ``in_channels`` and ``image_size``.
    """

    def __init__(
        self,
        model: str = "odenet",
        in_channels: int = 1,
        image_size: int = 8,
        num_classes: int = 10,
        width: int = 32,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        check_schedule(lr_schedule, ClassifierConfigError)
        check_optimizer(lr, weight_decay, ClassifierConfigError)
        self.save_hyperparameters()  # plain values only: checkpoints load with weights_only=True
        self.model = build_classifier(
            model, in_channels, image_size, num_classes, width, model_kwargs
        )
        self.lr, self.weight_decay, self.lr_schedule = lr, weight_decay, lr_schedule
        self.num_classes, self.in_channels, self.image_size = num_classes, in_channels, image_size
        self.blocks = ode_blocks(self.model)
        # One metric object per stage (ModuleDict keys may not be "train": nn.Module.train).
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        """Check the data module's labels and image shape against the model once, before any
        step (`check_data`); a data module without ``label_range`` is not checked."""
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "label_range") and hasattr(dm, "image_shape"):
            self.check_data(type(dm).__name__, dm.label_range(), dm.image_shape())

    def check_data(self, name: str, labels: tuple[int, int], shape: tuple[int, int, int]) -> None:
        """Refuse data the model cannot classify.

        Args:
            name: the data's name, for the messages.
            labels: the smallest and largest label.
            shape: ``(C, H, W)`` of the images.

        Raises:
            ClassifierConfigError: labels outside ``[0, num_classes)``, or images of another
                shape than ``(in_channels, image_size, image_size)``.
        """
        lo, hi = labels
        if lo < 0 or hi >= self.num_classes:
            fix = (
                f"set --model.init_args.num_classes {hi + 1}"
                if lo >= 0
                else "relabel the classes 0, 1, ..., K - 1"
            )
            raise same_on_every_process(  # the whole data's labels: alike on every process
                ClassifierConfigError(
                    f"num_classes={self.num_classes} but the labels of {name} run from {lo} to "
                    f"{hi}; the labels must lie in 0..num_classes - 1: {fix}."
                )
            )
        if tuple(shape) != (self.in_channels, self.image_size, self.image_size):
            c, h, w = shape
            fix = f"--model.init_args.in_channels {c} --model.init_args.image_size {h}"
            raise same_on_every_process(
                ClassifierConfigError(
                    f"the images of {name} are {c}x{h}x{w} (channels x height x width) but the "
                    f"model takes in_channels={self.in_channels}, image_size={self.image_size}"
                    + (f": set {fix}." if h == w else "; the models take square images.")
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K)`` for images ``(B, C, H, W)``."""
        return self.model(x)

    def _cross_entropy(self, logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy; a label outside ``[0, num_classes)`` (data given without a data
        module that `setup` checks) raises `ClassifierConfigError` instead of torch's
        IndexError."""
        try:
            return F.cross_entropy(logits, y, reduction=reduction)
        except IndexError as err:
            raise ClassifierConfigError(
                f"a label lies outside 0..{self.num_classes - 1} (num_classes="
                f"{self.num_classes}; torch: {err}). Set --model.init_args.num_classes to the "
                "number of classes (largest label + 1)."
            ) from err

    @property
    def nfe_forward(self) -> int:
        """Function evaluations of the last forward pass, summed over the ODE blocks."""
        return sum(b.nfe_forward for b in self.blocks)

    @property
    def nfe_backward(self) -> int:
        """Function evaluations of the last backward pass, summed over the ODE blocks."""
        return sum(b.nfe_backward for b in self.blocks)

    @guarded
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on one batch of ``(images, labels)``."""
        x, y = batch  # (B, C, H, W), (B,)
        logits = self(x)  # (B, K)
        loss = self._cross_entropy(logits, y)
        self.train_acc(logits.detach(), y)
        B = y.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=B)
        if self.blocks:
            self.log("train/nfe_forward", float(self.nfe_forward), batch_size=B)
        return loss

    def on_after_backward(self) -> None:
        """Log the evaluations of the backward pass (adjoint solve; 0 for backprop)."""
        if self.blocks and self.training:
            self.log("train/nfe_backward", float(self.nfe_backward))

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        logits = self(x)  # (B, K)
        acc, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        mean_loss(self._cross_entropy(logits, y, reduction="none"))  # before acc: checks y
        acc(logits, y)
        B = y.shape[0]
        self.log(f"{stage}/acc", acc, on_step=False, on_epoch=True, batch_size=B)
        self.log(f"{stage}/loss", mean_loss, on_epoch=True, batch_size=B)
        if self.blocks:
            self.log(f"{stage}/nfe_forward", float(self.nfe_forward), batch_size=B)

    @guarded
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accuracy and loss on a validation batch."""
        self._evaluate(batch, "val")

    @guarded
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Accuracy and loss on a test batch."""
        self._evaluate(batch, "test")

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Class probabilities ``(B, K)``."""
        return self(batch[0]).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        """Adam, optionally with a cosine decay over the trainer's epochs."""
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return make_schedule(self.lr_schedule, opt, self.trainer, "epoch", ClassifierConfigError)
