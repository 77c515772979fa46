"""Pictures: training curves and confusion matrices (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import io

    from ferkit.utils import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_training_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train and val); V/A CCC too for multitask runs."""
    plt = _plt()
    path = Path(path)
    ep = [r["epoch"] for r in history]

    def series(key):
        xs = [r["epoch"] for r in history if r.get(key) is not None]
        return xs, [float(r[key]) for r in history if r.get(key) is not None]

    panels = [("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_acc", "val_acc"])]
    if any("val_valence_ccc" in r for r in history):
        panels.append(("valence / arousal CCC", ["val_valence_ccc", "val_arousal_ccc"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6))
    for ax, (title, keys) in zip(np.atleast_1d(axes), panels):
        for k in keys:
            xs, ys = series(k)
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ep:
            ax.set_xlim(min(ep) - 0.2, max(ep) + 0.2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion_matrix(cm: np.ndarray, classes: list[str], path: str | Path, normalize: bool = False,
                          title: str | None = None) -> Path:
    """Counts (or row-normalised rates) with the numbers written in each cell."""
    plt = _plt()
    path = Path(path)
    cm = np.asarray(cm, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    im = ax.imshow(shown, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = shown.max() / 2 if shown.size else 0
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8, color="white" if shown[i, j] > thresh else "black")
    ax.set_title(title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix"))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
