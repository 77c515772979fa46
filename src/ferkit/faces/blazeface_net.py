"""The BlazeFace "back camera" network (MediaPipe; Bazarevsky et al. 2019) as a PyTorch module.

Our implementation of the graph in Human 3.3.6's ``models/blazeface.json`` (a TF.js graph model; converted by
:func:`ferkit.zoo.convert.convert_tfjs_blazeface`). Input: (N, 3, 256, 256) RGB scaled to [-1, 1]. Output:
face logits (N, 896) and regressors (N, 896, 16) -- box centre offset, box size, 6 keypoint offsets, all in
input pixels -- for the 512 anchors of the 16x16 grid (2 per cell) followed by the 384 of the 8x8 grid (6 per
cell), cells in row-major order, exactly as Human concatenates the graph's four outputs.

TF's SAME padding is asymmetric for stride 2 on even sizes (the extra row/column goes at the bottom/right);
it is reproduced with explicit zero padding. The input must be 256x256 (the anchors are laid out for it).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

#: (in channels, out channels, stride) of the 31 residual blocks of the trunk, in graph order
BLOCKS = (
    [(24, 24, 1)] * 7
    + [(24, 24, 2)]
    + [(24, 24, 1)] * 7
    + [(24, 48, 2)]
    + [(48, 48, 1)] * 7
    + [(48, 96, 2)]
    + [(96, 96, 1)] * 7
)


def _same_pad(x: torch.Tensor, k: int, s: int) -> torch.Tensor:
    """TF SAME padding for a k x k window at stride 2 on an even-sized input (every layer here: 256, 128, 64,
    32, 16): k - 2 in all, the extra one on the bottom/right. Constant pads keep the ONNX graph free of shape
    arithmetic."""
    assert s == 2
    return F.pad(x, ((k - 2) // 2, (k - 1) // 2, (k - 2) // 2, (k - 1) // 2))


class BlazeBlock(nn.Module):
    """Depthwise 3x3 (stride 1 or 2) + pointwise 1x1, added to the input (max-pooled 2x2 and zero-padded in
    channels when the block downsamples or widens), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, residual: bool = True):
        super().__init__()
        self.stride, self.cin, self.cout, self.residual = stride, cin, cout, residual
        # stride 1: SAME is 1 on every side, inside the convolution (one op less per block in the ONNX graph)
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1 if stride == 1 else 0, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x if self.stride == 1 else _same_pad(x, 3, self.stride)))
        if not self.residual:
            return F.relu(y)
        if self.stride == 2:
            x = F.max_pool2d(x, 2, 2)
        if self.cout > self.cin:
            x = F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return F.relu(x + y)


class BlazeFaceNet(nn.Module):
    """BlazeFace back model: 256x256 input, 896 anchors."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, 2, 0)
        self.blocks = nn.ModuleList(BlazeBlock(*b) for b in BLOCKS)
        self.down = BlazeBlock(96, 96, 2, residual=False)  # 16x16 -> 8x8, no shortcut in the graph
        self.cls16, self.reg16 = nn.Conv2d(96, 2, 1), nn.Conv2d(96, 32, 1)
        self.cls8, self.reg8 = nn.Conv2d(96, 6, 1), nn.Conv2d(96, 96, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.stem(_same_pad(x, 5, 2)))
        for b in self.blocks:
            x = b(x)
        y = self.down(x)
        n = x.shape[0]

        def flat(t: torch.Tensor, k: int) -> torch.Tensor:  # NCHW -> NHWC -> (N, cells * anchors, k)
            return t.permute(0, 2, 3, 1).reshape(n, -1, k)

        logits = torch.cat([flat(self.cls16(x), 1), flat(self.cls8(y), 1)], 1)[..., 0]
        reg = torch.cat([flat(self.reg16(x), 16), flat(self.reg8(y), 16)], 1)
        return logits, reg


def build_network(device: torch.device | str = "cpu") -> BlazeFaceNet:
    """The network with the bundled weights loaded, in eval mode."""
    from ferkit.faces.weights import load_weights

    net = BlazeFaceNet()
    net.load_state_dict(load_weights("blazeface"))
    return net.eval().to(device)


def export_onnx(path: str | os.PathLike) -> None:
    """Write the network as ONNX (opset 17, dynamic batch, 256x256 input) to ``path``."""
    from ferkit.utils import export_traced_onnx

    export_traced_onnx(
        build_network("cpu"),
        torch.zeros(1, 3, 256, 256),
        path,
        input_name="x",
        output_names=["logits", "regressors"],
        dynamic_axes={"x": {0: "batch"}},
    )
