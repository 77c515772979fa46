"""face-api 1.7.15's two face detectors: ``tinyface`` (tiny_face_detector) and ``ssd_mobilenet`` (ssd_mobilenetv1).

Both are boxes only (no landmarks): the five points are placed inside the box as for Haar
(:func:`ferkit.faces.haar.estimate_landmarks`) and flagged ``landmarks_estimated``, so alignment crops.
Cards: ``cards/tinyface.md``, ``cards/ssd_mobilenet.md``.

The pipeline is face-api's own (``src/tinyYolov2/TinyYolov2Base.ts``, ``src/ssdMobilenetv1/SsdMobilenetv1.ts``):
pad the image with black on the right or bottom to a square, resize that square to the network's side with
TF.js's bilinear resize (corner-aligned sample positions ``i * in / out``, not OpenCV's half-pixel ones),
normalise, one forward pass, decode, NMS. The resize, decoding and NMS are numpy; the network runs on ONNX
Runtime from the graphs shipped beside the weights (``runtime="auto"`` on CPU with onnxruntime installed: no
torch import) or in PyTorch (:mod:`ferkit.faces.faceapi_net`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferkit.errors import ConfigError
from ferkit.faces.base import Face, FaceDetector, batched_nms, register_backend
from ferkit.faces.haar import estimate_landmarks
from ferkit.utils import call_threads

#: tiny_face_detector's anchors in cells (tinyFaceDetector/const.ts), its mean RGB and NMS IoU
TINY_ANCHORS = np.array(
    [[1.603231, 2.094468], [6.041143, 7.080126], [2.882459, 3.518061], [4.266906, 5.178857], [9.041765, 10.66308]]
)
TINY_MEAN = np.array([117.001, 114.697, 97.404], np.float32)
TINY_IOU = 0.4
SSD_SIZE = 512
SSD_IOU = 0.5
SSD_MAX_RESULTS = 100


def square_resize(image: np.ndarray, side: int) -> tuple[np.ndarray, int, int]:
    """face-api's ``NetInput.toBatchTensor(side, false)``: the RGB image padded with zeros on the right or
    bottom to a square, resized to ``side`` x ``side`` by TF.js's bilinear resize (align_corners and
    half_pixel_centers off: output pixel i samples input position i * in / out), float32 (side, side, 3).
    Also returns face-api's "reshaped" size of the image inside the square (its width and height times
    side / long side, rounded), which it decodes boxes against."""
    h, w = image.shape[:2]
    m = max(h, w)
    rw, rh = round(w * side / m), round(h * side / m)
    if m == side:
        out = np.zeros((side, side, 3), np.float32)
        out[:h, :w] = image
        return out, rw, rh
    pos = np.arange(side) * (m / side)  # float64, as the JS kernel computes
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(np.ceil(pos).astype(np.intp), m - 1)
    frac = pos - lo
    # Sample the padded square without building it: one zero row and column stand for all the padding.
    padded = np.zeros((h + 1, w + 1, 3), np.uint8)
    padded[:h, :w] = image
    ylo, yhi, xlo, xhi = np.minimum(lo, h), np.minimum(hi, h), np.minimum(lo, w), np.minimum(hi, w)
    # TF.js's order: along x first, then along y; float32 (the kernel's doubles differ from it by under one
    # float32 step of the result). Each source row needed is interpolated along x once (np.take: ~5x faster
    # than fancy indexing here).
    rows = np.unique(np.concatenate([ylo, yhi]))
    r = np.take(padded, rows, axis=0)
    a = np.take(r, xlo, axis=1).astype(np.float32)
    along_x = a + (np.take(r, xhi, axis=1).astype(np.float32) - a) * frac.astype(np.float32)[None, :, None]
    top = np.take(along_x, np.searchsorted(rows, ylo), axis=0)
    bottom = np.take(along_x, np.searchsorted(rows, yhi), axis=0)
    return top + (bottom - top) * frac.astype(np.float32)[:, None, None], rw, rh


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _FaceApiDetector(FaceDetector):
    """What the two face-api detectors share: runtimes, sessions, batching by network input, estimated landmarks."""

    has_landmarks = False
    default_score_threshold = 0.5  # face-api's default for both (TinyYolov2Options, SsdMobilenetv1Options)
    licence = "MIT (face-api 1.7.15)"

    def __init__(self, *args: Any, runtime: str = "auto", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.runtime = self._chosen_runtime(runtime)
        self.net = None
        if self.runtime == "onnx":
            self._session_for(call_threads())
        else:
            from ferkit.utils import require_torch

            require_torch(f"{self.name} on PyTorch (runtime='torch', a GPU, or no onnxruntime)")
            from ferkit.faces.faceapi_net import build_network

            self.net = build_network(self.name, self.device)

    def _onnx_graph(self) -> Path:
        from ferkit.faces.weights import onnx_weights_path

        return onnx_weights_path(self.name)

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """The network on an NCHW float32 batch, outputs as float32 numpy."""
        if self.runtime == "onnx":
            return list(self._session_for(call_threads()).run(None, {"x": x}))
        import torch

        assert self.net is not None  # the torch runtime built it
        with torch.inference_mode():
            out = self.net(torch.from_numpy(x).to(self.device))
        return [o.float().cpu().numpy() for o in (out if isinstance(out, tuple) else (out,))]

    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        side = self.input_side
        results: list[list[Face]] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            squares = [square_resize(im, side) for im in chunk]
            x = np.ascontiguousarray(np.stack([self._normalise(s[0]) for s in squares]).transpose(0, 3, 1, 2))
            outs = self._run(x)
            for i, (im, (_, rw, rh)) in enumerate(zip(chunk, squares, strict=True)):
                results.append(self._decode([o[i] for o in outs], im.shape[1], im.shape[0], rw, rh))
        return results

    @property
    def input_side(self) -> int:
        raise NotImplementedError

    def _normalise(self, square: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, outs: list[np.ndarray], w: int, h: int, rw: int, rh: int) -> list[Face]:
        raise NotImplementedError

    @staticmethod
    def _face(box: tuple[float, float, float, float], score: float) -> Face:
        return Face(box, score, estimate_landmarks(box), landmarks_estimated=True)


@register_backend("tinyface")
class TinyFaceDetector(_FaceApiDetector):
    """face-api's tiny_face_detector: a 190 KB Tiny-YOLOv2-style network, fast, for frontal and moderately
    turned faces from ~40 px; boxes only. ``input_size`` (default 416, a multiple of 32) is the side the
    padded image is resized to: smaller is faster and misses small faces."""

    summary = "the smallest network: frontal faces from ~40 px (webcams, video, portraits); boxes only"
    input_desc = "padded to a square, resized to input_size (416; a multiple of 32)"
    speed = "fast (ONNX Runtime)"

    def __init__(self, *args: Any, input_size: int = 416, **kwargs: Any):
        if not (isinstance(input_size, int) and input_size >= 32 and input_size % 32 == 0):
            raise ConfigError(f"tinyface input_size must be a multiple of 32 (e.g. 320, 416, 608), got {input_size!r}")
        self.input_size = input_size
        super().__init__(*args, **kwargs)

    @property
    def input_side(self) -> int:
        return self.input_size

    def _normalise(self, square: np.ndarray) -> np.ndarray:
        return (square - TINY_MEAN) / np.float32(255)  # float32 ops, as TF.js's normalize() and div(255)

    def _decode(self, outs: list[np.ndarray], w: int, h: int, rw: int, rh: int) -> list[Face]:
        out = outs[0].transpose(1, 2, 0).astype(np.float64)  # (cells, cells, 25), NHWC as TF.js holds it
        cells = out.shape[0]
        out = out.reshape(cells, cells, len(TINY_ANCHORS), 5)
        score = _sigmoid(out[..., 4])
        row, col, anc = np.nonzero(score >= self.score_threshold)
        if row.size == 0:
            return []
        t = out[row, col, anc]
        side = self.input_size
        fx, fy = side / rw, side / rh  # face-api's correction for the padded square
        # relative to the image (face-api's extractBoxes), then scaled by its size (ObjectDetection's rescale)
        bw = np.exp(t[:, 2]) * TINY_ANCHORS[anc, 0] / cells * fx
        bh = np.exp(t[:, 3]) * TINY_ANCHORS[anc, 1] / cells * fy
        x = (col + _sigmoid(t[:, 0])) / cells * fx - bw / 2
        y = (row + _sigmoid(t[:, 1])) / cells * fy - bh / 2
        x1, y1 = x * w, y * h
        boxes = np.stack([x1, y1, x1 + bw * w, y1 + bh * h], 1)
        s = score[row, col, anc]
        rel = np.stack([x, y, x + bw, y + bh], 1) * side  # face-api's NMS runs on boxes.rescale(inputSize)
        keep = batched_nms(rel, s, np.zeros(len(s), np.int64), TINY_IOU)
        return [self._face(tuple(boxes[k]), float(s[k])) for k in keep]


@register_backend("ssd_mobilenet")
class SsdMobilenetDetector(_FaceApiDetector):
    """face-api's ssd_mobilenetv1 (SSD with a MobileNetV1 trunk, WIDER FACE): 512 px input, more robust than
    tinyface to small, turned and partly hidden faces, ~5x slower; boxes only."""

    summary = "SSD: more robust than tinyface to small, turned and hidden faces, slower; boxes only"
    input_desc = "padded to a square, resized to 512"
    speed = "medium (ONNX Runtime)"
    input_size: ClassVar[int] = SSD_SIZE

    @property
    def input_side(self) -> int:
        return SSD_SIZE

    def _normalise(self, square: np.ndarray) -> np.ndarray:
        return square / np.float32(127.5) - np.float32(1)  # float32, as SsdMobilenetv1.forwardInput

    def _decode(self, outs: list[np.ndarray], w: int, h: int, rw: int, rh: int) -> list[Face]:
        boxes, scores = outs[0], outs[1]  # (5118, 4) ymin, xmin, ymax, xmax in the square; (5118,)
        cand = np.nonzero(scores > self.score_threshold)[0] if self.score_threshold > 0 else np.arange(len(scores))
        if cand.size == 0:
            return []
        b, s = boxes[cand].astype(np.float64), scores[cand].astype(np.float64)
        keep = batched_nms(b[:, [1, 0, 3, 2]], s, np.zeros(len(s), np.int64), SSD_IOU)[:SSD_MAX_RESULTS]
        px, py = SSD_SIZE / rw, SSD_SIZE / rh
        faces = []
        for k in keep:
            # face-api clips the top/left at 0 and the bottom/right at its square's edge; we keep the box whole
            # (ferkit never clips boxes), which is the same box for every face inside the image
            y1, x1, y2, x2 = b[k, 0] * py * h, b[k, 1] * px * w, b[k, 2] * py * h, b[k, 3] * px * w
            faces.append(self._face((x1, y1, x2, y2), float(s[k])))
        return faces
