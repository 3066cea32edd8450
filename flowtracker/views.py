"""Read models: the JSON the read API serves and `flowtracker status --json` prints."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from .bodies import document_payload, stored_json
from .errors import InvalidQuery, NotFound
from .events import Kind
from .lifecycles import DOCUMENT, DOCUMENT_STATES, FLOW, FLOW_STATES
from .records import DELIVERY_OUTCOMES
from .storage import Store, SubjectFilter
from .timestamps import format_ns

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class Page:
    """Which page of a list: `limit` rows after the opaque `cursor` of the previous page."""

    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def instance(store: Store, instance_id: str) -> dict[str, Any]:
    """One flow instance with its events in event-time order."""
    found = store.subject_history("flow", instance_id.lower())
    if found is None:
        raise NotFound(f"no flow instance {instance_id!r}", {"id": instance_id})
    row, events = found
    return {**instance_summary(row), "events": [_flow_event(event) for event in events]}


def document(store: Store, document_id: str) -> dict[str, Any]:
    """One document with its snapshots in (object_version, mtime) order."""
    found = store.subject_history("document", document_id)
    if found is None:
        raise NotFound(f"no document {document_id!r}", {"id": document_id})
    row, snapshots = found
    return {**document_summary(row), "snapshots": [_snapshot(s) for s in snapshots]}


def instance_summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "state": row["state"],
        "terminal": row["state"] in FLOW.terminal,
        "first_event_at": row["first_event_at"],
        "last_event_at": row["last_event_at"],
        "last_received_at": row["last_received_at"],
        "event_count": row["events"],
        "anomalies": row["anomalies"],
    }


def document_summary(row: dict[str, Any]) -> dict[str, Any]:
    sealed = row["signed_and_sealed"]
    return {
        "id": row["id"],
        "state": row["state"],
        "final": row["state"] in DOCUMENT.terminal,
        "object_version": row["object_version"],
        "signed_and_sealed": None if sealed is None else bool(sealed),
        "title": row["title"],
        "mtime": row["mtime"],
        "last_received_at": row["last_received_at"],
        "snapshot_count": row["events"],
        "anomalies": row["anomalies"],
    }


def instances(store: Store, where: SubjectFilter, page: Page) -> dict[str, Any]:
    """A page of instance summaries in the order they were first seen, with the cursor of
    the next page."""
    return _subjects(store, "flow", where, page)


def documents(store: Store, where: SubjectFilter, page: Page) -> dict[str, Any]:
    return _subjects(store, "document", where, page)


def quietest(store: Store, now_ns: int, stuck_age_ns: int, limit: int) -> list[dict[str, Any]]:
    """The stuck instances that have been quiet the longest, quietest first."""
    rows = store.quietest(_quiet_since(now_ns, stuck_age_ns), limit)
    return [instance_summary(row) for row in rows]


def stuck_filter(now_ns: int, stuck_age_ns: int) -> SubjectFilter:
    """In progress, with no callback received for longer than `stuck_age_ns`."""
    return SubjectFilter(state="in_progress", received_before=_quiet_since(now_ns, stuck_age_ns))


def _quiet_since(now_ns: int, stuck_age_ns: int) -> str:
    """The instant before which an in-progress instance's last callback makes it stuck."""
    return format_ns(now_ns - stuck_age_ns)


def status(
    store: Store,
    now_ns: int,
    *,
    stuck_age_ns: int,
    version: str,
    uptime_seconds: float | None,
) -> dict[str, Any]:
    """Totals for an operator: outcomes, states, anomalies, the quarantine, liveness."""
    counts = store.summary(_quiet_since(now_ns, stuck_age_ns))
    return {
        "version": version,
        "uptime_seconds": uptime_seconds,
        "callbacks": {name: counts["outcomes"].get(name, 0) for name in DELIVERY_OUTCOMES},
        "out_of_order": counts["out_of_order"],
        **_holdings(counts),
    }


def counts(store: Store, now_ns: int, *, stuck_age_ns: int) -> dict[str, Any]:
    """What /metrics exposes: the totals of `status`, callbacks and out of order per kind."""
    summary = store.summary(_quiet_since(now_ns, stuck_age_ns))
    by_kind: dict[str, dict[str, int]] = summary["by_kind"]
    return {
        "callbacks": {
            kind: {name: n[name] for name in DELIVERY_OUTCOMES} for kind, n in by_kind.items()
        },
        "out_of_order": {kind: n["out_of_order"] for kind, n in by_kind.items()},
        "quarantined_requests": summary["quarantined_requests"],
        **_holdings(summary),
    }


