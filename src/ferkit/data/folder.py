"""Class-folder trees: ``ROOT/{train,val|validation,test}/<class>/*.jpg`` or ``ROOT/<class>/*.jpg``.

* Split folders are recognised by name (train/training, val/valid/validation, test/testing, any case).
  Without any, the class folders directly under ROOT are split seeded and stratified by
  ``val_fraction`` / ``test_fraction``. With train and only one of val/test, the missing one is carved
  from train the same way (so train+test gives a val split, train+validation a test split); with
  neither, both are.
* Classes are the sorted union of class folder names over all splits (an empty folder still counts,
  so every split agrees on the label numbering). Images in nested folders belong to their class folder.
  The "me / not_me" face-verification layout is this layout with two classes.
* Extensions: jpg jpeg png bmp gif webp tif tiff (any case); other files are ignored.
* Size: ``image_size`` when given; otherwise the common size of the images when every image is square
  and the most frequent side is at most 256, else 48. Every image is resized straight to that size
  (PIL, bilinear with antialiasing, the same filter as torchvision's ``Resize``), without cropping.
* Channels: ``channels`` when given (converted with PIL's ITU-R 601 luma for grey); otherwise 1 if every
  image is grey (a grey mode, or colour with three equal channels), else 3.
* EXIF orientation is applied. Unreadable, empty, truncated or non-image files are skipped and listed
  in ``FaceDataset.problems`` with the reason; loading never stops on a bad image.

The decoding helpers here (:func:`probe_images`, :func:`decode_images`) are shared with the AffectNet loader.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ferkit.data.base import (
    SPLIT_ALIASES,
    SPLIT_CODES,
    SPLITS,
    Problem,
    check_channels,
    check_fractions,
    normalize_size,
    stratified_split,
)
from ferkit.data.cache import group_by_split, load_or_build
from ferkit.errors import DataError
from ferkit.faces.io import ALLOWED_FORMATS  # one list of image formats, shared with the decoder
from ferkit.faces.io import IMAGE_SUFFIXES as IMAGE_EXTENSIONS
from ferkit.utils import progress

LOADER_VERSION = 1
DEFAULT_IMAGE_SIZE = 48
MAX_NATIVE_SIZE = 256
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}
_TASK = 256  # images per thread-pool task


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


# ------------------------------------------------------------------------------------------------ decoding
def _open(path: str):
    from PIL import Image

    if os.path.getsize(path) == 0:
        raise _Skip("empty file (0 bytes)")
    try:
        return Image.open(path, formats=ALLOWED_FORMATS)
    except Image.UnidentifiedImageError:
        raise _Skip("not an image in an accepted format (" + ", ".join(ALLOWED_FORMATS) + ")") from None


class _Skip(Exception):
    """An image that cannot be used; the message is the reason shown to the user."""


def _reason(e: BaseException) -> str:
    if isinstance(e, _Skip):
        return str(e)
    msg = str(e).strip() or type(e).__name__
    if "truncated" in msg.lower():
        return f"truncated image ({msg})"
    return f"corrupt or unreadable image ({type(e).__name__}: {msg})"


def _probe_one(path: str):
    with _open(path) as im:
        w, h = im.size
        try:
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF orientations that swap width and height
                w, h = h, w
        except Exception:  # a damaged EXIF block: the decode will tell whether the image itself is usable
            pass
        mode = im.mode
        if mode == "P":
            mode = "L" if im.palette is not None and _palette_is_grey(im) else "RGB"
        return (h, w), mode


def _palette_is_grey(im) -> bool:
    try:
        pal = np.frombuffer(im.palette.tobytes(), dtype=np.uint8)
        if im.palette.mode != "RGB" or pal.size % 3:
            return False
        pal = pal.reshape(-1, 3)
        return bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())
    except Exception:
        return False


def probe_images(paths: list[str], *, quiet: bool = False, desc: str = "scan") -> tuple[list, list[str | None]]:
    """Read every image's header (no pixel decoding): ``[((h, w), mode) | None]`` and a reason per failure."""
    out: list = [None] * len(paths)
    reasons: list[str | None] = [None] * len(paths)

    def task(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            try:
                out[i] = _probe_one(paths[i])
            except Exception as e:  # noqa: BLE001 - any failure of a file is that file's problem
                reasons[i] = _reason(e)
        return hi - lo

    _run_chunks(task, len(paths), quiet=quiet, desc=desc)
    return out, reasons


def _decode_one(path: str, size_hw: tuple[int, int], mode: str):
    from PIL import Image, ImageOps

    h, w = size_hw
    with _open(path) as im:
        orig = im.size
        if im.format == "JPEG":
            im.draft(None, (max(h, w), max(h, w)))  # let libjpeg scale down by 1/2..1/8 while decoding
        im.load()
        im2 = im
        try:
            if im.getexif().get(0x0112, 1) in (2, 3, 4, 5, 6, 7, 8):
                im2 = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block is no reason to lose the pixels
            pass
        if im2.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # PIL's own conversion clips these at 255
            a = np.asarray(im2).astype(np.int64)
            im2 = Image.fromarray(np.clip(a >> 8 if a.max() > 255 else a, 0, 255).astype(np.uint8))
        src_mode = im2.mode
        if mode == "L":
            if src_mode != "L":
                im2 = im2.convert("L")
        elif src_mode in ("RGBA", "LA", "PA") or (src_mode == "P" and "transparency" in im2.info):
            im2 = im2.convert("RGBA").convert("RGB")
        elif src_mode != "RGB":
            im2 = im2.convert("RGB")
        if im2.size != (w, h):
            im2 = im2.resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(im2)
    if mode == "L":
        return arr[..., None], True, orig
    grey = src_mode in _GREY_MODES or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    return arr, grey, orig


def decode_images(
    paths: list[str], size_hw: tuple[int, int], mode: str, out: np.ndarray, *, quiet: bool = False, desc: str = "decode"
):
    """Decode ``paths`` into ``out[i]`` (``mode`` "L" -> 1 channel, "RGB" -> 3), resized to ``size_hw``.

    Returns ``(ok, grey, orig_sizes, reasons)``: a bool per image, whether it is grey, its original
    ``(w, h)`` and a reason for each failure. Runs in a thread pool (PIL releases the GIL while decoding).
    """
    n = len(paths)
    ok = np.zeros(n, dtype=bool)
    grey = np.zeros(n, dtype=bool)
    orig = np.zeros((n, 2), dtype=np.int32)
    reasons: list[str | None] = [None] * n

    def task(lo: int, hi: int) -> int:
        for i in range(lo, hi):
            try:
                arr, g, o = _decode_one(paths[i], size_hw, mode)
            except Exception as e:  # noqa: BLE001 - any failure of a file is that file's problem
                reasons[i] = _reason(e)
                continue
            out[i] = arr
            ok[i], grey[i], orig[i] = True, g, o
        return hi - lo

    _run_chunks(task, n, quiet=quiet, desc=desc)
    return ok, grey, orig, reasons


def _run_chunks(task, n: int, *, quiet: bool, desc: str) -> None:
    bounds = [(lo, min(n, lo + _TASK)) for lo in range(0, n, _TASK)]
    with progress(total=n, desc=desc, unit="img", quiet=quiet) as bar:
        if len(bounds) <= 1 or workers() == 1:
            for lo, hi in bounds:
                bar.update(task(lo, hi))
            return
        with ThreadPoolExecutor(max_workers=workers()) as ex:
            for done in ex.map(lambda b: task(*b), bounds):
                bar.update(done)


def choose_size(shapes: list) -> tuple[int, int]:
    """Default image size: the most common side when every image is square and it is <= 256, else 48."""
    sizes = [s for s in shapes if s is not None]
    if sizes and all(h == w for h, w in sizes):
        side = Counter(h for h, _ in sizes).most_common(1)[0][0]
        if side <= MAX_NATIVE_SIZE:
            return side, side
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def decode_to_dataset(
    scratch,
    paths: list[str],
    *,
    size,
    channels,
    quiet: bool,
    problems: list[Problem],
    where: str,
    report_paths: list[str] | None = None,
):
    """Probe (when size/channels must be chosen), decode and compact: the shared core of image loaders.

    Returns ``(images, keep, orig_sizes)``: ``images`` holds only the usable images, in ``paths`` order;
    ``keep`` is the bool mask of usable paths. Unusable files are appended to ``problems``.
    """
    report_paths = report_paths or paths
    n = len(paths)
    usable = np.ones(n, dtype=bool)
    mode = None if channels is None else ("L" if channels == 1 else "RGB")
    if size is None or channels is None:
        probed, reasons = probe_images(paths, quiet=quiet)
        for i, r in enumerate(reasons):
            if r is not None:
                usable[i] = False
                problems.append(Problem(report_paths[i], r))
        if size is None:
            size = choose_size([p[0] for p in probed if p is not None])
        if mode is None:
            mode = "L" if all(p[1] in _GREY_MODES for p in probed if p is not None) else "RGB"
    h, w = size
    idx = np.flatnonzero(usable)
    if len(idx) == 0:
        raise DataError(f"{where}: none of the {n} image files can be read (first: {problems[-n]})")
    c0 = 1 if mode == "L" else 3
    buf = scratch.empty("decode", (len(idx), h, w, c0), np.uint8)
    assert mode is not None  # from channels, else from the probe
    ok, grey, orig, reasons = decode_images([paths[i] for i in idx], (h, w), mode, buf, quiet=quiet)
    for j, r in enumerate(reasons):
        if r is not None:
            problems.append(Problem(report_paths[idx[j]], r))
    if not ok.any():
        raise DataError(f"{where}: none of the {n} image files can be decoded (first: {problems[-len(idx)]})")
    c = channels or (1 if c0 == 1 or bool(grey[ok].all()) else 3)
    kept = np.flatnonzero(ok)
    images = scratch.empty("images", (len(kept), h, w, c), np.uint8)
    step = 1024
    for s in range(0, len(kept), step):
        rows = buf[kept[s : s + step]]
        images[s : s + len(rows)] = rows[..., :1] if c == 1 else rows
    del buf
    scratch.release("decode")
    keep = np.zeros(n, dtype=bool)
    keep[idx[ok]] = True
    return images, keep, orig[ok]


# ------------------------------------------------------------------------------------------------ layout
def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _links_last(e: os.DirEntry) -> tuple[bool, str]:
    try:
        return e.is_symlink(), e.name
    except OSError:
        return True, e.name


class _Walker:
    """Image files under class folders, each real file at most once and never through a link that leads out of
    its class folder (a link loop, ``up -> ../sad`` relabelling another class, ``x -> ..`` pulling in the
    whole disk). What is skipped, and folders that cannot be listed, become :class:`Problem` notes."""

    def __init__(self, root: Path, notes: list[Problem]):
        self.root = os.path.realpath(root)
        self.notes = notes
        self.dirs: set[str] = set()
        self.files: set[str] = set()

    def class_dir_ok(self, d: Path, siblings: list[Path]) -> bool:
        """Whether class (or split) folder ``d`` may be scanned: not a link out of the root, not a link to a
        folder already scanned, not a link to a folder that holds its sibling folders (``all -> .``)."""
        real = os.path.realpath(d)
        if not _inside(real, self.root):
            self.notes.append(Problem(str(d), "skipped: a link that leads out of the dataset folder"))
            return False
        if any(_inside(real, seen) for seen in self.dirs):
            self.notes.append(Problem(str(d), "skipped: a link to a folder already scanned"))
            return False
        if real == self.root or any(_inside(os.path.realpath(o), real) for o in siblings if o != d):
            self.notes.append(Problem(str(d), "skipped: a link to a folder that holds the other class folders"))
            return False
        return True

    def walk(self, directory: Path):
        """Image files under ``directory`` (recursively), sorted, with (size, mtime_ns); hidden names skipped."""
        top = os.path.realpath(directory)
        self.dirs.add(top)
        found = []
        stack = [(str(directory), top)]
        while stack:
            d, dreal = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError as err:
                self.notes.append(
                    Problem(d, f"skipped: cannot list this folder ({err.strerror or type(err).__name__})")
                )
                continue
            for e in sorted(entries, key=_links_last):  # a real file beats a link to it, whatever the names
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()
                    if not is_dir and not (e.is_file() and is_image_file(e.name)):
                        continue
                    link = e.is_symlink()
                    real = os.path.realpath(e.path) if link else os.path.join(dreal, e.name)
                    if not _inside(real, top):
                        self.notes.append(Problem(e.path, "skipped: a link that leads out of its class folder"))
                    elif is_dir and real in self.dirs:
                        self.notes.append(Problem(e.path, "skipped: a link to a folder already scanned (a loop)"))
                    elif is_dir:
                        self.dirs.add(real)
                        stack.append((e.path, real))
                    elif real in self.files:
                        if link:
                            self.notes.append(Problem(e.path, "skipped: a link to an image already listed"))
                    else:
                        self.files.add(real)
                        st = e.stat()
                        found.append((e.path, int(st.st_size), int(st.st_mtime_ns)))
                except OSError as err:
                    self.notes.append(Problem(e.path, f"skipped: {err.strerror or type(err).__name__}"))
        found.sort()
        return found


def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def scan_folder(root: Path):
    """Find the layout: ``(split_dirs | None, classes, samples, listing, notes)``.

    ``samples`` is a list of ``(path, class_name, split or None)``; ``listing`` feeds the cache key.
    """
    notes: list[Problem] = []
    top = _subdirs(root)
    split_dirs: dict[str, Path] = {}
    for d in top:
        s = SPLIT_ALIASES.get(d.name.lower())
        if s is not None and s not in split_dirs:
            split_dirs[s] = d
    samples, listing, classes = [], [], set()

    walker = _Walker(root, notes)

    def scan(parent: Path, class_dirs: list[Path], split: str | None) -> None:
        """Every image under each class folder of ``parent``; loose images beside them are noted."""
        for cd in class_dirs:
            if not walker.class_dir_ok(cd, class_dirs):
                continue
            classes.add(cd.name)
            listing.append([os.path.relpath(cd, root)])
            for p, sz, mt in walker.walk(cd):
                samples.append((p, cd.name, split))
                listing.append([os.path.relpath(p, root), sz, mt])
        loose = [f for f in _list_files(parent) if is_image_file(f.name)]
        if loose:
            notes.append(Problem(str(parent), f"ignored {len(loose)} image(s) not inside a class folder"))

    if split_dirs:
        rejected = [sd for sd in split_dirs.values() if not walker.class_dir_ok(sd, top)]
        split_dirs = {k: v for k, v in split_dirs.items() if v not in rejected}
        for d in top:
            if d not in split_dirs.values() and d not in rejected:
                notes.append(
                    Problem(
                        str(d), "ignored: not a split folder (train, val/validation, test) next to the split folders"
                    )
                )
        for split, sd in sorted(split_dirs.items(), key=lambda kv: SPLIT_CODES[kv[0]]):
            scan(sd, _subdirs(sd), split)
    else:
        scan(root, top, None)
    return (split_dirs or None), sorted(classes), samples, listing, notes


def _list_files(d: Path) -> list[Path]:
    try:
        return [p for p in d.iterdir() if p.is_file()]
    except OSError:
        return []


def plan_splits(
    labels: np.ndarray, given: np.ndarray, present: set[str], *, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, dict]:
    """Split codes for every sample: given splits kept, missing val/test carved from train (seeded).

    ``given`` holds codes (-1 where unknown: every sample of a split-less layout). Returns the codes and
    the split parameters that the cache key must remember (empty when nothing was drawn at random).
    """
    codes = np.asarray(given, dtype=np.int8).copy()
    vf = 0.0 if "val" in present else float(val_fraction)
    tf = 0.0 if "test" in present else float(test_fraction)
    if vf == 0 and tf == 0:
        codes[codes < 0] = 0
        return codes, {}
    check_fractions(vf, tf)
    pool = np.flatnonzero((codes == 0) | (codes < 0))
    sub = stratified_split(labels[pool], vf, tf, seed)
    codes[pool] = sub
    return codes, {"seed": int(seed), "val_fraction": vf, "test_fraction": tf}


def load_folder(
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
    """Load a class-folder tree (see the module doc for the layouts and defaults)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory" if not root.exists() else f"{root}: is not a directory")
    size = normalize_size(image_size)
    channels = check_channels(channels)
    split_dirs, classes, samples, listing, notes = scan_folder(root)
    if not samples:
        exts = " ".join(e[1:] for e in IMAGE_EXTENSIONS)
        raise DataError(
            f"{root}: no images found: expected ROOT/<class>/*.jpg or "
            f"ROOT/{{train,val,test}}/<class>/*.jpg (extensions: {exts})"
        )
    cls_index = {c: i for i, c in enumerate(classes)}
    labels = np.array([cls_index[c] for _, c, _ in samples], dtype=np.int64)
    given = np.array([-1 if s is None else SPLIT_CODES[s] for _, _, s in samples], dtype=np.int8)
    present = set(split_dirs or ())
    if present and "train" not in present:
        raise DataError(f"{root}: has {', '.join(sorted(present))} folder(s) but no train folder")
    codes, split_params = plan_splits(
        labels, given, present, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    params = {"image_size": size, "channels": channels, **split_params}

    def build(scratch):
        order, ranges = group_by_split(codes)
        paths = [samples[i][0] for i in order.tolist()]
        problems = list(notes)
        images, keep, _ = decode_to_dataset(
            scratch, paths, size=size, channels=channels, quiet=quiet, problems=problems, where=str(root)
        )
        kept_codes = codes[order][keep]
        _, ranges = group_by_split(kept_codes)  # already grouped: only the ranges change
        ids = [p for p, k in zip(paths, keep.tolist(), strict=True) if k]
        arrays = {"images": images, "labels": labels[order][keep]}
        meta = {
            "name": root.name,
            "classes": classes,
            "splits": ranges,
            "ids": ids,
            "problems": problems[: len(notes)] + sorted(problems[len(notes) :], key=lambda q: q.path),
        }
        return arrays, meta

    return load_or_build(
        "folder", root, listing=listing, params=params, loader_version=LOADER_VERSION, build=build, cache=cache
    )


__all__ = [
    "load_folder",
    "scan_folder",
    "decode_images",
    "probe_images",
    "decode_to_dataset",
    "choose_size",
    "IMAGE_EXTENSIONS",
    "SPLITS",
]
