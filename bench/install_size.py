#!/usr/bin/env python
"""How big is `pip install ferkit` (no extra), and does `ferkit predict` work in it? Builds a throwaway venv in a
temporary folder, installs this checkout into it from the package registry (no extra), runs
`ferkit predict tests/data` there, checks that torch is absent, and prints the venv's size against a full one:

    python bench/install_size.py                         # full size measured from ./.venv (make test's, .[dev])
    python bench/install_size.py --full-venv /path/venv  # or another full venv
    python bench/install_size.py --build-full            # or build a `.[dev]` venv too (several GB, slow)

Needs the registry (pip) and a few minutes; never part of the test suite.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed, hard links counted once)."""
    seen, total = set(), 0
    for d, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(d, f))
            if os.path.islink(os.path.join(d, f)) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def biggest(venv: Path, n: int = 8) -> list[tuple[str, int]]:
    sp = site_packages(venv)
    sizes = [
        (p.name, tree_bytes(p) if p.is_dir() else p.stat().st_size)
        for p in sp.iterdir()
        if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"
    ]
    return sorted(sizes, key=lambda x: -x[1])[:n]


def make_venv(where: Path, spec: str) -> tuple[Path, float]:
    venv = where / "venv"
    t = time.time()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", spec], check=True)
    return venv, time.time() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", default=str(ROOT), help="the checkout to install (default: this one)")
    p.add_argument("--full-venv", default=str(ROOT / ".venv"), help="a venv with .[dev] installed, to compare with")
    p.add_argument("--build-full", action="store_true", help="build a .[dev] venv too instead of --full-venv")
    p.add_argument("--keep", action="store_true", help="keep the temporary venv(s) and print where")
    a = p.parse_args(argv)
    repo = Path(a.repo).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="ferkit-install-size-"))
    try:
        venv, secs = make_venv(tmp / "light", str(repo))
        light = tree_bytes(venv)
        env = dict(os.environ, FERKIT_CACHE_DIR=str(tmp / "cache"), PYTHONPATH="")
        has_torch = (
            subprocess.run(
                [str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, env=env
            ).returncode
            == 0
        )
        t = time.time()
        r = subprocess.run(
            [str(venv / "bin" / "ferkit"), "predict", str(repo / "tests" / "data"), "--format", "csv"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
        )
        predict_s = time.time() - t
        rows = list(csv.DictReader(io.StringIO(r.stdout))) if r.returncode == 0 else []
        print(
            f"light venv (pip install {repo.name}, no extra): {light / 1e6:,.0f} MB, installed in {secs:.0f} s; "
            f"torch importable: {has_torch}"
        )
        print(
            f"  ferkit predict tests/data: exit {r.returncode} in {predict_s:.1f} s, {len(rows)} faces, labels "
            f"{sorted({x['label'] for x in rows})}; {(r.stderr.strip().splitlines() or [''])[-1]}"
        )
        print("  biggest: " + ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in biggest(venv)))
        if a.build_full:
            full_venv, fsecs = make_venv(tmp / "full", f"{repo}[dev]")
        else:
            full_venv, fsecs = Path(a.full_venv), None
        if full_venv.is_dir():
            full = tree_bytes(full_venv)
            print(
                f"full venv ({full_venv}{f', built in {fsecs:.0f} s' if fsecs else ''}, .[dev]): "
                f"{full / 1e6:,.0f} MB; the light one is {light / full:.1%} of it"
            )
            print("  biggest: " + ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in biggest(full_venv)))
        ok = r.returncode == 0 and rows and not has_torch
        return 0 if ok else 1
    finally:
        if a.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
