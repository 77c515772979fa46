"""Freezing stages of a model (``model.stages``: top-level children in forward order, head last).

Typical fine-tuning use::

    freeze(model, upto="layer3")          # conv1 .. layer3 get no gradients
    ...
    model.train()
    apply_frozen_bn_eval(model)           # after every model.train(): frozen BN keeps its running stats

and for the freeze sweep of source 002, ``for depth in freezable_depths(model): freeze(model, upto=depth)``
on a fresh model each time. Give the optimizer only ``p for p in model.parameters() if p.requires_grad``
(or all of them: frozen parameters never get a gradient, so no optimizer step changes them, though
decoupled weight decay in AdamW would still shrink them; filtering avoids that).
"""

from __future__ import annotations

import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ferkit.errors import ModelError

_FROZEN_ATTR = "_ferkit_frozen"


def _stages(model: nn.Module) -> list[str]:
    stages = getattr(model, "stages", None)
    if not stages:
        stages = [n for n, _ in model.named_children()]
    return list(stages)


def _check(model: nn.Module, names) -> list[str]:
    valid = _stages(model)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    bad = [n for n in names if n not in valid]
    if bad:
        raise ModelError(f"unknown stage {bad[0]!r}: this model's stages are {', '.join(valid)}")
    return [n for n in valid if n in names]  # forward order, no duplicates


def freeze(model: nn.Module, names: list[str] | str | None = None, upto: str | None = None) -> list[str]:
    """Stop gradients to the named stages, or to every stage up to and including ``upto``.

    With neither, every stage but the head is frozen (the backbone as a fixed feature extractor).
    BatchNorm layers of frozen stages are put in eval mode now; call :func:`apply_frozen_bn_eval`
    again after each ``model.train()``. Returns the stages frozen by this call, in forward order.
    """
    stages = _stages(model)
    if names is not None and upto is not None:
        raise ModelError("freeze: give stage names or upto, not both")
    if upto is not None:
        (upto,) = _check(model, [upto])
        chosen = stages[: stages.index(upto) + 1]
    elif names is not None:
        chosen = _check(model, names)
    else:
        chosen = [s for s in stages if s != "head"]
    for name in chosen:
        for p in getattr(model, name).parameters():
            p.requires_grad_(False)
    frozen = set(getattr(model, _FROZEN_ATTR, ())) | set(chosen)
    object.__setattr__(model, _FROZEN_ATTR, frozen)
    apply_frozen_bn_eval(model)
    return chosen


def unfreeze(model: nn.Module, names: list[str] | str | None = None) -> list[str]:
    """Let gradients flow again to the named stages (``None``: all). Their BatchNorm layers follow the
    model's current train/eval mode again. Returns the stages unfrozen, in forward order."""
    chosen = _stages(model) if names is None else _check(model, names)
    for name in chosen:
        stage = getattr(model, name)
        for p in stage.parameters():
            p.requires_grad_(True)
        for m in stage.modules():
            if isinstance(m, _BatchNorm):
                m.train(model.training)
    frozen = set(getattr(model, _FROZEN_ATTR, ())) - set(chosen)
    object.__setattr__(model, _FROZEN_ATTR, frozen)
    return chosen


def frozen_stages(model: nn.Module) -> list[str]:
    """Stages that are frozen: marked by :func:`freeze`, or holding parameters none of which needs a gradient."""
    marked = set(getattr(model, _FROZEN_ATTR, ()))
    out = []
    for name in _stages(model):
        params = list(getattr(model, name).parameters())
        if name in marked or (params and not any(p.requires_grad for p in params)):
            out.append(name)
    return out


def apply_frozen_bn_eval(model: nn.Module) -> int:
    """Put the BatchNorm layers of frozen stages in eval mode (running statistics stay as they are).

    ``model.train()`` turns them back to training mode, so the trainer calls this after it.
    Returns how many BatchNorm layers were switched.
    """
    n = 0
    for name in frozen_stages(model):
        for m in getattr(model, name).modules():
            if isinstance(m, _BatchNorm):
                m.eval()
                n += 1
    return n


def freezable_depths(model: nn.Module) -> list[str]:
    """Stage names a freeze sweep walks (``freeze(model, upto=d)``): every stage but the head."""
    return [s for s in _stages(model) if s != "head"]
