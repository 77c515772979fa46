"""The expression classifiers alone: faces/s at batch 64 with PyTorch, ONNX Runtime fp32 and ONNX Runtime
int8 (dynamic, MatMul/Gemm), for each zoo model, in one run; int8's largest probability change on real
aligned faces is printed beside its speed.

    python bench/classifier_throughput.py [--threads 2] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, x, seconds: float) -> float:
    fn(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def real_chips(spec) -> np.ndarray:
    """Aligned faces of the photos in tests/data, at the model's input size."""
    from ferkit.faces import align
    from ferkit.inference.pipeline import Analyzer

    an = Analyzer()
    chips = []
    for p in sorted((ROOT / "tests" / "data").rglob("*.jpg")):
        from ferkit.faces import load_image

        img = load_image(p)
        for f in an.detect([img])[0]:
            chips.append(align(img, f, size=spec.size, channels=spec.channels))
    return np.stack(chips)


def main() -> None:
    import torch

    from ferkit.inference.backends import OnnxClassifier, TorchClassifier
    from ferkit.inference.onnx import export_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"batch {a.batch}, {a.threads} threads; faces/s (higher is better)")
    print(f"{'model':<20} {'torch':>8} {'ort fp32':>9} {'ort int8':>9} {'int8 max |dp|':>14} {'int8 argmax same':>17}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("fer_minixception", "human_xception", "faceapi_expression"):
            tc = TorchClassifier(name)
            x = np.random.default_rng(0).integers(0, 256, (a.batch, *tc.spec.size, tc.spec.channels), dtype=np.uint8)
            fp32 = OnnxClassifier(export_onnx(name, Path(tmp) / f"{name}.onnx"), threads=a.threads)
            int8 = OnnxClassifier(export_onnx(name, Path(tmp) / f"{name}.int8.onnx", int8=True), threads=a.threads)
            chips = real_chips(tc.spec)
            p_ref, p_q = tc.predict(chips)[0], int8.predict(chips)[0]
            print(f"{name:<20} {rate(tc.predict, x, a.seconds):8.0f} {rate(fp32.predict, x, a.seconds):9.0f} "
                  f"{rate(int8.predict, x, a.seconds):9.0f} {np.abs(p_ref - p_q).max():14.4f} "
                  f"{(p_ref.argmax(1) == p_q.argmax(1)).mean():17.3f}")


if __name__ == "__main__":
    main()
