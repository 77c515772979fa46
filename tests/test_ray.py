"""The Ray engine on a real two-node Ray cluster on 127.0.0.1: same rows as the CLI's analyzer, every input
exactly once after a worker is killed mid-job and after the driver is killed and the job re-run."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

# Ray turns 127.0.0.1 in a cluster address into the host's outward IP before connecting; this switch (read
# when ray is imported) keeps it on loopback, where the cluster's nodes listen, so no traffic leaves lo.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from ferkit.api import predict_dataset  # noqa: E402
from ferkit.errors import ConfigError  # noqa: E402
from ferkit.inference.ray_engine import RAY_MISSING, read_results  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SRC = str(Path(__file__).resolve().parents[1] / "src")
OPTS = dict(models=("fer_minixception",), detector="retinaface", det_size=320, crop="align")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes (one CPU each), both on 127.0.0.1, session files in a private temp dir."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="fkray", dir="/tmp")  # short: Ray's unix sockets live under it
    # The head writes its address to <system temp>/ray/ray_current_cluster whatever temp_dir says; on a fresh
    # machine nothing has made that folder yet (the fixture failed there, depending on test order).
    from ray._common.utils import get_default_ray_temp_dir, reset_ray_address

    os.makedirs(get_default_ray_temp_dir(), exist_ok=True)
    c = Cluster(
        initialize_head=True,
        head_node_args=dict(num_cpus=1, node_ip_address="127.0.0.1", temp_dir=tmp, include_dashboard=False),
    )
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
    reset_ray_address()  # a later bare ray.init() must not look for this cluster
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """~200 real image files (faces at several sizes, flipped; no-face photos; broken files) + a list file
    of file:// URIs; and the CLI analyzer's rows for each local file."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    from ferkit.inference.pipeline import Analyzer
    from ferkit.schema import table_rows as csv_rows

    root = tmp_path_factory.mktemp("ray_inputs")
    photos = root / "photos"
    photos.mkdir()
    bases = {
        "astro": Image.fromarray(data.astronaut()),
        "grace": Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"),
    }
    for p in sorted((Path(__file__).parent / "data").glob("*.jpg")):
        bases[p.stem] = Image.open(p).convert("RGB")
    k = 0
    while k < 186:
        for name, im in bases.items():
            side = (128, 160, 192, 224, 256)[k % 5]
            v = im.copy()
            v.thumbnail((side, side))
            if (k // 5) % 2:
                v = v.transpose(Image.FLIP_LEFT_RIGHT)
            v.save(photos / f"{name}_{k:03d}.{'png' if k % 7 == 0 else 'jpg'}", quality=90)
            k += 1
    for name, arr in {
        "coffee": data.coffee(),
        "grey": np.full((96, 128, 3), 120, np.uint8),
        "noise": np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8),
    }.items():
        Image.fromarray(arr).resize((128, 96)).save(photos / f"noface_{name}.jpg")
    bad = photos / "bad"
    bad.mkdir()
    (bad / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a photo\n")
    good = sorted(photos.glob("astro_*.jpg"))[0].read_bytes()
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    extra = root / "extra"
    extra.mkdir()
    for i, p in enumerate(sorted(photos.glob("grace_*.jpg"))[:6]):
        shutil.copy(p, extra / f"uri_{i}.jpg")
    listed = root / "more.txt"
    listed.write_text(
        "# objects by URI\n"
        + "".join(f"file://{p}\n" for p in sorted(extra.glob("*.jpg")))
        + f"file://{extra}/missing.jpg\n"
    )
    local = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    an = Analyzer(**OPTS)
    # One torch thread, as in each actor (Ray gives a 1-CPU worker OMP_NUM_THREADS=1): with two threads the
    # detector's sums run in another order and probabilities move by up to ~3e-4 on small faces.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = {
            r.path: csv_rows(r, an.classes)
            for r in an.analyze_paths(local + sorted(str(p) for p in extra.glob("*.jpg")))
        }
    finally:
        torch.set_num_threads(threads)
    return {"photos": photos, "list": listed, "extra": extra, "local": local, "ref": ref, "classes": an.classes}


def _write_video(path, photo, n=8):
    """A short real mp4 (OpenCV mp4v): the photo drifting a few pixels per frame."""
    import cv2

    img = cv2.imread(str(photo))
    h, w = img.shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for i in range(n):
        vw.write(np.roll(img, 2 * i, axis=1))
    vw.release()
    return path


def _manifest_inputs(out):
    return [
        x
        for f in sorted((Path(out) / "_manifest").glob("part-*.parquet"))
        for x in pq.read_table(f, columns=["input"]).column("input").to_pylist()
    ]


def _check_exactly_once(out, expected, inputs, atol=1e-3):
    """Every expected input once in the manifest and with exactly its reference rows in the parts."""
    man = _manifest_inputs(out)
    assert sorted(man) == sorted(expected), "manifest: each input exactly once"
    table = read_results(out)
    from ferkit.schema import table_columns as csv_header

    assert table.column_names == csv_header(inputs["classes"])
    rows = table.to_pylist()
    by_path = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    assert set(by_path) == set(expected)
    for path, got in by_path.items():
        local = path.removeprefix("file://")
        if local.endswith("missing.jpg"):
            assert [g["status"] for g in got] == ["error"] and "no such file" in got[0]["reason"]
            continue
        cols = csv_header(inputs["classes"])
        want = [dict(zip(cols, row, strict=True)) for row in inputs["ref"][local]]  # the CLI's rows, by column name
        assert len(got) == len(want), f"{path}: {len(got)} rows, CLI analyzer gives {len(want)}"
        for g, w in zip(sorted(got, key=lambda r: (r["frame"] or 0, r["face"] or 0)), want, strict=True):
            assert g["status"] == w["status"]
            if path == local:
                assert g["reason"] == w["reason"]
            if w["status"] != "ok":
                continue
            assert g["label"] == w["label"]
            probs = [g[f"p_{c}"] for c in inputs["classes"]]
            # The analyzer's probabilities depend on which faces share a classifier forward (oneDNN picks
            # kernels by batch size: up to ~4e-4 here, detections identical), and an actor's batches are
            # not the reference's; test_same_numbers_as_cli_analyzer_batch_for_batch checks 1e-5 where
            # the batches are the same.
            np.testing.assert_allclose(probs, [w[f"p_{c}"] for c in inputs["classes"]], atol=atol, err_msg=path)
            np.testing.assert_allclose(
                [g[k] for k in ("x1", "y1", "x2", "y2")], [w[k] for k in ("x1", "y1", "x2", "y2")], atol=0.05
            )
    return rows


