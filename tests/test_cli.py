"""The `ferkit` command end to end (real subprocesses, real files) and its one-line errors with exit code 2."""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image


def _one_line_error(r, *fragments):
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in err[0], (f, err[0])


def test_help_shows_working_examples():
    r = run_cli("--help")
    assert r.returncode == 0 and "ferkit train --data" in r.stdout and "ferkit demo" in r.stdout
    r = run_cli("train", "--help")
    assert r.returncode == 0 and "--resume" in r.stdout and "torchrun --standalone --nproc_per_node 2" in r.stdout


def test_models_lists_every_source_architecture():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    for name in (
        "seed1_cnn",
        "fashion_cnn",
        "resnet18",
        "resnet50",
        "efficientnet_b0",
        "mobilenet_v2",
        "vggface",
        "vgg11_avgpool",
        "vgg11_conv3x2",
        "vgg11_irb",
        "vgg11_conv3x4",
        "vgg11_conv5x4",
        "vgg2_4_ilrb_2",
    ):
        assert name in r.stdout, name
    rows = json.loads(run_cli("models", "--json").stdout)
    seed1 = next(r for r in rows if r["name"] == "seed1_cnn")
    assert seed1["params"] > 290_000 and seed1["input"].startswith("48x48")
    # aligned: every column of every row starts where its header does (long sources used to shift the rest)
    lines = r.stdout.splitlines()
    header, table = lines[0], lines[2::2]
    assert len(table) == len(rows) and all(d.startswith("    ") and d.strip() for d in lines[3::2])
    for row, text in zip(rows, table, strict=True):
        for key, head in (("input", "input"), ("channels", "channels"), ("source", "source")):
            assert text.index(row[key], len(row["name"])) == header.index(head), (key, text)


def test_train_inspect_info_predict_end_to_end(tmp_path, synth_dir):
    r = run_cli("data", "inspect", synth_dir)
    assert r.returncode == 0, r.stderr
    assert "affectnet" in r.stdout and "train" in r.stdout and "happy" in r.stdout

    out = tmp_path / "run"
    r = run_cli("train", "--data", synth_dir, "--model", "seed1_cnn", "--epochs", "2", "--out", out, "--quiet")
    assert r.returncode == 0, r.stderr
    assert (out / "best.pt").exists() and (out / "metrics.csv").read_text().count("\n") == 3  # header + 2 epochs

    r = run_cli("info", out / "best.pt")
    assert r.returncode == 0 and "seed1_cnn" in r.stdout and "happy" in r.stdout

    # predict: good crops, a folder, a corrupt file, a text file; the run continues and exit 2 reports failures
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    src = sorted((synth_dir / "images").glob("*.png"))[:3]
    for p in src:
        shutil.copy(p, imgs / p.name)
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(imgs / "colour_big.jpg")
    (imgs / "broken.png").write_bytes(src[0].read_bytes()[:40])
    (imgs / "notes.jpg").write_text("not an image")
    r = run_cli("predict", "--checkpoint", out / "best.pt", imgs, "--no-detect")
    assert r.returncode == 2
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 6
    ok = [x for x in rows if x["status"] == "ok"]
    bad = {os.path.basename(x["path"]): x["reason"] for x in rows if x["status"] == "error"}
    assert len(ok) == 4 and set(bad) == {"broken.png", "notes.jpg"}
    assert all(len(x["faces"]) == 1 and abs(sum(x["faces"][0]["probabilities"].values()) - 1) < 1e-4 for x in ok)
    assert "4 ok" in r.stderr and "2 failed" in r.stderr


def test_predict_matches_trainer_predictions(tmp_path, synth_dir):
    """The checkpoint alone reproduces the trainer's own test predictions (same preprocessing)."""
    from ferkit import api

    res = api.train(data=str(synth_dir), model="seed1_cnn", epochs=1, out=str(tmp_path / "r"), quiet=True)
    lines = (res.run_dir / "predictions.csv").read_text().splitlines()[1:6]
    ids = [line.split(",")[0] for line in lines]
    trainer_pred = [line.split(",")[2] for line in lines]
    paths = [i if os.path.isabs(i) else str(synth_dir / "images" / f"{i}.png") for i in ids]
    preds = api.predict(res.best_checkpoint, paths, detect=False)
    assert [p.status for p in preds] == ["ok"] * 5
    assert [p.faces[0].label for p in preds] == trainer_pred


@pytest.mark.parametrize(
    "case",
    [
        "missing_data",
        "bad_columns",
        "bad_row",
        "unknown_model",
        "bad_option",
        "corrupt_checkpoint",
        "mismatched_resume",
        "missing_checkpoint",
        "bad_recipe",
    ],
)
def test_bad_input_gives_one_line_and_exit_2(tmp_path, synth_dir, case):
    if case == "missing_data":
        _one_line_error(run_cli("train", "--data", tmp_path / "nope.csv", "--out", tmp_path / "o"), "nope.csv")
    elif case == "bad_columns":
        p = tmp_path / "fer.csv"
        p.write_text("label,image\n0,1 2 3\n")
        _one_line_error(run_cli("train", "--data", p, "--out", tmp_path / "o"), "fer.csv", "emotion")
    elif case == "bad_row":
        p = tmp_path / "fer.csv"
        good = " ".join(["0"] * 48 * 48)
        p.write_text(f"emotion,pixels,Usage\n0,{good},Training\n3,1 2 3,Training\n")
        _one_line_error(run_cli("data", "inspect", p), "fer.csv", "3")
    elif case == "unknown_model":
        _one_line_error(
            run_cli("train", "--data", synth_dir, "--model", "resnet9000", "--out", tmp_path / "o"), "resnet9000"
        )
    elif case == "bad_option":
        _one_line_error(
            run_cli("train", "--data", synth_dir, "--optimizer", "rmsprop", "--out", tmp_path / "o"), "rmsprop"
        )
    elif case == "corrupt_checkpoint":
        p = tmp_path / "bad.pt"
        p.write_bytes(b"\x00garbage" * 100)
        _one_line_error(run_cli("predict", "--checkpoint", p, synth_dir / "images"), "bad.pt")
    elif case == "missing_checkpoint":
        _one_line_error(run_cli("info", tmp_path / "none.pt"), "none.pt")
    elif case == "mismatched_resume":
        out = tmp_path / "a"
        r = run_cli("train", "--data", synth_dir, "--model", "linear", "--epochs", "1", "--out", out, "--quiet")
        assert r.returncode == 0, r.stderr
        _one_line_error(
            run_cli(
                "train",
                "--data",
                synth_dir,
                "--model",
                "seed1_cnn",
                "--resume",
                out / "last.pt",
                "--out",
                tmp_path / "b",
                "--quiet",
            ),
            "last.pt",
            "linear",
        )
    elif case == "bad_recipe":
        _one_line_error(run_cli("train", "--recipe", "nonexistent", "--data", synth_dir), "nonexistent")
