"""Evaluation throughput: ferkit's batched evaluator vs a per-image loop, in the same run, on the same files.

The baseline is the loop the source projects' ``evaluate`` / ``infer`` scripts run: for each image file, PIL
decode, ``Grayscale``, ``ToTensor``, ``Normalize``, then ``model(x.unsqueeze(0))`` under ``torch.no_grad()``.
ferkit evaluates the same images from its decode-once uint8 cache with
:func:`ferkit.evaluation.evaluator.predict_arrays` (one ``to_input`` + one forward per batch of 256).
Both use the same ``resnet18`` (7 classes, 1 channel, 48x48 input, random weights: speed does not depend on them)
and the same number of threads.

Also prints the first decode into the cache (paid once per dataset, then memory-mapped) and the wall time of
the whole ``ferkit evaluate`` (inference + every metric, plot and report.html).

    python bench/eval_throughput.py                 # 2,000 images, 1 thread: ~1-2 min on a shared 2-core box
    python bench/eval_throughput.py --quick         # 600 images
    python bench/eval_throughput.py --threads 2
Not a test: it prints figures and the ratio (goal >= 5x), it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_checkpoint(path: Path, classes: list[str]) -> Path:
    from ferkit.checkpoint import make_checkpoint as make
    from ferkit.checkpoint import save_checkpoint
    from ferkit.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=len(classes), in_channels=1)
    ck = make(
        model,
        model_name="resnet18",
        model_kwargs={},
        num_classes=len(classes),
        in_channels=1,
        task="classify",
        classes=classes,
        input_spec={"size": [48, 48], "channels": 1, "mean": [0.5], "std": [0.25]},
    )
    return save_checkpoint(ck, path)


@torch.no_grad()
def baseline_img_s(files: list[str], model, n_warm: int = 10) -> tuple[float, np.ndarray]:
    """Per image: PIL open -> Grayscale -> ToTensor -> Normalize -> model; returns (img/s, predictions)."""
    import torchvision.transforms as T
    from PIL import Image

    tf = T.Compose([T.Grayscale(1), T.Resize((48, 48)), T.ToTensor(), T.Normalize([0.5], [0.25])])
    model.eval()
    preds = []
    for f in files[:n_warm]:
        model(tf(Image.open(f)).unsqueeze(0))
    t0 = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            x = tf(im).unsqueeze(0)
        preds.append(int(model(x).argmax(1)))
    return len(files) / (time.perf_counter() - t0), np.array(preds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None, help="images (default 2000, --quick 600)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both loops (default 1)")
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from ferkit.checkpoint import build_model
    from ferkit.data import load_dataset
    from ferkit.data.synth import write
    from ferkit.data.transforms import InputSpec
    from ferkit.evaluation.evaluator import evaluate_checkpoint, predict_arrays
    from ferkit.refs import load_checkpoint

    n = a.n or (600 if a.quick else 2000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU; resnet18 1x48x48, {n} images")
    with tempfile.TemporaryDirectory(prefix="ferkit-bench-") as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("FERKIT_CACHE_DIR", str(tmp / "cache"))  # never the user's cache; removed at the end
        write(tmp / "faces", n=n, seed=0, layout="folder", val_fraction=0.0, test_fraction=0.9)
        t0 = time.perf_counter()
        ds = load_dataset(str(tmp / "faces"), quiet=True)
        decode_s = time.perf_counter() - t0
        # both loops see exactly the same files: every image of every split
        ids = [i for s in ds.splits.values() for i in s.ids]
        images = np.concatenate([s.images for s in ds.splits.values()])
        ckpt_path = make_checkpoint(tmp / "resnet18.pt", ds.classes)
        ck = load_checkpoint(ckpt_path)
        model, spec = build_model(ck), InputSpec.from_dict(ck["input"])

        b_rate, b_pred = baseline_img_s(ids, model)
        predict_arrays(model, images[: a.batch_size], spec, batch_size=a.batch_size)  # warm-up
        t0 = time.perf_counter()
        out = predict_arrays(model, images, spec, batch_size=a.batch_size)
        f_rate = len(images) / (time.perf_counter() - t0)
        agree = float((out["probs"].argmax(1) == b_pred).mean())

        t0 = time.perf_counter()
        ev = evaluate_checkpoint(
            ckpt_path, dataset=ds, out=tmp / "eval", quiet=True, device="cpu", batch_size=a.batch_size
        )
        full_s = time.perf_counter() - t0

    print(f"per-image baseline (PIL -> ToTensor -> model):  {b_rate:8.1f} img/s")
    print(f"ferkit batched evaluator (uint8 cache, b={a.batch_size}): {f_rate:8.1f} img/s")
    print(f"ratio: {f_rate / b_rate:.1f}x (goal >= 5x); the two loops' predictions agree on {agree:.1%} of images")
    print(
        f"first decode into the cache: {decode_s:.1f} s for {len(ids)} files (once per dataset); whole "
        f"`ferkit evaluate` of the {ev.metrics['n']}-image test split incl. metrics, 7 plots and report.html: "
        f"{full_s:.1f} s"
    )
    print(
        f"\n| loop | img/s |\n|---|---:|\n| per-image (PIL, ToTensor) | {b_rate:.0f} |\n"
        f"| ferkit batched | {f_rate:.0f} |\n| ratio | {f_rate / b_rate:.1f}x |"
    )


if __name__ == "__main__":
    main()
