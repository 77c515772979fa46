"""`ferkit evaluate`, `ferkit compare` and `ferkit experiment`: real checkpoints trained on synthetic faces,
real files; metrics.json checked against scikit-learn on the written predictions.csv."""

import base64
import csv
import hashlib
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics as S
import torch
from conftest import run_cli

from ferkit import api
from ferkit.checkpoint import build_model, make_checkpoint, save_checkpoint
from ferkit.data.base import FaceDataset
from ferkit.errors import CheckpointError, DataError
from ferkit.evaluation.evaluator import predict_arrays, tta_views
from ferkit.refs import load_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def ds():
    from ferkit.data.synth import generate

    return generate(600, seed=1)


@pytest.fixture(scope="module")
def runs(ds, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cls = api.train(dataset=ds, model="seed1_cnn", epochs=1, out=str(root / "cls"), quiet=True)
    mt = api.train(dataset=ds, model="seed1_cnn", task="multitask", epochs=1, out=str(root / "mt"), quiet=True)
    return {"cls": cls, "mt": mt, "root": root}


def _read_predictions(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _probs(path):
    return np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in _read_predictions(path)])


def _is_png(path):
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


class _Html(HTMLParser):
    VOID = {"img", "meta", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.imgs, self.errors = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def _check_html(path):
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    p = _Html()
    p.feed(text)
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert p.imgs and all(s.startswith("data:image/png;base64,") for s in p.imgs)  # self-contained
    for s in p.imgs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == PNG
    return text


def test_evaluate_classifier_writes_everything_and_matches_sklearn(runs, ds, tmp_path):
    res = api.evaluate(runs["cls"].best_checkpoint, dataset=ds, out=tmp_path / "ev", quiet=True)
    out = tmp_path / "ev"
    for name in (
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "roc_curves.png",
        "pr_curves.png",
        "reliability.png",
        "errors.png",
    ):
        assert _is_png(out / name), name
    assert not (out / "va_scatter.png").exists()  # a classifier has no valence/arousal
    m = json.loads((out / "metrics.json").read_text())
    rows = _read_predictions(out / "predictions.csv")
    classes = m["classes"]
    assert classes == ds.classes and m["n"] == len(rows) == len(ds.splits["test"])
    assert [r["id"] for r in rows] == ds.splits["test"].ids
    t = np.array([classes.index(r["true"]) for r in rows])
    p = np.array([classes.index(r["pred"]) for r in rows])
    P = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    np.testing.assert_array_equal(t, ds.splits["test"].labels)
    np.testing.assert_array_equal(P.argmax(1), p)
    labels = list(range(len(classes)))
    assert m["accuracy"] == pytest.approx(S.accuracy_score(t, p))
    assert m["accuracy"] == pytest.approx(runs["cls"].metrics["test_acc"])  # the trainer's own test pass agrees
    assert m["confusion_matrix"] == runs["cls"].metrics["test_confusion_matrix"]
    assert m["balanced_accuracy"] == pytest.approx(S.balanced_accuracy_score(t, p))
    assert m["macro_f1"] == pytest.approx(S.f1_score(t, p, average="macro", zero_division=0))
    assert m["weighted_f1"] == pytest.approx(S.f1_score(t, p, average="weighted", zero_division=0))
    assert m["cohen_kappa"] == pytest.approx(S.cohen_kappa_score(t, p))
    assert m["top2_accuracy"] == pytest.approx(S.top_k_accuracy_score(t, P, k=2, labels=labels))
    # the CSV holds 9 significant digits: rows sum to 1 within 1e-8
    assert m["log_loss"] == pytest.approx(S.log_loss(t, P / P.sum(1, keepdims=True), labels=labels), rel=1e-6)
    prec, rec, f1, sup = S.precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    for i, c in enumerate(classes):
        pc = m["per_class"][c]
        got = (pc["precision"], pc["recall"], pc["f1"], pc["support"])
        assert got == pytest.approx((prec[i], rec[i], f1[i], sup[i]))
        assert pc["roc_auc"] == pytest.approx(S.roc_auc_score(t == i, P[:, i]), abs=1e-6)
        assert pc["average_precision"] == pytest.approx(S.average_precision_score(t == i, P[:, i]), abs=1e-6)
    assert m["confusion_matrix"] == S.confusion_matrix(t, p, labels=labels).tolist()
    # ECE with 15 equal bins, computed here the plain way
    conf, correct = P.max(1), (p == t)
    ece = sum(
        abs(correct[b].mean() - conf[b].mean()) * b.sum() / len(t)
        for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:], strict=True)
        if (b := (conf > lo) & (conf <= hi)).any()
    )
    assert m["ece"] == pytest.approx(ece, abs=1e-6) and m["ece_bins"] == 15
    # error analysis: the confused pairs are the largest off-diagonal cells, the text file lists them
    cm = np.array(m["confusion_matrix"])
    off = cm - np.diag(np.diag(cm))
    assert m["confused_pairs"][0]["count"] == off.max()
    errors_txt = (out / "errors.txt").read_text()
    assert f"{int(off.sum())} mistakes in {len(t)} images" in errors_txt
    top = m["confused_pairs"][0]
    assert f"{top['true']} -> {top['pred']}: {top['count']}" in errors_txt
    assert len(m["top_mistakes"]) == min(10, int((p != t).sum()))  # the certain case: test_top_mistakes_...
    # report: self-contained HTML with every plot and the model card
    text = _check_html(out / "report.html")
    sha = hashlib.sha256(runs["cls"].best_checkpoint.read_bytes()).hexdigest()
    assert sha in text and m["checkpoint"]["sha256"] == sha
    for s in ("seed1_cnn", "Model card", "Training configuration", "Krippendorff", "most confident mistakes"):
        assert s in text, s
    assert text.count("data:image/png;base64,") >= 6
    assert res.report == out / "report.html" and "accuracy" in res.summary()


