"""``ferkit.data.fetch``: placed datasets are found without network; downloads fail fast with one line offline.

These tests run with no network: the real download code runs and fails (DNS), and must say which file to get,
from where, and where to put it. A machine with network would download instead, so they skip there.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from PIL import Image

from ferkit.data import load_dataset
from ferkit.data.fetch import DATASETS, FERPLUS_URL, fetch_dataset, list_datasets
from ferkit.data.idx import write_idx
from ferkit.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FERKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FERKIT_FETCH_TIMEOUT", "3")


def _online() -> bool:
    try:
        socket.create_connection(("raw.githubusercontent.com", 443), timeout=2).close()
        return True
    except OSError:
        return False


offline_only = pytest.mark.skipif(_online(), reason="this machine can reach the internet")


def _fer_csv(path, n=14, side=48):
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    usages = ["Training"] * (n - 4) + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    with open(path, "w") as f:
        f.write("emotion,pixels,Usage\n")
        for i in range(n):
            f.write(f"{i % 7},{' '.join(map(str, rng.integers(0, 256, side * side)))},{usages[i]}\n")


def _class_tree(root, splits, classes=("happy", "sad"), n=2, ext="png"):
    for s in splits:
        for c in classes:
            (root / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(np.full((48, 48), 40 * i + 20, np.uint8)).save(root / s / c / f"{i}.{ext}")


def _idx(d):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", 20), ("t10k", 10)):
        write_idx(d / f"{part}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(d / f"{part}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))


def _assert_one_line(msg, *needles):
    assert "\n" not in msg and len(msg) < 600, msg
    for n in needles:
        assert str(n) in msg, (n, msg)


# ------------------------------------------------------------------------------------------------ offline
@offline_only
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_torchvision_download_offline_fails_fast_naming_url_and_folder(tmp_path, name):
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        fetch_dataset(name)
    assert time.monotonic() - t < 30
    sub = "MNIST" if name == "mnist" else "FashionMNIST"
    _assert_one_line(
        str(e.value),
        f"from {DATASETS[name].url} into {tmp_path / 'data' / name / sub / 'raw'}",
        "t10k-labels-idx1-ubyte.gz",
    )
    assert not list((tmp_path / "data").glob(".*.tmp")), "the staging folder is cleaned up"
    # nothing half-written is left to pass for a placed dataset
    assert not (tmp_path / "data" / name).exists()


@offline_only
def test_ferplus_label_download_offline_names_github_url_and_target(tmp_path):
    _fer_csv(tmp_path / "data" / "fer2013" / "fer2013.csv")
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        fetch_dataset("ferplus")
    assert time.monotonic() - t < 30
    _assert_one_line(str(e.value), FERPLUS_URL, tmp_path / "data" / "ferplus" / "fer2013new.csv")


def test_ferplus_without_fer2013_csv_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as e:
        fetch_dataset("ferplus")
    _assert_one_line(str(e.value), "kaggle.com", tmp_path / "data" / "ferplus" / "fer2013.csv")


@pytest.mark.parametrize("name", ["fer2013", "face-expression"])
def test_kaggle_without_kagglehub_or_network_names_page_and_folder(tmp_path, name):
    try:
        import kagglehub  # noqa: F401

        if _online():
            pytest.skip("kagglehub installed and online: this would download")
    except ImportError:
        pass
    with pytest.raises(DataError) as e:
        fetch_dataset(name)
    _assert_one_line(str(e.value), DATASETS[name].url, tmp_path / "data" / name)


def test_unknown_name_and_list(tmp_path):
    with pytest.raises(ConfigError, match="fashion-mnist"):
        fetch_dataset("imagenet")
    rows = list_datasets()
    assert [r["name"] for r in rows] == list(DATASETS)
    assert all(r["url"].startswith("http") and r["licence"] and not r["placed"] for r in rows)
    assert rows[0]["path"] == str(tmp_path / "data" / "fer2013")


# ------------------------------------------------------------------------------------------------ placed
def test_placed_fer2013_csv_and_kaggle_folders(tmp_path):
    _fer_csv(tmp_path / "data" / "fer2013" / "fer2013.csv")
    p = fetch_dataset("fer2013")
    assert p == tmp_path / "data" / "fer2013" / "fer2013.csv"
    assert len(load_dataset(p, quiet=True).split("train")) == 10
    other = tmp_path / "other"
    _class_tree(other / "fer2013", ["train", "test"])
    p = fetch_dataset("fer2013", root=other)
    assert p == other / "fer2013"
    ds = load_dataset(p, quiet=True)
    assert ds.classes == ["happy", "sad"] and len(ds.split("test")) == 4


def test_placed_face_expression_images_train_validation(tmp_path):
    _class_tree(tmp_path / "data" / "face-expression" / "images", ["train", "validation"], ext="jpg")
    p = fetch_dataset("face-expression")
    assert p == tmp_path / "data" / "face-expression" / "images"
    assert len(load_dataset(p, quiet=True).split("val")) == 4
    assert {r["name"]: r["placed"] for r in list_datasets()}["face-expression"]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_placed_idx_in_torchvision_layout(tmp_path, name):
    d = tmp_path / "data" / name / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    _idx(d)
    p = fetch_dataset(name)
    assert p == d
    ds = load_dataset(p, quiet=True)
    assert len(ds.split("test")) == 10
    assert ds.classes[0] == ("0" if name == "mnist" else "T-shirt/top")


def test_placed_broken_dataset_is_one_line_error(tmp_path):
    d = tmp_path / "data" / "fer2013"
    d.mkdir(parents=True)
    (d / "fer2013.csv").write_text("label," + "x" * 5000 + "\n1,2\n")
    with pytest.raises(DataError) as e:
        fetch_dataset("fer2013")
    _assert_one_line(str(e.value), "fer2013.csv", "--force")


def test_ferplus_built_from_placed_label_csv_without_network(tmp_path):
    data = tmp_path / "data"
    _fer_csv(data / "fer2013" / "fer2013.csv", n=6)
    head = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
    rows = [
        "Training,fer0000000.png,10,0,0,0,0,0,0,0,0,0",  # neutral
        "Training,fer0000001.png,0,6,4,0,0,0,0,0,0,0",  # happiness
        "Training,fer0000002.png,0,5,5,0,0,0,0,0,0,0",  # no majority: dropped
        "Training,,0,0,0,0,0,0,0,0,0,10",  # not a face: dropped
        "PublicTest,fer0000004.png,0,0,0,9,0,0,0,0,1,0",  # sadness
        "PrivateTest,fer0000005.png,0,0,0,0,0,0,0,0,8,2",
    ]  # unknown: dropped
    (data / "ferplus").mkdir(parents=True)
    (data / "ferplus" / "fer2013new.csv").write_text(head + "\n".join(rows) + "\n")
    p = fetch_dataset("ferplus")
    assert p == data / "ferplus" / "images"
    assert sorted(q.relative_to(p).as_posix() for q in p.rglob("*.png")) == [
        "train/happiness/fer00001.png",
        "train/neutral/fer00000.png",
        "val/sadness/fer00004.png",
    ]
    assert fetch_dataset("ferplus") == p  # now placed: returned as is
    ds = load_dataset(p, quiet=True, val_fraction=0.0, test_fraction=0.0)
    assert ds.classes == ["happiness", "neutral", "sadness"]
