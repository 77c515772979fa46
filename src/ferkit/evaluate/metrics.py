"""Metrics as pure functions of numpy arrays (no torch, no state).

The trainer uses the streaming forms (sums that DDP can all-reduce); reports use the array forms.
"""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else float("nan")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows = true class, columns = predicted class (counts)."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per class; NaN for a class with no samples."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    d = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d))) if d.size else float("nan")


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation coefficient; 0 when both are constant and differ, 1 when identical."""
    x = np.asarray(y_true, dtype=np.float64)
    y = np.asarray(y_pred, dtype=np.float64)
    return ccc_from_sums(*regression_sums(x, y))


def regression_sums(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float, float, float]:
    """(n, Σx, Σy, Σx², Σy², Σxy, Σ(x-y)²): enough to get RMSE and CCC after summing across processes."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (float(x.size), x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), ((x - y) ** 2).sum())


def ccc_from_sums(n, sx, sy, sxx, syy, sxy, sse=None) -> float:
    if n <= 0:
        return float("nan")
    mx, my = sx / n, sy / n
    vx = max(sxx / n - mx * mx, 0.0)
    vy = max(syy / n - my * my, 0.0)
    cov = sxy / n - mx * my
    denom = vx + vy + (mx - my) ** 2
    if denom <= 1e-12:
        return 1.0  # identical constants: perfect agreement
    return float(2 * cov / denom)


def rmse_from_sums(n, sse) -> float:
    return float(np.sqrt(sse / n)) if n > 0 else float("nan")
