"""What both backends share: the tables' names, how a parsed callback becomes a row's
values, and how stored rows become the fold's records and the read models' rows.

Rows are read by column name (`sqlite3.Row` and psycopg's dict rows both answer so).
Table and column names come from the fixed mappings here, never from input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Protocol

import orjson

from flowtracker.engine.events import KINDS, Callback, DocumentCallback, FlowCallback, Kind
from flowtracker.engine.records import Change, Entry, Subject, Verdict
from flowtracker.engine.timestamps import canonical, parse_timestamp
from flowtracker.store.rows import EventRow, SubjectRow, Totals


class NamedRow(Protocol):
    """A stored row answering by column name: `sqlite3.Row`, a psycopg dict row."""

    def __getitem__(self, name: str, /) -> Any: ...


SUBJECTS: dict[Kind, str] = {"flow": "instances", "document": "documents"}
EVENTS: dict[Kind, str] = {"flow": "flow_events", "document": "document_snapshots"}
OWNER: dict[Kind, str] = {"flow": "instance_id", "document": "document_id"}
ORDER: dict[Kind, str] = {  # an event's place in its subject's history
    "flow": "event_ns, dedup_key",
    "document": "object_version, mtime_ns, dedup_key",
}
SHOWN = ("object_version", "signed_and_sealed", "title", "mtime")  # documents only
# A subject's stored columns (`subject_values`), a document's `SHOWN` after them.
SUBJECT_COLUMNS = (
    "id", "state", "anomalies", "events", "first_event_at", "first_event_ns",
    "last_event_at", "last_event_ns", "last_major", "last_minor", "last_key",
    "last_received_at", "received_hour", "reconciled", "unknown_to_scrive_at",
)  # fmt: skip
LAST_CALLBACK = "last_callback_ns"  # the counter of the last callback's arrival time
HOUR_NS = 3_600 * 1_000_000_000  # `received_hour` counts hours since the epoch
# The columns the fold reads of a stored event (`entry`): never the bodies, on the hot path.
HISTORY_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "flow": ("id", "dedup_key", "type", "version", "event_ns", "outcome", "reason",
             "out_of_order", "reconciled"),
    "document": ("id", "dedup_key", "status", "object_version", "mtime", "mtime_ns",
                 "signed_and_sealed", "title", "outcome", "reason", "out_of_order",
                 "reconciled"),
}  # fmt: skip
# The columns a read shows of a stored event, in the order `event_row` takes them.
EVENT_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "flow": ("type", "event_created", "received_at", "last_delivery_at", "outcome", "reason",
             "out_of_order", "deliveries", "body", "content_type", "reconciled"),
    "document": ("status", "mtime", "received_at", "last_delivery_at", "outcome", "reason",
                 "out_of_order", "deliveries", "body", "content_type", "reconciled",
                 "object_version", "signed_and_sealed"),
}  # fmt: skip


def event_key(c: Callback) -> tuple[Any, ...]:
    """Where a callback's event is, if it is stored: its subject, position and dedup key."""
    if isinstance(c, FlowCallback):
        return (c.instance_id, c.event_created.ns, c.dedup_key)
    return (c.document_id, c.object_version, c.mtime.ns, c.dedup_key)


def _flow_columns(c: FlowCallback) -> tuple[Any, ...]:
    return (c.instance_id, c.type, c.version, c.event_created.text, c.event_created.ns,
            c.reconciled)  # fmt: skip


def _document_columns(c: DocumentCallback) -> tuple[Any, ...]:
    return (c.document_id, c.status, c.object_version, c.mtime.text, c.mtime.ns,
            c.signed_and_sealed, c.title, c.reconciled)  # fmt: skip


def deliveries(c: Callback) -> int:
    """A new event's deliveries: an answer of Scrive's API is none (SPEC 13)."""
    return 0 if c.reconciled is not None else 1


# The kind's own columns of a new event, from its parsed callback (`Entry.source`), in the
# order of `OWN_COLUMNS`.
COLUMNS: dict[Kind, Callable[[Any], tuple[Any, ...]]] = {
    "flow": _flow_columns,
    "document": _document_columns,
}
OWN_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "flow": ("instance_id", "type", "version", "event_created", "event_ns", "reconciled"),
    "document": ("document_id", "status", "object_version", "mtime", "mtime_ns",
                 "signed_and_sealed", "title", "reconciled"),
}  # fmt: skip


