"""AffectNet-style folders: ``ROOT/images/<id>.jpg`` + ``ROOT/annotations/<id>_{exp,val,aro,lnd}.npy``.

* ``<id>_exp.npy``: the expression 0-7 (neutral, happy, sad, surprise, fear, disgust, angry (AffectNet: anger),
  contempt); ``_val`` / ``_aro``: valence / arousal in [-1, 1]; ``_lnd``: landmarks, 68 (x, y) pairs flattened to
  136 values. Each file holds one value (AffectNet stores them as strings such as ``'3'``; numbers work too).
* Classes are the AffectNet names up to the highest label present: data labelled 0-6 (as source 003's)
  is a 7-class problem, data with contempt (7) an 8-class one.
* Splits: ``ROOT/splits.csv`` (``id,split`` rows; split is train/val/test) when present; or split
  sub-folders each in this layout (``ROOT/train_set/images``..., ``ROOT/{train,val,test}/images``...; a
  missing val or test is carved from train as in the folder loader); otherwise a seeded, stratified split.
* An annotation kind (val, aro, lnd) is used when most images have it; ``exp`` is always required.
  Skipped, each listed in ``FaceDataset.problems`` with the reason: an image missing a used annotation, an
  expression outside 0-7 (AffectNet's 8-10 mean none / uncertain / no face), valence or arousal outside
  [-1, 1] (AffectNet writes -2 for "uncertain"), landmarks of the wrong length, an unreadable annotation
  or image, an image not listed in splits.csv.
* ``ROOT/identities.csv`` (``id,identity``, as ``ferkit data synth`` writes) fills ``Split.identities``
  (-1 for ids it does not list).
* Images are sized as in the folder loader; landmarks are rescaled to the stored image's pixel coordinates.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np

from ferkit.data.base import SPLIT_ALIASES, SPLIT_CODES, Problem, check_channels, normalize_size
from ferkit.data.cache import file_stamp, group_by_split, load_or_build
from ferkit.data.folder import decode_to_dataset, is_image_file, plan_splits
from ferkit.errors import DataError, quote
from ferkit.utils import progress

LOADER_VERSION = 2  # 2: class 6 is "angry"
# AffectNet calls class 6 "anger"; ferkit says "angry" everywhere (FER2013, the zoo, the synthetic data) so that
# class names match across datasets and models without a mapping.
AFFECTNET_CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt"]
KINDS = ("exp", "val", "aro", "lnd")
_MAX_CSV_BYTES = 64 << 20
_ANN = re.compile(r"^(?P<id>.+)_(?P<kind>exp|val|aro|lnd)\.npy$")


def is_affectnet_dir(d: Path) -> bool:
    return (d / "images").is_dir() and (d / "annotations").is_dir()


def affectnet_roots(root: Path) -> list[tuple[Path, str | None]]:
    """``[(dir, split or None)]``: ROOT itself, or its split sub-folders that are in the AffectNet layout."""
    if is_affectnet_dir(root):
        return [(root, None)]
    found: dict[str, Path] = {}
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    for d in subs:
        name = d.name.lower()
        name = name[:-4] if name.endswith("_set") else name
        split = SPLIT_ALIASES.get(name)
        if split and split not in found and is_affectnet_dir(d):
            found[split] = d
    return [(d, s) for s, d in sorted(found.items(), key=lambda kv: SPLIT_CODES[kv[0]])]


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _scan(sub: Path):
    """Images ``{id: (path, size, mtime)}`` and annotations ``{id: {kind: (path, size, mtime)}}``."""
    images, dup = {}, []
    for e in sorted(os.scandir(sub / "images"), key=lambda e: e.name):
        if e.is_file() and is_image_file(e.name):
            st = e.stat()
            sid = os.path.splitext(e.name)[0]
            if sid in images:
                dup.append(e.path)
                continue
            images[sid] = (e.path, int(st.st_size), int(st.st_mtime_ns))
    anns: dict[str, dict] = {}
    for e in os.scandir(sub / "annotations"):
        m = _ANN.match(e.name)
        if m and e.is_file():
            st = e.stat()
            anns.setdefault(m["id"], {})[m["kind"]] = (e.path, int(st.st_size), int(st.st_mtime_ns))
    return images, anns, dup


def _read_csv_rows(path: Path, what: str) -> list[list[str]]:
    """The rows of a small UTF-8 CSV; anything else (binary, another encoding, huge fields) is a DataError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_CSV_BYTES + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(raw) > _MAX_CSV_BYTES:
        raise DataError(f"{path}: is over {_MAX_CSV_BYTES >> 20} MB; a {what} file holds one short row per image")
    if b"\0" in raw:
        raise DataError(f"{path}: is a binary file, not a {what} CSV; write it as UTF-8 text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: byte {e.start} is not UTF-8; save the {what} CSV as UTF-8 text") from None
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: is not a readable CSV ({e}); write one short '{what}' row per image") from None


