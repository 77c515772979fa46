"""Batched preprocessing (to_input, InputSpec, PixelPermutation) and the augmentation presets."""

from __future__ import annotations

import json

import pytest
import torch

from ferkit.data.transforms import (
    PRESETS,
    BatchAugment,
    BatchAutoAugment,
    InputSpec,
    PixelPermutation,
    make_augment,
    to_input,
)
from ferkit.errors import ConfigError, DataError


def _asym(b=4, c=1, h=16, w=20, seed=0) -> torch.Tensor:
    """Float images in [0, 1] with no left-right symmetry: a ramp plus a bright block at the left."""
    g = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 1, w).expand(b, c, h, w).clone() * 0.5
    x[:, :, 3:8, 1:5] = 1.0
    return (x + 0.1 * torch.rand(b, c, h, w, generator=g)).clamp(0, 1)


def _u8(b=6, h=48, w=48, c=1, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, h, w, c), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------------------
# InputSpec


def test_input_spec_roundtrip_and_validation():
    spec = InputSpec(size=(40, 44), channels=3, mean=[0.1, 0.2, 0.3], std=[0.4, 0.5, 0.6], permute_seed=7)
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d == {"size": [40, 44], "channels": 3, "mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "permute_seed": 7}
    assert InputSpec.from_dict(d) == spec
    assert InputSpec(channels=3, mean=0.5, std=[0.25]).mean == [0.5, 0.5, 0.5]  # one value broadcasts
    assert InputSpec(size=32).size == (32, 32)
    for bad in (dict(channels=2), dict(mean=[0.1, 0.2]), dict(std=[0.0]), dict(size=(0, 4)), dict(size="big")):
        with pytest.raises(ConfigError):
            InputSpec(**bad)
    with pytest.raises(ConfigError):
        InputSpec.from_dict({"size": [48, 48], "colour": 1})


def test_input_spec_from_dataset_normalises_to_zero_mean_unit_std():
    from ferkit.data import synth

    ds = synth.generate(140, seed=0, val_fraction=0, test_fraction=0)
    from ferkit.data.transforms import spec_from_dataset

    spec = spec_from_dataset(ds, channels=3)
    assert spec.channels == 3 and spec.size == (48, 48) and len(spec.mean) == 3
    x = to_input(ds.split("train").images, spec)
    assert x.mean().item() == pytest.approx(0, abs=1e-3) and x.std().item() == pytest.approx(1, abs=1e-2)


# ------------------------------------------------------------------------------------------
# to_input


def test_to_input_exact_values():
    b = torch.tensor([0, 51, 102, 255], dtype=torch.uint8).view(1, 2, 2, 1)
    spec = InputSpec(size=(2, 2), channels=1, mean=[0.2], std=[0.5])
    x = to_input(b, spec)
    assert x.dtype == torch.float32 and x.shape == (1, 1, 2, 2) and x.is_contiguous()
    want = (torch.tensor([[0, 51], [102, 255]], dtype=torch.float32) / 255 - 0.2) / 0.5
    assert torch.allclose(x[0, 0], want, atol=1e-6)
    assert torch.equal(to_input(b.numpy(), spec), x)  # numpy in, same result
    # the slow path (augment present) agrees with the fast path
    assert torch.allclose(to_input(b, spec, make_augment("none")), x, atol=1e-6)


def test_to_input_channel_order_and_per_channel_norm():
    b = torch.zeros(2, 3, 4, 3, dtype=torch.uint8)
    b[..., 0], b[..., 1], b[..., 2] = 255, 0, 51
    spec = InputSpec(size=(3, 4), channels=3, mean=[0.5, 0.0, 0.2], std=[0.5, 1.0, 0.1])
    x = to_input(b, spec)
    assert x.shape == (2, 3, 3, 4)
    assert torch.allclose(x[:, 0], torch.tensor(1.0)) and torch.allclose(x[:, 1], torch.tensor(0.0))
    assert torch.allclose(x[:, 2], torch.tensor(0.0), atol=1e-6)
    assert to_input(b, spec, channels_last=True).is_contiguous(memory_format=torch.channels_last)


def test_grey_to_three_channels_by_repeat():
    b = _u8(c=1)
    spec = InputSpec(channels=3, mean=[0.1, 0.5, 0.9], std=[1.0, 1.0, 1.0])
    x = to_input(b, spec)
    assert x.shape == (6, 3, 48, 48)
    raw = b.permute(0, 3, 1, 2).float() / 255
    for c, m in enumerate(spec.mean):
        assert torch.allclose(x[:, c : c + 1], raw - m, atol=1e-6)


def test_colour_to_grey_by_luminance():
    b = torch.zeros(3, 2, 2, 3, dtype=torch.uint8)
    for i in range(3):
        b[i, ..., i] = 255
    x = to_input(b, InputSpec(size=(2, 2), channels=1, mean=[0.0], std=[1.0]))
    assert x.shape == (3, 1, 2, 2)
    assert torch.allclose(x[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]), atol=1e-6)


