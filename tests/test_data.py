"""Dataset formats, the decode-once cache, relabelling and inspection, on real files written here."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from PIL import Image

from ferkit.data import detect_format, format_inspection, inspect_dataset, load_dataset
from ferkit.data.affectnet import AFFECTNET_CLASSES, load_affectnet
from ferkit.data.cache import entry_dir
from ferkit.data.fer2013 import FER2013_CLASSES, load_fer2013
from ferkit.data.folder import load_folder
from ferkit.data.idx import FASHION_CLASSES, load_idx, read_idx, write_idx
from ferkit.data.relabel import parse_mapping, relabel, subset_classes
from ferkit.errors import ConfigError, DataError


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------------ writers
def write_fer_csv(path, labels, usages=None, side=48, seed=0, header=None):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(len(labels), side * side))
    cols = header or ("emotion,pixels,Usage" if usages is not None else "emotion,pixels")
    with open(path, "w") as f:
        f.write(cols + "\n")
        for i, y in enumerate(labels):
            row = f"{y},{' '.join(map(str, pixels[i]))}"
            if usages is not None:
                row += f",{usages[i]}"
            f.write(row + "\n")
    return pixels.astype(np.uint8).reshape(-1, side, side)


def save_img(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def grey(side, value):
    return np.full((side, side), value, dtype=np.uint8)


def colour(side, rgb):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (side, side, 3)).copy()


def write_affectnet(root, specs, lnd=True, splits=None):
    """specs: list of (id, exp, val, aro); image i is grey level 10*i, 40x40."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i, (sid, exp, val, aro) in enumerate(specs):
        save_img(root / "images" / f"{sid}.jpg", grey(40, 10 * i + 5), quality=95)
        a = root / "annotations"
        if exp is not None:
            np.save(a / f"{sid}_exp.npy", np.array(str(exp)))  # AffectNet stores strings
        np.save(a / f"{sid}_val.npy", np.array(str(val)))
        np.save(a / f"{sid}_aro.npy", np.float64(aro))
        if lnd:
            np.save(a / f"{sid}_lnd.npy", np.tile(np.array([20.0, 10.0]), 68).astype(str))
    if splits:
        (root / "splits.csv").write_text("id,split\n" + "".join(f"{k},{v}\n" for k, v in splits.items()))


# ------------------------------------------------------------------------------------------------ FER2013
def test_fer2013_usage_splits_and_pixels(tmp_path):
    labels = [i % 7 for i in range(30)]
    usages = ["PrivateTest", "Training", "PublicTest"] * 10
    px = write_fer_csv(tmp_path / "fer.csv", labels, usages)
    ds = load_fer2013(tmp_path / "fer.csv", quiet=True)
    assert ds.format == "fer2013" and ds.classes == FER2013_CLASSES
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 10, "val": 10, "test": 10}
    tr = ds.split("train")
    assert tr.images.shape == (10, 48, 48, 1) and tr.images.dtype == np.uint8
    # ids are "file:line" with the header on line 1: training rows are data rows 2, 5, 8, ... -> lines 3, 6, ...
    assert tr.ids[0] == "fer.csv:3"
    assert np.array_equal(tr.images[0, :, :, 0], px[1]) and tr.labels[0] == labels[1]
    assert np.array_equal(ds.split("test").labels, [labels[i] for i in range(0, 30, 3)])
    assert ds.channels == 1 and ds.image_size == (48, 48)


def test_fer2013_without_usage_seeded_split_and_resize(tmp_path):
    labels = [i % 7 for i in range(140)]
    write_fer_csv(tmp_path / "train.csv", labels)
    a = load_fer2013(tmp_path / "train.csv", seed=1, quiet=True)
    b = load_fer2013(tmp_path / "train.csv", seed=1, quiet=True, cache=False)
    c = load_fer2013(tmp_path / "train.csv", seed=2, quiet=True)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 112, "val": 14, "test": 14}
    assert np.array_equal(a.histogram("val"), [2] * 7)  # stratified
    assert a.split("val").ids == b.split("val").ids != c.split("val").ids
    r = load_fer2013(tmp_path / "train.csv", image_size=32, channels=3, quiet=True)
    assert r.split("train").images.shape == (112, 32, 32, 3)


