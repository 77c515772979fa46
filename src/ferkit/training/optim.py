"""Optimiser, learning-rate schedule and mixed-precision choices for a training run."""

from __future__ import annotations

from typing import Literal

import torch

from ferkit.errors import ConfigError
from ferkit.training.config import TrainConfig

# monitor -> whether bigger is better; picks best.pt and drives early stopping / ReduceLROnPlateau
MONITORS: dict[str, Literal["min", "max"]] = {"val_acc": "max", "val_loss": "min", "val_balanced_acc": "max"}


def monitor_mode(monitor: str) -> str:
    """``"max"`` or ``"min"`` for a monitored metric; a one-line ConfigError for an unknown one."""
    mode = MONITORS.get(monitor)
    if mode is None:
        raise ConfigError(f"--monitor {monitor!r}: use one of {', '.join(MONITORS)}")
    return mode


def build_optimizer(cfg: TrainConfig, model: torch.nn.Module, epochs: int):
    """``(optimizer, scheduler or None)`` for the model's parameters as the config asks."""
    params = list(model.parameters())
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | None
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay or 1e-2)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    if cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    elif cfg.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.scheduler == "plateau":
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            mode=MONITORS.get(cfg.monitor, "max"),
            factor=cfg.gamma if cfg.gamma < 1 else 0.1,
            patience=max(1, (cfg.patience or 6) // 3),
        )
    else:
        sched = None
    return opt, sched


def step_scheduler(sched, row: dict, monitor: str, validated: bool) -> None:
    """Advance the schedule after an epoch; ReduceLROnPlateau only moves on a validated one."""
    if sched is None:
        return
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if validated:
            sched.step(row[monitor])
    else:
        sched.step()


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None``: full precision). auto is fp16 on CUDA and off elsewhere."""
    amp = cfg.amp
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "none"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError("--amp fp16 needs a CUDA GPU; on CPU use --amp bf16 or none")
    return dtype
