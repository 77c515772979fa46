"""Relabel a dataset: merge, rename, reorder and drop classes.

A mapping sends old class names to new ones (``None`` or leaving a class out drops its samples). Old
classes sent to the same new name are merged. The new class order is the order in which new names
first appear among the mapping's values, so a mapping can also reorder (``"not_me=not_me,me=me"`` makes
``me`` label 1). Old names match exactly, else case-insensitively.

A mapping can be given as a dict, a preset name, ``"a=x,b=x,c=y"`` (``c=`` drops c), or the path of a
JSON or YAML file holding ``{old: new-or-null}``. Presets:

* ``fashion3``: Fashion-MNIST's 10 classes -> clothes (T-shirt/top, Pullover, Dress, Coat, Shirt),
  shoes (Sandal, Sneaker, Ankle boot), others (Trouser, Bag), as in source 002.
* ``fer3``: keep happy, sad and neutral only (the ">= 3 emotions" task of source 000).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ferkit.data.base import FaceDataset, Split
from ferkit.errors import ConfigError, DataError, quote

PRESETS: dict[str, dict[str, str | None]] = {
    "fashion3": {
        "T-shirt/top": "clothes",
        "Pullover": "clothes",
        "Dress": "clothes",
        "Coat": "clothes",
        "Shirt": "clothes",
        "Sandal": "shoes",
        "Sneaker": "shoes",
        "Ankle boot": "shoes",
        "Trouser": "others",
        "Bag": "others",
    },
    "fer3": {"happy": "happy", "sad": "sad", "neutral": "neutral"},
}


def parse_mapping(spec) -> dict[str, str | None]:
    """A mapping from a dict, a preset name, ``"a=x,b=y"`` or a JSON/YAML file path."""
    if isinstance(spec, dict):
        return {str(k): (None if v is None or str(v).strip() == "" else str(v)) for k, v in spec.items()}
    if isinstance(spec, Path):
        return _from_file(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"mapping {quote(spec, 80)}: give a preset ({', '.join(PRESETS)}), 'old=new,...' or a JSON/YAML file"
        )
    s = spec.strip()
    if s.lower() in PRESETS:
        return dict(PRESETS[s.lower()])
    p = Path(s).expanduser()
    if s.lower().endswith((".json", ".yaml", ".yml")) or (p.is_file() and "=" not in s):
        return _from_file(p)
    if "=" not in s:
        raise ConfigError(f"mapping {quote(spec, 80)} is not a preset ({', '.join(PRESETS)}), a file, or 'old=new,...'")
    out: dict[str, str | None] = {}
    for part in s.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(
                f"mapping {quote(spec, 60)}: {quote(part.strip(), 60)} has no '=' (write old=new, or old= to drop)"
            )
        old, new = part.split("=", 1)
        out[old.strip()] = new.strip() or None
    return out


def _from_file(p: Path) -> dict[str, str | None]:
    if not p.is_file():
        raise ConfigError(f"{p}: mapping file not found")
    text = p.read_text("utf-8")
    try:
        if p.suffix.lower() == ".json":
            obj = json.loads(text)
        else:
            import yaml

            obj = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the file's
        raise ConfigError(f"{p}: cannot parse the mapping ({str(e).splitlines()[0]})") from None
    if isinstance(obj, dict) and isinstance(obj.get("mapping"), dict):
        obj = obj["mapping"]
    if not isinstance(obj, dict):
        raise ConfigError(f"{p}: a mapping file holds {{old_class: new_class or null}}, got {type(obj).__name__}")
    return parse_mapping(obj)


def _resolve(ds: FaceDataset, name: str) -> int:
    if name in ds.classes:
        return ds.classes.index(name)
    low = [c.lower() for c in ds.classes]
    if low.count(name.lower()) == 1:
        return low.index(name.lower())
    raise DataError(
        f"{ds.root}: class {quote(name, 60)} in the mapping is not a class of this dataset "
        f"(its classes: {', '.join(ds.classes[:20])}{', ...' if len(ds.classes) > 20 else ''})"
    )


def relabel(ds: FaceDataset, mapping) -> FaceDataset:
    """A new dataset with classes renamed/merged/dropped by ``mapping`` (see the module doc).

    Splits that lose no sample keep their (memory-mapped) images; others get a copy of the kept rows.
    """
    m = parse_mapping(mapping)
    new_classes: list[str] = []
    lut = np.full(ds.num_classes, -1, dtype=np.int64)
    for old, new in m.items():
        i = _resolve(ds, old)
        if new is None:
            continue
        if new not in new_classes:
            new_classes.append(new)
        lut[i] = new_classes.index(new)
    if not new_classes:
        raise DataError(f"{ds.root}: the mapping keeps no class (classes: {', '.join(ds.classes)})")
    splits: dict[str, Split] = {}
    for name, s in ds.splits.items():
        new_labels = lut[np.asarray(s.labels)]
        keep = new_labels >= 0
        if keep.all():
            splits[name] = Split(
                images=s.images,
                labels=new_labels,
                ids=list(s.ids),
                valence=s.valence,
                arousal=s.arousal,
                landmarks=s.landmarks,
                identities=s.identities,
            )
        else:
            idx = np.flatnonzero(keep)
            sub = s.subset(idx)
            sub.labels = new_labels[idx]
            splits[name] = sub
    return FaceDataset(
        name=ds.name, format=ds.format, root=ds.root, classes=new_classes, splits=splits, problems=list(ds.problems)
    )


def subset_classes(ds: FaceDataset, names) -> FaceDataset:
    """Keep only the classes ``names`` (a list or "a,b,c"), in that order; other samples are dropped."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names:
        raise ConfigError("subset_classes: no class names given")
    return relabel(ds, {ds.classes[_resolve(ds, n)]: ds.classes[_resolve(ds, n)] for n in names})
