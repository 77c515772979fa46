"""Small helpers shared by every layer: atomic writes, devices, seeding, cache location, progress bars."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, FerkitError, OutputError

# ------------------------------------------------------------------------------------------- writing outputs
# One writer for every file ferkit makes. The rules (README "Output files"):
#  * a regular file (or a new name) is written to a temporary file beside it and moved into place with one
#    os.replace: a crash leaves the old file or the new one, never half of one;
#  * a device, a FIFO or a socket is never replaced: it is opened and written directly (``--output /dev/null``
#    stays a device, a FIFO's reader gets the data); ``-`` is standard output;
#  * a symbolic link is followed: its target is replaced atomically and the link stays a link;
#  * a new file gets mode 0o666 minus the umask (the mode ``open`` would give it); a replaced file keeps its mode.
#    The umask is read from /proc/self/status, never set: ``os.umask`` changes it for every thread at once;
#  * any OSError while writing becomes one OutputError line naming the file (ENOSPC from a full disk too).


def _read_umask() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_at_import() -> int:
    # Where /proc has no Umask line (macOS, old kernels): once, at import, before any ferkit thread exists.
    mask = _read_umask()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK = _umask_at_import()


def umask() -> int:
    """The process umask, read without changing it."""
    mask = _read_umask()
    return _UMASK if mask is None else mask


def new_file_mode() -> int:
    """The mode a new output file gets: ``0o666`` minus the process umask (what ``open`` would give it)."""
    return 0o666 & ~umask()


def output_error(path, e: OSError, what: str = "output") -> OutputError:
    """One line for an OS error writing ``path``: which file, why, what to do."""
    from ferkit.errors import quote

    why = e.strerror or str(e) or type(e).__name__
    hint = {
        errno.ENOSPC: "free some space or write elsewhere",
        errno.EDQUOT: "free some space or write elsewhere",
        errno.EROFS: "the file system is read-only: write elsewhere",
        errno.EACCES: "write elsewhere or fix the folder's permissions",
        errno.EPERM: "write elsewhere or fix the folder's permissions",
        errno.EISDIR: "it is a folder: give a file name",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EFBIG: "the file is too large for this file system or limit",
    }.get(e.errno or 0, "write elsewhere")
    err = OutputError(f"{what} {quote(os.fspath(path))}: cannot write ({why}); {hint}", e.errno)
    err.strerror, err.filename = why, os.fspath(path)
    return err


def is_special_file(path: str | os.PathLike) -> bool:
    """A device, FIFO or socket (after following links): written directly, never replaced."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))


def _target(path: str | os.PathLike) -> str:
    """Where the bytes go: ``path``, or the file a symbolic link at ``path`` points to (links are followed)."""
    p = os.fspath(path)
    return os.path.realpath(p) if os.path.islink(p) else p


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a file name that is not valid UTF-8 (surrogate-escaped bytes)
        return False


def _temp_prefix(target: str) -> str:
    """``.NAME.`` (so a killed write's leftovers are recognisable as NAME's), short enough for any NAME."""
    name = os.path.basename(target)
    return f".{name}." if len(os.fsencode(name)) <= 200 else ".ferkit-long-name."


