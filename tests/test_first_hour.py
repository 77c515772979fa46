"""A newcomer's first hour (issue 21): a light install without torch, fast one-line answers, identity columns in
tables, and a wrong file given as a checkpoint named for what it is."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ferkit.cli import main

DATA = Path(__file__).parent / "data"


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
    want = {"face.png": "is a PNG image", "notes.pt": "is a text file", "weights.zip": "is a zip archive",
            "run.tar": "is a tar archive"}
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

    import ferkit
    from conftest import run_cli

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