@pytest.mark.parametrize(
    "bad_row, needle",
    [
        ("3," + " ".join(["1"] * 2303) + ",Training", "line 3: 2303 pixel values, expected 2304"),
        ("3," + " ".join(["1"] * 2303) + " x,Training", "line 3: pixel value 'x' is not an integer"),
        ("3," + " ".join(["1"] * 2303) + " 256,Training", "line 3: pixel value 256 is outside 0-255"),
        ("7," + " ".join(["1"] * 2304) + ",Training", "line 3: emotion 7 is out of range 0-6"),
        ("a," + " ".join(["1"] * 2304) + ",Training", "line 3: emotion 'a' is not an integer"),
        ("3," + " ".join(["1"] * 2304) + ",Holdout", "line 3: Usage 'Holdout'"),
        ("3", "line 3: 1 field(s), expected 3"),
    ],
)
def test_fer2013_malformed_row_names_file_and_line(tmp_path, bad_row, needle):
    good = "0," + " ".join(["7"] * 2304) + ",Training"
    p = tmp_path / "bad.csv"
    p.write_text("emotion,pixels,Usage\n" + good + "\n" + bad_row + "\n" + good + "\n")
    with pytest.raises(DataError) as e:
        load_fer2013(p, quiet=True)
    msg = str(e.value)
    assert str(p) in msg and needle in msg and "\n" not in msg


def test_fer2013_wrong_columns(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("label,image\n1,2 3\n")
    with pytest.raises(DataError, match=r"columns found: 'label, image'; expected: emotion, pixels, Usage"):
        load_dataset(p, quiet=True)
    q = tmp_path / "test.csv"
    q.write_text("pixels,Usage\n1 2 3 4,PublicTest\n")
    with pytest.raises(DataError, match=r"no 'emotion' \(or 'label'\) column"):
        load_fer2013(q, quiet=True)


def test_fer2013_label_column_is_an_alias_of_emotion(tmp_path):
    p = tmp_path / "train.csv"
    px = write_fer_csv(p, [i % 7 for i in range(14)], header="label,pixels")
    ds = load_dataset(p, quiet=True, val_fraction=0.0, test_fraction=0.0)
    assert sorted(ds.split("train").labels.tolist()) == sorted(i % 7 for i in range(14))
    assert ds.split("train").images.shape == (14, 48, 48, 1) and px.shape == (14, 48, 48)


def test_fer2013_huge_header_is_quoted_short(tmp_path):
    p = tmp_path / "wide.csv"
    p.write_text(",".join(f"column{i}" for i in range(100_000)) + "\n1,2\n")  # ~1 MB header
    with pytest.raises(DataError) as e:
        load_dataset(p, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and len(msg) < 500 and "characters in all" in msg, msg[:1000]
    q = tmp_path / "wide2.csv"
    q.write_text("emotion,pixels," + ",".join(f"c{i}" for i in range(100_000)) + "\n1,2\n")
    with pytest.raises(DataError) as e:
        load_dataset(q, quiet=True)
    assert "line 2: 2 field(s)" in str(e.value) and len(str(e.value)) < 500


# ------------------------------------------------------------------------------------------------ folder
def test_folder_split_dirs_grey_default_size(tmp_path):
    root = tmp_path / "faces"
    for split, n in (("train", 4), ("validation", 2), ("test", 2)):
        for c, v in (("angry", 30), ("happy", 200)):
            for i in range(n):
                save_img(root / split / c / f"{i}.png", grey(40, v + i))
    (root / "train" / "sad").mkdir()  # empty class folder still counts
    (root / "train" / "notes.txt").write_text("ignored")
    ds = load_folder(root, quiet=True)
    assert ds.classes == ["angry", "happy", "sad"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 4, "test": 4}
    assert ds.image_size == (40, 40) and ds.channels == 1  # most common square size, grey
    assert np.array_equal(ds.histogram("train"), [4, 4, 0])
    tr = ds.split("train")
    assert int(tr.images[0].mean()) == 30 and tr.labels[0] == 0
    assert not ds.problems


def test_folder_colour_flat_classes_seeded_split_and_me_not_me(tmp_path):
    root = tmp_path / "verify"
    for i in range(10):
        save_img(root / "me" / f"{i}.jpg", colour(64, (200, 20, 20)), quality=95)
        save_img(root / "not_me" / f"{i}.png", grey(64 if i < 8 else 32, 90))
    ds = load_dataset(root, seed=3, quiet=True)
    assert ds.format == "folder" and ds.classes == ["me", "not_me"]
    assert ds.channels == 3  # one colour image is enough
    assert ds.image_size == (64, 64)  # all square: the most common side
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 16, "val": 2, "test": 2}
    assert np.array_equal(ds.histogram("val"), [1, 1])
    r = relabel(ds, "not_me=not_me,me=me")  # reorder: me becomes label 1 as in source 000
    assert r.classes == ["not_me", "me"] and np.array_equal(r.histogram("train"), [8, 8])
    g = load_folder(root, channels=1, image_size=(24, 20), quiet=True)
    assert g.split("train").images.shape[1:] == (24, 20, 1)


def test_folder_train_test_only_carves_val_and_non_square_defaults_to_48(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 20), ("test", 4)):
        for c in ("a", "b"):
            for i in range(n):
                save_img(root / split / c / f"{i}.bmp", np.zeros((30, 20), np.uint8))
    ds = load_folder(root, val_fraction=0.2, quiet=True)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 32, "val": 8, "test": 8}
    assert ds.image_size == (48, 48)
    import shutil

    shutil.rmtree(root / "test")  # train only: val and test are both carved
    only = load_folder(root, val_fraction=0.1, test_fraction=0.2, quiet=True)
    assert {k: len(v) for k, v in only.splits.items()} == {"train": 28, "val": 4, "test": 8}


