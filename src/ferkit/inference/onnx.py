"""ONNX export of ferkit classifiers and an onnxruntime backend for prediction.

    ferkit export runs/cnn/best.pt --format onnx [--int8] [--out model.onnx]
    ferkit export fer_minixception --format onnx
    ferkit predict --backend onnx --model fer_minixception photos/     # exports once to the cache, then ORT
    ferkit predict --checkpoint model.onnx photos/                      # an exported file works directly

The graph takes the *normalised* NCHW float32 input (what :func:`ferkit.data.transforms.to_input` makes) with
a dynamic batch axis, and returns ``logits`` (plus ``valence`` and ``arousal`` for multitask models).
The file is self-describing: ``metadata_props`` hold ``ferkit.classes`` (JSON list), ``ferkit.input``
(the InputSpec as JSON), ``ferkit.task``, ``ferkit.model`` and ``ferkit.schema``.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``, opset 17. The dynamo exporter
needs ``onnxscript``, which is not a dependency; the TorchScript one works offline with torch alone.
``--int8``: onnxruntime dynamic quantisation (per-tensor int8 weights, activations quantised at run time)
of the MatMul/Gemm nodes only. Measured on real faces (tests/data, astronaut, Grace Hopper): probabilities
within 2e-3 (fer_minixception) and 5e-3 (faceapi_expression) of PyTorch. Quantising the convolutions too
(``--int8-ops Conv,MatMul,Gemm``) shrinks the zoo models 2-3x but moves probabilities by 0.01-0.05
(argmax unchanged on those faces), which misses the 1e-2 parity target, so it is opt-in.

Requires the ``onnx`` extra: ``pip install 'ferkit[onnx]'`` (onnx, onnxruntime).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, ModelError
from ferkit.inference.pipeline import Classifier

OPSET = 17


def _need(mod: str):
    import importlib

    try:
        return importlib.import_module(mod)
    except ImportError:
        raise ConfigError(f"{mod} is not installed: pip install 'ferkit[onnx]' (onnx, onnxruntime)") from None


INT8_OPS = ("MatMul", "Gemm")


def export_onnx(model: Any, out: str | os.PathLike | None = None, int8: bool = False,
                int8_ops: tuple[str, ...] = INT8_OPS) -> Path:
    """Export a checkpoint path / zoo name / checkpoint dict to ONNX; returns the written file.

    ``int8``: dynamic int8 quantisation of the ``int8_ops`` node types (default MatMul/Gemm only; add
    ``"Conv"`` for a smaller file at a larger deviation, see the module docstring)."""
    import torch

    from ferkit.checkpoint import build_model, load_checkpoint
    from ferkit.data.transforms import InputSpec

    onnx = _need("onnx")
    ckpt = model if isinstance(model, dict) else load_checkpoint(model)
    name = ckpt["model"]["name"]
    if out is None:
        base = Path(str(model)).stem if not isinstance(model, dict) else name
        out = Path(f"{base}{'.int8' if int8 else ''}.onnx")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = build_model(ckpt, str(model) if not isinstance(model, dict) else "<checkpoint>").eval()
    spec = InputSpec.from_dict(ckpt["input"])
    task = ckpt["model"].get("task", "classify")

    class Net(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            o = self.m(x)
            if isinstance(o, dict):
                return o["logits"], o["valence"].reshape(-1), o["arousal"].reshape(-1)
            return o

    wrapped = Net(net).eval()
    outputs = ["logits", "valence", "arousal"] if task == "multitask" else ["logits"]
    x = torch.zeros(2, spec.channels, *spec.size)
    dyn = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=out.parent)
    os.close(fd)
    try:
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about python ints / constant folding: expected
            torch.onnx.export(wrapped, (x,), tmp, input_names=["input"], output_names=outputs,
                              dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
        m = onnx.load(tmp)
        meta = {"ferkit.classes": json.dumps(list(ckpt["classes"])), "ferkit.input": json.dumps(spec.to_dict()),
                "ferkit.task": task, "ferkit.model": str(name), "ferkit.schema": "1",
                "ferkit.quantization": "int8-dynamic" if int8 else "none"}
        del m.metadata_props[:]
        for k, v in meta.items():
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.checker.check_model(m)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic
            from onnxruntime.quantization.shape_inference import quant_pre_process

            onnx.save(m, tmp)
            pre = tmp + ".pre.onnx"
            try:
                quant_pre_process(tmp, pre, skip_symbolic_shape=True)
            except Exception:  # noqa: BLE001 - pre-processing is an optimisation only
                pre = tmp
            quantize_dynamic(pre, tmp, weight_type=QuantType.QInt8, per_channel=False,
                             op_types_to_quantize=list(int8_ops))
            if pre != tmp and os.path.exists(pre):
                os.unlink(pre)
            m = onnx.load(tmp)
            del m.metadata_props[:]
            for k, v in meta.items():
                p = m.metadata_props.add()
                p.key, p.value = k, v
        onnx.save(m, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def read_metadata(path: str | os.PathLike) -> dict:
    ort = _need("onnxruntime")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    return dict(sess.get_modelmeta().custom_metadata_map)


class OnnxClassifier(Classifier):
    """A ferkit-exported ONNX model run with onnxruntime (CUDA provider when ``device`` is cuda and present)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None):
        from ferkit.data.transforms import InputSpec

        ort = _need("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: no such ONNX file")
        so = ort.SessionOptions()
        import torch

        so.intra_op_num_threads = threads or torch.get_num_threads()
        so.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.sess = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        meta = dict(self.sess.get_modelmeta().custom_metadata_map)
        if "ferkit.classes" not in meta or "ferkit.input" not in meta:
            raise ModelError(f"{path}: no ferkit metadata (classes, input spec); export it with `ferkit export`")
        self.name = str(path)
        self.classes = json.loads(meta["ferkit.classes"])
        self.spec = InputSpec.from_dict(json.loads(meta["ferkit.input"]))
        self.task = meta.get("ferkit.task", "classify")
        self.outputs = [o.name for o in self.sess.get_outputs()]

    def run_raw(self, x: np.ndarray) -> list[np.ndarray]:
        return self.sess.run(self.outputs, {"input": np.ascontiguousarray(x, dtype=np.float32)})

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        from ferkit.data.transforms import to_input

        x = to_input(np.ascontiguousarray(chips), self.spec).numpy()
        outs = self.run_raw(x)
        logits = outs[0].astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        probs = (e / e.sum(1, keepdims=True)).astype(np.float32)
        va = np.stack([outs[1].reshape(-1), outs[2].reshape(-1)], 1) if len(outs) >= 3 else None
        return probs, va


def cached_export(model: Any) -> Path:
    """Export ``model`` once to ``<ferkit cache>/onnx`` (``$FERKIT_CACHE_DIR`` or ``~/.cache/ferkit``),
    keyed by the file's size + mtime (or the zoo name + ferkit version); returns the ONNX path."""
    import ferkit

    if isinstance(model, dict):
        raise ConfigError("--backend onnx needs a checkpoint path or zoo name (or an exported .onnx file)")
    s = str(model)
    p = Path(s)
    key = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" if p.is_file() else f"zoo:{s}:{ferkit.__version__}"
    h = hashlib.sha256(key.encode()).hexdigest()[:16]
    from ferkit.utils import cache_root

    cache = cache_root() / "onnx"
    out = cache / f"{p.stem}-{h}.onnx"
    if not out.is_file():
        export_onnx(model, out)
    return out