def test_job_matches_cli_analyzer_and_survives_a_killed_worker(cluster, inputs, tmp_path):
    out = tmp_path / "out"
    killed = {}

    def kill_one_worker():  # as soon as a first block is done, SIGKILL the actor process that did it
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            parts = sorted((out / "_manifest").glob("part-*.parquet"))
            if parts:
                worker = pq.read_table(parts[0], columns=["worker"]).column("worker")[0].as_py()
                pid = int(worker.rsplit(":", 1)[1])
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, at=len(_manifest_inputs(out)))
                return
            time.sleep(0.2)

    t = threading.Thread(target=kill_one_worker, daemon=True)
    t.start()
    t0 = time.time()
    s = predict_dataset(
        [inputs["photos"], inputs["list"]], out, **OPTS, actors=2, batch_size=8, ray_address=cluster.address, quiet=True
    )
    t.join(5)
    expected = (
        inputs["local"]
        + [f"file://{p}" for p in sorted(inputs["extra"].glob("*.jpg"))]
        + [f"file://{inputs['extra']}/missing.jpg"]
    )
    assert killed and killed["at"] < len(expected), "a worker was killed while inputs were left"
    assert not os.path.exists(f"/proc/{killed['pid']}")
    rows = _check_exactly_once(out, expected, inputs)
    assert s["files"] == len(expected) >= 200 and s["skipped"] == 0
    status = Counter(r["status"] for r in rows if r["face"] in (None, 0))
    assert status["error"] == s["errors"] == 5 and status["no_face"] == s["no_face"] >= 1
    assert s["faces"] == sum(r["status"] == "ok" for r in rows)
    assert len(s["per_actor"]) >= 2 and s["images_per_s"] > 0
    print(f"\n{s['files']} inputs in {time.time() - t0:.1f}s, {s['images_per_s']}/s, actors {s['per_actor']}")


