"""Experiment trackers, TensorBoard and Weights & Biases, for training runs and evaluations alike.

The one place for their import guards (both are the optional ``track`` extra) and the offline rule: without
``WANDB_MODE`` and without ``WANDB_API_KEY``, W&B runs offline into the run folder (``wandb sync`` later)
rather than block on a login prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError


def open_tensorboard(log_dir: Path):
    """A ``SummaryWriter`` on ``log_dir``; a one-line :class:`ConfigError` when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard is an optional extra
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'ferkit[track]'") from e
    return SummaryWriter(log_dir=str(log_dir))


def start_wandb(**init: Any):
    """``wandb.init(**init)`` in the user's ``WANDB_MODE``, offline when none is set and no key is given.

    Returns ``(wandb, run)``; a one-line :class:`ConfigError` when wandb is not installed.
    """
    try:
        import wandb
    except ImportError as e:
        raise ConfigError("--wandb needs the wandb package: pip install 'ferkit[track]'") from e
    mode: Any = os.environ.get("WANDB_MODE")  # the user's value as given: wandb.init validates it
    if mode is None and not os.environ.get("WANDB_API_KEY"):
        mode = "offline"  # never block on a login prompt
    return wandb, wandb.init(mode=mode, reinit=True, **init)


def png_array(path: Path) -> np.ndarray:
    """A PNG as an HxWx3 uint8 array, the form ``SummaryWriter.add_image(..., dataformats="HWC")`` takes."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class TensorBoardLogger:
    """A training run's epochs (``train/…``, ``val/…``) and its test summary in ``RUN/tensorboard``."""

    def __init__(self, log_dir: Path):
        self.writer = open_tensorboard(log_dir)

    def log(self, row: dict, step: int) -> None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)):
                group = k.split("_", 1)
                tag = f"{group[0]}/{group[1]}" if len(group) == 2 and group[0] in ("train", "val", "test") else k
                self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def summary(self, metrics: dict, run_dir: Path) -> None:
        for k, v in metrics.items():
            if k.startswith("test_") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"test/{k[5:]}", v, 0)
        png = run_dir / "confusion_matrix.png"
        if png.exists():
            self.writer.add_image("test/confusion_matrix", png_array(png), 0, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A training run in W&B; offline (see :func:`start_wandb`) keeps everything in ``RUN/wandb``."""

    def __init__(self, cfg, run_dir: Path):
        self.wandb, self.run = start_wandb(
            project=cfg.wandb_project, name=Path(cfg.out).name, dir=str(run_dir), config=cfg.to_dict()
        )

    def log(self, row: dict, step: int) -> None:
        self.run.log(
            {
                k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k: v
                for k, v in row.items()
                if isinstance(v, (int, float))
            },
            step=step,
        )

    def summary(self, metrics: dict, run_dir: Path) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.run.summary[k] = v
        for name in ("confusion_matrix.png", "training_curves.png"):
            if (run_dir / name).exists():
                self.run.log({name[:-4]: self.wandb.Image(str(run_dir / name))})

    def close(self) -> None:
        self.run.finish()
