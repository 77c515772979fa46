"""``ferkit compare``: key metrics of several runs / evaluations side by side.

Each argument is a training run folder (``results.json``: test metrics, test confusion matrix, training time,
parameter count) or an evaluation folder (``metrics.json`` of ``ferkit evaluate``; training time comes from the
``results.json`` beside its checkpoint when there is one). Run folders give accuracy, balanced accuracy, F1,
kappa and alpha computed from their test confusion matrix; log loss and ECE need probabilities, so they come
from evaluation folders only.

Classification metrics are only comparable between rows over the same class set (accuracy over 3 classes and
over 7 classes measure different tasks; names are compared as expressions, so AffectNet's ``anger`` and FER2013's
``angry`` are one class): every row is tagged with its class set (A, B, ...), and when the sets
differ the output says so and which columns stay comparable (valence/arousal, parameters, training time).
Rows measured on different data, splits or TTA are flagged the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from ferkit.errors import ConfigError, DataError
from ferkit.evaluation import metrics as M

# (key, header) of the table, in order; columns empty for every row are dropped
COLUMNS = [
    ("name", "run"),
    ("kind", "kind"),
    ("model", "model"),
    ("class_set", "class set"),
    ("split", "split"),
    ("n", "n"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced acc"),
    ("macro_f1", "macro F1"),
    ("weighted_f1", "weighted F1"),
    ("cohen_kappa", "kappa"),
    ("krippendorff_alpha", "alpha"),
    ("top2_accuracy", "top-2 acc"),
    ("log_loss", "log loss"),
    ("ece", "ECE"),
    ("valence_rmse", "valence RMSE"),
    ("valence_ccc", "valence CCC"),
    ("arousal_rmse", "arousal RMSE"),
    ("arousal_ccc", "arousal CCC"),
    ("params", "params"),
    ("train_time_s", "train time (s)"),
]
CLASS_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "weighted_f1",
    "cohen_kappa",
    "krippendorff_alpha",
    "top2_accuracy",
    "log_loss",
    "ece",
)
CHART_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "valence_ccc", "arousal_ccc")
TEXT_COLUMNS = 5  # name, kind, model, class set, split


def _read_json(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not readable JSON ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _from_cm(cm) -> dict:
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    t = np.repeat(np.arange(k), cm.sum(axis=1))
    p = np.concatenate([np.repeat(np.arange(k), cm[i]) for i in range(k)]) if cm.size else np.zeros(0, np.int64)
    return {
        "accuracy": M.accuracy(t, p),
        "balanced_accuracy": M.balanced_accuracy(t, p, k),
        "macro_f1": M.f1_score(t, p, k, "macro"),
        "weighted_f1": M.f1_score(t, p, k, "weighted"),
        "cohen_kappa": M.cohen_kappa(t, p, k),
        "krippendorff_alpha": M.krippendorff_alpha_nominal(t, p, k),
    }


def _run_row(d: dict, where: Path) -> dict:
    met = d.get("metrics") or {}
    split = "test" if "test_acc" in met else "val"
    row = {
        "kind": "run",
        "model": d.get("model"),
        "task": d.get("task"),
        "split": split,
        "classes": list((d.get("dataset") or {}).get("classes") or []),
        "data": (d.get("dataset") or {}).get("path"),
        "tta": "none",
        "n": ((d.get("dataset") or {}).get("sizes") or {}).get(split),
        "params": d.get("params"),
        "train_time_s": d.get("train_time_s"),
    }
    cm = met.get(f"{split}_confusion_matrix")
    if cm:
        row.update(_from_cm(cm))
        row["n"] = int(np.asarray(cm).sum())
    else:
        row["accuracy"] = met.get(f"{split}_acc")
        row["balanced_accuracy"] = met.get(f"{split}_balanced_acc")
    for t in ("valence", "arousal"):
        for k in ("rmse", "ccc"):
            if f"{split}_{t}_{k}" in met:
                row[f"{t}_{k}"] = met[f"{split}_{t}_{k}"]
    return row


def _eval_row(d: dict, where: Path) -> dict:
    row = {
        "kind": "eval",
        "model": (d.get("model") or {}).get("name"),
        "task": (d.get("model") or {}).get("task"),
        "split": d.get("split"),
        "classes": list(d.get("classes") or []),
        "n": d.get("n"),
        "data": (d.get("data") or {}).get("path"),
        "tta": d.get("tta", "none"),
        "params": (d.get("model") or {}).get("params"),
    }
    for k in CLASS_METRICS:
        row[k] = d.get(k)
    for t in ("valence", "arousal"):
        for k in ("rmse", "ccc"):
            if d.get(t):
                row[f"{t}_{k}"] = d[t].get(k)
    ck = (d.get("checkpoint") or {}).get("path")
    if ck:
        res = Path(ck).parent / "results.json"
        if res.is_file():
            try:
                run = json.loads(res.read_text())
                row["train_time_s"] = run.get("train_time_s")
                row["params"] = row["params"] or run.get("params")
            except (OSError, ValueError):
                pass
    return row


def load_entry(path) -> dict:
    """One table row from a run folder (results.json), an eval folder (metrics.json) or either JSON file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such run or evaluation folder")
    if p.is_dir():
        if (p / "metrics.json").is_file():
            f = p / "metrics.json"
        elif (p / "results.json").is_file():
            f = p / "results.json"
        else:
            raise DataError(
                f"{p}: holds neither results.json (a training run) nor metrics.json (a `ferkit evaluate` "
                "output); pass one of those folders"
            )
    else:
        f = p
    d = _read_json(f)
    if f.name == "metrics.json" or ("per_class" in d and "accuracy" in d):
        row = _eval_row(d, f)
    elif "metrics" in d and "model" in d:
        row = _run_row(d, f)
    else:
        raise DataError(f"{f}: neither a run's results.json nor an evaluation's metrics.json")
    row["path"] = str(f.parent)
    return row


