"""The fold: a subject's events judged one by one, in their order, through its lifecycle.

An event's outcome depends only on the events before it in the order, never on when it
arrived; so the state of a subject, and the outcome of each of its events, are the same
for every arrival order of the same set of events.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowtracker.engine.lifecycles import Lifecycle
from flowtracker.engine.records import APPLIED, Entry, Subject, Verdict


def judge(
    lifecycle: Lifecycle, state: str, label: str, version: int | None = None
) -> tuple[str, Verdict]:
    """The state after one event, and its verdict, given the state before it."""
    if version != lifecycle.version:
        return state, Verdict("ignored", f"unsupported version {version}")
    if not lifecycle.knows(label):
        return state, Verdict("ignored", f"unknown {lifecycle.trigger_noun} {label!r}")
    step = lifecycle.step(state, label)
    if step.refusal is not None:
        return state, Verdict("illegal", step.refusal)
    return step.state, APPLIED


def is_neutral(lifecycle: Lifecycle, label: str, version: int | None = None) -> bool:
    """Whether an event has the same verdict in every state and moves none (ignored ones,
    and triggers legal everywhere that stay put): its place in the order cannot matter."""
    return version != lifecycle.version or label not in lifecycle.moving


def fold(lifecycle: Lifecycle, entries: Sequence[Entry]) -> tuple[str, list[Verdict]]:
    """Judge `entries` (already in order) from the lifecycle's initial state.

    An answer of Scrive's API (a reconciled entry) that a callback supersedes is ignored
    wherever it stands: which one that is depends on the whole set, never on the order.
    """
    superseded = lifecycle.superseded(entries) if any(e.reconciled for e in entries) else None
    state, verdicts = lifecycle.initial, []
    for entry in entries:
        verdict = superseded(entry) if superseded is not None and entry.reconciled else None
        if verdict is None:
            state, verdict = judge(lifecycle, state, entry.label, entry.version)
        verdicts.append(verdict)
    return state, verdicts


def refold(lifecycle: Lifecycle, subject: Subject, history: Sequence[Entry]) -> None:
    """Re-judge a subject's whole ordered history; mark the stored entries that changed."""
    state, verdicts = fold(lifecycle, history)
    # A 404 from Scrive's API is an anomaly of the subject, not of an event.
    subject.state, subject.shown = state, {}
    subject.anomalies = subject.unknown_to_scrive is not None
    for entry, verdict in zip(history, verdicts, strict=True):
        if verdict != entry.verdict:
            entry.verdict, entry.changed = verdict, entry.row_id is not None
        subject.anomalies += verdict.outcome == "illegal" or entry.out_of_order
        if verdict.outcome == "applied":
            subject.shown = entry.shown
