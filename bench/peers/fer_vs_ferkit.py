"""ferkit vs the `fer` package on the same real photos, in one invocation: whole-process images/s (start-up
included), steady-state ms/photo, faces found, and label agreement on the faces both find; then each ferkit row
against 0.1's default (fer_minixception, RetinaFace at 1280 px, PyTorch): faces found and same labels.

    python bench/peers/fer_vs_ferkit.py            # sets up bench/peers/.venv-fer (fer + tensorflow-cpu) once
    python bench/peers/fer_vs_ferkit.py --n 300   # the README's figures

The `fer` package needs TensorFlow, which never goes into ferkit's environment: the script makes its own
virtual environment for it. The photos are built from images that installed packages ship (scikit-image's
astronaut, matplotlib's Grace Hopper, tests/data): seeded crops, flips, rescales and light changes, saved as
JPEG of 480-800 px, so every run measures the same files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(__file__).resolve().parent / ".venv-fer"
PEER_PACKAGES = [
    "tensorflow-cpu",
    "opencv-contrib-python-headless<5",
    "setuptools<81",
    "pandas",
    "requests",
    "tqdm",
    "pillow",
    "matplotlib",
    "moviepy<2",
    "ffmpeg-python",
]

PEER_WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import cv2
try:
    from fer import FER
except ImportError:  # fer >= 25 keeps it in fer.fer
    from fer.fer import FER
det = FER()  # its default: OpenCV Haar cascade + its mini-Xception
paths = sys.argv[1:]
out, times = [], []
for p in paths:
    t = time.perf_counter()
    img = cv2.imread(p)
    faces = det.detect_emotions(img) if img is not None else []
    times.append(time.perf_counter() - t)
    out.append({"path": p, "faces": [{"box": [int(f["box"][0]), int(f["box"][1]), int(f["box"][0] + f["box"][2]),
                                              int(f["box"][1] + f["box"][3])],
                                      "label": max(f["emotions"], key=f["emotions"].get)} for f in faces]})
steady = sorted(times[10:])[len(times[10:]) // 2] if len(times) > 20 else sorted(times)[len(times) // 2]
print(json.dumps({"results": out, "steady_ms": steady * 1000, "startup_s": time.perf_counter() - t0 - sum(times)}))
"""


def make_photos(folder: Path, n: int, seed: int = 0, portraits: bool = False) -> list[Path]:
    """``portraits``: 640x480 single-face photos instead (4:3 crops of the single-face sources, plus the
    portraits bench/detectors.py fetched, when it has)."""
    import matplotlib
    import numpy as np
    from PIL import Image, ImageEnhance

    srcs = [Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")]
    try:
        from skimage.data import astronaut

        srcs.append(Image.fromarray(astronaut()))
    except ImportError:
        pass
    if portraits:
        fetched = Path(os.environ.get("FERKIT_BENCH_CACHE") or Path.home() / ".cache" / "ferkit-bench") / "photos"
        srcs += [Image.open(p).convert("RGB") for p in sorted((ROOT / "tests" / "data" / "identity").glob("*.jpg"))]
        srcs += [Image.open(p).convert("RGB") for p in sorted(fetched.glob("*.jpg"))]
        return _portraits(folder, n, srcs, np.random.default_rng(seed))
    srcs += [Image.open(p).convert("RGB") for p in sorted((ROOT / "tests" / "data").rglob("*.jpg"))]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.75, 1.0)), int(h * rng.uniform(0.75, 1.0))
        x, y = int(rng.uniform(0, w - cw + 1)), int(rng.uniform(0, h - ch + 1))
        im2 = im.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            im2 = im2.transpose(Image.FLIP_LEFT_RIGHT)
        side = int(rng.uniform(480, 800))
        s = side / max(im2.size)
        im2 = im2.resize((max(1, int(im2.size[0] * s)), max(1, int(im2.size[1] * s))), Image.BILINEAR)
        im2 = ImageEnhance.Brightness(im2).enhance(rng.uniform(0.7, 1.3))
        p = folder / f"photo_{i:04d}.jpg"
        im2.save(p, quality=90)
        out.append(p)
    return out