def test_multitask_va_metrics_match_sklearn_and_scipy(runs, ds, tmp_path):
    res = api.evaluate(runs["mt"].run_dir, dataset=ds, quiet=True)  # a run folder: its best.pt
    out = runs["mt"].run_dir / "eval_test"  # the default output folder
    assert res.out_dir == out and _is_png(out / "va_scatter.png")
    m = json.loads((out / "metrics.json").read_text())
    rows = _read_predictions(out / "predictions.csv")
    for target in ("valence", "arousal"):
        x = np.array([float(r[f"{target}_true"]) for r in rows])
        y = np.array([float(r[f"{target}_pred"]) for r in rows])
        np.testing.assert_allclose(x, getattr(ds.splits["test"], target), atol=1e-6)
        v = m[target]
        assert v["rmse"] == pytest.approx(np.sqrt(S.mean_squared_error(x, y)), abs=1e-6)
        assert v["mae"] == pytest.approx(S.mean_absolute_error(x, y), abs=1e-6)
        assert v["r2"] == pytest.approx(S.r2_score(x, y), abs=1e-5)
        assert v["pearson_r"] == pytest.approx(scipy.stats.pearsonr(x, y)[0], abs=1e-5)
        assert v["sagr"] == pytest.approx(np.mean(np.sign(x) == np.sign(y)))
        ccc = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        assert v["ccc"] == pytest.approx(ccc, abs=1e-5)
    assert "Valence / arousal" in _check_html(out / "report.html")


def test_batched_inference_equals_one_image_at_a_time(runs, ds):
    from ferkit.data.spec import InputSpec
    from ferkit.data.transforms import to_input

    ck = load_checkpoint(runs["mt"].best_checkpoint)
    model, spec = build_model(ck), InputSpec.from_dict(ck["input"])
    imgs = ds.splits["test"].images[:7]
    got = predict_arrays(model, imgs, spec, batch_size=3)
    with torch.no_grad():
        for i in range(len(imgs)):
            out = model(to_input(imgs[i : i + 1], spec))
            np.testing.assert_allclose(got["probs"][i], torch.softmax(out["logits"], 1)[0].numpy(), atol=1e-5)
            assert got["valence"][i] == pytest.approx(float(out["valence"][0]), abs=1e-5)


def _linear_checkpoint(path, ds, symmetric: bool):
    from ferkit.models import create_model

    torch.manual_seed(0)
    model = create_model("linear", num_classes=ds.num_classes, in_channels=1, input_size=[48, 48])
    with torch.no_grad():
        w = model.head.weight.view(ds.num_classes, 1, 48, 48)
        if symmetric:  # mirror-symmetric weights: the model gives the same output for an image and its mirror
            w.copy_((w + w.flip(-1)) / 2)
    ck = make_checkpoint(
        model,
        model_name="linear",
        model_kwargs={"input_size": [48, 48]},
        num_classes=ds.num_classes,
        in_channels=1,
        task="classify",
        classes=ds.classes,
        input_spec={"size": [48, 48], "channels": 1, "mean": [0.5], "std": [0.25]},
    )
    return save_checkpoint(ck, path)


