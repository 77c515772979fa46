"""Classify already-cropped face images with a checkpoint (class + probabilities per file).

Face detection and alignment for photos in the wild live in :mod:`ferkit.faces`; this runner assumes
each file is one face crop, as in the training data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ferkit.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
SCHEMA_VERSION = 1


@dataclass
class ImagePrediction:
    """One input file's result. ``status`` is ``ok`` or ``error`` (then ``error`` says why)."""

    path: str
    status: str = "ok"
    label: str | None = None
    score: float | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    valence: float | None = None
    arousal: float | None = None
    error: str | None = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v is not None and v != {}}


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, folders expanded recursively to their image files (sorted)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def read_face(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """Decode, honour EXIF orientation, convert to grey/RGB and resize: uint8 (H, W, C). DataError if unusable."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float64)
                im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            im = im.convert("L" if channels == 1 else "RGB")
            im = im.resize((size[1], size[0]), Image.BILINEAR, reducing_gap=2.0)
            arr = np.asarray(im, dtype=np.uint8)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    return arr[..., None] if arr.ndim == 2 else arr


@torch.no_grad()
def predict_images(checkpoint, inputs: list[str], batch_size: int = 64, device: str = "cpu") -> list[ImagePrediction]:
    """Predict every image under ``inputs`` with the model in ``checkpoint`` (a path or a loaded dict)."""
    from ferkit.checkpoint import build_model, load_checkpoint
    from ferkit.data.transforms import InputSpec, to_input
    from ferkit.utils import resolve_device

    ckpt = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    dev = resolve_device(device)
    model = build_model(ckpt, checkpoint if not isinstance(checkpoint, dict) else "<checkpoint>").to(dev)
    spec = InputSpec.from_dict(ckpt["input"])
    classes = ckpt["classes"]
    results: list[ImagePrediction] = []
    pending: list[tuple[ImagePrediction, np.ndarray]] = []

    def flush():
        if not pending:
            return
        x = torch.from_numpy(np.stack([a for _, a in pending])).to(dev)
        out = model(to_input(x, spec))
        logits = out["logits"] if isinstance(out, dict) else out
        probs = torch.softmax(logits.float(), 1).cpu().numpy()
        for i, (res, _) in enumerate(pending):
            j = int(probs[i].argmax())
            res.label, res.score = classes[j], float(probs[i, j])
            res.probabilities = {c: round(float(p), 6) for c, p in zip(classes, probs[i])}
            if isinstance(out, dict):
                res.valence = float(out["valence"][i])
                res.arousal = float(out["arousal"][i])
        pending.clear()

    for path in expand_inputs(inputs):
        res = ImagePrediction(path=str(path))
        results.append(res)
        try:
            pending.append((res, read_face(path, tuple(spec.size), spec.channels)))
        except DataError as e:
            res.status, res.error = "error", str(e)
        if len(pending) >= batch_size:
            flush()
    flush()
    return results
