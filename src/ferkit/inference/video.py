"""Videos and webcams: frame stride, faces of several frames batched through the classifier, simple IoU
tracking with optional EMA smoothing of probabilities, a per-second CSV, an emotion-over-time plot and an
annotated mp4 (OpenCV ``mp4v``).

    from ferkit.inference.video import analyze_video
    res = analyze_video(analyzer, "clip.mp4", stride=2, smooth=0.5, annotate_dir="annotated/",
                        per_second_csv="clip.per_second.csv", plot="clip.emotions.png")

The video knobs (``stride``, ``detect_every``, ``smooth``, ``max_frames``) are one
:class:`~ferkit.inference.settings.VideoOptions` (``options=``; keyword arguments of the same names are laid over).

``smooth=ALPHA`` (0 < ALPHA <= 1): each tracked face's reported probabilities are
``ALPHA * current + (1 - ALPHA) * previous reported`` (label and score follow the smoothed values); ``None``
reports raw per-frame values. Faces described with attributes (``--attributes age,gender``) get the same EMA,
per track, of ``age`` and of P(male): ``age_t = ALPHA * age + (1 - ALPHA) * age_(t-1)`` over the track's frames
whose age is not null (the first such frame starts it), and likewise ``m_t`` for P(male) (``gender_score`` if
``gender`` is male, else ``1 - gender_score``); the row's ``gender`` is male when ``m_t > 0.5`` and
``gender_score`` is the probability of that label. A frame whose attribute is null (with its reason) stays null
and leaves the track's running value as it was. Landmarks, pose, spoof and quality stay per frame.

Tracks: a face continues the track whose last box overlaps it most (IoU >= 0.3,
greedy, highest score first); tracks unseen for 30 analysed frames end.

A file can also be analysed in frame ranges (several processes, one range each) and joined again:

    parts = [analyze_range(analyzer, "clip.mp4", 0, 1800), analyze_range(analyzer, "clip.mp4", 1800, None)]
    res = stitch_ranges(parts)   # the same frames, numbers and track ids as analyze_video(analyzer, "clip.mp4")
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, DataError
from ferkit.inference.draw import annotate
from ferkit.inference.settings import VideoOptions
from ferkit.schema import FaceResult, FileResult
from ferkit.utils import atomic_open, atomic_path, atomic_write_bytes, discard

FRAMES_PER_BATCH = 8  # analysed frames whose faces share classifier forwards
CHECK_FRAMES = 3  # frames compared where two ranges meet (stitch_ranges)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


CUT_THRESHOLD = 30.0  # mean grey-level change (0-255) of 32x32 thumbnails between analysed frames: a shot change


def scene_thumb(frame: np.ndarray) -> np.ndarray:
    """A 32x32 grey thumbnail of a frame, for :func:`is_cut`."""
    import cv2

    # shrunk first, then averaged over channels (both are means): a 32x32 job, not a whole frame's
    small = cv2.resize(frame, (32, 32), interpolation=cv2.INTER_AREA)
    return small.mean(axis=2, dtype=np.float32) if small.ndim == 3 else small.astype(np.float32)


def is_cut(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two consecutive analysed frames' thumbnails differ like a shot change does: a talking head or a
    pan moves the thumbnail's mean grey level by a few units, a cut to another shot by tens."""
    return a is not None and b is not None and float(np.abs(a - b).mean()) > CUT_THRESHOLD


