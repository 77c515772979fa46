"""Training throughput: ferkit's trainer vs a textbook PyTorch loop, in the same run, on the same files.

The baseline is written the way the source projects do it: an ImageFolder of PNG files decoded with PIL
per item, torchvision transforms (Grayscale, RandomHorizontalFlip, RandomRotation, ColorJitter, ToTensor,
Normalize) and a DataLoader with default settings (batch 64, shuffle, no workers). ferkit trains the same
model on the same files (decoded once into its cache, batched augmentation on the device).

Also measures peak memory (max RSS of a fresh process) for training on a FER2013-sized dataset
(35,887 48x48 images in a FER2013 CSV).

    python bench/train_throughput.py                 # both models, ~4 min on 2 CPU cores
    python bench/train_throughput.py --quick         # fewer images
Not a test: it prints figures and ratios, it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_folder(root: Path, n: int) -> Path:
    from ferkit.data.synth import write

    write(root, n=n, seed=0, layout="folder")
    return root


def baseline_img_s(train_dir: Path, model_name: str, images: int, augment: bool, device: str = "cpu") -> float:
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from ferkit.models import create_model

    tf = [T.Grayscale(1)]
    if augment:
        tf += [T.RandomHorizontalFlip(), T.RandomRotation(15), T.ColorJitter(0.3, 0.3)]
    tf += [T.ToTensor(), T.Normalize([0.5], [0.25])]
    ds = ImageFolder(str(train_dir), transform=T.Compose(tf))
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=len(ds.classes), in_channels=1).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    seen, t0, warm = 0, None, 2
    while seen < images:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if warm:
                warm -= 1
                if not warm:
                    t0 = time.perf_counter()
                continue
            seen += len(y)
            if seen >= images:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()  # the last steps' kernels count too
    return seen / (time.perf_counter() - t0)


def model_only_img_s(model_name: str, images: int) -> float:
    """The compute ceiling: the same optimiser step on a fixed in-memory batch, no data pipeline at all."""
    from ferkit.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, num_classes=7, in_channels=1).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 7, (64,))
    model.train()
    seen, t0 = 0, None
    for i in range(2 + images // 64):
        if i == 2:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        seen += 64 if i >= 2 else 0
    return seen / (time.perf_counter() - t0)


def ferkit_img_s(
    data_root: Path, model_name: str, images: int, augment: bool, out: Path, device: str = "cpu"
) -> tuple[float, float]:
    from ferkit.data import load_dataset
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import Trainer

    t0 = time.perf_counter()
    ds = load_dataset(str(data_root), quiet=True)
    load_s = time.perf_counter() - t0
    n = len(ds.splits["train"])
    epochs = max(1, round(images / n))
    cfg = TrainConfig(
        model=model_name,
        epochs=epochs,
        batch_size=64,
        augment="basic" if augment else "none",
        out=str(out),
        quiet=True,
        in_channels=1,
        device=device,
    )
    res = Trainer(cfg, dataset=ds).fit()
    rates = [r["train_img_s"] for r in res.history]
    return float(np.median(rates)), load_s


def memory_child(tmp: Path) -> None:
    """Run in a fresh process: build a 35,887-row FER2013 CSV, load it, train one epoch; print peak RSS."""
    from ferkit.data.synth import generate
    from ferkit.training.config import TrainConfig
    from ferkit.training.trainer import Trainer

    csv = tmp / "fer2013_sized.csv"
    if not csv.exists():
        ds = generate(35887, seed=0)
        usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
        with open(csv, "w") as f:
            f.write("emotion,pixels,Usage\n")
            for split, s in ds.splits.items():
                for img, lab in zip(s.images, s.labels, strict=True):
                    f.write(f"{int(lab)},{' '.join(map(str, img[..., 0].ravel().tolist()))},{usage[split]}\n")
        del ds
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    cfg = TrainConfig(
        model="seed1_cnn", data=str(csv), epochs=1, batch_size=64, augment="basic", out=str(tmp / "mem_run"), quiet=True
    )
    res = Trainer(cfg).fit()
    print(
        json.dumps(
            {
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mb": base / 1024,
                "images": res.history[0]["train_samples"],
                "seconds": round(time.perf_counter() - t0, 1),
                "img_s": res.history[0]["train_img_s"],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="seed1_cnn,resnet18")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        memory_child(Path(a.memory_child))
        return
    os.environ.setdefault("FERKIT_CACHE_DIR", tempfile.mkdtemp(prefix="ferkit-bench-cache-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    with tempfile.TemporaryDirectory(prefix="ferkit-bench-") as tmp:
        tmp = Path(tmp)
        n = 2500 if a.quick else 6000
        root = write_folder(tmp / "faces", n)
        rows = []
        for model_name in a.models.split(","):
            images = {"seed1_cnn": 6000, "resnet18": 2000}.get(model_name, 3000) // (2 if a.quick else 1)
            ceiling = model_only_img_s(model_name, images)
            print(f"{model_name:<10} model-only ceiling (fixed batch, no data): {ceiling:7.0f} img/s", flush=True)
            for augment in (False, True):
                b = baseline_img_s(root / "train", model_name, images, augment)
                f, load_s = ferkit_img_s(root, model_name, images, augment, tmp / f"run_{model_name}_{augment}")
                rows.append((model_name, "basic" if augment else "none", b, f, f / b, f / ceiling))
                print(
                    f"{model_name:<10} augment={'basic' if augment else 'none':<5} baseline {b:7.0f} img/s   "
                    f"ferkit {f:7.0f} img/s   ratio {f / b:4.1f}x   (dataset load {load_s:.1f}s)",
                    flush=True,
                )
        print("\n| model | augment | textbook img/s | ferkit img/s | ratio | ferkit / model-only ceiling |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.0f} | {r[4]:.1f}x | {r[5]:.0%} |")
        if not a.no_memory:
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", str(tmp)],
                capture_output=True,
                text=True,
                env=dict(os.environ),
            )
            if out.returncode != 0:
                print("memory run failed:", out.stderr[-2000:])
            else:
                m = json.loads(out.stdout.strip().splitlines()[-1])
                print(
                    f"\npeak memory, FER2013-sized (35,887 images 48x48, CSV -> cache -> 1 epoch seed1_cnn): "
                    f"{m['peak_rss_mb']:.0f} MB max RSS (goal < 2048 MB; {m['img_s']:.0f} img/s, {m['seconds']} s "
                    "incl. first decode)"
                )


if __name__ == "__main__":
    main()
