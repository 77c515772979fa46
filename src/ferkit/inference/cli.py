"""``ferkit predict``: images, folders, videos and webcams -> one result per input (JSON lines or CSV).

Statuses: ``ok``; ``no_face`` (read fine, no face found: reported, not a failure); ``error`` (unreadable,
truncated, not an image/video: a failure). Exit code 0 when nothing failed, 2 when any input failed.
Images are processed first (batched, decoded in the background), then videos, each in the given order.
Per-file status lines and a one-line summary go to stderr; results to stdout or ``--output``.
Video extras (per-second CSV ``<stem>.per_second.csv``, plot ``<stem>.emotions.png``, annotated
``<stem>.annotated.mp4``) are written to ``--annotate DIR``; without it, the CSV and plot go beside
``--output`` when given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ferkit.errors import ConfigError, DataError
from ferkit.schema import FileResult, csv_header, csv_rows


def _writer(a, classes):
    import csv

    fh = open(a.output, "w", newline="") if a.output else sys.stdout
    if a.format == "csv":
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(csv_header(classes))

        def emit(r: FileResult):
            w.writerows(csv_rows(r, classes))
            fh.flush()
    else:
        def emit(r: FileResult):
            fh.write(json.dumps(r.to_dict()) + "\n")
            fh.flush()
    return fh, emit


def run_predict(a) -> int:
    import torch

    from ferkit.inference.pipeline import Analyzer, expand_inputs, is_video

    if not a.inputs and a.webcam is None:
        raise ConfigError("ferkit predict: give image/video files or folders, or --webcam N")
    if a.batch_size < 1:
        raise ConfigError(f"--batch-size {a.batch_size}: give an integer >= 1")
    if a.stride < 1:
        raise ConfigError(f"--stride {a.stride}: give an integer >= 1")
    if a.smooth is not None and not (0 < a.smooth <= 1):
        raise ConfigError(f"--smooth {a.smooth}: give ALPHA in (0, 1]")
    if a.webcam is not None:  # fail fast, before loading models
        from ferkit.inference.video import open_capture

        open_capture(int(a.webcam)).release()
    paths = expand_inputs(a.inputs)
    if a.inputs and not paths:
        raise ConfigError(f"no image or video files found in {' '.join(a.inputs)}")
    models = a.ensemble or [a.checkpoint or a.model or "fer_minixception"]
    ident = None
    if getattr(a, "gallery", None):  # identity next to expression (ferkit.identity)
        from ferkit.identity.verify import IdentityAssigner

        ident = IdentityAssigner(a.gallery, getattr(a, "threshold", None))
    an = Analyzer(models, detector=a.detector, device=a.device, backend=a.backend, batch_size=a.batch_size,
                  detect=not a.no_detect, crop=a.crop, identity=ident,
                  det_size=a.det_size)
    say = (lambda *x: None) if a.quiet else (lambda *x: print(*x, file=sys.stderr))
    ann = Path(a.annotate) if a.annotate else None
    if ann:
        ann.mkdir(parents=True, exist_ok=True)
    extras_dir = ann or (Path(a.output).parent if a.output else None)
    counts = {"ok": 0, "no_face": 0, "error": 0}
    n_faces = n_down = 0
    fh, emit = _writer(a, an.classes)

    def record(r: FileResult):
        nonlocal n_faces, n_down
        counts[r.status] += 1
        n_faces += len(r.faces)
        n_down += r.downscaled
        emit(r)
        what = f"{len(r.faces)} face{'s' * (len(r.faces) != 1)}" if r.status != "error" else ""
        say(f"{r.status:8s} {r.path}" + (f"  {what}" if what else "") + (f"  ({r.reason})" if r.reason else ""))

    try:
        images = [p for p in paths if not is_video(p)]
        videos = [p for p in paths if is_video(p)]
        for r, img in an.analyze_paths(images, return_images=True):
            record(r)
            if ann and img is not None and r.faces:
                import cv2

                from ferkit.inference.video import annotate

                out = ann / f"{Path(r.path).stem}.annotated.jpg"
                cv2.imwrite(str(out), annotate(img, r.faces))
        from ferkit.inference.video import analyze_video

        for v in videos:
            stem = Path(v).stem
            try:
                r = analyze_video(an, str(v), stride=a.stride, smooth=a.smooth, annotate_dir=ann,
                                  per_second_csv=extras_dir / f"{stem}.per_second.csv" if extras_dir else None,
                                  plot=extras_dir / f"{stem}.emotions.png" if extras_dir else None,
                                  max_frames=a.max_frames)
            except DataError as e:
                r = FileResult(path=str(v), kind="video", status="error", reason=str(e))
            record(r)
        if a.webcam is not None:
            def live(faces):
                if faces:
                    emit(FileResult(path=f"webcam:{a.webcam}", kind="webcam", faces=faces, frames=1))

            r = analyze_video(an, int(a.webcam), stride=a.stride, smooth=a.smooth, annotate_dir=ann, show=True,
                              max_frames=a.max_frames, on_frame=live,
                              per_second_csv=extras_dir / "webcam.per_second.csv" if extras_dir else None,
                              plot=extras_dir / "webcam.emotions.png" if extras_dir else None)
            counts[r.status] += 1
            n_faces += len(r.faces)
    finally:
        if fh is not sys.stdout:
            fh.close()
    total = sum(counts.values())
    print(f"ferkit predict: {total} input{'s' * (total != 1)}: {counts['ok']} ok ({n_faces} faces), "
          f"{counts['no_face']} without a face, {counts['error']} failed"
          + (f", {n_down} downscaled for detection" if n_down else "")
          + f" [{'+'.join(map(str, models))}, {a.detector if not a.no_detect else 'no detection'}, "
            f"{a.backend}, {torch.get_num_threads()} threads]", file=sys.stderr)
    return 2 if counts["error"] else 0