def test_folder_bad_files_are_skipped_with_problems(tmp_path):
    root = tmp_path / "bad"
    for c in ("happy", "sad"):
        for i in range(5):
            save_img(root / c / f"ok{i}.jpg", grey(16, 100), quality=95)
    good = (root / "happy" / "ok0.jpg").read_bytes()
    (root / "happy" / "corrupt.jpg").write_bytes(good[:20] + b"\x00garbage" * 40)
    (root / "happy" / "empty.png").write_bytes(b"")
    buf = root / "sad" / "trunc.png"
    save_img(buf, np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8))
    buf.write_bytes(buf.read_bytes()[:200])
    (root / "sad" / "text.jpg").write_text("this is not an image\n" * 10)
    ds = load_folder(root, quiet=True)
    assert sum(len(s) for s in ds.splits.values()) == 10
    bad = {os.path.basename(p.path): p.reason for p in ds.problems}
    assert set(bad) == {"corrupt.jpg", "empty.png", "trunc.png", "text.jpg"}
    assert "0 bytes" in bad["empty.png"] and "truncated" in bad["trunc.png"]
    # the same when size/channels are given (no header scan: failures show up at decode)
    ds2 = load_folder(root, image_size=16, channels=1, quiet=True)
    assert len(ds2.problems) == 4 and sum(len(s) for s in ds2.splits.values()) == 10


def test_folder_all_unreadable_is_an_error_and_16bit_png_is_scaled(tmp_path):
    root = tmp_path / "nothing"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"none of the 2 image files can be read \(first: .*empty file"):
        load_folder(root, quiet=True)
    deep = tmp_path / "deep"
    for c, v in (("a", 1000), ("b", 60000)):
        save_img(deep / c / "x.png", np.full((8, 8), v, dtype=np.uint16))
    ds = load_folder(deep, val_fraction=0, test_fraction=0, quiet=True)
    assert ds.channels == 1 and ds.split("train").images[:, 0, 0, 0].tolist() == [1000 >> 8, 60000 >> 8]


