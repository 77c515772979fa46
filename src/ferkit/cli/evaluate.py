"""``ferkit evaluate | compare``."""

from __future__ import annotations

import sys

from ferkit.errors import printable


def add_parsers(sub) -> None:
    from ferkit.cli.common import add_command

    ev = add_command(
        sub,
        "evaluate",
        "metrics, plots, error analysis and report.html of a checkpoint on a split",
        """
  ferkit evaluate --checkpoint runs/cnn/best.pt --data data/synth
  ferkit evaluate --checkpoint runs/cnn --data fer2013.csv --tta tencrop --out eval/tc
  ferkit evaluate --checkpoint runs/fer7/best.pt --data data/fer3 --class-map""",
        cmd_evaluate,
    )
    ev.add_argument("--checkpoint", required=True, help="checkpoint file, run folder (its best.pt) or zoo name")
    ev.add_argument("--data", required=True, help="dataset path (any format `ferkit data inspect` reads)")
    ev.add_argument("--split", default="test", help="train, val or test (default test)")
    ev.add_argument("--out", default=None, help="output folder (default <checkpoint folder>/eval_<split>)")
    ev.add_argument(
        "--tta",
        default="none",
        choices=("none", "flip", "tencrop"),
        help="test-time augmentation: none, flip (+ mirror) or tencrop (FER2013 ten-crop protocol)",
    )
    ev.add_argument(
        "--class-map",
        action="store_true",
        help="when checkpoint and dataset classes differ, evaluate on the classes they share (by name)",
    )
    ev.add_argument("--format", default=None, help="dataset format if auto-detection is not wanted")
    ev.add_argument("--mapping", default=None, help="relabel the dataset first (as `ferkit train --mapping`)")
    ev.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ev.add_argument("--tensorboard", action="store_true", help="also log metrics and plots to OUT/tensorboard")
    ev.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline without an API key)")
    ev.add_argument("--wandb-project", default="ferkit", help="Weights & Biases project (default ferkit)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar; print only the report's path")

    cp = add_command(
        sub,
        "compare",
        "key metrics of runs and/or evaluations side by side (table, chart, HTML)",
        """
  ferkit compare runs/cnn runs/resnet18 runs/resnet18/eval_test --out compare""",
        cmd_compare,
    )
    cp.add_argument(
        "paths",
        nargs="+",
        metavar="RUN_OR_EVAL_DIR",
        help="run folders (results.json) and/or `ferkit evaluate` folders (metrics.json)",
    )
    cp.add_argument("--out", default="compare", help="output folder (default ./compare)")
    cp.add_argument("--quiet", action="store_true", help="do not print the table")


def cmd_evaluate(a) -> int:
    from ferkit import api

    res = api.evaluate(
        a.checkpoint,
        a.data,
        split=a.split,
        out=a.out,
        tta=a.tta,
        class_map=a.class_map,
        format=a.format,
        mapping=a.mapping,
        batch_size=a.batch_size,
        device=a.device,
        tensorboard=a.tensorboard,
        wandb=a.wandb,
        wandb_project=a.wandb_project,
        quiet=a.quiet,
    )
    if not a.quiet:
        print(res.summary())
    print(f"report: {res.report}")
    return 0


def cmd_compare(a) -> int:
    from ferkit import api

    res = api.compare(a.paths, out=a.out, quiet=a.quiet)
    for w in res["warnings"]:
        print(printable(f"warning: {w}"), file=sys.stderr)
    return 0
