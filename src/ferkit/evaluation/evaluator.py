"""``ferkit evaluate``: a checkpoint on a dataset split -> metrics.json, predictions.csv, plots, report.html.

Inference is batched on the dataset's uint8 arrays (the same :func:`~ferkit.data.transforms.to_input` the
trainer uses, a whole batch per call), never per image. Test-time augmentation views are applied through the
``augment`` hook of ``to_input``, i.e. on the resized [0, 1] image *before* the pixel permutation and the
normalisation, exactly where training augmentation happens:

``none``
    the image as trained.
``flip``
    the image and its horizontal mirror; class probabilities (and valence/arousal) averaged.
``tencrop``
    the FER2013 ten-crop protocol: the four corner crops and the centre crop at 90% of the side, each resized
    back to the input size, plus the mirror of each; probabilities averaged over the ten views.

Classes are matched by name between the checkpoint and the dataset. Identical lists (or the same names in
another order) evaluate directly; different sets are an error unless ``class_map`` is set, which evaluates on
the shared classes only (samples of other dataset classes dropped, probabilities renormalised over the shared
classes) and says so in ``notes``.

The dataset is loaded with the checkpoint's split settings (seed, validation and test fractions, decode size),
so a dataset without predefined splits gives back the same held-out test split the training run used.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.errors import CheckpointError, ConfigError, DataError, FerkitError
from ferkit.evaluation import metrics as M

TTA_MODES = ("none", "flip", "tencrop")
TENCROP_FRACTION = 0.9
ERROR_GRID = 24  # mistakes shown in errors.png
ERROR_LIST = 50  # mistakes listed in errors.txt


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` produced: the output folder, metrics.json's content and the files."""

    out_dir: Path
    metrics: dict
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def report(self) -> Path:
        return self.files["report.html"]

    def summary(self) -> str:
        return format_summary(self.metrics)


# ---------------------------------------------------------------------------------------------------- TTA views


def _hflip(x: torch.Tensor, generator=None) -> torch.Tensor:
    return x.flip(-1)


def _crop_view(top: float, left: float, flip: bool):
    """A view that crops ``TENCROP_FRACTION`` of the side at (top, left) given as fractions of the free space
    (0 = top/left edge, 0.5 = centre, 1 = bottom/right edge) and resizes back to the input size."""

    def view(x: torch.Tensor, generator=None) -> torch.Tensor:
        H, W = x.shape[-2:]
        ch, cw = max(1, round(H * TENCROP_FRACTION)), max(1, round(W * TENCROP_FRACTION))
        y0, x0 = int((H - ch) * top), int((W - cw) * left)
        c = x[..., y0 : y0 + ch, x0 : x0 + cw]
        c = F.interpolate(c, size=(H, W), mode="bilinear", align_corners=False)
        return c.flip(-1) if flip else c

    view.__name__ = f"crop_{top}_{left}{'_flip' if flip else ''}"
    return view


def tta_views(mode: str) -> list:
    """The views of a TTA mode: callables ``view(x, generator=None)`` on float (B, C, H, W), or None (as is)."""
    if mode in (None, "none"):
        return [None]
    if mode == "flip":
        return [None, _hflip]
    if mode == "tencrop":
        spots = [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0), (0.5, 0.5)]
        return [_crop_view(t, left, False) for t, left in spots] + [_crop_view(t, left, True) for t, left in spots]
    raise ConfigError(f"--tta {mode!r}: use one of {', '.join(TTA_MODES)}")


# ---------------------------------------------------------------------------------------------------- inference