def test_folder_exif_orientation(tmp_path):
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :20] = 255  # left half white
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the left half ends up on top
    p = tmp_path / "rot" / "a" / "x.jpg"
    p.parent.mkdir(parents=True)
    im.save(p, exif=exif.tobytes(), quality=95)
    save_img(tmp_path / "rot" / "b" / "y.jpg", arr, quality=95)
    ds = load_folder(tmp_path / "rot", image_size=40, val_fraction=0, test_fraction=0, quiet=True)
    x = ds.split("train").images[0, :, :, 0].astype(float)
    assert x[:20].mean() > 200 and x[20:].mean() < 50


# ------------------------------------------------------------------------------------------------ AffectNet
def test_affectnet_annotations_problems_and_splits(tmp_path):
    root = tmp_path / "affect"
    specs = [(str(i), i % 7, round(-0.9 + 0.05 * i, 3), 0.5) for i in range(20)]
    specs += [("20", 9, 0.1, 0.1), ("21", 2, -2, 0.3), ("22", None, 0.0, 0.0)]
    write_affectnet(root, specs)
    (root / "images" / "23.jpg").write_bytes(b"not a jpeg at all")
    for kind, v in (("exp", "1"), ("val", "0"), ("aro", "0"), ("lnd", np.zeros(136))):
        np.save(root / "annotations" / f"23_{kind}.npy", np.asarray(v))
    ds = load_dataset(root, seed=0, quiet=True)
    assert ds.format == "affectnet" and ds.classes == AFFECTNET_CLASSES[:7]  # labels 0-6 only: 7 classes
    assert ds.has_va and sum(len(s) for s in ds.splits.values()) == 20
    reasons = " | ".join(str(p) for p in ds.problems)
    assert "expression 9 outside 0-7" in reasons and "valence -2 outside [-1, 1]" in reasons
    assert "22_exp.npy" in reasons and "23.jpg" in reasons
    assert len(ds.problems) == 4
    s = ds.split("train")
    k = s.ids.index(str(root / "images" / "5.jpg"))
    assert s.labels[k] == 5 and s.valence[k] == pytest.approx(-0.65) and s.arousal[k] == pytest.approx(0.5)
    assert s.images.shape[1:] == (40, 40, 1)
    assert s.landmarks.shape[1:] == (68, 2) and np.allclose(s.landmarks[k, 0], [20.0, 10.0])
    small = load_affectnet(root, image_size=20, quiet=True)  # landmarks follow the resize
    assert np.allclose(small.split("train").landmarks[0, 0], [10.0, 5.0])


def test_affectnet_splits_csv_and_eight_classes(tmp_path):
    root = tmp_path / "an"
    specs = [(f"im{i}", i % 8, 0.0, 0.0) for i in range(16)]
    splits = {f"im{i}": ("train" if i < 10 else "val" if i < 13 else "test") for i in range(16)}
    write_affectnet(root, specs, lnd=False, splits=splits)
    ds = load_affectnet(root, quiet=True)
    assert ds.classes == AFFECTNET_CLASSES and ds.num_classes == 8
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 10, "val": 3, "test": 3}
    assert ds.split("train").landmarks is None
    (root / "splits.csv").write_text("id,split\nim0,holdout\n")
    with pytest.raises(DataError, match=r"splits.csv: line 2: split 'holdout'"):
        load_affectnet(root, quiet=True)


