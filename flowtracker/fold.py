"""The fold: a subject's events judged one by one, in their order, through its lifecycle.

An event's outcome depends only on the events before it in the order, never on when it
arrived; so the state of a subject, and the outcome of each of its events, are the same
for every arrival order of the same set of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .lifecycles import Lifecycle

Outcome = Literal["applied", "illegal", "ignored"]
Position = tuple[int, int]
Order = tuple[Position, str]

LOWEST: Final[Order] = ((-(2**63), -(2**63)), "")


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str | None = None


APPLIED: Final = Verdict("applied")


def judge(
    lifecycle: Lifecycle, state: str, trigger: str | None, note: str | None
) -> tuple[str, Verdict]:
    """The state after one event, and its verdict, given the state before it."""
    if trigger is None:
        return state, Verdict("ignored", note)
    if not lifecycle.knows(trigger):
        return state, Verdict("ignored", f"unknown {lifecycle.trigger_noun} {trigger!r}")
    step = lifecycle.step(state, trigger)
    if step.refusal is not None:
        return state, Verdict("illegal", step.refusal)
    return step.state, APPLIED


@dataclass(slots=True, eq=False)
class Entry:
    """One event or snapshot of a subject, as the fold sees it."""

    key: str
    position: Position
    trigger: str | None
    note: str | None
    time_ns: int
    time_text: str
    out_of_order: bool
    verdict: Verdict = APPLIED
    shown: Mapping[str, Any] = field(default_factory=dict)
    row_id: int | None = None  # None until it is stored
    changed: bool = False  # a stored entry whose verdict the last refold changed
    source: Any = None  # the parsed callback of a new entry, for the store

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
    first_ns: int | None = None
    first_at: str | None = None
    last_ns: int | None = None
    last_at: str | None = None
    last_received_at: str | None = None
    shown: Mapping[str, Any] = field(default_factory=dict)  # from the last applied event
    history: list[Entry] | None = None  # loaded only when an event lands before the last
    fresh: list[Entry] = field(default_factory=list)  # not yet stored

    def add(self, entry: Entry) -> None:
        """Count a new entry whose verdict is decided."""
        self.events += 1
        self.anomalies += entry.verdict.outcome == "illegal" or entry.out_of_order
        self.last = max(self.last, entry.order)
        if self.first_ns is None or entry.time_ns < self.first_ns:
            self.first_ns, self.first_at = entry.time_ns, entry.time_text
        if self.last_ns is None or entry.time_ns > self.last_ns:
            self.last_ns, self.last_at = entry.time_ns, entry.time_text
        self.fresh.append(entry)


def fold(lifecycle: Lifecycle, entries: Iterable[Entry]) -> tuple[str, list[Verdict]]:
    """Judge `entries` (already in order) from the lifecycle's initial state."""
    state, verdicts = lifecycle.initial, []
    for entry in entries:
        state, verdict = judge(lifecycle, state, entry.trigger, entry.note)
        verdicts.append(verdict)
    return state, verdicts


def refold(lifecycle: Lifecycle, subject: Subject, history: Sequence[Entry]) -> None:
    """Re-judge a subject's whole ordered history; mark the stored entries that changed."""
    state, verdicts = fold(lifecycle, history)
    subject.state, subject.anomalies, subject.shown = state, 0, {}
    for entry, verdict in zip(history, verdicts, strict=True):
        if verdict != entry.verdict:
            entry.verdict, entry.changed = verdict, entry.row_id is not None
        subject.anomalies += verdict.outcome == "illegal" or entry.out_of_order
        if verdict.outcome == "applied":
            subject.shown = entry.shown
