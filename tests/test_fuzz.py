"""A seeded fuzz corpus for every entry point that reads user bytes: images (the one decoder, `ferkit predict`),
checkpoints (`ferkit info`, the resolver), gallery files and HTTP requests to the server. Each case must end in
a result or one FerkitError line (CLI: exit 0/2, no traceback, nothing written outside the output folder).
The data loaders' corpus is tests/fuzz_data.py. `make fuzz` runs the same with --fuzz-cases 2000.
"""

import io
import os
import random
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FERKIT, small_checkpoint

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def n_cases(request):
    return request.config.getoption("--fuzz-cases") or 150


def _real_images() -> list[bytes]:
    from PIL import Image

    out = [p.read_bytes() for p in sorted(DATA.rglob("*.jpg"))]
    im = Image.open(DATA / "identity" / "obama.jpg")
    for fmt in ("PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM"):
        buf = io.BytesIO()
        im.convert("RGB" if fmt != "GIF" else "P").save(buf, fmt)
        out.append(buf.getvalue())
    buf = io.BytesIO()
    im.convert("RGBA").save(buf, "PNG")
    out.append(buf.getvalue())
    return out


HEADERS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"P6\n",
    b"%!PS-Adobe-3.0 EPSF-3.0\n",
    b"<svg xmlns='http://www.w3.org/2000/svg'>",
    b"8BPS",
    b"\x00\x00\x01\x00",
]


def image_case(rng: random.Random, real: list[bytes]) -> bytes:
    """One malformed (or sometimes valid) image file."""
    kind = rng.randrange(8)
    base = bytearray(rng.choice(real))
    if kind == 0:  # truncated
        return bytes(base[: rng.randrange(1, len(base))])
    if kind == 1:  # bit flips
        for _ in range(rng.randrange(1, 50)):
            i = rng.randrange(len(base))
            base[i] ^= 1 << rng.randrange(8)
        return bytes(base)
    if kind == 2:  # a known header + garbage
        return rng.choice(HEADERS) + rng.randbytes(rng.randrange(0, 3000))
    if kind == 3:  # header fields overwritten (sizes, chunk lengths)
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(min(64, len(base)))
            base[i] = rng.randrange(256)
        return bytes(base)
    if kind == 4:  # huge declared PNG dimensions
        from PIL import Image

        b = io.BytesIO()
        Image.new("L", (2, 2)).save(b, "PNG")
        raw = bytearray(b.getvalue())
        raw[16:24] = rng.choice([0xFFFFFFF, 60000, 0, 1]).to_bytes(4, "big") + rng.choice(
            [0xFFFFFFF, 60000, 0, 1]
        ).to_bytes(4, "big")
        return bytes(raw)
    if kind == 5:
        return rng.randbytes(rng.randrange(0, 2000))
    if kind == 6:  # two files glued / duplicated
        return bytes(base) + rng.choice(real)[: rng.randrange(100, 2000)]
    return bytes(base)  # valid


def _one_line(e: BaseException) -> None:
    msg = str(e)
    assert "\n" not in msg and 0 < len(msg) <= 400, msg[:500]