def _holdings(counts: dict[str, Any]) -> dict[str, Any]:
    """The quarantine, the subjects per state (every state, 0 included), stuck, last."""
    return {
        "quarantined": counts["quarantined"],
        "instances": {**dict.fromkeys(FLOW_STATES, 0), **counts["instances"]},
        "documents": {**dict.fromkeys(DOCUMENT_STATES, 0), **counts["documents"]},
        "stuck": counts["stuck"],
        "last_callback_at": counts["last_callback_at"],
    }


def quarantine(store: Store, page: Page, body_limit: int | None = None) -> dict[str, Any]:
    """The malformed requests kept, newest first; with `body_limit`, each body cut to that
    many bytes and `body_length` added."""
    before = _decode_cursor(page.cursor, 2) if page.cursor else None
    at = (before[0], before[1]) if before else None
    rows = store.quarantined(at, _limit(page) + 1, body_limit)
    items = [quarantined(row) for row in rows[: page.limit]]
    if body_limit is not None:
        for item, row in zip(items, rows, strict=False):
            item["body_length"] = row["body_length"]
    more = len(rows) > page.limit
    last = rows[page.limit - 1] if more else None
    return {
        "items": items,
        "next": _encode_cursor([last["last_seen"], last["body_hash"]]) if last else None,
    }


def quarantined(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["body_hash"],
        "body": bytes(row["body"]).decode("utf-8", "replace"),
        "content_type": row["content_type"],
        "error": json.loads(row["error"]),
        "source": row["source"],
        "first_seen": row["first_seen"],
        "last_seen": row["last_seen"],
        "count": row["count"],
    }


def anomalies(
    store: Store, limit: int = DEFAULT_LIMIT, body_limit: int | None = None
) -> dict[str, Any]:
    """The newest illegal and out-of-order events, and the newest quarantined requests."""
    events = [
        {
            "kind": row["kind"],
            "subject_id": row["subject_id"],
            "type": row["label"],
            "at": row["at"],
            "outcome": row["outcome"],
            "reason": row["reason"],
            "out_of_order": bool(row["out_of_order"]),
            "received_at": row["received_at"],
        }
        for row in store.anomalies(limit)
    ]
    return {"events": events, "quarantine": quarantine(store, Page(limit), body_limit)["items"]}


def _subjects(store: Store, kind: Kind, where: SubjectFilter, page: Page) -> dict[str, Any]:
    after = _seq(*_decode_cursor(page.cursor, 2)) if page.cursor else None
    rows = store.list_subjects(kind, where, after, _limit(page) + 1)
    summary = instance_summary if kind == "flow" else document_summary
    more = len(rows) > page.limit
    return {
        "items": [summary(row) for row in rows[: page.limit]],
        "next": _encode_cursor(["seq", str(rows[page.limit - 1]["seq"])]) if more else None,
    }


def _seq(tag: str, value: str) -> int:
    # Tagged: a cursor from before migration m008 held one id, which may be all digits.
    if tag != "seq" or not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise InvalidQuery({"cursor": "not a cursor this API gave out"})
    return int(value)


def _flow_event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": row["type"],
        "event_created": row["event_created"],
        **_delivery(row),
        **_payload(*stored_json(row["body"])),
    }


def _snapshot(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "state": row["status"],
        "object_version": row["object_version"],
        "mtime": row["mtime"],
        "signed_and_sealed": bool(row["signed_and_sealed"]),
        **_delivery(row),
        **_payload(*document_payload(row["body"], row["content_type"])),
    }


def _payload(payload: Any, problem: str | None) -> dict[str, Any]:
    """The body as served, or (stored before the nesting limit) null and why."""
    if problem is None:
        return {"payload": payload}
    return {"payload": None, "payload_error": problem}


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "received_at": row["received_at"],
        "last_delivery_at": row["last_delivery_at"],
        "outcome": row["outcome"],
        "out_of_order": bool(row["out_of_order"]),
        "deliveries": row["deliveries"],
        "reason": row["reason"],
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
