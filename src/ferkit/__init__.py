"""ferkit: facial expression recognition in PyTorch.

The public API (see :mod:`ferkit.api`)::

    import ferkit
    res = ferkit.train(data="fer2013.csv", model="seed1_cnn", epochs=5, out="runs/cnn")
    preds = ferkit.predict(res.best_checkpoint, ["face.png"])
"""

__version__ = "0.1.0"

_API = {"TrainConfig", "TrainResult", "analyze", "compare", "describe", "evaluate", "experiment_permute", "export",
        "freeze_sweep", "inspect_dataset", "list_models", "list_recipes", "load_checkpoint", "load_dataset",
        "load_model", "make_config", "predict", "synthesize", "train"}


def __getattr__(name):  # lazy: `import ferkit` stays cheap, torch loads on first use
    if name in _API:
        from ferkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")


__all__ = sorted(_API) + ["__version__"]
