"""A seeded fuzzer for the dataset loaders: malformed CSVs, .npy annotations, IDX files and image folders.

Each case is a small dataset written to disk with one or more defects. :func:`ferkit.load_dataset` must either
load it or raise a :class:`~ferkit.errors.FerkitError` whose message is one line of at most ``MAX_MESSAGE``
characters; anything else (another exception, a multi-line or huge message, a case running past
``per_case_s``) is a finding.

    python -m tests.fuzz_data --cases 2000 --seed 1       # what `make fuzz` runs; exit 1 on any finding
    PYTHONPATH=src python tests/fuzz_data.py --cases 300 --cli 5

:func:`run_fuzz` is the entry point for tests; :func:`make_case` builds one case (for reproducing a finding:
``make_case(np.random.default_rng([seed, i]), folder)``).
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

MAX_MESSAGE = 300
KINDS = ("csv", "affectnet", "idx", "folder", "misc")


class _Hang(Exception):
    pass


# ------------------------------------------------------------------------------------------------ pieces
def _junk(rng, n: int | None = None) -> bytes:
    n = int(rng.integers(0, 600)) if n is None else n
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _pick(rng, seq):
    return seq[int(rng.integers(0, len(seq)))]


def _png_bytes(rng, side=None, mode="L") -> bytes:
    from PIL import Image

    side = side or int(_pick(rng, [1, 2, 3, 7, 8, 16, 48]))
    shape = (side, side) if mode == "L" else (side, side, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _mangle(rng, data: bytes) -> bytes:
    """One random byte-level defect: truncate, flip bytes, insert junk, or leave as is."""
    op = int(rng.integers(0, 5))
    if op == 0 and data:
        return data[: int(rng.integers(0, len(data)))]
    if op == 1 and data:
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return bytes(b)
    if op == 2:
        at = int(rng.integers(0, len(data) + 1))
        return data[:at] + _junk(rng, int(rng.integers(1, 64))) + data[at:]
    return data


# ------------------------------------------------------------------------------------------------ CSV
_HEADERS = [
    "emotion,pixels,Usage",
    "emotion,pixels",
    "label,pixels",
    "pixels,Usage",
    "emotion, Usage, pixels",
    "\ufeffemotion,pixels,Usage",
    "",
    "emotion",
    "pixels",
    "emotion,pixels,pixels,Usage",
    "EMOTION,PIXELS,USAGE",
    "emotion;pixels;Usage",
    ",".join(f"c{i}" for i in range(20_000)),
    "emotion,pixels," + "x" * 50_000,
]
_TOKENS = ["0", "255", "256", "-1", "nan", "1e5", "", "x", "٣", "0x10", "1.5", " ", "\t", "99999999999999999999"]


def _csv_case(rng, d: Path) -> Path:
    mild = rng.random() < 0.5  # half the cases carry one small defect, so the deeper code runs too
    side = 48 if mild else int(_pick(rng, [48, 48, 2, 3, 8, 1, 0]))
    header = _pick(rng, _HEADERS[:3]) if mild else _pick(rng, _HEADERS)
    lines = [header]
    for _ in range(int(rng.integers(0, 12))):
        y = (
            _pick(rng, ["0", "3", "6", "7", "-1", "a", "", "1.0", "9" * 40])
            if rng.random() < 0.2
            else str(int(rng.integers(0, 7)))
        )
        px = rng.integers(0, 256, side * side).astype(str).tolist()
        if rng.random() < (0.02 if mild else 0.3) and px:
            px[int(rng.integers(0, len(px)))] = _pick(rng, _TOKENS)
        if rng.random() < 0.15:
            px = px[: int(rng.integers(0, len(px) + 1))]
        usage = _pick(rng, ["Training", "PublicTest", "PrivateTest", "train", "Holdout", ""])
        fields = [y, " ".join(px), usage]
        if rng.random() < 0.1:
            fields = fields[: int(rng.integers(0, 3))]
        if rng.random() < 0.05:
            fields.append("x" * int(rng.integers(1, 300_000)))
        lines.append(",".join(fields))
    text = _pick(rng, ["\n", "\r\n", "\r"]).join(lines) + _pick(rng, ["\n", ""])
    enc = _pick(rng, ["utf-8", "utf-8", "utf-16", "latin-1"])
    data = text.encode("utf-8" if mild else enc, errors="replace")
    if rng.random() < (0.05 if mild else 0.3):
        data = _mangle(rng, data)
    if rng.random() < 0.05:
        data = b"\0" * int(rng.integers(0, 1000))
    p = d / _pick(rng, ["fer2013.csv", "train.csv", "x.CSV"])
    p.write_bytes(data)
    return p


# ------------------------------------------------------------------------------------------------ .npy
def _npy_bytes(rng, kind: str) -> bytes:
    buf = io.BytesIO()
    r = rng.random()
    if r < 0.4:  # a valid value, sometimes out of range
        v = {
            "exp": _pick(rng, [0, 3, 7, 8, 10, -1, 1.5, "3", "x", "nan"]),
            "val": _pick(rng, [0.5, -2, 1.5, "0.2", "nan", "inf"]),
            "aro": _pick(rng, [0.1, -2, 3.0, "0.3"]),
            "lnd": None,
        }[kind]
        a = (
            rng.random(int(_pick(rng, [136, 136, 10, 0, 137]))).astype(_pick(rng, ["f4", "f8", "U8"]))
            if kind == "lnd"
            else np.array(v)
        )
        np.save(buf, a)
        return _mangle(rng, buf.getvalue()) if rng.random() < 0.2 else buf.getvalue()
    if r < 0.5:  # an .npz under an .npy name
        np.savez(buf, exp=np.array(3))
        return buf.getvalue()
    if r < 0.6:  # a header claiming a huge shape
        shape = tuple(int(_pick(rng, [10**6, 10**9, 2**31, 0, 1])) for _ in range(int(rng.integers(1, 4))))
        np.lib.format.write_array_header_1_0(
            buf, {"descr": _pick(rng, ["<f8", "|u1", "<U100"]), "fortran_order": False, "shape": shape}
        )
        return buf.getvalue() + _junk(rng, 16)
    if r < 0.68:  # a pickled object array
        np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return buf.getvalue()
    if r < 0.75:
        return b""
    if r < 0.8:  # a header written by hand, broken
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", int(rng.integers(0, 200))) + _junk(rng, 120)
    return _junk(rng)


def _affectnet_case(rng, d: Path) -> Path:
    root = d / "affectnet"
    sub = root
    if rng.random() < 0.2:
        sub = root / _pick(rng, ["train", "train_set", "val", "test"])
    (sub / "images").mkdir(parents=True)
    (sub / "annotations").mkdir()
    n = int(rng.integers(0, 6))
    for i in range(n):
        sid = _pick(rng, [str(i), f"{i}_x", f"img {i}", f"{i}.{i}"])
        img = _png_bytes(rng) if rng.random() < 0.85 else _mangle(rng, _png_bytes(rng))
        (sub / "images" / f"{sid}.{_pick(rng, ['png', 'jpg'])}").write_bytes(img)
        for kind in ("exp", "val", "aro", "lnd"):
            if rng.random() < 0.9:
                (sub / "annotations" / f"{sid}_{kind}.npy").write_bytes(_npy_bytes(rng, kind))
    for name in ("splits.csv", "identities.csv"):
        if rng.random() < 0.35:
            body = _pick(
                rng,
                [
                    b"id,split\n0,train\n1,val\n2,test\n",
                    b"id,identity\n0,1\n1,2\n",
                    b"0," + b"9" * 30 + b"\n",
                    b"\xff\xfe\x00a",
                    b"1," + b"x" * 200_000 + b"\n",
                    b"id,split\n0,holdout\n",
                    b"",
                    b"\n\n\n",
                    b"id\n0\n",
                ],
            )
            (root / name).write_bytes(_mangle(rng, body) if rng.random() < 0.3 else body)
    return root


# ------------------------------------------------------------------------------------------------ IDX
def _idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    codes = {
        np.dtype(np.uint8): 0x08,
        np.dtype(np.int8): 0x09,
        np.dtype(np.int16): 0x0B,
        np.dtype(np.int32): 0x0C,
        np.dtype(np.float32): 0x0D,
        np.dtype(np.float64): 0x0E,
    }
    code = codes[arr.dtype] if code is None else code
    return (
        bytes([0, 0, code, arr.ndim])
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    )


def _idx_case(rng, d: Path) -> Path:
    root = d / _pick(rng, ["mnist", "fashion-mnist", "MNIST/raw"])
    root.mkdir(parents=True)
    for part in ("train", "t10k"):
        if part == "t10k" and rng.random() < 0.3:
            continue
        mild = rng.random() < 0.5
        n = 20 if mild else int(_pick(rng, [0, 1, 5, 20]))
        h, w = (28, 28) if mild else (int(_pick(rng, [28, 28, 0, 1, 3, 8])), int(_pick(rng, [28, 28, 0, 2, 9])))
        x = rng.integers(0, 256, (n, h, w)).astype(np.uint8 if mild else _pick(rng, [np.uint8, np.float32, np.int16]))
        if rng.random() < 0.1:
            x = x.reshape(n, h, w, 1).repeat(int(_pick(rng, [1, 2, 3, 4])), axis=3)
        y = (np.arange(n) % 10).astype(_pick(rng, [np.uint8, np.int32, np.float32, np.float64, np.int8]))
        if n and rng.random() < 0.4:
            v = _pick(rng, [np.nan, 1e30, 1.5, -1, 2_000_000_000, 1_000_000, 10, 127])
            with np.errstate(all="ignore"):
                y[int(rng.integers(0, n))] = np.asarray(v, dtype=np.float64).astype(y.dtype)
        if rng.random() < 0.1:
            y = y[: max(0, n - 1)]
        gz = rng.random() < 0.3
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            data = _idx_bytes(arr, code=int(_pick(rng, [0x07, 0x0A, 0x0E])) if rng.random() < 0.05 else None)
            if rng.random() < (0.03 if mild else 0.15):
                data = _mangle(rng, data)
            if gz:
                data = gzip.compress(data) if rng.random() < 0.9 else gzip.compress(data)[:20]
            (root / f"{part}-{kind}-ubyte{'.gz' if gz else ''}").write_bytes(data)
    return root if rng.random() < 0.8 else root / "train-labels-idx1-ubyte"


# ------------------------------------------------------------------------------------------------ folders
def _folder_case(rng, d: Path) -> Path:
    root = d / "faces"
    splits = _pick(rng, [[""], ["train", "test"], ["train", "val", "test"], ["val"], ["Training", "PublicTest"]])
    for s in splits:
        for c in _pick(rng, [["happy", "sad"], ["a"], ["me", "not_me"], ["x\ny", "ü"], []]):
            cd = root / s / c
            cd.mkdir(parents=True, exist_ok=True)
            for i in range(int(rng.integers(0, 4))):
                r = rng.random()
                data = (
                    _png_bytes(rng, mode=_pick(rng, ["L", "RGB"]))
                    if r < 0.7
                    else _mangle(rng, _png_bytes(rng))
                    if r < 0.85
                    else _junk(rng)
                )
                (cd / f"{i}.{_pick(rng, ['png', 'jpg', 'JPEG', 'gif', 'txt'])}").write_bytes(data)
            if rng.random() < 0.15:
                os.symlink(_pick(rng, [".", "..", "../..", "/", "nowhere", f"../{c}"]), cd / "link")
            if rng.random() < 0.05:
                os.symlink(cd / "loopb", cd / "loopa")
                os.symlink(cd / "loopa", cd / "loopb")
    root.mkdir(parents=True, exist_ok=True)
    if rng.random() < 0.1:
        os.symlink("..", root / "up")
    if rng.random() < 0.1:
        (root / "stray.png").write_bytes(_png_bytes(rng))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _misc_case(rng, d: Path) -> Path:
    r = int(rng.integers(0, 6))
    if r == 0:
        (d / "empty").mkdir()
        return d / "empty"
    if r == 1:
        (d / "x.csv").mkdir()
        return d
    if r == 2:
        p = d / "archive.zip"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("a.txt", "x")
        return p
    if r == 3:
        (d / "a.csv").write_text("emotion,pixels\n")
        (d / "b.csv").write_text("emotion,pixels\n")
        return d
    if r == 4:
        p = d / "train-images-idx3-ubyte"
        p.write_bytes(_junk(rng, 3))
        return p
    return d / "does-not-exist"


_MAKERS = {"csv": _csv_case, "affectnet": _affectnet_case, "idx": _idx_case, "folder": _folder_case, "misc": _misc_case}


def make_case(rng, folder: Path) -> tuple[str, Path]:
    """Write one malformed dataset under ``folder`` (which must exist); returns ``(kind, path to load)``."""
    kind = str(_pick(rng, KINDS))
    return kind, _MAKERS[kind](rng, Path(folder))


# ------------------------------------------------------------------------------------------------ running
def check_message(msg: str, folder=None) -> str | None:
    """Why a FerkitError message breaks the house rules, or None. Paths under ``folder`` (the case's own
    folder) count as their names only: a user's long path is theirs, the words around it are ours."""
    if "\n" in msg or "\r" in msg:
        return "message spans several lines"
    if folder is not None:
        msg = msg.replace(str(folder), "D")
    if len(msg) > MAX_MESSAGE:
        return f"message is {len(msg)} characters (max {MAX_MESSAGE})"
    if not msg.strip():
        return "empty message"
    return None


