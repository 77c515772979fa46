"""What the raw outputs of a zoo network mean: the one numpy decoder shared by the converter's parity
report, the tests and :mod:`ferkit.attributes` (which runs the ONNX graphs without torch).

* expression models: softmax over the classes;
* ``faceapi_agegender``: ``[age, P(male), P(female)]`` = the age regression as is, softmax of the two
  gender logits (face-api's ``AgeGenderNet.forwardInput``);
* ``faceapi_landmarks68``: ``x0, y0, ..., x67, y67`` as fractions of the square input, as is;
* ``human_antispoof``: ``[P(real)]`` = softmax of ``[0, z]`` = sigmoid(z), Human's score.
* ``human_facemesh``: ``[x0, y0, z0, ..., x467, y467, z467, face score]`` = the mesh in pixels of the 192x192
  input / 192 (fractions of the crop; z in the same unit) and sigmoid of the face-flag logit.
"""

from __future__ import annotations

import numpy as np

FACEMESH_INPUT = 192.0  # human_facemesh's input side: its mesh is in pixels of it


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def decode(name: str, raw: np.ndarray) -> np.ndarray:
    """``(N, K)`` raw network outputs of zoo entry ``name`` -> its decoded values (float64, ``(N, K')``)."""
    raw = np.asarray(raw, np.float64)
    if name == "faceapi_agegender":
        return np.concatenate([raw[:, :1], softmax(raw[:, 1:3])], axis=1)
    if name == "faceapi_landmarks68":
        return raw
    if name == "human_antispoof":
        return softmax(raw)[:, 1:]
    if name == "human_facemesh":
        return np.concatenate([raw[:, :-1] / FACEMESH_INPUT, 1.0 / (1.0 + np.exp(-raw[:, -1:]))], axis=1)
    return softmax(raw)


def reference_logits(name: str, raw: np.ndarray) -> np.ndarray:
    """The part of our raw outputs the original runtime's pre-activation output corresponds to (antispoof: the
    "real" logit; its zero "spoof" logit has no counterpart; facemesh: the mesh in fractions of the input, whose
    float32 rounding is then that of values < 1 rather than of pixels up to 192, and the face-flag logit)."""
    if name == "human_facemesh":
        raw = np.asarray(raw, np.float64)
        return np.concatenate([raw[:, :-1] / FACEMESH_INPUT, raw[:, -1:]], axis=1)
    return np.asarray(raw)[:, 1:] if name == "human_antispoof" else np.asarray(raw)