@torch.inference_mode()
def predict_arrays(
    model,
    images,
    spec,
    *,
    tta: str = "none",
    batch_size: int = 256,
    device="cpu",
    select: list[int] | None = None,
    quiet: bool = True,
    desc: str = "evaluate",
    channels_last: bool = True,
) -> dict:
    """Run ``model`` over uint8 images ``(N, H, W, C)`` in batches: ``probs`` (N, k) float64 averaged over the
    TTA views, and ``valence`` / ``arousal`` (N,) for multitask models (else None).

    ``select``: keep these logit columns (in this order) before the softmax, e.g. the classes shared with a
    dataset. ``spec`` is the checkpoint's :class:`~ferkit.data.transforms.InputSpec`. ``channels_last``
    switches the model (in place; same values) and the inputs to channels-last memory, which oneDNN on CPU
    and cuDNN on GPU run 15-40% faster for these convnets.
    """
    from ferkit.data.transforms import to_input
    from ferkit.utils import progress

    views = tta_views(tta)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    n = len(images)
    probs_out: np.ndarray | None = None
    va_out: np.ndarray | None = None
    sel = torch.as_tensor(select, dtype=torch.long, device=device) if select is not None else None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    bar = progress(total=n, desc=desc, unit="img", quiet=quiet, leave=False)
    try:
        for a in range(0, n, batch_size):
            batch = torch.from_numpy(np.array(images[a : a + batch_size])).to(device)  # a copy: memmaps are read-only
            p_sum = None
            va_sum = None
            for view in views:
                x = to_input(batch, spec, augment=view, channels_last=channels_last)
                out = model(x)
                logits = (out["logits"] if isinstance(out, dict) else out).float()
                if sel is not None:
                    logits = logits.index_select(1, sel)
                p = torch.softmax(logits, 1).double()
                p_sum = p if p_sum is None else p_sum + p
                if isinstance(out, dict) and "valence" in out:
                    va = torch.stack([out["valence"], out["arousal"]], 1).double()
                    va_sum = va if va_sum is None else va_sum + va
            assert p_sum is not None  # views is never empty
            p_mean = (p_sum / len(views)).cpu().numpy()
            if probs_out is None:
                probs_out = np.empty((n, p_mean.shape[1]), dtype=np.float64)
            probs_out[a : a + len(batch)] = p_mean
            if va_sum is not None:
                if va_out is None:
                    va_out = np.empty((n, 2), dtype=np.float64)
                va_out[a : a + len(batch)] = (va_sum / len(views)).cpu().numpy()
            bar.update(len(batch))
    finally:
        bar.close()
    if probs_out is None:
        probs_out = np.zeros((0, len(select) if select is not None else 0))
    return {
        "probs": probs_out,
        "valence": None if va_out is None else va_out[:, 0],
        "arousal": None if va_out is None else va_out[:, 1],
    }


# ---------------------------------------------------------------------------------------------------- classes


def _norm(name: str) -> str:
    return str(name).strip().lower()


def _synonym(name: str) -> str:
    """The common expression name of ``name`` (``anger`` -> ``angry``, ``fearful`` -> ``fear`` ...), else itself."""
    try:
        from ferkit.zoo.vocab import common_name
    except ImportError:  # pragma: no cover - the vocabulary ships with ferkit
        return _norm(name)
    return common_name(name) or _norm(name)