def run_fuzz(n: int = 300, seed: int = 0, *, per_case_s: float = 20.0, workdir=None, verbose: bool = False) -> dict:
    """Load ``n`` generated cases in this process; returns figures and findings (a finding: not a clean load and
    not a one-line FerkitError, or slower than ``per_case_s``). Cases are ``np.random.default_rng([seed, i])``."""
    from ferkit import load_dataset
    from ferkit.errors import FerkitError

    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="ferkit-fuzz-")) if own else Path(workdir)
    old_cache = os.environ.get("FERKIT_CACHE_DIR")
    os.environ["FERKIT_CACHE_DIR"] = str(base / "_cache")
    alarm = hasattr(signal, "setitimer") and _main_thread()
    if alarm:
        old_handler = signal.signal(signal.SIGALRM, _raise_hang)
    stats = {
        "cases": 0,
        "loaded": 0,
        "errors": 0,
        "tracebacks": 0,
        "bad_messages": 0,
        "hangs": 0,
        "by_kind": {k: 0 for k in KINDS},
        "findings": [],
        "seconds": 0.0,
        "slowest_s": 0.0,
    }
    t0 = time.monotonic()
    try:
        for i in range(n):
            d = base / f"case{i:05d}"
            d.mkdir(parents=True)
            rng = np.random.default_rng([seed, i])
            kind, path = make_case(rng, d)
            stats["cases"] += 1
            stats["by_kind"][kind] += 1
            finding = None
            t = time.monotonic()
            try:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, per_case_s)
                load_dataset(path, quiet=True)
                stats["loaded"] += 1
            except _Hang:
                stats["hangs"] += 1
                finding = f"hang: over {per_case_s:g} s"
            except FerkitError as e:
                stats["errors"] += 1
                why = check_message(str(e), d)
                if why:
                    stats["bad_messages"] += 1
                    finding = f"{why}: {str(e)[:300]!r}"
            except BaseException as e:  # noqa: BLE001 - exactly what the fuzzer hunts
                if isinstance(e, KeyboardInterrupt):
                    raise
                stats["tracebacks"] += 1
                finding = f"{type(e).__name__}: {str(e)[:300]}"
            finally:
                if alarm:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            took = time.monotonic() - t
            stats["slowest_s"] = max(stats["slowest_s"], round(took, 3))
            if finding is None and took > per_case_s:
                stats["hangs"] += 1
                finding = f"hang: {took:.1f} s"
            if finding:
                stats["findings"].append({"case": i, "seed": seed, "kind": kind, "path": str(path), "finding": finding})
                if verbose:
                    print(f"case {i} ({kind}): {finding}", file=sys.stderr)
            else:
                shutil.rmtree(d, ignore_errors=True)
    finally:
        if alarm:
            signal.signal(signal.SIGALRM, old_handler)
        if old_cache is None:
            os.environ.pop("FERKIT_CACHE_DIR", None)
        else:
            os.environ["FERKIT_CACHE_DIR"] = old_cache
        if own and not stats["findings"]:
            shutil.rmtree(base, ignore_errors=True)
    stats["seconds"] = round(time.monotonic() - t0, 2)
    stats["workdir"] = str(base)
    return stats


