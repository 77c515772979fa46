"""ferkit.attributes: age, gender, 68 landmarks, head pose, anti-spoofing and quality per face, on real photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ferkit.attributes import ATTRIBUTES, describe
from ferkit.faces import Face, FaceDetector, load_image

DATA = Path(__file__).parent / "data"
# iBUG 68-point index of each point's mirror image (jaw, brows, nose, eyes, outer and inner lips)
MIRROR68 = ([*range(16, -1, -1)] + [*range(26, 21, -1)] + [*range(21, 16, -1)] + [27, 28, 29, 30]
            + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
            + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])  # fmt: skip


@pytest.fixture(scope="module")
def detector():
    return FaceDetector.create("retinaface", max_size=640)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    import matplotlib
    import skimage.data
    from PIL import Image

    grace = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    return {"astronaut": skimage.data.astronaut(), "grace_hopper": np.asarray(Image.open(grace).convert("RGB"))}


def _one(detector, img, names=ATTRIBUTES):
    faces = detector.detect(img)
    assert len(faces) == 1
    (row,) = describe(img, faces, names)
    return faces[0], row


def test_mirror_table_is_an_involution():
    assert sorted(MIRROR68) == list(range(68)) and all(MIRROR68[MIRROR68[i]] == i for i in range(68))


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_mirrored_photo_flips_yaw_and_roll_keeps_pitch_and_landmarks_mirror_back(name, photos, detector):
    img = photos[name]
    face, row = _one(detector, img, ["landmarks68", "pose", "age", "gender"])
    mirrored = np.ascontiguousarray(img[:, ::-1])
    _, mrow = _one(detector, mirrored, ["landmarks68", "pose"])
    assert row["reasons"] == {} and mrow["reasons"] == {}
    # age and gender average a face with its mirror image: the mirrored face (same box, mirrored) reads the same
    w = img.shape[1]
    lm5 = face.landmarks[[1, 0, 2, 4, 3]].copy()
    lm5[:, 0] = w - lm5[:, 0]
    mface = Face((w - face.box[2], face.box[1], w - face.box[0], face.box[3]), face.score, lm5)
    (same,) = describe(mirrored, [mface], ["age", "gender"])
    assert abs(row["age"] - same["age"]) < 0.3 and row["gender"] == same["gender"]
    assert abs(row["gender_score"] - same["gender_score"]) < 0.01
    assert abs(row["yaw"] + mrow["yaw"]) < 3 and abs(row["roll"] + mrow["roll"]) < 3
    assert abs(row["pitch"] - mrow["pitch"]) < 4
    lm, mlm = np.array(row["landmarks68"]), np.array(mrow["landmarks68"])
    back = mlm[MIRROR68].copy()
    back[:, 0] = img.shape[1] - back[:, 0]
    assert np.abs(back - lm).mean() < 0.03 * face.size
    # the 68 points sit on the detector's own: eye centres and nose tip within 8% of the face
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30]])
    assert np.abs(eyes - face.landmarks[:3]).max() < 0.08 * face.size


@pytest.fixture(scope="module")
def lfw_faces() -> list[np.ndarray]:
    """skimage's lfw_subset: its first 100 images are near-frontal faces (25x25 grey), here RGB at 200x200."""
    import cv2
    import skimage.data

    faces = skimage.data.lfw_subset()[:100]
    return [cv2.resize(np.stack([(f * 255).astype(np.uint8)] * 3, -1), (200, 200)) for f in faces]


def _poses(detector, images) -> np.ndarray:
    """(yaw, pitch, roll) of each image's largest face; NaN where no face or no pose."""
    out = []
    for img in images:
        faces = detector.detect(img)
        row = describe(img, [max(faces, key=lambda f: f.size)], ["pose"])[0] if faces else {}
        out.append([row.get("yaw"), row.get("pitch"), row.get("roll")])
    return np.array(out, float)


