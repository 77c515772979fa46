"""FER2013 CSV: ``emotion,pixels,Usage`` with 48x48 grey faces as space-separated pixel values.

* ``Usage`` Training / PublicTest / PrivateTest become train / val / test (train/val/test spellings are
  accepted too). Without a ``Usage`` column (Kaggle's ``train.csv``) the rows get a seeded, stratified
  split by ``val_fraction`` / ``test_fraction``.
* Column names are matched case-insensitively and in any order, surrounding spaces ignored
  (``icml_face_data.csv`` writes ``emotion, Usage, pixels``); extra columns are ignored.
* The image side comes from the first row (48 for FER2013; any square works) and every row must match.
* A bad row stops the load with a :class:`DataError` naming the file, the line number as an editor shows
  it (the header is line 1) and what is wrong: wrong field or pixel count, a non-integer, a pixel outside
  0-255, an emotion outside 0-6, an unknown Usage.
* ``label`` is accepted for ``emotion`` (the name Kaggle re-uploads and pandas exports use).
* The test-only file without an ``emotion`` / ``label`` column carries no labels and is refused with a message.

Parsing is vectorised (``np.fromstring`` over 2,048 rows at a time) and streams the file, so the
35,887-row original loads in a few seconds with well under 1 GB of memory, then comes from the cache.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ferkit.data.base import (
    SPLIT_ALIASES,
    SPLIT_CODES,
    check_channels,
    check_fractions,
    normalize_size,
    stratified_split,
)
from ferkit.data.cache import file_stamp, group_by_split, load_or_build
from ferkit.errors import DataError, quote
from ferkit.utils import progress

LOADER_VERSION = 1
FER2013_CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
EXPECTED_COLUMNS = ("emotion", "pixels", "Usage")
_CHUNK = 2048


def load_fer2013(
    path,
    *,
    image_size=None,
    channels=None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    cache: bool = True,
    quiet: bool = False,
):
    """Load a FER2013-style CSV into a :class:`~ferkit.data.base.FaceDataset` (classes in FER2013 order:
    angry, disgust, fear, happy, sad, surprise, neutral). Images keep the file's size (48x48) and one
    channel unless ``image_size`` / ``channels`` say otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file" if not path.exists() else f"{path}: is not a file (expected a CSV)")
    size = normalize_size(image_size)
    channels = check_channels(channels)
    cols = _read_columns(path)
    has_usage = "usage" in cols
    params = {"image_size": size, "channels": channels}
    if not has_usage:
        check_fractions(val_fraction, test_fraction)
        params.update(seed=int(seed), val_fraction=float(val_fraction), test_fraction=float(test_fraction))

    def build(scratch):
        pixels, labels, codes, linenos, side = _parse(path, cols, quiet=quiet)
        if not has_usage:
            codes = stratified_split(labels, val_fraction, test_fraction, seed)
        order, ranges = group_by_split(codes)
        h, w = size or (side, side)
        c = channels or 1
        n = len(labels)
        images = scratch.empty("images", (n, h, w, c), np.uint8)
        for s in range(0, n, _CHUNK):
            rows = pixels[order[s : s + _CHUNK]].reshape(-1, side, side)
            if (h, w) != (side, side):
                rows = _resize_all(rows, h, w)
            images[s : s + len(rows)] = rows[..., None]
        del pixels
        ids = [f"{path.name}:{linenos[i]}" for i in order.tolist()]
        arrays = {"images": images, "labels": labels[order].astype(np.int64)}
        meta = {"name": path.name, "classes": list(FER2013_CLASSES), "splits": ranges, "ids": ids, "problems": []}
        return arrays, meta

    return load_or_build(
        "fer2013",
        path,
        listing=file_stamp(path),
        params=params,
        loader_version=LOADER_VERSION,
        build=build,
        cache=cache,
    )


def _resize_all(rows: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(rows), h, w), dtype=np.uint8)
    for i, r in enumerate(rows):
        out[i] = np.asarray(Image.fromarray(r).resize((w, h), Image.Resampling.BILINEAR))
    return out


def _split_fields(line: bytes) -> list[bytes]:
    return [f.strip().strip(b'"').strip() for f in line.split(b",")]


def _read_columns(path: Path) -> dict[str, int]:
    with open(path, "rb") as f:
        header = f.readline()
    if header.startswith(b"\xef\xbb\xbf"):
        header = header[3:]
    names = [f.decode("utf-8", "replace") for f in _split_fields(header.rstrip(b"\r\n"))]
    cols: dict[str, int] = {}
    for i, n in enumerate(names):
        if n:
            cols.setdefault(n.lower(), i)
    if "emotion" not in cols and "label" in cols:  # Kaggle re-uploads and pandas exports name it "label"
        cols["emotion"] = cols["label"]
    found = quote(", ".join(names), 80) if any(names) else "none (empty first line)"
    if "pixels" not in cols:
        raise DataError(
            f"{path}: not a FER2013 CSV: columns found: {found}; expected: {', '.join(EXPECTED_COLUMNS)} "
            "(Usage optional)"
        )
    if "emotion" not in cols:
        raise DataError(
            f"{path}: has no 'emotion' (or 'label') column (columns found: {found}): unlabelled "
            "images cannot be trained or evaluated on; use `ferkit predict` for them"
        )
    return cols


