"""THE image decoder: every photo the CLI, the API, the server, the Ray engine and the dataset loaders read
goes through :func:`decode_image` (a path or the bytes of one), as upright RGB uint8, or one DataError line.

Only an allowlist of formats is decoded (:data:`ALLOWED_FORMATS`): JPEG (and MPO, the multi-picture JPEG
cameras write), PNG, WebP, BMP, GIF, TIFF and PPM/PGM (the plain formats some face datasets ship). Whatever the
file's name says, anything else (EPS/PostScript, which Pillow would hand to Ghostscript; PSD, ICNS, SGI, ...)
is refused. Image sizes are checked from the header before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from ferkit.errors import DataError

# Transparent pixels are composited onto white: a face cut-out on a transparent background then looks like
# a studio photo to the detector, rather than a face on black.
_ALPHA_BACKGROUND = (255, 255, 255)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# JPEG covers MPO (the multi-picture JPEG cameras write): Pillow opens both with one plugin.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
#: Default pixel limit (width x height) for one image: 100 MP is far above any camera a face comes from.
MAX_PIXELS = 100_000_000


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than allowed (the server answers 413)."""


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def load_image(path: str | os.PathLike, max_pixels: int | None = MAX_PIXELS) -> np.ndarray:
    """Decode an image file to an upright RGB uint8 (H, W, 3) array (see :func:`decode_image`)."""
    p = Path(path)
    try:
        if not p.exists():
            raise DataError(f"{p}: no such file")
        if p.is_dir():
            raise DataError(f"{p}: is a folder, not an image file")
        size = p.stat().st_size
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or type(e).__name__})") from None
    if size == 0:
        raise DataError(f"{p}: empty file (0 bytes), not an image")
    return decode_image(p, str(p), max_pixels=max_pixels)


def decode_image(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Decode a path or the bytes of an image to upright RGB uint8 (H, W, 3).

    EXIF orientation is applied; CMYK, palette, grey, 16-bit and float images are converted; alpha is
    composited onto white; of animated/multi-page files the first frame is used. Formats outside
    :data:`ALLOWED_FORMATS` are refused whatever the name says. Errors are one :class:`DataError` line naming
    ``name``: :class:`ImageTooLargeError` past ``max_pixels``, otherwise not an image / corrupt / truncated.
    """
    from PIL import ImageFile

    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process asked Pillow to pad truncated files with grey; we would rather say so.
        warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will load padded", stacklevel=2)
    with _opened(source, name, max_pixels) as (im, raw, name):
        fast = _fast_decode(im, raw if raw is not None else os.fspath(source))
        if fast is not None:
            return fast
        im.load()  # decode now: truncation and corruption surface here, not later
        return pil_to_rgb(im, name)


def peek_size(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = MAX_PIXELS
) -> tuple[int, int]:
    """``(width, height)`` from the header alone (no pixel decoded), with :func:`decode_image`'s format allowlist
    and pixel limit: how the server sizes a request's memory before decoding it."""
    with _opened(source, name, max_pixels) as (im, _raw, _name):
        return im.size


@contextlib.contextmanager
def _opened(source, name: str | None, max_pixels: int | None):
    """Open ``source`` (a path or bytes) with the format allowlist and check its declared size; yields
    ``(image, the bytes or None, name)``. Whatever goes wrong inside, here or in the caller's block, leaves as
    one :class:`DataError` line naming ``name``."""
    from PIL import Image, UnidentifiedImageError

    raw = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "<bytes>"
        if not len(source):
            raise DataError(f"{name}: empty (0 bytes), not an image")
        raw = bytes(source)
        fp = io.BytesIO(raw)
    else:
        fp = os.fspath(source)
        name = name or fp
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's notes on damaged metadata: the pixels decide, not them
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp, formats=ALLOWED_FORMATS) as im:
                _check_size(im.size[0], im.size[1], max_pixels, name)
                yield im, raw, name
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{name}: not an image in an accepted format ({', '.join(ALLOWED_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeError(f"{name}: image too large to decode safely") from None
    except MemoryError:
        raise ImageTooLargeError(f"{name}: image too large to decode in memory") from None
    except PermissionError:
        raise DataError(f"{name}: permission denied") from None
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
        ZeroDivisionError,
        struct.error,
    ) as e:
        msg = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"{name}: corrupt or truncated image ({msg})") from None


def _rotated(im) -> bool:
    """Whether the header's EXIF orientation is other than upright (or unreadable: Pillow's path decides)."""
    if im.format == "PNG":
        # Pillow would decode the whole image to look for a late eXIf chunk; one seen in the header counts.
        return "exif" in im.info
    try:
        return im.getexif().get(0x0112, 1) != 1
    except Exception:  # noqa: BLE001
        return True


def _fast_path(im) -> bool:
    """Plain upright 8-bit JPEG / PNG: decoded by OpenCV (:func:`_fast_decode`)."""
    return (
        im.format in ("JPEG", "PNG") and im.mode in ("RGB", "L") and "transparency" not in im.info and not _rotated(im)
    )


# Decode peak of a plain 8-bit JPEG / PNG (the common upload): OpenCV's decoders keep row buffers beside the RGB
# output. The server's --max-inflight-mb help turns its budget into megapixels with it.
PLAIN_PEAK_BYTES_PER_PIXEL = 15

# Bytes per pixel of Pillow's own buffer by mode (3-channel modes are stored in 4 bytes); others: 4.
_PIL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decode_peak_bytes(
    source: str | os.PathLike | bytes, name: str | None = None, max_pixels: int | None = MAX_PIXELS
) -> int:
    """The most memory :func:`decode_image` takes for this image (RSS growth, measured per mode and format in
    tests/test_serve_limits.py), read from the header alone with the same allowlist and pixel limit: how the
    server sizes a request's memory before decoding it. Same errors as :func:`decode_image`."""
    with _opened(source, name, max_pixels) as (im, _raw, _name):
        px = im.size[0] * im.size[1]
        if _fast_path(im):
            return px * PLAIN_PEAK_BYTES_PER_PIXEL + _SLACK
        own = _PIL_BYTES.get(im.mode, 4)
        per_px = own + 3 + 1  # Pillow's buffer + the RGB output + allocator slack
        per_px += 8 if im.format == "WEBP" else 0  # libwebp decodes into its own RGBA buffer first
        per_px += own if _rotated(im) else 0  # exif_transpose makes a turned copy
        band = min(px, BAND_PIXELS) * (40 if im.mode in _HIGH_BIT_MODES else 24)  # one band's float64 / RGBA scratch
        return px * per_px + band + _SLACK


_SLACK = 1 << 20  # allocator pages touched per decode, whatever the size


def _fast_decode(im, source) -> np.ndarray | None:
    """Plain upright 8-bit JPEG / PNG (the common case) decoded by OpenCV straight into one RGB array: about
    half of Pillow's time. Anything else (alpha, palette, 16-bit, CMYK, EXIF rotation, a JPEG without its end
    marker, a decode OpenCV refuses) returns None and takes Pillow's path, which also gives the precise error."""
    if not _fast_path(im):
        return None
    import cv2

    if isinstance(source, bytes):
        buf = np.frombuffer(source, np.uint8)
    else:
        try:
            buf = np.fromfile(source, np.uint8)
        except (OSError, ValueError):
            return None
    if im.format == "JPEG" and not buf[-2:].tobytes() == b"\xff\xd9":
        return None  # truncated: OpenCV would pad it with grey and say nothing
    arr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.shape[:2] != (im.size[1], im.size[0]):
        return None
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)


