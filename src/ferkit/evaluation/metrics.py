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


# the names of what regression_sums returns, in order: ccc_from_sums(**dict(zip(REGRESSION_SUMS, sums)))
REGRESSION_SUMS = ("n", "sx", "sy", "sxx", "syy", "sxy", "sse")


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


# ---------------------------------------------------------------------------------------------------------------
# Classification: every metric of the sources as a pure function of labels and/or probabilities.
#
# Conventions (the same everywhere, no warnings raised):
# * ``num_classes`` fixes the label space 0..k-1; a class absent from both truth and prediction has
#   support 0 and precision/recall/F1 0 (scikit-learn's ``zero_division=0``).
# * Macro averages run over the classes present in the truth or in the predictions (scikit-learn's default
#   when no ``labels`` are given), so a class nobody used does not drag the average down.
# * A quantity that is mathematically undefined (Cohen's kappa or Krippendorff's alpha when both raters use
#   one single class, Pearson's r when one side is constant, anything over zero samples) is ``nan``;
#   reports write it as ``null`` / "n/a".


def _labels(y) -> np.ndarray:
    return np.asarray(y, dtype=np.int64).ravel()


def _k(num_classes: int | None, *arrays) -> int:
    if num_classes is not None:
        return int(num_classes)
    return int(max((int(a.max()) + 1 for a in arrays if a.size), default=0))