def _clean_id(sid: str) -> str:
    sid = sid.strip()
    return os.path.splitext(sid)[0] if is_image_file(sid) else sid


def _read_splits_csv(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    rows = _read_csv_rows(path, "id,split")
    ci, cs, start = 0, 1, 0
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if "split" in head:  # a header row
        ci, cs, start = (head.index("id") if "id" in head else 0), head.index("split"), 1
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) <= max(ci, cs):
            raise DataError(f"{path}: line {lineno}: expected 'id,split', got {quote(','.join(row), 100)}")
        sid, split = _clean_id(row[ci]), row[cs].strip()
        s = SPLIT_ALIASES.get(split.lower())
        if s is None:
            raise DataError(f"{path}: line {lineno}: split {quote(split, 100)} is not train, val or test")
        out[sid] = s
    return out


def _read_identities_csv(path: Path) -> dict[str, int]:
    """``id,identity`` rows (a header row optional): which person each image shows."""
    out: dict[str, int] = {}
    for lineno, row in enumerate(_read_csv_rows(path, "id,identity"), start=1):
        if not row or not any(c.strip() for c in row):
            continue
        if lineno == 1 and len(row) > 1 and row[1].strip().lower() == "identity":
            continue
        try:
            ident = int(row[1])
        except (IndexError, ValueError):
            raise DataError(
                f"{path}: line {lineno}: expected 'id,identity' with an integer identity, got "
                f"{quote(','.join(row), 100)}"
            ) from None
        if not -1 <= ident < 2**63:
            raise DataError(
                f"{path}: line {lineno}: identity {quote(row[1].strip(), 100)} is out of range (use "
                "0 .. 2^63-1, or -1 for unknown)"
            )
        out[_clean_id(row[0])] = ident
    return out


def load_npy(path: str, max_values: int = 1 << 20) -> np.ndarray:
    """A small ``.npy`` array, checked before anything is allocated: a ValueError (the reason) when the file
    is not a ``.npy`` (an ``.npz``, empty, text), holds objects, or its header claims over ``max_values``."""
    with open(path, "rb") as f:
        head = f.read(6)
        if head[:2] == b"PK":
            raise ValueError("is a zip (.npz) archive, not a .npy array; save it with np.save")
        if head != b"\x93NUMPY":
            raise ValueError("empty file (0 bytes)" if not head else "not a .npy file (bad magic)")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
        except Exception as e:  # noqa: BLE001 - numpy parses the header with tokenize/ast: any error means broken
            raise ValueError(f"broken .npy header ({type(e).__name__})") from None
        n = int(np.prod(shape, dtype=object))
        if n > max_values:
            raise ValueError(f"header claims {n:,} values (shape {tuple(shape)}), expected at most {max_values:,}")
        if dtype.hasobject:
            raise ValueError("holds Python objects (pickled); save plain numbers or strings")
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)


def _scalar(path: str) -> float:
    a = load_npy(path, max_values=1)
    if a.size != 1:
        raise ValueError(f"holds {a.size} values, expected one")
    v = a.reshape(-1)[0]
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode()
    return float(v)


