"""Files the SQLite engine keeps beside its database, written atomically; what to do about a
database file that will not open."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from profiles import files


def read_text(path: Path) -> str | None:
    """The file's text, ``None`` when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: temp file, fsync, rename — a crash never leaves half."""
    files.write_atomically(path, text.encode("utf-8"))


def open_hint(path: Path, exc: BaseException) -> str:
    """What to do about a SQLite file that would not open: a file that is not a store (or
    is damaged) can be moved aside; one this process may not write, or a data dir it cannot
    create, needs permissions — moving good data aside would only lose it."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return "it is not a store, or is damaged: move the file aside to start with an empty one"
    if path.is_file() and os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK):
        return "is another process holding it, or the disk full?"
    return "this process must be able to write the file and its directory (a read-only " \
        "mount? permissions?)"
