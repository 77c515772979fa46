"""THE model-reference resolver: what a user may type wherever a model is wanted.

``predict``, ``evaluate``, ``export``, ``serve`` and ``train --init`` all accept the same references::

    runs/cnn/best.pt         a ferkit checkpoint file
    runs/cnn                 a run folder: its best.pt (else last.pt)
    fer_minixception         a zoo name (``ferkit zoo list``); ``zoo:fer_minixception`` forces the zoo
    model.onnx               a file written by ``ferkit export`` (inference only)

A real file or folder wins over a zoo name of the same spelling. Anything else is one
:class:`~ferkit.errors.CheckpointError` line saying what was looked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferkit.errors import CheckpointError

RUN_FILES = ("best.pt", "last.pt")


@dataclass(frozen=True)
class ModelRef:
    """A resolved reference: ``kind`` is ``checkpoint``, ``zoo`` or ``onnx``; ``path`` the file (None for zoo);
    ``name`` what to call it in results and logs (the zoo name, or the path as given)."""

    kind: str
    name: str
    path: Path | None = None

    @property
    def file(self) -> Path | None:
        """The file whose bytes are the weights (a zoo model's safetensors for zoo references)."""
        if self.kind != "zoo":
            return self.path
        from ferkit.zoo import weights_path

        return weights_path(self.name)


def resolve(ref: Any) -> ModelRef:
    """Turn what a user typed into a :class:`ModelRef` (see the module docstring)."""
    if isinstance(ref, ModelRef):
        return ref
    if not isinstance(ref, (str, os.PathLike)):
        raise CheckpointError(
            f"model reference {str(ref)[:80]!r}: give a checkpoint path, run folder, zoo name or .onnx file"
        )
    s = os.fspath(ref)
    if not s.strip():
        raise CheckpointError("empty model reference: give a checkpoint path, run folder, zoo name or .onnx file")
    p = Path(s)
    if not s.startswith("zoo:") and p.exists():
        if p.is_dir():
            for name in RUN_FILES:
                if (p / name).is_file():
                    return ModelRef("checkpoint", s, p / name)
            raise CheckpointError(
                f"{p}: a folder without {' or '.join(RUN_FILES)}; pass a run folder or the checkpoint file itself"
            )
        if p.suffix.lower() == ".onnx":
            return ModelRef("onnx", s, p)
        from ferkit.utils import check_checkpoint_kind

        check_checkpoint_kind(p)
        return ModelRef("checkpoint", s, p)
    from ferkit.zoo import zoo_name

    zoo = zoo_name(s)  # an unknown "zoo:NAME" is a ModelError with "did you mean"
    if zoo:
        return ModelRef("zoo", zoo, None)
    looks_like_path = os.sep in s or "/" in s or p.suffix.lower() in (".pt", ".pth", ".onnx", ".ckpt")
    if looks_like_path:
        raise CheckpointError(f"{s[:200]}: no such checkpoint file (train one with `ferkit train`, or check the path)")
    import difflib

    from ferkit.zoo import SOURCES

    close = difflib.get_close_matches(s, list(SOURCES), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise CheckpointError(f"{s[:200]!r}: neither a file nor a zoo model ({hint}`ferkit zoo list` lists them)")


def load_checkpoint(ref: Any) -> dict:
    """The checkpoint dict behind any reference but ``.onnx`` (an already-loaded dict passes through)."""
    if isinstance(ref, dict):
        return ref
    r = resolve(ref)
    if r.kind == "onnx":
        raise CheckpointError(
            f"{r.path}: an exported ONNX file runs inference only (ferkit predict/serve); "
            "give the .pt checkpoint it came from"
        )
    from ferkit.utils import require_torch

    require_torch("loading PyTorch weights")
    if r.kind == "zoo":
        from ferkit.zoo import load_zoo_checkpoint

        return load_zoo_checkpoint(r.name)
    from ferkit.checkpoint import read_checkpoint

    assert r.path is not None  # every reference but a zoo name has a file
    return read_checkpoint(r.path)


def load_model(ref: Any, device: str = "cpu"):
    """``(module, checkpoint)`` for any reference but ``.onnx``, in eval mode on ``device``."""
    from ferkit.checkpoint import build_model

    ckpt = load_checkpoint(ref)
    return build_model(ckpt, ref if not isinstance(ref, dict) else "<checkpoint>").to(device), ckpt


def display_name(ref: Any) -> str:
    """How results name the model: the zoo name, the path as given, or the checkpoint's model name."""
    if isinstance(ref, dict):
        return str(ref.get("model", {}).get("name", "<checkpoint>"))
    return resolve(ref).name
