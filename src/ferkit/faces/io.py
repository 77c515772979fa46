"""Reading photos for detection: any file Pillow decodes, as upright RGB uint8, or a one-line DataError."""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from ferkit.errors import DataError

# Transparent pixels are composited onto white: a face cut-out on a transparent background then looks like
# a studio photo to the detector, rather than a face on black.
_ALPHA_BACKGROUND = (255, 255, 255)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an upright RGB uint8 (H, W, 3) array.

    EXIF orientation is applied; CMYK, palette, grey, 16-bit and float images are converted; alpha is
    composited onto white; of animated/multi-page files the first frame is used. An unreadable file
    (missing, empty, not an image, truncated, corrupt, absurdly large) raises :class:`DataError` naming it.
    """
    from PIL import ImageFile

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a folder, not an image file")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from e
    if size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not an image")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process asked Pillow to pad truncated files with grey; we would rather say so.
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will load padded", stacklevel=2)
    return _decode(p, str(p))


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image held in memory (e.g. read from object storage) exactly as :func:`load_image`
    decodes a file; ``name`` (a path or URI) is what a :class:`DataError` names."""
    import io

    if not data:
        raise DataError(f"{name}: empty file (0 bytes), not an image")
    return _decode(io.BytesIO(bytes(data)), name)


def _decode(src, p) -> np.ndarray:
    """The one decoder behind :func:`load_image` and :func:`decode_image_bytes` (``src``: path or file object)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(src) as im:
                im.load()  # decode now: truncation and corruption surface here, not later
                return pil_to_rgb(im, str(p))
    except DataError:
        raise
    except UnidentifiedImageError as e:
        raise DataError(f"{p}: not an image file Pillow can decode") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{p}: image too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{p}: corrupt or truncated image ({msg})") from e


def pil_to_rgb(im, what: str = "image") -> np.ndarray:
    """A PIL image (any mode) to upright RGB uint8 (H, W, 3): EXIF orientation applied, alpha on white."""
    from PIL import Image, ImageOps

    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a good image unreadable
        pass
    mode = im.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode == "F":
            hi = float(np.nanmax(a)) if a.size else 0.0
            a = a * 255.0 if hi <= 1.0 else a
        elif mode.startswith("I;16") or (a.size and a.max() > 255):
            a = a / 257.0  # 16-bit range 0..65535 -> 0..255
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
        im = Image.alpha_composite(bg, rgba)
    rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise DataError(f"{what}: decoded to an empty image {rgb.shape}")
    return np.ascontiguousarray(rgb)
