"""THE result schema: what ``ferkit.predict``, ``ferkit.analyze``, ``ferkit predict`` (JSON lines, CSV,
Parquet), videos, the REST server, its page and the Ray engine all return. One :class:`FileResult` per input,
holding one :class:`FaceResult` per face. A run on face crops (``detect=False``) is a file with one face covering
the whole image. Versioned by :data:`SCHEMA_VERSION`: bump it when a field changes meaning or goes away
(adding an optional field does not need a bump).

Version 3 adds the optional per-face attributes of :mod:`ferkit.attributes` (age, gender, 68 landmarks, head
pose, spoof score, quality; :data:`ATTRIBUTE_FIELDS`). They are written only for faces that were described
(``FaceResult.attributes``), and their table columns (:data:`ATTRIBUTE_COLUMNS`) only when asked, so a run
without attributes writes exactly what version 2 wrote, apart from the version number; a version-2 reader
still finds every field it knows, with the same meaning. ``mesh`` (468 points, optional, no version bump) is a
list in JSON, in Parquet and in ``to_pandas()`` (a last ``mesh`` column when any face has one), never a CSV column;
the Ray engine's Parquet parts do not carry it.

The field tables :data:`FACE_FIELDS` and :data:`FILE_FIELDS` are the single definition: ``to_dict`` writes only
these keys, the server's OpenAPI models are built from them (:func:`openapi_models`), and the CSV / Parquet
columns come from :func:`table_columns`.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from typing import Any, TextIO, cast

SCHEMA_VERSION = 3
STATUSES = ("ok", "no_face", "error")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# name: (JSON type, always present?, description)
FACE_FIELDS: dict[str, tuple[str, bool, str]] = {
    "schema": ("integer", True, "schema version (SCHEMA_VERSION)"),
    "source": ("string", True, "the input this face came from (path, upload name, '<array>', 'webcam:N')"),
    "frame": ("integer", False, "videos and webcams: frame index"),
    "timestamp": ("number", False, "videos: seconds from the start"),
    "track": ("integer", False, "videos: id of the tracked face"),
    "face": ("integer", True, "index of the face in its image (highest detector score first)"),
    "box": ("box", True, "[x1, y1, x2, y2] in pixels of the original image, not clipped"),
    "landmarks": ("landmarks", False, "five points {left_eye, right_eye, nose, mouth_left, mouth_right}: [x, y]"),
    "landmarks_estimated": ("boolean", False, "true when the detector gives no landmarks (Haar: placed from the box)"),
    "det_score": ("number", True, "detector score (1.0 for a whole-image face crop)"),
    "label": ("string", True, "most probable expression"),
    "score": ("number", True, "its probability"),
    "probabilities": ("probabilities", True, "{class: probability}, summing to 1"),
    "valence": ("number", False, "multitask models: valence in [-1, 1]"),
    "arousal": ("number", False, "multitask models: arousal in [-1, 1]"),
    "identity": (
        "any",
        True,
        "with a gallery: best match, distance, threshold (anti-spoofing: spoof, reason); else null",
    ),
}
# the per-face attributes (ferkit.attributes), present only on faces that were described
ATTRIBUTE_FIELDS: dict[str, tuple[str, bool, str]] = {
    "age": ("number", False, "attributes: apparent age in years (face-api AgeGenderNet); null with a reason"),
    "gender": ("string", False, "attributes: apparent gender, female | male (face-api AgeGenderNet)"),
    "gender_score": ("number", False, "attributes: the probability of that gender label"),
    "landmarks68": ("points", False, "attributes: 68 [x, y] in pixels of the original image, iBUG 300-W order"),
    "yaw": ("number", False, "attributes: degrees, positive when the face turns to its own left"),
    "pitch": ("number", False, "attributes: degrees, positive when the face looks up"),
    "roll": ("number", False, "attributes: degrees, positive when the head tilts to its own left shoulder"),
    "spoof_score": ("number", False, "attributes: P(real face) of the anti-spoofing model (1 = real)"),
    "spoof_model": ("string", False, "attributes: the anti-spoofing model's zoo name"),
    "sharpness": ("number", False, "attributes: variance of the Laplacian of the 112x112 grey face crop"),
    "face_px": ("number", False, "attributes: the face box's shorter side in pixels"),
    "frontalness": ("number", False, "attributes: cos of the angle between the face's direction and the camera's"),
    "quality_reason": ("string", False, "attributes: why the face is a poor input for expression, or null"),
    "mesh": (
        "points",
        False,
        "attributes: 468 [x, y, z] (MediaPipe FaceMesh order) in pixels of the original image; "
        "z: depth in the same scale, smaller = nearer; a list in JSON, Parquet and to_pandas(), never a CSV column",
    ),
    "attribute_reasons": ("any", False, "attributes: {attribute: why it is null}, for each attribute withheld"),
}
FACE_FIELDS.update(ATTRIBUTE_FIELDS)
FILE_FIELDS: dict[str, tuple[str, bool, str]] = {
    "schema": ("integer", True, "schema version (SCHEMA_VERSION)"),
    "path": ("string", True, "the input (file path, upload name)"),
    "kind": ("string", True, "image | video | webcam"),
    "status": ("string", True, "ok | no_face (read fine, no face found) | error (unreadable: see reason)"),
    "reason": ("string", False, "why a file failed or has no face; notes such as downscaling"),
    "image_size": ("size", False, "[width, height] of the decoded image"),
    "downscaled": ("boolean", True, "the image was shrunk for detection (results are in original pixels)"),
    "frames": ("integer", False, "videos: frames analysed"),
    "model": ("string", True, "the expression model(s) that produced the results ('+' joins an ensemble)"),
    "detector": ("string", True, "face detector and its detection size, or 'none' for face crops"),
    "ferkit_version": ("string", True, "the ferkit version that produced the results"),
    "faces": ("faces", True, "one object per face"),
}


def _r(v: float | None, nd: int = 6) -> float | None:
    """Rounded, and JSON-safe: a non-finite number becomes None (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return round(v, nd) if math.isfinite(v) else None


def _version() -> str:
    from ferkit import __version__

    return __version__


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
    attributes: dict[str, Any] | None = None  # one row of ferkit.attributes.describe, when asked
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema, "source": self.source}
        if self.frame is not None:
            d["frame"] = self.frame
        if self.timestamp is not None:
            d["timestamp"] = _r(self.timestamp, 4)
        if self.track is not None:
            d["track"] = self.track
        d["face"] = self.face
        d["box"] = [_r(v, 2) for v in self.box]
        if self.landmarks is not None:
            d["landmarks"] = {n: [_r(x, 2), _r(y, 2)] for n, (x, y) in zip(LANDMARK_NAMES, self.landmarks, strict=True)}
            d["landmarks_estimated"] = bool(self.landmarks_estimated)
        d["det_score"] = _r(self.det_score, 5)
        d["label"] = self.label
        d["score"] = _r(self.score)
        d["probabilities"] = {k: _r(v) for k, v in self.probabilities.items()}
        if self.valence is not None:
            d["valence"] = _r(self.valence)
        if self.arousal is not None:
            d["arousal"] = _r(self.arousal)
        d["identity"] = self.identity
        if self.attributes is not None:
            for key, value in self.attributes.items():
                if key == "reasons":
                    d["attribute_reasons"] = dict(value)
                elif key in ATTRIBUTE_FIELDS:
                    d[key] = _r(value, 4) if isinstance(value, float) else value
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
    model: str = ""
    detector: str = ""
    ferkit_version: str = field(default_factory=_version)
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema, "path": self.path, "kind": self.kind, "status": self.status}
        if self.reason:
            d["reason"] = self.reason
        if self.image_size is not None:
            d["image_size"] = [int(v) for v in self.image_size]
        d["downscaled"] = bool(self.downscaled)
        if self.frames is not None:
            d["frames"] = self.frames
        d["model"] = self.model
        d["detector"] = self.detector
        d["ferkit_version"] = self.ferkit_version
        d["faces"] = [f.to_dict() for f in self.faces]
        return d

    def to_pandas(self):
        """One row per face (one row for a file without faces): see :meth:`Results.to_pandas`."""
        return Results([self]).to_pandas()


