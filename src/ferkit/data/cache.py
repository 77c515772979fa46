"""Decode once, then memory-map: the dataset cache every loader goes through.

A loaded dataset is stored under ``cache_root()/datasets/<key>/``::

    images.npy      uint8 (N, H, W, C), samples grouped by split (train, then val, then test)
    labels.npy      int64 (N,)
    valence.npy     float32 (N,)        } only where the format has them
    arousal.npy     float32 (N,)        }
    landmarks.npy   float32 (N, L, 2)   }
    identities.npy  int64 (N,)          }
    ids.json        one id per sample (a path or "file:row")
    meta.json       classes, split ranges {"train": [start, end], ...}, problems, loader version

The key is a sha256 of the format, the absolute path, a listing of every input file with its size and
mtime (for a single file such as a CSV: its size and mtime), the image size, channels, split settings
where a seeded split was used, and the loader version. Touching or replacing any input file, or asking for
another size, makes a new key; stale entries are never read (``clear_dataset_cache`` removes them).

An entry is built in a temporary directory next to its final place and moved there with one
``os.replace``: a crash leaves no half entry, and when two processes build the same key at once the first
rename wins and the other one's copy is thrown away. Reading uses ``np.load(mmap_mode="r")``, so epochs
never decode a file again and the images are shared through the page cache, not copied per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.base import SPLITS, FaceDataset, Problem, Split
from ferkit.utils import atomic_dir, atomic_write_json, cache_root, discard

CACHE_VERSION = 1
ARRAYS = ("images", "labels", "valence", "arousal", "landmarks", "identities")
_MMAP = ("images", "landmarks")  # big: memory-mapped; the rest is small and read into memory


def datasets_dir() -> Path:
    return cache_root() / "datasets"


def file_stamp(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns]`` of a file: what the cache key remembers of it."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns)]


def cache_key(fmt: str, path: str | os.PathLike, listing, params: dict, loader_version: int) -> str:
    """A directory name for one decoded dataset: ``<format>-<name>-<sha256 prefix>``."""
    payload = json.dumps(
        {
            "cache": CACHE_VERSION,
            "format": fmt,
            "path": str(Path(path).resolve()),
            "listing": listing,
            "params": params,
            "loader": loader_version,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    digest = hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(path).name)[:40] or "data"
    return f"{fmt}-{name}-{digest}"


class Scratch:
    """Where a loader puts big arrays while building: files in the entry's temporary directory (so a
    dataset larger than memory can be decoded straight to disk) or plain memory when not caching."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def empty(self, name: str, shape: tuple, dtype) -> np.ndarray:
        if self.directory is None:
            return np.empty(shape, dtype=dtype)
        return np.lib.format.open_memmap(self.directory / f"{name}.npy", mode="w+", dtype=dtype, shape=tuple(shape))

    def release(self, name: str) -> None:
        """Delete a scratch array's file (drop every reference to the array first)."""
        if self.directory is not None:
            try:
                os.unlink(self.directory / f"{name}.npy")
            except OSError:  # e.g. still mapped on Windows: it is only wasted space in the entry
                pass


# A build function fills a Scratch and returns (arrays, meta): arrays maps names from ARRAYS to arrays
# (None for absent ones; samples grouped by split), meta has "name", "classes", "splits"
# ({split: [start, end]}), "ids" and "problems" (list of Problem).
BuildFn = Callable[[Scratch], "tuple[dict, dict]"]


def assemble(fmt: str, root: str, arrays: dict, meta: dict) -> FaceDataset:
    """Slice flat per-sample arrays into a :class:`FaceDataset` by the split ranges in ``meta``."""
    splits: dict[str, Split] = {}
    ids = meta["ids"]
    for name in SPLITS:
        if name not in meta["splits"]:
            continue
        a, b = meta["splits"][name]
        if b <= a:
            continue
        part: dict[str, Any] = {k: (None if arrays.get(k) is None else arrays[k][a:b]) for k in ARRAYS}
        splits[name] = Split(ids=list(ids[a:b]), **part)
    problems = [p if isinstance(p, Problem) else Problem(*p) for p in meta.get("problems", [])]
    return FaceDataset(
        name=meta["name"], format=fmt, root=root, classes=list(meta["classes"]), splits=splits, problems=problems
    )


