"""Measure how far ferkit's numbers move against the recorded parity fixtures when the floating point around them
changes: torch thread count, oneDNN on/off, the CPU instruction set torch and oneDNN may use. The test tolerances
for those fixtures (tests/test_faces.py PARITY_PX, tests/test_zoo.py TOL) are set from this table; re-run it
when a fixture, a network or the pinned torch changes:

    python scripts/measure_tolerances.py            # one subprocess per configuration, prints a table

Each configuration runs in its own process because ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA are read once, at
torch's start-up. A capability the CPU lacks falls back silently, so the table says what this CPU ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [  # (label, threads, mkldnn, environment)
    ("1 thread", 1, True, {}),
    ("2 threads", 2, True, {}),
    ("oneDNN off", 1, False, {}),
    ("ATen default ISA", 1, True, {"ATEN_CPU_CAPABILITY": "default"}),
    ("ATen AVX2", 1, True, {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("oneDNN AVX2", 1, True, {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("oneDNN SSE4.1 + ATen default", 1, True, {"ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default"}),
    ("2 threads, oneDNN off, default ISA", 2, False, {"ATEN_CPU_CAPABILITY": "default"}),
]


def measure(threads: int, mkldnn: bool) -> dict:
    """The largest deviation from each recorded fixture in this process's floating-point setting."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = mkldnn
    import matplotlib
    import skimage.data

    from ferkit.checkpoint import build_model
    from ferkit.data.transforms import InputSpec, to_input
    from ferkit.faces import FaceDetector, load_image
    from ferkit.zoo import load_zoo_checkpoint

    out: dict = {}
    ref = json.loads((ROOT / "tests/fixtures/faces_reference.json").read_text())
    images = {
        "astronaut": skimage.data.astronaut(),
        "grace_hopper": load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"),
        "multi_face": load_image(ROOT / "tests/data/multi_face.jpg"),
    }
    for backend, runtime in (("retinaface", "torch"), ("retinaface", "onnx"), ("mtcnn", None)):
        det = FaceDetector.create(
            backend, **({"score_threshold": 0.5, "min_face": 0, "runtime": runtime} if backend == "retinaface" else {})
        )
        box = lm = score = 0.0
        for name, img in images.items():
            got = det.detect(img)
            for r in ref["images"][name][backend]:
                f = min(got, key=lambda g: float(np.abs(np.subtract(g.box, r["box"])).max()))
                box = max(box, float(np.abs(np.subtract(f.box, r["box"])).max()))
                lm = max(lm, float(np.abs(f.landmarks - np.array(r["landmarks"])).max()))
                score = max(score, abs(f.score - r["score"]))
        out[f"{backend}{'/' + runtime if runtime else ''}"] = {"box_px": box, "landmark_px": lm, "score": score}
    for name in ("fer_minixception", "human_xception", "faceapi_expression"):
        fx = json.loads((ROOT / "tests/fixtures/zoo" / f"{name}.json").read_text())
        ckpt = load_zoo_checkpoint(name)
        model = build_model(ckpt)
        x = to_input(np.load(ROOT / "tests/fixtures/zoo" / fx["inputs"]), InputSpec.from_dict(ckpt["input"]))
        with torch.no_grad():
            logits = model(x).double()
        probs = torch.softmax(logits, 1).numpy()
        out[name] = {
            "logits": float(np.abs(logits.numpy() - np.asarray(fx["logits"])).max()),
            "probs": float(np.abs(probs - np.asarray(fx["probs"])).max()),
        }
    return out


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(measure(int(sys.argv[2]), sys.argv[3] == "1")))
        return
    rows, worst = [], {}
    for label, threads, mkldnn, env in CONFIGS:
        r = subprocess.run(
            [sys.executable, __file__, "--child", str(threads), "1" if mkldnn else "0"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append((label, got))
        for k, v in got.items():
            for m, x in v.items():
                worst[(k, m)] = max(worst.get((k, m), 0.0), x)
    keys = sorted(worst)
    print("| configuration | " + " | ".join(f"{k} {m}" for k, m in keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, got in rows:
        print(f"| {label} | " + " | ".join(f"{got[k][m]:.1e}" for k, m in keys) + " |")
    print("| **worst** | " + " | ".join(f"**{worst[k]:.1e}**" for k in keys) + " |")


if __name__ == "__main__":
    main()