def _names(paths: list[Path]) -> list[str]:
    """Short unique names: the folder name, with parents added until every name differs."""
    parts = [list(Path(p).resolve().parts) for p in paths]
    depth = 1
    while True:
        names = ["/".join(q[-depth:]) for q in parts]
        if len(set(names)) == len(names) or depth >= max(len(q) for q in parts):
            return names
        depth += 1


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _cell(v, key: str) -> str:
    if v is None:
        return ""
    if key == "params" and isinstance(v, (int, float)):
        return f"{int(v):,}"
    if key == "train_time_s" and isinstance(v, (int, float)):
        return f"{v:.1f}"
    if isinstance(v, float):
        return f"{v:.4f}" if math.isfinite(v) else ""
    return str(v)


def compare_runs(paths: list, out="compare", quiet: bool = False) -> dict:
    """Compare runs / evaluations; writes compare.csv, compare.md, compare.json, compare.png and compare.html to
    ``out``. Returns ``{"rows", "columns", "warnings", "files", "markdown"}``."""
    from ferkit.evaluation.plots import plot_compare_bars
    from ferkit.evaluation.report import write_compare_report
    from ferkit.utils import atomic_write_json, atomic_write_text

    if not paths:
        raise ConfigError("ferkit compare: give at least one run or evaluation folder")
    from ferkit.utils import check_output

    check_output(out, "--out", folder=True)
    rows = [load_entry(p) for p in paths]
    for r, name in zip(rows, _names([Path(r["path"]) for r in rows]), strict=True):
        r["name"] = name

    # class sets: tag A, B, ... in order of first appearance
    from ferkit.evaluation.evaluator import _synonym

    sets: dict[frozenset, str] = {}
    for r in rows:
        key = frozenset(_synonym(c) for c in r["classes"])  # anger = angry, fearful = fear, ...
        if key not in sets:
            sets[key] = chr(ord("A") + len(sets)) if len(sets) < 26 else f"S{len(sets)}"
        r["class_set"] = sets[key]
    warnings: list[str] = []
    if len(sets) > 1:
        groups = []
        for tag in sets.values():
            members = [r["name"] for r in rows if r["class_set"] == tag]
            cls = next(r["classes"] for r in rows if r["class_set"] == tag)
            groups.append(f"{tag} = {len(cls)} classes ({', '.join(cls)}): {', '.join(members)}")
        warnings.append(
            "runs have different class sets, so accuracy, balanced accuracy, F1, kappa, alpha, top-2, "
            "log loss and ECE are comparable only between rows of the same class set; valence/arousal, "
            "parameters and training time remain comparable. Class sets: " + "; ".join(groups)
        )
    for col, what in (("data", "datasets"), ("split", "splits"), ("tta", "test-time augmentation")):
        vals = sorted({str(r.get(col)) for r in rows})
        if len(vals) > 1:
            warnings.append(
                f"rows were measured with different {what} ({', '.join(vals)}): differences are not only the models'"
            )

    cols = [
        (k, h)
        for k, h in COLUMNS
        if k in ("name", "kind", "model", "class_set", "split") or any(r.get(k) is not None for r in rows)
    ]
    headers = [h for _, h in cols]
    table = [[r.get(k) for k, _ in cols] for r in rows]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([k for k, _ in cols] + ["classes", "path"])
    for r in rows:
        w.writerow(
            ["" if r.get(k) is None else (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k, _ in cols]
            + [";".join(r["classes"]), r["path"]]
        )
    atomic_write_text(out / "compare.csv", buf.getvalue())

    md = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" if i < TEXT_COLUMNS else "---:" for i in range(len(headers))) + "|",
    ]
    for r in rows:
        md.append("| " + " | ".join(_cell(r.get(k), k) for k, _ in cols) + " |")
    if warnings:
        md.append("")
        md += "\n\n".join(f"> **note:** {x}" for x in warnings).splitlines()
    markdown = "\n".join(md)
    atomic_write_text(out / "compare.md", markdown + "\n")

    chart_keys = [k for k in CHART_METRICS if any(_num(r.get(k)) is not None for r in rows)]
    labels = [f"{r['name']} [{r['class_set']}]" if len(sets) > 1 else r["name"] for r in rows]
    chart = None
    if chart_keys:
        chart = plot_compare_bars(
            labels,
            {k: [_num(r.get(k)) for r in rows] for k in chart_keys},
            out / "compare.png",
            title="key metrics"
            + (" (class sets differ: compare bars of the same [set] only)" if len(sets) > 1 else ""),
        )
    html_rows = [[r.get(k) for k, _ in cols] for r in rows]
    write_compare_report(
        out / "compare.html", headers, html_rows, warnings, chart, [(r["name"], r["path"]) for r in rows]
    )
    from ferkit.evaluation.evaluator import finite

    atomic_write_json(
        out / "compare.json", finite({"rows": rows, "columns": [k for k, _ in cols], "warnings": warnings})
    )
    files = {
        "csv": out / "compare.csv",
        "markdown": out / "compare.md",
        "json": out / "compare.json",
        "html": out / "compare.html",
    }
    if chart is not None:
        files["png"] = chart
    if not quiet:
        print(markdown)
        print(
            f"outputs: {out}/ (compare.csv, compare.md, compare.json, compare.html"
            + (", compare.png" if chart is not None else "")
            + ")"
        )
    return {
        "rows": rows,
        "columns": [k for k, _ in cols],
        "headers": headers,
        "table": table,
        "warnings": warnings,
        "files": files,
        "markdown": markdown,
    }
