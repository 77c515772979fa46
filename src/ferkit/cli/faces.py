"""`ferkit detectors`: the registered face detectors, from their own metadata (ferkit.faces backends)."""

from __future__ import annotations

from ferkit.cli.common import add_command, print_rows


def add_parsers(sub) -> None:
    d = add_command(
        sub,
        "detectors",
        "list the face detectors (what each is for, input, landmarks, speed, licence)",
        """
  ferkit detectors
  ferkit detectors --json
  ferkit predict photos/ --detector tinyface""",
        cmd_detectors,
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_detectors(a) -> int:
    from ferkit import api

    rows = api.describe_detectors()
    w = max(len(r["name"]) for r in rows) + 10

    def line(r: dict) -> str:
        name = r["name"] + (" (default)" if r["default"] else "")
        if r["score_threshold"] is None:  # its code cannot be imported here
            return f"{name:<{w}} {r['for']}"
        return (
            f"{name:<{w}} {r['for']}\n{'':<{w}} input: {r['input']}; landmarks: {r['landmarks']}; "
            f"speed: {r['speed']}; default score_threshold {r['score_threshold']:g}; licence: {r['licence']}"
        )

    return print_rows(rows, a.json, f"{'detector':<{w}} what it is for", line)