def match_classes(
    ckpt_classes: list[str], ds_classes: list[str], class_map: bool = False, where: str = "checkpoint"
) -> tuple[list[int], list[int], list[str]]:
    """``(checkpoint indices, dataset indices, notes)`` of the classes to evaluate, in checkpoint order.

    Without ``class_map`` the two must hold the same names (case-insensitive; another order is matched by name
    and noted); anything else raises a one-line :class:`CheckpointError` naming the classes on each side. With
    ``class_map`` the classes are matched by name or by expression synonym (``anger`` = ``angry``, ``fearful`` =
    ``fear``, see :mod:`ferkit.zoo.vocab`) and the evaluation runs on the classes both have; a note says so.
    """
    if list(ckpt_classes) == list(ds_classes):
        return list(range(len(ckpt_classes))), list(range(len(ds_classes))), []

    def pairs(key):
        ck, ds = [key(c) for c in ckpt_classes], [key(c) for c in ds_classes]
        if len(set(ck)) != len(ck) or len(set(ds)) != len(ds):
            return None
        return [(i, ds.index(n)) for i, n in enumerate(ck) if n in ds]

    exact = pairs(_norm)
    if exact is None:
        raise CheckpointError(
            f"{where}: class names repeat (checkpoint {list(ckpt_classes)}, dataset "
            f"{list(ds_classes)}); cannot match classes by name"
        )
    if len(exact) == len(ckpt_classes) == len(ds_classes):
        return (
            [i for i, _ in exact],
            [j for _, j in exact],
            ["the dataset lists the checkpoint's classes in another order or case; classes were matched by name"],
        )
    mapped = pairs(_synonym) or exact
    if len(mapped) < len(exact):  # a synonym clash (two names of one expression): names only
        mapped = exact
    only_ck = [c for i, c in enumerate(ckpt_classes) if i not in {a for a, _ in exact}]
    only_ds = [c for j, c in enumerate(ds_classes) if j not in {b for _, b in exact}]
    diff = "; ".join(
        x
        for x in (
            f"only in the checkpoint: {', '.join(only_ck)}" if only_ck else "",
            f"only in the dataset: {', '.join(only_ds)}" if only_ds else "",
        )
        if x
    )
    syn = [f"{ds_classes[j]} = {ckpt_classes[i]}" for i, j in mapped if _norm(ckpt_classes[i]) != _norm(ds_classes[j])]
    if not mapped:
        raise CheckpointError(
            f"{where}: the checkpoint's classes ({', '.join(ckpt_classes)}) and the dataset's "
            f"({', '.join(ds_classes)}) have no class in common; relabel the data with --mapping"
        )
    if not class_map:
        raise CheckpointError(
            f"{where}: checkpoint classes do not match the dataset's ({diff}); pass --class-map "
            f"to evaluate on the {len(mapped)} shared classes"
            + (f" ({', '.join(syn)})" if syn else "")
            + ", or relabel the data with --mapping"
        )
    used_ck, used_ds = {i for i, _ in mapped}, {j for _, j in mapped}
    left_ck = [c for i, c in enumerate(ckpt_classes) if i not in used_ck]
    left_ds = [c for j, c in enumerate(ds_classes) if j not in used_ds]
    names = [ckpt_classes[i] for i, _ in mapped]
    note = f"--class-map: evaluated on the {len(mapped)} classes shared by checkpoint and dataset ({', '.join(names)})"
    if syn:
        note += f"; matched by synonym: {', '.join(syn)}"
    if left_ds:
        note += f"; samples of dataset classes the checkpoint lacks were dropped ({', '.join(left_ds)})"
    if left_ck:
        note += (
            f"; checkpoint classes absent from the dataset were ignored ({', '.join(left_ck)}) and "
            "probabilities renormalised over the shared classes"
        )
    return [i for i, _ in mapped], [j for _, j in mapped], [note]


# ---------------------------------------------------------------------------------------------------- helpers


