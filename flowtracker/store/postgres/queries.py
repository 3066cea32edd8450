"""The read queries on PostgreSQL, each answering the typed rows of `store.rows`.

Each takes a connection inside one read-only REPEATABLE READ transaction
(`Connections.reading`), so that a read of several statements sees one snapshot. Ids and
times compare in the "C" collation, as SQLite compares them.
"""

from __future__ import annotations

import json
from typing import Literal

from psycopg.rows import tuple_row

from flowtracker.engine.events import Kind
from flowtracker.store.postgres.connection import Connection
from flowtracker.store.protocol import ActivityKey, SubjectFilter
from flowtracker.store.rows import AnomalyRow, EventRow, QuarantineRow, SubjectRow, Totals
from flowtracker.store.tables import (
    EVENT_COLUMNS,
    EVENTS,
    LAST_CALLBACK,
    ORDER,
    OWNER,
    SUBJECTS,
    event_row,
    hour,
    subject_row,
)
from flowtracker.store.tables import totals as counted

_ANOMALIES = (
    "SELECT * FROM ("
    "(SELECT 'flow' AS kind, instance_id AS subject_id, type AS label, event_created AS at, "
    "outcome, reason, out_of_order, received_at FROM flow_events "
    "WHERE outcome = 'illegal' OR out_of_order ORDER BY received_at DESC LIMIT %(n)s) "
    "UNION ALL (SELECT 'document', document_id, status, mtime, outcome, reason, out_of_order, "
    "received_at FROM document_snapshots WHERE outcome = 'illegal' OR out_of_order "
    "ORDER BY received_at DESC LIMIT %(n)s)) a ORDER BY received_at DESC LIMIT %(n)s"
)


def subject_ids(conn: Connection, kind: Kind, after: str, limit: int) -> list[str]:
    rows = conn.execute(
        f"SELECT id FROM {SUBJECTS[kind]} WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
    )
    return [row["id"] for row in rows]


def subject_history(
    conn: Connection, kind: Kind, subject_id: str
) -> tuple[SubjectRow, list[EventRow]] | None:
    found = conn.execute(f"SELECT * FROM {SUBJECTS[kind]} WHERE id = %s", (subject_id,)).fetchone()
    if found is None:
        return None
    rows = conn.cursor(row_factory=tuple_row).execute(
        f"SELECT {', '.join(EVENT_COLUMNS[kind])} FROM {EVENTS[kind]} "
        f"WHERE {OWNER[kind]} = %s ORDER BY {ORDER[kind]}",
        (subject_id,),
    )
    return subject_row(kind, found), [event_row(row) for row in rows]


def list_subjects(
    conn: Connection, kind: Kind, where: SubjectFilter, after: int | ActivityKey | None, limit: int
) -> list[SubjectRow]:
    clauses, params, order = _order(where, after)
    if where.state is not None:
        clauses.append("state = %s")
        params.append(where.state)
    if where.anomalous:
        clauses.append("anomalies > 0")
    if where.received_before is not None:
        clauses.append(f"state = 'in_progress' AND {_RECEIVED_BEFORE}")
        params += _times(where.received_before)
    if where.quiet_before is not None:
        clauses.append(_RECEIVED_BEFORE)
        params += _times(where.quiet_before)
    if where.id_prefix:  # a range on the primary key, not a LIKE scan
        clauses.append("id >= %s AND id < %s")
        params += [where.id_prefix, where.id_prefix + "\U0010ffff"]
    rows = conn.execute(
        f"SELECT * FROM {SUBJECTS[kind]} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT %s",
        (*params, limit),
    )
    return [subject_row(kind, row) for row in rows]


# Last received before a time: on the hour the indexes hold, then the exact time (`_times`).
_RECEIVED_BEFORE = "received_hour <= %s AND last_received_at < %s"


def _times(at: str) -> list[object]:
    return [hour(at), at]


def _order(
    where: SubjectFilter, after: int | ActivityKey | None
) -> tuple[list[str], list[object], str]:
    """The keyset clause, the time range's and the order of a list (as on SQLite)."""
    clauses: list[str] = []
    params: list[object] = []
    if where.received_since is not None:
        clauses.append("received_hour >= %s AND last_received_at >= %s")
        params += [hour(where.received_since), where.received_since]
    if where.received_until is not None:
        clauses.append(_RECEIVED_BEFORE)
        params += _times(where.received_until)
    if not where.by_activity:
        assert not isinstance(after, tuple)
        return ["seq > %s", *clauses], [after or 0, *params], "seq"
    clauses.append("received_hour IS NOT NULL")
    if isinstance(after, tuple):
        clauses.append("(received_hour, last_received_at, seq) < (%s, %s, %s)")
        params += list(after)
    return clauses, params, "received_hour DESC, last_received_at DESC, seq DESC"


