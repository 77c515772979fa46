"""Verification metrics as pure functions of embedding distances (smaller distance = more likely the same person).

A pair is *accepted* when its distance is <= the threshold. FAR (false accept rate) is the share of impostor
pairs accepted, TAR (true accept rate) the share of genuine pairs accepted, FRR = 1 - TAR.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def pairwise_distances(A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between rows of ``A`` and rows of ``B`` (default ``A``), float64 (n, m)."""
    A = np.asarray(A, dtype=np.float64)
    B = A if B is None else np.asarray(B, dtype=np.float64)
    if A.size == 0 or B.size == 0:
        return np.zeros((A.shape[0], B.shape[0] if B.ndim == 2 else 0))
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.sqrt(np.clip(d2, 0.0, None))


def pair_distances(M: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(genuine, impostor)`` distances over all unordered pairs of rows of ``M`` (same / different label)."""
    labels = np.asarray(labels)
    n = len(labels)
    if n < 2:
        return np.zeros(0), np.zeros(0)
    D = pairwise_distances(M)
    iu = np.triu_indices(n, k=1)
    same = labels[iu[0]] == labels[iu[1]]
    d = D[iu]
    return d[same], d[~same]


def verification_roc(genuine, impostor) -> dict[str, np.ndarray]:
    """FAR and TAR for every distinct threshold (accept when distance <= threshold), thresholds ascending.

    The first point is below every distance (nothing accepted: FAR = TAR = 0), the last accepts everything.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    i = np.sort(np.asarray(impostor, dtype=np.float64))
    if g.size == 0 or i.size == 0:
        raise ValueError("verification_roc needs at least one genuine and one impostor distance")
    thr = np.unique(np.concatenate([g, i]))
    tar = np.searchsorted(g, thr, side="right") / g.size
    far = np.searchsorted(i, thr, side="right") / i.size
    lo = np.nextafter(thr[0], -np.inf)
    return {
        "thresholds": np.concatenate([[lo], thr]),
        "far": np.concatenate([[0.0], far]),
        "tar": np.concatenate([[0.0], tar]),
    }


def roc_auc_verification(genuine, impostor) -> float:
    """Area under TAR(FAR): the probability a genuine pair is closer than an impostor pair (ties count half)."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    if g.size == 0 or i.size == 0:
        return float("nan")
    # Mann-Whitney U from ranks: exact, O((n+m) log(n+m)).
    allv = np.concatenate([g, i])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(allv.size)
    sv = allv[order]
    # average ranks for ties
    _, first, counts = np.unique(sv, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    r_imp = ranks[g.size :].sum()
    u = r_imp - i.size * (i.size + 1) / 2.0  # pairs where the impostor distance exceeds the genuine one
    return float(u / (g.size * i.size))


def eer(genuine, impostor) -> dict[str, float]:
    """Equal error rate: where FAR and FRR cross (the mean of the two at the threshold where they are closest)."""
    roc = verification_roc(genuine, impostor)
    frr = 1.0 - roc["tar"]
    k = int(np.argmin(np.abs(roc["far"] - frr)))
    return {
        "eer": float((roc["far"][k] + frr[k]) / 2),
        "threshold": float(roc["thresholds"][k]),
        "far": float(roc["far"][k]),
        "frr": float(frr[k]),
    }


def tar_at_far(genuine, impostor, far: float) -> dict[str, float]:
    """The best TAR whose FAR is <= ``far`` and its threshold; ``nan`` TAR when too few impostor pairs to measure
    that FAR (fewer than ``1/far``), so that a tiny test set does not report a meaningless 100%."""
    i = np.asarray(impostor)
    roc = verification_roc(genuine, impostor)
    ok = roc["far"] <= far + 1e-12
    k = int(np.nonzero(ok)[0].max())
    measurable = i.size * far >= 1.0
    return {
        "far_target": float(far),
        "tar": float(roc["tar"][k]) if measurable else float("nan"),
        "far": float(roc["far"][k]),
        "threshold": float(roc["thresholds"][k]),
        "impostor_pairs": int(i.size),
        "measurable": bool(measurable),
    }


def rates_at(genuine, impostor, threshold: float) -> dict[str, float]:
    """TAR, FAR, FRR and accuracy over pairs at one threshold."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    tar = float((g <= threshold).mean()) if g.size else float("nan")
    far = float((i <= threshold).mean()) if i.size else float("nan")
    acc = float(((g <= threshold).sum() + (i > threshold).sum()) / max(1, g.size + i.size))
    return {"threshold": float(threshold), "tar": tar, "far": far, "frr": 1.0 - tar, "pair_accuracy": acc}


def verification_metrics(genuine, impostor, threshold: float | None = None, far_targets=(1e-2, 1e-3)) -> dict:
    """Everything ``ferkit evaluate-verification`` reports, from the two distance arrays."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    out: dict[str, Any] = {
        "genuine_pairs": int(g.size),
        "impostor_pairs": int(i.size),
        "genuine_mean": float(g.mean()) if g.size else float("nan"),
        "impostor_mean": float(i.mean()) if i.size else float("nan"),
        "roc_auc": roc_auc_verification(g, i),
    }
    e = eer(g, i)
    out["eer"] = e["eer"]
    out["eer_threshold"] = e["threshold"]
    out["tar_at_far"] = {f"{f:g}": tar_at_far(g, i, f) for f in far_targets}
    if threshold is not None:
        out["at_threshold"] = rates_at(g, i, threshold)
    return out
