"""Source 002's layer-freezing experiment: one run per frozen depth, then a table."""

from __future__ import annotations

from pathlib import Path

from ferkit.training.config import TrainConfig
from ferkit.utils import atomic_write_json, atomic_write_text


def freeze_sweep(cfg: TrainConfig, dataset=None, depths: list[str] | None = None) -> list[dict]:
    """Train ``cfg`` once with nothing frozen and once per stage depth (frozen up to and including it).

    Writes ``OUT/freeze_<depth>/`` runs plus ``OUT/sweep.csv``, ``sweep.md`` and ``sweep.json``.
    """
    from ferkit.models import create_model, get_card
    from ferkit.models.freeze import freezable_depths
    from ferkit.training.trainer import Trainer

    if dataset is None:
        dataset = cfg.load_dataset()
        cfg = cfg.merged({"mapping": None}) if cfg.mapping else cfg
    if depths is None:
        probe = create_model(
            get_card(cfg.model).name,
            num_classes=dataset.num_classes,
            in_channels=cfg.in_channels or (3 if cfg.pretrained else dataset.channels),
            task=cfg.task,
            **({"head": cfg.head} if cfg.head else {}),
        )
        depths = freezable_depths(probe)
    out = Path(cfg.out)
    rows = []
    for depth in ["none"] + list(depths):
        run_cfg = cfg.merged({"out": str(out / f"freeze_{depth}"), "freeze_upto": None if depth == "none" else depth})
        if depth == "none":
            run_cfg.freeze_upto = None
        res = Trainer(run_cfg, dataset=dataset).fit()
        m = res.metrics
        rows.append(
            {
                "frozen_upto": depth,
                "best_epoch": res.best_epoch,
                "val_acc": m.get("val_acc"),
                "test_acc": m.get("test_acc"),
                "run": str(res.run_dir),
            }
        )
    keys = ["frozen_upto", "best_epoch", "val_acc", "test_acc", "run"]
    csv_lines = [",".join(keys)] + [",".join("" if r[k] is None else str(r[k]) for k in keys) for r in rows]
    atomic_write_text(out / "sweep.csv", "\n".join(csv_lines) + "\n")
    atomic_write_text(out / "sweep.md", format_sweep(rows) + "\n")
    atomic_write_json(out / "sweep.json", rows)
    return rows


def format_sweep(rows: list[dict]) -> str:
    best = max((r for r in rows if r["val_acc"] is not None), key=lambda r: r["val_acc"], default=None)
    lines = ["| frozen up to | best epoch | val acc | test acc |", "|---|---|---|---|"]
    for r in rows:
        f = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
        mark = " **best**" if r is best else ""
        lines.append(f"| {r['frozen_upto']}{mark} | {r['best_epoch']} | {f(r['val_acc'])} | {f(r['test_acc'])} |")
    return "\n".join(lines)
