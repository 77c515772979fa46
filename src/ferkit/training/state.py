"""A run's resumable state: what ``last.pt`` carries, how it is restored, and how a run folder is made whole.

One epoch's outputs are one unit. ``last.pt`` is its commit record: it is written first (atomically) and
holds everything the epoch's other outputs are made from (the weights best.pt gets when the epoch
improved, the history metrics.csv shows). :func:`replay_epoch` makes those outputs from it, so a process
killed between any two writes is made whole on resume by replaying the last commit, and the run goes on
exactly as if it had never stopped. A kill before the commit loses only that epoch, which is redone.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ferkit.checkpoint import load_state, save_checkpoint, unwrap
from ferkit.errors import CheckpointError, ConfigError
from ferkit.refs import load_checkpoint
from ferkit.training.config import TrainConfig
from ferkit.training.outputs import before_write, write_metrics_csv

RUN_MARKERS = ("best.pt", "last.pt", "results.json")  # a folder holding any of these holds a run
RUN_OUTPUTS = RUN_MARKERS + ("metrics.csv", "training_curves.png", "confusion_matrix.png", "predictions.csv")
# settings that belong to one invocation, never inherited from the stored run
_NOT_INHERITED = ("resume", "overwrite", "init")


@dataclass
class StopState:
    """Early stopping: the best monitored value, when it was reached, validations since, whether stopped."""

    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False

    def update(self, value: float, epoch: int, mode: str, patience: int | None) -> bool:
        """Record one validation; True when it improved on the best."""
        improved = self.best is None or (value > self.best if mode == "max" else value < self.best)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped = patience is not None and self.bad_epochs >= patience
        return improved


def resume_config(cfg: TrainConfig) -> tuple[TrainConfig, dict]:
    """The config a resumed run goes on with, and the checkpoint it resumes from.

    The run's own settings (stored in ``last.pt``) and folder (the one holding ``last.pt``), except the
    settings given explicitly now, which override them.
    """
    assert cfg.resume is not None  # called for a resumed run only
    ckpt = load_checkpoint(cfg.resume)
    if "train_state" not in ckpt:
        raise CheckpointError(
            f"{cfg.resume}: has no training state to resume from (only last.pt has it); "
            "use --init to fine-tune from it instead"
        )
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {k: v for k, v in (ckpt.get("config") or {}).items() if k in names and k not in _NOT_INHERITED}
    given = cfg.given_settings()
    settings.update({k: getattr(cfg, k) for k in given | set(_NOT_INHERITED)})
    if "out" not in given:
        settings["out"] = str(Path(cfg.resume).parent)
    merged = TrainConfig.from_dict(settings, where=str(cfg.resume))
    merged._given = frozenset(given)
    return merged, ckpt


def _resumes_here(cfg: TrainConfig, run_dir: Path) -> bool:
    return bool(cfg.resume and Path(cfg.resume).resolve().parent == run_dir.resolve())


def refuse_existing_run(cfg: TrainConfig, run_dir: Path) -> None:
    """A one-line ConfigError when ``run_dir`` holds a (finished or partial) run this one would replace.

    Resuming that very run, or ``overwrite``, is allowed. Every DDP process checks before any of them
    writes, so they all refuse together.
    """
    found = [n for n in RUN_MARKERS if (run_dir / n).exists()]
    if found and not cfg.overwrite and not _resumes_here(cfg, run_dir):
        raise ConfigError(
            f"{run_dir}: already holds a run ({found[0]}); continue it with --resume "
            f"{run_dir / 'last.pt'}, replace it with --overwrite, or choose another --out"
        )


def prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume_ckpt: dict | None) -> None:
    """Make the folder ready (main process, after :func:`refuse_existing_run`): drop torn temp files and,
    with ``overwrite``, the old run's outputs; when resuming, carry best.pt over and replay the last epoch.
    """
    same = _resumes_here(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in RUN_OUTPUTS:
        for tmp in run_dir.glob(f".{name}.*.tmp"):  # a write a kill cut short; the real file is intact
            tmp.unlink(missing_ok=True)
        if cfg.overwrite and not same:
            (run_dir / name).unlink(missing_ok=True)
    if resume_ckpt is None:
        return
    assert cfg.resume is not None  # resume_ckpt was read from it
    source = Path(cfg.resume).parent
    if not same and (source / "best.pt").exists():
        # the resumed epochs may never beat the stored best: the new folder needs it as well
        before_write(run_dir / "best.pt")
        save_checkpoint(load_checkpoint(source / "best.pt"), run_dir / "best.pt")
    replay_epoch(run_dir, resume_ckpt)


def commit_epoch(run_dir: Path, ckpt: dict) -> None:
    """Write one epoch's outputs: ``last.pt`` (the commit record), then what is made from it."""
    before_write(run_dir / "last.pt")
    save_checkpoint(ckpt, run_dir / "last.pt")
    replay_epoch(run_dir, ckpt)


