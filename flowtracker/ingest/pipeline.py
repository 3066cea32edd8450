"""The ingest pipeline: deduplicate, fold through the lifecycle, store, all in one transaction.

Callbacks are taken in batches (one HTTP request, or a thousand replayed lines). In a
batch, everything the fold needs is read up front (known dedup keys and the summary of
every subject touched); an event that lands after the subject's last event is judged
from the current state alone; one that lands earlier makes the pipeline load that
subject's history once and refold it. The writes of the batch then go to the store
together, and the transaction commits before any receipt is handed out.
"""

from __future__ import annotations

import random
import time
from bisect import insort
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple, TypeVar

from flowtracker.engine.events import Callback, Kind
from flowtracker.engine.fold import is_neutral, judge, refold
from flowtracker.engine.lifecycles import DOCUMENT, FLOW, PRUNED, Lifecycle
from flowtracker.engine.records import Change, ChangeSource, Entry, Subject
from flowtracker.engine.timestamps import canonical, format_ns
from flowtracker.errors import TransactionConflict
from flowtracker.ingest.interface import Receipt
from flowtracker.store.protocol import Store, Transaction

LIFECYCLES: dict[Kind, Lifecycle] = {"flow": FLOW, "document": DOCUMENT}
T = TypeVar("T")


class Pipeline:
    """Turns parsed callbacks into stored events and states; the only writer of both."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], int] = time.time_ns,
        on_changes: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        # Told the last `seq` after each commit that wrote changes (the feed's wake-up).
        self.on_changes = on_changes

    def ingest(
        self, callbacks: Sequence[Callback], *, unquarantine: Sequence[str] = ()
    ) -> list[Receipt]:
        """Store a batch of callbacks in one transaction; a receipt for each, in order.
        `unquarantine`: the body hashes of kept requests these callbacks come from
        (`quarantine retry`), which leave the quarantine in the same transaction."""
        if not callbacks:
            return []
        return again_on_conflict(lambda: self._ingest(callbacks, unquarantine))

    def _ingest(self, callbacks: Sequence[Callback], unquarantine: Sequence[str]) -> list[Receipt]:
        with self.store.transaction() as tx:
            # Every subject of the batch held first, in one global order (PostgreSQL:
            # receivers that share subjects take turns and never deadlock).
            tx.lock((c.kind, c.subject_id) for c in callbacks)
            batch = _Batch(tx, self.clock(), callbacks)
            receipts = [batch.take(callback) for callback in callbacks]
            if unquarantine:
                tx.drop_quarantined(hashes=unquarantine)
            last_change = batch.write(receipts)
        self._told(last_change)
        return receipts

    def reconcile(
        self,
        kind: Kind,
        subject_id: str,
        answer: Callback | None,
        *,
        known: bool = True,
        dry_run: bool = False,
    ) -> Reconciled:
        """Fold what Scrive's API answered about one subject (SPEC 13): `answer` is the
        event or snapshot it stands for (None: nothing to store, such as an instance in
        progress); `known` False when the API answered 404 (an anomaly of the subject).
        An answer counts as no delivery, and the fold decides what it is worth: one a
        callback supersedes is kept with outcome `ignored`, wherever it stands. With
        `dry_run` nothing is written: the transaction is rolled back."""
        try:
            result, last_change = again_on_conflict(
                lambda: self._reconciled(kind, subject_id, answer, known, dry_run)
            )
        except _RolledBack as rolled_back:
            return rolled_back.result
        self._told(last_change)
        return result

    def _reconciled(
        self, kind: Kind, subject_id: str, answer: Callback | None, known: bool, dry_run: bool
    ) -> tuple[Reconciled, int | None]:
        with self.store.transaction() as tx:
            tx.lock([(kind, subject_id)])
            batch = _Batch(tx, self.clock(), [] if answer is None else [answer], "reconcile")
            subject = batch.load(kind, subject_id)
            before = None if subject is None else subject.state
            batch.known_to_scrive(kind, subject_id, known)
            receipt = None if answer is None else batch.take(answer)
            after = receipt.state if receipt is not None else before
            result = Reconciled(kind, subject_id, before, after, receipt, known)
            last_change = batch.write([])
            if dry_run:
                raise _RolledBack(result)
        return result, last_change

    def count_reconciliations(self, results: Mapping[str, int]) -> None:
        """Count subjects reconciled, by result (`/metrics`)."""
        if any(results.values()):
            with self.store.transaction() as tx:
                tx.bump({f"reconcile.{result}": n for result, n in results.items()})

    def _told(self, last_change: int | None) -> None:
        if last_change is not None and self.on_changes is not None:
            self.on_changes(last_change)

    def rebuild(self, page: int = 500) -> dict[str, int]:
        """Refold every subject from its stored events; counts of what changed."""
        counts = {"subjects": 0, "events": 0, "changed_outcomes": 0, "changed_states": 0}
        for kind, lifecycle in LIFECYCLES.items():
            after = ""
            while ids := self.store.subject_ids(kind, after, page):
                rebuilt = partial(_rebuild_page, self.store, kind, lifecycle, ids)
                page_counts, last_change = again_on_conflict(rebuilt)
                self._told(last_change)
                for name, n in page_counts.items():
                    counts[name] += n
                after = ids[-1]
        with self.store.transaction() as tx:
            tx.recount()
        return counts


class Reconciled(NamedTuple):
    """What one reconciliation did to a subject: its state before and after (None: not
    stored), the receipt of the answer it stored (None: nothing to store), and whether
    Scrive's API knew the subject."""

    kind: Kind
    subject_id: str
    before: str | None
    after: str | None
    receipt: Receipt | None
    known: bool

    @property
    def result(self) -> str:
        """changed | unchanged | unknown (Scrive answered 404): `/metrics` counts them."""
        if not self.known:
            return "unknown"
        return "changed" if self.before != self.after else "unchanged"


