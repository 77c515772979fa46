"""Synthetic, procedurally drawn faces with expressions: a stand-in dataset for tests and demos.

:func:`generate` returns a :class:`~ferkit.data.base.FaceDataset` (format ``"synth"``, FER2013 class
order) in memory; :func:`write` writes one to disk in a real on-disk layout (AffectNet-style ``.npy``
annotations, class folders, a FER2013 CSV, or a "me / not me" identity folder tree) so that the
readers can be tested on real files.

How a face is drawn
-------------------
Every image is rendered analytically, in numpy, a chunk of images at a time: each pixel is mapped
back through the sample's pose (in-plane rotation, scale, translation and a fake yaw that squashes
and shifts the features) into face coordinates, and each part (face oval, neck, hair, eyes with
sclera / iris / pupil / lids, brows, nose, lips, mouth cavity, teeth, wrinkles, beard, glasses) is a
soft-edged implicit shape composited over a cluttered background. Then a lighting gradient,
brightness / contrast, blur and gaussian noise are applied and the result is quantised to uint8.

Identities are fixed bundles of face geometry, skin, hair, eye and mouth parameters. By default
they come from ``identity_seed=0`` and not from ``seed``, so two datasets drawn with different seeds
show the same people (as photos of the same people taken another day would).

Expressions move a handful of action-unit-like parameters away from the identity's neutral face,
loosely after FACS (happy: AU6+12, sad: AU1+4+15, surprise: AU1+2+5+26, fear: AU1+2+4+5+20+25,
angry: AU4+7+23, disgust: AU9+10 with an asymmetric mouth), scaled by a per-sample intensity so
some samples are subtle. Valence / arousal come from a circumplex position per class scaled by the
same intensity, plus noise. Landmarks are the 68 iBUG-300W points in pixel coordinates (x, y; pixel
centres at integers), computed from the same geometry as the drawing.

Difficulty (the :class:`Nuisance` defaults, tuned and measured on 2 shared CPU cores): source 001's
"Model 0" CNN trained with Adam (lr 1e-3, batch 64) on 6,000 seed-1 grey 48x48 images scores about
0.70 validation accuracy after one epoch, 0.94 after two and 0.95-0.99 from the third on (4-7 s an
epoch); with 4,000 images, lr 2e-3 and a cosine schedule it passes 0.90 at epoch 3 and ends near
0.96 after 8. A logistic regression on the raw pixels gets 0.54 (2,000 images) to 0.62 (6,000).

The data are synthetic: accuracy measured on them says nothing about accuracy on real faces.
"""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.data.base import SPLITS, FaceDataset, Split
from ferkit.errors import ConfigError
from ferkit.utils import atomic_dir, check_output

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]  # FER2013 order
# AffectNet's own index order, used by the ``affectnet`` layout so the files look like the real thing.
AFFECTNET_CLASSES = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry"]
LAYOUTS = ("affectnet", "folder", "fer2013", "me_vs_not")

# Circumplex (valence, arousal) at full intensity, per class in CLASSES order (after Russell 1980).
VA_CENTRES = np.array(
    [
        [-0.60, 0.65],  # angry
        [-0.65, 0.30],  # disgust
        [-0.55, 0.75],  # fear
        [0.80, 0.40],  # happy
        [-0.70, -0.40],  # sad
        [0.25, 0.85],  # surprise
        [0.00, 0.00],  # neutral
    ],
    dtype=np.float32,
)

# Expression parameters (action-unit-like), and their displacement at intensity 1 per class.
#  brow_in_up  inner brow end up (+) / down (-)          AU1 / AU4
#  brow_out_up outer brow end up                          AU2
#  brow_draw   both brows pulled towards the midline      AU4
#  eye_open    upper-lid opening, relative                AU5 (+) / AU7 (-)
#  cheek       lower lid pushed up (narrowed from below)   AU6
#  curve       lip-corner height (+ smile, - frown)        AU12 / AU15
#  width       mouth half-width change                     AU20 (+) / AU18-23 (-)
#  open        jaw drop / lips apart                        AU25-27
#  lip_raise   upper lip raised                             AU10
#  asym        one mouth corner higher than the other
#  press       lips pressed thin                            AU23/24
#  wrinkle     nose wrinkle                                 AU9
#  forehead    horizontal forehead lines                    AU1+2
#  teeth       teeth visible inside an open mouth
PARAMS = (
    "brow_in_up", "brow_out_up", "brow_draw", "eye_open", "cheek", "curve", "width",
    "open", "lip_raise", "asym", "press", "wrinkle", "forehead", "teeth",
)  # fmt: skip
_P = {k: i for i, k in enumerate(PARAMS)}
# fmt: off
_DELTAS = np.array([
    # in_up out_up draw  eye   cheek curve  width  open  lipr  asym  press wrink fore  teeth
    [-0.13, 0.02, 0.08, 0.20, 0.00, -0.03, -0.05, 0.00, 0.00, 0.00, 1.00, 0.30, 0.00, 0.0],  # angry
    [-0.06, -0.03, 0.03, -0.30, 0.35, -0.05, 0.00, 0.00, 0.08, 0.07, 0.00, 1.00, 0.00, 0.5],  # disgust
    [0.09, 0.05, 0.06, 0.60, 0.00, -0.03, 0.10, 0.06, 0.00, 0.00, 0.00, 0.00, 0.50, 0.5],  # fear
    [0.01, 0.01, 0.00, -0.25, 0.55, 0.13, 0.06, 0.04, 0.00, 0.00, 0.00, 0.00, 0.00, 1.0],  # happy
    [0.09, -0.03, 0.03, -0.20, 0.00, -0.10, -0.02, 0.00, 0.00, 0.00, 0.00, 0.00, 0.20, 0.0],  # sad
    [0.11, 0.12, 0.00, 0.70, 0.00, 0.00, -0.09, 0.20, 0.00, 0.00, 0.00, 0.00, 1.00, 0.3],  # surprise
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.0],  # neutral
], dtype=np.float32)
# fmt: on
# Per-sample jitter of every expression parameter (standard deviation), identity-independent.
_JITTER = np.array(
    [0.010, 0.010, 0.008, 0.04, 0.04, 0.010, 0.012, 0.008, 0.006, 0.008, 0.08, 0.06, 0.06, 0.0], np.float32
)