class Tracker:
    """Greedy IoU tracking + per-track EMA of probabilities; :meth:`cut` ends every track (a shot change)."""

    def __init__(self, smooth: float | None = None, iou: float = 0.3, max_missed: int = 30):
        VideoOptions(smooth=smooth)  # checked as every video option is
        self.smooth, self.iou, self.max_missed = smooth, iou, max_missed
        self.tracks: dict[int, dict] = {}
        self.next_id = 0

    def cut(self) -> None:
        """A shot change: the faces after it are new tracks, whatever their boxes overlap."""
        self.tracks.clear()

    def update(self, faces: list[FaceResult]) -> None:
        free = dict(self.tracks)
        for f in faces:
            best, best_iou = None, self.iou
            for tid, t in free.items():
                v = _iou(f.box, t["box"])
                if v >= best_iou:
                    best, best_iou = tid, v
            if best is None:
                best = self.next_id
                self.next_id += 1
                self.tracks[best] = {"box": f.box, "probs": None, "missed": 0, "age": None, "male": None}
            else:
                free.pop(best)
            t = self.tracks[best]
            t["box"], t["missed"] = f.box, 0
            f.track = best
            if self.smooth is not None:
                p = np.array([f.probabilities[c] for c in f.probabilities])
                if t["probs"] is not None:
                    p = self.smooth * p + (1 - self.smooth) * t["probs"]
                t["probs"] = p
                f.probabilities = dict(zip(f.probabilities, p.tolist(), strict=True))
                k = int(p.argmax())
                f.label, f.score = list(f.probabilities)[k], float(p[k])
                if f.attributes is not None:
                    self._smooth_attributes(t, f.attributes)
        for tid in list(free):
            self.tracks[tid]["missed"] += 1
            if self.tracks[tid]["missed"] > self.max_missed:
                del self.tracks[tid]

    def _smooth_attributes(self, t: dict, row: dict) -> None:
        """Age and P(male) of one face's attribute ``row`` replaced by the track's EMA (module docstring); a null
        value (with its reason) is left null and leaves the running value as it was."""
        a = self.smooth
        assert a is not None
        if row.get("age") is not None:
            t["age"] = row["age"] if t["age"] is None else a * row["age"] + (1 - a) * t["age"]
            row["age"] = round(t["age"], 2)
        if row.get("gender") is not None and row.get("gender_score") is not None:
            male = row["gender_score"] if row["gender"] == "male" else 1.0 - row["gender_score"]
            t["male"] = male if t["male"] is None else a * male + (1 - a) * t["male"]
            m = t["male"]
            row["gender"], row["gender_score"] = ("male", round(m, 4)) if m > 0.5 else ("female", round(1 - m, 4))


@contextlib.contextmanager
def opencv_quiet():
    """OpenCV's own log lines silenced within the block (its backends print WARN lines while probing a missing
    camera or a bad file; ferkit reports those as one line of its own), the previous level restored after."""
    import cv2

    try:
        prev = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - very old OpenCV
        prev = None
    try:
        yield
    finally:
        if prev is not None:
            cv2.utils.logging.setLogLevel(prev)


def open_capture(source: Any):
    """An opened ``cv2.VideoCapture`` for a camera index (``0`` or ``"0"``), a stream URL (``rtsp://...``) or a
    video file; otherwise one DataError line saying what could not be opened and what to try."""
    import cv2

    if isinstance(source, str) and source.isdigit():
        source = int(source)
    if isinstance(source, int) or "://" in str(source):
        with opencv_quiet():  # probing a missing camera prints WARN lines; the error below says it
            cap = cv2.VideoCapture(source)
        if not cap.isOpened():
            cap.release()
            what = (
                f"--webcam {source}: no camera with that index" if isinstance(source, int) else f"{source}: the stream"
            )
            raise DataError(f"{what} can be opened (in use, or no permission?); try another index or a video file")
        return cap
    p = Path(source)
    if not p.is_file():
        raise DataError(f"{p}: no such video file (or camera index)")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: empty file (0 bytes)")
    try:
        str(p).encode("utf-8")
        cap = cv2.VideoCapture(str(p))
    except UnicodeEncodeError:  # OpenCV crashes on a name that is not UTF-8: open it by descriptor instead
        fd = os.open(p, os.O_RDONLY)
        try:
            cap = cv2.VideoCapture(f"/proc/self/fd/{fd}")  # FFmpeg opens its own handle on the file now
        finally:
            os.close(fd)
    if not cap.isOpened():
        cap.release()
        raise DataError(f"{p}: not a video OpenCV can read")
    return cap


MIN_FRAME_BYTES = 8  # no coded frame (a skipped H.264/MPEG-4 frame included) plus its container entry is smaller


