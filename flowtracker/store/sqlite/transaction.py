"""The write transactions on SQLite: the statements of one ingest transaction (see
`store.protocol.Transaction`), and keeping a malformed request in the quarantine.

Prepared statements with bound parameters, run with `executemany`: this is the hot path.
Table and column names come from the fixed mappings below, never from input.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flowtracker.engine.events import Callback, Kind
from flowtracker.engine.records import Change, Entry, Subject
from flowtracker.engine.timestamps import format_ns
from flowtracker.store.protocol import Quarantined
from flowtracker.store.pruning import PruneStatements
from flowtracker.store.sqlite.schema import RECOUNT
from flowtracker.store.tables import (
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
    SUBJECT_COLUMNS,
    SUBJECTS,
    NamedRow,
    change_values,
    deliveries,
    event_key,
    subject,
    subject_columns,
    subject_values,
)

# Where each event is: (its subject's `seq`, its position, its dedup key) -> its row id.
# A subject's `seq` numbers it in the order it was first seen, so the keys of new and
# recent subjects go to the end of this table, not to random leaves (migration m008).
KEYS: dict[Kind, str] = {"flow": "flow_event_keys", "document": "document_snapshot_keys"}
_HOUR = SUBJECT_COLUMNS.index("received_hour")
# Indexed columns of a stored subject that are assigned only when they change.
_MOVING = ("state", "anomalies", "received_hour")
_INSERT: dict[Kind, str] = {
    kind: f"INSERT INTO {EVENTS[kind]} (id, dedup_key, {', '.join(OWN_COLUMNS[kind])}, outcome, "
    "reason, out_of_order, deliveries, received_at, last_delivery_at, body, content_type) "
    f"VALUES ({', '.join('?' * (len(OWN_COLUMNS[kind]) + 10))})"
    for kind in EVENTS
}
# The `seq` of the subject with id `?`.
_SEQ_OF: dict[Kind, str] = {
    kind: f"(SELECT seq FROM {SUBJECTS[kind]} WHERE id = ?)" for kind in SUBJECTS
}
_INSERT_KEY: dict[Kind, str] = {  # from the values of `_event_key`, then the row id
    "flow": "INSERT INTO flow_event_keys (subject_seq, event_ns, dedup_key, event_id) "
    f"VALUES ({_SEQ_OF['flow']}, ?, ?, ?)",
    "document": "INSERT INTO document_snapshot_keys (subject_seq, object_version, mtime_ns, "
    f"dedup_key, event_id) VALUES ({_SEQ_OF['document']}, ?, ?, ?, ?)",
}
_HISTORY_COLUMNS: dict[Kind, str] = {  # of the events `e` (`events_of`)
    kind: ", ".join(f"e.{column}" for column in columns)
    for kind, columns in HISTORY_COLUMNS.items()
}
# The key row `k` of an event, from the values of `_event_key`.
_KEY_IS: dict[Kind, str] = {
    "flow": f"k.subject_seq = {_SEQ_OF['flow']} AND k.event_ns = ? AND k.dedup_key = ?",
    "document": f"k.subject_seq = {_SEQ_OF['document']} "
    "AND k.object_version = ? AND k.mtime_ns = ? AND k.dedup_key = ?",
}
_IN_CHUNK = 500  # bound parameters per IN (...) query
_INSERT_CHANGE = (f"INSERT INTO changes ({', '.join(CHANGE_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * len(CHANGE_COLUMNS))})")  # fmt: skip


class SQLiteTransaction(PruneStatements):
    """Reads and writes inside one open `BEGIN IMMEDIATE` transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # The stored rows of the subjects read: `put_subjects` moves `received_hour` only
        # when it changes, and spells again only the times that changed.
        self._stored: dict[Kind, dict[str, sqlite3.Row]] = {"flow": {}, "document": {}}

    def lock(self, subjects: Iterable[tuple[Kind, str]]) -> None:
        """Nothing to do: `BEGIN IMMEDIATE` already holds every other writer off."""

    def known_keys(self, kind: Kind, callbacks: Iterable[Callback]) -> dict[str, bool]:
        # One point lookup each on the (subject, position, key) keys: their primary key is
        # also what keeps dedup keys unique, so no random-key index is written.
        sql = (f"SELECT k.dedup_key, e.out_of_order FROM {KEYS[kind]} k "
               f"JOIN {EVENTS[kind]} e ON e.id = k.event_id WHERE {_KEY_IS[kind]}")  # fmt: skip
        found: dict[str, bool] = {}
        for callback in callbacks:
            row = self.conn.execute(sql, event_key(callback)).fetchone()
            if row is not None:
                found[row[0]] = bool(row[1])
        return found

    def subjects(self, kind: Kind, ids: Iterable[str]) -> dict[str, Subject]:
        rows = self._in(f"SELECT * FROM {SUBJECTS[kind]} WHERE id IN ({{}})", list(ids))
        self._stored[kind].update((row["id"], row) for row in rows)
        return {row["id"]: subject(kind, row) for row in rows}

    def history(self, kind: Kind, subject_id: str) -> list[Entry]:
        # Only the columns the fold needs: never the bodies, on the hot path.
        sql = f"SELECT {_HISTORY_COLUMNS[kind]} {events_of(kind)}"
        make = ENTRY[kind]
        return [make(row) for row in self.conn.execute(sql, (subject_id,))]

    def add_entries(self, kind: Kind, entries: Sequence[Entry], received_at: str) -> None:
        """After `put_subjects`: the key rows take the `seq` of each event's subject."""
        if not entries:
            return
        # Row ids given here, as SQLite would (the greatest plus one), for the key rows.
        last = self.conn.execute(f"SELECT COALESCE(MAX(id), 0) FROM {EVENTS[kind]}").fetchone()[0]
        for row_id, entry in enumerate(entries, start=last + 1):
            entry.row_id = row_id
        self.conn.executemany(_INSERT[kind], [
            (e.row_id, e.key, *COLUMNS[kind](e.source), e.verdict.outcome, e.verdict.reason,
             e.out_of_order, deliveries(e.source), received_at, received_at, e.source.body,
             e.source.content_type)
            for e in entries
        ])  # fmt: skip
        self.conn.executemany(
            _INSERT_KEY[kind], [(*event_key(e.source), e.row_id) for e in entries]
        )

    def set_verdicts(self, kind: Kind, entries: Sequence[Entry]) -> None:
        self.conn.executemany(
            f"UPDATE {EVENTS[kind]} SET outcome = ?, reason = ? WHERE id = ?",
            [(e.verdict.outcome, e.verdict.reason, e.row_id) for e in entries],
        )

    def redeliver(self, kind: Kind, callbacks: Sequence[Callback], at: str) -> None:
        self.conn.executemany(
            f"UPDATE {EVENTS[kind]} SET deliveries = deliveries + 1, last_delivery_at = ? "
            f"WHERE id = (SELECT k.event_id FROM {KEYS[kind]} k WHERE {_KEY_IS[kind]})",
            [(at, *event_key(callback)) for callback in callbacks],
        )

    def put_subjects(self, kind: Kind, subjects: Sequence[Subject]) -> None:
        names = subject_columns(kind)
        stored = self._stored[kind]
        rows = {s.id: subject_values(kind, s, stored.get(s.id)) for s in subjects}
        # A new subject's `seq` is the next number: `KEYS` keeps its events in that order.
        self.conn.executemany(
            f"INSERT INTO {SUBJECTS[kind]} (seq, {', '.join(names)}) "
            f"VALUES ((SELECT COALESCE(MAX(seq), 0) + 1 FROM {SUBJECTS[kind]}), "
            f"{', '.join('?' * len(names))}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in names[1:]),
            [rows[s.id] for s in subjects if s.stored_state is None],
        )
        # A stored subject gets its state, anomaly count and hour of receipt only when they
        # change: an UPDATE that assigns a column rewrites its index entries even with the
        # value they had, and the (state, seq), (state, received_hour) and anomalous-subject
        # indexes would each write a page per subject and commit.
        updates: dict[tuple[bool, ...], list[Subject]] = {}
        for s in subjects:
            if s.stored_state is not None:
                changed = (s.state != s.stored_state, s.anomalies != s.stored_anomalies,
                           rows[s.id][_HOUR] != stored[s.id]["received_hour"])  # fmt: skip
                updates.setdefault(changed, []).append(s)
        for which, chosen in updates.items():
            moved = {name for name, on in zip(_MOVING, which, strict=True) if on}
            skipped = {"id", *_MOVING} - moved
            positions = [n for n, name in enumerate(names) if name not in skipped]
            self.conn.executemany(
                f"UPDATE {SUBJECTS[kind]} SET "
                + ", ".join(f"{names[n]} = ?" for n in positions)
                + " WHERE id = ?",
                [(*(rows[s.id][n] for n in positions), s.id) for s in chosen],
            )

    def bump(self, deltas: Mapping[str, int]) -> None:
        self.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [(name, delta) for name, delta in deltas.items() if delta],
        )

    def load(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        columns = COPIED[table][1]
        # The counters a new database starts with are the copied ones' to replace.
        verb = "INSERT OR REPLACE" if table in REPLACED else "INSERT"
        self.conn.executemany(
            f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [tuple(row[name] for name in columns) for row in rows],
        )
        for kind, events in EVENTS.items():
            if table == events:  # and where each is, in its subject's order (m008)
                position = ", ".join(f"e.{c}" for c in ORDER[kind].split(", "))
                self.conn.execute(
                    f"INSERT INTO {KEYS[kind]} SELECT s.seq, {position}, e.id FROM {events} e "
                    f"JOIN {SUBJECTS[kind]} s ON s.id = e.{OWNER[kind]} WHERE e.id BETWEEN ? AND ?",
                    (rows[0]["id"], rows[-1]["id"]),
                )

    def recount(self) -> None:
        for statement in RECOUNT:
            self.conn.execute(statement)

    def count_received(self, at_ns: int, callbacks: int) -> None:
        self.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
            (LAST_CALLBACK, at_ns),
        )
        minute = format_ns(at_ns)[:16]
        self.conn.execute(
            "INSERT INTO received_per_minute (minute, callbacks) VALUES (?, ?) "
            "ON CONFLICT (minute) DO UPDATE SET callbacks = callbacks + excluded.callbacks",
            (minute, callbacks),
        )
        self.conn.execute(
            "DELETE FROM received_per_minute "
            "WHERE minute < strftime('%Y-%m-%dT%H:%M', ? || ':00', '-1 day')",
            (minute,),
        )

    def add_changes(self, changes: Sequence[Change], at: str) -> int | None:
        # Transactions already take turns (BEGIN IMMEDIATE): numbered as they commit.
        if not changes:
            return None
        (last,) = self.conn.execute(
            "UPDATE change_clock SET seq = seq + ? RETURNING seq", (len(changes),)
        ).fetchone()
        self.conn.executemany(_INSERT_CHANGE, change_values(changes, last - len(changes) + 1, at))
        return int(last)

    # The helpers of `PruneStatements` --------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[NamedRow]:
        return self.conn.execute(sql, params).fetchall()

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def _one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def _events_of(self, kind: Kind, subjects: Sequence[NamedRow]) -> tuple[str, list[Any]]:
        # SQLite finds a subject's events through its key rows (m008), by the subject's seq.
        seqs = [row["seq"] for row in subjects]
        return (f"id IN (SELECT event_id FROM {KEYS[kind]} WHERE subject_seq IN "
                f"({', '.join('?' * len(seqs))}))", seqs)  # fmt: skip

    def _delete_events(self, kind: Kind, subjects: Sequence[NamedRow]) -> None:
        where, params = self._events_of(kind, subjects)
        self.conn.execute(f"DELETE FROM {EVENTS[kind]} WHERE {where}", params)
        seqs = [row["seq"] for row in subjects]
        self.conn.execute(
            f"DELETE FROM {KEYS[kind]} WHERE subject_seq IN ({', '.join('?' * len(seqs))})", seqs
        )

    def _in(self, sql: str, values: list[str]) -> list[sqlite3.Row]:
        rows: list[sqlite3.Row] = []
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            rows += self.conn.execute(sql.format(", ".join("?" * len(chunk))), chunk).fetchall()
        return rows


