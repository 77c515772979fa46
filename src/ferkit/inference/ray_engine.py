"""Batch inference on Ray Data: the CLI's analyzer on a pool of actors, the CLI's CSV columns as Parquet.

    from ferkit.inference.ray_engine import predict_dataset
    summary = predict_dataset(["photos/", "s3://bucket/frames/", "more.txt"], "out/", actors=4)

Inputs: local folders (images and videos, recursively), list files (``.txt``/``.lst``/``.list``: one path or
URI per line, ``#`` comments; relative paths are relative to the list file), single files, and any URI
``pyarrow.fs`` opens (``s3://``, ``gs://``, ``hdfs://``, ``file://``): a URI folder is listed recursively.
The driver lists the inputs; Ray Data spreads them over ``actors`` actors, each holding one
:class:`~ferkit.inference.pipeline.Analyzer` built from the run's
:class:`~ferkit.inference.settings.AnalyzerSettings` (sent as its dict; the CLI's defaults unless changed). An
actor reads each input itself (local file, or bytes through ``pyarrow.fs``), so inputs never travel through the
driver.

Output (a local folder, or a shared file system mounted on the driver):

    DIR/part-<id>.parquet            the CLI's CSV columns (ferkit.schema.table_columns), one row per face and
                                     one row per file without a face or with an error (status + reason); a
                                     last ``mesh`` column (list of [x, y, z]) when the mesh attribute was asked
    DIR/_manifest/part-<id>.parquet  the inputs whose rows are in DIR/part-<id>.parquet (input, status,
                                     faces, worker, seconds), written after it
    DIR/_manifest/config.json        models, detector, det_size, crop, stride, classes and attributes of the
                                     run (and detect_every, smooth, max_frames where not the defaults)

Every block of results is written atomically, rows first, manifest second, so a crash leaves at most a part
without a manifest; the next run deletes such orphans and skips every input named in the manifest, so after
any number of crashes and re-runs each input is in the output exactly once. ``overwrite=True`` starts over.
A bad file is an error row, never a failed job; a worker that dies is replaced by Ray Data and its batch
retried.

A long video spreads over actors: the driver reads each local video's frame count and cuts it into ranges
of ``frames_per_task`` frames (rounded up to a multiple of lcm(8, ``detect_every``) x ``stride``, so that
frames share classifier forwards and the detector runs on the frames of the CLI's run), covering only the
first ``max_frames`` frames; each range is one task. When all ranges of a video are in, the driver joins
them (:func:`ferkit.inference.video.stitch_ranges`: the CLI's frames, frame numbers and track ids, the
tracker replayed over the whole video, with its ``smooth`` EMA of probabilities, age and gender on the
actors' raw per-frame values), checks that each range's first frames are the frames read on past
the previous range's end (else that video is analysed again as one task), and writes the video's rows as one
part with its manifest entry: a video whose ranges were only partly done when a job died is redone whole.
Videos given by URI, with an unknown frame count (OpenCV reports 0), or of at most ``frames_per_task`` frames
are one task each.

``ray_address`` ``HOST:PORT`` is tried with a plain TCP connection first (ConfigError within seconds when
nothing answers there: ``ray.init`` would retry for minutes).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError, DataError
from ferkit.inference.settings import AnalyzerSettings, VideoOptions

RAY_MISSING = "--engine ray needs Ray: pip install 'ferkit[ray]'"
LIST_SUFFIXES = (".txt", ".lst", ".list")
MANIFEST_DIR = "_manifest"
# inputs per actor call: amortises Ray's per-task cost (16: +24% overhead vs plain at 1 actor, 48: -4%)
DEFAULT_BATCH_SIZE = 48
DEFAULT_FRAMES_PER_TASK = 1800  # about a minute of 30 fps video per actor task
CONNECT_TIMEOUT_S = 10.0


def _require_ray():
    """``ray`` with Ray Data and pyarrow, or the one-line ConfigError telling how to install them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def _is_uri(s: str) -> bool:
    return "://" in s


# --------------------------------------------------------------------------------------------
# inputs


def _list_lines(text: str, base: str | None) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if base is not None and not _is_uri(line) and not os.path.isabs(line):
            line = os.path.join(base, line) if not _is_uri(base) else base.rstrip("/") + "/" + line
        out.append(line)
    return out


