"""Enrolment, verification (1:1, ``--name``) and identification (1:N), and ``evaluate-verification``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, DataError
from ferkit.faces.io import IMAGE_SUFFIXES as IMAGE_EXTS  # the one suffix list
from ferkit.identity.gallery import Gallery, GalleryError, calibrate_threshold, default_gallery_path, validate_name
from ferkit.identity.metrics import pairwise_distances


def expand_photos(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted, recursive)."""
    out: list[Path] = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)
    return out


@dataclass
class EnrolReport:
    gallery: str
    name: str
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason)
    spoof_threshold: float | None = None  # anti-spoofing on: every enrolled face passed it
    spoof_scores: dict[str, float] = field(default_factory=dict)  # photo -> spoof score (P(real)), when on

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "gallery": self.gallery,
            "name": self.name,
            "added": self.added,
            "already_enrolled": self.already,
            "skipped": [{"photo": p, "reason": r} for p, r in self.skipped],
        }
        if self.spoof_threshold is not None:
            d["spoof_threshold"] = self.spoof_threshold
            d["spoof_scores"] = self.spoof_scores
        return d


def enroll(
    name: str,
    photos: Sequence[str | os.PathLike],
    gallery: str | os.PathLike | None = None,
    encoder=None,
    quiet: bool = True,
    spoof_threshold: float | None = None,
) -> EnrolReport:
    """Embed each photo's single face and store it under ``name`` (one transaction for the whole call).

    Photos with no face, several faces or that cannot be read are reported in ``skipped`` and not stored.
    Enrolling a photo already stored under ``name`` (same bytes) is a no-op reported in ``already``.
    Nothing is written when no photo could be used; a ConfigError says so. ``spoof_threshold`` (anti-spoofing,
    see :func:`ferkit.attributes.anti_spoof_threshold`): a face scoring below it is a DataError naming the photo,
    its score and the threshold, and nothing of the call is enrolled; the scores are in the report.
    """
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.utils import progress

    validate_name(name)
    spoof_threshold = anti_spoof_threshold(threshold=spoof_threshold)  # checked before any model loads
    files = expand_photos(photos)
    if not files:
        raise ConfigError("ferkit enroll: no photos given (pass image files or folders)")
    path = Path(gallery).expanduser() if gallery is not None else default_gallery_path()
    if path.exists():
        Gallery(path, create=True).close()  # before the slow part: a corrupt or read-only gallery fails fast
    enc = encoder or FaceEncoder()
    rep = EnrolReport(str(path), name, spoof_threshold=spoof_threshold)
    rows = []
    for f in progress(files, desc="enrol", unit="photo", quiet=quiet):
        try:
            r = enc.encode_file(f)
        except DataError as e:
            rep.skipped.append((str(f), str(e)))
            continue
        if len(r.faces) != 1:
            rep.skipped.append(
                (
                    str(f),
                    "no face found"
                    if not r.faces
                    else f"{len(r.faces)} faces found; an enrolment photo must show exactly one face",
                )
            )
            continue
        if spoof_threshold is not None:
            from ferkit.attributes import spoof_check

            v = spoof_check(_image(r), r.faces, spoof_threshold)[0]
            if v["spoof"]:
                raise DataError(
                    f"{f}: {v['spoof_reason']} (--anti-spoof): refused as a possible spoof; nothing was enrolled "
                    f"from this run (enrol a live photo, or lower --spoof-threshold)"
                )
            rep.spoof_scores[str(f.resolve())] = v["spoof_score"]
        rows.append(
            {
                "name": name,
                "sha256": r.sha256,
                "photo": str(f.resolve()),
                "embedder": enc.embedder.id,
                "vector": r.embeddings[0],
                "box": r.faces[0].box,
            }
        )
    if not rows:
        raise DataError(
            f"ferkit enroll: none of the {len(files)} photo(s) showed exactly one readable face; "
            f"nothing was enrolled ({rep.skipped[0][0]}: {rep.skipped[0][1]})"
        )
    with Gallery(path, create=True) as g:  # one transaction for the whole call
        for row, new in zip(rows, g.add(rows), strict=True):
            (rep.added if new else rep.already).append(row["photo"])
    return rep


