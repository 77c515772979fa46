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
