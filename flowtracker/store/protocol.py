"""The storage protocol: what the write path and the read models need from a database.

A backend (`store/sqlite/`, `store/postgres/`) implements `Store`, whose write
transactions implement `Transaction`; reads answer the typed rows of `store.rows`.
Errors of the database never leave a store: it raises `StorageUnavailable` (or, when it
opens, `UnusableDatabase`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from flowtracker.engine.events import Callback, Kind
from flowtracker.engine.records import Change, Entry, Subject
from flowtracker.store.rows import (
    AnomalyRow,
    ChangeRow,
    EventRow,
    QuarantineRow,
    SubjectRow,
    SubscriptionRow,
    TombstoneRow,
    Totals,
)


class Transaction(Protocol):
    """The reads and writes of one ingest transaction; all or nothing."""

    def lock(self, subjects: Iterable[tuple[Kind, str]]) -> None:
        """Hold these subjects against other writers until the transaction ends (before
        anything of theirs is read). A backend whose write transactions already exclude
        each other does nothing."""

    def known_keys(self, kind: Kind, callbacks: Iterable[Callback]) -> dict[str, bool]:
        """The dedup keys of these callbacks that are stored, with their `out_of_order`."""

    def subjects(self, kind: Kind, ids: Iterable[str]) -> dict[str, Subject]:
        """The stored summaries of these subjects (those that exist)."""

    def history(self, kind: Kind, subject_id: str) -> list[Entry]:
        """Every stored event of a subject, in order."""

    def add_entries(self, kind: Kind, entries: Sequence[Entry], received_at: str) -> None:
        """Store new events (each `Entry.source` holds its parsed callback)."""

    def set_verdicts(self, kind: Kind, entries: Sequence[Entry]) -> None:
        """Store the new outcome and reason of events a refold changed."""

    def redeliver(self, kind: Kind, callbacks: Sequence[Callback], at: str) -> None:
        """Count one more delivery of each callback's event (one may come several times)."""

    def put_subjects(self, kind: Kind, subjects: Sequence[Subject]) -> None:
        """Insert or replace these subject summaries."""

    def bump(self, deltas: Mapping[str, int]) -> None:
        """Add to the named counters (outcomes, states, out of order, duplicates)."""

    def load(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store rows copied from another database as they were (`tables.COPIED`)."""

    def recount(self) -> None:
        """Compute every counter again from the stored events and subjects."""

    def count_received(self, at_ns: int, callbacks: int) -> None:
        """Add to the callbacks taken in the minute of `at_ns`, forget those of a day ago,
        and keep `at_ns` as the last callback's time if it is the latest."""

    def add_changes(self, changes: Sequence[Change], at: str) -> int | None:
        """Append these changes to the change log, numbered on from the last; the last
        `seq` given (None for none). The transaction's last statement: the numbers are
        taken in commit order (a change is visible only after every smaller one)."""

    # Retention and the quarantine's actions (SPEC 14): `store.pruning`.

    def tombstoned(self, kind: Kind, ids: Collection[str]) -> dict[str, str]:
        """The final states of those of these subjects that were pruned."""

    def add_tombstones(self, kind: Kind, rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep tombstones as they were (a replayed export)."""

    def prunable(self, kind: Kind, states: Collection[str], before: str, limit: int) -> list[str]:
        """Up to `limit` subjects in one of `states`, last received before `before`."""

    def prune(
        self, kind: Kind, ids: Sequence[str], states: Collection[str], before: str, at: str
    ) -> tuple[int, int]:
        """Remove these subjects (those still prunable) for tombstones; subjects and
        events removed."""

    def drop_quarantined(
        self, hashes: Sequence[str] | None = None, before: str | None = None
    ) -> int:
        """Remove kept requests by body hash, or those last seen before `before`."""


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A malformed request kept for an operator."""

    body: bytes
    content_type: str
    error: dict[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class SubjectFilter:
    """Which subjects a list shows; `received_before` selects stuck ones (instances in
    progress, nothing received since)."""

    state: str | None = None
    anomalous: bool = False
    received_before: str | None = None
    id_prefix: str | None = None
    quiet_before: str | None = None  # nothing received since, in any state (reconcile)
    received_since: str | None = None  # the last callback at or after this time...
    received_until: str | None = None  # ...and before this one
    by_activity: bool = False  # the last received first (else in the order first seen)


# Where a list ordered by activity goes on: after the subject with this (hour of its last
# receipt, time of it, seq); a list in the order first seen goes on after a seq.
ActivityKey = tuple[int, str, int]


class Snapshot(Protocol):
    """Reads inside one read transaction (`Store.snapshot`)."""

    def rows(self, table: str, after: Any, limit: int) -> list[dict[str, Any]]:
        """The stored rows of one of `tables.COPIED`, in its key's order, after `after`
        (None: from the first), by column name; for `export` and `copy`."""


class Store(Protocol):
    """A database holding events, subjects and the quarantine."""

    path: str  # how messages name it (a URL's password masked)
    reads_block: bool  # whether a read waits on the network (then not on an event loop)

    @property
    def applied(self) -> list[str]:
        """The migrations that opening it applied."""

    @property
    def pending(self) -> list[str]:
        """Migrations a reader goes on without (they change nothing it reads)."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction: commits on success, rolls back on any exception."""

    def quarantine(self, item: Quarantined, at: str) -> None:
        """Keep a malformed request; a body seen before only raises its count."""

    def subject_ids(self, kind: Kind, after: str, limit: int) -> list[str]:
        """Subject ids in id order, after `after` (keyset)."""

    def subject_history(
        self, kind: Kind, subject_id: str
    ) -> tuple[SubjectRow, list[EventRow]] | None:
        """One subject's summary and its events in order (with raw bodies), read in one
        snapshot; None when there is no such subject."""

    def list_subjects(
        self, kind: Kind, where: SubjectFilter, after: int | ActivityKey | None, limit: int
    ) -> list[SubjectRow]:
        """Subject summaries in the order they were first seen (their `seq`), after the
        one numbered `after` (keyset); with `where.by_activity`, the last received first,
        after the one at `after` (subjects that never had a callback are left out)."""

    def id_match(self, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
        """Whether a subject has the id `prefix` ("whole"), or only one that starts so."""

    def quietest(self, received_before: str, limit: int) -> list[SubjectRow]:
        """In-progress instances with nothing received since `received_before`, the
        longest quiet first."""

    def totals(self, stuck_before: str) -> Totals:
        """The counts per kind, outcome and state, the quarantine, the stuck instances
        (in progress, nothing received since `stuck_before`), the last callback's time."""

    def quarantined(
        self, before: tuple[str, str] | None, limit: int, body_limit: int | None = None,
        code: str | None = None, body_hash: str | None = None,
    ) -> list[QuarantineRow]:  # fmt: skip
        """Quarantine rows, newest first, keyset-paginated on (last_seen, body_hash); the
        body cut to `body_limit` bytes when given; only those of error `code`, or those
        whose body hash (id) starts with `body_hash`, when given."""

    def quarantined_body(self, body_hash: str) -> bytes | None:
        """One kept body, whole."""

    def pulse(self, subject: tuple[Kind, str] | None = None) -> str:
        """A token that changes whenever a callback is taken or a request quarantined
        (None), or when one subject gets a delivery."""

    def anomalies(self, limit: int) -> list[AnomalyRow]:
        """The newest illegal or out-of-order events of both kinds."""

    def received_since(self, minute: str) -> dict[str, int]:
        """Callbacks taken per minute (YYYY-MM-DDTHH:MM) from `minute` on; quiet ones absent."""

    def snapshot(self) -> AbstractContextManager[Snapshot]:
        """One read transaction for many reads: all of them see the database as it was at
        the first, whatever commits meanwhile (`export` and `copy` of a live database)."""

    # The change log (SPEC 11) and the webhook subscriptions (SPEC 12): `store.feeding`.

    def changes(
        self, after: int, limit: int, kind: Kind | None = None, subject: str | None = None
    ) -> list[ChangeRow]:
        """Changes with `seq` above `after`, oldest first, of one kind or subject if given."""

    def change_clock(self) -> tuple[int, int]:
        """The last `seq` committed, and the greatest pruned (0 for none)."""

    def first_change_since(self, at: str) -> int | None:
        """The first `seq` committed at or after `at` (RFC 3339), if any is kept."""

    def prune_changes(self, before: str, page: int = ...) -> int:
        """Remove the changes committed before `before`, never one still owed to a
        subscription; how many went."""

    def add_subscription(
        self, id_: str, url: str, kinds: Sequence[Kind], secret: str, *, from_start: bool,
        at: str,
    ) -> SubscriptionRow: ...  # fmt: skip

    def subscriptions(self) -> list[SubscriptionRow]: ...

    def subscription(self, id_: str) -> SubscriptionRow | None: ...

    def remove_subscription(self, id_: str) -> bool: ...

    def change_subscription(self, id_: str, **values: Any) -> bool: ...

    def lease_subscription(self, id_: str, owner: str, now_ns: int, until_ns: int) -> bool: ...

    def release_subscription(self, id_: str, owner: str) -> None: ...

    def record_attempts(
        self, id_: str, owner: str, expected: int, *, position: int, delivered: int,
        failures: int, at: str, status: int | None, error: str | None, next_attempt_ns: int,
    ) -> bool: ...  # fmt: skip

    def take_lease(self, name: str, owner: str, now_ns: int, until_ns: int) -> bool:
        """Take or renew the lease of one receiver's background work (free, held by
        `owner`, or run out); whether `owner` now holds it until `until_ns`."""

    def release_lease(self, name: str, owner: str) -> None: ...

    def watch_changes(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call `wake` (on another thread) whenever any process commits changes, until the
        function returned is called."""

    def tombstone(self, kind: Kind, subject_id: str) -> TombstoneRow | None:
        """What retention left of a pruned subject; None when it was never pruned."""

    def count_prunable(self, kind: Kind, states: Collection[str], before: str) -> tuple[int, int]:
        """How many subjects pruning would remove now, and their events (a read)."""

    def count_quarantined(self, before: str) -> int:
        """How many kept requests were last seen before `before`."""

    def reclaim(self) -> str:
        """Give the space of removed rows back where the backend can; what it did, in a
        sentence for the operator."""

    def ping(self) -> None:
        """Raise StorageUnavailable unless the database answers and takes a write."""

    def close(self) -> None: ...
