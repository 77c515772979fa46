"""The anti-spoofing model's scores on real faces and on simple home-made "spoofs", in one run.

    python bench/spoof_scores.py

ferkit has no spoof data (no printed-photo or replay-attack set is available here), so this is not a validation
of ``defaults.SPOOF_THRESHOLD``: it shows where real photos land and whether crude re-captures move the score.

Real faces: tests/data (multi_face.jpg, identity/*.jpg), skimage's astronaut, matplotlib's Grace Hopper, and the
100 faces of ``skimage.data.lfw_subset()`` (its first 100 images; the other 100 are not faces; 25x25 grey crops,
upscaled 4x to 100 px, scored as whole-image face crops). "Spoofs", made from each real photo: ``print`` (the
photo shrunk to 45% onto a white page with a grey border, slightly blurred: a photo of a printed photo), ``jpeg``
(re-compressed at quality 8), ``moire`` (a screen's RGB sub-pixel stripes and a low-frequency interference
pattern multiplied in: a photo of a monitor). Each face is found by the default detector and scored by
``ferkit.attributes.describe`` (the path ``--anti-spoof`` uses). Prints per-set min / quartiles / max and the
fraction below the threshold, then each photo's scores.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def real_photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    from PIL import Image

    files = [ROOT / "tests" / "data" / "multi_face.jpg", *sorted((ROOT / "tests" / "data" / "identity").glob("*.jpg"))]
    files.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    out = {f.stem: np.asarray(Image.open(f).convert("RGB")) for f in files}
    out["astronaut"] = skimage.data.astronaut()
    return out


def printed(img: np.ndarray) -> np.ndarray:
    """A photo of a printed photo: shrunk onto a white page with a border, a little blur and paper tint."""
    from PIL import Image, ImageFilter

    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((int(w * 0.45), int(h * 0.45)), Image.Resampling.LANCZOS)
    page = Image.new("RGB", (w, h), (246, 244, 236))
    x0, y0 = (w - small.width) // 2, (h - small.height) // 2
    page.paste((128, 128, 128), (x0 - 6, y0 - 6, x0 + small.width + 6, y0 + small.height + 6))
    page.paste(small, (x0, y0))
    return np.asarray(page.filter(ImageFilter.GaussianBlur(0.8)))


def jpeg(img: np.ndarray, quality: int = 8) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def moire(img: np.ndarray) -> np.ndarray:
    """A photo of a screen: RGB sub-pixel stripes (period 3 px) and a slanted low-frequency interference."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = np.full((h, w, 3), 0.55, np.float32)
    for c in range(3):
        stripes[..., c][(xx.astype(int) % 3) == c] = 1.0
    wave = 0.8 + 0.2 * np.sin(2 * np.pi * (xx * 0.9 + yy * 0.45) / 7.0)[..., None]
    out = img.astype(np.float32) * stripes * wave * 1.25
    return np.clip(out, 0, 255).astype(np.uint8)


def lfw_crops() -> list[np.ndarray]:
    import cv2
    import skimage.data

    out = []
    for f in skimage.data.lfw_subset()[:100]:  # the first 100 are faces, the rest are not
        g = (np.clip(f, 0, 1) * 255).astype(np.uint8)
        g = cv2.resize(g, (100, 100), interpolation=cv2.INTER_CUBIC)
        out.append(np.repeat(g[..., None], 3, axis=2))
    return out


def scores(detector, img: np.ndarray) -> list[float]:
    from ferkit.attributes import describe

    faces = detector.detect(img)
    return [r["spoof_score"] for r in describe(img, faces, ["spoof"]) if r["spoof_score"] is not None]


def summary(name: str, vals: list[float], thr: float) -> str:
    if not vals:
        return f"{name:<22} n=0"
    v = np.sort(np.asarray(vals))
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    below = float(np.mean(v < thr))
    return (
        f"{name:<22} n={len(v):<4d} min {v[0]:.4f}  q1 {q1:.4f}  median {med:.4f}  q3 {q3:.4f}  max {v[-1]:.4f}  "
        f"below {thr}: {below:.2f}"
    )


def main() -> None:
    from ferkit import defaults
    from ferkit.attributes import describe
    from ferkit.faces import FaceDetector

    thr = defaults.SPOOF_THRESHOLD
    det = FaceDetector.create(defaults.DETECTOR, max_size=defaults.DET_SIZE)
    sets: dict[str, list[float]] = {"real photos": [], "spoof: print": [], "spoof: jpeg q8": [], "spoof: moire": []}
    per_photo = []
    for name, img in real_photos().items():
        r = scores(det, img)
        sets["real photos"] += r
        row = [name, r]
        for key, fn in (("spoof: print", printed), ("spoof: jpeg q8", jpeg), ("spoof: moire", moire)):
            s = scores(det, fn(img))
            sets[key] += s
            row.append(s)
        per_photo.append(row)
    lfw = [r["spoof_score"] for c in lfw_crops() for r in describe(c, None, ["spoof"]) if r["spoof_score"] is not None]
    print(f"threshold (defaults.SPOOF_THRESHOLD) {thr}; face scores are P(real)")
    print(summary("real: lfw_subset crops", lfw, thr))
    for k, v in sets.items():
        print(summary(k, v, thr))
    print("\nper photo (real | print | jpeg | moire), one score per detected face:")
    for name, *cols in per_photo:
        print(f"  {name:<12} " + " | ".join(" ".join(f"{s:.3f}" for s in c) or "-" for c in cols))


if __name__ == "__main__":
    main()
