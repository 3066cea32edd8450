"""The write transactions on PostgreSQL: the statements of one ingest transaction (see
`store.protocol.Transaction`), and keeping a malformed request in the quarantine.

Several receivers write at once. Each transaction first takes a transaction-scoped
advisory lock per subject of its batch, in one global order (by the lock's key), so that
two batches touching the same subjects take turns and never deadlock; under READ
COMMITTED every statement after the locks sees what the previous holder committed. The
counters are sharded by backend pid (`schema.SHARDS`), so no row is written by every
transaction. The transaction runs in psycopg's pipeline mode (`Connections.write`): a
statement whose rows are not read does not wait for the server, so the writes of a batch
and its commit go in one round trip.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowtracker.engine.events import Callback, Kind
from flowtracker.engine.records import Change, Entry, Subject
from flowtracker.engine.timestamps import format_ns
from flowtracker.store.postgres.connection import Connection
from flowtracker.store.postgres.schema import RECOUNT, SHARDS
from flowtracker.store.protocol import Quarantined
from flowtracker.store.pruning import PruneStatements
from flowtracker.store.tables import (
    BOOLEAN_COLUMNS,
    CHANGE_COLUMNS,
    COLUMNS,
    COPIED,
    ENTRY,
    EVENTS,
    HISTORY_COLUMNS,
    LAST_CALLBACK,
    ORDER,
    OWN_COLUMNS,
    OWNER,
    REPLACED,
    SUBJECTS,
    NamedRow,
    change_values,
    deliveries,
    event_key,
    subject,
    subject_columns,
    subject_values,
)

# The columns of `tables.event_key`, and their types for `unnest`.
KEY_COLUMNS: dict[Kind, tuple[tuple[str, str], ...]] = {
    "flow": (("instance_id", "text"), ("event_ns", "bigint"), ("dedup_key", "text")),
    "document": (("document_id", "text"), ("object_version", "bigint"), ("mtime_ns", "bigint"),
                 ("dedup_key", "text")),
}  # fmt: skip
_KEY_IS: dict[Kind, str] = {
    kind: " AND ".join(f"{name} = %s" for name, _ in columns)
    for kind, columns in KEY_COLUMNS.items()
}
_INSERT: dict[Kind, str] = {
    kind: f"INSERT INTO {EVENTS[kind]} (dedup_key, {', '.join(OWN_COLUMNS[kind])}, outcome, "
    "reason, out_of_order, deliveries, received_at, last_delivery_at, body, content_type) "
    f"VALUES ({', '.join(['%s'] * (len(OWN_COLUMNS[kind]) + 9))})"
    for kind in EVENTS
}
_INSERT_CHANGE = (f"INSERT INTO changes ({', '.join(CHANGE_COLUMNS)}) "
                  f"VALUES ({', '.join(['%s'] * len(CHANGE_COLUMNS))})")  # fmt: skip
CHANGES_CHANNEL = "flowtracker_changes"  # NOTIFY'd with the last `seq` of each commit
_BUMP = ("INSERT INTO counters (name, shard, value) VALUES (%s, %s, %s) ON CONFLICT "
         "(name, shard) DO UPDATE SET value = counters.value + excluded.value")  # fmt: skip


SHARDED = {"counters", "received_per_minute"}  # copied rows go to shard 0
IDENTITY = {"instances": "seq", "documents": "seq", "flow_events": "id",
            "document_snapshots": "id"}  # fmt: skip


def _loaded(name: str, value: Any) -> Any:
    """A copied value as PostgreSQL's column takes it (SQLite keeps booleans as 0 and 1)."""
    return bool(value) if name in BOOLEAN_COLUMNS and value is not None else value