def test_resize_up_and_down():
    flat = torch.full((2, 24, 24, 1), 77, dtype=torch.uint8)
    spec = InputSpec(size=(48, 48), mean=[0.0], std=[1.0])
    up = to_input(flat, spec)
    assert up.shape == (2, 1, 48, 48) and torch.allclose(up, torch.tensor(77 / 255))
    # a 1-pixel checkerboard shrunk 2x: antialiasing averages it to grey instead of aliasing
    checker = ((torch.arange(96)[:, None] + torch.arange(96)[None]) % 2 * 255).to(torch.uint8)
    down = to_input(checker.expand(1, 96, 96).unsqueeze(-1), spec)
    assert down.shape == (1, 1, 48, 48)
    assert torch.allclose(down, torch.tensor(0.5), atol=0.02)
    rect = to_input(torch.zeros(1, 30, 60, 3, dtype=torch.uint8), InputSpec(size=(64, 32), channels=3))
    assert rect.shape == (1, 3, 64, 32)


def test_to_input_rejects_bad_batches():
    spec = InputSpec()
    with pytest.raises(DataError):
        to_input(torch.zeros(2, 48, 48, 1), spec)  # float, not uint8
    with pytest.raises(DataError):
        to_input(torch.zeros(48, 48, 1, dtype=torch.uint8), spec)  # no batch dim
    with pytest.raises(DataError):
        to_input(torch.zeros(2, 48, 48, 4, dtype=torch.uint8), spec)  # RGBA


# ------------------------------------------------------------------------------------------
# pixel permutation


def test_permutation_is_a_fixed_bijection():
    p = PixelPermutation(3, 6, 5)
    assert torch.equal(torch.sort(p.perm).values, torch.arange(30))
    assert not torch.equal(p.perm, torch.arange(30))
    assert torch.equal(PixelPermutation(3, 6, 5).perm, p.perm)
    assert not torch.equal(PixelPermutation(4, 6, 5).perm, p.perm)
    x = torch.rand(2, 3, 6, 5)
    y = p(x)
    assert y.shape == x.shape and torch.equal(p.inverse(y), x)
    # same permutation for every channel and sample, and it only moves pixels
    assert torch.equal(y.flatten(2), x.flatten(2)[:, :, p.perm])
    assert torch.equal(torch.sort(y.flatten()).values, torch.sort(x.flatten()).values)
    with pytest.raises(ConfigError):
        p(torch.rand(1, 1, 5, 6))