def finite(obj):
    """A copy of ``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def model_card(ckpt: dict, ref=None, model=None) -> dict:
    """Architecture, parameters, classes, input, data and training config of a checkpoint (for reports);
    ``ref`` is the :class:`~ferkit.refs.ModelRef` it came from (its weights file's sha256 goes in the card)."""
    from ferkit.models import get_card
    from ferkit.refs import resolve
    from ferkit.utils import sha256_file

    ref = resolve(ref) if ref is not None else None

    m = ckpt["model"]
    try:
        card = get_card(m["name"])
        desc, source = card.description, card.source
    except (KeyError, FerkitError):
        desc, source = "", ""
    cfg = dict(ckpt.get("config") or {})
    met = dict(ckpt.get("metrics") or {})
    params = trainable = None
    if model is not None:
        params = int(sum(p.numel() for p in model.parameters()))
        trainable = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    ck = {
        "path": (str(ref.path) if ref.path else ref.name) if ref else None,
        "created": ckpt.get("created"),
        "ferkit_version": ckpt.get("ferkit_version"),
        "format_version": ckpt.get("format_version"),
    }
    wf = ref.file if ref else None
    if wf is not None and wf.is_file():
        ck["sha256"] = sha256_file(wf)
        ck["size_bytes"] = wf.stat().st_size
        if ref.kind == "zoo":
            ck["weights_file"] = str(wf)
    trained = {k: v for k, v in met.items() if isinstance(v, (int, float, str)) and not k.startswith("_")}
    return {
        "architecture": m["name"],
        "description": desc,
        "source": source,
        "task": m.get("task"),
        "model_kwargs": dict(m.get("kwargs") or {}),
        "num_classes": m.get("num_classes"),
        "in_channels": m.get("in_channels"),
        "params": params,
        "trainable_params": trainable,
        "classes": list(ckpt.get("classes") or []),
        "input": dict(ckpt.get("input") or {}),
        "data": {
            "path": cfg.get("data"),
            "name": met.get("dataset"),
            "format": met.get("dataset_format"),
            "mapping": cfg.get("mapping"),
        },
        "training": cfg,
        "trained_metrics": trained,
        "checkpoint": ck,
    }


def _load_eval_dataset(data, ckpt: dict, fmt, mapping, quiet: bool):
    """The dataset with the checkpoint's split settings; the training mapping is reused when it is needed."""
    from ferkit.data import load_dataset
    from ferkit.data.relabel import relabel

    if data is None:
        raise ConfigError("no data: pass --data PATH (the dataset to evaluate on)")
    cfg = ckpt.get("config") or {}
    kw = dict(
        seed=cfg.get("seed"),
        val_fraction=cfg.get("val_fraction"),
        test_fraction=cfg.get("test_fraction"),
        image_size=cfg.get("image_size"),
        quiet=quiet,
    )
    ds = load_dataset(data, format=fmt, mapping=mapping, **kw)
    notes = []
    train_map = cfg.get("mapping")
    if mapping is None and train_map and [_norm(c) for c in ds.classes] != [_norm(c) for c in ckpt["classes"]]:
        try:
            mapped = relabel(ds, train_map)
        except FerkitError:
            mapped = None
        if mapped is not None and sorted(map(_norm, mapped.classes)) == sorted(map(_norm, ckpt["classes"])):
            ds = mapped
            notes.append(f"the dataset was relabelled with the training run's mapping ({train_map})")
    return ds, notes


def write_predictions(path: Path, ids, classes, y, probs, va_true=None, va_pred=None) -> None:
    """predictions.csv: one row per image (id, true, pred, confidence, p_<class>..., and V/A when given).

    The one writer of this file, for ``ferkit evaluate`` and a training run's test split alike.
    """
    from ferkit.utils import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = ["id", "true", "pred", "confidence"] + [f"p_{c}" for c in classes]
    if va_pred is not None:
        header += ["valence_true", "valence_pred", "arousal_true", "arousal_pred"]
    w.writerow(header)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
    for i in range(len(y)):
        row = [ids[i], classes[int(y[i])], classes[int(pred[i])], f"{probs[i, pred[i]]:.9g}"]
        row += [f"{p:.9g}" for p in probs[i]]
        if va_pred is not None:
            vt = "" if va_true is None else f"{va_true[0][i]:.9g}"
            at = "" if va_true is None else f"{va_true[1][i]:.9g}"
            row += [vt, f"{va_pred[0][i]:.9g}", at, f"{va_pred[1][i]:.9g}"]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())


