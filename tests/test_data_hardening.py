"""Hostile dataset inputs, one test per case: each ends in a one-line DataError or a skip listed in problems.

Every file is written here on disk; nothing of ferkit is mocked.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferkit.data import load_dataset
from ferkit.data.idx import write_idx
from ferkit.errors import DataError, quote


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


def one_line(e) -> str:
    msg = str(e.value if hasattr(e, "value") else e)
    assert "\n" not in msg and len(msg) <= 400, msg[:2000]
    return msg


def _img(path, value, side=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((side, side), value, np.uint8)).save(path)


# ------------------------------------------------------------------------------------------------ affectnet
def _affectnet(root, n=4):
    (root / "annotations").mkdir(parents=True)
    for i in range(n):
        _img(root / "images" / f"{i}.png", 30 * i + 10)
        np.save(root / "annotations" / f"{i}_exp.npy", np.array(str(i % 3)))
    return root / "annotations"


def _npy_header_only(path, shape):
    """A .npy whose header claims ``shape`` float64 values, followed by 8 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": shape})
        f.write(b"\0" * 8)


@pytest.mark.parametrize(
    "case, needle",
    [
        ("npz", ".npz"),
        ("empty", "empty file"),
        ("huge", "header claims 1,000,000,000,000 values"),
    ],
)
def test_affectnet_bad_exp_npy_is_a_listed_skip(tmp_path, case, needle):
    ann = _affectnet(tmp_path / "a")
    bad = ann / "1_exp.npy"
    if case == "npz":
        with open(bad, "wb") as f:
            np.savez(f, exp=np.array(3))
    elif case == "empty":
        bad.write_bytes(b"")
    else:
        _npy_header_only(bad, (10**6, 10**6))
    t = time.monotonic()
    ds = load_dataset(tmp_path / "a", quiet=True, val_fraction=0.0, test_fraction=0.0)
    assert time.monotonic() - t < 20
    assert len(ds.split("train")) == 3
    [p] = [p for p in ds.problems if p.path == str(bad)]
    assert needle in p.reason and len(p.reason) < 300, p.reason


@pytest.mark.parametrize(
    "which, content, needle",
    [
        ("splits.csv", "id,split\n0,train\n1,tr\xe9in\n".encode("latin-1"), "is not UTF-8"),
        ("splits.csv", b"\x00\x01\x02binary\xff\xfe" * 100, "binary file"),
        ("splits.csv", b"id,split\n0,train\n1," + b"x" * 200_000 + b"\n", "not a readable CSV"),
        ("identities.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
        ("identities.csv", b"id,identity\n0,1\n1," + b"9" * 30 + b"\n", "out of range"),
        ("identities.csv", b"id,identity\n0,1\n1," + b"7" * 200_000 + b"\n", "not a readable CSV"),
    ],
)
def test_affectnet_bad_side_csv_is_one_line(tmp_path, which, content, needle):
    root = tmp_path / "a"
    _affectnet(root)
    (root / which).write_bytes(content)
    with pytest.raises(DataError) as e:
        load_dataset(root, quiet=True)
    msg = one_line(e)
    assert which in msg and needle in msg, msg


# ------------------------------------------------------------------------------------------------ idx
def _mnist(d, x_train=None, y_train=None, x_test=None, y_test=None):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    x_train = rng.integers(0, 256, (20, 28, 28)).astype(np.uint8) if x_train is None else x_train
    y_train = (np.arange(len(x_train)) % 10).astype(np.uint8) if y_train is None else y_train
    write_idx(d / "train-images-idx3-ubyte", x_train)
    write_idx(d / "train-labels-idx1-ubyte", y_train)
    if x_test is not None:
        write_idx(d / "t10k-images-idx3-ubyte", x_test)
        write_idx(
            d / "t10k-labels-idx1-ubyte", (np.arange(len(x_test)) % 10).astype(np.uint8) if y_test is None else y_test
        )
    return d


def _float_labels(v):
    y = (np.arange(20) % 10).astype(np.float64)
    y[7] = v
    return y


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(y_train=_float_labels(np.nan)), "label nan at index 7 is not a whole number"),
        (dict(y_train=_float_labels(1e30)), "label 1e+30 at index 7 is not a whole number"),
        (dict(y_train=_float_labels(1.5)), "label 1.5 at index 7 is not a whole number"),
        (dict(x_train=np.zeros((20, 0, 0), np.uint8)), "hold no pixels"),
        (dict(x_train=np.zeros((0, 28, 28), np.uint8), y_train=np.zeros(0, np.uint8)), "holds no images"),
        (dict(x_test=np.zeros((10, 20, 20), np.uint8)), "but the train images are 28x28x1"),
        (dict(y_train=np.r_[np.arange(19) % 10, 2_000_000_000].astype(np.int32)), "labels go up to 2,000,000,000"),
        (dict(y_train=np.r_[np.arange(19) % 10, 1_000_000].astype(np.int32)), "labels go up to 1,000,000"),
        (dict(x_train=np.zeros((20, 3, 3), np.uint8)), "images are 3x3 pixels, below the minimum of 8x8"),
    ],
)
def test_idx_bad_content_is_one_line(tmp_path, kw, needle):
    d = _mnist(tmp_path / "mnist", **kw)
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        load_dataset(d, quiet=True)
    assert time.monotonic() - t < 20
    msg = one_line(e)
    assert needle in msg, msg