def test_to_input_applies_the_permutation_after_everything_else():
    b = _u8(b=3)
    base = InputSpec(mean=[0.3], std=[0.2])
    perm = InputSpec(mean=[0.3], std=[0.2], permute_seed=11)
    x, y = to_input(b, base), to_input(b, perm)
    assert torch.allclose(PixelPermutation(11, 48, 48)(x), y)
    assert torch.equal(to_input(b, perm), y)  # fixed across calls (train and eval alike)
    # with augmentation: the permutation is applied to the augmented image
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    aug = make_augment("basic")
    assert torch.allclose(PixelPermutation(11, 48, 48)(to_input(b, base, aug, g1)), to_input(b, perm, aug, g2))


# ------------------------------------------------------------------------------------------
# augmentation presets


def test_presets_and_unknown():
    assert PRESETS == ("none", "basic", "autoaugment", "v2")
    with pytest.raises(ConfigError, match="none, basic, autoaugment, v2"):
        make_augment("randaugment")
    with pytest.raises(ConfigError):
        make_augment("basic", wobble=3)
    with pytest.raises(ConfigError):
        make_augment("autoaugment", degrees=3)
    assert make_augment("basic", degrees=5).degrees == 5


def test_none_is_identity():
    x = _asym()
    assert torch.equal(make_augment("none")(x, None), x)
    assert torch.equal(make_augment(None)(x), x)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("channels", [1, 3])
def test_preset_shape_range_randomness_reproducibility(preset, channels):
    aug = make_augment(preset)
    one = _asym(b=1, c=channels, h=48, w=48)
    x = one.expand(16, -1, -1, -1).contiguous()  # 16 copies of one image
    y1 = aug(x, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and y1.dtype == torch.float32
    assert y1.min() >= 0 and y1.max() <= 1
    y2 = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(y1, y2)  # reproducible with a seeded generator
    if preset == "none":
        assert torch.equal(y1, x)
        return
    y3 = aug(x, torch.Generator().manual_seed(1))
    assert not torch.equal(y1, y3)
    # per-sample parameters: identical inputs come out different
    distinct = {tuple(v.flatten()[::97].tolist()) for v in y1}
    assert len(distinct) >= 8, (preset, len(distinct))
    # the global RNG is used without a generator
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x))


