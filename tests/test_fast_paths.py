"""The speed paths give the slow paths' answers: parallel analysis vs one image at a time, ONNX Runtime vs
PyTorch, numpy pre/post-processing vs torch's, and a zoo-model predict that never imports torch."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

DATA = Path(__file__).parent / "data"


def _grace() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real faces in photos of different sizes (some above the detection size), one without a face, one
    broken file: what a folder looks like."""
    d = tmp_path_factory.mktemp("fast")
    srcs = [
        np.asarray(Image.open(_grace()).convert("RGB")),
        np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB")),
    ]
    out = []
    for i in range(10):
        im = srcs[i % 2]
        s = (0.5, 0.8, 1.0, 1.3, 0.7)[i % 5]
        im = cv2.resize(im, (int(im.shape[1] * s), int(im.shape[0] * s)), interpolation=cv2.INTER_AREA)
        if i % 3 == 1:
            im = im[:, ::-1]
        p = d / f"p{i:02d}.jpg"
        Image.fromarray(np.ascontiguousarray(im)).save(p, quality=92)
        out.append(p)
    Image.fromarray(np.full((240, 320, 3), 120, np.uint8)).save(d / "blank.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    return out[:5] + [d / "blank.png", d / "broken.jpg"] + out[5:]


def _faces(results):
    return [[(f.box, f.landmarks, f.probabilities, f.label) for f in r.faces] for r in results]


def test_parallel_analysis_gives_the_one_at_a_time_answers(photos):
    """analyze_paths with 3 workers (decode + detect in parallel, one core each) == analyze() per file."""
    pytest.importorskip("onnxruntime")
    import threading

    from ferkit.inference.pipeline import Analyzer

    # analyzers cached by earlier tests in this process (ferkit.predict's) keep their own pool threads
    others = {t for t in threading.enumerate() if t.name.startswith("ferkit-analyze")}
    par = Analyzer(workers=3)
    assert par.workers == 3 and par.detector.runtime == "onnx"
    got = list(par.analyze_paths(photos, group=4, prefetch=5))
    assert [r.path for r in got] == [str(p) for p in photos]
    assert [r.status for r in got] == ["ok"] * 5 + ["no_face", "error"] + ["ok"] * 5
    seq = Analyzer(workers=1)
    assert seq.workers == 1
    want = [seq.analyze(p) if p.name != "broken.jpg" else None for p in photos]
    for g, w in zip(got, want, strict=True):
        if w is None:
            continue
        assert len(g.faces) == len(w.faces) and g.image_size == w.image_size and g.downscaled == w.downscaled
        for a, b in zip(g.faces, w.faces, strict=True):
            assert a.label == b.label
            assert np.allclose(a.box, b.box, atol=1e-4) and np.allclose(a.landmarks, b.landmarks, atol=1e-4)
            assert max(abs(a.probabilities[c] - b.probabilities[c]) for c in a.probabilities) < 1e-6
    # detect() over several images (video frames, server micro-batches) runs them in parallel, same faces
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in photos[:5]]
    for fa, fb in zip(par.detect(imgs), seq.detect(imgs), strict=True):
        assert [f.box for f in fa] == [f.box for f in fb]
    # stopping early leaves nothing running, and a dropped analyzer takes its threads with it
    import gc

    def ours():
        return [t for t in threading.enumerate() if t.name.startswith("ferkit-analyze") and t not in others]

    it = par.analyze_paths(photos * 3, prefetch=4)
    next(it)
    it.close()
    del it, par
    gc.collect()
    for _ in range(100):
        if not ours():
            break
        threading.Event().wait(0.05)
    assert not ours()


