"""bench/gpu_check.py (``make gpu-check``) on a machine without CUDA: one line, exit 0, every section's plumbing
checked through the same per-section runner a CUDA machine uses, the JSON written."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA path is what `make gpu-check` itself runs")
def test_without_cuda_it_says_so_in_one_line_and_checks_its_plumbing(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA" in lines[0] and "6/6" in lines[0], r.stdout
    report = json.loads(out.read_text())
    assert report["cuda"] is False
    sections = report["sections"]
    assert list(sections) == ["cuda_tests", "train", "amp", "oom", "predict", "ddp"]
    assert {s["status"] for s in sections.values()} == {"plumbing"}, sections
    # the CUDA-only tests are found by their marker, and pytest selects at least one of them
    assert "tests/test_transforms.py" in sections["cuda_tests"]["files"]
    assert "collected" in sections["cuda_tests"]["figure"] and " 0/" not in sections["cuda_tests"]["figure"]
