"""One ferkit: the Python API, the CLI and the server as one contract (names, schema, defaults, errors)."""

import argparse
import csv
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FERKIT, bias_checkpoint, run_cli, small_checkpoint

DATA = Path(__file__).parent / "data"
PHOTOS = [DATA / "multi_face.jpg", DATA / "identity" / "obama.jpg", DATA / "identity" / "biden.jpg"]


# ------------------------------------------------------------------------------------------------ API names
def test_api_names_survive_any_import_order():
    """Every ferkit.api.__all__ name is ferkit.NAME, listed by dir(), whatever was imported first, twice."""
    code = r"""
import importlib, pkgutil, ferkit
# adversarial: every submodule first (the old ferkit.train/predict/evaluate packages shadowed the functions)
for m in sorted(pkgutil.walk_packages(ferkit.__path__, "ferkit."), key=lambda m: m.name):
    if m.name.endswith("__main__"):
        continue
    importlib.import_module(m.name)
from ferkit import api
assert sorted(api.__all__) == sorted(ferkit.API_NAMES), set(api.__all__) ^ set(ferkit.API_NAMES)
for _ in range(2):
    for name in api.__all__:
        assert getattr(ferkit, name) is getattr(api, name), name
        assert name in dir(ferkit), name
        assert callable(getattr(ferkit, name)), name
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_api_calls_work_twice_in_one_process(tmp_path):
    """The old bug: the first call imported a subpackage that replaced the function on `ferkit`."""
    import ferkit

    for _ in range(2):
        res = ferkit.predict("fer_minixception", [PHOTOS[0]])
        assert len(res) == 1 and len(res[0].faces) == 5
        assert ferkit.analyze(str(PHOTOS[1])).faces
        assert ferkit.list_recipes() and ferkit.describe_models()


def test_no_subpackage_shares_a_name_with_an_api_function():
    import ferkit
    from ferkit import api

    subs = {m.name for m in pkgutil.iter_modules(ferkit.__path__)}
    assert not subs & set(api.__all__), subs & set(api.__all__)


# ------------------------------------------------------------------------------------------------ one schema
@pytest.fixture(scope="module")
def server():
    pytest.importorskip("fastapi")
    from ferkit.serve import BackgroundServer, ServeConfig

    with BackgroundServer(ServeConfig(batch_max=1)) as url:
        yield url


def _strip(d: dict) -> dict:
    """A result without the name it was given (paths differ between surfaces)."""
    d = json.loads(json.dumps(d))
    d.pop("path", None)
    for f in d["faces"]:
        f.pop("source", None)
    return d


def test_cli_api_server_agree_on_the_same_photos(tmp_path, server):
    """Default settings everywhere: equal labels, boxes within 1 px, identical schema and provenance."""
    import httpx

    import ferkit

    api_res = ferkit.predict(inputs=PHOTOS)
    r = run_cli("predict", *PHOTOS, "--quiet")
    assert r.returncode == 0, r.stderr
    cli_res = [json.loads(line) for line in r.stdout.splitlines()]
    rest = [
        httpx.post(server + "/v1/predict", files={"file": (p.name, p.read_bytes(), "image/jpeg")}, timeout=60).json()
        for p in PHOTOS
    ]
    assert len(api_res) == len(cli_res) == len(rest) == len(PHOTOS)
    for a, c, s in zip(api_res, cli_res, rest, strict=True):
        a = a.to_dict()
        assert set(a) == set(c) == set(s)
        assert a["model"] == c["model"] == s["model"] == "fer_minixception+human_xception"
        assert a["detector"] == c["detector"] == s["detector"] == "retinaface@640"
        assert a["ferkit_version"] == c["ferkit_version"] == s["ferkit_version"] == ferkit.__version__
        assert len(a["faces"]) == len(c["faces"]) == len(s["faces"]) > 0
        for fa, fc, fs in zip(a["faces"], c["faces"], s["faces"], strict=True):
            assert fa["label"] == fc["label"] == fs["label"]
            assert np.abs(np.subtract(fa["box"], fc["box"])).max() <= 1
            assert np.abs(np.subtract(fa["box"], fs["box"])).max() <= 1
            assert abs(fa["score"] - fs["score"]) < 1e-4 and abs(fa["score"] - fc["score"]) < 1e-4
        sa, sc = _strip(a), _strip(c)
        # floats may differ in the last digit across threads
        for fa, fc in zip(sa.pop("faces"), sc.pop("faces"), strict=True):
            assert set(fa) == set(fc) and fa["probabilities"].keys() == fc["probabilities"].keys()
        assert sa == sc


def test_openapi_models_are_the_schema_tables(server):
    """The server documents exactly the fields to_dict writes (one source of truth)."""
    import httpx

    from ferkit.schema import FACE_FIELDS, FILE_FIELDS

    spec = httpx.get(server + "/openapi.json").json()["components"]["schemas"]
    assert set(spec["FileResult"]["properties"]) == set(FILE_FIELDS)
    assert set(spec["Face"]["properties"]) == set(FACE_FIELDS)
    assert set(spec["FileResult"]["required"]) == {k for k, (_, req, _) in FILE_FIELDS.items() if req}


def test_every_surface_writes_only_schema_fields(tmp_path):
    """API, CLI jsonl, CLI csv, crops (--no-detect) and video: one schema."""
    import ferkit
    from ferkit.schema import FACE_FIELDS, FILE_FIELDS, table_columns

    full = ferkit.predict("fer_minixception", PHOTOS[:1])[0].to_dict()
    assert set(full) <= set(FILE_FIELDS) and all(set(f) <= set(FACE_FIELDS) for f in full["faces"])
    crops = ferkit.predict("fer_minixception", PHOTOS[:1], detect=False)[0]
    assert crops.detector == "none" and len(crops.faces) == 1
    assert list(crops.faces[0].box) == [0, 0, *crops.image_size]
    r = run_cli("predict", PHOTOS[0], "--format", "csv", "--quiet")
    header = r.stdout.splitlines()[0].split(",")
    assert header == table_columns(list(full["faces"][0]["probabilities"]))
    df = ferkit.predict("fer_minixception", PHOTOS).to_pandas()
    assert list(df.columns) == header and len(df) == sum(len(x["faces"]) for x in [full]) + 2


def test_parquet_output_matches_csv(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    out = tmp_path / "faces.parquet"
    r = run_cli("predict", *PHOTOS, "--format", "parquet", "--output", out, "--quiet")
    assert r.returncode == 0, r.stderr
    r2 = run_cli("predict", *PHOTOS, "--format", "csv", "--output", tmp_path / "faces.csv", "--quiet")
    assert r2.returncode == 0
    a, b = pd.read_parquet(out), pd.read_csv(tmp_path / "faces.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    assert list(a["label"]) == list(b["label"])
    assert oct(out.stat().st_mode & 0o777) == "0o644"


# ------------------------------------------------------------------------------------------------ resolver
def test_one_resolver_for_every_command(tmp_path):
    from ferkit.errors import CheckpointError
    from ferkit.refs import resolve

    assert resolve("fer_minixception").kind == "zoo"
    with pytest.raises(CheckpointError, match="did you mean fer_minixception"):
        resolve("fer_minixcepton")
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        resolve(str(tmp_path / "nope.pt"))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="without best.pt or last.pt"):
        resolve(tmp_path / "empty_run")


def test_export_writes_beside_the_checkpoint_with_0644(tmp_path):
    pytest.importorskip("onnx")
    from ferkit.checkpoint import make_checkpoint, save_checkpoint
    from ferkit.data.spec import InputSpec
    from ferkit.models import create_model

    run = tmp_path / "run"
    m = create_model("seed1_cnn", num_classes=3, in_channels=1)
    save_checkpoint(
        make_checkpoint(
            m,
            model_name="seed1_cnn",
            model_kwargs={},
            num_classes=3,
            in_channels=1,
            task="classify",
            classes=["a", "b", "c"],
            input_spec=InputSpec().to_dict(),
        ),
        run / "best.pt",
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    r = run_cli("export", run, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert (run / "best.onnx").is_file() and not list(cwd.iterdir())
    assert oct((run / "best.onnx").stat().st_mode & 0o777) == "0o644"
    r = run_cli("predict", "--checkpoint", run / "best.onnx", PHOTOS[1], "--no-detect")
    assert r.returncode == 0 and "onnx" in r.stderr.splitlines()[-1] and "torch" not in r.stderr.splitlines()[-1]


# ------------------------------------------------------------------------------------------------ errors
def _one_line_exit_2(r):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("ferkit: error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "\x1b[" not in r.stderr and len(lines[0]) < 600
    return lines[0]


def test_broken_checkpoints_are_one_line(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "random.pt").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save({"w": torch.zeros(3)}, tmp_path / "bare.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    import pickle

    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(Evil()))
    torch.save({"x": argparse.Namespace(a=1)}, tmp_path / "objects.pt")

    good = small_checkpoint()
    broken = {
        "name_int": lambda c: c["model"].__setitem__("name", 5),
        "one_class": lambda c: (c.__setitem__("classes", ["a"]), c["model"].__setitem__("num_classes", 1)),
        "huge_input": lambda c: c["input"].__setitem__("size", [100000, 100000]),
        "no_model": lambda c: c.pop("model"),
        "nan_weights": lambda c: [v.fill_(float("nan")) for v in c["state_dict"].values()],
    }
    for name, f in broken.items():
        import copy

        c = copy.deepcopy(good)
        f(c)
        torch.save(c, tmp_path / f"{name}.pt")
    for f in sorted(tmp_path.glob("*.pt")):
        line = _one_line_exit_2(run_cli("info", f))
        assert str(f) in line
        if f.name == "bare.pt":
            assert "--init-weights" not in line and "state dict" in line
        if f.name in ("pickle.pt", "objects.pt"):
            assert "pickled" in line and "weights_only" not in line


def test_error_lines(tmp_path):
    assert "did you mean" in _one_line_exit_2(run_cli("predict", "--model", "fer_minixcepton", PHOTOS[0]))
    assert "no image or video" in _one_line_exit_2(run_cli("predict", tmp_path))
    # serve without the extra: one line naming it (the extra's modules made unimportable)
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None; "
        "from ferkit.cli import main; raise SystemExit(main(['serve']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "pip install 'ferkit[serve]'" in _one_line_exit_2(r)


def test_closed_stdout_ends_quietly():
    """`ferkit recipes | head -1`: the reader goes away; ferkit stops quietly with exit 0. The pipe's read end is
    closed before ferkit writes, so the write fails for certain (a real `| head` may race and win)."""
    code = (
        "import os, sys; r, w = os.pipe(); os.close(r); os.dup2(w, 1); from ferkit.cli import main; "
        "raise SystemExit(main(['recipes']))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stderr == "", p.stderr[-2000:]
    p = subprocess.run(" ".join(FERKIT) + " recipes | head -1", shell=True, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 1 and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------------ CLI help
def _walk(parser, path=()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def test_every_subcommand_has_examples_and_every_option_a_description():
    from ferkit.cli import build_parser

    missing = []
    for path, p in _walk(build_parser()):
        if path and "example" not in (p.epilog or ""):
            missing.append(("no examples", " ".join(path)))
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction, argparse._VersionAction)):
                continue
            if not a.help or a.help == argparse.SUPPRESS:
                missing.append((" ".join(path), a.option_strings or a.dest))
    assert not missing, missing


def test_progress_bars_only_on_a_terminal(tmp_path, synth_dir):
    r = run_cli(
        "evaluate", "--checkpoint", "fer_minixception", "--data", synth_dir, "--out", tmp_path / "e", "--class-map"
    )
    assert "\r" not in r.stderr, r.stderr[:500]


def test_file_names_that_are_not_utf8(tmp_path):
    """A photo whose name is not valid UTF-8: a row in the CSV on stdout and in a file, never a traceback."""
    import shutil

    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9_\xff.jpg")
    shutil.copy(PHOTOS[1], folder / name)
    strict = dict(os.environ, PYTHONIOENCODING="utf-8:strict", PYTHONUTF8="0")  # a UTF-8 terminal's settings
    r = subprocess.run(
        FERKIT + ["predict", str(folder), "--format", "csv", "--det-size", "320"],
        capture_output=True,
        timeout=300,
        env=strict,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr[-2000:]
    assert os.fsencode(str(folder / name)) in r.stdout and len(r.stdout.splitlines()) == 2
    r = subprocess.run(
        FERKIT + ["predict", str(folder), "--format", "csv", "--output", str(tmp_path / "o.csv")],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr[-2000:]
    assert len((tmp_path / "o.csv").read_bytes().splitlines()) == 2


# ------------------------------------------------------------------------------------------------ table cells
def _cells_match(got, want, col) -> bool:
    """One table cell against the value to_dict() gives it (an empty cell reads back as None or NaN)."""
    import math

    if want is None:
        return got is None or (isinstance(got, float) and math.isnan(got))
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        if not isinstance(got, (int, float, np.integer, np.floating)) or isinstance(got, bool):
            return False
        tol = 0.5 if col in ("x1", "y1", "x2", "y2") else 1e-3  # another process: last digits may differ
        return abs(float(got) - float(want)) <= tol
    return str(got) == str(want)


def test_every_cell_under_its_header_with_face_no_face_and_error_rows(tmp_path):
    """A photo with a face, a picture without one and an unreadable file: in CSV, Parquet and to_pandas() every cell
    of every row holds what to_dict() says for its column (a no-face/error row one cell too long or short shifts
    model, detector and the probabilities one column over)."""
    pytest.importorskip("pyarrow")
    import pandas as pd
    from PIL import Image

    import ferkit
    from ferkit.schema import table_columns

    blank, bad = tmp_path / "blank.png", tmp_path / "bad.jpg"
    Image.fromarray(np.full((240, 320, 3), 90, np.uint8)).save(blank)
    bad.write_text("not an image at all\n")
    files = [str(PHOTOS[1]), str(blank), str(bad)]
    res = ferkit.predict("fer_minixception", files)
    assert [r.status for r in res] == ["ok", "no_face", "error"] and len(res[0].faces) == 1
    classes = list(res[0].faces[0].probabilities)
    cols = table_columns(classes)
    want = []
    for r in res:
        d = r.to_dict()
        cells = dict.fromkeys(cols)
        cells.update(
            path=d["path"],
            status=d["status"],
            reason=d.get("reason"),
            kind=d["kind"],
            model=d["model"],
            detector=d["detector"],
        )
        if not d["faces"]:
            want.append(cells)
        for f in d["faces"]:
            x1, y1, x2, y2 = f["box"]
            want.append(
                {
                    **cells,
                    "face": f["face"],
                    "x1": x1,
                    "y1": y1,
                    "x2": x2,
                    "y2": y2,
                    "det_score": f["det_score"],
                    "label": f["label"],
                    "score": f["score"],
                    **{f"p_{c}": f["probabilities"][c] for c in classes},
                }
            )
    assert want[1]["model"] == want[2]["model"] == "fer_minixception" and want[2]["reason"]
    assert want[1]["detector"] == want[2]["detector"] == "retinaface@640"
    tables = {"to_pandas": res.to_pandas()}
    for fmt in ("csv", "parquet"):
        out = tmp_path / f"faces.{fmt}"
        r = run_cli("predict", "--model", "fer_minixception", *files, "--format", fmt, "--output", out, "--quiet")
        assert r.returncode == 2, r.stderr[-2000:]  # one file failed: exit 2, the table still written
        tables[fmt] = pd.read_csv(out, keep_default_na=False, na_values=[""]) if fmt == "csv" else pd.read_parquet(out)
    for name, df in tables.items():
        assert list(df.columns) == cols, name
        rows = df.to_dict("records")
        assert len(rows) == len(want), (name, len(rows))
        for i, (row, w) in enumerate(zip(rows, want, strict=True)):
            bad_cells = {c: (row[c], w[c]) for c in cols if not _cells_match(row[c], w[c], c)}
            assert not bad_cells, (name, i, bad_cells)


# ------------------------------------------------------------------------------------------------ run folders
def _run_folder(run: Path, classes: list[str]) -> dict:
    """A run folder whose best.pt (epoch 3, says class 0 for everything) and last.pt (epoch 5, class 1) differ in
    weights and metrics, as after training on past the best epoch; returns each file's sha256."""
    import hashlib

    sha = {}
    for name, epoch, cls in (("best.pt", 3, 0), ("last.pt", 5, 1)):
        bias_checkpoint(
            run / name, classes, [5.0 if i == cls else 0.0 for i in range(len(classes))], metrics={"epoch": epoch}
        )
        sha[name] = hashlib.sha256((run / name).read_bytes()).hexdigest()
    return sha


