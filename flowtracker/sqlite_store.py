"""The SQLite store: WAL, one write connection behind a lock, bound parameters only.

sqlite-utils owns the schema (migrations) and the read side; the write path is prepared
statements run with `executemany`, because the ingest transaction is the hot path.
Every `sqlite3.Error` is turned into `StorageUnavailable` here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlite_utils import Database

from .errors import StorageUnavailable
from .events import Kind, flow_trigger
from .fold import Entry, Subject, Verdict
from .schema import migrations
from .storage import Quarantined, SubjectFilter

Durability = Literal["full", "normal"]
_SUBJECTS: dict[Kind, str] = {"flow": "instances", "document": "documents"}
_EVENTS: dict[Kind, str] = {"flow": "flow_events", "document": "document_snapshots"}
_OWNER: dict[Kind, str] = {"flow": "instance_id", "document": "document_id"}
_ORDER: dict[Kind, str] = {
    "flow": "event_ns, dedup_key",
    "document": "object_version, mtime_ns, dedup_key",
}
_IN_CHUNK = 500  # bound parameters per IN (...) query


class SQLiteStore:
    """A flowtracker database in one SQLite file."""

    def __init__(
        self, path: str | Path, *, durability: Durability = "full", busy_timeout_ms: int = 5_000
    ) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        with _translated("open the database"):
            self._writer = self._connect(busy_timeout_ms)
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {durability.upper()}")
            with self._write():
                migrations.apply(Database(self._writer))
            self._reader = self._connect(busy_timeout_ms)
            self._reader.execute("PRAGMA query_only = 1")
        self.db = Database(self._reader)

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        with _translated("write"), self._write() as conn:
            yield SQLiteTransaction(conn)

    def quarantine(self, item: Quarantined, at: str) -> None:
        with _translated("quarantine a request"), self._write() as conn:
            conn.execute(
                "INSERT INTO quarantine (body_hash, body, content_type, error, source, "
                "first_seen, last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (body_hash) DO UPDATE SET last_seen = excluded.last_seen, "
                "count = count + 1, error = excluded.error, "
                "content_type = excluded.content_type, source = excluded.source",
                (
                    hashlib.sha256(item.body).hexdigest(),
                    item.body,
                    item.content_type,
                    json.dumps(item.error),
                    item.source,
                    at,
                    at,
                ),
            )

    def subject_ids(self, kind: Kind, after: str, limit: int) -> list[str]:
        rows = self._read(
            f"SELECT id FROM {_SUBJECTS[kind]} WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        return [row["id"] for row in rows]

    def subject(self, kind: Kind, subject_id: str) -> dict[str, Any] | None:
        rows = self._read(f"SELECT * FROM {_SUBJECTS[kind]} WHERE id = ?", (subject_id,))
        return rows[0] if rows else None

    def events(self, kind: Kind, subject_id: str) -> list[dict[str, Any]]:
        return self._read(
            f"SELECT * FROM {_EVENTS[kind]} WHERE {_OWNER[kind]} = ? ORDER BY {_ORDER[kind]}",
            (subject_id,),
        )

    def list_subjects(
        self, kind: Kind, where: SubjectFilter, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        clauses, params = ["id > ?"], [after or ""]
        if where.state is not None:
            clauses.append("state = ?")
            params.append(where.state)
        if where.anomalous:
            clauses.append("anomalies > 0")
        if where.received_before is not None:
            clauses.append("state = 'in_progress' AND last_received_at < ?")
            params.append(where.received_before)
        sql = f"SELECT * FROM {_SUBJECTS[kind]} WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?"
        return self._read(sql, (*params, limit))

    def summary(self, stuck_before: str) -> dict[str, Any]:
        def pairs(sql: str, params: Sequence[Any] = ()) -> dict[str, int]:
            return {row[0]: row[1] for row in self._read_rows(sql, params)}

        outcomes: dict[str, int] = {}
        duplicates = out_of_order = 0
        last: list[str] = []
        for table in _EVENTS.values():
            for outcome, count in pairs(
                f"SELECT outcome, COUNT(*) FROM {table} GROUP BY outcome"
            ).items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
            row = self._read_rows(
                f"SELECT COALESCE(SUM(deliveries - 1), 0), "
                f"COALESCE(SUM(out_of_order), 0), MAX(last_delivery_at) "
                f"FROM {table}"
            )[0]
            duplicates, out_of_order = duplicates + row[0], out_of_order + row[1]
            last += [row[2]] if row[2] else []
        quarantined = self._read_rows("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM quarantine")
        return {
            "outcomes": {**outcomes, "duplicate": duplicates},
            "out_of_order": out_of_order,
            "quarantined": quarantined[0][0],
            "quarantined_requests": quarantined[0][1],
            "instances": pairs("SELECT state, COUNT(*) FROM instances GROUP BY state"),
            "documents": pairs("SELECT state, COUNT(*) FROM documents GROUP BY state"),
            "stuck": self._read_rows(
                "SELECT COUNT(*) FROM instances WHERE state = 'in_progress' "
                "AND last_received_at < ?",
                (stuck_before,),
            )[0][0],
            "last_callback_at": max(last, default=None),
        }

    def quarantined(self, before: tuple[str, str] | None, limit: int) -> list[dict[str, Any]]:
        where = "WHERE (last_seen, body_hash) < (?, ?)" if before else ""
        return self._read(
            f"SELECT * FROM quarantine {where} ORDER BY last_seen DESC, body_hash DESC LIMIT ?",
            (*(before or ()), limit),
        )

    def anomalies(self, limit: int) -> list[dict[str, Any]]:
        return self._read(
            "SELECT * FROM ("
            "SELECT 'flow' AS kind, instance_id AS subject_id, type AS label, "
            "event_created AS at, outcome, reason, out_of_order, received_at FROM flow_events "
            "WHERE outcome = 'illegal' OR out_of_order ORDER BY received_at DESC LIMIT ?) "
            "UNION ALL SELECT * FROM ("
            "SELECT 'document', document_id, status, mtime, outcome, reason, out_of_order, "
            "received_at FROM document_snapshots WHERE outcome = 'illegal' OR out_of_order "
            "ORDER BY received_at DESC LIMIT ?) ORDER BY received_at DESC LIMIT ?",
            (limit, limit, limit),
        )

    def ping(self) -> None:
        self._read_rows("SELECT 1")

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            self._reader.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(row) for row in self._read_rows(sql, params)]

    def _read_rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with _translated("read"):
            return self._reader.execute(sql, params).fetchall()


class SQLiteTransaction:
    """The statements of one ingest transaction (see `storage.Transaction`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def known_keys(self, kind: Kind, keys: Iterable[str]) -> dict[str, bool]:
        rows = self._in(
            f"SELECT dedup_key, out_of_order FROM {_EVENTS[kind]} WHERE dedup_key IN ({{}})",
            list(keys),
        )
        return {row[0]: bool(row[1]) for row in rows}

    def subjects(self, kind: Kind, ids: Iterable[str]) -> dict[str, Subject]:
        rows = self._in(f"SELECT * FROM {_SUBJECTS[kind]} WHERE id IN ({{}})", list(ids))
        return {row["id"]: _subject(kind, row) for row in rows}

    def history(self, kind: Kind, subject_id: str) -> list[Entry]:
        sql = f"SELECT * FROM {_EVENTS[kind]} WHERE {_OWNER[kind]} = ? ORDER BY {_ORDER[kind]}"
        make = _flow_entry if kind == "flow" else _document_entry
        return [make(row) for row in self.conn.execute(sql, (subject_id,))]

    def add_entries(self, kind: Kind, entries: Sequence[Entry], received_at: str) -> None:
        if kind == "flow":
            self.conn.executemany(
                "INSERT INTO flow_events (dedup_key, instance_id, type, version, event_created, "
                "event_ns, outcome, reason, out_of_order, deliveries, received_at, "
                "last_delivery_at, body, content_type) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                [
                    (
                        e.key,
                        c.instance_id,
                        c.type,
                        c.version,
                        c.event_created.text,
                        c.event_created.ns,
                        e.verdict.outcome,
                        e.verdict.reason,
                        e.out_of_order,
                        received_at,
                        received_at,
                        c.body,
                        c.content_type,
                    )
                    for e in entries
                    for c in (e.source,)
                ],
            )
        else:
            self.conn.executemany(
                "INSERT INTO document_snapshots (dedup_key, document_id, status, object_version, "
                "mtime, mtime_ns, signed_and_sealed, title, outcome, reason, out_of_order, "
                "deliveries, received_at, last_delivery_at, body, content_type) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
                [
                    (
                        e.key,
                        c.document_id,
                        c.status,
                        c.object_version,
                        c.mtime.text,
                        c.mtime.ns,
                        c.signed_and_sealed,
                        c.title,
                        e.verdict.outcome,
                        e.verdict.reason,
                        e.out_of_order,
                        received_at,
                        received_at,
                        c.body,
                        c.content_type,
                    )
                    for e in entries
                    for c in (e.source,)
                ],
            )

    def set_verdicts(self, kind: Kind, entries: Sequence[Entry]) -> None:
        self.conn.executemany(
            f"UPDATE {_EVENTS[kind]} SET outcome = ?, reason = ? WHERE id = ?",
            [(e.verdict.outcome, e.verdict.reason, e.row_id) for e in entries],
        )

    def redeliver(self, kind: Kind, keys: Sequence[str], at: str) -> None:
        self.conn.executemany(
            f"UPDATE {_EVENTS[kind]} SET deliveries = deliveries + 1, last_delivery_at = ? "
            "WHERE dedup_key = ?",
            [(at, key) for key in keys],
        )

    def put_subjects(self, kind: Kind, subjects: Sequence[Subject]) -> None:
        columns = [
            "id",
            "state",
            "anomalies",
            "events",
            "first_event_at",
            "first_event_ns",
            "last_event_at",
            "last_event_ns",
            "last_major",
            "last_minor",
            "last_key",
            "last_received_at",
        ]
        shown = (
            ["object_version", "signed_and_sealed", "title", "mtime"] if kind == "document" else []
        )
        names = columns + shown
        self.conn.executemany(
            f"INSERT INTO {_SUBJECTS[kind]} ({', '.join(names)}) "
            f"VALUES ({', '.join('?' * len(names))}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names[1:]),
            [
                (
                    s.id,
                    s.state,
                    s.anomalies,
                    s.events,
                    s.first_at,
                    s.first_ns,
                    s.last_at,
                    s.last_ns,
                    s.last[0][0],
                    s.last[0][1],
                    s.last[1],
                    s.last_received_at,
                    *(s.shown.get(name) for name in shown),
                )
                for s in subjects
            ],
        )

    def _in(self, sql: str, values: list[str]) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = []
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            rows += self.conn.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall()
        return rows


