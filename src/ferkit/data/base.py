"""The in-memory form every dataset format loads into.

A :class:`Split` holds decoded images as one uint8 array ``(N, H, W, C)`` (usually a read-only
memory map of the cache, see :mod:`ferkit.data.cache`), integer labels and, for AffectNet-style
data, valence/arousal. A :class:`FaceDataset` groups the splits with the class names and the list
of problems met while loading (skipped files with reasons).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferkit.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


@dataclass
class Problem:
    """A file or row that was skipped while loading, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        """``path: reason`` on one line (a newline in a file name comes out as ``\\n``)."""
        path = self.path if self.path.isprintable() else repr(self.path)[1:-1]
        return f"{path}: {' '.join(self.reason.split())}"


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray  # int64 (N,)
    ids: list[str]  # a path or "file:row" per sample, for reports
    valence: np.ndarray | None = None  # float32 (N,) in [-1, 1]
    arousal: np.ndarray | None = None
    landmarks: np.ndarray | None = None  # float32 (N, 68, 2) where the format has them
    identities: np.ndarray | None = None  # int64 (N,) where the format has them

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray) -> Split:
        idx = np.asarray(idx)
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        return Split(
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            valence=take(self.valence),
            arousal=take(self.arousal),
            landmarks=take(self.landmarks),
            identities=take(self.identities),
        )

    @property
    def has_va(self) -> bool:
        return self.valence is not None and self.arousal is not None


@dataclass
class FaceDataset:
    name: str  # a short label for reports (file or folder name)
    format: str  # fer2013 | folder | affectnet | idx | synth
    root: str
    classes: list[str]
    splits: dict[str, Split]
    problems: list[Problem] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        s = next(iter(self.splits.values()))
        return int(s.images.shape[1]), int(s.images.shape[2])

    @property
    def channels(self) -> int:
        return int(next(iter(self.splits.values())).images.shape[3])

    @property
    def has_va(self) -> bool:
        return all(s.has_va for s in self.splits.values()) and bool(self.splits)

    def split(self, name: str) -> Split:
        if name not in self.splits or len(self.splits[name]) == 0:
            have = ", ".join(f"{k} ({len(v)})" for k, v in self.splits.items()) or "none"
            raise DataError(f"{self.root}: dataset has no '{name}' split (it has: {have})")
        return self.splits[name]

    def histogram(self, split: str) -> np.ndarray:
        return np.bincount(self.splits[split].labels, minlength=self.num_classes)

    def class_weights(self, split: str = "train") -> np.ndarray:
        """Inverse-frequency weights ``N / (k * count_c)`` (sklearn's "balanced"); absent classes get 0."""
        counts = self.histogram(split).astype(np.float64)
        n, k = counts.sum(), (counts > 0).sum()
        w = np.zeros_like(counts)
        w[counts > 0] = n / (k * counts[counts > 0])
        return w.astype(np.float32)

    def channel_stats(self, split: str = "train", max_samples: int = 20000) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units over (up to ``max_samples`` of) a split."""
        imgs = self.split(split).images
        step = max(1, len(imgs) // max_samples)
        x = np.asarray(imgs[::step], dtype=np.float32) / 255.0
        mean = x.mean(axis=(0, 1, 2))
        std = x.std(axis=(0, 1, 2)) + 1e-6
        return [float(v) for v in mean], [float(v) for v in std]


SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "publictest": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "privatetest": "test",
}
"""Spellings of split names met in dataset folders and files, mapped to ferkit's train/val/test."""

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= float(v) < 1.0):
            raise ConfigError(f"{name}={v} must be in [0, 1)")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves nothing to "
            "train on: keep their sum below 1"
        )


def stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded per-class split: a code per sample, 0 = train, 1 = val, 2 = test (see ``SPLIT_CODES``).

    Each class gives ``n_c * fraction`` (rounded half up) samples to val and to test, but never its last training
    sample. The same labels, fractions and seed always give the same split.
    """
    check_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels)
    codes = np.zeros(len(labels), dtype=np.int8)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = int(n * test_fraction + 0.5)  # round half up (Python's round() would give 0.5 -> 0)
        n_val = int(n * val_fraction + 0.5)
        while n_test + n_val > n - 1 and (n_test or n_val):
            if n_test >= n_val and n_test:
                n_test -= 1
            else:
                n_val -= 1
        codes[idx[:n_val]] = 1
        codes[idx[n_val : n_val + n_test]] = 2
    return codes


def normalize_size(image_size) -> tuple[int, int] | None:
    """``None``, an int or an (H, W) pair -> ``None`` or ``(H, W)``; anything else is a ConfigError."""
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        h = w = int(image_size)
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        h, w = (int(v) for v in image_size)
    else:
        raise ConfigError(f"image_size={image_size!r}: give one integer (square) or (height, width)")
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise ConfigError(f"image_size={image_size!r} is out of range 1-4096")
    return h, w


MIN_IMAGE_SIDE = 8
"""The smallest image side a dataset may load at: below it, every model's pooling layers run out of pixels."""


def check_min_size(size_hw, where, minimum: int = MIN_IMAGE_SIDE) -> None:
    """A DataError when images of ``size_hw`` (H, W) are smaller than ``minimum`` on a side.

    :func:`ferkit.data.load_dataset` applies it with :data:`MIN_IMAGE_SIDE`; a trainer can call it again with a
    model's own minimum (e.g. ``2 ** number_of_stride_2_stages``)."""
    h, w = (int(v) for v in size_hw)
    if min(h, w) < minimum:
        raise DataError(
            f"{where}: images are {h}x{w} pixels, below the minimum of {minimum}x{minimum} that models "
            f"need; load them with image_size={max(minimum, 48)} (--image-size {max(minimum, 48)}) to "
            "upsample, or use larger images"
        )


def check_channels(channels) -> int | None:
    """``None`` (keep the data's), 1 or 3; anything else is a ConfigError."""
    if channels is None:
        return None
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels!r}: use 1 (grey) or 3 (RGB), or leave unset to keep the data's")
    return int(channels)
