"""Every output file ferkit writes, as a careless user or an attacker would aim it: special files (devices,
FIFOs, symbolic links, ``-``), names that are not UTF-8 or would collide, read-only folders, full disks, cells a
spreadsheet would run, file names that carry terminal escape sequences. Real files, real CLI runs.

Read-only and full-disk cases as root: permission bits do not stop root, so a read-only folder is a read-only
bind mount and a full disk a tiny tmpfs, each in a private mount namespace (``unshare -m``, nothing leaks to the
machine); where that is not allowed those cases are skipped, and a path under a regular file (ENOTDIR, which
stops root too) covers the one-line check everywhere. Devices are private ``mknod`` copies in tmp_path (never
the real /dev/full or /dev/null: a writer that replaced them would break the machine).
"""

import csv
import json
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import FERKIT, run_cli

DATA = Path(__file__).parent / "data"
PHOTO = DATA / "identity" / "obama.jpg"
FAST = ["--det-size", "320"]


def _one_line_exit_2(r, *must):
    err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2, (r.returncode, err[-2000:])
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("ferkit: error: "), err[-2000:]
    assert "Traceback" not in err and "\x1b" not in err
    for m in must:
        assert m in lines[0], lines[0]
    return lines[0]


def _mknod_char(path: Path, major: int, minor: int) -> Path:
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    return path


_NS = None


def _namespace_ok() -> bool:
    """Whether a private mount namespace with tmpfs / bind mounts can be made here (root in most sandboxes)."""
    global _NS
    if _NS is None:
        try:
            r = subprocess.run(
                ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, timeout=30
            )
            _NS = r.returncode == 0
        except (OSError, subprocess.SubprocessError):
            _NS = False
    return _NS


def _run_mounted(setup: str, argv: list, cwd=None, timeout=600):
    """``argv`` run after the shell commands ``setup`` in a private mount namespace (skip where not allowed)."""
    if not _namespace_ok():
        pytest.skip("no private mount namespace here (unshare -m / mount not permitted)")
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", setup + ' && exec "$@"', "sh"] + [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def _read_only(folder: Path) -> str:
    return f"mount --bind '{folder}' '{folder}' && mount -o remount,ro,bind '{folder}' '{folder}'"


# ------------------------------------------------------------------------------------------------ one writer
def test_one_atomic_writer_modes_follow_the_umask_which_is_never_changed(tmp_path):
    """New files get 0o666 minus the umask, a replaced file keeps its mode, folders 0o777 minus the umask; the
    writer reads the umask and never sets it (os.umask would change it for every thread of the process)."""
    from ferkit.utils import atomic_dir, atomic_path, atomic_write_bytes

    calls = []
    real = os.umask

    def spy(mask):
        calls.append(mask)
        return real(mask)

    old = real(0o027)
    os.umask = spy
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")
        keep = tmp_path / "private.bin"
        keep.write_bytes(b"old")
        os.chmod(keep, 0o600)
        atomic_write_bytes(keep, b"new")
        with atomic_path(tmp_path / "lib.onnx", suffix=".onnx") as tmp:
            Path(tmp).write_bytes(b"model")
        with atomic_dir(tmp_path / "folder") as d:
            (d / "a.txt").write_text("a")
    finally:
        os.umask = real
        real(old)
    assert calls == [], f"the writer changed the process umask: {calls}"
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o640
    assert stat.S_IMODE(keep.stat().st_mode) == 0o600 and keep.read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "lib.onnx").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "lib.onnx", "new.bin", "private.bin"]