def _finish(tmp: str, target: str) -> None:
    """Give ``tmp`` the target's mode (or a new file's) and move it over ``target``."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = new_file_mode()
    os.chmod(tmp, mode)
    os.replace(tmp, target)


# OS errors from a writer's own code that can only be about writing (others, e.g. a missing input, pass through)
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS}


def _reraise(e: BaseException, path: str, what: str, ours: bool):
    """Raise ``e`` again, as an OutputError if it is an OS error of writing (``ours``: raised by the writer)."""
    if isinstance(e, OSError) and not isinstance(e, FerkitError) and (ours or e.errno in _WRITE_ERRNOS):
        raise output_error(path, e, what) from None
    raise e


def _drop(tmp: str, e: BaseException, path: str, what: str, ours: bool):
    """A write that failed: its temporary file goes, the error is raised again (see :func:`_reraise`)."""
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    _reraise(e, path, what, ours)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    what: str = "output",
):
    """Open ``path`` for writing as a whole: yields a file object; on a clean exit the written file is in place
    by the rules above (regular files atomically, devices / FIFOs / ``-`` directly, symbolic links followed);
    on an exception the temporary file is removed and ``path`` is as it was. OS errors of writing become one
    :class:`~ferkit.errors.OutputError` line naming ``path`` (``what`` names it: ``--output``, ``checkpoint``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    text: dict[str, Any] = dict(encoding=encoding or "utf-8", errors=errors, newline=newline) if mode == "w" else {}
    p = os.fspath(path)
    target = p if p == "-" else _target(p)
    ours = True
    try:
        if p == "-" or is_special_file(target):
            import sys

            if p == "-":
                f = sys.stdout if mode == "w" else sys.stdout.buffer
            else:
                f = open(target, mode, **text)
            try:
                ours = False
                yield f
                ours = True
                f.flush()
            finally:
                if p != "-":
                    f.close()
            return
        parent = os.path.dirname(target) or "."
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target), suffix=".tmp", dir=parent)
    except BaseException as e:
        _reraise(e, p, what, ours)
    try:
        with os.fdopen(fd, mode, **text) as f:
            ours = False
            yield f
            ours = True
            f.flush()
            os.fsync(f.fileno())
        _finish(tmp, target)
    except BaseException as e:
        _drop(tmp, e, p, what, ours)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp", what: str = "output"):
    """For writers that take a file name (pyarrow, ONNX, OpenCV): yields a temporary file name to write; on a
    clean exit it becomes ``path`` by the rules of :func:`atomic_open` (a device, FIFO or ``-`` gets its bytes
    copied in). ``suffix``: the temporary name's ending, for libraries that choose the format by it. The
    temporary name is valid UTF-8 (such libraries may crash on others): where the target's folder name is not,
    the file is made in the system's temporary folder and copied into place atomically."""
    p = os.fspath(path)
    target = p if p == "-" else _target(p)
    direct = p == "-" or is_special_file(target) or not _utf8(os.path.dirname(os.path.abspath(target)))
    ours = True
    try:
        parent = None if direct else (os.path.dirname(target) or ".")
        if parent:
            os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ferkit-", suffix=suffix, dir=parent)
        os.close(fd)
    except BaseException as e:
        _reraise(e, p, what, ours)
    try:
        ours = False
        yield tmp
        ours = True
        if direct:
            with open(tmp, "rb") as src, atomic_open(p, "wb", what=what) as dst:
                shutil.copyfileobj(src, dst)
            os.unlink(tmp)
        else:
            _finish(tmp, target)
    except BaseException as e:
        _drop(tmp, e, p, what, ours)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, replace: bool = False, what: str = "output folder"):
    """Build a folder as a whole: yields a temporary folder beside ``path``; on a clean exit it is renamed to
    ``path`` (mode 0o777 minus the umask), so ``path`` appears complete or not at all. An existing ``path`` is
    replaced only with ``replace`` (moved aside first, removed once the new one is in place); otherwise a
    non-empty one makes the rename fail (an OSError: another process finished first). On an exception the
    temporary folder is removed."""
    target = Path(os.path.abspath(path))  # "." or "..": the folder by its name
    if target == Path.cwd() or target in Path.cwd().parents:
        from ferkit.errors import quote

        raise OutputError(
            f"{what} {quote(os.fspath(path))}: is the current folder (or holds it), which is never "
            "replaced as a whole; give a new folder name",
            errno.EINVAL,
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as e:
        raise output_error(target, e, what) from None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp made it 0o700
        old = None
        if replace and (target.exists() or target.is_symlink()):
            old = target.with_name(f".{target.name}.{os.getpid()}.old")
            _remove(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            _remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _Discarded(Exception):
    """Thrown into an unfinished atomic_open / atomic_path to drop it."""


def discard(cm) -> None:
    """Abandon an entered :func:`atomic_open` / :func:`atomic_path` (used without ``with``, e.g. an output kept
    open across calls): its temporary file is removed and the target stays as it was. Errors of a device that
    already failed are not raised again (the caller is handling that one)."""
    with contextlib.suppress(_Discarded, OSError):
        cm.__exit__(_Discarded, _Discarded(), None)


def check_output(path: str | os.PathLike, what: str = "--output", *, folder: bool = False) -> None:
    """Before the work starts: can ``path`` be written? A file (``folder=False``): not a folder (a device, a
    FIFO, a symbolic link to a file and ``-`` are fine); a folder: not a file. Either way the folder it goes in
    (or the nearest one that exists) must take new files. Raises one OutputError line naming ``path`` and
    ``what`` (the option) otherwise. The test is real, a file made and removed at once, so it holds for root and
    read-only mounts alike, where permission bits would say otherwise; nothing else is created."""
    from ferkit.errors import quote

    p = os.fspath(path)
    if not folder and p == "-":
        return
    target = _target(p)
    if not folder and os.path.isdir(target):
        raise OutputError(
            f"{what} {quote(p)} is a folder: give a file name, e.g. {quote(os.path.join(p, 'results'))}", errno.EISDIR
        )
    if not folder and is_special_file(target):
        if not os.access(target, os.W_OK):
            raise OutputError(f"{what} {quote(p)}: cannot write (permission denied); write elsewhere", errno.EACCES)
        return
    if folder and os.path.exists(target) and not os.path.isdir(target):
        raise OutputError(f"{what} {quote(p)} is a file, not a folder: give a folder name", errno.ENOTDIR)
    probe_dir = os.path.abspath(target if folder else os.path.dirname(target) or ".")
    while not os.path.lexists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise OutputError(
            f"{what} {quote(p)}: {quote(probe_dir)} is a file, not a folder; write elsewhere", errno.ENOTDIR
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".ferkit-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise output_error(p, e, what) from None


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, what: str = "output") -> None:
    """Write ``data`` to ``path`` as a whole (see :func:`atomic_open`)."""
    with atomic_open(path, "wb", what=what) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, what: str = "output") -> None:
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), what=what)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, what: str = "output") -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", what=what)


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, what: str = "output") -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), what=what)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if type(o).__module__.startswith("torch") and hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported: no start-up cost)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