def test_affectnet_split_subfolders_and_identities(tmp_path):
    root = tmp_path / "AffectNet"
    write_affectnet(root / "train_set", [(str(i), i % 2, 0.1, 0.2) for i in range(20)], lnd=False)
    write_affectnet(root / "val_set", [(str(i), i % 2, 0.1, 0.2) for i in range(20, 24)], lnd=False)
    (root / "train_set" / "identities.csv").write_text("id,identity\n1,7\n")  # only at ROOT counts
    (root / "identities.csv").write_text("id,identity\n" + "".join(f"{i},{i // 4}\n" for i in range(24)))
    assert detect_format(root) == "affectnet"
    ds = load_dataset(root, quiet=True)
    assert ds.classes == ["neutral", "happy"]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 18, "val": 4, "test": 2}  # test carved
    te = ds.split("val")
    assert all("val_set" in i for i in te.ids)
    assert te.identities.tolist() == [int(os.path.basename(i)[:-4]) // 4 for i in te.ids]


# ------------------------------------------------------------------------------------------------ IDX
def _write_mnist(d, gz, n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    sfx = ".gz" if gz else ""
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = (np.arange(n_train) % 10).astype(np.uint8)
    write_idx(d / f"train-images-idx3-ubyte{sfx}", xtr)
    write_idx(d / f"train-labels-idx1-ubyte{sfx}", ytr)
    write_idx(d / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8))
    write_idx(d / f"t10k-labels-idx1-ubyte{sfx}", (np.arange(n_test) % 10).astype(np.uint8))
    return xtr, ytr


@pytest.mark.parametrize("gz", [False, True])
def test_idx_raw_and_gzipped(tmp_path, gz):
    d = tmp_path / "mnist"
    xtr, ytr = _write_mnist(d, gz, n_train=100)
    assert np.array_equal(read_idx(next(d.glob("train-images*"))), xtr)
    assert detect_format(d) == "idx"
    ds = load_dataset(d, quiet=True)
    assert ds.classes == [str(i) for i in range(10)]
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 90, "val": 10, "test": 20}
    assert ds.split("train").images.shape[1:] == (28, 28, 1)
    tr = ds.split("train")
    row = int(tr.ids[0].split(":")[1])
    assert np.array_equal(tr.images[0, :, :, 0], xtr[row]) and tr.labels[0] == ytr[row]


def test_idx_fashion_names_mismatch_and_truncation(tmp_path):
    d = tmp_path / "FashionMNIST" / "raw"
    _write_mnist(d, gz=True)
    ds = load_idx(tmp_path / "FashionMNIST", quiet=True)
    assert ds.classes == FASHION_CLASSES and ds.name == "FashionMNIST"
    assert load_idx(d, classes="a,b,c,d,e,f,g,h,i,j", quiet=True).classes[0] == "a"
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(
        DataError,
        match=r"t10k-images-idx3-ubyte.gz has 20 images but .*t10k-labels-idx1-ubyte.gz "
        r"has 19 labels",
    ):
        load_idx(d, quiet=True)
    raw = tmp_path / "trunc"
    _write_mnist(raw, gz=False)
    p = raw / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated"):
        load_idx(raw, quiet=True)


def test_idx_bad_magic_is_one_line(tmp_path):
    """An IDX file whose first bytes are not an IDX header (two zero bytes, a known type code) is refused by name."""
    d = tmp_path / "mnist"
    _write_mnist(d, gz=False)
    p = d / "train-images-idx3-ubyte"
    raw = bytearray(p.read_bytes())
    raw[0] = 0x1F  # a gzip-looking first byte on an uncompressed name
    p.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-images-idx3-ubyte") as e:
        load_idx(d, quiet=True)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ cache
