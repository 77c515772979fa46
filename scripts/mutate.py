#!/usr/bin/env python
"""Mutation check: do the tests fail when a feature breaks?

    make mutate                                   # every break in tests/mutations.yaml
    python scripts/mutate.py --only onnx_arousal_is_valence --only tencrop_two_views
    python scripts/mutate.py --check              # validate the list only (each search text occurs once)
    python scripts/mutate.py --area serve -n 2    # one area; -n is passed to pytest-xdist

Each break in the list is a small search/replace patch on one source file plus the tests that must catch it
(pytest node ids, optionally narrowed by ``k``, a ``-k`` expression). The search text must occur exactly once in
its file: the list is checked first and a stale entry (code moved) is an error naming it, so the list stays
honest as the code changes.

The work tree is never modified: the repository (without .git, venvs, caches, runs) is copied once to a
temporary folder; for each break the patch is applied there, the subset runs with this Python (``PYTHONPATH=
<copy>/src``), and the file is restored. A break is *caught* when the subset fails (pytest exit 1), *missed* when
it passes (exit 0); anything else (collection/usage error, no tests selected, timeout) is reported as such and
not scored. First, unless ``--no-baseline``, every subset runs once unpatched: it must pass, or a "caught" would
mean nothing. Exit status: 0 when every scored break is caught, 1 when any was missed, 2 on a broken list.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LIST = ROOT / "tests" / "mutations.yaml"
IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    ".pytest_cache",
    "runs",
    "demo_out",
    "node_modules",
    "*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
)
FIELDS = {"id", "area", "file", "search", "replace", "tests", "k", "why", "note"}


class ListError(Exception):
    pass


def load_breaks(path: Path, root: Path) -> list[dict]:
    """The breaks of ``path``, validated against the sources under ``root``; ListError naming every bad entry."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ListError(f"{path}: {e}") from None
    items = data.get("breaks") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ListError(f"{path}: expected a top-level 'breaks:' list")
    problems, seen = [], set()
    for i, b in enumerate(items):
        where = f"{path.name} entry {i + 1} ({b.get('id', '?') if isinstance(b, dict) else '?'})"
        if not isinstance(b, dict):
            problems.append(f"{where}: not a mapping")
            continue
        missing = [f for f in ("id", "file", "search", "replace", "tests") if f not in b]
        unknown = sorted(set(b) - FIELDS)
        if missing or unknown:
            problems.append(f"{where}: missing {missing} / unknown fields {unknown}")
            continue
        if b["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(b["id"])
        if isinstance(b["tests"], str):
            b["tests"] = [b["tests"]]
        src = root / b["file"]
        if not src.is_file():
            problems.append(f"{where}: no such file {b['file']}")
            continue
        if b["search"] == b["replace"]:
            problems.append(f"{where}: search and replace are the same")
        n = src.read_text().count(b["search"])
        if n != 1:
            problems.append(
                f"{where}: search text occurs {n} times in {b['file']} (must be exactly once): {b['search'][:80]!r}"
            )
        for t in b["tests"]:
            f = t.split("::")[0]
            if not (root / f).is_file():
                problems.append(f"{where}: test file {f} does not exist")
    if problems:
        raise ListError("\n".join(problems))
    return items


def pytest_cmd(python: str, tests: list[str], k: str | None, workers: str) -> list[str]:
    cmd = [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", workers, "--no-header", "-rN", *tests]
    return cmd + (["-k", k] if k else [])


def run(cmd: list[str], cwd: Path, timeout: float) -> tuple[int | None, str, float]:
    # the copy's src first; entries already on PYTHONPATH (e.g. extra site dirs) stay after it
    path = os.pathsep.join([str(cwd / "src"), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    env.pop("FERKIT_CACHE_DIR", None)  # conftest gives each run its own
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out, time.time() - t0
    return r.returncode, r.stdout + r.stderr, time.time() - t0


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:150] if lines else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--list", default=str(DEFAULT_LIST), help="the breaks (default tests/mutations.yaml)")
    p.add_argument("--only", action="append", default=[], help="run this break id (repeatable)")
    p.add_argument("--area", action="append", default=[], help="run the breaks of this area (repeatable)")
    p.add_argument("--check", action="store_true", help="validate the list and exit")
    p.add_argument("--no-baseline", action="store_true", help="skip the unpatched run of each subset")
    p.add_argument("-n", dest="workers", default="0", help="pytest-xdist workers per run (default 0)")
    p.add_argument("--python", default=sys.executable, help="the interpreter that runs pytest (default: this one)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per pytest run (default 900)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the tail of pytest's output of each run")
    a = p.parse_args(argv)

    try:
        breaks = load_breaks(Path(a.list), ROOT)
    except ListError as e:
        print(f"mutate: the list is out of date with the code:\n{e}", file=sys.stderr)
        return 2
    ids = {b["id"] for b in breaks}
    unknown = [o for o in a.only if o not in ids]
    if unknown:
        print(f"mutate: no break with id {', '.join(unknown)} in {a.list}", file=sys.stderr)
        return 2
    if a.only:
        breaks = [b for b in breaks if b["id"] in a.only]
    if a.area:
        breaks = [b for b in breaks if b.get("area") in a.area]
    if a.check:
        print(f"mutate: {len(breaks)} breaks, every search text found exactly once")
        return 0
    if not breaks:
        print("mutate: nothing selected", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="ferkit-mutate-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=IGNORE, symlinks=True)
        where, out, _ = run([a.python, "-c", "import ferkit; print(ferkit.__file__)"], copy, 120)
        if where != 0 or not out.strip().startswith(str(copy)):
            print(f"mutate: {a.python} does not import ferkit from the copy ({out.strip()[-300:]})", file=sys.stderr)
            return 2
        print(f"mutate: {len(breaks)} breaks, copy in {copy}, python {a.python}", flush=True)

        if not a.no_baseline:
            groups: dict[str | None, list[str]] = {}
            for b in breaks:
                groups.setdefault(b.get("k"), [])
                groups[b.get("k")] += [t for t in b["tests"] if t not in groups[b.get("k")]]
            for k, tests in groups.items():
                rc, out, dt = run(pytest_cmd(a.python, tests, k, a.workers), copy, a.timeout * 3)
                print(
                    f"baseline{' -k ' + k if k else ''} ({len(tests)} test ids): exit {rc}, {dt:.0f} s: "
                    f"{last_line(out)}",
                    flush=True,
                )
                if rc != 0:
                    print(out[-4000:], file=sys.stderr)
                    print("mutate: the unpatched subset does not pass; fix that first", file=sys.stderr)
                    return 2

        results = []
        for i, b in enumerate(breaks, 1):
            src = copy / b["file"]
            original = src.read_text()
            src.write_text(original.replace(b["search"], b["replace"], 1))
            try:
                rc, out, dt = run(pytest_cmd(a.python, b["tests"], b.get("k"), a.workers), copy, a.timeout)
            finally:
                src.write_text(original)
            status = {0: "MISSED", 1: "caught"}.get(rc, "TIMEOUT" if rc is None else f"ERROR(exit {rc})")
            results.append((b, status, dt))
            print(
                f"[{i:2d}/{len(breaks)}] {status:8s} {b['id']:40s} {b.get('area', ''):12s} {dt:5.0f} s  "
                f"{last_line(out) if (a.verbose or status != 'caught') else ''}",
                flush=True,
            )
            if a.verbose:
                print("\n".join(out.strip().splitlines()[-15:]), flush=True)

    caught = [r for r in results if r[1] == "caught"]
    missed = [r for r in results if r[1] == "MISSED"]
    other = [r for r in results if r[1] not in ("caught", "MISSED")]
    scored = len(caught) + len(missed)
    print()
    print(
        f"mutation score: {len(caught)}/{scored} caught ({100.0 * len(caught) / max(scored, 1):.0f}%)"
        + (f"; {len(other)} not scored (errors/timeouts)" if other else "")
    )
    for b, s, _ in missed + other:
        print(f"  {s}: {b['id']} ({b['file']}): {b.get('why', '')}")
    return 1 if missed or other else 0


if __name__ == "__main__":
    sys.exit(main())
