"""End to end in headless Chromium: ferkit serve's page with a fake camera fed from an MJPEG made from a real
face photo (skimage's astronaut) shows a face box and a label. A screenshot is saved under the pytest tmp dir.

Set-up: installs Debian's ``chromium`` + ``chromium-driver`` with apt-get when missing (as root); fails with
the reason otherwise, never skips. Recipe: /work/shared/BROWSER_TESTING.md."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("selenium")

from ferkit.inference.settings import AnalyzerSettings  # noqa: E402
from ferkit.serve.app import BackgroundServer, ServeConfig  # noqa: E402


def _ensure_chromium() -> tuple[str, str]:
    """chromium + chromedriver, installed with apt-get (as root) when missing. The page is a feature: a machine
    that cannot get a browser fails this test loudly instead of skipping it."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.fail(
                "chromium/chromium-driver missing and not root with apt-get: install them "
                "(apt-get install chromium chromium-driver) to run the browser test"
            )
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd, timeout in (
            (["apt-get", "update"], 300),
            (["apt-get", "install", "-y", "chromium", "chromium-driver"], 900),
        ):
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            except (subprocess.SubprocessError, OSError) as e:
                pytest.fail(f"{' '.join(cmd)} failed: {e}")
            if r.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} exited {r.returncode}: {(r.stderr or r.stdout)[-2000:]}")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium/chromedriver still not on PATH after apt-get install chromium chromium-driver")
    return shutil.which("chromium"), shutil.which("chromedriver")


def _fake_camera(path, frames=20):
    """640x480 MJPEG (JPEG frames concatenated) of a real face photo, slightly moving."""
    import numpy as np
    import skimage.data
    from PIL import Image

    face = Image.fromarray(skimage.data.astronaut()).resize((480, 480))
    with open(path, "wb") as fh:
        for i in range(frames):
            canvas = Image.new("RGB", (640, 480), (40, 40, 40))
            canvas.paste(face, (80 + (i % 5) * 4, 0))
            buf = io.BytesIO()
            canvas.save(buf, "JPEG", quality=85)
            fh.write(buf.getvalue())
    assert np.asarray(face).shape == (480, 480, 3)


def _chrome(tmp_path, *extra: str):
    """Headless Chromium under selenium with a private profile and home, plus ``extra`` switches."""
    chromium, chromedriver = _ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *extra,
    ):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(chromedriver, env=dict(os.environ, HOME=str(home))), options=opts)


@contextlib.contextmanager
def _camera_page(tmp_path):
    """ferkit serve (RetinaFace, one model, no attributes of its own) and its page open in Chromium, whose camera
    is the astronaut MJPEG."""
    cam = tmp_path / "camera.mjpeg"
    _fake_camera(cam)
    settings = AnalyzerSettings("fer_minixception", detector="retinaface", det_size=640)
    with BackgroundServer(ServeConfig(settings)) as url:
        driver = _chrome(
            tmp_path,
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={cam}",
            "--window-size=1300,900",
        )
        try:
            driver.set_page_load_timeout(60)
            driver.get(url + "/")
            yield driver
        finally:
            driver.quit()


def test_page_shows_face_box_and_label(tmp_path):
    with _camera_page(tmp_path) as driver:
        last, t0 = None, time.time()
        while time.time() - t0 < 60:
            last = driver.execute_script("return window.ferkitLast")
            if last and last.get("faces"):
                break
            time.sleep(0.25)
        status = driver.find_element("id", "status").text
        assert last and last.get("faces"), f"no face drawn within 60 s; page status: {status!r}"
        face = last["faces"][0]
        assert face["label"] in face["probabilities"]
        x1, y1, x2, y2 = face["box"]
        assert 80 <= (x1 + x2) / 2 <= 560 and 0 <= (y1 + y2) / 2 <= 400  # the face is where the photo is
        assert driver.find_element("id", "last-label").text == face["label"]
        assert int(driver.find_element("id", "status").get_attribute("data-faces")) >= 1
        # the box is drawn: overlay pixels at the box edge are not transparent
        alpha = driver.execute_script(
            "const c=document.getElementById('overlay');const f=window.ferkitLast.faces[0];"
            "const x=Math.round(f.box[0]), y=Math.round((f.box[1]+f.box[3])/2);"
            "return c.getContext('2d').getImageData(x-1,y,3,1).data[3]"
            "+c.getContext('2d').getImageData(x-1,y,3,1).data[7];"
        )
        assert alpha > 0, "overlay has no box at the reported face"
        shot = tmp_path / "serve_page.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")


