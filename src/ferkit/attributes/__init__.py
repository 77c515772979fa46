"""Per-face attributes beyond expression: age, gender, 68 landmarks, head pose, anti-spoofing and quality.

    from ferkit.attributes import ATTRIBUTES, describe
    rows = describe(image_rgb, faces, ["age", "gender", "pose"])   # one dict per face

Torch-free at run time: the zoo's attribute models run as the ONNX graphs shipped beside their weights
(``ferkit/zoo/weights/*.onnx``) in ONNX Runtime, one call per model per photo for all its faces; numpy and
OpenCV do the rest. ``backend="torch"`` runs the same converted weights in PyTorch (for checking).

Models: ``faceapi_agegender`` (age, gender), ``faceapi_landmarks68`` (landmarks68, and through them pose and
quality's frontalness), ``human_antispoof`` (spoof), ``human_facemesh`` (mesh). See ``ferkit zoo info NAME`` for
each card. None is on by default; ``"all"`` includes the mesh, which costs less than the others together
(``bench/attributes_cost.py``: 5.6 ms per face against 12.5 ms for the six others, 2 CPU threads).

Output, per face, only the keys of the attributes asked for:

* ``age``: years (face-api's regression on the detection box made square, as face-api's
  ``detectAllFaces().withAgeAndGender()`` frames it, averaged with its mirror image), ``gender``:
  ``"female"``/``"male"``, ``gender_score``: the probability of that label. face-api's model only: Human's
  ``faceres``, measured against it (``bench/faceres/age_gender_sources.py``), is steadier under mirroring but read
  Grace Hopper as male and Obama as 23-40, and averaging the two made Grace Hopper male;
* ``landmarks68``: 68 ``[x, y]`` in pixels of the image given, iBUG 300-W order;
* ``yaw``, ``pitch``, ``roll``: degrees, from the 68 landmarks by ``cv2.solvePnP`` on :data:`MEAN_FACE_3D`,
  measured from the line of sight (a face looking into the lens is 0, 0 wherever it is in the frame). From the 68
  points, not the mesh: with the mesh's twins of 11 of the 68 points instead, a mirrored photo's yaw matched less
  well on skimage's lfw_subset (mean |yaw + yaw'| 2.20 vs 1.56 degrees, 98 faces; astronaut |pitch - pitch'| 5.7
  vs 0.9), and the mesh costs a model run more;
  **yaw > 0**: the face turns to its own left (its nose towards the image's right in an un-mirrored photo);
  **pitch > 0**: the face looks up; **roll > 0**: the head tilts towards its own left shoulder (its left eye,
  on the image's right, is lower). A mirrored photo flips yaw and roll and keeps pitch;
* ``spoof_score``: P(real) of Human's anti-spoofing model (1 = real), ``spoof_model``: its zoo name;
* ``mesh``: 468 ``[x, y, z]`` (MediaPipe FaceMesh's point order) in pixels of the image given; z is depth in the
  same pixel scale, smaller = nearer the camera, relative to the face (MediaPipe's convention). The model reads
  the detector box made square and grown 1.4x (Human's framing) at 192x192; a mesh whose face score is under
  :data:`MIN_MESH_SCORE` (Human's threshold) is withheld. A JSON / Parquet list, never a CSV column;
* ``sharpness``: variance of the Laplacian of the 112x112 grey aligned face (0..255 grey levels; blurred faces
  are below ~30, sharp photos in the hundreds), ``face_px``: the box's shorter side in pixels,
  ``frontalness``: cos of the angle between the face's direction and the camera's axis (1 = facing it), and
  ``quality_reason``: why the face is a poor input for expression, or None.

Anti-spoofing (``--anti-spoof``): :func:`anti_spoof_threshold` reads the options, :func:`spoof_verdict` /
:func:`spoof_check` decide per face against the one threshold (``defaults.SPOOF_THRESHOLD``); enroll, verify and
the Analyzer's identity step use them.

An attribute that cannot be trusted is ``None`` and ``reasons[attribute]`` says why (a face too small for
the model, a profile face, a crop-only input whose landmarks are not known, a flat/grey image); every row has
a ``reasons`` dict (empty when nothing was withheld). Never a made-up value.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

from ferkit.errors import ConfigError

ATTRIBUTES = ("age", "gender", "landmarks68", "pose", "spoof", "quality", "mesh")
FIELDS = {
    "age": ("age",),
    "gender": ("gender", "gender_score"),
    "landmarks68": ("landmarks68",),
    "pose": ("yaw", "pitch", "roll"),
    "spoof": ("spoof_score", "spoof_model"),
    "quality": ("sharpness", "face_px", "frontalness", "quality_reason"),
    "mesh": ("mesh",),
}
AGEGENDER, LANDMARKS, ANTISPOOF, MESH = "faceapi_agegender", "faceapi_landmarks68", "human_antispoof", "human_facemesh"
MESH_MARGIN = 0.2  # the box made square and grown by 20% a side: 1.4x, Human's enlargement of its detector's box
MIN_MESH_SCORE = 0.2  # Human's face.detector.minConfidence, which it applies to the mesh model's face score
MIN_FACE_PX = 32  # below this the 112x112 models see an upscaled blur: no answer
FLAT_STD = 2.0  # grey-level std of the face crop under which there is nothing to describe
PROFILE_RATIO = 0.12  # nose this close (fraction of the eye distance) to an eye's x, or beyond: a profile
MIN_SHARPNESS = 30.0
MAX_TURN_DEG = 45.0
MIN_QUALITY_PX = 48
CROP_MARGIN = 0.1  # the detector box grown by 10% a side: the framing face-api's own boxes give

# A mean adult face in millimetres, written for ferkit from textbook anthropometry (inter-ocular outer
# canthi ~90 mm, inner ~32 mm, mouth width ~50 mm, nasion-menton ~120 mm, nose projection ~20 mm).
# Axes: x to the image's right (the face's own left), y down, z away from the camera; origin at the nose tip.
# Keys: iBUG 68-point indices. iBUG 27 ("top of the nose bridge") is annotated where the bridge is deepest
# between the eyes (the sellion), 2 mm above the eye corners on average on real faces, not at the anatomical
# nasion 8 mm higher: placed there, it read every frontal face as looking ~5 degrees down.
MEAN_FACE_3D = {
    8: (0.0, 75.0, 30.0),  # menton (chin)
    17: (-55.0, -52.0, 42.0), 21: (-12.0, -55.0, 24.0),  # brow, image-left: outer, inner
    22: (12.0, -55.0, 24.0), 26: (55.0, -52.0, 42.0),  # brow, image-right: inner, outer
    27: (0.0, -39.0, 20.0),  # sellion: iBUG 27 is the bridge between the eyes, at the eye corners' level
    30: (0.0, 0.0, 0.0),  # nose tip
    33: (0.0, 12.0, 15.0),  # subnasale
    36: (-45.0, -37.0, 35.0), 39: (-16.0, -37.0, 28.0),  # eye corners, image-left: outer, inner
    42: (16.0, -37.0, 28.0), 45: (45.0, -37.0, 35.0),  # eye corners, image-right: inner, outer
    48: (-25.0, 32.0, 25.0), 54: (25.0, 32.0, 25.0),  # mouth corners
    51: (0.0, 24.0, 16.0), 57: (0.0, 42.0, 20.0),  # upper and lower lip centres
}  # fmt: skip

_SESSIONS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _check_names(names) -> list[str]:
    names = list(ATTRIBUTES) if names in ("all", None) else [str(n).strip() for n in names]
    bad = [n for n in names if n not in ATTRIBUTES]
    if bad:
        raise ConfigError(f"unknown attribute {bad[0]!r}: choose from {', '.join(ATTRIBUTES)} (or all)")
    return names


def _model(name: str, backend: str):
    """A callable ``x (N, C, H, W) float32 -> raw outputs (N, K)``, cached per (model, backend)."""
    key = (name, backend)
    with _LOCK:
        if key not in _SESSIONS:
            if backend == "onnx":
                from ferkit.utils import call_threads, ort_session
                from ferkit.zoo import onnx_file

                sess = ort_session(onnx_file(name), call_threads())
                _SESSIONS[key] = lambda x, s=sess: s.run(None, {"input": x})[0]
            elif backend == "torch":
                import torch

                from ferkit.checkpoint import build_model
                from ferkit.zoo import load_zoo_checkpoint

                net = build_model(load_zoo_checkpoint(name)).eval()

                def run(x, net=net):
                    with torch.no_grad():
                        return net(torch.from_numpy(x)).numpy()

                _SESSIONS[key] = run
            else:
                raise ConfigError(f"unknown backend {backend!r} for attributes: onnx or torch")
        return _SESSIONS[key]


def _normalise(chips: np.ndarray, name: str) -> np.ndarray:
    from ferkit.zoo.sources import SOURCES

    spec = SOURCES[name].input
    x: np.ndarray = chips.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


def _whole_image_face(image: np.ndarray):
    from ferkit.faces import Face

    h, w = image.shape[:2]
    lm = np.zeros((5, 2), np.float32)
    return Face((0.0, 0.0, float(w), float(h)), 1.0, lm, landmarks_estimated=True)


def _profile(face) -> bool:
    """From the detector's five points: the nose tip outside (or at) the span of the eyes is a profile."""
    if face.landmarks_estimated:
        return False
    le, re, nose = face.landmarks[0], face.landmarks[1], face.landmarks[2]
    d = float(re[0] - le[0])
    if d <= 0.05 * max(face.width, 1.0):
        return True
    r = float(nose[0] - le[0]) / d
    return r < PROFILE_RATIO or r > 1.0 - PROFILE_RATIO


