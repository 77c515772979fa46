"""The Python API; the CLI is a thin layer over these functions.

    import ferkit
    ds = ferkit.load_dataset("fer2013.csv")
    res = ferkit.train(data="fer2013.csv", model="seed1_cnn", epochs=5, out="runs/cnn")
    model, ckpt = ferkit.load_model(res.best_checkpoint)
    preds = ferkit.predict(res.best_checkpoint, ["face.png"])
"""

from __future__ import annotations

from pathlib import Path

from ferkit.checkpoint import describe, load_checkpoint, load_model
from ferkit.training.config import TrainConfig, list_recipes, load_recipe
from ferkit.training.trainer import TrainResult, Trainer


def make_config(recipe: str | None = None, **settings) -> TrainConfig:
    """Defaults, then the recipe's settings, then ``settings`` (``None`` values leave a setting alone)."""
    base = TrainConfig()
    if recipe:
        base = base.merged(load_recipe(recipe))
    return base.merged(settings)


def train(recipe: str | None = None, dataset=None, callbacks=None, **settings) -> TrainResult:
    """Train a model; see :class:`ferkit.training.config.TrainConfig` for every setting.

    ``dataset`` may be an already-loaded :class:`~ferkit.data.base.FaceDataset` (then ``data`` is not needed).
    """
    return Trainer(make_config(recipe, **settings), dataset=dataset, callbacks=callbacks).fit()


def freeze_sweep(recipe: str | None = None, dataset=None, depths=None, **settings) -> list[dict]:
    """One run per frozen depth (source 002); returns the table rows."""
    from ferkit.training.sweep import freeze_sweep as _sweep

    return _sweep(make_config(recipe, **settings), dataset=dataset, depths=depths)


def load_dataset(path, **kwargs):
    from ferkit.data import load_dataset as _load

    return _load(path, **kwargs)


def inspect_dataset(path, **kwargs) -> dict:
    from ferkit.data import inspect_dataset as _inspect

    return _inspect(path, **kwargs)


def synthesize(out, n: int = 3000, seed: int = 0, **kwargs) -> Path:
    """Write a synthetic face dataset (never real accuracy) to ``out``; see :func:`ferkit.data.synth.write`."""
    from ferkit.data.synth import write

    return write(out, n=n, seed=seed, **kwargs)


def predict(checkpoint, inputs, batch_size: int = 64, device: str = "cpu") -> list:
    """Classify face-crop images (files or folders) with a checkpoint: one ImagePrediction per file."""
    from ferkit.inference.images import predict_images

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return predict_images(checkpoint, [str(i) for i in inputs], batch_size=batch_size, device=device)


def analyze(image, model="fer_minixception", detector: str = "retinaface", device: str = "cpu", **kwargs) -> list:
    """Every face in ``image`` (a path, an RGB uint8 array or a PIL image) with its expression: a list of
    :class:`~ferkit.schema.FaceResult` (box, landmarks, label, probabilities, ...; ``to_dict()``).

    ``model``: zoo name, checkpoint path, exported ``.onnx`` file, or a list of them (an ensemble over the
    common vocabulary). ``detector``: retinaface, mtcnn or haar. Other keyword arguments go to
    :class:`~ferkit.inference.pipeline.Analyzer` (``backend``, ``crop``, ``batch_size``, ``detect``). The
    analyzer is built once per argument set and reused; build an ``Analyzer`` yourself for batches of files
    (``Analyzer.analyze_paths``).
    """
    from ferkit.inference.pipeline import analyze as _analyze

    return _analyze(image, model=model, detector=detector, device=device, **kwargs)


def export(model, out=None, format: str = "onnx", int8: bool = False):
    """Export a checkpoint or zoo model to a self-describing ONNX file; returns its path."""
    from ferkit.errors import ConfigError
    from ferkit.inference.onnx import export_onnx

    if format != "onnx":
        raise ConfigError(f"export format {format!r}: only onnx is supported")
    return export_onnx(model, out, int8=int8)


def evaluate(checkpoint, data=None, split: str = "test", out=None, tta: str = "none", class_map: bool = False,
             dataset=None, **kwargs):
    """Evaluate a checkpoint on a dataset split: metrics.json, predictions.csv, plots and report.html in ``out``
    (default ``<checkpoint folder>/eval_<split>``); returns an :class:`~ferkit.evaluation.evaluator.EvalResult`.

    ``tta``: none, flip or tencrop. ``class_map``: evaluate on the classes shared with the dataset when the class
    sets differ. Other keyword arguments: ``format``, ``mapping``, ``batch_size``, ``device``, ``tensorboard``,
    ``wandb``, ``wandb_project``, ``quiet``.
    """
    from ferkit.evaluation.evaluator import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, data, split=split, out=out, tta=tta, class_map=class_map, dataset=dataset,
                               **kwargs)


