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
from ferkit.train.config import TrainConfig, list_recipes, load_recipe
from ferkit.train.trainer import TrainResult, Trainer


def make_config(recipe: str | None = None, **settings) -> TrainConfig:
    """Defaults, then the recipe's settings, then ``settings`` (``None`` values leave a setting alone)."""
    base = TrainConfig()
    if recipe:
        base = base.merged(load_recipe(recipe))
    return base.merged(settings)


def train(recipe: str | None = None, dataset=None, callbacks=None, **settings) -> TrainResult:
    """Train a model; see :class:`ferkit.train.config.TrainConfig` for every setting.

    ``dataset`` may be an already-loaded :class:`~ferkit.data.base.FaceDataset` (then ``data`` is not needed).
    """
    return Trainer(make_config(recipe, **settings), dataset=dataset, callbacks=callbacks).fit()


def freeze_sweep(recipe: str | None = None, dataset=None, depths=None, **settings) -> list[dict]:
    """One run per frozen depth (source 002); returns the table rows."""
    from ferkit.train.sweep import freeze_sweep as _sweep

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
    from ferkit.predict.images import predict_images

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    return predict_images(checkpoint, [str(i) for i in inputs], batch_size=batch_size, device=device)


def list_models():
    from ferkit.models import list_models as _list

    return _list()


__all__ = ["TrainConfig", "TrainResult", "describe", "freeze_sweep", "inspect_dataset", "list_models",
           "list_recipes", "load_checkpoint", "load_dataset", "load_model", "make_config", "predict",
           "synthesize", "train"]
