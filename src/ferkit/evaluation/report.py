"""Self-contained HTML reports: one file, CSS inline, every plot embedded as a base64 PNG (no network, no
sibling files needed), so a report can be mailed or attached as it is."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from pathlib import Path

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;
     padding:0 16px;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0.2em}
h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.6em}
.sub{color:#666;margin-top:0} table{border-collapse:collapse;margin:8px 0;font-size:0.9em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f4f6f8}
td.l,th.l{text-align:left} .grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.grid figure{margin:0} figcaption{font-size:0.85em;color:#555;text-align:center}
img{max-width:100%;border:1px solid #eee} .note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;
margin:6px 0} .kpi{display:inline-block;margin:4px 14px 4px 0} .kpi b{font-size:1.25em;display:block}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;word-break:break-all} pre{background:#f7f7f7;padding:8px;
overflow-x:auto;font-size:0.85em}
"""


def esc(v) -> str:
    return html.escape(str(v), quote=True)


def fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"
    return str(v)


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(path: str | Path, caption: str, width: int | None = None) -> str:
    style = f' style="width:{width}px"' if width else ""
    return (
        f'<figure><img src="{png_data_uri(path)}" alt="{esc(caption)}"{style}>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def table(headers: list[str], rows: list[list], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned text, the rest formatted numbers."""
    h = "".join(f'<th class="l">{esc(x)}</th>' if i < left else f"<th>{esc(x)}</th>" for i, x in enumerate(headers))
    body = []
    for r in rows:
        cells = "".join(
            f'<td class="l">{esc(fmt(x))}</td>' if i < left else f"<td>{esc(fmt(x))}</td>" for i, x in enumerate(r)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{h}</tr>{''.join(body)}</table>"


def page(title: str, subtitle: str, body: str) -> str:
    from ferkit import __version__

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p>{body}'
        f'<p class="sub">written by ferkit {esc(__version__)} at {esc(now)}</p></body></html>\n'
    )


def _kpis(items: list[tuple[str, object]]) -> str:
    return "".join(f'<span class="kpi"><b>{esc(fmt(v))}</b>{esc(k)}</span>' for k, v in items)


def write_eval_report(path: str | Path, m: dict, card: dict, files: dict) -> Path:
    """report.html of ``ferkit evaluate``: headline metrics, per-class table, every plot, V/A, error analysis
    and the model card (architecture, parameters, data, training config, checkpoint sha256)."""
    from ferkit.utils import atomic_write_text

    path = Path(path)
    parts = []
    for note in m.get("notes") or []:
        parts.append(f'<div class="note">{esc(note)}</div>')
    parts.append("<h2>Expression</h2>")
    parts.append(
        _kpis(
            [
                ("accuracy", m["accuracy"]),
                ("balanced accuracy", m["balanced_accuracy"]),
                ("macro F1", m["macro_f1"]),
                ("weighted F1", m["weighted_f1"]),
                ("Cohen's kappa", m["cohen_kappa"]),
                ("Krippendorff's alpha", m["krippendorff_alpha"]),
                ("top-2 accuracy", m["top2_accuracy"]),
                ("log loss", m["log_loss"]),
                (f"ECE ({m['ece_bins']} bins)", m["ece"]),
                ("macro ROC AUC", m["roc_auc_macro"]),
                ("macro AP", m["average_precision_macro"]),
                ("images", m["n"]),
            ]
        )
    )
    rows = [
        [c, d["precision"], d["recall"], d["f1"], d["support"], d["predicted"], d["roc_auc"], d["average_precision"]]
        for c, d in m["per_class"].items()
    ]
    parts.append(table(["class", "precision", "recall", "F1", "support", "predicted", "ROC AUC", "AP"], rows))
    figs = [
        (n, c)
        for n, c in (
            ("confusion_matrix.png", "confusion matrix (counts)"),
            ("confusion_matrix_normalized.png", "confusion matrix (row-normalised)"),
            ("roc_curves.png", "ROC curves, one-vs-rest"),
            ("pr_curves.png", "precision-recall curves, one-vs-rest"),
            ("reliability.png", "reliability diagram"),
        )
        if n in files
    ]
    parts.append('<div class="grid">' + "".join(figure(files[n], c, 540) for n, c in figs) + "</div>")
    if m.get("valence") or m.get("arousal"):
        parts.append("<h2>Valence / arousal</h2>")
        keys = ("rmse", "mae", "r2", "pearson_r", "sagr", "ccc")
        rows = [[t] + [m[t].get(k) for k in keys] for t in ("valence", "arousal") if m.get(t)]
        parts.append(table(["target", "RMSE", "MAE", "R²", "Pearson r", "SAGR", "CCC"], rows))
        if "va_scatter.png" in files:
            parts.append(figure(files["va_scatter.png"], "predicted vs true valence and arousal", 900))
    parts.append("<h2>Error analysis</h2>")
    pairs = m.get("confused_pairs") or []
    if pairs:
        parts.append(
            table(
                ["true", "predicted", "count", "share of true class"],
                [[p["true"], p["pred"], p["count"], p["rate"]] for p in pairs],
                left=2,
            )
        )
    else:
        parts.append("<p>No mistakes.</p>")
    if "errors.png" in files:
        parts.append(figure(files["errors.png"], "most confident mistakes"))
    if m.get("top_mistakes"):
        parts.append(
            table(
                ["id", "true", "predicted", "confidence", "p(true)"],
                [[x["id"], x["true"], x["pred"], x["confidence"], x["p_true"]] for x in m["top_mistakes"]],
                left=3,
            )
        )
    parts.append("<h2>Model card</h2>")
    ck = card.get("checkpoint") or {}
    inp = card.get("input") or {}
    data = card.get("data") or {}
    rows = [
        ["architecture", f"{card['architecture']} ({card.get('description') or ''})"],
        ["source", card.get("source") or ""],
        ["task", card.get("task")],
        ["parameters", f"{fmt(card.get('params'))} ({fmt(card.get('trainable_params'))} trainable)"],
        ["model arguments", json.dumps(card.get("model_kwargs") or {})],
        ["classes", ", ".join(card.get("classes") or [])],
        [
            "input",
            f"{inp.get('size')} x {inp.get('channels')} ch, mean {inp.get('mean')}, std {inp.get('std')}"
            + (f", pixel permutation seed {inp['permute_seed']}" if inp.get("permute_seed") is not None else ""),
        ],
        [
            "training data",
            f"{data.get('name') or ''} ({data.get('format') or '?'}) {data.get('path') or ''}"
            + (f", mapping {data['mapping']}" if data.get("mapping") else ""),
        ],
        [
            "evaluated on",
            f"{m['data']['name']} ({m['data']['format']}) {m['data']['path']}, split {m['split']}, "
            f"{m['n']} images, TTA {m['tta']}",
        ],
        ["checkpoint", ck.get("path") or ""],
        ["sha256", ck.get("sha256") or "n/a"],
        ["created", f"{ck.get('created')} with ferkit {ck.get('ferkit_version')}"],
        [
            "inference",
            f"{fmt(m['timing']['images_per_s'], 1)} images/s on {m['timing']['device']} "
            f"({m['timing']['views']} view(s) per image, batch {m['timing']['batch_size']})",
        ],
    ]
    parts.append(table(["", ""], rows, left=2))
    trained = card.get("trained_metrics") or {}
    if trained:
        parts.append("<h3>Metrics recorded at training time</h3>")
        parts.append(table(["metric", "value"], [[k, v] for k, v in trained.items()]))
    parts.append("<h3>Training configuration</h3>")
    parts.append(f"<pre>{esc(json.dumps(card.get('training') or {}, indent=2, default=str))}</pre>")
    title = f"ferkit evaluation: {card['architecture']} on {m['data']['name']} ({m['split']})"
    sub = f"accuracy {fmt(m['accuracy'])}, macro F1 {fmt(m['macro_f1'])} over {m['n']} images"
    atomic_write_text(path, page(title, sub, "".join(parts)))
    return path


def write_compare_report(
    path: str | Path,
    headers: list[str],
    rows: list[list],
    warnings: list[str],
    chart: Path | None,
    legend: list[tuple[str, str]],
) -> Path:
    """compare.html: the side-by-side table, the comparability warnings, the bar chart."""
    from ferkit.utils import atomic_write_text

    path = Path(path)
    parts = [f'<div class="note">{esc(w)}</div>' for w in warnings]
    parts.append(table(headers, rows, left=4))
    if chart is not None and Path(chart).exists():
        parts.append(figure(chart, "key metrics side by side"))
    if legend:
        parts.append("<h2>Sources</h2>")
        parts.append(table(["run", "path"], [list(x) for x in legend], left=2))
    atomic_write_text(path, page("ferkit comparison", f"{len(rows)} runs", "".join(parts)))
    return path