def test_fuzz_images_decoder_and_predict(tmp_path, n_cases):
    from ferkit.errors import FerkitError
    from ferkit.faces.io import decode_image

    rng = random.Random(1234)
    real = _real_images()
    folder = tmp_path / "in"
    folder.mkdir()
    suffixes = [".jpg", ".png", ".gif", ".bmp", ".tif", ".webp", ".ppm"]
    decoded = refused = 0
    for i in range(n_cases):
        data = image_case(rng, real)
        try:
            img = decode_image(data, f"case{i}")
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            decoded += 1
        except FerkitError as e:
            _one_line(e)
            refused += 1
        if i < 60:
            (folder / f"case{i}{rng.choice(suffixes)}").write_bytes(data)
    assert decoded and refused
    # the same files through the CLI: a row per file, exit 0/2, no traceback, nothing written elsewhere
    before = set(os.listdir(tmp_path))
    r = subprocess.run(
        FERKIT + ["predict", str(folder), "--format", "csv", "--output", str(tmp_path / "o.csv"), "--det-size", "320"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert set(os.listdir(tmp_path)) - before == {"o.csv"}
    import csv

    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert {row["path"] for row in rows} == {str(p) for p in folder.iterdir()}


def _checkpoint_cases(rng: random.Random, good: dict, n: int):
    import copy

    def mutate(c):
        paths = [
            ("model",),
            ("model", "name"),
            ("model", "num_classes"),
            ("model", "kwargs"),
            ("classes",),
            ("input",),
            ("input", "size"),
            ("input", "channels"),
            ("input", "mean"),
            ("state_dict",),
            ("format_version",),
            ("model", "task"),
            ("metrics",),
        ]
        path = rng.choice(paths)
        d = c
        for k in path[:-1]:
            d = d.get(k) if isinstance(d, dict) else None
            if d is None:
                return c
        val = rng.choice(
            [
                None,
                5,
                -1,
                10**12,
                "x" * rng.randrange(1, 300),
                [],
                [1],
                {},
                1.5,
                float("nan"),
                ["a"],
                [10**6, 10**6],
                torch.zeros(3),
            ]
        )
        if rng.random() < 0.3 and isinstance(d, dict):
            d.pop(path[-1], None)
        elif isinstance(d, dict):
            d[path[-1]] = val
        return c

    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            c = mutate(copy.deepcopy(good))
            buf = io.BytesIO()
            torch.save(c, buf)
            yield buf.getvalue()
        elif kind == 1:  # truncated / bit-flipped real file
            buf = io.BytesIO()
            torch.save(good, buf)
            raw = bytearray(buf.getvalue())
            if rng.random() < 0.5:
                raw = raw[: rng.randrange(1, len(raw))]
            else:
                for _ in range(rng.randrange(1, 20)):
                    j = rng.randrange(len(raw))
                    raw[j] ^= 0xFF
            yield bytes(raw)
        elif kind == 2:  # a zip that is not a torch file, or random bytes
            b = io.BytesIO()
            with zipfile.ZipFile(b, "w") as z:
                z.writestr("archive/data.pkl", rng.randbytes(rng.randrange(0, 200)))
            yield b.getvalue() if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 4000))
        else:  # other torch-saved objects
            buf = io.BytesIO()
            torch.save(
                rng.choice(
                    [
                        [1, 2],
                        {"w": torch.zeros(2)},
                        "text",
                        {"format": "ferkit-checkpoint"},
                        {"format": "ferkit-checkpoint", "format_version": 99},
                    ]
                ),
                buf,
            )
            yield buf.getvalue()


