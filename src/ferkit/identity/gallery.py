"""The enrolment gallery: face embeddings per named identity, in one SQLite file.

Why SQLite: one file, transactions, and safe concurrent writers. Every write is one ``BEGIN IMMEDIATE``
transaction (WAL journal, ``busy_timeout``), so two ``ferkit enroll`` processes on the same gallery queue up
instead of corrupting it, and a crash mid-command leaves the gallery as it was before that command.

Rows are keyed by ``(name, photo sha256, embedder)``: enrolling the same photo again is a no-op. A file that is
not a ferkit gallery (garbage bytes, another database, a newer schema) is a :class:`GalleryError` naming it;
it is never recreated, repaired or written to.

Default location: ``$FERKIT_GALLERY``, else ``$XDG_DATA_HOME/ferkit/gallery.sqlite3`` (``~/.local/share``).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import ConfigError, FerkitError

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 60_000
_SQLITE_HEADER = b"SQLite format 3\x00"
# Letters (any script), digits, space, dot, underscore, apostrophe, hyphen; 1-64 chars; no leading/trailing space.
_NAME_RE = re.compile(r"^[^\W][\w .'\-]{0,62}[\w.]$|^[^\W]$", re.UNICODE)


class GalleryError(FerkitError):
    """The gallery file is missing, corrupt, locked for too long, or not a ferkit gallery."""


def _can_write_in(folder: Path) -> bool:
    """Whether ``folder`` takes new files (tried for real: root ignores permission bits, not read-only mounts)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _rollback(con: sqlite3.Connection) -> None:
    try:  # after a full disk SQLite may have rolled back already: the first error is the one to report
        con.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def default_gallery_path() -> Path:
    env = os.environ.get("FERKIT_GALLERY")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "ferkit" / "gallery.sqlite3"


