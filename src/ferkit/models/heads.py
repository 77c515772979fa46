"""Heads shared by every family: linear / MLP classifiers and the multitask (expression + V/A) head."""

from __future__ import annotations

import torch
import torch.nn as nn

from ferkit.errors import ModelError

HEADS = ("linear", "mlp")


def classifier(
    in_features: int, num_classes: int, head: str = "linear", hidden: int = 256, dropout: float = 0.25
) -> nn.Module:
    """``linear``: one Linear. ``mlp``: Linear(-> hidden), ReLU, Dropout, Linear(-> k) (source 001's head)."""
    if head == "linear":
        return nn.Linear(in_features, num_classes)
    if head == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
    raise ModelError(f"unknown head {head!r}: use one of {', '.join(HEADS)}")


class MultiTaskHead(nn.Module):
    """Expression logits from ``classifier`` plus valence and arousal, each tanh-bounded to [-1, 1]."""

    def __init__(self, in_features: int, classifier_module: nn.Module, hidden: int = 0):
        super().__init__()
        self.classifier = classifier_module
        self.regressor: nn.Module
        if hidden:
            self.regressor = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2))
        else:
            self.regressor = nn.Linear(in_features, 2)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        va = torch.tanh(self.regressor(features))
        return {"logits": self.classifier(features), "valence": va[:, 0], "arousal": va[:, 1]}


class FerNet(nn.Module):
    """Base of every registered model.

    Subclasses register their top-level children in forward order, ``head`` last, implement
    :meth:`forward_features` (input -> ``(B, feature_dim)``) and call :meth:`_finish` at the end of
    ``__init__``; ``forward`` is then ``head(forward_features(x))``. After ``_finish`` the model has
    ``stages`` (the child names), ``task``, ``num_classes``, ``in_channels`` and ``feature_dim``.
    ``first_conv`` is the dotted path of the layer that sees the input channels (None: the head does).
    """

    first_conv: str | None = None
    head: nn.Module  # set by each subclass before _finish

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor):
        return self.head(self.forward_features(x))

    def _finish(self, *, task: str, num_classes: int, in_channels: int, feature_dim: int) -> None:
        names = [n for n, _ in self.named_children()]
        if not names or names[-1] != "head":
            raise RuntimeError(f"{type(self).__name__}: the head must be the last child registered, got {names}")
        self.stages = names
        self.task = task
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feature_dim = feature_dim


def make_head(task: str, in_features: int, classifier_module: nn.Module) -> nn.Module:
    """Wrap a family's classifier for ``task``: itself for ``classify``, a :class:`MultiTaskHead` for ``multitask``."""
    if task == "classify":
        return classifier_module
    if task == "multitask":
        return MultiTaskHead(in_features, classifier_module)
    raise ModelError(f"unknown task {task!r}: use classify or multitask")
