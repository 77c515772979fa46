"""Describe a dataset: sizes, class histograms, pixel statistics, problems, duplicates across splits, imbalance."""

from __future__ import annotations

from pathlib import Path

from ferkit.data.base import SPLITS, FaceDataset
from ferkit.data.loading import load_dataset

IMBALANCE_RATIO = 10.0
# Two-class "is it me?" data (source 000) should be balanced: a 1.5x skew already biases the threshold.
BINARY_IMBALANCE_RATIO = 1.5


def imbalance_warning(classes, counts) -> str | None:
    """A one-line warning when the train split's classes are skewed (>= 1.5x for two classes, else 10x)."""
    import numpy as np

    counts = np.asarray(counts)
    nz = counts[counts > 0]
    ratio = BINARY_IMBALANCE_RATIO if len(classes) == 2 else IMBALANCE_RATIO
    if len(nz) < 2 or nz.max() / nz.min() < ratio:
        return None
    big, small = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    return (
        f"class imbalance in train: {classes[big]!r} has {counts[big]} images, {classes[small]!r} "
        f"{counts[small]} ({counts[big] / counts[small]:.1f}x); balance the folders or use --class-weights"
    )


_DUP_LIMIT = 2 << 30  # hash images for duplicates only when the whole set is at most 2 GiB


def inspect_dataset(path, **kw) -> dict:
    """Load ``path`` (keyword arguments as :func:`load_dataset`) and describe it: what ``ferkit data inspect``
    prints through :func:`format_inspection`. JSON-serialisable."""
    import numpy as np

    kw.setdefault("quiet", True)
    ds = load_dataset(path, **kw)
    from ferkit.data.cache import entry_dir

    hist = {name: ds.histogram(name).tolist() for name in ds.splits}
    stats_split = "train" if "train" in ds.splits and len(ds.splits["train"]) else next(iter(ds.splits), None)
    mean, std = ds.channel_stats(stats_split) if stats_split else ([], [])
    warnings: list[dict] = []
    if "train" in ds.splits and len(ds.splits["train"]):
        counts = np.asarray(hist["train"])
        nz = counts[counts > 0]
        if len(nz) > 1 and nz.max() / nz.min() >= IMBALANCE_RATIO:
            big, small = int(np.argmax(counts)), int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
            warnings.append(
                {
                    "path": "train",
                    "reason": f"class imbalance: {ds.classes[big]!r} has {counts[big]} "
                    f"images, {ds.classes[small]!r} {counts[small]} ({counts[big] / counts[small]:.1f}x); "
                    "consider class weights",
                }
            )
    for name, h in hist.items():
        # h can run past the classes only on an out-of-range label; the report names the known classes
        for c, n in zip(ds.classes, h, strict=False):
            if n == 0:
                warnings.append({"path": name, "reason": f"class {c!r} has no images in the {name} split"})
    dups, blanks = _duplicates(ds)
    if dups.get("count"):
        ex = "; ".join(f"{a} ({sa}) = {b} ({sb})" for a, sa, b, sb in dups["examples"][:3])
        warnings.append(
            {
                "path": "splits",
                "reason": f"{dups['count']} image(s) in val/test also appear in an "
                f"earlier split (identical pixels), e.g. {ex}",
            }
        )
    if blanks:
        warnings.append({"path": "images", "reason": f"{blanks} blank image(s) (a single grey level)"})
    va = {}
    if ds.has_va:
        for k in ("valence", "arousal"):
            v = np.concatenate([np.asarray(getattr(s, k)) for s in ds.splits.values()])
            va[k] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}
    cache_dir = entry_dir(ds)
    return {
        "path": str(Path(path).expanduser().resolve()),
        "name": ds.name,
        "format": ds.format,
        "classes": list(ds.classes),
        "num_samples": int(sum(len(s) for s in ds.splits.values())),
        "splits": {name: {"size": len(s), "histogram": hist[name]} for name, s in ds.splits.items()},
        "image_size": list(ds.image_size),
        "channels": ds.channels,
        "pixel_mean": mean,
        "pixel_std": std,
        "stats_split": stats_split,
        "valence_arousal": va or None,
        "landmarks": any(s.landmarks is not None for s in ds.splits.values()),
        "problems": [{"path": p.path, "reason": p.reason} for p in ds.problems],
        "warnings": warnings,
        "duplicates": dups,
        "cache": str(cache_dir) if cache_dir else None,
    }