@lru_cache(maxsize=8)  # a batch's subjects share one time of receipt
def hour(received_at: str | None) -> int | None:
    """The hour of a receipt, as hours since the epoch: `received_hour`, which the index
    behind the stuck lists holds instead of the time, so that its entry moves once an
    hour rather than at every callback."""
    return None if received_at is None else parse_timestamp(received_at).ns // HOUR_NS


def times(s: Subject, stored: NamedRow | None) -> tuple[Any, ...]:
    """first_event_at, first_event_ns, last_event_at, last_event_ns of a subject to store:
    spelled canonically, again only for a time that changed since `stored` (its row)."""
    if stored is None:
        return (_spelled(s.first_ns), s.first_ns, _spelled(s.last_ns), s.last_ns)
    first = stored["first_event_at"] if stored["first_event_ns"] == s.first_ns else None
    last = stored["last_event_at"] if stored["last_event_ns"] == s.last_ns else None
    return (first or _spelled(s.first_ns), s.first_ns, last or _spelled(s.last_ns), s.last_ns)


def _spelled(ns: int | None) -> str | None:
    return None if ns is None else canonical(ns)


def subject_columns(kind: Kind) -> tuple[str, ...]:
    """The names of the values `subject_values` gives, in order."""
    return (*SUBJECT_COLUMNS, *SHOWN) if kind == "document" else SUBJECT_COLUMNS


def subject_values(kind: Kind, s: Subject, stored: NamedRow | None) -> tuple[Any, ...]:
    """A subject's row to store (`subject_columns`); `stored` is the row it had."""
    shown = SHOWN if kind == "document" else ()
    return (s.id, s.state, s.anomalies, s.events, *times(s, stored),
            s.last[0][0], s.last[0][1], s.last[1], s.last_received_at,
            hour(s.last_received_at), s.reconciled, s.unknown_to_scrive,
            *(s.shown.get(name) for name in shown))  # fmt: skip


def subject(kind: Kind, row: NamedRow) -> Subject:
    """A stored summary row as the fold's `Subject`."""
    shown = {name: row[name] for name in SHOWN} if kind == "document" else {}
    if shown:
        shown["signed_and_sealed"] = _sealed(shown["signed_and_sealed"])
    return Subject(
        id=row["id"], state=row["state"], anomalies=row["anomalies"], events=row["events"],
        last=((row["last_major"], row["last_minor"]), row["last_key"]),
        first_ns=row["first_event_ns"], last_ns=row["last_event_ns"],
        last_received_at=row["last_received_at"], stored_state=row["state"],
        stored_anomalies=row["anomalies"], shown=shown, reconciled=row["reconciled"],
        unknown_to_scrive=row["unknown_to_scrive_at"],
    )  # fmt: skip


def _flow_entry(row: NamedRow) -> Entry:
    # A reconciled event is judged as the status it carries (its type is `reconciled`).
    reconciled = row["reconciled"]
    return Entry(
        key=row["dedup_key"], position=(row["event_ns"], 0),
        label=row["type"] if reconciled is None else reconciled, version=row["version"],
        time_ns=row["event_ns"], out_of_order=bool(row["out_of_order"]),
        verdict=(verdict := _verdict(row)), stored=verdict, row_id=row["id"],
        reconciled=reconciled is not None,
    )  # fmt: skip


def _document_entry(row: NamedRow) -> Entry:
    shown = {name: row[name] for name in SHOWN}
    shown["signed_and_sealed"] = _sealed(shown["signed_and_sealed"])
    return Entry(
        key=row["dedup_key"], position=(row["object_version"], row["mtime_ns"]),
        label=row["status"], version=None, time_ns=row["mtime_ns"],
        out_of_order=bool(row["out_of_order"]), verdict=(verdict := _verdict(row)),
        stored=verdict, shown=shown, row_id=row["id"], reconciled=row["reconciled"] is not None,
    )  # fmt: skip


def _sealed(value: Any) -> bool | None:
    """A stored `signed_and_sealed` (SQLite keeps 0 and 1); None: not known."""
    return None if value is None else bool(value)


def _verdict(row: NamedRow) -> Verdict:
    return Verdict(row["outcome"], row["reason"])


# A stored event (the `HISTORY_COLUMNS` of its kind) as the fold's `Entry`.
ENTRY: dict[Kind, Callable[[NamedRow], Entry]] = {
    "flow": _flow_entry,
    "document": _document_entry,
}


