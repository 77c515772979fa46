"""`ferkit` command line: one module per command group, each only parsing arguments, calling :mod:`ferkit.api`
and formatting what comes back. Exit codes: 0 success, 2 bad input (one line on stderr), 1 an internal bug,
130 interrupted. A closed stdout (``ferkit recipes | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import os
import sys

from ferkit.errors import FerkitError

EXAMPLES = """examples:
  ferkit data synth --out data/synth --n 3000 --seed 1      # a synthetic dataset (tests, demos)
  ferkit data inspect data/fer2013.csv                      # format, splits, histogram, problems
  ferkit data fetch fer2013                                 # a public dataset (or where to put it offline)
  ferkit models                                             # every registered architecture
  ferkit detectors                                          # every face detector: use, input, speed, licence
  ferkit train --data data/synth --model seed1_cnn --epochs 5 --out runs/cnn
  ferkit train --recipe fer2013_vgg11_irb --data data/fer2013.csv
  ferkit predict photos/ clip.mp4 --annotate out/           # every face: box, landmarks, expression
  ferkit predict --checkpoint runs/cnn/best.pt faces/ --no-detect   # class + probabilities per face crop
  ferkit evaluate --checkpoint runs/cnn/best.pt --data data/synth --tta flip   # metrics, plots, report.html
  ferkit compare runs/cnn runs/resnet/eval_test             # key metrics side by side
  ferkit serve --port 8000                                  # HTTP API + webcam page
  ferkit demo                                               # all of the above on synthetic data
"""


def build_parser() -> argparse.ArgumentParser:
    from ferkit import __version__
    from ferkit.cli import data, evaluate, faces, identity, predict, train

    p = argparse.ArgumentParser(
        prog="ferkit",
        description="Facial expression recognition: data, models, training, evaluation, prediction, serving.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ferkit {__version__}")
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const="1",
        default=None,
        help="show progress bars even when stderr is not a terminal",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_const",
        const="0",
        help="never show progress bars (they show only on a terminal by default)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for module in (data, train, evaluate, predict, identity, faces):
        module.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if getattr(a, "func", None) is None:
        parser.print_help()
        return 2
    if a.progress is not None:
        from ferkit.utils import PROGRESS_ENV

        os.environ[PROGRESS_ENV] = a.progress
    try:
        code = a.func(a)
        sys.stdout.flush()
        return code
    except FerkitError as e:
        from ferkit.errors import printable

        print(f"ferkit: error: {printable(e)}", file=sys.stderr)  # one line, no escape sequences
        return e.exit_code
    except ModuleNotFoundError as e:  # the light install (no extras) lacks PyTorch: one line with the install line
        from ferkit.utils import TRAIN_MODULES, missing_train_extra

        top = (e.name or "").split(".")[0]
        if top not in TRAIN_MODULES:
            raise
        print(f"ferkit: error: {missing_train_extra(f'ferkit {a.command}', top)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _closed_stdout()
    except KeyboardInterrupt:
        print("ferkit: interrupted", file=sys.stderr)
        return 130


def _closed_stdout() -> int:
    # The reader went away (`ferkit recipes | head`): nothing is wrong; stop quietly, and keep Python from
    # complaining again when it flushes stdout at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0