def frame_count(path: str | Path) -> int:
    """The number of frames a local video file really has, as far as can be told without decoding it all: the
    header's count is a claim (a 100 KB file may say 2**31 frames), so it is bounded by the file size
    (``MIN_FRAME_BYTES`` a frame) and checked by reading its last frame; where that frame is not there, the last
    frame that is is found by bisection (a few seeks). 0 when unknown or unreadable."""
    import cv2

    p = Path(path)
    try:
        with opencv_quiet():
            cap = open_capture(p)
            try:
                n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
                n = int(n) if n == n and n > 0 else 0
                n = min(n, p.stat().st_size // MIN_FRAME_BYTES)
                if n <= 1:
                    return n

                def there(i: int) -> bool:
                    # a seek past the end fails or lands elsewhere: kept only when the position read back is i + 1
                    return bool(
                        cap.set(cv2.CAP_PROP_POS_FRAMES, i)
                        and cap.grab()
                        and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == i + 1
                    )

                if there(n - 1):
                    return n
                lo, hi = 0, n - 1  # frame lo is there (or the file is empty), frame hi is not
                if not there(0):
                    return 0
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if there(mid) else (lo, mid)
                return lo + 1
            finally:
                cap.release()
    except (DataError, OSError):
        return 0


def window_available(window: str = "ferkit") -> bool:
    """Whether OpenCV can open a window here (``opencv-python-headless`` cannot): tried by opening ``window``."""
    import cv2

    try:
        cv2.namedWindow(window)
        return True
    except cv2.error:
        return False


def analyze_video(
    analyzer,
    source: Any,
    options: VideoOptions | None = None,
    *,
    frames_per_batch: int = FRAMES_PER_BATCH,
    annotate_dir: str | Path | None = None,
    per_second_csv: str | Path | None = None,
    plot: str | Path | None = None,
    show: bool = False,
    on_frame: Callable[[list[FaceResult]], None] | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    annotate_name: str | None = None,
    **knobs: Any,
) -> FileResult:
    """Analyse every ``stride``-th frame of a video file (path) or webcam (int index).

    ``options``: the :class:`~ferkit.inference.settings.VideoOptions` (``stride``, ``detect_every``, ``smooth``,
    ``max_frames``; default: :mod:`ferkit.defaults`); keyword arguments of those names are laid over it.

    Faces of ``frames_per_batch`` frames share classifier forwards. Returns one :class:`FileResult`
    (``kind`` video/webcam) whose ``faces`` hold every analysed frame's faces (``frame``, ``timestamp``,
    ``track``); ``on_frame`` is called with each frame's faces as they come (live output).
    Errors opening the source raise DataError (callers turn it into a per-file status).

    ``start_frame`` / ``end_frame`` (video files): only the frames ``start_frame <= index < end_frame``
    (``end_frame`` None: to the end). Indices count from the file's first frame, so the frames analysed
    (``index % stride == 0``), their ``frame`` numbers and timestamps are those of the whole-file run. OpenCV
    seeks to ``start_frame``; where the frame it lands on is not that frame by its reported position and
    timestamp (variable frame rate, an estimated frame count, odd timestamps) the file is read frame by frame up
    to it instead. Tracks start afresh at ``start_frame``: :func:`analyze_range` + :func:`stitch_ranges` give
    the whole file's track ids.

    ``annotate_name``: the annotated video's file name without ``.mp4`` (default ``<stem>.annotated``; the
    prediction pipeline gives each input its own, see :class:`~ferkit.inference.pipeline.OutputNames`).

    ``detect_every``: the face detector runs on every N-th analysed frame (default ``defaults.DETECT_EVERY``),
    on the first, after a shot change and wherever a face is lost; the frames in between get the previous
    frame's faces followed by optical flow (:class:`FaceFollower`) and are classified as every frame is, so every
    analysed frame still has its faces. 1: detect on every analysed frame. Frames are decoded in a thread of
    their own (:class:`FrameReader`) while the previous ones are analysed.
    """
    return _analyze(
        analyzer,
        source,
        VideoOptions.of(options, **knobs),
        frames_per_batch=frames_per_batch,
        annotate_dir=annotate_dir,
        per_second_csv=per_second_csv,
        plot=plot,
        show=show,
        on_frame=on_frame,
        start_frame=start_frame,
        end_frame=end_frame,
        annotate_name=annotate_name,
    )[0]


def frame_fingerprint(frame: np.ndarray) -> str:
    """A short digest of a decoded frame's pixels (equal frames, equal digests)."""
    return hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=8).hexdigest()


def _seek(cap, source: Any, start: int, fps: float):
    """``cap`` (just opened) placed at frame ``start`` as reading from the first frame counts frames: returns
    ``(cap, frame)``, ``frame`` being frame ``start`` already read (None: the next read() gives it). OpenCV's seek
    is kept where the frame it lands on is frame ``start`` by its position and by its timestamp (the first
    frame's plus ``start / fps``); else (a variable frame rate, an estimated frame count, odd timestamps) the
    file is reopened and read frame by frame up to ``start`` (grab: decoded, not converted)."""
    import cv2

    if start <= 0:
        return cap, None
    ok, _ = cap.read()
    if not ok:  # not a single frame: nothing to seek to
        return cap, None
    t0 = cap.get(cv2.CAP_PROP_POS_MSEC)
    if cap.set(cv2.CAP_PROP_POS_FRAMES, start):
        ok, frame = cap.read()
        if (
            ok
            and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == start + 1
            and abs(cap.get(cv2.CAP_PROP_POS_MSEC) - t0 - 1000 * start / fps) <= 500 / fps
        ):
            return cap, frame
    cap.release()
    cap = open_capture(source)
    for _ in range(start):
        if not cap.grab():
            break
    return cap, None


