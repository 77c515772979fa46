"""``ferkit data fetch NAME``: download a public dataset, or find it already placed, under one data root.

The root is ``root=`` when given, else ``$FERKIT_DATA_DIR``, else ``<cache root>/data`` (``~/.cache/ferkit/data``,
see :func:`ferkit.utils.cache_root`). Each dataset lives in ``ROOT/<name>/`` (:data:`DATASETS` says the layout);
:func:`fetch_dataset` returns the path to give ``ferkit train --data``.

* A dataset already placed there is recognised and returned without touching the network (checked
  minimally: the expected files exist and :func:`ferkit.data.detect_format` reads them as the right format).
* Kaggle datasets go through ``kagglehub`` (optional: ``pip install kagglehub``; public datasets need no
  credentials, a Kaggle token in ``~/.kaggle/kaggle.json`` or ``KAGGLE_USERNAME``/``KAGGLE_KEY`` lifts limits).
  MNIST / Fashion-MNIST go through ``torchvision.datasets`` (``download=True``); FER+ labels are one CSV
  from Microsoft's GitHub repository, combined with a placed ``fer2013.csv`` into a class-folder tree.
* Offline, or when a download fails: a one-line :class:`~ferkit.errors.DataError` naming the file to
  download, where from, and where to put it. Network waits are bounded by ``$FERKIT_FETCH_TIMEOUT``
  seconds (default 30) per connection.
* Downloads land in a temporary folder next to the target and are moved into place at the end, so an
  interrupted fetch leaves nothing half-written that would later pass for a placed dataset.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
import os
import shutil
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ferkit.errors import ConfigError, DataError, FerkitError, quote
from ferkit.utils import atomic_dir, atomic_write_bytes, cache_root

DATA_DIR_ENV = "FERKIT_DATA_DIR"
TIMEOUT_ENV = "FERKIT_FETCH_TIMEOUT"
FERPLUS_URL = "https://raw.githubusercontent.com/microsoft/FERPlus/master/fer2013new.csv"
FER2013_CSV_URL = (
    "https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data"
)
FERPLUS_CLASSES = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@dataclass(frozen=True)
class DatasetInfo:
    """One row of ``ferkit data fetch --list``."""

    name: str
    description: str
    url: str
    licence: str
    layout: str  # what ROOT/<name>/ holds once placed
    format: str  # the ferkit format the returned path loads as


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "fer2013",
            "FER2013: 35,887 grey 48x48 faces, 7 expressions (Kaggle folders or the classic CSV)",
            "https://www.kaggle.com/datasets/msambare/fer2013",
            "research use only (ICML 2013 challenge data; no explicit licence)",
            "fer2013/train/<class>/*.png + fer2013/test/<class>/*.png, or fer2013/fer2013.csv",
            "folder|fer2013",
        ),
        DatasetInfo(
            "face-expression",
            "Face Expression Recognition Dataset (source 001): 48x48 faces, 7 classes, "
            "images/train + images/validation",
            "https://www.kaggle.com/datasets/jonathanoheix/face-expression-recognition-dataset",
            "see the Kaggle page (FER2013-derived; research use)",
            "face-expression/images/{train,validation}/<class>/*.jpg",
            "folder",
        ),
        DatasetInfo(
            "ferplus",
            "FER+: FER2013 images relabelled by 10 annotators into 8 classes (majority vote)",
            FERPLUS_URL,
            "labels MIT (microsoft/FERPlus); images as FER2013 (research use only)",
            "ferplus/fer2013new.csv + fer2013.csv (here or in fer2013/) -> ferplus/images/{train,val,test}/"
            "<class>/*.png",
            "folder",
        ),
        DatasetInfo(
            "mnist",
            "MNIST: 70,000 grey 28x28 handwritten digits, 10 classes",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "CC BY-SA 3.0 (Yann LeCun and Corinna Cortes)",
            "mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            "idx",
        ),
        DatasetInfo(
            "fashion-mnist",
            "Fashion-MNIST: 70,000 grey 28x28 clothing images, 10 classes (source 002)",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "MIT (Zalando Research)",
            "fashion-mnist/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
            "idx",
        ),
    )
}
_KAGGLE = {"fer2013": "msambare/fer2013", "face-expression": "jonathanoheix/face-expression-recognition-dataset"}


def data_root(root=None) -> Path:
    """Where datasets are fetched to: ``root``, else ``$FERKIT_DATA_DIR``, else ``<cache root>/data``."""
    if root not in (None, ""):
        return Path(root).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else cache_root() / "data"


def list_datasets(root=None) -> list[dict]:
    """The rows of ``ferkit data fetch --list``: name, description, url, licence, layout, target folder and
    whether the dataset is already placed there (no network)."""
    base = data_root(root)
    rows = []
    for info in DATASETS.values():
        try:
            placed = _placed(info.name, base / info.name) is not None
        except DataError:
            placed = False
        rows.append(
            {
                "name": info.name,
                "description": info.description,
                "url": info.url,
                "licence": info.licence,
                "layout": info.layout,
                "path": str(base / info.name),
                "placed": placed,
            }
        )
    return rows


def fetch_dataset(name: str, root=None, force: bool = False) -> Path:
    """Make dataset ``name`` (a key of :data:`DATASETS`) available under the data root and return the path to
    load it from. An already placed copy is returned as is unless ``force`` (then it is downloaded again)."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(
            f"unknown dataset {quote(name)}: use one of {', '.join(DATASETS)} "
            "(`ferkit data fetch --list` describes them)"
        )
    target = data_root(root) / key
    if not force:
        found = _placed(key, target)
        if found is not None:
            return found
    if key in _KAGGLE:
        _fetch_kaggle(key, target, force=force)
    elif key == "ferplus":
        _fetch_ferplus(target, force=force)
    else:
        _fetch_torchvision(key, target)
    found = _placed(key, target)
    if found is None:  # pragma: no cover - a download that succeeded but holds another layout
        raise DataError(
            f"{target}: the download finished but does not hold {DATASETS[key].layout}; remove the "
            f"folder and fetch again, or place the files by hand from {DATASETS[key].url}"
        )
    return found