def compare(paths, out="compare", quiet: bool = False) -> dict:
    """Key metrics of run folders (results.json) and/or evaluation folders (metrics.json) side by side; writes
    compare.csv/.md/.json/.png/.html into ``out`` and flags metrics that are not comparable across class sets."""
    from ferkit.evaluation.compare import compare_runs

    if isinstance(paths, (str, Path)):
        paths = [paths]
    return compare_runs(list(paths), out=out, quiet=quiet)


def experiment_permute(data=None, dataset=None, model: str = "fashion_cnn", epochs: int | None = None, mapping=None,
                       out="runs/permute", **settings) -> dict:
    """Source 002's pixel-permutation experiment: train with and without a fixed pixel permutation, report both
    test accuracies and the difference (see :mod:`ferkit.experiments`)."""
    from ferkit.experiments import permute_experiment

    return permute_experiment(data=data, dataset=dataset, model=model, epochs=epochs, mapping=mapping, out=out,
                              **settings)


def list_models():
    from ferkit.models import list_models as _list

    return _list()


def enroll(name: str, photos, gallery=None, quiet: bool = True):
    """Store the embedding of each photo's single face under ``name`` in the SQLite gallery (identity extra);
    returns an :class:`~ferkit.identity.verify.EnrolReport` (added / already enrolled / skipped with reasons)."""
    from ferkit.identity.verify import enroll as _enroll

    return _enroll(name, [photos] if isinstance(photos, (str, Path)) else photos, gallery=gallery, quiet=quiet)


def verify(photos, gallery=None, name: str | None = None, threshold: float | None = None, quiet: bool = True) -> list:
    """Best gallery match (or "unknown"), distance and threshold for every face in the photos; with ``name``,
    1:1 verification against that identity (see :mod:`ferkit.identity`)."""
    from ferkit.identity.verify import verify as _verify

    return _verify([photos] if isinstance(photos, (str, Path)) else photos, gallery=gallery, name=name,
                   threshold=threshold, quiet=quiet)


def gallery_list(gallery=None) -> list[dict]:
    """Enrolled identities: name, photo count, embedder, first/last enrolment time."""
    from ferkit.identity.gallery import Gallery

    with Gallery(gallery) as g:
        return g.summary()


def gallery_remove(name: str, gallery=None) -> int:
    """Delete every embedding of ``name``; returns how many rows went."""
    from ferkit.identity.gallery import Gallery

    with Gallery(gallery) as g:
        return g.remove(name)


def evaluate_verification(data, out="verification_eval", threshold: float | None = None, quiet: bool = True) -> dict:
    """Genuine/impostor pairs of ``data/<identity>/<photos>``: ROC AUC, EER, TAR at FAR 1e-2 / 1e-3, a distance
    histogram, ROC plot and report.md in ``out``."""
    from ferkit.identity.verify import evaluate_verification as _ev

    return _ev(data, out=out, threshold=threshold, quiet=quiet)


def collect(webcam, label: str, count: int = 50, out="collected", **kwargs):
    """Capture one-face crops from camera ``webcam`` (or a video file) into ``out/label/`` (source 000)."""
    from ferkit.identity.capture import collect as _collect

    return _collect(webcam, label, count=count, out=out, **kwargs)


def fetch_dataset(name: str, root=None, force: bool = False):
    """Download (or find already placed) a public dataset into ``root`` (default ``$FERKIT_DATA_DIR``); returns
    the path to give ``ferkit train --data``. See :mod:`ferkit.data.fetch` for the names."""
    from ferkit.data.fetch import fetch_dataset as _fetch

    return _fetch(name, root=root, force=force)


__all__ = ["TrainConfig", "TrainResult", "analyze", "collect", "compare", "describe", "enroll", "evaluate",
           "evaluate_verification", "experiment_permute", "export", "fetch_dataset", "freeze_sweep",
           "gallery_list", "gallery_remove", "inspect_dataset", "list_models", "list_recipes", "load_checkpoint",
           "load_dataset", "load_model", "make_config", "predict", "synthesize", "train", "verify"]
