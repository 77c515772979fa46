"""Video rows with attributes (`ferkit predict clip.mp4 --attributes age,gender --smooth ALPHA`): age and P(male)
smoothed per track by the EMA the module docstring of ferkit.inference.video writes down, each track on its own;
and the video options (`--stride`, `--detect-every`, `--smooth`, `--max-frames`) as one VideoOptions record that
the API's keywords and the CLI's flags build alike. A real mp4 written here from real photos (scikit-image's
astronaut, matplotlib's Grace Hopper), 12 frames with camera noise so that the raw age moves frame to frame."""

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("skimage.data")
from test_video_follow import _astronaut_face, _grace_face  # noqa: E402  (after the skip: they need skimage)

ALPHA = 0.3
FRAMES = 12


def _two_faces_video(path: Path) -> Path:
    """Two faces drifting apart on a textured background, with sensor-like noise (10 fps, 320x240)."""
    a, g = _astronaut_face(100), _grace_face(100)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(60, 200, (240, 320, 3), dtype=np.uint8), (0, 0), 3)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    for i in range(FRAMES):
        frame = background.copy().astype(np.float64)
        frame[60 + i // 2 : 160 + i // 2, 20 + 2 * i : 120 + 2 * i] = a
        frame[70:170, 190 - i : 290 - i] = g
        vw.write(np.clip(frame + rng.normal(0, 6, frame.shape), 0, 255).astype(np.uint8))
    vw.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip, and its rows from the API without and with smoothing (age and gender asked)."""
    import ferkit

    video = _two_faces_video(tmp_path_factory.mktemp("video_attributes") / "two.mp4")
    raw = ferkit.predict(inputs=[video], attributes="age,gender")[0]
    smoothed = ferkit.predict(inputs=[video], attributes="age,gender", smooth=ALPHA)[0]
    return video, raw, smoothed


def _by_track(result) -> dict[int, list]:
    tracks: dict[int, list] = {}
    for f in sorted(result.faces, key=lambda f: f.frame):
        tracks.setdefault(f.track, []).append(f)
    return tracks


def _male(attrs: dict) -> float:
    return attrs["gender_score"] if attrs["gender"] == "male" else 1.0 - attrs["gender_score"]


def test_every_row_has_age_and_gender_or_a_reason(clip):
    """Two faces tracked through all 12 frames; on every frame (the detector runs on every 2nd, the others' faces
    are followed by optical flow) each face has its age and gender, computed on the followed box."""
    _, raw, smoothed = clip
    for r in (raw, smoothed):
        tracks = _by_track(r)
        assert len(tracks) == 2 and all([f.frame for f in t] == list(range(FRAMES)) for t in tracks.values())
        for f in r.faces:
            for name in ("age", "gender"):
                assert f.attributes[name] is not None or f.attributes["reasons"].get(name), (f.frame, f.attributes)
    assert all(f.attributes["age"] is not None for f in raw.faces)  # 100 px frontal faces: nothing withheld


def test_smoothed_age_varies_less_from_frame_to_frame(clip):
    """Per track, the standard deviation of frame-to-frame age differences is smaller with --smooth 0.3 than
    without (the camera noise moves the raw age by years from one frame to the next)."""
    _, raw, smoothed = clip
    for tid, faces in _by_track(raw).items():
        raw_steps = np.diff([f.attributes["age"] for f in faces])
        smooth_steps = np.diff([f.attributes["age"] for f in _by_track(smoothed)[tid]])
        assert raw_steps.std() > 0.5, "the clip should move the raw age"
        assert smooth_steps.std() < 0.6 * raw_steps.std(), (tid, raw_steps.std(), smooth_steps.std())


def test_smoothed_age_and_gender_follow_the_documented_formula_per_track(clip):
    """The smoothed rows are, track by track, age_t = ALPHA * age + (1 - ALPHA) * age_(t-1) over the raw rows
    (started by the first), and the same EMA of P(male) whose side of 0.5 names the gender. Each of the two
    tracks keeps its own running values: the formula holds for each computed from its own raw rows only."""
    _, raw, smoothed = clip
    raw_tracks, smooth_tracks = _by_track(raw), _by_track(smoothed)
    assert raw_tracks.keys() == smooth_tracks.keys()
    ages = {}
    for tid, faces in raw_tracks.items():
        age = male = None
        for f, s in zip(faces, smooth_tracks[tid], strict=True):
            assert s.frame == f.frame and np.allclose(s.box, f.box, atol=1e-3)
            a, m = f.attributes["age"], _male(f.attributes)
            age = a if age is None else ALPHA * a + (1 - ALPHA) * age
            male = m if male is None else ALPHA * m + (1 - ALPHA) * male
            # the raw rows are rounded to 0.01 years / 1e-4: the EMA of rounded values stays within that
            assert s.attributes["age"] == pytest.approx(age, abs=0.011), (tid, f.frame)
            assert s.attributes["gender"] == ("male" if male > 0.5 else "female"), (tid, f.frame, male)
            assert s.attributes["gender_score"] == pytest.approx(max(male, 1 - male), abs=2e-4), (tid, f.frame)
        ages[tid] = age
    assert abs(ages[0] - ages[1]) > 10, ages  # two people decades apart: no value leaked from one to the other


def test_a_null_age_keeps_the_tracks_running_value(clip):
    """A frame whose age is withheld (null, with a reason) stays null and does not reset the track: the next
    frame continues the running value from the frames before. The clip's raw rows go through the video module's
    Tracker with one frame's age withheld."""
    from ferkit.inference.video import Tracker

    _, raw, _ = clip
    tracker = Tracker(ALPHA)
    frames = [
        [dataclasses.replace(f, attributes=dict(f.attributes)) for f in raw.faces if f.frame == i] for i in range(4)
    ]
    held = frames[2][0]
    tid_ages = {}
    for faces in frames:
        for f in faces:
            if f is held:
                f.attributes["age"] = None
                f.attributes["reasons"] = {"age": "face 20 px < 32 px minimum"}
        tracker.update(faces)
        for f in faces:
            tid_ages.setdefault(f.track, []).append(f.attributes["age"])
    assert held.attributes["age"] is None and held.attributes["reasons"] == {"age": "face 20 px < 32 px minimum"}
    raw_ages = [f.attributes["age"] for i in range(4) for f in raw.faces if f.frame == i and f.track == held.track]
    ema = raw_ages[0]
    for a in (raw_ages[1], raw_ages[3]):  # frame 2 skipped, not restarted
        ema = ALPHA * a + (1 - ALPHA) * ema
    got = tid_ages[held.track]
    assert got[2] is None and got[3] == pytest.approx(ema, abs=0.011), (got, raw_ages)


def test_cli_rows_equal_api_rows(clip, tmp_path):
    """`ferkit predict clip.mp4 --attributes age,gender --smooth 0.3` writes the rows ferkit.predict(...,
    attributes="age,gender", smooth=0.3) returns: the same faces, tracks, labels, ages and genders."""
    video, _, smoothed = clip
    out = tmp_path / "rows.jsonl"
    r = run_cli("predict", video, "--attributes", "age,gender", "--smooth", str(ALPHA), "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    cli = json.loads(out.read_text().splitlines()[0])["faces"]
    api = [f.to_dict() for f in smoothed.faces]
    keys = ("frame", "track", "label", "age", "gender", "gender_score")
    assert [{k: f[k] for k in keys} for f in cli] == [{k: f[k] for k in keys} for f in api]
    assert all(np.allclose(c["box"], a["box"]) for c, a in zip(cli, api, strict=True))


@pytest.mark.parametrize(
    ("flag", "value", "keyword"),
    [
        ("--stride", "0", {"stride": 0}),
        ("--detect-every", "0", {"detect_every": 0}),
        ("--smooth", "1.5", {"smooth": 1.5}),
        ("--max-frames", "0", {"max_frames": 0}),
    ],
)
def test_bad_video_option_is_one_line_exit_2_as_the_api_says_it(clip, flag, value, keyword):
    """A bad video option is one line naming the flag and the fix, exit 2, no traceback; the API's keyword of
    the same name raises a ConfigError with the very same line (one check, in VideoOptions)."""
    import ferkit
    from ferkit.errors import ConfigError

    video = clip[0]
    r = run_cli("predict", video, flag, value, "--quiet")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    with pytest.raises(ConfigError) as e:
        ferkit.predict(inputs=[video], **keyword)
    assert lines[0].endswith(str(e.value)) and str(e.value).startswith(f"{flag} {value}: give "), (lines, e.value)
    assert not r.stdout


def test_a_video_options_record_is_the_keywords(clip):
    """ferkit.predict(..., video=VideoOptions(smooth=0.3)) gives the rows of smooth=0.3; giving both the record
    and a keyword is one ConfigError line (which would win is not a guess the API makes)."""
    import ferkit
    from ferkit.errors import ConfigError

    video, _, smoothed = clip
    got = ferkit.predict(inputs=[video], attributes="age,gender", video=ferkit.VideoOptions(smooth=ALPHA))[0]
    assert [f.to_dict() for f in got.faces] == [f.to_dict() for f in smoothed.faces]
    with pytest.raises(ConfigError, match=r"^give the video options either as video=VideoOptions\(\.\.\.\) or as"):
        ferkit.predict(inputs=[video], video=ferkit.VideoOptions(), detect_every=4)
