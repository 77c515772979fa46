"""Face alignment: warp a face so its five landmarks land on a fixed template, or crop its box.

Coordinates follow :mod:`ferkit.faces.base`: pixel (row i, column j) covers [j, j+1) x [i, i+1), so
pixel centres are at +0.5 (OpenCV's integer-centre convention is converted to at the warp).

The template is ArcFace's 5-point layout for 112x112 crops (eyes at 46% of the height, mouth corners at
82%), scaled to the shorter output side and centred on the longer one. ``margin`` adds that fraction of
the template's extent on every side (0.2 -> the face fills 1/1.4 of the crop; negative values zoom in).
"""

from __future__ import annotations

from typing import overload

import numpy as np

from ferkit.errors import ConfigError
from ferkit.faces.base import Face, as_rgb_uint8

# ArcFace / insightface 112x112 reference points (x, y), image-left eye first.
_ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)

#: How much each landmark counts in the fit (eyes, nose, mouth corners). The mouth corners move with the
#: expression (a smile widens and raises them), so at full weight they would zoom and shift the crop with
#: the very expression being measured; at 1/4 the rigid points dominate: on the test photos the eyes land 0.8 px
#: from the template on the smiling astronaut (2.7 px with equal weights), 2.6 px on average over 13 faces
#: (3.4 px). Pass ``weights=(1, 1, 1, 1, 1)`` for the standard ArcFace-style fit.
LANDMARK_WEIGHTS = (1.0, 1.0, 1.0, 0.25, 0.25)

# When landmarks are only estimated (Haar), :func:`align` crops the box grown by this fraction of its side
# on each side and moved up by this fraction: on the test photos that frames a Haar box the way the
# template frames RetinaFace's landmarks (mean over 10 faces: +0.058 per side, centre 0.080 higher).
FALLBACK_CROP_MARGIN = 0.06
FALLBACK_CROP_RAISE = 0.08


def _size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"alignment size must be an int or (height, width), got {size!r}") from None
    if h < 8 or w < 8 or h > 4096 or w > 4096:
        raise ConfigError(f"alignment size must be between 8 and 4096 pixels a side, got {(h, w)}")
    return h, w


def _check(channels: int, margin: float) -> None:
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if not (-0.4 < float(margin) <= 3.0):
        raise ConfigError(f"margin must be in (-0.4, 3.0], got {margin!r}")


def template(size=(112, 112), margin: float = 0.0) -> np.ndarray:
    """The five target points (5, 2) for an output of ``size`` = (height, width) and ``margin``."""
    h, w = _size(size)
    unit = (_ARCFACE_112 / 112.0 - 0.5) / (1.0 + 2.0 * float(margin)) + 0.5
    side = min(h, w)
    return (unit * side + np.array([(w - side) / 2.0, (h - side) / 2.0])).astype(np.float32)


