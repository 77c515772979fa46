"""The inference settings as one object: which models, how faces are found and cropped, where it runs.

    from ferkit.inference.settings import AnalyzerSettings
    s = AnalyzerSettings(detector="mtcnn", det_size=320)        # validated here, once
    s.replace(crop="box")                                       # a new, validated object
    AnalyzerSettings.from_dict(s.to_dict()) == s                # what the server and the Ray actors travel with

The CLI (:func:`ferkit.cli.predict.settings_from_args`), the Python API's keyword arguments, the server's
``ServeConfig.settings`` and the Ray engine's actors all build or carry this object;
:func:`ferkit.inference.pipeline.build_analyzer` turns it into an Analyzer, and the API's analyzer cache is keyed
by it. A new knob is one field here (default from :mod:`ferkit.defaults`, a check in ``_check``) and its use in
the Analyzer. No torch here: the CLI and the server import it before any model loads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ferkit import defaults
from ferkit.errors import ConfigError

__all__ = ["AnalyzerSettings", "VideoOptions"]


@dataclass(frozen=True)
class AnalyzerSettings:
    """Everything that decides what an analyzer answers for a photo (frozen, hashable, validated once).

    ``models``: one reference or several (an ensemble): zoo name, checkpoint file, run folder, ``.onnx`` file
    (a loaded checkpoint dict or a ``Classifier`` also works, but is not cached by value). ``detect=False``:
    each input is one face crop. ``detector``: a registered detector name (:func:`ferkit.faces.available_backends`)
    or a ready ``FaceDetector``. ``det_size``: the long side photos are shrunk to for detection (None: the
    detector's own 1280). ``crop``: align | box. ``backend``: auto | torch | onnx. ``batch_size``: faces per
    classifier forward. ``device``: cpu, cuda, cuda:N, mps. ``gallery``: an identity gallery to name each face.
    ``workers``: images decoded and detected at once (None: one per core). ``attributes``: the per-face
    attributes of :mod:`ferkit.attributes` to add (names, a comma string, ``"all"`` or ``"none"``; default none:
    ``all`` costs about as much as the whole default pipeline). ``spoof_threshold``: anti-spoofing where identity
    is assigned (None: off; the CLI's ``--anti-spoof`` gives ``defaults.SPOOF_THRESHOLD``): each face is scored
    (the ``spoof`` attribute is added) and one scoring below it gets no identity, with the reason.
    """

    models: Any = defaults.MODEL
    detect: bool = True
    detector: Any = defaults.DETECTOR
    det_size: int | None = defaults.DET_SIZE
    crop: str = defaults.CROP
    backend: str = defaults.BACKEND
    batch_size: int = defaults.BATCH_SIZE
    device: str = defaults.DEVICE
    gallery: str | None = None
    workers: int | None = None
    attributes: Any = ()
    spoof_threshold: float | None = None  # anti-spoofing: None off; see the class docstring

    def __post_init__(self) -> None:
        models = self.models
        if isinstance(models, (str, os.PathLike)) or not isinstance(models, (list, tuple)):
            models = (models,)
        models = tuple(str(m) if isinstance(m, os.PathLike) else m for m in models)
        gallery = os.fspath(self.gallery) if isinstance(self.gallery, os.PathLike) else self.gallery
        detector = self.detector.lower().strip() if isinstance(self.detector, str) else self.detector
        object.__setattr__(self, "models", models)
        object.__setattr__(self, "gallery", gallery)
        object.__setattr__(self, "detector", detector)
        attributes = parse_attributes(self.attributes)
        if self.spoof_threshold is not None and isinstance(attributes, tuple):  # the score anti-spoofing reads
            attributes = parse_attributes((*attributes, "spoof"))
        object.__setattr__(self, "attributes", attributes)
        for f in dataclasses.fields(self):
            problem = _check(f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{f.name} {getattr(self, f.name)!r}: {problem}")

    def replace(self, **changes: Any) -> AnalyzerSettings:
        """A copy with these fields changed (validated again); an unknown name is one ConfigError line."""
        unknown = sorted(set(changes) - set(FIELDS))
        if unknown:
            raise ConfigError(f"unknown analyzer setting {unknown[0]!r}: choose from {', '.join(FIELDS)}")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(
        cls, settings: AnalyzerSettings | None = None, models: Any = None, /, *, fast: bool = False, **changes: Any
    ) -> AnalyzerSettings:
        """``settings`` (default: the defaults) with ``models`` (when given) and ``changes``: how the API's and
        the Analyzer's keyword arguments become one object (``changes`` may name ``models`` too). ``fast``: the
        fast mode (``--fast``), :data:`ferkit.defaults.FAST` laid over ``settings`` first, so ``models`` and
        ``changes`` still override it."""
        if models is not None:
            changes["models"] = models
        base = settings or cls()
        return (base.replace(**defaults.FAST) if fast else base).replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (models as a list) for the server's config and the Ray actors."""
        if not all(isinstance(m, str) for m in self.models) or not isinstance(self.detector, str):
            raise ConfigError(
                "analyzer settings with a loaded model or detector object cannot be sent elsewhere: "
                "give models and the detector by name"
            )
        d = dataclasses.asdict(self)
        d["models"] = list(self.models)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnalyzerSettings:
        """The settings :meth:`to_dict` wrote (unknown keys are one ConfigError line)."""
        return cls().replace(**d)

    @property
    def model(self) -> Any:
        """The one model, or the list of an ensemble (as the API's ``model`` argument takes it)."""
        return self.models[0] if len(self.models) == 1 else list(self.models)


def parse_attributes(v: Any) -> Any:
    """The one reading of an ``attributes`` value (CLI, HTTP query, API): ``"all"``, ``"none"``, ``""``, a comma
    string or a sequence of names -> a tuple of names in :data:`ferkit.attributes.ATTRIBUTES` order (an unknown
    name is kept, for ``_check`` to name it)."""
    if v is None:
        return ()
    if isinstance(v, str):
        key = v.strip().lower()
        if key in ("", "none"):
            return ()
        if key == "all":
            from ferkit.attributes import ATTRIBUTES

            return tuple(ATTRIBUTES)
        v = key.split(",")
    if not isinstance(v, (list, tuple, set, frozenset)):
        return v
    from ferkit.attributes import ATTRIBUTES

    names = [str(n).strip().lower() for n in v if str(n).strip()]
    return tuple(a for a in ATTRIBUTES if a in names) + tuple(dict.fromkeys(n for n in names if n not in ATTRIBUTES))


FIELDS = tuple(f.name for f in dataclasses.fields(AnalyzerSettings))


@dataclass(frozen=True)
class VideoOptions:
    """How a video (or webcam) is read and its tracks reported, beside the :class:`AnalyzerSettings` that say what
    each frame's faces get (frozen, validated once; defaults from :mod:`ferkit.defaults`).

    ``stride``: analyse every N-th frame. ``detect_every``: the face detector runs on every N-th analysed frame,
    faces are followed by optical flow in between (1: every frame). ``smooth``: ALPHA of each track's EMA of
    probabilities, age and gender score (0 < ALPHA <= 1; None: raw per-frame values). ``max_frames``: stop after
    this many frames (None: to the end). Built once by the API's keyword arguments
    (``ferkit.predict(..., detect_every=4)``) or the CLI's flags (:func:`ferkit.cli.predict.video_options_from_args`)
    and passed down as one object; a bad value is one ConfigError line naming the CLI flag.
    """

    stride: int = defaults.STRIDE
    detect_every: int = defaults.DETECT_EVERY
    smooth: float | None = defaults.SMOOTH
    max_frames: int | None = defaults.MAX_FRAMES

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if fix := _check_video(f.name, v):  # named as the CLI flag: the API's keyword reads the same
                raise ConfigError(f"--{f.name.replace('_', '-')} {v!r}: {fix}")

    @classmethod
    def of(cls, options: VideoOptions | None = None, /, **changes: Any) -> VideoOptions:
        """``options`` (default: the defaults) with ``changes`` laid over (an unknown name is one ConfigError)."""
        unknown = sorted(set(changes) - set(VIDEO_FIELDS))
        if unknown:
            raise ConfigError(f"unknown video option {unknown[0]!r}: choose from {', '.join(VIDEO_FIELDS)}")
        return dataclasses.replace(options or cls(), **changes) if changes else options or cls()


VIDEO_FIELDS = tuple(f.name for f in dataclasses.fields(VideoOptions))


def _check_video(name: str, v: Any) -> str | None:
    """What is wrong with value ``v`` of video option ``name`` (the fix), or None."""
    if name == "stride":
        return None if _is_int(v) and v >= 1 else "give an integer >= 1"
    if name == "detect_every":
        return None if _is_int(v) and v >= 1 else "give an integer >= 1 (1: detect on every frame)"
    if name == "smooth":
        ok = v is None or isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 1
        return None if ok else "give ALPHA in (0, 1] (1 = no smoothing)"
    if name == "max_frames":
        return None if v is None or _is_int(v) and v >= 1 else "give an integer >= 1 (or leave it out: every frame)"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check(name: str, v: Any) -> str | None:
    """What is wrong with value ``v`` of setting ``name`` (the fix, as the second half of the line), or None."""
    if name == "models":
        return (
            None
            if v and all(isinstance(m, str) and m or not isinstance(m, str) for m in v)
            else "give at least one model (zoo name, checkpoint, run folder or .onnx; `ferkit zoo list`)"
        )
    if name == "detect":
        return None if isinstance(v, bool) else "give True or False"
    if name == "detector":
        from ferkit.faces.base import FaceDetector, available_backends

        names = available_backends()  # the registry: a newly registered detector is a valid name at once
        return None if isinstance(v, FaceDetector) or v in names else f"choose one of {', '.join(names)}"
    if name == "det_size":
        lo, hi = defaults.DET_SIZE_RANGE
        return (
            None
            if v is None or _is_int(v) and lo <= v <= hi
            else f"give a long side in pixels from {lo} to {hi} (or None: the detector's own)"
        )
    if name == "crop":
        return None if v in defaults.CROPS else f"choose one of {', '.join(defaults.CROPS)}"
    if name == "backend":
        from ferkit.inference.backends import BACKENDS

        return None if v in BACKENDS else f"choose one of {', '.join(BACKENDS)}"
    if name in ("batch_size", "workers"):
        return None if _is_int(v) and v >= 1 or (name == "workers" and v is None) else "give an integer >= 1"
    if name == "device":
        return None if isinstance(v, str) and v.strip() else "give cpu, cuda, cuda:N or mps"
    if name == "gallery":
        return None if v is None or isinstance(v, str) and v else "give the path of a gallery (ferkit enroll)"
    if name == "spoof_threshold":
        from ferkit.attributes import spoof_threshold_problem

        return None if v is None else spoof_threshold_problem(v)
    if name == "attributes":
        from ferkit.attributes import ATTRIBUTES

        return (
            None
            if isinstance(v, tuple) and all(n in ATTRIBUTES for n in v)
            else f"choose from {', '.join(ATTRIBUTES)} (comma-separated), all or none"
        )
    return None