def test_docs_page_renders_offline(tmp_path):
    """/docs with every host but the server unreachable (as offline): the page renders each operation of
    /openapi.json, and every resource it loaded came from the server itself."""
    with BackgroundServer(ServeConfig(AnalyzerSettings("fer_minixception", detector="haar"))) as url:
        import httpx

        spec = httpx.get(url + "/openapi.json").json()
        want = {f"{m.upper()} {p}" for p, item in spec["paths"].items() for m in item}
        driver = _chrome(tmp_path, "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")  # nothing else
        try:
            driver.set_page_load_timeout(60)
            driver.get(url + "/docs")
            t0 = time.time()
            while time.time() - t0 < 30 and not driver.execute_script("return document.body.dataset.operations"):
                time.sleep(0.2)
            shown = set(
                driver.execute_script("return [...document.querySelectorAll('section.op')].map(e => e.dataset.op)")
            )
            assert shown == want and {"POST /v1/predict", "POST /v1/predict/batch", "GET /healthz"} <= shown
            assert "ferkit 1:" in driver.find_element("id", "docs-status").text
            loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
            assert loaded and all(x.startswith(url) for x in loaded), loaded
        finally:
            driver.quit()


def test_face_details_toggle_asks_for_attributes_and_draws_them(tmp_path):
    """Off by default (no ?attributes=); the "face details" checkbox on: the page's requests carry
    ?attributes=..., and the overlay shows each face's age/gender line ("25 M 0.93") and its 68 points; when the
    details cannot be had, the page says why and keeps working without them."""
    requests = "return performance.getEntriesByType('resource').map(e => e.name).filter(n => n.includes('/v1/predict'))"
    with _camera_page(tmp_path) as driver:

        def wait_for(script, what):
            t0 = time.time()
            while time.time() - t0 < 60:
                got = driver.execute_script(script)
                if got:
                    return got
                time.sleep(0.25)
            pytest.fail(f"{what} within 60 s; page status: {driver.find_element('id', 'status').text!r}")

        wait_for("return window.ferkitLast && window.ferkitLast.faces.length", "no face drawn")
        assert not driver.find_element("id", "details").is_selected()  # off by default
        assert "age" not in driver.execute_script("return window.ferkitLast.faces[0]")
        assert all("attributes" not in u for u in driver.execute_script(requests))
        driver.find_element("id", "details").click()
        wait_for("const f = window.ferkitLast.faces[0]; return f && f.age !== undefined", "no face details")
        asked = [u for u in driver.execute_script(requests) if "attributes=" in u]
        assert asked and "landmarks68" in asked[-1] and "age" in asked[-1], asked
        # one snapshot (the page draws each result as it stores it): the result, the overlay's text and, at
        # every 7th of the 68 points, whether the overlay pixel is opaque cyan
        face, shown, cyan = driver.execute_script(
            "const c=document.getElementById('overlay'), ctx=c.getContext('2d'), f=window.ferkitLast.faces[0];"
            "return [f, c.dataset.details, f.landmarks68.filter((p, i) => i % 7 == 0).map(p => {"
            "const d=ctx.getImageData(Math.round(p[0]), Math.round(p[1]), 1, 1).data;"
            "return d[3] > 200 && d[0] < 80 && d[1] > 200 && d[2] > 200; })];"
        )
        m = re.fullmatch(r"(\d+) ([FM]) ([01]\.\d\d)", shown.split("|")[0])  # the first face's line
        assert m, shown
        assert abs(int(m[1]) - face["age"]) <= 0.5 and m[2] == face["gender"][0].upper(), (shown, face["age"])
        assert abs(float(m[3]) - face["gender_score"]) <= 0.005, (shown, face["gender_score"])
        assert sum(cyan) >= 0.7 * len(cyan), cyan
        assert driver.find_element("id", "details-note").text == ""  # the server had the models
        shot = tmp_path / "serve_page_details.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
        # a server that cannot give them (here: the browser refuses every ?attributes= request): the page says so
        # beside the checkbox and goes on drawing faces without details
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*attributes=*"]})
        driver.find_element("id", "details").click()
        driver.find_element("id", "details").click()  # on again: asks again
        wait_for("return document.getElementById('details-note').textContent", "no note on the missing details")
        frames = driver.execute_script("return window.ferkitFrames")
        wait_for(f"return window.ferkitFrames > {frames} + 1", "no frame after the details failed")
        last = driver.execute_script("return window.ferkitLast")
        assert last["faces"] and "age" not in last["faces"][0], last
        assert "unavailable" in driver.find_element("id", "details-note").text
