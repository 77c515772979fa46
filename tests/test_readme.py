"""The README runs as written: every ```bash line and every ```python block, in order, in one scratch folder
that holds the files the text names (synthetic data and the photos of tests/data), as a new user would.

Only two lines are not run here, each for a stated reason (see NOT_RUN). Lines ending in `&` run in the
background (the server) and are stopped at the end of their block.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DATA = Path(__file__).parent / "data"
NOT_RUN = {
    "make test": "it is this test suite itself (CI runs it)",
}


def blocks():
    text = README.read_text()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(bash|python)\n(.*?)```", text, re.S)]


def bash_lines(body: str):
    for line in body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A user's folder: the venv (linked), photos/ (their own photos), party.jpg, clip.mp4. fer2013.csv and
    face.png are made by the README's own commands."""
    import cv2
    import numpy as np

    from ferkit.faces import load_image

    w = tmp_path_factory.mktemp("readme")
    (w / ".venv").symlink_to(Path(sys.prefix))
    shutil.copytree(DATA, w / "photos", ignore=shutil.ignore_patterns("*.md"))
    shutil.copy(DATA / "multi_face.jpg", w / "party.jpg")
    img = load_image(DATA / "identity" / "obama.jpg")
    vw = cv2.VideoWriter(str(w / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (img.shape[1], img.shape[0]))
    for k in range(6):
        vw.write(cv2.cvtColor(np.roll(img, 4 * k, axis=1), cv2.COLOR_RGB2BGR))
    vw.release()
    return w


def _env():
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTEST_XDIST_WORKER", None)
    env["WANDB_MODE"] = "offline"
    return env


SKIP_IN_CHECKOUT = {".git", ".venv", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def checkout_files() -> set[str]:
    """The checkout's files, but for the virtual environment, git's own and Python's caches."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_IN_CHECKOUT and not d.endswith(".egg-info")]
        out.update(os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames)
    return out


@pytest.mark.timeout(2400)
def test_readme_runs_as_written(workdir):
    ran = 0
    before = checkout_files()
    for kind, body in blocks()[int(os.environ.get("FERKIT_README_FROM_BLOCK", "0")) :]:
        if kind == "python":
            r = subprocess.run(
                [sys.executable, "-c", body], cwd=workdir, capture_output=True, text=True, env=_env(), timeout=900
            )
            assert r.returncode == 0, f"README python block failed:\n{body}\n{r.stderr[-3000:]}"
            ran += 1
            continue
        script = []
        for line in bash_lines(body):
            if line.split("#")[0].strip() in NOT_RUN:
                continue
            if line.startswith("make "):  # the Makefile lives in the repository, not in the user's folder;
                # its outputs go to the user's folder too, never into the checkout
                line = f"make -C {ROOT} {line[5:].split('#')[0].strip()} DEMO_OUT={workdir / 'demo_out'}"
            script.append(line)
        # One shell per block, as a user types it; stop at the first failing line.
        code = "set -e\n" + "\n".join(script) + "\n"
        r = subprocess.run(["bash", "-c", code], cwd=workdir, capture_output=True, text=True, env=_env(), timeout=1200)
        assert r.returncode == 0, f"README bash block failed:\n{code}\n--- stderr ---\n{r.stderr[-4000:]}"
        assert "Traceback" not in r.stderr, r.stderr[-4000:]
        ran += len(script)
    # Nothing lands in the checkout (make demo used to write demo_out/ there). Other test workers may write
    # into their own temporary folders only, so any new file here is a leak.
    assert checkout_files() - before == set(), sorted(checkout_files() - before)[:20]
    if os.environ.get("FERKIT_README_FROM_BLOCK"):
        return  # a partial run (debugging one block): the totals below need the whole README
    assert ran >= 35  # the README's commands and blocks, not a handful
    # What the text promises the commands leave behind.
    for f in (
        "runs/cnn/best.pt",
        "runs/cnn/eval_test/report.html",
        "preds.csv",
        "faces.parquet",
        "out",
        "runs/cnn/best.int8.onnx",
        "runs/ddp/results.json",
        "compare/compare.html",
        "face.png",
        "demo_out/demo_summary.json",
    ):
        assert (workdir / f).exists(), f


def test_readme_names_only_real_commands():
    """Every `ferkit X` the README mentions in prose is a real subcommand."""
    import argparse

    from ferkit.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    named = set(re.findall(r"`ferkit ([a-z][a-z-]+)", README.read_text()))
    assert named and named <= set(sub.choices), named - set(sub.choices)


def test_readme_pictures_are_what_their_commands_write(tmp_path):
    """Every picture the README shows is in the checkout and is what the README's own `--annotate` line writes,
    run as written in a user's folder (photos/ = tests/data): the same size, and the same pixels up to JPEG and
    CPU rounding."""
    import cv2
    import numpy as np

    pictures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README.read_text())
    assert pictures, "the README shows no picture"
    bash = [list(bash_lines(body)) for kind, body in blocks() if kind == "bash"]
    shutil.copytree(DATA, tmp_path / "photos", ignore=shutil.ignore_patterns("*.md"))
    for pic in pictures:
        folder, name = str(Path(pic).parent), Path(pic).name
        makers = [
            (lines, i)
            for lines in bash
            for i, ln in enumerate(lines)
            if re.search(rf"--annotate {re.escape(folder)}/?(\s|$)", ln)
        ]
        assert len(makers) == 1, f"{pic}: no single README line writes it with --annotate {folder}/: {makers}"
        lines, i = makers[0]
        # the block up to that line, in one shell, as a user types it (earlier lines may set a variable it uses)
        script = "set -e\n" + "\n".join(lines[: i + 1]) + "\n"
        r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr[-2000:]
        shipped, made = cv2.imread(str(ROOT / pic)), cv2.imread(str(tmp_path / folder / name))
        assert shipped is not None and made is not None, (pic, lines[i])
        assert shipped.shape == made.shape, (shipped.shape, made.shape)
        diff = np.abs(shipped.astype(int) - made.astype(int)).max(axis=-1)
        assert diff.mean() < 0.5 and (diff > 40).mean() < 0.002, (pic, diff.mean(), (diff > 40).mean())
