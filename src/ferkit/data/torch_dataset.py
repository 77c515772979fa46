"""A ``torch.utils.data.Dataset`` view of one split, for people who bring their own training loop.

ferkit's trainer does not need it (it indexes whole batches on the device); this is for
``DataLoader(SplitDataset(ds, "train", spec), batch_size=64, shuffle=True)`` in user code, with the same
preprocessing as every ferkit command.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ferkit.data.base import FaceDataset
from ferkit.data.spec import InputSpec
from ferkit.data.transforms import make_augment, to_input


class SplitDataset(Dataset):
    """Items are ``(image, label)`` or, for data with valence/arousal, ``(image, label, valence, arousal)``;
    ``image`` is the float tensor ``(C, H, W)`` a model with ``spec`` expects (normalised; augmented with
    ``augment`` when given)."""

    def __init__(
        self,
        ds: FaceDataset,
        split: str = "train",
        spec: InputSpec | None = None,
        augment: str | None = None,
        with_va: bool | None = None,
    ):
        self.split = ds.split(split)
        # size, channels, then mean and std
        self.spec = spec or InputSpec(ds.image_size, ds.channels, *ds.channel_stats("train"))
        self.augment = make_augment(augment) if augment and augment != "none" else None
        self.with_va = self.split.has_va if with_va is None else with_va

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        img = torch.from_numpy(np.array(self.split.images[i : i + 1]))
        x = to_input(img, self.spec, augment=self.augment)[0]
        y = int(self.split.labels[i])
        if self.with_va:
            assert self.split.valence is not None and self.split.arousal is not None  # with_va: the split has them
            return x, y, float(self.split.valence[i]), float(self.split.arousal[i])
        return x, y
