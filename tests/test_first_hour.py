"""A newcomer's first hour (issue 21): a light install without torch, fast one-line answers, identity columns in
tables, and a wrong file given as a checkpoint named for what it is."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ferkit.cli import main

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]

# What `pip install ferkit` (no extra) lacks: on the path first, this makes those modules not installed (import
# fails, find_spec says None) for the whole process, as in the light venv that bench/install_size.py builds.
NO_TORCH = textwrap.dedent("""
    import sys
    class _Absent:
        def __init__(self, finder):
            self.finder = finder
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "onnx", "safetensors", "sklearn"):
                return None
            find = getattr(self.finder, "find_spec", None)
            return find(name, path, target) if find else None
        def __getattr__(self, key):
            return getattr(self.finder, key)
    sys.meta_path[:] = [_Absent(f) for f in sys.meta_path]
""")


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    """Environment for a subprocess where torch, torchvision, onnx and safetensors are not installed, with an
    empty ferkit cache (so nothing exported earlier can stand in for the shipped graphs)."""
    d = tmp_path_factory.mktemp("no_torch")
    (d / "sitecustomize.py").write_text(NO_TORCH)
    env = dict(os.environ, FERKIT_CACHE_DIR=str(d / "cache"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(d)] + [x for x in [os.environ.get("PYTHONPATH")] if x])
    return env


def _ferkit(env, *args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ferkit", *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


def _one_line_2(r) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("ferkit: error: "), (
        r.returncode,
        r.stderr[-3000:],
    )
    return lines[0]


def _one_error_line(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ferkit: error: "), (code, err[-2000:])
    return lines[0]


# ------------------------------------------------------------------------------ item 6: what the file is
def test_a_non_checkpoint_file_is_named_for_what_it_is(tmp_path, capsys):
    from PIL import Image

    rgb = np.asarray(Image.open(DATA / "multi_face.jpg").convert("RGB"))[:64, :64]
    Image.fromarray(rgb).save(tmp_path / "face.png")
    (tmp_path / "notes.pt").write_text("epochs: 10\nlr: 0.001\n")
    with zipfile.ZipFile(tmp_path / "weights.zip", "w") as z:
        z.writestr("model.bin", b"\x00" * 64)
    with tarfile.open(tmp_path / "run.tar", "w") as t:
        info = tarfile.TarInfo("best.pt")
        info.size = 4
        t.addfile(info, io.BytesIO(b"\x80\x04N."))
    want = {
        "face.png": "is a PNG image",
        "notes.pt": "is a text file",
        "weights.zip": "is a zip archive",
        "run.tar": "is a tar archive",
    }
    for name, what in want.items():
        line = _one_error_line(capsys, ["predict", "--checkpoint", tmp_path / name, DATA / "multi_face.jpg"])
        assert str(tmp_path / name) in line and what in line and "pickle" not in line, line
    # a real checkpoint (torch.save's zip with data.pkl) is not mistaken for an archive
    import torch

    torch.save({"w": torch.zeros(2)}, tmp_path / "bare.pt")
    line = _one_error_line(capsys, ["info", tmp_path / "bare.pt"])
    assert "archive" not in line and "state dict" in line, line


# ------------------------------------------------------------------------------ item 5: identity in tables
def test_identity_columns_in_csv_parquet_and_dataframe(tmp_path):
    """`predict --gallery` names each face in every table output, as JSON lines always did."""
    import csv
    import importlib.util

    pytest.importorskip("dlib")
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face_recognition_models is not installed (the identity extra)")
    import pandas as pd
    from conftest import run_cli

    import ferkit

    ids = DATA / "identity"
    g = tmp_path / "people.sqlite3"
    env = {"OMP_NUM_THREADS": "1"}
    r = run_cli("enroll", "--name", "obama", "--gallery", g, ids / "obama.jpg", ids / "obama2.jpg", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    probes = [ids / "obama3.jpg", ids / "biden.jpg"]
    r = run_cli("predict", "--gallery", g, "--format", "csv", "--quiet", *probes, env=env)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    got = {Path(x["path"]).stem: x for x in rows}
    assert len(rows) == 2 and got["obama3"]["identity"] == "obama" and got["biden"]["identity"] == "unknown"
    d_obama, d_biden = float(got["obama3"]["identity_distance"]), float(got["biden"]["identity_distance"])
    assert 0 < d_obama < 0.5 < 0.6 < d_biden
    out = tmp_path / "faces.parquet"
    r = run_cli("predict", "--gallery", g, "--format", "parquet", "--output", out, "--quiet", *probes, env=env)
    assert r.returncode == 0, r.stderr
    pq = pd.read_parquet(out)
    assert list(pq["identity"]) == [got[Path(p).stem]["identity"] for p in pq["path"]]
    assert np.allclose(pq["identity_distance"], [float(got[Path(p).stem]["identity_distance"]) for p in pq["path"]])
    df = ferkit.predict(inputs=probes, gallery=g).to_pandas()
    assert list(df.columns) == list(pq.columns) and list(df["identity"]) == list(pq["identity"])
    # without a gallery: no identity columns at all
    assert "identity" not in ferkit.predict(inputs=probes[:1]).to_pandas().columns


# ------------------------------------------------------------------------------ item 1: the light install
def test_predict_works_without_torch_and_training_says_how_to_get_it(no_torch_env, tmp_path):
    """`ferkit predict` on the test photos where torch is not installed: the shipped ONNX graphs give every face
    and the same rows as the full install; a command that needs torch says so in one line with the install line."""
    import csv

    import ferkit

    probe = subprocess.run([sys.executable, "-c", "import torch"], env=no_torch_env, capture_output=True, text=True)
    assert probe.returncode == 1 and "No module named 'torch'" in probe.stderr
    r = _ferkit(no_torch_env, "predict", DATA, "--format", "csv", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnx" in r.stderr.splitlines()[-1] and "torch" not in r.stderr.splitlines()[-1]
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    per_file = {Path(x["path"]).name: [] for x in rows}
    for x in rows:
        per_file[Path(x["path"]).name].append(x["label"])
    assert {k: len(v) for k, v in per_file.items()} == {
        "multi_face.jpg": 5,
        "obama.jpg": 1,
        "obama2.jpg": 1,
        "obama3.jpg": 1,
        "biden.jpg": 1,
    }
    assert per_file["obama.jpg"] == ["happy"] and per_file["multi_face.jpg"].count("happy") >= 4
    # the same faces, boxes and labels as this full install's default run
    want = ferkit.predict(inputs=[DATA]).to_pandas()
    got = sorted((Path(x["path"]).name, int(x["face"]), x["label"], round(float(x["x1"]), 1)) for x in rows)
    assert got == sorted(
        (Path(p).name, int(f), lab, round(float(x1), 1))
        for p, f, lab, x1 in zip(want["path"], want["face"], want["label"], want["x1"], strict=True)
    )
    code = (
        f"import ferkit; r = ferkit.analyze({str(DATA / 'identity' / 'obama.jpg')!r}); "
        "print(len(r.faces), r.faces[0].label)"
    )
    p = subprocess.run([sys.executable, "-c", code], env=no_torch_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.split() == ["1", "happy"], p.stderr[-2000:]
    assert not (Path(no_torch_env["FERKIT_CACHE_DIR"]) / "onnx").exists()  # nothing exported: the shipped graphs
    # a command that needs torch: one line, the install line, exit 2 (CLI and API)
    ferkit.synthesize(tmp_path / "synth", n=60, seed=0)
    line = _one_line_2(
        _ferkit(no_torch_env, "train", "--data", tmp_path / "synth", "--epochs", "1", "--out", tmp_path / "run")
    )
    assert "needs PyTorch" in line and "pip install 'ferkit[train]'" in line, line
    line = _one_line_2(_ferkit(no_torch_env, "predict", "--backend", "torch", DATA / "multi_face.jpg"))
    assert "pip install 'ferkit[train]'" in line, line
    # a path with no check of its own (MTCNN imports torch): the CLI turns the missing module into the same line
    line = _one_line_2(_ferkit(no_torch_env, "predict", "--detector", "mtcnn", DATA / "multi_face.jpg"))
    assert line.startswith("ferkit: error: ferkit predict needs PyTorch") and "pip install 'ferkit[train]'" in line
    code = f"import ferkit; ferkit.evaluate('fer_minixception', {str(tmp_path / 'synth')!r})"
    p = subprocess.run([sys.executable, "-c", code], env=no_torch_env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and "ConfigError: evaluation needs PyTorch" in p.stderr.splitlines()[-1], p.stderr[-2000:]
    assert not (tmp_path / "run").exists()


def test_faceapi_detectors_run_without_torch(no_torch_env):
    """tinyface and ssd_mobilenet detect from the shipped ONNX graphs where torch, onnx and safetensors are not
    installed (the default install): every face of the group photo, and `ferkit detectors` lists them."""
    code = (
        "from ferkit.faces import FaceDetector, load_image\n"
        f"img = load_image({str(DATA / 'multi_face.jpg')!r})\n"
        "for b in ('tinyface', 'ssd_mobilenet'):\n"
        "    d = FaceDetector.create(b)\n"
        "    print(b, d.runtime, len(d.detect(img)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_torch_env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[:2] == ["tinyface onnx 5", "ssd_mobilenet onnx 5"], r.stdout
    r = _ferkit(no_torch_env, "detectors")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln[:1].strip()}
    assert sorted(lines) == ["blazeface", "haar", "mtcnn", "retinaface", "ssd_mobilenet", "tinyface"], r.stdout
    assert "needs torch" in lines["mtcnn"] and "needs" not in lines["tinyface"]


def test_shipped_onnx_graphs_match_a_fresh_export(tmp_path):
    """Each shipped .onnx equals, on real faces, what scripts/export_onnx_weights.py exports now from the shipped
    safetensors, and the manifest records the files as shipped (sha256, size, source weights' sha256).
    Measured: shipped vs fresh export with this torch: identical bytes, 0 difference. The tolerance is what a
    different torch's exporter may move (ORT's kernels are the same): 1e-5 on logits and on the detector's
    raw outputs, below the 5e-5 logit budget of tests/test_zoo.py."""
    import cv2
    import torch

    from ferkit.data.spec import InputSpec
    from ferkit.data.transforms import to_input
    from ferkit.faces import FaceDetector, align, load_image
    from ferkit.inference.backends import OnnxClassifier
    from ferkit.utils import ort_session, sha256_file

    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "export_onnx_weights.py"), "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pkg = ROOT / "src" / "ferkit"
    shipped = json.loads((pkg / "inference" / "onnx_manifest.json").read_text())["files"]
    fresh = json.loads((tmp_path / "inference" / "onnx_manifest.json").read_text())["files"]
    assert (
        sorted(shipped)
        == sorted(fresh)
        == [
            "faces/weights/blazeface.onnx",
            "faces/weights/faceapi_ssd_mobilenetv1.onnx",
            "faces/weights/faceapi_tiny_face_detector.onnx",
            "faces/weights/retinaface_mobilenet0.25.onnx",
            "zoo/weights/faceapi_agegender.onnx",
            "zoo/weights/faceapi_expression.onnx",
            "zoo/weights/faceapi_landmarks68.onnx",
            "zoo/weights/fer_minixception.onnx",
            "zoo/weights/human_antispoof.onnx",
            "zoo/weights/human_facemesh.onnx",
            "zoo/weights/human_xception.onnx",
        ]
    )
    photos = [load_image(p) for p in [DATA / "multi_face.jpg", *sorted((DATA / "identity").glob("*.jpg"))]]
    det = FaceDetector.create("retinaface", max_size=640)
    faces = [(img, f) for img in photos for f in det.detect(img)]
    assert len(faces) == 9
    worst = {}
    for rel, rec in shipped.items():
        assert sha256_file(pkg / rel) == rec["sha256"] and (pkg / rel).stat().st_size == rec["bytes"], rel
        assert sha256_file(pkg / rec["from"]) == rec["from_sha256"] == fresh[rel]["from_sha256"], rel
        if rel.startswith("faces/weights/faceapi_"):  # a square input: 512 for the SSD, any multiple of 32 for tiny
            from ferkit.faces.faceapi import square_resize

            side = 512 if "ssd" in rel else 416
            blobs = [
                np.ascontiguousarray((square_resize(img, side)[0] / 127.5 - 1)[None].transpose(0, 3, 1, 2))
                for img in photos
            ]
        elif rel == "faces/weights/blazeface.onnx":
            from ferkit.faces.blazeface import letterbox

            blobs = [
                np.ascontiguousarray(
                    (letterbox(img)[0][None] / np.float32(127.5) - 1).transpose(0, 3, 1, 2), dtype=np.float32
                )
                for img in photos
            ]
            a, b = ort_session(pkg / rel, 1), ort_session(tmp_path / rel, 1)
            outs = [
                (x, y)
                for blob in blobs
                for x, y in zip(a.run(None, {"x": blob}), b.run(None, {"x": blob}), strict=True)
            ]
        elif rel.startswith("faces/"):
            blobs = [
                cv2.dnn.blobFromImages(
                    [cv2.resize(img, (640, 640 * img.shape[0] // img.shape[1]))],
                    1.0,
                    None,
                    (104.0, 117.0, 123.0),
                    swapRB=True,
                    crop=False,
                )
                for img in photos
            ]
            a, b = ort_session(pkg / rel, 1), ort_session(tmp_path / rel, 1)
            outs = [
                (x, y)
                for blob in blobs
                for x, y in zip(a.run(None, {"x": blob}), b.run(None, {"x": blob}), strict=True)
            ]
        else:
            a, b = OnnxClassifier(pkg / rel, threads=1), OnnxClassifier(tmp_path / rel, threads=1)
            spec = InputSpec.from_dict(a.spec.to_dict())
            chips = np.stack([align(img, f, size=(112, 112)) for img, f in faces])
            x = to_input(torch.from_numpy(chips), spec).numpy()
            outs = [(a.run_raw(x)[0], b.run_raw(x)[0])]
        worst[rel] = max(float(np.abs(x - y).max()) for x, y in outs)
        assert all(x.shape == y.shape for x, y in outs)
    assert max(worst.values()) <= 1e-5, worst


# ------------------------------------------------------------------------------ item 2: answers before torch
def test_typos_are_answered_before_torch_loads(no_torch_env, tmp_path):
    """A wrong model name, data path or recipe gets its own one-line answer where torch is not even installed:
    proof that nothing heavy is imported before the arguments are checked (what made them take ~1.4 s)."""
    import ferkit

    ferkit.synthesize(tmp_path / "synth", n=60, seed=0)
    line = _one_line_2(_ferkit(no_torch_env, "train", "--model", "seed1_cn", "--data", tmp_path / "synth"))
    assert "unknown model 'seed1_cn' (did you mean seed1_cnn" in line, line
    line = _one_line_2(_ferkit(no_torch_env, "train", "--data", tmp_path / "nothere"))
    assert f"{tmp_path / 'nothere'}: no such file or directory" in line, line
    line = _one_line_2(_ferkit(no_torch_env, "evaluate", "--checkpoint", "fer_minixception", "--data", "nothere/"))
    assert "nothere: no such file or directory" in line, line
    line = _one_line_2(_ferkit(no_torch_env, "evaluate", "--checkpoint", "fer_minixcepton", "--data", tmp_path))
    assert "did you mean fer_minixception" in line, line


def test_builtin_model_names_are_the_registry():
    """ferkit.model_names (torch-free) lists exactly what ferkit.models registers (in a fresh process: tests
    register models of their own)."""
    from ferkit.model_names import BUILTIN_MODELS

    code = (
        "import json; from ferkit.models import list_models; "
        "print(json.dumps({c.name: c.aliases for c in list_models()}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {k: tuple(v) for k, v in BUILTIN_MODELS.items()} == {k: tuple(v) for k, v in json.loads(r.stdout).items()}


def test_every_tracked_weight_file_has_a_card_naming_it():
    """Each weights file in the package (safetensors and the ONNX graphs exported from them) is named in a model
    card together with its sha256: nothing ships without its card."""
    import hashlib

    pkg = Path(__file__).resolve().parents[1] / "src" / "ferkit"
    cards = "".join(p.read_text() for d in ("zoo/cards", "faces/cards") for p in (pkg / d).glob("*.md"))
    files = [
        p
        for d in ("zoo/weights", "faces/weights")
        for p in sorted((pkg / d).iterdir())
        if p.suffix in (".onnx", ".safetensors")
    ]
    assert len(files) >= 8
    for p in files:
        assert p.name in cards, p.name
        if p.suffix == ".onnx":
            assert hashlib.sha256(p.read_bytes()).hexdigest() in cards, p.name