def _drop(writer, video_out) -> None:
    """An annotated video cut short by an error: closed and removed (a video that stopped is kept)."""
    if video_out is not None:
        if writer is not None:
            writer.release()
        discard(video_out)


def _set_status(result: FileResult, stop: int | None = None, claimed: int = 0) -> None:
    """A video's status and reason from its analysed frames and faces; ``stop``: the frames read when the file
    ended (None: reading was cut short on purpose), ``claimed``: the frame count its header states. A file that
    stops decoding before half the frames its header lists is an error (a damaged header or a truncated file,
    e.g. a time scale of 0 fps), its faces kept: a header's estimate may be a frame or two off, never 2x."""
    if result.frames == 0:
        result.status, result.reason = "error", "no frame could be decoded"
    elif stop is not None and claimed > 2 * stop:
        result.status, result.reason = (
            "error",
            (
                f"decoding stopped after {stop} of the {claimed} frames its header lists (damaged header or "
                f"truncated file; the faces of the frames read are kept)"
            ),
        )
    elif not result.faces:
        result.status, result.reason = "no_face", f"no face found in {result.frames} analysed frames"


class FrameReader:
    """``cap.read()`` in a thread of its own, up to ``ahead`` frames ahead of the caller, so decoding overlaps
    detection and classification (OpenCV releases the GIL while it decodes); the queue is bounded so a fast
    decoder never holds more than ``ahead`` frames in memory. ``threaded=False`` (a webcam: live frames, not
    buffered ones) reads in the caller. ``first``: a frame already read (:func:`_seek`), given back first."""

    def __init__(self, cap, first: np.ndarray | None = None, ahead: int = 16, threaded: bool = True):
        import queue
        import threading

        self.cap = cap
        self.first = first
        self.thread: threading.Thread | None = None
        if threaded:
            self.queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._run, name="ferkit-video-reader", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        import queue

        while not self.stop.is_set():
            try:
                item: Any = self.cap.read()
            except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
                item = e
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, tuple) or not item[0]:
                return

    def read(self) -> tuple[bool, Any]:
        """The next frame as ``cap.read()`` gives it: ``(ok, frame)``."""
        if self.first is not None:
            frame, self.first = self.first, None
            return True, frame
        if self.thread is None:
            return self.cap.read()
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        if not item[0]:
            self.queue.put(item)  # the end stays the end for every later read
        return item

    def close(self) -> None:
        """The thread stopped (before ``cap`` is released)."""
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
            self.thread = None


FOLLOW_MIN_POINTS = 3  # of a face's five landmarks that must be followed from one frame to the next


def follow_faces(prev_grey: np.ndarray, grey: np.ndarray, faces: list) -> list | None:
    """``faces`` (:class:`~ferkit.faces.Face`, found in grey frame ``prev_grey``) moved to the next analysed
    frame ``grey`` by pyramidal Lucas-Kanade optical flow of their five landmarks, each checked by flowing it
    back (forward-backward error within 2 % of the face's width, at least 1 px); a point that fails keeps the
    face's median motion. None when some face keeps fewer than ``FOLLOW_MIN_POINTS`` points (lost: detect)."""
    import cv2

    from ferkit.faces import Face

    if not faces:
        return []
    start = np.concatenate([np.asarray(f.landmarks, np.float32) for f in faces]).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
    moved, st1, _ = cv2.calcOpticalFlowPyrLK(
        prev_grey, grey, start, np.empty(0), winSize=(21, 21), maxLevel=3, criteria=crit
    )
    back, st2, _ = cv2.calcOpticalFlowPyrLK(
        grey, prev_grey, moved, np.empty(0), winSize=(21, 21), maxLevel=3, criteria=crit
    )
    fb = np.linalg.norm((back - start).reshape(-1, 2), axis=1)
    ok = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1)
    p0, p1 = start.reshape(-1, 2), moved.reshape(-1, 2)
    goods = [ok[5 * k : 5 * k + 5] & (fb[5 * k : 5 * k + 5] <= max(1.0, 0.02 * f.width)) for k, f in enumerate(faces)]
    if any(int(g.sum()) < FOLLOW_MIN_POINTS for g in goods):
        return None
    out = []
    for k, (f, good) in enumerate(zip(faces, goods, strict=True)):
        sl = slice(5 * k, 5 * k + 5)
        d = np.median(p1[sl][good] - p0[sl][good], axis=0)
        lm = np.where(good[:, None], p1[sl], p0[sl] + d)
        x1, y1, x2, y2 = f.box
        out.append(Face((x1 + d[0], y1 + d[1], x2 + d[0], y2 + d[1]), f.score, lm, f.landmarks_estimated))
    return out


