"""`ferkit predict` on real photos: folders with good and bad files, a video written here, ONNX parity,
`ferkit.analyze`, ensembles, a missing camera."""

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

DATA = Path(__file__).parent / "data"


def _grace() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, astronaut) -> Path:
    d = tmp_path_factory.mktemp("photos")
    sub = d / "sub"  # folders are searched recursively
    sub.mkdir()
    Image.fromarray(astronaut).save(d / "astronaut.png")
    shutil.copy(_grace(), d / "grace.jpg")
    shutil.copy(DATA / "multi_face.jpg", sub / "multi.jpg")
    Image.open(_grace()).convert("CMYK").save(d / "cmyk.jpg")
    grey16 = np.asarray(Image.fromarray(astronaut).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(grey16).save(d / "grey16.png")
    assert Image.open(d / "grey16.png").mode.startswith("I")
    Image.fromarray(np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])).save(d / "rgba.png")
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(d / "blank.png")
    big = cv2.resize(astronaut, (4000, 4000), interpolation=cv2.INTER_LINEAR)
    big = np.pad(big, ((0, 0), (500, 500), (0, 0)), mode="edge")  # 5000 x 4000
    Image.fromarray(big).save(sub / "huge.jpg", quality=60)
    (d / "empty.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes(_grace().read_bytes()[:3000])
    (d / "notes.jpg").write_text("not an image at all\n")
    return d


def test_predict_folder_with_good_and_bad_files(tmp_path, photo_dir):
    ann = tmp_path / "ann"
    r = run_cli("predict", photo_dir, "--annotate", ann)
    assert r.returncode == 2, r.stderr[-3000:]  # some files failed
    assert "Traceback" not in r.stderr
    rows = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert len(rows) == 11
    status = {k: v["status"] for k, v in rows.items()}
    assert status == {
        "astronaut.png": "ok",
        "grace.jpg": "ok",
        "multi.jpg": "ok",
        "cmyk.jpg": "ok",
        "grey16.png": "ok",
        "rgba.png": "ok",
        "huge.jpg": "ok",
        "blank.png": "no_face",
        "empty.jpg": "error",
        "truncated.jpg": "error",
        "notes.jpg": "error",
    }, status
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg"):
        assert rows[name]["reason"] and "\n" not in rows[name]["reason"] and name in rows[name]["reason"]
    assert len(rows["multi.jpg"]["faces"]) == 5
    for name in ("astronaut.png", "grace.jpg", "cmyk.jpg", "grey16.png", "rgba.png", "huge.jpg"):
        assert len(rows[name]["faces"]) == 1, (name, rows[name]["faces"])
    assert rows["huge.jpg"]["downscaled"] is True and rows["huge.jpg"]["image_size"] == [5000, 4000]
    assert "downscaled" in rows["huge.jpg"]["reason"]
    assert rows["astronaut.png"]["downscaled"] is False
    face = rows["astronaut.png"]["faces"][0]
    assert face["schema"] == 3 and face["label"] == "happy" and face["identity"] is None
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert abs(sum(face["probabilities"].values()) - 1) < 1e-4
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < x2 < 300 and 50 < y1 < y2 < 250  # the astronaut's face
    summary = r.stderr.strip().splitlines()[-1]
    assert "11 inputs" in summary and "7 ok" in summary and "1 without a face" in summary and "3 failed" in summary
    assert (ann / "multi.annotated.jpg").is_file() and cv2.imread(str(ann / "multi.annotated.jpg")) is not None

    # only good files -> exit 0; CSV has one row per face
    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(photo_dir / "sub" / "multi.jpg", good / "multi.jpg")
    shutil.copy(photo_dir / "blank.png", good / "blank.png")  # no face: reported, not a failure
    r = run_cli("predict", good, "--format", "csv", "--output", tmp_path / "out.csv", "--detector", "haar")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [x["status"] for x in rows].count("no_face") == 1
    assert len([x for x in rows if x["status"] == "ok"]) >= 4  # Haar finds most of the five


def _write_video(path: Path, img: np.ndarray, n: int = 20, fps: float = 10.0) -> None:
    big = cv2.resize(img, (720, 720))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    assert w.isOpened()
    for i in range(n):  # the face drifts across the frame
        x0, y0 = 100 + 4 * i, 60 + 2 * i
        frame = cv2.resize(big[y0 : y0 + 480, x0 : x0 + 640], (320, 240))
        w.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    w.release()


def test_predict_video(tmp_path, astronaut):
    vid = tmp_path / "clip.mp4"
    _write_video(vid, astronaut)
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01garbage" * 50)
    ann = tmp_path / "ann"
    r = run_cli("predict", vid, tmp_path / "broken.mp4", "--stride", "2", "--smooth", "0.5", "--annotate", ann)
    assert r.returncode == 2, r.stderr[-3000:]
    rows = {Path(x["path"]).name: x for x in map(json.loads, r.stdout.splitlines())}
    assert rows["broken.mp4"]["status"] == "error" and "broken.mp4" in rows["broken.mp4"]["reason"]
    v = rows["clip.mp4"]
    assert v["status"] == "ok" and v["kind"] == "video" and v["frames"] == 10
    assert [f["frame"] for f in v["faces"]] == list(range(0, 20, 2))  # one face per analysed frame
    assert {f["track"] for f in v["faces"]} == {0}  # tracked as one face
    assert abs(v["faces"][-1]["timestamp"] - 1.8) < 1e-3
    assert all(f["label"] == "happy" for f in v["faces"])
    # --smooth 0.5: each tracked face's probabilities are the EMA of the raw ones, computed here by hand from an
    # unsmoothed in-process run (same model and detector defaults as the command)
    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_video

    raw_result = analyze_video(Analyzer(), str(vid), stride=2)
    raw = raw_result.faces
    assert [f.frame for f in raw] == list(range(0, 20, 2))
    # the table (CSV / Parquet / to_pandas) puts each video field under its own header
    table = raw_result.to_pandas()
    assert list(table["frame"]) == list(range(0, 20, 2)) and set(table["track"]) == {0} and set(table["face"]) == {0}
    assert list(table["timestamp"]) == pytest.approx([i / 10 for i in range(0, 20, 2)], abs=1e-3)
    assert set(table["kind"]) == {"video"} and set(table["status"]) == {"ok"}
    classes = list(raw[0].probabilities)
    ema = []
    for f in raw:
        p = np.array([f.probabilities[c] for c in classes])
        ema.append(p if not ema else 0.5 * p + 0.5 * ema[-1])
    got = np.array([[f["probabilities"][c] for c in classes] for f in v["faces"]])
    raw_p = np.array([[f.probabilities[c] for c in classes] for f in raw])
    off_ema, off_raw = np.abs(got - np.array(ema)).max(), np.abs(got - raw_p).max()
    assert off_ema < 2e-5 and off_raw > 1e-4, (off_ema, off_raw)  # measured 5e-7 vs 3e-4 (faces ~0.999 happy)
    assert [f["score"] for f in v["faces"]] == pytest.approx([e.max() for e in ema], abs=2e-5)
    per_sec = list(csv.DictReader(open(ann / "clip.per_second.csv")))
    assert [row["second"] for row in per_sec] == ["0", "1"] and per_sec[0]["label"] == "happy"
    assert (ann / "clip.emotions.png").stat().st_size > 1000
    cap = cv2.VideoCapture(str(ann / "clip.annotated.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 10


def test_live_window_falls_back_without_gui(tmp_path, astronaut, capsys):
    """opencv-python-headless has no imshow: analyze_video(show=True) warns once and goes on."""
    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_video, window_available

    torch.set_num_threads(1)
    vid = tmp_path / "c.mp4"
    _write_video(vid, astronaut, n=4)
    seen = []
    r = analyze_video(Analyzer("fer_minixception"), str(vid), show=True, max_frames=3, on_frame=seen.append)
    assert r.frames == 3 and len(seen) == 3 and r.status == "ok"
    if not window_available():
        assert "no GUI" in capsys.readouterr().err


def test_missing_camera_is_one_line_exit_2():
    r = run_cli("predict", "--webcam", "97")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "webcam 97" in err[0] and "Traceback" not in r.stderr


def test_analyze_api_and_ensemble(astronaut):
    import ferkit
    from ferkit.inference.pipeline import Analyzer
    from ferkit.zoo.vocab import COMMON

    torch.set_num_threads(1)
    faces = ferkit.analyze(astronaut).faces
    assert len(faces) == 1 and faces[0].label == "happy" and faces[0].score > 0.9
    d = faces[0].to_dict()
    assert json.loads(json.dumps(d)) == d and d["source"] == "<array>"
    an = Analyzer(["fer_minixception", "human_xception", "faceapi_expression"])
    assert an.classes == [c for c in COMMON if c != "contempt"]
    img = np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB"))
    res = an.analyze(img).faces
    assert len(res) == 5
    for f in res:
        assert list(f.probabilities) == an.classes and abs(sum(f.probabilities.values()) - 1) < 1e-6
    # faceapi's own class order differs: the ensemble maps by name, so its happy is the members' mean happy
    single = [Analyzer(m).analyze(img).faces for m in ("fer_minixception", "human_xception", "faceapi_expression")]
    want = np.mean([s[0].probabilities["happy"] for s in single])
    assert abs(res[0].probabilities["happy"] - want) < 1e-5
    # --backend onnx with a zoo name: exported once into the (test-private) cache, same answers
    pytest.importorskip("onnxruntime")
    ox = Analyzer("fer_minixception", backend="onnx").analyze(img).faces
    assert [f.label for f in ox] == [f.label for f in single[0]]
    assert (
        max(
            abs(a.probabilities[c] - b.probabilities[c])
            for a, b in zip(ox, single[0], strict=True)
            for c in a.probabilities
        )
        < 1e-4
    )


def test_onnx_export_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from ferkit.checkpoint import build_model, make_checkpoint, save_checkpoint
    from ferkit.data.spec import InputSpec
    from ferkit.data.transforms import to_input
    from ferkit.inference.backends import OnnxClassifier
    from ferkit.inference.onnx import export_onnx
    from ferkit.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = create_model("seed1_cnn", num_classes=3, in_channels=1, task="multitask")
    spec = InputSpec(size=(48, 48), channels=1, mean=[0.4], std=[0.25])
    ck = make_checkpoint(
        net,
        model_name="seed1_cnn",
        model_kwargs={},
        num_classes=3,
        in_channels=1,
        task="multitask",
        classes=["happy", "sad", "neutral"],
        input_spec=spec.to_dict(),
    )
    save_checkpoint(ck, tmp_path / "mt.pt")
    img = np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB"))
    rng = np.random.default_rng(0)
    for src, spec_ in ((tmp_path / "mt.pt", spec), ("fer_minixception", None)):
        for int8, tol in ((False, 1e-4), (True, 1e-2)):
            out = tmp_path / f"{Path(str(src)).stem}{'_int8' if int8 else ''}.onnx"
            if spec_ is None and not int8:  # the command once; in-process otherwise (subprocesses are slow)
                r = run_cli("export", src, "--format", "onnx", "--out", out)
                assert r.returncode == 0 and r.stdout.strip() == str(out), r.stderr[-2000:]
            else:
                assert export_onnx(src, out, int8=int8) == out
            oc = OnnxClassifier(out)
            model = build_model(ck if spec_ is not None else __import__("ferkit").load_checkpoint(src)).eval()
            s = oc.spec
            crops = np.stack(
                [cv2.resize(img[y : y + 150, x : x + 120], s.size[::-1]) for x, y in rng.integers(0, 500, (6, 2))]
            )
            crops = crops.mean(-1, keepdims=True).astype(np.uint8) if s.channels == 1 else crops
            x = to_input(crops, s)
            with torch.no_grad():
                ref = model(x)
            got = oc.run_raw(x.numpy())
            ref_logits = ref["logits"] if isinstance(ref, dict) else ref
            p_ref = torch.softmax(ref_logits, 1).numpy()
            p_got = oc.predict(crops)[0]
            assert np.abs(p_got - p_ref).max() < tol, (src, int8, np.abs(p_got - p_ref).max())
            if not int8:
                assert np.abs(got[0] - ref_logits.numpy()).max() < 1e-4
            if isinstance(ref, dict):  # every head: logits, valence and arousal, raw and through predict()
                assert len(got) == 3
                v_ref, a_ref = ref["valence"].reshape(-1).numpy(), ref["arousal"].reshape(-1).numpy()
                assert np.abs(v_ref - a_ref).max() > 10 * tol  # the two heads differ, so a mix-up shows
                assert np.abs(got[1] - v_ref).max() < tol and np.abs(got[2] - a_ref).max() < tol
                va = oc.predict(crops)[1]
                assert va.shape == (len(crops), 2)
                assert np.abs(va[:, 0] - v_ref).max() < tol and np.abs(va[:, 1] - a_ref).max() < tol
                assert oc.task == "multitask" and oc.classes == ["happy", "sad", "neutral"]
    # the exported file works as a --checkpoint, no PyTorch model needed
    r = run_cli("predict", DATA / "multi_face.jpg", "--checkpoint", tmp_path / "fer_minixception.onnx")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(json.loads(r.stdout)["faces"]) == 5


def test_labels_of_faces_close_together_do_not_overlap():
    """Group photos: each face's label sits above its face, else below, else lower down, never over another
    label, and inside the image; the annotated picture is drawn with them."""
    import cv2

    import ferkit
    from ferkit.inference.draw import annotate, label_boxes

    def overlap(a, b):
        return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])

    rng = np.random.default_rng(0)
    cases = [
        ([(10, 50, 60, 100), (55, 52, 105, 102), (100, 48, 150, 98)], (160, 120)),  # a row of faces
        ([(30, 40, 90, 100)], (160, 120)),
        ([(30, 2, 90, 60)], (160, 120)),
    ]  # room above it, and none
    for _ in range(200):  # crowds: 2-12 faces of 20-60 px in a 320x240 image, labels 40-120 px wide
        n = int(rng.integers(2, 13))
        xy = rng.integers(0, 260, (n, 2))
        side = rng.integers(20, 60, n)
        cases.append(([(x, y, x + s, y + s) for (x, y), s in zip(xy, side, strict=True)], (320, 240)))
    for boxes, size in cases:
        sizes = [(int(rng.integers(40, 120)), 10) for _ in boxes]
        rects = label_boxes(boxes, sizes, size)
        for i, r in enumerate(rects):
            assert 0 <= r[0] and r[2] <= size[0] and r[2] - r[0] == sizes[i][0] + 2, (r, size)
            assert all(not overlap(r, o) for o in rects[i + 1 :]), (boxes, rects)
        if len(boxes) == 1:  # room above: the label sits right on the face; none: right under it
            assert rects[0][3] == boxes[0][1] if boxes[0][1] >= 15 else rects[0][1] == boxes[0][3] + 1
    img = np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB"))
    res = ferkit.analyze(img)
    out = annotate(img, res.faces)
    assert out.shape == img.shape[:2] + (3,) and not np.array_equal(out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def _faces(*boxes):
    from ferkit.schema import FaceResult

    return [
        FaceResult("clip.mp4", i, b, label="happy", score=1.0, probabilities={"happy": 1.0})
        for i, b in enumerate(boxes)
    ]


def test_tracker_gives_overlapping_faces_their_own_ids_and_expires_lost_tracks():
    """Video track ids: two faces of one frame that both overlap the previous frame's face, or each other, at IoU
    1/3 (RetinaFace's suppression at 0.4 keeps both) are two tracks; a track missing for max_missed frames is kept,
    one more and a face in its place is a new track."""
    from ferkit.inference.video import Tracker

    t = Tracker()
    first = _faces((0, 0, 100, 100))
    t.update(first)
    two = _faces((-50, 0, 50, 100), (50, 0, 150, 100))  # each IoU 1/3 with the first box, 0 with each other
    t.update(two)
    assert [f.track for f in first] == [0] and [f.track for f in two] == [0, 1]
    far = _faces((-50, 0, 50, 100), (300, 300, 400, 400))  # the first stays on track 0, the other is new
    t.update(far)
    assert [f.track for f in far] == [0, 2]
    t = Tracker()
    t.update(_faces((0, 0, 100, 100)))
    near = _faces((-25, 0, 75, 100), (25, 0, 125, 100))  # IoU 0.6 with the old box, 1/3 with each other
    t.update(near)
    assert [f.track for f in near] == [0, 1]

    box = (10, 10, 60, 60)
    for missed, same in ((2, True), (3, False)):
        t = Tracker(max_missed=2)
        t.update(_faces(box))
        for _ in range(missed):
            t.update([])
        back = _faces(box)
        t.update(back)
        assert back[0].track == (0 if same else 1), (missed, back[0].track)


def test_predict_shows_a_progress_bar_with_progress_and_none_in_logs(tmp_path, astronaut):
    """`ferkit --progress predict`: a bar with the file count, its rate and the faces so far, the per-file
    lines above it; without --progress and not at a terminal (a log), no bar and no carriage returns."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for k in range(4):
        Image.fromarray(astronaut[:, :: (-1) ** k]).save(photos / f"a{k}.png")
    shutil.copy(DATA / "multi_face.jpg", photos / "multi.jpg")
    r = run_cli("--progress", "predict", photos, "--format", "csv", "--output", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    bar = r.stderr.rsplit("\r", 1)[-1]  # the bar's last state
    assert "ferkit predict: 100%" in bar and "5/5" in bar and "faces=9" in bar, r.stderr
    assert "file/s" in bar or "s/file" in bar, bar  # tqdm's rate
    assert r.stderr.count("ok       ") == 5 and "ferkit predict: 5 inputs: 5 ok (9 faces)" in r.stderr
    r = run_cli("predict", photos, "--format", "csv", "--output", tmp_path / "q.csv")
    assert r.returncode == 0 and "\r" not in r.stderr and "5/5" not in r.stderr, r.stderr[-2000:]


def test_video_with_a_name_that_is_not_utf8(tmp_path, astronaut):
    """A video whose file name is not UTF-8 is read (OpenCV's reader used to end the process with a segmentation
    fault on such a name) and its rows carry the name's exact bytes."""
    import os

    vid = Path(os.fsdecode(bytes(tmp_path) + b"/clip \xff\xfe.mp4"))
    _write_video(tmp_path / "plain.mp4", astronaut, n=8)
    os.replace(tmp_path / "plain.mp4", vid)
    import io
    import subprocess

    from conftest import FERKIT

    r = subprocess.run(
        FERKIT + ["predict", vid, "--format", "csv", "--det-size", "320"], capture_output=True, timeout=300
    )
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    rows = list(csv.DictReader(io.StringIO(r.stdout.decode("utf-8", "surrogateescape"))))
    assert len(rows) == 8 and {x["path"] for x in rows} == {str(vid)} and rows[0]["status"] == "ok"
