"""ONNX export of ferkit classifiers and an onnxruntime backend for prediction.

    ferkit export runs/cnn/best.pt --format onnx [--int8] [--out model.onnx]
    ferkit export fer_minixception --format onnx
    ferkit predict --backend onnx --model runs/cnn/best.pt photos/    # exports once to the cache, then ORT
    ferkit predict --model fer_minixception photos/                     # the graph shipped with the zoo model
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

Running needs only onnxruntime (a core dependency); exporting needs torch and onnx: ``pip install 'ferkit[train]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError, ModelError


def require(mod: str):
    """Import ``mod`` (onnx, onnxruntime), or one ConfigError line saying how to install it."""
    import importlib

    try:
        return importlib.import_module(mod)
    except ImportError:
        from ferkit.utils import TRAIN_INSTALL, missing_train_extra

        if mod.split(".")[0] == "onnx":
            raise missing_train_extra("exporting to ONNX", "onnx") from None
        raise ConfigError(
            f"{mod} is not installed: pip install onnxruntime (or reinstall ferkit; {TRAIN_INSTALL} for export)"
        ) from None


INT8_OPS = ("MatMul", "Gemm")


def export_onnx(
    model: Any, out: str | os.PathLike | None = None, int8: bool = False, int8_ops: tuple[str, ...] = INT8_OPS
) -> Path:
    """Export a checkpoint path / zoo name / checkpoint dict to ONNX; returns the written file.

    ``int8``: dynamic int8 quantisation of the ``int8_ops`` node types (default MatMul/Gemm only; add
    ``"Conv"`` for a smaller file at a larger deviation, see the module docstring)."""
    import torch

    from ferkit.checkpoint import build_model
    from ferkit.data.spec import InputSpec
    from ferkit.refs import load_checkpoint

    onnx = require("onnx")
    ckpt = load_checkpoint(model)
    name = ckpt["model"]["name"]
    if out is None:  # beside the checkpoint (a zoo model: the current folder)
        from ferkit.refs import resolve

        ref = resolve(model) if not isinstance(model, dict) else None
        base = (
            ref.path.parent / ref.path.stem
            if ref is not None and ref.path is not None
            else Path(ref.name if ref is not None else name)
        )
        out = Path(f"{base}{'.int8' if int8 else ''}.onnx")
    out = Path(out)
    from ferkit.utils import check_output

    check_output(out, "--out")  # before the model is built and traced
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
    from ferkit.utils import atomic_path, export_traced_onnx

    with atomic_path(out, suffix=".onnx", what="export") as tmp:
        export_traced_onnx(wrapped, x, tmp, input_name="input", output_names=outputs, dynamic_axes=dyn)
        m = onnx.load(tmp)
        meta = {
            "ferkit.classes": json.dumps(list(ckpt["classes"])),
            "ferkit.input": json.dumps(spec.to_dict()),
            "ferkit.task": task,
            "ferkit.model": str(name),
            "ferkit.schema": "1",
            "ferkit.quantization": "int8-dynamic" if int8 else "none",
        }
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
            quantize_dynamic(
                pre, tmp, weight_type=QuantType.QInt8, per_channel=False, op_types_to_quantize=list(int8_ops)
            )
            if pre != tmp and os.path.exists(pre):
                os.unlink(pre)
            m = onnx.load(tmp)
            del m.metadata_props[:]
            for k, v in meta.items():
                p = m.metadata_props.add()
                p.key, p.value = k, v
        onnx.save(m, tmp)
    return out


def read_metadata(path: str | os.PathLike) -> dict:
    ort = require("onnxruntime")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
    return dict(sess.get_modelmeta().custom_metadata_map)


def cached_export_path(model: Any) -> Path:
    """Where :func:`cached_export` keeps ``model``'s export: ``<ferkit cache>/onnx`` (``$FERKIT_CACHE_DIR`` or
    ``~/.cache/ferkit``), keyed by the file's path, size and mtime. A shipped zoo model: the graph shipped beside
    its weights (:func:`ferkit.zoo.onnx_file`; else the cache, keyed by its name and the ferkit version). An
    ``.onnx`` reference is its own file."""
    import ferkit
    from ferkit.refs import resolve
    from ferkit.utils import cache_root

    if isinstance(model, dict):
        raise ConfigError("--backend onnx needs a checkpoint path or zoo name (or an exported .onnx file)")
    ref = resolve(model)
    if ref.kind == "onnx":
        assert ref.path is not None  # an .onnx reference is a file
        return ref.path
    if ref.kind == "zoo":
        from ferkit.zoo import onnx_file

        if onnx_file(ref.name).is_file():
            return onnx_file(ref.name)
    if ref.path is not None:
        st = ref.path.stat()
        key = f"{ref.path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        stem = ref.path.stem
    else:
        key, stem = f"zoo:{ref.name}:{ferkit.__version__}", ref.name
    return cache_root() / "onnx" / f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"


def cached_export(model: Any) -> Path:
    """Export ``model`` (any :mod:`ferkit.refs` reference) once to :func:`cached_export_path`; returns that
    path. Later runs load the file without importing torch."""
    from ferkit.refs import resolve

    out = cached_export_path(model)
    ref = resolve(model)
    if ref.kind != "onnx" and not out.is_file():
        export_onnx(ref.path if ref.path is not None else ref.name, out)
    return out


FUSION_VERSION = "1"  # bump when fuse_ensemble's graph changes: the cached files are keyed by it


def fuse_ensemble(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """One ONNX graph for an ensemble of ferkit-exported classifiers that take the same input (size, channels,
    normalisation): the shared ``input`` feeds every member, each member's softmax is mapped onto the common
    vocabulary (:func:`ferkit.zoo.vocab.ensemble_probs`, union mode, equal weights) and the graph returns the
    averaged ``probs`` - what the members' sessions and ``ensemble_probs`` give, in one ONNX Runtime call
    (one thread pool, one batch, no Python between the members). Needs the ``onnx`` package; written
    atomically. The metadata says ``ferkit.outputs = probs`` (already probabilities, not logits)."""
    import numpy as np

    onnx = require("onnx")
    from onnx import TensorProto, compose, helper, numpy_helper

    from ferkit.utils import atomic_path
    from ferkit.zoo.vocab import COMMON, to_common

    models = [onnx.load(str(p)) for p in paths]
    metas = [{p.key: p.value for p in m.metadata_props} for m in models]
    specs = {m["ferkit.input"] for m in metas}
    if len(models) < 2 or len(specs) != 1 or any(m.get("ferkit.task", "classify") != "classify" for m in metas):
        raise ConfigError("fuse_ensemble: give two or more classifiers with the same input spec (task classify)")
    member_classes = [to_common(json.loads(m["ferkit.classes"])) for m in metas]
    union = [c for c in COMMON if any(c in cls for cls in member_classes)]
    nodes, inits = [], []
    for i, (m, cls) in enumerate(zip(models, member_classes, strict=True)):
        g = compose.add_prefix(m, f"m{i}/").graph
        nodes.append(helper.make_node("Identity", ["input"], [f"m{i}/input"]))
        nodes.extend(g.node)
        inits.extend(g.initializer)
        to_union = np.zeros((len(cls), len(union)), np.float32)
        for k, c in enumerate(cls):
            to_union[k, union.index(c)] = 1.0 / len(models)  # equal weights: the mean of the members
        inits.append(numpy_helper.from_array(to_union, f"m{i}/to_union"))
        nodes.append(helper.make_node("Softmax", [f"m{i}/logits"], [f"m{i}/probs"], axis=1))
        nodes.append(helper.make_node("MatMul", [f"m{i}/probs", f"m{i}/to_union"], [f"m{i}/share"]))
    nodes.append(helper.make_node("Sum", [f"m{i}/share" for i in range(len(models))], ["probs"]))
    graph = helper.make_graph(
        nodes,
        "ferkit_ensemble",
        [models[0].graph.input[0]],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(union)])],
        inits,
    )
    fused = helper.make_model(graph, opset_imports=list(models[0].opset_import))
    fused.ir_version = models[0].ir_version
    meta = {
        "ferkit.classes": json.dumps(union),
        "ferkit.input": specs.pop(),
        "ferkit.task": "classify",
        "ferkit.model": "+".join(m.get("ferkit.model", "?") for m in metas),
        "ferkit.schema": "1",
        "ferkit.outputs": "probs",
        "ferkit.fusion": FUSION_VERSION,
    }
    for key, value in meta.items():
        prop = fused.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(fused)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".onnx", what="fused ensemble") as tmp:
        onnx.save(fused, tmp)
    return out


def fused_ensemble_path(paths: list[Path]) -> Path:
    """Where :func:`fuse_ensemble` keeps the graph of these member files: ``<ferkit cache>/onnx``, keyed by
    each file's path, size and mtime and by ``FUSION_VERSION``."""
    from ferkit.utils import cache_root

    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths) + FUSION_VERSION
    return cache_root() / "onnx" / f"ensemble-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