def _portraits(folder: Path, n: int, srcs: list, rng) -> list[Path]:
    """640x480 JPEGs: a seeded 4:3 window of each source (padded with its edge colour where the source is
    narrower), flipped half the time, light changed."""
    from PIL import Image, ImageEnhance, ImageOps

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        im = srcs[i % len(srcs)]
        w, h = im.size
        if w * 3 < h * 4:  # taller than 4:3: pad the sides
            im = ImageOps.pad(im, (h * 4 // 3, h), color=im.getpixel((0, 0)))
            w, h = im.size
        ch = int(min(h, w * 3 / 4) * rng.uniform(0.8, 1.0))
        cw = ch * 4 // 3
        x, y = int(rng.uniform(0, w - cw + 1)), int(rng.uniform(0, h - ch + 1))
        im2 = im.crop((x, y, x + cw, y + ch)).resize((640, 480), Image.BILINEAR)
        if rng.random() < 0.5:
            im2 = im2.transpose(Image.FLIP_LEFT_RIGHT)
        im2 = ImageEnhance.Brightness(im2).enhance(rng.uniform(0.7, 1.3))
        p = folder / f"photo_{i:04d}.jpg"
        im2.save(p, quality=90)
        out.append(p)
    return out


def ensure_peer_venv() -> Path:
    py = VENV / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", "import fer, tensorflow"], capture_output=True).returncode == 0:
        return py
    print(f"setting up {VENV} (fer + tensorflow-cpu; once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    # fer declares `tensorflow` (the GPU-sized wheel) and facenet-pytorch (a second torch) for its optional MTCNN;
    # its default Haar path needs neither, so install it without them and add tensorflow-cpu.
    subprocess.run(pip + ["--no-deps", "fer"], check=True)
    subprocess.run(pip + PEER_PACKAGES, check=True)
    return py


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def matched(ref: dict, other: dict, thr: float = 0.3) -> tuple[int, int, int]:
    """(faces in ref, of those found in other, of those with the same label)."""
    n = found = same = 0
    for path, faces in ref.items():
        for f in faces:
            n += 1
            best = max(other.get(path, []), key=lambda g: iou(f["box"], g["box"]), default=None)
            if best is not None and iou(f["box"], best["box"]) >= thr:
                found += 1
                same += best["label"] == f["label"]
    return n, found, same


def run_ferkit(folder: Path, extra: list[str], out: Path) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "ferkit", "predict", str(folder), "--quiet", "--output", str(out), *extra],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    if r.returncode not in (0, 2):
        raise SystemExit(r.stderr[-2000:])
    res = {}
    for line in out.read_text().splitlines():
        d = json.loads(line)
        res[d["path"]] = [{"box": f["box"], "label": f["label"]} for f in d["faces"]]
    return wall, res


def steady_ferkit(paths: list[Path], extra: dict) -> float:
    """ms/photo of the analyzer alone once warm (mean over the photos after the first 16), in this process."""
    from ferkit import api

    an = api.analyzer(**extra)
    list(an.analyze_paths(paths[:16]))
    t = time.perf_counter()
    list(an.analyze_paths(paths[16:]))
    return (time.perf_counter() - t) / max(1, len(paths) - 16) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="photos (default 200)")
    ap.add_argument("--threads", type=int, default=None, help="torch/TF threads (default: all cores)")
    ap.add_argument("--portraits", action="store_true", help="640x480 single-face photos instead")
    args = ap.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    py = ensure_peer_venv()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = make_photos(tmp / "photos", args.n, portraits=args.portraits)
        t = time.perf_counter()
        r = subprocess.run(
            [str(py), "-c", PEER_WORKER, *map(str, photos)],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        fer_wall = time.perf_counter() - t
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        peer = json.loads(r.stdout.strip().splitlines()[-1])
        fer_res = {d["path"]: d["faces"] for d in peer["results"]}
        runs = {}
        for name, extra in PIPELINES:
            runs[name] = run_ferkit(tmp / "photos", extra, tmp / f"{len(runs)}.jsonl")
        steady = {name: steady_ferkit(photos, kw) for name, kw in STEADY.items()}
    n = len(photos)
    print(
        f"{n} photos ({'640x480 portraits' if args.portraits else '480-800 px'}, real faces), one process each, "
        "start-up included; "
        f"{os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(
        f"{'pipeline':<44} {'img/s':>7} {'ms/img':>7} {'steady ms':>9} {'x fer':>6} {'faces':>6} "
        f"{'fer faces found':>16} {'same label':>10}"
    )
    nf = sum(len(v) for v in fer_res.values())
    print(
        f"{'fer (Haar + mini-Xception, TF)':<44} {n / fer_wall:7.1f} {fer_wall / n * 1000:7.1f} "
        f"{peer['steady_ms']:9.1f} {1.0:6.2f} {nf:6d}"
    )
    for name, (wall, res) in runs.items():
        _, found, same = matched(fer_res, res)
        st = f"{steady[name]:9.1f}" if name in steady else f"{'':9}"
        print(
            f"{name:<44} {n / wall:7.1f} {wall / n * 1000:7.1f} {st} {fer_wall / wall:6.2f} "
            f"{sum(len(v) for v in res.values()):6d} {found:>7d}/{nf:<8d} {same / max(found, 1):10.3f}"
        )
    default_name = PIPELINES[0][0]
    big = {
        p: [f for f in fs if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= 40]
        for p, fs in runs[default_name][1].items()
    }
    for name, (_, res) in runs.items():
        if name != default_name:
            d_n, d_found, d_same = matched(big, res, thr=0.5)
            print(
                f"{name} vs the default: finds {d_found}/{d_n} ({d_found / max(d_n, 1):.3f}) of its faces >= 40 px, "
                f"same label on {d_same / max(d_found, 1):.3f} of them"
            )
    base_res = runs[REFERENCE][1]
    for name, (_, res) in runs.items():
        if name == REFERENCE:
            continue
        d_n, d_found, d_same = matched(base_res, res)
        print(
            f"{name} vs 0.1's default ({REFERENCE}): finds {d_found}/{d_n} of its faces, same label on "
            f"{d_same / max(d_found, 1):.3f} of them"
        )


# (row name, extra `ferkit predict` arguments): whole-process runs
REFERENCE = "0.1 default (fer_minixception, det 1280, torch)"
PIPELINES = (
    ("ferkit (default: 2-model ensemble, det 640)", []),
    ("ferkit --model fer_minixception", ["--model", "fer_minixception"]),
    ("ferkit --det-size 320", ["--det-size", "320"]),
    ("ferkit --fast", ["--fast"]),
    ("ferkit --fast --detector blazeface", ["--fast", "--detector", "blazeface"]),
    ("ferkit --fast --det-size 256", ["--fast", "--det-size", "256"]),
    ("ferkit --backend torch", ["--backend", "torch"]),
    (REFERENCE, ["--model", "fer_minixception", "--det-size", "1280", "--backend", "torch"]),
)
# in-process steady state (analyzer warm), same rows
STEADY = {
    "ferkit (default: 2-model ensemble, det 640)": {},
    "ferkit --model fer_minixception": {"model": "fer_minixception"},
    "ferkit --det-size 320": {"det_size": 320},
    "ferkit --fast": {"fast": True},
    "ferkit --fast --detector blazeface": {"fast": True, "detector": "blazeface"},
    "ferkit --fast --det-size 256": {"fast": True, "det_size": 256},
}


if __name__ == "__main__":
    main()
