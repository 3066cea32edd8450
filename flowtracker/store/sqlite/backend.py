"""`SQLiteStore`: the store protocol on one SQLite file in WAL mode.

The pieces are in the modules beside this one: `connection` opens the file and holds the
connections, `transaction` the writes, `queries` the reads, `schema` the migrations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from flowtracker.engine.events import Kind
from flowtracker.settings import Durability
from flowtracker.store.protocol import Quarantined, SubjectFilter
from flowtracker.store.rows import AnomalyRow, EventRow, QuarantineRow, SubjectRow, Totals
from flowtracker.store.sqlite import queries
from flowtracker.store.sqlite.connection import (
    CHECKPOINT_SECONDS,
    Access,
    Connections,
    translated,
)
from flowtracker.store.sqlite.transaction import SQLiteTransaction, quarantine


class SQLiteStore:
    """A flowtracker database in one SQLite file (see `Connections` for `access`)."""

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

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        with translated("write"), self.connections.write() as conn:
            yield SQLiteTransaction(conn)

    def quarantine(self, item: Quarantined, at: str) -> None:
        with translated("quarantine a request"), self.connections.write() as conn:
            quarantine(conn, item, at)

    def subject_ids(self, kind: Kind, after: str, limit: int) -> list[str]:
        with self.connections.reading() as read:
            return queries.subject_ids(read, kind, after, limit)

    def subject_history(
        self, kind: Kind, subject_id: str
    ) -> tuple[SubjectRow, list[EventRow]] | None:
        with self.connections.reading() as read:
            return queries.subject_history(read, kind, subject_id)

    def list_subjects(
        self, kind: Kind, where: SubjectFilter, after: int | None, limit: int
    ) -> list[SubjectRow]:
        with self.connections.reading() as read:
            return queries.list_subjects(read, kind, where, after, limit)

    def id_match(self, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
        with self.connections.reading() as read:
            return queries.id_match(read, kind, prefix)

    def quietest(self, received_before: str, limit: int) -> list[SubjectRow]:
        with self.connections.reading() as read:
            return queries.quietest(read, received_before, limit)

    def totals(self, stuck_before: str) -> Totals:
        with self.connections.reading() as read:
            return queries.totals(read, stuck_before)

    def quarantined(
        self, before: tuple[str, str] | None, limit: int, body_limit: int | None = None
    ) -> list[QuarantineRow]:
        with self.connections.reading() as read:
            return queries.quarantined(read, before, limit, body_limit)

    def quarantined_body(self, body_hash: str) -> bytes | None:
        with self.connections.reading() as read:
            return queries.quarantined_body(read, body_hash)

    def pulse(self, subject: tuple[Kind, str] | None = None) -> str:
        with self.connections.reading() as read:
            return queries.pulse(read, subject)

    def anomalies(self, limit: int) -> list[AnomalyRow]:
        with self.connections.reading() as read:
            return queries.anomalies(read, limit)

    def received_since(self, minute: str) -> dict[str, int]:
        with self.connections.reading() as read:
            return queries.received_since(read, minute)

    def ping(self) -> None:
        """Read, and commit a write as large as a big callback (64 KiB, always the same
        row): a full disk or a read-only file fails it as it would fail a callback."""
        with self.connections.reading() as read:
            read("SELECT COUNT(*) FROM sqlite_master")
        with translated("take writes"), self.connections.write() as conn:
            conn.execute("INSERT OR REPLACE INTO health_probe VALUES (1, randomblob(65536))")

    def close(self) -> None:
        self.connections.close()
