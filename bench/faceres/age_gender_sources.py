"""Two age/gender sources measured against each other: face-api's AgeGenderNet (ferkit's ``age``/``gender``) and
Human's ``faceres`` (HSE-asavchenko's MobileNet v1 age/gender head, @vladmandic/human 3.3.6).

    python bench/faceres/age_gender_sources.py --human vladmandic-human-3.3.6.tgz

faceres is converted here, in memory, by ferkit's own TF.js reader (the archive and both files checked against
their sha256), checked against TF.js's outputs recorded in ``tfjs_reference.json`` (``record_tfjs.js``), then both
sources read the same detected faces: the photos with known people (astronaut: a woman ~40; Grace Hopper: a
woman in her 70s; tests/data), and skimage's 100 near-frontal ``lfw_subset`` faces with their mirror images
(each through the detector), for mirror consistency and for agreement between the two. face-api reads the
detection box made square (its own framing); faceres the box made square and grown 1.4x at 224x224, 0..255
(Human's framing: the facemesh crop, faceres.ts enhance()). faceres' age: Human's decoding (the most likely
year, moved towards its likelier neighbour by that neighbour's probability) and the expectation over 0..99.
Not shipped (3.5M parameters, 14 MB as float32: over the zoo's 3 MB per model); not a timed test.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FILES = {
    "package/models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "package/models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
# (in, out, stride) of MobileNet v1's 13 depthwise-separable blocks
PLAN = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2), *[(512, 512, 1)] * 5,
        (512, 1024, 2), (1024, 1024, 1)]  # fmt: skip


def faceres_net(archive: str):
    """The faceres graph as a torch module ``x (N, 3, 224, 224) in 0..255 -> [gender logit, 100 age logits]``."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from ferkit.models.zoo_models import Conv2dSame
    from ferkit.utils import sha256_file
    from ferkit.zoo.convert import _conv_w, _dw_w, _t, read_members, read_tfjs_weights, sha256_bytes
    from ferkit.zoo.sources import HUMAN

    if sha256_file(archive) != HUMAN.archive_sha256:
        sys.exit(f"{archive}: not the pinned {HUMAN.package} {HUMAN.version} artifact")
    files = read_members(archive, list(FILES))
    for member, sha in FILES.items():
        if sha256_bytes(files[member]) != sha:
            sys.exit(f"{archive}: {member} is not the pinned file")
    m = json.loads(files["package/models/faceres.json"])
    w = read_tfjs_weights(m["weightsManifest"], [files["package/models/faceres.bin"]])
    ops = [n["op"] for n in m["modelTopology"]["node"] if n["op"] not in ("Const", "Placeholder")]
    block = ["Mul", "Add", "Relu", "Minimum", "Maximum", "Conv2D", "Add", "Relu", "Minimum", "Maximum"]
    want = ["Conv2D", "Add", "Relu", "Minimum", "Maximum"] + ["DepthwiseConv2dNative", *block] * 13
    if ops[: len(want)] != want or ops[len(want) :] != ["Mean", *["_FusedMatMul"] * 3, "Sigmoid", "Softmax"]:
        sys.exit("faceres.json: not MobileNet v1 (conv, 13 x [dw, BN, ReLU6, pw + BN, ReLU6], GAP, 3 dense)")
    clips = {float(v) for k, v in w.items() if k.endswith(("relu/Cast", "relu/Const_1"))}
    if clips != {0.0, 6.0}:
        sys.exit(f"faceres.json: activations clip at {sorted(clips)}, expected ReLU6")

    def get(suffix: str) -> np.ndarray:
        (hit,) = [v for k, v in w.items() if k.endswith(suffix)]
        return hit

    class FaceRes(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Conv2dSame(3, 32, 3, stride=2)
            self.dw = nn.ModuleList([Conv2dSame(c, c, 3, stride=s, groups=c, bias=False) for c, _, s in PLAN])
            self.scale = nn.ParameterList([nn.Parameter(torch.ones(c)) for c, _, _ in PLAN])  # the dw's BatchNorm,
            self.shift = nn.ParameterList([nn.Parameter(torch.zeros(c)) for c, _, _ in PLAN])  # kept as in the graph
            self.pw = nn.ModuleList([nn.Conv2d(c, o, 1) for c, o, _ in PLAN])
            self.feats, self.gender, self.age = nn.Linear(1024, 256), nn.Linear(256, 1), nn.Linear(256, 100)

        def forward(self, x):
            x = F.relu6(self.stem(x))
            for dw, a, b, pw in zip(self.dw, self.scale, self.shift, self.pw, strict=True):
                x = F.relu6(pw(F.relu6(dw(x) * a[:, None, None] + b[:, None, None])))
            f = F.relu(self.feats(x.mean((2, 3))))
            return torch.cat([self.gender(f), self.age(f)], 1)

    sd = {
        "stem.weight": _conv_w(get("conv1/convolution/merged_input")),
        "stem.bias": _t(get("conv1_bn/batchnorm_1/sub")),
    }
    for i in range(len(PLAN)):
        sd[f"dw.{i}.weight"] = _dw_w(get(f"conv_dw_{i + 1}/depthwise_kernel"))
        sd[f"scale.{i}"] = _t(get(f"conv_dw_{i + 1}_bn/batchnorm_1/mul"))
        sd[f"shift.{i}"] = _t(get(f"conv_dw_{i + 1}_bn/batchnorm_1/sub"))
        sd[f"pw.{i}.weight"] = _conv_w(get(f"conv_pw_{i + 1}/convolution/merged_input"))
        sd[f"pw.{i}.bias"] = _t(get(f"conv_pw_{i + 1}_bn/batchnorm_1/sub"))
    for mine, theirs in (("feats", "feats"), ("gender", "gender_pred"), ("age", "age_pred")):
        sd[f"{mine}.weight"], sd[f"{mine}.bias"] = _t(get(f"{theirs}/kernel").T), _t(get(f"{theirs}/bias"))
    net = FaceRes()
    net.load_state_dict(sd)  # strict: every tensor placed, shapes checked
    return net.eval()


def faceres_decode(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs -> (P(male), age as Human decodes it, age expectation)."""
    male = 1.0 / (1.0 + np.exp(-raw[:, 0]))
    p = np.exp(raw[:, 1:] - raw[:, 1:].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    i = p.argmax(1)
    lo, hi = p[np.arange(len(p)), np.maximum(i - 1, 0)], p[np.arange(len(p)), np.minimum(i + 1, 99)]
    return male, np.where(lo > hi, i - lo, i + hi), (p * np.arange(100)).sum(1)


def parity_inputs() -> np.ndarray:
    """The zoo fixtures' two face crops at 224x224 and seeded noise (uint8, NHWC)."""
    from PIL import Image

    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "zoo"))
    import make_inputs

    x = [np.asarray(im.resize((224, 224), Image.BILINEAR)) for im in make_inputs.faces()]
    x.append(np.random.RandomState(make_inputs.SEED + 3).randint(0, 256, (224, 224, 3)).astype(np.uint8))
    return np.stack(x)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--human", required=True, help="vladmandic-human-3.3.6.tgz (npm pack @vladmandic/human@3.3.6)")
    p.add_argument("--write-inputs", help="write the parity inputs (.npy) for record_tfjs.js and stop")
    a = p.parse_args(argv)
    import cv2
    import matplotlib
    import skimage.data
    import torch
    from PIL import Image

    from ferkit.attributes import AGEGENDER, MESH_MARGIN, _model, _normalise
    from ferkit.faces import FaceDetector, load_image
    from ferkit.faces.align import crop
    from ferkit.zoo.outputs import decode

    torch.set_num_threads(1)
    if a.write_inputs:
        np.save(a.write_inputs, parity_inputs())
        return 0
    net = faceres_net(a.human)
    ref = json.loads((HERE / "tfjs_reference.json").read_text())
    buf = io.BytesIO()
    np.save(buf, parity_inputs())
    if hashlib.sha256(buf.getvalue()).hexdigest() != ref["inputs_sha256"]:
        sys.exit("the parity inputs changed since tfjs_reference.json was recorded: re-record (record_tfjs.js)")
    with torch.no_grad():
        raw = net(torch.from_numpy(parity_inputs()).permute(0, 3, 1, 2).float()).double().numpy()
    male, _, _ = faceres_decode(raw)
    probs = torch.softmax(torch.from_numpy(raw[:, 1:]), 1).numpy()
    logit_ref = np.concatenate([ref["gender_pred/BiasAdd"], ref["age_pred/BiasAdd"]], 1)
    print(
        f"parity vs {ref['runtime']}: P(male) {np.abs(male - np.array(ref['gender_pred/Sigmoid'])[:, 0]).max():.1e}, "
        f"age probabilities {np.abs(probs - np.array(ref['age_pred/Softmax'])).max():.1e}, "
        f"logits {np.abs(raw - logit_ref).max():.1e}"
    )

    det = FaceDetector.create("retinaface", max_size=640)

    def both(img, face):  # each value: [the face, its mirror image]
        a_ = crop(img, face, 0.0, (112, 112))
        b_ = crop(img, face, MESH_MARGIN, (224, 224))
        fa = decode(AGEGENDER, _model(AGEGENDER, "onnx")(_normalise(np.stack([a_, a_[:, ::-1]]), AGEGENDER)))
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(np.stack([b_, b_[:, ::-1]]))).permute(0, 3, 1, 2).float()
            m, age, age_e = faceres_decode(net(x).double().numpy())
        return {"fa_age": fa[:, 0], "fa_male": fa[:, 1], "fr_age": age, "fr_age_e": age_e, "fr_male": m}

    grace = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")).convert("RGB")
    named = {"astronaut (woman ~40)": skimage.data.astronaut(), "grace_hopper (woman, 70s)": np.asarray(grace)}
    for f in [ROOT / "tests/data/multi_face.jpg", *sorted(glob.glob(str(ROOT / "tests/data/identity/*.jpg")))]:
        named[Path(f).name] = load_image(f)
    print(
        "face: face-api age, P(male) | faceres age (Human), age (expectation), P(male); each averaged with the mirror"
    )
    for k, img in named.items():
        for i, face in enumerate(det.detect(img)):
            r = {n: v.mean() for n, v in both(img, face).items()}
            print(f"  {k}[{i}]: {r['fa_age']:.0f}, {r['fa_male']:.2f} | {r['fr_age']:.0f}, {r['fr_age_e']:.0f}, "
                  f"{r['fr_male']:.2f}")  # fmt: skip
    pairs = []
    for x in skimage.data.lfw_subset()[:100]:
        img = cv2.resize(np.stack([(x * 255).astype(np.uint8)] * 3, -1), (200, 200))
        mirrored = np.ascontiguousarray(img[:, ::-1])
        fa, fb = det.detect(img), det.detect(mirrored)
        if fa and fb:
            pairs.append((both(img, max(fa, key=lambda f: f.size)), both(mirrored, max(fb, key=lambda f: f.size))))
    print(f"lfw_subset: {len(pairs)} faces and their mirror images (each through the detector)")
    for key in ("fa_age", "fr_age", "fr_age_e"):
        one = np.mean([abs(x[key][0] - y[key][0]) for x, y in pairs])
        avg = np.mean([abs(x[key].mean() - y[key].mean()) for x, y in pairs])
        print(f"  {key}: mean |age - age of the mirror| {one:.2f} (one view), {avg:.2f} (averaged with its mirror)")
    for key in ("fa_male", "fr_male"):
        one = np.mean([(x[key][0] > 0.5) != (y[key][0] > 0.5) for x, y in pairs])
        avg = np.mean([(x[key].mean() > 0.5) != (y[key].mean() > 0.5) for x, y in pairs])
        print(f"  {key}: gender differs from the mirror's on {100 * one:.0f}% (one view), {100 * avg:.0f}% (averaged)")
    fa_age = np.array([x["fa_age"].mean() for x, _ in pairs])
    fr_age = np.array([x["fr_age_e"].mean() for x, _ in pairs])
    fa_m = np.array([x["fa_male"].mean() > 0.5 for x, _ in pairs])
    fr_m = np.array([x["fr_male"].mean() > 0.5 for x, _ in pairs])
    print(f"  agreement: age correlation {np.corrcoef(fa_age, fr_age)[0, 1]:.2f} (faceres expectation), mean age "
          f"{fa_age.mean():.1f} vs {fr_age.mean():.1f}; same gender on {100 * np.mean(fa_m == fr_m):.0f}%")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
