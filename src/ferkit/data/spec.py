"""The input a model was trained on: :class:`InputSpec` (size, channels, normalisation, permutation seed).

It is saved in every checkpoint and inference rebuilds the same input from it. Kept apart from
:mod:`ferkit.data.transforms` so reading a checkpoint's spec needs no torch import; this module is
where every caller imports it from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ferkit.errors import ConfigError


@dataclass
class InputSpec:
    """The input a model expects: ``size`` (H, W), ``channels`` (1 or 3), per-channel ``mean`` and
    ``std`` (in [0, 1] units) and the seed of a fixed pixel permutation (``None``: no permutation)."""

    size: tuple[int, int] = (48, 48)
    channels: int = 1
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    permute_seed: int | None = None

    def __post_init__(self):
        size = self.size
        if isinstance(size, int):
            size = (size, size)
        try:
            size = tuple(int(s) for s in size)
        except (TypeError, ValueError):
            raise ConfigError(f"input size {self.size!r}: give (height, width) as two integers") from None
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"input size {self.size!r}: give (height, width) as two positive integers")
        self.size = size
        if self.channels not in (1, 3):
            raise ConfigError(f"input channels {self.channels!r}: use 1 (grey) or 3 (colour)")
        self.channels = int(self.channels)
        for name in ("mean", "std"):
            v = getattr(self, name)
            v = [float(a) for a in (v if isinstance(v, (list, tuple)) else [v])]
            if len(v) == 1 and self.channels == 3:
                v = v * 3
            if len(v) != self.channels:
                raise ConfigError(f"input {name} {v}: give one value per channel ({self.channels})")
            setattr(self, name, v)
        if min(self.std) <= 0:
            raise ConfigError(f"input std {self.std}: every value must be positive")
        if self.permute_seed is not None:
            seed = self.permute_seed
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
                raise ConfigError(f"input permute_seed {str(seed)[:30]!r}: give an integer in 0..2**32-1, or none")
            self.permute_seed = int(seed)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        if not isinstance(d, dict):
            raise ConfigError(f"input spec must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"input spec has unknown keys {unknown}: expected {sorted(known)}")
        return cls(**{k: d[k] for k in known if k in d})


__all__ = ["InputSpec"]
