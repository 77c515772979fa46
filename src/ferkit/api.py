"""The Python API; the CLI is a thin layer over these functions.

import ferkit
ds = ferkit.load_dataset("fer2013.csv")
res = ferkit.train(data="fer2013.csv", model="seed1_cnn", epochs=5, out="runs/cnn")
model, ckpt = ferkit.load_model(res.best_checkpoint)
results = ferkit.predict(res.best_checkpoint, ["face.png"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferkit import defaults
from ferkit.inference.ray_engine import DEFAULT_BATCH_SIZE, DEFAULT_FRAMES_PER_TASK
from ferkit.inference.settings import AnalyzerSettings, VideoOptions
from ferkit.refs import load_checkpoint, load_model

if TYPE_CHECKING:  # the lazy re-exports below, as linters and type checkers see them
    from ferkit.checkpoint import describe
    from ferkit.training.config import TrainConfig, list_recipes, make_config
    from ferkit.training.trainer import TrainResult

# Names this module re-exports from modules that import torch: loaded on first use, so that predicting with
# models on ONNX Runtime never imports torch (start-up ~1.3 s less).
_REEXPORTS = {
    "describe": "ferkit.checkpoint",
    "TrainConfig": "ferkit.training.config",
    "list_recipes": "ferkit.training.config",
    "make_config": "ferkit.training.config",
    "TrainResult": "ferkit.training.trainer",
}


def __getattr__(name: str):
    if name in _REEXPORTS:
        import importlib

        value = getattr(importlib.import_module(_REEXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(recipe: str | None = None, dataset=None, callbacks=None, **settings) -> TrainResult:
    """Train a model; see :class:`ferkit.training.config.TrainConfig` for every setting.

    ``dataset`` may be an already-loaded :class:`~ferkit.data.base.FaceDataset` (then ``data`` is not needed).
    """
    from ferkit.training.config import make_config
    from ferkit.utils import require_torch

    cfg = make_config(recipe, **settings)  # names, values and the data path checked before torch loads
    if dataset is None and cfg.data:
        from ferkit.data.loading import check_dataset_path

        check_dataset_path(cfg.data, cfg.format)
    require_torch("training")
    from ferkit.training.trainer import Trainer

    return Trainer(cfg, dataset=dataset, callbacks=callbacks).fit()


def freeze_sweep(recipe: str | None = None, dataset=None, depths=None, **settings) -> list[dict]:
    """One run per frozen depth (source 002); returns the table rows."""
    from ferkit.training.config import make_config
    from ferkit.utils import require_torch

    cfg = make_config(recipe, **settings)
    require_torch("the freeze sweep")
    from ferkit.training.sweep import freeze_sweep as _sweep

    return _sweep(cfg, dataset=dataset, depths=depths)


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


_SETTINGS_DOC = """``settings``: an :class:`~ferkit.inference.settings.AnalyzerSettings` (default:
    :mod:`ferkit.defaults`, the CLI's and the server's); ``model`` and the keyword arguments named like its
    fields (``detect``, ``detector``, ``det_size``, ``crop``, ``backend``, ``batch_size``, ``device``,
    ``gallery``, ``workers``) are laid over it. ``fast=True``: the fast mode (``--fast``,
    :data:`ferkit.defaults.FAST`) under them, so ``model`` and the keyword arguments still win."""


def predict(
    model=None,
    inputs=(),
    *,
    settings: AnalyzerSettings | None = None,
    annotate=None,
    stride: int = defaults.STRIDE,
    smooth: float | None = defaults.SMOOTH,
    max_frames: int | None = defaults.MAX_FRAMES,
    detect_every: int = defaults.DETECT_EVERY,
    **knobs,
):
    """Every face in every input (image/video files or folders, searched recursively) with its expression:
    a :class:`~ferkit.schema.Results` list of :class:`~ferkit.schema.FileResult` (``.faces``, ``.to_dict()``,
    ``.to_pandas()``), exactly what ``ferkit predict`` writes.

    ``model``: checkpoint file, run folder, zoo name, ``.onnx`` file, or a list of them (an ensemble).
    ``detect=False``: each input is already a face crop (one whole-image face per file). Unreadable inputs are
    results with ``status="error"`` and a reason, never exceptions. :func:`iter_predict` yields the same results
    one by one. {settings}

    Videos: ``stride`` (analyse every N-th frame), ``detect_every`` (the detector on every N-th analysed frame,
    faces followed in between), ``smooth`` (ALPHA of each track's EMA of probabilities, age and gender),
    ``max_frames``: the CLI's ``--stride``, ``--detect-every``, ``--smooth``, ``--max-frames``, built into one
    :class:`~ferkit.inference.settings.VideoOptions` (checked before any input is read)."""
    from ferkit.schema import Results

    return Results(
        iter_predict(
            model,
            inputs,
            settings=settings,
            annotate=annotate,
            stride=stride,
            smooth=smooth,
            max_frames=max_frames,
            detect_every=detect_every,
            **knobs,
        )
    )


def _video_options(video: VideoOptions | None, **given: Any) -> VideoOptions:
    """The run's one :class:`VideoOptions`: the ``video`` record, or the four video keyword arguments (both at
    once is one ConfigError line)."""
    from ferkit.errors import ConfigError

    options = VideoOptions(**given)
    if video is not None and options != VideoOptions():
        raise ConfigError("give the video options either as video=VideoOptions(...) or as keyword arguments")
    return video or options


def iter_predict(
    model=None,
    inputs=(),
    *,
    settings: AnalyzerSettings | None = None,
    annotate=None,
    stride: int = defaults.STRIDE,
    smooth: float | None = defaults.SMOOTH,
    max_frames: int | None = defaults.MAX_FRAMES,
    extras_dir=None,
    detect_every: int = defaults.DETECT_EVERY,
    video: VideoOptions | None = None,
    **knobs,
):
    """:func:`predict` as a generator: one :class:`~ferkit.schema.FileResult` per input as soon as it is done
    (what the CLI streams). ``extras_dir``: where videos' per-second CSV and emotion plot go (default
    ``annotate``). ``video``: a ready :class:`~ferkit.inference.settings.VideoOptions` (the CLI's), in place of
    the four video keyword arguments."""
    from ferkit.errors import ConfigError
    from ferkit.inference.pipeline import expand_inputs, predict_files

    settings = AnalyzerSettings.of(settings, model, **knobs)  # checked before any input is listed
    video = _video_options(video, stride=stride, detect_every=detect_every, smooth=smooth, max_frames=max_frames)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths = expand_inputs(inputs)
    if inputs and not paths:
        raise ConfigError(f"no image or video files found in {' '.join(map(str, inputs))[:200]}")
    an = analyzer(settings=settings)
    yield from predict_files(
        an,
        paths,
        annotate=annotate,
        video=video,
        extras_dir=extras_dir,
    )


def predict_dataset(
    sources,
    output,
    model=None,
    *,
    settings: AnalyzerSettings | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    ray_address: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    stride: int = defaults.STRIDE,
    frames_per_task: int | None = DEFAULT_FRAMES_PER_TASK,
    smooth: float | None = defaults.SMOOTH,
    max_frames: int | None = defaults.MAX_FRAMES,
    detect_every: int = defaults.DETECT_EVERY,
    video: VideoOptions | None = None,
    **knobs,
) -> dict:
    """:func:`predict` on a Ray cluster (``pip install 'ferkit[ray]'``): every image and video under ``sources``
    (folders, list files, ``s3://`` / ``gs://`` / ``hdfs://`` URIs) into Parquet parts under ``output`` with the
    CSV's columns, resumable (finished inputs are skipped on a re-run). Same models, defaults and results as
    ``ferkit predict``; a video longer than ``frames_per_task`` frames spreads over actors in ranges of that
    many frames (0 or None: one actor per video; the rows are the same). The video options (``stride``,
    ``detect_every``, ``smooth``, ``max_frames``, or ``video=``) as :func:`predict`'s, with the same rows.
    ``batch_size`` here: images per actor
    call (the analyzer's faces per forward is ``settings.batch_size``). Returns a summary (files, faces, errors,
    images/s, per-actor rates). See :mod:`ferkit.inference.ray_engine`. {settings}"""
    from ferkit.inference.ray_engine import predict_dataset as _run

    return _run(
        sources,
        output,
        AnalyzerSettings.of(settings, model, **knobs),
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        batch_size=batch_size,
        ray_address=ray_address,
        overwrite=overwrite,
        quiet=quiet,
        video=_video_options(video, stride=stride, detect_every=detect_every, smooth=smooth, max_frames=max_frames),
        frames_per_task=frames_per_task,
    )


def analyzer(model=None, *, settings: AnalyzerSettings | None = None, **knobs):
    """The :class:`~ferkit.inference.pipeline.Analyzer` (detector + classifiers) for these settings, built once
    per process (the last few settings stay built) and reused by :func:`predict`, :func:`iter_predict` and
    :func:`analyze`. {settings}"""
    from ferkit.inference.pipeline import cached_analyzer

    return cached_analyzer(AnalyzerSettings.of(settings, model, **knobs))


def analyze(image, model=None, *, settings: AnalyzerSettings | None = None, **knobs):
    """Every face in one image (a path, an RGB uint8 array or a PIL image) with its expression: a
    :class:`~ferkit.schema.FileResult` (``.faces``: box, landmarks, label, probabilities, ...; ``to_dict()``).
    Same models and defaults as :func:`predict`; the analyzer is built once per settings and reused. An
    unreadable path raises :class:`~ferkit.errors.DataError`. {settings}"""
    return analyzer(model, settings=settings, **knobs).analyze(image)


for _f in (predict, predict_dataset, analyzer, analyze):
    _f.__doc__ = (_f.__doc__ or "").replace("{settings}", _SETTINGS_DOC)


def export(model, out=None, format: str = "onnx", int8: bool = False, int8_ops=("MatMul", "Gemm")):
    """Export a checkpoint, run folder or zoo model to a self-describing ONNX file (default: beside the
    checkpoint, mode 0644); returns its path."""
    from ferkit.errors import ConfigError
    from ferkit.utils import require_torch

    if format != "onnx":
        raise ConfigError(f"export format {format!r}: only onnx is supported")
    require_torch("exporting to ONNX")
    from ferkit.inference.onnx import export_onnx

    return export_onnx(model, out, int8=int8, int8_ops=tuple(int8_ops))


def evaluate(
    checkpoint,
    data=None,
    split: str = "test",
    out=None,
    tta: str = "none",
    class_map: bool = False,
    dataset=None,
    **kwargs,
):
    """Evaluate a checkpoint on a dataset split: metrics.json, predictions.csv, plots and report.html in ``out``
    (default ``<checkpoint folder>/eval_<split>``); returns an :class:`~ferkit.evaluation.evaluator.EvalResult`.

    ``tta``: none, flip or tencrop. ``class_map``: evaluate on the classes shared with the dataset when the class
    sets differ. Other keyword arguments: ``format``, ``mapping``, ``batch_size``, ``device``, ``tensorboard``,
    ``wandb``, ``wandb_project``, ``quiet``.
    """
    from ferkit.refs import resolve
    from ferkit.utils import require_torch

    resolve(checkpoint)  # the model reference and the data path checked before torch loads
    if dataset is None and data is not None:
        from ferkit.data.loading import check_dataset_path

        check_dataset_path(data, kwargs.get("format"))
    require_torch("evaluation")
    from ferkit.evaluation.evaluator import evaluate_checkpoint

    return evaluate_checkpoint(
        checkpoint, data, split=split, out=out, tta=tta, class_map=class_map, dataset=dataset, **kwargs
    )


def compare(paths, out="compare", quiet: bool = False) -> dict:
    """Key metrics of run folders (results.json) and/or evaluation folders (metrics.json) side by side; writes
    compare.csv/.md/.json/.png/.html into ``out`` and flags metrics that are not comparable across class sets."""
    from ferkit.evaluation.compare import compare_runs

    if isinstance(paths, (str, Path)):
        paths = [paths]
    return compare_runs(list(paths), out=out, quiet=quiet)


def experiment_permute(
    data=None,
    dataset=None,
    model: str = "fashion_cnn",
    epochs: int | None = None,
    mapping=None,
    out="runs/permute",
    **settings,
) -> dict:
    """Source 002's pixel-permutation experiment: train with and without a fixed pixel permutation, report both
    test accuracies and the difference (see :mod:`ferkit.experiments`)."""
    from ferkit.utils import require_torch

    require_torch("the permutation experiment")
    from ferkit.experiments import permute_experiment

    return permute_experiment(
        data=data, dataset=dataset, model=model, epochs=epochs, mapping=mapping, out=out, **settings
    )


def list_models():
    """The registered architectures' :class:`~ferkit.models.registry.ModelCard` objects."""
    from ferkit.utils import require_torch

    require_torch("the model registry")
    from ferkit.models import list_models as _list

    return _list()


def describe_detectors() -> list[dict]:
    """One row per face detector (default first): name, what it is for, input, landmarks, speed class, licence
    and default score threshold, from the backends' own metadata (what ``ferkit detectors`` prints)."""
    from ferkit.faces.base import detector_info

    return detector_info()


def describe_models() -> list[dict]:
    """One row per registered architecture: name, parameters (7 classes), input size, the channels it trains
    on, source, aliases, pretrained weights, description (what ``ferkit models`` prints)."""
    from ferkit.utils import require_torch

    require_torch("the model registry")
    import torch

    from ferkit.errors import FerkitError
    from ferkit.models import count_parameters, create_model
    from ferkit.models import list_models as _list

    rows = []
    for card in _list():
        try:
            with torch.device("meta"):  # shapes only: counting VGG-16's 134M parameters costs no memory or time
                n = count_parameters(create_model(card.name, num_classes=7, in_channels=card.in_channels))
        except FerkitError:
            n = None
        # Every model takes the data's channels; pretrained weights fix them (grey data is replicated).
        channels = f"data's; {card.in_channels} pretrained" if card.pretrained else "data's (1 or 3)"
        rows.append(
            {
                "name": card.name,
                "params": n,
                "input": f"{card.input_size[0]}x{card.input_size[1]}",
                "channels": channels,
                "source": card.source,
                "aliases": list(card.aliases),
                "pretrained": card.pretrained,
                "description": card.description,
            }
        )
    return rows


def enroll(name: str, photos, gallery=None, quiet: bool = True, anti_spoof: bool = False, spoof_threshold=None):
    """Store the embedding of each photo's single face under ``name`` in the SQLite gallery (identity extra);
    returns an :class:`~ferkit.identity.verify.EnrolReport` (added / already enrolled / skipped with reasons).
    ``anti_spoof=True`` (or a ``spoof_threshold``, default ``defaults.SPOOF_THRESHOLD``): a face scoring below
    the threshold raises a one-line DataError and nothing is enrolled; the report has the scores."""
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.verify import enroll as _enroll

    return _enroll(
        name,
        [photos] if isinstance(photos, (str, Path)) else photos,
        gallery=gallery,
        quiet=quiet,
        spoof_threshold=anti_spoof_threshold(anti_spoof, spoof_threshold),
    )


def verify(
    photos,
    gallery=None,
    name: str | None = None,
    threshold: float | None = None,
    quiet: bool = True,
    anti_spoof: bool = False,
    spoof_threshold=None,
) -> list:
    """Best gallery match (or "unknown"), distance and threshold for every face in the photos; with ``name``,
    1:1 verification against that identity (see :mod:`ferkit.identity`). ``anti_spoof=True`` (or a
    ``spoof_threshold``): each face gets ``spoof_score`` and ``spoof``; a face failing the threshold is flagged
    (``status`` "spoof", ``reason``) and never matched."""
    from ferkit.attributes import anti_spoof_threshold
    from ferkit.identity.verify import verify as _verify

    return _verify(
        [photos] if isinstance(photos, (str, Path)) else photos,
        gallery=gallery,
        name=name,
        threshold=threshold,
        quiet=quiet,
        spoof_threshold=anti_spoof_threshold(anti_spoof, spoof_threshold),
    )


def gallery_list(gallery=None) -> list[dict]:
    """Enrolled identities: name, photo count, embedder, first/last enrolment time."""
    from ferkit.identity.gallery import Gallery

    with Gallery(gallery, readonly=True) as g:
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


__all__ = [
    "AnalyzerSettings",
    "TrainConfig",
    "TrainResult",
    "VideoOptions",
    "analyze",
    "analyzer",
    "collect",
    "compare",
    "describe",
    "describe_detectors",
    "describe_models",
    "enroll",
    "evaluate",
    "evaluate_verification",
    "experiment_permute",
    "export",
    "fetch_dataset",
    "freeze_sweep",
    "gallery_list",
    "iter_predict",
    "gallery_remove",
    "inspect_dataset",
    "list_models",
    "list_recipes",
    "load_checkpoint",
    "load_dataset",
    "load_model",
    "make_config",
    "predict",
    "predict_dataset",
    "synthesize",
    "train",
    "verify",
]
