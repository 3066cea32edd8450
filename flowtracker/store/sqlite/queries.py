"""The read queries on SQLite, each answering the typed rows of `store.rows`.

Each takes a `Reader` (one read transaction, `Connections.reading`). Table and column
names come from the fixed mappings of `transaction`, never from input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from flowtracker.engine.events import Kind
from flowtracker.store.protocol import ActivityKey, SubjectFilter
from flowtracker.store.rows import AnomalyRow, EventRow, QuarantineRow, SubjectRow, Totals
from flowtracker.store.sqlite.connection import Reader
from flowtracker.store.sqlite.transaction import events_of
from flowtracker.store.tables import (
    EVENT_COLUMNS,
    SUBJECTS,
    event_row,
    hour,
    subject_row,
)
from flowtracker.store.tables import totals as counted

_EVENT_COLUMNS: dict[Kind, str] = {  # of the events `e` (`events_of`)
    kind: ", ".join(f"e.{column}" for column in columns) for kind, columns in EVENT_COLUMNS.items()
}
_ANOMALIES = (
    "SELECT * FROM ("
    "SELECT 'flow' AS kind, instance_id, type, event_created, outcome, reason, out_of_order, "
    "received_at FROM flow_events WHERE outcome = 'illegal' OR out_of_order "
    "ORDER BY received_at DESC LIMIT ?) "
    "UNION ALL SELECT * FROM ("
    "SELECT 'document', document_id, status, mtime, outcome, reason, out_of_order, "
    "received_at FROM document_snapshots WHERE outcome = 'illegal' OR out_of_order "
    "ORDER BY received_at DESC LIMIT ?) ORDER BY received_at DESC LIMIT ?"
)


def subject_ids(read: Reader, kind: Kind, after: str, limit: int) -> list[str]:
    sql = f"SELECT id FROM {SUBJECTS[kind]} WHERE id > ? ORDER BY id LIMIT ?"
    return [row[0] for row in read(sql, (after, limit))]


def subject_history(
    read: Reader, kind: Kind, subject_id: str
) -> tuple[SubjectRow, list[EventRow]] | None:
    found = read(f"SELECT * FROM {SUBJECTS[kind]} WHERE id = ?", (subject_id,))
    if not found:
        return None
    rows = read(f"SELECT {_EVENT_COLUMNS[kind]} {events_of(kind)}", (subject_id,))
    return subject_row(kind, found[0]), [event_row(row) for row in rows]


def list_subjects(
    read: Reader, kind: Kind, where: SubjectFilter, after: int | ActivityKey | None, limit: int
) -> list[SubjectRow]:
    # In `seq` order, on an index for each filter: (state, seq), the partial index of
    # anomalous subjects, or `seq` alone. An id prefix's range on the primary key is
    # narrower than any of them: then the other terms stay off the indexes (SQLite's
    # unary +) and what the range finds is sorted.
    def term(column: str) -> str:
        return f"+{column}" if where.id_prefix else column

    clauses, params, order = _order(where, after, term)
    if where.state is not None:
        clauses.append(f"{term('state')} = ?")
        params.append(where.state)
    if where.anomalous:
        clauses.append(f"{term('anomalies')} > 0")
    if where.received_before is not None:
        clause, times = _received_before(where.received_before, term)
        clauses.append(f"{term('state')} = 'in_progress' AND {clause}")
        params += times
    if where.quiet_before is not None:
        clause, times = _received_before(where.quiet_before, term)
        clauses.append(clause)
        params += times
    if where.id_prefix:  # a range on the primary key, not a LIKE scan
        clauses.append("id >= ? AND id < ?")
        params += [where.id_prefix, where.id_prefix + "\U0010ffff"]
    sql = f"SELECT * FROM {SUBJECTS[kind]} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT ?"
    return [subject_row(kind, row) for row in read(sql, (*params, limit))]


def _received_before(at: str, term: Callable[[str], str]) -> tuple[str, list[int | str]]:
    """Last received before `at`: on the hour the indexes hold, then the exact time."""
    return f"{term('received_hour')} <= ? AND {term('last_received_at')} < ?", [_hour(at), at]


def _order(
    where: SubjectFilter, after: int | ActivityKey | None, term: Callable[[str], str]
) -> tuple[list[str], list[int | str], str]:
    """The keyset clause, the time range's and the order of a list: by `seq`, or by the
    last receipt (on the received_hour index, m014: an entry that moves once an hour;
    the exact time sorts the subjects of an hour)."""
    clauses: list[str] = []
    params: list[int | str] = []
    if where.received_since is not None:
        clauses.append(f"{term('received_hour')} >= ? AND {term('last_received_at')} >= ?")
        params += [_hour(where.received_since), where.received_since]
    if where.received_until is not None:
        clause, times = _received_before(where.received_until, term)
        clauses.append(clause)
        params += times
    if not where.by_activity:
        assert not isinstance(after, tuple)
        return [f"{term('seq')} > ?", *clauses], [after or 0, *params], "seq"
    clauses.append(f"{term('received_hour')} IS NOT NULL")
    if isinstance(after, tuple):
        clauses.append(f"({term('received_hour')}, {term('last_received_at')}, {term('seq')}) "
                       "< (?, ?, ?)")  # fmt: skip
        params += list(after)
    return clauses, params, "received_hour DESC, last_received_at DESC, seq DESC"


def id_match(read: Reader, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
    # The primary key's range, in id order: the id itself comes first if it is there.
    found = read(
        f"SELECT id FROM {SUBJECTS[kind]} WHERE id >= ? AND id < ? ORDER BY id LIMIT 1",
        (prefix, prefix + "\U0010ffff"),
    )
    if not found:
        return None
    return "whole" if found[0][0] == prefix else "prefix"


def quietest(read: Reader, received_before: str, limit: int) -> list[SubjectRow]:
    rows = read(  # the (state, received_hour) index, in its order; sorted within an hour
        "SELECT * FROM instances WHERE state = 'in_progress' AND received_hour <= ? "
        "AND last_received_at < ? ORDER BY received_hour, last_received_at LIMIT ?",
        (_hour(received_before), received_before, limit),
    )
    return [subject_row("flow", row) for row in rows]


def totals(read: Reader, stuck_before: str) -> Totals:
    """From the counters the ingest transactions keep (`schema.RECOUNT`), not COUNT(*):
    `flow.outcome.applied`, `document.state.closed`, `arrived.flow.duplicate`, ..."""
    counters: dict[str, int] = {row[0]: row[1] for row in read("SELECT name, value FROM counters")}
    hour = _hour(stuck_before)
    stuck = read(  # whole hours from the index alone; the rows of the last one checked
        "SELECT (SELECT COUNT(*) FROM instances WHERE state = 'in_progress' "
        "AND received_hour < ?) + (SELECT COUNT(*) FROM instances WHERE state = "
        "'in_progress' AND received_hour = ? AND last_received_at < ?)",
        (hour, hour, stuck_before),
    )[0][0]
    return counted(counters, stuck)


def quarantined(
    read: Reader, before: tuple[str, str] | None, limit: int, body_limit: int | None,
    code: str | None = None, body_hash: str | None = None,
) -> list[QuarantineRow]:  # fmt: skip
    tests = [("(last_seen, body_hash) < (?, ?)", before or ()),
             ("json_extract(error, '$.code') = ?", (code,) if code is not None else ()),
             # an id's start: hexadecimal digits, all below "g"
             ("body_hash >= ? AND body_hash < ?",
              (body_hash, body_hash + "g") if body_hash is not None else ())]  # fmt: skip
    chosen = [(test, values) for test, values in tests if values]
    where = ("WHERE " + " AND ".join(test for test, _ in chosen)) if chosen else ""
    params = [value for _, values in chosen for value in values]
    body = "body" if body_limit is None else f"substr(body, 1, {int(body_limit)})"
    rows = read(
        f"SELECT body_hash, {body}, length(body), content_type, error, source, first_seen, "
        f"last_seen, count FROM quarantine {where} "
        "ORDER BY last_seen DESC, body_hash DESC LIMIT ?",
        (*params, limit),
    )
    return [
        QuarantineRow(r[0], bytes(r[1]), r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
        for r in rows
    ]


def quarantined_body(read: Reader, body_hash: str) -> bytes | None:
    rows = read("SELECT body FROM quarantine WHERE body_hash = ?", (body_hash,))
    return bytes(rows[0][0]) if rows else None


def pulse(read: Reader, subject: tuple[Kind, str] | None) -> str:
    if subject is None:  # counters that only grow: every delivery moves one
        return str(read(
            "SELECT COALESCE(SUM(value), 0) FROM counters "
            "WHERE name GLOB 'arrived.*' OR name = 'quarantine.requests'"
        )[0][0])  # fmt: skip
    kind, subject_id = subject
    n, deliveries, at = read(
        "SELECT COUNT(*), SUM(e.deliveries), MAX(e.last_delivery_at) " + events_of(kind),
        (subject_id,),
    )[0]
    return f"{n}.{deliveries or 0}.{at or ''}"


def anomalies(read: Reader, limit: int) -> list[AnomalyRow]:
    rows = read(_ANOMALIES, (limit, limit, limit))
    return [AnomalyRow(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]) for r in rows]


def received_since(read: Reader, minute: str) -> dict[str, int]:
    rows = read("SELECT minute, callbacks FROM received_per_minute WHERE minute >= ?", (minute,))
    return {row[0]: row[1] for row in rows}


def _hour(at: str) -> int:
    """The `received_hour` of an instant (`tables.hour`)."""
    found = hour(at)
    assert found is not None
    return found