def test_no_hand_written_temp_file_and_rename_outside_the_one_writer():
    """The six places that wrote their own temp file + os.replace (schema, ONNX export, RetinaFace cache,
    synth, fetch, dataset cache) and every other module go through ferkit.utils; nobody touches the umask."""
    src = Path(__file__).parent.parent / "src" / "ferkit"
    # other engineers' modules, reworked in their own branches (see the report)
    skip = {"utils.py", "checkpoint.py", "inference/ray_engine.py"}
    offenders = []
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src).as_posix()
        if rel in skip or rel.startswith("serve/"):
            continue
        text = f.read_text()
        for needle in ("mkstemp(", "mkdtemp(", "os.umask(", "os.chmod("):
            if needle in text:
                offenders.append(f"{rel}: {needle}")
        if "os.replace(" in text and rel != "data/cache.py":  # cache: moving a stale entry aside to delete it
            offenders.append(f"{rel}: os.replace(")
    assert offenders == []


# ------------------------------------------------------------------------------------------------ special files
def test_output_to_special_files_is_written_never_replaced(tmp_path):
    """--output on a FIFO, a null device, a full device, a symbolic link and '-': the FIFO's reader gets the
    results, devices stay devices, a full one is one line and exit 2, the link stays a link to new contents."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = {}

    def reader():
        with open(fifo, "rb") as f:
            got["data"] = f.read()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    r = run_cli("predict", PHOTO, "--output", fifo, *FAST, timeout=300)
    t.join(20)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stat.S_ISFIFO(fifo.stat().st_mode) and json.loads(got["data"])["status"] == "ok"

    null = _mknod_char(tmp_path / "null", 1, 3)
    r = run_cli("predict", PHOTO, "--format", "csv", "--output", null, *FAST, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert stat.S_ISCHR(null.stat().st_mode)

    full = _mknod_char(tmp_path / "full", 1, 7)
    for fmt in ("jsonl", "parquet"):
        r = run_cli("predict", PHOTO, "--format", fmt, "--output", full, "--quiet", *FAST, timeout=300)
        _one_line_exit_2(r, str(full), "No space left on device")
        assert stat.S_ISCHR(full.stat().st_mode)

    target = tmp_path / "real.csv"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    link = tmp_path / "link.csv"
    link.symlink_to(target.name)
    r = run_cli("predict", PHOTO, "--format", "csv", "--output", link, *FAST, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert link.is_symlink() and target.read_text().startswith("path,status")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600

    r = run_cli("predict", PHOTO, "--output", "-", *FAST, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["status"] == "ok" and not (tmp_path / "-").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "full", "link.csv", "null", "real.csv"]


# ------------------------------------------------------------------------------------------------ names
def test_file_names_that_are_not_utf8_in_every_writer(tmp_path):
    """x/\\xff\\xfe bad.jpg through --annotate (OpenCV crashed on the name), Parquet (UnicodeEncodeError), CSV,
    JSON lines and to_pandas: a result for it in each, its bytes kept where the format allows."""
    pytest.importorskip("pyarrow")
    import pandas as pd

    folder = tmp_path / "x"
    folder.mkdir()
    name = os.fsdecode(b"\xff\xfe bad.jpg")
    shutil.copy(PHOTO, folder / name)
    bad = str(folder / name)
    out = tmp_path / "out"
    r = subprocess.run(
        FERKIT
        + ["predict", bad, "--annotate", str(out), "--format", "parquet", "--output", str(out / "r.parquet"), *FAST],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr[-2000:]
    assert (out / os.fsdecode(b"\xff\xfe bad.annotated.jpg")).stat().st_size > 1000
    df = pd.read_parquet(out / "r.parquet")
    assert list(df["path"]) == [os.fsencode(bad).decode("utf-8", "backslashreplace")] and df["status"][0] == "ok"
    r = subprocess.run(
        FERKIT + ["predict", bad, "--format", "csv", "--output", str(out / "r.csv"), *FAST],
        capture_output=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = (out / "r.csv").read_bytes().splitlines()
    assert len(rows) == 2 and rows[1].startswith(os.fsencode(bad) + b",ok,")
    r = subprocess.run(
        FERKIT + ["predict", bad, "--output", str(out / "r.jsonl"), *FAST], capture_output=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.fsencode(json.loads((out / "r.jsonl").read_text())["path"]) == os.fsencode(bad)
    import ferkit

    res = ferkit.predict("fer_minixception", [bad], det_size=320)
    assert os.fsencode(res[0].path) == os.fsencode(bad)  # the results keep the name as Python holds it
    df = res.to_pandas()  # pandas may hold text as Arrow strings (UTF-8 only): the Parquet spelling
    assert list(df["path"]) == [os.fsencode(bad).decode("utf-8", "backslashreplace")] and df["status"][0] == "ok"


def test_annotate_never_drops_or_overwrites(tmp_path):
    """a/x.jpg, a/x.png, b/x.jpg and a 250-character name: four annotated images, none dropped or shared."""
    from PIL import Image

    src = tmp_path / "in"
    for d in ("a", "b"):
        (src / d).mkdir(parents=True)
        shutil.copy(PHOTO, src / d / "x.jpg")
    Image.open(PHOTO).save(src / "a" / "x.png")
    long = "L" * 250 + ".jpg"
    shutil.copy(PHOTO, src / long)
    out = tmp_path / "ann"
    r = run_cli("predict", src, "--annotate", out, "--quiet", *FAST, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and {"x.annotated.jpg", "x-2.annotated.jpg", "x-3.annotated.jpg"} <= set(names), names
    assert all(len(os.fsencode(n)) <= 255 and (out / n).stat().st_size > 1000 for n in names)
    assert any(n.startswith("L" * 200) for n in names)


# ------------------------------------------------------------------------------------------------ checks first
def test_outputs_are_checked_before_any_work(tmp_path, synth_dir):
    """--output naming a folder, and outputs under a regular file (ENOTDIR stops root as well): one line and
    exit 2 before a model loads or an input is read, no temporary files left, for every command that writes."""
    folder = tmp_path / "existing"
    folder.mkdir()
    for fmt in ("csv", "jsonl", "parquet"):
        r = run_cli("predict", PHOTO, "--format", fmt, "--output", folder, *FAST, timeout=300)
        line = _one_line_exit_2(r, "--output", "is a folder")
        assert "ok " not in r.stdout + r.stderr.replace(line, "")  # no input was analysed
        assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file")
    under = blocker / "sub"
    cases = [
        (["predict", PHOTO, "--output", under / "r.jsonl", *FAST], "--output"),
        (["predict", PHOTO, "--annotate", under, *FAST], "--annotate"),
        (["train", "--data", synth_dir, "--model", "linear", "--epochs", "1", "--out", under, "--quiet"], "--out"),
        (["evaluate", "--checkpoint", "fer_minixception", "--data", synth_dir, "--out", under], "--out"),
        (["data", "synth", "--out", under, "--n", "20"], "--out"),
        (["export", "fer_minixception", "--out", under / "m.onnx"], "--out"),
        (["experiment", "permute", "--data", synth_dir, "--model", "linear", "--epochs", "1", "--out", under], "--out"),
        (["evaluate-verification", "--data", DATA / "identity", "--out", under], "--out"),
        (["demo", "--out", under], "--out"),  # not --quiet: without the check it says "[1/5] synthesising"
        (["compare", folder, "--out", under], "--out"),
    ]
    for argv, flag in cases:
        r = run_cli(*argv, cwd=tmp_path, timeout=300)
        _one_line_exit_2(r, flag, "file.txt")
        assert r.stdout == "", r.stdout[-1000:]  # nothing done (the demo announces each step)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "file.txt"]


def test_read_only_output_folders_are_one_line_for_root(tmp_path, synth_dir):
    """A read-only folder (a read-only bind mount: chmod does not stop root) for predict --output / --annotate,
    train --out, evaluate --out and data synth --out: one line naming it and exit 2, nothing written."""
    ro = tmp_path / "ro"
    ro.mkdir()
    cases = [
        (["predict", PHOTO, "--output", ro / "r.csv", "--format", "csv", *FAST], "--output"),
        (["predict", PHOTO, "--format", "parquet", "--output", ro / "r.parquet", *FAST], "--output"),
        (["predict", PHOTO, "--annotate", ro / "ann", *FAST], "--annotate"),
        (["train", "--data", synth_dir, "--model", "linear", "--epochs", "1", "--out", ro / "run", "--quiet"], "--out"),
        (["evaluate", "--checkpoint", "fer_minixception", "--data", synth_dir, "--out", ro / "ev"], "--out"),
        (["data", "synth", "--out", ro / "syn", "--n", "20"], "--out"),
    ]
    for argv, flag in cases:
        r = _run_mounted(_read_only(ro), FERKIT + argv, cwd=tmp_path)
        _one_line_exit_2(r, flag, "Read-only file system")
    assert list(ro.iterdir()) == []


def test_full_disk_during_training_keeps_the_checkpoints(tmp_path, synth_dir):
    """A disk that fills up in epoch 2 (a 400 KB tmpfs: epoch 1's checkpoints fit, epoch 2's last.pt does not):
    one line saying the checkpoints are intact and how to resume, exit 2; epoch 1's last.pt loads."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    run = mnt / "run"
    probe = f"import torch; print('EPOCH', torch.load('{run / 'last.pt'}', weights_only=False)['train_state']['epoch'])"
    cmd = (
        ["sh", "-c", '"$@"; rc=$?; ls -a "$RUN" >&2; python -c "$PROBE"; exit $rc', "sh"]
        + FERKIT
        + ["train", "--data", synth_dir, "--model", "linear", "--epochs", "3", "--out", run, "--quiet"]
    )
    if not _namespace_ok():
        pytest.skip("no private mount namespace here (unshare -m / mount not permitted)")
    env = dict(os.environ, RUN=str(run), PROBE=probe, PATH=f"{Path(FERKIT[0]).parent}:{os.environ['PATH']}")
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=400k tmpfs '{mnt}' && exec \"$@\"", "sh"]
        + [str(a) for a in cmd],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [x for x in r.stderr.splitlines() if x.startswith("ferkit: error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "No space left on device" in lines[0] and "intact" in lines[0], lines[0]
    assert f"--resume {run / 'last.pt'}" in lines[0], lines[0]
    assert "EPOCH 1" in r.stdout, r.stdout + r.stderr[-2000:]
    assert ".tmp" not in r.stderr.replace(lines[0], "")  # no temporary file left in the run folder


# ------------------------------------------------------------------------------------------------ content
def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(tmp_path):
    """OWASP's CSV injection advice: a cell starting with = + - @ TAB or CR gets a leading ' (CSV only)."""
    from ferkit.schema import FaceResult, FileResult, ResultWriter, csv_cell

    assert csv_cell("\r=1") == "'\r=1" and csv_cell(-1.5) == -1.5 and csv_cell(None) == ""
    names = [
        "=cmd|' /C calc'!A0.jpg",
        "+1.jpg",
        "-2.jpg",
        "@SUM(1).jpg",
        "\tx.jpg",
        "\rx.jpg",
        "a\rb.jpg",
        "plain=.jpg",
    ]
    results = [FileResult(path=n, status="error", reason='=HYPERLINK("http://x")') for n in names]
    results.append(
        FileResult(
            path="face.jpg",
            faces=[
                FaceResult(
                    source="face.jpg",
                    face=0,
                    box=(-5, 0, 3, 4),
                    label="happy",
                    score=0.9,
                    probabilities={"happy": 0.9, "sad": 0.1},
                )
            ],
        )
    )
    for fmt in ("csv", "jsonl"):
        w = ResultWriter(fmt, ["happy", "sad"], path=tmp_path / f"r.{fmt}")
        for r in results:
            w.write(r)
        w.close()
    rows = list(csv.DictReader(open(tmp_path / "r.csv", newline="")))
    assert [row["path"] for row in rows] == ["'" + n for n in names[:-2]] + ["a\rb.jpg", "plain=.jpg", "face.jpg"]
    assert all(row["reason"].startswith("'=") for row in rows[:-1])
    assert rows[-1]["x1"] == "-5.0"  # numbers stay numbers
    assert [json.loads(x)["path"] for x in open(tmp_path / "r.jsonl")] == names + ["face.jpg"]


def test_terminal_lines_escape_control_characters(tmp_path):
    """A file name carrying an escape sequence or a carriage return is shown escaped in every status line and
    in the one-line error, never sent raw to the terminal."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "red\x1b[31m\rx.jpg")
    (folder / "bad\x1b]0;title\x07.jpg").write_bytes(b"not an image")
    r = run_cli("predict", folder, "--format", "csv", *FAST, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr and "\x07" not in r.stderr, r.stderr
    assert "red\\x1b[31m\\rx.jpg" in r.stderr and "bad\\x1b]0;title\\x07.jpg" in r.stderr
    r = run_cli("predict", PHOTO, "--output", tmp_path / "in" / "red\x1b[31m\rx.jpg" / "o.csv")
    _one_line_exit_2(r, "--output")


# ------------------------------------------------------------------------------------------------ gallery
def _gallery(path: Path) -> None:
    import numpy as np

    from ferkit.identity.gallery import Gallery

    with Gallery(path, create=True) as g:
        g.add(
            [
                {
                    "name": "alice",
                    "sha256": "a" * 64,
                    "photo": "a.jpg",
                    "embedder": "e",
                    "vector": np.ones(8),
                    "box": (0, 0, 1, 1),
                }
            ]
        )


def test_gallery_read_only_and_empty_files(tmp_path):
    """A read-only gallery lists and matches (opened mode=ro), enrolling into it says read-only (not "restore it
    from a backup"); an existing empty file is a new gallery for enroll, and "no gallery here" for reading."""
    from ferkit.identity.gallery import Gallery, GalleryError
    from ferkit.identity.verify import IdentityMatcher

    gal = tmp_path / "g"
    gal.mkdir()
    _gallery(gal / "team.sqlite3")
    r = _run_mounted(_read_only(gal), FERKIT + ["gallery", "list", "--gallery", gal / "team.sqlite3", "--json"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["name"] for x in json.loads(r.stdout)["identities"]] == ["alice"]
    r = _run_mounted(_read_only(gal), FERKIT + ["enroll", "--name", "bob", "--gallery", gal / "team.sqlite3", PHOTO])
    line = _one_line_exit_2(r, "read-only")
    assert "backup" not in line and "not a usable" not in line
    assert sorted(p.name for p in gal.iterdir()) == ["team.sqlite3"]
    # in-process, where a mount namespace is not at hand: a read-only open never writes
    m = IdentityMatcher.from_gallery(gal / "team.sqlite3")
    assert m.names == ["alice"]
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery(empty, readonly=True)
    r = run_cli("enroll", "--name", "obama", "--gallery", empty, PHOTO, timeout=300)
    assert r.returncode == 0 and "enrolled 1 new photo" in r.stderr, r.stderr[-2000:]
    with Gallery(empty, readonly=True) as g:
        assert g.names() == ["obama"]


def test_the_current_folder_is_never_an_output_folder_to_replace(tmp_path):
    """`ferkit data synth --out .` in an empty folder: one line, exit 2, the folder untouched (it was a ValueError
    traceback; replacing the current folder as a whole is never right)."""
    work = tmp_path / "work"
    work.mkdir()  # empty: a folder with files is refused earlier ("already exists and is not empty")
    r = run_cli("data", "synth", "--out", ".", "--n", "20", cwd=work)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "ferkit: error: --out '.': is the current folder (or holds it), which is never replaced as a whole; give "
        "a new folder name"
    ], r.stderr
    assert list(work.iterdir()) == []
    r = run_cli("data", "synth", "--out", "new", "--n", "20", cwd=work)
    assert r.returncode == 0 and (work / "new" / "splits.csv").is_file(), r.stderr[-2000:]
