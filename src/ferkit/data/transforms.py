"""Batched preprocessing and augmentation on the training device.

The trainer keeps a whole dataset as one uint8 tensor ``(N, H, W, C)`` and builds a batch by
indexing it; :func:`to_input` turns such a batch into the float ``(B, C, H, W)`` tensor a model eats,
on whatever device the batch lives on. Every step works on the whole batch at once (no per-image
Python loop, no PIL), which is what makes training at 48x48 fast:

    uint8 NHWC -> float [0, 1] NCHW -> channel adapt -> resize -> augment -> pixel permutation -> normalise

:class:`~ferkit.data.spec.InputSpec` records the input a model was trained on (size,
channels, normalisation, permutation seed); it is saved in every checkpoint and inference rebuilds the
same input from it.

Augmentations are callables ``augment(x, generator=None) -> x`` on float images in [0, 1] of shape
``(B, C, H, W)``. Each sample draws its own random parameters; all the parameters of a batch are
drawn at once from ``generator`` (a ``torch.Generator``; the global RNG when ``None``) on the
generator's device, so a seeded generator gives the same augmentation on CPU and on CUDA.

Presets (:data:`PRESETS`, :func:`make_augment`):

``none``
    identity.
``basic`` (sources 000 / 001)
    horizontal flip (p 0.5), rotation (uniform +-15 degrees), colour jitter (brightness, contrast,
    saturation 0.2; saturation only acts on colour images). Flip and rotation are one batched warp.
``autoaugment`` (source 001)
    torchvision's AutoAugment, ImageNet policy, on uint8 values: each sample draws its own
    sub-policy, coin flips and signs; samples that drew the same operation with the same magnitude
    are then transformed together with the torchvision v2 functional that AutoAugment itself calls
    (same operations, magnitudes, nearest interpolation and zero fill), so the result per sample is
    what ``torchvision.transforms.v2.AutoAugment`` would produce for the same draws, in about 30
    batched calls instead of two per image.
``v2`` (source 003)
    random resized crop (scale 0.8-1, ratio 3/4-4/3), flip, rotation +-15 degrees and perspective
    (distortion 0.2, p 0.5) as one batched homography warp; colour jitter 0.2; random erasing
    (p 0.25, scale 0.02-0.33, ratio 0.3-3.3) filled with the image's mean colour (torchvision fills
    with 0 after normalisation, i.e. with the dataset mean; augmentation here runs before
    normalisation, so the image mean stands in for it).

Differences from torchvision's per-image transforms, all deliberate: colour jitter applies
brightness, contrast, saturation in this fixed order (torchvision shuffles the order per call) and has
no hue; random resized crop and random erasing draw their box once and clip it to the image instead of
retrying up to ten times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.data.spec import InputSpec
from ferkit.errors import ConfigError, DataError

PRESETS = ("none", "basic", "autoaugment", "v2")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as torchvision's rgb_to_grayscale

Augment = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------------------------
# pixel permutation


class PixelPermutation:
    """A fixed permutation of the ``h * w`` pixel positions, the same for every channel and sample.

    Source 002's experiment: a CNN trained and tested on images whose pixels were shuffled the
    same way everywhere. Deterministic by ``seed``; ``inverse`` undoes it.
    """

    def __init__(self, seed: int, h: int, w: int):
        self.seed, self.h, self.w = int(seed), int(h), int(w)
        g = torch.Generator().manual_seed(self.seed)
        self.perm = torch.randperm(self.h * self.w, generator=g)
        self.inv = torch.argsort(self.perm)
        self._on: dict[tuple[str, bool], torch.Tensor] = {}

    def _index(self, device: torch.device, inverse: bool) -> torch.Tensor:
        key = (str(device), inverse)
        if key not in self._on:
            self._on[key] = (self.inv if inverse else self.perm).to(device)
        return self._on[key]

    def _apply(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        if x.shape[-2:] != (self.h, self.w):
            raise ConfigError(
                f"pixel permutation made for {self.h}x{self.w} images got {tuple(x.shape[-2:])}: "
                "permute after resizing to the input size"
            )
        flat = x.reshape(*x.shape[:-2], self.h * self.w)
        return flat.index_select(-1, self._index(x.device, inverse)).view(x.shape)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``out[..., k] = x[..., perm[k]]`` over the flattened pixel positions."""
        return self._apply(x, False)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, True)


