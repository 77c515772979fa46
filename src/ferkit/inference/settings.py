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

__all__ = ["AnalyzerSettings"]


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
    ``all`` costs about as much as the whole default pipeline).
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
        object.__setattr__(self, "attributes", parse_attributes(self.attributes))
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
    if name == "attributes":
        from ferkit.attributes import ATTRIBUTES

        return (
            None
            if isinstance(v, tuple) and all(n in ATTRIBUTES for n in v)
            else f"choose from {', '.join(ATTRIBUTES)} (comma-separated), all or none"
        )
    return None