def _image(r) -> np.ndarray:
    """The decoded photo of a :class:`~ferkit.identity.embedder.PhotoFaces` (decoded again if not kept)."""
    from ferkit.faces import load_image

    return r.image if r.image is not None else load_image(r.path)


class IdentityMatcher:
    """The gallery in memory: nearest identity of an embedding, with the gallery's threshold."""

    def __init__(self, names: Sequence[str], M: np.ndarray, threshold: float, calibration: dict | None = None):
        self.names = list(names)
        self.M = np.asarray(M, dtype=np.float32)
        self.threshold = float(threshold)
        self.calibration = calibration or {}

    @classmethod
    def from_gallery(
        cls,
        gallery: str | os.PathLike | Gallery | None = None,
        threshold: float | None = None,
        default_threshold: float = 0.6,
    ) -> IdentityMatcher:
        g = gallery if isinstance(gallery, Gallery) else Gallery(gallery, readonly=True)
        try:
            names, M, _ = g.embeddings()
            if not names:
                raise GalleryError(f"{g.path}: the gallery is empty; enrol someone first (ferkit enroll)")
        finally:
            if not isinstance(gallery, Gallery):
                g.close()
        cal = calibrate_threshold(names, M, default=default_threshold)
        if threshold is not None:
            if not (isinstance(threshold, (int, float)) and 0 < threshold < 4):
                raise ConfigError(f"--threshold {threshold!r}: give a distance > 0 (dlib's convention is 0.6)")
            cal = {**cal, "threshold": float(threshold), "method": "given (--threshold)"}
        return cls(names, M, cal["threshold"], cal)

    def identify(self, emb: np.ndarray, name: str | None = None) -> dict:
        """``{"identity": NAME or "unknown", "best": NAME, "distance", "threshold", "match"}`` for one vector.

        With ``name`` (1:1 verification) the distance is to that identity's closest photo and ``identity`` is
        ``name`` when it matches, else "unknown"; without it, to the closest photo of anybody (1:N).
        """
        D = pairwise_distances(np.asarray(emb)[None, :], self.M)[0]
        if name is not None:
            idx = [i for i, n in enumerate(self.names) if n == name]
            if not idx:
                raise ConfigError(
                    f"--name {name!r} is not in the gallery (enrolled: {', '.join(sorted(set(self.names)))})"
                )
            k = idx[int(np.argmin(D[idx]))]
        else:
            k = int(np.argmin(D))
        d = float(D[k])
        match = d <= self.threshold
        return {
            "identity": self.names[k] if match else "unknown",
            "best": self.names[k],
            "distance": round(d, 4),
            "threshold": round(self.threshold, 4),
            "match": bool(match),
        }


def verify(
    photos: Sequence[str | os.PathLike],
    gallery: str | os.PathLike | None = None,
    name: str | None = None,
    threshold: float | None = None,
    encoder=None,
    quiet: bool = True,
    spoof_threshold: float | None = None,
) -> list[dict]:
    """For every face in every photo: best match (or "unknown"), distance and threshold.

    One dict per face (``face`` index, ``box``), or one per photo with ``status`` "no_face" / "error".
    ``spoof_threshold`` (anti-spoofing): every face also gets ``spoof_score`` and ``spoof``; a face failing it
    is flagged, never matched: ``status`` "spoof", ``identity`` None, ``match`` False and ``reason``.
    """
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.utils import progress

    if name is not None:
        validate_name(name)
    spoof_threshold = anti_spoof_threshold(threshold=spoof_threshold)
    matcher = IdentityMatcher.from_gallery(gallery, threshold)
    files = expand_photos(photos)
    if not files:
        raise ConfigError("ferkit verify: no photos given (pass image files or folders)")
    enc = encoder or FaceEncoder()
    out: list[dict[str, Any]] = []
    for f in progress(files, desc="verify", unit="photo", quiet=quiet):
        try:
            r = enc.encode_file(f)
        except DataError as e:
            out.append({"photo": str(f), "status": "error", "error": str(e)})
            continue
        if not r.faces:
            out.append({"photo": str(f), "status": "no_face", "identity": None})
            continue
        checks: list[dict | None] = [None] * len(r.faces)
        if spoof_threshold is not None:
            from ferkit.attributes import spoof_check

            checks = list(spoof_check(_image(r), r.faces, spoof_threshold))
        for i, (face, emb, check) in enumerate(zip(r.faces, r.embeddings, checks, strict=True)):
            row = {"photo": str(f), "status": "ok", "face": i, "box": [round(v, 1) for v in face.box]}
            if check is not None and check["spoof"]:  # flagged, never a match: no name, no distance to read as one
                row.update(status="spoof", identity=None, match=False, threshold=round(matcher.threshold, 4))
                row.update(spoof_score=check["spoof_score"], spoof=True, reason=check["spoof_reason"])
            else:
                row.update(matcher.identify(emb, name))
                if check is not None:
                    row.update(spoof_score=check["spoof_score"], spoof=False)
            out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------------------
