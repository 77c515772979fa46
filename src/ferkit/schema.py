"""The per-face / per-file result schema shared by ``ferkit.analyze``, ``ferkit predict`` (JSON lines, CSV)
and any later service. Versioned by :data:`SCHEMA_VERSION`; bump it when a field changes meaning or goes away
(adding an optional field does not need a bump).

``FaceResult`` (one face)::

    schema        int     SCHEMA_VERSION
    source        str     path of the file (or "<array>", "webcam:N")
    frame         int     frame index (videos / webcam; None for images)
    timestamp     float   seconds from the start of the video (None for images)
    face          int     index of the face in its image/frame (highest detector score first)
    box           [x1, y1, x2, y2] pixels of the original image, not clipped
    landmarks     {left_eye: [x, y], right_eye, nose, mouth_left, mouth_right} (image left/right)
    landmarks_estimated bool  (Haar: placed from the box)
    det_score     float   detector score (1.0 with --no-detect)
    label         str     argmax class
    score         float   its probability
    probabilities {class: p}   sums to 1 (ensembles: over the common vocabulary)
    valence, arousal  float   multitask models only (ensembles: mean over members that have them)
    track         int     video only: id of the tracked face
    identity      None    reserved for face verification

``FileResult`` (one input): ``path``, ``status`` (``ok`` | ``no_face`` | ``error``), ``reason``,
``faces`` (list of FaceResult), ``image_size`` [width, height], ``downscaled`` (the image was downscaled for
detection), ``kind`` (``image`` | ``video`` | ``webcam``), ``frames`` (videos: frames analysed).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

from ferkit.faces.base import LANDMARK_NAMES

SCHEMA_VERSION = 2
STATUSES = ("ok", "no_face", "error")


def _r(v: float | None, nd: int = 6) -> float | None:
    return None if v is None else round(float(v), nd)


@dataclass
class FaceResult:
    source: str
    face: int
    box: tuple[float, float, float, float]
    landmarks: Any = None  # (5, 2) array-like or None
    landmarks_estimated: bool = False
    det_score: float = 1.0
    label: str = ""
    score: float = 0.0
    probabilities: dict[str, float] = field(default_factory=dict)
    valence: float | None = None
    arousal: float | None = None
    frame: int | None = None
    timestamp: float | None = None
    track: int | None = None
    identity: Any = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema, "source": self.source}
        if self.frame is not None:
            d["frame"] = self.frame
        if self.timestamp is not None:
            d["timestamp"] = round(float(self.timestamp), 4)
        if self.track is not None:
            d["track"] = self.track
        d["face"] = self.face
        d["box"] = [round(float(v), 2) for v in self.box]
        if self.landmarks is not None:
            d["landmarks"] = {n: [round(float(x), 2), round(float(y), 2)]
                              for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks)}
            d["landmarks_estimated"] = bool(self.landmarks_estimated)
        d["det_score"] = round(float(self.det_score), 5)
        d["label"] = self.label
        d["score"] = _r(self.score)
        d["probabilities"] = {k: _r(v) for k, v in self.probabilities.items()}
        if self.valence is not None:
            d["valence"] = _r(self.valence)
        if self.arousal is not None:
            d["arousal"] = _r(self.arousal)
        d["identity"] = self.identity
        return d


@dataclass
class FileResult:
    path: str
    status: str = "ok"
    reason: str | None = None
    faces: list[FaceResult] = field(default_factory=list)
    image_size: tuple[int, int] | None = None  # (width, height)
    downscaled: bool = False
    kind: str = "image"
    frames: int | None = None
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema, "path": self.path, "kind": self.kind, "status": self.status}
        if self.reason:
            d["reason"] = self.reason
        if self.image_size is not None:
            d["image_size"] = list(self.image_size)
        d["downscaled"] = self.downscaled
        if self.frames is not None:
            d["frames"] = self.frames
        d["faces"] = [f.to_dict() for f in self.faces]
        return d


def write_jsonl(results: Iterable[FileResult], fh: TextIO) -> None:
    """One JSON object per input file (faces nested)."""
    for r in results:
        fh.write(json.dumps(r.to_dict()) + "\n")


def csv_header(classes: list[str]) -> list[str]:
    return (["path", "status", "reason", "frame", "timestamp", "track", "face", "x1", "y1", "x2", "y2", "det_score",
             "label", "score", "valence", "arousal"] + [f"p_{c}" for c in classes])


def csv_rows(r: FileResult, classes: list[str]) -> list[list[Any]]:
    """One row per face; a file without faces gets one row with its status and reason."""
    if not r.faces:
        return [[r.path, r.status, r.reason or ""] + [""] * (len(csv_header(classes)) - 3)]
    rows = []
    for f in r.faces:
        d = f.to_dict()
        rows.append([r.path, r.status, r.reason or "", "" if f.frame is None else f.frame,
                     "" if f.timestamp is None else d["timestamp"], "" if f.track is None else f.track, f.face,
                     *d["box"], d["det_score"], f.label, d["score"], d.get("valence", ""), d.get("arousal", "")]
                    + [d["probabilities"].get(c, "") for c in classes])
    return rows


def write_csv(results: Iterable[FileResult], fh: TextIO, classes: list[str]) -> None:
    w = csv.writer(fh, lineterminator="\n")
    w.writerow(csv_header(classes))
    for r in results:
        w.writerows(csv_rows(r, classes))


def to_csv_text(results: Iterable[FileResult], classes: list[str]) -> str:
    buf = io.StringIO()
    write_csv(results, buf, classes)
    return buf.getvalue()
