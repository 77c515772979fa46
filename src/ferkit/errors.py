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
        r = r[: limit + 1] + r[0]
    elif n <= limit:
        return r
    return r + f"...({n:,} characters in all)"


class OutputError(FerkitError, OSError):
    """An output file or folder cannot be written (a read-only folder, a full disk, a folder where a file
    should be). Also an :class:`OSError` (``errno`` kept), so code that copes with any OS error still does."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno

    def __str__(self) -> str:  # the one line, not OSError's "[Errno N] ..." (errno, filename are set as well)
        return str(self.args[0])


_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))  # embeddings, overrides, isolates


def printable(s) -> str:
    """Text as a terminal may safely show it: control characters (escape sequences, carriage returns, newlines,
    DEL, C1, bidirectional overrides) come out as ``\\xNN`` / ``\\uNNNN`` escapes and the bytes of a file name
    that are not UTF-8 (surrogate escapes) as ``\\xNN``; everything else, accents and CJK included, as it is."""
    s = str(s)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:  # os.fsdecode's stand-in for an undecodable byte
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch, f"\\x{o:02x}"))
        elif o in _BIDI or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
