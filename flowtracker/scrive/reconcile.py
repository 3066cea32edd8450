"""Reconciliation (SPEC 13): ask Scrive's API where a subject is now, and fold the answer.

Which subjects: the ones named, or (`stuck`) every instance in progress and every
document not yet at its end (closed, canceled, rejected) with nothing received for the
stuck age. For each, the API's answer becomes the event or snapshot it stands for
(`engine.parsing.reconciled_instance`, `reconciled_document`) and goes through the
pipeline like a callback, marked as no delivery (`Pipeline.reconcile`); a 404 is an
anomaly of the subject. A 401 or 403 stops the run: every other request would fail too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowtracker.engine.events import Callback, FlowCallback, Kind
from flowtracker.engine.lifecycles import DOCUMENT_STATES
from flowtracker.engine.parsing import is_uuid, reconciled_document, reconciled_instance
from flowtracker.engine.records import RECONCILE_RESULTS as RESULTS
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import InvalidEvent, ScriveAPIError, ScriveRefused, StorageUnavailable
from flowtracker.ingest.background import LeasedWork
from flowtracker.ingest.pipeline import Pipeline, Reconciled
from flowtracker.scrive.api import ScriveAPI
from flowtracker.settings import Settings
from flowtracker.store.protocol import Store, SubjectFilter

log = logging.getLogger("flowtracker")

# Where a document stays once it is done: `--stuck` does not ask for these again (a closed
# document that fails sealing gets a callback Scrive guarantees).
DOCUMENT_ENDS = ("closed", "canceled", "rejected")
STUCK_DOCUMENT_STATES = tuple(s for s in DOCUMENT_STATES if s not in DOCUMENT_ENDS)
PAGE = 500
NOUN: dict[Kind, str] = {"flow": "instance", "document": "document"}


@dataclass(frozen=True, slots=True)
class Line:
    """What reconciling one subject did, as `reconcile` prints it and `--json` gives it."""

    kind: Kind
    subject_id: str
    result: str  # changed | unchanged | unknown (404) | error
    before: str | None = None
    after: str | None = None
    outcome: str | None = None  # of the answer stored, if one was
    reason: str | None = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.result != "error"

    def text(self) -> str:
        name = f"{NOUN[self.kind]} {self.subject_id}"
        if self.result == "error":
            return f"{name}: error: {self.error}"
        if self.result == "unknown":
            where = "" if self.before is not None else " (and not stored here)"
            return f"{name}: unknown to Scrive (404){where}"
        if self.result == "changed":
            return f"{name}: {self.before or 'none'} -> {self.after}"
        note = f"; {self.reason}" if self.reason else ""
        return f"{name}: unchanged ({self.after or 'not stored here'}{note})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "id": self.subject_id, "result": self.result,
            "before": self.before, "after": self.after, "outcome": self.outcome,
            "reason": self.reason, "error": self.error,
        }  # fmt: skip


@dataclass(slots=True)
class Summary:
    """The lines of a run, counted by result."""

    lines: list[Line] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None  # why the run stopped before the end (401/403)

    @property
    def ok(self) -> bool:
        """Every subject was answered (404 included)."""
        return self.stopped is None and not self.counts["error"]

    def add(self, line: Line) -> None:
        self.lines.append(line)
        self.counts[line.result] += 1

    def total(self, dry_run: bool) -> str:
        n = len(self.lines)
        parts = [f"{self.counts[r]} {'unknown to Scrive' if r == 'unknown' else r}"
                 for r in RESULTS if self.counts[r] or r in ("changed", "unchanged")]  # fmt: skip
        text = f"reconciled {n} subject{'' if n == 1 else 's'}: {', '.join(parts)}"
        if dry_run:
            text += " (dry run: nothing was written)"
        return text

    def to_dict(self, dry_run: bool) -> dict[str, Any]:
        return {
            "subjects": [line.to_dict() for line in self.lines],
            "totals": {result: self.counts[result] for result in RESULTS},
            "dry_run": dry_run,
            "stopped": self.stopped,
        }


def stuck(store: Store, now_ns: int, stuck_age_ns: int) -> Iterator[tuple[Kind, str]]:
    """Every instance in progress and every document not at an end, with nothing
    received for `stuck_age_ns`: in the order they were first seen."""
    before = format_ns(now_ns - stuck_age_ns)
    chosen: list[tuple[Kind, str]] = [("flow", "in_progress")]
    chosen += [("document", state) for state in STUCK_DOCUMENT_STATES]
    for kind, state in chosen:
        where, after = SubjectFilter(state=state, quiet_before=before), None
        while rows := store.list_subjects(kind, where, after, PAGE):
            yield from ((kind, row.id) for row in rows)
            after = rows[-1].seq


def named(store: Store, ids: Sequence[str]) -> list[tuple[Kind, str]]:
    """The subjects of the ids given: whichever kind holds each (both, if both do); an
    id stored as neither is an instance if it is a UUID, else a document."""
    found: list[tuple[Kind, str]] = []
    for subject_id in ids:
        candidates: list[tuple[Kind, str]] = [
            ("flow", subject_id.lower()),
            ("document", subject_id),
        ]
        stored = [(kind, id_) for kind, id_ in candidates if store.id_match(kind, id_) == "whole"]
        found += stored or [candidates[0] if is_uuid(subject_id) else candidates[1]]
    return found


def reconcile(
    pipeline: Pipeline,
    api: ScriveAPI,
    subjects: Sequence[tuple[Kind, str]] | Iterator[tuple[Kind, str]],
    *,
    dry_run: bool = False,
    on_line: Callable[[Line], None] = lambda line: None,
) -> Summary:
    """Reconcile each subject in turn; stops at a 401/403 (`Summary.stopped`)."""
    summary = Summary()
    try:
        for kind, subject_id in subjects:
            try:
                line = one(pipeline, api, kind, subject_id, dry_run=dry_run)
            except ScriveRefused as refused:
                summary.stopped = refused.message
                break
            summary.add(line)
            on_line(line)
    finally:
        if not dry_run:  # counted once a pass (or what of it ran), for /metrics
            try:
                pipeline.count_reconciliations(summary.counts)
            except StorageUnavailable as error:
                log.warning("reconciliations not counted: %s", error.message)
    return summary


def one(pipeline: Pipeline, api: ScriveAPI, kind: Kind, subject_id: str, *, dry_run: bool) -> Line:
    """Reconcile one subject; raises `ScriveRefused` (the run must stop)."""
    try:
        answer = api.subject(kind, subject_id)
        callback = None
        if answer.found:
            parse = reconciled_instance if kind == "flow" else reconciled_document
            callback = parse(subject_id, answer.body)
        if callback is not None and (known := _known_here(pipeline.store, callback)):
            here, reason = known
            return Line(kind, subject_id, "unchanged", here, here, reason=reason)
        done = pipeline.reconcile(kind, subject_id, callback, known=answer.found, dry_run=dry_run)
    except ScriveRefused:
        raise
    except InvalidEvent as invalid:
        listed = "; ".join(f"{name}: {why}" for name, why in invalid.problems.items())
        return Line(kind, subject_id, "error", error=f"Scrive's answer is not usable: {listed}")
    except (ScriveAPIError, StorageUnavailable) as error:
        return Line(kind, subject_id, "error", error=error.message)
    return _line(done)


def _known_here(store: Store, answer: Callback) -> tuple[str, str] | None:
    """The state here and why, when callbacks already say what the answer would: an
    instance that has ended here, a document whose callbacks brought its object_version
    or a newer one (a stale answer changes nothing). Such an answer is not stored; were
    it stored, the fold would ignore it all the same."""
    found = store.subject_history(answer.kind, answer.subject_id)
    if found is None:
        return None
    row, events = found
    if isinstance(answer, FlowCallback):
        status = answer.payload["reconciled"]
        ended = row.state != "in_progress"
        return (row.state, f"Scrive's API says {status}") if ended else None
    versions = [e.object_version or 0 for e in events if not e.reconciled]
    if versions and answer.object_version <= max(versions):
        return row.state, f"already known: Scrive's API has object_version {answer.object_version}"
    return None


def _line(done: Reconciled) -> Line:
    receipt = done.receipt
    return Line(
        done.kind, done.subject_id, done.result, done.before, done.after,
        outcome=None if receipt is None else receipt.outcome,
        reason=None if receipt is None else receipt.reason,
    )  # fmt: skip


def stuck_pass(
    pipeline: Pipeline, api: ScriveAPI, stuck_age_ns: int, now_ns: int | None = None
) -> Summary:
    """The `--stuck` pass, as `serve --reconcile-every` runs it."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    return reconcile(pipeline, api, stuck(pipeline.store, now_ns, stuck_age_ns))


