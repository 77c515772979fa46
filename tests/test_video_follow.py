"""Videos with the detector on every N-th frame (`--detect-every`): every frame still gets its faces, followed
between detections where the face really is; a shot change forces a detection. Real mp4 files written here from
real photos (scikit-image's astronaut, matplotlib's Grace Hopper)."""

import json
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pytest
from conftest import run_cli

skimage_data = pytest.importorskip("skimage.data")


def _astronaut_face(side: int) -> np.ndarray:
    return cv2.resize(cv2.cvtColor(skimage_data.astronaut()[20:250, 130:340], cv2.COLOR_RGB2BGR), (side, side))


def _grace_face(side: int) -> np.ndarray:
    grace = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return cv2.resize(grace[40:330, 90:390], (side, side))


def _drifting_video(path: Path, n: int = 20) -> Path:
    """One face crossing a textured frame 3 px right and 1 px down a frame (10 fps, 320x240)."""
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    face = _astronaut_face(110)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    for i in range(n):
        frame = background.copy()
        frame[50 + i : 160 + i, 30 + 3 * i : 140 + 3 * i] = face
        vw.write(frame)
    vw.release()
    return path


def _rows(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


def test_every_frame_gets_its_faces_when_the_detector_runs_every_fourth(tmp_path):
    """`--detect-every 4`: each of the 20 frames has its face, at the box and with the label that detecting on
    every frame gives (the face is followed, not left where it was last detected); one track; the detector ran
    on 5 of the 20 frames."""
    video = _drifting_video(tmp_path / "drift.mp4")
    runs = {}
    for n in (1, 4):
        out = tmp_path / f"every{n}.jsonl"
        r = run_cli("predict", video, "--detect-every", str(n), "--output", out, "--quiet")
        assert r.returncode == 0, r.stderr[-2000:]
        runs[n] = _rows(out)
    every, followed = runs[1], runs[4]
    assert followed["status"] == "ok" and followed["frames"] == 20
    assert [f["frame"] for f in followed["faces"]] == list(range(20)), "one face in every frame"
    assert {f["track"] for f in followed["faces"]} == {0}
    for a, b in zip(every["faces"], followed["faces"], strict=True):
        # within the detector's own jitter from frame to frame; unfollowed boxes would lag 3, 6, 9 px
        assert np.allclose(a["box"], b["box"], atol=4), (a["frame"], a["box"], b["box"])
        assert a["label"] == b["label"]
    # the face moved 57 px right over the clip, and the followed boxes with it
    assert followed["faces"][-1]["box"][0] - followed["faces"][0]["box"][0] == pytest.approx(57, abs=3)

    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_range

    an = Analyzer()
    assert analyze_range(an, video, detect_every=4).detected == 5  # frames 0, 4, 8, 12, 16
    assert analyze_range(an, video, detect_every=1).detected == 20


def test_a_shot_change_forces_a_detection(tmp_path):
    """With the detector every 8th frame, a cut at frame 10 (the background changes; the astronaut stays where
    she was, Grace Hopper appears beside her) is detected at once: Grace Hopper has rows from frame 10, not from
    the next scheduled detection (16), and both faces start new tracks there."""
    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_range

    a, g = _astronaut_face(100), _grace_face(100)
    path = tmp_path / "cut.mp4"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    for i in range(20):
        shot_b = i >= 10
        frame = np.full((240, 320, 3), 40 if shot_b else 210, np.uint8)
        frame[60:160, 20:120] = a
        if shot_b:
            frame[70:170, 190:290] = g
        vw.write(frame)
    vw.release()
    r = analyze_range(Analyzer(), path, detect_every=8)
    assert r.cuts == [10]
    grace = [f for f in r.result.faces if f.box[0] > 150]
    assert grace and grace[0].frame == 10, [f.frame for f in grace]
    assert [f.frame for f in grace] == list(range(10, 20))
    tracks = {(f.frame, f.box[0] > 150): f.track for f in r.result.faces}
    assert tracks[(9, False)] == 0 and tracks[(10, False)] != 0 and tracks[(10, True)] not in (0, tracks[(10, False)])
    assert r.detected == 4  # frames 0 and 8 (scheduled), 10 (the cut), 16 (scheduled)