def id_match(conn: Connection, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
    found = conn.execute(
        f"SELECT id FROM {SUBJECTS[kind]} WHERE id >= %s AND id < %s ORDER BY id LIMIT 1",
        (prefix, prefix + "\U0010ffff"),
    ).fetchone()
    if found is None:
        return None
    return "whole" if found["id"] == prefix else "prefix"


def quietest(conn: Connection, received_before: str, limit: int) -> list[SubjectRow]:
    rows = conn.execute(
        "SELECT * FROM instances WHERE state = 'in_progress' AND received_hour <= %s "
        "AND last_received_at < %s ORDER BY received_hour, last_received_at LIMIT %s",
        (hour(received_before), received_before, limit),
    )
    return [subject_row("flow", row) for row in rows]


def totals(conn: Connection, stuck_before: str) -> Totals:
    """From the counters' shards, summed (the last callback's time: the greatest)."""
    rows = conn.execute(
        "SELECT name, CASE WHEN name = %s THEN MAX(value) ELSE SUM(value) END AS value "
        "FROM counters GROUP BY name",
        (LAST_CALLBACK,),
    )
    counters = {row["name"]: int(row["value"]) for row in rows}
    at = hour(stuck_before)
    stuck = conn.execute(
        "SELECT (SELECT COUNT(*) FROM instances WHERE state = 'in_progress' "
        "AND received_hour < %s) + (SELECT COUNT(*) FROM instances WHERE state = "
        "'in_progress' AND received_hour = %s AND last_received_at < %s) AS n",
        (at, at, stuck_before),
    ).fetchone()
    return counted(counters, int(stuck["n"]) if stuck else 0)


def quarantined(
    conn: Connection, before: tuple[str, str] | None, limit: int, body_limit: int | None,
    code: str | None = None, body_hash: str | None = None,
) -> list[QuarantineRow]:  # fmt: skip
    tests = [("(last_seen, body_hash) < (%s, %s)", before or ()),
             ("(error::jsonb ->> 'code') = %s", (code,) if code is not None else ()),
             # an id's start: hexadecimal digits, all below "g"
             ("body_hash >= %s AND body_hash < %s",
              (body_hash, body_hash + "g") if body_hash is not None else ())]  # fmt: skip
    chosen = [(test, values) for test, values in tests if values]
    where = ("WHERE " + " AND ".join(test for test, _ in chosen)) if chosen else ""
    params = [value for _, values in chosen for value in values]
    body = "body" if body_limit is None else f"substring(body from 1 for {int(body_limit)})"
    rows = conn.cursor(row_factory=tuple_row).execute(
        f"SELECT body_hash, {body}, length(body), content_type, error, source, first_seen, "
        f"last_seen, count FROM quarantine {where} "
        "ORDER BY last_seen DESC, body_hash DESC LIMIT %s",
        (*params, limit),
    )
    return [
        QuarantineRow(r[0], bytes(r[1]), r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
        for r in rows
    ]


def quarantined_body(conn: Connection, body_hash: str) -> bytes | None:
    row = conn.execute("SELECT body FROM quarantine WHERE body_hash = %s", (body_hash,)).fetchone()
    return bytes(row["body"]) if row else None


def pulse(conn: Connection, subject: tuple[Kind, str] | None) -> str:
    if subject is None:  # counters that only grow: every delivery moves one
        row = conn.execute(
            "SELECT COALESCE(SUM(value), 0) AS n FROM counters "
            "WHERE name LIKE 'arrived.%' OR name = 'quarantine.requests'"
        ).fetchone()
        return str(row["n"] if row else 0)
    kind, subject_id = subject
    found = conn.execute(
        f"SELECT COUNT(*) AS n, SUM(deliveries) AS d, MAX(last_delivery_at) AS at "
        f"FROM {EVENTS[kind]} WHERE {OWNER[kind]} = %s",
        (subject_id,),
    ).fetchone()
    assert found is not None
    return f"{found['n']}.{found['d'] or 0}.{found['at'] or ''}"


def anomalies(conn: Connection, limit: int) -> list[AnomalyRow]:
    rows = conn.execute(_ANOMALIES, {"n": limit})
    return [
        AnomalyRow(r["kind"], r["subject_id"], r["label"], r["at"], r["outcome"], r["reason"],
                   bool(r["out_of_order"]), r["received_at"])
        for r in rows
    ]  # fmt: skip


def received_since(conn: Connection, minute: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT minute, SUM(callbacks) AS n FROM received_per_minute WHERE minute >= %s "
        "GROUP BY minute",
        (minute,),
    )
    return {row["minute"]: int(row["n"]) for row in rows}
