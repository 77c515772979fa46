"""Small from-scratch models: source 001's "Model 0" CNN, source 002's Fashion-MNIST CNN and a linear baseline.

Stages (``model.stages``):

* ``seed1_cnn``: block1, block2, block3, fc, head
* ``fashion_cnn``: block1, block2, fc, head
* ``linear``: head

In every one of them the head sits on the penultimate feature vector (``model.feature_dim``): the
128-d hidden layer of ``seed1_cnn``, the 512-d hidden layer of ``fashion_cnn``, the flattened pixels
of ``linear``. For ``task="multitask"`` the valence/arousal regressor of
:class:`ferkit.models.heads.MultiTaskHead` reads that same vector.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ferkit.errors import ModelError
from ferkit.models.heads import FerNet, make_head
from ferkit.models.registry import ModelCard, register_model


def check_dropout(p: float, name: str = "dropout") -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise ModelError(f"{name} must be a number in [0, 1), got {p!r}") from None
    if not 0.0 <= p < 1.0:
        raise ModelError(f"{name} must be in [0, 1), got {p}")
    return p


def check_head(card: ModelCard, head: str) -> str:
    if head not in card.heads:
        raise ModelError(f"model {card.name} has no head {head!r}: use one of {', '.join(card.heads)}")
    return head


def _size2(v, what: str) -> tuple[int, int]:
    """``48``, ``"48"``, ``"48x40"``, ``"48,40"`` or ``(48, 40)`` -> ``(48, 40)``."""
    given = v
    if isinstance(v, str):
        v = [p for p in v.lower().replace("x", ",").split(",") if p.strip()]
    if isinstance(v, int) or (isinstance(v, (list, tuple)) and len(v) == 1):
        v = (v, v) if isinstance(v, int) else (v[0], v[0])
    try:
        h, w = (int(x) for x in v)
    except (TypeError, ValueError):
        raise ModelError(f"{what} must be an int or (height, width), got {given!r}") from None
    if h < 1 or w < 1:
        raise ModelError(f"{what} must be positive, got {given!r}")
    return h, w


# ---------------------------------------------------------------------------------------------- seed1_cnn

SEED1_CARD = ModelCard(
    name="seed1_cnn",
    input_size=(48, 48),
    in_channels=3,
    source="source 001 (Model 0, FaceExpressionModel)",
    description="3 conv blocks (16/32/64, BN, ReLU, maxpool) + Linear(2304->128), Dropout, ReLU + Linear(->k)",
    heads=("linear",),
    extra={"cam_stage": "block3"},
)


class Seed1CNN(FerNet):
    """Source 001's custom CNN, layer for layer. At 48x48 the last block gives 64x6x6 = 2304 features;
    other input sizes are average-pooled to 6x6 first (never at 48x48, so there it is exactly the source)."""

    first_conv = "block1.0"

    def __init__(self, num_classes: int, in_channels: int, task: str, dropout: float = 0.25):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=2, stride=2),
            )

        self.block1 = block(in_channels, 16)
        self.block2 = block(16, 32)
        self.block3 = block(32, 64)
        # Source order: Linear -> Dropout -> ReLU.
        self.fc = nn.Sequential(nn.Linear(64 * 6 * 6, 128), nn.Dropout(dropout), nn.ReLU(inplace=True))
        self.head = make_head(task, 128, nn.Linear(128, num_classes))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=128)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        if x.shape[-2:] != (6, 6):
            x = F.adaptive_avg_pool2d(x, (6, 6))
        return self.fc(torch.flatten(x, 1))


@register_model(SEED1_CARD)
def seed1_cnn(num_classes: int, in_channels: int, task: str, dropout: float = 0.25, head: str = "linear") -> nn.Module:
    check_head(SEED1_CARD, head)
    return Seed1CNN(num_classes, in_channels, task, dropout=check_dropout(dropout))


# -------------------------------------------------------------------------------------------- fashion_cnn

FASHION_CARD = ModelCard(
    name="fashion_cnn",
    input_size=(28, 28),
    in_channels=1,
    source="source 002 (Fashion-MNIST 3-class CNN)",
    description="conv5x5 32 x2, pool, conv3x3 64 x2, pool (dropout .25 each) + Linear(3136->512), BN, ReLU, "
    "Dropout .5 + Linear(->k)",
    heads=("linear",),
    extra={"cam_stage": "block2"},
)


class FashionCNN(FerNet):
    """Source 002's CNN. At 28x28 the last block gives 64x7x7 = 3136 features; other input sizes are
    average-pooled to 7x7 first (never at 28x28)."""

    first_conv = "block1.0"

    def __init__(self, num_classes: int, in_channels: int, task: str, dropout: float = 0.5, conv_dropout: float = 0.25):
        super().__init__()
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Dropout(conv_dropout),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Dropout(conv_dropout),
        )
        self.fc = nn.Sequential(
            nn.Linear(64 * 7 * 7, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.head = make_head(task, 512, nn.Linear(512, num_classes))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=512)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        if x.shape[-2:] != (7, 7):
            x = F.adaptive_avg_pool2d(x, (7, 7))
        return self.fc(torch.flatten(x, 1))


@register_model(FASHION_CARD)
def fashion_cnn(
    num_classes: int,
    in_channels: int,
    task: str,
    dropout: float = 0.5,
    conv_dropout: float = 0.25,
    head: str = "linear",
) -> nn.Module:
    check_head(FASHION_CARD, head)
    return FashionCNN(
        num_classes,
        in_channels,
        task,
        dropout=check_dropout(dropout),
        conv_dropout=check_dropout(conv_dropout, "conv_dropout"),
    )


# ------------------------------------------------------------------------------------------------- linear

LINEAR_CARD = ModelCard(
    name="linear",
    input_size=(48, 48),
    in_channels=1,
    source="ferkit baseline (logistic regression on pixels)",
    description="flatten + Linear(C*H*W -> k): shows whether a dataset is linearly separable from raw pixels",
    aliases=("logreg",),
    heads=("linear",),
)


class LinearBaseline(FerNet):
    """Flattened pixels -> Linear. Built for ``input_size``; other sizes are average-pooled to it."""

    def __init__(self, num_classes: int, in_channels: int, task: str, input_size: tuple[int, int] = (48, 48)):
        super().__init__()
        self.input_size = cast("tuple[int, int]", tuple(input_size))  # (H, W)
        d = in_channels * self.input_size[0] * self.input_size[1]
        self.head = make_head(task, d, nn.Linear(d, num_classes))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.adaptive_avg_pool2d(x, self.input_size)
        return torch.flatten(x, 1)


@register_model(LINEAR_CARD)
def linear(
    num_classes: int, in_channels: int, task: str, input_size=LINEAR_CARD.input_size, head: str = "linear"
) -> nn.Module:
    check_head(LINEAR_CARD, head)
    return LinearBaseline(num_classes, in_channels, task, input_size=_size2(input_size, "input_size"))
