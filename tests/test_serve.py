"""ferkit serve over real HTTP on loopback: predictions on real photos, limits and bad input (4xx JSON, never a
500, the worker stays alive), API key, metrics, micro-batching under concurrency, the page and the CLI."""

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import serve_cli

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from ferkit.serve.app import BackgroundServer, ServeConfig  # noqa: E402


def _jpeg(arr, quality=90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos():
    import matplotlib
    import skimage.data

    grace = open(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"), "rb").read()
    return {"grace": grace, "astronaut": _jpeg(skimage.data.astronaut())}


@pytest.fixture(scope="module")
def analyzer():
    from ferkit.inference.pipeline import Analyzer

    return Analyzer("fer_minixception", detector="retinaface", det_size=640)


@pytest.fixture(scope="module")
def server(analyzer):
    cfg = ServeConfig(
        analyzer=analyzer, max_upload_bytes=2_000_000, max_pixels=4_000_000, batch_max=8, batch_wait_ms=10
    )
    with BackgroundServer(cfg) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


def _ok(r):
    assert r.status_code == 200, r.text
    return r.json()


def _face_checks(body, w, h):
    assert body["status"] == "ok" and body["image_size"] == [w, h]
    f = body["faces"][0]
    x1, y1, x2, y2 = f["box"]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    assert set(f["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert abs(sum(f["probabilities"].values()) - 1) < 1e-3
    assert f["label"] == max(f["probabilities"], key=f["probabilities"].get)
    assert f["identity"] is None


def test_predict_multipart_and_raw(server, photos):
    body = _ok(server.post("/v1/predict", files={"file": ("grace.jpg", photos["grace"], "image/jpeg")}))
    _face_checks(body, 512, 600)
    assert body["path"] == "grace.jpg" and len(body["faces"]) == 1
    raw = _ok(server.post("/v1/predict", content=photos["astronaut"], headers={"content-type": "image/jpeg"}))
    _face_checks(raw, 512, 512)
    # the same image gives the same answer both ways
    again = _ok(
        server.post("/v1/predict", content=photos["grace"], headers={"content-type": "application/octet-stream"})
    )
    assert again["faces"][0]["probabilities"] == body["faces"][0]["probabilities"]


def test_no_face_is_ok_not_error(server):
    body = _ok(
        server.post(
            "/v1/predict", content=_jpeg(np.full((120, 160, 3), 128, np.uint8)), headers={"content-type": "image/jpeg"}
        )
    )
    assert body["status"] == "no_face" and body["faces"] == []


def test_batch(server, photos):
    files = [
        ("files", ("g.jpg", photos["grace"], "image/jpeg")),
        ("files", ("a.jpg", photos["astronaut"], "image/jpeg")),
        ("files", ("bad.png", b"not an image", "image/png")),
    ]
    res = _ok(server.post("/v1/predict/batch", files=files))["results"]
    assert [r["status"] for r in res] == ["ok", "ok", "error"]
    assert [r["path"] for r in res] == ["g.jpg", "a.jpg", "bad.png"] and "not an image" in res[2]["reason"]


def test_batch_file_limit(server, photos):
    """More files than max_batch_files (16 by default) is a 413 naming the limit, not a slow batch."""
    from ferkit.serve import ServeConfig

    limit = ServeConfig().max_batch_files
    files = [("files", (f"{k}.png", b"x", "image/png")) for k in range(limit + 1)]
    r = server.post("/v1/predict/batch", files=files)
    assert r.status_code == 413 and r.json()["error"] == "too_many_files" and str(limit) in r.json()["reason"]
    ok = server.post("/v1/predict/batch", files=files[:limit])
    assert ok.status_code == 200 and len(ok.json()["results"]) == limit


@pytest.mark.parametrize(
    "case",
    [
        "text",
        "truncated",
        "empty",
        "wrong_type",
        "too_large",
        "too_many_pixels",
        "no_file_field",
        "bad_multipart",
        "batch_not_multipart",
        "garbage_png",
    ],
)
def test_bad_input_is_4xx_json(server, photos, case):
    from PIL import Image

    g = photos["grace"]
    big = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(big, "PNG")  # 6 Mpx > 4 Mpx limit, but a small file
    req = {
        "text": dict(content=b"hello", headers={"content-type": "image/jpeg"}),
        "truncated": dict(content=g[: len(g) // 3], headers={"content-type": "image/jpeg"}),
        "empty": dict(content=b"", headers={"content-type": "image/jpeg"}),
        "wrong_type": dict(content=g, headers={"content-type": "text/plain"}),
        "too_large": dict(content=os.urandom(2_100_000), headers={"content-type": "image/jpeg"}),
        "too_many_pixels": dict(content=big.getvalue(), headers={"content-type": "image/png"}),
        "no_file_field": dict(files={"other": ("x.jpg", g, "image/jpeg")}),
        "bad_multipart": dict(content=b"--xx\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=xx"}),
        "batch_not_multipart": dict(content=g, headers={"content-type": "image/jpeg"}),
        "garbage_png": dict(content=b"\x89PNG\r\n\x1a\n" + os.urandom(500), headers={"content-type": "image/png"}),
    }[case]
    url = "/v1/predict/batch" if case == "batch_not_multipart" else "/v1/predict"
    r = server.post(url, **req)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "reason"} and body["reason"]
    expected = {"too_large": 413, "too_many_pixels": 413, "wrong_type": 415, "batch_not_multipart": 415}
    if case in expected:
        assert r.status_code == expected[case]
    # the worker is alive: a good request still works
    assert _ok(server.post("/v1/predict", content=g, headers={"content-type": "image/jpeg"}))["status"] == "ok"


def test_models_health_metrics_openapi(server, photos):
    m = _ok(server.get("/v1/models"))
    assert m["models"][0]["classes"] == m["classes"] and "happy" in m["classes"]
    assert m["det_size"] == 640 and m["micro_batching"]["max_batch"] == 8
    assert _ok(server.get("/healthz")) == {"status": "ok"}
    _ok(server.post("/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg"}))
    text = server.get("/metrics").text
    assert 'ferkit_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'ferkit_request_duration_seconds_bucket{route="/v1/predict",le="+Inf"}' in text
    faces = [ln for ln in text.splitlines() if ln.startswith("ferkit_faces_processed_total ")]
    assert faces and int(faces[0].split()[1]) >= 1
    spec = _ok(server.get("/openapi.json"))
    assert {"/v1/predict", "/v1/predict/batch", "/v1/models", "/healthz", "/metrics"} <= set(spec["paths"])
    content = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "application/octet-stream"} <= set(content)


def test_concurrent_requests_are_micro_batched(server, photos):
    """16 concurrent requests with different photos (sizes, 0 / 1 / 5 faces): each answer is its own photo's, the
    same as when it was sent alone, and they shared forwards."""
    from pathlib import Path

    from PIL import Image

    multi = (Path(__file__).parent / "data" / "multi_face.jpg").read_bytes()
    astro = np.asarray(Image.open(io.BytesIO(photos["astronaut"])))
    imgs = {
        "grace": photos["grace"],
        "astronaut": photos["astronaut"],
        "multi": multi,
        "small_astronaut": _jpeg(np.asarray(Image.fromarray(astro).resize((300, 300)))),
        "mirror_grace": _jpeg(np.asarray(Image.open(io.BytesIO(photos["grace"])))[:, ::-1].copy()),
        "blank": _jpeg(np.full((200, 260, 3), 128, np.uint8)),
    }

    def post(name):
        r = server.post("/v1/predict", content=imgs[name], headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        return r.json()

    alone = {name: post(name) for name in imgs}  # one at a time: batches of one
    assert [len(alone[n]["faces"]) for n in imgs] == [1, 1, 5, 1, 1, 0]
    before = server.get("/metrics").text

    def count(text):
        return int([ln for ln in text.splitlines() if ln.startswith("ferkit_batch_images_count")][0].split()[1])

    order = [list(imgs)[i % len(imgs)] for i in range(16)]
    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(post, order))
    for name, body in zip(order, got, strict=True):
        want = alone[name]
        assert body["image_size"] == want["image_size"] and body["status"] == want["status"], name
        assert len(body["faces"]) == len(want["faces"]), name
        for f, g in zip(body["faces"], want["faces"], strict=True):
            assert f["label"] == g["label"], name
            assert np.abs(np.subtract(f["box"], g["box"])).max() < 0.5, (name, f["box"], g["box"])
            assert max(abs(f["probabilities"][c] - g["probabilities"][c]) for c in g["probabilities"]) < 1e-3, name
    batches = count(server.get("/metrics").text) - count(before)
    assert batches < 16, f"16 concurrent images took {batches} forwards: no micro-batching"


def test_saturated_server_answers_503_json(photos):
    """A queue of one image and a slow model: concurrent requests beyond it get 503 with the JSON error body, and
    the server serves again once the queue drains."""
    from ferkit.inference.pipeline import Analyzer

    class Slow(Analyzer):
        def process(self, *a, **k):
            time.sleep(0.8)
            return super().process(*a, **k)

    an = Slow("fer_minixception", detector="haar")
    cfg = ServeConfig(analyzer=an, batch_max=1, max_queue=1, request_timeout_s=60)
    with BackgroundServer(cfg) as url, httpx.Client(base_url=url, timeout=60) as c:

        def post(_):
            return c.post("/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg"})

        with ThreadPoolExecutor(6) as ex:
            rs = list(ex.map(post, range(6)))
        codes = sorted(r.status_code for r in rs)
        assert set(codes) == {200, 503} and codes.count(200) <= 3, codes  # one running, one queued (+ a race)
        for r in rs:
            if r.status_code == 503:
                assert r.json() == {"error": "busy", "reason": "server saturated: too many queued images, retry later"}
            else:
                assert r.json()["faces"], r.text
        assert post(0).status_code == 200  # drained: served again
        assert 'route="/v1/predict",status="503"' in c.get("/metrics").text


def test_page_and_static(server):
    r = server.get("/")
    assert r.status_code == 200 and "getUserMedia" not in r.text and "/static/app.js" in r.text
    js = server.get("/static/app.js")
    assert js.status_code == 200 and "getUserMedia" in js.text and "/v1/predict" in js.text
    assert server.get("/static/style.css").status_code == 200
    assert "http://" not in r.text and "https://" not in r.text + js.text  # nothing external is fetched
    assert server.get("/nope").status_code == 404 and server.get("/nope").json()["error"] == "http_404"


def test_api_key(analyzer, photos, monkeypatch):
    monkeypatch.setenv("FERKIT_API_KEY", "s3cret")
    with BackgroundServer(ServeConfig(analyzer=analyzer)) as url, httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/v1/models", "/metrics", "/"):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert c.post("/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg"}).status_code == 401
        assert c.get("/v1/models", headers={"x-api-key": "wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200
        assert c.get("/v1/models", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/?api_key=s3cret").status_code == 200
        r = c.post(
            "/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg", "x-api-key": "s3cret"}
        )
        assert r.status_code == 200 and r.json()["faces"]


def test_timeout_is_504_json(photos):
    from ferkit.inference.pipeline import Analyzer

    class Slow(Analyzer):
        def process(self, *a, **k):
            time.sleep(1.5)
            return super().process(*a, **k)

    an = Slow("fer_minixception", detector="haar")
    with BackgroundServer(ServeConfig(analyzer=an, request_timeout_s=0.3)) as url, httpx.Client(base_url=url) as c:
        r = c.post("/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg"}, timeout=30)
        assert r.status_code == 504 and r.json()["error"] == "timeout"
        time.sleep(1.5)
        assert c.get("/healthz").status_code == 200


def test_cli_serve_subprocess(photos, tmp_path):
    with serve_cli("--model", "fer_minixception", "--detector", "haar", "--batch-max", "4") as (url, _):
        r = httpx.post(url + "/v1/predict", content=photos["grace"], headers={"content-type": "image/jpeg"}, timeout=60)
        assert r.status_code == 200 and r.json()["faces"], r.text
        assert json.loads(httpx.get(url + "/v1/models").text)["micro_batching"]["max_batch"] == 4


def test_transfer_encoding_with_content_length_is_refused(server):
    """Two framings in one request (request smuggling, RFC 9112 6.3): 400, and the connection is closed, since
    where this request ends is not known."""
    import socket

    port = int(str(server.base_url).rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        got = b""
        while chunk := s.recv(4096):
            got += chunk
    assert got.startswith(b"HTTP/1.1 400 ") and b'"ambiguous_framing"' in got, got[:300]
    assert got.count(b"HTTP/1.1 ") == 1, got  # the smuggled second request was never answered
    ok = server.get("/healthz", headers={"content-length": "0"})  # one framing is fine
    assert ok.status_code == 200


def test_metrics_labels_are_bounded(server):
    """Invented HTTP method names count as method="other": /metrics does not grow with them."""
    for k in range(40):
        assert server.request(f"FOO{k}", "/healthz").status_code == 405
    text = server.get("/metrics").text
    assert "FOO" not in text and 'method="other",route="/healthz",status="405"} 40' in text, text[:2000]
    methods = {ln.split('method="')[1].split('"')[0] for ln in text.splitlines() if 'method="' in ln}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, methods


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "99999"],
        ["--port", "0"],
        ["--timeout", "-1"],
        ["--timeout", "nan"],
        ["--read-timeout", "inf"],
        ["--max-connections", "0"],
        ["--max-upload-mb", "-1"],
        ["--max-upload-mb", "inf"],
        ["--max-inflight-mb", "nan"],
        ["--max-pixels", "0"],
        ["--batch-wait-ms", "-5"],
        ["--api-key", ""],
    ],
    ids=lambda a: " ".join(a) or "''",
)
def test_cli_serve_refuses_bad_limits(args):
    """Every limit is checked before the model loads: one line naming the option, exit 2 (an empty --api-key
    too, even with $FERKIT_API_KEY set: it would turn authentication off)."""
    r = subprocess.run(
        [sys.executable, "-m", "ferkit", "serve", "--detector", "haar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, FERKIT_API_KEY="s3cret"),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0], lines


def test_serve_config_refuses_what_the_cli_cannot_say():
    """The Python API gets the same checks: non-finite sizes, an empty key, a per-address cap over the total."""
    from ferkit.errors import ConfigError

    for bad in (
        dict(max_upload_bytes=float("inf")),
        dict(max_upload_bytes=float("nan")),
        dict(api_key=""),
        dict(api_key="  "),
        dict(max_connections=8, max_connections_per_ip=9),
        dict(max_queue=0),
        dict(request_timeout_s=True),
    ):
        with pytest.raises(ConfigError, match="ferkit serve"):
            ServeConfig(**bad)
    assert ServeConfig(max_upload_bytes=2.5 * 1024 * 1024).max_upload_bytes == 2621440
    assert ServeConfig(max_connections=10).max_connections_per_ip == 5


def test_requests_with_and_without_attributes_share_a_micro_batch(server, photos):
    """Concurrent requests, half with `?attributes=age,gender` and half with `?attributes=none`, micro-batched
    together: every one is answered 200 with its own fields (a batch of mixed asks once failed them all)."""

    def post(i):
        ask = "age,gender" if i % 2 else "none"
        r = server.post(
            f"/v1/predict?attributes={ask}", content=photos["grace"], headers={"content-type": "image/jpeg"}
        )
        return ask, r

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(post, range(16)))
    for ask, r in got:
        assert r.status_code == 200, (ask, r.text[:300])
        face = r.json()["faces"][0]
        if ask == "none":
            assert not {"age", "gender", "attribute_reasons"} & set(face), face  # as when sent alone
        else:
            assert face["age"] > 0 and face["gender"] in ("female", "male"), face
