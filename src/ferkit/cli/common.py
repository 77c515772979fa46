"""Helpers every command module shares (the parser's subcommand shape, a listing's output).

They live below the command modules, so a command imports down, never back up into :mod:`ferkit.cli`.
"""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help: str, examples: str, func=None, **kw) -> argparse.ArgumentParser:
    """A subcommand with its one-line help and an examples block (every subcommand has one)."""
    p = sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )
    if func is not None:
        p.set_defaults(func=func)
    return p


def column_widths(rows: list[dict], keys) -> dict[str, int]:
    """Each column's width from the rows themselves and its header (the key): a long value (a new zoo kind, a
    long model name) never shifts the next column."""
    return {k: max([len(k)] + [len(str(r[k])) for r in rows]) for k in keys}


def print_rows(rows: list[dict], as_json: bool, header: str, line) -> int:
    """A listing command's output: the rows as JSON, or a header and one formatted line per row."""
    import json

    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(header)
    for r in rows:
        print(line(r))
    return 0


def add_anti_spoof_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--anti-spoof`` and ``--spoof-threshold`` (read by :func:`ferkit.attributes.anti_spoof_threshold`)."""
    from ferkit import defaults

    p.add_argument(
        "--anti-spoof",
        action="store_true",
        help=f"score each face with the anti-spoofing model (human_antispoof): {what} "
        f"(not validated on spoof data: see the README's 'Anti-spoofing')",
    )
    p.add_argument(
        "--spoof-threshold",
        default=None,
        metavar="P",
        help=f"a face whose spoof score, P(real), is below P fails (default {defaults.SPOOF_THRESHOLD}; "
        f"implies --anti-spoof)",
    )