def _error_analysis(out: Path, images, ids, classes, y, probs, pairs) -> list[dict]:
    """errors.png (the most confident mistakes) and errors.txt; returns the listed mistakes."""
    from ferkit.evaluation.plots import plot_image_grid
    from ferkit.utils import atomic_write_text

    pred = probs.argmax(axis=1)
    conf = probs[np.arange(len(y)), pred] if len(y) else np.zeros(0)
    wrong = np.flatnonzero(pred != y)
    order = wrong[np.argsort(-conf[wrong], kind="stable")]
    mistakes = [
        {
            "id": ids[i],
            "true": classes[int(y[i])],
            "pred": classes[int(pred[i])],
            "confidence": float(conf[i]),
            "p_true": float(probs[i, y[i]]),
        }
        for i in order[:ERROR_LIST]
    ]
    shown = order[:ERROR_GRID]
    caps = [f"true {classes[int(y[i])]}\npred {classes[int(pred[i])]} ({conf[i]:.2f})" for i in shown]
    imgs = np.stack([np.asarray(images[int(i)]) for i in shown]) if len(shown) else np.zeros((0, 1, 1, 1), np.uint8)
    plot_image_grid(imgs, caps, out / "errors.png", title=f"most confident mistakes ({len(shown)} of {len(wrong)})")
    lines = [
        f"{len(wrong)} mistakes in {len(y)} images ({len(wrong) / max(len(y), 1):.1%})",
        "",
        "most confused pairs (true -> predicted: count, share of the true class)",
    ]
    lines += [f"  {p['true']} -> {p['pred']}: {p['count']} ({p['rate']:.1%})" for p in pairs] or ["  none"]
    lines += ["", f"most confident mistakes (top {len(mistakes)}): confidence, p(true), true -> pred, id"]
    lines += [f"  {m['confidence']:.3f}  {m['p_true']:.3f}  {m['true']} -> {m['pred']}  {m['id']}" for m in mistakes]
    atomic_write_text(out / "errors.txt", "\n".join(lines) + "\n")
    return mistakes


# ---------------------------------------------------------------------------------------------------- evaluate


def _default_out(ref, ckpt_file: Path, split: str, tta: str) -> Path:
    """``<checkpoint folder>/eval_<split>[_<tta>]``; a zoo model's ``eval_<name>_<split>[_<tta>]`` in the working
    folder."""
    zoo = ref.name if ref.kind == "zoo" else None
    name = f"eval_{split}" + ("" if tta == "none" else f"_{tta}")
    return Path(f"eval_{zoo}_{name[5:]}") if zoo else ckpt_file.parent / name


def _split_in_checkpoint_classes(dataset, split: str, ckpt: dict, ckpt_file: Path, class_map: bool, notes: list[str]):
    """The split's images whose class the checkpoint knows, their labels as checkpoint class indices, those
    classes' names and indices; what was left out, and why, is added to ``notes``."""
    s = dataset.split(split)  # DataError when the split is missing or empty
    ck_idx, ds_idx, more = match_classes(ckpt["classes"], dataset.classes, class_map, where=str(ckpt_file))
    notes += more
    classes = [ckpt["classes"][i] for i in ck_idx]
    lut = np.full(dataset.num_classes, -1, dtype=np.int64)
    lut[ds_idx] = np.arange(len(ds_idx))
    y = lut[np.asarray(s.labels, dtype=np.int64)]
    if (y < 0).any():
        keep = np.flatnonzero(y >= 0)
        notes.append(
            f"{len(y) - len(keep)} of {len(y)} {split} images belong to classes the checkpoint lacks and were left out"
        )
        if not len(keep):
            raise DataError(
                f"{dataset.root}: no {split} image belongs to a class the checkpoint knows; nothing to evaluate"
            )
        s = s.subset(keep)
        y = y[keep]
    if len(y) == 0:
        raise DataError(f"{dataset.root}: the {split} split is empty; nothing to evaluate")
    return s, y, classes, ck_idx