def test_cache_is_memmap_and_files_are_not_decoded_again(tmp_path):
    root = tmp_path / "imgs"
    for c, v in (("a", 40), ("b", 220)):
        for i in range(6):
            save_img(root / c / f"{i}.png", grey(24, v))
    first = load_folder(root, quiet=True)
    imgs = first.split("train").images
    assert isinstance(imgs, np.memmap) and not imgs.flags.writeable
    cdir = entry_dir(first)
    assert (cdir / "images.npy").is_file() and json.loads((cdir / "meta.json").read_text())["classes"] == ["a", "b"]
    # overwrite an image with garbage of the same size and mtime: the key cannot see it, and a second
    # load that decoded anything would report it as a problem
    victim = root / "a" / "0.png"
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = load_folder(root, quiet=True)
    assert not second.problems and entry_dir(second) == cdir
    assert np.array_equal(second.split("train").images, imgs)
    # a real change (new mtime) invalidates the entry
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load_folder(root, quiet=True)
    assert entry_dir(third) != cdir and [os.path.basename(p.path) for p in third.problems] == ["0.png"]
    # cache=False: plain arrays, nothing written
    before = sorted(os.listdir(cdir.parent))
    plain = load_folder(root, image_size=12, cache=False, quiet=True)
    assert not isinstance(plain.split("train").images, np.memmap) and sorted(os.listdir(cdir.parent)) == before


