"""``ferkit collect``: capture face crops from a camera for the "is it me?" classifier (source 000).

Frames with exactly one face are saved as ``OUT/<label>/<label>_NNNN.jpg`` (the face box with a margin, so the
training transforms can still crop/rotate); frames with no face or several faces are skipped and counted.
Prompts asking to vary light, pose, background and occlusion are printed (and drawn on the preview window when
OpenCV has a GUI; ``opencv-python-headless`` has none, then the terminal is the only prompt).

``source`` is a camera index (``0``) or, for tests and replays, a video file / stream URL.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ferkit.errors import ConfigError, DataError

PROMPTS = (
    "look straight at the camera, normal light",
    "turn your head slowly left and right",
    "tilt your head up and down",
    "change the light: lamp on/off, face a window, step into shade",
    "cover part of your face: glasses, hand, hat or mask",
    "move so the background changes",
    "make different expressions: smile, frown, surprise",
)


@dataclass
class CollectReport:
    out: str
    label: str
    saved: list[str] = field(default_factory=list)
    frames: int = 0
    no_face: int = 0
    several_faces: int = 0

    def to_dict(self) -> dict:
        return {
            "out": self.out,
            "label": self.label,
            "saved": len(self.saved),
            "frames": self.frames,
            "skipped_no_face": self.no_face,
            "skipped_several_faces": self.several_faces,
        }


def collect(
    source,
    label: str,
    count: int = 50,
    out: str | os.PathLike = "collected",
    interval: float = 0.5,
    detector: str = "retinaface",
    margin: float = 0.4,
    max_frames: int | None = None,
    preview: bool = True,
    say: Callable[[str], None] | None = None,
) -> CollectReport:
    """Capture ``count`` one-face crops from ``source`` into ``out/label/``; see the module docstring.

    ``interval`` is the least time between two saved crops (seconds of video time for files), so consecutive
    crops differ; ``max_frames`` stops after that many frames read (default: ``count * 200``).
    """
    import cv2

    from ferkit.faces import FaceDetector
    from ferkit.identity.gallery import validate_name

    try:
        validate_name(label)
    except ConfigError:
        raise ConfigError(f"--label {label!r}: use letters, digits, '_' or '-' (e.g. me or not_me)") from None
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"--count {count!r}: give a number of crops >= 1")
    say = say or (lambda s: print(s, file=sys.stderr, flush=True))
    det = FaceDetector.create(detector)
    from ferkit.inference.video import open_capture, window_available

    cap = open_capture(source)
    folder = Path(out) / label
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob(f"{label}_*.jpg"))
    start = 1 + max([int(p.stem.rsplit("_", 1)[-1]) for p in existing if p.stem.rsplit("_", 1)[-1].isdigit()] or [0])
    rep = CollectReport(str(folder), label)
    gui = preview and window_available("ferkit collect")
    is_file = not str(source).isdigit()
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    max_frames = max_frames or count * 200
    per_prompt = max(1, -(-count // len(PROMPTS)))
    last_save = -1e9
    prompt = None
    say(f"collecting {count} crops of {label!r} into {folder}; press Ctrl-C (or q in the preview) to stop")
    try:
        while len(rep.saved) < count and rep.frames < max_frames:
            want = PROMPTS[min(len(rep.saved) // per_prompt, len(PROMPTS) - 1)]
            if want != prompt:
                prompt = want
                say(f"[{len(rep.saved)}/{count}] {prompt}")
            ok, frame = cap.read()
            if not ok:
                if is_file:
                    break
                raise DataError(f"--webcam {source}: the camera stopped delivering frames")
            rep.frames += 1
            now = rep.frames / fps if is_file else time.monotonic()
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces = det.detect(rgb)
            if gui:
                _show(frame, faces, prompt, len(rep.saved), count)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
            if len(faces) != 1:
                if faces:
                    rep.several_faces += 1
                else:
                    rep.no_face += 1
                continue
            if now - last_save < interval:
                continue
            crop = _crop(frame, faces[0].box, margin)
            path = folder / f"{label}_{start + len(rep.saved):04d}.jpg"
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if ok:
                from ferkit.utils import atomic_write_bytes

                atomic_write_bytes(path, buf.tobytes())
                rep.saved.append(str(path))
                last_save = now
    except KeyboardInterrupt:
        say("stopped")
    finally:
        cap.release()
        if gui:
            cv2.destroyAllWindows()
    say(
        f"saved {len(rep.saved)} crops to {folder} from {rep.frames} frames "
        f"({rep.no_face} without a face, {rep.several_faces} with several)"
    )
    return rep


def _crop(frame: np.ndarray, box, margin: float) -> np.ndarray:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    s = max(w, h) * (1 + margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    H, W = frame.shape[:2]
    a, b = int(max(0, cx - s / 2)), int(max(0, cy - s / 2))
    c, d = int(min(W, cx + s / 2)), int(min(H, cy + s / 2))
    return frame[b:d, a:c].copy()


def _show(frame, faces, prompt, n, count) -> None:
    import cv2

    view = frame.copy()
    for f in faces:
        x1, y1, x2, y2 = (int(v) for v in f.box)
        cv2.rectangle(view, (x1, y1), (x2, y2), (0, 255, 0) if len(faces) == 1 else (0, 0, 255), 2)
    cv2.putText(view, f"{n}/{count} {prompt}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    cv2.imshow("ferkit collect", view)
