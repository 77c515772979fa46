"""The cost of the per-face attributes (ferkit.attributes) against the default pipeline, in one run.

    python bench/attributes_cost.py [--repeat 5]

Photos: the real ones of tests/data (multi_face.jpg, identity/*.jpg), skimage's astronaut and matplotlib's
Grace Hopper. The default pipeline is ``ferkit.predict`` (detector + the default expression model) on the same
files, warm. Each attribute is timed alone (``describe(image, faces, [name])``, faces from the same detector) and
all together (``"all"``), per photo and per face; the ratio is the attributes' extra time over the default
pipeline's time per photo. Best of ``--repeat`` runs (the machine is shared). Not a timed test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def photos(tmp: Path) -> list[Path]:
    import matplotlib
    import skimage.data
    from PIL import Image

    files = [ROOT / "tests" / "data" / "multi_face.jpg", *sorted((ROOT / "tests" / "data" / "identity").glob("*.jpg"))]
    Image.fromarray(skimage.data.astronaut()).save(tmp / "astronaut.jpg", quality=95)
    files += [tmp / "astronaut.jpg", Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    return files


def best(fn, repeat: int) -> float:
    fn()  # warm-up: sessions and caches built
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    import ferkit
    from ferkit.attributes import ATTRIBUTES, describe
    from ferkit.faces import load_image

    with tempfile.TemporaryDirectory() as tmp:
        files = photos(Path(tmp))
        images = [load_image(f) for f in files]
        an = ferkit.analyzer()
        faces = [an.detect([img])[0] for img in images]
        n_photos, n_faces = len(images), sum(len(f) for f in faces)
        base = best(lambda: ferkit.predict(inputs=[str(f) for f in files]), a.repeat)
        print(f"{n_photos} photos, {n_faces} faces; cpu threads {os.cpu_count()}; best of {a.repeat}")
        print(f"default pipeline (ferkit.predict): {1000 * base / n_photos:.1f} ms/photo")
        print(f"{'attribute':<14}{'ms/face':>9}{'ms/photo':>10}{'x default':>11}")
        for name in [*ATTRIBUTES, "all"]:
            names = ATTRIBUTES if name == "all" else [name]
            t = best(
                lambda names=names: [describe(img, f, names) for img, f in zip(images, faces, strict=True)], a.repeat
            )
            print(f"{name:<14}{1000 * t / n_faces:>9.2f}{1000 * t / n_photos:>10.2f}{t / base:>11.3f}")
        ages = {
            Path(f).stem: [(r["age"], r["gender"], r["gender_score"]) for r in describe(img, fa, ["age", "gender"])]
            for f, img, fa in zip(files, images, faces, strict=True)
        }
        for k, v in ages.items():
            print(
                f"  {k}: " + ", ".join(f"{age:.0f} {g} {s:.2f}" if age is not None else "withheld" for age, g, s in v)
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
