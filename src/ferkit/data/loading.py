"""Format detection and :func:`load_dataset`, the one entry point every format loads through."""

from __future__ import annotations

import inspect
from pathlib import Path

from ferkit.data.base import FaceDataset, check_min_size
from ferkit.errors import ConfigError, DataError, quote

FORMATS = ("fer2013", "folder", "affectnet", "idx")
LAYOUTS = (
    "a FER2013 CSV file (emotion,pixels[,Usage])",
    "a class-folder tree ROOT/<class>/*.jpg or ROOT/{train,val,test}/<class>/*.jpg",
    "an AffectNet-style folder ROOT/images/*.jpg + ROOT/annotations/<id>_exp.npy ...",
    "MNIST/Fashion-MNIST IDX files (train-images-idx3-ubyte[.gz] ...)",
)
_ACCEPTED = (
    "accepted: a FER2013 CSV (emotion,pixels[,Usage]), class folders ROOT/[train/]<class>/*.jpg, "
    "AffectNet-style images/ + annotations/, or MNIST IDX files"
)
from ferkit.faces.io import IMAGE_SUFFIXES as _IMAGE_EXT  # noqa: E402 - the one suffix list


def _loader(fmt: str):
    if fmt == "fer2013":
        from ferkit.data.fer2013 import load_fer2013 as f
    elif fmt == "folder":
        from ferkit.data.folder import load_folder as f
    elif fmt == "affectnet":
        from ferkit.data.affectnet import load_affectnet as f
    elif fmt == "idx":
        from ferkit.data.idx import load_idx as f
    else:
        raise ConfigError(
            f"unknown dataset format {quote(fmt, 60)}: use one of {', '.join(FORMATS)} (or leave it out to detect)"
        )
    return f


def _has_images(d: Path, limit: int = 2000) -> bool:
    """Whether ``d`` holds an image file, looking one level of class folders down (bounded)."""
    try:
        seen = 0
        for p in d.iterdir():
            seen += 1
            if seen > limit:
                break
            if p.is_file() and p.suffix.lower() in _IMAGE_EXT:
                return True
            if p.is_dir():
                for q in p.iterdir():
                    if q.is_file() and q.suffix.lower() in _IMAGE_EXT:
                        return True
                    if q.is_dir():
                        break
    except OSError:
        return False
    return False


def _resolve_path(path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: no such file or directory")
    return p


def check_dataset_path(path, format: str | None = None) -> None:
    """The cheap part of :func:`load_dataset`'s checks (the path exists; its layout is recognised when no format
    is given), without reading the data or importing torch: a typo is answered at once."""
    if format in (None, "", "auto", "synth"):
        detect_format(path)
    else:
        _resolve_path(path)


def detect_format(path) -> str:
    """The format of the dataset at ``path`` (see the module doc), or a DataError listing the layouts."""
    p = _resolve_path(path)
    return _detect(p)[0]


def _detect(p: Path) -> tuple[str, Path]:
    from ferkit.data.idx import is_idx_name

    if p.is_file():
        if p.suffix.lower() == ".csv":
            return "fer2013", p
        if is_idx_name(p.name):
            return "idx", p
        raise DataError(f"{p}: cannot tell the dataset format of this file; {_ACCEPTED}")
    if (p / "images").is_dir() and (p / "annotations").is_dir():
        return "affectnet", p
    subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if any((d / "images").is_dir() and (d / "annotations").is_dir() for d in subs):
        return "affectnet", p
    for d in (p, p / "raw"):
        if d.is_dir() and any(is_idx_name(f.name) for f in d.iterdir() if f.is_file()):
            return "idx", p
    if subs and any(_has_images(d) for d in subs):
        return "folder", p
    csvs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".csv")
    if len(csvs) == 1:
        return "fer2013", csvs[0]
    if len(subs) == 1 and not csvs:  # a wrapper folder (e.g. a download that unpacks into data/images/)
        try:
            return _detect(subs[0])
        except DataError:
            pass
    raise DataError(f"{p}: cannot tell the dataset format; {_ACCEPTED}")


def load_dataset(path, format: str | None = None, mapping=None, **kw) -> FaceDataset:
    """Load the dataset at ``path`` in ``format`` (detected when None), optionally relabelled by ``mapping``.

    Keyword arguments go to the format's loader: ``image_size``, ``channels``, ``seed``, ``val_fraction``,
    ``test_fraction``, ``cache``, ``quiet`` (all formats) and ``classes`` (idx).
    Images smaller than :data:`~ferkit.data.base.MIN_IMAGE_SIDE` (8) on a side are refused with a DataError
    that says to pass ``image_size`` (which upsamples them) rather than crash later in a model's pooling layer.
    """
    p = _resolve_path(path)
    if format in (None, "", "auto", "synth"):
        fmt, target = _detect(p)
    else:
        fmt, target = format, p
        if fmt == "fer2013" and p.is_dir():
            fmt, target = _detect(p)
            if fmt != "fer2013":
                raise DataError(f"{p}: is a folder, not a FER2013 CSV file")
    fn = _loader(fmt)
    kw = {k: v for k, v in kw.items() if v is not None}  # None means "the loader's default" for every option
    accepted = inspect.signature(fn).parameters
    unknown = [k for k in kw if k not in accepted]
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(unknown)} do not apply to the {fmt} format (it takes: "
            f"{', '.join(k for k in accepted if k != 'path')})"
        )
    ds = fn(target, **kw)
    if ds.splits:
        check_min_size(ds.image_size, target)
    if mapping:
        from ferkit.data.relabel import relabel

        ds = relabel(ds, mapping)
    return ds


__all__ = ["FORMATS", "LAYOUTS", "detect_format", "load_dataset"]