def _duplicates(ds: FaceDataset) -> tuple[dict, int]:
    """Samples of val/test whose pixels equal a sample of an earlier split, and blank-image count."""
    import hashlib

    import numpy as np

    total = sum(int(np.prod(s.images.shape, dtype=np.int64)) for s in ds.splits.values())
    if total > _DUP_LIMIT:
        return {"checked": False, "reason": f"skipped: {total / 2**30:.1f} GiB of pixels"}, 0
    seen: dict[bytes, tuple[str, str]] = {}
    examples: list[list[str]]
    count, examples, blanks = 0, [], 0
    for name in SPLITS:
        s = ds.splits.get(name)
        if s is None:
            continue
        local: dict[bytes, tuple[str, str]] = {}
        for a in range(0, len(s), 4096):
            block = np.ascontiguousarray(s.images[a : a + 4096])
            flat = block.reshape(len(block), -1)
            blanks += int((flat.min(axis=1) == flat.max(axis=1)).sum())
            for j, row in enumerate(flat):
                h = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                if h in seen and seen[h][1] != name:
                    count += 1
                    if len(examples) < 10:
                        examples.append([seen[h][0], seen[h][1], s.ids[a + j], name])
                local.setdefault(h, (s.ids[a + j], name))
        for h, v in local.items():
            seen.setdefault(h, v)
    return {"checked": True, "count": count, "examples": examples}, blanks


def format_inspection(info: dict) -> str:
    """The human-readable report of :func:`inspect_dataset`'s dict."""
    lines = []
    h, w = info["image_size"]
    lines.append(f"dataset   {info['name']}  (format: {info['format']})")
    lines.append(f"path      {info['path']}")
    ch = info["channels"]
    lines.append(
        f"images    {info['num_samples']:,} of {h}x{w}, {ch} channel{'s' if ch != 1 else ''}"
        + (f"  (cache: {info['cache']})" if info.get("cache") else "")
    )
    if info["pixel_mean"]:
        fmt = lambda v: ", ".join(f"{x:.3f}" for x in v)  # noqa: E731
        lines.append(
            f"pixels    mean {fmt(info['pixel_mean'])}  std {fmt(info['pixel_std'])}  "
            f"(0-1 scale, {info['stats_split']} split)"
        )
    if info.get("valence_arousal"):
        for k, v in info["valence_arousal"].items():
            lines.append(f"{k:<9} mean {v['mean']:+.3f}  std {v['std']:.3f}  range [{v['min']:+.2f}, {v['max']:+.2f}]")
    if info.get("landmarks"):
        lines.append("landmarks yes")
    splits = list(info["splits"])
    lines.append("splits    " + ", ".join(f"{s} {info['splits'][s]['size']:,}" for s in splits))
    lines.append("")
    width = max([5] + [len(c) for c in info["classes"]])
    head = f"  {'class':<{width}}" + "".join(f"{s:>9}" for s in splits) + f"{'total':>9}{'share':>8}"
    lines.append(f"{len(info['classes'])} classes")
    lines.append(head)
    totals = [0] * len(splits)
    n_all = max(1, info["num_samples"])
    for i, c in enumerate(info["classes"]):
        row = [info["splits"][s]["histogram"][i] for s in splits]
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        lines.append(
            f"  {c:<{width}}"
            + "".join(f"{v:>9,}" for v in row)
            + f"{sum(row):>9,}"
            + f"{100 * sum(row) / n_all:>7.1f}%"
        )
    lines.append(f"  {'total':<{width}}" + "".join(f"{v:>9,}" for v in totals) + f"{sum(totals):>9,}{'':>8}")
    probs = info["problems"]
    lines.append("")
    if probs:
        lines.append(f"problems: {len(probs)} file(s) or folder(s) skipped or ignored")
        lines += [f"  {p['path']}: {p['reason']}" for p in probs]
    else:
        lines.append("problems: none")
    warns = info["warnings"]
    if warns:
        lines.append(f"warnings: {len(warns)}")
        lines += [f"  {p['path']}: {p['reason']}" for p in warns]
    dup = info.get("duplicates") or {}
    if dup and not dup.get("checked", True):
        lines.append(f"duplicates: {dup.get('reason')}")
    return "\n".join(lines)


__all__ = ["IMBALANCE_RATIO", "BINARY_IMBALANCE_RATIO", "imbalance_warning", "inspect_dataset", "format_inspection"]
