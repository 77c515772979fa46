"""What a run folder shows: metrics.csv, results.json, training_curves.png, the test predictions.

Every write goes through :func:`before_write`, which is where the kill-point tests stop the process.
"""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np

from ferkit.utils import atomic_write_json, atomic_write_text

# Test hook, not a user setting: with FERKIT_TEST_KILL_AT_WRITE=k the process SIGKILLs itself at its k-th
# run-output write, leaving a torn temp file as a kill in the middle of that write would. The kill-point
# tests (tests/test_killpoints.py) use it to prove every epoch's outputs survive a crash as one unit.
KILL_ENV = "FERKIT_TEST_KILL_AT_WRITE"
_writes = 0


def before_write(path: Path) -> None:
    """Count one run-output write; the kill-point test hook fires here (see ``KILL_ENV``)."""
    global _writes
    _writes += 1
    at = os.environ.get(KILL_ENV)
    if at and int(at) == _writes:
        path = Path(path)
        (path.parent / f".{path.name}.killed.tmp").write_bytes(b"torn")
        os.kill(os.getpid(), signal.SIGKILL)


def write_metrics_csv(run_dir: Path, history: list[dict]) -> None:
    """One row per epoch, the union of every row's columns in first-seen order."""
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    lines = [",".join(keys)] + [",".join(_fmt(r.get(k)) for k in keys) for r in history]
    path = Path(run_dir) / "metrics.csv"
    before_write(path)
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_results_json(run_dir: Path, results: dict) -> None:
    path = Path(run_dir) / "results.json"
    before_write(path)
    atomic_write_json(path, results)


def write_training_curves(run_dir: Path, history: list[dict]) -> None:
    """training_curves.png, titled with the run's folder name so two runs' pictures are told apart."""
    from ferkit.evaluation.plots import plot_training_curves

    path = Path(run_dir) / "training_curves.png"
    before_write(path)
    plot_training_curves(history, path, title=Path(run_dir).resolve().name)


def write_test_outputs(run_dir: Path, split, classes: list[str], cm, probs, va, n: int, model_name: str) -> None:
    """confusion_matrix.png and predictions.csv (the evaluator's format) for the first ``n`` test images."""
    from ferkit.evaluation.evaluator import write_predictions
    from ferkit.evaluation.plots import plot_confusion_matrix

    run_dir = Path(run_dir)
    before_write(run_dir / "confusion_matrix.png")
    plot_confusion_matrix(
        cm, classes, run_dir / "confusion_matrix.png", title=f"{model_name} — test ({int(cm.sum())} images)"
    )
    va_true = va_pred = None
    if va is not None:
        va_true = (np.asarray(split.valence)[:n], np.asarray(split.arousal)[:n])
        va_pred = (va[:, 0], va[:, 1])
    before_write(run_dir / "predictions.csv")
    write_predictions(
        run_dir / "predictions.csv", list(split.ids)[:n], classes, np.asarray(split.labels)[:n], probs, va_true, va_pred
    )


def epoch_line(row: dict, epochs: int, improved: bool) -> str:
    """The one line printed per epoch: losses, accuracies, V/A CCC, throughput, ``*best``."""
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}", f"acc {row['train_acc']:.4f}"]
    if "val_loss" in row:
        parts += [f"val_loss {row['val_loss']:.4f}", f"val_acc {row['val_acc']:.4f}"]
    for k in ("val_valence_ccc", "val_arousal_ccc"):
        if k in row:
            parts.append(f"{k[4:]} {row[k]:.3f}")
    parts.append(f"{row['train_img_s']:.0f} img/s")
    return "  ".join(parts) + ("  *best" if improved else "")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)
