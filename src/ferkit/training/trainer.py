"""The trainer: whole dataset as a uint8 tensor, batches by indexing, transforms on the device.

Why it is fast at 48x48: a textbook loop decodes a PIL image per item, converts it with ToTensor and
collates in worker processes; here the images are decoded once (see :mod:`ferkit.data.cache`), kept
as one uint8 tensor, and every batch is a single index + one batched augmentation on the device.

Reproducibility: shuffling, augmentation and dropout RNGs are re-seeded from ``(seed, epoch, rank)``
at each epoch start, so a run resumed from ``last.pt`` continues bit for bit like one never stopped.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ferkit.checkpoint import make_checkpoint, save_checkpoint, unwrap
from ferkit.errors import CheckpointError, ConfigError, TrainingError
from ferkit.evaluation import metrics as M
from ferkit.refs import load_checkpoint
from ferkit.training.batches import epoch_order, seed_epoch, split_tensors
from ferkit.training.config import TrainConfig
from ferkit.training.dist import Dist
from ferkit.training.losses import TaskLoss
from ferkit.training.optim import amp_dtype, build_optimizer, monitor_mode, step_scheduler
from ferkit.training.outputs import (
    before_write,
    epoch_line,
    write_results_json,
    write_test_outputs,
    write_training_curves,
)
from ferkit.training.state import (
    StopState,
    check_resumable,
    commit_epoch,
    prepare_run_dir,
    refuse_existing_run,
    restore_state,
    resume_config,
    training_state,
)
from ferkit.utils import check_output, progress, resolve_device, seed_everything

FAST_BATCHES = 4


@dataclass
class SplitEvaluation:
    """What :meth:`Trainer._evaluate` returns: the split's metrics and confusion matrix, and with
    ``collect=True`` the predictions for its first ``n`` images (class probabilities, and V/A for multitask)."""

    metrics: dict[str, float]
    confusion: np.ndarray
    n: int = 0
    probs: np.ndarray | None = None
    va: np.ndarray | None = None


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns: the run folder, its checkpoints, the best epoch and its metrics."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    metrics: dict  # best-epoch validation metrics + test metrics
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Train one model on one dataset as described by a :class:`TrainConfig`.

    ``callbacks`` are called as ``cb(trainer, epoch, row)`` after each epoch's checkpoints are written.
    """

    def __init__(self, config: TrainConfig, dataset=None, callbacks: list[Callable] | None = None):
        config.validate()
        self._resume_ckpt = None
        if config.resume:
            config, self._resume_ckpt = resume_config(config)
        self.cfg = config
        self.dataset = dataset
        self.callbacks = list(callbacks or [])
        self.dist = Dist()
        self.device = resolve_device(
            config.device
            if not self.dist.enabled or config.device != "auto"
            else (f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        )
        self.run_dir = Path(config.out)
        self.history: list[dict] = []
        self.loggers: list = []

    # ------------------------------------------------------------------ set-up
    def _load_data(self):
        cfg = self.cfg
        if self.dataset is None:
            if not cfg.data:
                raise ConfigError(
                    "no data: pass --data PATH (a FER2013 CSV, a class-folder tree, an AffectNet-style "
                    "folder or IDX files), or make one with `ferkit data synth`"
                )
            self.dataset = cfg.load_dataset(quiet=cfg.quiet or not self.dist.main)
        elif cfg.mapping:
            from ferkit.data.relabel import relabel

            self.dataset = relabel(self.dataset, cfg.mapping)
        ds = self.dataset
        if "train" not in ds.splits or len(ds.splits["train"]) == 0:
            raise ConfigError(f"{ds.root}: the dataset has no training samples")
        if cfg.task == "multitask" and not ds.has_va:
            raise ConfigError(
                f"{ds.root}: --task multitask needs valence/arousal annotations (AffectNet-style data); "
                "this dataset has none: use --task classify"
            )
        if not ds.splits.get("val") or len(ds.splits["val"]) == 0:
            raise ConfigError(f"{ds.root}: the dataset has no validation split; give it one or set --val-fraction")

    def _build_model(self):
        from ferkit.data.spec import InputSpec
        from ferkit.models import create_model, get_card
        from ferkit.models.registry import builder_accepts

        cfg, ds = self.cfg, self.dataset
        card = get_card(cfg.model)
        self.model_name = card.name
        in_ch = cfg.in_channels or (3 if cfg.pretrained else ds.channels)
        kwargs = dict(cfg.model_kwargs)
        if cfg.pretrained and not builder_accepts(card.name, "weights_path"):  # see check_pretrained_weights
            kwargs["pretrained"] = True
        if cfg.head:
            kwargs["head"] = cfg.head
        size = int(cfg.image_size) if cfg.image_size else None
        hw = (size, size) if size else tuple(ds.image_size)
        if builder_accepts(card.name, "input_size") and "input_size" not in kwargs:
            kwargs["input_size"] = list(hw)  # size-bound models (linear) are built for this run's input
        self.model_kwargs = kwargs
        build_kwargs = dict(kwargs)
        if self._resume_ckpt is not None:  # the checkpoint's weights replace them: no download, no weights file
            build_kwargs.pop("pretrained", None)
            build_kwargs.pop("weights_path", None)
        model = create_model(card.name, num_classes=ds.num_classes, in_channels=in_ch, task=cfg.task, **build_kwargs)
        self.in_channels = in_ch

        # normalisation: pretrained weights want their own statistics; otherwise the training set's
        mode = cfg.normalize
        if mode == "auto":
            mode = "pretrained" if (cfg.pretrained and card.mean) else "dataset"
        if mode == "pretrained":
            stats = card.normalization(in_ch)
            if stats is None:
                raise ConfigError(
                    f"--normalize pretrained: model {card.name} has no pretrained statistics; use --normalize dataset"
                )
            mean, std = list(stats[0]), list(stats[1])
        elif mode == "dataset":
            mean, std = ds.channel_stats("train")
            mean, std = _fit_channels(mean, in_ch), _fit_channels(std, in_ch)
        else:
            mean, std = [0.0] * in_ch, [1.0] * in_ch
        self.spec = InputSpec(size=hw, channels=in_ch, mean=mean, std=std, permute_seed=cfg.permute_seed)

        if cfg.init:
            self._init_from(model, cfg.init)
        from ferkit.models.freeze import freeze

        if cfg.freeze or cfg.freeze_upto:
            freeze(model, names=list(cfg.freeze) or None, upto=cfg.freeze_upto)
        # channels-last: oneDNN (CPU) and cuDNN both run these convolutions faster in NHWC
        self.model = model.to(self.device).to(memory_format=torch.channels_last)

    def _init_from(self, model: nn.Module, path: str) -> None:
        ckpt = load_checkpoint(path)
        own = model.state_dict()
        take = {k: v for k, v in ckpt["state_dict"].items() if k in own and own[k].shape == v.shape}
        if not take:
            raise CheckpointError(
                f"{path}: no weight fits model {self.model_name} (it holds a "
                f"{ckpt['model']['name']}); use --model {ckpt['model']['name']}"
            )
        skipped = [k for k in own if k not in take]
        own.update(take)
        model.load_state_dict(own)
        self._log(
            f"init from {path}: {len(take)} tensors loaded, {len(skipped)} left as initialised"
            + (f" (e.g. {skipped[0]})" if skipped else "")
        )

    # ------------------------------------------------------------------ logging
    def _log(self, msg: str) -> None:
        if self.dist.main and not self.cfg.quiet:
            print(msg, flush=True)

    def _open_loggers(self):
        if not self.dist.main:
            return
        from ferkit.tracking import TensorBoardLogger, WandbLogger

        if self.cfg.tensorboard:
            self.loggers.append(TensorBoardLogger(self.run_dir / "tensorboard"))
        if self.cfg.wandb:
            self.loggers.append(WandbLogger(self.cfg, self.run_dir))

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainResult:
        """Train (or resume) the run; writes the run folder and returns its :class:`TrainResult`."""
        try:
            return self._fit()
        finally:
            for lg in self.loggers:
                lg.close()
            self.dist.close()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        mode = monitor_mode(cfg.monitor)
        check_pretrained_weights(cfg)
        self.dist.init(self.device)
        refuse_existing_run(cfg, self.run_dir)  # before anything slow, in every process before any writes
        check_output(self.run_dir, "--out", folder=True)  # a read-only or misplaced folder: one line, now
        self.dist.barrier()
        if self.dist.main:
            prepare_run_dir(cfg, self.run_dir, self._resume_ckpt)
        self.dist.barrier()
        self.epochs = 1 if cfg.fast else cfg.epochs
        self._load_data()
        seed_everything(cfg.seed)  # same seed -> same initial weights
        self._build_model()
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model, self.epochs)
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(self.amp_dtype is torch.float16))
        self.criterion = TaskLoss(cfg.task, self._class_weights(), cfg.label_smoothing, cfg.va_weight).to(self.device)
        data = split_tensors(self.dataset, cfg.task, self.device)
        self.micro_bs, self.accumulate = cfg.batch_size, cfg.accumulate
        from ferkit.data.transforms import make_augment

        self.augment = make_augment(cfg.augment)
        start_epoch, stop = 1, StopState()
        if self._resume_ckpt is not None:
            start_epoch, stop = self._restore(self._resume_ckpt)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self._open_loggers()
        self._announce()
        t_start = time.time()
        for epoch in range(start_epoch, self.epochs + 1):
            if stop.stopped:  # a resumed run that had already stopped early only finishes
                break
            self._apply_unfreeze(epoch)
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self._train_epoch(epoch, data["train"]))
            validated = epoch % cfg.validate_every == 0 or epoch == self.epochs
            if validated:
                row.update(self._evaluate(data["val"], "val", epoch).metrics)
            step_scheduler(self.scheduler, row, cfg.monitor, validated)
            improved = validated and stop.update(row[cfg.monitor], epoch, mode, cfg.patience)
            row["time_s"] = round(time.time() - t_start, 2)
            self.history.append(row)
            if self.dist.main:
                self._save_epoch(epoch, row, stop)
            self.dist.barrier()
            if self.dist.main and not cfg.quiet:
                print(epoch_line(row, self.epochs, improved), flush=True)
            for cb in self.callbacks:
                cb(self, epoch, row)
            if stop.stopped:
                self._log(
                    f"early stop: {cfg.monitor} did not improve for {stop.bad_epochs} validations "
                    f"(best {stop.best:.4f} at epoch {stop.best_epoch})"
                )
        return self._finish(data, stop, time.time() - t_start)

    def _announce(self) -> None:
        cfg, ds = self.cfg, self.dataset
        n_params = sum(p.numel() for p in self.model.parameters())
        self._log(
            f"ferkit train: {self.model_name} ({n_params / 1e6:.2f}M params, {cfg.task}) on {ds.name} "
            f"[{ds.format}; train {len(ds.splits['train'])}, val {len(ds.splits['val'])}"
            f"; {ds.num_classes} classes; input {self.spec.size[0]}x{self.spec.size[1]}x{self.in_channels}]"
            f" device {self.device}{f' x{self.dist.world} processes' if self.dist.enabled else ''}"
            f" -> {self.run_dir}"
        )
        if self.dist.main and not cfg.class_weights:  # source 000's balanced-class check (stderr, even --quiet)
            from ferkit.data import imbalance_warning

            w = imbalance_warning(ds.classes, ds.histogram("train"))
            if w:
                print(f"ferkit train: warning: {w}", file=sys.stderr, flush=True)

    def _class_weights(self):
        if not self.cfg.class_weights:
            return None
        return torch.tensor(self.dataset.class_weights("train"), dtype=torch.float32)

    def _inputs(self, t: dict, idx: torch.Tensor, gen: torch.Generator | None):
        from ferkit.data.transforms import to_input

        if isinstance(t["images"], np.ndarray):  # memory-mapped cache
            x = torch.from_numpy(t["images"][idx.numpy()])
        else:
            if t["images"].device != idx.device:
                idx = idx.to(t["images"].device)
            x = t["images"].index_select(0, idx)
        idx = idx.to(t["labels"].device)
        aug = self.augment if (gen is not None and self.cfg.augment != "none") else None
        x = to_input(x.to(self.device, non_blocking=True), self.spec, augment=aug, generator=gen, channels_last=True)
        y = t["labels"].index_select(0, idx).to(self.device)
        va = (
            (t["valence"].index_select(0, idx).to(self.device), t["arousal"].index_select(0, idx).to(self.device))
            if "valence" in t
            else (None, None)
        )
        return x, y, va

    def _train_epoch(self, epoch: int, t: dict) -> dict:
        from ferkit.models.freeze import apply_frozen_bn_eval

        cfg = self.cfg
        gen = seed_epoch(cfg.seed, epoch, self.dist.rank)
        order = epoch_order(len(t["labels"]), cfg.seed, epoch, self.dist)
        step_size = self.micro_bs * self.accumulate
        steps = [order[i : i + step_size] for i in range(0, len(order), step_size)]
        if len(steps) > 1 and len(steps[-1]) < 2:  # BatchNorm cannot train on one sample
            steps = steps[:-1]
        if cfg.fast:
            steps = steps[:FAST_BATCHES]
        self.model.train()
        apply_frozen_bn_eval(unwrap(self.model))
        loss_sum = correct = seen = 0.0
        t0 = time.time()
        bar = progress(
            total=sum(len(s) for s in steps),
            desc=f"epoch {epoch}/{self.epochs}",
            unit="img",
            quiet=cfg.quiet or not self.dist.main,
            leave=False,
        )
        for step_idx in steps:
            loss_v, corr = self._step(t, step_idx, gen, epoch)
            loss_sum += loss_v * len(step_idx)
            correct += corr
            seen += len(step_idx)
            bar.update(len(step_idx))
            bar.set_postfix(
                loss=f"{loss_sum / seen:.4f}",
                acc=f"{correct / seen:.3f}",
                img_s=f"{seen / max(time.time() - t0, 1e-9):.0f}",
                refresh=False,
            )
        bar.close()
        elapsed = time.time() - t0
        loss_sum, correct, seen = self.dist.all_sum([loss_sum, correct, seen], self.device)
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "train_samples": int(seen),
            "train_img_s": round(seen / max(elapsed, 1e-9), 1),
        }

    def _step(self, t: dict, idx: torch.Tensor, gen, epoch: int) -> tuple[float, float]:
        """One optimiser step over ``idx`` in micro-batches; a CUDA OOM halves the micro-batch and retries."""
        while True:
            try:
                return self._step_once(t, idx, gen, epoch)
            except torch.OutOfMemoryError as e:
                self.optimizer.zero_grad(set_to_none=True)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.micro_bs <= 1:
                    raise TrainingError(
                        "out of memory even with a batch of 1: use a smaller --image-size or model"
                    ) from e
                self.micro_bs //= 2
                self.accumulate *= 2
                self._log(
                    f"out of memory: batch halved to {self.micro_bs}, accumulating {self.accumulate} "
                    f"micro-batches to keep the effective batch {self.micro_bs * self.accumulate}"
                )

    def _step_once(self, t: dict, idx: torch.Tensor, gen, epoch: int) -> tuple[float, float]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        chunks = list(idx.split(self.micro_bs))
        n = len(idx)
        total_loss = correct = 0.0
        for i, chunk in enumerate(chunks):
            x, y, (v, a) = self._inputs(t, chunk, gen)
            sync = (i == len(chunks) - 1) or not self.dist.enabled
            ctx = self.model.no_sync() if (not sync and hasattr(self.model, "no_sync")) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(
                    self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
                ):
                    out = self.model(x)
                    loss, _ = self.criterion(out, y, v, a)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss.item()} at epoch {epoch}: training stopped; the last good checkpoint "
                        f"{self.run_dir / 'last.pt'} is intact (lower --lr, or add --grad-clip 1.0)"
                    )
                if loss.requires_grad:  # every parameter may be frozen (e.g. before an unfreeze epoch)
                    self.scaler.scale(loss * (len(chunk) / n)).backward()
            logits = out["logits"] if isinstance(out, dict) else out
            total_loss += loss.item() * len(chunk)
            correct += (logits.argmax(1) == y).sum().item()
        if cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total_loss / n, correct

    @torch.no_grad()
    def _evaluate(self, t: dict, prefix: str, epoch: int = 0, model=None, collect: bool = False) -> SplitEvaluation:
        """Loss/accuracy (+ V/A RMSE and CCC) over a split; sharded across processes and summed.

        ``collect=True`` runs the whole split in this process and keeps every prediction (the test outputs).
        """
        model = model or self.model
        model.eval()
        idx = torch.arange(len(t["labels"]))
        if self.dist.enabled and not collect:
            idx = idx[self.dist.rank :: self.dist.world]
        batches = list(idx.split(max(self.micro_bs, 1) * 2))
        if self.cfg.fast:
            batches = batches[:FAST_BATCHES]
        k = self.dataset.num_classes
        multitask = self.cfg.task == "multitask"
        sums = {
            "loss": np.zeros(1),
            "cm": np.zeros((k, k)),
            "valence": np.zeros(len(M.REGRESSION_SUMS)),
            "arousal": np.zeros(len(M.REGRESSION_SUMS)),
        }
        probs_all, va_all = [], []
        for b in batches:
            x, y, (v, a) = self._inputs(t, b, None)
            with torch.autocast(
                self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
            ):
                out = model(x)
                loss, _ = self.criterion(out, y, v, a)
            logits = (out["logits"] if isinstance(out, dict) else out).float()
            pred = logits.argmax(1)
            sums["loss"] += loss.item() * len(b)
            sums["cm"] += M.confusion_matrix(y.cpu().numpy(), pred.cpu().numpy(), k)
            if multitask:
                for head, target in (("valence", v), ("arousal", a)):
                    sums[head] += M.regression_sums(target.cpu().numpy(), out[head].float().cpu().numpy())
            if collect:
                probs_all.append(torch.softmax(logits, 1).cpu())
                if multitask:
                    va_all.append(torch.stack([out["valence"], out["arousal"]], 1).float().cpu())
        if not collect:
            sums = self._all_sum(sums)
        cm = sums["cm"].astype(np.int64)
        n = max(int(cm.sum()), 1)
        recall = M.per_class_accuracy(cm)
        res = {
            f"{prefix}_loss": float(sums["loss"][0]) / n,
            f"{prefix}_acc": float(np.trace(cm) / n),
            f"{prefix}_balanced_acc": float(np.nanmean(recall)) if np.isfinite(recall).any() else 0.0,
        }
        if multitask:
            for head in ("valence", "arousal"):
                s = dict(zip(M.REGRESSION_SUMS, sums[head].tolist(), strict=True))
                res[f"{prefix}_{head}_rmse"] = M.rmse_from_sums(s["n"], s["sse"])
                res[f"{prefix}_{head}_ccc"] = M.ccc_from_sums(**s)
        if not collect:
            return SplitEvaluation(res, cm)
        return SplitEvaluation(
            res,
            cm,
            n=sum(len(b) for b in batches),
            probs=torch.cat(probs_all).numpy() if probs_all else np.zeros((0, k)),
            va=torch.cat(va_all).numpy() if va_all else None,
        )

    def _all_sum(self, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Sum named arrays across processes in one all-reduce; each comes back in its own shape."""
        flat = self.dist.all_sum(np.concatenate([p.ravel() for p in parts.values()]).tolist(), self.device)
        ends = np.cumsum([p.size for p in parts.values()])
        return {
            name: np.asarray(chunk).reshape(p.shape)
            for (name, p), chunk in zip(parts.items(), np.split(np.asarray(flat), ends[:-1]), strict=True)
        }

    # ------------------------------------------------------------------ freezing schedule
    def _apply_unfreeze(self, epoch: int) -> None:
        from ferkit.models.freeze import unfreeze

        for item in self.cfg.unfreeze:
            ep, _, what = str(item).partition(":")
            if int(ep) == epoch:
                names = None if what == "all" else [w for w in what.split("+") if w]
                unfreeze(unwrap(self.model), names)
                self._log(f"epoch {epoch}: unfroze {what}")

    # ------------------------------------------------------------------ checkpoints
    def _meta(self, row: dict) -> dict:
        return dict(
            model_name=self.model_name,
            model_kwargs=self.model_kwargs,
            num_classes=self.dataset.num_classes,
            in_channels=self.in_channels,
            task=self.cfg.task,
            classes=list(self.dataset.classes),
            input_spec=self.spec.to_dict(),
            config=self.cfg.to_dict(),
            metrics={k: v for k, v in row.items()}
            | {"dataset": self.dataset.name, "dataset_format": self.dataset.format},
        )

    def _save_epoch(self, epoch: int, row: dict, stop: StopState) -> None:
        state = training_state(
            epoch,
            stop,
            self.model,
            self.optimizer,
            self.scheduler,
            self.scaler,
            self.micro_bs,
            self.accumulate,
            self.history,
        )
        commit_epoch(self.run_dir, make_checkpoint(self.model, **self._meta(row), train_state=state))
        for lg in self.loggers:
            lg.log(row, epoch)

    def _restore(self, ckpt: dict) -> tuple[int, StopState]:
        path = self.cfg.resume
        check_resumable(
            ckpt,
            path,
            self.model_name,
            self.cfg.task,
            self.dataset.num_classes,
            self.in_channels,
            list(self.dataset.classes),
        )
        st, stop = restore_state(ckpt, path, self.model, self.optimizer, self.scheduler, self.scaler)
        self.micro_bs, self.accumulate = st.get("micro_bs", self.micro_bs), st.get("accumulate", self.accumulate)
        self.history = list(st.get("history", []))
        self._log(f"resumed from {path} after epoch {st['epoch']}")
        return st["epoch"] + 1, stop

    # ------------------------------------------------------------------ the end
    def _finish(self, data: dict, stop: StopState, train_time: float) -> TrainResult:
        from ferkit.checkpoint import build_model

        best_path, last_path = self.run_dir / "best.pt", self.run_dir / "last.pt"
        result_metrics: dict = {}
        if self.dist.main:
            best_ckpt = load_checkpoint(best_path)
            result_metrics = dict(best_ckpt["metrics"])
            if "test" in data:
                model = build_model(best_ckpt, best_path).to(self.device)
                test = self._evaluate(data["test"], "test", model=model, collect=True)
                result_metrics.update(test.metrics)
                result_metrics["test_confusion_matrix"] = test.confusion.tolist()
                best_ckpt["metrics"] = result_metrics
                before_write(best_path)
                save_checkpoint(best_ckpt, best_path)
                write_test_outputs(
                    self.run_dir,
                    self.dataset.splits["test"],
                    list(self.dataset.classes),
                    test.confusion,
                    test.probs,
                    test.va,
                    test.n,
                    self.model_name,
                )
            write_training_curves(self.run_dir, self.history)
            n_params = sum(p.numel() for p in self.model.parameters())
            write_results_json(
                self.run_dir,
                {
                    "model": self.model_name,
                    "task": self.cfg.task,
                    "params": n_params,
                    "dataset": {
                        "path": str(self.dataset.root),
                        "format": self.dataset.format,
                        "classes": self.dataset.classes,
                        "sizes": {k: len(v) for k, v in self.dataset.splits.items()},
                    },
                    "best_epoch": stop.best_epoch,
                    "monitor": self.cfg.monitor,
                    "stopped_early": stop.stopped,
                    "train_time_s": round(train_time, 2),
                    "world_size": self.dist.world,
                    "metrics": result_metrics,
                    "history": self.history,
                    "config": self.cfg.to_dict(),
                    "checkpoints": {"best": str(best_path), "last": str(last_path)},
                    "input": self.spec.to_dict(),
                },
            )
            for lg in self.loggers:
                lg.summary(result_metrics, self.run_dir)
            if "test_acc" in result_metrics:
                self._log(
                    f"test: acc {result_metrics['test_acc']:.4f}  loss {result_metrics['test_loss']:.4f} "
                    f"(best epoch {stop.best_epoch})"
                )
            self._log(
                f"outputs: {self.run_dir}/ (best.pt, last.pt, metrics.csv, training_curves.png, results.json"
                + (", confusion_matrix.png, predictions.csv" if "test" in data else "")
                + ")"
            )
        self.dist.barrier()
        return TrainResult(self.run_dir, best_path, last_path, stop.best_epoch, result_metrics, self.history)


def check_pretrained_weights(cfg: TrainConfig) -> None:
    """Refuse a run that asks for pretrained weights which only a file the user brings can give.

    A model whose builder takes ``weights_path`` (vggface: VGG-Face weights are not downloadable) is
    "pretrained" exactly when that file is given; without it the run would silently start from random
    weights, which is never what a recipe built on those weights means.
    """
    from ferkit.models import get_card
    from ferkit.models.registry import builder_accepts

    card = get_card(cfg.model)
    if cfg.pretrained and builder_accepts(card.name, "weights_path") and not cfg.model_kwargs.get("weights_path"):
        raise ConfigError(
            f"{cfg.recipe or card.name}: {card.name} starts from its pretrained weights file: pass "
            "--model-arg weights_path=vgg_face.pth (or --no-pretrained to train from random weights)"
        )


def _fit_channels(values: list[float], channels: int) -> list[float]:
    if len(values) == channels:
        return [float(v) for v in values]
    if channels == 1:
        return [float(np.mean(values))]
    return [float(values[0])] * channels
