"""ferkit: facial expression recognition in PyTorch.

The public API (see :mod:`ferkit.api`)::

    import ferkit
    res = ferkit.train(data="data/synth", model="seed1_cnn", epochs=5, out="runs/cnn")
    results = ferkit.predict(res.best_checkpoint, ["face.png"], detect=False)

Every name of :data:`ferkit.api.__all__` is an attribute of this package, whatever was imported before (no
subpackage shares a name with an API function). They load lazily: ``import ferkit`` stays cheap and torch is
imported on first use.
"""

__version__ = "0.2.0"

# Kept equal to ferkit.api.__all__ (a test checks): listing it here keeps `import ferkit` free of torch.
API_NAMES = (
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
    "gallery_remove",
    "inspect_dataset",
    "iter_predict",
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
)


def __getattr__(name):
    if name in API_NAMES:
        from ferkit import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(API_NAMES))


__all__ = [*API_NAMES, "__version__"]
