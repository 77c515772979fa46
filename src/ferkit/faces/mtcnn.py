"""MTCNN (Zhang et al. 2016): a three-stage cascade of small CNNs giving boxes + 5 landmarks.

Our implementation of the networks and the cascade, with the weights facenet-pytorch 2.6.0 ships
(``facenet_pytorch/data/{pnet,rnet,onet}.pt``, converted from the original MTCNN release via
davidsandberg/facenet; card: ``cards/mtcnn.md``). The cascade follows facenet-pytorch's ``detect_face``
step for step (so its boxes are reproduced, see ``tests/fixtures/README.md``):

1. P-Net, fully convolutional, on an image pyramid (scale 12/min_face, then x0.709 until the short side
   drops under 12 px): candidate 12x12 windows scoring >= 0.6, NMS 0.5 per scale, NMS 0.7 across scales,
   box regression, squared up.
2. R-Net on 24x24 crops of those: score > 0.7, NMS 0.7, regression, squared up.
3. O-Net on 48x48 crops: score > ``score_threshold`` (0.7, the original's third threshold), 5 landmarks,
   regression, NMS 0.7 by intersection-over-the-smaller-box.

Input is RGB scaled as (x - 127.5) / 128. Crops are cut at the image border (not zero-padded) and resized
with area averaging, as facenet-pytorch does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.faces.base import Face, FaceDetector, group_by_shape, register_backend


def _flatten_wh(x: torch.Tensor) -> torch.Tensor:
    # The dense layers were trained (in MATLAB/Caffe) on feature maps stored width-major: flatten as
    # (W, H, C), not PyTorch's (C, H, W), or the weights see scrambled inputs.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, one 12x12 window per output cell (stride 2)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu4(self.dense4(_flatten_wh(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)


class ONet(nn.Module):
    """Output net on 48x48 crops: score, box offsets and 5 landmarks (x1..x5, y1..y5, box-relative)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu5(self.dense5(_flatten_wh(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)


class MTCNNNets(nn.Module):
    """The three networks under one state dict (``pnet.*``, ``rnet.*``, ``onet.*``)."""

    def __init__(self):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


def build_networks(device: torch.device | str = "cpu") -> MTCNNNets:
    from ferkit.faces.weights import load_weights

    nets = MTCNNNets()
    nets.load_state_dict(load_weights("mtcnn"))
    return nets.eval().to(device)


def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which a face of ``min_face`` px (and each larger step) becomes P-Net's 12 px window."""
    scale = 12.0 / min_face
    short = min(height, width) * scale
    out = []
    while short >= 12:
        out.append(scale)
        scale *= factor
        short *= factor
    return out


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each (x1, y1, x2, y2) box to a square on its longer side, same centre."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + (w - side) / 2
    y1 = boxes[:, 1] + (h - side) / 2
    return torch.stack([x1, y1, x1 + side, y1 + side], 1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool) -> torch.Tensor:
    # Stage 1 scales offsets by x2 - x1, stages 2-3 by x2 - x1 + 1 (pixel-inclusive): kept for parity.
    d = 1.0 if plus_one else 0.0
    w = boxes[:, 2] - boxes[:, 0] + d
    h = boxes[:, 3] - boxes[:, 1] + d
    return boxes + offsets * torch.stack([w, h, w, h], 1)


def _crops(imgs: torch.Tensor, img_idx: torch.Tensor, boxes: torch.Tensor, size: int):
    """Resized crops (K, 3, size, size) of the boxes (cut at the image border), and which boxes had one."""
    h, w = imgs.shape[2:]
    b = boxes.trunc().int().cpu().numpy()
    x1, y1 = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    x2, y2 = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    ok = (x2 > x1 - 1) & (y2 > y1 - 1)
    ii = img_idx.cpu().numpy()
    out = [
        F.interpolate(imgs[ii[k] : ii[k] + 1, :, y1[k] - 1 : y2[k], x1[k] - 1 : x2[k]], size=(size, size), mode="area")
        for k in np.flatnonzero(ok)
    ]
    crops = torch.cat(out) if out else imgs.new_zeros((0, 3, size, size))
    return (crops - 127.5) * 0.0078125, torch.from_numpy(ok).to(boxes.device)


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, thr: float) -> torch.Tensor:
    """Greedy NMS per group where overlap is intersection / the smaller box's area (pixel-inclusive areas):
    drops a box lying mostly inside a better one even when IoU is small. Returns kept indices."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    shift = groups.to(boxes) * (boxes.max() + 1)
    b = (boxes + shift[:, None]).double()
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    order = torch.argsort(scores, descending=True)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = (torch.minimum(b[i, 2], b[rest, 2]) - torch.maximum(b[i, 0], b[rest, 0]) + 1).clamp(min=0)
        ih = (torch.minimum(b[i, 3], b[rest, 3]) - torch.maximum(b[i, 1], b[rest, 1]) + 1).clamp(min=0)
        overlap = iw * ih / torch.minimum(area[i], area[rest])
        order = rest[overlap <= thr]
    return torch.stack(keep)


@torch.inference_mode()
def cascade(nets: MTCNNNets, imgs: torch.Tensor, min_face: float, thresholds=(0.6, 0.7, 0.7), factor: float = 0.709):
    """Run MTCNN on a batch of same-sized RGB images (N, 3, H, W), float 0..255.

    Returns (image index (K,), boxes (K, 4), scores (K,), landmarks (K, 5, 2)) in input pixels.
    """
    from ferkit.faces.base import batched_nms

    h, w = imgs.shape[2:]
    empty = (torch.zeros(0, dtype=torch.long), torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))

    # Stage 1: proposals over the pyramid.
    parts = []
    for s in pyramid_scales(h, w, min_face, factor):
        scaled = F.interpolate(imgs, size=(int(h * s + 1), int(w * s + 1)), mode="area")
        reg, prob = nets.pnet((scaled - 127.5) * 0.0078125)
        n, r, c = torch.nonzero(prob[:, 1] >= thresholds[0], as_tuple=True)
        if n.numel() == 0:
            continue
        cell = torch.stack([c, r], 1).to(imgs.dtype)
        boxes = torch.cat([((2 * cell + 1) / s).floor(), ((2 * cell + 12) / s).floor()], 1)
        score, offs = prob[n, 1, r, c], reg[n, :, r, c]
        keep = batched_nms(boxes, score, n, 0.5)
        parts.append((n[keep], boxes[keep], score[keep], offs[keep]))
    if not parts:
        return empty
    n, boxes, score, offs = (torch.cat(t) for t in zip(*parts, strict=True))
    keep = batched_nms(boxes, score, n, 0.7)
    n, boxes = n[keep], _square(_regress(boxes[keep], offs[keep], plus_one=False))

    # Stage 2: refine on 24x24 crops.
    crops, ok = _crops(imgs, n, boxes, 24)
    n, boxes = n[ok], boxes[ok]
    if n.numel() == 0:
        return empty
    offs, prob = _batched(nets.rnet, crops)
    passed = prob[:, 1] > thresholds[1]
    n, boxes, score, offs = n[passed], boxes[passed], prob[passed, 1], offs[passed]
    keep = batched_nms(boxes, score, n, 0.7)
    n, boxes = n[keep], _square(_regress(boxes[keep], offs[keep], plus_one=True))

    # Stage 3: score, landmarks and final boxes on 48x48 crops.
    crops, ok = _crops(imgs, n, boxes, 48)
    n, boxes = n[ok], boxes[ok]
    if n.numel() == 0:
        return empty
    offs, pts, prob = _batched(nets.onet, crops)
    passed = prob[:, 1] > thresholds[2]
    n, boxes, score, offs, pts = n[passed], boxes[passed], prob[passed, 1], offs[passed], pts[passed]
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    lms = torch.stack([bw * pts[:, :5] + boxes[:, :1] - 1, bh * pts[:, 5:] + boxes[:, 1:2] - 1], -1)
    boxes = _regress(boxes, offs, plus_one=True)
    keep = nms_min(boxes, score, n, 0.7)
    return n[keep].cpu(), boxes[keep].cpu(), score[keep].cpu(), lms[keep].cpu()


def _batched(net: nn.Module, x: torch.Tensor, chunk: int = 512):
    outs = [net(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    return tuple(torch.cat(t) for t in zip(*outs, strict=True))


@register_backend("mtcnn")
class MTCNNDetector(FaceDetector):
    """MTCNN with facenet-pytorch's weights and defaults (min_face 20, thresholds 0.6/0.7/0.7, factor 0.709).

    ``score_threshold`` is the O-Net (final) threshold; ``stage_thresholds`` the P-Net and R-Net ones.
    ``min_face`` also sets the pyramid's first scale (not under 12 px), so it changes speed, not only output.
    """

    default_score_threshold = 0.7
    summary = "three-stage cascade with 5 landmarks; weaker on profiles, slower on big images"
    input_desc = "an image pyramid from min_face up (PyTorch)"
    speed = "slow"
    licence = "MIT (facenet-pytorch 2.6.0)"

    def __init__(self, *args, stage_thresholds: tuple[float, float] = (0.6, 0.7), factor: float = 0.709, **kwargs):
        super().__init__(*args, **kwargs)
        from ferkit.errors import ConfigError

        if not (0.1 <= factor < 0.95):
            raise ConfigError(f"mtcnn factor (pyramid step) must be in [0.1, 0.95), got {factor!r}")
        self.stage_thresholds = tuple(float(t) for t in stage_thresholds)
        self.factor = float(factor)
        self.nets = build_networks(self.device)

    def _detect_many(self, images: list[np.ndarray], scales: list[float]) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in images]
        for group in group_by_shape(images, self.batch_size):
            batch = torch.from_numpy(np.stack([images[i] for i in group])).to(self.device)
            x = batch.permute(0, 3, 1, 2).float()
            min_face = max(12.0, self.min_face * min(scales[i] for i in group))
            n, boxes, scores, lms = cascade(
                self.nets, x, min_face, (*self.stage_thresholds, self.score_threshold), self.factor
            )
            for k in range(len(n)):
                results[group[int(n[k])]].append(Face(tuple(boxes[k].tolist()), float(scores[k]), lms[k].numpy()))
        return results