@lru_cache(maxsize=16)
def _permutation(seed: int, h: int, w: int) -> PixelPermutation:
    return PixelPermutation(seed, h, w)


# --------------------------------------------------------------------------------------------
# to_input


@lru_cache(maxsize=64)
def _norm_consts(mean: tuple, std: tuple, device: str, scale: float):
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return m * scale, 1.0 / (s * scale)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luminance."""
    r, g, b = x.unbind(1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def to_input(
    batch_u8,
    spec: InputSpec,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` (tensor or numpy, any device) -> normalised float32 ``(B, C', H', W')``.

    Steps: scale to [0, 1], NHWC -> NCHW, grey -> 3 channels by repetition or colour -> grey by
    luminance, bilinear resize to ``spec.size`` (antialiased when shrinking), ``augment(x, generator)``
    on [0, 1] images, the fixed pixel permutation of ``spec.permute_seed``, then ``(x - mean) / std``.
    The output is contiguous NCHW, or channels-last memory when ``channels_last``.
    """
    if isinstance(batch_u8, np.ndarray):
        batch_u8 = torch.from_numpy(np.ascontiguousarray(batch_u8))
    if not isinstance(batch_u8, torch.Tensor) or batch_u8.dtype != torch.uint8 or batch_u8.dim() != 4:
        what = f"{getattr(batch_u8, 'dtype', type(batch_u8).__name__)} {tuple(getattr(batch_u8, 'shape', ()))}"
        raise DataError(f"to_input needs a uint8 batch shaped (B, H, W, C); got {what}")
    c_in = batch_u8.shape[3]
    if c_in not in (1, 3):
        raise DataError(f"to_input: images have {c_in} channels; only 1 (grey) and 3 (RGB) are supported")
    device = batch_u8.device
    x = batch_u8.permute(0, 3, 1, 2)  # a channels-last view: no copy
    h, w = x.shape[2], x.shape[3]
    resize = (h, w) != tuple(spec.size)
    fast = augment is None and not resize and spec.permute_seed is None
    if c_in == 3 and spec.channels == 1:
        x = _grey(x.float())
        scale = 255.0
    elif fast:
        x = x.float()  # keeps channels-last strides; scaling is folded into normalisation below
        scale = 255.0
    else:
        # one pass: uint8 channels-last -> float contiguous (the layout the warp kernels prefer)
        x = x.to(torch.float32, memory_format=torch.contiguous_format).mul_(1.0 / 255.0)
        scale = 1.0
    if resize:
        x = x / scale if scale != 1.0 else x
        scale = 1.0
        shrink = spec.size[0] < h or spec.size[1] < w
        x = F.interpolate(x, size=spec.size, mode="bilinear", align_corners=False, antialias=shrink)
    if augment is not None:
        if scale != 1.0:
            x = x / scale
            scale = 1.0
        x = augment(x, generator)
    if spec.permute_seed is not None:
        x = _permutation(spec.permute_seed, spec.size[0], spec.size[1])(x)
    if x.shape[1] == 1 and spec.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    mean, inv_std = _norm_consts(tuple(spec.mean), tuple(spec.std), str(device), scale)
    out = torch.empty(x.shape, dtype=torch.float32, device=device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)  # fmt: skip
    torch.sub(x, mean, out=out)
    return out.mul_(inv_std)


# --------------------------------------------------------------------------------------------
# random parameters


