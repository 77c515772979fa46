"""GPU check (``make gpu-check``): what only a CUDA machine can show, in one table and one JSON file.

Sections, each in its own process with its own time limit (a crash, a hang or a CUDA error in one is a row
of the table; the rest still run), all within one global time budget (default 480 s):

  cuda_tests   the tests marked ``@pytest.mark.cuda`` (skipped on CPU machines), run with pytest
  train        training img/s, ferkit vs the textbook loop (bench/train_throughput.py), seed1_cnn and
               resnet18 at 48x48 on the GPU; goal >= 3x
  amp          ``--amp fp16`` and ``--amp bf16`` really used: the dtype a forward hook sees on a conv output
  oom          a batch that really does not fit (memory capped for the process, resnet18 at 1024 px):
               the trainer halves its batch down to 1, then ``ferkit train`` prints one line, exit 2
  predict      ``ferkit predict FOLDER --device cuda`` photos/s (RetinaFace + classifier, whole process),
               torch backend, and ONNX Runtime when its CUDA provider is installed
  ddp          ``torchrun -m ferkit train`` on every GPU present, NCCL backend (seen in NCCL's own log)

Without CUDA it says so in one line, then checks its own plumbing (every section's function is called in
its dry mode through the same runner, the JSON is written) and exits 0.

    python bench/gpu_check.py                       # --json gpu_check.json --budget 480
    python bench/gpu_check.py --only train,amp      # some sections
Not a test of ferkit's results on a CPU machine: a status per section, the figures, the failures' last lines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


@dataclass
class Context:
    """What a section gets: a scratch folder, and whether to only check its plumbing (no CUDA work)."""

    tmp: Path
    dry: bool


def _run(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=dict(os.environ, **(env or {}))
    )


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _synth(ctx: Context, n: int = 600) -> Path:
    from ferkit.data.synth import write

    root = ctx.tmp / f"synth_{n}"
    if not root.exists():
        write(root, n=n, seed=0, layout="folder")
    return root


def _ferkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "ferkit", *args]


def _parse_cli(args: list[str]) -> None:
    """Dry mode: the arguments a section would run ferkit with must parse (argparse exits on a bad one)."""
    from ferkit.cli import build_parser

    build_parser().parse_args(args)


# ------------------------------------------------------------------------------------------------ sections
def section_cuda_tests(ctx: Context) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())
    if not files:
        return {"status": "fail", "figure": "no test is marked @pytest.mark.cuda"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-m", "cuda", *files]
    if ctx.dry:
        cmd.append("--collect-only")
    r = _run(cmd, timeout=300, cwd=ROOT)
    summary = _tail(r.stdout, 1)
    if ctx.dry:
        return {"status": "plumbing" if r.returncode == 0 else "fail", "figure": summary, "files": files}
    ok = r.returncode == 0 and "skipped" not in summary
    return {
        "status": "ok" if ok else "fail",
        "figure": summary,
        "files": files,
        **({} if ok else {"tail": _tail(r.stdout, 20)}),
    }


def section_train(ctx: Context) -> dict:
    sys.path.insert(0, str(BENCH))
    import train_throughput as tt

    if ctx.dry:
        from ferkit.training.config import TrainConfig

        for model in ("seed1_cnn", "resnet18"):
            TrainConfig(model=model, epochs=1, batch_size=64, out=str(ctx.tmp / "x"), device="cuda").validate()
        assert callable(tt.baseline_img_s) and callable(tt.ferkit_img_s)
        return {"status": "plumbing"}
    root = tt.write_folder(ctx.tmp / "faces", 3000)
    rows = {}
    for model, images in (("seed1_cnn", 6000), ("resnet18", 3000)):
        base = tt.baseline_img_s(root / "train", model, images, augment=True, device="cuda")
        ours, _ = tt.ferkit_img_s(root, model, images, True, ctx.tmp / f"run_{model}", device="cuda")
        rows[model] = {"textbook_img_s": round(base), "ferkit_img_s": round(ours), "ratio": round(ours / base, 2)}
    worst = min(r["ratio"] for r in rows.values())
    return {
        "status": "ok" if worst >= 3 else "below goal",
        "figure": ", ".join(
            f"{m} {r['ferkit_img_s']} vs {r['textbook_img_s']} img/s = {r['ratio']}x" for m, r in rows.items()
        )
        + " (goal >= 3x)",
        "models": rows,
    }


def section_amp(ctx: Context) -> dict:
    import torch

    from ferkit import api

    seen: dict[str, set] = {}

    def hook_after_first_epoch(name: str) -> Callable:
        def callback(trainer, epoch, row):
            if epoch == 1:  # epoch 2's forwards are recorded: the hook sees what autocast really ran in
                conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
                conv.register_forward_hook(lambda mod, inp, out: seen[name].add(str(out.dtype)))

        return callback

    wanted = {"fp16": "torch.float16", "bf16": "torch.bfloat16"}
    if ctx.dry:
        from ferkit.training.config import TrainConfig

        for amp in wanted:
            TrainConfig(model="seed1_cnn", amp=amp, out=str(ctx.tmp / "x")).validate()
        return {"status": "plumbing"}
    data = _synth(ctx)
    for amp in wanted:
        seen[amp] = set()
        api.train(
            data=str(data),
            model="seed1_cnn",
            epochs=2,
            batch_size=64,
            amp=amp,
            device="cuda",
            out=str(ctx.tmp / f"amp_{amp}"),
            quiet=True,
            callbacks=[hook_after_first_epoch(amp)],
        )
    ok = all(seen[a] == {wanted[a]} for a in wanted)
    return {
        "status": "ok" if ok else "fail",
        "figure": "; ".join(f"--amp {a}: conv output {sorted(seen[a])}" for a in wanted),
        "dtypes": {a: sorted(v) for a, v in seen.items()},
    }


OOM_CAP_MB = 256  # resnet18 at 1024 px needs far more than this for one image (activations alone ~0.5 GB)


def section_oom(ctx: Context) -> dict:
    data = ctx.tmp / "synth_600"
    args = [
        "train",
        "--data",
        str(data),
        "--model",
        "resnet18",
        "--no-pretrained",
        "--in-channels",
        "1",
        "--image-size",
        "1024",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--device",
        "cuda",
        "--out",
        str(ctx.tmp / "oom_run"),
    ]
    if ctx.dry:
        _parse_cli(args)
        return {"status": "plumbing"}
    _synth(ctx)
    import torch

    from ferkit.cli import main

    # a real CUDA out-of-memory, made certain: the caching allocator refuses to go past the cap
    torch.cuda.set_per_process_memory_fraction(OOM_CAP_MB * 2**20 / torch.cuda.get_device_properties(0).total_memory)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip() and "warning" not in ln]
    halvings = out.getvalue().count("out of memory: batch halved")
    ok = code == 2 and len(lines) == 1 and "out of memory" in lines[0] and halvings >= 1
    return {
        "status": "ok" if ok else "fail",
        "exit_code": code,
        "halvings": halvings,
        "figure": f"exit {code} after {halvings} halvings (16 -> 1): {lines[-1] if lines else '(no message)'}",
    }


def _photos(ctx: Context, n: int) -> Path:
    sys.path.insert(0, str(BENCH))
    import predict_throughput as pt

    folder = ctx.tmp / "photos"
    if not folder.exists():
        folder.mkdir()
        pt.make_photos(folder, n)
    return folder


def section_predict(ctx: Context) -> dict:
    n = 300
    folder = ctx.tmp / "photos"
    runs = {"torch": ["--backend", "torch"]}
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            runs["onnxruntime-cuda"] = ["--backend", "onnx"]
    except ImportError:
        pass
    cmds = {
        name: [
            "predict",
            str(folder),
            "--device",
            "cuda",
            "--detector",
            "retinaface",
            *extra,
            "--quiet",
            "--format",
            "jsonl",
            "--output",
            str(ctx.tmp / f"pred_{name}.jsonl"),
        ]
        for name, extra in runs.items()
    }
    if ctx.dry:
        for args in cmds.values():
            _parse_cli(args)
        return {"status": "plumbing", "backends": list(cmds)}
    _photos(ctx, n)
    res = {}
    for name, args in cmds.items():
        t0 = time.perf_counter()
        r = _run(_ferkit(*args), timeout=240)
        secs = time.perf_counter() - t0
        if r.returncode != 0:
            res[name] = {"error": _tail(r.stderr, 3)}
            continue
        rows = [json.loads(ln) for ln in Path(args[-1]).read_text().splitlines() if ln.strip()]
        res[name] = {
            "photos_s": round(n / secs, 1),
            "whole_process_s": round(secs, 2),
            "rows": len(rows),
            "faces": sum(len(r.get("faces") or []) for r in rows),
        }
    ok = all("error" not in v and v["rows"] == n for v in res.values())
    note = "" if "onnxruntime-cuda" in res else " (no ONNX Runtime CUDA provider installed)"
    return {
        "status": "ok" if ok else "fail",
        "backends": res,
        "figure": ", ".join(
            f"{k} {v['photos_s']} photos/s ({v['faces']} faces)" if "error" not in v else f"{k} failed: {v['error']}"
            for k, v in res.items()
        )
        + note,
    }


def section_ddp(ctx: Context) -> dict:
    import torch

    gpus = torch.cuda.device_count() if not ctx.dry else 2
    out = ctx.tmp / "ddp_run"
    train = [
        "train",
        "--data",
        str(ctx.tmp / "synth_600"),
        "--model",
        "seed1_cnn",
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "auto",
        "--out",
        str(out),
        "--quiet",
    ]
    if ctx.dry:
        _parse_cli(train)
        import torch.distributed

        return {"status": "plumbing" if torch.distributed.is_available() else "fail"}
    _synth(ctx)
    r = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(gpus),
            "-m",
            "ferkit",
            *train,
        ],
        timeout=240,
        env={"NCCL_DEBUG": "INFO"},
    )
    if r.returncode != 0:
        return {"status": "fail", "figure": _tail(r.stderr, 3)}
    results = json.loads((out / "results.json").read_text())
    nccl = "NCCL INFO" in r.stdout + r.stderr
    ok = results["world_size"] == gpus and nccl
    return {
        "status": "ok" if ok else "fail",
        "world_size": results["world_size"],
        "nccl_seen": nccl,
        "figure": f"{gpus} GPU(s), world {results['world_size']}, NCCL {'seen' if nccl else 'NOT seen'}, "
        f"{results['history'][0]['train_img_s']} img/s",
    }


SECTIONS: dict[str, tuple[Callable[[Context], dict], int]] = {  # name -> (function, seconds it may take)
    "cuda_tests": (section_cuda_tests, 90),
    "train": (section_train, 150),
    "amp": (section_amp, 60),
    "oom": (section_oom, 60),
    "predict": (section_predict, 120),
    "ddp": (section_ddp, 90),
}


# ------------------------------------------------------------------------------------------------ runner
def run_section(name: str, tmp: Path, dry: bool, limit: float) -> dict:
    """One section in its own process (``--section``): its result, or what went wrong as a row."""
    result_file = tmp / f"{name}.result.json"
    cmd = [sys.executable, __file__, "--section", name, "--tmp", str(tmp), "--result", str(result_file)]
    t0 = time.perf_counter()
    try:
        r = _run(cmd + (["--dry"] if dry else []), timeout=limit)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "figure": f"stopped after {limit:.0f} s", "seconds": round(limit, 1)}
    res = (
        json.loads(result_file.read_text())
        if result_file.exists()
        else {"status": "crashed", "figure": f"exit {r.returncode}: {_tail(r.stderr, 2)}"}
    )
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return res


def child(name: str, tmp: Path, result: Path, dry: bool) -> None:
    os.environ["FERKIT_CACHE_DIR"] = str(tmp / "cache")  # the check leaves nothing in the user's cache
    try:
        res = SECTIONS[name][0](Context(tmp=tmp, dry=dry))
    except Exception as e:  # one failing section is a row of the table, never the end of the check
        res = {"status": "error", "figure": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    result.write_text(json.dumps(res, default=str))


def table(results: dict) -> str:
    rows = ["| section | status | seconds | figure |", "|---|---|---|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {r.get('figure', '')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default="gpu_check.json", help="where the results go (default gpu_check.json)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for all sections together (default 480)")
    ap.add_argument("--only", help="comma-separated sections: " + ",".join(SECTIONS))
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--dry", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.section:
        child(a.section, Path(a.tmp), Path(a.result), a.dry)
        return 0
    names = a.only.split(",") if a.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    import torch

    cuda = torch.cuda.is_available()
    deadline = time.monotonic() + a.budget
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="ferkit-gpu-check-") as tmp:
        for name in names:
            left = deadline - time.monotonic()
            if left < 10:
                results[name] = {"status": "not run", "figure": f"the {a.budget:.0f} s budget was spent"}
                continue
            results[name] = run_section(name, Path(tmp), dry=not cuda, limit=min(SECTIONS[name][1], left))
            if cuda:
                print(f"{name}: {results[name]['status']} ({results[name].get('seconds')} s)", flush=True)
            elif results[name]["status"] != "plumbing":
                print(f"gpu_check: section {name} fails its plumbing check: {results[name].get('figure')}")
    report = {
        "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else None,
        "gpus": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "budget_s": a.budget,
        "sections": results,
    }
    from ferkit.utils import atomic_write_json

    atomic_write_json(a.json, report)
    if cuda:
        print(table(results))
        print(f"gpu_check: results in {a.json}")
        return 0
    broken = [n for n, r in results.items() if r["status"] != "plumbing"]
    print(
        f"gpu_check: no CUDA device here, nothing measured; plumbing of {len(results) - len(broken)}/"
        f"{len(results)} sections checked, results in {a.json}"
    )
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