def precision_recall_f1(y_true, y_pred, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall``, ``f1`` (float arrays, 0 where undefined) and ``support`` (ints)."""
    t, p = _labels(y_true), _labels(y_pred)
    k = _k(num_classes, t, p)
    cm = confusion_matrix(t, p, k)
    tp = np.diag(cm).astype(np.float64)
    pred_n = cm.sum(axis=0).astype(np.float64)
    true_n = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, pred_n, out=np.zeros(k), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros(k), where=true_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": true_n.astype(np.int64),
        "predicted": pred_n.astype(np.int64),
    }


def f1_score(y_true, y_pred, num_classes: int | None = None, average: str = "macro") -> float:
    """``macro`` (unweighted mean over classes present in truth or prediction) or ``weighted`` (by support)."""
    r = precision_recall_f1(y_true, y_pred, num_classes)
    if average == "macro":
        used = (r["support"] + r["predicted"]) > 0
        return float(r["f1"][used].mean()) if used.any() else float("nan")
    if average == "weighted":
        s = r["support"].sum()
        return float((r["f1"] * r["support"]).sum() / s) if s else float("nan")
    raise ValueError(f"average={average!r}: use macro or weighted")


def balanced_accuracy(y_true, y_pred, num_classes: int | None = None) -> float:
    """Mean recall over the classes present in the truth (scikit-learn's ``balanced_accuracy_score``)."""
    r = precision_recall_f1(y_true, y_pred, num_classes)
    present = r["support"] > 0
    return float(r["recall"][present].mean()) if present.any() else float("nan")


def cohen_kappa(y_true, y_pred, num_classes: int | None = None) -> float:
    """Cohen's kappa between truth and prediction; ``nan`` when chance agreement is 1 (one class only)."""
    t, p = _labels(y_true), _labels(y_pred)
    if not t.size:
        return float("nan")
    cm = confusion_matrix(t, p, _k(num_classes, t, p)).astype(np.float64)
    n = cm.sum()
    po = np.trace(cm) / n
    pe = float((cm.sum(axis=0) * cm.sum(axis=1)).sum() / (n * n))
    if pe >= 1.0 - 1e-15:
        return float("nan")
    return float((po - pe) / (1.0 - pe))


def krippendorff_alpha_nominal(y_true, y_pred, num_classes: int | None = None) -> float:
    """Krippendorff's alpha, nominal metric, for two coders (truth, prediction) who coded every unit.

    From the coincidence matrix ``o = C + C^T`` (``C`` the confusion matrix, ``n = 2N`` pairable values,
    ``n_c`` its margins): ``alpha = 1 - (n - 1) * (n - trace(o)) / (n^2 - sum n_c^2)``. ``nan`` when every value
    is the same class (no variation: undefined) or there are no units.
    """
    t, p = _labels(y_true), _labels(y_pred)
    if not t.size:
        return float("nan")
    cm = confusion_matrix(t, p, _k(num_classes, t, p)).astype(np.float64)
    o = cm + cm.T
    n = o.sum()
    nc = o.sum(axis=1)
    expected = n * n - (nc * nc).sum()
    if expected <= 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (n - np.trace(o)) / expected)


def top_k_accuracy(y_true, probs, k: int = 2) -> float:
    """Share of samples whose true class is among the ``k`` highest probabilities (ties: lower index first)."""
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    if not t.size:
        return float("nan")
    if k >= P.shape[1]:
        return 1.0
    # rank of the true class = number of classes with a strictly higher score
    true_score = P[np.arange(t.size), t]
    rank = (P > true_score[:, None]).sum(axis=1)
    return float((rank < k).mean())


def log_loss(y_true, probs, eps: float | None = None) -> float:
    """Mean negative log-probability of the true class; probabilities clipped to ``[eps, 1 - eps]``
    (``eps`` = float64 machine epsilon, as scikit-learn) and rows renormalised."""
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    if not t.size:
        return float("nan")
    eps = np.finfo(np.float64).eps if eps is None else eps
    P = np.clip(P, eps, 1 - eps)
    P = P / P.sum(axis=1, keepdims=True)
    return float(-np.log(P[np.arange(t.size), t]).mean())


def calibration_bins(y_true, probs, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Confidence (max probability) histogram in ``n_bins`` equal bins ``(lo, hi]`` of [0, 1]:
    ``edges``, per-bin ``count``, ``accuracy`` and mean ``confidence`` (``nan`` for empty bins)."""
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    conf = P.max(axis=1) if t.size else np.zeros(0)
    correct = (P.argmax(axis=1) == t).astype(np.float64) if t.size else np.zeros(0)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    nz = count > 0
    acc = np.full(n_bins, np.nan)
    mc = np.full(n_bins, np.nan)
    acc[nz] = acc_sum[nz] / count[nz]
    mc[nz] = conf_sum[nz] / count[nz]
    return {"edges": np.linspace(0.0, 1.0, n_bins + 1), "count": count, "accuracy": acc, "confidence": mc}


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): ``sum_b |B_b| / n * |acc(B_b) - conf(B_b)|`` over ``n_bins`` equal-width bins."""
    b = calibration_bins(y_true, probs, n_bins)
    n = b["count"].sum()
    if not n:
        return float("nan")
    nz = b["count"] > 0
    return float((b["count"][nz] / n * np.abs(b["accuracy"][nz] - b["confidence"][nz])).sum())


def _binary_curve(y_bin, scores):
    """(false positives, true positives, thresholds) at each distinct score, highest score first."""
    y = np.asarray(y_bin, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last]
    fps = 1 + last - tps
    return fps, tps, s[last]


def roc_curve(y_bin, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of a binary problem (scikit-learn's ``roc_curve`` without dropping points);
    ``nan`` rates when a side has no samples."""
    fps, tps, thr = _binary_curve(y_bin, scores)
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    thr = np.r_[np.inf, thr]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thr


def roc_auc(y_bin, scores) -> float:
    """Area under the ROC curve (trapezoids); ``nan`` without both positives and negatives."""
    fpr, tpr, _ = roc_curve(y_bin, scores)
    if not (np.isfinite(fpr).all() and np.isfinite(tpr).all()):
        return float("nan")
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def precision_recall_curve(y_bin, scores) -> tuple[np.ndarray, np.ndarray]:
    """``(precision, recall)`` from the highest threshold down, starting at recall 0 / precision 1."""
    fps, tps, _ = _binary_curve(y_bin, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps.size and tps[-1] > 0 else np.full(tps.shape, np.nan)
    return np.r_[1.0, precision], np.r_[0.0, recall]


def average_precision(y_bin, scores) -> float:
    """``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's ``average_precision_score``); ``nan`` without positives."""
    precision, recall = precision_recall_curve(y_bin, scores)
    if not np.isfinite(recall).all():
        return float("nan")
    return float(np.sum(np.diff(recall) * precision[1:]))


def one_vs_rest(y_true, probs) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest ``roc_auc`` and ``average_precision`` (``nan`` for a class with no positive or
    no negative sample)."""
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    k = P.shape[1]
    auc = np.array([roc_auc(t == c, P[:, c]) if t.size else np.nan for c in range(k)])
    ap = np.array([average_precision(t == c, P[:, c]) if t.size else np.nan for c in range(k)])
    return {"roc_auc": auc, "average_precision": ap}


def confused_pairs(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    """The most frequent mistakes ``true -> predicted``, largest count first, with the share of the true class."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    pairs = [(int(cm[i, j]), i, j) for i in range(cm.shape[0]) for j in range(cm.shape[1]) if i != j and cm[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [
        {"true": classes[i], "pred": classes[j], "count": n, "rate": float(n / support[i])} for n, i, j in pairs[:top]
    ]


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def classification_metrics(y_true, probs, classes: list[str], n_bins: int = 15, top_pairs: int = 10) -> dict:
    """Everything ``ferkit evaluate`` reports for the expression labels, from labels and probabilities.

    The prediction is ``argmax(probs)``. Returns plain Python numbers (``nan`` where undefined) and lists.
    """
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    k = len(classes)
    if P.ndim != 2 or P.shape != (t.size, k):
        raise ValueError(f"probs shape {P.shape} does not fit {t.size} labels and {k} classes")
    pred = P.argmax(axis=1) if t.size else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(t, pred, k)
    prf = precision_recall_f1(t, pred, k)
    ovr = one_vs_rest(t, P)
    per_class = {
        c: {
            "precision": float(prf["precision"][i]),
            "recall": float(prf["recall"][i]),
            "f1": float(prf["f1"][i]),
            "support": int(prf["support"][i]),
            "predicted": int(prf["predicted"][i]),
            "roc_auc": float(ovr["roc_auc"][i]),
            "average_precision": float(ovr["average_precision"][i]),
        }
        for i, c in enumerate(classes)
    }
    used = (prf["support"] + prf["predicted"]) > 0
    return {
        "n": int(t.size),
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": balanced_accuracy(t, pred, k),
        "macro_f1": f1_score(t, pred, k, "macro"),
        "weighted_f1": f1_score(t, pred, k, "weighted"),
        "macro_precision": float(prf["precision"][used].mean()) if used.any() else float("nan"),
        "macro_recall": float(prf["recall"][used].mean()) if used.any() else float("nan"),
        "cohen_kappa": cohen_kappa(t, pred, k),
        "krippendorff_alpha": krippendorff_alpha_nominal(t, pred, k),
        "top2_accuracy": top_k_accuracy(t, P, 2),
        "log_loss": log_loss(t, P),
        "ece": expected_calibration_error(t, P, n_bins),
        "ece_bins": int(n_bins),
        "roc_auc_macro": _nanmean(ovr["roc_auc"]),
        "average_precision_macro": _nanmean(ovr["average_precision"]),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "confused_pairs": confused_pairs(cm, list(classes), top_pairs),
    }


# ---------------------------------------------------------------------------------------------------------------
# Regression (valence / arousal)


def _xy(y_true, y_pred):
    return np.asarray(y_true, dtype=np.float64).ravel(), np.asarray(y_pred, dtype=np.float64).ravel()


def mae(y_true, y_pred) -> float:
    x, y = _xy(y_true, y_pred)
    return float(np.abs(y - x).mean()) if x.size else float("nan")


def r2(y_true, y_pred) -> float:
    """Coefficient of determination; with constant truth 1.0 for a perfect prediction, else 0.0 (scikit-learn's
    ``force_finite`` convention)."""
    x, y = _xy(y_true, y_pred)
    if not x.size:
        return float("nan")
    ss_res = float(((x - y) ** 2).sum())
    ss_tot = float(((x - x.mean()) ** 2).sum())
    if np.ptp(x) == 0 or ss_tot <= 0:  # constant truth (ptp: the mean of a constant is not exact in floats)
        return 1.0 if ss_res <= 0 else 0.0
    return 1.0 - ss_res / ss_tot


def pearson_r(y_true, y_pred) -> float:
    """Pearson's correlation; ``nan`` (no warning) when either side is constant or there are < 2 samples."""
    x, y = _xy(y_true, y_pred)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float((dx * dx).sum()), float((dy * dy).sum())
    if sxx <= 0 or syy <= 0:
        return float("nan")
    return float(np.clip((dx * dy).sum() / np.sqrt(sxx * syy), -1.0, 1.0))


def sagr(y_true, y_pred) -> float:
    """Sign agreement: share of samples where ``sign(pred) == sign(true)`` (``np.sign``: 0 is its own sign)."""
    x, y = _xy(y_true, y_pred)
    return float((np.sign(x) == np.sign(y)).mean()) if x.size else float("nan")


def regression_metrics(y_true, y_pred) -> dict:
    """RMSE, MAE, R^2, Pearson r, SAGR and CCC of one continuous target (valence or arousal)."""
    return {
        "rmse": rmse(y_true, y_pred),
        "mae": mae(y_true, y_pred),
        "r2": r2(y_true, y_pred),
        "pearson_r": pearson_r(y_true, y_pred),
        "sagr": sagr(y_true, y_pred),
        "ccc": ccc(y_true, y_pred),
    }


# ---------------------------------------------------------------------------------------------------------------
# Two-class checkpoints ("is it me?", source 000)

POSITIVE_CLASS_NAMES = ("me", "yes", "positive", "true", "1")


def positive_class(classes: list[str]) -> int:
    """Which of two classes is "positive": one named me/yes/positive/true/1, else the second (index 1)."""
    for i, c in enumerate(classes):
        if str(c).lower() in POSITIVE_CLASS_NAMES:
            return i
    return 1


def binary_metrics(y_true, probs, classes: list[str], threshold: float = 0.5, positive: int | None = None) -> dict:
    """Binary verification-style numbers of a 2-class classifier, scoring the positive class's probability.

    ROC AUC, equal error rate (where false-positive and false-negative rates cross, with its threshold), and
    precision / recall / FPR at ``threshold`` (predict positive when p(positive) >= threshold).
    """
    t = _labels(y_true)
    P = np.asarray(probs, dtype=np.float64)
    if len(classes) != 2 or P.ndim != 2 or P.shape[1] != 2:
        raise ValueError("binary_metrics needs exactly two classes")
    pos = positive_class(list(classes)) if positive is None else int(positive)
    y = (t == pos).astype(np.int64)
    s = P[:, pos]
    out = {
        "positive_class": classes[pos],
        "threshold": float(threshold),
        "roc_auc": roc_auc(y, s),
        "average_precision": average_precision(y, s),
    }
    fpr, tpr, thr = roc_curve(y, s)
    if np.isfinite(fpr).all() and np.isfinite(tpr).all():
        fnr = 1.0 - tpr
        k = int(np.argmin(np.abs(fpr - fnr)))
        out["eer"] = float((fpr[k] + fnr[k]) / 2)
        out["eer_threshold"] = float(min(thr[k], 1.0))
    else:
        out["eer"] = out["eer_threshold"] = float("nan")
    pred = s >= threshold
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    fn, tn = int((~pred & (y == 1)).sum()), int((~pred & (y == 0)).sum())
    out.update(
        {
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "false_positive_rate": fp / (fp + tn) if fp + tn else float("nan"),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }
    )
    return out
