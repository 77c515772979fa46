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

So ``load_model(path)`` needs nothing but the file. Which file a name means (run folder, zoo name, ``.onnx``)
is :mod:`ferkit.refs`'s job.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
from pathlib import Path
from typing import Any, cast

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
            model = cast(nn.Module, model._orig_mod)
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


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read and validate a ferkit checkpoint file (or a run folder's best.pt / last.pt).

    Any problem is one :class:`CheckpointError` line saying what the file is and what to do; PyTorch's own
    messages never reach the user. Zoo names and other references go through :func:`ferkit.refs.load_checkpoint`.
    """
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return read_checkpoint(path / name, map_location)
        raise CheckpointError(f"{path}: is a folder without best.pt or last.pt; pass the checkpoint file itself")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file (train one with `ferkit train`, or check the path)")
    from ferkit.utils import check_checkpoint_kind

    check_checkpoint_kind(path)  # a photo or a text file is named as such, not as "pickled objects"
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own notes (pickle protocol, ...) are not the user's business
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path}: holds pickled Python objects, which ferkit never loads (they can run code); it is not a "
                "ferkit checkpoint: re-save its state_dict as plain tensors"
            ) from None
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint (unreadable pickle data); it may be truncated or from another tool"
        ) from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load into memory") from None
    except Exception:  # noqa: BLE001 - torch.load raises anything on random bytes (IndexError, KeyError, ...)
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated, corrupt or another format)"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            hint = (
                " (a bare state dict: wrap it with ferkit.checkpoint.make_checkpoint and its model name, or "
                "fine-tune from a ferkit checkpoint with `ferkit train --init`)"
            )
        raise CheckpointError(f"{path}: not a ferkit checkpoint{hint}")
    if not isinstance(ckpt.get("format_version"), int) or ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format v{str(ckpt.get('format_version'))[:20]} is not one this ferkit understands "
            f"(v{FORMAT_VERSION}); upgrade ferkit"
        )
    validate_checkpoint(ckpt, path)
    return ckpt


MAX_INPUT_SIDE = 4096  # no face model needs more; a bigger value is a damaged or hostile file


def validate_checkpoint(ckpt: dict, path: Any = "<checkpoint>") -> None:
    """Check the fields every reader relies on, so a damaged file fails here with one line, not deep inside."""
    import math

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: damaged ferkit checkpoint ({what}); re-train or re-export it")

    m = ckpt.get("model")
    if not isinstance(m, dict):
        raise bad("no model section")
    if not isinstance(m.get("name"), str) or not m["name"]:
        raise bad("the model name is not a string")
    if not isinstance(m.get("kwargs", {}), dict):
        raise bad("model.kwargs is not a mapping")
    for k in ("num_classes", "in_channels"):
        v = m.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100_000:
            raise bad(f"model.{k} is {str(v)[:30]!r}")
    if m.get("task", "classify") not in ("classify", "multitask", "verify"):
        raise bad(f"unknown task {str(m.get('task'))[:30]!r}")
    classes = ckpt.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad("classes is not a list of names")
    if len(classes) < 2 or len(classes) != m["num_classes"]:
        raise bad(f"{len(classes)} class names for a {m['num_classes']}-class model")
    inp = ckpt.get("input")
    if not isinstance(inp, dict):
        raise bad("no input section")
    size = inp.get("size")
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and 4 <= v <= MAX_INPUT_SIDE for v in size)
    ):
        raise bad(f"input size {str(size)[:40]} (each side 4..{MAX_INPUT_SIDE})")
    if inp.get("channels") not in (1, 3):
        raise bad(f"input channels {str(inp.get('channels'))[:20]}")
    for k in ("mean", "std"):
        v = inp.get(k)
        if (
            not isinstance(v, (list, tuple))
            or not v
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        ):
            raise bad(f"input {k} is not a list of numbers")
    if any(x == 0 for x in inp.get("std") or []):
        raise bad("input std has a zero")
    if m["in_channels"] != inp["channels"]:
        raise bad(f"a {m['in_channels']}-channel model with {inp['channels']}-channel input")
    from ferkit.data.spec import InputSpec  # the spec's own rules (lengths, signs, the permutation seed)

    try:
        InputSpec.from_dict(inp)
    except FerkitError as e:
        raise bad(str(e)) from None
    for k in ("config", "metrics"):
        if not isinstance(ckpt.get(k, {}), dict):
            raise bad(f"{k} is not a mapping")
    met = ckpt.get("metrics", {})
    if "epoch" in met and (not isinstance(met["epoch"], int) or isinstance(met["epoch"], bool)):
        raise bad(f"metrics.epoch is {str(met['epoch'])[:30]!r}")
    for k in ("val_acc", "test_acc"):
        v = met.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise bad(f"metrics.{k} is {str(v)[:30]!r}")
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise bad("state_dict is not a mapping of tensors")
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{path}: weight {str(k)[:80]} holds NaN or infinite values (the training "
                "diverged): use an earlier checkpoint or a lower learning rate"
            )


def build_model(ckpt: dict, path: str | os.PathLike = "<checkpoint>") -> nn.Module:
    """Rebuild the checkpoint's model and load its weights (eval mode, CPU)."""
    from ferkit.models import create_model

    m = ckpt["model"]
    kwargs = dict(m.get("kwargs", {}))
    kwargs.pop("pretrained", None)  # weights come from the checkpoint, never from a download
    kwargs.pop("weights_path", None)
    try:
        model = create_model(
            m["name"],
            num_classes=m["num_classes"],
            in_channels=m["in_channels"],
            task=m.get("task", "classify"),
            **kwargs,
        )
    except FerkitError as e:
        raise CheckpointError(f"{path}: {e}") from e
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as e:  # kwargs a builder cannot take
        raise CheckpointError(
            f"{path}: damaged ferkit checkpoint (model {m['name']!r} cannot be built from its "
            f"arguments: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
        ) from None
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
            parts.append(
                f"{len(shape)} shape mismatches, e.g. {k} is {tuple(state_dict[k].shape)} in the file "
                f"but {tuple(own[k].shape)} in the model"
            )
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
    """``(model, checkpoint)`` from a checkpoint file or run folder, ready for inference."""
    ckpt = read_checkpoint(path)
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
