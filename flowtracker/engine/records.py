"""The records the fold works on and the store keeps: verdicts, entries and subjects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

Outcome = Literal["applied", "illegal", "ignored"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
# What a delivery can get: a verdict's outcome, or "duplicate" for a repeat.
DELIVERY_OUTCOMES: Final = (*OUTCOMES, "duplicate")
Position = tuple[int, int]
Order = tuple[Position, str]

LOWEST: Final[Order] = ((-(2**63), -(2**63)), "")


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str | None = None


APPLIED: Final = Verdict("applied")


@dataclass(slots=True, eq=False)
class Entry:
    """One event or snapshot of a subject, as the fold sees it.

    `label` is what the lifecycle is asked about (a Flow callback type, a document status);
    `version` the callback format version (None where callbacks have none).
    """

    key: str
    position: Position
    label: str
    version: int | None
    time_ns: int
    out_of_order: bool
    verdict: Verdict = APPLIED
    shown: Mapping[str, Any] = field(default_factory=dict)
    row_id: int | None = None  # None until it is stored
    stored: Verdict | None = None  # the verdict in the database, for stored entries
    changed: bool = False  # a stored entry whose verdict the last refold changed
    source: Any = None  # the parsed callback of a new entry, for the store
    # Not a callback: an answer of Scrive's API (SPEC 13), which counts only while no
    # callback says as much (`Lifecycle.superseded`).
    reconciled: bool = False

    @property
    def order(self) -> Order:
        return (self.position, self.key)


@dataclass(slots=True, eq=False)
class Subject:
    """A flow instance or a document: the summary the fold keeps up to date."""

    id: str
    state: str
    anomalies: int = 0
    events: int = 0
    last: Order = LOWEST  # the greatest order among its events
    first_ns: int | None = None  # shown in one spelling made from it (`canonical`): the
    last_ns: int | None = None  # instant must not depend on which spelling came first
    last_received_at: str | None = None
    stored_state: str | None = None  # the state in the database, for stored subjects
    stored_anomalies: int = 0  # likewise
    shown: Mapping[str, Any] = field(default_factory=dict)  # from the last applied event
    history: list[Entry] | None = None  # loaded only when an event lands before the last
    fresh: list[Entry] = field(default_factory=list)  # not yet stored
    reconciled: int = 0  # entries from Scrive's API: a callback may supersede them (refold)
    unknown_to_scrive: str | None = None  # when Scrive's API last answered 404: an anomaly

    def add(self, entry: Entry) -> None:
        """Count a new entry whose verdict is decided."""
        self.events += 1
        self.reconciled += entry.reconciled
        self.anomalies += entry.verdict.outcome == "illegal" or entry.out_of_order
        self.last = max(self.last, entry.order)
        if self.first_ns is None or entry.time_ns < self.first_ns:
            self.first_ns = entry.time_ns
        if self.last_ns is None or entry.time_ns > self.last_ns:
            self.last_ns = entry.time_ns
        self.fresh.append(entry)


ChangeSource = Literal["callback", "rebuild", "reconcile"]
# What reconciling a subject with Scrive's API can come to (SPEC 13); unknown: a 404.
RECONCILE_RESULTS: Final = ("changed", "unchanged", "unknown", "error")


@dataclass(frozen=True, slots=True)
class Change:
    """A subject's state moved (or the subject appeared: `previous` None): one entry of
    the change feed (SPEC 11), written in the transaction of the event that caused it.

    `event` is what made the change: for a flow its `type`, `event_created` and
    `outcome`; for a document its `status`, `object_version`, `mtime` and `outcome`.
    `correction` marks a late event that changed the fold's conclusion.
    """

    kind: Literal["flow", "document"]
    subject: str
    state: str
    previous: str | None
    terminal: bool
    correction: bool
    source: ChangeSource
    event: Mapping[str, Any]
