"""`PostgresStore`: the store protocol on one PostgreSQL database, shared by receivers.

The pieces are in the modules beside this one: `connection` opens the database and holds
the pools, `transaction` the writes, `queries` the reads, `schema` the migrations.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from psycopg.rows import tuple_row

from flowtracker.settings import Durability
from flowtracker.store.feeding import FeedStatements
from flowtracker.store.opening import Access
from flowtracker.store.postgres import queries
from flowtracker.store.postgres.connection import Connection, Connections
from flowtracker.store.postgres.listening import Listener
from flowtracker.store.postgres.transaction import SHARDED, PostgresTransaction, quarantine
from flowtracker.store.protocol import Quarantined
from flowtracker.store.pruning import TombstoneReads
from flowtracker.store.reading import QueryReads
from flowtracker.store.tables import COPIED, LAST_CALLBACK


class PostgresStore(QueryReads, FeedStatements, TombstoneReads):
    """A flowtracker database on PostgreSQL (see `Connections` for `access`)."""

    queries = queries
    reads_block = True  # a read waits on the network: not on the event loop

    def __init__(
        self,
        url: str,
        *,
        access: Access = "create",
        upgrade: bool = True,
        durability: Durability = "full",
        busy_timeout_ms: int = 5_000,
    ) -> None:
        self.connections = Connections(
            url, access=access, upgrade=upgrade, durability=durability, timeout_ms=busy_timeout_ms
        )
        self.path = self.connections.shown  # how messages name it: the password masked

    def _reading(self) -> AbstractContextManager[Any]:
        return self.connections.reading()

    @property
    def applied(self) -> list[str]:
        return self.connections.applied

    @property
    def pending(self) -> list[str]:
        return self.connections.pending

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        with self.connections.write() as conn:
            yield PostgresTransaction(conn)

    def quarantine(self, item: Quarantined, at: str) -> None:
        with self.connections.write() as conn:
            quarantine(conn, item, at)

    def _run(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        sql = sql.replace("?", "%s")  # the statements of `feeding` hold no other "?"
        rows = sql.startswith("SELECT") or " RETURNING " in sql
        with self.connections.write() if write else self.connections.reading() as conn:
            cursor = conn.execute(sql.encode(), params)
            return cursor.fetchall() if rows else []

    @contextmanager
    def snapshot(self) -> Iterator[_Snapshot]:
        # REPEATABLE READ (`Connections.reading`): one snapshot for every statement.
        with self.connections.reading() as conn:
            yield _Snapshot(conn)

    def reclaim(self) -> str:
        return ("PostgreSQL's autovacuum makes the space of the removed rows reusable for "
                "new ones; VACUUM FULL (which locks the tables while it runs) would give it "
                "back to the file system")  # fmt: skip

    def ping(self) -> None:
        """Read, and commit a write as large as a big callback (64 KiB, one row per
        counter shard): a full disk or a read-only server fails it as it would a callback."""
        with self.connections.reading() as conn:
            conn.execute("SELECT 1")
        with self.connections.write() as conn:
            conn.execute(
                "INSERT INTO health_probe VALUES (%s, %s) "
                "ON CONFLICT (id) DO UPDATE SET filler = excluded.filler",
                (PostgresTransaction(conn).shard, os.urandom(65536)),
            )

    def watch_changes(self, wake: Callable[[], None]) -> Callable[[], None]:
        """NOTIFY from every receiver's commits, on a connection of its own."""
        return Listener(self.connections.url, wake).stop

    def close(self) -> None:
        self.connections.close()


class _Snapshot:
    """`Store.snapshot` on PostgreSQL: the pages of `rows` in one read transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def rows(self, table: str, after: Any, limit: int) -> list[dict[str, Any]]:
        key, columns = COPIED[table]
        shown = ", ".join(columns)
        if table == "counters":  # summed over the shards (the last callback's time: greatest)
            shown = (f"name, CASE WHEN name = '{LAST_CALLBACK}' THEN MAX(value) "
                     "ELSE SUM(value) END::bigint")  # fmt: skip
        elif table == "received_per_minute":
            shown = "minute, SUM(callbacks)::bigint"
        grouped = f" GROUP BY {key}" if table in SHARDED else ""
        where = "" if after is None else f" WHERE {key} > %s"
        found = self.conn.cursor(row_factory=tuple_row).execute(
            f"SELECT {shown} FROM {table}{where}{grouped} ORDER BY {key} LIMIT %s",
            (*(() if after is None else (after,)), limit),
        )
        return [dict(zip(columns, row, strict=True)) for row in found]