def _subject(kind: Kind, row: sqlite3.Row) -> Subject:
    shown = (
        {name: row[name] for name in ("object_version", "signed_and_sealed", "title", "mtime")}
        if kind == "document"
        else {}
    )
    if "signed_and_sealed" in shown and shown["signed_and_sealed"] is not None:
        shown["signed_and_sealed"] = bool(shown["signed_and_sealed"])
    return Subject(
        id=row["id"],
        state=row["state"],
        anomalies=row["anomalies"],
        events=row["events"],
        last=((row["last_major"], row["last_minor"]), row["last_key"]),
        first_ns=row["first_event_ns"],
        first_at=row["first_event_at"],
        last_ns=row["last_event_ns"],
        last_at=row["last_event_at"],
        last_received_at=row["last_received_at"],
        shown=shown,
    )


def _flow_entry(row: sqlite3.Row) -> Entry:
    trigger, note = flow_trigger(row["type"], row["version"])
    return Entry(
        key=row["dedup_key"],
        position=(row["event_ns"], 0),
        trigger=trigger,
        note=note,
        time_ns=row["event_ns"],
        time_text=row["event_created"],
        out_of_order=bool(row["out_of_order"]),
        verdict=Verdict(row["outcome"], row["reason"]),
        row_id=row["id"],
    )


def _document_entry(row: sqlite3.Row) -> Entry:
    return Entry(
        key=row["dedup_key"],
        position=(row["object_version"], row["mtime_ns"]),
        trigger=row["status"],
        note=None,
        time_ns=row["mtime_ns"],
        time_text=row["mtime"],
        out_of_order=bool(row["out_of_order"]),
        verdict=Verdict(row["outcome"], row["reason"]),
        shown={
            "object_version": row["object_version"],
            "signed_and_sealed": bool(row["signed_and_sealed"]),
            "title": row["title"],
            "mtime": row["mtime"],
        },
        row_id=row["id"],
    )


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise StorageUnavailable(f"the database cannot {doing} now: {error}") from error