def _plot_all(out: Path, ref, ckpt_file: Path, card: dict, metrics: dict, y, probs, va_true, va_pred) -> dict:
    """Every plot of an evaluation, each titled with the run, the architecture and the split; name -> file."""
    from ferkit.evaluation import plots

    split, tta, classes = metrics["split"], metrics["tta"], metrics["classes"]
    files: dict[str, Path] = {}
    cm = np.asarray(metrics["confusion_matrix"])
    # Every plot says which run it is about: the run folder (or zoo name), the architecture and the split.
    run = ref.name if ref.kind == "zoo" else (ckpt_file.parent.name or str(ckpt_file))
    what = f"{run} ({card['architecture']}), {split}{'' if tta == 'none' else ', tta ' + tta}"
    files["confusion_matrix.png"] = plots.plot_confusion_matrix(
        cm, classes, out / "confusion_matrix.png", title=f"{what}: {len(y)} images"
    )
    files["confusion_matrix_normalized.png"] = plots.plot_confusion_matrix(
        cm, classes, out / "confusion_matrix_normalized.png", normalize=True, title=f"{what} (row-normalised)"
    )
    files["roc_curves.png"] = plots.plot_roc_curves(y, probs, classes, out / "roc_curves.png", title=f"ROC: {what}")
    files["pr_curves.png"] = plots.plot_pr_curves(y, probs, classes, out / "pr_curves.png", title=f"PR: {what}")
    files["reliability.png"] = plots.plot_reliability(
        y, probs, out / "reliability.png", n_bins=metrics["ece_bins"], title=f"calibration: {what}"
    )
    if va_true is not None and va_pred is not None:
        files["va_scatter.png"] = plots.plot_va_scatter(
            va_true[0],
            va_pred[0],
            va_true[1],
            va_pred[1],
            out / "va_scatter.png",
            stats={"valence": metrics["valence"], "arousal": metrics["arousal"]},
        )
    return files


