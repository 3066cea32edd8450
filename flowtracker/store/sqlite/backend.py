"""`SQLiteStore`: the store protocol on one SQLite file in WAL mode.

The pieces are in the modules beside this one: `connection` opens the file and holds the
connections, `transaction` the writes, `queries` the reads, `schema` the migrations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from flowtracker.settings import Durability
from flowtracker.store.feeding import FeedStatements
from flowtracker.store.opening import Access
from flowtracker.store.protocol import Quarantined
from flowtracker.store.pruning import TombstoneReads
from flowtracker.store.reading import QueryReads
from flowtracker.store.sqlite import queries
from flowtracker.store.sqlite.connection import (
    CHECKPOINT_SECONDS,
    Connections,
    Reader,
    translated,
)
from flowtracker.store.sqlite.transaction import SQLiteTransaction, quarantine
from flowtracker.store.tables import COPIED

INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental vacuum
VACUUM_PAGES = 500  # pages given back per transaction (2 MiB of 4 KiB pages): callbacks
# wait for each, about a tenth of a second


class SQLiteStore(QueryReads, FeedStatements, TombstoneReads):
    """A flowtracker database in one SQLite file (see `Connections` for `access`)."""

    queries = queries
    reads_block = False  # a read is a local call of well under a millisecond

    def __init__(
        self,
        path: str | Path,
        *,
        access: Access = "create",
        upgrade: bool = True,
        durability: Durability = "full",
        busy_timeout_ms: int = 5_000,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        self.path = str(path)
        self.connections = Connections(
            self.path,
            access=access,
            upgrade=upgrade,
            durability=durability,
            busy_timeout_ms=busy_timeout_ms,
            checkpoint_seconds=checkpoint_seconds,
        )

    def _reading(self) -> AbstractContextManager[Any]:
        return self.connections.reading()

    @property
    def applied(self) -> list[str]:
        return self.connections.applied

    @property
    def pending(self) -> list[str]:
        return self.connections.pending

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        with translated("write"), self.connections.write() as conn:
            yield SQLiteTransaction(conn)

    def quarantine(self, item: Quarantined, at: str) -> None:
        with translated("quarantine a request"), self.connections.write() as conn:
            quarantine(conn, item, at)

    def _run(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        if not write:
            with self.connections.reading() as read:
                return read(sql, params)
        with translated("write"), self.connections.write() as conn:
            return conn.execute(sql, params).fetchall()

    @contextmanager
    def snapshot(self) -> Iterator[_Snapshot]:
        # WAL: a read transaction sees what was committed before its first read, however
        # long it lasts (the WAL grows meanwhile: checkpoints cannot pass it).
        with self.connections.reading() as read:
            yield _Snapshot(read)

    def reclaim(self) -> str:
        """Incremental vacuum, in short write transactions: the file's free pages go back
        to the file system. A file made before flowtracker turned it on keeps them for
        new rows (changing that rewrites the whole file, with the server stopped)."""
        with self.connections.reading() as read:
            mode, page = read("PRAGMA auto_vacuum")[0][0], read("PRAGMA page_size")[0][0]
            free = read("PRAGMA freelist_count")[0][0]
        if mode != INCREMENTAL:
            return (f"{free * page / 2**20:.1f} MiB of {self.path} are free and will hold new "
                    "events; this file was made before incremental vacuum: to give the space "
                    f"back, stop the server and run `sqlite3 {self.path} 'PRAGMA auto_vacuum "
                    "= INCREMENTAL; VACUUM'` once")  # fmt: skip
        given = 0
        while free:
            with translated("give space back"), self.connections.write() as conn:
                conn.execute(f"PRAGMA incremental_vacuum({VACUUM_PAGES})").fetchall()
                left = conn.execute("PRAGMA freelist_count").fetchone()[0]
            given, free = given + free - left, (left if left < free else 0)
        return f"{given * page / 2**20:.1f} MiB of {self.path} given back to the file system"

    def ping(self) -> None:
        """Read, and commit a write as large as a big callback (64 KiB, always the same
        row): a full disk or a read-only file fails it as it would fail a callback."""
        with self.connections.reading() as read:
            read("SELECT COUNT(*) FROM sqlite_master")
        with translated("take writes"), self.connections.write() as conn:
            conn.execute("INSERT OR REPLACE INTO health_probe VALUES (1, randomblob(65536))")

    def watch_changes(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Nothing to follow: the one writer of a file tells its own feeds (the writer
        process's notices), and the hub reads once a second for any other program's."""
        return lambda: None

    def close(self) -> None:
        self.connections.close()


class _Snapshot:
    """`Store.snapshot` on SQLite: the pages of `rows` in one read transaction."""

    def __init__(self, read: Reader) -> None:
        self.read = read

    def rows(self, table: str, after: Any, limit: int) -> list[dict[str, Any]]:
        key, columns = COPIED[table]
        where = "" if after is None else f"WHERE {key} > ?"
        found = self.read(
            f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY {key} LIMIT ?",
            (*(() if after is None else (after,)), limit),
        )
        return [dict(zip(columns, row, strict=True)) for row in found]