def test_fuzz_checkpoints(tmp_path, n_cases):
    from ferkit.errors import FerkitError
    from ferkit.refs import load_model

    good = small_checkpoint()
    rng = random.Random(99)
    files = []
    for i, data in enumerate(_checkpoint_cases(rng, good, n_cases)):
        f = tmp_path / f"c{i}.pt"
        f.write_bytes(data)
        files.append(f)
        try:
            model, _ = load_model(f)
            with torch.no_grad():
                out = model(torch.zeros(1, 1, 8, 8))
            assert torch.isfinite(out if isinstance(out, torch.Tensor) else out["logits"]).all()
        except FerkitError as e:
            _one_line(e)
    for f in files[:8]:  # and through the CLI
        r = subprocess.run(FERKIT + ["info", str(f)], capture_output=True, text=True, timeout=300)
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fuzz_gallery_files(tmp_path, n_cases):
    from ferkit.errors import FerkitError
    from ferkit.identity.gallery import Gallery

    rng = random.Random(7)
    good = tmp_path / "good.sqlite3"
    with Gallery(good, create=True):
        pass
    raw = good.read_bytes()
    for i in range(max(20, n_cases // 5)):
        f = tmp_path / f"g{i}.sqlite3"
        kind = rng.randrange(4)
        if kind == 0:
            f.write_bytes(rng.randbytes(rng.randrange(0, 5000)))
        elif kind == 1:
            f.write_bytes(raw[: rng.randrange(0, len(raw))])
        elif kind == 2:
            b = bytearray(raw)
            for _ in range(rng.randrange(1, 30)):
                j = rng.randrange(len(b))
                b[j] = rng.randrange(256)
            f.write_bytes(bytes(b))
        else:  # another SQLite database
            con = sqlite3.connect(f)
            con.execute(f"CREATE TABLE t{rng.randrange(9)} (x)")
            con.commit()
            con.close()
        try:
            with Gallery(f) as g:
                g.summary()
                g.embeddings()
        except FerkitError as e:
            _one_line(e)


def test_fuzz_http(n_cases):
    pytest.importorskip("fastapi")
    import httpx

    from ferkit.inference.settings import AnalyzerSettings
    from ferkit.serve import BackgroundServer, ServeConfig

    rng = random.Random(5)
    real = _real_images()
    ctypes = [
        "image/jpeg",
        "image/png",
        "application/octet-stream",
        "text/plain",
        "multipart/form-data",
        "multipart/form-data; boundary=x",
        "",
        "image/svg+xml",
        "application/json",
    ]
    from conftest import IMAGE_MODES, image_of_mode, slow_kept_alive

    slow: list = []  # slowloris clients on kept-alive connections, more than the server's cap
    cfg = ServeConfig(AnalyzerSettings(det_size=320), max_upload_bytes=200_000, max_connections=8, read_timeout_s=5)
    with BackgroundServer(cfg) as url, httpx.Client(timeout=60) as c:
        port = int(url.rsplit(":", 1)[1])
        for i in range(max(30, n_cases // 3)):
            if rng.random() < 0.3:
                slow.append(slow_kept_alive(port))
            for s in slow[:]:
                try:
                    s.sendall(b"X-Slow: 1\r\n")  # the next request's headers, one line at a time
                except OSError:  # dropped by the server: fine, that is its defence
                    slow.remove(s)
                    s.close()
            kind = rng.randrange(6)
            route = rng.choice(
                [
                    "/v1/predict",
                    "/v1/predict/batch",
                    "/v1/predict?x=1",
                    "/v1/models",
                    "/healthz",
                    "/nope",
                    "/v1/predict/../models",
                ]
            )
            method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "DELETE", "HEAD", "FOO", "M-SEARCH"])
            if kind == 5:  # a valid image of any mode (16-bit, 32-bit, float, alpha, palette...): the decode budget
                mode, fmt = rng.choice(IMAGE_MODES)
                data = image_of_mode(mode, fmt, rng.randrange(1, 250), rng.randrange(1, 250))  # < the 200 KB limit
                r = c.post(url + "/v1/predict", content=data, headers={"content-type": "application/octet-stream"})
                assert r.status_code == 200 and r.json()["status"] in ("ok", "no_face"), (mode, fmt, r.text[:300])
                continue
            if kind == 0:
                files = {
                    "file": (
                        rng.choice(["a.jpg", "", "x" * 300, "../../etc/passwd"]),
                        image_case(rng, real),
                        rng.choice(ctypes),
                    )
                }
                r = c.request(method, url + route, files=files)
            elif kind == 1:
                files = [
                    ("files", (f"f{k}.png", image_case(rng, real), "image/png")) for k in range(rng.randrange(0, 20))
                ]
                r = c.request(method, url + route, files=files or None, content=None if files else b"")
            elif kind == 2:
                r = c.request(
                    method, url + route, content=image_case(rng, real), headers={"content-type": rng.choice(ctypes)}
                )
            elif kind == 3:
                r = c.request(
                    method,
                    url + route,
                    content=rng.randbytes(rng.randrange(0, 300_000)),
                    headers={"content-type": rng.choice(ctypes)},
                )
            else:
                body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + rng.randbytes(
                    rng.randrange(0, 500)
                )
                r = c.request(
                    method, url + route, content=body, headers={"content-type": "multipart/form-data; boundary=x"}
                )
            assert r.status_code < 500, (i, route, method, r.status_code, r.text[:300])
            if r.status_code >= 400 and method != "HEAD":
                body = r.json()
                assert set(body) == {"error", "reason"} and "\n" not in body["reason"], body
        assert c.get(url + "/healthz").status_code == 200
        assert "FOO" not in c.get(url + "/metrics").text  # invented methods are counted as "other"
    for s in slow:
        s.close()


BAD_VALUES = [
    None,
    "x",
    "",
    1.5,
    -1,
    0,
    True,
    [],
    {},
    [None],
    ["a"],
    float("nan"),
    float("inf"),
    10**30,
    [1, 2, 3, 4],
    {"a": 1},
]
# every metadata field a reader touches (model section, class names, input spec, training record)
METADATA_FIELDS = [
    ("model",),
    ("model", "name"),
    ("model", "kwargs"),
    ("model", "num_classes"),
    ("model", "in_channels"),
    ("model", "task"),
    ("classes",),
    ("input",),
    ("input", "size"),
    ("input", "channels"),
    ("input", "mean"),
    ("input", "std"),
    ("input", "permute_seed"),
    ("config",),
    ("metrics",),
    ("metrics", "epoch"),
    ("metrics", "val_acc"),
    ("metrics", "test_acc"),
    ("format_version",),
    ("created",),
    ("ferkit_version",),
]


def test_checkpoint_metadata_of_every_type(tmp_path):
    """Every metadata field of a checkpoint, replaced by a value of each wrong type (null, text, float, negative,
    empty, nested, NaN, huge): ``ferkit.predict`` on a face crop and ``describe`` (``ferkit info``) either work or
    raise one FerkitError line, never a traceback; the CLI's ``predict --checkpoint`` gives one line and exit 2."""
    import copy

    from PIL import Image

    import ferkit
    from ferkit.checkpoint import describe, make_checkpoint, read_checkpoint, save_checkpoint
    from ferkit.data.spec import InputSpec
    from ferkit.errors import FerkitError
    from ferkit.models import create_model

    torch.manual_seed(0)
    good = make_checkpoint(
        create_model("seed1_cnn", num_classes=2, in_channels=1),
        model_name="seed1_cnn",
        model_kwargs={},
        num_classes=2,
        in_channels=1,
        task="classify",
        classes=["a", "b"],
        input_spec=InputSpec(size=(48, 48), channels=1).to_dict(),
        config={"epochs": 1},
        metrics={"epoch": 1, "val_acc": 0.5, "test_acc": 0.5},
    )
    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(face)
    failed, cli = [], []
    for keys in METADATA_FIELDS:
        for value in BAD_VALUES:
            ck = copy.deepcopy(good)
            holder = ck
            for k in keys[:-1]:
                holder = holder[k]
            holder[keys[-1]] = value
            f = tmp_path / f"{'.'.join(keys)}-{len(cli)}.pt"
            save_checkpoint(ck, f)
            cli.append(f)
            try:
                describe(read_checkpoint(f))
                res = ferkit.predict(f, [face], detect=False)
                assert res[0].status == "ok" and abs(sum(res[0].faces[0].probabilities.values()) - 1) < 1e-4
            except FerkitError as e:
                _one_line(e)
            except Exception as e:  # noqa: BLE001 - collected, so the message lists every field that breaks
                failed.append(f"{'.'.join(keys)}={value!r}: {type(e).__name__}: {e}"[:200])
    assert not failed, "\n".join(failed)
    for f in cli[:: max(1, len(cli) // 6)]:  # a few through the command itself
        r = subprocess.run(
            FERKIT + ["predict", "--checkpoint", str(f), str(face), "--no-detect"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr[-2000:]
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


# ------------------------------------------------------------------------------------------------ output targets
_NAMES = [
    b"plain",
    b"caf\xc3\xa9",
    b"\xff\xfe bad",
    b"=cmd|calc",
    b"esc\x1b[31m",
    b"cr\rlf\n",
    b"L" * 250,
    b"-",
    b".hidden",
    b"sp ace",
    b"\xe2\x80\xaeevil",
]


def _output_target(rng: random.Random, d: Path):
    """A random place to write (new, existing with a mode, FIFO, device copies, links, a folder, under a file,
    a non-UTF-8 or too-long name) and what must hold of it afterwards."""
    import stat

    name = os.fsdecode(rng.choice(_NAMES) + rng.choice([b".csv", b".jsonl", b".parquet", b""]))
    p = d / name
    kind = rng.choice(
        ["new", "existing", "fifo", "null", "full", "link", "dangling", "loop", "folder", "under_file", "new_dir"]
    )
    if len(os.fsencode(name)) > 255 and kind not in ("new", "new_dir", "under_file"):
        kind = "new"  # too long to make anything by that name: the writer's one line is the case
    if kind == "existing":
        p.write_bytes(b"old")
        os.chmod(p, rng.choice([0o600, 0o644, 0o640]))
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind in ("null", "full"):
        try:
            os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3 if kind == "null" else 7))
        except PermissionError:
            kind = "new"
    elif kind == "link":
        (d / "target.bin").write_bytes(b"old")
        p.symlink_to("target.bin")
    elif kind == "dangling":
        p.symlink_to("nowhere/x.bin")
    elif kind == "loop":
        p.symlink_to(p.name)
    elif kind == "folder":
        p.mkdir()
    elif kind == "under_file":
        (d / "afile").write_text("x")
        p = d / "afile" / name
    elif kind == "new_dir":
        p = d / "sub" / "deeper" / name
    return p, kind


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no output left half-closed
def test_fuzz_output_targets(tmp_path, n_cases):
    """Every writer (CSV, JSON lines, Parquet, whole files, path-taking libraries, folders) aimed at special
    files, links, folders and names that are not UTF-8, too long or full of control characters, with results
    whose paths are the same: a whole file, or one FerkitError line; devices, FIFOs and links stay what they were;
    no temporary file is left behind."""
    import stat
    import threading

    from ferkit.errors import FerkitError
    from ferkit.schema import FaceResult, FileResult, ResultWriter
    from ferkit.utils import atomic_dir, atomic_path, atomic_write_bytes

    pytest.importorskip("pyarrow")
    rng = random.Random(31)
    for i in range(max(40, n_cases // 3)):
        d = tmp_path / f"c{i}"
        d.mkdir()
        p, kind = _output_target(rng, d)
        readers = []
        if kind == "fifo":

            def drain(path=p):
                with open(path, "rb") as f:
                    f.read()

            t = threading.Thread(target=drain, daemon=True)
            t.start()
            readers.append(t)
        how = rng.choice(["jsonl", "csv", "parquet", "bytes", "path", "dir"])
        if how == "dir" and kind == "fifo":
            how = "bytes"  # a folder cannot be a FIFO: nobody would read it
        paths = [os.fsdecode(rng.choice(_NAMES) + b".jpg") for _ in range(3)]
        try:
            if how in ("jsonl", "csv", "parquet"):
                w = ResultWriter(how, ["happy"], path=p)
                for q in paths:
                    w.write(
                        FileResult(
                            path=q,
                            faces=[
                                FaceResult(
                                    source=q,
                                    face=0,
                                    box=(0, 0, 1, 1),
                                    label="happy",
                                    score=1.0,
                                    probabilities={"happy": 1.0},
                                )
                            ],
                        )
                    )
                w.close()
            elif how == "bytes":
                atomic_write_bytes(p, "".join(paths).encode("utf-8", "surrogateescape"))
            elif how == "path":
                with atomic_path(p, suffix=".bin") as tmp:
                    Path(tmp).write_bytes(b"x" * rng.randrange(0, 70000))
            else:
                with atomic_dir(p, replace=True) as tmp:
                    (tmp / "a.txt").write_text("a")
        except FerkitError as e:
            _one_line(e)
        finally:
            for t in readers:
                t.join(30)
                if t.is_alive():  # the writer failed before opening the FIFO: release the reader
                    with open(p, "wb"):
                        pass
        if kind == "fifo" and how != "dir":
            assert stat.S_ISFIFO(os.lstat(p).st_mode), (i, how)
        if kind in ("null", "full") and how != "dir":
            assert stat.S_ISCHR(os.lstat(p).st_mode), (i, how)
        if kind == "link" and how != "dir":
            assert os.path.islink(p), (i, how)
        left = [f for f in d.rglob("*") if f.name.endswith(".tmp") or f.name.startswith(".ferkit-")]
        assert left == [], (i, kind, how, left)


def test_fuzz_output_targets_cli(tmp_path):
    """The same through `ferkit predict --output/--annotate` with a photo whose name is one of the corpus's."""
    rng = random.Random(32)
    photo = DATA / "identity" / "obama.jpg"
    for i in range(6):
        d = tmp_path / f"c{i}"
        d.mkdir()
        p, kind = _output_target(rng, d)
        if kind == "fifo":
            continue  # a FIFO needs a reader: tests/test_writers.py covers it
        src = d / "in"
        src.mkdir()
        img = src / os.fsdecode(rng.choice(_NAMES) + b".jpg")
        img.write_bytes(photo.read_bytes())
        fmt = rng.choice(["jsonl", "csv", "parquet"])
        argv = FERKIT + ["predict", str(src), "--format", fmt, "--output", str(p), "--det-size", "320", "--quiet"]
        if rng.random() < 0.5:
            argv += ["--annotate", str(d / os.fsdecode(rng.choice(_NAMES)))]
        r = subprocess.run(argv, capture_output=True, timeout=300)
        assert r.returncode in (0, 2) and b"Traceback" not in r.stderr, (kind, fmt, r.stderr[-2000:])
        assert b"\x1b" not in r.stderr, r.stderr
        if r.returncode == 2:
            assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fuzz_video_headers(tmp_path, n_cases):
    """Real mp4s whose header integers lie (frame counts, sample durations, time scales, durations; 0, 1,
    2**31 - 1, 2**32 - 1, random): the frame count ferkit plans with is bounded by the file size and by what can
    be read, the ranges stay few, and the analysis is a result (ok, no_face or an error naming the counts) or one
    FerkitError line, never a traceback or a hang."""
    import struct
    import time

    import cv2

    from ferkit.errors import FerkitError
    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.ray_engine import frame_ranges
    from ferkit.inference.video import MIN_FRAME_BYTES, analyze_video, frame_count

    src = tmp_path / "src.mp4"
    vw = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    rng_np = np.random.default_rng(5)
    for _ in range(20):
        vw.write(rng_np.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    vw.release()
    raw = src.read_bytes()

    def box(kind: bytes) -> int:
        return raw.index(kind) - 4  # the box starts 4 bytes before its type

    fields = [
        (box(b"stts") + 16, "stts count"),
        (box(b"stts") + 20, "stts delta"),
        (box(b"mdhd") + 20, "mdhd time scale"),
        (box(b"mdhd") + 24, "mdhd duration"),
        (box(b"mvhd") + 20, "mvhd time scale"),
        (box(b"mvhd") + 24, "mvhd duration"),
        (box(b"tkhd") + 28, "tkhd duration"),
    ]
    an = Analyzer(["fer_minixception"], detector="haar")
    rng = random.Random(11)
    for i in range(max(8, n_cases // 40)):
        buf = bytearray(raw)
        for at, _name in rng.sample(fields, rng.randint(1, 3)):
            struct.pack_into(">I", buf, at, rng.choice([0, 1, 2, 2**31 - 1, 2**32 - 1, rng.randrange(2**32)]))
        f = tmp_path / f"v{i}.mp4"
        f.write_bytes(bytes(buf))
        t0 = time.perf_counter()
        n = frame_count(f)
        assert 0 <= n <= f.stat().st_size // MIN_FRAME_BYTES
        assert len(frame_ranges(str(f), 8)) <= max(1, -(-n // 8))
        try:
            r = analyze_video(an, str(f))
            assert r.status in ("ok", "no_face", "error") and r.frames is not None and r.frames <= 20
        except FerkitError as e:
            _one_line(e)
        assert time.perf_counter() - t0 < 60, f"case {i}: {time.perf_counter() - t0:.0f} s"
