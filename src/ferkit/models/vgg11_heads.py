"""Source 004: five heads on the first two conv blocks of ImageNet VGG11-BN, for 48x48 FER2013.

Every model is ``stem`` -> ``body`` (absent in vgg11_avgpool) -> adaptive average pool to 6x6 ->
``head`` = Linear(C*36 -> 512), PReLU, Dropout(0.5), Linear(512 -> k). At 48x48 the pool is exactly
the source's (AvgPool2d(2) on 12x12 maps, AdaptiveAvgPool2d(6) on 24x24, the identity on 6x6).

``stem`` is torchvision ``vgg11_bn().features[0..6]`` index for index (conv 64, BN, ReLU, max pool,
conv 128, BN, ReLU), so ``pretrained=True`` copies those ImageNet weights into it. Stages:
``stem, body, head`` (``stem, head`` for vgg11_avgpool).

The source's conv layers (bias-free conv + BN) used PReLU; ``act`` picks ``relu`` (default),
``relu6`` or ``prelu`` (exactly the source). Its inverted residual blocks default to MobileNetV2's
ReLU6 (``act`` does nothing in vgg11_avgpool, which has no body). Where the source's last "5x5" layer was in
fact a 3x3, vgg11_conv5x4 uses four 5x5 layers as its description says
(padding 0, 0, 1, 2: 24 -> 20 -> 16 -> pool 8 -> 6 -> 6).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from ferkit.errors import ModelError
from ferkit.models.heads import FerNet, make_head
from ferkit.models.registry import ModelCard, register_model
from ferkit.models.simple import check_dropout, check_head
from ferkit.models.torchvision_models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TorchvisionWeights,
    grey_conv,
    load_state_dict_checked,
    load_torchvision_state_dict,
    torchvision_weights_file,
    weights_label,
)

VGG11_BN_WEIGHTS = TorchvisionWeights("vgg11_bn", "VGG11_BN_Weights", "IMAGENET1K_V1", "vgg11_bn-6002323d.pth")
STEM_INDICES = range(7)  # vgg11_bn features[0..6]
ACTS = ("relu", "relu6", "prelu")


def _act(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "prelu":
        return nn.PReLU()  # one shared slope, as in the source
    raise ModelError(f"unknown activation {name!r}: use one of {', '.join(ACTS)}")


def conv_bn_act(cin: int, cout: int, k: int, padding: int, act: str, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size=k, padding=padding, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        _act(act, cout),
    )


def vgg11_stem(in_channels: int = 3) -> nn.Sequential:
    """conv3x3 64, BN, ReLU, maxpool2, conv3x3 128, BN, ReLU: indices 0..6 of torchvision vgg11_bn ``features``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(64, 128, kernel_size=3, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(inplace=True),
    )