def subject_row(kind: Kind, row: NamedRow) -> SubjectRow:
    """A row of `instances` or `documents` as a `SubjectRow`."""
    common = (kind, row["id"], row["seq"], row["state"], row["anomalies"], row["events"],
              row["first_event_at"], row["last_event_at"], row["last_received_at"])  # fmt: skip
    reconciliation = {"reconciled": row["reconciled"],
                      "unknown_to_scrive_at": row["unknown_to_scrive_at"]}  # fmt: skip
    if kind == "flow":
        return SubjectRow(*common, **reconciliation)
    return SubjectRow(
        *common, row["object_version"], _sealed(row["signed_and_sealed"]), row["title"],
        row["mtime"], **reconciliation,
    )  # fmt: skip


def event_row(row: Any) -> EventRow:
    """A stored event's `EVENT_COLUMNS`, by position; a snapshot's two more at the end."""
    version = row[11] if len(row) > 11 else None
    sealed = _sealed(row[12]) if len(row) > 11 else None
    return EventRow(
        row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]), row[7], bytes(row[8]),
        row[9], version, sealed, row[10] is not None,
    )  # fmt: skip


def totals(counters: Mapping[str, int], stuck: int) -> Totals:
    """`Totals` from the counters the ingest transactions keep (`flow.outcome.applied`,
    `document.state.closed`, `arrived.flow.duplicate`, ...) and the stuck count."""
    return Totals(
        outcomes={kind: _labelled(counters, f"{kind}.outcome.") for kind in KINDS},
        duplicates={kind: counters.get(f"{kind}.duplicate", 0) for kind in KINDS},
        out_of_order={kind: counters.get(f"{kind}.out_of_order", 0) for kind in KINDS},
        arrived={kind: _labelled(counters, f"arrived.{kind}.") for kind in KINDS},
        states={kind: _labelled(counters, f"{kind}.state.") for kind in KINDS},
        quarantined=counters.get("quarantine.rows", 0),
        quarantined_requests=counters.get("quarantine.requests", 0),
        stuck=stuck,
        last_callback_ns=counters.get(LAST_CALLBACK),
        reconciliations=_labelled(counters, "reconcile."),
        pruned={kind: counters.get(f"{kind}.pruned", 0) for kind in KINDS},
    )