# ------------------------------------------------------------------------------------------------ placed
def _placed(key: str, target: Path) -> Path | None:
    """The loadable path of a dataset already in ``target``, or None; a DataError when it is there but broken."""
    if not target.is_dir():
        return None
    if key == "fer2013":
        for csv_name in ("fer2013.csv", "icml_face_data.csv", "train.csv"):
            if (target / csv_name).is_file():
                return _check(target / csv_name, "fer2013")
        return _check(target, "folder") if (target / "train").is_dir() else None
    if key == "face-expression":
        for d in (target / "images", target / "images" / "images", target):
            if (d / "train").is_dir():
                return _check(d, "folder")
        return None
    if key == "ferplus":
        d = target / "images"
        return _check(d, "folder") if (d / "train").is_dir() else None
    from ferkit.data.idx import find_idx_files

    for d in (target / ("MNIST" if key == "mnist" else "FashionMNIST") / "raw", target):
        if d.is_dir():
            files = find_idx_files(d)
            if ("train", "images") in files and ("train", "labels") in files:
                return _check(files["train", "images"].parent, "idx")
    return None


def _check(path: Path, fmt: str) -> Path:
    from ferkit.data.loading import detect_format

    try:
        got = detect_format(path)
        if got == "fer2013":
            from ferkit.data.fer2013 import _read_columns

            _read_columns(path)
    except DataError as e:
        raise DataError(
            f"{path}: is there but not usable ({_reason(e)}); remove it and fetch again (--force)"
        ) from None
    if got != fmt:
        raise DataError(
            f"{path}: is there but reads as {got} data, expected {fmt}; remove it and fetch again (--force)"
        )
    return path


# ------------------------------------------------------------------------------------------------ download
def _timeout() -> float:
    try:
        return max(0.1, float(os.environ.get(TIMEOUT_ENV, "30")))
    except ValueError:
        raise ConfigError(f"${TIMEOUT_ENV}={quote(os.environ[TIMEOUT_ENV])} is not a number of seconds") from None