def head_pose(landmarks68: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) in degrees from 68 landmarks (pixels) by ``cv2.solvePnP`` on :data:`MEAN_FACE_3D`, with
    a pinhole camera of focal length = the image's longer side centred on the image; None if it fails.

    The angles are measured from the line of sight (camera centre -> face), not from the camera's optical axis:
    a face that looks into the lens is frontal (0, 0) wherever it sits in the frame. Measured from the optical
    axis, a face in the top third of a photo that looks at the camera reads ~15 degrees "down" (the astronaut
    photo read pitch -24 that way), and the true focal length of a photo (or of a crop of one) is unknown."""
    import cv2

    idx = sorted(MEAN_FACE_3D)
    obj = np.array([MEAN_FACE_3D[i] for i in idx], np.float64)
    img = np.asarray(landmarks68, np.float64)[idx]
    h, w = image_size
    f = float(max(h, w))
    cam = np.array([[f, 0, w / 2.0], [0, f, h / 2.0], [0, 0, 1]], np.float64)
    # SQPnP finds the global minimum (plain ITERATIVE from no guess can land behind the camera); Levenberg-Marquardt
    # from there polishes it
    ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, flags=cv2.SOLVEPNP_SQPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(obj, img, cam, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok or tvec[2, 0] <= 0:
        return None
    r, _ = cv2.Rodrigues(rvec)
    # rotate the camera frame so that its z axis runs through the face's centre: the pose as seen along that ray
    ray = r @ obj.mean(axis=0) + tvec[:, 0]
    ray /= np.linalg.norm(ray)
    axis = np.cross(ray, [0.0, 0.0, 1.0])
    if np.linalg.norm(axis) > 1e-12:
        along, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * math.atan2(np.linalg.norm(axis), ray[2]))
        r = along @ r
    return rotation_angles(r)


def rotation_angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head rotation ``r`` (3x3, :data:`MEAN_FACE_3D`'s axes -> the camera's:
    x right, y down, z ahead), in the module docstring's conventions; :func:`pose_axes` is its inverse."""
    fwd = r @ np.array([0.0, 0.0, -1.0])  # the face's direction, in camera coordinates (x right, y down, z ahead)
    right = r @ np.array([1.0, 0.0, 0.0])  # towards the face's own left
    yaw = math.degrees(math.atan2(fwd[0], -fwd[2]))
    pitch = math.degrees(math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2])))
    roll = math.degrees(math.atan2(right[1], right[0]))
    return yaw, pitch, roll


