"""The ``Face`` record, the ``FaceDetector`` interface every backend implements, and the backend registry.

Coordinates are pixels of the image as given (``x`` to the right, ``y`` down, origin at the top-left corner
of the top-left pixel), whatever resizing a backend does inside.

Landmark order and the left/right convention
--------------------------------------------
``Face.landmarks`` is a float32 array of shape (5, 2), rows in :data:`LANDMARK_NAMES` order:
``left_eye, right_eye, nose, mouth_left, mouth_right``. *Left* and *right* are the **image's** left and
right (the viewer's), not the subject's: in an upright, un-mirrored photo ``left_eye`` is the subject's
right eye and has the smaller x. This is the order RetinaFace, MTCNN and the ArcFace alignment template
all use, so the five points can be fed to any of them unchanged.
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ferkit import defaults
from ferkit.errors import ConfigError, DataError
from ferkit.schema import LANDMARK_NAMES  # one definition, shared with the result schema

# What a backend may be asked to downscale to before detection (long side, pixels).
DEFAULT_MAX_SIZE = 1280
#: what a backend with a network takes as ``runtime``
RUNTIMES = ("auto", "torch", "onnx")
# Parallel callers of one detector share one ONNX Runtime session per thread count: made under this lock.
_SESSION_LOCK = threading.Lock()


@dataclass
class Face:
    """One detected face: ``box`` (x1, y1, x2, y2) in pixels, ``score`` in [0, 1], ``landmarks`` (5, 2).

    ``landmarks_estimated`` is True when the backend has no landmark model (Haar) and the five points were
    placed from the box geometry; :func:`ferkit.faces.align` then crops instead of warping.
    Boxes are not clipped to the image: a face cut by the border keeps its full extent.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray = field(repr=False)
    landmarks_estimated: bool = False

    def __post_init__(self) -> None:
        self.box = tuple(float(v) for v in self.box)  # type: ignore[assignment]
        if len(self.box) != 4:
            raise ValueError(f"Face.box needs 4 numbers (x1, y1, x2, y2), got {len(self.box)}")
        self.score = float(self.score)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(5, 2)
        self.landmarks_estimated = bool(self.landmarks_estimated)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The box's shorter side: what ``min_face`` is compared with."""
        return min(self.width, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    def scaled(self, sx: float, sy: float | None = None) -> Face:
        """The same face with every coordinate multiplied by (sx, sy)."""
        sy = sx if sy is None else sy
        x1, y1, x2, y2 = self.box
        return Face(
            (x1 * sx, y1 * sy, x2 * sx, y2 * sy),
            self.score,
            self.landmarks * np.array([sx, sy], dtype=np.float32),
            self.landmarks_estimated,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: box and landmarks rounded to 0.01 px, landmarks keyed by :data:`LANDMARK_NAMES`."""
        return {
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 5),
            "landmarks": {
                n: [round(float(x), 2), round(float(y), 2)]
                for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)
            },
            "landmarks_estimated": self.landmarks_estimated,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Face:
        lm = d["landmarks"]
        pts = [lm[n] for n in LANDMARK_NAMES] if isinstance(lm, dict) else lm
        return cls(
            tuple(d["box"]), d["score"], np.asarray(pts, dtype=np.float32), bool(d.get("landmarks_estimated", False))
        )


_BACKENDS: dict[str, type[FaceDetector]] = {}
#: the built-in backends and the module each registers itself from, imported on first use (so that
#: ``retinaface`` on ONNX Runtime never imports torch for MTCNN's networks)
BUILTIN_BACKENDS = {
    "retinaface": "ferkit.faces.retinaface",
    "mtcnn": "ferkit.faces.mtcnn",
    "haar": "ferkit.faces.haar",
    "tinyface": "ferkit.faces.faceapi",
    "ssd_mobilenet": "ferkit.faces.faceapi",
    "blazeface": "ferkit.faces.blazeface",
}


def register_backend(name: str) -> Callable[[type[FaceDetector]], type[FaceDetector]]:
    """Class decorator: make a :class:`FaceDetector` subclass available to :meth:`FaceDetector.create`."""

    def deco(cls: type[FaceDetector]) -> type[FaceDetector]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return deco


def available_backends() -> list[str]:
    """Registered backend names, the default (``retinaface``) first."""
    return sorted(set(_BACKENDS) | set(BUILTIN_BACKENDS), key=lambda n: (n != "retinaface", n))


def backend_class(name: str) -> type[FaceDetector]:
    """The class registered as ``name`` (a built-in one is imported here, on first use)."""
    if name not in _BACKENDS and name in BUILTIN_BACKENDS:
        import importlib

        importlib.import_module(BUILTIN_BACKENDS[name])
    return _BACKENDS[name]


def detector_info() -> list[dict[str, Any]]:
    """One row per registered backend (default first), from the backends' own class attributes: ``name``,
    ``default``, ``for`` (what it is for), ``input``, ``landmarks``, ``speed``, ``licence``, ``score_threshold``
    (its default)."""
    rows: list[dict[str, Any]] = []
    for name in available_backends():
        try:
            cls = backend_class(name)
        except ModuleNotFoundError as e:  # MTCNN is PyTorch code: a torch-free install lists it as unavailable
            rows.append(
                {
                    "name": name,
                    "default": name == "retinaface",
                    "for": f"not available here: needs {e.name} (pip install 'ferkit[train]')",
                    "input": "",
                    "landmarks": "",
                    "speed": "",
                    "licence": "",
                    "score_threshold": None,
                }
            )
            continue
        rows.append(
            {
                "name": name,
                "default": name == "retinaface",
                "for": cls.summary,
                "input": cls.input_desc,
                "landmarks": "5 detected" if cls.has_landmarks else "none (estimated from the box; align crops)",
                "speed": cls.speed,
                "licence": cls.licence,
                "score_threshold": cls.default_score_threshold,
            }
        )
    return rows


def as_rgb_uint8(image: Any, what: str = "image") -> np.ndarray:
    """Coerce a detector input to a C-contiguous uint8 (H, W, 3) RGB array, or raise a one-line DataError.

    Accepted: uint8 arrays (H, W, 3) RGB, (H, W) or (H, W, 1) grey, (H, W, 4) RGBA (alpha dropped), and
    PIL images (converted like :func:`ferkit.faces.load_image` does).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None  # type: ignore[assignment]  # pillow is a dependency: this fallback is never taken
    if Image is not None and isinstance(image, Image.Image):
        from ferkit.faces.io import pil_to_rgb

        return pil_to_rgb(image, what)
    if not isinstance(image, np.ndarray):
        raise DataError(
            f"{what}: expected a uint8 numpy array (H, W, 3) RGB or a PIL image, got {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise DataError(
            f"{what}: expected dtype uint8 (0..255), got {image.dtype}; scale to 0..255 and cast with .astype(np.uint8)"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise DataError(
            f"{what}: expected shape (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA, got {tuple(image.shape)}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"{what}: empty image {tuple(image.shape)}")
    return np.ascontiguousarray(image)


def fit_long_side(image: np.ndarray, max_size: int | None) -> tuple[np.ndarray, float, float]:
    """Downscale so the long side is at most ``max_size``; returns (image, sx, sy) where multiplying original
    coordinates by (sx, sy) gives coordinates in the returned image. Area averaging from half size down
    (no aliasing); bilinear above it, ~6x cheaper and measured to keep the same faces and labels (0.987 same
    label as full-size detection on the fer_vs_ferkit photos, area averaging: 0.985)."""
    h, w = image.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return image, 1.0, 1.0
    import cv2

    f = max_size / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if f <= 0.5 else cv2.INTER_LINEAR), nw / w, nh / h


class FaceDetector(abc.ABC):
    """Finds faces in RGB uint8 images. Make one with :meth:`FaceDetector.create`.

    Subclasses implement :meth:`_detect_many` on images already downscaled to ``max_size``; this class
    validates inputs, downscales, maps results back to the input's pixel grid, drops faces smaller than
    ``min_face`` or scoring under ``score_threshold``, and sorts by score (highest first).
    """

    name: ClassVar[str] = "?"
    #: False for backends whose landmarks are estimated from the box.
    has_landmarks: ClassVar[bool] = True
    #: ``onnx`` or ``torch`` in a backend that has both graphs (see :meth:`_chosen_runtime`), else None
    runtime: str | None = None
    default_score_threshold: ClassVar[float] = 0.5
    # What `ferkit detectors` says about a backend (from here, the one place): what it is for, the input it
    # works on, a speed class (fast / medium / slow on a CPU at 640x480) and the weights' licence.
    summary: ClassVar[str] = ""
    input_desc: ClassVar[str] = ""
    speed: ClassVar[str] = ""
    licence: ClassVar[str] = ""

    def __init__(
        self,
        device: Any = "cpu",
        score_threshold: float | None = None,
        min_face: float = 20,
        max_size: int | None = DEFAULT_MAX_SIZE,
        batch_size: int = 16,
    ):
        from ferkit.utils import resolve_device

        st = self.default_score_threshold if score_threshold is None else score_threshold
        if not (isinstance(st, (int, float)) and 0.0 <= float(st) <= 1.0):
            raise ConfigError(f"face detector score_threshold must be in [0, 1], got {score_threshold!r}")
        if not (isinstance(min_face, (int, float)) and min_face >= 0 and math.isfinite(min_face)):
            raise ConfigError(f"face detector min_face must be a size in pixels >= 0, got {min_face!r}")
        lo, hi = defaults.DET_SIZE_RANGE  # the range AnalyzerSettings.det_size takes: one range, two doors
        if max_size is not None and (not isinstance(max_size, int) or not lo <= max_size <= hi):
            raise ConfigError(f"face detector max_size must be an integer from {lo} to {hi} or None, got {max_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"face detector batch_size must be an integer >= 1, got {batch_size!r}")
        # "cpu" (the default) is kept as a name until something asks for the torch.device: a backend running
        # on ONNX Runtime then never imports torch. Any other name is checked now.
        self._device_name = device
        self._device = None if device == "cpu" else resolve_device(device)
        self.score_threshold = float(st)
        self.min_face = float(min_face)
        self.max_size = max_size
        self.batch_size = batch_size
        self._sessions: dict[int, Any] = {}  # ONNX Runtime sessions by intra-op thread count (_session_for)

    # The options only some backends take, checked here so that every backend words them the same way.
    def _checked_nms_iou(self, nms_iou: Any) -> float:
        """``nms_iou`` as a float in (0, 1], or a one-line ConfigError naming this detector."""
        if not (isinstance(nms_iou, (int, float)) and 0.0 < nms_iou <= 1.0):
            raise ConfigError(f"{self.name} nms_iou must be in (0, 1], got {nms_iou!r}")
        return float(nms_iou)

    def _chosen_runtime(self, runtime: Any) -> str:
        """The runtime a backend with both graphs runs on: ``onnx`` when asked, or for ``auto`` on the CPU with
        onnxruntime installed; else ``torch``. Anything but auto/torch/onnx is a one-line ConfigError."""
        if runtime not in RUNTIMES:
            raise ConfigError(f"{self.name} runtime {runtime!r}: use auto, torch or onnx")
        from ferkit.utils import installed

        if runtime == "onnx" or (runtime == "auto" and self.on_cpu and installed("onnxruntime")):
            return "onnx"
        return "torch"

    def _session_for(self, threads: int) -> Any:
        """This detector's ONNX Runtime session with ``threads`` intra-op threads (made once per count, from
        :meth:`_onnx_graph`)."""
        if threads not in self._sessions:
            with _SESSION_LOCK:
                if threads not in self._sessions:
                    from ferkit.utils import ort_session

                    self._sessions[threads] = ort_session(self._onnx_graph(), threads)
        return self._sessions[threads]

    def _onnx_graph(self) -> Any:
        """The ONNX graph file of a backend that runs on ONNX Runtime."""
        raise NotImplementedError(f"{self.name} has no ONNX graph")

    @property
    def device(self):
        """The ``torch.device`` this backend runs on (resolved, and torch imported, on first use)."""
        if self._device is None:
            from ferkit.utils import resolve_device

            self._device = resolve_device(self._device_name)
        return self._device

    @property
    def concurrent_calls(self) -> bool:
        """True when :meth:`detect` may be called from several threads at once, each call using one core inside
        :func:`ferkit.utils.one_core` (the analyzer then spreads images over the cores): on ONNX Runtime."""
        return self.runtime == "onnx"

    @property
    def on_cpu(self) -> bool:
        """Whether this backend runs on the CPU (answered without importing torch for ``device="cpu"``)."""
        return self._device is None or self._device.type == "cpu"

    @staticmethod
    def create(
        name: str = "retinaface",
        device: Any = "cpu",
        score_threshold: float | None = None,
        min_face: float = 20,
        **kwargs: Any,
    ) -> FaceDetector:
        """A detector by backend name (see :func:`available_backends`); ConfigError for an unknown name.

        ``score_threshold`` defaults to the backend's own (retinaface 0.8, mtcnn 0.7, haar 0.0);
        ``min_face`` is the smallest face kept, as the box's shorter side in input pixels;
        ``max_size`` (default 1280) caps the long side an image is downscaled to before detection.
        """
        names = available_backends()
        key = str(name).lower().strip()
        if key not in names:
            raise ConfigError(f"unknown face detector {name!r}: choose one of {', '.join(names)}")
        try:
            return backend_class(key)(device=device, score_threshold=score_threshold, min_face=min_face, **kwargs)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
            raise ConfigError(
                f"face detector {key!r}: {e.args[0].split('() ')[-1]}; see ferkit/faces/README.md for its options"
            ) from None

    def detect(self, image: Any) -> list[Face]:
        """Faces in one RGB uint8 (H, W, 3) image, highest score first (empty list when none)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[Any]) -> list[list[Face]]:
        """:meth:`detect` for many images; same-sized images share forward passes where the backend can."""
        arrays = [as_rgb_uint8(im, f"image {i}") for i, im in enumerate(images)]
        if not arrays:
            return []
        fitted = [fit_long_side(a, self.max_size) for a in arrays]
        raw = self._detect_many([f[0] for f in fitted], [min(f[1], f[2]) for f in fitted])
        out: list[list[Face]] = []
        for faces, (_, sx, sy) in zip(raw, fitted, strict=True):
            if sx != 1.0 or sy != 1.0:
                faces = [f.scaled(1.0 / sx, 1.0 / sy) for f in faces]
            faces = [f for f in faces if f.score >= self.score_threshold and f.size >= self.min_face]
            faces.sort(key=lambda f: -f.score)
            out.append(faces)
        return out

    __call__ = detect

    @abc.abstractmethod
    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        """Faces per image (RGB uint8, long side <= max_size), in that image's pixels, any order.

        ``scales[i]`` is how much image i was downscaled (1.0 = not), so ``min_face * scales[i]`` is the
        smallest face that matters in it. May return faces under ``score_threshold`` / ``min_face``: the
        caller filters.
        """

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(device={str(self.device)!r}, score_threshold={self.score_threshold}, "
            f"min_face={self.min_face:g}, max_size={self.max_size})"
        )


def batched_nms(boxes, scores, groups, iou_threshold: float):
    """Greedy non-maximum suppression within each group (torchvision.ops.batched_nms's contract: indices kept,
    by decreasing score; a box is dropped when its IoU with a kept box of its group exceeds the threshold).

    numpy arrays in, an int64 index array out; torch tensors in, a long tensor on their device out. Our own,
    so that detecting faces imports neither torchvision (~1.8 s of CPU at start-up) nor, on ONNX Runtime,
    torch. The detectors keep at most a few hundred candidates after their score threshold, where the IoU
    matrix is small; the tests check it against torchvision's."""
    as_torch = not isinstance(boxes, np.ndarray)
    if as_torch:
        import torch

        device = boxes.device
        boxes, scores, groups = (t.detach().cpu().numpy() for t in (boxes, scores, groups))
    keep = _nms_numpy(
        np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(groups), float(iou_threshold)
    )
    return torch.as_tensor(keep, dtype=torch.long, device=device) if as_torch else keep


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, thr: float) -> np.ndarray:
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    # Boxes of different groups are moved apart so they never overlap (the offset trick torchvision uses).
    b = boxes + groups.astype(np.float32)[:, None] * (boxes.max() + 1)
    order = np.argsort(-scores, kind="stable")
    b = b[order]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    over = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-12) > thr
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return order[np.asarray(keep, dtype=np.int64)]


def group_by_shape(images: Sequence[np.ndarray], limit: int) -> list[list[int]]:
    """Indices of same-shaped images, in chunks of at most ``limit``: one forward pass each."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    out = []
    for idx in groups.values():
        out += [idx[k : k + limit] for k in range(0, len(idx), limit)]
    return out