def similarity(src: np.ndarray, dst: np.ndarray, weights=None) -> np.ndarray | None:
    """Weighted least-squares similarity (rotation, uniform scale, translation; never a reflection) mapping
    ``src`` points onto ``dst`` (Umeyama 1991), as a 2x3 matrix; None when ``src`` is degenerate."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(src),) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"landmark weights must be {len(src)} non-negative numbers, not all 0; got {weights!r}")
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    s, d = src - ms, dst - md
    var = float(w @ (s**2).sum(1))
    if not np.isfinite(var) or var < 1e-6:
        return None
    u, sig, vt = np.linalg.svd((d * w[:, None]).T @ s)
    flip = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float(np.trace(np.diag(sig) @ flip)) / var
    t = md - scale * rot @ ms
    return np.hstack([scale * rot, t[:, None]])


@overload
def alignment_matrix(face: Face, size=..., margin: float = ..., weights=...) -> np.ndarray: ...
@overload
def alignment_matrix(face: np.ndarray, size=..., margin: float = ..., weights=...) -> np.ndarray | None: ...


def alignment_matrix(
    face: Face | np.ndarray, size=(112, 112), margin: float = 0.0, weights=LANDMARK_WEIGHTS
) -> np.ndarray | None:
    """The 2x3 matrix :func:`align` warps with, taking image coordinates to aligned-crop coordinates; map
    points with ``pts @ M[:, :2].T + M[:, 2]``. For a :class:`Face` whose landmarks are estimated or
    degenerate it is the fallback crop's (scale + shift). For a bare (5, 2) landmark array it is the
    similarity, or None when the points are degenerate."""
    size = _size(size)
    if not isinstance(face, Face):
        return similarity(np.asarray(face, np.float32).reshape(5, 2), template(size, margin), weights)
    m = None if face.landmarks_estimated else similarity(face.landmarks, template(size, margin), weights)
    if m is None:
        x1, y1, x2, y2 = face.box
        dy = FALLBACK_CROP_RAISE * max(x2 - x1, y2 - y1)
        raised = Face((x1, y1 - dy, x2, y2 - dy), face.score, face.landmarks, face.landmarks_estimated)
        m, _ = crop_matrix(raised, FALLBACK_CROP_MARGIN + margin * (1 + 2 * FALLBACK_CROP_MARGIN), size)
    return m


def crop_matrix(face: Face, margin: float = 0.0, size=None) -> tuple[np.ndarray, tuple[int, int]]:
    """The 2x3 scale + shift :func:`crop` uses, and the output (height, width)."""
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * float(margin))
    if size is None:
        h = w = max(1, int(round(side)))
    else:
        h, w = _size(size)
    k = side / min(h, w)  # source pixels per output pixel
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return np.array([[1.0 / k, 0.0, w / 2.0 - cx / k], [0.0, 1.0 / k, h / 2.0 - cy / k]]), (h, w)


def _shrink_window(image: np.ndarray, m: np.ndarray, size: tuple[int, int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The part of ``image`` that warping with ``m`` to ``size`` (h, w) reads, area-shrunk by the integer factor
    ``k`` (block averages, so the window's position does not change a pixel), and ``m`` for that smaller image.
    A window outside the image altogether: the whole image shrunk (its edge is what the warp repeats)."""
    import cv2

    ih, iw = image.shape[:2]
    h, w = size
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0.0, 0.0], [w, 0.0], [0.0, h], [w, h]]) @ inv[:, :2].T + inv[:, 2]
    bx0, by0 = (int(np.floor(v / k)) - 1 for v in corners.min(0))
    bx1, by1 = (int(np.ceil(v / k)) + 1 for v in corners.max(0))
    bx0, by0 = max(0, bx0), max(0, by0)
    bx1, by1 = min(iw // k, bx1), min(ih // k, by1)
    if bx1 <= bx0 or by1 <= by0:
        bx0, by0, bx1, by1 = 0, 0, max(1, iw // k), max(1, ih // k)
    window = image[by0 * k : by1 * k, bx0 * k : bx1 * k]
    small = cv2.resize(window, (bx1 - bx0, by1 - by0), interpolation=cv2.INTER_AREA)
    m = m.copy()
    m[:, 2] += m[:, :2] @ np.array([bx0 * k, by0 * k], np.float64)
    m[:, :2] *= k
    return small, m


def _warp(image: np.ndarray, m: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Warp with ``m`` (corner-convention coordinates) to (h, w), anti-aliased when shrinking a lot."""
    import cv2

    h, w = size
    m = m.astype(np.float64).copy()
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    if scale < 0.5:
        # Bilinear sampling at under half size aliases: area-shrink first (k x k blocks averaged) so the warp
        # scales by 0.5..1; only the blocks the warp reads are shrunk (a face's window, not the whole frame)
        image, m = _shrink_window(image, m, (h, w), int(np.ceil(0.5 / scale)))
    # corner convention -> OpenCV's: dst_cv + 0.5 = A (src_cv + 0.5) + t
    m_cv = m.copy()
    m_cv[:, 2] += m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    out = cv2.warpAffine(image, m_cv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if channels == 1:
        return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[:, :, None]
    return out


def align(
    image: np.ndarray, face: Face, size=(112, 112), channels: int = 3, margin: float = 0.0, weights=LANDMARK_WEIGHTS
) -> np.ndarray:
    """The face warped so its landmarks sit on :func:`template` (best fit, see :data:`LANDMARK_WEIGHTS`):
    uint8 (H, W, channels).

    Faces whose landmarks are estimated (Haar) or degenerate get a :func:`crop` of the box instead, grown
    and raised to frame the face about as the template does. Pixels beyond the image border repeat the edge.
    """
    size = _size(size)
    _check(channels, margin)
    return _warp(as_rgb_uint8(image), alignment_matrix(face, size, margin, weights), size, channels)


def crop(image: np.ndarray, face: Face, margin: float = 0.0, size=None, channels: int = 3) -> np.ndarray:
    """An axis-aligned crop around the face box: a square on the box's longer side, grown by ``margin`` of
    it on every side (widened to the output's aspect ratio), resized to ``size`` = (height, width) if
    given, else at native resolution. Pixels beyond the image border repeat the edge. uint8 (H, W, channels).
    """
    _check(channels, margin)
    m, hw = crop_matrix(face, margin, size)
    return _warp(as_rgb_uint8(image), m, hw, channels)
