"""The rows a store hands the read models: typed, the same from every backend."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtracker.engine.events import Kind


@dataclass(frozen=True, slots=True)
class SubjectRow:
    """A flow instance's or a document's stored summary.

    The last four are a document's, from its last applied snapshot (None for flows, and
    for a document with no applied snapshot yet).
    """

    kind: Kind
    id: str
    seq: int  # numbers the subjects in the order they were first seen
    state: str
    anomalies: int
    events: int
    first_event_at: str | None
    last_event_at: str | None
    last_received_at: str | None
    object_version: int | None = None
    signed_and_sealed: bool | None = None
    title: str | None = None
    mtime: str | None = None
    reconciled: int = 0  # its events from Scrive's API (SPEC 13)
    unknown_to_scrive_at: str | None = None  # when Scrive's API last answered 404


@dataclass(frozen=True, slots=True)
class TombstoneRow:
    """What retention left of a pruned subject (SPEC 14): its final state and when."""

    kind: Kind
    id: str
    state: str
    events: int
    first_event_at: str | None
    last_event_at: str | None
    last_received_at: str | None
    pruned_at: str


@dataclass(frozen=True, slots=True)
class EventRow:
    """One stored event or snapshot with its raw body, as it was received.

    `label` is the Flow callback type or the document status; `time` its `event_created`
    or `mtime` as written. `object_version` and `signed_and_sealed` are a snapshot's.
    """

    label: str
    time: str
    received_at: str
    last_delivery_at: str
    outcome: str
    reason: str | None
    out_of_order: bool
    deliveries: int
    body: bytes
    content_type: str
    object_version: int | None = None
    signed_and_sealed: bool | None = None
    reconciled: bool = False  # not a callback: an answer of Scrive's API (SPEC 13)


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """A malformed request kept for an operator; `body` may be cut (`body_length` is the
    whole size)."""

    body_hash: str
    body: bytes
    body_length: int
    content_type: str
    error: dict[str, Any]
    source: str
    first_seen: str
    last_seen: str
    count: int


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    """An illegal or out-of-order event of either kind."""

    kind: Kind
    subject_id: str
    label: str
    at: str
    outcome: str
    reason: str | None
    out_of_order: bool
    received_at: str


@dataclass(frozen=True, slots=True)
class Totals:
    """The counts behind /status and /metrics, per kind.

    `outcomes` are the events' outcomes now (a late event can change them); `arrived`
    counts deliveries by the outcome each got when it arrived (`duplicate` included),
    which only grow. `quarantined` counts distinct bodies, `quarantined_requests` every
    delivery of them; `stuck` the instances in progress and quiet for the stuck age.
    """

    outcomes: dict[Kind, dict[str, int]]
    duplicates: dict[Kind, int]
    out_of_order: dict[Kind, int]
    arrived: dict[Kind, dict[str, int]]
    states: dict[Kind, dict[str, int]]
    quarantined: int
    quarantined_requests: int
    stuck: int
    last_callback_ns: int | None
    # Subjects reconciled with Scrive's API, by result (changed, unchanged, unknown, error).
    reconciliations: dict[str, int] = field(default_factory=dict)
    pruned: dict[Kind, int] = field(default_factory=dict)  # tombstones kept (SPEC 14)


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change of the change log (SPEC 11); `event` its JSON text as stored."""

    seq: int
    kind: Kind
    subject: str
    state: str
    previous: str | None
    terminal: bool
    correction: bool
    source: str
    event: str
    at: str


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """A webhook subscription (SPEC 12) and how its deliveries go.

    `position` is the last `seq` delivered (or skipped, for a kind it does not take);
    `failures` the attempts that failed since the last success; `next_attempt_ns` when
    the next may start. The lease says which receiver delivers for it, until when.
    """

    id: str
    url: str
    kinds: tuple[Kind, ...]
    secret: str
    old_secret: str | None  # a rotated secret, still signing until `old_secret_until`
    old_secret_until: str | None
    position: int
    paused: bool
    created_at: str
    delivered: int
    failed: int
    failures: int
    next_attempt_ns: int
    last_attempt_at: str | None
    last_error: str | None
    last_status: int | None
    lease_owner: str | None
    lease_until_ns: int
