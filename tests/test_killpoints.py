"""Kill-point tests: a run SIGKILLed at any of its output writes, then resumed, ends exactly like one never stopped.

The run stops early (patience 2: better at epochs 1 and 2, then two flat epochs, the learning rate cut
to nothing), so a resume that forgot the early-stopping state (best value, best epoch, bad epochs,
stopped) would end with another best.pt, best_epoch, stopped_early or number of epochs.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferkit import api
from ferkit.refs import load_checkpoint

SETTINGS = dict(
    model="seed1_cnn",
    epochs=5,
    batch_size=32,
    lr=3e-3,
    optimizer="adamw",
    scheduler="step",
    step_size=2,
    gamma=1e-6,
    patience=2,
    augment="basic",
    seed=7,
)
TIMING = ("time_s", "train_img_s", "train_time_s")
DRIVER = Path(__file__).with_name("killpoint_driver.py")


def _same(a, b, where: str) -> None:
    """Exact equality of nested checkpoint data: tensors bit for bit, everything else ==."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        assert same, f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _results(run: Path) -> dict:
    r = json.loads((run / "results.json").read_text().replace(str(run), "RUN"))
    r["config"].pop("resume")  # how the run was started, not what it computed
    return _untimed(r)


def _metrics_csv(run: Path) -> list[list[str]]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING]
    return [[r[i] for i in keep] for r in rows]


def assert_same_run(ref: Path, run: Path) -> None:
    """Everything a run leaves that is not a clock reading is identical."""
    for name in ("last.pt", "best.pt"):
        a, b = load_checkpoint(ref / name), load_checkpoint(run / name)
        _same(a["state_dict"], b["state_dict"], f"{run / name}: state_dict")
        _same(_untimed(a["metrics"]), _untimed(b["metrics"]), f"{run / name}: metrics")
        assert ("train_state" in a) == ("train_state" in b)
        if "train_state" in a:
            sa, sb = a["train_state"], b["train_state"]
            _same(
                _untimed({k: v for k, v in sa.items() if k != "rng"}),
                _untimed({k: v for k, v in sb.items() if k != "rng"}),
                f"{run / name}: train_state",
            )
    assert _results(ref) == _results(run), run
    assert _metrics_csv(ref) == _metrics_csv(run), run
    for name in ("training_curves.png", "confusion_matrix.png"):
        assert (run / name).stat().st_size > 0
    assert (ref / "predictions.csv").read_text() == (run / "predictions.csv").read_text()
    assert not list(run.glob(".*.tmp")), "a torn write was left behind"


@pytest.fixture(scope="module")
def kill_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    data = api.synthesize(root / "data", n=200, seed=3, size=32)
    r = subprocess.run(
        [sys.executable, str(DRIVER), str(root), str(data), json.dumps(SETTINGS)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return root, json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


@pytest.mark.slow  # ~90 s of CPU for 33 short runs, two side by side; still in the default suite
def test_killed_at_every_write_then_resumed_matches_the_uninterrupted_run(kill_runs):
    root, codes, stderr = kill_runs
    ref = root / "ref" / "run"
    assert codes["ref"] == 0, stderr[-3000:]
    results = json.loads((ref / "results.json").read_text())
    # the run this test needs: best at epoch 2, then stopped early after two flat epochs
    assert (results["best_epoch"], results["stopped_early"], len(results["history"])) == (2, True, 4)
    # 4 epochs x (last.pt, metrics.csv) + 2 x best.pt + the end (best.pt, confusion matrix, predictions,
    # curves, results.json): every one of them was a kill point
    n = codes["writes"]
    assert n == 4 * 2 + 2 + 5, codes
    assert codes["lanes"] == [0, 0] and sorted(map(int, codes["kills"])) == list(range(1, n + 2)), codes
    assert codes["kills"][str(n + 1)] == [0, 0], "a run with no kill point left must finish untouched"
    for k, (killed_rc, resumed_rc) in sorted(codes["kills"].items(), key=lambda kv: int(kv[0])):
        if int(k) <= n:
            assert killed_rc == -9, (k, stderr[-3000:])
        assert resumed_rc == 0, (k, stderr[-3000:])
        assert_same_run(ref, root / f"k{int(k):02d}" / "run")