def lock_key(kind: Kind, subject_id: str) -> int:
    """The advisory lock of one subject: 64 bits of a hash (two subjects that share one
    only take turns)."""
    digest = hashlib.blake2b(f"{kind}\0{subject_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresTransaction(PruneStatements):
    """Reads and writes inside one open READ COMMITTED transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.shard = (conn.info.backend_pid or 0) % SHARDS
        self._stored: dict[Kind, dict[str, dict[str, Any]]] = {"flow": {}, "document": {}}

    def lock(self, subjects: Iterable[tuple[Kind, str]]) -> None:
        keys = sorted({lock_key(kind, subject_id) for kind, subject_id in subjects})
        if keys:  # in the order of the array: the same global order in every transaction
            self.conn.execute(
                "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) AS k", (keys,)
            )

    def known_keys(self, kind: Kind, callbacks: Iterable[Callback]) -> dict[str, bool]:
        keys = [event_key(c) for c in callbacks]
        if not keys:
            return {}
        columns = KEY_COLUMNS[kind]
        arrays = ", ".join(f"%s::{kind_}[]" for _, kind_ in columns)
        names = ", ".join(name for name, _ in columns)
        on = " AND ".join(f"e.{name} = k.{name}" for name, _ in columns)
        rows = self.conn.execute(
            f"SELECT e.dedup_key, e.out_of_order FROM {EVENTS[kind]} e "
            f"JOIN unnest({arrays}) AS k({names}) ON {on}",
            [list(values) for values in zip(*keys, strict=True)],
        ).fetchall()
        return {row["dedup_key"]: row["out_of_order"] for row in rows}

    def subjects(self, kind: Kind, ids: Iterable[str]) -> dict[str, Subject]:
        rows = self.conn.execute(
            f"SELECT * FROM {SUBJECTS[kind]} WHERE id = ANY(%s)", (list(ids),)
        ).fetchall()
        self._stored[kind].update((row["id"], row) for row in rows)
        return {row["id"]: subject(kind, row) for row in rows}

    def history(self, kind: Kind, subject_id: str) -> list[Entry]:
        rows = self.conn.execute(
            f"SELECT {', '.join(HISTORY_COLUMNS[kind])} FROM {EVENTS[kind]} "
            f"WHERE {OWNER[kind]} = %s ORDER BY {ORDER[kind]}",
            (subject_id,),
        )
        make = ENTRY[kind]
        return [make(row) for row in rows]

    def add_entries(self, kind: Kind, entries: Sequence[Entry], received_at: str) -> None:
        if entries:
            self.conn.cursor().executemany(_INSERT[kind], [
                (e.key, *COLUMNS[kind](e.source), e.verdict.outcome, e.verdict.reason,
                 bool(e.out_of_order), deliveries(e.source), received_at, received_at,
                 e.source.body, e.source.content_type)
                for e in entries
            ])  # fmt: skip

    def set_verdicts(self, kind: Kind, entries: Sequence[Entry]) -> None:
        if entries:
            self.conn.cursor().executemany(
                f"UPDATE {EVENTS[kind]} SET outcome = %s, reason = %s WHERE id = %s",
                [(e.verdict.outcome, e.verdict.reason, e.row_id) for e in entries],
            )

    def redeliver(self, kind: Kind, callbacks: Sequence[Callback], at: str) -> None:
        if callbacks:
            self.conn.cursor().executemany(
                f"UPDATE {EVENTS[kind]} SET deliveries = deliveries + 1, last_delivery_at = %s "
                f"WHERE {_KEY_IS[kind]}",
                [(at, *event_key(callback)) for callback in callbacks],
            )

    def put_subjects(self, kind: Kind, subjects: Sequence[Subject]) -> None:
        if not subjects:
            return
        names = subject_columns(kind)
        stored = self._stored[kind]
        # A new subject takes the next `seq` of the sequence; a stored one keeps its own.
        self.conn.cursor().executemany(
            f"INSERT INTO {SUBJECTS[kind]} ({', '.join(names)}) "
            f"VALUES ({', '.join(['%s'] * len(names))}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names[1:]),
            [subject_values(kind, s, stored.get(s.id)) for s in subjects],
        )

    def bump(self, deltas: Mapping[str, int]) -> None:
        rows = [(name, self.shard, delta) for name, delta in sorted(deltas.items()) if delta]
        if rows:  # in name order: two transactions on one shard never wait in a circle
            self.conn.cursor().executemany(_BUMP, rows)

    def load(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = COPIED[table][1]
        names = (*columns, "shard") if table in SHARDED else columns
        replace = (f" ON CONFLICT ({columns[0]}, shard) DO UPDATE SET {columns[1]} = "
                   f"excluded.{columns[1]}") if table in SHARDED else ""  # fmt: skip
        if table in REPLACED - SHARDED:
            replace = f" ON CONFLICT ({columns[0]}) DO UPDATE SET " + ", ".join(
                f"{name} = excluded.{name}" for name in columns[1:]
            )
        self.conn.cursor().executemany(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
            + replace,
            [(*(_loaded(name, row[name]) for name in columns), *((0,) if table in SHARDED else ()))
             for row in rows],
        )  # fmt: skip
        if table in IDENTITY:  # new rows number on from the copied ones
            column = IDENTITY[table]
            self.conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                f"(SELECT MAX({column}) FROM {table}))"
            )

    def recount(self) -> None:
        self.conn.execute("LOCK TABLE counters IN EXCLUSIVE MODE")
        for statement in RECOUNT:
            self.conn.execute(statement.encode())

    def count_received(self, at_ns: int, callbacks: int) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, shard, value) VALUES (%s, %s, %s) ON CONFLICT "
            "(name, shard) DO UPDATE SET value = GREATEST(counters.value, excluded.value)",
            (LAST_CALLBACK, self.shard, at_ns),
        )
        minute = format_ns(at_ns)[:16]
        self.conn.execute(
            "INSERT INTO received_per_minute (minute, shard, callbacks) VALUES (%s, %s, %s) "
            "ON CONFLICT (minute, shard) DO UPDATE SET "
            "callbacks = received_per_minute.callbacks + excluded.callbacks",
            (minute, self.shard, callbacks),
        )
        self.conn.execute(  # this shard's only: no other transaction's rows to wait for
            "DELETE FROM received_per_minute WHERE shard = %s AND minute < %s",
            (self.shard, format_ns(at_ns - 86_400 * 1_000_000_000)[:16]),
        )

    def add_changes(self, changes: Sequence[Change], at: str) -> int | None:
        """The commit-order counter: the clock's one row, updated last, stays locked until
        this transaction has committed and is visible; the next writer of changes waits
        for it and numbers on from there. So a change never becomes visible before one
        with a smaller `seq` (docs/architecture.md). The NOTIFY goes out at commit."""
        if not changes:
            return None
        row = self.conn.execute(
            "UPDATE change_clock SET seq = seq + %s RETURNING seq", (len(changes),)
        ).fetchone()
        assert row is not None
        last = int(row["seq"])
        self.conn.cursor().executemany(
            _INSERT_CHANGE, change_values(changes, last - len(changes) + 1, at)
        )
        self.conn.execute("SELECT pg_notify(%s, %s)", (CHANGES_CHANNEL, str(last)))
        return last

    # The helpers of `PruneStatements` --------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[NamedRow]:
        cursor = self.conn.execute(sql.replace("?", "%s").encode(), params)
        # In pipeline mode a result is there only once fetched: ask only for those of reads.
        reads = sql.startswith("SELECT") or " RETURNING " in sql
        return list(cursor.fetchall()) if reads else []

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.cursor().executemany(sql.replace("?", "%s").encode(), rows)

    def _one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(?)", [list(values)]

    def _events_of(self, kind: Kind, subjects: Sequence[NamedRow]) -> tuple[str, list[Any]]:
        return self._one_of(OWNER[kind], [row["id"] for row in subjects])

    def _delete_events(self, kind: Kind, subjects: Sequence[NamedRow]) -> None:
        where, params = self._events_of(kind, subjects)
        self._rows(f"DELETE FROM {EVENTS[kind]} WHERE {where}", params)


def quarantine(conn: Connection, item: Quarantined, at: str) -> None:
    """Keep a malformed request (inside an open write transaction); a body seen before
    only raises its count and takes the latest error, content type and source."""
    digest, error = hashlib.sha256(item.body).hexdigest(), json.dumps(item.error)
    row = conn.execute(
        "INSERT INTO quarantine (body_hash, body, content_type, error, source, first_seen, "
        "last_seen, count) VALUES (%s, %s, %s, %s, %s, %s, %s, 1) ON CONFLICT (body_hash) "
        "DO UPDATE SET last_seen = excluded.last_seen, count = quarantine.count + 1, "
        "error = excluded.error, content_type = excluded.content_type, source = excluded.source "
        "RETURNING (xmax = 0) AS inserted",
        (digest, item.body, item.content_type, error, item.source, at, at),
    ).fetchone()
    inserted = bool(row and row["inserted"])
    PostgresTransaction(conn).bump({"quarantine.requests": 1, "quarantine.rows": int(inserted)})