def _scan_entries(root: Path, subroots) -> tuple[list, list, list[Problem]]:
    """Every image with its annotation files, in natural id order per (sub-)folder; the cache's file listing;
    what was ignored (duplicate ids, annotations without an image)."""
    notes: list[Problem] = []
    entries = []  # (id, image (path, size, mtime), annotations {kind: path}, given split or None)
    listing = []
    for sub, split in subroots:
        images, anns, dup = _scan(sub)
        for p in dup:
            notes.append(Problem(p, "ignored: another image in images/ has the same id"))
        orphans = len(set(anns) - set(images))
        if orphans:
            notes.append(Problem(str(sub / "annotations"), f"ignored annotations of {orphans} id(s) with no image"))
        for sid in sorted(images, key=_natural):
            ann = anns.get(sid, {})
            entries.append((sid, images[sid], {k: v[0] for k, v in ann.items()}, split))
            listing.append(
                [os.path.relpath(images[sid][0], root), images[sid][1], images[sid][2]]
                + [[k, *ann[k][1:]] for k in KINDS if k in ann]
            )
    return entries, listing, notes


def _read_annotations(ipath, ann: dict, used: list[str], n_lnd: int | None):
    """One image's (expression, (valence, arousal), landmarks or None), or the :class:`Problem` that leaves it out.

    ``n_lnd``: how many landmark values the images read so far have (every image must have as many).
    """
    va = np.zeros(2, dtype=np.float32)
    pts = None
    kind = "exp"
    try:
        y = _scalar(ann["exp"])
        if not float(y).is_integer() or not 0 <= y <= 7:
            return Problem(
                ann["exp"], f"expression {y:g} outside 0-7 (AffectNet's 8-10 mean none / uncertain / no face)"
            )
        for j, kind in enumerate(("val", "aro")):
            if kind in used:
                v = _scalar(ann[kind])
                if not (np.isfinite(v) and -1.0 <= v <= 1.0):
                    word = "valence" if kind == "val" else "arousal"
                    return Problem(
                        ann[kind],
                        f"{word} {v:g} outside [-1, 1]" + (" (AffectNet's 'uncertain' code)" if v == -2 else ""),
                    )
                va[j] = v
        if "lnd" in used:
            kind = "lnd"
            flat = load_npy(ann["lnd"], max_values=4096).astype(np.float32).reshape(-1)
            if flat.size % 2 or flat.size == 0 or (n_lnd is not None and flat.size != n_lnd):
                return Problem(ann["lnd"], f"{flat.size} landmark values, expected {n_lnd or 136} ((x, y) pairs)")
            pts = flat.reshape(-1, 2)
    except (OSError, ValueError, TypeError, EOFError, UnicodeDecodeError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        return Problem(ann.get(kind, ipath), f"unreadable annotation ({reason})")
    return int(y), va, pts


def load_affectnet(
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
    """Load an AffectNet-style folder (see the module doc): classes, valence, arousal and landmarks."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory" if not root.exists() else f"{root}: is not a directory")
    size = normalize_size(image_size)
    channels = check_channels(channels)
    subroots = affectnet_roots(root)
    if not subroots:
        raise DataError(
            f"{root}: not an AffectNet-style folder: expected images/ and annotations/ in it "
            "(or in train/val/test sub-folders)"
        )

    entries, listing, notes = _scan_entries(root, subroots)
    if not entries:
        raise DataError(f"{root}: no images in images/ (extensions: jpg jpeg png bmp gif webp tif tiff)")
    split_file = root / "splits.csv"
    listed = None
    if subroots[0][1] is None and split_file.is_file():
        listing.append(["splits.csv", *file_stamp(split_file)])
        listed = _read_splits_csv(split_file)
    id_file = root / "identities.csv"
    identities = None
    if id_file.is_file():
        listing.append(["identities.csv", *file_stamp(id_file)])
        identities = _read_identities_csv(id_file)
    if listed is not None:
        present = set(listed.values())
        if "train" not in present:
            raise DataError(f"{split_file}: lists no 'train' sample")
    else:
        present = {s for _, s in subroots if s}
        if present and "train" not in present:
            raise DataError(f"{root}: has {', '.join(sorted(present))} sub-folder(s) but no train one")
    needs_split = len(present) < 3
    params = {"image_size": size, "channels": channels}
    if needs_split:
        params.update(seed=int(seed), val_fraction=float(val_fraction), test_fraction=float(test_fraction))
    # an optional annotation kind is used when most images have it
    used = ["exp"] + [k for k in KINDS[1:] if 2 * sum(k in e[2] for e in entries) > len(entries)]

    def build(scratch):
        problems = list(notes)
        n = len(entries)
        labels = np.zeros(n, dtype=np.int64)
        va = np.zeros((n, 2), dtype=np.float32)
        lnds: list = [None] * n
        n_lnd = None
        good = np.zeros(n, dtype=bool)
        given = np.full(n, -1, dtype=np.int8)
        for i, (sid, img, ann, split) in enumerate(progress(entries, desc="annotations", unit="img", quiet=quiet)):
            ipath = img[0]
            missing = [k for k in used if k not in ann]
            if missing:
                problems.append(
                    Problem(ipath, f"missing annotation(s): {', '.join(f'annotations/{sid}_{k}.npy' for k in missing)}")
                )
                continue
            if listed is not None:
                if sid not in listed:
                    problems.append(Problem(ipath, "not listed in splits.csv"))
                    continue
                given[i] = SPLIT_CODES[listed[sid]]
            elif split is not None:
                given[i] = SPLIT_CODES[split]
            row = _read_annotations(ipath, ann, used, n_lnd)
            if isinstance(row, Problem):
                problems.append(row)
                continue
            labels[i], va[i], lnds[i] = row
            if lnds[i] is not None:
                n_lnd = n_lnd or lnds[i].size
            good[i] = True
        sel = np.flatnonzero(good)
        if len(sel) == 0:
            raise DataError(
                f"{root}: no usable images: all {n} were skipped (first problem: "
                f"{problems[len(notes)] if len(problems) > len(notes) else 'none'})"
            )
        codes, _ = plan_splits(
            labels[sel], given[sel], present, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
        )
        order, _ = group_by_split(codes)
        sel = sel[order]
        codes = codes[order]
        paths = [entries[i][1][0] for i in sel.tolist()]
        images, keep, orig = decode_to_dataset(
            scratch, paths, size=size, channels=channels, quiet=quiet, problems=problems, where=str(root)
        )
        sel, codes = sel[keep], codes[keep]
        _, ranges = group_by_split(codes)
        lab = labels[sel]
        arrays = {"images": images, "labels": lab}
        if "val" in used:
            arrays["valence"] = va[sel, 0].copy()
        if "aro" in used:
            arrays["arousal"] = va[sel, 1].copy()
        if "lnd" in used:
            h, w = images.shape[1:3]
            pts = np.stack([lnds[i] for i in sel.tolist()]).astype(np.float32)
            scale = np.stack([w / orig[:, 0], h / orig[:, 1]], axis=1).astype(np.float32)
            arrays["landmarks"] = pts * scale[:, None, :]
        if identities is not None:
            arrays["identities"] = np.array([identities.get(entries[i][0], -1) for i in sel.tolist()], dtype=np.int64)
        classes = AFFECTNET_CLASSES[: int(lab.max()) + 1]
        ids = [entries[i][1][0] for i in sel.tolist()]
        meta = {
            "name": root.name,
            "classes": classes,
            "splits": ranges,
            "ids": ids,
            "problems": problems[: len(notes)] + sorted(problems[len(notes) :], key=lambda q: q.path),
        }
        return arrays, meta

    return load_or_build(
        "affectnet", root, listing=listing, params=params, loader_version=LOADER_VERSION, build=build, cache=cache
    )
