"""The training configuration: one flat dataclass that recipes, CLI flags and the API all fill in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "plateau")
AMP_MODES = ("none", "auto", "fp16", "bf16")  # auto: fp16 on CUDA, none elsewhere
NORMALIZE = ("auto", "dataset", "pretrained", "none")


@dataclass
class TrainConfig:
    # what to train
    model: str = "seed1_cnn"
    task: str = "classify"
    pretrained: bool = False
    head: str | None = None  # linear | mlp (families that offer a choice)
    model_kwargs: dict = field(default_factory=dict)  # anything else the builder takes
    init: str | None = None  # start from this ferkit checkpoint's weights (fine-tune)
    # data
    data: str | None = None
    format: str | None = None
    mapping: str | None = None  # relabel: preset name, "a=x,b=y" or a YAML/JSON file
    image_size: int | None = None  # model input (square); default: the dataset's size
    in_channels: int | None = None  # default: 3 if pretrained else the dataset's
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    augment: str = "none"  # none | basic | autoaugment | v2
    normalize: str = "auto"
    permute_seed: int | None = None  # fixed pixel permutation (source 002's experiment)
    # optimisation
    epochs: int = 10
    batch_size: int = 64
    accumulate: int = 1
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    scheduler: str = "none"
    step_size: int = 10
    gamma: float = 0.1
    label_smoothing: float = 0.0
    class_weights: bool = False
    va_weight: float = 1.0
    amp: str = "none"
    grad_clip: float | None = None
    # freezing
    freeze: list = field(default_factory=list)  # stage names
    freeze_upto: str | None = None  # freeze every stage up to and including this one
    unfreeze: list = field(default_factory=list)  # ["EPOCH:stage" | "EPOCH:all"]
    # validation / stopping
    monitor: str = "val_acc"  # val_acc | val_loss | val_balanced_acc (see optim.MONITORS)
    patience: int | None = None
    validate_every: int = 1
    # run
    out: str = "runs/run"
    seed: int = 0
    device: str = "auto"
    resume: str | None = None  # RUN/last.pt: continue that run with its own settings (given ones override)
    overwrite: bool = False  # replace a run already in ``out`` (otherwise refused: it may be a good model)
    fast: bool = False
    quiet: bool = False
    tensorboard: bool = False
    wandb: bool = False
    wandb_project: str = "ferkit"
    # provenance
    recipe: str | None = None

    def __post_init__(self):
        # Which settings someone chose (recipe or caller), as opposed to defaults: a resumed run keeps
        # its stored settings except these. None: not tracked (built by hand), see given_settings().
        self._given: frozenset | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def given_settings(self) -> set[str]:
        """Names of the settings given explicitly (through :meth:`merged`: recipe, API keywords, CLI flags).

        For a config built directly as ``TrainConfig(...)`` every setting that differs from its default.
        """
        if self._given is not None:
            return set(self._given)
        default = TrainConfig()
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        bad = [k for k in d if k not in names]
        if bad:
            raise ConfigError(f"{where}: unknown setting {', '.join(sorted(bad))} (known: {', '.join(sorted(names))})")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied (``None`` leaves a setting alone); they count as given."""
        d = self.to_dict()
        given = {k: v for k, v in overrides.items() if v is not None}
        d.update(given)
        cfg = TrainConfig.from_dict(d)
        cfg._given = frozenset(self.given_settings()) | frozenset(given)
        return cfg

    def load_dataset(self, quiet: bool | None = None):
        """The dataset this config names: ``data`` read as ``format`` with ``mapping``, resized to ``image_size``,
        split with ``seed``, ``val_fraction`` and ``test_fraction``; ``quiet`` defaults to the config's."""
        from ferkit.data import load_dataset

        return load_dataset(
            self.data,
            format=self.format,
            mapping=self.mapping,
            image_size=self.image_size,
            seed=self.seed,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            quiet=self.quiet if quiet is None else quiet,
        )

    def validate(self) -> None:
        def choice(name, value, allowed):
            if value not in allowed:
                raise ConfigError(f"--{name.replace('_', '-')} {value!r}: use one of {', '.join(allowed)}")

        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("scheduler", self.scheduler, SCHEDULERS)
        choice("amp", self.amp, AMP_MODES)
        choice("normalize", self.normalize, NORMALIZE)
        choice("task", self.task, ("classify", "multitask"))
        from ferkit.model_names import check_model_name

        check_model_name(self.model)  # a typo is answered before torch loads
        for name in ("epochs", "batch_size", "accumulate", "validate_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be >= 1, got {self.patience}")
        if self.image_size is not None and not 8 <= int(self.image_size) <= 1024:
            raise ConfigError(f"--image-size must be between 8 and 1024, got {self.image_size}")
        for u in self.unfreeze:
            ep, _, what = str(u).partition(":")
            if not ep.isdigit() or not what:
                raise ConfigError(f"--unfreeze {u!r}: write EPOCH:STAGE or EPOCH:all, e.g. 3:layer4")


def recipe_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "recipes"


def list_recipes() -> dict[str, dict]:
    import yaml

    out = {}
    for p in sorted(recipe_dir().glob("*.yaml")):
        with open(p) as f:
            out[p.stem] = yaml.safe_load(f) or {}
    return out


def load_recipe(name_or_path: str) -> dict:
    """A recipe's training settings (its ``description``/``source``/``data`` notes are dropped)."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = recipe_dir() / f"{name_or_path}.yaml"
    if not p.exists():
        known = ", ".join(sorted(list_recipes())) or "none"
        raise ConfigError(f"unknown recipe {name_or_path!r}: `ferkit recipes` lists them ({known})")
    try:
        with open(p) as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: a recipe must be a mapping of settings")
    settings = {k: v for k, v in d.items() if k not in ("description", "source", "data_hint", "reported")}
    settings["recipe"] = p.stem
    TrainConfig.from_dict({k: v for k, v in settings.items()}, where=str(p))  # validate early
    return settings


def make_config(recipe: str | None = None, **settings) -> TrainConfig:
    """Defaults, then the recipe's settings, then ``settings`` (``None`` values leave a setting alone). Without
    ``out`` a new run goes to ``runs/<recipe or model>``; a resumed run keeps its own folder."""
    import os

    base = TrainConfig()
    if recipe:
        base = base.merged(load_recipe(recipe))
    cfg = base.merged(settings)
    if settings.get("out") is None and not cfg.resume:
        cfg.out = os.path.join("runs", cfg.recipe or cfg.model)
    return cfg
