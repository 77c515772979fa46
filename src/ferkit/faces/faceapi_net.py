"""face-api's two detection networks in PyTorch (see :mod:`ferkit.faces.faceapi` for the detectors).

Kept apart from the detectors so that a detector on ONNX Runtime never imports torch: this module is
imported only to run a network in PyTorch or to export it to ONNX once (``scripts/export_onnx_weights.py``).
Both follow face-api 1.7.15's TF.js code layer for layer (``src/tinyYolov2/TinyYolov2Base.ts`` and
``src/ssdMobilenetv1/*.ts``), with TensorFlow's "same" padding (zeros after, not before, when the total is
odd) written out, and take NCHW float32 input already normalised by :mod:`ferkit.faces.faceapi`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

#: face-api's LeakyReLU slope (tinyYolov2/leaky.ts)
LEAK = 0.1
#: face-api's batch-norm epsilon (ssdMobilenetv1/mobileNetV1.ts)
BN_EPS = 0.0010000000474974513
#: SSD input side (face-api's SsdMobilenetv1.forwardInput: toBatchTensor(512))
SSD_SIZE = 512
SSD_PRIORS = 5118


def _pad_same(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TensorFlow "same" padding for a k x k window: the odd pixel goes after (bottom/right)."""
    h, w = x.shape[-2:]
    ph = max((-(-h // stride) - 1) * stride + k - h, 0)
    pw = max((-(-w // stride) - 1) * stride + k - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)) if ph or pw else x


class SeparableConv(nn.Module):
    """3x3 depthwise (no bias) + 1x1 pointwise with bias, zero padding 1, LeakyReLU(0.1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.pointwise(self.depthwise(x)), LEAK)


class TinyFaceNet(nn.Module):
    """face-api's TinyFaceDetector: a Tiny-YOLOv2-style network with depthwise-separable convolutions.

    Input (N, 3, S, S) with S a multiple of 32; output (N, 25, S/32, S/32): per cell 5 anchors x
    (tx, ty, tw, th, objectness logit)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3)  # face-api: 'valid' padding for this first layer
        sizes = [16, 32, 64, 128, 256, 512]
        self.convs = nn.ModuleList(SeparableConv(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
        self.conv8 = nn.Conv2d(512, 25, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv0(x), LEAK)
        for conv in self.convs:
            # maxPool 2x2 stride 2 'same' = ceil mode (a partial window at the odd end)
            x = conv(F.max_pool2d(x, 2, 2, ceil_mode=True))
        # maxPool 2x2 stride 1 'same': one more row/column after; repeating the edge leaves every max unchanged
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        return self.conv8(x)


class PointwiseConv(nn.Module):
    """ssdMobilenetv1/pointwiseConvLayer.ts: conv ('same') + bias (the folded batch-norm offset), ReLU6."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        self.conv = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.conv(_pad_same(x, self.k, self.stride)), 0, 6)


class DepthwiseConv(nn.Module):
    """ssdMobilenetv1/mobileNetV1.ts depthwiseConvLayer: 3x3 depthwise ('same') + batch norm, ReLU6."""

    bn_scale: torch.Tensor
    bn_offset: torch.Tensor
    bn_mean: torch.Tensor
    bn_var: torch.Tensor

    def __init__(self, c: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c, c, 3, stride, groups=c, bias=False)
        # the four batch-norm tensors as face-api holds them (BatchNorm/gamma, beta, moving_mean, moving_variance)
        for name in ("bn_scale", "bn_offset", "bn_mean", "bn_var"):
            self.register_buffer(name, torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.batch_norm(
            self.conv(_pad_same(x, 3, self.stride)),
            self.bn_mean,
            self.bn_var,
            self.bn_scale,
            self.bn_offset,
            False,
            0.0,
            BN_EPS,
        )
        return torch.clamp(x, 0, 6)


class BoxPredictor(nn.Module):
    def __init__(self, cin: int, anchors: int):
        super().__init__()
        self.box = nn.Conv2d(cin, anchors * 4, 1)
        self.cls = nn.Conv2d(cin, anchors * 3, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        # TF.js reshapes NHWC outputs: cell-major, then anchor
        return (self.box(x).permute(0, 2, 3, 1).reshape(n, -1, 4), self.cls(x).permute(0, 2, 3, 1).reshape(n, -1, 3))


class SsdMobileNetV1(nn.Module):
    """face-api's SSD MobileNetV1 face detector (TF object-detection API layout).

    Input (N, 3, 512, 512) in [-1, 1]; outputs ``boxes`` (N, 5118, 4) as (ymin, xmin, ymax, xmax) relative to
    the 512 px square, decoded against the priors as outputLayer.ts does, and ``scores`` (N, 5118): the
    sigmoid of the face class's logit."""

    STRIDE2 = (2, 4, 6, 12)
    priors: torch.Tensor

    def __init__(self):
        super().__init__()
        self.conv0 = PointwiseConv(3, 32, 3, 2)
        chans = [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
        self.dw = nn.ModuleList(DepthwiseConv(chans[i - 1], 2 if i in self.STRIDE2 else 1) for i in range(1, 14))
        self.pw = nn.ModuleList(PointwiseConv(chans[i - 1], chans[i]) for i in range(1, 14))
        extra = [
            (1024, 256, 1, 1),
            (256, 512, 3, 2),
            (512, 128, 1, 1),
            (128, 256, 3, 2),
            (256, 128, 1, 1),
            (128, 256, 3, 2),
            (256, 64, 1, 1),
            (64, 128, 3, 2),
        ]
        self.extra = nn.ModuleList(PointwiseConv(*e) for e in extra)
        self.predictors = nn.ModuleList(
            BoxPredictor(c, a) for c, a in [(512, 3), (1024, 6), (512, 6), (256, 6), (256, 6), (128, 6)]
        )
        self.register_buffer("priors", torch.zeros(SSD_PRIORS, 4))  # Output/extra_dim: ymin, xmin, ymax, xmax

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv0(x)
        conv11 = x
        for i, (dw, pw) in enumerate(zip(self.dw, self.pw, strict=True), start=1):
            x = pw(dw(x))
            if i == 11:
                conv11 = x
        taps = [conv11, x]
        y = x
        for i, layer in enumerate(self.extra):
            y = layer(y)
            if i % 2:
                taps.append(y)
        enc, cls = zip(*(p(t) for p, t in zip(self.predictors, taps, strict=True)), strict=True)
        return self._decode(torch.cat(enc, 1)), torch.sigmoid(torch.cat(cls, 1)[..., 1])

    def _decode(self, p: torch.Tensor) -> torch.Tensor:
        # outputLayer.ts's decodeBoxesLayer, op for op (so float32 rounds the same way)
        a = self.priors
        size0, size1 = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        c0, c1 = a[:, 0] + size0 / 2, a[:, 1] + size1 / 2
        half0 = torch.exp(p[..., 2] / 5) * size0 / 2
        mid0 = p[..., 0] / 10 * size0 + c0
        half1 = torch.exp(p[..., 3] / 5) * size1 / 2
        mid1 = p[..., 1] / 10 * size1 + c1
        return torch.stack([mid0 - half0, mid1 - half1, mid0 + half0, mid1 + half1], -1)


NETWORKS = {"tinyface": TinyFaceNet, "ssd_mobilenet": SsdMobileNetV1}


def build_network(backend: str, device: torch.device | str = "cpu") -> nn.Module:
    """The network with the bundled weights loaded (strictly), in eval mode."""
    from ferkit.faces.weights import load_weights

    net = NETWORKS[backend]()
    net.load_state_dict(load_weights(backend))
    return net.eval().to(device)


def export_onnx(backend: str, path: str | os.PathLike) -> None:
    """Write the network as ONNX (opset 17, dynamic batch; tinyface also dynamic height/width) to ``path``."""
    from ferkit.utils import export_traced_onnx

    side = SSD_SIZE if backend == "ssd_mobilenet" else 416
    dyn = {0: "batch"} if backend == "ssd_mobilenet" else {0: "batch", 2: "height", 3: "width"}
    outs = ["boxes", "scores"] if backend == "ssd_mobilenet" else ["out"]
    export_traced_onnx(
        build_network(backend, "cpu"),
        torch.zeros(1, 3, side, side),
        path,
        input_name="x",
        output_names=outs,
        dynamic_axes={"x": dyn},
    )
    store_quantised(path, backend)


def store_quantised(path: str | os.PathLike, backend: str) -> None:
    """Rewrite the ONNX file at ``path`` so each weight shipped quantised (see :mod:`ferkit.faces.weights`) is
    stored as its uint8 values and computed in the graph as ``float(double(q) * scale + min)``: the file keeps
    face-api's size (SSD: 5.6 MB instead of 22 MB) and ONNX Runtime folds the same float32 values back at load.
    Weights the exporter changed (batch norm folded into the depthwise convolutions) stay float32."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    from ferkit.faces.weights import QUANTISED, SCALE_MIN, weights_path

    stored = load_file(str(weights_path(backend)))
    model = onnx.load(str(path))
    nodes = []
    for init in list(model.graph.initializer):
        if init.name + QUANTISED not in stored:
            continue
        q = stored[init.name + QUANTISED]
        scale, lo = (float(v) for v in stored[init.name + SCALE_MIN])
        if not np.array_equal(numpy_helper.to_array(init), (q.astype(np.float64) * scale + lo).astype(np.float32)):
            continue
        model.graph.initializer.remove(init)
        n = init.name
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, n + "#q"),
                numpy_helper.from_array(np.array(scale), n + "#scale"),
                numpy_helper.from_array(np.array(lo), n + "#min"),
            ]
        )
        nodes += [
            helper.make_node("Cast", [n + "#q"], [n + "#f64"], to=TensorProto.DOUBLE),
            helper.make_node("Mul", [n + "#f64", n + "#scale"], [n + "#scaled"]),
            helper.make_node("Add", [n + "#scaled", n + "#min"], [n + "#value"]),
            helper.make_node("Cast", [n + "#value"], [n], to=TensorProto.FLOAT),
        ]
    rest = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes + rest)  # the dequantising nodes first: the graph stays in topological order
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