def _uri_inputs(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    from ferkit.inference.pipeline import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
    except Exception as e:  # noqa: BLE001 - arrow raises several types for bad URIs / credentials
        raise DataError(f"{uri}: cannot open ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        rels = sorted(
            os.path.relpath(f.path, root)
            for f in found
            if f.type == pafs.FileType.File and Path(f.path).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
        )
        return [uri.rstrip("/") + "/" + r.replace(os.sep, "/") for r in rels]
    if info.type == pafs.FileType.File and Path(root).suffix.lower() in LIST_SUFFIXES:
        with fs.open_input_stream(root) as f:
            return _list_lines(f.read().decode("utf-8"), uri.rsplit("/", 1)[0])
    return [uri]  # a file, or a missing one: the latter becomes an error row like the CLI's


def resolve_sources(sources: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """The inputs named by ``sources`` (folders, list files, files, URIs), in order, each once."""
    from ferkit.inference.pipeline import expand_inputs

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[str] = []
    for s in map(str, sources):
        if _is_uri(s):
            out += _uri_inputs(s)
            continue
        p = Path(s)
        if p.is_dir():
            out += [str(q) for q in expand_inputs([p])]
        elif p.suffix.lower() in LIST_SUFFIXES:
            if not p.is_file():
                raise DataError(f"{p}: no such list file")
            for item in _list_lines(p.read_text(encoding="utf-8"), str(p.parent)):
                out += (
                    _uri_inputs(item)
                    if _is_uri(item)
                    else ([str(q) for q in expand_inputs([item])] if Path(item).is_dir() else [item])
                )
        else:
            out.append(s)
    return list(dict.fromkeys(out))


def read_input_bytes(uri: str) -> bytes:
    """The bytes of a URI through ``pyarrow.fs`` (DataError naming it when unreadable)."""
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{uri}: no such file") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{uri}: cannot read ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def load_any(path: str):
    """Decode a local path with :func:`ferkit.faces.load_image` (the CLI's path), a URI from its bytes."""
    from ferkit.faces.io import decode_image, load_image

    if _is_uri(str(path)):
        return decode_image(read_input_bytes(str(path)), str(path))
    return load_image(path)


def frame_ranges(
    path: str, frames_per_task: int | None = DEFAULT_FRAMES_PER_TASK, video: VideoOptions | None = None
) -> list[tuple[int, int | None]]:
    """The frame ranges ``(start, end)`` a video is analysed in, one task each: ``frames_per_task`` frames
    (rounded up to a multiple of ``lcm(FRAMES_PER_BATCH, detect_every) * stride``, so each range starts on a
    frame where the whole-file run starts a classifier batch and runs the detector) per range, the last one open
    (``end`` None: to the end, whatever the reported count, or to ``max_frames``). Ranges cover only the first
    ``max_frames`` frames. One range ``(0, None)`` for a URI, an unknown frame count, a video of at most that
    many frames, or ``frames_per_task`` 0/None."""
    import math

    from ferkit.inference.video import FRAMES_PER_BATCH, frame_count

    video = video or VideoOptions()
    if not frames_per_task or _is_uri(path):
        return [(0, None)]
    unit = math.lcm(FRAMES_PER_BATCH, video.detect_every) * video.stride
    step = -(-frames_per_task // unit) * unit
    count = frame_count(path)  # the header's claim, bounded by the file size and checked by reading
    if video.max_frames is not None:
        count = min(count, video.max_frames)  # the last range stops there (analyze_range's max_frames)
    if count <= step:
        return [(0, None)]
    starts = list(range(0, count, step))
    return [(s, s + step) for s in starts[:-1]] + [(starts[-1], None)]


# --------------------------------------------------------------------------------------------
# the actor


class AnalyzeBatch:
    """Ray Data callable class: one :class:`Analyzer` per actor. Each row of a batch is one task (``task``, JSON):
    ``{"images": [paths]}`` or ``{"video": path, "start": frame, "end": frame or null}``. Out: one row per input
    of an images task (``rows``: that input's CSV rows as JSON, so an input's rows travel and land together), one
    row per video range (``range``: the pickled :class:`~ferkit.inference.video.VideoRange`, which the driver
    stitches with the video's other ranges)."""

    def __init__(self, settings: dict, video: dict):
        from ferkit.inference.pipeline import build_analyzer
        from ferkit.inference.settings import AnalyzerSettings

        # An actor holds one CPU (num_cpus=1): Ray, not the analyzer's own pool, spreads images over cores.
        self.analyzer = build_analyzer(AnalyzerSettings.from_dict(settings).replace(workers=1))
        self.video = VideoOptions(**video)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _images(self, paths: list[str]) -> dict:
        try:
            return {r.path: r for r in self.analyzer.analyze_paths(paths, loader=load_any)}
        except Exception:  # noqa: BLE001 - find the file that breaks the batch; the rest must go on
            out = {}
            for p in paths:
                try:
                    out.update({r.path: r for r in self.analyzer.analyze_paths([p], loader=load_any)})
                except Exception as e:  # noqa: BLE001
                    out[p] = self.analyzer.file_result(p, error=_one_line(p, e))
            return out

    def _video(self, path: str, start: int = 0, end: int | None = None):
        """Frames ``start <= index < end`` of a video as a VideoRange; a range that cannot be analysed carries its
        error (a bad video is an error row, never a failed job)."""
        import tempfile

        from ferkit.inference.video import VideoRange, analyze_range

        tmp = None
        try:
            local = path
            if _is_uri(path):  # OpenCV reads files: stage the object locally
                fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(read_input_bytes(path))
                local = tmp
            rng = analyze_range(self.analyzer, local, start, end, self.video)
            rng.result.path = path
            for f in rng.result.faces:
                f.source = path
            return rng
        except Exception as e:  # noqa: BLE001
            error = str(e) if isinstance(e, DataError) else _one_line(path, e)
            return VideoRange(
                start,
                end,
                self.video.stride,
                self.analyzer.file_result(path, kind="video", error=error),
                stop=start,
                error=error,
            )
        finally:
            if tmp:
                os.unlink(tmp)

    def __call__(self, batch: dict):
        import pyarrow as pa

        from ferkit.schema import utf8_text

        schema = _output_schema()
        out: dict[str, list] = {k: [] for k in schema.names}

        def add(path, status, faces, rows, seconds, rng=b""):
            path = utf8_text(path)  # Arrow text is UTF-8: a file name's other bytes travel as \xNN escapes
            for k, v in zip(schema.names, (path, status, faces, rows, self.worker, seconds, rng), strict=True):
                out[k].append(v)

        for task in batch["task"]:
            task = json.loads(str(task))
            t0 = time.perf_counter()
            if "video" in task:
                rng = self._video(task["video"], task["start"], task["end"])
                add(
                    task["video"],
                    rng.result.status,
                    len(rng.result.faces),
                    "",
                    time.perf_counter() - t0,
                    pickle.dumps(rng, protocol=pickle.HIGHEST_PROTOCOL),
                )
                continue
            paths = [str(p) for p in task["images"]]
            results = self._images(paths)
            classes = self.analyzer.classes
            share = (time.perf_counter() - t0) / max(1, len(paths))
            for p in paths:
                rows = part_rows(results[p], classes, self.analyzer.settings.attributes)
                add(p, results[p].status, len(results[p].faces), json.dumps(rows), share)
        return pa.table(out, schema=schema)


def _output_schema():
    """The columns of :class:`AnalyzeBatch`'s output (``range``: empty for an image)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("input", pa.string()),
            ("status", pa.string()),
            ("faces", pa.int64()),
            ("rows", pa.string()),
            ("worker", pa.string()),
            ("seconds", pa.float64()),
            ("range", pa.binary()),
        ]
    )


def part_rows(result, classes: list[str], attributes: tuple[str, ...] | list[str]) -> list[list[Any]]:
    """The rows of one input in a Parquet part (:func:`parquet_schema`'s columns): the CSV's rows
    (:func:`ferkit.schema.table_rows`), each with the face's mesh (:func:`ferkit.schema.table_meshes`) as a last
    cell when ``mesh`` was asked."""
    from ferkit.schema import table_meshes, table_rows

    rows = table_rows(result, classes, attributes=bool(attributes))
    if "mesh" in attributes:
        for row, mesh in zip(rows, table_meshes(result), strict=True):
            row.append(mesh)  # a list of [x, y, z] lists (ferkit.attributes), or None
    return rows


def _one_line(path: str, e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{path}: {type(e).__name__}: {msg}"


# --------------------------------------------------------------------------------------------
# the output folder


def parquet_schema(classes: list[str], attributes: bool = False, mesh: bool = False):
    """The Arrow schema of the Parquet parts: the names of :func:`ferkit.schema.table_columns`, each typed by
    the value :func:`ferkit.schema.table_rows` puts there for a fully filled-in face (so a column the schema
    gains appears here by itself); with the attribute columns when ``attributes``, and a last ``mesh`` column
    (468 ``[x, y, z]`` lists, the type the one-process Parquet writer gives it) when ``mesh`` was asked."""
    import numpy as np
    import pyarrow as pa

    from ferkit.schema import FaceResult, FileResult, table_columns, table_rows

    face = FaceResult(
        source="x",
        face=0,
        box=(0.0, 0.0, 1.0, 1.0),
        landmarks=np.zeros((5, 2)),
        det_score=1.0,
        label=classes[0],
        score=1.0,
        probabilities={c: 1.0 for c in classes},
        valence=0.0,
        arousal=0.0,
        frame=0,
        timestamp=0.0,
        track=0,
    )
    if attributes:  # a described face: text where ferkit.attributes gives text, else numbers
        from ferkit.schema import ATTRIBUTE_COLUMNS

        face.attributes = {
            c: "x" if c in ("gender", "spoof_model", "quality_reason") else 0.0 for c in ATTRIBUTE_COLUMNS
        } | {"reasons": {}}
    row = table_rows(FileResult(path="x", faces=[face]), classes, attributes=attributes)[0]

    def arrow_type(v):
        if isinstance(v, bool):
            return pa.bool_()
        if isinstance(v, int):
            return pa.int64()
        if isinstance(v, float):
            return pa.float64()
        return pa.string()

    fields = [(name, arrow_type(v)) for name, v in zip(table_columns(classes, attributes=attributes), row, strict=True)]
    return pa.schema(fields + ([("mesh", pa.list_(pa.list_(pa.float64())))] if mesh else []))


def rows_table(rows: list[list[Any]], schema):
    """CSV rows -> an Arrow table of ``schema``: empty cells are nulls in typed columns, text stays text (valid
    UTF-8: :func:`ferkit.schema.utf8_text`)."""
    import pyarrow as pa

    from ferkit.schema import utf8_text

    cols = []
    for j, fld in enumerate(schema):
        vals = [r[j] if j < len(r) else None for r in rows]
        if pa.types.is_string(fld.type):
            vals = [None if v is None else utf8_text(str(v)) for v in vals]
        else:
            vals = [None if v == "" or v is None else v for v in vals]
        cols.append(pa.array(vals, type=fld.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _parquet_bytes(table) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def _prepare_output(out: Path, config: dict, overwrite: bool) -> set[str]:
    """Make ``out`` ready; return the inputs already finished there (none with ``overwrite``)."""
    import pyarrow.parquet as pq

    from ferkit.utils import atomic_write_json

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out}: is a file; give a folder for the Parquet parts")
    man = out / MANIFEST_DIR
    if overwrite:
        for f in list(out.glob("part-*.parquet")) + list(man.glob("part-*.parquet")) + list(man.glob("config.json")):
            f.unlink()
    cfg_file = man / "config.json"

    def damaged(f: Path, why: str) -> ConfigError:
        return ConfigError(
            f"{f}: damaged ({why}), so {out} cannot be resumed; redo the run with --overwrite "
            f"(overwrite=True), or use another --output folder"
        )

    if cfg_file.exists():
        try:
            old = json.loads(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise damaged(cfg_file, f"not readable JSON: {type(e).__name__}") from None
        if not isinstance(old, dict):
            raise damaged(cfg_file, "not a JSON object")
        if old != config:
            diff = ", ".join(
                f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in config if old.get(k) != config[k]
            )
            raise ConfigError(
                f"{out} holds results of another configuration ({diff}); "
                f"use another folder or overwrite=True (--overwrite)"
            )
    else:
        atomic_write_json(cfg_file, config)
    done: set[str] = set()
    finished_parts = set()
    for f in sorted(man.glob("part-*.parquet")):
        try:
            done.update(str(x) for x in pq.read_table(f, columns=["input"]).column("input").to_pylist())
        except (OSError, ValueError, KeyError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise damaged(f, f"not a readable manifest part: {type(e).__name__}") from None
        finished_parts.add(f.name)
    for f in out.glob("part-*.parquet"):
        if f.name not in finished_parts:  # rows written, manifest not: the run died in between
            f.unlink()
    for f in list(out.glob(".part-*.tmp")) + list(man.glob(".part-*.tmp")):
        f.unlink()  # temp files of a killed atomic write
    return done


def read_results(output: str | os.PathLike):
    """All result rows under ``output`` as one Arrow table (columns of the CLI's CSV)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(Path(output).glob("part-*.parquet"))
    if not parts:
        raise DataError(f"{output}: no part-*.parquet files")
    return pa.concat_tables([pq.read_table(p) for p in parts])


# --------------------------------------------------------------------------------------------
# the job


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A ``HOST:PORT`` cluster address must accept a TCP connection within ``timeout`` seconds, else the one-line
    ConfigError (``ray.init`` retries an address where nothing listens for minutes). ``auto``, ``ray://...``
    and other forms are left to Ray."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    if host.startswith("[") and host.endswith("]"):  # [IPv6]:PORT
        host = host[1:-1]
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, OverflowError) as e:
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise ConfigError(
            f"--ray-address {address}: cannot join that Ray cluster (nothing answers at {host}:{port}: {why})"
        ) from None


AUTH_TOKEN_VARS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _join(ray, address: str, quiet: bool) -> None:
    """``ray.init`` on an existing cluster, or one ConfigError line. Ray's core writes its retry warnings to file
    descriptor 2 (a cluster that wants a token repeats "Authentication token is missing or incorrect" until it
    gives up with a bare "Failed to connect"): they are caught in a temporary file, so the line can say that a
    token is missing, and the terminal gets one line, not a page."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            ray.init(address=address, log_to_driver=not quiet, logging_level="ERROR")
            error = None
        except (ConnectionError, RuntimeError, ValueError) as e:
            error = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        said = caught.read(1 << 20).decode(errors="replace")
    if error is None:
        if not quiet and said.strip():
            sys.stderr.write(said)
        return
    if "InvalidAuthToken" in said or "Unauthenticated" in said:
        have = [v for v in AUTH_TOKEN_VARS if os.environ.get(v)]
        why = (
            f"the cluster rejected the token in ${have[0]}"
            if have
            else "the cluster uses token authentication and no token is set: export RAY_AUTH_TOKEN=<its token> "
            "(or RAY_AUTH_TOKEN_PATH=<file>) and RAY_AUTH_MODE=token"
        )
        raise ConfigError(f"--ray-address {address}: cannot join that Ray cluster ({why})")
    raise ConfigError(f"--ray-address {address}: cannot join that Ray cluster ({error})")


def _tasks(
    todo: list[str], batch_size: int, frames_per_task: int | None, video: VideoOptions
) -> tuple[list[dict], dict]:
    """Ray Data rows, one task each: every video range first (the long tasks), then the images in groups of
    ``batch_size``; and ``{video: number of its ranges}``."""
    from ferkit.inference.pipeline import is_video
    from ferkit.schema import utf8_text

    tasks, plan = [], {}
    for v in (p for p in todo if is_video(p)):
        ranges = frame_ranges(v, frames_per_task, video)
        plan[utf8_text(v)] = len(ranges)  # keyed as the results name it
        tasks += [{"task": json.dumps({"video": v, "start": s, "end": e})} for s, e in ranges]
    images = [p for p in todo if not is_video(p)]
    tasks += [{"task": json.dumps({"images": images[i : i + batch_size]})} for i in range(0, len(images), batch_size)]
    return tasks, plan


def predict_dataset(
    sources: str | os.PathLike | Iterable[str | os.PathLike],
    output: str | os.PathLike,
    settings: AnalyzerSettings | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    ray_address: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    video: VideoOptions | None = None,
    frames_per_task: int | None = DEFAULT_FRAMES_PER_TASK,
) -> dict:
    """Analyse every image and video under ``sources`` on Ray Data and write Parquet parts under ``output``, with
    the analyzer of ``settings`` (default: :mod:`ferkit.defaults`; each actor gets it as a dict).

    ``actors``: analyzer actors (default: one per CPU of the cluster, or per ``gpus_per_actor`` share of its
    GPUs); ``batch_size``: images per actor call (and per Parquet part); ``frames_per_task``: frames of a video
    per actor call (rounded up as :func:`frame_ranges` says; 0 or None: each video whole in one call; the results
    are the same either way); ``video``: the :class:`~ferkit.inference.settings.VideoOptions` (stride, detect_every,
    smooth, max_frames; default: :mod:`ferkit.defaults`), giving the rows ``ferkit predict`` gives: actors analyse
    ranges that start on the whole-file run's detection frames and stop at ``max_frames``, and the driver replays
    the stitched tracks' smoothing; ``ray_address``: an existing cluster (``auto``, ``HOST:6379``,
    ``ray://HOST:10001``; default ``$RAY_ADDRESS``), else a local Ray runtime is started for this call (and stopped
    after it).
    Re-running the same call skips inputs already finished in ``output``. Returns a summary dict: ``files``,
    ``faces``, ``ok``, ``no_face``, ``errors``, ``skipped``, ``seconds``, ``images_per_s``, ``per_actor``
    ({worker: {files, busy_s, images_per_s}}), ``output``, ``parts``, ``video_ranges`` (actor tasks that
    analysed part of a video) and ``redone`` (videos analysed again as one task: a range's first frames were not
    where the previous range ended).
    """
    from ferkit.inference.pipeline import build_analyzer

    ray = _require_ray()
    settings = settings or AnalyzerSettings()
    if not settings.detect or settings.gallery is not None:
        raise ConfigError(
            "--engine ray runs photos and videos with detection: drop --no-detect and --gallery "
            "(or use the local engine)"
        )
    if gpus_per_actor and gpus_per_actor > 0:
        settings = settings.replace(device="cuda")
    actor_settings = settings.to_dict()  # names only (a loaded model cannot travel): one ConfigError line
    video = video or VideoOptions()
    _check_run_options(actors, batch_size, frames_per_task, gpus_per_actor, output)
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [str(s) for s in sources]
    inputs = resolve_sources(sources)
    if not inputs:
        raise ConfigError(f"no image or video files found in {' '.join(map(str, sources))}")
    # The classifiers alone give the class list (the Parquet schema) and fail fast on a bad model name.
    from ferkit.schema import utf8_text
    from ferkit.utils import check_output

    check_output(output, "--output", folder=True)  # before Ray starts: a folder that takes files
    classes = build_analyzer(settings.replace(detect=False)).classes
    config = {
        **{k: actor_settings[k] for k in ("models", "detector", "det_size", "crop", "backend")},
        "stride": video.stride,
        "classes": classes,
        "attributes": list(settings.attributes),
        # the other video options only where they differ from the defaults (folders of earlier runs resume)
        **{k: v for k, v in dataclasses.asdict(video).items() if k != "stride" and v != getattr(VideoOptions(), k)},
    }
    out = Path(output)
    done = _prepare_output(out, config, overwrite)
    todo = [p for p in inputs if utf8_text(p) not in done]  # the manifest names inputs as the results do
    local_name = {utf8_text(p): p for p in todo}
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    summary: dict[str, Any] = {
        "files": 0,
        "faces": 0,
        "ok": 0,
        "no_face": 0,
        "errors": 0,
        "skipped": len(inputs) - len(todo),
        "seconds": 0.0,
        "images_per_s": 0.0,
        "per_actor": {},
        "output": str(out),
        "parts": 0,
        "video_ranges": 0,
        "redone": 0,
    }
    if not todo:
        say(f"ferkit predict --engine ray: all {len(inputs)} inputs already finished in {out} (--overwrite to redo)")
        return summary

    started = _start_ray(ray, ray_address, actors, quiet)
    try:
        stop = _note_sigint()
        _ray_data_output(ray, quiet)
        res = ray.cluster_resources()
        if actors is None:
            actors = int(res.get("GPU", 0) // gpus_per_actor) if gpus_per_actor > 0 else int(res.get("CPU", 1))
            actors = max(1, actors)
        tasks, plan = _tasks(todo, batch_size, frames_per_task, video)
        summary["video_ranges"] = sum(n for n in plan.values() if n > 1)
        schema = parquet_schema(classes, attributes=bool(settings.attributes), mesh="mesh" in settings.attributes)
        t0 = time.perf_counter()
        while tasks:
            # One task per actor call (an images task holds batch_size images), so video ranges spread over actors.
            ds = ray.data.from_items(tasks, override_num_blocks=len(tasks))
            ds = ds.map_batches(
                AnalyzeBatch,
                batch_size=1,
                batch_format="numpy",
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_gpus=gpus_per_actor or None,
                fn_constructor_kwargs=dict(settings=actor_settings, video=dataclasses.asdict(video)),
            )
            redo = _write_stream(ds, out, schema, classes, summary, plan, settings.attributes, video.smooth, stop)
            # A video whose ranges did not join up (OpenCV's seek landed elsewhere): once more, whole, in one task.
            plan = {v: 1 for v in redo}
            tasks = [{"task": json.dumps({"video": local_name[v], "start": 0, "end": None})} for v in redo]
            summary["redone"] += len(redo)
        _finish_summary(summary, time.perf_counter() - t0, say)
    finally:
        _restore_sigint()
        if started:
            ray.shutdown()
    return summary


_SIGINT_BEFORE: list = []


def _note_sigint():
    """An Event set by Ctrl-C (SIGINT) during the run, the handler in place before still called (Python's raises
    KeyboardInterrupt). Seen under load: the interrupt can land inside Ray Data's iterator, which ends the stream
    early without raising; the Event lets the run end with "interrupted" (exit 130), never as a success with parts
    missing. Only in the main thread (elsewhere signals cannot be caught): there, an Event never set."""
    import signal
    import threading

    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop
    before = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        stop.set()
        if callable(before):
            before(signum, frame)

    _SIGINT_BEFORE.append(before)
    signal.signal(signal.SIGINT, on_sigint)
    return stop


def _restore_sigint() -> None:
    import signal

    if _SIGINT_BEFORE:
        signal.signal(signal.SIGINT, _SIGINT_BEFORE.pop())


def _check_run_options(actors, batch_size, frames_per_task, gpus_per_actor, output) -> None:
    """The engine's own options (not the analyzer's: AnalyzerSettings checks those), one ConfigError line each."""
    if actors is not None and (not isinstance(actors, int) or actors < 1):
        raise ConfigError(f"--actors {actors!r}: give an integer >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size!r}: give an integer >= 1")
    if frames_per_task is not None and (
        isinstance(frames_per_task, bool) or not isinstance(frames_per_task, int) or frames_per_task < 0
    ):
        raise ConfigError(f"--frames-per-task {frames_per_task!r}: give an integer >= 1 (0: whole videos)")
    if gpus_per_actor is None or gpus_per_actor < 0:
        raise ConfigError(f"--gpus-per-actor {gpus_per_actor!r}: give a number >= 0")
    if _is_uri(str(output)):
        raise ConfigError(f"--output {output}: give a local folder (or a shared file system mounted here)")


def _start_ray(ray, ray_address: str | None, actors: int | None, quiet: bool) -> bool:
    """Join ``ray_address`` (or ``$RAY_ADDRESS``), else start a local runtime of this call's own; False when Ray
    was already running here (then this call must not shut it down)."""
    if ray.is_initialized():
        return False
    address = ray_address or os.environ.get("RAY_ADDRESS")  # Ray's own variable, as `ray job submit` sets
    if address:
        _check_reachable(address)
        _join(ray, address, quiet)
    else:
        # address="local": always a runtime of this call's own, even where another job's cluster runs on this
        # machine (a bare ray.init() would join that one, and refuse num_cpus)
        ray.init(
            address="local",
            num_cpus=actors or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=not quiet,
            logging_level="ERROR",
        )
    return True


def _ray_data_output(ray, quiet: bool) -> None:
    """Ray Data's bars, its INFO lines ("logging_progress", "execution finished") and its notes on how the pool
    is used are for a person at a terminal (or --progress); logs get ferkit's own summary lines."""
    from ferkit.utils import progress_enabled

    bars = progress_enabled(quiet)
    if not bars:
        import logging
        import warnings

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data\..*")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bars
    ctx.print_on_execution_start = bars


def _write_part(out: Path, schema, rows: list[list[Any]], manifest: dict[str, list], summary: dict) -> None:
    """One rows part, then its manifest part (each atomic), and the summary's tallies for its inputs."""
    import pyarrow as pa

    from ferkit.utils import atomic_write_bytes

    part = f"part-{uuid.uuid4().hex}.parquet"
    atomic_write_bytes(out / part, _parquet_bytes(rows_table(rows, schema)))
    atomic_write_bytes(out / MANIFEST_DIR / part, _parquet_bytes(pa.table(manifest)))
    summary["parts"] += 1
    summary["files"] += len(manifest["input"])
    summary["faces"] += sum(manifest["faces"])
    for s in manifest["status"]:
        summary["errors" if s == "error" else s] += 1


def _write_stream(
    ds,
    out: Path,
    schema,
    classes: list[str],
    summary: dict,
    plan: dict[str, int],
    attributes: tuple[str, ...] = (),
    smooth: float | None = None,
    stop=None,
) -> list[str]:
    """Drain the dataset block by block and tally the summary. Images: a block's rows as one part. Video ranges:
    held until all ``plan[video]`` ranges of a video are in, then stitched (tracks replayed with the ``smooth``
    EMA) and written as one part. Returns the videos whose ranges did not join up (to analyse again as one
    range). ``stop`` (from :func:`_note_sigint`): set by Ctrl-C; the stream ends with KeyboardInterrupt even where
    Ray's iterator swallowed it."""
    from ferkit.inference.video import stitch_ranges

    keys = ("input", "status", "faces", "worker", "seconds")
    per_actor: dict[str, dict] = summary["per_actor"]
    ranges: dict[str, dict] = {}
    redo: list[str] = []
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        if block.num_rows == 0:
            continue
        d = block.to_pydict()
        for w, sec, rng, path in zip(d["worker"], d["seconds"], d["range"], d["input"], strict=True):
            a = per_actor.setdefault(w, {"files": 0, "busy_s": 0.0})
            a["files"] += 1 / plan[path] if rng else 1  # a video range: its share of the video
            a["busy_s"] += sec
        images = [i for i, rng in enumerate(d["range"]) if not rng]
        if images:
            _write_part(
                out,
                schema,
                [row for i in images for row in json.loads(d["rows"][i])],
                {k: [d[k][i] for i in images] for k in keys},
                summary,
            )
        for i in (i for i, rng in enumerate(d["range"]) if rng):
            path = d["input"][i]
            got = ranges.setdefault(path, {})
            rng = pickle.loads(d["range"][i])
            got[rng.start] = (rng, d["worker"][i], d["seconds"][i])
            if len(got) < plan[path]:
                continue
            del ranges[path]
            result = stitch_ranges([g[0] for g in got.values()], smooth)
            if result is None:
                redo.append(path)
                continue
            _write_part(
                out,
                schema,
                part_rows(result, classes, attributes),
                {
                    "input": [path],
                    "status": [result.status],
                    "faces": [len(result.faces)],
                    "worker": [",".join(sorted({g[1] for g in got.values()}))],
                    "seconds": [sum(g[2] for g in got.values())],
                },
                summary,
            )
    if stop is not None and stop.is_set():  # Ctrl-C that Ray's iterator swallowed, ending the stream early
        raise KeyboardInterrupt
    return redo


def _finish_summary(summary: dict, secs: float, say) -> None:
    per_actor = summary["per_actor"]
    for a in per_actor.values():
        a["files"] = round(a["files"], 2) if a["files"] % 1 else int(a["files"])  # video ranges: shares of videos
        a["busy_s"] = round(a["busy_s"], 3)
        a["images_per_s"] = round(a["files"] / a["busy_s"], 2) if a["busy_s"] else 0.0
    summary.update(seconds=round(secs, 3), images_per_s=round(summary["files"] / secs, 2) if secs else 0.0)
    videos = (f"; videos in {summary['video_ranges']} frame ranges" if summary["video_ranges"] else "") + (
        f", {summary['redone']} analysed again whole" if summary["redone"] else ""
    )
    say(
        f"ferkit predict --engine ray: {summary['files']} inputs: {summary['ok']} ok ({summary['faces']} faces), "
        f"{summary['no_face']} without a face, {summary['errors']} failed; {summary['skipped']} already done; "
        f"{summary['images_per_s']} inputs/s over {len(per_actor)} actor{'s' * (len(per_actor) != 1)}{videos} "
        f"-> {summary['output']}"
    )
    for w, a in sorted(per_actor.items()):
        say(f"  {w}: {a['files']} inputs, {a['images_per_s']} inputs/s while busy")