def pretrained_vgg11_stem(in_channels: int, what: str) -> nn.Sequential:
    """The stem with ImageNet VGG11-BN weights (first conv summed over RGB for one channel)."""
    sd, path = load_torchvision_state_dict(VGG11_BN_WEIGHTS, f"{what}'s VGG11-BN stem")
    stem_sd = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) >= 3 and parts[0] == "features" and parts[1].isdigit() and int(parts[1]) in STEM_INDICES:
            stem_sd[".".join(parts[1:])] = v
    stem = vgg11_stem(3)
    load_state_dict_checked(stem, stem_sd, path, "torchvision vgg11_bn features[0..6]")
    if in_channels == 1:
        stem[0] = grey_conv(cast(nn.Conv2d, stem[0]), from_weights=True)
    return stem


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + BN + act, 3x3 depthwise (stride) + BN + act, 1x1 linear projection + BN.

    The input is added to the output only when the shapes match (stride 1 and ``cin == cout``).
    """

    def __init__(self, cin: int, hidden: int, cout: int, stride: int = 1, act: str = "relu6"):
        super().__init__()
        self.use_residual = stride == 1 and cin == cout
        self.layers = nn.Sequential(
            nn.Conv2d(cin, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            _act(act, hidden),
            nn.Conv2d(hidden, hidden, kernel_size=3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            _act(act, hidden),
            nn.Conv2d(hidden, cout, kernel_size=1, bias=False),
            nn.BatchNorm2d(cout),  # linear bottleneck: no activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.use_residual else y


def _body_conv3x2(act: str) -> tuple[nn.Module, int]:
    return nn.Sequential(conv_bn_act(128, 256, 3, 1, act), nn.MaxPool2d(2, 2), conv_bn_act(256, 512, 3, 1, act)), 512


def _body_irb(act: str) -> tuple[nn.Module, int]:
    return (
        nn.Sequential(
            InvertedResidual(128, 1024, 128, act=act),
            InvertedResidual(128, 1024, 128, act=act),
            nn.MaxPool2d(2, 2),
            InvertedResidual(128, 1280, 256, act=act),
            InvertedResidual(256, 1280, 512, act=act),
        ),
        512,
    )


def _body_conv3x4(act: str) -> tuple[nn.Module, int]:
    return (
        nn.Sequential(
            conv_bn_act(128, 128, 3, 1, act),
            conv_bn_act(128, 128, 3, 1, act),
            nn.MaxPool2d(2, 2),
            conv_bn_act(128, 256, 3, 1, act),
            conv_bn_act(256, 512, 3, 1, act),
        ),
        512,
    )


def _body_conv5x4(act: str) -> tuple[nn.Module, int]:
    return (
        nn.Sequential(
            conv_bn_act(128, 128, 5, 0, act),
            conv_bn_act(128, 128, 5, 0, act),
            nn.MaxPool2d(2, 2),
            conv_bn_act(128, 256, 5, 1, act),
            conv_bn_act(256, 512, 5, 2, act),
        ),
        512,
    )


class VGG11Heads(FerNet):
    first_conv = "stem.0"

    def __init__(
        self,
        stem: nn.Module,
        body: nn.Module | None,
        channels: int,
        num_classes: int,
        in_channels: int,
        task: str,
        dropout: float,
    ):
        super().__init__()
        self.stem = stem
        if body is not None:
            self.body = body
        d = channels * 6 * 6
        self.head = make_head(
            task, d, nn.Sequential(nn.Linear(d, 512), nn.PReLU(), nn.Dropout(dropout), nn.Linear(512, num_classes))
        )
        self._finish(task=task, num_classes=num_classes, in_channels=in_channels, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if "body" in self._modules:
            x = self.body(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, (6, 6)), 1)


_VARIANTS = {
    "vgg11_avgpool": ("vgg2_0_2", None, "relu", "adaptive average pool to 6x6"),
    "vgg11_conv3x2": ("vgg2_2_2", _body_conv3x2, "relu", "conv3x3 256, max pool, conv3x3 512, avg pool"),
    "vgg11_irb": (
        "vgg2_4_ilrb_2",
        _body_irb,
        "relu6",
        "4 MobileNetV2 inverted residual blocks (128-1024-128 x2 with skip, max pool, 128-1280-256, 256-1280-512), "
        "avg pool",
    ),
    "vgg11_conv3x4": ("vgg2_4_2_conv3", _body_conv3x4, "relu", "conv3x3 128 x2, max pool, conv3x3 256, 512, avg pool"),
    "vgg11_conv5x4": (
        "vgg2_4_2_conv5",
        _body_conv5x4,
        "relu",
        "conv5x5 128 x2 (no padding), max pool, conv5x5 256, 512",
    ),
}


def _make_card(name: str) -> ModelCard:
    alias, _, _, desc = _VARIANTS[name]
    return ModelCard(
        name=name,
        input_size=(48, 48),
        in_channels=1,
        source=f"source 004 ({alias})",
        description=f"VGG11-BN stem (2 conv blocks) + {desc} + Linear(->512), PReLU, Dropout, Linear(->k)",
        aliases=(alias,),
        pretrained=f"torchvision:{weights_label(VGG11_BN_WEIGHTS)}",  # copied into the stem only
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        heads=("prelu_mlp",),
        extra={
            "cam_stage": "body" if _VARIANTS[name][1] else "stem",
            "weights_file": torchvision_weights_file(VGG11_BN_WEIGHTS).name,
        },
    )


def _register(name: str) -> None:
    card = _make_card(name)
    body_fn, default_act = _VARIANTS[name][1], _VARIANTS[name][2]

    def builder(
        num_classes: int,
        in_channels: int,
        task: str,
        pretrained: bool = False,
        dropout: float = 0.5,
        act: str = default_act,
        head: str = "prelu_mlp",
    ) -> nn.Module:
        check_head(card, head)
        dropout = check_dropout(dropout)
        if act not in ACTS:
            raise ModelError(f"model {name}: unknown act {act!r}: use one of {', '.join(ACTS)}")
        if not isinstance(pretrained, (bool, int)) or pretrained not in (0, 1):
            raise ModelError(f"pretrained must be true or false, got {pretrained!r}")
        stem = pretrained_vgg11_stem(in_channels, name) if pretrained else vgg11_stem(in_channels)
        body, channels = body_fn(act) if body_fn else (None, 128)
        return VGG11Heads(stem, body, channels, num_classes, in_channels, task, dropout)

    builder.__name__ = name
    builder.__doc__ = f"{card.description} ({card.source})."
    register_model(card)(builder)


for _name in _VARIANTS:
    _register(_name)