class FaceFollower:
    """Which analysed frames get a detection, and the faces of the others: the detector runs on every
    ``detect_every``-th analysed frame (counted from the file's first frame, so a range of a file started at a
    multiple of ``detect_every * stride`` schedules the frames as the whole file does), on the first frame
    analysed, after a shot change (:func:`is_cut`) and where following loses a face; in between, the previous
    frame's faces are followed by optical flow (:func:`follow_faces`). A face that enters between two
    detections is found at the next one. ``detect_every=1``: every analysed frame is detected."""

    def __init__(self, analyzer, detect_every: int, stride: int):
        self.analyzer, self.every, self.stride = analyzer, detect_every, stride
        self.follow = detect_every > 1 and analyzer.detect_faces
        self.grey: np.ndarray | None = None
        self.faces: list | None = None
        self.detected = 0  # analysed frames the detector ran on

    def scheduled(self, index: int, cut: bool) -> bool:
        """Whether analysed frame ``index`` (``cut``: a shot change before it) gets a detection, following aside."""
        return cut or (index // self.stride) % self.every == 0

    def faces_of(self, frames: list[tuple[int, np.ndarray]], cuts: list[bool]) -> list[list]:
        """Each frame's faces (in order; the scheduled detections run together, on all cores)."""
        import cv2

        if not self.follow:
            self.detected += len(frames)
            return self.analyzer.detect([im for _, im in frames])
        keys = [
            k
            for k, ((i, _), c) in enumerate(zip(frames, cuts, strict=True))
            if self.scheduled(i, c) or (k == 0 and self.faces is None)
        ]
        found = dict(zip(keys, self.analyzer.detect([frames[k][1] for k in keys]) if keys else [], strict=True))
        self.detected += len(keys)
        out = []
        for k, (_, im) in enumerate(frames):
            grey = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
            faces = found.get(k)
            if faces is None:
                assert self.grey is not None and self.faces is not None  # not a key: a frame came before
                faces = follow_faces(self.grey, grey, self.faces)
                if faces is None:  # a face was lost: this frame is detected after all
                    faces = self.analyzer.detect([im])[0]
                    self.detected += 1
            self.grey, self.faces = grey, faces
            out.append(faces)
        return out


class _VideoOutputs:
    """Where analysed frames go besides the result: the annotated mp4 (written under a temporary UTF-8 name,
    moved into place on :meth:`close`) and the live window."""

    def __init__(
        self,
        source: Any,
        webcam: bool,
        fps: float,
        stride: int,
        annotate_dir: str | Path | None,
        annotate_name: str | None,
        show: bool,
    ):
        self.webcam, self.fps, self.stride = webcam, fps, stride
        self.writer: Any = None
        self.video_out: Any = None
        self.out_video: Path | None = None
        if annotate_dir is not None:
            Path(annotate_dir).mkdir(parents=True, exist_ok=True)
            stem = annotate_name or (f"webcam_{source}" if webcam else f"{Path(source).stem}.annotated")
            self.out_video = Path(annotate_dir) / f"{stem}.mp4"
        self.window = False
        if show:
            self.window = window_available()
            if not self.window:
                print(
                    "ferkit: warning: this OpenCV has no GUI (opencv-python-headless); no live window - "
                    "pip install opencv-python for one. Printing results"
                    + (f" and writing {self.out_video}" if self.out_video else "")
                    + " instead.",
                    file=sys.stderr,
                )

    @property
    def wanted(self) -> bool:
        return self.out_video is not None or self.window

    def write(self, im: np.ndarray, faces: list[FaceResult], live_fps: float | None) -> None:
        import cv2

        bgr = annotate(im, faces, fps=live_fps if self.webcam else None)
        if self.out_video is not None:
            if self.writer is None:
                h, w = bgr.shape[:2]
                cm = atomic_path(self.out_video, suffix=".mp4", what="--annotate")
                tmp = cm.__enter__()
                self.video_out = cm
                self.writer = cv2.VideoWriter(
                    tmp, cv2.VideoWriter.fourcc(*"mp4v"), max(1.0, self.fps / self.stride), (w, h)
                )
            self.writer.write(bgr)
        if self.window:
            cv2.imshow("ferkit", bgr)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                raise KeyboardInterrupt

    def drop(self) -> None:
        _drop(self.writer, self.video_out)

    def release(self) -> None:
        import cv2

        if self.writer is not None:
            self.writer.release()
        if self.window:
            cv2.destroyAllWindows()

    def close(self) -> None:
        if self.video_out is not None:
            self.video_out.__exit__(None, None, None)


def _check_video_args(start_frame: Any, end_frame: Any, webcam: bool) -> None:
    if not isinstance(start_frame, int) or start_frame < 0:
        raise ConfigError(f"start_frame {start_frame!r}: give an integer >= 0")
    if end_frame is not None and (not isinstance(end_frame, int) or end_frame < start_frame):
        raise ConfigError(f"end_frame {end_frame!r}: give an integer >= start_frame ({start_frame}), or None")
    if webcam and (start_frame or end_frame is not None):
        raise ConfigError("start_frame / end_frame: only for video files, not a webcam")


def _analyze(
    analyzer,
    source: Any,
    options: VideoOptions,
    frames_per_batch: int = FRAMES_PER_BATCH,
    annotate_dir: str | Path | None = None,
    per_second_csv: str | Path | None = None,
    plot: str | Path | None = None,
    show: bool = False,
    on_frame: Callable[[list[FaceResult]], None] | None = None,
    start_frame: int = 0,
    end_frame: int | None = None,
    check_frames: int = 0,
    annotate_name: str | None = None,
) -> tuple[FileResult, dict]:
    """:func:`analyze_video`, and what :func:`stitch_ranges` needs about the frames read: ``stop`` (index of the
    first frame not read in the range), ``head`` (fingerprints of the first ``check_frames`` frames read from
    ``start_frame``), ``tail`` (of up to ``check_frames`` frames read on after ``end_frame``) and ``detected``
    (analysed frames the detector ran on)."""
    import cv2

    webcam = isinstance(source, int)
    _check_video_args(start_frame, end_frame, webcam)
    stride, max_frames = options.stride, options.max_frames
    name = f"webcam:{source}" if webcam else str(source)
    cap = open_capture(source)
    claimed = 0 if webcam else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    if not fps or fps != fps or fps > 1000:
        fps = 30.0
    cap, first = _seek(cap, source, start_frame, fps)
    tracker = Tracker(options.smooth)
    follower = FaceFollower(analyzer, options.detect_every, stride)
    result = analyzer.file_result(name, kind="webcam" if webcam else "video")
    result.frames = 0
    outputs = _VideoOutputs(source, webcam, fps, stride, annotate_dir, annotate_name, show)
    pending: list[tuple[int, np.ndarray]] = []
    t_last = time.perf_counter()
    idx = start_frame - 1
    info: dict[str, Any] = {
        "stop": start_frame,
        "head": [],
        "tail": [],
        "claimed": max(0, claimed),
        "eof": False,
        "cuts": [],
        "first_thumb": None,
        "last_thumb": None,
        "detected": 0,
    }

    def flush():
        nonlocal t_last
        if not pending:
            return
        cuts = []
        for _, im in pending:  # a shot change ends every track and forces a detection
            thumb = scene_thumb(im)
            cuts.append(is_cut(info["last_thumb"], thumb))
            if info["first_thumb"] is None:
                info["first_thumb"] = thumb
            info["last_thumb"] = thumb
        imgs = [im for _, im in pending]
        per = analyzer.process(
            imgs,
            [name] * len(imgs),
            frames=[i for i, _ in pending],
            timestamps=[i / fps for i, _ in pending],
            faces=follower.faces_of(pending, cuts),
        )
        now = time.perf_counter()
        live_fps = len(imgs) / max(now - t_last, 1e-6)
        t_last = now
        for (i, im), faces, cut in zip(pending, per, cuts, strict=True):
            if cut:
                tracker.cut()
                info["cuts"].append(i)
            tracker.update(faces)
            result.faces.extend(faces)
            result.frames += 1
            if on_frame is not None:
                on_frame(faces)
            if outputs.wanted:
                outputs.write(im, faces, live_fps)
        pending.clear()

    reader = FrameReader(cap, first, ahead=2 * frames_per_batch, threaded=not webcam)
    try:
        while True:
            ok, frame = reader.read()
            if not ok:
                info["eof"] = True
                break
            idx += 1
            if end_frame is not None and idx >= end_frame:
                while check_frames and ok and len(info["tail"]) < check_frames:  # the next range starts here
                    info["tail"].append(frame_fingerprint(frame))
                    ok, frame = reader.read()
                break
            if max_frames is not None and idx >= max_frames:
                break
            info["stop"] = idx + 1
            if len(info["head"]) < check_frames:
                info["head"].append(frame_fingerprint(frame))
            if idx % stride:
                continue
            if result.image_size is None:
                result.image_size = (frame.shape[1], frame.shape[0])
            pending.append((idx, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            if len(pending) >= (1 if webcam else frames_per_batch):
                flush()
        flush()
    except KeyboardInterrupt:
        if not webcam:
            outputs.drop()
            raise
    except BaseException:
        outputs.drop()
        raise
    finally:
        reader.close()
        cap.release()
        outputs.release()
    outputs.close()
    info["detected"] = follower.detected
    _set_status(result, info["stop"] if info["eof"] and not webcam else None, info["claimed"])
    result.downscaled = bool(result.image_size and analyzer.det_size and max(result.image_size) > analyzer.det_size)
    if per_second_csv is not None:
        write_per_second(result, analyzer.classes, per_second_csv)
    if plot is not None:
        plot_over_time(result, analyzer.classes, plot)
    return result, info


@dataclass
class VideoRange:
    """The frames ``start <= index < end`` of a video file (``end`` None: to the end), as :func:`analyze_range`
    analysed them; :func:`stitch_ranges` joins the consecutive ranges of a file into its whole result."""

    start: int
    end: int | None
    stride: int
    result: FileResult  # this range's faces (its own track ids) and frames analysed
    stop: int = 0  # index of the first frame not read: end, or where the file ended inside the range
    head: list[str] = field(default_factory=list)  # fingerprints of the first frames read from start
    tail: list[str] = field(default_factory=list)  # fingerprints of the frames read on after end
    check: int = CHECK_FRAMES
    error: str | None = None  # the range could not be analysed (result is then the file's error)
    claimed: int = 0  # the frame count the file's header states
    eof: bool = False  # the file ended inside this range
    cuts: list[int] = field(default_factory=list)  # analysed frames where a shot change ended every track
    first_thumb: Any = None  # scene_thumb of the first and last analysed frames (a cut where two ranges meet)
    last_thumb: Any = None
    detected: int = 0  # analysed frames the face detector ran on (the others' faces were followed)


def analyze_range(
    analyzer,
    source: str | Path,
    start: int = 0,
    end: int | None = None,
    options: VideoOptions | None = None,
    *,
    check: int = CHECK_FRAMES,
    **knobs: Any,
) -> VideoRange:
    """Frames ``start <= index < end`` of a video file, analysed as :func:`analyze_video` analyses them (no
    smoothing), plus the fingerprints of the ``check`` frames where the range starts and of the ``check``
    frames read on after its end, so :func:`stitch_ranges` can tell that the next range's seek landed on
    exactly those frames. A start that is a multiple of ``FRAMES_PER_BATCH * stride`` batches frames as the
    whole-file run does (the same numbers, not just the same faces), and one that is also a multiple of
    ``detect_every * stride`` is a detection frame of the whole-file run, so the detector runs on the same frames
    (:func:`ferkit.inference.ray_engine.frame_ranges` cuts ranges so). Errors raise as in analyze_video.
    ``options`` / ``knobs``: as :func:`analyze_video`'s; ``smooth`` does not apply here (the tracks are replayed,
    smoothed, by :func:`stitch_ranges`); ``max_frames`` counts from the file's first frame, so a range stops
    where the whole-file run stops."""
    # a range's tracks are replayed by stitch_ranges: no smoothing here, on the raw per-frame values
    opts = dataclasses.replace(VideoOptions.of(options, **knobs), smooth=None)
    result, info = _analyze(
        analyzer,
        str(source),
        opts,
        start_frame=start,
        end_frame=end,
        check_frames=check,
    )
    return VideoRange(
        start,
        end,
        opts.stride,
        result,
        stop=info["stop"],
        head=info["head"],
        tail=info["tail"],
        check=check,
        claimed=info["claimed"],
        eof=info["eof"],
        cuts=info["cuts"],
        first_thumb=info["first_thumb"],
        last_thumb=info["last_thumb"],
        detected=info["detected"],
    )


def stitch_ranges(ranges: list[VideoRange], smooth: float | None = None) -> FileResult | None:
    """The whole file's :class:`FileResult` from all its ranges (any order): faces in frame order, frames analysed
    summed, and track ids as one :class:`Tracker` over the whole file gives them (the tracker replayed over the
    ranges' faces, analysed frame by analysed frame; ``smooth``: with the whole-file run's EMA of probabilities, age
    and gender, replayed on the ranges' raw per-frame values). Where the file ends (or stops decoding) inside a
    range, later ranges are dropped, as the whole-file run stops there too. A range with an error makes the file
    that error. None when a range's first frames are not the frames read on after the previous range's end (OpenCV's
    seek landed elsewhere): analyse that file as one range instead."""
    rs = sorted(ranges, key=lambda r: r.start)
    if (
        not rs
        or rs[0].start != 0
        or rs[-1].end is not None
        or any(a.end != b.start or a.stride != b.stride for a, b in zip(rs, rs[1:], strict=False))
    ):
        raise ValueError(f"stitch_ranges: not the consecutive ranges of one file: {[(r.start, r.end) for r in rs]}")
    failed = next((r for r in rs if r.error), None)
    if failed is not None:
        return failed.result
    kept = rs[:1]
    for prev, cur in zip(rs, rs[1:], strict=False):
        if prev.end is not None and prev.stop < prev.end:  # (not None: a later range starts there)
            break
        want = cur.check if cur.end is None else min(cur.check, cur.end - cur.start)
        if cur.head != prev.tail[: len(cur.head)] or (len(cur.head) < want and len(prev.tail) != len(cur.head)):
            return None
        kept.append(cur)
    # copies (attributes too: smoothing rewrites them in place), so the ranges' own faces stay as they are
    faces = [
        dataclasses.replace(f, attributes=None if f.attributes is None else dict(f.attributes))
        for r in kept
        for f in r.result.faces
    ]
    by_frame: dict[int | None, list[FaceResult]] = {}
    for f in faces:
        by_frame.setdefault(f.frame, []).append(f)
    cuts = {i for r in kept for i in r.cuts}
    cuts.update(
        -(-cur.start // cur.stride) * cur.stride
        for prev, cur in zip(kept, kept[1:], strict=False)
        if is_cut(prev.last_thumb, cur.first_thumb)
    )  # a shot change where two ranges meet
    tracker = Tracker(smooth)
    for r in kept:
        for i in range(-(-r.start // r.stride) * r.stride, r.stop, r.stride):
            if i in cuts:
                tracker.cut()
            tracker.update(by_frame.get(i, []))
    out = dataclasses.replace(
        rs[0].result,
        faces=faces,
        frames=sum(r.result.frames or 0 for r in kept),
        status="ok",
        reason=None,
        image_size=next((r.result.image_size for r in kept if r.result.image_size), None),
        downscaled=any(r.result.downscaled for r in kept),
    )
    _set_status(out, kept[-1].stop if kept[-1].eof else None, kept[-1].claimed)
    return out


def per_second(result: FileResult, classes: list[str]) -> list[dict]:
    """Mean probability of each class over the faces of each second (all faces pooled)."""
    rows: dict[int, list] = {}
    for f in result.faces:
        rows.setdefault(int(f.timestamp or 0), []).append([f.probabilities.get(c, 0.0) for c in classes])
    out = []
    for s in sorted(rows):
        m = np.mean(rows[s], axis=0)
        out.append(
            {
                "second": s,
                "faces": len(rows[s]),
                "label": classes[int(m.argmax())],
                **{c: round(float(v), 6) for c, v in zip(classes, m, strict=True)},
            }
        )
    return out


def write_per_second(result: FileResult, classes: list[str], path: str | Path) -> Path:
    path = Path(path)
    with atomic_open(path, "w", newline="", what="per-second CSV") as fh:
        w = csv.DictWriter(fh, fieldnames=["second", "faces", "label"] + list(classes), lineterminator="\n")
        w.writeheader()
        w.writerows(per_second(result, classes))
    return path


def plot_over_time(result: FileResult, classes: list[str], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = per_second(result, classes)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs = [r["second"] for r in rows]
    for c in classes:
        ax.plot(xs, [r[c] for r in rows], label=c, marker="o" if len(xs) < 20 else None)
    ax.set_xlabel("second")
    ax.set_ylabel("mean probability")
    ax.set_ylim(0, 1)
    ax.set_title(f"expressions over time: {ascii(Path(result.path).name)[1:-1]}")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue(), what="plot")
    return path
