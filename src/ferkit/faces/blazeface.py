"""BlazeFace (MediaPipe, back-camera model), as shipped by Human 3.3.6: a tiny, fast detector for faces that are
not small in the frame. Boxes + 6 keypoints (eyes, nose tip, mouth centre, ear tragions).

Pipeline (Human's ``src/face/blazeface.ts``, except the resize, see below): the image is letterboxed into a
256x256 square (scaled so its long side is 256, placed at the top-left, zero padding), scaled to [-1, 1]
(``x / 127.5 - 1``), one forward pass; each of the 896 anchors (16x16 cells x 2 at stride 16, then 8x8 x 6 at
stride 32, centred in their cell) gets a box centred at anchor + offset with the regressed width and height,
and six keypoints at anchor + offset, all in 256-px units; score = sigmoid(logit); greedy NMS. Human itself
stretches the frame to 256x256 unless ``square`` is set; the letterbox keeps faces' proportions, which the
network was trained on.

Landmarks: ferkit's five points are ``left_eye`` = keypoint 0 (the subject's right eye), ``right_eye`` =
keypoint 1, ``nose`` = keypoint 2, and the two mouth corners placed either side of the mouth centre (keypoint 3)
along the eye line, 0.414 of the eye distance away (the ArcFace template's mouth width / eye distance / 2), so
alignment warps on two measured eyes, a measured nose and a mouth centre. The ears are dropped. What that costs
in labels against RetinaFace's five measured points is in ``bench/detectors.py``'s table and the card.

Runtimes: ONNX Runtime on the CPU when onnxruntime is installed (the graph shipped beside the weights), else
the PyTorch module of :mod:`ferkit.faces.blazeface_net`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ferkit.faces.base import Face, FaceDetector, register_backend
from ferkit.utils import call_threads

INPUT_SIZE = 256
#: mouth half-width as a fraction of the eye distance (ArcFace 112x112 template: 29.18 / 35.24 / 2)
MOUTH_HALF_WIDTH = 0.414


def anchors(size: int = INPUT_SIZE) -> np.ndarray:
    """(896, 2) float32 anchor centres in input pixels, in the network's output order (Human's
    ``generateAnchors``: strides size/16 and size/8 with 2 and 6 anchors per cell)."""
    out = []
    for stride, per_cell in ((size // 16, 2), (size // 8, 6)):
        n = (size + stride - 1) // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) * stride, (np.arange(n) + 0.5) * stride, indexing="ij")
        out.append(np.repeat(np.stack([xs, ys], -1).reshape(-1, 2), per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = anchors()


def decode(reg: np.ndarray, anc: np.ndarray = _ANCHORS) -> tuple[np.ndarray, np.ndarray]:
    """Regressors (..., 16) -> boxes (..., 4) x1, y1, x2, y2 and keypoints (..., 6, 2), in input pixels."""
    centre = reg[..., :2] + anc
    half = reg[..., 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], -1)
    kps = reg[..., 4:16].reshape(*reg.shape[:-1], 6, 2) + anc[..., None, :]
    return boxes.astype(np.float32), kps.astype(np.float32)


def five_points(kps: np.ndarray) -> np.ndarray:
    """BlazeFace's six keypoints (6, 2) -> ferkit's five (left_eye, right_eye, nose, mouth_left, mouth_right):
    eyes and nose as measured, mouth corners either side of the mouth centre along the eye line."""
    eye_vec = kps[1] - kps[0]
    mouth = kps[3]
    return np.stack([kps[0], kps[1], kps[2], mouth - MOUTH_HALF_WIDTH * eye_vec, mouth + MOUTH_HALF_WIDTH * eye_vec])


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, float]:
    """The image scaled so its long side is ``size``, at the top-left of a black size x size square; returns
    (square uint8 RGB, scale) where input pixel coordinates = square coordinates / scale."""
    import cv2

    h, w = image.shape[:2]
    f = size / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    out = np.zeros((size, size, 3), np.uint8)
    out[:nh, :nw] = (
        image
        if (nh, nw) == (h, w)
        else cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if f <= 0.5 else cv2.INTER_LINEAR)
    )
    return out, f


@register_backend("blazeface")
class BlazeFaceDetector(FaceDetector):
    """BlazeFace back model: a fixed 256x256 letterbox (costs about what RetinaFace at 320 px does on a CPU); faces
    from ~1/20 of the image's long side up."""

    default_score_threshold = 0.5
    summary = "MediaPipe BlazeFace (back model): faces not small in the frame; eyes + nose detected, mouth placed"
    input_desc = "letterboxed to 256x256"
    speed = "fast (ONNX Runtime; about RetinaFace at 320 px)"
    licence = "Apache-2.0 (MediaPipe model) via MIT Human 3.3.6"

    def __init__(self, *args, nms_iou: float = 0.3, runtime: str = "auto", **kwargs):
        """``nms_iou``: boxes overlapping a better one by more than this IoU are dropped (0.3, MediaPipe's).
        ``runtime``: ``torch``, ``onnx`` or ``auto`` (onnx on CPU when onnxruntime is installed)."""
        super().__init__(*args, **kwargs)
        self.nms_iou = self._checked_nms_iou(nms_iou)
        self.runtime = self._chosen_runtime(runtime)
        # The network sees a 256-px letterbox whatever max_size says: shrinking straight to 256 is one resize
        # instead of two (measured: 25 -> ~8 ms per 1920-px photo in bench/detectors.py).
        if self.max_size is None or self.max_size > INPUT_SIZE:
            self.max_size = INPUT_SIZE
        self.net = None
        if self.runtime == "onnx":
            self._session_for(call_threads())
        else:
            from ferkit.utils import require_torch

            require_torch("BlazeFace on PyTorch (runtime='torch', a GPU, or no onnxruntime)")
            from ferkit.faces.blazeface_net import build_network

            self.net = build_network(self.device)

    def _onnx_graph(self) -> Path:
        from ferkit.faces.weights import onnx_weights_path

        return onnx_weights_path("blazeface")

    def forward(self, squares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 256, 256, 3) uint8 RGB -> (logits (N, 896), regressors (N, 896, 16)) as float32 numpy."""
        x = (squares.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if self.runtime == "onnx":
            logits, reg = self._session_for(call_threads()).run(None, {"x": x})
            return logits, reg
        import torch

        with torch.inference_mode():
            assert self.net is not None  # the torch runtime built it
            lo, re = self.net(torch.from_numpy(x).to(self.device))
            return lo.float().cpu().numpy(), re.float().cpu().numpy()

    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        from ferkit.faces.base import batched_nms

        results: list[list[Face]] = [[] for _ in images]
        for start in range(0, len(images), self.batch_size):
            chunk = [letterbox(im) for im in images[start : start + self.batch_size]]
            logits, reg = self.forward(np.stack([c[0] for c in chunk]))
            with np.errstate(over="ignore"):
                prob = 1.0 / (1.0 + np.exp(-logits))
            img_idx, cand = np.nonzero(prob >= self.score_threshold)
            if cand.size == 0:
                continue
            boxes, kps = decode(reg[img_idx, cand], _ANCHORS[cand])
            scores = prob[img_idx, cand]
            for k in batched_nms(boxes, scores, img_idx, self.nms_iou):
                f = chunk[img_idx[k]][1]
                results[start + img_idx[k]].append(Face(tuple(boxes[k] / f), float(scores[k]), five_points(kps[k]) / f))
        return results
