"""MNIST-family IDX files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``, ``t10k-*``.

* Raw or gzipped (recognised by content, not by name); ``train-images.idx3-ubyte`` spellings and
  torchvision's ``<name>/raw/`` folder work too. PATH is the folder or any one of the files.
* The header (two zero bytes, a type code, the number of dimensions, then each dimension as a big-endian
  int32) is checked against the file's length.
* train comes from ``train-*`` files, test from ``t10k-*`` (or ``test-*``); val is carved from train by
  ``val_fraction`` (seeded, stratified). Without test files, test is carved from train as well.
* Class names: Fashion-MNIST's when "fashion" appears in the path, else the digits '0'..'9';
  ``classes=`` (a list or "a,b,c") overrides.
* :func:`write_idx` writes an array as an IDX file (gzipped when the name ends in .gz).
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np

from ferkit.data.base import SPLIT_CODES, check_channels, normalize_size
from ferkit.data.cache import file_stamp, group_by_split, load_or_build
from ferkit.data.folder import plan_splits
from ferkit.errors import ConfigError, DataError, quote

LOADER_VERSION = 1
MAX_CLASSES = 1000  # more distinct labels than this is not a classification label file
MAX_LABEL = 10000  # nor is a label this large (it would mean as many class names and a square confusion matrix)
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Shirt",
    "Sandal",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DIGIT_CLASSES = [str(i) for i in range(10)]
IDX_NAME = re.compile(
    r"(?:^|[-_.])(?P<part>train|t10k|test)-(?P<kind>images|labels)[-.]idx(?P<nd>\d)-ubyte"
    r"(?P<gz>\.gz)?$",
    re.IGNORECASE,
)
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def is_idx_name(name: str) -> bool:
    return IDX_NAME.search(name) is not None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    try:
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot be read ({e}); re-download it") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (raw or gzipped), in native byte order."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(
            f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'none'}; expected 00 00 <type> <ndim>)"
        )
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header is cut short")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dt = np.dtype(_DTYPES[data[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != need:
        raise DataError(
            f"{path}: IDX header says {'x'.join(map(str, dims))} {dt.name} values ({need} bytes) but the "
            f"file has {body} bytes of data; the file is truncated or corrupt"
        )
    arr = np.frombuffer(data, dtype=dt, offset=4 + 4 * ndim).reshape(dims)
    return arr.astype(dt.newbyteorder("="), copy=False) if dt.itemsize > 1 else arr


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an IDX file; gzip if ``.gz``."""
    arr = np.asarray(array)
    if arr.dtype not in _CODES:
        raise ValueError(f"IDX cannot hold {arr.dtype}")
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">"), copy=False).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6)
    path.write_bytes(payload)


def find_idx_files(path: Path) -> dict[tuple[str, str], Path]:
    """``{("train"|"test", "images"|"labels"): file}`` in ``path`` (a folder, its ``raw/``, or a file's folder)."""
    d = path.parent if path.is_file() else path
    for cand in (d, d / "raw"):
        if not cand.is_dir():
            continue
        found: dict[tuple[str, str], Path] = {}
        prefixes: set[str] = set()
        for p in sorted(cand.iterdir()):
            m = IDX_NAME.search(p.name)
            if not m or not p.is_file():
                continue
            part = "train" if m["part"].lower() == "train" else "test"
            key = (part, m["kind"].lower())
            prefixes.add(p.name[: m.start()].lower())
            if key not in found or (found[key].name.endswith(".gz") and not m["gz"]):  # prefer the raw copy
                found[key] = p
        if len(prefixes) > 1:
            names = ", ".join(sorted(p or "(none)" for p in prefixes))
            raise DataError(f"{cand}: IDX files of several datasets ({names}): point at a folder holding one set")
        if found:
            return found
    return {}


def check_labels(y: np.ndarray, where) -> np.ndarray:
    """Labels as int64: whole numbers >= 0 (float files must hold whole, finite values), else a DataError."""
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)) | (np.abs(y) > 2**53))
        if len(bad):
            raise DataError(
                f"{where}: label {float(y[bad[0]])!r} at index {int(bad[0])} is not a whole number "
                f"({len(bad):,} such label(s)); class labels are integers 0, 1, 2, ..."
            )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: negative label {int(y.min())} at index {int(np.argmin(y))}")
    return y


def _classes_for(path: Path, classes, n_needed: int) -> list[str]:
    if classes is not None:
        names = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else [str(c) for c in classes]
        if len(names) < n_needed or len(set(names)) != len(names):
            raise ConfigError(
                f"classes={quote(classes, 100)}: need {n_needed} distinct names (labels go up to {n_needed - 1})"
            )
        return names
    if "fashion" in str(path.resolve()).lower():
        return list(FASHION_CLASSES)
    return list(DIGIT_CLASSES) if n_needed <= 10 else [str(i) for i in range(n_needed)]