_CHUNK = 256  # images rendered at once; fixed so results do not depend on memory
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass
class Nuisance:
    """How much the nuisance factors vary; the defaults are the tuned difficulty (see module docs).

    Raising them makes the task harder for a CNN and a linear model alike; the expression intensity
    floor mostly decides how often a face is confused with ``neutral``.
    """

    rotation_deg: float = 8.0  # std of in-plane rotation (clipped at 2.2 std)
    yaw: float = 0.35  # max |fake yaw| (feature shift / squash)
    scale: tuple[float, float] = (0.85, 1.12)
    translate: float = 0.08  # max |shift| as a fraction of half the image
    light: float = 0.35  # max lighting gradient strength
    brightness: float = 0.12  # max |brightness offset|
    contrast: tuple[float, float] = (0.7, 1.2)
    noise: float = 0.03  # max gaussian noise std (in [0, 1] units)
    blur: float = 0.6  # max blur sigma in pixels at 48x48 (scaled with size)
    clutter: float = 1.0  # background clutter amount (0 = plain background)
    intensity: tuple[float, float] = (0.6, 1.0)  # expression intensity range (Beta(2,1)-skewed up)


# --------------------------------------------------------------------------------------------
# identities and per-sample parameters


def _identities(num: int, seed: int) -> dict[str, np.ndarray]:
    """Fixed per-identity geometry and colours (face coordinates: face half-height about 0.8)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D]))
    u = lambda lo, hi: rng.uniform(lo, hi, num).astype(np.float32)  # noqa: E731
    skin_dark = u(0, 1)
    light_skin, dark_skin = np.array([0.96, 0.80, 0.68]), np.array([0.42, 0.28, 0.20])
    skin = light_skin[None] * (1 - skin_dark[:, None]) + dark_skin[None] * skin_dark[:, None]
    skin = np.clip(skin + rng.normal(0, 0.03, (num, 3)), 0, 1).astype(np.float32)
    # black, brown, blond, grey, red
    hair_pal = np.array([[0.08, 0.06, 0.05], [0.30, 0.18, 0.10], [0.75, 0.60, 0.35], [0.55, 0.52, 0.50],
                         [0.45, 0.15, 0.06]])  # fmt: skip
    hair = hair_pal[rng.integers(0, len(hair_pal), num)] * rng.uniform(0.8, 1.15, (num, 1))
    iris_pal = np.array([[0.25, 0.14, 0.07], [0.20, 0.35, 0.55], [0.25, 0.40, 0.25], [0.10, 0.07, 0.05]])
    iris = iris_pal[rng.integers(0, len(iris_pal), num)]
    return {
        "face_rx": u(0.55, 0.68),
        "face_ry": u(0.76, 0.88),
        "chin": u(0.15, 0.40),  # how much the jaw narrows towards the chin
        "skin": skin,
        "hair": np.clip(hair, 0, 1).astype(np.float32),
        "hair_style": rng.integers(0, 3, num),  # 0 short, 1 long (sides), 2 receding / bald
        "hairline": u(-0.62, -0.48),
        "eye_x": u(0.24, 0.31),
        "eye_y": u(-0.15, -0.08),
        "eye_w": u(0.105, 0.135),
        "eye_h": u(0.050, 0.065),
        "iris": iris.astype(np.float32),
        "brow_gap": u(0.18, 0.21),  # brow height above eye
        "brow_t": u(0.035, 0.055),
        "brow_len": u(0.24, 0.32),
        "brow_arch": u(0.00, 0.04),
        "nose_y": u(0.16, 0.24),
        "nose_w": u(0.05, 0.075),
        "mouth_y": u(0.40, 0.48),
        "mouth_w": u(0.17, 0.22),
        "lip_t": u(0.022, 0.035),
        "curve0": u(-0.015, 0.015),  # resting mouth curvature
        "beard": (rng.uniform(0, 1, num) < 0.15).astype(np.float32),
        "glasses": (rng.uniform(0, 1, num) < 0.12).astype(np.float32),
        "mole_x": u(-0.35, 0.35),
        "mole_y": u(-0.1, 0.35),
        "mole": (rng.uniform(0, 1, num) < 0.3).astype(np.float32),
    }


def _sample_params(rng: np.random.Generator, labels: np.ndarray, nz: Nuisance) -> dict[str, np.ndarray]:
    n = len(labels)
    lo, hi = nz.intensity
    intensity = (lo + (hi - lo) * rng.beta(2.0, 1.0, n)).astype(np.float32)
    expr = _DELTAS[labels] * intensity[:, None] + rng.normal(0, 1, (n, len(PARAMS))).astype(np.float32) * _JITTER
    teeth = (rng.uniform(0, 1, n) < _DELTAS[labels, _P["teeth"]]).astype(np.float32)
    # Happy faces smile with lips closed or open; an open smile shows teeth.
    happy_open = rng.uniform(0, 1, n) < 0.5
    expr[:, _P["open"]] *= np.where((labels == CLASSES.index("happy")) & ~happy_open, 0.0, 1.0)
    expr[:, _P["open"]] = np.maximum(expr[:, _P["open"]], 0)
    expr[:, _P["asym"]] *= rng.choice([-1.0, 1.0], n).astype(np.float32)
    rot = np.clip(rng.normal(0, nz.rotation_deg, n), -2.2 * nz.rotation_deg, 2.2 * nz.rotation_deg)
    va = VA_CENTRES[labels] * intensity[:, None] + rng.normal(0, 0.08, (n, 2))
    return {
        "intensity": intensity,
        "expr": expr,
        "teeth": teeth,
        "rot": np.deg2rad(rot).astype(np.float32),
        "yaw": rng.uniform(-nz.yaw, nz.yaw, n).astype(np.float32),
        "scale": rng.uniform(*nz.scale, n).astype(np.float32),
        "tx": rng.uniform(-nz.translate, nz.translate, n).astype(np.float32),
        "ty": rng.uniform(-nz.translate, nz.translate, n).astype(np.float32),
        "gaze": rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32),
        "light_dir": rng.uniform(0, 2 * np.pi, n).astype(np.float32),
        "light": rng.uniform(0, nz.light, n).astype(np.float32),
        "bright": rng.uniform(-nz.brightness, nz.brightness, n).astype(np.float32),
        "contrast": rng.uniform(*nz.contrast, n).astype(np.float32),
        "noise": rng.uniform(0, nz.noise, n).astype(np.float32),
        "blur": rng.uniform(0, nz.blur, n).astype(np.float32),
        "bg": rng.uniform(0.05, 0.95, (n, 3)).astype(np.float32),
        "va": np.clip(va, -1, 1).astype(np.float32),
    }


# --------------------------------------------------------------------------------------------
# drawing helpers (arrays broadcast as (n, h, w); per-sample scalars are (n, 1, 1))


def _cov(d: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """Coverage of a shape from its signed distance (negative inside), anti-aliased over ``aa``."""
    return np.clip(0.5 - d / aa, 0.0, 1.0)


def _paint(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """Composite ``colour`` (n, C) with coverage ``alpha`` (n, h, w) onto ``img`` (n, h, w, C) in place."""
    img += alpha[..., None] * (colour[:, None, None, :] - img)


def _segment_dist(x, y, ax, ay, bx, by):
    """Distance from each pixel to the segment a-b."""
    px, py = x - ax, y - ay
    dx, dy = bx - ax, by - ay
    h = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(px - h * dx, py - h * dy)


def _c(v):
    return np.asarray(v, np.float32)[:, None, None]


def _colour(rgb: np.ndarray, channels: int) -> np.ndarray:
    rgb = np.asarray(rgb, np.float32)
    return rgb if channels == 3 else (rgb @ _LUMA)[:, None]


def _mouth_geometry(idn, expr):
    """Mouth centre / half-width / curvature / openings in face coordinates, per sample."""
    e = lambda k: expr[:, _P[k]]  # noqa: E731
    return {
        "y": idn["mouth_y"] + 0.25 * e("open") - 0.2 * e("lip_raise"),
        "w": np.maximum(idn["mouth_w"] + e("width"), 0.08),
        "curve": idn["curve0"] + e("curve"),
        "open": e("open"),
        "raise": e("lip_raise"),
        "asym": e("asym"),
        "lip": idn["lip_t"] * np.clip(1 - 0.75 * e("press"), 0.2, 1.2),
    }


def _eye_heights(idn, expr):
    up = idn["eye_h"] * np.clip(1 + expr[:, _P["eye_open"]], 0.15, 2.2)
    lo = idn["eye_h"] * np.clip(0.9 - expr[:, _P["cheek"]], 0.1, 1.2)
    return up, lo


def _brow_points(idn, expr, side):
    """Inner end, outer end and the control point of one brow, face coordinates."""
    e = lambda k: expr[:, _P[k]]  # noqa: E731
    by = idn["eye_y"] - idn["brow_gap"]
    ix = side * np.maximum(idn["eye_x"] - idn["eye_w"] * 0.9 - e("brow_draw"), 0.04)
    ox = side * (np.abs(ix) + idn["brow_len"])
    iy = by - e("brow_in_up")
    oy = by + 0.01 - e("brow_out_up")
    mx = (ix + ox) / 2
    my = (iy + oy) / 2 - idn["brow_arch"] - 0.5 * np.maximum(e("brow_out_up"), 0)
    return (ix, iy), (ox, oy), (mx, my)


def _landmarks_face(idn, p) -> np.ndarray:
    """68 points in the iBUG-300W order, face coordinates (before pose)."""
    n = len(p["rot"])
    pts = np.zeros((n, 68, 2), np.float32)
    # jaw 0..16: along the face outline, image-left to image-right through the chin
    phi = np.linspace(np.pi + 0.12, -0.12, 17)[None]
    ry, rx = idn["face_ry"][:, None], idn["face_rx"][:, None]
    jy = ry * np.sin(phi)
    pts[:, 0:17, 0] = rx * np.cos(phi) * (1 - idn["chin"][:, None] * np.clip(jy / ry, 0, 1) ** 2)
    pts[:, 0:17, 1] = jy
    # brows 17..21 (image-left, outer to inner), 22..26 (image-right, inner to outer)
    for side, sl in ((-1, slice(17, 22)), (1, slice(22, 27))):
        (ix, iy), (ox, oy), (mx, my) = _brow_points(idn, p["expr"], side)
        t = np.linspace(0, 1, 5)[None]
        if side < 0:
            t = t[:, ::-1]
        pts[:, sl, 0] = (1 - t) ** 2 * ix[:, None] + 2 * t * (1 - t) * mx[:, None] + t**2 * ox[:, None]
        pts[:, sl, 1] = (1 - t) ** 2 * iy[:, None] + 2 * t * (1 - t) * my[:, None] + t**2 * oy[:, None]
    # nose 27..30 bridge (top to tip), 31..35 base (image-left to image-right)
    ny, ey = idn["nose_y"][:, None], idn["eye_y"][:, None]
    pts[:, 27:31, 1] = ey + (ny - 0.01 - ey) * np.linspace(0, 1, 4)[None]
    tb = np.linspace(-1, 1, 5)[None]
    pts[:, 31:36, 0] = idn["nose_w"][:, None] * tb
    pts[:, 31:36, 1] = ny + 0.02 * (1 - np.abs(tb))
    # eyes 36..41 (image-left) and 42..47 (image-right): corner, upper lid x2, corner, lower lid x2
    up, lo = _eye_heights(idn, p["expr"])
    ts = np.array([-1, -0.35, 0.35, 1, 0.35, -0.35])
    g = np.sqrt(1 - np.minimum(ts**2, 1))
    sgn = np.array([0, -1, -1, 0, 1, 1])
    for side, a in ((-1, 36), (1, 42)):
        pts[:, a : a + 6, 0] = side * idn["eye_x"][:, None] + ts[None] * idn["eye_w"][:, None]
        hh = np.where(sgn[None] < 0, up[:, None], lo[:, None])
        pts[:, a : a + 6, 1] = idn["eye_y"][:, None] + sgn[None] * g[None] * hh
    # mouth 48..59 outer lip, 60..67 inner lip
    m = _mouth_geometry(idn, p["expr"])
    t_out = np.array([-1, -0.66, -0.33, 0, 0.33, 0.66, 1, 0.66, 0.33, 0, -0.33, -0.66])
    s_out = np.array([0, -1, -1, -1, -1, -1, 0, 1, 1, 1, 1, 1])
    t_in = np.array([-0.9, -0.33, 0, 0.33, 0.9, 0.33, 0, -0.33])
    s_in = np.array([0, -1, -1, -1, 0, 1, 1, 1])
    col = lambda k: m[k][:, None]  # noqa: E731
    for tt, ss, sl, lipk in ((t_out, s_out, slice(48, 60), 1.0), (t_in, s_in, slice(60, 68), 0.0)):
        tt = tt[None]
        yc = col("y") - col("curve") * tt**2 - col("asym") * tt
        g = np.sqrt(1 - np.minimum(tt**2, 1))
        top = yc - 0.008 - (col("open") * 0.5 + col("raise")) * g - lipk * col("lip") * g
        bot = yc + 0.008 + col("open") * g + lipk * 1.2 * col("lip") * g
        pts[:, sl, 0] = tt * col("w")
        pts[:, sl, 1] = np.where(ss[None] < 0, top, np.where(ss[None] > 0, bot, yc))
    return pts


def _yaw_params(p):
    yaw = p["yaw"]
    return 1.0 - 0.25 * np.abs(yaw), 0.13 * yaw  # feature squash, feature shift


def _face_to_pixels(pts: np.ndarray, p, size: int) -> np.ndarray:
    """Face coordinates (n, k, 2) -> pixel coordinates of the rendered image (x right, y down)."""
    k, sh = _yaw_params(p)
    x = pts[..., 0] * k[:, None] + sh[:, None]
    y = pts[..., 1]
    c, s = np.cos(p["rot"])[:, None], np.sin(p["rot"])[:, None]
    sc = p["scale"][:, None]
    X = sc * (c * x - s * y) + p["tx"][:, None]
    Y = sc * (s * x + c * y) + p["ty"][:, None]
    return np.stack([(X + 1) * size / 2 - 0.5, (Y + 1) * size / 2 - 0.5], axis=-1).astype(np.float32)


class _Region:
    """A window of the image, the same size for every sample of the chunk but placed per sample.

    Facial features cover a small part of the image, so they are drawn only inside a window that
    covers them (derived from points in face coordinates plus a margin); this keeps the vectorised
    renderer fast. ``X, Y`` are face coordinates, ``U`` the yaw-shifted feature coordinates.
    """

    def __init__(self, img, p, size, pts_face=None, margin_px=2.0):
        n = img.shape[0]
        if pts_face is None:
            w = h = size
            ox = oy = np.zeros(n, np.int64)
        else:
            px = _face_to_pixels(pts_face, p, size)
            lo, hi = px.min(axis=1) - margin_px, px.max(axis=1) + margin_px
            w, h = (int(np.ceil((hi - lo)[:, i].max())) + 2 for i in (0, 1))
            w, h = min(w, size), min(h, size)
            ox = np.clip(np.floor(lo[:, 0]).astype(np.int64), 0, size - w)
            oy = np.clip(np.floor(lo[:, 1]).astype(np.int64), 0, size - h)
        self.full = w == size and h == size
        self.img = img
        self.idx = (np.arange(n)[:, None, None], (oy[:, None] + np.arange(h)[None])[:, :, None],
                    (ox[:, None] + np.arange(w)[None])[:, None, :])  # fmt: skip
        self.patch = img if self.full else img[self.idx]
        self.Xc = ((ox[:, None] + np.arange(w)[None] + 0.5) * 2.0 / size - 1.0).astype(np.float32)[:, None, :]
        self.Yc = ((oy[:, None] + np.arange(h)[None] + 0.5) * 2.0 / size - 1.0).astype(np.float32)[:, :, None]
        c, s, sc = _c(np.cos(p["rot"])), _c(np.sin(p["rot"])), _c(p["scale"])
        dx, dy = self.Xc - _c(p["tx"]), self.Yc - _c(p["ty"])
        self.X = (c * dx + s * dy) / sc
        self.Y = (-s * dx + c * dy) / sc
        k, sh = _yaw_params(p)
        self.U = (self.X - _c(sh)) / _c(k)
        self.aa = _c(2.0 / size / p["scale"]) * 1.2

    def commit(self):
        if not self.full:
            self.img[self.idx] = self.patch


def _render(idn: dict, p: dict, size: int, channels: int, clutter: float, chunk_seed: int) -> np.ndarray:
    """Render one chunk: ``idn`` holds per-sample identity params, ``p`` per-sample params."""
    n = len(p["rot"])
    rng = np.random.default_rng(chunk_seed)
    # background: base colour, then (with clutter) two blobs, a stripe texture and a few straight lines
    img = np.broadcast_to(_colour(p["bg"], channels)[:, None, None, :], (n, size, size, channels)).copy()
    whole = _Region(img, p, size)
    if clutter > 0:
        _paint_clutter(img, whole, rng, clutter, size, channels)
    _paint_head(img, whole, idn, p, channels)
    lm = _landmarks_face(idn, p)
    line = _colour(idn["skin"] * 0.45, channels)
    _paint_forehead_lines(img, idn, p, lm, line, size)
    m = _mouth_geometry(idn, p["expr"])
    _paint_nose(img, idn, p, lm, m, line, size, channels)
    _paint_eyes(img, idn, p, lm, size, channels)
    _paint_mouth(img, idn, p, lm, m, size, channels)
    _light_blur_noise(img, whole, p, rng, size, channels)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _paint_clutter(img: np.ndarray, R: _Region, rng: np.random.Generator, clutter: float, size: int, C: int) -> None:
    """Two gaussian blobs, a stripe texture and up to three straight lines, each as strong as ``clutter``."""
    n, Xc, Yc = len(img), R.Xc, R.Yc
    for _ in range(2):  # gaussian blobs, separable in x and y
        bx, by = _c(rng.uniform(-1, 1, n)), _c(rng.uniform(-1, 1, n))
        k2 = -0.5 / _c(rng.uniform(0.2, 0.7, n)) ** 2
        a = (np.exp(k2 * (Xc - bx) ** 2) * _c(rng.uniform(0, 0.8 * clutter, n))) * np.exp(k2 * (Yc - by) ** 2)
        _paint(img, a, _colour(rng.uniform(0, 1, (n, 3)), C))
    # stripes: 0.5 + 0.5 sin(a x + b y + phase), expanded so that only products are full-size
    th, fr, ph = _c(rng.uniform(0, np.pi, n)), _c(rng.uniform(2, 9, n)), _c(rng.uniform(0, 2 * np.pi, n))
    amp = _c(rng.uniform(0, 0.35 * clutter, n)) * 0.5
    ax_, by_ = fr * np.pi * np.cos(th) * Xc + ph, fr * np.pi * np.sin(th) * Yc
    stripes = (np.sin(ax_) * amp) * np.cos(by_) + (np.cos(ax_) * amp) * np.sin(by_)
    stripes += amp
    _paint(img, stripes, _colour(rng.uniform(0, 1, (n, 3)), C))
    ends = rng.uniform(-0.1, 1.1, (n, 3, 4)) * size
    thick = rng.integers(1, max(2, size // 16), (n, 3))
    on = rng.uniform(0, 1, (n, 3)) < 0.6 * clutter
    cols = _colour(rng.uniform(0, 1, (n * 3, 3)), C).reshape(n, 3, C)
    for i in range(n):
        for j in np.flatnonzero(on[i]):
            a0, b0, a1, b1 = (int(v) for v in ends[i, j])
            cv2.line(img[i], (a0, b0), (a1, b1), tuple(float(v) for v in cols[i, j]), int(thick[i, j]))


def _paint_head(img: np.ndarray, R: _Region, idn: dict, p: dict, C: int) -> None:
    """Neck and shoulders, hair, the face oval with its shading, beard, hairline and a mole."""
    X, Y, aa = R.X, R.Y, R.aa
    f = lambda key: _c(idn[key])  # noqa: E731
    skin = idn["skin"]
    skinc = _colour(skin, C)
    hairc = _colour(idn["hair"], C)
    rx, ry = _c(idn["face_rx"] * (1 - 0.12 * np.abs(p["yaw"]))), f("face_ry")
    # neck and shoulders
    neck = np.maximum(np.abs(X) - rx * 0.55, -(Y - 0.3))
    shoulders = np.maximum(-(Y - ry - 0.05), -(Y - ry - 0.05) * 0.5 - (1.5 - np.abs(X)))
    _paint(img, _cov(np.minimum(neck, shoulders), aa), _colour(skin * 0.82, C))
    # long hair behind the head
    style = idn["hair_style"]
    long_hair = np.sqrt((X / (rx + 0.13)) ** 2 + ((Y - 0.05) / (ry + 0.12)) ** 2) - 1
    long_hair = np.maximum(long_hair, Y - _c(np.where(style == 1, 0.55, -0.35)))
    _paint(img, _cov(long_hair * 0.8, aa) * _c(style != 2), hairc)
    # face oval, narrowing towards the chin, darker towards the sides
    yn = np.clip(Y / ry, 0, 1)
    rxx = rx * (1 - f("chin") * yn * yn)
    face = (np.sqrt((X / rxx) ** 2 + (Y / ry) ** 2) - 1) * ry
    face_cov = _cov(face, aa)
    _paint(img, face_cov, skinc)
    _paint(img, np.minimum((X / rxx) ** 4, 1) * face_cov * 0.35, _colour(skin * 0.6, C))
    # beard: the lower face
    beard = np.maximum(face, -(Y - _c(idn["mouth_y"] - 0.03)))
    _paint(img, _cov(beard, aa * 3) * f("beard") * 0.7, hairc)
    # hair on top: the head above the hairline curve
    hl = f("hairline") + 0.10 * (X / rx) ** 2
    top = np.maximum((np.sqrt((X / (rx + 0.05)) ** 2 + ((Y + 0.02) / (ry + 0.08)) ** 2) - 1) * ry, Y - hl)
    _paint(img, _cov(top, aa) * _c(np.where(style == 2, 0.35, 1.0)), hairc)
    # a mole
    d = np.hypot(R.U - f("mole_x"), Y - f("mole_y")) - 0.018
    _paint(img, _cov(d, aa) * f("mole") * 0.8, _colour(skin * 0.35, C))


def _paint_forehead_lines(img: np.ndarray, idn: dict, p: dict, lm: np.ndarray, line: np.ndarray, size: int) -> None:
    """Forehead lines (surprise / fear / sad), just above the brows."""
    n = len(img)
    e = lambda key: _c(p["expr"][:, _P[key]])  # noqa: E731
    brow_top = np.minimum(lm[:, 17:27, 1].min(axis=1), (idn["eye_y"] - idn["brow_gap"] - e("brow_in_up")[:, 0, 0]))
    fy = brow_top - 0.10
    box = np.stack([np.stack([np.full(n, -0.3), fy - 0.08], -1), np.stack([np.full(n, 0.3), fy + 0.08], -1)], 1)
    R = _Region(img, p, size, box, 1.5)
    fh = np.clip(e("forehead"), 0, 1)
    for dy in (-0.035, 0.035):
        yline = _c(fy) + dy + 0.04 * (R.U / 0.3) ** 2
        d = np.maximum(np.abs(R.Y - yline) - 0.006, np.abs(R.U) - 0.26)
        _paint(R.patch, _cov(d, R.aa) * fh * 0.7, line)
    R.commit()


def _paint_nose(
    img: np.ndarray, idn: dict, p: dict, lm: np.ndarray, m: dict, line: np.ndarray, size: int, C: int
) -> None:
    """Nose, nose wrinkle (disgust) and nasolabial folds (happy / disgust)."""
    e = lambda key: _c(p["expr"][:, _P[key]])  # noqa: E731
    f = lambda key: _c(idn[key])  # noqa: E731
    skin = idn["skin"]
    mw, my = _c(m["w"]), _c(m["y"])
    R = _Region(img, p, size, np.concatenate([lm[:, 27:36], lm[:, [39, 42, 48, 54]]], 1), 2.5)
    U, Yr, aar = R.U, R.Y, R.aa
    wr = np.clip(e("wrinkle"), 0, 1)
    ny, ey = f("nose_y"), f("eye_y")
    for side in (-1, 1):
        d = _segment_dist(U, Yr, side * 0.03, ey + 0.04, side * 0.07, ey + 0.10) - 0.008
        _paint(R.patch, _cov(d, aar) * wr * 0.8, line)
    fold = np.clip(e("cheek") * 1.6 + np.maximum(e("curve"), 0) * 4, 0, 1)
    for side in (-1, 1):
        cy = my - _c(m["curve"]) - side * _c(m["asym"])
        d = _segment_dist(U, Yr, side * (f("nose_w") + 0.04), ny - 0.01, side * (mw + 0.05), cy + 0.02) - 0.007
        _paint(R.patch, _cov(d, aar) * fold * 0.6, line)
    d = np.maximum(np.abs(U - 0.015) - 0.012, np.maximum(ey + 0.05 - Yr, Yr - ny))
    _paint(R.patch, _cov(d, aar) * 0.25, line)
    for side in (-1, 1):
        d = np.sqrt(((U - side * f("nose_w") * 0.6) / 0.028) ** 2 + ((Yr - ny - 0.015) / 0.016) ** 2) - 1
        _paint(R.patch, _cov(d * 0.02, aar) * 0.85, _colour(skin * 0.3, C))
    R.commit()


def _paint_eyes(img: np.ndarray, idn: dict, p: dict, lm: np.ndarray, size: int, C: int) -> None:
    """Eyes (sclera, iris, pupil, upper lid), glasses and brows, one window per side."""
    f = lambda key: _c(idn[key])  # noqa: E731
    ones = np.ones((len(img), 3), np.float32)
    up, lo = (_c(v) for v in _eye_heights(idn, p["expr"]))
    ew, ey = f("eye_w"), f("eye_y")
    browc = _colour(idn["hair"] * 0.7, C)
    for side, eye_pts, _brow_pts in ((-1, slice(36, 42), slice(17, 22)), (1, slice(42, 48), slice(22, 27))):
        (ix, iy), (ox, oy), (mx, my2) = _brow_points(idn, p["expr"], side)
        ex0 = side * idn["eye_x"]
        ring = np.stack([np.stack([ex0 - 1.5 * idn["eye_w"], idn["eye_y"] - 1.3 * idn["eye_w"]], -1),
                         np.stack([ex0 + 1.5 * idn["eye_w"], idn["eye_y"] + 1.3 * idn["eye_w"]], -1)], 1)  # fmt: skip
        ring = np.where(idn["glasses"][:, None, None] > 0, ring, lm[:, eye_pts][:, :2])
        ctrl = np.stack([np.stack([ix, iy], -1), np.stack([mx, my2], -1), np.stack([ox, oy], -1)], 1)
        pts = np.concatenate([lm[:, eye_pts], ctrl, ring], 1)
        R = _Region(img, p, size, pts, 2.0 + float(idn["brow_t"].max()) * size / 2 * float(p["scale"].max()))
        U, Yr, aar = R.U, R.Y, R.aa
        ex = side * f("eye_x")
        t = (U - ex) / ew
        gt = np.sqrt(np.clip(1 - t * t, 0, 1))
        d_eye = np.maximum(np.maximum(ey - up * gt - Yr, Yr - (ey + lo * gt)), (np.abs(t) - 1) * ew)
        eye_cov = _cov(d_eye, aar)
        _paint(R.patch, eye_cov, _colour(ones * 0.92, C))
        ir = ew * 0.42
        gx, gy = ex + _c(p["gaze"][:, 0]) * ew * 0.5, ey + _c(p["gaze"][:, 1]) * ew * 0.15
        iris = np.hypot(U - gx, Yr - gy) - ir
        _paint(R.patch, _cov(iris, aar) * eye_cov, _colour(idn["iris"], C))
        _paint(R.patch, _cov(iris + ir * 0.5, aar) * eye_cov, _colour(ones * 0.03, C))
        d_lid = np.maximum(np.abs(Yr - (ey - up * gt)) - 0.012, (np.abs(t) - 1.05) * ew)
        _paint(R.patch, _cov(d_lid, aar) * 0.9, _colour(ones * 0.08, C))
        d_gl = np.abs(np.hypot((U - ex) / 1.35, (Yr - ey) / 1.2) - ew * 1.05) - 0.012
        _paint(R.patch, _cov(d_gl, aar) * f("glasses"), _colour(ones * 0.1, C))
        ix, iy, ox, oy, mx, my2 = map(_c, (ix, iy, ox, oy, mx, my2))
        d = np.minimum(_segment_dist(U, Yr, ix, iy, mx, my2), _segment_dist(U, Yr, mx, my2, ox, oy)) - f("brow_t") * 0.5
        _paint(R.patch, _cov(d, aar) * 0.95, browc)
        R.commit()


def _paint_mouth(img: np.ndarray, idn: dict, p: dict, lm: np.ndarray, m: dict, size: int, C: int) -> None:
    """Lips around a cavity between an upper and a lower curve, teeth in the cavity."""
    skin = idn["skin"]
    ones = np.ones((len(img), 3), np.float32)
    mw, my = _c(m["w"]), _c(m["y"])
    R = _Region(img, p, size, lm[:, 48:60], 2.0)
    U, Yr, aar = R.U, R.Y, R.aa
    t = U / mw
    gt = np.sqrt(np.clip(1 - t * t, 0, 1))
    yc = my - _c(m["curve"]) * t * t - _c(m["asym"]) * t
    op, ra, lip = _c(m["open"]), _c(m["raise"]), _c(m["lip"])
    top = yc - 0.008 - (op * 0.5 + ra) * gt
    bot = yc + 0.008 + op * gt
    side_d = (np.abs(t) - 1) * mw
    d_lips = np.maximum(np.maximum(top - lip * gt - Yr, Yr - (bot + 1.2 * lip * gt)), side_d)
    _paint(R.patch, _cov(d_lips, aar), _colour(skin * np.array([0.78, 0.52, 0.52], np.float32), C))
    d_cav = np.maximum(np.maximum(top - Yr, Yr - bot), side_d + 0.01)
    _paint(R.patch, _cov(d_cav, aar), _colour(ones * np.array([0.22, 0.06, 0.06], np.float32), C))
    teeth_on = _c(p["teeth"]) * np.clip(op * 12, 0, 1)
    d_teeth = np.maximum(np.maximum(top - Yr, Yr - (top + (bot - top) * 0.45)), side_d + 0.02)
    _paint(R.patch, _cov(d_teeth, aar) * teeth_on, _colour(ones * 0.93, C))
    R.commit()


def _light_blur_noise(img: np.ndarray, R: _Region, p: dict, rng: np.random.Generator, size: int, C: int) -> None:
    """Lighting gradient, brightness / contrast, blur and noise, in place."""
    n, Xc, Yc = len(img), R.Xc, R.Yc
    ld = p["light_dir"]
    gain = (1 + _c(p["light"]) * (_c(np.cos(ld)) * Xc + _c(np.sin(ld)) * Yc)) * _c(p["contrast"])
    img *= gain[..., None]
    img += (0.5 - 0.5 * _c(p["contrast"]) + _c(p["bright"]))[..., None]
    for i in range(n):
        sg = float(p["blur"][i]) * size / 48.0
        if sg > 0.25:
            img[i] = cv2.GaussianBlur(img[i], (0, 0), sg, borderType=cv2.BORDER_REFLECT).reshape(size, size, C)
    img += rng.standard_normal(img.shape, dtype=np.float32) * _c(p["noise"])[..., None]


# --------------------------------------------------------------------------------------------
# public API


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    if n < 1:
        raise ConfigError(f"synthetic dataset size n={n}: use a positive number of images")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"val_fraction={val_fraction}, test_fraction={test_fraction}: each must be in [0, 1) and their sum < 1"
        )
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


def generate(
    n: int,
    seed: int = 0,
    size: int = 48,
    channels: int = 1,
    num_identities: int = 20,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    identity_seed: int = 0,
    me_identity: int | None = None,
    nuisance: Nuisance | None = None,
    workers: int = 1,
) -> FaceDataset:
    """Draw ``n`` synthetic faces split into train / val / test, classes in FER2013 order.

    Each split is exactly class-balanced (labels cycle through the 7 classes, then are shuffled).
    Every split has valence / arousal (float32 in [-1, 1]), 68 landmarks (float32 ``(N, 68, 2)``, pixel
    x, y) and identities (int64). Same arguments give byte-identical arrays. ``me_identity``: half of
    every split shows that identity and half the others (for the "is it me?" task).
    ``identity_seed`` picks the people; it is independent of ``seed`` on purpose. ``nuisance``
    changes the difficulty (the defaults are tuned, see the module docs). ``workers`` > 1 renders
    chunks in threads (numpy releases the GIL; helps only on idle cores); the result is the same.
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels}: synthetic faces are grey (1) or colour (3)")
    if not (16 <= int(size) <= 512):
        raise ConfigError(f"size={size}: use an image size between 16 and 512 pixels")
    if num_identities < 1 or (me_identity is not None and num_identities < 2):
        raise ConfigError(f"num_identities={num_identities}: need at least 1 (2 with me_identity)")
    if me_identity is not None and not 0 <= me_identity < num_identities:
        raise ConfigError(f"me_identity={me_identity}: must be in 0..{num_identities - 1}")
    size = int(size)
    nz = nuisance or Nuisance()
    sizes = _split_sizes(int(n), val_fraction, test_fraction)
    ids_all = _identities(num_identities, identity_seed)
    root_seq = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, 0x5E])
    split_seqs = root_seq.spawn(len(SPLITS))
    splits: dict[str, Split] = {}
    offset = 0
    for name, seq in zip(SPLITS, split_seqs, strict=True):
        m = sizes[name]
        param_seq, render_seq = seq.spawn(2)
        rng = np.random.default_rng(param_seq)
        labels = rng.permutation(np.arange(m) % len(CLASSES)).astype(np.int64)
        if me_identity is None:
            identities = rng.integers(0, num_identities, m).astype(np.int64)
        else:
            others = np.array([i for i in range(num_identities) if i != me_identity])
            is_me = rng.permutation(np.arange(m) % 2 == 0)
            identities = np.where(is_me, me_identity, others[rng.integers(0, len(others), m)]).astype(np.int64)
        p = _sample_params(rng, labels, nz)
        idn = {k: v[identities] for k, v in ids_all.items()}
        images = np.empty((m, size, size, channels), np.uint8)
        chunk_seeds = render_seq.generate_state(max(1, -(-m // _CHUNK)), dtype=np.uint64)

        def render_chunk(ci: int, m=m, images=images, idn=idn, p=p, chunk_seeds=chunk_seeds) -> None:
            sl = slice(ci * _CHUNK, min((ci + 1) * _CHUNK, m))
            images[sl] = _render(
                {k: v[sl] for k, v in idn.items()},
                {k: v[sl] for k, v in p.items()},
                size,
                channels,
                nz.clutter,
                int(chunk_seeds[ci]),
            )

        # Every chunk has its own seed and output rows, so threads cannot change the result.
        n_chunks = len(chunk_seeds) if m else 0
        if workers > 1 and n_chunks > 1:
            with ThreadPoolExecutor(max_workers=workers) as ex:
                list(ex.map(render_chunk, range(n_chunks)))
        else:
            for ci in range(n_chunks):
                render_chunk(ci)
        splits[name] = Split(
            images=images,
            labels=labels,
            ids=[f"synth-{seed}-{offset + i:06d}" for i in range(m)],
            valence=p["va"][:, 0].copy(),
            arousal=p["va"][:, 1].copy(),
            landmarks=_face_to_pixels(_landmarks_face(idn, p), p, size),
            identities=identities,
        )
        offset += m
    return FaceDataset(
        name=f"synth-{seed}",
        format="synth",
        root=f"synth:n={n},seed={seed},size={size},channels={channels}",
        classes=list(CLASSES),
        splits=splits,
    )


_README = """\
SYNTHETIC DATA - generated by ferkit.data.synth (procedurally drawn cartoon faces).

These images are not photographs of people. They exist to test ferkit's readers, training,
evaluation and inference end to end. An accuracy measured on them is never a real accuracy
and says nothing about how a model does on real faces.

generator arguments: {args}
layout: {layout}
{layout_note}
"""

_LAYOUT_NOTES = {
    "affectnet": (
        "images/<id>.png; annotations/<id>_exp.npy (int64 scalar, AffectNet order: "
        + ", ".join(f"{i}={c}" for i, c in enumerate(AFFECTNET_CLASSES))
        + "), <id>_val.npy / <id>_aro.npy (float32 scalars in [-1, 1]), <id>_lnd.npy (float32 (136,):"
        " x1, y1, ..., x68, y68 in pixels); splits.csv (id,split); identities.csv (id,identity)."
    ),
    "folder": "<split>/<class>/<id>.png with split in train, val, test.",
    "fer2013": "fer2013.csv with columns emotion,pixels,Usage (FER2013 class order 0..6: "
    + ", ".join(f"{i}={c}" for i, c in enumerate(CLASSES))
    + "; Usage Training / PublicTest / PrivateTest for train / val / test).",
    "me_vs_not": "<split>/{me,not_me}/<id>.png, balanced; 'me' is identity {me}.",
}


def _png(img: np.ndarray) -> bytes:
    if img.shape[2] == 3:
        img = img[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(img))
    if not ok:  # pragma: no cover - cv2 failing to encode a uint8 array is a bug
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    layout: str = "affectnet",
    size: int = 48,
    channels: int = 1,
    *,
    me_identity: int = 0,
    overwrite: bool = False,
    **kwargs,
) -> Path:
    """Generate ``n`` faces and write them under ``out_dir`` in ``layout``; returns ``out_dir``.

    Layouts: ``affectnet`` (images + ``.npy`` annotations + ``splits.csv`` + ``identities.csv``),
    ``folder`` (``<split>/<class>/``), ``fer2013`` (one CSV, grey only), ``me_vs_not``
    (``<split>/{me,not_me}/``, balanced, ``me_identity`` is "me"). Other keyword arguments go to
    :func:`generate`. Everything is written into a temporary sibling folder that is renamed to
    ``out_dir`` at the end, so ``out_dir`` either appears complete or not at all. ``out_dir`` must not
    exist or be empty unless ``overwrite`` (then it is replaced).
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown synthetic layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if layout == "fer2013" and channels != 1:
        raise ConfigError("layout fer2013 holds grey pixels only: use channels=1")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out}: already exists and is not empty; pick a new folder or pass overwrite=True")
    check_output(out if out.is_dir() or not out.exists() else out.parent, "--out", folder=True)  # before the work
    me = me_identity if layout == "me_vs_not" else None
    ds = generate(n, seed=seed, size=size, channels=channels, me_identity=me, **kwargs)
    with atomic_dir(out, replace=True, what="--out") as tmp:  # out is new, empty or to be overwritten
        _write_layout(tmp, ds, layout, me_identity)
        args = dict(n=n, seed=seed, size=size, channels=channels, **kwargs)
        if layout == "me_vs_not":
            args["me_identity"] = me_identity
        note = _LAYOUT_NOTES[layout].replace("{me}", str(me_identity))
        (tmp / "README.txt").write_text(_README.format(args=args, layout=layout, layout_note=note))
    return out


def _write_layout(root: Path, ds: FaceDataset, layout: str, me_identity: int) -> None:
    if layout == "fer2013":
        usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["emotion", "pixels", "Usage"])
        for name, sp in ds.splits.items():
            for img, lab in zip(sp.images, sp.labels, strict=True):
                w.writerow([int(lab), " ".join(map(str, img.reshape(-1).tolist())), usage[name]])
        (root / "fer2013.csv").write_text(buf.getvalue())
        return
    if layout == "affectnet":
        (root / "images").mkdir()
        (root / "annotations").mkdir()
        to_aff = {i: AFFECTNET_CLASSES.index(c) for i, c in enumerate(ds.classes)}
        split_rows, id_rows = [], []
        for name, sp in ds.splits.items():
            assert sp.valence is not None and sp.arousal is not None and sp.landmarks is not None  # synth makes them
            assert sp.identities is not None
            for i, sid in enumerate(sp.ids):
                (root / "images" / f"{sid}.png").write_bytes(_png(sp.images[i]))
                a = root / "annotations"
                np.save(a / f"{sid}_exp.npy", np.int64(to_aff[int(sp.labels[i])]))
                np.save(a / f"{sid}_val.npy", np.float32(sp.valence[i]))
                np.save(a / f"{sid}_aro.npy", np.float32(sp.arousal[i]))
                np.save(a / f"{sid}_lnd.npy", sp.landmarks[i].reshape(-1).astype(np.float32))
                split_rows.append(f"{sid},{name}")
                id_rows.append(f"{sid},{int(sp.identities[i])}")
        (root / "splits.csv").write_text("id,split\n" + "\n".join(split_rows) + "\n")
        (root / "identities.csv").write_text("id,identity\n" + "\n".join(id_rows) + "\n")
        return
    for name, sp in ds.splits.items():
        for i, sid in enumerate(sp.ids):
            if layout == "folder":
                d = root / name / ds.classes[int(sp.labels[i])]
            else:
                assert sp.identities is not None  # synth makes them
                d = root / name / ("me" if int(sp.identities[i]) == me_identity else "not_me")
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{sid}.png").write_bytes(_png(sp.images[i]))