def evaluate_checkpoint(
    checkpoint,
    data=None,
    split: str = "test",
    out=None,
    tta: str = "none",
    class_map: bool = False,
    *,
    dataset=None,
    format: str | None = None,
    mapping=None,
    batch_size: int = 256,
    device: str = "auto",
    tensorboard: bool = False,
    wandb: bool = False,
    wandb_project: str = "ferkit",
    quiet: bool = False,
) -> EvalResult:
    """Evaluate ``checkpoint`` (a file, or a run folder holding best.pt) on ``split`` of ``data`` (a path) or
    ``dataset`` (a loaded :class:`~ferkit.data.base.FaceDataset`) and write the outputs into ``out``
    (default ``<checkpoint folder>/eval_<split>``, ``eval_<split>_<tta>`` with TTA).

    Writes metrics.json, predictions.csv, confusion_matrix{,_normalized}.png, roc_curves.png, pr_curves.png,
    reliability.png, errors.png, errors.txt, va_scatter.png (multitask) and report.html.
    """
    from ferkit.checkpoint import build_model
    from ferkit.data.spec import InputSpec
    from ferkit.refs import load_checkpoint, resolve
    from ferkit.utils import atomic_write_json, check_output, resolve_device

    if tta not in TTA_MODES:
        raise ConfigError(f"--tta {tta!r}: use one of {', '.join(TTA_MODES)}")
    if int(batch_size) < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be at least 1")
    t_start = time.time()
    ref = resolve(checkpoint)
    ckpt = load_checkpoint(ref)
    ckpt_file = ref.path if ref.path is not None else Path(ref.name)
    from ferkit.data.base import SPLIT_ALIASES

    split = SPLIT_ALIASES.get(str(split).strip().lower(), split)  # validation -> val, PrivateTest -> test ...
    out = Path(out) if out is not None else _default_out(ref, ckpt_file, split, tta)
    check_output(out, "--out", folder=True)  # before the data is read and the model built
    dev = resolve_device(device)
    spec = InputSpec.from_dict(ckpt["input"])
    notes: list[str] = []
    if dataset is None:
        dataset, more = _load_eval_dataset(data, ckpt, format, mapping, quiet)
        notes += more
    elif mapping:
        from ferkit.data.relabel import relabel

        dataset = relabel(dataset, mapping)
    s, y, classes, ck_idx = _split_in_checkpoint_classes(dataset, split, ckpt, ckpt_file, class_map, notes)
    if split == "train":
        notes.append("evaluated on the training split: these numbers are optimistic")
    multitask = ckpt["model"].get("task") == "multitask"
    if multitask and not s.has_va:
        notes.append("the dataset has no valence/arousal annotations: only expression metrics are reported")

    model = build_model(ckpt, ckpt_file).to(dev)  # after the data checks: bad input fails fast
    out.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(
            f"ferkit evaluate: {ckpt['model']['name']} on {dataset.name} [{split}: {len(y)} images, "
            f"{len(classes)} classes, tta {tta}] device {dev} -> {out}",
            flush=True,
        )

    select = None if ck_idx == list(range(len(ckpt["classes"]))) else ck_idx
    t0 = time.time()
    pred = predict_arrays(
        model,
        s.images,
        spec,
        tta=tta,
        batch_size=int(batch_size),
        device=dev,
        select=select,
        quiet=quiet,
        desc=f"evaluate {split}",
    )
    infer_s = time.time() - t0
    probs = pred["probs"]

    metrics: dict = {"split": split, "tta": tta, "classes": classes}
    metrics.update(M.classification_metrics(y, probs, classes))
    if len(classes) == 2:  # "is it me?" (source 000): ROC AUC, EER, precision/recall at 0.5
        metrics["binary"] = M.binary_metrics(y, probs, classes)
    va_pred = va_true = None
    if pred["valence"] is not None:
        va_pred = (pred["valence"], pred["arousal"])
        if s.has_va:
            va_true = (np.asarray(s.valence, dtype=np.float64), np.asarray(s.arousal, dtype=np.float64))
            metrics["valence"] = M.regression_metrics(va_true[0], va_pred[0])
            metrics["arousal"] = M.regression_metrics(va_true[1], va_pred[1])
    card = model_card(ckpt, ref, model)
    metrics["model"] = {"name": card["architecture"], "task": card["task"], "params": card["params"]}
    metrics["checkpoint"] = {"path": str(ckpt_file), "sha256": card["checkpoint"].get("sha256")}
    metrics["data"] = {
        "path": str(dataset.root),
        "name": dataset.name,
        "format": dataset.format,
        "classes": list(dataset.classes),
        "split_size": len(dataset.splits[split]),
    }
    metrics["timing"] = {
        "inference_s": round(infer_s, 3),
        "images_per_s": round(len(y) * 1.0 / max(infer_s, 1e-9), 1),
        "views": len(tta_views(tta)),
        "batch_size": int(batch_size),
        "device": str(dev),
    }
    metrics["notes"] = notes

    files = _plot_all(out, ref, ckpt_file, card, metrics, y, probs, va_true, va_pred)
    mistakes = _error_analysis(out, s.images, s.ids, classes, y, probs, metrics["confused_pairs"])
    files["errors.png"] = out / "errors.png"
    files["errors.txt"] = out / "errors.txt"
    metrics["top_mistakes"] = mistakes[:10]
    write_predictions(out / "predictions.csv", s.ids, classes, y, probs, va_true, va_pred)
    files["predictions.csv"] = out / "predictions.csv"
    metrics["timing"]["total_s"] = round(time.time() - t_start, 3)
    atomic_write_json(out / "metrics.json", finite(metrics))
    files["metrics.json"] = out / "metrics.json"
    from ferkit.evaluation.report import write_eval_report

    files["report.html"] = write_eval_report(out / "report.html", finite(metrics), card, files)
    if tensorboard:
        _log_tensorboard(out / "tensorboard", metrics, files, card)
    if wandb:
        _log_wandb(out, metrics, files, card, wandb_project)
    return EvalResult(out, finite(metrics), files)


# ---------------------------------------------------------------------------------------------------- trackers


def flat_scalars(metrics: dict) -> dict[str, float]:
    """The headline numbers of metrics.json as ``{name: value}`` (per-class and V/A included), finite only."""
    keys = (
        "accuracy",
        "balanced_accuracy",
        "macro_f1",
        "weighted_f1",
        "macro_precision",
        "macro_recall",
        "cohen_kappa",
        "krippendorff_alpha",
        "top2_accuracy",
        "log_loss",
        "ece",
        "roc_auc_macro",
        "average_precision_macro",
    )
    flat = {k: metrics.get(k) for k in keys}
    for target in ("valence", "arousal"):
        for k, v in (metrics.get(target) or {}).items():
            flat[f"{target}_{k}"] = v
    for c, d in (metrics.get("per_class") or {}).items():
        for k in ("precision", "recall", "f1"):
            flat[f"{c}/{k}"] = d.get(k)
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def _log_tensorboard(log_dir: Path, metrics: dict, files: dict, card: dict) -> None:
    from ferkit.tracking import open_tensorboard, png_array

    split = metrics["split"]
    w = open_tensorboard(log_dir)
    try:
        for k, v in flat_scalars(metrics).items():
            w.add_scalar(f"eval_{split}/{k}", v, 0)
        for name, p in files.items():
            if name.endswith(".png"):
                w.add_image(f"eval_{split}/{name[:-4]}", png_array(p), 0, dataformats="HWC")
        w.add_text(
            f"eval_{split}/model_card",
            "\n".join(f"- **{k}**: {v}" for k, v in card.items() if not isinstance(v, dict)),
            0,
        )
        w.flush()
    finally:
        w.close()


