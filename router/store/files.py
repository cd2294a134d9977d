"""Files the SQLite engine keeps beside its database, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def read_text(path: Path) -> str | None:
    """The file's text, ``None`` when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text``: temp file, fsync, rename — a crash never leaves half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