def test_tta_flip_on_a_mirror_symmetric_model_changes_nothing(ds, tmp_path):
    sym = _linear_checkpoint(tmp_path / "sym.pt", ds, symmetric=True)
    plain = api.evaluate(sym, dataset=ds, out=tmp_path / "plain", quiet=True)
    flip = api.evaluate(sym, dataset=ds, out=tmp_path / "flip", tta="flip", quiet=True)
    assert flip.out_dir == tmp_path / "flip" and flip.metrics["tta"] == "flip"
    pa, pb = _probs(tmp_path / "plain" / "predictions.csv"), _probs(tmp_path / "flip" / "predictions.csv")
    np.testing.assert_allclose(pa, pb, atol=1e-6)
    for k in ("accuracy", "macro_f1", "cohen_kappa"):
        assert plain.metrics[k] == flip.metrics[k]
    assert plain.metrics["log_loss"] == pytest.approx(flip.metrics["log_loss"], rel=1e-6)
    # the same check on an asymmetric model: flip TTA does change the probabilities (the views are real)
    asym = _linear_checkpoint(tmp_path / "asym.pt", ds, symmetric=False)
    ck = load_checkpoint(asym)
    from ferkit.data.spec import InputSpec

    a = predict_arrays(build_model(ck), ds.splits["test"].images, InputSpec.from_dict(ck["input"]))
    b = predict_arrays(build_model(ck), ds.splits["test"].images, InputSpec.from_dict(ck["input"]), tta="flip")
    assert np.abs(a["probs"] - b["probs"]).max() > 1e-3


def test_tencrop_views_are_the_fer2013_protocol():
    x = torch.arange(2 * 1 * 20 * 20, dtype=torch.float32).view(2, 1, 20, 20)
    views = tta_views("tencrop")
    assert len(views) == 10 and len(tta_views("flip")) == 2 and tta_views("none") == [None]
    outs = [v(x) for v in views]
    assert all(o.shape == x.shape for o in outs)

    def crop(top, left):  # 18x18 (90%) at (top, left), resized back to 20x20
        return torch.nn.functional.interpolate(
            x[..., top : top + 18, left : left + 18], size=(20, 20), mode="bilinear", align_corners=False
        )

    for i, (t, left) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]):  # 4 corners, then the centre
        assert torch.allclose(outs[i], crop(t, left))
        assert torch.allclose(outs[i + 5], crop(t, left).flip(-1))  # the mirrored five


def test_tencrop_evaluation_averages_the_ten_views(ds, tmp_path):
    """What ran, not what the config says: the probabilities equal a hand-computed mean over the ten views
    (4 corner + centre crops at 90% of the side resized back, and their mirrors) of an asymmetric model."""
    ck_path = _linear_checkpoint(tmp_path / "asym.pt", ds, symmetric=False)
    r = api.evaluate(ck_path, dataset=ds, out=tmp_path / "tc", tta="tencrop", quiet=True)
    P = _probs(tmp_path / "tc" / "predictions.csv")
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-6)
    assert r.metrics["timing"]["views"] == 10 and 0.0 <= r.metrics["accuracy"] <= 1.0
    model = build_model(load_checkpoint(ck_path)).eval()
    x = (torch.from_numpy(np.asarray(ds.splits["test"].images)).permute(0, 3, 1, 2).double() / 255 - 0.5) / 0.25
    views = []
    for top, left in [(0, 0), (0, 5), (5, 0), (5, 5), (2, 2)]:  # 48 px: 43x43 crops (90%), 5 px free
        c = torch.nn.functional.interpolate(
            x[..., top : top + 43, left : left + 43], size=(48, 48), mode="bilinear", align_corners=False
        )
        views += [c, c.flip(-1)]
    with torch.no_grad():
        per_view = [torch.softmax(model(v.float()), 1).double().numpy() for v in views]
    want = np.mean(per_view, axis=0)
    np.testing.assert_allclose(P, want, atol=1e-5)
    # every view matters: the mean over any 9 of them is visibly different
    assert min(np.abs(np.mean(per_view[:i] + per_view[i + 1 :], axis=0) - want).max() for i in range(10)) > 1e-3


