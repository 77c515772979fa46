"""The expression classifiers alone: faces/s at batch 64 with PyTorch, ONNX Runtime fp32 and ONNX Runtime
int8 (dynamic, MatMul/Gemm), for each zoo model, in one run; int8's largest probability change on real
aligned faces is printed beside its speed.

    python bench/classifier_throughput.py [--threads 2] [--seconds 3]
    python bench/classifier_throughput.py --ort-options [--rounds 3]   # ONNX Runtime settings, fer_minixception

``--ort-options``: fer_minixception's shipped graph at batch 64 under each ONNX Runtime setting worth trying
(graph optimisation level, intra-op threads, spinning threads) and the default ensemble as one fused session
against its two members' sessions, measured in interleaved rounds (each setting once per round, so a busy
machine slows all of them alike); the best of the rounds is printed with the spread (max/min - 1).
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


def ort_options(threads: int, seconds: float, rounds: int, batch: int) -> None:
    import onnxruntime as ort

    from ferkit.inference.backends import OnnxClassifier, fuse_classifiers, normalise_chips
    from ferkit.zoo import onnx_file

    path = str(onnx_file("fer_minixception"))
    clf = OnnxClassifier(path, threads=threads)
    chips = np.random.default_rng(0).integers(0, 256, (batch, *clf.spec.size, clf.spec.channels), dtype=np.uint8)
    x = normalise_chips(chips, clf.spec)
    level = ort.GraphOptimizationLevel

    def session(opt=level.ORT_ENABLE_ALL, n=threads, spin="0"):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.graph_optimization_level = n, 1, opt
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda _: s.run(["logits"], {"input": x})

    members = [OnnxClassifier(onnx_file(m), threads=threads) for m in ("fer_minixception", "human_xception")]
    fused = fuse_classifiers(members)
    rows = {
        f"ferkit's session (all, {threads} threads, no spinning)": clf.predict,
        "graph optimisation: basic": session(level.ORT_ENABLE_BASIC),
        "graph optimisation: extended": session(level.ORT_ENABLE_EXTENDED),
        "graph optimisation: disabled": session(level.ORT_DISABLE_ALL),
        "spinning threads": session(spin="1"),
        "1 thread": session(n=1),
        "ensemble: two sessions (faces/s of both)": lambda c: [m.predict(c) for m in members],
    }
    if fused is not None:
        rows["ensemble: one fused session"] = fused.predict
    got: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            got[name].append(rate(fn, chips, seconds))
    base = max(got[next(iter(rows))])
    print(f"fer_minixception, batch {batch}, {threads} threads, best of {rounds} interleaved rounds")
    print(f"{'setting':<48} {'faces/s':>8} {'spread':>7} {'x ferkit':>8}")
    for name, v in got.items():
        print(f"{name:<48} {max(v):8.0f} {max(v) / min(v) - 1:7.2f} {max(v) / base:8.2f}")


def main() -> None:
    import torch

    from ferkit.inference.backends import OnnxClassifier, TorchClassifier
    from ferkit.inference.onnx import export_onnx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--ort-options", action="store_true", help="ONNX Runtime settings for fer_minixception instead")
    ap.add_argument("--rounds", type=int, default=3, help="--ort-options: interleaved rounds")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.ort_options:
        return ort_options(a.threads, a.seconds, a.rounds, a.batch)
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
            print(
                f"{name:<20} {rate(tc.predict, x, a.seconds):8.0f} {rate(fp32.predict, x, a.seconds):9.0f} "
                f"{rate(int8.predict, x, a.seconds):9.0f} {np.abs(p_ref - p_q).max():14.4f} "
                f"{(p_ref.argmax(1) == p_q.argmax(1)).mean():17.3f}"
            )


if __name__ == "__main__":
    main()
