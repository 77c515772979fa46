"""Errors a user can act on.

Every error that bad input can cause is a :class:`FerkitError` whose message is one line naming the
offending file/row/argument and what to do about it. The CLI prints that line and exits with code 2;
anything else escaping is a bug.
"""


class FerkitError(Exception):
    """Base class: a one-line, actionable message. The CLI exits 2 on it."""

    exit_code = 2


class DataError(FerkitError):
    """A dataset, image or annotation file cannot be used as given."""


class ModelError(FerkitError):
    """Unknown model name, bad constructor arguments, unavailable pretrained weights."""


class CheckpointError(FerkitError):
    """A checkpoint file is missing, corrupt, or does not fit the requested model."""


class ConfigError(FerkitError):
    """Bad option value or recipe."""


class TrainingError(FerkitError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""



def quote(s, limit: int = 200) -> str:
    """Quote user data for a one-line message: a ``repr`` of at most about ``limit`` characters.

    Longer text is cut and marked ``...(N characters in all)``; bytes are decoded leniently; newlines and
    other control characters come out escaped, so the message stays on one line.
    """
    if isinstance(s, (bytes, bytearray)):
        n = len(s)
        s = bytes(s[:limit]).decode("utf-8", "replace")
    else:
        s = str(s)
        n = len(s)
    r = repr(s[:limit])
    if len(r) > limit + 2:  # escapes (\n, \x00) made it longer
        r = r[:limit + 1] + r[0]
    elif n <= limit:
        return r
    return r + f"...({n:,} characters in all)"
