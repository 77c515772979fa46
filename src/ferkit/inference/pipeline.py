"""Photos in, faces with expressions out: detect -> align -> classify, batched across images.

    from ferkit.inference.pipeline import Analyzer
    an = Analyzer("fer_minixception", detector="retinaface")        # or ["fer_minixception", "human_xception"]
    faces = an.analyze(img_or_path)                                  # list[FaceResult]
    for file_result in an.analyze_paths(paths):                      # decoding runs in a background thread
        print(file_result.to_dict())

Models are checkpoint paths, zoo names, loaded checkpoint dicts or ``.onnx`` files written by
``ferkit export``. Several models make an ensemble: probabilities are averaged over the common class
vocabulary (:func:`ferkit.zoo.vocab.ensemble_probs`, union mode, so rows still sum to 1). Each model gets the
face aligned to its own InputSpec (size, channels): a similarity warp of the detector's five landmarks onto
the ArcFace template (``crop="align"``, default), or a square box crop (``crop="box"``; also what faces with
estimated landmarks get).
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ferkit.errors import ConfigError, DataError
from ferkit.schema import FaceResult, FileResult

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


# --------------------------------------------------------------------------------------------
# classifiers


class Classifier:
    """One expression model: ``classes``, ``spec`` (InputSpec), ``task``; ``predict(chips_u8)`` ->
    (probs float32 (B, k), valence/arousal float32 (B, 2) or None)."""

    name: str
    classes: list[str]
    spec: Any
    task: str = "classify"

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        raise NotImplementedError


class TorchClassifier(Classifier):
    def __init__(self, model: Any, device: str = "cpu", name: str | None = None):
        import torch

        from ferkit.checkpoint import build_model, load_checkpoint
        from ferkit.data.transforms import InputSpec
        from ferkit.utils import resolve_device

        ckpt = model if isinstance(model, dict) else load_checkpoint(model)
        self.name = name or (str(model) if not isinstance(model, dict) else ckpt["model"]["name"])
        self.device = resolve_device(device)
        self.model = build_model(ckpt, self.name).to(self.device).eval()
        self.spec = InputSpec.from_dict(ckpt["input"])
        self.classes = list(ckpt["classes"])
        self.task = ckpt["model"].get("task", "classify")
        self._torch = torch

    def predict(self, chips: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self._torch
        from ferkit.data.transforms import to_input

        with torch.inference_mode():
            x = to_input(torch.from_numpy(np.ascontiguousarray(chips)).to(self.device), self.spec)
            out = self.model(x)
            logits = out["logits"] if isinstance(out, dict) else out
            probs = torch.softmax(logits.float(), 1).cpu().numpy()
            va = None
            if isinstance(out, dict) and "valence" in out:
                va = torch.stack([out["valence"].reshape(-1), out["arousal"].reshape(-1)], 1).float().cpu().numpy()
        return probs, va


def make_classifier(model: Any, backend: str = "torch", device: str = "cpu") -> Classifier:
    """A classifier from a checkpoint path / zoo name / checkpoint dict / ``.onnx`` file."""
    if isinstance(model, Classifier):
        return model
    if backend not in ("torch", "onnx"):
        raise ConfigError(f"backend {backend!r}: use torch or onnx")
    is_onnx_file = isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx")
    if is_onnx_file or backend == "onnx":
        from ferkit.inference.onnx import OnnxClassifier, cached_export

        path = model if is_onnx_file else cached_export(model)
        return OnnxClassifier(path, device=device)
    return TorchClassifier(model, device=device)


# --------------------------------------------------------------------------------------------
# the analyzer


def _face_for_full_image(img: np.ndarray):
    from ferkit.faces import Face

    h, w = img.shape[:2]
    return Face((0, 0, w, h), 1.0, np.zeros((5, 2), np.float32), landmarks_estimated=True)


class Analyzer:
    """A face detector + one or more expression classifiers (an ensemble when several).

    ``models``: one model or a list (see :func:`make_classifier`). ``detector``: ``retinaface`` | ``mtcnn`` |
    ``haar`` or a :class:`~ferkit.faces.FaceDetector`; ``detect=False`` treats every image as one face crop.
    ``crop``: ``align`` (landmark warp; default) or ``box``. ``batch_size``: faces per classifier forward.
    ``det_size``: long side images are downscaled to for detection (default: the detector's ``max_size``,
    1280). The speed knob: RetinaFace at 320 is ~6x cheaper than at 640 and still finds faces down to
    ~16 px at detection scale (~32 px in a 640x480 photo); results are always in original pixels, and files
    larger than ``det_size`` are reported ``downscaled``.
    """

    def __init__(self, models: Any = "fer_minixception", detector: Any = "retinaface", device: str = "cpu",
                 backend: str = "torch", batch_size: int = 64, detect: bool = True, crop: str = "align",
                 margin: float = 0.0, detector_options: dict | None = None, identity: Any = None,
                 det_size: int | None = None):
        from ferkit.faces import FaceDetector

        if isinstance(models, (str, os.PathLike, dict, Classifier)):
            models = [models]
        models = list(models)
        if not models:
            raise ConfigError("Analyzer: give at least one model (checkpoint path or zoo name)")
        if crop not in ("align", "box"):
            raise ConfigError(f"crop {crop!r}: use align or box")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.classifiers = [make_classifier(m, backend=backend, device=device) for m in models]
        self.detect_faces = bool(detect)
        self.detector = None
        if self.detect_faces:
            opts = dict(detector_options or {})
            if det_size is not None:
                opts["max_size"] = det_size
            self.detector = detector if isinstance(detector, FaceDetector) else FaceDetector.create(
                detector, device=device, **opts)
        self.batch_size = batch_size
        self.crop = crop
        # Optional ferkit.identity.verify.IdentityAssigner: fills FaceResult.identity (predict --gallery).
        self.identity = identity
        self.margin = float(margin)
        if len(self.classifiers) == 1:
            self.classes = list(self.classifiers[0].classes)
        else:
            from ferkit.zoo.vocab import ensemble_probs

            dummy = [(np.full(len(c.classes), 1 / len(c.classes)), c.classes) for c in self.classifiers]
            self.classes = ensemble_probs(dummy, mode="union")[1]

    # ---------------------------------------------------------------- core
    def _chip(self, img: np.ndarray, face, spec) -> np.ndarray:
        from ferkit.faces import align, crop

        if not self.detect_faces:
            import cv2

            h, w = spec.size
            out = img if img.shape[:2] == (h, w) else cv2.resize(
                img, (w, h), interpolation=cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR)
            if spec.channels == 1:
                out = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)[:, :, None]
            return out
        if self.crop == "box" or face.landmarks_estimated:
            return crop(img, face, margin=self.margin, size=spec.size, channels=spec.channels)
        return align(img, face, size=spec.size, channels=spec.channels, margin=self.margin)

    def detect(self, images: Sequence[np.ndarray]) -> list[list]:
        if not self.detect_faces:
            return [[_face_for_full_image(im)] for im in images]
        return self.detector.detect_batch(list(images))

    def classify(self, images: Sequence[np.ndarray], faces_per_image: Sequence[Sequence]) -> list[list[dict]]:
        """Probabilities (over :attr:`classes`) and valence/arousal for every face, batched across images."""
        pairs = [(i, f) for i, fs in enumerate(faces_per_image) for f in fs]
        if not pairs:
            return [[] for _ in images]
        members, vas = [], []
        chip_cache: dict[tuple, np.ndarray] = {}
        for clf in self.classifiers:
            key = (tuple(clf.spec.size), clf.spec.channels)
            if key not in chip_cache:
                chip_cache[key] = np.stack([self._chip(images[i], f, clf.spec) for i, f in pairs])
            chips = chip_cache[key]
            ps, va = [], []
            for a in range(0, len(chips), self.batch_size):
                p, v = clf.predict(chips[a:a + self.batch_size])
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
        va = np.mean(have_va, axis=0) if have_va else None
        out: list[list[dict]] = [[] for _ in images]
        for k, (i, _f) in enumerate(pairs):
            out[i].append({"probs": probs[k], "va": None if va is None else va[k]})
        return out

    def _results(self, source: str, faces, preds, frame=None, timestamp=None) -> list[FaceResult]:
        res = []
        for j, (f, p) in enumerate(zip(faces, preds)):
            k = int(np.argmax(p["probs"]))
            res.append(FaceResult(
                source=source, face=j, box=f.box,
                landmarks=None if not self.detect_faces else f.landmarks,
                landmarks_estimated=f.landmarks_estimated, det_score=f.score,
                label=self.classes[k], score=float(p["probs"][k]),
                probabilities={c: float(v) for c, v in zip(self.classes, p["probs"])},
                valence=None if p["va"] is None else float(p["va"][0]),
                arousal=None if p["va"] is None else float(p["va"][1]),
                frame=frame, timestamp=timestamp))
        return res

    def process(self, images: Sequence[np.ndarray], sources: Sequence[str], frames=None,
                timestamps=None) -> list[list[FaceResult]]:
        """Detect + classify a batch of RGB uint8 images; one list of FaceResult per image."""
        faces = self.detect(images)
        preds = self.classify(images, faces)
        frames = frames or [None] * len(images)
        timestamps = timestamps or [None] * len(images)
        out = [self._results(s, f, p, fr, ts) for s, f, p, fr, ts in zip(sources, faces, preds, frames, timestamps)]
        if self.identity is not None:
            for img, fs, rs in zip(images, faces, out):
                for r, ident in zip(rs, self.identity.assign(img, fs)):
                    r.identity = ident
        return out

    def was_downscaled(self, image: np.ndarray) -> bool:
        ms = getattr(self.detector, "max_size", None)
        return bool(self.detect_faces and ms and max(image.shape[:2]) > ms)

    # ---------------------------------------------------------------- public
    def analyze(self, image: Any, source: str | None = None) -> list[FaceResult]:
        """Every face in one image (path, RGB uint8 array or PIL image), highest detector score first."""
        from ferkit.faces import load_image
        from ferkit.faces.base import as_rgb_uint8

        if isinstance(image, (str, os.PathLike)):
            source = source or str(image)
            image = load_image(image)
        else:
            image = as_rgb_uint8(image)
        return self.process([image], [source or "<array>"])[0]

    def analyze_paths(self, paths: Iterable[str | os.PathLike], group: int = 8, prefetch: int = 16,
                      return_images: bool = False, loader: Any = None) -> Iterator[FileResult]:
        """One :class:`FileResult` per image path, in order. A background thread decodes ahead while the
        main thread detects and classifies groups of up to ``group`` images (faces of the whole group go
        through the classifier together). Unreadable files become ``status="error"`` with a one-line reason;
        images without a face ``status="no_face"``. ``return_images``: yield ``(FileResult, image or None)``.
        ``loader``: path -> RGB uint8 array (default :func:`ferkit.faces.load_image`; the Ray engine passes one
        that also reads URIs)."""
        from ferkit.faces import load_image

        load = loader or load_image

        q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
        stop = threading.Event()
        END = object()

        def decode():
            try:
                for p in paths:
                    if stop.is_set():
                        return
                    try:
                        item = (str(p), load(p), None)
                    except DataError as e:
                        item = (str(p), None, str(e))
                    except MemoryError:
                        item = (str(p), None, f"{p}: image too large to decode in memory")
                    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's problem
                        item = (str(p), None, f"{p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                    q.put(item)
            finally:
                q.put(END)

        t = threading.Thread(target=decode, name="ferkit-decode", daemon=True)
        t.start()
        done = False
        try:
            while not done:
                batch = []
                item = q.get()
                if item is END:
                    break
                batch.append(item)
                while len(batch) < group:
                    try:
                        item = q.get_nowait()
                    except queue.Empty:
                        break
                    if item is END:
                        done = True
                        break
                    batch.append(item)
                good = [(p, im) for p, im, err in batch if im is not None]
                results = {}
                if good:
                    try:
                        faces = self.process([im for _, im in good], [p for p, _ in good])
                    except DataError as e:  # pragma: no cover - a detector refusing an image
                        faces = None
                        err = str(e)
                    for k, (p, im) in enumerate(good):
                        h, w = im.shape[:2]
                        fr = FileResult(path=p, image_size=(w, h), downscaled=self.was_downscaled(im))
                        if faces is None:
                            fr.status, fr.reason = "error", err
                        else:
                            fr.faces = faces[k]
                            if not fr.faces:
                                fr.status, fr.reason = "no_face", "no face found"
                        if fr.downscaled:
                            note = f"downscaled from {w}x{h} to long side {self.detector.max_size} for detection"
                            fr.reason = f"{fr.reason}; {note}" if fr.reason else note
                        results[p, k] = fr
                gi = 0
                for p, im, err in batch:
                    if im is None:
                        fr = FileResult(path=p, status="error", reason=err)
                    else:
                        fr = results[p, gi]
                        gi += 1
                    yield (fr, im) if return_images else fr
        finally:
            stop.set()
            while t.is_alive():  # unblock the producer
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.05)


def expand_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; folders expanded recursively to their image and video files (sorted)."""
    out: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += sorted(q for q in p.rglob("*")
                          if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        else:
            out.append(p)
    return out


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


_DEFAULT: dict[tuple, Analyzer] = {}


def analyze(image: Any, model: Any = "fer_minixception", detector: str = "retinaface", device: str = "cpu",
            **kwargs) -> list[FaceResult]:
    """Every face in ``image`` (path, RGB uint8 array or PIL image) with its expression. The Analyzer for
    (model, detector, device) is built once and reused."""
    key = (tuple(model) if isinstance(model, (list, tuple)) else str(model), str(detector), str(device),
           tuple(sorted(kwargs.items())))
    if key not in _DEFAULT:
        _DEFAULT[key] = Analyzer(list(model) if isinstance(model, (list, tuple)) else model, detector=detector,
                                 device=device, **kwargs)
    return _DEFAULT[key].analyze(image)
