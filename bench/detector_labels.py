"""What a boxes-only detector costs in expression labels: each detector's faces against RetinaFace's (the
default) on real photos, and the label the default model gives each face's crop against the label it gives
RetinaFace's landmark-aligned crop of the same face.

Photos (real people, all from installed packages or the cached registry artifacts, nothing committed):
skimage's astronaut, matplotlib's grace_hopper.jpg, tests/data/multi_face.jpg and tests/data/identity/*.jpg,
face-api 1.7.15's demo/sample1-6.jpg (group photos) and Human 3.3.6's assets/samples.jpg (a collage of faces),
read straight out of the npm tarballs in ``$FERKIT_ZOO_ARTIFACTS`` / ``~/.cache/ferkit-test-artifacts``.

For every detector: RetinaFace's faces (score >= 0.8) of at least 20 and 40 px are the reference; a detected
face matches the reference face it overlaps most (IoU >= 0.3, greedy, highest score first: tinyface's boxes
are taller than RetinaFace's). recall = matched / reference faces; extra = detections matching none (false
positives, or faces RetinaFace missed); labels kept = matched faces whose label equals the label of
RetinaFace's aligned crop.

    python bench/detector_labels.py                     # ~1-2 min on a shared 2-core box
    python bench/detector_labels.py --detectors tinyface ssd_mobilenet haar mtcnn
Not a test: prints the table; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("FERKIT_ZOO_ARTIFACTS", Path.home() / ".cache" / "ferkit-test-artifacts"))
TARBALL_PHOTOS = {
    "vladmandic-face-api-1.7.15.tgz": [f"package/demo/sample{i}.jpg" for i in range(1, 7)],
    "vladmandic-human-3.3.6.tgz": ["package/assets/samples.jpg"],
}


def photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    from PIL import Image

    from ferkit.faces import load_image
    from ferkit.faces.io import pil_to_rgb

    out = {
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
        "multi_face": load_image(ROOT / "tests" / "data" / "multi_face.jpg"),
    }
    for p in sorted((ROOT / "tests" / "data" / "identity").glob("*.jpg")):
        out[p.stem] = load_image(p)
    for tgz, members in TARBALL_PHOTOS.items():
        if not (ARTIFACTS / tgz).is_file():
            print(f"(skipping {tgz}: not in {ARTIFACTS})")
            continue
        with tarfile.open(ARTIFACTS / tgz) as t:
            for m in members:
                f = t.extractfile(m)
                if f is not None:
                    out[f"{tgz.split('-')[1]}_{Path(m).stem}"] = pil_to_rgb(Image.open(io.BytesIO(f.read())), m)
    return out


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detectors", nargs="+", default=["tinyface", "ssd_mobilenet", "haar"])
    a = ap.parse_args(argv)
    from ferkit.inference.pipeline import Analyzer

    imgs = photos()
    ref_an = Analyzer(detector="retinaface")
    refs = {k: [f for f in ref_an.analyze(v).faces] for k, v in imgs.items()}
    n_ref = sum(len(v) for v in refs.values())
    print(
        f"{len(imgs)} photos, {n_ref} RetinaFace faces "
        f"({sum(min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= 40 for v in refs.values() for f in v)} >= 40 px)"
    )
    print(f"{'detector':14s} {'recall>=20px':>13s} {'recall>=40px':>13s} {'extra':>6s} {'labels kept':>12s}")
    for det in a.detectors:
        an = Analyzer(detector=det)
        found = {20: [0, 0], 40: [0, 0]}
        extra = kept = matched = 0
        for name, img in imgs.items():
            got = sorted(an.analyze(img).faces, key=lambda f: -f.det_score)
            free = list(refs[name])
            for g in got:
                best = max(free, key=lambda r: iou(g.box, r.box), default=None)
                if best is None or iou(g.box, best.box) < 0.3:
                    extra += 1
                    continue
                free.remove(best)
                matched += 1
                kept += g.label == best.label
            for r in refs[name]:
                side = min(r.box[2] - r.box[0], r.box[3] - r.box[1])
                for lim in (20, 40):
                    if side >= lim:
                        found[lim][1] += 1
                        found[lim][0] += r not in free
        print(
            f"{det:14s} {found[20][0] / max(1, found[20][1]):13.3f} {found[40][0] / max(1, found[40][1]):13.3f} "
            f"{extra:6d} {kept / max(1, matched):8.3f} ({kept}/{matched})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
