"""`flowtracker backup`: a consistent copy of a live SQLite database, checked.

SQLite's online backup, in one step, inside one read transaction: a snapshot of the last
commit, while writers go on appending to the WAL. The copy is written next to its
destination, checked with `PRAGMA integrity_check`, and only then renamed into place, so
that a failed or interrupted backup never leaves a file that looks like one.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from flowtracker.errors import UnusableDatabase
from flowtracker.store.sqlite.backend import SQLiteStore


def backup(store: SQLiteStore, destination: str | Path) -> int:
    """Copy `store` to `destination` (which must not exist); the copy's size in bytes."""
    target = Path(destination)
    if target.exists():
        raise UnusableDatabase(f"{target} exists already: give backup a new file")
    if not target.parent.is_dir():
        raise UnusableDatabase(f"cannot write {target}: there is no directory {target.parent}")
    partial = target.with_name(f".{target.name}.partial")
    try:
        with store.connections.reading() as read:
            copy = sqlite3.connect(partial)
            try:
                read.conn.backup(copy)
                found = copy.execute("PRAGMA integrity_check").fetchall()
                copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
            finally:
                copy.close()
        if found != [("ok",)]:
            raise UnusableDatabase(f"the copy failed its integrity check: {found[:3]}")
        os.replace(partial, target)
    except (OSError, sqlite3.Error) as error:
        raise UnusableDatabase(f"cannot back up to {target}: {error}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target.stat().st_size