LEASE = "reconcile"  # one receiver at a time runs the background pass
POLL_SECONDS = 60.0  # how often a receiver looks whether a pass is due, at most
FIRST_SECONDS = 5.0  # the first look after start, at most


class BackgroundReconciliation(LeasedWork):
    """`serve --reconcile-every`: the `--stuck` pass, about every `reconcile_every_seconds`
    across all receivers. A receiver looks now and then whether the lease is free; the one
    that takes it runs the pass and keeps the lease until a period after the pass began
    (renewing it while a long pass runs), so the next pass anywhere comes a period later.
    A receiver that dies mid-pass lets the lease run out; another takes over."""

    name = "reconciliation"

    def __init__(
        self, store: Store, settings: Settings, pipeline: Pipeline,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:  # fmt: skip
        assert settings.reconcile_every_seconds is not None
        poll = min(settings.reconcile_every_seconds, POLL_SECONDS)
        super().__init__(poll=poll, first=min(poll, FIRST_SECONDS))
        self.store, self.settings, self.pipeline, self.clock = store, settings, pipeline, clock
        self.every_ns = int(settings.reconcile_every_seconds * 1e9)
        self._until = 0

    def run_once(self) -> Summary | None:
        """One pass, if the lease is free (None if another receiver holds it)."""
        started = self.clock()
        if not self.store.take_lease(LEASE, self.owner, started, started + self.every_ns):
            return None
        self._until = started + self.every_ns
        try:
            with ScriveAPI(self.settings) as api:
                subjects = stuck(self.store, started, self.settings.stuck_age_seconds * 10**9)
                summary = reconcile(self.pipeline, api, self._while_held(subjects),
                                    on_line=self._logged)  # fmt: skip
        except ScriveRefused as refused:  # the credentials are missing
            log.error("reconciliation: %s", refused.message)
            return None
        if summary.stopped is not None:
            log.error("reconciliation stopped: %s", summary.stopped)
        log.info("reconciliation: %s", summary.total(dry_run=False))
        return summary

    def _while_held(self, subjects: Iterator[tuple[Kind, str]]) -> Iterator[tuple[Kind, str]]:
        """The subjects, for as long as this receiver runs and holds the lease."""
        for subject in subjects:
            if self.stopping.is_set():
                return
            now = self.clock()
            if now > self._until - self.every_ns // 2:  # a long pass: renew
                if not self.store.take_lease(LEASE, self.owner, now, now + self.every_ns):
                    log.warning("reconciliation: the lease was lost; the pass ends here")
                    return
                self._until = now + self.every_ns
            yield subject

    @staticmethod
    def _logged(line: Line) -> None:
        if line.result == "error":
            log.warning("reconciliation: %s", line.text())
        elif line.result != "unchanged":
            log.info("reconciliation: %s", line.text())