def test_same_numbers_as_cli_analyzer_batch_for_batch(cluster, inputs, tmp_path):
    """One input per actor call against the CLI's analyzer on that file alone (one thread, like an actor):
    the engine adds nothing to the numbers."""
    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_video
    from ferkit.schema import table_rows as csv_rows

    chosen = [p for p in inputs["local"] if "multi_face" in p][:3] + inputs["local"][:5]
    chosen += [f"file://{p}" for p in sorted(inputs["extra"].glob("*.jpg"))[:2]]
    video = _write_video(tmp_path / "clip.mp4", sorted(Path(p) for p in inputs["local"] if "astro" in p)[0])
    chosen += [str(video), f"file://{video}"]  # a video: one whole-file task (by path, and by URI)
    listed = tmp_path / "chosen.txt"
    listed.write_text("\n".join(chosen) + "\n")
    predict_dataset([listed], tmp_path / "out", **OPTS, actors=2, batch_size=1, ray_address=cluster.address, quiet=True)
    an = Analyzer(**OPTS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = {
            p: csv_rows(r, an.classes)
            for p in chosen
            if not p.endswith(".mp4")
            for r in an.analyze_paths([p.removeprefix("file://")])
        }
        alone[str(video)] = csv_rows(analyze_video(an, str(video)), an.classes)
    finally:
        torch.set_num_threads(threads)
    rows = _check_exactly_once(
        tmp_path / "out", chosen, dict(inputs, ref={k.removeprefix("file://"): v for k, v in alone.items()}), atol=1e-5
    )
    frames = [r for r in rows if r["path"] == str(video)]
    assert len(frames) >= 6 and all(r["frame"] is not None and r["track"] is not None for r in frames)


def test_killed_driver_then_rerun_gives_every_input_once(cluster, inputs, tmp_path):
    out = tmp_path / "out"
    subset = tmp_path / "subset.txt"
    chosen = inputs["local"][::3]
    subset.write_text("\n".join(chosen) + "\n")
    code = (
        "import sys; from ferkit.api import predict_dataset; "
        f"predict_dataset([{str(subset)!r}], {str(out)!r}, models=('fer_minixception',), det_size=320, "
        f"actors=2, batch_size=4, ray_address={cluster.address!r}, quiet=True)"
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and len(_manifest_inputs(out)) < 8 and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, f"driver ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and nothing else: it runs in its own session
    finally:
        proc.wait(30)
    done = len(set(_manifest_inputs(out)))
    assert 8 <= done < len(chosen), "cancelled half way"
    # a crash between the rows and the manifest leaves a part without a manifest entry: the re-run drops it
    orphan = out / "part-orphan.parquet"
    shutil.copy(sorted(out.glob("part-*.parquet"))[0], orphan)
    with pytest.raises(ConfigError, match="another configuration"):
        predict_dataset([subset], out, models=("fer_minixception",), det_size=320, crop="box", quiet=True)
    s = predict_dataset([subset], out, **OPTS, actors=2, batch_size=4, ray_address=cluster.address, quiet=True)
    assert not orphan.exists()
    assert s["skipped"] == done and s["files"] == len(chosen) - done
    _check_exactly_once(out, chosen, inputs)
    s = predict_dataset([subset], out, **OPTS, actors=2, batch_size=4, ray_address=cluster.address, quiet=True)
    assert s["files"] == 0 and s["skipped"] == len(chosen)
    # A damaged manifest part or config.json: one line naming the file and --overwrite, before any work; then
    # --overwrite redoes the run.
    part = sorted((out / "_manifest").glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[: len(part.read_bytes()) // 2])
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(part))}: damaged .*--overwrite"):
        predict_dataset([subset], out, **OPTS, ray_address="127.0.0.1:1", quiet=True)
    (out / "_manifest" / "config.json").write_text('{"models": ["fer_minix')
    with pytest.raises(ConfigError, match=r"config\.json: damaged \(not readable JSON.*--overwrite"):
        predict_dataset([subset], out, **OPTS, ray_address="127.0.0.1:1", quiet=True)
    s = predict_dataset(
        [subset], out, **OPTS, actors=2, batch_size=16, ray_address=cluster.address, quiet=True, overwrite=True
    )
    assert s["files"] == len(chosen) and s["skipped"] == 0
    _check_exactly_once(out, chosen, inputs)


def test_without_ray_one_line_config_error(tmp_path):
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from ferkit.errors import ConfigError\n"
        "from ferkit.api import predict_dataset\n"
        "try:\n    predict_dataset(['x'], 'out')\n"
        "except ConfigError as e:\n    print(json.dumps(str(e)))\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == RAY_MISSING == "--engine ray needs Ray: pip install 'ferkit[ray]'"


# ------------------------------------------------------------------------------------------------ video ranges
def _two_faces_video(path, n=90):
    """A real mp4 (10 fps, 320x240): face A (astronaut) still in frames 0-19, face B (Grace Hopper) from frame 10
    to the end, drifting right 1 px a frame; the whole-file tracker gives A track 0 and B track 1."""
    import cv2
    import matplotlib.cbook
    from skimage import data

    grace = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    a = cv2.resize(cv2.cvtColor(data.astronaut()[20:250, 130:340], cv2.COLOR_RGB2BGR), (96, 96))
    b = cv2.resize(grace[40:330, 90:390], (96, 96))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(n):
        frame = np.full((240, 320, 3), 110, np.uint8)
        if i < 20:
            frame[60:156, 10 + i : 106 + i] = a
        if i >= 10:
            frame[70:166, 120 + i : 216 + i] = b
        vw.write(frame)
    vw.release()
    return path


def _mp4_box(buf, path, start=0, end=None, chain=()):
    """The offsets of the boxes along ``path`` (e.g. moov/trak/mdia/mdhd) in an mp4's bytes."""
    import struct

    i, end = start, len(buf) if end is None else end
    while i < end:
        size, kind = struct.unpack(">I4s", buf[i : i + 8])
        if kind.decode() == path[0]:
            return chain + (i,) if len(path) == 1 else _mp4_box(buf, path[1:], i + 8, i + size, chain + (i,))
        i += size
    raise AssertionError(f"no {path[0]} box")


def _lying_header(src, dst, what):
    """A copy of an OpenCV mp4 whose header lies: ``frames`` says 2**31 - 1 frames in its one 'stts' entry (the
    samples stay 20-odd), ``zero_fps`` gives the track a time scale of 0."""
    import struct

    buf = bytearray(Path(src).read_bytes())
    if what == "frames":
        at = _mp4_box(buf, ["moov", "trak", "mdia", "minf", "stbl", "stts"])[-1]
        struct.pack_into(">I", buf, at + 16, 2**31 - 1)
    else:
        at = _mp4_box(buf, ["moov", "trak", "mdia", "mdhd"])[-1]
        struct.pack_into(">I", buf, at + 20, 0)  # version 0: size, type, flags, created, modified, time scale
    Path(dst).write_bytes(bytes(buf))
    return dst


def _variable_frame_rate(src, dst):
    """A copy of an OpenCV mp4 whose frames are shown 1.5x, then 0.5x, then 1x as long (same frames, same total
    duration): rewrites the one-entry 'stts' table as three. OpenCV's seek lands on other frames in it."""
    import struct

    buf = bytearray(Path(src).read_bytes())
    chain = _mp4_box(buf, ["moov", "trak", "mdia", "minf", "stbl", "stts"])
    size, _, _, entries, n, delta = struct.unpack(">I4sIIII", buf[chain[-1] : chain[-1] + 24])
    assert entries == 1 and n % 3 == 0 and delta % 2 == 0
    new = struct.pack(">I4sII6I", 40, b"stts", 0, 3, n // 3, delta * 3 // 2, n // 3, delta // 2, n // 3, delta)
    buf[chain[-1] : chain[-1] + size] = new
    for off in chain[:-1]:  # the boxes holding it grow with it (moov comes after mdat: no offsets move)
        (s,) = struct.unpack(">I", buf[off : off + 4])
        buf[off : off + 4] = struct.pack(">I", s + len(new) - size)
    Path(dst).write_bytes(bytes(buf))
    return dst


def _video_analyzer():
    from ferkit.inference.pipeline import Analyzer

    return Analyzer(**OPTS)


def _whole_rows(an, video, stride=1):
    """The CLI's rows of one video analysed whole."""
    from ferkit.inference.video import analyze_video
    from ferkit.schema import table_columns, table_rows

    r = analyze_video(an, str(video), stride=stride)
    return [dict(zip(table_columns(an.classes), row, strict=True)) for row in table_rows(r, an.classes)]


def _assert_same_video_rows(got, want, classes):
    got = sorted(got, key=lambda r: (r["frame"] or 0, r["face"] or 0))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for k in ("path", "status", "reason", "kind", "frame", "timestamp", "track", "face", "label"):
            assert g[k] == w[k], (k, g, w)
        np.testing.assert_allclose(
            [g[k] for k in ("x1", "y1", "x2", "y2")], [w[k] for k in ("x1", "y1", "x2", "y2")], atol=1e-3
        )
        np.testing.assert_allclose([g[f"p_{c}"] for c in classes], [w[f"p_{c}"] for c in classes], atol=1e-3)


def test_video_ranges_stitch_to_the_whole_file_result(tmp_path, monkeypatch, one_thread):
    """In one process: the ranges of a video, joined, are the whole-file run (frames, numbers, track ids), with
    a stride too; a range whose seek landed on another frame than it reports is refused, not joined; the driver
    writes a video once all its ranges are in, and hands back one whose ranges do not join."""
    import cv2

    from ferkit.defaults import DETECT_EVERY
    from ferkit.inference.video import analyze_range, stitch_ranges
    from ferkit.schema import table_columns, table_rows

    video = _two_faces_video(tmp_path / "two.mp4")
    an = _video_analyzer()
    cols = table_columns(an.classes)
    # range starts at multiples of detect_every x stride (as the engine's ranges are): detections on the same frames
    for stride, bounds in ((1, [0, 32, 64, None]), (2, [0, 16, 32, 48, 64, None]), (3, [0, 36, 72, None])):
        whole = _whole_rows(an, video, stride)
        ranges = [analyze_range(an, video, s, e, stride=stride) for s, e in zip(bounds, bounds[1:], strict=False)]
        got = stitch_ranges(ranges[::-1])
        assert got is not None and got.frames == len(range(0, 90, stride))
        rows = [dict(zip(cols, row, strict=True)) for row in table_rows(got, an.classes)]
        _assert_same_video_rows(rows, whole, an.classes)
        # face B crosses every range boundary and keeps the one id the whole-file tracker gives it
        b = [r for r in rows if r["x1"] > 110]
        # (found at the first detection from frame 10 on: the detector runs every DETECT_EVERY analysed frames)
        assert {r["track"] for r in b} == {1} and b[0]["frame"] < 10 + DETECT_EVERY * stride
        assert b[-1]["frame"] > 89 - stride
        assert {f.track for f in ranges[-1].result.faces} == {0}, "each range tracks afresh: the stitch relabels"

    # A variable frame rate: OpenCV's seek lands elsewhere; the range reads on from the first frame instead.
    from ferkit.inference.video import analyze_video

    vfr = _variable_frame_rate(video, tmp_path / "vfr.mp4")
    got = analyze_video(an, vfr, start_frame=48, end_frame=64)
    want = [r for r in _whole_rows(an, vfr) if 48 <= r["frame"] < 64]
    _assert_same_video_rows(
        [dict(zip(cols, row, strict=True)) for row in table_rows(got, an.classes)],
        [dict(r, track=0) for r in want],
        an.classes,
    )

    real = cv2.VideoCapture

    class Misplaced:
        """OpenCV landing one frame past the frame it was asked for, and reporting the one asked for."""

        def __init__(self, *args):
            self.cap, self.shift = real(*args), 0

        def __getattr__(self, name):  # read, grab, isOpened, release
            return getattr(self.cap, name)

        def set(self, prop, value):
            if prop == cv2.CAP_PROP_POS_FRAMES:
                self.shift = 1
                value += 1
            return self.cap.set(prop, value)

        def get(self, prop):
            v = self.cap.get(prop)
            return {cv2.CAP_PROP_POS_FRAMES: v - self.shift, cv2.CAP_PROP_POS_MSEC: v - 100 * self.shift}.get(prop, v)

    monkeypatch.setattr(cv2, "VideoCapture", Misplaced)
    ranges = [analyze_range(an, video, s, e) for s, e in ((0, 32), (32, 64), (64, None))]
    assert ranges[1].result.faces[0].frame == 32 and ranges[1].head[0] != ranges[0].tail[0]
    assert stitch_ranges(ranges) is None

    # The driver: a video is written once all its ranges are in; one whose ranges do not join is handed back
    # (to analyse whole), and nothing of it is written.
    import pickle

    import pyarrow as pa

    from ferkit.inference.ray_engine import MANIFEST_DIR, _output_schema, _write_stream, parquet_schema

    class Blocks:  # what _write_stream reads of a Ray dataset
        def __init__(self, *blocks):
            self.blocks = blocks

        def iter_batches(self, **kw):
            return iter(self.blocks)

    def block(rs, worker):
        return pa.table(
            {
                "input": [str(video)] * len(rs),
                "status": [r.result.status for r in rs],
                "faces": [len(r.result.faces) for r in rs],
                "rows": [""] * len(rs),
                "worker": [worker] * len(rs),
                "seconds": [1.0] * len(rs),
                "range": [pickle.dumps(r) for r in rs],
            },
            schema=_output_schema(),
        )

    out = tmp_path / "out"
    (out / MANIFEST_DIR).mkdir(parents=True)
    summary = {"files": 0, "faces": 0, "ok": 0, "no_face": 0, "errors": 0, "parts": 0, "per_actor": {}}
    schema = parquet_schema(an.classes)
    redo = _write_stream(
        Blocks(block(ranges[:1], "a:1"), block(ranges[1:], "b:2")), out, schema, an.classes, summary, {str(video): 3}
    )
    assert redo == [str(video)] and summary["files"] == 0 and not list(out.glob("part-*.parquet"))
    monkeypatch.undo()
    ranges = [analyze_range(an, video, s, e) for s, e in ((0, 32), (32, 64), (64, None))]
    redo = _write_stream(
        Blocks(block(ranges[2:], "b:2"), block(ranges[:2], "a:1")), out, schema, an.classes, summary, {str(video): 3}
    )
    assert redo == [] and summary["files"] == summary["parts"] == summary["ok"] == 1
    manifest = [r for f in (out / MANIFEST_DIR).glob("part-*.parquet") for r in pq.read_table(f).to_pylist()]
    assert [(r["input"], r["worker"], r["seconds"]) for r in manifest] == [(str(video), "a:1,b:2", 3.0)]
    _assert_same_video_rows(read_results(out).to_pylist(), _whole_rows(an, video), an.classes)


def _spliced_video(path):
    """Three shots of a real mp4 (10 fps, 320x240): the astronaut on a light background (frames 0-11), Grace
    Hopper at the same place on a dark one (12-23), the astronaut again (24-31). The faces' boxes overlap across
    each cut, so IoU tracking alone would keep one track."""
    import cv2
    import matplotlib.cbook
    from skimage import data

    grace = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    a = cv2.resize(cv2.cvtColor(data.astronaut()[20:250, 130:340], cv2.COLOR_RGB2BGR), (110, 110))
    b = cv2.resize(grace[40:330, 90:390], (110, 110))
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(32):
        shot_b = 12 <= i < 24
        frame = np.full((240, 320, 3), 40 if shot_b else 200, np.uint8)
        frame[60:170, 100 + (i % 4) : 210 + (i % 4)] = b if shot_b else a
        vw.write(frame)
    vw.release()
    return path


def test_a_shot_change_starts_new_tracks(tmp_path, one_thread):
    """A hard cut to another shot starts new tracks although the boxes overlap (frames 12 and 24 here); the Ray
    engine's ranges give the same ids, with a cut inside a range (12) and one where two ranges meet (24)."""
    from ferkit.inference.video import analyze_range, analyze_video, stitch_ranges

    video = _spliced_video(tmp_path / "spliced.mp4")
    an = _video_analyzer()
    whole = analyze_video(an, str(video))
    tracks = {f.frame: f.track for f in whole.faces}
    assert sorted(tracks) == list(range(32)), "one face in every frame"
    assert [tracks[i] for i in (0, 11, 12, 23, 24, 31)] == [0, 0, 1, 1, 2, 2], tracks
    assert len(set(tracks.values())) == 3
    got = stitch_ranges([analyze_range(an, video, s, e) for s, e in ((0, 8), (8, 16), (16, 24), (24, None))])
    assert {f.frame: f.track for f in got.faces} == tracks


def test_video_headers_are_claims(tmp_path, one_thread):
    """A frame count from a header is bounded and checked by reading (a 20-frame file saying 2**31 - 1 frames is
    split as 20 frames, in milliseconds, not into a million range tasks); a file that decodes fewer than half the
    frames its header lists (a time scale of 0 fps: 1 of 20) is an error naming both counts, its faces kept."""
    from ferkit.inference.ray_engine import frame_ranges
    from ferkit.inference.video import analyze_video, frame_count

    two = _two_faces_video(tmp_path / "two.mp4", n=20)
    lying = _lying_header(two, tmp_path / "lying.mp4", "frames")
    zero = _lying_header(two, tmp_path / "zero_fps.mp4", "zero_fps")
    import cv2

    assert cv2.VideoCapture(str(lying)).get(cv2.CAP_PROP_FRAME_COUNT) == 2**31 - 1  # the claim
    assert frame_count(two) == frame_count(lying) == 20 and frame_count(zero) == 1
    t0 = time.perf_counter()
    assert frame_ranges(str(lying), 8) == [(0, 8), (8, 16), (16, None)]
    assert time.perf_counter() - t0 < 30  # generous: the bisection is a few seeks
    an = _video_analyzer()
    whole = analyze_video(an, str(two))
    assert whole.status == "ok" and whole.frames == 20
    r = analyze_video(an, str(zero))
    assert r.status == "error" and r.frames == 1 and len(r.faces) == 1, (r.status, r.reason)
    assert "after 1 of the 20 frames its header lists" in r.reason
    r = analyze_video(an, str(lying))
    assert r.status == "error" and r.frames == 20 and len(r.faces) == len(whole.faces)
    assert "after 20 of the 2147483647 frames" in r.reason
    from ferkit.inference.video import analyze_range, stitch_ranges  # the Ray engine's ranges say the same

    got = stitch_ranges([analyze_range(an, lying, s, e) for s, e in frame_ranges(str(lying), 8)])
    assert (got.status, got.reason, got.frames, len(got.faces)) == (r.status, r.reason, r.frames, len(r.faces))


def test_long_video_spreads_over_actors_same_rows_as_one_run(cluster, tmp_path, one_thread):
    """A 90-frame video in 3 ranges on 2 actors: the rows of the whole-file run (frames, timestamps, boxes,
    labels, probabilities, track ids), the video once in the manifest; a variable-frame-rate copy (OpenCV's seek
    is off in it) gives its whole-file rows too; a broken video is one error row."""
    videos = tmp_path / "videos"
    videos.mkdir()
    two = _two_faces_video(videos / "two.mp4")
    vfr = _variable_frame_rate(two, videos / "vfr.mp4")
    broken = videos / "broken.mp4"
    broken.write_bytes(b"\x00\x01garbage" * 50)
    out = tmp_path / "out"
    ctx = ray.data.DataContext.get_current()
    wait = ctx.wait_for_min_actors_s
    ctx.wait_for_min_actors_s = 240  # both actors up before the first task, so the ranges go to both
    try:
        s = predict_dataset(
            [videos], out, **OPTS, actors=2, frames_per_task=30, ray_address=cluster.address, quiet=True
        )
    finally:
        ctx.wait_for_min_actors_s = wait
    assert s["files"] == 3 and s["errors"] == 1 and s["video_ranges"] == 6 and s["redone"] == 0, s
    manifest = [r for f in sorted((out / "_manifest").glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert sorted(r["input"] for r in manifest) == sorted(map(str, (broken, two, vfr))), "each video once"
    assert len(next(r for r in manifest if r["input"] == str(two))["worker"].split(",")) == 2, "ranges on 2 actors"
    rows = read_results(out).to_pylist()
    an = _video_analyzer()
    for v in (two, vfr):
        _assert_same_video_rows([r for r in rows if r["path"] == str(v)], _whole_rows(an, v), an.classes)
    b = [r for r in rows if r["path"] == str(two) and r["x1"] > 110]
    assert {r["track"] for r in b} == {1} and {31, 32, 63, 64} <= {r["frame"] for r in b}
    bad = [r for r in rows if r["path"] == str(broken)]
    assert len(bad) == 1 and bad[0]["status"] == "error" and "broken.mp4" in bad[0]["reason"]
    # a stride: ranges of 48 frames (30 rounded up to 8 x 3), frames 0, 3, 6, ... as in the whole-file run
    # and a copy whose header claims 2**31 - 1 frames: 2 ranges of its 90 real frames (not 44 million tasks)
    lying = _lying_header(two, tmp_path / "lying.mp4", "frames")
    s = predict_dataset(
        [two, lying],
        tmp_path / "out3",
        **OPTS,
        actors=2,
        frames_per_task=30,
        stride=3,
        ray_address=cluster.address,
        quiet=True,
    )
    assert s["video_ranges"] == 4 and s["redone"] == 0 and s["errors"] == 1, s
    rows = read_results(tmp_path / "out3").to_pylist()
    for v in (two, lying):
        _assert_same_video_rows([r for r in rows if r["path"] == str(v)], _whole_rows(an, v, 3), an.classes)
    assert "after 90 of the 2147483647 frames" in next(r for r in rows if r["path"] == str(lying))["reason"]


def test_unreachable_ray_address_is_one_line_within_seconds(tmp_path):
    """Nothing listens at --ray-address HOST:PORT: exit 2 and one line, in seconds (ray.init alone retries for
    minutes)."""
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "grey.jpg")
    with socket.socket() as sock:  # a port nothing listens on: bound, then released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    t0 = time.time()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ferkit",
            "predict",
            str(tmp_path / "grey.jpg"),
            "--engine",
            "ray",
            "--ray-address",
            f"127.0.0.1:{port}",
            "--output",
            str(tmp_path / "out"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.time() - t0
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"ferkit: error: --ray-address 127.0.0.1:{port}: cannot join that Ray cluster (nothing answers at "
        f"127.0.0.1:{port}: Connection refused)"
    ], r.stderr[-2000:]
    assert took < 60, f"{took:.0f} s"


def test_private_runtime_beside_another_jobs_cluster_and_token_clusters(tmp_path):
    """Another job's Ray cluster runs on this machine (one that wants a token): without --ray-address, ferkit
    starts a runtime of its own and finishes (it used to join that cluster and die on a ValueError); with
    --ray-address and no token, one line says the token is missing, exit 2, none of Ray's retry warnings."""
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / "grey.jpg")
    ray_tmp = tempfile.mkdtemp(prefix="fkrt", dir="/tmp")  # Ray's unix sockets want a short path
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), RAY_TMPDIR=ray_tmp)
    for k in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(k, None)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            "--num-cpus",
            "1",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--include-dashboard=false",
        ],
        env=dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0123456789abcdef" * 2),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not list(Path(ray_tmp).glob("ray/ray_current_cluster")):  # the file a bare ray.init() looks for
            assert head.poll() is None and time.time() < deadline, "the other job's cluster did not start"
            time.sleep(0.5)
        cmd = [
            sys.executable,
            "-m",
            "ferkit",
            "predict",
            str(tmp_path / "grey.jpg"),
            "--engine",
            "ray",
            "--model",
            "fer_minixception",
            "--det-size",
            "320",
        ]
        r = subprocess.run(
            cmd + ["--output", str(tmp_path / "mine")], env=env, capture_output=True, text=True, timeout=300
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert read_results(tmp_path / "mine").to_pylist()[0]["status"] == "no_face"
        # not a terminal, no --progress: ferkit's summary, none of Ray Data's INFO/WARNING lines or bars
        assert "ferkit predict --engine ray: 1 inputs: 0 ok" in r.stderr, r.stderr
        assert not [
            x for x in r.stderr.splitlines() if " INFO " in x or "WARNING" in x or "Warning:" in x or "\r" in x
        ], r.stderr
        r = subprocess.run(
            cmd + ["--output", str(tmp_path / "mine")], env=env, capture_output=True, text=True, timeout=300
        )  # again: nothing to do, and the line names the flag that redoes it
        assert r.returncode == 0 and r.stderr.strip().endswith("(--overwrite to redo)"), r.stderr[-2000:]
        r = subprocess.run(
            cmd + ["--output", str(tmp_path / "theirs"), "--ray-address", f"127.0.0.1:{port}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 2, r.stderr[-2000:]
        assert r.stderr.strip().splitlines() == [
            f"ferkit: error: --ray-address 127.0.0.1:{port}: cannot join that Ray cluster (the cluster uses token "
            "authentication and no token is set: export RAY_AUTH_TOKEN=<its token> (or RAY_AUTH_TOKEN_PATH=<file>) "
            "and RAY_AUTH_MODE=token)"
        ], r.stderr[-2000:]
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head's own processes go with it
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_swallowed_inside_the_stream_still_ends_the_run_as_interrupted():
    """Twice under a loaded `make test`, Ctrl-C landed inside Ray Data's iterator, which swallowed the
    KeyboardInterrupt and ended the stream early: the run exited 0 with parts missing. The engine notes the signal
    itself: a swallowed interrupt still ends the run with KeyboardInterrupt (the CLI's exit 130). Here the
    swallowing is done on purpose, at the point where Ray's iterator did it."""
    import signal

    from ferkit.inference import ray_engine

    class Stream:  # a dataset whose iterator swallows Ctrl-C and ends, as Ray Data's did
        def iter_batches(self, **_):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)
            except KeyboardInterrupt:
                return
            yield from ()

    before = signal.getsignal(signal.SIGINT)
    stop = ray_engine._note_sigint()
    try:
        with pytest.raises(KeyboardInterrupt):
            ray_engine._write_stream(Stream(), Path("."), None, [], {"per_actor": {}}, {}, (), None, stop)
    finally:
        ray_engine._restore_sigint()
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_stops_a_ray_run_in_seconds(tmp_path):
    """Ctrl-C (SIGINT) during a Ray run: exit 130 and the one line "ferkit: interrupted", within seconds."""
    import cv2

    videos = tmp_path / "videos"
    videos.mkdir()
    two = _two_faces_video(videos / "v0.mp4")
    for i in range(1, 11):
        shutil.copy(two, videos / f"v{i}.mp4")
    # one long video keeps the actors busy well after the short ones' parts are written: the signal always lands
    # mid-run (with short videos only, all of them could finish between the first part and the signal on a busy
    # machine, and the run rightly exits 0)
    cap, frames = cv2.VideoCapture(str(two)), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    vw = cv2.VideoWriter(str(videos / "long.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(16):  # 1,440 frames
        for f in frames:
            vw.write(f)
    vw.release()
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("RAY_ADDRESS", None)
    out = tmp_path / "out"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferkit",
            "predict",
            str(videos),
            "--engine",
            "ray",
            "--output",
            str(out),
            "--frames-per-task",
            "8",
            "--model",
            "fer_minixception",
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not list(out.glob("part-*.parquet")):  # the actors are at work
            assert p.poll() is None, p.communicate()[1][-2000:]
            assert time.time() < deadline, "no part written in 240 s"
            time.sleep(0.2)
        assert len(list(out.glob("part-*.parquet"))) < 12, "the run ended before the signal: the long video is not done"
        p.send_signal(signal.SIGINT)
        t0 = time.time()
        _, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130 and err.strip().splitlines()[-1] == "ferkit: interrupted", err[-2000:]
    assert time.time() - t0 < 30


def test_non_utf8_names_and_unwritable_output_on_ray(cluster, tmp_path, one_thread):
    """File names that are not UTF-8 (a photo and a video in ranges): the Parquet parts spell them with \\xNN
    escapes, as the local engine's Parquet does, and a re-run skips them; an --output that cannot take files is
    one line before Ray starts."""
    from ferkit.errors import OutputError
    from ferkit.schema import utf8_text

    src = tmp_path / "in"
    src.mkdir()
    photo = os.fsdecode(bytes(src) + b"/\xff\xfe bad.jpg")
    shutil.copy(Path(__file__).parent / "data" / "multi_face.jpg", photo)
    video = Path(os.fsdecode(bytes(src) + b"/clip \xe9.mp4"))  # written under a plain name: OpenCV's writer
    os.replace(_two_faces_video(tmp_path / "clip.mp4", n=24), video)  # crashes on the other (its reader did too)
    out = tmp_path / "out"
    s = predict_dataset([src], out, **OPTS, actors=2, frames_per_task=8, ray_address=cluster.address, quiet=True)
    assert s["files"] == 2 and s["errors"] == 0 and s["video_ranges"] == 3, s
    rows = read_results(out).to_pylist()
    assert {r["path"] for r in rows} == {utf8_text(photo), utf8_text(str(video))}
    assert "\\xff\\xfe bad.jpg" in utf8_text(photo)
    assert sum(r["path"] == utf8_text(photo) for r in rows) == 5
    s = predict_dataset([src], out, **OPTS, ray_address=cluster.address, quiet=True)
    assert s["files"] == 0 and s["skipped"] == 2, s
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="a_file' is a file, not a folder"):
        predict_dataset([src], blocker / "out", **OPTS, ray_address="127.0.0.1:1", quiet=True)


def test_actors_take_the_settings_object(cluster, tmp_path):
    """A non-default AnalyzerSettings (another detector, detection size and crop) reaches every actor: the
    Parquet rows are the API's rows for the same settings object, and the run's config.json records them."""
    from ferkit import AnalyzerSettings, analyze
    from ferkit.schema import table_columns, table_rows

    photo = Path(__file__).parent / "data" / "multi_face.jpg"
    settings = AnalyzerSettings("fer_minixception", detector="haar", det_size=320, crop="box")
    out = tmp_path / "out"
    s = predict_dataset([str(photo)], out, settings=settings, actors=1, ray_address=cluster.address, quiet=True)
    want_result = analyze(photo, settings=settings)
    classes = [c for c in want_result.faces[0].probabilities]
    cols = table_columns(classes)
    want = [dict(zip(cols, r, strict=True)) for r in table_rows(want_result, classes)]
    got = sorted(read_results(out).to_pylist(), key=lambda r: r["face"])
    assert "mesh" not in got[0]  # the mesh column only when asked for
    assert s["faces"] == len(want) == 3 and len(got) == 3  # haar at 320 px: three faces (retinaface finds 5)
    for g, w in zip(got, want, strict=True):
        assert g["detector"] == w["detector"] == "haar@320" and g["label"] == w["label"]
        for c in cols:
            if isinstance(w[c], float):
                assert abs(g[c] - w[c]) < 1e-4, c
    config = json.loads((out / "_manifest" / "config.json").read_text())
    assert {k: config[k] for k in ("models", "detector", "det_size", "crop")} == {
        "models": ["fer_minixception"],
        "detector": "haar",
        "det_size": 320,
        "crop": "box",
    }
    with pytest.raises(ConfigError, match="--no-detect and --gallery"):
        predict_dataset([str(photo)], tmp_path / "out2", settings=settings.replace(detect=False), quiet=True)


def test_ray_parquet_carries_the_attributes_the_api_gives(cluster, tmp_path):
    """predict_dataset(..., attributes=...): the Parquet parts get the attribute columns, same values as the API."""
    from ferkit import analyze

    photo = Path(__file__).parent / "data" / "multi_face.jpg"
    ask = "age,gender,pose,spoof,mesh"
    out = tmp_path / "out"
    predict_dataset([str(photo)], out, attributes=ask, actors=1, ray_address=cluster.address, quiet=True)
    alone = analyze(photo, attributes=ask)
    want = sorted((f.to_dict() for f in alone.faces), key=lambda f: f["face"])
    got = sorted(read_results(out).to_pylist(), key=lambda r: r["face"])
    assert len(got) == len(want) == 5
    for g, w in zip(got, want, strict=True):
        assert g["gender"] == w["gender"] and isinstance(g["gender"], str), (g, w)
        for k in ("age", "yaw", "pitch", "roll", "spoof_score"):
            assert abs(g[k] - w[k]) <= 1e-4, (k, g[k], w[k])
        # the mesh: 468 [x, y, z] per face, the API's points
        assert (g["mesh"] is None) == (w["mesh"] is None), (g["face"], w["attribute_reasons"])
        if w["mesh"] is not None:
            np.testing.assert_allclose(np.array(g["mesh"]), np.array(w["mesh"]), atol=1e-4)
    assert sum(g["mesh"] is not None for g in got) >= 3
    # the column type is the one-process Parquet writer's (`ferkit predict --format parquet`)
    from ferkit.schema import ResultWriter

    w = ResultWriter("parquet", list(alone.faces[0].probabilities), tmp_path / "local.parquet", attributes=True)
    w.write(alone)
    w.close()
    assert (
        pq.read_schema(tmp_path / "local.parquet").field("mesh").type
        == pq.read_schema(next(out.glob("part-*.parquet"))).field("mesh").type
    )


def test_ray_video_options_give_the_whole_file_rows(cluster, tmp_path, one_thread):
    """`ferkit predict clip.mp4 --engine ray --detect-every 3 --smooth 0.5 --max-frames 70 --attributes
    age,gender` in ranges on 2 actors writes the rows of the one-process run with the same options: ranges start on
    the whole-file run's detection frames (3 does not divide the 8 frames of a classifier batch: ranges of
    lcm(8, 3) = 24 frames), the driver replays the smoothing (probabilities, age, gender) over the stitched
    tracks, and only the first 70 frames are analysed, in 3 ranges (not 4 over the whole 90 frames)."""
    from conftest import run_cli

    from ferkit.inference.pipeline import Analyzer
    from ferkit.inference.video import analyze_video
    from ferkit.schema import table_columns, table_rows

    video = _two_faces_video(tmp_path / "two.mp4")
    out = tmp_path / "out"
    r = run_cli(
        "predict", video, "--engine", "ray", "--ray-address", cluster.address, "--actors", "2",
        "--frames-per-task", "16", "--detect-every", "3", "--smooth", "0.5", "--max-frames", "70",
        "--attributes", "age,gender", "--model", "fer_minixception", "--detector", "retinaface",
        "--det-size", "320", "--crop", "align", "--output", out,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "videos in 3 frame ranges" in r.stderr, r.stderr[-2000:]
    an = Analyzer(**OPTS, attributes="age,gender")
    whole = analyze_video(an, str(video), detect_every=3, smooth=0.5, max_frames=70)
    cols = table_columns(an.classes, attributes=True)
    want = [dict(zip(cols, row, strict=True)) for row in table_rows(whole, an.classes, attributes=True)]
    got = read_results(out).to_pylist()
    _assert_same_video_rows(got, want, an.classes)
    assert max(w["frame"] for w in want) == 69 and {w["track"] for w in want} == {0, 1}
    got = sorted(got, key=lambda g: (g["frame"], g["face"]))
    for g, w in zip(got, want, strict=True):
        assert g["gender"] == w["gender"] and abs(g["age"] - w["age"]) <= 1e-3, (g, w)
        assert abs(g["gender_score"] - w["gender_score"]) <= 1e-3, (g, w)
    # and smoothed they are: ages and gender scores are not the raw per-frame values
    raw = analyze_video(an, str(video), detect_every=3, max_frames=70)
    raw_rows = [dict(zip(cols, row, strict=True)) for row in table_rows(raw, an.classes, attributes=True)]
    assert [r["frame"] for r in raw_rows] == [g["frame"] for g in got]
    for k in ("age", "gender_score"):
        assert sum(abs(g[k] - r[k]) > 0.01 for g, r in zip(got, raw_rows, strict=True)) > len(got) // 2, k