def validate_name(name: str) -> str:
    """An identity name: 1-64 characters, letters/digits/space/``.'_-``, starting with a letter or digit."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or "  " in name:
        raise ConfigError(
            f"--name {name!r}: use 1-64 letters, digits, spaces, '.', '_', \"'\" or '-', starting "
            f"with a letter or digit (e.g. --name alice or --name 'Mary Jones')"
        )
    return name


@dataclass
class Enrolment:
    name: str
    photo: str
    sha256: str
    added: bool  # False when the same photo was already enrolled for this name


class Gallery:
    """A SQLite gallery. ``Gallery(path)`` opens an existing one for reading and writing (GalleryError if absent
    unless ``create``; an existing empty file is a new gallery then); ``readonly=True`` opens it for reading only
    (SQLite ``mode=ro``: listing and matching work on a read-only file, folder or file system)."""

    def __init__(self, path: str | os.PathLike | None = None, create: bool = False, readonly: bool = False):
        self.path = Path(path).expanduser() if path is not None else default_gallery_path()
        self.readonly = readonly
        p = self.path
        if p.is_dir():
            raise GalleryError(f"{p}: is a folder, not a gallery file; pass --gallery FILE")
        exists = p.exists() and p.stat().st_size > 0
        if not exists and (not create or readonly):
            empty = " (an empty file)" if p.exists() else ""
            raise GalleryError(
                f"{p}: no gallery here{empty}; enrol someone first (ferkit enroll --name NAME "
                f"PHOTO... --gallery {p}) or pass another --gallery FILE"
            )
        if exists:
            self._check_header()
            if not readonly:
                self._check_writable()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            try:  # biometric templates: owner-only from the start (SQLite's -wal/-shm files inherit this)
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass  # another process is creating it right now
            except OSError as e:
                raise GalleryError(f"{p}: cannot create the gallery ({e.strerror or e})") from e
        try:
            self._con = self._connect()
            # A damaged file can hand back text that is not UTF-8 (quick_check's report, a name): read it
            # with replacement characters so it becomes a GalleryError line, never a UnicodeDecodeError.
            self._con.text_factory = lambda b: b.decode("utf-8", "replace")
            self._con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if exists:
                self._check_integrity()
            else:  # a new file, or an existing empty one: a new gallery
                self._create_schema()
            self._check_schema()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:  # a damaged file's text need not be UTF-8
            self._close_quietly()
            raise self._error(e) from e

    # -- opening ---------------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        kw: dict[str, Any] = dict(timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        if not self.readonly:
            return sqlite3.connect(str(self.path), **kw)
        uri = "file:" + urllib.parse.quote(os.fsencode(self.path.resolve())) + "?mode=ro"
        con = sqlite3.connect(uri, uri=True, **kw)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.OperationalError:
            # A WAL gallery on a read-only or full file system: SQLite cannot make its -shm file. Nobody can be
            # writing there either, so read the file as it is (immutable).
            con.close()
            return sqlite3.connect(uri + "&immutable=1", uri=True, **kw)

    def _check_writable(self) -> None:
        """Before any write: the file and its folder (SQLite's journal) take writes; else one line saying so."""
        why = None
        try:
            os.close(os.open(self.path, os.O_RDWR))
        except OSError as e:
            why = e.strerror or str(e)
        if why is None and not _can_write_in(self.path.parent):
            why = "its folder takes no new files"
        if why is not None:
            raise GalleryError(
                f"{self.path}: the gallery is read-only ({why}); it was left untouched: listing and "
                f"verifying work as they are; to enrol or remove, make it writable or pass another "
                f"--gallery FILE"
            )

    def _error(self, e: Exception) -> GalleryError:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "locked" in msg or "busy" in msg:
            return GalleryError(
                f"{self.path}: gallery is locked by another process for over "
                f"{BUSY_TIMEOUT_MS // 1000} s ({msg}); try again"
            )
        if "disk is full" in msg or "disk I/O error" in msg:
            return GalleryError(
                f"{self.path}: cannot write the gallery ({msg}); nothing was changed: free some space and try again"
            )
        if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
            return GalleryError(
                f"{self.path}: the gallery cannot be written ({msg}); nothing was changed: make it "
                f"and its folder writable or pass another --gallery FILE"
            )
        return GalleryError(
            f"{self.path}: not a usable ferkit gallery ({msg}); it was left untouched: "
            f"restore it from a backup or pass another --gallery FILE"
        )

    def _check_header(self) -> None:
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(_SQLITE_HEADER))
        except OSError as e:
            raise GalleryError(f"{self.path}: cannot read gallery ({e.strerror or e})") from e
        if head != _SQLITE_HEADER:
            raise GalleryError(
                f"{self.path}: not a ferkit gallery (not an SQLite file: corrupt or overwritten); "
                f"it was left untouched: restore it from a backup or pass another --gallery FILE"
            )

    def _check_integrity(self) -> None:
        rows = self._con.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            lines = [ln.strip() for r in rows for ln in str(r[0]).splitlines() if ln.strip() and "***" not in ln]
            raise GalleryError(
                f"{self.path}: gallery is corrupt (SQLite quick_check: {(lines or ['?'])[0]}); "
                "it was left "
                f"untouched: restore it from a backup or pass another --gallery FILE"
            )

    def _create_schema(self) -> None:
        con = self._con
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("BEGIN IMMEDIATE")
        try:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            con.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            con.execute("INSERT OR IGNORE INTO meta VALUES ('application', 'ferkit-gallery')")
            con.execute("""CREATE TABLE IF NOT EXISTS embeddings (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL,
                photo_sha256 TEXT NOT NULL,
                photo_path TEXT NOT NULL,
                embedder TEXT NOT NULL,
                dim INTEGER NOT NULL,
                vector BLOB NOT NULL,
                box TEXT,
                created REAL NOT NULL,
                UNIQUE (name, photo_sha256, embedder))""")
            con.execute("CREATE INDEX IF NOT EXISTS embeddings_name ON embeddings (name)")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _check_schema(self) -> None:
        try:
            meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if self._con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0:
                # An empty database: another process is creating this gallery right now (or crashed before its
                # first commit). Nothing to lose: create the schema (a no-op if the other process wins).
                self._create_schema()
                return self._check_schema()
            raise GalleryError(
                f"{self.path}: an SQLite file but not a ferkit gallery (no meta table); it was left "
                f"untouched: pass another --gallery FILE"
            ) from e
        if meta.get("application") != "ferkit-gallery":
            raise GalleryError(f"{self.path}: an SQLite file but not a ferkit gallery; pass another --gallery FILE")
        v = int(meta.get("schema_version", "0"))
        if v > SCHEMA_VERSION:
            raise GalleryError(
                f"{self.path}: gallery schema {v} is newer than this ferkit understands "
                f"({SCHEMA_VERSION}); upgrade ferkit"
            )

    def _close_quietly(self) -> None:
        con = getattr(self, "_con", None)
        if con is not None:
            try:
                con.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._close_quietly()
        self._con = None  # type: ignore[assignment]  # closed: any later use fails, like a closed sqlite3 connection

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes (each one transaction) -----------------------------------------------------------------------
    def add(self, rows: Sequence[dict]) -> list[bool]:
        """Insert enrolment rows (keys: name, sha256, photo, embedder, vector, box) in one transaction.

        Returns, per row, whether it was new (False: that photo was already enrolled under that name).
        Raises GalleryError if the gallery already holds vectors of another embedder or dimension.
        """
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                have = con.execute("SELECT DISTINCT embedder, dim FROM embeddings").fetchall()
                added = []
                for r in rows:
                    name = validate_name(r["name"])
                    vec = np.ascontiguousarray(r["vector"], dtype=np.float32).ravel()
                    for emb, dim in have:
                        if emb != r["embedder"] or dim != vec.size:
                            raise GalleryError(
                                f"{self.path}: gallery holds {emb} ({dim}-d) embeddings; cannot add "
                                f"{r['embedder']} ({vec.size}-d) ones: use another --gallery FILE"
                            )
                    box = ",".join(f"{v:.1f}" for v in r.get("box") or ())
                    cur = con.execute(
                        "INSERT OR IGNORE INTO embeddings (name, photo_sha256, photo_path, embedder, dim, vector, box,"
                        " created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            name,
                            r["sha256"],
                            str(r["photo"]),
                            r["embedder"],
                            int(vec.size),
                            vec.tobytes(),
                            box,
                            time.time(),
                        ),
                    )
                    added.append(cur.rowcount == 1)
                    have = [(r["embedder"], int(vec.size))]
                con.execute("COMMIT")
                return added
            except BaseException:
                _rollback(con)
                raise
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e

    def remove(self, name: str) -> int:
        """Delete every embedding of ``name``; returns how many. GalleryError if the name is not enrolled."""
        con = self._con
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                n = con.execute("DELETE FROM embeddings WHERE name = ?", (name,)).rowcount
                if n == 0:
                    con.execute("ROLLBACK")
                    known = ", ".join(self.names()) or "none"
                    raise GalleryError(f"{self.path}: no identity named {name!r} (enrolled: {known})")
                con.execute("COMMIT")
                return n
            except GalleryError:
                raise
            except BaseException:
                _rollback(con)
                raise
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e

    # -- reads -----------------------------------------------------------------------------------------------
    def _query(self, sql: str, args: Iterable = ()) -> list[tuple]:
        try:
            return self._con.execute(sql, tuple(args)).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from e

    def names(self) -> list[str]:
        return [r[0] for r in self._query("SELECT DISTINCT name FROM embeddings ORDER BY name")]

    def summary(self) -> list[dict]:
        """One dict per identity: name, photos, embedder, first/last enrolment time (UNIX seconds)."""
        rows = self._query(
            "SELECT name, COUNT(*), MIN(embedder), MIN(created), MAX(created) FROM embeddings "
            "GROUP BY name ORDER BY name"
        )
        return [{"name": n, "photos": c, "embedder": e, "first": a, "last": b} for n, c, e, a, b in rows]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM embeddings")[0][0])

    def embedder_id(self) -> str | None:
        rows = self._query("SELECT DISTINCT embedder FROM embeddings")
        return rows[0][0] if rows else None

    def embeddings(self, name: str | None = None) -> tuple[list[str], np.ndarray, list[str]]:
        """``(names, matrix (n, dim) float32, photo paths)`` of every row, or of ``name``'s rows."""
        sql = "SELECT name, dim, vector, photo_path FROM embeddings"
        rows = self._query(sql + (" WHERE name = ? ORDER BY id" if name else " ORDER BY id"), (name,) if name else ())
        if not rows:
            return [], np.zeros((0, 0), np.float32), []
        M = np.stack([np.frombuffer(v, dtype=np.float32, count=d) for _, d, v, _ in rows])
        return [r[0] for r in rows], M, [r[3] for r in rows]

    def integrity_ok(self) -> bool:
        return [r[0] for r in self._query("PRAGMA integrity_check")] == ["ok"]


