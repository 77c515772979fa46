#!/usr/bin/env python
"""Export the shipped networks (the RetinaFace and face-api detectors and the zoo's emotion models) from their
safetensors weights to the ONNX graphs ferkit ships beside them, so that ``pip install ferkit`` (no torch) detects and
classifies with ONNX Runtime straight away:

    python scripts/export_onnx_weights.py                 # writes src/ferkit/{faces,zoo}/weights/*.onnx
    python scripts/export_onnx_weights.py --out /tmp/x    # the same files under /tmp/x (what the test compares)

Needs the train extra (torch, onnx). Each graph is the export ferkit would otherwise make on first use into its
cache (:func:`ferkit.faces.retinaface_net.export_onnx`, :func:`ferkit.inference.onnx.export_onnx`), written
atomically; ``inference/onnx_manifest.json`` records each file's sha256 and size, the sha256 of the safetensors
file it came from, and the torch/onnx versions. ``tests/test_first_hour.py`` re-exports into a temporary folder
and checks that the shipped graphs give the fresh exports' outputs on real photos, and that the manifest matches
the files. Re-run it whenever a weights file or a network changes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MANIFEST = "inference/onnx_manifest.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "src" / "ferkit"), help="the ferkit package folder to write into")
    a = p.parse_args(argv)
    import onnx
    import torch

    torch.set_num_threads(1)
    from ferkit.faces import blazeface_net, retinaface_net
    from ferkit.faces.weights import onnx_weights_path, weights_path
    from ferkit.inference.onnx import export_onnx
    from ferkit.utils import atomic_write_json, sha256_file
    from ferkit.zoo import SOURCES, onnx_file
    from ferkit.zoo import weights_path as zoo_weights

    pkg, out = Path(weights_path("retinaface")).parents[2], Path(a.out)
    from ferkit.faces import faceapi_net

    jobs = [
        (onnx_weights_path("retinaface"), weights_path("retinaface"), retinaface_net.export_onnx),
        (onnx_weights_path("blazeface"), weights_path("blazeface"), blazeface_net.export_onnx),
    ]
    for b in faceapi_net.NETWORKS:
        jobs.append((onnx_weights_path(b), weights_path(b), lambda path, b=b: faceapi_net.export_onnx(b, path)))
    for name, src in SOURCES.items():
        if src.delivery == "shipped":
            jobs.append((onnx_file(name), zoo_weights(name), lambda path, n=name: export_onnx(n, path)))
    files = {}
    for target, weights, export in jobs:
        rel = target.relative_to(pkg).as_posix()
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".onnx", dir=dest.parent)
        os.close(fd)
        try:
            export(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        files[rel] = {
            "sha256": sha256_file(dest),
            "bytes": dest.stat().st_size,
            "from": weights.relative_to(pkg).as_posix(),
            "from_sha256": sha256_file(weights),
        }
        print(
            f"{rel}: {files[rel]['bytes']:,} bytes sha256 {files[rel]['sha256'][:12]} "
            f"(from {files[rel]['from']} {files[rel]['from_sha256'][:12]})"
        )
    atomic_write_json(
        out / MANIFEST,
        {
            "exporter": {
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "opset": 17,
                "command": "python scripts/export_onnx_weights.py",
            },
            "files": files,
        },
    )
    print(f"manifest: {out / MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