class _RolledBack(Exception):
    """Ends a dry run's transaction without committing it, carrying what it found."""

    def __init__(self, result: Reconciled) -> None:
        super().__init__("dry run")
        self.result = result


class _Batch:
    """The working set of one ingest transaction; `source` says what brought its callbacks
    (answers of Scrive's API are no deliveries: they do not count as callbacks received)."""

    def __init__(
        self,
        tx: Transaction,
        now_ns: int,
        callbacks: Sequence[Callback],
        source: ChangeSource = "callback",
    ) -> None:
        self.tx, self.now_ns, self.now = tx, now_ns, format_ns(now_ns)
        self.source = source
        self.known: dict[Kind, dict[str, bool]] = {}
        self.subjects: dict[Kind, dict[str, Subject]] = {}
        self.touched: dict[Kind, dict[str, Subject]] = {"flow": {}, "document": {}}
        self.redelivered: dict[Kind, list[Callback]] = {"flow": [], "document": []}
        self.changes: list[Change] = []
        # The final states of subjects that retention removed (SPEC 14): they stay removed.
        self.pruned: dict[Kind, dict[str, str]] = {}
        for kind in LIFECYCLES:
            mine = [c for c in callbacks if c.kind == kind]
            ids = {c.subject_id for c in mine}
            subjects = self.subjects[kind] = tx.subjects(kind, ids)
            self.pruned[kind] = tx.tombstoned(kind, ids - subjects.keys())
            # A stored event is never above its subject's last order, so only callbacks at
            # or below it can be repeats: in-order deliveries need no lookup.
            self.known[kind] = tx.known_keys(kind, [
                c for c in mine
                if c.subject_id in subjects
                and (c.position, c.dedup_key) <= subjects[c.subject_id].last
            ])  # fmt: skip

    def take(self, callback: Callback) -> Receipt:
        kind, lifecycle = callback.kind, LIFECYCLES[callback.kind]
        final = self.pruned[kind].get(callback.subject_id)
        if final is not None:  # answered, counted as arrived, and not stored
            return Receipt(PRUNED.outcome, False, PRUNED.reason, kind, callback.subject_id, final)
        subject = self._subject(kind, lifecycle, callback.subject_id)
        known = self.known[kind].get(callback.dedup_key)
        if known is not None:
            if self.source == "callback":  # an answer of the API again is no delivery
                self.redelivered[kind].append(callback)
            return Receipt("duplicate", known, None, kind, subject.id, subject.state)
        entry = _entry(callback)
        # An answer of Scrive's API is asked for, not delivered: it never arrives late.
        entry.out_of_order = not entry.reconciled and entry.position < subject.last[0]
        late = entry.order < subject.last
        # None for a subject that appears with this event (SPEC 11: `previous` null).
        before = None if subject.stored_state is None and not subject.events else subject.state
        # A reconciled entry may be superseded by a callback in any place: refold.
        simple = not entry.reconciled and not subject.reconciled
        if simple and (not late or is_neutral(lifecycle, entry.label, entry.version)):
            # Judged from the current state: in order, or a late event whose verdict is
            # the same in every state and which moves none (a refold would change nothing).
            subject.state, entry.verdict = judge(
                lifecycle, subject.state, entry.label, entry.version
            )
            if entry.verdict.outcome == "applied" and not late:
                subject.shown = entry.shown
            if subject.history is not None:
                insort(subject.history, entry, key=_order)
            subject.add(entry)
        else:
            history = self._history(kind, subject)
            subject.add(entry)
            insort(history, entry, key=_order)
            refold(lifecycle, subject, history)
        if self.source == "callback":
            subject.last_received_at = self.now
        self.touched[kind][subject.id] = subject
        if subject.state != before:
            correction = late and before is not None
            self.changes.append(
                _change(lifecycle, kind, subject, before, entry, correction, self.source)
            )
        self.known[kind][entry.key] = entry.out_of_order
        verdict = entry.verdict
        return Receipt(
            verdict.outcome, entry.out_of_order, verdict.reason, kind, subject.id, subject.state
        )

    def write(self, receipts: Sequence[Receipt]) -> int | None:
        """The batch's writes; the last change's `seq`, if it made any."""
        # The outcome each delivery got when it arrived: a late event may change the stored
        # outcomes, but these only grow (Prometheus counters).
        arrived = Counter((r.kind, r.outcome) for r in receipts if self.source == "callback")
        deltas = Counter({f"arrived.{kind}.{outcome}": n for (kind, outcome), n in arrived.items()})
        for kind in LIFECYCLES:
            touched = list(self.touched[kind].values())
            fresh = [entry for s in touched for entry in s.fresh]
            changed = [e for s in touched if s.history for e in s.history if e.changed]
            self.tx.put_subjects(kind, touched)  # first: new events need their subject's row
            self.tx.add_entries(kind, fresh, self.now)
            self.tx.set_verdicts(kind, changed)
            self.tx.redeliver(kind, self.redelivered[kind], self.now)
            # update(), not +=: a Counter sum drops the negative deltas
            deltas.update(_deltas(kind, touched, fresh, changed, len(self.redelivered[kind])))
        self.tx.bump(deltas)
        if self.source == "callback":
            self.tx.count_received(self.now_ns, len(receipts))
        # Last: the changes take their numbers in commit order (see `add_changes`).
        return self.tx.add_changes(self.changes, self.now)

    def load(self, kind: Kind, subject_id: str) -> Subject | None:
        """The stored subject, read if the batch has not read it."""
        if subject_id not in self.subjects[kind]:
            self.subjects[kind].update(self.tx.subjects(kind, {subject_id}))
        return self.subjects[kind].get(subject_id)

    def known_to_scrive(self, kind: Kind, subject_id: str, known: bool) -> None:
        """Note on a stored subject whether Scrive's API knows it: a 404 is an anomaly of
        the subject (SPEC 13) until the API answers for it again."""
        subject = self.load(kind, subject_id)
        if subject is None or known == (subject.unknown_to_scrive is None):
            return
        subject.unknown_to_scrive = None if known else self.now
        subject.anomalies += -1 if known else 1
        self.touched[kind][subject_id] = subject

    def _subject(self, kind: Kind, lifecycle: Lifecycle, subject_id: str) -> Subject:
        subject = self.subjects[kind].get(subject_id)
        if subject is None:
            subject = self.subjects[kind][subject_id] = Subject(subject_id, lifecycle.initial)
        return subject

    def _history(self, kind: Kind, subject: Subject) -> list[Entry]:
        if subject.history is None:
            stored = self.tx.history(kind, subject.id)
            subject.history = sorted([*stored, *subject.fresh], key=_order)
        return subject.history


