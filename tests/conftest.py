"""Shared fixtures: a private cache dir, and small synthetic datasets (in memory and on disk)."""

import atexit
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


def run_cli(*args, cwd=None, env=None, timeout=600):
    import subprocess

    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(FERKIT + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=e,
                          timeout=timeout)