def run_cli_cases(n: int = 5, seed: int = 0, *, timeout: float = 120.0) -> list[dict]:
    """``python -m ferkit data inspect PATH`` on ``n`` generated cases: each must exit 0 or 2, print no
    traceback, and (on 2) one line on stderr. Returns the findings."""
    findings = []
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory(prefix="ferkit-fuzz-cli-") as tmp:
        env["FERKIT_CACHE_DIR"] = str(Path(tmp) / "_cache")
        for i in range(n):
            d = Path(tmp) / f"cli{i}"
            d.mkdir()
            kind, path = make_case(np.random.default_rng([seed, 10**6 + i]), d)
            try:
                r = subprocess.run(
                    [sys.executable, "-m", "ferkit", "data", "inspect", str(path)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                findings.append({"case": i, "kind": kind, "finding": f"hang: over {timeout:g} s"})
                continue
            err = r.stderr.strip()
            why = None
            if r.returncode not in (0, 2):
                why = f"exit code {r.returncode}"
            elif "Traceback" in r.stderr:
                why = "traceback on stderr"
            elif r.returncode == 2 and (len(err.splitlines()) != 1 or len(err) > MAX_MESSAGE + 40):
                why = f"stderr is {len(err.splitlines())} line(s), {len(err)} characters"
            if why:
                findings.append({"case": i, "kind": kind, "path": str(path), "finding": f"{why}: {err[-300:]!r}"})
    return findings


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_hang(signum, frame):
    raise _Hang()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fuzz ferkit's dataset loaders with malformed inputs.")
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", type=int, default=5, help="cases also run through `ferkit data inspect` (default 5)")
    ap.add_argument("--per-case", type=float, default=20.0, help="seconds before a case counts as a hang")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = ap.parse_args(argv)
    stats = run_fuzz(a.cases, a.seed, per_case_s=a.per_case, verbose=not a.json)
    stats["cli_cases"] = a.cli
    stats["cli_findings"] = run_cli_cases(a.cli, a.seed) if a.cli else []
    if a.json:
        print(json.dumps(stats, indent=2))
    else:
        print(
            f"{stats['cases']} cases in {stats['seconds']} s ({stats['by_kind']}): {stats['loaded']} loaded, "
            f"{stats['errors']} one-line errors; findings: {stats['tracebacks']} tracebacks, "
            f"{stats['bad_messages']} bad messages, {stats['hangs']} hangs; CLI: {a.cli} cases, "
            f"{len(stats['cli_findings'])} findings; slowest case {stats['slowest_s']} s"
        )
        for f in stats["findings"] + stats["cli_findings"]:
            print(f"  {f}")
    return 1 if stats["findings"] or stats["cli_findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