CONFLICT_ATTEMPTS = 5  # runs of a transaction the database aborts to keep others apart


def again_on_conflict(run: Callable[[], T]) -> T:
    """`run()`, run again (after a short random pause) when the database aborted its
    transaction for a concurrent one (`TransactionConflict`); the last failure is a
    `StorageUnavailable` like any other: the sender retries later."""
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return run()
        except TransactionConflict:
            if attempt == CONFLICT_ATTEMPTS:
                raise
            time.sleep(random.uniform(0, 0.005 * 2**attempt))  # noqa: S311 (jitter)
    raise AssertionError("unreachable")


def _rebuild_page(
    store: Store, kind: Kind, lifecycle: Lifecycle, ids: Sequence[str]
) -> tuple[dict[str, int], int | None]:
    counts = {"subjects": 0, "events": 0, "changed_outcomes": 0, "changed_states": 0}
    changes: list[Change] = []
    with store.transaction() as tx:
        tx.lock((kind, subject_id) for subject_id in ids)
        subjects = tx.subjects(kind, set(ids))
        for subject in subjects.values():
            history = tx.history(kind, subject.id)
            before = subject.state
            refold(lifecycle, subject, history)
            changed = [entry for entry in history if entry.changed]
            tx.set_verdicts(kind, changed)
            counts["subjects"] += 1
            counts["events"] += len(history)
            counts["changed_outcomes"] += len(changed)
            counts["changed_states"] += subject.state != before
            if subject.state != before:
                last = next((e for e in reversed(history) if e.verdict.outcome == "applied"),
                            history[-1])  # fmt: skip
                changes.append(
                    _change(lifecycle, kind, subject, before, last, False, source="rebuild")
                )
        tx.put_subjects(kind, list(subjects.values()))
        last_change = tx.add_changes(changes, format_ns(time.time_ns()))
    return counts, last_change