def test_cache_concurrent_builders_agree(tmp_path):
    labels = [i % 7 for i in range(70)]
    write_fer_csv(tmp_path / "f.csv", labels, ["Training"] * 50 + ["PublicTest"] * 10 + ["PrivateTest"] * 10)
    out, errs = [], []

    def go():
        try:
            out.append(load_fer2013(tmp_path / "f.csv", quiet=True))
        except Exception as e:  # noqa: BLE001
            errs.append(e)

    ts = [threading.Thread(target=go) for _ in range(3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errs and len(out) == 3
    assert len({entry_dir(d) for d in out}) == 1
    base = entry_dir(out[0]).parent
    assert [p.name for p in base.iterdir()] == [entry_dir(out[0]).name]  # no temp dirs left behind
    assert all(np.array_equal(d.split("train").images, out[0].split("train").images) for d in out)


def test_unwritable_cache_falls_back_to_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FERKIT_CACHE_DIR", str(blocker))
    write_fer_csv(tmp_path / "f.csv", [0, 1, 2], ["Training"] * 3)
    with pytest.warns(RuntimeWarning, match="not writable"):
        ds = load_fer2013(tmp_path / "f.csv", quiet=True)
    assert len(ds.split("train")) == 3 and entry_dir(ds) is None


# ------------------------------------------------------------------------------------------------ relabel
def test_relabel_fashion3_and_class_weights(tmp_path):
    d = tmp_path / "fashion"
    _write_mnist(d, gz=False, n_train=100, n_test=30)
    ds = load_idx(d, val_fraction=0, quiet=True)
    r = relabel(ds, "fashion3")
    assert r.classes == ["clothes", "shoes", "others"]
    assert np.array_equal(r.histogram("train"), [50, 30, 20]) and np.array_equal(r.histogram("test"), [15, 9, 6])
    assert isinstance(r.split("train").images, np.memmap)  # nothing dropped: still the cache's memmap
    w = r.class_weights("train")
    assert np.allclose(w, [100 / (3 * 50), 100 / (3 * 30), 100 / (3 * 20)])
    with pytest.raises(DataError, match=r"class 'T-shirt/top' .*\(its classes: 0, 1, 2"):
        relabel(load_idx(tmp_path / "fashion", classes=list("0123456789"), quiet=True), "fashion3")


def test_relabel_fer3_string_file_and_subset(tmp_path):
    labels = [i % 7 for i in range(70)]
    write_fer_csv(tmp_path / "fer.csv", labels, ["Training"] * 70)
    ds = load_dataset(tmp_path / "fer.csv", quiet=True, mapping="fer3")
    assert ds.classes == ["happy", "sad", "neutral"] and np.array_equal(ds.histogram("train"), [10, 10, 10])
    full = load_fer2013(tmp_path / "fer.csv", quiet=True)
    m = relabel(full, "angry=negative,disgust=negative,fear=negative,sad=negative,happy=positive,surprise=")
    assert m.classes == ["negative", "positive"] and np.array_equal(m.histogram("train"), [40, 10])
    (tmp_path / "m.yaml").write_text("Happy: pos\nsad: neg\nneutral: null\n")
    y = relabel(full, str(tmp_path / "m.yaml"))
    assert y.classes == ["pos", "neg"] and len(y.split("train")) == 20
    (tmp_path / "m.json").write_text(json.dumps({"fear": "f"}))
    assert relabel(full, tmp_path / "m.json").classes == ["f"]
    assert parse_mapping("a=x, b=") == {"a": "x", "b": None}
    s = subset_classes(full, "sad,angry")
    assert s.classes == ["sad", "angry"] and s.split("train").labels.tolist()[:2] == [1, 0]
    with pytest.raises(DataError, match="its classes: angry, disgust"):
        relabel(full, {"joy": "x"})
    with pytest.raises(ConfigError):
        relabel(full, "nonsense")


# ------------------------------------------------------------------------------------------------ dispatch + inspect
def test_detect_and_dispatch_errors(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset format; accepted: a FER2013 CSV"):
        load_dataset(tmp_path / "empty")
    (tmp_path / "one").mkdir()
    write_fer_csv(tmp_path / "one" / "fer2013.csv", [0, 1], ["Training", "PublicTest"])
    assert load_dataset(tmp_path / "one", quiet=True).format == "fer2013"  # a folder holding one CSV
    with pytest.raises(ConfigError, match="classes do not apply to the fer2013 format"):
        load_dataset(tmp_path / "one" / "fer2013.csv", classes=["a"])
    wrapped = tmp_path / "wrap" / "images"
    for split in ("train", "validation"):
        for c in ("x", "y"):
            save_img(wrapped / split / c / "0.png", grey(8, 1))
    assert detect_format(tmp_path / "wrap") == "folder"


def test_inspect_report(tmp_path):
    root = tmp_path / "insp"
    for split, n in (("train", 12), ("test", 2)):
        for c, k in (("happy", n), ("sad", max(1, n // 12))):
            for i in range(k):
                save_img(root / split / c / f"{i}.png", grey(16, 5 * i + (0 if c == "happy" else 3)))
    (root / "train" / "happy" / "broken.jpg").write_bytes(b"")
    (root / "train" / "angry").mkdir()
    info = inspect_dataset(root, seed=0)
    text = format_inspection(info)
    assert info["format"] == "folder" and "format: folder" in text
    assert info["splits"]["test"]["histogram"] == [0, 2, 1]
    assert "broken.jpg: empty file (0 bytes)" in text
    assert "class 'angry' has no images in the train split" in text
    assert "class imbalance" in text
    assert "also appear in an earlier split" in text  # test images are copies of training ones
    assert "happy" in text and "total" in text
    json.dumps(info)


def test_split_dataset_feeds_a_plain_dataloader_with_ferkit_preprocessing():
    import torch
    from torch.utils.data import DataLoader

    from ferkit.data.spec import InputSpec
    from ferkit.data.synth import generate
    from ferkit.data.torch_dataset import SplitDataset
    from ferkit.data.transforms import to_input

    ds = generate(60, seed=2)
    spec = InputSpec(size=(32, 32), channels=3, mean=[0.5], std=[0.25])
    tds = SplitDataset(ds, "val", spec)
    x, y, v, a = tds[0]
    assert x.shape == (3, 32, 32) and y == int(ds.splits["val"].labels[0]) and -1 <= v <= 1
    expected = to_input(torch.from_numpy(ds.splits["val"].images[:1].copy()), spec)[0]
    assert torch.allclose(x, expected)
    batch = next(iter(DataLoader(tds, batch_size=4)))
    assert batch[0].shape == (4, 3, 32, 32) and batch[1].tolist() == ds.splits["val"].labels[:4].tolist()
    plain = SplitDataset(ds, "train", augment="basic", with_va=False)
    assert len(plain[0]) == 2 and plain[0][0].shape == (1, 48, 48)