def _rand(generator: torch.Generator | None, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device (CPU for the global RNG), float64."""
    dev = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(*shape, generator=generator, device=dev, dtype=torch.float64)


def _identity(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return x


# --------------------------------------------------------------------------------------------
# batched geometric + photometric augmentation


@dataclass
class BatchAugment:
    """Flip, affine (rotation, scale, translation), random resized crop and perspective as one warp
    per batch, then colour jitter, then random erasing; every sample draws its own parameters.

    Angles in degrees; ``translate`` is a fraction of the image size (like torchvision's
    ``RandomAffine``); ``crop_scale`` / ``crop_ratio`` as ``RandomResizedCrop`` (output size = input
    size); ``perspective`` as ``RandomPerspective(distortion_scale, p=perspective_p)``; jitter
    strengths as ``ColorJitter``; erasing as ``RandomErasing`` with ``erasing_value`` a number in
    [0, 1] or ``"mean"`` (each image's mean colour). Out-of-image areas are filled per
    ``padding_mode`` (``grid_sample``'s: zeros, border, reflection).
    """

    flip_p: float = 0.0
    degrees: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    perspective: float = 0.0
    perspective_p: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    erasing_p: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    erasing_value: float | str = "mean"
    padding_mode: str = "zeros"

    _NPARAMS = 26

    def __post_init__(self):
        if self.padding_mode not in ("zeros", "border", "reflection"):
            raise ConfigError(f"padding_mode {self.padding_mode!r}: use zeros, border or reflection")
        for name in ("flip_p", "perspective_p", "erasing_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)}: a probability must be in [0, 1]")
        for name in ("degrees", "translate", "perspective", "brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be >= 0")
        if not (self.erasing_value == "mean" or isinstance(self.erasing_value, (int, float))):
            raise ConfigError(f"erasing_value={self.erasing_value!r}: use a number in [0, 1] or 'mean'")

    @property
    def geometric(self) -> bool:
        return bool(self.flip_p or self.degrees or self.translate or self.scale or self.crop_scale or self.perspective)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.dim() != 4:
            raise DataError(f"augment needs a float batch (B, C, H, W); got shape {tuple(x.shape)}")
        B, C, H, W = x.shape
        # Every parameter of every sample comes from one draw, so the random stream does not depend
        # on which operations are switched on or fire.
        u = _rand(generator, B, self._NPARAMS).to(x.device)
        if self.geometric:
            x = self._warp(x, u)
        x = self._jitter(x, u)
        if self.erasing_p > 0:
            x = self._erase(x, u)
        return x

    def matrices(self, u: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """Per-sample 3x3 maps from output to input coordinates (normalised, align_corners=False)."""
        B = u.shape[0]
        dt = torch.float64
        eye = torch.eye(3, dtype=dt, device=u.device).expand(B, 3, 3)
        M = eye.clone()
        if self.crop_scale is not None:
            lo, hi = self.crop_scale
            area = lo + (hi - lo) * u[:, 2]
            lr0, lr1 = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
            ratio = torch.exp(lr0 + (lr1 - lr0) * u[:, 3])
            wf = torch.sqrt(area * ratio * H / W).clamp(max=1.0)
            hf = torch.sqrt(area / ratio * W / H).clamp(max=1.0)
            Cm = eye.clone()
            Cm[:, 0, 0], Cm[:, 1, 1] = wf, hf
            Cm[:, 0, 2] = (2 * u[:, 4] - 1) * (1 - wf)
            Cm[:, 1, 2] = (2 * u[:, 5] - 1) * (1 - hf)
            M = M @ Cm
        if self.flip_p > 0:
            Fm = eye.clone()
            Fm[:, 0, 0] = torch.where(u[:, 0] < self.flip_p, -1.0, 1.0).to(dt)
            M = M @ Fm
        if self.degrees or self.translate or self.scale:
            th = torch.deg2rad((2 * u[:, 1] - 1) * self.degrees)
            s = torch.ones_like(th) if not self.scale else self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 25]
            c, sn = torch.cos(th) / s, torch.sin(th) / s
            A = eye.clone()
            # a rotation in pixel units, written in normalised coordinates (x scaled by W/2, y by H/2)
            A[:, 0, 0], A[:, 0, 1] = c, -sn * H / W
            A[:, 1, 0], A[:, 1, 1] = sn * W / H, c
            A[:, 0, 2] = (2 * u[:, 23] - 1) * self.translate * 2
            A[:, 1, 2] = (2 * u[:, 24] - 1) * self.translate * 2
            M = M @ A
        if self.perspective > 0:
            fire = (u[:, 6] < self.perspective_p).to(dt)[:, None]
            d = u[:, 7:15] * self.perspective * fire  # corner displacements, inward, normalised units
            sx = torch.tensor([-1.0, 1.0, 1.0, -1.0], dtype=dt, device=u.device)
            sy = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=dt, device=u.device)
            src = torch.stack([sx - sx * d[:, 0:4], sy - sy * d[:, 4:8]], -1)  # displaced corners (output)
            dst = torch.stack([sx, sy], -1).expand(B, 4, 2)  # image corners (input)
            M = M @ _homography(src, dst)
        return M

    def _warp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        M = self.matrices(u, H, W).to(device=x.device, dtype=x.dtype)
        grid = _sampling_grid(M, H, W, projective=self.perspective > 0)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)

    def _jitter(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """ColorJitter's brightness, contrast, saturation (in that order), in place on a fresh tensor."""
        B, C = x.shape[:2]
        if not (self.brightness or self.contrast or (self.saturation and C == 3)):
            return x
        col = lambda k: u[:, k].to(x.dtype).view(B, 1, 1, 1)  # noqa: E731
        factor = lambda s, k: max(0.0, 1 - s) + (1 + s - max(0.0, 1 - s)) * col(k)  # noqa: E731
        luma = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = x.clone() if not self.geometric else x  # the warp already made a new tensor
        if self.brightness > 0:
            x.mul_(factor(self.brightness, 15)).clamp_(0, 1)
        if self.contrast > 0:
            f = factor(self.contrast, 16)
            # the mean of the grey image is the luma-weighted mean of the channel means
            m = x.mean(dim=(2, 3), keepdim=True)
            m = (m * luma).sum(1, keepdim=True) if C == 3 else m
            x.mul_(f).add_(m * (1 - f)).clamp_(0, 1)
        if self.saturation > 0 and C == 3:
            f = factor(self.saturation, 17)
            grey = (x * luma).sum(1, keepdim=True)
            x.mul_(f).add_(grey.mul_(1 - f)).clamp_(0, 1)
        return x

    def _erase(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        fire = u[:, 18] < self.erasing_p
        lo, hi = self.erasing_scale
        area = (lo + (hi - lo) * u[:, 19]) * H * W
        lr0, lr1 = math.log(self.erasing_ratio[0]), math.log(self.erasing_ratio[1])
        r = torch.exp(lr0 + (lr1 - lr0) * u[:, 20])
        eh = torch.sqrt(area * r).round().clamp(1, H)
        ew = torch.sqrt(area / r).round().clamp(1, W)
        top = torch.floor(u[:, 21] * (H - eh + 1))
        left = torch.floor(u[:, 22] * (W - ew + 1))
        rows = torch.arange(H, device=x.device, dtype=torch.float64)
        cols = torch.arange(W, device=x.device, dtype=torch.float64)
        in_r = (rows[None] >= top[:, None]) & (rows[None] < (top + eh)[:, None])
        in_c = (cols[None] >= left[:, None]) & (cols[None] < (left + ew)[:, None])
        mask = (in_r[:, :, None] & in_c[:, None, :] & fire[:, None, None]).unsqueeze(1)
        if self.erasing_value == "mean":
            value = x.mean(dim=(2, 3), keepdim=True)
        else:
            value = torch.tensor(float(self.erasing_value), dtype=x.dtype, device=x.device)
        return torch.where(mask, value, x)


def _sampling_grid(M: torch.Tensor, H: int, W: int, projective: bool) -> torch.Tensor:
    """``grid_sample`` grid (B, H, W, 2) from per-sample 3x3 output->input maps.

    Built with broadcast multiply-adds: on CPU this is ~10x faster than ``affine_grid`` or a batched
    matmul with an inner size of 3. Pixel centres as ``align_corners=False``.
    """
    B = M.shape[0]
    xs = ((torch.arange(W, device=M.device, dtype=M.dtype) * 2 + 1) / W - 1).view(1, 1, W)
    ys = ((torch.arange(H, device=M.device, dtype=M.dtype) * 2 + 1) / H - 1).view(1, H, 1)
    m = M.reshape(B, 9, 1, 1)
    grid = torch.empty(B, H, W, 2, device=M.device, dtype=M.dtype)
    torch.add(m[:, 0] * xs, m[:, 1] * ys + m[:, 2], out=grid[..., 0])
    torch.add(m[:, 3] * xs, m[:, 4] * ys + m[:, 5], out=grid[..., 1])
    if projective:
        grid /= (m[:, 6] * xs + (m[:, 7] * ys + m[:, 8])).unsqueeze(-1)
    return grid


def _homography(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Batched 3x3 homographies mapping 4 ``src`` points onto 4 ``dst`` points ((B, 4, 2) each)."""
    B = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    z, o = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, o, z, z, z, -u * x, -u * y], -1)
    rows_v = torch.stack([z, z, z, x, y, o, -v * x, -v * y], -1)
    A = torch.cat([rows_u, rows_v], 1)  # (B, 8, 8)
    b = torch.cat([u, v], 1)  # (B, 8)
    h = torch.linalg.solve(A, b)
    return torch.cat([h, torch.ones(B, 1, dtype=h.dtype, device=h.device)], 1).view(B, 3, 3)


# --------------------------------------------------------------------------------------------
# AutoAugment (ImageNet policy), batched by operation


# torchvision.transforms.v2.AutoAugment's ImageNet policy and magnitude bins (10 bins).
_AA_IMAGENET = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
    (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
    (("Color", 0.4, 0), ("Equalize", 0.6, None)),
    (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
    (("Invert", 0.6, None), ("Equalize", 1.0, None)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
)
_AA_SIGNED = {"ShearX": True, "Rotate": True, "Color": True, "Contrast": True, "Sharpness": True}


def _aa_magnitude(op: str, idx: int | None) -> float:
    if idx is None:
        return 0.0
    lin = lambda a, b: float(torch.linspace(a, b, 10)[idx])  # noqa: E731
    return {
        "ShearX": lambda: lin(0.0, 0.3),
        "Rotate": lambda: lin(0.0, 30.0),
        "Color": lambda: lin(0.0, 0.9),
        "Contrast": lambda: lin(0.0, 0.9),
        "Sharpness": lambda: lin(0.0, 0.9),
        "Posterize": lambda: float(int((8 - (torch.arange(10) / ((10 - 1) / 4))).round().int()[idx])),
        "Solarize": lambda: lin(1.0, 0.0),
    }[op]()


def _aa_apply(img: torch.Tensor, op: str, magnitude: float) -> torch.Tensor:
    """One AutoAugment operation on a uint8 batch with one magnitude, exactly as torchvision v2 does it."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    nearest = InterpolationMode.NEAREST
    if op == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(magnitude)), 0.0],
                         interpolation=nearest, fill=None, center=[0, 0])  # fmt: skip
    if op == "Rotate":
        return TF.rotate(img, angle=magnitude, interpolation=nearest, fill=None)
    if op == "Color":
        return TF.adjust_saturation(img, saturation_factor=1.0 + magnitude)
    if op == "Contrast":
        return TF.adjust_contrast(img, contrast_factor=1.0 + magnitude)
    if op == "Sharpness":
        return TF.adjust_sharpness(img, sharpness_factor=1.0 + magnitude)
    if op == "Posterize":
        return TF.posterize(img, bits=int(magnitude))
    if op == "Solarize":
        return TF.solarize(img, threshold=255.0 * magnitude)
    if op == "AutoContrast":
        return TF.autocontrast(img)
    if op == "Equalize":
        return TF.equalize(img)
    if op == "Invert":
        return TF.invert(img)
    raise ValueError(op)  # pragma: no cover


class BatchAutoAugment:
    """torchvision's AutoAugment (ImageNet policy), a policy draw per sample, applied by groups.

    ``decide`` draws, per sample, the sub-policy, whether each of its two operations fires and the
    sign of signed magnitudes (as ``AutoAugment.forward`` does per call); ``apply`` runs slot 1 then
    slot 2, each as one torchvision call per distinct (operation, magnitude) on the samples that
    drew it.
    """

    policies = _AA_IMAGENET

    def __init__(self):
        # (op, magnitude) per sub-policy and slot, and the same with the sign flipped
        self._ops = [[(op, _aa_magnitude(op, idx)) for op, _, idx in pol] for pol in self.policies]

    def decide(self, batch: int, generator: torch.Generator | None = None):
        u = _rand(generator, batch, 5)
        policy = (u[:, 0] * len(self.policies)).long().clamp_(max=len(self.policies) - 1)
        probs = torch.tensor([[p[0][1], p[1][1]] for p in self.policies], dtype=torch.float64, device=u.device)
        fire = u[:, 1:3] <= probs[policy]
        negate = u[:, 3:5] <= 0.5
        return policy.cpu(), fire.cpu(), negate.cpu()

    def apply(
        self, img_u8: torch.Tensor, policy: torch.Tensor, fire: torch.Tensor, negate: torch.Tensor
    ) -> torch.Tensor:
        img = img_u8.clone()
        pol, fi, ne = policy.tolist(), fire.tolist(), negate.tolist()
        for slot in (0, 1):
            groups: dict[tuple[str, float], list[int]] = {}
            for i, (p, f, n) in enumerate(zip(pol, fi, ne, strict=True)):
                if not f[slot]:
                    continue
                op, mag = self._ops[p][slot]
                if _AA_SIGNED.get(op, False) and n[slot]:
                    mag = -mag
                groups.setdefault((op, mag), []).append(i)
            for (op, mag), members in groups.items():
                sel = torch.tensor(members, device=img.device)
                img[sel] = _aa_apply(img.index_select(0, sel), op, mag)
        return img

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        policy, fire, negate = self.decide(x.shape[0], generator)
        u8 = x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return self.apply(u8, policy, fire, negate).to(x.dtype).mul_(1.0 / 255.0)


# --------------------------------------------------------------------------------------------
# presets


def _preset_kwargs(preset: str) -> dict:
    jitter = dict(brightness=0.2, contrast=0.2, saturation=0.2)
    if preset == "basic":
        return dict(flip_p=0.5, degrees=15.0, **jitter)
    if preset == "v2":
        return dict(crop_scale=(0.8, 1.0), flip_p=0.5, degrees=15.0, perspective=0.2, perspective_p=0.5,
                    erasing_p=0.25, **jitter)  # fmt: skip
    raise KeyError(preset)


def make_augment(preset: str | None, **overrides) -> Augment:
    """The augmentation callable for ``preset`` (one of :data:`PRESETS`; ``None`` means ``none``).

    ``overrides`` replace fields of the :class:`BatchAugment` behind ``basic`` and ``v2`` (e.g.
    ``degrees=10``); ``none`` and ``autoaugment`` take none.
    """
    name = "none" if preset is None else str(preset).lower()
    if name not in PRESETS:
        raise ConfigError(f"unknown augmentation preset {preset!r}: use one of {', '.join(PRESETS)}")
    if name in ("none", "autoaugment"):
        if overrides:
            raise ConfigError(f"augmentation preset {name} takes no options (got {sorted(overrides)})")
        return _identity if name == "none" else BatchAutoAugment()
    kw = _preset_kwargs(name)
    bad = sorted(set(overrides) - {f.name for f in fields(BatchAugment)})
    if bad:
        raise ConfigError(f"unknown augmentation option(s) {bad} for preset {name}")
    kw.update(overrides)
    return BatchAugment(**kw)


def spec_from_dataset(
    ds,
    size=None,
    channels: int | None = None,
    split: str = "train",
    permute_seed: int | None = None,
    max_samples: int = 5000,
) -> InputSpec:
    """An :class:`InputSpec` whose mean / std are measured on (up to ``max_samples`` of) a split, after channel
    adapt and resize (the "dataset" normalisation)."""
    h, w = ds.image_size
    spec = InputSpec(size=size or (h, w), channels=channels or ds.channels, mean=[0.0], std=[1.0])
    imgs = ds.split(split).images
    step = max(1, len(imgs) // max_samples)
    s = torch.zeros(spec.channels, dtype=torch.float64)
    ss = torch.zeros_like(s)
    count = 0
    for a in range(0, len(imgs), 512 * step):
        x = to_input(torch.from_numpy(np.ascontiguousarray(imgs[a : a + 512 * step : step])), spec)
        s += x.double().sum(dim=(0, 2, 3))
        ss += x.double().pow(2).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / max(count, 1)
    std = (ss / max(count, 1) - mean**2).clamp_min(0).sqrt() + 1e-6
    spec.mean, spec.std = mean.tolist(), std.tolist()
    spec.permute_seed = permute_seed
    return spec
