"""One AnalyzerSettings object on every surface: the API (object or keyword arguments), the CLI's flags and a
server started with them give the same faces for non-default settings; bad values are one line from the one
validation; the API's analyzer cache is bounded and builds once under concurrent threads."""

import gc
import json
import threading
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import run_cli, serve_cli

import ferkit
from ferkit import AnalyzerSettings
from ferkit.errors import ConfigError

PHOTO = Path(__file__).parent / "data" / "multi_face.jpg"
# Not the defaults anywhere: another detector, a smaller detection size, box crops, one model.
FLAGS = ["--model", "fer_minixception", "--detector", "haar", "--det-size", "320", "--crop", "box"]
SETTINGS = AnalyzerSettings("fer_minixception", detector="haar", det_size=320, crop="box")


def _faces(d: dict) -> list[tuple]:
    """(box, label, probabilities) of each face of a FileResult dict."""
    return [(f["box"], f["label"], f["probabilities"]) for f in d["faces"]]


def _same(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for (ba, la, pa), (bb, lb, pb) in zip(a, b, strict=True):
        assert np.allclose(ba, bb, atol=1e-3) and la == lb
        assert max(abs(pa[c] - pb[c]) for c in pa) < 1e-4


def test_api_cli_and_server_give_the_same_faces_for_the_same_settings(tmp_path):
    want = ferkit.analyze(PHOTO, settings=SETTINGS).to_dict()
    assert want["detector"] == "haar@320" and want["model"] == "fer_minixception"
    default = ferkit.analyze(PHOTO).to_dict()
    assert len(_faces(default)) != len(_faces(want))  # the settings change the answer: a comparison that can fail
    # the same settings as keyword arguments: one code path, the same object, the same cached analyzer
    assert (
        ferkit.analyzer("fer_minixception", detector="haar", det_size=320, crop="box")
        is ferkit.analyzer(settings=SETTINGS)
        is ferkit.analyzer(models=["fer_minixception"], detector="haar", det_size=320, crop="box")
    )
    (kw,) = ferkit.predict("fer_minixception", [PHOTO], detector="haar", det_size=320, crop="box")
    _same(_faces(kw.to_dict()), _faces(want))

    r = run_cli("predict", PHOTO, *FLAGS, "--quiet")
    assert r.returncode == 0, r.stderr
    (cli,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert cli["detector"] == "haar@320"
    _same(_faces(cli), _faces(want))

    with serve_cli(*FLAGS) as (url, _):
        info = httpx.get(f"{url}/v1/models", timeout=30).json()
        assert info["detector"] == "haar@320" and info["det_size"] == 320 and info["model"] == "fer_minixception"
        got = httpx.post(f"{url}/v1/predict", files={"file": ("p.jpg", PHOTO.read_bytes(), "image/jpeg")}, timeout=60)
        assert got.status_code == 200, got.text
        _same(_faces(got.json()), _faces(want))


def test_fast_is_the_one_preset_on_cli_api_and_server_and_a_typed_flag_overrides_it():
    from ferkit import defaults

    preset = AnalyzerSettings(**defaults.FAST)
    assert preset != AnalyzerSettings()  # the fast mode is not the default: a comparison that can fail
    # API: fast=True is the preset on every entry point; a keyword argument beside it wins
    assert ferkit.analyzer(fast=True) is ferkit.analyzer(settings=preset)
    want = ferkit.analyze(PHOTO, fast=True).to_dict()
    assert (want["detector"], want["model"]) == ("retinaface@320", "fer_minixception")
    default = ferkit.analyze(PHOTO).to_dict()
    assert (default["detector"], default["model"]) != (want["detector"], want["model"])
    (kw,) = ferkit.predict(inputs=[PHOTO], fast=True)
    _same(_faces(kw.to_dict()), _faces(want))
    over = ferkit.analyze(PHOTO, fast=True, detector="haar").to_dict()
    assert (over["detector"], over["model"]) == ("haar@320", "fer_minixception")
    assert ferkit.analyzer("human_xception", fast=True).settings == preset.replace(models=("human_xception",))

    # CLI: --fast alone is the preset; --detector / --det-size typed beside it win, the rest of the preset stays
    r = run_cli("predict", PHOTO, "--fast", "--quiet")
    assert r.returncode == 0, r.stderr
    (cli,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (cli["detector"], cli["model"]) == ("retinaface@320", "fer_minixception")
    _same(_faces(cli), _faces(want))
    r = run_cli("predict", PHOTO, "--fast", "--detector", "haar", "--quiet")
    assert r.returncode == 0, r.stderr
    (cli,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (cli["detector"], cli["model"]) == ("haar@320", "fer_minixception")
    _same(_faces(cli), _faces(over))
    r = run_cli("predict", PHOTO, "--fast", "--det-size", "640", "--quiet")
    assert r.returncode == 0, r.stderr
    (cli,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (cli["detector"], cli["model"]) == ("retinaface@640", "fer_minixception")

    # server: `ferkit serve --fast` runs the same preset and answers the same faces
    with serve_cli("--fast") as (url, _):
        info = httpx.get(f"{url}/v1/models", timeout=30).json()
        assert (info["detector"], info["det_size"], info["model"]) == ("retinaface@320", 320, "fer_minixception")
        got = httpx.post(f"{url}/v1/predict", files={"file": ("p.jpg", PHOTO.read_bytes(), "image/jpeg")}, timeout=60)
        assert got.status_code == 200, got.text
        _same(_faces(got.json()), _faces(want))


def test_bad_settings_are_one_line_from_the_one_validation(tmp_path):
    # CLI: one line naming the setting and its allowed values, exit 2, before any model loads
    r = run_cli("predict", PHOTO, "--det-size", "5")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert "det_size 5" in r.stderr and "from 32 to 8192" in r.stderr, r.stderr
    r = run_cli("predict", PHOTO, "--detector", "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "detector 'nope'" in r.stderr, r.stderr
    assert "retinaface, blazeface, haar, mtcnn, ssd_mobilenet, tinyface" in r.stderr, r.stderr
    r = run_cli("serve", "--port", "1", "--crop", "diagonal")  # refused before the port is tried
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "crop 'diagonal'" in r.stderr and "align, box" in r.stderr, r.stderr
    # API: the same ConfigError, for the object, keyword arguments and a typo in a name
    with pytest.raises(ConfigError, match=r"^det_size 9000: give a long side in pixels from 32 to 8192"):
        AnalyzerSettings(det_size=9000)
    with pytest.raises(ConfigError, match=r"^batch_size 0: give an integer >= 1"):
        ferkit.predict(inputs=[PHOTO], batch_size=0)
    with pytest.raises(ConfigError, match=r"^unknown analyzer setting 'det_sise'"):
        ferkit.analyze(PHOTO, det_sise=320)
    # frozen, hashable, and what the server and the Ray actors get back from a dict is the same object
    assert AnalyzerSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    assert SETTINGS.replace(crop="align") != SETTINGS and SETTINGS.crop == "box"
    with pytest.raises(AttributeError):
        SETTINGS.crop = "align"  # type: ignore[misc]  # frozen: the point of the test


def test_a_newly_registered_detector_is_a_valid_setting():
    from ferkit.faces import FaceDetector, register_backend
    from ferkit.faces.base import _BACKENDS

    with pytest.raises(ConfigError, match="detector 'nobody'"):
        AnalyzerSettings(detector="nobody")

    @register_backend("nobody")
    class Nobody(FaceDetector):  # finds no face, anywhere
        def _detect_many(self, images, scales):
            return [[] for _ in images]

    try:
        s = AnalyzerSettings("fer_minixception", detector="nobody")
        r = ferkit.analyze(PHOTO, settings=s)
        assert r.detector == "nobody@640" and r.status == "no_face"
    finally:
        del _BACKENDS["nobody"]  # the registry is the process's: later tests see the built-in three


def test_analyzer_cache_is_bounded_and_builds_once_under_threads():
    from ferkit.inference.pipeline import CACHE_SIZE

    # crops only (no detector): cheap to build, and each batch_size is another settings object
    def settings(k):
        return AnalyzerSettings("fer_minixception", detect=False, batch_size=100 + k)

    got: list = []
    start = threading.Barrier(6)

    def ask():
        start.wait()
        got.append(ferkit.analyzer(settings=settings(0)))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(got) == 6 and len({id(a) for a in got}) == 1  # six threads at once: one analyzer built
    first = weakref.ref(got[0])
    got.clear()
    for k in range(1, CACHE_SIZE + 1):  # CACHE_SIZE newer settings push the first one out
        ferkit.analyzer(settings=settings(k))
    assert ferkit.analyzer(settings=settings(CACHE_SIZE)) is ferkit.analyzer(settings=settings(CACHE_SIZE))
    gc.collect()
    assert first() is None  # evicted and freed, not kept alive by the cache
