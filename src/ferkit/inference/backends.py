"""Expression classifiers behind one interface: PyTorch (checkpoints, zoo models) and ONNX Runtime (files
written by ``ferkit export``). :func:`make_classifier` turns any :mod:`ferkit.refs` reference into one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, ModelError

BACKENDS = ("auto", "torch", "onnx")


class Classifier:
    """One expression model: ``name``, ``classes``, ``spec`` (InputSpec), ``task``; ``predict(chips_u8)`` ->
    (probs float32 (B, k), valence/arousal float32 (B, 2) or None). ``backend`` says what runs it."""

    name: str
    classes: list[str]
    spec: Any
    task: str = "classify"
    backend: str = "torch"

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError


class TorchClassifier(Classifier):
    backend = "torch"

    def __init__(self, model: Any, device: str = "cpu", name: str | None = None):
        from ferkit.utils import require_torch

        require_torch("a PyTorch model (a .pt checkpoint, or --backend torch)")
        import torch

        from ferkit.checkpoint import build_model
        from ferkit.data.spec import InputSpec
        from ferkit.refs import display_name, load_checkpoint
        from ferkit.utils import resolve_device

        ckpt = load_checkpoint(model)
        self.name = name or display_name(model)
        self.device = resolve_device(device)
        self.model = build_model(ckpt, self.name).to(self.device).eval()
        # channels-last memory: oneDNN's fast convolution layout on CPU (measured 2-2.4x faces/s for the zoo
        # models at batch 64); inference only, so the training-side caveat of models/zoo_models.py is moot
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.spec = InputSpec.from_dict(ckpt["input"])
        self.classes = list(ckpt["classes"])
        self.task = ckpt["model"].get("task", "classify")
        self._torch = torch

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from ferkit.utils import call_threads

        torch = self._torch
        before = torch.get_num_threads()
        # Inside ferkit.utils.one_core (the analyzer's detection workers hold the other cores): one thread, else
        # torch's OpenMP team waits on threads the workers have descheduled (measured 21 -> 15 ms/photo)
        single = self.device.type == "cpu" and call_threads() == 1 and before > 1
        if single:
            torch.set_num_threads(1)
        try:
            return self._predict(chips)
        finally:
            if single:
                torch.set_num_threads(before)

    def _predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        from ferkit.data.transforms import to_input

        with torch.inference_mode():
            x = to_input(
                torch.from_numpy(np.ascontiguousarray(chips)).to(self.device),
                self.spec,
                channels_last=self.channels_last,
            )
            out = self.model(x)
            logits = out["logits"] if isinstance(out, dict) else out
            probs = torch.softmax(logits.float(), 1).cpu().numpy()
            va = None
            if isinstance(out, dict) and "valence" in out:
                va = torch.stack([out["valence"].reshape(-1), out["arousal"].reshape(-1)], 1).float().cpu().numpy()
        return probs, va


class OnnxClassifier(Classifier):
    """A ferkit-exported ONNX model run with onnxruntime (CUDA provider when ``device`` is cuda and present)."""

    backend = "onnx"

    def __init__(
        self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None, name: str | None = None
    ):
        from ferkit.data.spec import InputSpec
        from ferkit.inference.onnx import require

        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        from ferkit.utils import cpu_threads, ort_session

        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.sess = ort_session(path, threads or cpu_threads(), providers)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        meta = dict(self.sess.get_modelmeta().custom_metadata_map)
        if "ferkit.classes" not in meta or "ferkit.input" not in meta:
            raise ModelError(f"{path}: no ferkit metadata (classes, input spec); export it with `ferkit export`")
        self.name = name or str(path)
        self.classes = json.loads(meta["ferkit.classes"])
        self.spec = InputSpec.from_dict(json.loads(meta["ferkit.input"]))
        self.task = meta.get("ferkit.task", "classify")
        self.outputs = [o.name for o in self.sess.get_outputs()]
        self.path = path
        self.device = device
        # a fused ensemble (inference.onnx.fuse_ensemble) returns probabilities already
        self.gives_probs = meta.get("ferkit.outputs") == "probs"

    def run_raw(self, x: np.ndarray) -> list[np.ndarray]:
        return self.sess.run(self.outputs, {"input": np.ascontiguousarray(x, dtype=np.float32)})

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        x = normalise_chips(chips, self.spec)
        if x is None:  # chips that need resizing, a colour change or a pixel permutation: the full pipeline
            from ferkit.data.transforms import to_input

            x = to_input(np.ascontiguousarray(chips), self.spec).numpy()
        outs = self.run_raw(x)
        if self.gives_probs:
            return outs[0].astype(np.float32), None
        logits = outs[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = (e / e.sum(1, keepdims=True)).astype(np.float32)
        va = np.stack([outs[1].reshape(-1), outs[2].reshape(-1)], 1) if len(outs) >= 3 else None
        return probs, va


def normalise_chips(chips: np.ndarray, spec: Any) -> np.ndarray | None:
    """uint8 (B, H, W, C) chips already at ``spec``'s size and channels -> the normalised float32 NCHW input
    :func:`ferkit.data.transforms.to_input` makes of them, in numpy (no torch import); None when they need
    more than that (resize, colour change, pixel permutation): then use ``to_input``."""
    if (
        chips.ndim != 4
        or chips.dtype != np.uint8
        or tuple(chips.shape[1:3]) != tuple(spec.size)
        or chips.shape[3] != spec.channels
        or spec.permute_seed is not None
    ):
        return None
    mean = np.asarray(spec.mean, np.float32).reshape(1, -1, 1, 1) * np.float32(255.0)
    inv_std = np.float32(1.0) / (np.asarray(spec.std, np.float32).reshape(1, -1, 1, 1) * np.float32(255.0))
    x = chips.transpose(0, 3, 1, 2).astype(np.float32)
    x -= mean
    x *= inv_std
    return x


def _onnx_runs_here(ref: Any, device: str) -> bool:
    """``backend="auto"``: ONNX Runtime for zoo models on the CPU when onnxruntime (and, for the first export,
    onnx) is installed. A checkpoint of yours stays on PyTorch (no surprise export on first use; give
    ``backend="onnx"`` for that), so which runtime answers never depends on what the cache holds."""
    from ferkit.utils import installed

    if ref.kind != "zoo" or str(device) != "cpu" or not installed("onnxruntime"):
        return False
    from ferkit.inference.onnx import cached_export_path

    return cached_export_path(ref).is_file() or installed("onnx")


def make_classifier(model: Any, backend: str = "auto", device: str = "cpu") -> Classifier:
    """A classifier from any :mod:`ferkit.refs` reference (or a loaded checkpoint dict). ``.onnx`` files run
    with ONNX Runtime; ``backend="onnx"`` exports a checkpoint / zoo model once (cached) and runs that;
    ``backend="auto"`` (the default) does that for zoo models on the CPU when onnxruntime is installed, and
    runs everything else on PyTorch."""
    if isinstance(model, Classifier):
        return model
    if backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if isinstance(model, dict):  # a loaded checkpoint: PyTorch (auto included), nothing to export it from
        if backend == "onnx":
            raise ConfigError("backend onnx needs a checkpoint path or zoo name (or an exported .onnx file)")
        return TorchClassifier(model, device=device)
    from ferkit.refs import resolve

    ref = resolve(model)
    if ref.kind == "zoo":
        _check_expression_model(ref.name)
    if ref.kind == "onnx":
        assert ref.path is not None  # an .onnx reference is a file
        return OnnxClassifier(ref.path, device=device, name=ref.name)
    if backend == "onnx" or (backend == "auto" and _onnx_runs_here(ref, device)):
        from ferkit.inference.onnx import cached_export

        return OnnxClassifier(cached_export(ref), device=device, name=ref.name)
    return TorchClassifier(ref, device=device, name=ref.name)


def _check_expression_model(zoo: str) -> None:
    """A zoo model of kind "attribute" (age/gender, 68 landmarks, anti-spoofing) says no expression: it is asked
    for with ``--attributes``, which runs it beside the expression model (it still exports and converts as any
    zoo model: only classifying expressions with it is refused)."""
    from ferkit.zoo import SOURCES

    if SOURCES[zoo].kind == "attribute":
        from ferkit.attributes import ATTRIBUTES

        raise ConfigError(
            f"{zoo}: a per-face attribute model, not an expression model; ask for what it gives with --attributes "
            f"{'|'.join(ATTRIBUTES)}|all (attributes= in the Python API) and keep --model for the expression model"
        )


def fuse_classifiers(classifiers: list[Classifier]) -> Classifier | None:
    """An ensemble of ONNX Runtime classifiers with one input spec, as ONE session (:func:`ferkit.inference.onnx.
    fuse_ensemble`: both members in one graph, one input, the averaged probabilities out), its graph built once
    into the cache; None where that cannot be (a PyTorch member, different inputs, valence/arousal heads, or the
    ``onnx`` package missing to build it: then each member runs its own session, with the same numbers)."""
    from ferkit.inference.onnx import fuse_ensemble, fused_ensemble_path
    from ferkit.utils import installed

    if len(classifiers) < 2 or not all(isinstance(c, OnnxClassifier) and not c.gives_probs for c in classifiers):
        return None
    members = [c for c in classifiers if isinstance(c, OnnxClassifier)]  # (all of them; narrowed for types)
    if len({json.dumps(c.spec.to_dict(), sort_keys=True) for c in members}) != 1 or any(
        c.task != "classify" or c.outputs != ["logits"] for c in members
    ):
        return None
    out = fused_ensemble_path([c.path for c in members])
    if not out.is_file():
        if not installed("onnx"):
            return None
        fuse_ensemble([c.path for c in members], out)
    return OnnxClassifier(out, device=members[0].device, name="+".join(c.name for c in members))
