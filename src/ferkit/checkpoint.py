"""The one checkpoint format every command reads and writes.

A checkpoint is a ``torch.save`` dict of plain data (no pickled modules, loadable with
``weights_only=True``)::

    format, format_version, ferkit_version, created
    model:   {name, kwargs, num_classes, in_channels, task}   # enough to rebuild the module
    classes: [names]                                           # index -> class name
    input:   InputSpec dict (size, channels, mean, std, permute_seed)
    config:  the training config that produced it
    metrics: what was measured when it was written (epoch, val/test metrics)
    state_dict: the model weights
    train_state: optimiser, scheduler, scaler, epoch, RNG and early-stopping state (``last.pt`` only)

So ``load_model(path)`` needs nothing but the file.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ferkit.errors import CheckpointError, FerkitError
from ferkit.utils import atomic_torch_save

FORMAT = "ferkit-checkpoint"
FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def make_checkpoint(
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict,
    num_classes: int,
    in_channels: int,
    task: str,
    classes: list[str],
    input_spec: dict,
    config: dict | None = None,
    metrics: dict | None = None,
    train_state: dict | None = None,
) -> dict:
    from ferkit import __version__

    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ferkit_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": model_name,
            "kwargs": dict(model_kwargs),
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "task": task,
        },
        "classes": list(classes),
        "input": dict(input_spec),
        "config": dict(config or {}),
        "metrics": dict(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }
    if train_state is not None:
        ckpt["train_state"] = train_state
    return ckpt


def save_checkpoint(ckpt: dict, path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    atomic_torch_save(ckpt, path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a ferkit checkpoint; any problem is a one-line :class:`CheckpointError`.

    A zoo model's name (``zoo:fer_minixception``, or ``fer_minixception`` where no such file exists)
    gives that model's checkpoint (:func:`ferkit.zoo.load_zoo_checkpoint`).
    """
    zoo = _zoo_name(path)
    if zoo:
        from ferkit.zoo import load_zoo_checkpoint

        return load_zoo_checkpoint(zoo)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file (train one with `ferkit train`, name a zoo model "
                              "from `ferkit zoo list`, or check the path)")
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return load_checkpoint(path / name, map_location)
        raise CheckpointError(f"{path}: is a directory without best.pt or last.pt; pass the checkpoint file itself")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: not a readable ferkit checkpoint ({first[:160]}); it may be truncated or from another tool"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            hint = " (it is a bare state dict: use `--init-weights` with the model name to load it)"
        raise CheckpointError(f"{path}: not a ferkit checkpoint{hint}")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format v{ckpt['format_version']} is newer than this ferkit understands "
            f"(v{FORMAT_VERSION}); upgrade ferkit"
        )
    return ckpt


def _zoo_name(path) -> str | None:
    s = os.fspath(path)
    if not s.startswith("zoo:") and Path(s).exists():
        return None  # a real file wins over a zoo name
    from ferkit.zoo import zoo_name

    return zoo_name(s)


def build_model(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> nn.Module:
    """Rebuild the checkpoint's model and load its weights (eval mode, CPU)."""
    from ferkit.models import create_model

    m = ckpt["model"]
    kwargs = dict(m.get("kwargs", {}))
    kwargs.pop("pretrained", None)  # weights come from the checkpoint, never from a download
    kwargs.pop("weights_path", None)
    try:
        model = create_model(m["name"], num_classes=m["num_classes"], in_channels=m["in_channels"], task=m["task"], **kwargs)
    except FerkitError as e:
        raise CheckpointError(f"{path}: {e}") from e
    load_state(model, ckpt["state_dict"], path, m["name"])
    model.eval()
    return model


def load_state(model: nn.Module, state_dict: dict, path: Any, what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatch."""
    own = unwrap(model).state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} shape mismatches, e.g. {k} is {tuple(state_dict[k].shape)} in the file "
                         f"but {tuple(own[k].shape)} in the model")
        if missing:
            parts.append(f"{len(missing)} weights missing, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights, e.g. {unexpected[0]}")
        raise CheckpointError(
            f"{path}: weights do not fit model {what} ({'; '.join(parts)}); "
            "the file was trained for a different architecture, class count or channel count"
        )
    unwrap(model).load_state_dict(state_dict, strict=True)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """``(model, checkpoint)`` from a checkpoint file, ready for inference."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt, path).to(device)
    return model, ckpt


def describe(ckpt: dict) -> str:
    m = ckpt["model"]
    inp = ckpt.get("input", {})
    met = ckpt.get("metrics", {})
    bits = [
        f"model {m['name']} ({m['task']}, {m['num_classes']} classes, {m['in_channels']} ch)",
        f"input {inp.get('size')}",
        f"classes {', '.join(ckpt['classes'])}",
    ]
    if "epoch" in met:
        bits.append(f"epoch {met['epoch']}")
    for k in ("val_acc", "test_acc"):
        if k in met and met[k] is not None:
            bits.append(f"{k} {met[k]:.4f}")
    return "; ".join(bits)
