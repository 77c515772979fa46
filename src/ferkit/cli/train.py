"""``ferkit train | recipes | models | info | experiment | demo``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ferkit.errors import ConfigError, OutputError

# (flag, TrainConfig field, type, help). Every default is None: unset flags leave the recipe / defaults alone.
TRAIN_FLAGS = [
    ("--model", "model", str, "registered model name or alias (see `ferkit models`); default seed1_cnn"),
    ("--task", "task", str, "classify (default) or multitask (expression + valence/arousal)"),
    ("--head", "head", str, "classifier head for torchvision families: linear or mlp"),
    ("--init", "init", str, "start from these weights (fine-tuning): checkpoint, run folder or zoo name"),
    ("--format", "format", str, "dataset format if auto-detection is not wanted: fer2013, folder, affectnet, idx"),
    ("--mapping", "mapping", str, "relabel classes: preset (fer3, fashion3), 'a=x,b=y' or a YAML/JSON file"),
    ("--image-size", "image_size", int, "model input size in pixels (square); default: the dataset's"),
    ("--in-channels", "in_channels", int, "1 (grey) or 3 (colour); default: 3 if --pretrained else the dataset's"),
    ("--val-fraction", "val_fraction", float, "validation share when the data has no validation split"),
    ("--test-fraction", "test_fraction", float, "test share when the data has no test split"),
    ("--augment", "augment", str, "none, basic, autoaugment or v2"),
    ("--normalize", "normalize", str, "auto, dataset (train statistics), pretrained (the weights') or none"),
    ("--permute-seed", "permute_seed", int, "apply a fixed pixel permutation made from this seed (source 002)"),
    ("--epochs", "epochs", int, "number of epochs (default 10)"),
    ("--batch-size", "batch_size", int, "images per batch and process (default 64)"),
    ("--accumulate", "accumulate", int, "micro-batches per optimiser step (gradient accumulation)"),
    ("--optimizer", "optimizer", str, "adam (default), adamw or sgd"),
    ("--lr", "lr", float, "learning rate (default 1e-3)"),
    ("--weight-decay", "weight_decay", float, "weight decay"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--scheduler", "scheduler", str, "none, cosine, step or plateau"),
    ("--step-size", "step_size", int, "epochs between StepLR decays"),
    ("--gamma", "gamma", float, "decay factor for step / plateau"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing for cross-entropy"),
    ("--va-weight", "va_weight", float, "weight of the valence/arousal MSE in the multitask loss"),
    ("--amp", "amp", str, "mixed precision: none, fp16 (CUDA) or bf16"),
    ("--grad-clip", "grad_clip", float, "clip the gradient norm to this value"),
    ("--freeze-upto", "freeze_upto", str, "freeze every stage up to and including this one"),
    (
        "--monitor",
        "monitor",
        str,
        "metric that picks best.pt and drives early stopping: val_acc, val_loss, val_balanced_acc",
    ),
    ("--patience", "patience", int, "early stopping: validations without improvement before stopping"),
    ("--validate-every", "validate_every", int, "validate every N epochs"),
    ("--out", "out", str, "run folder (default runs/<recipe or model>); an existing run needs --resume or --overwrite"),
    ("--seed", "seed", int, "random seed: same seed, same data order, same weights"),
    ("--device", "device", str, "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"),
    (
        "--resume",
        "resume",
        str,
        "continue a run from its last.pt: its own settings and folder unless flags override them",
    ),
    ("--wandb-project", "wandb_project", str, "Weights & Biases project name"),
]
TRAIN_SWITCHES = [
    ("--pretrained", "pretrained", "start from the model's pretrained weights (--no-pretrained: never)"),
    ("--class-weights", "class_weights", "weight cross-entropy by inverse class frequency of the train split"),
    ("--fast", "fast", "sanity mode: one epoch of a few batches"),
    ("--tensorboard", "tensorboard", "log to TensorBoard under RUN/tensorboard"),
    ("--wandb", "wandb", "log to Weights & Biases (WANDB_MODE=offline works)"),
    ("--overwrite", "overwrite", "replace the run already in --out (its checkpoints and outputs go)"),
]


def _add_train_options(t: argparse.ArgumentParser, sweep_only: bool = False) -> None:
    t.add_argument("--data", help="dataset path: FER2013 CSV, class-folder tree, AffectNet-style folder, IDX folder")
    t.add_argument("--recipe", help="start from a recipe (see `ferkit recipes`); flags override it")
    for flag, dest, typ, hlp in TRAIN_FLAGS:
        t.add_argument(flag, dest=dest, type=typ, default=None, help=hlp)
    for flag, dest, hlp in TRAIN_SWITCHES:
        t.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=hlp)
    t.add_argument("--freeze", dest="freeze", default=None, help="comma-separated stage names to freeze")
    t.add_argument(
        "--unfreeze",
        dest="unfreeze",
        action="append",
        default=None,
        help="unfreeze schedule EPOCH:STAGE or EPOCH:all (repeatable)",
    )
    t.add_argument(
        "--model-arg",
        dest="model_args",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra model constructor argument, e.g. dropout=0.3 or weights_path=vgg_face.pth",
    )
    if not sweep_only:
        t.add_argument(
            "--freeze-sweep", action="store_true", help="one run per frozen depth, then a table (source 002)"
        )
    t.add_argument("--quiet", action="store_true", default=None, help="no progress bars or per-epoch lines")


def add_parsers(sub) -> None:
    from ferkit.cli.common import add_command

    t = add_command(
        sub,
        "train",
        "train a model",
        """
  ferkit train --data data/synth --model seed1_cnn --epochs 5 --out runs/cnn
  ferkit train --recipe fer2013_vgg11_irb --data fer2013.csv --epochs 3
  ferkit train --resume runs/cnn/last.pt --epochs 8          # same data, folder and settings; 8 epochs in all
  ferkit train --data fer.csv --model resnet18 --pretrained --freeze-sweep
  torchrun --standalone --nproc_per_node 2 -m ferkit train --data data/synth --epochs 3""",
        cmd_train,
    )
    _add_train_options(t)

    add_command(
        sub,
        "recipes",
        "list the recipes that reproduce the source projects' runs",
        """
  ferkit recipes
  ferkit train --recipe fer2013_vgg11_irb --data fer2013.csv""",
        cmd_recipes,
    )
    m = add_command(
        sub,
        "models",
        "list registered models (name, parameters, input, source)",
        """
  ferkit models
  ferkit models --json""",
        cmd_models,
    )
    m.add_argument("--json", action="store_true", help="machine-readable output")

    inf = add_command(
        sub,
        "info",
        "describe a checkpoint (model, classes, input, metrics)",
        """
  ferkit info runs/cnn/best.pt
  ferkit info fer_minixception --json""",
        cmd_info,
    )
    inf.add_argument("checkpoint", help="checkpoint file, run folder or zoo name")
    inf.add_argument("--json", action="store_true", help="everything but the weights, as JSON")

    ex = add_command(
        sub,
        "experiment",
        "the source projects' experiments: permute, freeze-sweep",
        """
  ferkit experiment permute --data fashion-mnist/ --mapping fashion3 --epochs 10
  ferkit experiment freeze-sweep --data fer.csv --model resnet18 --pretrained""",
        cmd_experiment,
    )
    exsub = ex.add_subparsers(dest="experiment_command", metavar="EXPERIMENT")
    xp = add_command(
        exsub,
        "permute",
        "train with and without a fixed pixel permutation; compare test accuracy",
        """
  ferkit experiment permute --data fashion-mnist/ --mapping fashion3 --epochs 10""",
    )
    xp.add_argument("--data", required=True, help="dataset path")
    xp.add_argument("--model", default="fashion_cnn", help="registered model (default fashion_cnn, source 002's CNN)")
    xp.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10)")
    xp.add_argument("--mapping", default=None, help="relabel classes first, e.g. fashion3 for Fashion-MNIST")
    xp.add_argument("--out", default="runs/permute", help="output folder (default runs/permute)")
    xp.add_argument("--permute-seed", type=int, default=0, help="seed of the fixed pixel permutation")
    xp.add_argument("--seed", type=int, default=0, help="training seed, the same for both runs")
    xp.add_argument("--format", default=None, help="dataset format if auto-detection is not wanted")
    xp.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3)")
    xp.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64)")
    xp.add_argument("--image-size", type=int, default=None, help="model input size (default: the dataset's)")
    xp.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    xp.add_argument("--quiet", action="store_true", help="print only the result table")
    xf = add_command(
        exsub,
        "freeze-sweep",
        "one run per frozen depth (the same as `ferkit train --freeze-sweep`)",
        """
  ferkit experiment freeze-sweep --data fer.csv --model resnet18 --pretrained""",
    )
    _add_train_options(xf, sweep_only=True)
    xf.set_defaults(freeze_sweep=True)

    dm = add_command(
        sub,
        "demo",
        "synthesise data, train, evaluate and predict in a few minutes on CPU",
        """
  ferkit demo
  ferkit demo --out /tmp/demo --quiet""",
        cmd_demo,
    )
    dm.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    dm.add_argument("--quiet", action="store_true", help="only the final summary")


def train_settings(a: argparse.Namespace) -> dict:
    """The TrainConfig settings the flags set (None = not given)."""
    s = {dest: getattr(a, dest) for _, dest, _, _ in TRAIN_FLAGS}
    s.update({dest: getattr(a, dest) for _, dest, _ in TRAIN_SWITCHES})
    s["data"] = a.data
    s["quiet"] = a.quiet
    if a.freeze:
        s["freeze"] = [x for x in a.freeze.split(",") if x]
    if a.unfreeze:
        s["unfreeze"] = a.unfreeze
    if a.model_args:
        kw = {}
        for item in a.model_args:
            k, eq, v = item.partition("=")
            if not eq or not k:
                raise ConfigError(f"--model-arg {item[:100]!r}: write KEY=VALUE, e.g. dropout=0.3")
            kw[k] = _parse_scalar(v)
        s["model_kwargs"] = kw
    return s


def _parse_scalar(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def cmd_train(a) -> int:
    from ferkit import api

    s = train_settings(a)
    if a.freeze_sweep:
        from ferkit.training.sweep import format_sweep

        rows = api.freeze_sweep(a.recipe, **s)
        print(format_sweep(rows))
        return 0
    try:
        res = api.train(a.recipe, **s)
    except OutputError as e:
        if not e.filename or not Path(e.filename).name.endswith((".pt", ".csv", ".json", ".png")):
            raise
        last = Path(e.filename).parent / "last.pt"
        # checkpoints are written atomically: the ones already there are whole, only the one being written is lost
        raise OutputError(
            f"{e}; training stopped, the checkpoints already written are intact"
            + (f": resume with --resume {last} once there is room" if last.is_file() else ""),
            e.errno,
        ) from None
    if res.metrics and not a.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {res.best_checkpoint} (epoch {res.best_epoch})")
    return 0


def cmd_recipes(a) -> int:
    from ferkit import api

    for name, r in api.list_recipes().items():
        print(f"{name:<28} {r.get('model', ''):<16} {r.get('source', ''):<12} {r.get('description', '')}")
    return 0


def cmd_models(a) -> int:
    from ferkit import api
    from ferkit.cli.common import column_widths, print_rows

    rows = api.describe_models()
    # the free-length source ends each line and the description follows on its own indented line
    w = column_widths(rows, ("name", "input", "channels"))

    def line(r):
        n = f"{r['params'] / 1e6:.2f}M" if r["params"] else "?"
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        return (
            f"{r['name']:<{w['name']}}  {n:>13}  {r['input']:<{w['input']}}  {r['channels']:<{w['channels']}}  "
            f"{r['source']}\n    {r['description']}{alias}"
        )

    return print_rows(
        rows,
        a.json,
        f"{'name':<{w['name']}}  {'params(7 cls)':>13}  {'input':<{w['input']}}  "
        f"{'channels':<{w['channels']}}  source\n    description",
        line,
    )


def cmd_info(a) -> int:
    from ferkit import api

    ck = api.load_checkpoint(a.checkpoint)
    if a.json:
        print(
            json.dumps({k: v for k, v in ck.items() if k not in ("state_dict", "train_state")}, indent=2, default=str)
        )
    else:
        print(api.describe(ck))
    return 0


def cmd_experiment(a) -> int:
    from ferkit import api

    if a.experiment_command == "permute":
        extra = {
            k: v
            for k, v in (
                ("lr", a.lr),
                ("batch_size", a.batch_size),
                ("image_size", a.image_size),
                ("device", a.device),
                ("format", a.format),
            )
            if v is not None
        }
        res = api.experiment_permute(
            data=a.data,
            model=a.model,
            epochs=a.epochs,
            mapping=a.mapping,
            out=a.out,
            permute_seed=a.permute_seed,
            seed=a.seed,
            quiet=a.quiet,
            **extra,
        )
        if a.quiet:  # the table is the result: print it even when quiet
            from ferkit.experiments import format_permute

            print(format_permute(res))
        return 0
    if a.experiment_command == "freeze-sweep":
        return cmd_train(a)
    raise ConfigError("ferkit experiment: say which: permute or freeze-sweep (see ferkit experiment --help)")


def cmd_demo(a) -> int:
    from ferkit.demo import run_demo

    run_demo(a.out, quiet=a.quiet)
    return 0