def cpu_threads() -> int:
    """Threads ferkit's CPU inference uses: torch's setting once torch is loaded, else ``$OMP_NUM_THREADS``,
    else the cores this process may run on (so ONNX Runtime sessions match torch without importing it)."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


_CALLER = threading.local()


@contextlib.contextmanager
def one_core():
    """Within this block (in this thread), ferkit's ONNX Runtime calls use one thread each: the caller runs
    several of them in parallel itself (the analyzer spreads images over cores this way: decode + detect measured
    9.4 ms/photo on 2 cores, against 17.1 with one call at a time using both)."""
    before = getattr(_CALLER, "one_core", False)
    _CALLER.one_core = True
    try:
        yield
    finally:
        _CALLER.one_core = before


def call_threads() -> int:
    """Threads one ONNX Runtime call may use here: 1 inside :func:`one_core`, else :func:`cpu_threads`."""
    return 1 if getattr(_CALLER, "one_core", False) else cpu_threads()


def ort_session(path: str | os.PathLike, threads: int, providers: list[str] | None = None):
    """An ONNX Runtime session with ``threads`` intra-op threads that do not spin between calls (spinning
    threads would take the cores that parallel callers and the decoding thread need)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


#: the ONNX opset every graph ferkit writes uses
ONNX_OPSET = 17


