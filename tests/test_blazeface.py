"""The blazeface backend (MediaPipe BlazeFace as shipped by Human 3.3.6): parity with TF.js on recorded fixtures,
the converter reproducing the shipped file from the pinned tarball, and faces found on real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferkit.faces import FaceDetector, load_image

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "blazeface"
PARITY_PX = 1e-4  # the bar; measured on the recording machine: 4.2e-5 px regressors, 1.5e-5 px boxes
PARITY_PROB = 1e-5


@pytest.fixture(scope="module")
def reference():
    return json.loads((FIX / "blazeface_reference.json").read_text())


@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_parity_with_tfjs(runtime, reference):
    """Every anchor's probability, the top anchors' raw regressors, and the detections after decoding + NMS equal
    TF.js's (Human's own model file on tfjs 4.22's CPU backend, Human's decode arithmetic) on three real photos."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    x = np.load(FIX / "inputs_256.npy")
    det = FaceDetector.create("blazeface", runtime=runtime, min_face=0, score_threshold=reference["nms"]["min_score"])
    assert det.runtime == runtime
    logits, reg = det.forward(x)
    for i, ref in enumerate(reference["images"]):
        prob = np.exp(-np.logaddexp(0, -logits[i].astype(np.float64)))  # sigmoid without overflow
        ref_prob = np.exp(-np.logaddexp(0, -np.array(ref["logits"], np.float64)))
        assert np.abs(prob - ref_prob).max() < PARITY_PROB, i
        assert np.abs(reg[i][ref["top_anchors"]] - np.array(ref["top_regressors"])).max() < PARITY_PX, i
        faces = det.detect(x[i])  # a 256x256 input is fed as is: boxes are in the recorded pixels
        assert len(faces) == len(ref["kept"]) > 0, i
        for f, box, kps, score in zip(faces, ref["boxes"], ref["keypoints"], ref["scores"], strict=True):
            assert np.abs(np.subtract(f.box, box)).max() < PARITY_PX, (i, f.box, box)
            assert np.abs(f.landmarks[:3] - np.array(kps)[:3]).max() < PARITY_PX, (i, f.landmarks, kps)
            assert abs(f.score - score) < PARITY_PROB


def test_finds_each_face_of_real_photos_where_retinaface_does():
    """On the committed group photo (5 people), the astronaut and a 200-px astronaut (enlarged into the letterbox),
    every RetinaFace face has a blazeface box at IoU >= 0.5, with eyes on the image's left/right, and the mapped
    landmarks land inside the box."""
    import cv2
    import skimage.data

    retina = FaceDetector.create("retinaface")
    blaze = FaceDetector.create("blazeface")
    small = cv2.resize(skimage.data.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    for img in (load_image(ROOT / "tests" / "data" / "multi_face.jpg"), skimage.data.astronaut(), small):
        want, got = retina.detect(img), blaze.detect(img)
        assert len(got) == len(want)
        for w in want:
            best = max(got, key=lambda g: _iou(g.box, w.box))
            assert _iou(best.box, w.box) >= 0.5
            assert best.landmarks[0, 0] < best.landmarks[1, 0] and not best.landmarks_estimated
            x1, y1, x2, y2 = best.box
            assert ((best.landmarks >= [x1, y1]) & (best.landmarks <= [x2, y2])).all()


def test_converter_reproduces_the_shipped_weights_and_refuses_another_tarball(tmp_path, registry_artifacts):
    from ferkit.faces.weights import WEIGHT_FILES, WEIGHTS_DIR, sha256_file

    tgz = registry_artifacts / "vladmandic-human-3.3.6.tgz"
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "convert_detectors.py"), "--human", str(tgz), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / WEIGHT_FILES["blazeface"]
    assert sha256_file(out) == sha256_file(WEIGHTS_DIR / WEIGHT_FILES["blazeface"])
    card = (ROOT / "src" / "ferkit" / "faces" / "cards" / "blazeface.md").read_text()
    assert sha256_file(out) in card and "Apache" in card and "MIT" in card
    bad = tmp_path / "other.tgz"
    bad.write_bytes(tgz.read_bytes()[:-1] + b"\0")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert_detectors.py"),
            "--human",
            str(bad),
            "--out",
            str(tmp_path / "bad"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and "is not the pinned" in r.stderr and not (tmp_path / "bad").exists()


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_fast_preset_finds_the_default_pipelines_faces():
    """defaults.FAST (the --fast preset) builds through the public API and finds every face >= 40 px that the
    default pipeline finds on the committed photos (a group photo and four portraits), with labels from its model."""
    from ferkit import api, defaults

    assert set(defaults.FAST) <= {"models", "detector", "det_size", "crop"}
    paths = [ROOT / "tests" / "data" / "multi_face.jpg", *sorted((ROOT / "tests" / "data" / "identity").glob("*.jpg"))]
    fast, default = api.analyzer(fast=True), api.analyzer()
    n = 0
    for p in paths:
        img = load_image(p)
        want = [f for f in default.detect([img])[0] if f.size >= 40]
        got = fast.detect([img])[0]
        n += len(want)
        for w in want:
            assert max((_iou(g.box, w.box) for g in got), default=0) >= 0.5, (p.name, w.box)
        res = fast.analyze(img, source=p.name)
        assert {f.label for f in res.faces} <= set(fast.classes) and len(res.faces) == len(got)
    assert n >= 8