def _parse(path: Path, cols: dict[str, int], *, quiet: bool):
    """Stream the CSV: (pixels uint8 (N, side*side), labels int64, split codes int8, line numbers, side)."""
    ie, ip, iu = cols["emotion"], cols["pixels"], cols.get("usage")
    nfields = max(cols.values()) + 1
    npx = side = None
    chunks, labels, codes, linenos = [], [], [], []
    pend_px: list[bytes] = []
    pend_ln: list[int] = []
    total = os.path.getsize(path)

    def flush():
        if pend_px:
            chunks.append(_parse_pixels(path, pend_px, pend_ln, npx))
            pend_px.clear()
            pend_ln.clear()

    with (
        open(path, "rb") as f,
        progress(total=total, desc=f"parse {path.name}", unit="B", unit_scale=True, quiet=quiet) as bar,
    ):
        header = f.readline()
        done = len(header)
        lineno = 1
        for line in f:
            lineno += 1
            done += len(line)
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            fields = _split_fields(line)
            if len(fields) < nfields:
                names = ", ".join(k for k, _ in sorted(cols.items(), key=lambda kv: kv[1]))
                raise DataError(
                    f"{path}: line {lineno}: {len(fields)} field(s), expected {nfields} (columns {quote(names, 100)})"
                )
            raw = fields[ie]
            try:
                y = int(raw)
            except ValueError:
                raise DataError(f"{path}: line {lineno}: emotion {quote(raw, 100)} is not an integer 0-6") from None
            if not 0 <= y <= 6:
                raise DataError(
                    f"{path}: line {lineno}: emotion {y} is out of range 0-6 "
                    f"({', '.join(f'{i}={n}' for i, n in enumerate(FER2013_CLASSES))})"
                )
            if iu is not None:
                u = fields[iu].decode(errors="replace")
                split = SPLIT_ALIASES.get(u.lower())
                if split is None:
                    raise DataError(
                        f"{path}: line {lineno}: Usage {quote(u, 100)} is not one of Training, PublicTest, PrivateTest"
                    )
                codes.append(SPLIT_CODES[split])
            px = fields[ip]
            if npx is None:
                npx = len(px.split())
                side = math.isqrt(npx)
                if side * side != npx or npx == 0:
                    raise DataError(
                        f"{path}: line {lineno}: {npx} pixel values do not make a square image "
                        "(FER2013 rows have 48x48 = 2304)"
                    )
            labels.append(y)
            linenos.append(lineno)
            pend_px.append(px)
            pend_ln.append(lineno)
            if len(pend_px) >= _CHUNK:
                flush()
                bar.update(done - bar.n)
        flush()
        bar.update(done - bar.n)
    if not labels:
        raise DataError(f"{path}: no data rows after the header")
    pixels = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
    codes_arr = np.asarray(codes, dtype=np.int8) if iu is not None else np.zeros(len(labels), dtype=np.int8)
    return pixels, np.asarray(labels, dtype=np.int64), codes_arr, linenos, side


def _parse_pixels(path: Path, rows: list[bytes], linenos: list[int], npx: int) -> np.ndarray:
    """Parse a chunk of pixel fields at once; on any inconsistency find the first bad row and name it."""
    arr = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # numpy < 2 warns and returns a prefix
            arr = np.fromstring(b" ".join(rows), dtype=np.int32, sep=" ")
    except ValueError:
        pass
    if arr is None or arr.size != len(rows) * npx:
        for px, ln in zip(rows, linenos, strict=True):
            toks = px.split()
            bad = next((t for t in toks if not t.isdigit()), None)
            if bad is not None:
                raise DataError(f"{path}: line {ln}: pixel value {quote(bad, 100)} is not an integer 0-255")
            if len(toks) != npx:
                raise DataError(
                    f"{path}: line {ln}: {len(toks)} pixel values, expected {npx} "
                    f"({math.isqrt(npx)}x{math.isqrt(npx)}) like the first row"
                )
        raise DataError(f"{path}: lines {linenos[0]}-{linenos[-1]}: pixel values cannot be parsed")  # pragma: no cover
    arr = arr.reshape(len(rows), npx)
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        bad = np.flatnonzero(((arr < 0) | (arr > 255)).any(axis=1))[0]
        v = arr[bad][(arr[bad] < 0) | (arr[bad] > 255)][0]
        raise DataError(f"{path}: line {linenos[bad]}: pixel value {v} is outside 0-255")
    return arr.astype(np.uint8)
