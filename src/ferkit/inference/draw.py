"""Annotated pictures: each face's box, the detector's five points, its expression label and score, and the
per-face attributes that were asked for (:mod:`ferkit.attributes`), drawn with OpenCV. Torch-free.

    from ferkit.inference.draw import annotate
    bgr = annotate(image_rgb, file_result.faces)     # a BGR copy, for cv2.imencode / cv2.VideoWriter

Drawn only for faces whose ``attributes`` hold them (a run without attributes draws exactly what it always did):

* ``landmarks68``: the 68 points, small cyan dots;
* ``yaw``/``pitch``/``roll``: three short lines from the nose tip (the 68 points' nose tip, else the detector's):
  the face's own x axis (red, towards its own left), y axis (green, down its face) and z axis (blue, where it
  looks), from :func:`ferkit.attributes.pose_axes` (the same conventions as the reported angles), each half the
  face box's width long, seen from the camera;
* ``age``/``gender``: a second line under the label, e.g. ``31 F 0.90`` (years, F/M, the gender's score);
* ``spoof_score``: a red ``SPOOF real=0.18`` line when P(real) is under the threshold
  (:data:`ferkit.defaults.SPOOF_THRESHOLD`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ferkit import defaults
from ferkit.schema import FaceResult

COLOURS = {
    "angry": (0, 0, 255),
    "disgust": (0, 128, 0),
    "fear": (128, 0, 128),
    "happy": (0, 200, 255),
    "sad": (255, 0, 0),
    "surprise": (255, 200, 0),
    "neutral": (200, 200, 200),
    "contempt": (0, 128, 255),
}
LANDMARKS68_COLOUR = (255, 255, 0)  # BGR cyan: apart from the detector's five green points
AXIS_COLOURS = ((0, 0, 255), (0, 255, 0), (255, 0, 0))  # BGR: x red, y green, z blue
SPOOF_COLOUR = (0, 0, 200)
AXIS_LENGTH = 0.5  # of the face box's width


def label_boxes(boxes: list, sizes: Sequence[Sequence[int]], image_size: tuple[int, int]) -> list[tuple[int, ...]]:
    """Where each face's label goes, ``(x1, y1, x2, y2)`` in pixels, given its face box and its text's
    ``(width, height)``: above the face where there is room, else below it, else moved down in steps of a label's
    height, so no two labels overlap (faces close together in a group photo) and none leaves the image (width,
    height) where it fits at all. Larger faces are placed first."""
    w_img, h_img = image_size
    placed: dict[int, tuple[int, ...]] = {}

    def free(r):
        return all(r[2] <= o[0] or o[2] <= r[0] or r[3] <= o[1] or o[3] <= r[1] for o in placed.values())

    order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    for i in order:
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        tw, th = sizes[i][0] + 2, sizes[i][1] + 5
        x = min(max(0, x1), max(0, w_img - tw))
        above, below = y1 - th, y2 + 1
        tops = [t for t in (above, below) if 0 <= t <= h_img - th] or [max(0, min(above, h_img - th))]
        tops += [tops[0] + k * th for k in range(1, 2 * len(boxes) + 2)]
        rect = next((r for t in tops if free(r := (x, t, x + tw, t + th))), (x, tops[0], x + tw, tops[0] + th))
        placed[i] = rect
    return [placed[i] for i in range(len(boxes))]


def _lines(f: FaceResult, spoof_threshold: float) -> list[tuple[str, tuple[int, int, int], tuple[int, int, int]]]:
    """A face's label lines: (text, background, text colour); the first is its expression (and identity)."""
    colour = COLOURS.get(f.label, (0, 255, 0))
    text = f"{f.label} {f.score:.2f}" + (f" #{f.track}" if f.track is not None else "")
    if isinstance(f.identity, dict) and f.identity.get("name"):
        text = f"{f.identity['name']} ({f.identity['distance']:.2f}) | {text}"
    lines = [(text, colour, (0, 0, 0))]
    a = f.attributes or {}
    who = []
    if a.get("age") is not None:
        who.append(f"{a['age']:.0f}")
    if a.get("gender") is not None:
        who.append(f"{str(a['gender'])[:1].upper()} {a['gender_score']:.2f}")
    if who:
        lines.append((" ".join(who), colour, (0, 0, 0)))
    if a.get("spoof_score") is not None and a["spoof_score"] < spoof_threshold:
        lines.append((f"SPOOF real={a['spoof_score']:.2f}", SPOOF_COLOUR, (255, 255, 255)))
    return lines


