"""The Ray engine on a real two-node Ray cluster on 127.0.0.1: same rows as the CLI's analyzer, every input
exactly once after a worker is killed mid-job and after the driver is killed and the job re-run."""

import json
import os
import shutil
import signal
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

from ferkit.errors import ConfigError  # noqa: E402
from ferkit.inference.ray_engine import RAY_MISSING, predict_dataset, read_results  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SRC = str(Path(__file__).resolve().parents[1] / "src")
OPTS = dict(models=("fer_minixception",), detector="retinaface", det_size=320, crop="align")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes (one CPU each), both on 127.0.0.1, session files in a private temp dir."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="fkray", dir="/tmp")  # short: Ray's unix sockets live under it
    c = Cluster(initialize_head=True, head_node_args=dict(
        num_cpus=1, node_ip_address="127.0.0.1", temp_dir=tmp, include_dashboard=False))
    c.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()
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
    bases = {"astro": Image.fromarray(data.astronaut()),
             "grace": Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")}
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
    for name, arr in {"coffee": data.coffee(), "grey": np.full((96, 128, 3), 120, np.uint8),
                      "noise": np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)}.items():
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
    listed.write_text("# objects by URI\n" + "".join(f"file://{p}\n" for p in sorted(extra.glob("*.jpg")))
                      + f"file://{extra}/missing.jpg\n")
    local = sorted(str(p) for p in photos.rglob("*") if p.is_file())
    an = Analyzer(list(OPTS["models"]), detector=OPTS["detector"], det_size=OPTS["det_size"], crop=OPTS["crop"])
    # One torch thread, as in each actor (Ray gives a 1-CPU worker OMP_NUM_THREADS=1): with two threads the
    # detector's sums run in another order and probabilities move by up to ~3e-4 on small faces.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = {r.path: csv_rows(r, an.classes)
               for r in an.analyze_paths(local + sorted(str(p) for p in extra.glob("*.jpg")))}
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
    return [x for f in sorted((Path(out) / "_manifest").glob("part-*.parquet"))
            for x in pq.read_table(f, columns=["input"]).column("input").to_pylist()]


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
        want = [dict(zip(cols, row)) for row in inputs["ref"][local]]  # the CLI's rows, by column name
        assert len(got) == len(want), f"{path}: {len(got)} rows, CLI analyzer gives {len(want)}"
        for g, w in zip(sorted(got, key=lambda r: (r["frame"] or 0, r["face"] or 0)), want):
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
            np.testing.assert_allclose([g[k] for k in ("x1", "y1", "x2", "y2")], [w[k] for k in ("x1", "y1", "x2", "y2")],
                                       atol=0.05)
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
    s = predict_dataset([inputs["photos"], inputs["list"]], out, **OPTS, actors=2, batch_size=8,
                        ray_address=cluster.address, quiet=True)
    t.join(5)
    expected = inputs["local"] + [f"file://{p}" for p in sorted(inputs["extra"].glob("*.jpg"))] + [
        f"file://{inputs['extra']}/missing.jpg"]
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
    predict_dataset([listed], tmp_path / "out", **OPTS, actors=2, batch_size=1, ray_address=cluster.address,
                    quiet=True)
    an = Analyzer(list(OPTS["models"]), detector=OPTS["detector"], det_size=OPTS["det_size"], crop=OPTS["crop"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = {p: csv_rows(r, an.classes) for p in chosen if not p.endswith(".mp4")
                 for r in an.analyze_paths([p.removeprefix("file://")])}
        alone[str(video)] = csv_rows(analyze_video(an, str(video)), an.classes)
    finally:
        torch.set_num_threads(threads)
    rows = _check_exactly_once(tmp_path / "out", chosen,
                               dict(inputs, ref={k.removeprefix("file://"): v for k, v in alone.items()}), atol=1e-5)
    frames = [r for r in rows if r["path"] == str(video)]
    assert len(frames) >= 6 and all(r["frame"] is not None and r["track"] is not None for r in frames)


def test_killed_driver_then_rerun_gives_every_input_once(cluster, inputs, tmp_path):
    out = tmp_path / "out"
    subset = tmp_path / "subset.txt"
    chosen = inputs["local"][::3]
    subset.write_text("\n".join(chosen) + "\n")
    code = ("import sys; from ferkit.inference.ray_engine import predict_dataset; "
            f"predict_dataset([{str(subset)!r}], {str(out)!r}, models=('fer_minixception',), det_size=320, "
            f"actors=2, batch_size=4, ray_address={cluster.address!r}, quiet=True)")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
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
    s = predict_dataset([subset], out, **OPTS, actors=2, batch_size=16, ray_address=cluster.address, quiet=True,
                        overwrite=True)
    assert s["files"] == len(chosen) and s["skipped"] == 0
    _check_exactly_once(out, chosen, inputs)


def test_without_ray_one_line_config_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from ferkit.errors import ConfigError\n"
            "from ferkit.inference.ray_engine import predict_dataset\n"
            "try:\n    predict_dataset(['x'], 'out')\n"
            "except ConfigError as e:\n    print(json.dumps(str(e)))\n")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", "import json\n" + code], env=env, capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == RAY_MISSING == "--engine ray needs Ray: pip install 'ferkit[ray]'"