def _check_size(w: int, h: int, max_pixels: int | None, name: str) -> None:
    """The header's size against the pixel limit, before any pixel is decoded."""
    if w < 1 or h < 1:
        raise DataError(f"{name}: declares an empty image ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLargeError(f"{name}: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")


#: Rows are converted to RGB in bands of about this many pixels, so a float/16-bit/32-bit/alpha image never
#: has a full-size float64 (8 B/px) or RGBA copy: the decode's peak is Pillow's own buffer + the RGB output.
BAND_PIXELS = 1 << 19
_HIGH_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def pil_to_rgb(im, what: str = "image") -> np.ndarray:
    """A PIL image (any mode) to upright RGB uint8 (H, W, 3): EXIF orientation applied, alpha on white.

    Converted band by band (:data:`BAND_PIXELS`) into one output array; 32-bit float images in 0..1 are scaled
    to 0..255, 16-bit (and 32-bit int past 255) ones divided by 257."""
    from PIL import Image, ImageOps

    try:
        im = ImageOps.exif_transpose(im, in_place=True) or im  # in place: no full-size copy when upright
    except Exception:  # noqa: BLE001 - broken EXIF must not make a good image unreadable
        pass
    w, h = im.size
    if w < 1 or h < 1:
        raise DataError(f"{what}: decoded to an empty image {(h, w, 3)}")
    rows = max(1, BAND_PIXELS // w)
    bands = [(y, min(h, y + rows)) for y in range(0, h, rows)]
    mode = im.mode
    if mode in _HIGH_BIT_MODES:

        def band_of(y0, y1):
            return np.asarray(im.crop((0, y0, w, y1)))

        if mode == "F":  # the whole image's range decides the scale: a first pass, band by band
            highs = [np.nanmax(b) for b in (band_of(*r) for r in bands) if not np.isnan(b).all()]
            scale = 255.0 if highs and max(highs) <= 1.0 else 1.0
        else:
            scale = 1 / 257.0 if mode.startswith("I;16") or max(int(band_of(*r).max()) for r in bands) > 255 else 1.0

        def convert(y0, y1):
            a = band_of(y0, y1).astype(np.float64) * scale  # 16-bit range 0..65535 -> 0..255, or 0..1 -> 0..255
            return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)[:, :, None]
    elif mode in _ALPHA_MODES or (mode == "P" and "transparency" in im.info):

        def convert(y0, y1):
            rgba = im.crop((0, y0, w, y1)).convert("RGBA")
            bg = Image.new("RGBA", rgba.size, _ALPHA_BACKGROUND + (255,))
            return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    else:

        def convert(y0, y1):
            band = im.crop((0, y0, w, y1))
            return np.asarray(band if band.mode == "RGB" else band.convert("RGB"))

    out = np.empty((h, w, 3), np.uint8)
    for y0, y1 in bands:
        out[y0:y1] = convert(y0, y1)  # a grey band (rows, w, 1) fills all three channels
    return out