def pose_axes(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The head rotation (3x3, as :func:`rotation_angles` takes it) whose angles are ``yaw, pitch, roll`` degrees:
    its columns are the face's own axes in camera coordinates (x right, y down, z ahead): column 0 towards the
    face's own left, column 1 down its face, and minus column 2 where it looks. For drawing pose axes."""
    y, p, rl = (math.radians(float(v)) for v in (yaw, pitch, roll))
    fwd = np.array([math.sin(y) * math.cos(p), -math.sin(p), -math.cos(y) * math.cos(p)])
    # yaw and pitch fix the forward direction; roll turns the face about it until its own x axis, seen in the
    # image, makes the angle roll with the image's x axis (rotation_angles' definition, exactly)
    e1 = np.array([math.cos(y), 0.0, math.sin(y)])  # unrolled x axis: horizontal, across fwd
    e2 = np.cross(e1, fwd)  # unrolled y axis: down the face
    cr, sr = math.cos(rl), math.sin(rl)
    t = math.atan2(-(e1[1] * cr - e1[0] * sr), e2[1] * cr - e2[0] * sr)
    right = math.cos(t) * e1 + math.sin(t) * e2
    if right[0] * cr + right[1] * sr < 0:  # the other solution points the x axis the opposite way
        right = -right
    return np.stack([right, np.cross(right, fwd), -fwd], axis=1)


def _sharpness(chip_rgb: np.ndarray) -> float:
    import cv2

    grey = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def describe(image_rgb: np.ndarray, faces, names=ATTRIBUTES, backend: str = "onnx") -> list[dict]:
    """The attributes ``names`` (see :data:`ATTRIBUTES`; ``"all"``) of each face in ``faces``
    (:class:`ferkit.faces.Face` objects of ``image_rgb``, an RGB uint8 (H, W, 3) array), batched: one model call
    per model for all faces. ``faces=None``: the whole image is one face crop (a ``--no-detect`` run), so
    landmarks and pose are withheld. Returns one dict per face (see the module docstring)."""
    from ferkit.faces.align import crop, crop_matrix
    from ferkit.faces.base import as_rgb_uint8
    from ferkit.zoo.outputs import decode

    names = _check_names(names)
    image = as_rgb_uint8(image_rgb)
    crop_only = faces is None
    faces = [_whole_image_face(image)] if crop_only else list(faces)
    rows: list[dict] = [{"reasons": {}} for _ in faces]
    if not faces:
        return []
    need_lm = bool({"landmarks68", "pose", "quality"} & set(names))
    # why each face gets no model answer at all
    withheld: list[str | None] = []
    chips112, chips128, chipsbox, mats = [], [], [], []
    for face in faces:
        mats.append(crop_matrix(face, CROP_MARGIN, (112, 112))[0])
        chips112.append(crop(image, face, CROP_MARGIN, (112, 112)))
        chips128.append(crop(image, face, CROP_MARGIN, (128, 128)))
        chipsbox.append(crop(image, face, 0.0, (112, 112)))
        if face.size < MIN_FACE_PX:
            withheld.append(f"face {face.size:.0f} px < {MIN_FACE_PX} px minimum")
        elif float(chips112[-1].std()) < FLAT_STD:
            withheld.append(f"flat image (pixel std {float(chips112[-1].std()):.1f}): no face to describe")
        elif _profile(face):
            withheld.append("profile face: the models were trained on faces turned less than ~60 degrees")
        else:
            withheld.append(None)
    ok = [i for i, why in enumerate(withheld) if why is None]
    x112 = np.stack([chips112[i] for i in ok]) if ok else None
    out: dict[str, np.ndarray] = {}
    lms: dict[int, np.ndarray] = {}
    if x112 is not None and need_lm and not crop_only:
        out["lm"] = decode(LANDMARKS, _model(LANDMARKS, backend)(_normalise(x112, LANDMARKS)))
        for k, j in enumerate(ok):
            a, t = mats[j][:, :2], mats[j][:, 2]
            lms[j] = (out["lm"][k].reshape(68, 2) * 112.0 - t) @ np.linalg.inv(a).T  # crop pixels -> image pixels
    if ok and {"age", "gender"} & set(names):
        # face-api's detectAllFaces().withAgeAndGender() framing: the detection box, squared; and its mirror image,
        # averaged (the model moves by up to ~0.4 in P(male) between a face and its mirror image, see the README)
        xag = np.stack([chipsbox[i] for i in ok])
        both = decode(
            AGEGENDER, _model(AGEGENDER, backend)(_normalise(np.concatenate([xag, xag[:, :, ::-1]]), AGEGENDER))
        )
        out["ag"] = (both[: len(ok)] + both[len(ok) :]) / 2
    if ok and "spoof" in names:
        x128 = np.stack([chips128[i] for i in ok])
        out["sp"] = decode(ANTISPOOF, _model(ANTISPOOF, backend)(_normalise(x128, ANTISPOOF)))
    meshes: dict[int, np.ndarray | str] = {}  # face -> (468, 3) image pixels, or why there is none
    if ok and "mesh" in names and not crop_only:
        mmats = [crop_matrix(faces[j], MESH_MARGIN, (192, 192))[0] for j in ok]
        x192 = np.stack([crop(image, faces[j], MESH_MARGIN, (192, 192)) for j in ok])
        dec = decode(MESH, _model(MESH, backend)(_normalise(x192, MESH)))
        for k, j in enumerate(ok):
            if dec[k, -1] < MIN_MESH_SCORE:
                meshes[j] = f"the mesh model sees no face (face score {dec[k, -1]:.2f} < {MIN_MESH_SCORE})"
                continue
            pts = dec[k, :-1].reshape(468, 3) * 192.0  # crop pixels
            scale = 1.0 / mmats[k][0, 0]  # image pixels per crop pixel
            xy = (pts[:, :2] - mmats[k][:, 2]) * scale
            meshes[j] = np.concatenate([xy, pts[:, 2:] * scale], axis=1)
    lm_reason = "crop-only input (no face detection): the landmarks cannot be placed"
    for j, row in enumerate(rows):
        why = withheld[j]
        k = ok.index(j) if why is None else -1
        lm68 = lms.get(j)
        pose = head_pose(lm68, image.shape[:2]) if lm68 is not None else None
        if "age" in names:
            row["age"] = round(float(out["ag"][k, 0]), 2) if k >= 0 else None
            if k < 0:
                row["reasons"]["age"] = why
        if "gender" in names:
            if k >= 0:
                male = float(out["ag"][k, 1])
                row["gender"], row["gender_score"] = ("male", male) if male > 0.5 else ("female", 1.0 - male)
                row["gender_score"] = round(row["gender_score"], 4)
            else:
                row["gender"] = row["gender_score"] = None
                row["reasons"]["gender"] = why
        if "landmarks68" in names:
            row["landmarks68"] = np.round(lm68, 2).tolist() if lm68 is not None else None
            if lm68 is None:
                row["reasons"]["landmarks68"] = why or lm_reason
        if "pose" in names:
            vals = [round(v, 2) for v in pose] if pose is not None else [None, None, None]
            row["yaw"], row["pitch"], row["roll"] = vals
            if pose is None:
                row["reasons"]["pose"] = why or (lm_reason if crop_only else "solvePnP found no pose")
        if "mesh" in names:
            mesh = meshes.get(j)
            row["mesh"] = np.round(mesh, 2).tolist() if isinstance(mesh, np.ndarray) else None
            if row["mesh"] is None:
                row["reasons"]["mesh"] = mesh if isinstance(mesh, str) else (why or lm_reason)
        if "spoof" in names:
            row["spoof_score"] = round(float(out["sp"][k, 0]), 4) if k >= 0 else None
            row["spoof_model"] = ANTISPOOF
            if k < 0:
                row["reasons"]["spoof"] = why
        if "quality" in names:
            face = faces[j]
            sharp = _sharpness(chips112[j])
            front = None
            if pose is not None:
                front = round(math.cos(math.radians(pose[0])) * math.cos(math.radians(pose[1])), 4)
            row["sharpness"], row["face_px"], row["frontalness"] = round(sharp, 2), round(face.size, 1), front
            turn = math.degrees(math.acos(min(1.0, front))) if front is not None else None
            reason = why
            if reason is None and face.size < MIN_QUALITY_PX:
                reason = f"small face ({face.size:.0f} px < {MIN_QUALITY_PX} px)"
            if reason is None and sharp < MIN_SHARPNESS:
                reason = f"blurred (sharpness {sharp:.0f} < {MIN_SHARPNESS:.0f})"
            if reason is None and turn is not None and turn > MAX_TURN_DEG:
                reason = f"turned {turn:.0f} degrees from the camera (> {MAX_TURN_DEG:.0f})"
            row["quality_reason"] = reason
    return rows


def spoof_threshold_problem(v: Any) -> str | None:
    """What is wrong with ``v`` as a spoof threshold (the fix), or None: a number from 0 to 1, P(real)."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0
    return None if ok else "give a number from 0 to 1: the P(real) below which a face counts as a spoof"


def anti_spoof_threshold(anti_spoof: bool = False, threshold: Any = None) -> float | None:
    """The one reading of ``--anti-spoof`` / ``--spoof-threshold`` (and the API's ``anti_spoof``,
    ``spoof_threshold``): None when anti-spoofing is off, else the threshold (``defaults.SPOOF_THRESHOLD`` unless
    one is given; giving one turns anti-spoofing on). Text from the command line is read here; a bad value is one
    ConfigError line."""
    from ferkit import defaults

    if threshold is None:
        return float(defaults.SPOOF_THRESHOLD) if anti_spoof else None
    v = threshold
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            v = threshold
    problem = spoof_threshold_problem(v)
    if problem:
        raise ConfigError(f"--spoof-threshold {threshold!r}: {problem}")
    return float(v)


def spoof_verdict(score: float | None, threshold: float, why: str | None = None) -> dict:
    """``{"spoof_score", "spoof", "spoof_reason"}`` for one face: ``spoof`` is True when its score is below
    ``threshold``, or when it has no score (``why``: a face too small or flat to score cannot pass a check meant to
    refuse)."""
    if score is None:
        return {"spoof_score": None, "spoof": True, "spoof_reason": f"no spoof score ({why or 'withheld'})"}
    bad = score < threshold
    reason = f"spoof score {score:.4f} < threshold {threshold:g}" if bad else None
    return {"spoof_score": score, "spoof": bool(bad), "spoof_reason": reason}


def spoof_check(image_rgb: np.ndarray, faces, threshold: float, backend: str = "onnx") -> list[dict]:
    """:func:`spoof_verdict` of each face of ``image_rgb`` (the ``spoof`` attribute of :func:`describe`)."""
    rows = describe(image_rgb, faces, ["spoof"], backend=backend)
    return [spoof_verdict(r["spoof_score"], threshold, r["reasons"].get("spoof")) for r in rows]


__all__ = [
    "ATTRIBUTES",
    "FIELDS",
    "MEAN_FACE_3D",
    "anti_spoof_threshold",
    "describe",
    "head_pose",
    "pose_axes",
    "rotation_angles",
    "spoof_check",
    "spoof_threshold_problem",
    "spoof_verdict",
]
