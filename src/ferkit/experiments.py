"""The sources' experiments as functions (and ``ferkit experiment ...`` commands).

``permute`` (source 002, part 1b): train the same model twice with identical settings and seed, once on the
images as they are and once on images whose pixels were shuffled by one fixed permutation (the same for every
image, train and test alike; :class:`~ferkit.data.transforms.PixelPermutation`), and report both test
accuracies and their difference. A CNN relies on neighbouring pixels, so the gap measures how much of its
accuracy comes from spatial structure.

``freeze-sweep`` (source 002, part 2b) lives in :mod:`ferkit.training.sweep`; the CLI forwards to it.
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import ConfigError


def permute_experiment(
    data=None,
    dataset=None,
    model: str = "fashion_cnn",
    epochs: int | None = None,
    mapping=None,
    out="runs/permute",
    permute_seed: int = 0,
    seed: int = 0,
    quiet: bool = False,
    **settings,
) -> dict:
    """Train ``model`` on ``data`` (a path) or ``dataset`` with and without the pixel permutation of
    ``permute_seed``; returns and writes (``OUT/permute.json``, ``OUT/permute.md``) both test accuracies and the
    difference. Runs go to ``OUT/original`` and ``OUT/permuted``. Other ``settings`` go to the trainer
    (e.g. ``lr``, ``batch_size``, ``image_size``)."""
    from ferkit.training.config import make_config
    from ferkit.training.trainer import Trainer
    from ferkit.utils import atomic_write_json, atomic_write_text, check_output

    if data is None and dataset is None:
        raise ConfigError(
            "ferkit experiment permute: pass --data PATH (e.g. Fashion-MNIST IDX files with "
            "--mapping fashion3, as source 002)"
        )
    if permute_seed is None:
        raise ConfigError("permute_seed must be an integer")
    if "permute_seed" in settings or "out" in settings:
        raise ConfigError("permute experiment: permute_seed and out are set by the experiment itself")
    check_output(out, "--out", folder=True)  # before the data is loaded and two models trained
    if data is not None and dataset is None:
        from ferkit.data import load_dataset

        # load once, share between the two runs (same splits, same decoded images)
        dataset = load_dataset(
            data,
            format=settings.pop("format", None),
            mapping=mapping,
            image_size=settings.get("image_size"),
            seed=seed,
            val_fraction=settings.get("val_fraction"),
            test_fraction=settings.get("test_fraction"),
            quiet=quiet,
        )
        mapping = None
    out = Path(out)
    common = dict(
        dataset=dataset,
        model=model,
        epochs=epochs,
        mapping=mapping,
        seed=seed,
        quiet=quiet,
        data=str(data) if data is not None else None,
        **settings,
    )
    runs = {}
    for name, ps in (("original", None), ("permuted", int(permute_seed))):
        if not quiet:
            print(
                f"[permute] training {model} on {'pixel-permuted' if ps is not None else 'original'} images "
                f"-> {out / name}",
                flush=True,
            )
        ds = common.pop("dataset")
        runs[name] = Trainer(make_config(out=str(out / name), permute_seed=ps, **common), dataset=ds).fit()
        common["dataset"] = ds

    def acc(res):
        m = res.metrics
        return (m.get("test_acc"), "test") if m.get("test_acc") is not None else (m.get("val_acc"), "val")

    (a0, split0), (a1, _) = acc(runs["original"]), acc(runs["permuted"])
    result = {
        "experiment": "permute",
        "model": model,
        "permute_seed": int(permute_seed),
        "seed": seed,
        "epochs": runs["original"].history[-1]["epoch"] if runs["original"].history else epochs,
        "split": split0,
        "original_acc": a0,
        "permuted_acc": a1,
        "difference": (a0 - a1) if (a0 is not None and a1 is not None) else None,
        "runs": {k: str(v.run_dir) for k, v in runs.items()},
    }
    atomic_write_json(out / "permute.json", result)
    atomic_write_text(out / "permute.md", format_permute(result) + "\n")
    if not quiet:
        print(format_permute(result))
        print(f"outputs: {out}/ (permute.json, permute.md, original/, permuted/)")
    return result


def format_permute(r: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    diff = r["difference"]
    return "\n".join(
        [
            f"| images | {r['split']} acc |",
            "|---|---:|",
            f"| original | {f(r['original_acc'])} |",
            f"| pixel-permuted (seed {r['permute_seed']}) | {f(r['permuted_acc'])} |",
            f"| difference (original - permuted) | {'-' if diff is None else f'{diff:+.4f}'} |",
        ]
    )