# evaluate-verification


def evaluate_verification(
    data: str | os.PathLike,
    out: str | os.PathLike = "verification_eval",
    threshold: float | None = None,
    encoder=None,
    quiet: bool = True,
) -> dict:
    """Embed every photo of ``data/<identity>/*``, score all genuine/impostor pairs, write the results.

    Writes ``metrics.json`` (ROC AUC, EER, TAR at FAR 1e-2 / 1e-3, rates at the threshold), ``roc.png``,
    ``distance_histogram.png``, ``pairs.csv``, ``skipped.csv`` and ``report.md`` into ``out``; returns metrics.
    Photos without exactly one face are skipped and listed.
    """
    from ferkit.identity.embedder import FaceEncoder
    from ferkit.identity.metrics import pair_distances, verification_metrics, verification_roc
    from ferkit.utils import atomic_write_json, atomic_write_text, check_output, progress

    check_output(out, "--out", folder=True)  # before any photo is embedded
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; evaluate-verification wants DATA/<identity>/<photos>")
    people = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    jobs = [(p.name, f) for p in people for f in expand_photos([p])]
    if len(people) < 2 or not jobs:
        raise DataError(
            f"{root}: needs at least two identity folders with photos (DATA/<identity>/<photos>), found {len(people)}"
        )
    enc = encoder or FaceEncoder()
    labels, vecs, paths, skipped = [], [], [], []
    for who, f in progress(jobs, desc="embed", unit="photo", quiet=quiet):
        try:
            r = enc.encode_file(f)
        except DataError as e:
            skipped.append((str(f), str(e)))
            continue
        if len(r.faces) != 1:
            skipped.append((str(f), "no face" if not r.faces else f"{len(r.faces)} faces"))
            continue
        labels.append(who)
        vecs.append(r.embeddings[0])
        paths.append(str(f))
    if not vecs:
        raise DataError(f"{root}: no photo with exactly one face; nothing to evaluate")
    M = np.stack(vecs)
    gen, imp = pair_distances(M, labels)
    if gen.size == 0 or imp.size == 0:
        raise DataError(
            f"{root}: needs at least one identity with two usable photos and two identities "
            f"(genuine pairs {gen.size}, impostor pairs {imp.size})"
        )
    thr = float(threshold) if threshold is not None else float(enc.embedder.default_threshold)
    m = verification_metrics(gen, imp, threshold=thr)
    m.update(
        {
            "data": str(root),
            "identities": len(set(labels)),
            "photos": len(labels),
            "skipped": len(skipped),
            "embedder": enc.embedder.id,
            "detector": getattr(enc.detector, "name", "?"),
        }
    )
    outd = Path(out)
    outd.mkdir(parents=True, exist_ok=True)
    roc = verification_roc(gen, imp)
    _plot_histogram(outd / "distance_histogram.png", gen, imp, thr, m["eer_threshold"])
    _plot_roc(outd / "roc.png", roc, m)
    D = pairwise_distances(M)
    lines = ["photo_a,photo_b,identity_a,identity_b,genuine,distance"]
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            lines.append(
                f"{_csv(paths[a])},{_csv(paths[b])},{_csv(labels[a])},{_csv(labels[b])},"
                f"{int(labels[a] == labels[b])},{D[a, b]:.5f}"
            )
    atomic_write_text(outd / "pairs.csv", "\n".join(lines) + "\n")
    atomic_write_text(outd / "skipped.csv", "photo,reason\n" + "".join(f"{_csv(p)},{_csv(r)}\n" for p, r in skipped))
    atomic_write_json(outd / "roc.json", {k: v.tolist() for k, v in roc.items()})
    atomic_write_json(outd / "metrics.json", _finite(m))
    atomic_write_text(outd / "report.md", _report(m))
    m["out"] = str(outd)
    return m


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def _finite(o):
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _fmt(v, d=4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _report(m: dict) -> str:
    rows = [
        f"# Face verification: {m['data']}",
        "",
        f"Embedder `{m['embedder']}`, detector `{m['detector']}`; {m['identities']} identities, "
        f"{m['photos']} photos "
        f"({m['skipped']} skipped, see skipped.csv); {m['genuine_pairs']} genuine and {m['impostor_pairs']} "
        f"impostor pairs.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| ROC AUC | {_fmt(m['roc_auc'])} |",
        f"| EER | {_fmt(m['eer'])} (threshold {_fmt(m['eer_threshold'])}) |",
    ]
    for k, t in m["tar_at_far"].items():
        note = "" if t["measurable"] else f" (needs >= {int(round(1 / float(k)))} impostor pairs)"
        rows.append(f"| TAR @ FAR {k} | {_fmt(t['tar'])}{note} |")
    a = m.get("at_threshold")
    if a:
        rows.append(
            f"| at threshold {_fmt(a['threshold'], 3)}: TAR / FAR / pair accuracy | {_fmt(a['tar'])} / "
            f"{_fmt(a['far'])} / {_fmt(a['pair_accuracy'])} |"
        )
    rows += [
        "",
        "![distances](distance_histogram.png) ![ROC](roc.png)",
        "",
        "A pair is accepted when its Euclidean embedding distance is <= the threshold.",
        "",
    ]
    return "\n".join(rows)


def _plot_histogram(path: Path, gen, imp, thr: float, eer_thr: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, max(1.2, float(np.max(np.concatenate([gen, imp]))) + 0.05), 40).tolist()
    ax.hist(imp, bins=bins, alpha=0.6, density=True, label=f"impostor ({len(imp)})", color="tab:red")
    ax.hist(gen, bins=bins, alpha=0.6, density=True, label=f"genuine ({len(gen)})", color="tab:green")
    ax.axvline(thr, color="k", ls="--", label=f"threshold {thr:.3f}")
    ax.axvline(eer_thr, color="tab:blue", ls=":", label=f"EER threshold {eer_thr:.3f}")
    ax.set_xlabel("embedding distance")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    import io

    from ferkit.utils import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _plot_roc(path: Path, roc: dict, m: dict) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ferkit.utils import atomic_write_bytes

    fig, ax = plt.subplots(figsize=(5, 4))
    far = np.clip(roc["far"], 1e-4, 1)
    ax.plot(far, roc["tar"], drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(f"ROC AUC {_fmt(m['roc_auc'], 3)}, EER {_fmt(m['eer'], 3)}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


class IdentityAssigner:
    """Names faces found by any detector: ``assign(image, faces)`` -> one identity dict per face.

    Used by ``ferkit predict --gallery`` and the webcam view to show identity next to the expression; each dict
    is ``{"name": NAME or "unknown", "distance", "threshold", "match"}``.
    """

    def __init__(
        self, gallery: str | os.PathLike | None = None, threshold: float | None = None, embedder: str = "dlib"
    ):
        from ferkit.identity.embedder import Embedder

        self.matcher = IdentityMatcher.from_gallery(gallery, threshold)
        self.embedder = Embedder.create(embedder)

    def assign(self, image: np.ndarray, faces: Sequence[Any]) -> list[dict]:
        if not faces:
            return []
        E = self.embedder.embed(image, faces)
        out = []
        for e in E:
            r = self.matcher.identify(e)
            out.append(
                {"name": r["identity"], "distance": r["distance"], "threshold": r["threshold"], "match": r["match"]}
            )
        return out