def _change(
    lifecycle: Lifecycle,
    kind: Kind,
    subject: Subject,
    previous: str | None,
    entry: Entry,
    correction: bool,
    source: ChangeSource = "callback",
) -> Change:
    """The change a subject's new state makes, `entry` the event that made it."""
    at = canonical(entry.time_ns)
    label = "reconciled" if entry.reconciled and kind == "flow" else entry.label
    event: dict[str, Any] = (
        {"type": label, "event_created": at}
        if kind == "flow"
        else {"status": entry.label, "object_version": entry.position[0], "mtime": at}
    )
    if entry.reconciled and kind == "flow":
        event["status"] = entry.label  # what Scrive's API answered
    event["outcome"] = entry.verdict.outcome
    return Change(
        kind, subject.id, subject.state, previous, subject.state in lifecycle.terminal,
        correction, source, event,
    )  # fmt: skip


def _deltas(
    kind: Kind, touched: list[Subject], fresh: list[Entry], changed: list[Entry], repeats: int
) -> Counter[str]:
    """How this batch moves the counters behind /status (counted first, named once)."""
    outcomes = Counter(entry.verdict.outcome for entry in fresh)
    for entry in changed:
        if entry.stored is not None and entry.stored != entry.verdict:
            outcomes[entry.stored.outcome] -= 1
            outcomes[entry.verdict.outcome] += 1
    states = Counter(subject.state for subject in touched)
    states.subtract(s.stored_state for s in touched if s.stored_state is not None)
    deltas = Counter({f"{kind}.outcome.{outcome}": n for outcome, n in outcomes.items()})
    deltas.update({f"{kind}.state.{state}": n for state, n in states.items()})
    deltas[f"{kind}.duplicate"] = repeats
    deltas[f"{kind}.out_of_order"] = sum(entry.out_of_order for entry in fresh)
    return deltas


def _entry(callback: Callback) -> Entry:
    return Entry(
        key=callback.dedup_key,
        position=callback.position,
        label=callback.label,
        version=callback.format_version,
        time_ns=callback.moment.ns,
        out_of_order=False,
        shown=callback.shown,
        source=callback,
        reconciled=callback.reconciled is not None,
    )


def _order(entry: Entry) -> tuple[Any, ...]:
    return entry.order