def replay_epoch(run_dir: Path, ckpt: dict) -> None:
    """Make the outputs of the epoch ``ckpt`` (a ``last.pt``) committed; writing them twice is harmless."""
    st = ckpt["train_state"]
    if st["best_epoch"] == st["epoch"]:
        before_write(run_dir / "best.pt")
        save_checkpoint({k: v for k, v in ckpt.items() if k != "train_state"}, run_dir / "best.pt")
    write_metrics_csv(run_dir, st["history"])


def training_state(
    epoch: int,
    stop: StopState,
    model,
    optimizer,
    scheduler,
    scaler,
    micro_bs: int,
    accumulate: int,
    history: list[dict],
) -> dict:
    """Everything beyond the weights that the run needs to go on exactly: ``last.pt``'s ``train_state``."""
    from ferkit.models.freeze import frozen_stages

    np_state = cast(tuple, np.random.get_state())  # the global MT19937: always the legacy tuple
    return {
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict(),
        "best": stop.best,
        "bad_epochs": stop.bad_epochs,
        "best_epoch": stop.best_epoch,
        "stopped": stop.stopped,
        "micro_bs": micro_bs,
        "accumulate": accumulate,
        "frozen": frozen_stages(unwrap(model)),
        "history": list(history),
        "rng": {
            "torch": torch.get_rng_state(),
            "python": list(random.getstate()[1]),
            "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
        },
    }


def check_resumable(
    ckpt: dict, path, model_name: str, task: str, num_classes: int, in_channels: int, classes: list[str]
) -> None:
    """A one-line CheckpointError when the checkpoint was trained as another model / task / class set."""
    m = ckpt["model"]
    if (
        m["name"] != model_name
        or m["num_classes"] != num_classes
        or m["in_channels"] != in_channels
        or m["task"] != task
    ):
        raise CheckpointError(
            f"{path}: was trained as {m['name']}/{m['task']}/{m['num_classes']} classes/{m['in_channels']} ch, "
            f"but this run is {model_name}/{task}/{num_classes} classes/{in_channels} ch; "
            "resume with the same settings"
        )
    if list(ckpt["classes"]) != list(classes):
        raise CheckpointError(f"{path}: classes {ckpt['classes']} differ from the dataset's {classes}")


def restore_state(ckpt: dict, path, model, optimizer, scheduler, scaler) -> tuple[dict, StopState]:
    """Load weights, optimiser, schedule, scaler, freezing and RNGs; returns ``(train_state, stop state)``."""
    from ferkit.models.freeze import freeze, unfreeze

    st = ckpt["train_state"]
    unfreeze(unwrap(model))
    if st.get("frozen"):
        freeze(unwrap(model), names=list(st["frozen"]))
    load_state(model, ckpt["state_dict"], path, ckpt["model"]["name"])
    optimizer.load_state_dict(st["optimizer"])
    if scheduler is not None and st.get("scheduler"):
        scheduler.load_state_dict(st["scheduler"])
    scaler.load_state_dict(st["scaler"])
    rng = st.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "python" in rng:
        random.setstate((3, tuple(rng["python"]), None))
    if "numpy" in rng:
        np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), int(rng.get("numpy_pos", 624)), 0, 0.0))
    stop = StopState(st["best"], st["best_epoch"], st["bad_epochs"], bool(st.get("stopped", False)))
    return st, stop


__all__ = [
    "StopState",
    "resume_config",
    "refuse_existing_run",
    "prepare_run_dir",
    "commit_epoch",
    "replay_epoch",
    "training_state",
    "check_resumable",
    "restore_state",
    "RUN_MARKERS",
    "RUN_OUTPUTS",
]
