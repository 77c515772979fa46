"""The RetinaFace MobileNet-0.25 network in PyTorch (see :mod:`ferkit.faces.retinaface` for the detector).

Kept apart from the detector so that a detector running on ONNX Runtime (the CPU default when onnxruntime is
installed) never imports torch: this module is imported only to run the network in PyTorch or to export it
to ONNX once (:func:`export_onnx`, cached by :func:`ferkit.faces.retinaface.onnx_path`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

_LEAK = 0.1
# pyramid levels (strides 8, 16, 32): ferkit.faces.retinaface.LEVELS holds their anchors; the bundled weights
# have exactly this many context modules and heads, so a mismatch fails loading
N_LEVELS = 3

# MobileNetV1 at width 0.25: (in, out, stride) of each depthwise-separable block after the stem.
_BLOCKS = (
    [(8, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)]
    + [(128, 128, 1)] * 5
    + [(128, 256, 2), (256, 256, 1)]
)
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
        assert bn.running_mean is not None and bn.running_var is not None  # a BatchNorm2d tracks them by default
        gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        # torch types a Conv2d's kernel_size/stride/padding as tuple[int, ...]; they are pairs
        fused = nn.Conv2d(
            c.in_channels,
            c.out_channels,
            c.kernel_size,  # type: ignore[arg-type]
            c.stride,  # type: ignore[arg-type]
            c.padding,  # type: ignore[arg-type]
            groups=c.groups,
            bias=True,
        )
        fused.weight.copy_(c.weight * gain.view(-1, 1, 1, 1))
        assert fused.bias is not None  # bias=True
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
        outs = [lat(f) for lat, f in zip(self.lateral, feats, strict=True)]
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
        self.context = nn.ModuleList(ContextModule() for _ in range(N_LEVELS))
        self.heads = nn.ModuleList(DetectionHead() for _ in range(N_LEVELS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.neck(self.backbone(x))
        outs = [head(ctx(f)) for head, ctx, f in zip(self.heads, self.context, levels, strict=True)]
        logits, boxes, lms = (torch.cat(parts, dim=1) for parts in zip(*outs, strict=True))
        return logits.softmax(-1)[..., 1], boxes, lms

    def fold(self) -> RetinaFaceNet:
        for m in self.modules():
            if isinstance(m, ConvNormAct):
                m.fold()
        return self


def build_network(device: torch.device | str = "cpu", fold: bool = True) -> RetinaFaceNet:
    """The network with the bundled weights loaded, in eval mode."""
    from ferkit.faces.weights import load_weights

    net = RetinaFaceNet()
    net.load_state_dict(load_weights("retinaface"))
    net.eval()
    if fold:
        net.fold()
    return net.to(device)


def export_onnx(path: str | os.PathLike) -> None:
    """Write the folded network as ONNX (opset 17, dynamic batch/height/width) to ``path``."""
    from ferkit.utils import export_traced_onnx

    export_traced_onnx(
        build_network("cpu"),
        torch.zeros(1, 3, 64, 64),
        path,
        input_name="x",
        output_names=["prob", "box", "landmarks"],
        dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
    )