def test_frontal_faces_read_pitch_near_zero(photos, lfw_faces, detector):
    """Faces that look into the lens read pitch ~0: the astronaut (face in the top third of the frame), Grace
    Hopper and lfw_subset's near-frontal faces; and lfw's mirrored faces still flip yaw and roll."""
    for name in ("astronaut", "grace_hopper"):
        (yaw, pitch, roll) = _poses(detector, [photos[name]])[0]
        assert abs(pitch) < 6 and abs(yaw) < 5, (name, yaw, pitch, roll)
    pose = _poses(detector, lfw_faces)
    mirror = _poses(detector, [np.ascontiguousarray(f[:, ::-1]) for f in lfw_faces])
    both = ~(np.isnan(pose).any(1) | np.isnan(mirror).any(1))
    assert both.sum() >= 90
    pose, mirror = pose[both], mirror[both]
    assert abs(np.mean(pose[:, 1])) < 5 and abs(np.median(pose[:, 1])) < 5
    assert np.mean(np.abs(pose[:, 0] + mirror[:, 0])) < 3 and np.mean(np.abs(pose[:, 2] + mirror[:, 2])) < 2
    assert np.mean(np.abs(pose[:, 1] - mirror[:, 1])) < 3


def test_a_face_turned_to_its_own_left_has_positive_yaw(photos, detector):
    """Squeezing the image-right half of the face (the face's own left side) is what turning to its own left
    looks like to the camera: yaw goes positive; mirroring that makes it negative."""
    import cv2

    img = photos["grace_hopper"]
    face, row = _one(detector, img, ["pose"])
    cx = int(face.landmarks[2, 0])
    right = cv2.resize(img[:, cx:], (max(1, (img.shape[1] - cx) * 6 // 10), img.shape[0]))
    turned = np.ascontiguousarray(np.concatenate([img[:, :cx], right], axis=1))
    _, trow = _one(detector, turned, ["pose"])
    _, mrow = _one(detector, np.ascontiguousarray(turned[:, ::-1]), ["pose"])
    assert trow["yaw"] > row["yaw"] + 5 and mrow["yaw"] < -5


def test_age_gender_on_real_faces(photos, detector):
    _, grace = _one(detector, photos["grace_hopper"], ["age", "gender", "spoof", "quality"])
    _, astro = _one(detector, photos["astronaut"], ["age", "gender"])
    assert grace["gender"] == astro["gender"] == "female" and 0.5 < grace["gender_score"] <= 1
    assert grace["age"] > astro["age"] + 20  # ~79 vs ~34: Grace Hopper older than Eileen Collins
    assert 0 <= grace["spoof_score"] <= 1 and grace["spoof_model"] == "human_antispoof"
    assert grace["quality_reason"] is None and grace["sharpness"] > 100 and grace["frontalness"] > 0.9


def test_ort_and_torch_agree_on_tests_data_photos(detector):
    for path in [DATA / "multi_face.jpg", *sorted((DATA / "identity").glob("*.jpg"))[:2]]:
        img = load_image(path)
        faces = detector.detect(img)
        a = describe(img, faces, ["age", "gender", "pose", "spoof"], backend="onnx")
        b = describe(img, faces, ["age", "gender", "pose", "spoof"], backend="torch")
        assert len(a) == len(b) == len(faces) > 0
        for x, y in zip(a, b, strict=True):
            assert x["gender"] == y["gender"] and abs(x["age"] - y["age"]) < 0.01, path
            assert abs(x["spoof_score"] - y["spoof_score"]) < 1e-3
            for k in ("yaw", "pitch", "roll"):
                assert x[k] is not None and abs(x[k] - y[k]) < 0.1, (path, k)


# the same point in the iBUG 68 order and in MediaPipe FaceMesh's 468: eye corners, mouth corners, nose tip,
# bottom of the nose, chin, lip centres (the face's right = the image's left in both)
MESH_OF_68 = {36: 33, 39: 133, 42: 362, 45: 263, 48: 61, 54: 291, 30: 4, 33: 2, 8: 152, 51: 0, 57: 17}


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_mesh_agrees_with_the_68_points_and_mirrors(name, photos, detector):
    """The 468-point mesh (ONNX Runtime) sits on face-api's 68 points where the two overlap, its depth says the
    nose is nearer than the eye corners, the mirrored photo's mesh mirrors back, and torch gives the same mesh."""
    img = photos[name]
    face, row = _one(detector, img, ["mesh", "landmarks68"])
    mesh, lm = np.array(row["mesh"]), np.array(row["landmarks68"])
    assert mesh.shape == (468, 3) and row["reasons"] == {}
    iod = np.linalg.norm(lm[45] - lm[36])
    gap = np.array([np.linalg.norm(lm[a] - mesh[b, :2]) for a, b in MESH_OF_68.items()])
    assert gap.mean() < 0.06 * iod and gap.max() < 0.12 * iod, gap / iod
    assert mesh[4, 2] < mesh[[33, 263], 2].min() - 0.1 * iod  # nose tip nearer than the outer eye corners
    _, mrow = _one(detector, np.ascontiguousarray(img[:, ::-1]), ["mesh"])
    back = np.array(mrow["mesh"])
    back[:, 0] = img.shape[1] - back[:, 0]
    pairs = [(33, 263), (133, 362), (61, 291), (4, 4), (152, 152), (0, 0), (17, 17)]
    for a, b in pairs:  # a point of the mirrored face, mirrored back, is its twin's
        assert np.linalg.norm(back[a, :2] - mesh[b, :2]) < 0.08 * iod and abs(back[a, 2] - mesh[b, 2]) < 0.08 * iod
    (torch_row,) = describe(img, [face], ["mesh"], backend="torch")
    assert np.abs(np.array(torch_row["mesh"]) - mesh).max() < 0.05


def test_mesh_is_withheld_with_a_reason_and_never_a_csv_column(photos, detector, tmp_path):
    """A box on something that is not a face gets no mesh but a reason; a crop-only run has none; JSON, Parquet
    and to_pandas() carry it (a list), the CSV never."""
    from ferkit.schema import FaceResult, FileResult, Results, ResultWriter

    img = photos["grace_hopper"]
    face = detector.detect(img)[0]
    noise = np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8)
    (row,) = describe(noise, [face], ["mesh", "age"])
    assert row["mesh"] is None and "sees no face (face score" in row["reasons"]["mesh"] and row["age"] is not None
    x1, y1, x2, y2 = (int(v) for v in face.box)
    (row,) = describe(img[y1:y2, x1:x2], None, ["mesh"])
    assert row["mesh"] is None and "crop-only" in row["reasons"]["mesh"]
    (row,) = describe(img, [face], ["mesh", "age"])
    result = FileResult("g.jpg", faces=[FaceResult("g.jpg", 0, face.box, label="happy", score=1.0,
                                                   probabilities={"happy": 1.0}, attributes=row)])  # fmt: skip
    assert np.array(result.to_dict()["faces"][0]["mesh"]).shape == (468, 3)
    out = tmp_path / "r.csv"
    w = ResultWriter("csv", ["happy"], out, attributes=True)
    w.write(result)
    w.close()
    header = out.read_text().splitlines()[0].split(",")
    assert "age" in header and not any("mesh" in h for h in header)
    # Parquet and to_pandas(): a list column, only when a face has a mesh
    import pandas as pd

    plain = FileResult("p.jpg", faces=[FaceResult("p.jpg", 0, face.box, label="happy", score=1.0,
                                                  probabilities={"happy": 1.0}, attributes={"age": 30.0})])  # fmt: skip
    for results, has_mesh in (([result, plain, FileResult("n.jpg")], True), ([plain], False)):
        out = tmp_path / f"r{has_mesh}.parquet"
        w = ResultWriter("parquet", ["happy"], out, attributes=True)
        for r in results:
            w.write(r)
        w.close()
        for df in (pd.read_parquet(out), Results(results).to_pandas()):
            assert ("mesh" in df.columns) is has_mesh and (df.columns[-1] == "mesh") is has_mesh
            if has_mesh:
                assert np.array([list(p) for p in df["mesh"].iloc[0]]).shape == (468, 3)
                assert df["mesh"].iloc[1] is None and df["mesh"].iloc[2] is None and df["age"].iloc[1] == 30.0


def test_bad_inputs_are_null_with_a_reason(photos, detector):
    img = photos["grace_hopper"]
    face = detector.detect(img)[0]
    # a face too small: the photo at 1/8 scale
    small = np.ascontiguousarray(img[::8, ::8])
    (row,) = describe(small, [face.scaled(1 / 8)], "all")
    for k in ("age", "gender", "landmarks68", "pose", "spoof"):
        assert "px < 32 px minimum" in row["reasons"][k]
    assert row["age"] is None and row["gender"] is None and row["yaw"] is None and row["spoof_score"] is None
    assert row["landmarks68"] is None and row["quality_reason"] == row["reasons"]["age"] and row["face_px"] < 32
    # a grey image
    grey = np.full((300, 300, 3), 128, np.uint8)
    (row,) = describe(
        grey,
        [
            Face(
                (50, 50, 250, 250),
                0.9,
                face.landmarks * 0 + [[120, 120], [180, 120], [150, 150], [125, 190], [175, 190]],
            )
        ],
        "all",
    )
    assert row["age"] is None and "flat image" in row["reasons"]["age"] and row["frontalness"] is None
    # a profile: the nose beyond the eyes
    lm = face.landmarks.copy()
    lm[2, 0] = lm[1, 0] + 5
    (row,) = describe(img, [Face(face.box, face.score, lm)], ["age", "pose"])
    assert row["age"] is None and "profile face" in row["reasons"]["age"] and "profile" in row["reasons"]["pose"]
    # a crop-only run: age and gender from the crop, no landmarks or pose
    x1, y1, x2, y2 = (int(v) for v in face.box)
    (row,) = describe(img[y1:y2, x1:x2], None, "all")
    assert row["age"] is not None and row["gender"] in ("female", "male")
    assert row["landmarks68"] is None and row["yaw"] is None and "crop-only" in row["reasons"]["pose"]
    assert describe(img, [], "all") == []


def test_unknown_attribute_is_one_line():
    from ferkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown attribute 'gaze': choose from age, gender"):
        describe(np.zeros((10, 10, 3), np.uint8), [], ["gaze"])


def test_schema_carries_attributes_only_when_asked(photos, detector, tmp_path):
    """FaceResult keeps the describe() row: JSON gets the fields (null + attribute_reasons when withheld), the CSV
    gets the attribute columns only when asked, and a run without attributes writes the version-2 columns."""
    import csv

    from ferkit.schema import (
        ATTRIBUTE_COLUMNS,
        BASE_COLUMNS,
        SCHEMA_VERSION,
        FaceResult,
        FileResult,
        Results,
        ResultWriter,
        openapi_models,
    )

    img = photos["grace_hopper"]
    face = detector.detect(img)[0]
    (row,) = describe(img, [face], "all")
    (small,) = describe(np.ascontiguousarray(img[::8, ::8]), [face.scaled(1 / 8)], ["age", "pose"])
    probs = {"happy": 0.9, "neutral": 0.1}
    described = FileResult(
        "g.jpg",
        faces=[
            FaceResult("g.jpg", 0, face.box, label="happy", score=0.9, probabilities=probs, attributes=row),
            FaceResult("g.jpg", 1, face.box, label="happy", score=0.9, probabilities=probs, attributes=small),
        ],
    )
    plain = FileResult("p.jpg", faces=[FaceResult("p.jpg", 0, face.box, label="happy", score=0.9, probabilities=probs)])
    d = described.to_dict()["faces"]
    assert d[0]["schema"] == SCHEMA_VERSION == 3 and d[0]["gender"] == row["gender"] and d[0]["yaw"] == row["yaw"]
    assert len(d[0]["landmarks68"]) == 68 and d[0]["attribute_reasons"] == {}
    assert d[1]["age"] is None and "px < 32 px minimum" in d[1]["attribute_reasons"]["age"] and "gender" not in d[1]
    assert not set(plain.to_dict()["faces"][0]) & {"age", "yaw", "attribute_reasons"}
    face_model = openapi_models()[0]
    assert face_model.model_validate(d[0]).age == row["age"]
    for attrs, results in ((True, [described, plain]), (False, [plain])):
        out = tmp_path / f"r{attrs}.csv"
        w = ResultWriter("csv", list(probs), out, attributes=attrs)
        for r in results:
            w.write(r)
        w.close()
        table = list(csv.DictReader(out.open()))
        header = list(table[0])
        assert header[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
        assert (set(ATTRIBUTE_COLUMNS) <= set(header)) is attrs
        if attrs:
            assert float(table[0]["age"]) == row["age"] and table[0]["gender"] == row["gender"]
            assert table[1]["age"] == "" and table[2]["age"] == ""  # withheld; not asked
    df = Results([described, plain]).to_pandas()
    assert df["gender"].iloc[0] == row["gender"] and "age" not in Results([plain]).to_pandas().columns