def load_entry(directory: Path, fmt: str, root: str) -> FaceDataset | None:
    """The cached dataset in ``directory``, memory-mapped; None when it is absent or unreadable."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if meta.get("cache_version") != CACHE_VERSION:
            return None
        meta["ids"] = json.loads((directory / "ids.json").read_text("utf-8"))
        arrays = {}
        for name in ARRAYS:
            f = directory / f"{name}.npy"
            if name in meta["arrays"]:
                arrays[name] = np.load(f, mmap_mode="r") if name in _MMAP else np.load(f)
        n = len(arrays["labels"])
        if any(len(a) != n for a in arrays.values()) or len(meta["ids"]) != n:
            return None
        meta["problems"] = [Problem(p["path"], p["reason"]) for p in meta.get("problems", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return assemble(fmt, root, arrays, meta)


def load_or_build(
    fmt: str, root: str | os.PathLike, *, listing, params: dict, loader_version: int, build: BuildFn, cache: bool = True
) -> FaceDataset:
    """Return the cached dataset for these inputs, building (and caching) it first when needed.

    With ``cache=False`` the dataset is built in memory and nothing is written.
    """
    root = str(Path(root).resolve())
    if not cache:
        arrays, meta = build(Scratch(None))
        return assemble(fmt, root, arrays, meta)

    key = cache_key(fmt, root, listing, params, loader_version)
    base = datasets_dir()
    final = base / key
    ds = load_entry(final, fmt, root)
    if ds is not None:
        return ds
    if final.exists():  # unreadable (an older cache version, a damaged disk): move it aside and rebuild
        _remove_tree(final)

    entry = atomic_dir(final, what="dataset cache")
    try:
        tmp = entry.__enter__()
    except OSError as e:  # a read-only home, a full disk: still load, just without the cache
        warnings.warn(
            f"dataset cache {base} is not writable ({e.strerror or e}); decoding into memory this time "
            "(set FERKIT_CACHE_DIR to a writable folder to cache)",
            RuntimeWarning,
            stacklevel=2,
        )
        arrays, meta = build(Scratch(None))
        return assemble(fmt, root, arrays, meta)
    try:
        try:
            arrays, meta = build(Scratch(tmp))
            _write_entry(tmp, arrays, meta, fmt=fmt, root=root, params=params, loader_version=loader_version)
            del arrays
        except BaseException:
            discard(entry)
            raise
        entry.__exit__(None, None, None)  # the rename: fails if another process's entry is there already
    except OSError:
        if not (final / "meta.json").is_file():
            raise
        # another process finished the same entry first: keep theirs
    ds = load_entry(final, fmt, root)
    if ds is None:  # pragma: no cover - only if the disk lost what we just wrote
        from ferkit.errors import DataError

        raise DataError(
            f"{final}: the dataset cache entry just written cannot be read back; check the disk or "
            "set FERKIT_CACHE_DIR to another place"
        )
    return ds


def _write_entry(
    tmp: Path, arrays: dict, meta: dict, *, fmt: str, root: str, params: dict, loader_version: int
) -> None:
    present = []
    for name in ARRAYS:
        arr = arrays.get(name)
        if arr is None:
            continue
        present.append(name)
        target = tmp / f"{name}.npy"
        if isinstance(arr, np.memmap) and arr.filename and Path(arr.filename).resolve() == target.resolve():
            arr.flush()
        else:
            np.save(target, np.ascontiguousarray(arr))
    atomic_write_json(tmp / "ids.json", list(meta["ids"]))
    atomic_write_json(
        tmp / "meta.json",
        {
            "cache_version": CACHE_VERSION,
            "format": fmt,
            "root": root,
            "name": meta["name"],
            "classes": list(meta["classes"]),
            "splits": {k: [int(a), int(b)] for k, (a, b) in meta["splits"].items()},
            "arrays": present,
            "problems": [{"path": p.path, "reason": p.reason} for p in meta.get("problems", [])],
            "params": params,
            "loader_version": loader_version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )


def _remove_tree(path: Path) -> None:
    aside = path.with_name(f".{path.name}.{os.getpid()}.trash")
    try:
        os.replace(path, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def entry_dir(ds: FaceDataset) -> Path | None:
    """The cache directory a loaded dataset is mapped from (None when it was loaded with ``cache=False``)."""
    for s in ds.splits.values():
        if isinstance(s.images, np.memmap) and s.images.filename:
            return Path(s.images.filename).parent
    return None


def clear_dataset_cache() -> int:
    """Delete every decoded dataset in the cache; returns how many entries were removed."""
    base = datasets_dir()
    if not base.is_dir():
        return 0
    n = 0
    for p in base.iterdir():
        if not p.is_dir():
            continue
        if p.name.endswith(".trash"):
            shutil.rmtree(p, ignore_errors=True)
        elif not p.name.startswith("."):  # dot-names are builds in progress (maybe another process's)
            _remove_tree(p)
            n += 1
    return n


def group_by_split(codes: np.ndarray) -> tuple[np.ndarray, dict[str, list[int]]]:
    """Order that puts samples with split code 0 (train) first, then 1 (val), then 2 (test), stable
    within a split; and the ``[start, end]`` range of each split in that order."""
    codes = np.asarray(codes)
    order = np.argsort(codes, kind="stable")
    ranges, start = {}, 0
    for code, name in enumerate(SPLITS):
        n = int((codes == code).sum())
        ranges[name] = [start, start + n]
        start += n
    return order, ranges
