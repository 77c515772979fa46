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


def plot_training_curves(history: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Loss and accuracy per epoch (train and val); V/A CCC too for multitask runs; ``title`` above them."""
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
    for ax, (title, keys) in zip(np.atleast_1d(axes), panels, strict=True):
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
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    cm: np.ndarray, classes: list[str], path: str | Path, normalize: bool = False, title: str | None = None
) -> Path:
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


def _class_colors(k: int):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(k)]


def plot_roc_curves(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], path: str | Path, title: str | None = None
) -> Path:
    """One-vs-rest ROC curve per class, AUC in the legend (a class without positives is listed as n/a)."""
    from ferkit.evaluation import metrics as M

    def draw(ax, pos, p, color, label):
        fpr, tpr, _ = M.roc_curve(pos, p)
        ax.plot(fpr, tpr, color=color, lw=1.4, label=label)

    def finish(ax):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")

    return _one_vs_rest(
        y_true,
        probs,
        classes,
        path,
        M.roc_auc,
        "AUC",
        draw,
        finish,
        ("false positive rate", "true positive rate"),
        title or "ROC, one-vs-rest",
        "lower right",
    )


def plot_pr_curves(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], path: str | Path, title: str | None = None
) -> Path:
    """One-vs-rest precision-recall curve per class, average precision in the legend."""
    from ferkit.evaluation import metrics as M

    def draw(ax, pos, p, color, label):
        precision, recall = M.precision_recall_curve(pos, p)
        ax.step(recall, precision, where="post", color=color, lw=1.4, label=label)

    return _one_vs_rest(
        y_true,
        probs,
        classes,
        path,
        M.average_precision,
        "AP",
        draw,
        None,
        ("recall", "precision"),
        title or "precision-recall, one-vs-rest",
        "lower left",
    )


def _one_vs_rest(y_true, probs, classes, path, score, tag: str, draw, finish, labels, title: str, legend: str) -> Path:
    """One curve per class (``draw``), ``tag`` = ``score`` in the legend, ``n/a`` for a class without one."""
    plt = _plt()
    path = Path(path)
    t = np.asarray(y_true)
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    for c, (name, color) in enumerate(zip(classes, _class_colors(len(classes)), strict=True)):
        value = score(t == c, probs[:, c]) if t.size else float("nan")
        if np.isfinite(value):
            draw(ax, t == c, probs[:, c], color, f"{name} ({tag} {value:.3f})")
        else:
            ax.plot([], [], color=color, label=f"{name} ({tag} n/a)")
    if finish is not None:
        finish(ax)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_reliability(
    y_true: np.ndarray, probs: np.ndarray, path: str | Path, n_bins: int = 15, title: str | None = None
) -> Path:
    """Reliability diagram: accuracy vs confidence per bin (bars) against the diagonal, with ECE, and the
    confidence histogram below."""
    from ferkit.evaluation import metrics as M

    plt = _plt()
    path = Path(path)
    b = M.calibration_bins(y_true, probs, n_bins)
    ece = M.expected_calibration_error(y_true, probs, n_bins)
    lo, width = b["edges"][:-1], 1.0 / n_bins
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5.2, 6.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    nz = b["count"] > 0  # empty bins draw nothing
    acc, conf = b["accuracy"][nz], b["confidence"][nz]
    ax.bar(lo[nz], acc, width=width, align="edge", color="#4c72b0", edgecolor="black", lw=0.5, label="accuracy")
    ax.bar(
        lo[nz],
        conf - acc,
        bottom=acc,
        width=width,
        align="edge",
        color="#dd8452",
        alpha=0.45,
        edgecolor="#dd8452",
        lw=0.5,
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.9)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title or f"reliability ({n_bins} bins), ECE {ece:.3f}")
    ax.legend(fontsize=8, loc="upper left")
    axh.bar(lo, b["count"], width=width, align="edge", color="#55a868", edgecolor="black", lw=0.5)
    axh.set_xlabel("confidence (max probability)")
    axh.set_ylabel("images")
    axh.set_xlim(0, 1)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_va_scatter(true_v, pred_v, true_a, pred_a, path: str | Path, stats: dict | None = None) -> Path:
    """Predicted vs true valence and arousal (one panel each), identity line, RMSE / CCC in the titles."""
    plt = _plt()
    path = Path(path)
    stats = stats or {}
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.6))
    for ax, name, t, p in zip(axes, ("valence", "arousal"), (true_v, true_a), (pred_v, pred_a), strict=True):
        t, p = np.asarray(t, dtype=np.float64), np.asarray(p, dtype=np.float64)
        ax.scatter(t, p, s=6, alpha=0.45, color="#4c72b0", edgecolors="none")
        ax.plot([-1, 1], [-1, 1], color="grey", ls="--", lw=0.9)
        ax.axhline(0, color="#bbbbbb", lw=0.6)
        ax.axvline(0, color="#bbbbbb", lw=0.6)
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        s = stats.get(name, {})
        bits = [f"{k} {s[k]:.3f}" for k in ("rmse", "ccc", "sagr") if isinstance(s.get(k), float) and np.isfinite(s[k])]
        ax.set_title(f"{name}" + (f" ({', '.join(bits)})" if bits else ""), fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # a scalable font where Pillow has FreeType
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def plot_image_grid(
    images: np.ndarray, captions: list[str], path: str | Path, title: str | None = None, cols: int = 6, tile: int = 112
) -> Path:
    """uint8 images ``(N, H, W, C)`` in a grid, each scaled to ``tile`` pixels wide with its caption (one or more
    lines) above it, e.g. the most confident mistakes. Drawn with Pillow: a grid of small faces does not need
    matplotlib's layout engine, and is ~50x faster this way."""
    from PIL import Image, ImageDraw

    from ferkit.utils import atomic_write_bytes

    path = Path(path)
    n = len(images)
    cols = max(1, min(cols, n)) if n else 1
    rows = max(1, -(-n // cols))
    font, tfont = _font(11), _font(13)
    lines = max([c.count("\n") + 1 for c in captions] + [1])
    cap_h, pad, head = 14 * lines + 4, 6, (24 if title else 0)
    h_img = tile
    if n:
        h0, w0 = np.asarray(images[0]).shape[:2]
        h_img = max(1, round(tile * h0 / w0))
    W = cols * (tile + pad) + pad
    H = head + rows * (cap_h + h_img + pad) + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 5), title, fill="black", font=tfont)
    for i in range(n):
        img = np.asarray(images[i])
        pil = Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img).convert("RGB")
        # Pillow sets the module-level filter names at import (no stub sees them); Image.Resampling needs >= 9.1
        pil = pil.resize((tile, h_img), Image.NEAREST)  # type: ignore[attr-defined]
        r, c = divmod(i, cols)
        x = pad + c * (tile + pad)
        y = head + pad + r * (cap_h + h_img + pad)
        draw.multiline_text((x, y), captions[i], fill="black", font=font, spacing=2)
        canvas.paste(pil, (x, y + cap_h))
    if not n:
        draw.text((pad, head + pad), "no mistakes", fill="black", font=font)
    import io

    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def plot_compare_bars(
    names: list[str], metrics: dict[str, list[float | None]], path: str | Path, title: str | None = None
) -> Path:
    """Grouped bars: one group per metric, one bar per run (``None``/NaN bars left out)."""
    plt = _plt()
    path = Path(path)
    keys = list(metrics)
    k, r = len(keys), len(names)
    fig, ax = plt.subplots(figsize=(min(13.0, max(6.0, 0.32 * k * max(r, 2) + 2.5)), 4.4))
    width = 0.8 / max(r, 1)
    colors = _class_colors(r)
    for j, name in enumerate(names):
        xs, ys = [], []
        for i, key in enumerate(keys):
            v = metrics[key][j]
            if v is not None and np.isfinite(v):
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(v)
        bars = ax.bar(xs, ys, width=width, color=colors[j], label=name)
        for bar, v in zip(bars, ys, strict=True):
            ax.text(
                bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{v:.2f}", ha="center", va="bottom", fontsize=6.5
            )
    ax.set_xticks(range(k), keys, rotation=20, ha="right")
    vals = [v for vs in metrics.values() for v in vs if v is not None and np.isfinite(v)]
    ax.set_ylim(min([0.0] + vals) - (0.05 if min([0.0] + vals) < 0 else 0.0), max([1.0] + vals) + 0.08)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or "comparison")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path