def load_idx(
    path,
    *,
    image_size=None,
    channels=None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    classes=None,
    cache: bool = True,
    quiet: bool = False,
):
    """Load MNIST / Fashion-MNIST IDX files (see the module doc). Images keep their size (28x28) and one
    channel unless ``image_size`` / ``channels`` say otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    size = normalize_size(image_size)
    channels = check_channels(channels)
    files = find_idx_files(path)
    if ("train", "images") not in files or ("train", "labels") not in files:
        have = ", ".join(p.name for p in files.values()) or "none"
        raise DataError(
            f"{path}: needs train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] "
            f"(t10k-* optional); found: {have}"
        )
    parts = ["train"] + (["test"] if ("test", "images") in files else [])
    if "test" in parts and ("test", "labels") not in files:
        raise DataError(f"{files['test', 'images']}: has no matching t10k-labels-idx1-ubyte[.gz] next to it")
    root = files["train", "images"].parent
    listing = [[p.name, *file_stamp(p)] for p in sorted(files.values())]
    present = set(parts)
    params = {
        "image_size": size,
        "channels": channels,
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "test_fraction": 0.0 if "test" in present else float(test_fraction),
        "classes": None if classes is None else list(classes) if not isinstance(classes, str) else classes,
    }

    def build(scratch):
        xs, ys, ids = [], [], []
        for part in parts:
            fi, fl = files[part, "images"], files[part, "labels"]
            x, y = read_idx(fi), read_idx(fl)
            if x.ndim not in (3, 4) or x.dtype != np.uint8:
                raise DataError(
                    f"{fi}: expected uint8 images of shape (N, H, W) or (N, H, W, C), got {x.dtype} {x.shape}"
                )
            if y.ndim != 1:
                raise DataError(f"{fl}: expected one label per image (N,), got shape {y.shape}")
            if len(x) != len(y):
                raise DataError(
                    f"{fi} has {len(x)} images but {fl} has {len(y)} labels: the files do not belong together"
                )
            if len(x) == 0:
                raise DataError(f"{fi}: holds no images (its header says 0); re-download it")
            if 0 in x.shape[1:]:
                raise DataError(
                    f"{fi}: images of size {'x'.join(map(str, x.shape[1:]))} hold no pixels; re-download it"
                )
            x = x if x.ndim == 4 else x[..., None]
            if x.shape[3] not in (1, 3):
                raise DataError(f"{fi}: images have {x.shape[3]} channels; ferkit takes 1 (grey) or 3 (RGB)")
            if xs and x.shape[1:] != xs[0].shape[1:]:
                raise DataError(
                    f"{fi}: images are {'x'.join(map(str, x.shape[1:]))} (HxWxC) but the train images "
                    f"are {'x'.join(map(str, xs[0].shape[1:]))}: train and test files must come from one "
                    "dataset"
                )
            xs.append(x)
            ys.append(check_labels(y, fl))
            ids += [f"{fi.name}:{i}" for i in range(len(y))]
        labels = np.concatenate(ys)
        distinct = len(np.unique(labels))
        if labels.max() > MAX_LABEL or distinct > MAX_CLASSES:
            fl = files[parts[int(np.argmax([y.max() for y in ys]))], "labels"]
            raise DataError(
                f"{fl}: labels go up to {int(labels.max()):,} with {distinct:,} distinct values; "
                f"ferkit takes at most {MAX_CLASSES} classes numbered 0-{MAX_LABEL}: this is not a "
                "class-label file, or it is corrupt"
            )
        names = _classes_for(path, classes, int(labels.max()) + 1 if len(labels) else 1)
        if len(labels) and labels.max() >= len(names):
            raise DataError(f"{files['train', 'labels']}: label {int(labels.max())} but only {len(names)} classes")
        given = np.concatenate([np.full(len(y), SPLIT_CODES[p], dtype=np.int8) for p, y in zip(parts, ys, strict=True)])
        codes, _ = plan_splits(
            labels, given, present, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        )
        order, ranges = group_by_split(codes)
        src = np.concatenate(xs) if len(xs) > 1 else xs[0]
        h0, w0, c0 = src.shape[1:]
        h, w = size or (h0, w0)
        c = channels or c0
        images = scratch.empty("images", (len(labels), h, w, c), np.uint8)
        step = 4096
        for s in range(0, len(labels), step):
            rows = src[order[s : s + step]]
            if (h, w) != (h0, w0):
                rows = _resize(rows, h, w)
            if c != rows.shape[-1]:
                rows = np.repeat(rows, 3, axis=-1) if c == 3 else _luma(rows)
            images[s : s + len(rows)] = rows
        meta = {
            "name": root.parent.name if root.name == "raw" else root.name,
            "classes": names,
            "splits": ranges,
            "ids": [ids[i] for i in order.tolist()],
            "problems": [],
        }
        return {"images": images, "labels": labels[order]}, meta

    return load_or_build(
        "idx", root, listing=listing, params=params, loader_version=LOADER_VERSION, build=build, cache=cache
    )


def _resize(rows: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(rows), h, w, rows.shape[-1]), dtype=np.uint8)
    for i, r in enumerate(rows):
        im = Image.fromarray(r[..., 0] if r.shape[-1] == 1 else r)
        out[i] = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR)).reshape(h, w, -1)
    return out


def _luma(rows: np.ndarray) -> np.ndarray:
    x = rows[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)[..., None]