def test_flip_mirrors_exactly():
    x = _asym(b=8, c=3)
    flip = BatchAugment(flip_p=1.0)
    assert torch.allclose(flip(x, torch.Generator().manual_seed(0)), x.flip(-1), atol=1e-5)
    half = BatchAugment(flip_p=0.5)(x, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(h, xi.flip(-1), atol=1e-5) for h, xi in zip(half, x, strict=True)]
    kept = [torch.allclose(h, xi, atol=1e-5) for h, xi in zip(half, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_rotation_keeps_a_centred_disc_and_moves_a_corner():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    disc = (((yy - 23.5) ** 2 + (xx - 23.5) ** 2) < 15**2).float().expand(8, 1, 48, 48)
    rot = BatchAugment(degrees=30)
    y = rot(disc, torch.Generator().manual_seed(0))
    assert (y - disc).abs().mean() < 0.02  # a disc about the centre is rotation invariant
    square = torch.zeros(8, 1, 48, 48)
    square[:, :, 4:20, 4:20] = 1
    moved = rot(square, torch.Generator().manual_seed(0))
    assert ((moved - square).abs().flatten(1).mean(1) > 0.005).sum() >= 6  # most angles move it


def test_geometry_on_rectangular_images_keeps_shape():
    x = _asym(b=4, c=3, h=30, w=50)
    for preset in PRESETS:
        assert make_augment(preset)(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_random_erasing_makes_one_rectangle():
    x = torch.ones(32, 1, 40, 40)
    er = BatchAugment(erasing_p=1.0, erasing_value=0.0)
    y = er(x, torch.Generator().manual_seed(0))
    for img in y[:, 0]:
        zero = img == 0
        rows, cols = zero.any(1), zero.any(0)
        area = zero.sum().item()
        assert area == rows.sum().item() * cols.sum().item()  # a full rectangle
        assert 0.015 * 1600 <= area <= 0.34 * 1600
    none = BatchAugment(erasing_p=0.0)(x, torch.Generator().manual_seed(0))
    assert torch.equal(none, x)
    means = BatchAugment(erasing_p=1.0)(_asym(b=4), torch.Generator().manual_seed(0))  # mean fill by default
    assert means.min() >= 0 and means.max() <= 1


def test_perspective_and_crop_change_the_image_inside_bounds():
    x = torch.ones(16, 1, 48, 48)
    pers = BatchAugment(perspective=0.3, perspective_p=1.0)(x, torch.Generator().manual_seed(0))
    assert (pers[:, 0, 24, 24] > 0.99).all()  # centre stays
    corners = torch.stack([pers[:, 0, 0, 0], pers[:, 0, 0, -1], pers[:, 0, -1, 0], pers[:, 0, -1, -1]], 1)
    assert (corners < 0.5).any(1).float().mean() > 0.7  # corners pulled in, fill shows
    crop = BatchAugment(crop_scale=(0.5, 0.6))(_asym(b=4, h=48, w=48), torch.Generator().manual_seed(0))
    assert crop.min() >= 0 and crop.max() <= 1  # a crop zooms in: no fill needed
    assert (crop > 0).all()


def test_colour_jitter_only_changes_intensity():
    x = _asym(b=16, c=3)
    j = BatchAugment(brightness=0.4, contrast=0.4, saturation=0.4)(x, torch.Generator().manual_seed(0))
    assert j.shape == x.shape and not torch.equal(j, x)
    # grey images stay grey (saturation has nothing to act on)
    g = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    jg = BatchAugment(saturation=0.9)(g, torch.Generator().manual_seed(0))
    assert torch.allclose(jg[:, 0], jg[:, 1], atol=1e-6) and torch.allclose(jg, g, atol=1e-5)


def test_autoaugment_matches_torchvision_per_sample():
    """Same draws -> same pixels as torchvision's AutoAugment applying each operation to each image."""
    tv = pytest.importorskip("torchvision.transforms.v2")
    ref = tv.AutoAugment(tv.AutoAugmentPolicy.IMAGENET)
    if not hasattr(ref, "_apply_image_or_video_transform") or not hasattr(ref, "_AUGMENTATION_SPACE"):
        pytest.skip("torchvision internals changed")
    aa = BatchAutoAugment()
    assert [tuple(p) for p in ref._policies] == [tuple(p) for p in aa.policies]
    for channels in (1, 3):
        x = (_asym(b=64, c=channels, h=48, w=48, seed=channels) * 255).round().to(torch.uint8)
        policy, fire, negate = aa.decide(64, torch.Generator().manual_seed(channels))
        got = aa.apply(x, policy, fire, negate)
        for i in range(64):
            img = x[i]
            for slot in (0, 1):
                op, _, idx = aa.policies[int(policy[i])][slot]
                if not fire[i, slot]:
                    continue
                fn, signed = ref._AUGMENTATION_SPACE[op]
                mags = fn(10, 48, 48)
                mag = 0.0 if mags is None else float(mags[idx])
                if signed and negate[i, slot]:
                    mag = -mag
                img = ref._apply_image_or_video_transform(img, op, mag, interpolation=ref.interpolation, fill=ref._fill)
            assert torch.equal(got[i], img), (i, aa.policies[int(policy[i])], fire[i].tolist())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", PRESETS)
def test_same_result_on_cuda(preset):
    b = _u8(b=8, c=3)
    spec = InputSpec(channels=3)
    aug = make_augment(preset)
    cpu = to_input(b, spec, aug, torch.Generator().manual_seed(0))
    gpu = to_input(b.cuda(), spec, aug, torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    # float maths differ slightly between devices; autoaugment rounds to uint8 between operations, so a
    # value one level off can land on the other side of a solarize threshold: allow a few such pixels
    off = (cpu - gpu.cpu()).abs() > 2 / 255 / min(spec.std) + 1e-4
    assert off.float().mean() < 1e-3
