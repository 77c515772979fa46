"""Ray engine scaling: images/s with 1 and 2 actors vs the plain in-process analyzer, same files, same run.

Plain: ``Analyzer.analyze_paths`` (the CLI's path) in this process with one torch thread. Ray: a local Ray
runtime (started once, before timing) and :func:`ferkit.inference.ray_engine.predict_dataset` with 1 and 2
actors (one CPU, one torch thread each), writing Parquet to a temp folder. Both use RetinaFace at det_size
320 and fer_minixception on the same photos (astronaut / Grace Hopper / tests/data, 160-256 px).

Three rates per Ray run: ``wall`` (inputs / seconds of the whole predict_dataset call, actor start-up and
model loading included), ``steady`` (inputs / seconds between the first and last finished block: what a
long job tends to) and ``busy`` (inputs / seconds an actor spent inside its batches). Goals: 2 actors >=
1.7x one actor (steady); Ray overhead <= 15% vs plain at one actor (steady).

    python bench/ray_scaling.py              # 600 images
    python bench/ray_scaling.py --n 120      # quicker
Not a test: prints figures and ratios, asserts nothing. On a shared machine, cores busy with other work make
the 2-actor ratio look worse than it is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def make_photos(folder: Path, n: int) -> list[str]:
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    bases = [
        Image.fromarray(data.astronaut()),
        Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"),
    ]
    bases += [
        Image.open(p).convert("RGB") for p in sorted((Path(__file__).parents[1] / "tests" / "data").glob("*.jpg"))
    ]
    out = []
    for i in range(n):
        im = bases[i % len(bases)].copy()
        side = (160, 192, 224, 256)[(i // len(bases)) % 4]
        im.thumbnail((side, side))
        if i % 2:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        p = folder / f"img_{i:04d}.jpg"
        im.save(p, quality=90)
        out.append(str(p))
    return out


def steady_rate(out: Path) -> float:
    """Inputs/s between the first and the last finished block (from the manifest parts' mtimes): the rate
    once every actor has started and loaded its models."""
    import pyarrow.parquet as pq

    parts = sorted((out / "_manifest").glob("part-*.parquet"), key=lambda p: p.stat().st_mtime)
    if len(parts) < 2:
        return float("nan")
    n = sum(pq.read_metadata(p).num_rows for p in parts[1:])
    return n / (parts[-1].stat().st_mtime - parts[0].stat().st_mtime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="images (default 600)")
    from ferkit.inference.ray_engine import DEFAULT_BATCH_SIZE

    ap.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"inputs per actor call (default {DEFAULT_BATCH_SIZE}, the engine's)",
    )
    a = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import ray
    import torch

    from ferkit.inference.pipeline import Analyzer, AnalyzerSettings
    from ferkit.inference.ray_engine import predict_dataset

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="ferkit-ray-bench-"))
    (tmp / "in").mkdir()
    files = make_photos(tmp / "in", a.n)
    settings = AnalyzerSettings("fer_minixception", detector="retinaface", det_size=320, crop="align")

    an = Analyzer(settings=settings)
    list(an.analyze_paths(files[:8]))  # warm-up

    def plain_rate() -> float:
        t = time.perf_counter()
        n = sum(1 for _ in an.analyze_paths(files))
        return n / (time.perf_counter() - t)

    plain_before = plain_rate()

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rates = {}
    try:
        for k in (1, 2):
            t = time.perf_counter()
            s = predict_dataset(
                [str(tmp / "in")],
                tmp / f"out{k}",
                settings,
                actors=k,
                batch_size=a.batch_size,
                overwrite=True,
                quiet=True,
            )
            wall = s["files"] / (time.perf_counter() - t)
            busy = sum(v["images_per_s"] for v in s["per_actor"].values()) / max(1, len(s["per_actor"]))
            steady = steady_rate(tmp / f"out{k}")
            rates[k] = (wall, steady, busy)
            print(
                f"ray {k} actor{'s' * (k > 1)}: {wall:6.1f} images/s wall, {steady:6.1f} steady, "
                f"{busy:6.1f} per actor while busy ({s['files']} files, {len(s['per_actor'])} workers)"
            )
    finally:
        ray.shutdown()
    plain_after = plain_rate()  # again: on a shared machine the load moves; the ratios use the mean
    plain = (plain_before + plain_after) / 2
    print(
        f"plain in-process: {plain_before:6.1f} images/s before the Ray runs, {plain_after:6.1f} after "
        f"({len(files)} files, 1 thread)"
    )
    (w1, s1, b1), (w2, s2, _) = rates[1], rates[2]
    print(f"2 actors / 1 actor: steady {s2 / s1:.2f}x, wall {w2 / w1:.2f}x   (goal >= 1.7x)")
    print(
        f"Ray overhead at 1 actor vs plain: steady {100 * (1 - s1 / plain):+.1f}%, "
        f"busy {100 * (1 - b1 / plain):+.1f}%, "
        f"wall {100 * (1 - w1 / plain):+.1f}%   (goal <= 15%)"
    )
    print(f"machine: {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