def test_top_mistakes_are_the_most_confident_wrong_predictions(ds, tmp_path):
    """An untrained random linear model is wrong on most images: the mistakes certainly exist."""
    r = api.evaluate(
        _linear_checkpoint(tmp_path / "rnd.pt", ds, symmetric=False), dataset=ds, out=tmp_path / "ev", quiet=True
    )
    rows = _read_predictions(tmp_path / "ev" / "predictions.csv")
    classes = r.metrics["classes"]
    wrong = [(max(float(x[f"p_{c}"]) for c in classes), x) for x in rows if x["true"] != x["pred"]]
    assert len(wrong) > 20
    wrong.sort(key=lambda w: -w[0])
    top = r.metrics["top_mistakes"]
    assert len(top) == 10
    for got, (conf, row) in zip(top, wrong, strict=False):
        assert got["confidence"] == pytest.approx(conf, abs=1e-6)
        assert got["true"] == row["true"] != got["pred"] == row["pred"]
        assert got["p_true"] == pytest.approx(float(row[f"p_{row['true']}"]), abs=1e-6)
    assert [g["confidence"] for g in top] == sorted((g["confidence"] for g in top), reverse=True)
    text = (tmp_path / "ev" / "errors.txt").read_text()
    assert f"{len(wrong)} mistakes in {len(rows)} images" in text and top[0]["id"] in text


