"""A common class vocabulary for expression models, and ensembles over it.

Models name the same expressions differently (FER2013: ``fear``, ``disgust``; face-api: ``fearful``,
``disgusted``, ``surprised``) and order them differently. :func:`to_common` maps names onto
:data:`COMMON` (the seven FER2013 classes plus AffectNet's ``contempt``); :func:`ensemble_probs`
averages the probabilities of several models over the common names.
"""

from __future__ import annotations

import numpy as np

from ferkit.errors import ConfigError

COMMON = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

SYNONYMS = {
    "anger": "angry", "angered": "angry", "mad": "angry",
    "disgusted": "disgust", "disgusting": "disgust",
    "fearful": "fear", "afraid": "fear", "scared": "fear", "scary": "fear",
    "happiness": "happy", "joy": "happy", "joyful": "happy", "smile": "happy", "smiling": "happy",
    "sadness": "sad", "unhappy": "sad",
    "surprised": "surprise", "suprise": "surprise",
    "calm": "neutral", "none": "neutral", "neutrality": "neutral",
    "contemptuous": "contempt", "contempted": "contempt",
}  # fmt: skip


def common_name(name: str) -> str | None:
    """The common name of one class name (case and surrounding space ignored), or ``None``."""
    key = str(name).strip().lower().replace("-", "_")
    if key in COMMON:
        return key
    return SYNONYMS.get(key)


def to_common(classes, strict: bool = True) -> list:
    """Map class names onto :data:`COMMON`.

    Unknown names raise a :class:`~ferkit.errors.ConfigError` naming them when ``strict``; otherwise
    they map to ``None``.
    """
    out = [common_name(c) for c in classes]
    if strict:
        bad = [c for c, m in zip(classes, out, strict=True) if m is None]
        if bad:
            raise ConfigError(
                f"class name(s) {', '.join(map(repr, bad))} are not in the common expression vocabulary "
                f"({', '.join(COMMON)}) or its synonyms"
            )
    return out


def ensemble_probs(members, mode: str = "union", weights=None) -> tuple[np.ndarray, list[str]]:
    """Average class probabilities of several models over the common vocabulary.

    ``members``: a list of ``(probs, classes)``; ``probs`` is ``(k,)`` or ``(N, k)`` (numpy or torch),
    each row a distribution over that model's ``classes``. Names are mapped with :func:`to_common`
    (several names of one model that map to one common name are summed).

    ``mode="union"``: the output covers every common class any member has, in :data:`COMMON` order; a
    member without a class contributes 0 to it, so rows still sum to 1. ``mode="intersection"``: only
    the classes every member has; each member is renormalised over them first.
    ``weights``: one non-negative weight per member (default equal).

    Returns ``(probs, classes)``: float64 ``(N, c)`` (or ``(c,)`` if every input was 1-D) and the names.
    """
    if not members:
        raise ConfigError("ensemble_probs: give at least one (probs, classes) pair")
    if mode not in ("union", "intersection"):
        raise ConfigError(f"ensemble_probs: mode {mode!r}: use union or intersection")
    arrays, names, one_d = [], [], True
    for i, (p, classes) in enumerate(members):
        p = p.detach().cpu().numpy() if hasattr(p, "detach") else np.asarray(p)
        p = p.astype(np.float64)
        one_d &= p.ndim == 1
        p = np.atleast_2d(p)
        if p.ndim != 2 or p.shape[1] != len(classes):
            raise ConfigError(
                f"ensemble_probs: member {i} has probabilities of shape {p.shape} for {len(classes)} classes"
            )
        arrays.append(p)
        names.append(to_common(classes))
    n = {a.shape[0] for a in arrays}
    if len(n) != 1:
        raise ConfigError(f"ensemble_probs: members have different numbers of rows {sorted(n)}")
    present = [set(c) for c in names]
    keep = set.union(*present) if mode == "union" else set.intersection(*present)
    if not keep:
        raise ConfigError("ensemble_probs: the members share no class")
    out_classes = [c for c in COMMON if c in keep]
    col = {c: j for j, c in enumerate(out_classes)}
    w = np.ones(len(arrays)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrays),) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"ensemble_probs: weights {list(np.atleast_1d(w))}: one non-negative weight per member")
    total = np.zeros((n.pop(), len(out_classes)))
    for p, cls, wi in zip(arrays, names, w, strict=True):
        mapped = np.zeros_like(total)
        for k, c in enumerate(cls):
            if c in col:
                mapped[:, col[c]] += p[:, k]
        if mode == "intersection":
            mapped /= np.clip(mapped.sum(1, keepdims=True), 1e-12, None)
        total += wi * mapped
    total /= w.sum()
    return (total[0] if one_d else total), out_classes