def export_traced_onnx(
    net: Any,
    example: Any,
    path: str | os.PathLike,
    *,
    input_name: str,
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> None:
    """Write ``net`` traced on ``example`` (one input tensor) to ``path`` as ONNX: the TorchScript exporter
    (``dynamo=False``), opset :data:`ONNX_OPSET`, no gradients, the tracer's expected warnings (python ints,
    constant folding) hidden. The one export call behind the detectors' and the zoo's graphs."""
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def resolve_device(name: str | None = "auto"):
    """``auto`` picks CUDA, then Apple MPS, then CPU; anything else is passed to ``torch.device``."""
    import torch

    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"--device {name!r} is not a device name: use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for CUDA but no CUDA GPU is visible: use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {name} asked for MPS but it is not available: use --device cpu or auto")
    return dev


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def cache_root() -> Path:
    """Where decoded datasets and fetched weights live: ``$FERKIT_CACHE_DIR`` or ``~/.cache/ferkit``."""
    env = os.environ.get("FERKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ferkit"


PROGRESS_ENV = "FERKIT_PROGRESS"


def progress_enabled(quiet: bool = False) -> bool:
    """Bars only where a person watches: stderr is a terminal. ``$FERKIT_PROGRESS`` = ``1`` forces them on
    (``ferkit --progress``), ``0`` off (``--quiet`` does too); logs never fill with carriage-return updates."""
    if quiet:
        return False
    env = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    import sys

    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable=None, *, total=None, desc=None, unit="it", quiet=False, leave=True, **kw):
    """A tqdm bar with throughput, shown only when :func:`progress_enabled` says so."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not progress_enabled(quiet),
        leave=leave,
        dynamic_ncols=True,
        **kw,
    )


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights, checkpoints, downloaded artifacts)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# (magic bytes, offset, what the file is) for formats people hand ferkit by mistake; checked in this order
_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"GIF8", 0, "a GIF image"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"WEBP", 8, "a WebP image"),
    (b"BM", 0, "a BMP image"),
    (b"%PDF", 0, "a PDF document"),
    (b"\x1f\x8b", 0, "a gzip archive"),
    (b"BZh", 0, "a bzip2 archive"),
    (b"\xfd7zXZ\x00", 0, "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7z archive"),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd archive"),
    (b"ustar", 257, "a tar archive"),
    (b"\x89HDF", 0, "an HDF5 file"),
    (b"\x93NUMPY", 0, "a numpy .npy array"),
]


def check_checkpoint_kind(path: str | os.PathLike) -> None:
    """One line naming what ``path`` is when its first bytes say it is no checkpoint (an image, text, an
    archive, ...), before anything tries to unpickle it (and before torch is imported)."""
    from ferkit.errors import CheckpointError

    kind = sniff_file_kind(path)
    if kind is not None:
        raise CheckpointError(
            f"{path}: is {kind}, not a model checkpoint; give a .pt file `ferkit train` wrote "
            "(RUN/best.pt), a run folder, a zoo name or an exported .onnx file"
        )


def sniff_file_kind(path: str | os.PathLike) -> str | None:
    """What a file that should be a PyTorch checkpoint is instead, from its first bytes: ``"a PNG image"``,
    ``"a zip archive"``, ``"a text file"``, ... ``None`` when it may be a checkpoint (a pickle, or a zip holding
    ``data.pkl`` as ``torch.save`` writes) or is unrecognised (then the loader's own message applies)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head:
        return "an empty file (0 bytes)"
    for magic, at, what in _SIGNATURES:
        if head[at : at + len(magic)] == magic:
            return what
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                    return None  # torch.save's zip format
        except (zipfile.BadZipFile, OSError, NotImplementedError, ValueError, EOFError, RuntimeError):
            pass  # a damaged zip raises any of these (an unknown version, an encrypted member, a cut-off file)
        return "a zip archive"
    if len(head) >= 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            if e.start < len(head) - 4:  # not just a character cut at the end of the 512 bytes
                return None
        return "a text file"
    return None


#: what brings back everything the light install leaves out (training, evaluation, export, PyTorch models)
TRAIN_INSTALL = "pip install 'ferkit[train]'"
#: modules only the train extra installs: their absence is a missing extra, not a bug
TRAIN_MODULES = ("torch", "torchvision", "onnx", "safetensors")


def missing_train_extra(what: str, module: str = "torch") -> ConfigError:
    """The one-line error for ``what`` (a command or function) needing ``module`` from the train extra."""
    name = {"torch": "PyTorch", "torchvision": "torchvision", "onnx": "onnx (for export)"}.get(module, module)
    return ConfigError(
        f"{what} needs {name}, which this install lacks (plain `pip install ferkit` predicts with the "
        f"zoo models on ONNX Runtime only): {TRAIN_INSTALL}"
    )


def require_torch(what: str) -> None:
    """Raise :func:`missing_train_extra` for ``what`` when PyTorch is not installed (found, not imported)."""
    import sys

    if "torch" not in sys.modules and not installed("torch"):
        raise missing_train_extra(what)
