"""Seeded fuzzing of the dataset loaders (see tests/fuzz_data.py; `python -m tests.fuzz_data --cases 2000` for more).

Every malformed input must load, or fail with one short line: never a traceback, never a hang.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_data import run_cli_cases, run_fuzz  # noqa: E402


def test_fuzz_loaders_in_process():
    stats = run_fuzz(300, seed=0, per_case_s=20)
    assert stats["cases"] == 300 and stats["loaded"] > 0 and stats["errors"] > 0
    assert all(stats["by_kind"].values()), stats["by_kind"]
    assert not stats["findings"], "\n".join(str(f) for f in stats["findings"][:20])


def test_fuzz_cli_inspect_exits_0_or_2_with_one_line():
    findings = run_cli_cases(4, seed=0, timeout=120)
    assert not findings, findings
