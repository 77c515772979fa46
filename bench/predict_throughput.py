"""End-to-end photo throughput of ``ferkit predict`` (decode + detect + align + classify) vs the source
projects' way, in the same run, on the same files, same classifier (fer_minixception), same threads.

Photos: skimage's astronaut (1 face), matplotlib's grace_hopper.jpg (1 face) and tests/data/multi_face.jpg
(5 faces), each shrunk by a random factor (0.7-1.0 of "fit") into a 640x480 canvas at a random place, randomly
mirrored, written as JPEG (q 90): ``--n`` images (default 40), so every face of the source stays in the frame
and the reference count per image is known (1, 1, 5).

Baseline (fer / the source scripts): for each file, ``cv2.imread``, grey, OpenCV Haar ``detectMultiScale``
(scaleFactor 1.1, minNeighbors 5, minSize 30), then for each face: crop the box, resize to 64x64, normalise,
``model(x[None])``. ferkit: ``Analyzer("fer_minixception", detector="retinaface").analyze_paths(files)``
(background decode thread, batched detection of same-sized images, landmark alignment, faces of 8 images
per classifier forward).

Recall = sum over images of min(found, reference) / sum of references; "extra" = detections beyond the
reference count (false positives, or faces the reference misses). Latency: ``Analyzer.analyze(path)`` on one
640x480 JPEG (decode included), p50 / p90 of 30 runs, at 1 and 2 threads.

    python bench/predict_throughput.py              # ~1 min on a shared 2-core box
    python bench/predict_throughput.py --n 20 --threads 2
Not a test: prints figures and the ratio (goal >= 5x at equal or better recall, latency < 50 ms); asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def sources() -> list[tuple[str, np.ndarray, int]]:
    import matplotlib
    from PIL import Image

    out = []
    try:
        from skimage.data import astronaut

        out.append(("astronaut", astronaut(), 1))
    except ImportError:  # skimage is a dev dependency
        print("(scikit-image not installed: no astronaut photo)")
    grace = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    out.append(("grace_hopper", np.asarray(Image.open(grace).convert("RGB")), 1))
    out.append(("multi_face", np.asarray(Image.open(ROOT / "tests/data/multi_face.jpg").convert("RGB")), 5))
    return out


def make_photos(folder: Path, n: int, seed: int = 0) -> list[tuple[Path, int]]:
    import cv2

    rng = np.random.default_rng(seed)
    srcs = sources()
    files = []
    for i in range(n):
        name, img, ref = srcs[i % len(srcs)]
        h, w = img.shape[:2]
        f = min(640 / w, 480 / h) * rng.uniform(0.7, 1.0)
        small = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            small = small[:, ::-1]
        canvas = np.full((480, 640, 3), rng.integers(0, 255, 3), np.uint8)
        y, x = rng.integers(0, 480 - small.shape[0] + 1), rng.integers(0, 640 - small.shape[1] + 1)
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        p = folder / f"{i:03d}_{name}.jpg"
        cv2.imwrite(str(p), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        files.append((p, ref))
    return files


def baseline(files: list[Path], model, spec) -> list[int]:
    """One image at a time, Haar detection, one forward per face (what fer's detect_emotions does)."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = []
    mean, std = spec.mean[0], spec.std[0]
    for p in files:
        bgr = cv2.imread(str(p))
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(30, 30))
        for x, y, w, h in boxes:
            face = cv2.resize(grey[y : y + h, x : x + w], tuple(spec.size[::-1]))
            t = torch.from_numpy(face).float().div(255).sub(mean).div(std)[None, None]
            with torch.no_grad():
                model(t).softmax(1)
        found.append(len(boxes))
    return found


def recall(found: list[int], refs: list[int]) -> tuple[float, int]:
    return (
        sum(min(f, r) for f, r in zip(found, refs, strict=True)) / sum(refs),
        sum(max(0, f - r) for f, r in zip(found, refs, strict=True)),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--det-size",
        type=int,
        default=None,
        help="ferkit's detection long side (default: the detector's 1280, i.e. 640x480 at full size)",
    )
    ap.add_argument("--latency-threads", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="timed passes over the files (best kept)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import cv2

    cv2.setNumThreads(a.threads)
    from ferkit.checkpoint import build_model
    from ferkit.data.transforms import InputSpec
    from ferkit.inference.pipeline import Analyzer
    from ferkit.refs import load_checkpoint

    ck = load_checkpoint("fer_minixception")
    model, spec = build_model(ck).eval(), InputSpec.from_dict(ck["input"])
    an = Analyzer("fer_minixception", detector="retinaface", det_size=a.det_size)
    with tempfile.TemporaryDirectory() as tmp:
        items = make_photos(Path(tmp), a.n)
        files, refs = [p for p, _ in items], [r for _, r in items]
        baseline(files[:3], model, spec)  # warm-up
        list(an.analyze_paths(files[:3]))
        tb, tf = [], []
        for _ in range(a.repeats):
            t = time.perf_counter()
            fb = baseline(files, model, spec)
            tb.append(time.perf_counter() - t)
            t = time.perf_counter()
            res = list(an.analyze_paths(files))
            tf.append(time.perf_counter() - t)
        ff = [len(r.faces) for r in res]
        rb, xb = recall(fb, refs)
        rf, xf = recall(ff, refs)
        nb, nf = sum(fb), sum(ff)
        print(
            f"{a.n} photos 640x480 ({sum(refs)} reference faces), {a.threads} thread(s), best of {a.repeats}, "
            f"ferkit det_size {a.det_size or 'default (full size)'}"
        )
        print(
            f"  baseline (per image, Haar, per-face forward): {tb and min(tb):.2f} s  {nb / min(tb):7.1f} faces/s  "
            f"{a.n / min(tb):6.1f} img/s  recall {rb:.3f}  extra {xb}"
        )
        print(
            f"  ferkit   (batched, RetinaFace, aligned)     : {min(tf):.2f} s  {nf / min(tf):7.1f} faces/s  "
            f"{a.n / min(tf):6.1f} img/s  recall {rf:.3f}  extra {xf}"
        )
        print(
            f"  speed-up: {(nf / min(tf)) / max(nb / min(tb), 1e-9):.2f}x faces/s, "
            f"{min(tb) / min(tf):.2f}x images/s (goal >= 5x at equal or better recall)"
        )
        one = files[0]
        for th in a.latency_threads:
            torch.set_num_threads(th)
            cv2.setNumThreads(th)
            an.analyze(one)
            lat = []
            for _ in range(30):
                t = time.perf_counter()
                an.analyze(one)
                lat.append((time.perf_counter() - t) * 1000)
            print(
                f"  single-image latency ({th} thread{'s' * (th > 1)}, 640x480 JPEG, decode included): "
                f"p50 {np.percentile(lat, 50):.1f} ms  p90 {np.percentile(lat, 90):.1f} ms (goal < 50 ms on 2 cores)"
            )


if __name__ == "__main__":
    main()