def _pose(img: np.ndarray, f: FaceResult, th: int) -> None:
    """Three short axes from the nose tip, from the face's yaw, pitch and roll."""
    import cv2

    from ferkit.attributes import pose_axes

    a = f.attributes or {}
    if any(a.get(k) is None for k in ("yaw", "pitch", "roll")):
        return
    if a.get("landmarks68") is not None:
        nose = np.asarray(a["landmarks68"], np.float64)[30]
    elif f.landmarks is not None and not f.landmarks_estimated:
        nose = np.asarray(f.landmarks, np.float64)[2]
    else:
        return
    r = pose_axes(a["yaw"], a["pitch"], a["roll"])
    length = AXIS_LENGTH * (f.box[2] - f.box[0])
    # column 2 points away from where the face looks: the z axis drawn is where it looks
    for axis, colour in zip((r[:, 0], r[:, 1], -r[:, 2]), AXIS_COLOURS, strict=True):
        end = nose + length * axis[:2]  # seen along the camera's axis
        start = (int(round(nose[0])), int(round(nose[1])))
        cv2.line(img, start, (int(round(end[0])), int(round(end[1]))), colour, th, cv2.LINE_AA)


def annotate(
    image_rgb: np.ndarray,
    faces: list[FaceResult],
    fps: float | None = None,
    spoof_threshold: float = defaults.SPOOF_THRESHOLD,
) -> np.ndarray:
    """A BGR copy of the image with each face's box, landmarks, label and score drawn (for cv2 writers), and the
    attributes each face carries (see the module docstring); labels of faces close together do not cover each
    other (:func:`label_boxes`). ``fps``: a live frame rate drawn in the corner (webcam)."""
    import cv2

    img = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    th = max(1, round(max(img.shape[:2]) / 400))
    fs = 0.4 * th
    lines = [_lines(f, spoof_threshold) for f in faces]
    line_sizes = [[cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, fs, th)[0] for t, _, _ in ls] for ls in lines]
    # one block per face: its lines stacked, each as tall as a one-line label is
    sizes = [(max(s[0] for s in ss), sum(s[1] + 5 for s in ss) - 5) for ss in line_sizes]
    rects = label_boxes([f.box for f in faces], sizes, (img.shape[1], img.shape[0]))
    for f in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in f.box)
        cv2.rectangle(img, (x1, y1), (x2, y2), COLOURS.get(f.label, (0, 255, 0)), th)
        if f.landmarks is not None and not f.landmarks_estimated:
            for x, y in np.asarray(f.landmarks):
                cv2.circle(img, (int(x), int(y)), th + 1, (0, 255, 0), -1)
        lm68 = (f.attributes or {}).get("landmarks68")
        if lm68 is not None:
            for x, y in np.asarray(lm68, np.float64):
                cv2.circle(img, (int(round(x)), int(round(y))), th, LANDMARKS68_COLOUR, -1)
        _pose(img, f, th)
    # labels over every box
    for ls, ss, (lx1, ly1, lx2, _) in zip(lines, line_sizes, rects, strict=True):
        top = ly1
        for (text, bg, fg), (_, tht) in zip(ls, ss, strict=True):
            cv2.rectangle(img, (lx1, top), (lx2 - 1, top + tht + 4), bg, -1)
            cv2.putText(img, text, (lx1 + 1, top + tht + 2), cv2.FONT_HERSHEY_SIMPLEX, fs, fg, th, cv2.LINE_AA)
            top += tht + 5
    if fps is not None:
        cv2.putText(
            img, f"{fps:.1f} FPS", (8, 20 * th), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * th, (0, 255, 0), th, cv2.LINE_AA
        )
    return img


__all__ = ["COLOURS", "annotate", "label_boxes"]