def _log_wandb(out: Path, metrics: dict, files: dict, card: dict, project: str) -> None:
    from ferkit.tracking import start_wandb

    split = metrics["split"]
    wandb, run = start_wandb(
        project=project,
        name=f"eval-{card['architecture']}-{split}",
        dir=str(out),
        job_type="eval",
        config=finite({k: v for k, v in card.items() if k != "training"} | {"training": card["training"]}),
    )
    try:
        scalars = {f"eval_{split}/{k}": v for k, v in flat_scalars(metrics).items()}
        run.log(
            scalars | {f"eval_{split}/{n[:-4]}": wandb.Image(str(p)) for n, p in files.items() if n.endswith(".png")}
        )
        for k, v in scalars.items():
            run.summary[k] = v
    finally:
        run.finish()


# ---------------------------------------------------------------------------------------------------- printing


def _f(v, digits: int = 4) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def format_summary(m: dict) -> str:
    """The short table ``ferkit evaluate`` prints."""
    lines = [
        f"{m.get('model', {}).get('name', '?')} on {m.get('data', {}).get('name', '?')} [{m['split']}, "
        f"{m['n']} images, tta {m['tta']}]",
        f"  accuracy {_f(m['accuracy'])}  balanced {_f(m['balanced_accuracy'])}  macro F1 {_f(m['macro_f1'])}  "
        f"weighted F1 {_f(m['weighted_f1'])}  top-2 {_f(m['top2_accuracy'])}",
        f"  kappa {_f(m['cohen_kappa'])}  alpha {_f(m['krippendorff_alpha'])}  log loss {_f(m['log_loss'])}  "
        f"ECE {_f(m['ece'])}  ROC AUC {_f(m['roc_auc_macro'])}",
    ]
    if m.get("binary"):
        b = m["binary"]
        lines.append(
            f"  binary ({b['positive_class']!r} positive): ROC AUC {_f(b['roc_auc'])}  EER {_f(b['eer'])} "
            f"(p >= {_f(b['eer_threshold'], 3)})  at p >= {b['threshold']:g}: precision "
            f"{_f(b['precision'])}  recall {_f(b['recall'])}  FPR {_f(b['false_positive_rate'])}"
        )
    for t in ("valence", "arousal"):
        if m.get(t):
            r = m[t]
            lines.append(
                f"  {t:<8} RMSE {_f(r['rmse'])}  MAE {_f(r['mae'])}  R2 {_f(r['r2'])}  r {_f(r['pearson_r'])}"
                f"  SAGR {_f(r['sagr'])}  CCC {_f(r['ccc'])}"
            )
    w = max([len(c) for c in m["per_class"]] + [5])
    lines.append(f"  {'class':<{w}}  precision  recall  f1      support")
    for c, d in m["per_class"].items():
        lines.append(
            f"  {c:<{w}}  {_f(d['precision'], 3):>9}  {_f(d['recall'], 3):>6}  {_f(d['f1'], 3):<6}  {d['support']:>7}"
        )
    if m.get("confused_pairs"):
        lines.append(
            "  most confused: " + ", ".join(f"{p['true']}->{p['pred']} ({p['count']})" for p in m["confused_pairs"][:3])
        )
    for note in m.get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)