# ---------------------------------------------------------------------------------------------------------------
# Threshold calibration

CALIBRATION_MIN_PAIRS = 3
CALIBRATION_FLOOR = 0.35


def calibrate_threshold(
    names: Sequence[str],
    M: np.ndarray,
    default: float = 0.6,
    min_pairs: int = CALIBRATION_MIN_PAIRS,
    floor: float = CALIBRATION_FLOOR,
) -> dict:
    """A distance threshold for this gallery from its own enrolled photos.

    Genuine pairs are two photos of one name, impostor pairs two photos of different names. With at least
    ``min_pairs`` of each, the threshold is the midpoint of the gap between the largest genuine and the smallest
    impostor distance when they separate, else the equal-error-rate point; it is then clipped to
    ``[floor, default]``: a gallery of a few people says nothing about strangers, so calibration may only make
    the backend's conventional cut-off (dlib: 0.6, chosen on LFW) stricter, never looser. With fewer pairs the
    default is used. Returns ``{"threshold", "method", "genuine_pairs", "impostor_pairs", ...}``.
    """
    from ferkit.identity.metrics import eer, pair_distances

    labels = np.asarray(list(names))
    gen, imp = pair_distances(M, labels) if len(labels) else (np.zeros(0), np.zeros(0))
    info = {"default": float(default), "genuine_pairs": int(gen.size), "impostor_pairs": int(imp.size)}
    if gen.size < min_pairs or imp.size < min_pairs:
        return {
            "threshold": float(default),
            "method": f"default (fewer than {min_pairs} genuine or impostor pairs among the enrolled photos)",
            **info,
        }
    if gen.max() < imp.min():
        t, method = (float(gen.max()) + float(imp.min())) / 2, "midpoint of the genuine/impostor gap"
    else:
        e = eer(gen, imp)
        t, method = e["threshold"], f"equal error rate ({e['eer']:.3f}) on enrolled pairs"
    clipped = float(min(max(t, floor), default))
    if clipped != t:
        method += f", clipped to [{floor}, {default}]"
    return {
        "threshold": clipped,
        "method": method,
        "raw_threshold": float(t),
        "max_genuine": float(gen.max()),
        "min_impostor": float(imp.min()),
        **info,
    }
