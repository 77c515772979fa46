"""Face identity (issue 5): gallery, enrolment, verification, its metrics, collect, and the binary classifier path.

Real photos: tests/data/identity/ (face_recognition 1.3.0's test images, MIT; see tests/data/identity/README.md),
matplotlib's grace_hopper.jpg and skimage's astronaut (public domain) as strangers. Tests that embed faces need
the identity extra (dlib + face_recognition_models) and skip only when those packages are not installed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from ferkit.errors import ConfigError, DataError
from ferkit.identity import Gallery, GalleryError, calibrate_threshold, validate_name
from ferkit.identity import metrics as VM

DATA = Path(__file__).parent / "data" / "identity"
MULTI = Path(__file__).parent / "data" / "multi_face.jpg"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Detection + embedding are tiny per photo: on a shared 2-core box, more threads only fight each other."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli(*args):
    return run_cli(*args, env={"OMP_NUM_THREADS": "1"})


def _hopper() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _save(arr: np.ndarray, path: Path, quality: int = 92) -> Path:
    from PIL import Image

    Image.fromarray(arr).save(path, quality=quality)
    return path


@pytest.fixture(scope="module")
def encoder():
    """dlib's encoder; skips only when the optional packages are not installed. Anything else, e.g. ferkit
    looking in the wrong model folder, is an error of ours and fails."""
    import importlib.util

    pytest.importorskip("dlib")
    # find_spec, not import: face_recognition_models' __init__ imports pkg_resources, which ferkit never needs
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models is not installed (the identity extra)")
    from ferkit.identity.embedder import FaceEncoder

    return FaceEncoder()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """The shipped photos plus derived ones: biden has only one photo in the source, so a mirrored copy is
    enrolled and a rescaled, darker, re-compressed copy is the held-out probe (near-duplicates: they test the
    plumbing, not the model). Strangers: grace_hopper, astronaut. A blank image has no face."""
    from PIL import Image, ImageEnhance

    d = tmp_path_factory.mktemp("photos")
    out = {p.stem: p for p in DATA.glob("*.jpg")}
    im = Image.open(DATA / "biden.jpg").convert("RGB")
    out["biden_mirror"] = _save(np.asarray(im)[:, ::-1].copy(), d / "biden_mirror.jpg")
    probe = ImageEnhance.Brightness(im.resize((im.width * 3 // 4, im.height * 3 // 4))).enhance(0.7)
    out["biden_probe"] = _save(np.asarray(probe), d / "biden_probe.jpg", quality=70)
    out["hopper"] = _hopper()
    import skimage.data

    out["astronaut"] = _save(skimage.data.astronaut(), d / "astronaut.jpg")
    out["blank"] = _save(np.full((200, 200, 3), 127, np.uint8), d / "blank.jpg")
    out["multi"] = MULTI
    return out


# ---------------------------------------------------------------------------------------------------------------
# Pure functions: verification metrics, calibration, names


def test_verification_metrics_by_hand():
    gen = np.array([0.2, 0.3, 0.5])
    imp = np.array([0.4, 0.7, 0.8, 0.9])
    roc = VM.verification_roc(gen, imp)
    assert roc["far"][0] == 0 and roc["tar"][0] == 0 and roc["far"][-1] == 1 and roc["tar"][-1] == 1
    # 11 of 12 (genuine, impostor) pairs have the genuine pair closer.
    assert VM.roc_auc_verification(gen, imp) == pytest.approx(11 / 12)
    e = VM.eer(gen, imp)
    assert e["eer"] == pytest.approx((1 / 4 + 1 / 3) / 2)  # FAR and FRR cannot meet exactly here
    t = VM.tar_at_far(gen, imp, 0.25)
    assert t["tar"] == pytest.approx(1.0) and t["far"] == pytest.approx(0.25)
    assert not VM.tar_at_far(gen, imp, 1e-2)["measurable"]  # 4 impostor pairs cannot measure FAR 1%
    assert np.isnan(VM.tar_at_far(gen, imp, 1e-2)["tar"])
    r = VM.rates_at(gen, imp, 0.45)
    assert r["tar"] == pytest.approx(2 / 3) and r["far"] == pytest.approx(1 / 4)
    # A distance exactly at the threshold is accepted (<=), for genuine and impostor pairs alike.
    r = VM.rates_at(gen, imp, 0.4)
    assert r["tar"] == pytest.approx(2 / 3) and r["far"] == pytest.approx(1 / 4)
    assert VM.rates_at(gen, imp, 0.5)["tar"] == pytest.approx(1.0)
    assert VM.roc_auc_verification([0.1, 0.2], [0.5, 0.6]) == 1.0
    g, i = VM.pair_distances(np.array([[0, 0], [0, 1], [3, 4]], float), ["a", "a", "b"])
    assert g.tolist() == [1.0] and sorted(i.tolist()) == pytest.approx([np.sqrt(18), 5.0])


def test_calibrate_threshold():
    rng = np.random.default_rng(0)
    # Too few photos: dlib's default.
    c = calibrate_threshold(["a", "b"], rng.normal(size=(2, 4)))
    assert c["threshold"] == 0.6 and c["method"].startswith("default")
    # Two tight clusters far apart: the gap's midpoint would be > 0.6, so it is clipped to 0.6.
    M = np.concatenate([rng.normal(0, 0.01, (3, 8)), rng.normal(0, 0.01, (3, 8)) + 1.0])
    c = calibrate_threshold(["a"] * 3 + ["b"] * 3, M)
    assert c["threshold"] == 0.6 and "clipped" in c["method"] and c["max_genuine"] < c["min_impostor"]
    # Clusters closer than dlib's cut-off: calibration makes it stricter.
    M = np.concatenate([rng.normal(0, 0.01, (3, 8)), rng.normal(0, 0.01, (3, 8)) + 0.15])
    c = calibrate_threshold(["a"] * 3 + ["b"] * 3, M)
    assert c["max_genuine"] < c["threshold"] < c["min_impostor"] and c["threshold"] < 0.6


@pytest.mark.parametrize("name", ["alice", "Mary Jones", "O'Brien", "José", "bob_2", "a", "x-y.z"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["", " alice", "alice ", "../etc", "a/b", "a\nb", "x" * 65, "-x", "a  b", "a;drop"])
def test_invalid_names(name):
    with pytest.raises(ConfigError):
        validate_name(name)


def test_imbalance_warning():
    from ferkit.data import imbalance_warning

    assert imbalance_warning(["me", "not_me"], [100, 90]) is None
    assert "1.6x" in imbalance_warning(["me", "not_me"], [50, 80])
    assert imbalance_warning(list("abc"), [50, 80, 60]) is None  # multi-class: only a 10x skew is flagged


def test_binary_metrics_two_class():
    from ferkit.evaluation.metrics import binary_metrics

    y = np.array([0, 0, 0, 1, 1, 1])  # classes ["me", "not_me"]: "me" (index 0) is positive
    p_me = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    m = binary_metrics(y, np.stack([p_me, 1 - p_me], 1), ["me", "not_me"])
    assert m["positive_class"] == "me"
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 2)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert 0 <= m["eer"] <= 0.5


# ---------------------------------------------------------------------------------------------------------------
# Gallery: transactions, corruption, concurrency (no dlib needed)


def _row(name: str, i: int, dim: int = 128) -> dict:
    v = np.random.default_rng(i).normal(size=dim).astype(np.float32)
    return {
        "name": name,
        "sha256": f"{name}-{i:064d}"[-64:],
        "photo": f"/photos/{name}/{i}.jpg",
        "embedder": "dlib_resnet_v1",
        "vector": v,
        "box": (0, 0, 10, 10),
    }


def test_gallery_idempotent_and_remove(tmp_path):
    p = tmp_path / "g.sqlite3"
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery(p)
    assert not p.exists()  # a read never creates a gallery
    with Gallery(p, create=True) as g:
        assert g.add([_row("alice", 1), _row("alice", 2)]) == [True, True]
        assert g.add([_row("alice", 1)]) == [False]  # same photo again: no-op
        assert g.count() == 2
        with pytest.raises(GalleryError, match="no identity named 'bob'"):
            g.remove("bob")
        with pytest.raises(GalleryError, match="cannot add"):  # mixing embedders is refused, nothing written
            g.add([_row("carol", 3), {**_row("carol", 4, dim=64), "embedder": "other"}])
        assert g.count() == 2 and g.names() == ["alice"]
        with pytest.raises(ConfigError):  # a bad name in a batch rolls the whole batch back
            g.add([_row("dave", 5), _row("../x", 6)])
        assert g.count() == 2
        assert g.remove("alice") == 2 and g.count() == 0
        assert g.integrity_ok()


# Each writer is a separate Python process doing what `ferkit enroll` does after embedding: open the gallery
# (creating it if absent) and add rows in a transaction, one photo per transaction, the most interleaving two
# writers can get. A plain interpreter (no pytest, no torch) keeps start-up cheap.
_WORKER = """
import sys, numpy as np
from ferkit.identity.gallery import Gallery
path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    v = np.random.default_rng(i).normal(size=128).astype(np.float32)
    with Gallery(path, create=True) as g:
        g.add([{"name": name, "sha256": f"{name}-{i:064d}"[-64:], "photo": f"/p/{name}/{i}.jpg",
                "embedder": "dlib_resnet_v1", "vector": v, "box": (0, 0, 10, 10)}])