def test_class_mismatch_is_one_line_and_class_map_uses_the_intersection(runs, ds, tmp_path):
    from ferkit.data.relabel import relabel

    ck = runs["cls"].best_checkpoint
    renamed = relabel(ds, {c: ("anger" if c == "angry" else c) for c in ds.classes})  # AffectNet's name
    with pytest.raises(CheckpointError) as e:
        api.evaluate(ck, dataset=renamed, out=tmp_path / "x", quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and "only in the checkpoint: angry" in msg and "only in the dataset: anger" in msg
    assert "--class-map to evaluate on the 7 shared classes (anger = angry)" in msg
    # --class-map matches names and expression synonyms: all 7 classes, every image
    r = api.evaluate(ck, dataset=renamed, out=tmp_path / "syn", class_map=True, quiet=True)
    assert r.metrics["classes"] == ds.classes and r.metrics["n"] == len(ds.splits["test"])
    assert any("matched by synonym: anger = angry" in n for n in r.metrics["notes"])
    test_acc = runs["cls"].metrics["test_acc"]  # = evaluate's accuracy on ds (checked above)
    assert r.metrics["accuracy"] == pytest.approx(test_acc)
    # superset checkpoint, subset dataset (3 classes): evaluate on the intersection, and say so
    fer3 = relabel(ds, "fer3")
    with pytest.raises(CheckpointError, match="only in the checkpoint: angry, disgust, fear, surprise"):
        api.evaluate(ck, dataset=fer3, out=tmp_path / "x", quiet=True)
    r = api.evaluate(ck, dataset=fer3, out=tmp_path / "cm", class_map=True, quiet=True)
    assert r.metrics["classes"] == ["happy", "sad", "neutral"] and r.metrics["n"] == len(fer3.splits["test"])
    assert any("3 classes shared" in n and "renormalised" in n for n in r.metrics["notes"])
    header = (tmp_path / "cm" / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith("id,true,pred,confidence,p_happy,p_sad,p_neutral")
    # a dataset class the checkpoint does not know: its images are left out
    other = relabel(ds, {c: ("grumpy" if c == "angry" else c) for c in ds.classes})
    r = api.evaluate(ck, dataset=other, out=tmp_path / "cm6", class_map=True, quiet=True)
    n_grumpy = int((other.splits["test"].labels == other.classes.index("grumpy")).sum())
    assert len(r.metrics["classes"]) == 6 and r.metrics["n"] == len(ds.splits["test"]) - n_grumpy > 0
    assert any("left out" in n for n in r.metrics["notes"])
    # the same names in another order are matched by name without --class-map
    reordered = relabel(ds, {c: c for c in reversed(ds.classes)})
    r = api.evaluate(ck, dataset=reordered, out=tmp_path / "ro", quiet=True)
    assert r.metrics["accuracy"] == pytest.approx(test_acc) and "matched by name" in r.metrics["notes"][0]


def test_empty_split_is_an_error_not_a_zero_report(runs, ds, tmp_path):
    s = ds.splits["test"]
    empty = FaceDataset(
        name="empty",
        format="synth",
        root="mem:empty",
        classes=ds.classes,
        splits={"train": ds.splits["train"], "test": s.subset(np.zeros(0, dtype=np.int64))},
    )
    with pytest.raises(DataError, match="no 'test' split"):
        api.evaluate(runs["cls"].best_checkpoint, dataset=empty, out=tmp_path / "e", quiet=True)
    with pytest.raises(DataError, match="no 'val' split"):
        api.evaluate(runs["cls"].best_checkpoint, dataset=empty, split="val", out=tmp_path / "e", quiet=True)
    assert not (tmp_path / "e" / "metrics.json").exists()


def test_tensorboard_and_wandb_offline_logging(runs, ds, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "tracked"
    api.evaluate(runs["cls"].best_checkpoint, dataset=ds, out=out, quiet=True, tensorboard=True, wandb=True)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    m = json.loads((out / "metrics.json").read_text())
    assert acc.Scalars("eval_test/accuracy")[0].value == pytest.approx(m["accuracy"])
    assert "eval_test/confusion_matrix" in acc.Tags()["images"]
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))


def test_compare_table_flags_different_class_sets(runs, ds, tmp_path):
    from ferkit.data.relabel import relabel

    fer3 = api.train(dataset=relabel(ds, "fer3"), model="seed1_cnn", epochs=1, out=str(tmp_path / "fer3"), quiet=True)
    ev = api.evaluate(runs["mt"].best_checkpoint, dataset=ds, out=tmp_path / "mt_eval", quiet=True)
    res = api.compare([runs["cls"].run_dir, tmp_path / "mt_eval", fer3.run_dir], out=tmp_path / "cmp", quiet=True)
    rows = {r["name"]: r for r in res["rows"]}
    assert set(rows) == {"cls", "mt_eval", "fer3"}
    cls_results = json.loads((runs["cls"].run_dir / "results.json").read_text())
    assert rows["cls"]["accuracy"] == pytest.approx(cls_results["metrics"]["test_acc"])
    assert rows["cls"]["params"] == cls_results["params"] and rows["cls"]["train_time_s"] == cls_results["train_time_s"]
    assert rows["mt_eval"]["accuracy"] == ev.metrics["accuracy"]
    assert rows["mt_eval"]["valence_ccc"] == ev.metrics["valence"]["ccc"]
    assert rows["mt_eval"]["train_time_s"] is not None  # found beside the evaluated checkpoint
    assert rows["cls"]["class_set"] == rows["mt_eval"]["class_set"] == "A" and rows["fer3"]["class_set"] == "B"
    assert any("different class sets" in w and "3 classes (happy, sad, neutral): fer3" in w for w in res["warnings"])
    out = tmp_path / "cmp"
    with open(out / "compare.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["cls", "mt_eval", "fer3"]
    assert float(table[0]["accuracy"]) == pytest.approx(rows["cls"]["accuracy"], rel=1e-5)
    assert {"params", "train_time_s", "macro_f1", "valence_ccc"} <= set(table[0])
    md = (out / "compare.md").read_text()
    assert md.startswith("| run | kind | model | class set |") and "different class sets" in md
    assert _is_png(out / "compare.png")
    assert "different class sets" in _check_html(out / "compare.html")
    # one class set: no warning
    assert api.compare([runs["cls"].run_dir, runs["mt"].run_dir], out=tmp_path / "cmp2", quiet=True)["warnings"] == []


def test_permute_experiment_reports_both_accuracies(tmp_path):
    from ferkit.data.synth import generate

    r = api.experiment_permute(
        dataset=generate(350, seed=4, size=28), model="fashion_cnn", epochs=1, out=tmp_path / "perm", quiet=True
    )
    saved = json.loads((tmp_path / "perm" / "permute.json").read_text())
    assert saved["original_acc"] == r["original_acc"] and saved["permuted_acc"] == r["permuted_acc"]
    for k in ("original_acc", "permuted_acc"):
        assert 0.0 <= r[k] <= 1.0
    assert r["difference"] == pytest.approx(r["original_acc"] - r["permuted_acc"]) and r["split"] == "test"
    assert load_checkpoint(tmp_path / "perm" / "permuted" / "best.pt")["input"]["permute_seed"] == 0
    assert load_checkpoint(tmp_path / "perm" / "original" / "best.pt")["input"]["permute_seed"] is None
    md = (tmp_path / "perm" / "permute.md").read_text()
    assert "pixel-permuted (seed 0)" in md and "difference" in md


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in err[0], (f, err[0])


def test_cli_evaluate_compare_and_their_errors(tmp_path, synth_dir, runs, capsys):
    # the checkpoint knows 'angry'; the data relabelled with AffectNet's own word says 'anger'
    ck = runs["cls"].best_checkpoint
    from ferkit.data.synth import CLASSES

    rename = ",".join(f"{c}={'anger' if c == 'angry' else c}" for c in CLASSES)  # every class kept, one renamed
    _one_line_error(
        run_cli(
            "evaluate",
            "--checkpoint",
            ck,
            "--data",
            synth_dir,
            "--mapping",
            rename,
            "--out",
            tmp_path / "mm",
            "--quiet",
        ),
        "only in the checkpoint: angry",
        "only in the dataset: anger",
        "--class-map",
        "anger = angry",
    )
    assert not (tmp_path / "mm").exists()
    out = tmp_path / "ev"
    r = run_cli(
        "evaluate",
        "--checkpoint",
        ck,
        "--data",
        synth_dir,
        "--mapping",
        rename,
        "--class-map",
        "--tta",
        "flip",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr
    assert f"report: {out / 'report.html'}" in r.stdout and "accuracy" in r.stdout and "macro F1" in r.stdout
    assert "note: --class-map: evaluated on the 7 classes shared" in r.stdout and "anger = angry" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["tta"] == "flip" and len(m["classes"]) == 7 and m["n"] == len(_read_predictions(out / "predictions.csv"))
    from ferkit.cli import main  # compare in-process (saves a process start; its errors go through run_cli below)

    assert main(["compare", str(runs["cls"].run_dir), str(out), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr()
    assert "| run | kind |" in printed.out and "different datasets" in printed.err
    assert "different class sets" not in printed.err  # anger = angry: the same expressions
    assert (tmp_path / "cmp" / "compare.html").exists()
    # bad input: one line on stderr, exit code 2
    _one_line_error(
        run_cli("evaluate", "--checkpoint", tmp_path / "nope.pt", "--data", synth_dir), "nope.pt", "no such checkpoint"
    )
    _one_line_error(
        run_cli("evaluate", "--checkpoint", ck, "--data", tmp_path / "nodata"), "nodata", "no such file or directory"
    )
    _one_line_error(run_cli("compare", tmp_path / "nowhere"), "nowhere")
    _one_line_error(run_cli("experiment"), "permute or freeze-sweep")


def test_evaluate_uses_the_training_runs_split_and_names_its_folder(tmp_path):
    """A dataset without predefined splits: evaluate splits it with the checkpoint's seed and fractions, so its test
    split is the training run's (README: "a dataset without predefined splits yields the training run's test
    split"); the default output folder is <run>/eval_<split>[_<tta>], a split alias (validation) means val."""
    from ferkit.data.synth import write

    data = write(tmp_path / "data", n=200, seed=4, layout="affectnet")
    (data / "splits.csv").unlink()  # no predefined splits: a seeded stratified split
    res = api.train(
        data=str(data),
        model="linear",
        epochs=1,
        seed=5,
        test_fraction=0.3,
        val_fraction=0.2,
        out=str(tmp_path / "run"),
        quiet=True,
    )
    trained = [r["id"] for r in _read_predictions(res.run_dir / "predictions.csv")]
    sizes = json.loads((res.run_dir / "results.json").read_text())["dataset"]["sizes"]
    assert sizes["test"] > 50 and sizes["val"] > 30  # 0.3 and 0.2 of 200, not the default 0.1
    ev = api.evaluate(res.run_dir, data=str(data), quiet=True)
    assert ev.out_dir == res.run_dir / "eval_test"
    evaluated = [r["id"] for r in _read_predictions(ev.out_dir / "predictions.csv")]
    assert evaluated[: len(trained)] == trained and len(evaluated) == sizes["test"], (len(evaluated), sizes)
    flip = api.evaluate(res.run_dir, data=str(data), tta="flip", quiet=True)
    assert flip.out_dir == res.run_dir / "eval_test_flip" and (res.run_dir / "eval_test" / "metrics.json").is_file()
    val = api.evaluate(res.run_dir, data=str(data), split="validation", quiet=True)
    assert val.out_dir == res.run_dir / "eval_val" and val.metrics["split"] == "val"
    val_ids = {r["id"] for r in _read_predictions(val.out_dir / "predictions.csv")}
    assert len(val_ids) == sizes["val"] and not val_ids & set(evaluated)
