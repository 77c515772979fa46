"""The server under hostile load, as a separate process on loopback: bounded memory for big images, half-sent
requests dropped, only allowlisted formats decoded, HEAD /healthz."""

import io
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

DATA = Path(__file__).parent / "data"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "ferkit", "serve", "--port", str(port), "--read-timeout", "2",
                          "--max-connections", "64"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while time.time() - t0 < 120:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        p.kill()
        pytest.fail(f"server did not start: {p.stdout.read().decode()[-2000:]}")
    yield url, p
    p.terminate()
    p.wait(10)


def _rss_mb(pid, field="VmRSS"):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(field)


def test_head_healthz(server):
    url, _ = server
    r = httpx.head(url + "/healthz")
    assert r.status_code == 200


def test_only_allowlisted_formats_are_decoded(server):
    """An EPS named .jpg must never reach Pillow's Ghostscript loader."""
    url, _ = server
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    r = httpx.post(url + "/v1/predict", files={"file": ("face.jpg", eps, "image/jpeg")})
    assert r.status_code == 400 and "accepted format" in r.json()["reason"]
    from ferkit.errors import DataError
    from ferkit.faces.io import decode_image

    with pytest.raises(DataError, match="accepted format"):
        decode_image(eps, "x.jpg")


def test_half_sent_requests_are_dropped_within_the_timeout(server):
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Ty")  # headers never finished
        socks.append(s)
    body = socket.create_connection(("127.0.0.1", port))  # headers complete, body half-sent
    body.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\nxx")
    t0 = time.time()
    for s in socks:
        s.settimeout(10)
        assert s.recv(1024) == b""  # closed by the server
    body.settimeout(10)
    answer = body.recv(4096)
    assert b" 408 " in answer.split(b"\r\n")[0]
    assert time.time() - t0 < 8
    for s in socks + [body]:
        s.close()
    assert httpx.get(url + "/healthz").status_code == 200  # still serving


def test_eight_big_pngs_keep_memory_bounded(server):
    """Eight concurrent 6300x6300 PNGs (each under the byte and pixel limits): RSS stays under 1.5 GB."""
    from PIL import Image

    url, proc = server
    buf = io.BytesIO()
    Image.new("RGB", (6300, 6300), (120, 100, 90)).save(buf, "PNG")
    png = buf.getvalue()
    assert len(png) < 10 * 1024 * 1024
    base = _rss_mb(proc.pid)
    peak, codes = [base], []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(_rss_mb(proc.pid))
            time.sleep(0.05)

    def send():
        codes.append(httpx.post(url + "/v1/predict", files={"file": ("big.png", png, "image/png")},
                                timeout=120).status_code)

    w = threading.Thread(target=watch)
    w.start()
    ts = [threading.Thread(target=send) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    stop.set()
    w.join()
    assert set(codes) <= {200, 503} and 200 in codes, codes
    print(f"server RSS: {base:.0f} MB before, peak {max(peak):.0f} MB, codes {sorted(codes)}")
    assert max(peak) < 1536, (base, max(peak))
    time.sleep(1)
    assert _rss_mb(proc.pid) < base + 400, (base, _rss_mb(proc.pid))
