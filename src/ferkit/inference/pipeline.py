"""Photos in, faces with expressions out: detect -> align -> classify, batched across images.

    from ferkit.inference.pipeline import Analyzer
    an = Analyzer("fer_minixception", detector="retinaface")        # or ["fer_minixception", "human_xception"]
    result = an.analyze(img_or_path)                                 # FileResult: .faces, .to_dict()
    for file_result in an.analyze_paths(paths):                      # decoded and detected on all cores
        print(file_result.to_dict())

Models are checkpoint paths, zoo names, loaded checkpoint dicts or ``.onnx`` files written by
``ferkit export``. Several models make an ensemble: probabilities are averaged over the common class
vocabulary (:func:`ferkit.zoo.vocab.ensemble_probs`, union mode, so rows still sum to 1). Each model gets the
face aligned to its own InputSpec (size, channels): a similarity warp of the detector's five landmarks onto
the ArcFace template (``crop="align"``, default), or a square box crop (``crop="box"``; also what faces with
estimated landmarks get).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from ferkit import defaults
from ferkit.errors import DataError
from ferkit.faces.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from ferkit.faces.io import is_video_path as is_video
from ferkit.inference.backends import Classifier, fuse_classifiers, make_classifier
from ferkit.inference.settings import AnalyzerSettings, VideoOptions
from ferkit.schema import FaceResult, FileResult
from ferkit.utils import atomic_write_bytes, check_output

__all__ = [
    "Analyzer",
    "AnalyzerSettings",
    "Classifier",
    "build_analyzer",
    "cached_analyzer",
    "expand_inputs",
    "is_video",
    "make_classifier",
]


# --------------------------------------------------------------------------------------------
# the analyzer


def _face_for_full_image(img: np.ndarray):
    from ferkit.faces import Face

    h, w = img.shape[:2]
    return Face((0, 0, w, h), 1.0, np.zeros((5, 2), np.float32), landmarks_estimated=True)


class Analyzer:
    """A face detector + one or more expression classifiers (an ensemble when several), built from one
    :class:`~ferkit.inference.settings.AnalyzerSettings` (``settings``), with ``models`` and any of its fields
    given as keyword arguments laid over it (``Analyzer("fer_minixception", det_size=320)``); ``self.settings``
    is what it was built with.

    ``models``: one model or a list (see :func:`make_classifier`). ``detector``: ``retinaface`` | ``mtcnn`` |
    ``haar`` or a :class:`~ferkit.faces.FaceDetector`; ``detect=False`` treats every image as one face crop.
    ``crop``: ``align`` (landmark warp; default) or ``box``. ``batch_size``: faces per classifier forward.
    ``det_size``: long side images are downscaled to for detection (default 640, ``defaults.DET_SIZE``;
    None: the detector's ``max_size``, 1280). The speed knob: RetinaFace at 320 is ~3x cheaper than at 640
    and still finds faces down to ~16 px at detection scale (~32 px in a 640x480 photo); results are always in
    original pixels, and files larger than ``det_size`` are reported ``downscaled``. ``workers``: images decoded
    and detected at once by :meth:`analyze_paths` and :meth:`detect` (default: one per core, each on one core;
    1 with detectors that do not allow parallel calls).
    """

    def __init__(
        self,
        models: Any = None,
        *,
        settings: AnalyzerSettings | None = None,
        identity: Any = None,
        margin: float = 0.0,
        detector_options: dict | None = None,
        **knobs: Any,
    ):
        from ferkit.faces import FaceDetector

        # One validated object: ``settings``, with ``models`` and the keyword arguments (detector, det_size, ...)
        # laid over it (AnalyzerSettings checks every value, once).
        s = self.settings = AnalyzerSettings.of(settings, models, **knobs)
        self._workers = s.workers
        self._executor = None  # the pool of analyze_paths / detect, made on first use
        self.classifiers = [make_classifier(m, backend=s.backend, device=s.device) for m in s.models]
        fused = fuse_classifiers(self.classifiers)
        if fused is not None:  # an ensemble on ONNX Runtime: one session, one graph, one input (same probabilities)
            self.classifiers = [fused]
        self.detect_faces = s.detect
        self.detector = None
        if self.detect_faces:
            opts = dict(detector_options or {})
            if s.det_size is not None:
                opts["max_size"] = s.det_size
            self.detector = (
                s.detector
                if isinstance(s.detector, FaceDetector)
                else FaceDetector.create(s.detector, device=s.device, **opts)
            )
        self.batch_size = s.batch_size
        self.crop = s.crop
        # Optional ferkit.identity.verify.IdentityAssigner: fills FaceResult.identity (predict --gallery).
        self.identity = identity
        self.margin = float(margin)
        if len(self.classifiers) == 1:
            self.classes = list(self.classifiers[0].classes)
        else:
            from ferkit.zoo.vocab import ensemble_probs

            dummy = [(np.full(len(c.classes), 1 / len(c.classes)), c.classes) for c in self.classifiers]
            self.classes = ensemble_probs(dummy, mode="union")[1]
        # Provenance written into every FileResult: which model(s) and detector produced it.
        self.model_name = "+".join(c.name for c in self.classifiers)
        if self.detector is None:
            self.detector_name = "none"
        else:
            self.detector_name = self.detector.name + (f"@{self.det_size}" if self.det_size else "")

    @property
    def det_size(self) -> int | None:
        """The long side photos are shrunk to for detection (the detector's own when not set); None without
        detection."""
        return None if self.detector is None else self.detector.max_size

    # ---------------------------------------------------------------- core
    def _chip(self, img: np.ndarray, face, spec) -> np.ndarray:
        from ferkit.faces import align, crop

        if not self.detect_faces:
            import cv2

            h, w = spec.size
            out = (
                img
                if img.shape[:2] == (h, w)
                else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)
            )
            if spec.channels == 1:
                out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[:, :, None]
            return out
        if self.crop == "box" or face.landmarks_estimated:
            return crop(img, face, margin=self.margin, size=spec.size, channels=spec.channels)
        return align(img, face, size=spec.size, channels=spec.channels, margin=self.margin)

    @property
    def workers(self) -> int:
        """Images analysed at once: ``workers`` (default one per core) when the detector allows parallel
        calls (RetinaFace on ONNX Runtime), each call on one core; else 1 (the detector's own batching and
        threads)."""
        if self.detect_faces and getattr(self.detector, "concurrent_calls", False):
            from ferkit.utils import cpu_threads

            return self._workers or max(1, cpu_threads())
        return 1

    def _pool(self):
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max(1, self.workers), thread_name_prefix="ferkit-analyze")
        return self._executor

    def _detect_one(self, image: np.ndarray) -> list:
        from ferkit.utils import one_core

        with one_core():
            assert self.detector is not None  # detect_faces
            return self.detector.detect_batch([image])[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[list]:
        """Faces in each image (original pixels, best first); several images run on all cores when the
        detector allows parallel calls."""
        if not self.detect_faces:
            return [[_face_for_full_image(im)] for im in images]
        if self.workers > 1 and len(images) > 1:
            return list(self._pool().map(self._detect_one, images))
        assert self.detector is not None  # detect_faces
        return self.detector.detect_batch(list(images))

    def classify(self, images: Sequence[np.ndarray], faces_per_image: Sequence[Sequence]) -> list[list[dict]]:
        """Probabilities (over :attr:`classes`) and valence/arousal for every face, batched across images."""
        pairs = [(i, f) for i, fs in enumerate(faces_per_image) for f in fs]
        if not pairs:
            return [[] for _ in images]
        vas: list[np.ndarray | None]
        members, vas = [], []
        chip_cache: dict[tuple, np.ndarray] = {}
        for clf in self.classifiers:
            key = (tuple(clf.spec.size), clf.spec.channels)
            if key not in chip_cache:
                chip_cache[key] = np.stack([self._chip(images[i], f, clf.spec) for i, f in pairs])
            chips = chip_cache[key]
            va: list[Any]
            ps, va = [], []
            for a in range(0, len(chips), self.batch_size):
                p, v = clf.predict(chips[a : a + self.batch_size])
                ps.append(p)
                va.append(v)
            members.append((np.concatenate(ps), clf.classes))
            vas.append(np.concatenate(va) if all(v is not None for v in va) else None)
        if len(members) == 1:
            probs = members[0][0].astype(np.float64)
        else:
            from ferkit.zoo.vocab import ensemble_probs

            probs, _ = ensemble_probs(members, mode="union")
        have_va = [v for v in vas if v is not None]
        va_mean = np.mean(have_va, axis=0) if have_va else None
        out: list[list[dict]] = [[] for _ in images]
        for k, (i, _f) in enumerate(pairs):
            out[i].append({"probs": probs[k], "va": None if va_mean is None else va_mean[k]})
        return out

    def _results(self, source: str, faces, preds, frame=None, timestamp=None) -> list[FaceResult]:
        res = []
        for j, (f, p) in enumerate(zip(faces, preds, strict=True)):
            k = int(np.argmax(p["probs"]))
            res.append(
                FaceResult(
                    source=source,
                    face=j,
                    box=f.box,
                    landmarks=None if not self.detect_faces else f.landmarks,
                    landmarks_estimated=f.landmarks_estimated,
                    det_score=f.score,
                    label=self.classes[k],
                    score=float(p["probs"][k]),
                    probabilities={c: float(v) for c, v in zip(self.classes, p["probs"], strict=True)},
                    valence=None if p["va"] is None else float(p["va"][0]),
                    arousal=None if p["va"] is None else float(p["va"][1]),
                    frame=frame,
                    timestamp=timestamp,
                )
            )
        return res

    def process(
        self,
        images: Sequence[np.ndarray],
        sources: Sequence[str],
        frames=None,
        timestamps=None,
        faces: Sequence[list] | None = None,
        attributes: Sequence[tuple[str, ...] | None] | None = None,
    ) -> list[list[FaceResult]]:
        """Detect + classify a batch of RGB uint8 images; one list of FaceResult per image. ``faces``: the
        images' detections when already made (:meth:`detect`). ``attributes``: per image, the attribute names to
        describe when not ``settings.attributes`` (None: the settings'; the server's per-request override)."""
        from ferkit.utils import one_core

        faces = self.detect(images) if faces is None else list(faces)
        # with detection workers keeping the other cores busy, classify on this one
        with one_core() if self.workers > 1 else contextlib.nullcontext():
            preds = self.classify(images, faces)
        frames = frames or [None] * len(images)
        timestamps = timestamps or [None] * len(images)
        out = [
            self._results(s, f, p, fr, ts)
            for s, f, p, fr, ts in zip(sources, faces, preds, frames, timestamps, strict=True)
        ]
        per_image = [self.settings.attributes if a is None else a for a in attributes or [None] * len(images)]
        if any(per_image):  # one describe per photo, with all its faces (--no-detect: crop-only)
            from ferkit.attributes import describe

            for img, fs, rs, names in zip(images, faces, out, per_image, strict=True):
                if fs and names:  # an image asked for none (a request's ?attributes=none) keeps its faces bare
                    rows = describe(img, fs if self.detect_faces else None, list(names))
                    for r, attrs in zip(rs, rows, strict=True):
                        r.attributes = attrs
        if self.identity is not None:
            spoof_t = self.settings.spoof_threshold
            for img, fs, rs in zip(images, faces, out, strict=True):
                for r, ident in zip(rs, self.identity.assign(img, fs), strict=True):
                    if spoof_t is not None:  # the spoof attribute was described above (the settings add it)
                        from ferkit.attributes import spoof_verdict

                        a = r.attributes or {}
                        v = spoof_verdict(a.get("spoof_score"), spoof_t, (a.get("reasons") or {}).get("spoof"))
                        if v["spoof"]:  # no identity for a face that may be a photo of a photo
                            ident = {"name": None, "distance": None, "threshold": ident["threshold"], "match": False}
                        ident = {**ident, "spoof": v["spoof"], "reason": v["spoof_reason"]}
                    r.identity = ident
        return out

    def was_downscaled(self, image: np.ndarray) -> bool:
        ms = self.det_size
        return bool(ms and max(image.shape[:2]) > ms)

    # ---------------------------------------------------------------- public
    def file_result(
        self,
        path: str,
        image: np.ndarray | None = None,
        faces: list[FaceResult] | None = None,
        error: str | None = None,
        kind: str = "image",
    ) -> FileResult:
        """The :class:`FileResult` of one input, with status, reason and this analyzer's provenance."""
        fr = FileResult(path=path, kind=kind, model=self.model_name, detector=self.detector_name)
        if error is not None:
            fr.status, fr.reason = "error", error
            return fr
        if image is not None:
            h, w = image.shape[:2]
            fr.image_size, fr.downscaled = (w, h), self.was_downscaled(image)
        fr.faces = list(faces or [])
        if not fr.faces and kind == "image":
            fr.status, fr.reason = "no_face", "no face found"
        if fr.downscaled:
            assert fr.image_size is not None and self.detector is not None  # downscaled: both known
            note = f"downscaled from {fr.image_size[0]}x{fr.image_size[1]} to long side {self.det_size} for detection"
            fr.reason = f"{fr.reason}; {note}" if fr.reason else note
        return fr

    def analyze(self, image: Any, source: str | None = None) -> FileResult:
        """Every face in one image (path, RGB uint8 array or PIL image), highest detector score first, as a
        :class:`FileResult` (``.faces``); an unreadable path raises :class:`DataError`."""
        from ferkit.faces import load_image
        from ferkit.faces.base import as_rgb_uint8

        if isinstance(image, (str, os.PathLike)):
            source = source or str(image)
            image = load_image(image)
        else:
            image = as_rgb_uint8(image)
        source = source or "<array>"
        return self.file_result(source, image, self.process([image], [source])[0])

    @overload
    def analyze_paths(
        self,
        paths: Iterable[str | os.PathLike],
        group: int = ...,
        prefetch: int = ...,
        return_images: Literal[False] = ...,
        loader: Any = ...,
    ) -> Iterator[FileResult]: ...
    @overload
    def analyze_paths(
        self,
        paths: Iterable[str | os.PathLike],
        group: int = ...,
        prefetch: int = ...,
        *,
        return_images: Literal[True],
        loader: Any = ...,
    ) -> Iterator[tuple[FileResult, np.ndarray | None]]: ...

    def analyze_paths(
        self,
        paths: Iterable[str | os.PathLike],
        group: int = 8,
        prefetch: int = 16,
        return_images: bool = False,
        loader: Any = None,
    ) -> Iterator[Any]:
        """One :class:`FileResult` per image path, in order. Pool threads decode (and, with a detector that
        allows parallel calls, detect: one image per core) up to ``prefetch`` images ahead, while this thread
        classifies groups of up to ``group`` finished images (their faces go through the classifier together).
        Unreadable files become ``status="error"`` with a one-line reason; images without a face
        ``status="no_face"``. ``return_images``: yield ``(FileResult, image or None)``.
        ``loader``: path -> RGB uint8 array (default :func:`ferkit.faces.load_image`; the Ray engine passes one
        that also reads URIs)."""
        from collections import deque

        from ferkit.faces import load_image

        load = loader or load_image
        parallel = self.workers > 1

        def prepare(p):
            """In a pool thread: decode (and detect, when the detector allows parallel calls)."""
            try:
                img = load(p)
            except DataError as e:
                return str(p), None, None, str(e)
            except MemoryError:
                return str(p), None, None, f"{p}: image too large to decode in memory"
            except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem
                return str(p), None, None, f"{p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return str(p), img, self._detect_one(img) if parallel else None, None

        pool = self._pool()
        items = iter(paths)
        pending: deque = deque()
        window = max(1, prefetch, self.workers)

        def fill():
            while len(pending) < window:
                p = next(items, None)
                if p is None:
                    return
                pending.append(pool.submit(prepare, p))

        try:
            fill()
            while pending:
                batch = [pending.popleft().result()]
                while pending and len(batch) < group and pending[0].done():
                    batch.append(pending.popleft().result())
                fill()
                good = [(p, im, fs) for p, im, fs, _err in batch if im is not None]
                per_image = (
                    self.process(
                        [im for _, im, _ in good],
                        [p for p, _, _ in good],
                        faces=[fs for _, _, fs in good] if parallel else None,
                    )
                    if good
                    else []
                )
                found = iter(per_image)
                for p, im, _fs, err in batch:
                    fr = self.file_result(p, error=err) if im is None else self.file_result(p, im, next(found))
                    yield (fr, im) if return_images else fr
        finally:
            for f in pending:  # the caller stopped early: drop what was queued
                f.cancel()


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded recursively to their image and video files (sorted)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            found: list[Path] = []

            def unreadable(e: OSError, found: list[Path] = found) -> None:  # found bound now (B023)
                found.append(Path(e.filename))

            # An unreadable sub-folder becomes an input of its own, so it is reported (status error), not raised.
            for root, _dirs, files in os.walk(p, onerror=unreadable):
                found += [Path(root) / f for f in files if Path(f).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES]
            out += sorted(found)
        else:
            out.append(p)
    return out


def build_analyzer(settings: AnalyzerSettings | None = None) -> Analyzer:
    """The :class:`Analyzer` for ``settings``, with the identity matcher of ``settings.gallery`` when set: the one
    way the API, the CLI, the server and the Ray actors make one."""
    s = settings or AnalyzerSettings()
    identity = None
    if s.gallery is not None:
        from ferkit.identity.verify import IdentityAssigner

        identity = IdentityAssigner(s.gallery, None)
    return Analyzer(settings=s, identity=identity)


# Small on purpose: each entry holds loaded models (an ONNX session or a torch module per model, tens of MB) and
# a detector; a process switches between a handful of settings (a notebook trying det_size values), and an
# unbounded cache kept every analyzer ever asked for alive. The least recently used one goes first.
CACHE_SIZE = 4
_CACHE: OrderedDict[AnalyzerSettings, Analyzer] = OrderedDict()
# One lock around look-up and build: two threads asking for the same settings build once (the second waits and
# gets the first's); builds of different settings wait for each other too, which costs only the first call.
_CACHE_LOCK = threading.Lock()


def cached_analyzer(settings: AnalyzerSettings | None = None) -> Analyzer:
    """:func:`build_analyzer`, built once per settings and reused (the API's entry point); the last
    :data:`CACHE_SIZE` settings stay built. Settings holding a loaded model object are built every time."""
    s = settings or AnalyzerSettings()
    try:
        hash(s)
    except TypeError:  # a loaded checkpoint dict among the models: nothing to key it by
        return build_analyzer(s)
    with _CACHE_LOCK:
        an = _CACHE.get(s)
        if an is None:
            an = _CACHE[s] = build_analyzer(s)
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(s)
        return an


class OutputNames:
    """File stems for one run's per-input outputs (annotated images and videos, per-second CSVs, plots), one
    folder for all: each input gets its own (``a/x.jpg``, ``a/x.png``, ``b/x.jpg`` -> ``x``, ``x-2``, ``x-3``,
    given in input order, compared case-insensitively for case-insensitive file systems), and a stem too long
    for a file name (255 bytes with the longest suffix) is cut and given a hash of the whole path instead."""

    MAX_STEM = 255 - len(".per_second.csv") - 6  # room for the longest suffix and a "-NNNNN"

    def __init__(self):
        self.used: set[str] = set()

    def stem(self, path: str | os.PathLike) -> str:
        import hashlib

        stem = Path(path).stem or "input"
        if len(os.fsencode(stem)) > self.MAX_STEM:
            digest = hashlib.sha1(os.fsencode(str(path))).hexdigest()[:10]
            while len(os.fsencode(stem)) > self.MAX_STEM - 11:  # whole characters, never half of one
                stem = stem[:-1]
            stem += "~" + digest
        name, n = stem, 1
        while name.casefold() in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name.casefold())
        return name


def _spoof_line(analyzer: Analyzer) -> float:
    """The P(real) under which ``--annotate`` tags a face SPOOF: the run's own threshold when anti-spoofing is on."""
    t = analyzer.settings.spoof_threshold
    return defaults.SPOOF_THRESHOLD if t is None else t


def predict_files(
    analyzer: Analyzer,
    paths: Iterable[str | os.PathLike],
    *,
    annotate=None,
    video: VideoOptions | None = None,
    extras_dir=None,
) -> Iterator[FileResult]:
    """One FileResult per input, images first (batched, decoded ahead), then videos, each in the given order.
    ``video``: the videos' :class:`~ferkit.inference.settings.VideoOptions` (stride, detect_every, smooth,
    max_frames; :func:`ferkit.inference.video.analyze_video`), default :mod:`ferkit.defaults`.

    ``annotate``: folder for annotated images/videos; ``extras_dir``: where videos' per-second CSV and plot go
    (default: ``annotate``). The CLI, the Python API and the Ray engine all run photos through here."""
    video = video or VideoOptions()
    paths = list(paths)
    ann = Path(annotate) if annotate else None
    if ann:
        check_output(ann, "--annotate", folder=True)
    extras = Path(extras_dir) if extras_dir else ann
    images = [p for p in paths if not is_video(p)]
    videos = [p for p in paths if is_video(p)]
    names = OutputNames()
    stems = {str(p): names.stem(p) for p in images + videos}  # in input order: the same names every run
    for r, img in analyzer.analyze_paths(images, return_images=True):
        if ann and img is not None and r.faces:
            import cv2

            from ferkit.inference.draw import annotate as draw

            drawn = draw(img, r.faces, spoof_threshold=_spoof_line(analyzer))
            ok, jpg = cv2.imencode(".jpg", drawn)  # encoded here: OpenCV never sees the file name
            if ok:
                atomic_write_bytes(ann / f"{stems[str(r.path)]}.annotated.jpg", jpg.tobytes(), what="--annotate")
        yield r
    if videos:
        from ferkit.inference.video import analyze_video

        for v in videos:
            stem = stems[str(v)]
            try:
                yield analyze_video(
                    analyzer,
                    str(v),
                    video,
                    annotate_dir=ann,
                    annotate_name=f"{stem}.annotated",
                    per_second_csv=extras / f"{stem}.per_second.csv" if extras else None,
                    plot=extras / f"{stem}.emotions.png" if extras else None,
                )
            except DataError as e:
                yield analyzer.file_result(str(v), error=str(e), kind="video")
