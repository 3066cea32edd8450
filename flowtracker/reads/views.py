"""Read models of subjects, the quarantine and the anomalies: the JSON the read API serves
and `flowtracker status ID --json` prints (the totals are in `summaries`)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import orjson

from flowtracker.engine.bodies import document_payload, stored_json, too_deep_text
from flowtracker.engine.events import Kind
from flowtracker.engine.lifecycles import DOCUMENT, FLOW
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import InvalidQuery, NotFound, Pruned
from flowtracker.store.protocol import ActivityKey, Store, SubjectFilter
from flowtracker.store.rows import EventRow, QuarantineRow, SubjectRow
from flowtracker.store.tables import hour

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a list: `limit` rows after the opaque `cursor` of the previous page."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def instance(store: Store, instance_id: str, *, raw: bool = False) -> dict[str, Any]:
    """One flow instance with its events in event-time order. With `raw`, each payload
    is the stored body itself, unparsed (`orjson.Fragment`), for a response rendered by
    orjson: what the read API serves."""
    found = store.subject_history("flow", instance_id.lower())
    if found is None:
        raise _missing(store, "flow", instance_id.lower(), f"flow instance {instance_id!r}")
    row, events = found
    return {**instance_summary(row), "events": [_flow_event(event, raw) for event in events]}


def document(store: Store, document_id: str, *, raw: bool = False) -> dict[str, Any]:
    """One document with its snapshots in (object_version, mtime) order (`raw`: as for
    `instance`; a snapshot's payload is made of three fields and is always decoded)."""
    found = store.subject_history("document", document_id)
    if found is None:
        raise _missing(store, "document", document_id, f"document {document_id!r}")
    row, snapshots = found
    return {**document_summary(row), "snapshots": [_snapshot(s) for s in snapshots]}


def _missing(store: Store, kind: Kind, subject_id: str, named: str) -> NotFound | Pruned:
    """Why a subject is not there: never seen (404), or pruned by retention (410, with
    the final state and when it was pruned)."""
    tombstone = store.tombstone(kind, subject_id)
    if tombstone is None:
        return NotFound(f"no {named}", {"id": subject_id})
    return Pruned(
        f"{named} was pruned at {tombstone.pruned_at} (retention); its final state was "
        f"{tombstone.state}",
        dataclasses.asdict(tombstone),
    )


def instance_summary(row: SubjectRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "terminal": row.state in FLOW.terminal,
        "first_event_at": row.first_event_at,
        "last_event_at": row.last_event_at,
        "last_received_at": row.last_received_at,
        "event_count": row.events,
        "anomalies": row.anomalies,
        "unknown_to_scrive_at": row.unknown_to_scrive_at,
    }


def document_summary(row: SubjectRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": row.state,
        "final": row.state in DOCUMENT.terminal,
        "object_version": row.object_version,
        "signed_and_sealed": row.signed_and_sealed,
        "title": row.title,
        "mtime": row.mtime,
        "last_received_at": row.last_received_at,
        "snapshot_count": row.events,
        "anomalies": row.anomalies,
        "unknown_to_scrive_at": row.unknown_to_scrive_at,
    }


def instances(store: Store, where: SubjectFilter, page: Page) -> dict[str, Any]:
    """A page of instance summaries in the order they were first seen, with the cursor of
    the next page."""
    return _subjects(store, "flow", where, page)


def documents(store: Store, where: SubjectFilter, page: Page) -> dict[str, Any]:
    return _subjects(store, "document", where, page)


def quietest(store: Store, now_ns: int, stuck_age_ns: int, limit: int) -> list[dict[str, Any]]:
    """The stuck instances that have been quiet the longest, quietest first."""
    rows = store.quietest(quiet_since(now_ns, stuck_age_ns), limit)
    return [instance_summary(row) for row in rows]


def stuck_filter(now_ns: int, stuck_age_ns: int) -> SubjectFilter:
    """In progress, with no callback received for longer than `stuck_age_ns`."""
    return SubjectFilter(state="in_progress", received_before=quiet_since(now_ns, stuck_age_ns))


def quiet_since(now_ns: int, stuck_age_ns: int) -> str:
    """The instant before which an in-progress instance's last callback makes it stuck."""
    return format_ns(now_ns - stuck_age_ns)


def quarantine(
    store: Store, page: Page, body_limit: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """The malformed requests kept, newest first (of error `code` only, when given); with
    `body_limit`, each body cut to that many bytes and `body_length` added."""
    before = _decode_cursor(page.cursor, 2) if page.cursor else None
    at = (before[0], before[1]) if before else None
    rows = store.quarantined(at, _limit(page) + 1, body_limit, code)
    items = [quarantined(row) for row in rows[: page.limit]]
    if body_limit is not None:
        for item, row in zip(items, rows, strict=False):
            item["body_length"] = row.body_length
    more = len(rows) > page.limit
    last = rows[page.limit - 1] if more else None
    return {
        "items": items,
        "next": _encode_cursor([last.last_seen, last.body_hash]) if last else None,
    }


def quarantined(row: QuarantineRow) -> dict[str, Any]:
    return {
        "id": row.body_hash,
        "body": row.body.decode("utf-8", "replace"),
        "content_type": row.content_type,
        "error": row.error,
        "source": row.source,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "count": row.count,
    }


def anomalies(
    store: Store, limit: int = DEFAULT_LIMIT, body_limit: int | None = None
) -> dict[str, Any]:
    """The newest illegal and out-of-order events, and the newest quarantined requests."""
    events = [
        {
            "kind": row.kind,
            "subject_id": row.subject_id,
            "type": row.label,
            "at": row.at,
            "outcome": row.outcome,
            "reason": row.reason,
            "out_of_order": row.out_of_order,
            "received_at": row.received_at,
        }
        for row in store.anomalies(limit)
    ]
    return {"events": events, "quarantine": quarantine(store, Page(limit), body_limit)["items"]}


def _subjects(store: Store, kind: Kind, where: SubjectFilter, page: Page) -> dict[str, Any]:
    after: int | ActivityKey | None = None
    if page.cursor and where.by_activity:
        after = _activity(*_decode_cursor(page.cursor, 4))
    elif page.cursor:
        after = _seq(*_decode_cursor(page.cursor, 2))
    rows = store.list_subjects(kind, where, after, _limit(page) + 1)
    summary = instance_summary if kind == "flow" else document_summary
    more = len(rows) > page.limit
    return {
        "items": [summary(row) for row in rows[: page.limit]],
        "next": _next(rows[page.limit - 1], where.by_activity) if more else None,
    }


def _next(last: SubjectRow, by_activity: bool) -> str:
    if not by_activity:
        return _encode_cursor(["seq", str(last.seq)])
    assert last.last_received_at is not None  # a list by activity holds no other
    return _encode_cursor(["activity", str(hour(last.last_received_at)), last.last_received_at,
                           str(last.seq)])  # fmt: skip


def _activity(tag: str, at_hour: str, at: str, seq: str) -> ActivityKey:
    if tag != "activity" or not all(v.isascii() and v.isdigit() and len(v) <= 18
                                    for v in (at_hour, seq)):  # fmt: skip
        raise InvalidQuery({"cursor": "not a cursor this API gave out"})
    return int(at_hour), at, int(seq)


def _seq(tag: str, value: str) -> int:
    # Tagged: a cursor from before migration m008 held one id, which may be all digits.
    if tag != "seq" or not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise InvalidQuery({"cursor": "not a cursor this API gave out"})
    return int(value)


def _flow_event(row: EventRow, raw: bool) -> dict[str, Any]:
    # A Flow callback's body is the payload: validated JSON when it was taken, so it can
    # be served as it is unless it might nest too deep.
    if raw and not too_deep_text(row.body):
        payload: dict[str, Any] = {"payload": orjson.Fragment(row.body)}
    else:
        payload = _payload(*stored_json(row.body))
    return {"type": row.label, "event_created": row.time, **_delivery(row), **payload}


def _snapshot(row: EventRow) -> dict[str, Any]:
    return {
        "state": row.label,
        "object_version": row.object_version,
        "mtime": row.time,
        "signed_and_sealed": row.signed_and_sealed,
        **_delivery(row),
        **_payload(*document_payload(row.body, row.content_type)),
    }


def _payload(payload: Any, problem: str | None) -> dict[str, Any]:
    """The body as served, or (stored before the nesting limit) null and why."""
    if problem is None:
        return {"payload": payload}
    return {"payload": None, "payload_error": problem}


def _delivery(row: EventRow) -> dict[str, Any]:
    return {
        "received_at": row.received_at,
        "last_delivery_at": row.last_delivery_at,
        "outcome": row.outcome,
        "out_of_order": row.out_of_order,
        "deliveries": row.deliveries,
        "reason": row.reason,
        "source": "reconcile" if row.reconciled else "callback",
    }


def _limit(page: Page) -> int:
    if not 1 <= page.limit <= MAX_LIMIT:
        raise InvalidQuery({"limit": f"must be in 1..{MAX_LIMIT} (got {page.limit})"})
    return page.limit


def _encode_cursor(values: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, length: int) -> list[str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        values = None
    if not (
        isinstance(values, list)
        and len(values) == length
        and all(isinstance(v, str) for v in values)
    ):
        raise InvalidQuery({"cursor": "not a cursor this API gave out"})
    return values