def test_a_run_folder_means_its_best_checkpoint_everywhere(tmp_path, synth_dir):
    """`ferkit evaluate --checkpoint runs/x`, `ferkit info runs/x` and the API's load_checkpoint, load_model, predict
    and export use runs/x/best.pt, not the newer last.pt (refs: "a run folder: its best.pt (else last.pt)"); the CLI's
    predict/export take the same resolver."""
    import ferkit
    from ferkit import checkpoint

    classes = ferkit.load_dataset(str(synth_dir)).classes
    run = tmp_path / "run"
    sha = _run_folder(run, classes)
    # the API (and ferkit.checkpoint's own reader) read best.pt
    assert ferkit.load_checkpoint(run)["metrics"]["epoch"] == 3
    assert checkpoint.read_checkpoint(run)["metrics"]["epoch"] == 3
    for model, ck in (ferkit.load_model(run), checkpoint.load_model(run)):
        assert ck["metrics"]["epoch"] == 3 and int(model.head.bias.argmax()) == 0
    face = min((synth_dir / "images").iterdir())
    assert ferkit.predict(run, [face], detect=False)[0].faces[0].label == classes[0]
    pytest.importorskip("onnx")
    assert Path(ferkit.export(run)).name == "best.onnx"
    # the CLI the same way
    r = run_cli("info", run, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["metrics"]["epoch"] == 3, r.stderr[-2000:]
    r = run_cli("evaluate", "--checkpoint", run, "--data", synth_dir, "--out", tmp_path / "ev", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["checkpoint"]["sha256"] == sha["best.pt"] and Path(metrics["checkpoint"]["path"]).name == "best.pt"
    with open(tmp_path / "ev" / "predictions.csv", newline="") as f:
        preds = list(csv.DictReader(f))
    assert preds and {p["pred"] for p in preds} == {classes[0]}, preds[:3]
    # without best.pt (a run killed before its first best), the folder means last.pt
    (run / "best.pt").unlink()
    assert ferkit.load_checkpoint(run)["metrics"]["epoch"] == checkpoint.read_checkpoint(run)["metrics"]["epoch"] == 5


def test_cli_analyzer_flags_reach_the_analyzer():
    """`ferkit predict --detector mtcnn --det-size 320 --crop box` gives what the API gives with the same settings,
    and not what the defaults give: no flag silently dropped on the way."""
    import ferkit

    photo = str(PHOTOS[0])  # five faces, some of them not sure: box and aligned crops differ clearly
    r = run_cli(
        "predict",
        photo,
        "--model",
        "fer_minixception",
        "--detector",
        "mtcnn",
        "--det-size",
        "320",
        "--crop",
        "box",
        "--quiet",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    cli = json.loads(r.stdout)
    box = ferkit.predict("fer_minixception", [photo], detector="mtcnn", det_size=320, crop="box")[0].to_dict()
    aligned = ferkit.predict("fer_minixception", [photo], detector="mtcnn", det_size=320)[0].to_dict()
    assert cli["detector"] == box["detector"] == "mtcnn@320" and len(cli["faces"]) == len(box["faces"]) == 5

    def probs(res):
        return np.array([[f["probabilities"][c] for c in sorted(f["probabilities"])] for f in res["faces"]])

    for fc, fb in zip(cli["faces"], box["faces"], strict=True):
        assert np.abs(np.subtract(fc["box"], fb["box"])).max() <= 1
    assert np.abs(probs(cli) - probs(box)).max() < 1e-4
    assert np.abs(probs(box) - probs(aligned)).max() > 0.05  # the premise: --crop box changes the results