def _reason(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 300 else msg[:300] + "..."


@contextlib.contextmanager
def _network_timeout():
    """Bound every socket wait of a third-party downloader by ``$FERKIT_FETCH_TIMEOUT``."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_timeout())
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _optional_import(module: str, key: str, by_hand: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        pkg = module.split(".")[0]
        raise DataError(f"{key}: {pkg} is not installed (pip install {pkg}), or {by_hand}") from None


def _fetch_kaggle(key: str, target: Path, force: bool) -> None:
    info = DATASETS[key]
    by_hand = (
        f"download it from {info.url} (Download -> archive.zip) and unzip it into {target} so that "
        f"{target.parent}/{info.layout.split(', or ')[0]} exists, then run this again"
    )
    kagglehub = _optional_import("kagglehub", key, by_hand)
    try:
        with _network_timeout():
            src = Path(kagglehub.dataset_download(_KAGGLE[key], force_download=force))
    except Exception as e:  # noqa: BLE001 - offline, no credentials, rate limits: all end in the same advice
        raise DataError(f"{key}: download from Kaggle failed ({_reason(e)}); {by_hand}") from None
    with atomic_dir(target, replace=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _download(url: str, dest: Path, *, what: str) -> None:
    """Fetch ``url`` to ``dest`` atomically, within the fetch timeout; a one-line DataError on any failure."""
    try:
        with urllib.request.urlopen(url, timeout=_timeout()) as r:
            data = r.read()
    except Exception as e:  # noqa: BLE001 - URLError, timeouts, HTTP errors, resets
        raise DataError(
            f"{what}: cannot download {url} ({_reason(e)}); download it by hand and save it as "
            f"{dest}, then run this again"
        ) from None
    atomic_write_bytes(dest, data)


def _fetch_torchvision(key: str, target: Path) -> None:
    info = DATASETS[key]
    by_hand = (
        f"download {', '.join(_IDX_FILES)} from {info.url} into "
        f"{target / ('MNIST' if key == 'mnist' else 'FashionMNIST') / 'raw'}, then run this again"
    )
    datasets = _optional_import("torchvision.datasets", key, by_hand)
    cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
    try:
        with atomic_dir(target, replace=True) as tmp:
            with _network_timeout(), contextlib.redirect_stdout(io.StringIO()):  # torchvision prints every mirror
                for train in (True, False):
                    cls(str(tmp), train=train, download=True)
    except FerkitError:
        raise
    except Exception as e:  # noqa: BLE001 - offline, a mirror down, a bad checksum
        raise DataError(f"{key}: download failed ({_reason(e)}); {by_hand}") from None


def _fetch_ferplus(target: Path, force: bool) -> None:
    labels = target / "fer2013new.csv"
    fer_csv = next(
        (p for p in (target / "fer2013.csv", target.parent / "fer2013" / "fer2013.csv") if p.is_file()), None
    )
    if fer_csv is None:
        raise DataError(
            f"ferplus: needs the FER2013 pixels: download fer2013.csv (fer2013.tar.gz) from "
            f"{FER2013_CSV_URL} and save it as {target / 'fer2013.csv'}, then run this again"
        )
    if force or not labels.is_file():
        _download(FERPLUS_URL, labels, what="ferplus")
    build_ferplus(fer_csv, labels, target / "images")


def build_ferplus(fer_csv, labels_csv, out) -> dict[str, int]:
    """Write FER+ as a class-folder tree ``out/{train,val,test}/<class>/<row>.png`` from FER2013's pixels and
    ``fer2013new.csv``'s votes (majority vote as Microsoft's ``majority`` mode: the top class needs more
    than half the votes; rows won by 'unknown' / 'NF' (not a face) are dropped). Returns images per split."""
    import numpy as np
    from PIL import Image

    from ferkit.data.base import SPLIT_ALIASES
    from ferkit.data.fer2013 import _parse, _read_columns

    fer_csv, labels_csv, out = Path(fer_csv), Path(labels_csv), Path(out)
    pixels, _, _, _, side = _parse(fer_csv, _read_columns(fer_csv), quiet=True)
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"{labels_csv}: cannot be read as fer2013new.csv ({_reason(e)}); download it again from {FERPLUS_URL}"
        ) from None
    head = [c.strip().lower() for c in rows[0]] if rows else []
    if head[:2] != ["usage", "image name"] or len(head) < 12:
        raise DataError(
            f"{labels_csv}: not FER+'s fer2013new.csv (header {quote(','.join(rows[0]) if rows else '')}"
            f"; expected Usage,Image name,neutral,...,NF); download it again from {FERPLUS_URL}"
        )
    body = [r for r in rows[1:] if r]
    if len(body) != len(pixels):
        raise DataError(
            f"{labels_csv}: {len(body)} rows but {fer_csv} has {len(pixels)}: the FER+ labels belong to "
            "the original 35,887-row fer2013.csv"
        )
    counts: dict[str, int] = {}
    with atomic_dir(out, replace=True) as tmp:
        for i, r in enumerate(body):
            try:
                votes = np.array([float(v) for v in r[2:12]])
            except ValueError:
                raise DataError(
                    f"{labels_csv}: line {i + 2}: vote counts {quote(','.join(r[2:12]))} are not numbers"
                ) from None
            split = SPLIT_ALIASES.get(r[0].strip().lower())
            if split is None or not r[1].strip() or votes.sum() <= 0:
                continue
            top = int(np.argmax(votes))
            if top >= len(FERPLUS_CLASSES) or votes[top] <= 0.5 * votes.sum():
                continue
            d = tmp / split / FERPLUS_CLASSES[top]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i].reshape(side, side)).save(d / f"fer{i:05d}.png")
            counts[split] = counts.get(split, 0) + 1
        if "train" not in counts:
            raise DataError(f"{labels_csv}: no row has a training label with a majority vote")
    return counts


__all__ = ["DATASETS", "DatasetInfo", "build_ferplus", "data_root", "fetch_dataset", "list_datasets"]
