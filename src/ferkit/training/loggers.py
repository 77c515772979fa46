"""Experiment trackers beside metrics.csv: TensorBoard and Weights & Biases (offline mode works)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError


class TensorBoardLogger:
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # tensorboard is an optional extra
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'ferkit[track]'") from e
        self.writer = SummaryWriter(log_dir=str(log_dir))

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
            import numpy as np
            from PIL import Image

            self.writer.add_image("test/confusion_matrix", np.asarray(Image.open(png).convert("RGB")), 0,
                                  dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """``WANDB_MODE=offline`` (or no login) keeps everything in ``RUN/wandb`` for a later ``wandb sync``."""

    def __init__(self, cfg, run_dir: Path):
        try:
            import wandb
        except ImportError as e:
            raise ConfigError("--wandb needs the wandb package: pip install 'ferkit[track]'") from e
        self.wandb = wandb
        mode: Any = os.environ.get("WANDB_MODE")  # the user's value as given: wandb.init validates it
        if mode is None and not os.environ.get("WANDB_API_KEY"):
            mode = "offline"  # never block on a login prompt
        self.run = wandb.init(project=cfg.wandb_project, name=Path(cfg.out).name, dir=str(run_dir),
                              config=cfg.to_dict(), mode=mode, reinit=True)

    def log(self, row: dict, step: int) -> None:
        self.run.log({k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k: v
                      for k, v in row.items() if isinstance(v, (int, float))}, step=step)

    def summary(self, metrics: dict, run_dir: Path) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.run.summary[k] = v
        for name in ("confusion_matrix.png", "training_curves.png"):
            if (run_dir / name).exists():
                self.run.log({name[:-4]: self.wandb.Image(str(run_dir / name))})

    def close(self) -> None:
        self.run.finish()
