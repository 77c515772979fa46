"""Data for the loop: each split as tensors, and each epoch's seeded order and random generator.

Every RNG is re-seeded from ``(seed, epoch, rank)`` at each epoch start, so a run resumed from
``last.pt`` at an epoch boundary continues bit for bit like one never stopped.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def split_tensors(dataset, task: str, device: torch.device) -> dict[str, dict]:
    """Each non-empty split's images/labels (and valence/arousal for multitask) as tensors.

    uint8 images stay in RAM up to 2 GB (FER2013 at 48x48 is 80 MB); larger caches stay memory-mapped
    and are read batch by batch. On CUDA the tensors move to the device once.
    """
    out = {}
    for name, s in dataset.splits.items():
        if len(s) == 0:
            continue
        imgs = torch.from_numpy(np.array(s.images)) if s.images.nbytes <= 2 * 1024**3 else s.images
        t = {"images": imgs, "labels": torch.from_numpy(np.asarray(s.labels, dtype=np.int64))}
        if task == "multitask":
            t["valence"] = torch.from_numpy(np.asarray(s.valence, dtype=np.float32))
            t["arousal"] = torch.from_numpy(np.asarray(s.arousal, dtype=np.float32))
        if device.type == "cuda":
            t = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
        out[name] = t
    return out


def seed_epoch(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Seed torch/numpy/random from ``(seed, epoch, rank)``; returns the augmentation generator."""
    s = seed * 1_000_003 + epoch * 7919 + rank
    torch.manual_seed(s)
    np.random.seed(s % (2**32))
    random.seed(s)
    g = torch.Generator(device="cpu")
    g.manual_seed(s + 1)
    return g


def epoch_order(n: int, seed: int, epoch: int, dist) -> torch.Tensor:
    """This process's sample order for one epoch: a seeded shuffle, sharded across DDP ranks."""
    if dist.enabled:
        from torch.utils.data import DistributedSampler

        # the sampler only takes len() of its dataset; torch annotates it as a Dataset
        sampler: DistributedSampler[int] = DistributedSampler(
            range(n),  # type: ignore[arg-type]
            num_replicas=dist.world,
            rank=dist.rank,
            shuffle=True,
            seed=seed,
        )
        sampler.set_epoch(epoch)
        return torch.tensor(list(iter(sampler)), dtype=torch.long)
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)