def test_onnx_runtime_and_torch_give_the_same_faces_and_labels(photos):
    pytest.importorskip("onnxruntime")
    from ferkit.faces import FaceDetector
    from ferkit.inference.pipeline import Analyzer

    torch.set_num_threads(1)
    ort_an = Analyzer(backend="auto", workers=2)
    torch_an = Analyzer(backend="torch", detector=FaceDetector.create("retinaface", runtime="torch", max_size=640))
    assert [c.backend for c in ort_an.classifiers] == ["onnx"]  # the default ensemble: one ONNX Runtime session
    assert [c.backend for c in torch_an.classifiers] == ["torch", "torch"]
    assert ort_an.detector.runtime == "onnx" and torch_an.detector.runtime == "torch"
    for a, b in zip(ort_an.analyze_paths(photos), torch_an.analyze_paths(photos), strict=True):
        assert a.status == b.status and len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces, strict=True):
            assert np.allclose(fa.box, fb.box, atol=1e-2) and np.allclose(fa.landmarks, fb.landmarks, atol=1e-2)
            assert fa.label == fb.label
            # landmarks 1e-3 px apart move the aligned chip's interpolation a little: 1e-3, not 1e-6
            assert max(abs(fa.probabilities[c] - fb.probabilities[c]) for c in fa.probabilities) < 1e-3


def test_numpy_normalisation_equals_to_input():
    from ferkit.data.spec import InputSpec
    from ferkit.data.transforms import to_input
    from ferkit.inference.backends import normalise_chips

    rng = np.random.default_rng(0)
    for spec in (
        InputSpec(size=(48, 48), channels=1, mean=[0.5], std=[0.5]),
        InputSpec(size=(64, 56), channels=3, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ):
        chips = rng.integers(0, 256, (5, *spec.size, spec.channels), dtype=np.uint8)
        got = normalise_chips(chips, spec)
        assert got is not None and got.dtype == np.float32 and got.shape == (5, spec.channels, *spec.size)
        assert np.abs(got - to_input(chips, spec).numpy()).max() < 1e-5
    # what needs more than normalising goes to to_input
    s = InputSpec(size=(48, 48), channels=1)
    assert normalise_chips(rng.integers(0, 256, (2, 40, 40, 1), dtype=np.uint8), s) is None
    assert normalise_chips(rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8), s) is None
    assert (
        normalise_chips(
            rng.integers(0, 256, (2, 48, 48, 1), dtype=np.uint8), InputSpec(size=(48, 48), channels=1, permute_seed=3)
        )
        is None
    )


def test_numpy_nms_equals_torchvision():
    torchvision_ops = pytest.importorskip("torchvision.ops")
    from ferkit.faces.base import batched_nms

    rng = np.random.default_rng(1)
    for trial in range(30):
        n = int(rng.integers(1, 300))
        xy = rng.random((n, 2), dtype=np.float32) * 200
        boxes = np.concatenate([xy, xy + rng.random((n, 2), dtype=np.float32) * 60 + 1], 1)
        scores = rng.random(n, dtype=np.float32)
        groups = rng.integers(0, 3, n)
        for thr in (0.3, 0.4, 0.7):
            want = torchvision_ops.batched_nms(
                torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), thr
            ).numpy()
            got = batched_nms(boxes, scores, groups, thr)
            assert isinstance(got, np.ndarray) and np.array_equal(got, want), (trial, thr)


def test_zoo_model_predict_never_imports_torch(tmp_path):
    """The default photo path (zoo model, RetinaFace, CPU, onnxruntime installed) runs without torch: the
    start-up cost the user pays per command. The graphs ship in the package: not even the first run exports."""
    pytest.importorskip("onnxruntime")
    script = textwrap.dedent(f"""
        import json, sys
        import ferkit
        r = ferkit.predict(inputs=[{str(_grace())!r}])
        print(json.dumps({{"torch": "torch" in sys.modules, "label": r[0].faces[0].label,
                           "n": len(r[0].faces)}}))
    """)
    env = dict(os.environ, FERKIT_CACHE_DIR=str(tmp_path / "cache"))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    run = json.loads(p.stdout.strip().splitlines()[-1])
    assert run == {"torch": False, "label": "neutral", "n": 1}, run
    # nothing exported on first use: the only cached graph is the default ensemble's members joined into one
    # session (inference.onnx.fuse_ensemble, built from the shipped graphs with the onnx package, not torch)
    cached = sorted(p.name for p in (tmp_path / "cache" / "onnx").glob("*")) if (tmp_path / "cache").exists() else []
    assert all(n.startswith("ensemble-") and n.endswith(".onnx") for n in cached), cached
    # the CLI says which runtime answered
    p = subprocess.run(
        [sys.executable, "-m", "ferkit", "predict", str(_grace()), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert p.returncode == 0 and "retinaface@640, onnx," in p.stderr, p.stderr[-2000:]