def test_tiny_images_load_when_upsampled(tmp_path):
    d = _mnist(tmp_path / "mnist", x_train=np.arange(20 * 4).reshape(20, 2, 2).astype(np.uint8))
    with pytest.raises(DataError, match=r"2x2 pixels.*image_size=48"):
        load_dataset(d, quiet=True)
    assert load_dataset(d, quiet=True, image_size=16).image_size == (16, 16)
    csv = tmp_path / "tiny.csv"
    csv.write_text("emotion,pixels\n" + "".join(f"{i % 7},{' '.join(['9'] * 9)}\n" for i in range(10)))
    with pytest.raises(DataError, match="3x3 pixels"):
        load_dataset(csv, quiet=True)


# ------------------------------------------------------------------------------------------------ folder
def _faces(root):
    for c, base in (("happy", 10), ("sad", 120)):
        for i in range(3):
            _img(root / c / f"{c}{i}.png", base + 20 * i)
    return root


def test_folder_symlink_loops_and_links_across_classes_are_skipped(tmp_path):
    root = _faces(tmp_path / "faces")
    os.symlink(".", root / "happy" / "loop")
    os.symlink("../sad", root / "happy" / "up")
    os.symlink("../sad/sad0.png", root / "happy" / "stolen.png")
    os.symlink("happy0.png", root / "happy" / "again.png")
    ds = load_dataset(root, quiet=True, val_fraction=0.0, test_fraction=0.0)
    tr = ds.split("train")
    assert len(tr) == 6
    by_class = {
        c: sorted(os.path.basename(i) for i, y in zip(tr.ids, tr.labels, strict=True) if ds.classes[y] == c)
        for c in ds.classes
    }
    assert by_class == {
        "happy": ["happy0.png", "happy1.png", "happy2.png"],
        "sad": ["sad0.png", "sad1.png", "sad2.png"],
    }
    skipped = {os.path.basename(p.path): p.reason for p in ds.problems}
    assert "loop" in skipped and "up" in skipped and "stolen.png" in skipped and "again.png" in skipped, skipped


def test_folder_class_linked_to_parent_or_root_is_skipped(tmp_path):
    outside = tmp_path / "elsewhere"
    for i in range(5):
        _img(outside / "x" / f"{i}.png", i)
    root = _faces(tmp_path / "faces")
    os.symlink("..", root / "up")  # a class folder pointing out of the dataset
    os.symlink(".", root / "all")  # a class folder holding every other class folder
    ds = load_dataset(root, quiet=True, val_fraction=0.0, test_fraction=0.0)
    assert ds.classes == ["happy", "sad"] and len(ds.split("train")) == 6
    reasons = {os.path.basename(p.path): p.reason for p in ds.problems}
    assert "out of the dataset folder" in reasons["up"] and "other class folders" in reasons["all"], reasons


def test_folder_newline_in_a_class_name_keeps_the_error_on_one_line(tmp_path):
    """Found by the fuzzer (seed 7, case 663): a file name with a newline split the error over two lines."""
    bad = tmp_path / "faces" / "x\ny"
    bad.mkdir(parents=True)
    (bad / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "faces", quiet=True)
    assert "x\\ny/0.png: not an image" in one_line(e)


_UNREADABLE = """
import json, sys
from ferkit.data import load_dataset
ds = load_dataset(sys.argv[1], quiet=True, val_fraction=0.0, test_fraction=0.0)
print(json.dumps({"n": len(ds.split("train")), "problems": [[p.path, p.reason] for p in ds.problems]}))
"""


def _without_root_file_powers():
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that root, once it
    execs, obeys file permissions like anyone else (prctl PR_CAPBSET_DROP = 24)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_folder_unreadable_subfolder_is_reported(tmp_path):
    """A chmod 000 folder is listed in problems, not a PermissionError. Root reads it anyway, so the load runs
    in a child process without root's power to ignore permissions."""
    import json
    import subprocess
    import sys

    root = _faces(tmp_path / "faces")
    locked = root / "happy" / "locked"
    _img(locked / "x.png", 1)
    locked.chmod(0)
    env = dict(
        os.environ,
        FERKIT_CACHE_DIR=str(tmp_path / "cache"),
        PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"),
    )
    try:
        r = subprocess.run(
            [sys.executable, "-c", _UNREADABLE, str(root)],
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=_without_root_file_powers if os.geteuid() == 0 else None,
            timeout=300,
        )
    except subprocess.SubprocessError as e:
        pytest.skip(f"cannot drop root's file capabilities here ({e})")
    finally:
        locked.chmod(0o755)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["n"] == 6
    assert [str(locked), "skipped: cannot list this folder (Permission denied)"] in out["problems"], out


# ------------------------------------------------------------------------------------------------ quoting
def test_quote_cuts_long_user_data_to_one_line():
    assert quote("abc") == "'abc'"
    q = quote("x\n" * 100_000)
    assert "\n" not in q and len(q) < 260 and "200,000 characters in all" in q
    assert len(quote(b"\xff" * 10**6)) < 260
