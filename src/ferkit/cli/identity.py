"""The identity subcommands of ``ferkit``: enroll, verify, gallery, evaluate-verification, collect.

Each command parses, calls :mod:`ferkit.api` / :mod:`ferkit.identity` and formats.
"""

from __future__ import annotations

import json
import os
import sys

from ferkit import defaults
from ferkit.errors import ConfigError, printable
from ferkit.faces import available_backends

GALLERY_HELP = "gallery file (SQLite); default $FERKIT_GALLERY or ~/.local/share/ferkit/gallery.sqlite3"


def add_parsers(sub) -> None:
    from ferkit.cli.common import add_anti_spoof_options, add_command

    extra = "needs the identity extra: pip install 'ferkit[identity]'"
    en = add_command(
        sub,
        "enroll",
        "store face embeddings of a person in the identity gallery",
        f"""
  ferkit enroll --name alice alice1.jpg alice2.jpg
  ferkit enroll --name bob --gallery team.sqlite3 photos/bob/
{extra}""",
        cmd_enroll,
    )
    en.add_argument("photos", nargs="+", help="photos (or folders of photos) showing exactly one face each")
    en.add_argument("--name", required=True, help="identity name: letters, digits, space, . _ ' -")
    en.add_argument("--gallery", default=None, help=GALLERY_HELP)
    en.add_argument("--json", action="store_true", help="print the enrolment report as JSON")
    add_anti_spoof_options(en, "a face failing the threshold refuses the run (nothing enrolled)")

    ve = add_command(
        sub,
        "verify",
        "who is in these photos? best gallery match or 'unknown', distance, threshold",
        """
  ferkit verify door.jpg                 # 1:N: closest enrolled identity
  ferkit verify --name alice door.jpg    # 1:1: is it alice?
The threshold is calibrated from the enrolled photos (see `ferkit gallery list`).""",
        cmd_verify,
    )
    ve.add_argument("photos", nargs="+", help="photos or folders; every face in them is matched")
    ve.add_argument("--name", default=None, help="verify against this identity only (1:1)")
    ve.add_argument("--gallery", default=None, help=GALLERY_HELP)
    ve.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="accept when distance <= this (default: calibrated, at most dlib's 0.6)",
    )
    ve.add_argument("--json", action="store_true", help="JSON lines, one per face")
    add_anti_spoof_options(ve, "a face failing the threshold is flagged (status spoof) and never matched")

    ga = add_command(
        sub,
        "gallery",
        "identity gallery: list, remove NAME",
        """
  ferkit gallery list
  ferkit gallery remove alice""",
        cmd_gallery,
    )
    gsub = ga.add_subparsers(dest="gallery_command", metavar="ACTION")
    gl = add_command(
        gsub,
        "list",
        "enrolled identities, photo counts, the calibrated threshold",
        """
  ferkit gallery list --gallery team.sqlite3 --json""",
    )
    gl.add_argument("--gallery", default=None, help=GALLERY_HELP)
    gl.add_argument("--json", action="store_true", help="machine-readable output")
    gr = add_command(
        gsub,
        "remove",
        "delete every embedding of NAME",
        """
  ferkit gallery remove alice --gallery team.sqlite3""",
    )
    gr.add_argument("name", help="the identity to delete")
    gr.add_argument("--gallery", default=None, help=GALLERY_HELP)

    ev = add_command(
        sub,
        "evaluate-verification",
        "genuine/impostor pairs of DATA/<identity>/<photos>: ROC, EER, TAR@FAR, histogram, report",
        """
  ferkit evaluate-verification --data lfw_subset/ --out runs/verif""",
        cmd_evaluate_verification,
    )
    ev.add_argument("--data", required=True, help="a folder per identity, photos inside")
    ev.add_argument("--out", default="verification_eval", help="output folder (default verification_eval)")
    ev.add_argument("--threshold", type=float, default=None, help="also report rates at this threshold (default 0.6)")

    co = add_command(
        sub,
        "collect",
        "capture face crops from a camera into OUT/LABEL/ for the 'is it me?' classifier",
        """
  ferkit collect --webcam 0 --label me --count 50 --out data/me_vs_not/train
  ferkit collect --webcam clip.mp4 --label not_me --count 20 --out data/x/train""",
        cmd_collect,
    )
    co.add_argument("--webcam", required=True, help="camera index (0, 1, ...) or a video file")
    co.add_argument("--label", required=True, help="class folder to write into, e.g. me or not_me")
    co.add_argument("--count", type=int, default=50, help="crops to save (default 50)")
    co.add_argument("--out", default="collected", help="dataset folder; crops go to OUT/LABEL/ (default collected)")
    co.add_argument("--interval", type=float, default=0.5, help="least seconds between two saved crops (default 0.5)")
    co.add_argument("--no-preview", dest="preview", action="store_false", help="never open a preview window")
    for p in (en, ve, ev, co):
        p.add_argument(
            "--detector",
            default=defaults.DETECTOR,
            help=f"face detector: {', '.join(available_backends())} (default {defaults.DETECTOR})",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")


def _gallery_arg(a):
    return a.gallery


def cmd_enroll(a) -> int:
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.identity.gallery import Gallery, default_gallery_path, validate_name
    from ferkit.identity.verify import enroll

    validate_name(a.name)
    spoof = anti_spoof_threshold(a.anti_spoof, a.spoof_threshold)
    path = a.gallery or default_gallery_path()
    if os.path.exists(path):
        Gallery(path, create=True).close()  # a corrupt or read-only gallery fails before the models load
    rep = enroll(
        a.name,
        a.photos,
        gallery=path,
        encoder=FaceEncoder(detector=a.detector),
        quiet=a.quiet,
        spoof_threshold=spoof,
    )
    for p, why in rep.skipped:
        print(printable(f"skipped {p}: {why}"), file=sys.stderr)  # a file name cannot rewrite the terminal
    if a.json:
        print(json.dumps(rep.to_dict(), indent=2))
    print(
        f"enrolled {len(rep.added)} new photo(s) of {rep.name} into {rep.gallery}"
        + (f"; {len(rep.already)} already there" if rep.already else "")
        + (f"; {len(rep.skipped)} skipped" if rep.skipped else "")
        + (
            f"; spoof scores {', '.join(f'{v:.4f}' for v in rep.spoof_scores.values())} >= {spoof:g}"
            if spoof is not None and rep.spoof_scores
            else ""
        ),
        file=sys.stderr,
    )
    return 0


def cmd_verify(a) -> int:
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.identity.verify import IdentityMatcher, _csv, verify

    spoof = anti_spoof_threshold(a.anti_spoof, a.spoof_threshold)
    IdentityMatcher.from_gallery(a.gallery, a.threshold)  # gallery problems before the models load
    rows = verify(
        a.photos,
        gallery=a.gallery,
        name=a.name,
        threshold=a.threshold,
        encoder=FaceEncoder(detector=a.detector),
        quiet=a.quiet,
        spoof_threshold=spoof,
    )
    if a.json:
        for r in rows:
            print(json.dumps(r))
    else:
        spoof_cols = ("spoof_score", "spoof", "reason") if spoof is not None else ()
        print(",".join(("photo", "face", "identity", "distance", "threshold", "status", *spoof_cols)))
        for r in rows:
            print(
                ",".join(
                    _csv(str(x))
                    for x in (
                        r["photo"],
                        r.get("face", ""),
                        r.get("identity") or "",
                        r.get("distance", ""),
                        r.get("threshold", ""),
                        r["status"],
                        *(("" if r.get(c) is None else r[c]) for c in spoof_cols),
                    )
                )
            )
    bad = [r for r in rows if r["status"] == "error"]
    for r in bad:
        print(printable(f"error: {r['error']}"), file=sys.stderr)
    return 2 if bad else 0


def cmd_gallery(a) -> int:
    from ferkit.identity.gallery import Gallery, calibrate_threshold

    if a.gallery_command == "list":
        with Gallery(a.gallery, readonly=True) as g:
            rows = g.summary()
            names, M, _ = g.embeddings()
            cal = calibrate_threshold(names, M) if names else None
            path = str(g.path)
        if a.json:
            print(json.dumps({"gallery": path, "identities": rows, "threshold": cal}, indent=2))
            return 0
        print(f"gallery {path}: {len(rows)} identities, {sum(r['photos'] for r in rows)} photos")
        for r in rows:
            print(f"  {r['name']:<32} {r['photos']:>4} photo(s)  [{r['embedder']}]")
        if cal:
            print(
                f"threshold {cal['threshold']:.3f}: {cal['method']} "
                f"({cal['genuine_pairs']} genuine / {cal['impostor_pairs']} impostor pairs)"
            )
        return 0
    if a.gallery_command == "remove":
        with Gallery(a.gallery) as g:
            n = g.remove(a.name)
            print(f"removed {a.name} ({n} photo(s)) from {g.path}", file=sys.stderr)
        return 0
    raise ConfigError("ferkit gallery: say what to do: list or remove NAME (see ferkit gallery --help)")


def cmd_evaluate_verification(a) -> int:
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.identity.verify import _fmt, evaluate_verification

    m = evaluate_verification(
        a.data, out=a.out, threshold=a.threshold, encoder=FaceEncoder(detector=a.detector), quiet=a.quiet
    )
    if not a.quiet:
        t2, t3 = m["tar_at_far"]["0.01"], m["tar_at_far"]["0.001"]
        print(
            f"{m['identities']} identities, {m['photos']} photos, {m['genuine_pairs']} genuine / "
            f"{m['impostor_pairs']} impostor pairs: ROC AUC {_fmt(m['roc_auc'])}, EER {_fmt(m['eer'])} "
            f"(threshold {_fmt(m['eer_threshold'], 3)}), TAR@FAR1e-2 {_fmt(t2['tar'])}, "
            f"TAR@FAR1e-3 {_fmt(t3['tar'])}"
        )
    print(f"report: {m['out']}/report.md")
    return 0


def cmd_collect(a) -> int:
    from ferkit.identity.capture import collect

    rep = collect(
        a.webcam, a.label, count=a.count, out=a.out, interval=a.interval, detector=a.detector, preview=a.preview
    )
    return 0 if rep.saved else 2
