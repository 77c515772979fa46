"""Models by name: ``create_model("resnet18", num_classes=7, in_channels=1, task="multitask")``.

Each family module registers builders with :func:`register_model`. A builder takes
``(num_classes, in_channels, task, **kwargs)`` and returns an ``nn.Module`` whose ``forward``
returns logits ``(B, k)`` for ``task="classify"`` and a dict ``{"logits", "valence", "arousal"}``
(V/A of shape ``(B,)``, bounded to [-1, 1]) for ``task="multitask"``.

Every built model carries ``model.stages``: the names of its top-level children in forward order,
head last; freezing "up to a stage" and the freeze sweep walk that list.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from ferkit import model_names
from ferkit.errors import ModelError

TASKS = ("classify", "multitask")


@dataclass(frozen=True)
class ModelCard:
    name: str
    input_size: tuple[int, int]  # (H, W) the model is meant for
    in_channels: int  # default channels
    source: str  # which source project / paper it reproduces
    description: str
    aliases: tuple[str, ...] = ()
    pretrained: str | None = None  # e.g. "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    mean: tuple[float, ...] | None = None  # normalisation the pretrained weights expect
    std: tuple[float, ...] | None = None
    heads: tuple[str, ...] = ("linear",)  # head choices the builder accepts
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def normalization(self, in_channels: int | None = None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` the pretrained weights expect, sized for ``in_channels``; ``None`` if the card has none.

        For one channel the RGB values are averaged: the grey first conv is the RGB one summed over
        channels, which sees a grey image the way the RGB conv sees it replicated on all three.
        """
        if self.mean is None or self.std is None:
            return None
        c = self.in_channels if in_channels is None else int(in_channels)
        mean, std = tuple(self.mean), tuple(self.std)
        if c == len(mean):
            return mean, std
        if c == 1:
            return (sum(mean) / len(mean),), (sum(std) / len(std),)
        return (mean * c)[:c], (std * c)[:c]


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_CARDS: dict[str, ModelCard] = {}
_ALIASES: dict[str, str] = {}


def register_model(card: ModelCard):
    """Decorator: register ``builder(num_classes, in_channels, task, **kwargs)`` under ``card.name``."""

    def deco(builder):
        if card.name in _BUILDERS:
            raise RuntimeError(f"model {card.name} registered twice")
        _BUILDERS[card.name] = builder
        _CARDS[card.name] = card
        for a in card.aliases:
            _ALIASES[a] = card.name
        return builder

    return deco


def _ensure_loaded() -> None:
    # The families register themselves when ``ferkit.models`` is imported, which Python always does before
    # this module (the parent package first); the registry itself imports no family, so imports point one way.
    if not _BUILDERS:
        raise ModelError("no model families registered: import ferkit.models, not ferkit.models.registry alone")


def canonical_name(name: str) -> str:
    _ensure_loaded()
    key = _ALIASES.get(name, name)
    if key not in _BUILDERS:
        raise model_names.unknown_model(name, list(_BUILDERS) + list(_ALIASES))
    return key


model_names.live_lookup = canonical_name  # from now on names are checked against this registry, torch loaded


def get_card(name: str) -> ModelCard:
    return _CARDS[canonical_name(name)]


def list_models() -> list[ModelCard]:
    _ensure_loaded()
    return [_CARDS[n] for n in sorted(_CARDS)]


def create_model(
    name: str,
    num_classes: int = 7,
    in_channels: int | None = None,
    task: str = "classify",
    **kwargs,
) -> nn.Module:
    """Build a registered model. Unknown keyword arguments are a :class:`ModelError`, not a TypeError."""
    key = canonical_name(name)
    card = _CARDS[key]
    if task not in TASKS:
        raise ModelError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if num_classes < 2 and task == "classify":
        raise ModelError(f"num_classes must be >= 2 for classification, got {num_classes}")
    in_channels = card.in_channels if in_channels is None else int(in_channels)
    if in_channels not in (1, 3):
        raise ModelError(f"in_channels must be 1 (grey) or 3 (colour), got {in_channels}")
    builder = _BUILDERS[key]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = [k for k in kwargs if k not in params]
        if bad:
            ok = [k for k in params if k not in ("num_classes", "in_channels", "task")]
            raise ModelError(f"model {key} takes no argument {', '.join(bad)}; it takes: {', '.join(ok) or 'none'}")
    model = builder(num_classes=num_classes, in_channels=in_channels, task=task, **kwargs)
    if not hasattr(model, "stages"):
        model.stages = [n for n, _ in model.named_children()]  # type: ignore[assignment]  # torch types module attrs as Tensor | Module
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def builder_accepts(name: str, arg: str) -> bool:
    """Whether model ``name``'s builder takes keyword ``arg`` (e.g. ``input_size`` for size-bound models)."""
    return arg in inspect.signature(_BUILDERS[canonical_name(name)]).parameters