def _labelled(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    """The counters named `prefix` + a label, by label; a counter back at zero is none."""
    return {name[len(prefix) :]: n for name, n in counters.items() if name.startswith(prefix) and n}


# The change log (SPEC 11): one row per change, numbered by `seq` in commit order; the
# last number given is kept in `change_clock` (a single row, taken last in a transaction).
CHANGE_COLUMNS = ("seq", "kind", "subject", "state", "previous", "terminal", "correction",
                  "source", "event", "at")  # fmt: skip
SUBSCRIPTION_COLUMNS = (
    "id", "url", "kinds", "secret", "old_secret", "old_secret_until", "position", "paused",
    "created_at", "delivered", "failed", "failures", "next_attempt_ns", "last_attempt_at",
    "last_error", "last_status", "lease_owner", "lease_until_ns",
)  # fmt: skip

# Retention (SPEC 14), for either backend: what is left of a pruned subject. A callback
# for it is ignored (`pruned`), and a read of it answers 410 with its final state.
TOMBSTONES: dict[Kind, str] = {"flow": "instance_tombstones", "document": "document_tombstones"}
EXPORT_MARK = "flowtracker"  # the field of an export's lines of its own (tombstones, answers)
TOMBSTONE_COLUMNS = ("id", "state", "events", "first_event_at", "last_event_at",
                     "last_received_at", "pruned_at")  # fmt: skip
RETENTION = "".join(
    f"""
CREATE TABLE {table} (
    id {{text}} PRIMARY KEY, state {{text}} NOT NULL, events {{bigint}} NOT NULL,
    first_event_at {{text}}, last_event_at {{text}}, last_received_at {{text}},
    pruned_at {{text}} NOT NULL);"""
    for table in TOMBSTONES.values()
)

# Lists by last activity (the dashboard's sort): on the hour of the last receipt, whose
# index entry moves once an hour per subject, not at every callback (see m010).
ACTIVITY_ORDER = """
CREATE INDEX instances_received_hour ON instances (received_hour, seq);
CREATE INDEX documents_received_hour ON documents (received_hour, seq);
"""

# What `flowtracker copy` carries, table by table in this order (subjects before their
# events): each table's key, in whose order it is read, and its columns. The counters and
# the minutes are read summed over PostgreSQL's shards.
COPIED: dict[str, tuple[str, tuple[str, ...]]] = {
    "instances": ("seq", (*SUBJECT_COLUMNS, "seq")),
    "documents": ("seq", (*SUBJECT_COLUMNS, "seq", *SHOWN)),
    "flow_events": ("id", ("id", "dedup_key", *OWN_COLUMNS["flow"], "outcome", "reason",
                           "out_of_order", "deliveries", "received_at", "last_delivery_at",
                           "body", "content_type")),
    "document_snapshots": ("id", ("id", "dedup_key", *OWN_COLUMNS["document"], "outcome",
                                  "reason", "out_of_order", "deliveries", "received_at",
                                  "last_delivery_at", "body", "content_type")),
    "quarantine": ("body_hash", ("body_hash", "body", "content_type", "error", "source",
                                 "first_seen", "last_seen", "count")),
    "counters": ("name", ("name", "value")),
    "received_per_minute": ("minute", ("minute", "callbacks")),
    "changes": ("seq", CHANGE_COLUMNS),
    "change_clock": ("id", ("id", "seq", "pruned_through")),
    "subscriptions": ("id", SUBSCRIPTION_COLUMNS),
    **{table: ("id", TOMBSTONE_COLUMNS) for table in TOMBSTONES.values()},
}  # fmt: skip
# Tables a new database holds rows of already: the copied rows replace them.
REPLACED = frozenset({"counters", "received_per_minute", "change_clock"})
BOOLEAN_COLUMNS = frozenset({"out_of_order", "signed_and_sealed", "terminal", "correction",
                             "paused"})  # fmt: skip


def change_values(changes: Sequence[Change], first: int, at: str) -> list[tuple[Any, ...]]:
    """The rows of `changes` (`CHANGE_COLUMNS`), numbered from `first`."""
    return [
        (seq, c.kind, c.subject, c.state, c.previous, c.terminal, c.correction,
         c.source, orjson.dumps(c.event).decode(), at)
        for seq, c in enumerate(changes, start=first)
    ]  # fmt: skip


# The change feed's tables, for either backend (`{bigint}`, `{boolean}` and `{text}` are
# the backend's names of those types; text compared in byte order).
CHANGE_FEED = """
CREATE TABLE changes (
    seq {bigint} PRIMARY KEY,
    kind {text} NOT NULL, subject {text} NOT NULL, state {text} NOT NULL, previous {text},
    terminal {boolean} NOT NULL, correction {boolean} NOT NULL, source {text} NOT NULL,
    event {text} NOT NULL, at {text} NOT NULL);
CREATE INDEX changes_subject ON changes (kind, subject, seq);
CREATE TABLE change_clock (
    id integer PRIMARY KEY CHECK (id = 1),
    seq {bigint} NOT NULL, pruned_through {bigint} NOT NULL);
INSERT INTO change_clock VALUES (1, 0, 0);
CREATE TABLE subscriptions (
    id {text} PRIMARY KEY, url {text} NOT NULL, kinds {text} NOT NULL,
    secret {text} NOT NULL, old_secret {text}, old_secret_until {text},
    position {bigint} NOT NULL, paused {boolean} NOT NULL, created_at {text} NOT NULL,
    delivered {bigint} NOT NULL, failed {bigint} NOT NULL, failures integer NOT NULL,
    next_attempt_ns {bigint} NOT NULL, last_attempt_at {text}, last_error {text},
    last_status integer, lease_owner {text}, lease_until_ns {bigint} NOT NULL);
"""


# Reconciliation with Scrive's API (SPEC 13), for either backend: what an event holds when
# it is an answer of the API rather than a callback, what a subject keeps of it, and the
# lease of the background pass (one receiver at a time).
RECONCILIATION = """
ALTER TABLE flow_events ADD COLUMN reconciled {text};
ALTER TABLE document_snapshots ADD COLUMN reconciled {text};
ALTER TABLE instances ADD COLUMN reconciled integer NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN unknown_to_scrive_at {text};
ALTER TABLE documents ADD COLUMN reconciled integer NOT NULL DEFAULT 0;
ALTER TABLE documents ADD COLUMN unknown_to_scrive_at {text};
CREATE TABLE leases (
    name {text} PRIMARY KEY, owner {text}, until_ns {bigint} NOT NULL);
"""