class Results(list):
    """A list of :class:`FileResult` (what ``ferkit.predict`` returns) with table views."""

    @property
    def classes(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self:
            for f in r.faces:
                seen.update(dict.fromkeys(f.probabilities))
        return list(seen)

    def to_pandas(self, classes: list[str] | None = None, identity: bool | None = None, attributes: bool | None = None):
        """A pandas DataFrame with one row per face plus one row per file without faces or with an error; the
        columns are the CSV's (:func:`table_columns`; ``identity`` columns by default when any face was matched
        against a gallery, ``attributes`` columns when any face was described), text as in Parquet
        (:func:`utf8_text`). Needs pandas (``pip install 'ferkit[table]'``)."""
        classes = classes or self.classes
        if identity is None:
            identity = any(f.identity is not None for r in self for f in r.faces)
        if attributes is None:
            attributes = any(f.attributes is not None for r in self for f in r.faces)
        return table_frame(
            [row for r in self for row in table_rows(r, classes, identity, attributes)],
            classes,
            identity,
            attributes,
            meshes=[m for r in self for m in table_meshes(r)],
        )


def _need_pandas():
    from ferkit.errors import ConfigError

    try:
        import pandas as pd
    except ImportError:
        raise ConfigError("tables need pandas: pip install 'ferkit[table]'") from None
    return pd


# ------------------------------------------------------------------------------------------- tables
BASE_COLUMNS = (
    "path",
    "status",
    "reason",
    "kind",
    "frame",
    "timestamp",
    "track",
    "face",
    "x1",
    "y1",
    "x2",
    "y2",
    "det_score",
    "label",
    "score",
    "valence",
    "arousal",
    "model",
    "detector",
)


#: with a gallery (``identity=True``): the best match's name ("unknown" past the threshold), its distance, and
#: why a face got no identity (anti-spoofing: its spoof score failed the threshold; empty otherwise)
IDENTITY_COLUMNS = ("identity", "identity_distance", "identity_reason")
#: with attributes (``attributes=True``): the scalar ones (the 68 landmarks stay in JSON lines); empty when withheld
ATTRIBUTE_COLUMNS = (
    "age",
    "gender",
    "gender_score",
    "yaw",
    "pitch",
    "roll",
    "spoof_score",
    "sharpness",
    "face_px",
    "frontalness",
    "quality_reason",
)


def table_columns(classes: list[str], identity: bool = False, attributes: bool = False) -> list[str]:
    """The columns of CSV / Parquet / DataFrame output: the base columns, :data:`IDENTITY_COLUMNS` when a gallery
    names the faces (``identity``), :data:`ATTRIBUTE_COLUMNS` when faces were described (``attributes``), then
    one ``p_<class>`` per class."""
    return (list(BASE_COLUMNS) + list(IDENTITY_COLUMNS if identity else ()) + list(ATTRIBUTE_COLUMNS if attributes
            else ()) + [f"p_{c}" for c in classes])  # fmt: skip


def table_frame(
    rows: list[list[Any]],
    classes: list[str],
    identity: bool = False,
    attributes: bool = False,
    meshes: list[Any] | None = None,
):
    """:func:`table_rows` as a pandas DataFrame, text as valid UTF-8 (:func:`utf8_text`): pandas may keep text as
    Arrow strings and Parquet must, so a file name that is not UTF-8 is spelt with ``\\xNN`` escapes there.
    ``meshes`` (:func:`table_meshes`, one per row): a last ``mesh`` column of 468 ``[x, y, z]`` lists when any
    face has one; the CSV never gets it (a list is no CSV cell)."""
    pd = _need_pandas()
    frame = pd.DataFrame(
        [[utf8_text(v) for v in row] for row in rows], columns=table_columns(classes, identity, attributes)
    )
    if meshes is not None and any(m is not None for m in meshes):
        frame["mesh"] = meshes
    return frame


def table_meshes(r: FileResult) -> list[Any]:
    """The ``mesh`` attribute of each row of :func:`table_rows` (None where a face has none, or no face)."""
    return [(f.attributes or {}).get("mesh") for f in r.faces] if r.faces else [None]


def table_rows(r: FileResult, classes: list[str], identity: bool = False, attributes: bool = False) -> list[list[Any]]:
    """One row per face; a file without faces gets one row with its status and reason (None = empty cell)."""
    head = [r.path, r.status, r.reason]
    n_id = len(IDENTITY_COLUMNS) if identity else 0
    n_attr = len(ATTRIBUTE_COLUMNS) if attributes else 0
    if not r.faces:
        return [
            head
            + [r.kind]
            + [None] * (len(BASE_COLUMNS) - 6)
            + [r.model, r.detector]
            + [None] * (n_id + n_attr + len(classes))
        ]
    rows = []
    for f in r.faces:
        d = f.to_dict()
        who = f.identity if isinstance(f.identity, dict) else {}
        ident = [who.get("name"), _r(who.get("distance")), who.get("reason")][:n_id]
        rows.append(
            head
            + [
                r.kind,
                f.frame,
                d.get("timestamp"),
                f.track,
                f.face,
                *d["box"],
                d["det_score"],
                f.label,
                d["score"],
                d.get("valence"),
                d.get("arousal"),
                r.model,
                r.detector,
            ]
            + ident
            + [d.get(c) for c in ATTRIBUTE_COLUMNS][:n_attr]
            + [d["probabilities"].get(c) for c in classes]
        )
    return rows


# ------------------------------------------------------------------------------------------- writers
FORMATS = ("jsonl", "csv", "parquet")


# Spreadsheets run a cell that starts with one of these as a formula (=cmd|' /C calc'!A0 from a file name):
# in CSV such a text cell gets a leading single quote, as OWASP advises ("CSV injection"). JSON lines and
# Parquet keep the text as it is (typed columns, no formulas).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """A value as a CSV cell: None empty; text that a spreadsheet would run as a formula prefixed with ``'``."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return v


def utf8_text(v: Any) -> Any:
    """Text as valid UTF-8 for formats that require it (Parquet): a file name's bytes that are not UTF-8 (held
    as surrogate escapes, see :func:`os.fsdecode`) become ``\\xNN``; CSV and JSON lines keep the exact bytes."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return v.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return v


class ResultWriter:
    """Streams results to a text/binary sink as they come: ``jsonl`` (one object per file), ``csv`` (one row
    per face) or ``parquet`` (the CSV's columns, written when closed). ``path=None`` or ``"-"`` writes to
    ``stream``. Files go through :func:`ferkit.utils.atomic_open`: a temporary name moved into place on
    :meth:`close` (a crash never leaves half a file), a device or FIFO written directly, a symbolic link
    followed. File names that are not UTF-8 keep their bytes in CSV and JSON lines (``\\udcNN`` escapes) and
    become ``\\xNN`` in Parquet; CSV text cells starting with ``= + - @``, tab or CR get a leading ``'``."""

    def __init__(
        self,
        fmt: str,
        classes: list[str],
        path=None,
        stream: TextIO | None = None,
        identity: bool = False,
        attributes: bool = False,
    ):
        from ferkit.errors import ConfigError

        if fmt not in FORMATS:
            raise ConfigError(f"output format {fmt!r}: use one of {', '.join(FORMATS)}")
        if fmt == "parquet":
            _need_pandas()
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ConfigError("--format parquet needs pyarrow: pip install 'ferkit[table]'") from None
            if path is None:
                raise ConfigError("--format parquet writes a file: give --output FILE.parquet")
        if path is not None and str(path) == "-" and fmt != "parquet":
            path = None
        self.fmt, self.classes, self.path = fmt, list(classes), path
        self.identity = identity  # a gallery names the faces: identity columns in csv / parquet
        self.attributes = attributes  # faces were described: attribute columns in csv / parquet
        self._rows: list = []
        self._meshes: list = []  # parquet: the mesh of each row, if any
        self._out = None
        if path is not None and fmt != "parquet":
            from ferkit.utils import atomic_open

            self._out = atomic_open(path, "w", newline="", encoding="utf-8", errors="surrogateescape", what="--output")
            self.fh = self._out.__enter__()
        else:
            self.fh = cast(TextIO, stream)  # None only for parquet, which never writes through fh
        if fmt == "csv":
            self._csv = csv.writer(self.fh, lineterminator="\n")
            self._csv_quoted = csv.writer(self.fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
            self._csv.writerow(table_columns(self.classes, self.identity, self.attributes))

    def write(self, r: FileResult) -> None:
        if self.fmt == "parquet":
            self._rows.extend(table_rows(r, self.classes, self.identity, self.attributes))
            self._meshes.extend(table_meshes(r))
            return
        try:
            if self.fmt == "jsonl":
                self.fh.write(json.dumps(r.to_dict(), ensure_ascii=True) + "\n")
            else:
                for row in table_rows(r, self.classes, self.identity, self.attributes):
                    cells = [csv_cell(v) for v in row]
                    # Python's csv quotes a cell holding "\n" but not one holding a lone "\r" (our lines end in
                    # "\n"), and readers end the row there: such a row is written with every cell quoted
                    cr = any(isinstance(c, str) and "\r" in c for c in cells)
                    (self._csv_quoted if cr else self._csv).writerow(cells)
            self.fh.flush()
        except OSError as e:
            if self._out is None or isinstance(e, BrokenPipeError):
                raise  # standard output: the CLI handles a closed pipe
            from ferkit.utils import output_error

            self.abort()  # the temporary file goes; a device's error is not raised twice
            raise output_error(self.path, e, "--output") from None

    def close(self) -> None:
        """Finish the output: move the temporary file into place (parquet: write it)."""
        if self.fmt == "parquet":
            from ferkit.utils import atomic_path

            with atomic_path(self.path, suffix=".parquet", what="--output") as tmp:
                frame = table_frame(self._rows, self.classes, self.identity, self.attributes, self._meshes)
                frame.to_parquet(tmp, index=False)
            return
        if self._out is not None:
            out, self._out = self._out, None
            out.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop a half-written output (the previous file, if any, stays)."""
        if self._out is not None:
            from ferkit.utils import discard

            out, self._out = self._out, None
            discard(out)


# ------------------------------------------------------------------------------------------- OpenAPI
_JSON_TYPES = {"integer": int, "number": float, "string": str, "boolean": bool}


def openapi_models():
    """Pydantic models (Face, FileResult, BatchResult) built from :data:`FACE_FIELDS` / :data:`FILE_FIELDS`:
    the server documents exactly what ``to_dict`` writes. Needs pydantic (the ``serve`` extra)."""
    from pydantic import ConfigDict, Field, create_model

    def annotation(kind: str, face_model=None):
        if kind in _JSON_TYPES:
            return _JSON_TYPES[kind]
        return {
            "box": list[float],
            "size": list[int],
            "landmarks": dict[str, list[float]],
            "probabilities": dict[str, float],
            "any": Any,
            "faces": list[face_model],
            "points": list[list[float]],
        }[kind]

    def build(name, table, face_model=None):
        fields = {}
        for key, (kind, required, desc) in table.items():
            ann = annotation(kind, face_model)
            attr = key + "_" if key == "schema" else key  # `schema` shadows a BaseModel attribute
            if required and kind != "any":
                fields[attr] = (ann, Field(..., alias=key, description=desc))
            else:
                fields[attr] = (ann | None, Field(None, alias=key, description=desc))
        return create_model(name, __config__=ConfigDict(populate_by_name=True), **fields)

    face = build("Face", FACE_FIELDS)
    file = build("FileResult", FILE_FIELDS, face)
    batch = create_model("BatchResult", results=(list[file], ...))
    return face, file, batch