def quarantine(conn: sqlite3.Connection, item: Quarantined, at: str) -> None:
    """Keep a malformed request (inside an open write transaction); a body seen before
    only raises its count and takes the latest error, content type and source."""
    digest, error = hashlib.sha256(item.body).hexdigest(), json.dumps(item.error)
    seen = conn.execute(
        "UPDATE quarantine SET last_seen = ?, count = count + 1, error = ?, "
        "content_type = ?, source = ? WHERE body_hash = ?",
        (at, error, item.content_type, item.source, digest),
    )
    if seen.rowcount == 0:
        conn.execute(
            "INSERT INTO quarantine (body_hash, body, content_type, error, source, "
            "first_seen, last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
            (digest, item.body, item.content_type, error, item.source, at, at),
        )
    counted = {"quarantine.requests": 1, "quarantine.rows": int(seen.rowcount == 0)}
    SQLiteTransaction(conn).bump(counted)


def events_of(kind: Kind) -> str:
    """`FROM ... WHERE ... ORDER BY ...` for the events of the subject with id `?`, as `e`,
    in order."""
    return (
        f"FROM {KEYS[kind]} k JOIN {EVENTS[kind]} e ON e.id = k.event_id "
        f"WHERE k.subject_seq = {_SEQ_OF[kind]} "
        f"ORDER BY k.subject_seq, {', '.join('k.' + c for c in ORDER[kind].split(', '))}"
    )