"""


def test_concurrent_enrolment_two_processes(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "shared.sqlite3"  # does not exist yet: both processes race to create it too
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(p), who, "60"], stderr=subprocess.PIPE, text=True)
        for who in ("alice", "bob")
    ]
    for q in procs:
        _, err = q.communicate(timeout=120)
        assert q.returncode == 0, err
    with Gallery(p) as g:
        assert g.count() == 120
        assert {s["name"]: s["photos"] for s in g.summary()} == {"alice": 60, "bob": 60}
        assert g.integrity_ok()
    assert sqlite3.connect(p).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _corrupt_files(tmp_path) -> list[Path]:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    other = tmp_path / "other.sqlite3"  # a valid SQLite file that is not a gallery
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    damaged = tmp_path / "damaged.sqlite3"  # a real gallery with its table pages overwritten
    with Gallery(damaged, create=True) as g:
        g.add([_row("alice", i) for i in range(30)])
    con = sqlite3.connect(damaged)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    raw = bytearray(damaged.read_bytes())
    page = int.from_bytes(raw[16:18], "big")
    raw[page + 100 : page * 3] = b"\xff" * (page * 3 - page - 100)
    damaged.write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        Path(str(damaged) + suffix).unlink(missing_ok=True)
    return [garbage, other, damaged]


def test_corrupt_gallery_is_an_error_naming_it_and_untouched(tmp_path):
    for f in _corrupt_files(tmp_path):
        before = f.read_bytes()
        for create in (False, True):
            with pytest.raises(GalleryError) as e:
                Gallery(f, create=create)
            msg = str(e.value)
            assert str(f) in msg and "\n" not in msg
        assert f.read_bytes() == before, f
    # The CLI: one line, exit 2, file untouched, for list, remove and enroll (enroll fails before any model loads).
    f = tmp_path / "garbage.sqlite3"
    before = f.read_bytes()
    for args in (
        ["gallery", "list"],
        ["gallery", "remove", "alice"],
        ["enroll", "--name", "alice", str(DATA / "obama.jpg")],
        ["verify", str(DATA / "obama.jpg")],
    ):
        r = cli(*args, "--gallery", f)
        assert r.returncode == 2, (args, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and str(f) in lines[0] and "Traceback" not in r.stderr
    assert f.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("garbage")) == ["garbage.sqlite3"]


# ---------------------------------------------------------------------------------------------------------------
# Enrolment and verification on real photos (dlib)


def test_enrol_and_verify_real_photos(tmp_path, encoder, photos):
    from ferkit.identity import IdentityMatcher, enroll, verify

    g = tmp_path / "people.sqlite3"
    rep = enroll("obama", [photos["obama"], photos["obama2"]], gallery=g, encoder=encoder)
    assert len(rep.added) == 2 and not rep.skipped
    rep = enroll(
        "biden", [photos["biden"], photos["biden_mirror"], photos["multi"], photos["blank"]], gallery=g, encoder=encoder
    )
    assert len(rep.added) == 2
    reasons = dict(rep.skipped)
    assert "5 faces" in reasons[str(photos["multi"])] and "no face" in reasons[str(photos["blank"])]
    # The same photo again: idempotent.
    rep = enroll("obama", [photos["obama"]], gallery=g, encoder=encoder)
    assert rep.added == [] and len(rep.already) == 1
    with Gallery(g) as gal:
        assert {s["name"]: s["photos"] for s in gal.summary()} == {"biden": 2, "obama": 2}
    # Held-out photos -> the right names; strangers -> unknown.
    probes = [photos["obama3"], photos["biden_probe"], photos["hopper"], photos["astronaut"], photos["blank"]]
    res = verify(probes, gallery=g, encoder=encoder)
    got = {Path(r["photo"]).stem: r for r in res}
    assert got["obama3"]["identity"] == "obama" and got["obama3"]["distance"] < 0.5
    assert got["biden_probe"]["identity"] == "biden"
    assert got["grace_hopper"]["identity"] == "unknown" and got["grace_hopper"]["distance"] > 0.6
    assert got["astronaut"]["identity"] == "unknown"
    assert got["blank"]["status"] == "no_face"
    assert all(r["threshold"] == 0.6 for r in res if r["status"] == "ok")
    # 1:1 verification against the wrong person.
    r = verify([photos["obama3"]], gallery=g, name="biden", encoder=encoder)[0]
    assert r["identity"] == "unknown" and not r["match"] and r["best"] == "biden"
    with pytest.raises(ConfigError, match="not in the gallery"):
        verify([photos["obama3"]], gallery=g, name="carol", encoder=encoder)
    # A command that fails (no usable photo) writes nothing.
    with pytest.raises(DataError, match="nothing was enrolled"):
        enroll("carol", [photos["blank"], photos["multi"]], gallery=g, encoder=encoder)
    with pytest.raises(DataError, match="nothing was enrolled"):
        enroll("carol", [photos["blank"]], gallery=tmp_path / "fresh.sqlite3", encoder=encoder)
    assert not (tmp_path / "fresh.sqlite3").exists()
    m = IdentityMatcher.from_gallery(g)
    assert sorted(set(m.names)) == ["biden", "obama"] and len(m.names) == 4

    # Expression and identity together (what predict --gallery and the webcam view use).
    from ferkit.identity.verify import IdentityAssigner
    from ferkit.inference.pipeline import Analyzer

    an = Analyzer("fer_minixception", detector=encoder.detector, identity=IdentityAssigner(g))
    faces = an.analyze(str(photos["obama3"])).faces
    assert len(faces) == 1 and faces[0].identity["name"] == "obama" and faces[0].label
    assert faces[0].to_dict()["identity"]["name"] == "obama"
    # The API with a gallery: the same analyzer (models, detector, matcher) serves every call.
    from ferkit import api

    first = api.analyzer(gallery=g)
    assert api.analyzer(gallery=g) is first
    assert api.analyze(str(photos["obama3"]), gallery=g).faces[0].identity["name"] == "obama"


def test_cli_enroll_verify_gallery(tmp_path, encoder, photos):
    g = tmp_path / "cli.sqlite3"
    r = cli("enroll", "--name", "obama", "--gallery", g, photos["obama"], photos["obama2"], photos["multi"], "--quiet")
    assert r.returncode == 0, r.stderr
    assert "skipped" in r.stderr and "enrolled 2 new photo(s) of obama" in r.stderr
    r = cli("verify", "--gallery", g, "--json", "--quiet", photos["obama3"], photos["hopper"])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["identity"] for x in rows] == ["obama", "unknown"]
    r = cli("gallery", "list", "--gallery", g)
    assert r.returncode == 0 and "obama" in r.stdout and "threshold 0.600" in r.stdout
    r = cli("enroll", "--name", "../evil", "--gallery", tmp_path / "new.sqlite3", photos["obama"])
    assert r.returncode == 2 and "--name" in r.stderr and not (tmp_path / "new.sqlite3").exists()
    assert (g.stat().st_mode & 0o777) == 0o600  # biometric templates: owner only
    r = cli("gallery", "remove", "obama", "--gallery", g)
    assert r.returncode == 0
    r = run_cli(
        "enroll",
        "--name",
        "x",
        "--gallery",
        tmp_path / "m.sqlite3",
        photos["obama"],
        env={"FERKIT_DLIB_MODELS": str(tmp_path / "no_models")},
    )
    assert r.returncode == 2 and "FERKIT_DLIB_MODELS" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.sqlite3").exists()
    r = cli("verify", "--gallery", g, photos["obama3"])
    assert r.returncode == 2 and "empty" in r.stderr


def test_evaluate_verification(tmp_path, encoder, photos):
    from ferkit.identity import evaluate_verification

    data = tmp_path / "people"
    layout = {
        "obama": ["obama", "obama2", "obama3"],
        "biden": ["biden", "biden_mirror", "biden_probe"],
        "strangers_hopper": ["hopper"],
        "strangers_astronaut": ["astronaut"],
        "nobody": ["blank"],
    }
    for who, names in layout.items():
        (data / who).mkdir(parents=True)
        for n in names:
            (data / who / f"{n}.jpg").write_bytes(photos[n].read_bytes())
    m = evaluate_verification(data, out=tmp_path / "eval", encoder=encoder)
    assert m["identities"] == 4 and m["photos"] == 8 and m["skipped"] == 1
    assert m["genuine_pairs"] == 6 and m["impostor_pairs"] == 22
    assert m["roc_auc"] == pytest.approx(1.0) and m["eer"] == pytest.approx(0.0)
    assert set(m["tar_at_far"]) == {"0.01", "0.001"}
    out = tmp_path / "eval"
    for f in ("metrics.json", "roc.png", "distance_histogram.png", "report.md", "pairs.csv", "skipped.csv"):
        assert (out / f).stat().st_size > 0, f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["tar_at_far"]["0.001"]["tar"] is None  # 22 impostor pairs cannot measure FAR 1e-3
    assert "TAR @ FAR 0.001" in (out / "report.md").read_text()
    assert (out / "distance_histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_from_video_file(tmp_path, photos):
    import cv2

    from ferkit.identity.capture import collect

    # A replayable "camera": frames with one face, with no face, and with five faces.
    one = cv2.imread(str(photos["obama"]))
    H, W = 360, 480
    frames = (
        [cv2.resize(one, (W, H))] * 6
        + [np.full((H, W, 3), 90, np.uint8)] * 3
        + [cv2.resize(cv2.imread(str(MULTI)), (W, H))] * 2
    )
    video = tmp_path / "cam.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    if not vw.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG AVI")
    for f in frames[6:] + frames[:6]:
        vw.write(f)
    vw.release()
    lines: list[str] = []
    rep = collect(str(video), "me", count=4, out=tmp_path / "ds", interval=0.0, preview=False, say=lines.append)
    assert len(rep.saved) == 4 and rep.no_face == 3 and rep.several_faces == 2
    assert sorted(p.name for p in (tmp_path / "ds" / "me").iterdir()) == [f"me_{i:04d}.jpg" for i in range(1, 5)]
    assert any("light" in s or "straight" in s for s in lines)
    r = cli("collect", "--webcam", "7", "--label", "me", "--count", "2", "--out", tmp_path / "x")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--webcam 7" in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# The binary "is it me?" classifier path (source 000)


def test_binary_classifier_recipe_end_to_end(tmp_path):
    from ferkit.data.synth import write

    data = write(tmp_path / "me_vs_not", n=240, seed=3, layout="me_vs_not")
    me = sorted((Path(data) / "train" / "me").iterdir())
    for f in me[: len(me) // 2]:  # skew the classes 2:1: the balanced-class check must say so
        f.unlink()
    run = tmp_path / "run"
    r = cli(
        "train",
        "--recipe",
        "face_resnet18_scratch",
        "--data",
        data,
        "--fast",
        "--image-size",
        "48",
        "--out",
        run,
        "--quiet",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "warning: class imbalance in train: 'not_me'" in r.stderr and "--class-weights" in r.stderr
    r = cli("evaluate", "--checkpoint", run / "best.pt", "--data", data, "--out", tmp_path / "ev", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert sorted(m["classes"]) == ["me", "not_me"]
    b = m["binary"]
    assert b["positive_class"] == "me"
    for k in ("roc_auc", "eer", "eer_threshold", "precision", "recall", "false_positive_rate"):
        assert k in b
    assert b["tp"] + b["fp"] + b["fn"] + b["tn"] == m["n"]
    assert np.asarray(m["confusion_matrix"]).shape == (2, 2)
