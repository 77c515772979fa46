"""The OpenAPI schema of ferkit serve is accurate: schemathesis (CLI) against the live server on loopback,
bounded (max 30 examples per operation, fixed seed, deterministic generation). Skipped when schemathesis is not
installed. ``positive_data_acceptance`` is excluded: a schema-valid ``format: binary`` body is random bytes,
which the API rightly rejects as "not an image" (400, documented)."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("schemathesis")

from ferkit.inference.settings import AnalyzerSettings  # noqa: E402
from ferkit.serve.app import BackgroundServer, ServeConfig  # noqa: E402


def test_openapi_schema_holds_against_live_server(tmp_path):
    exe = shutil.which("schemathesis") or os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(exe):
        pytest.skip("schemathesis CLI not found")
    cfg = ServeConfig(
        AnalyzerSettings("fer_minixception", detector="haar"), max_upload_bytes=200_000, max_pixels=1_000_000
    )
    with BackgroundServer(cfg) as url:
        cmd = [
            exe,
            "run",
            f"{url}/openapi.json",
            "--max-examples",
            "30",
            "--seed",
            "1",
            "--no-shrink",
            "--generation-deterministic",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--exclude-checks",
            "positive_data_acceptance",
            "--request-timeout",
            "30",
        ]
        env = dict(os.environ, HOME=str(tmp_path), SCHEMATHESIS_HOOKS="", NO_COLOR="1")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    out = p.stdout + p.stderr
    print(out[-4000:])
    assert p.returncode == 0, out[-6000:]
