"""The simulator: a scenario delivered as Scrive would, a report, and a check of the tracker.

`run` draws a scenario (`scenarios`), plans its delivery (`delivery`), sends it
(`sender`), prints what was sent and where a correct tracker must end, and with `check`
reads every subject back and prints each way it differs. The expected ends come from the
stories, never from the tracker's own code; what is compared is what the spec fixes
whatever the arrival order: states, histories in order with their outcomes, and the
deliveries counted (exactly, unless an attempt went unanswered). Out-of-order flags and
anomaly counts depend on the arrival order, which one connection makes known.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from flowtracker.engine.timestamps import canonical
from flowtracker.scrive.link import Link, SimulationError, Target
from flowtracker.scrive.scenarios import scenario
from flowtracker.scrive.schedule import Delivery, late, plan
from flowtracker.scrive.sender import ATTEMPTS, Ledger, read_back, send
from flowtracker.scrive.traffic import (
    DOCUMENT_STATES,
    FLOW_STATES,
    FLOW_TYPES,
    SimCallback,
    SimSubject,
)

__all__ = ["Options", "SimulationError", "Target", "differences", "report", "run", "summary"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    """One run of the simulator: the options of `flowtracker simulate`."""

    target: Target
    instances: int = 100
    duplicates: float = 0.2
    reorder: float = 0.3
    seed: int | None = None  # None: a random one, printed so the run can be repeated
    rate: float | None = None
    connections: int = 8
    time_scale: float = 3600.0
    check: bool = False


def run(options: Options, echo: Callable[[str], None]) -> bool:
    """Simulate, report, and check if asked. True when every callback was delivered and
    (with the check) every subject is where it must be."""
    seed = secrets.randbelow(1_000_000) if options.seed is None else options.seed
    subjects = scenario(seed, options.instances)
    deliveries = plan(subjects, seed, duplicates=options.duplicates, reorder=options.reorder)
    Link(options.target).healthy()
    started = time.monotonic()
    ledger = send(
        options.target,
        deliveries,
        connections=options.connections,
        rate=options.rate,
        time_scale=options.time_scale,
    )
    elapsed = time.monotonic() - started
    for line in report(seed, subjects, deliveries, ledger):
        echo(line)
    echo(f"took {elapsed:.1f} s ({len(deliveries) / max(elapsed, 1e-3):.0f} deliveries/s)")
    if ledger.dropped:
        echo(
            f"{len(ledger.dropped)} callbacks dropped after {ATTEMPTS} failed attempts: "
            "the tracker cannot reach the expected states"
        )
        return False
    if not options.check:
        return True
    views = read_back(options.target, subjects, options.connections)
    # One connection and no unanswered attempt: the order the tracker stored them is known.
    known = options.connections == 1 and not ledger.unsure
    out_of_order = late(ledger.arrivals) if known else None
    found = 0
    for subject, view in zip(subjects, views, strict=True):
        for difference in differences(subject, view, ledger, out_of_order):
            echo(difference)
            found += 1
    echo(_check_line(subjects, found, out_of_order is not None))
    return found == 0


def report(
    seed: int, subjects: Sequence[SimSubject], deliveries: Sequence[Delivery], ledger: Ledger
) -> Iterator[str]:
    """What was sent, and the states a correct tracker ends with."""
    callbacks = [c for subject in subjects for c in subject.callbacks]
    flows = [s for s in subjects if s.kind == "flow"]
    documents = [s for s in subjects if s.kind == "document"]
    repeats = sum(delivery.again for delivery in deliveries)
    reordered = len(late(delivery.callback for delivery in deliveries))
    labels = Counter((c.kind, c.label) for c in callbacks)
    yield f"seed {seed}: {len(flows)} flow instances with {len(documents)} documents"
    yield (
        f"sent {len(callbacks)} callbacks in {len(deliveries)} deliveries: {repeats} "
        f"duplicates, {reordered} reordered, {ledger.retries} retries, "
        f"{len(ledger.dropped)} dropped"
    )
    yield "  flow      " + _counts({t: labels["flow", t] for t in FLOW_TYPES})
    yield "  document  " + _counts({s: labels["document", s] for s in DOCUMENT_STATES})
    yield "a correct tracker ends with"
    yield "  instances " + _counts(_states(flows, FLOW_STATES))
    yield "  documents " + _counts(_states(documents, DOCUMENT_STATES))


def differences(
    subject: SimSubject, view: Any, ledger: Ledger, out_of_order: set[SimCallback] | None
) -> list[str]:
    """Each way the tracker's `view` of `subject` (the read API's JSON, None if unknown)
    differs from where it must be. `out_of_order`: the callbacks that arrived after a
    later one of their subject, when the arrival order is known (else None)."""
    name = f"{'instance' if subject.kind == 'flow' else 'document'} {subject.id}"
    if view is None:
        return [f"{name}: not found (expected {subject.state})"]
    wanted = summary(subject, out_of_order)
    found = [
        f"{name}: {key}: expected {value!r}, got {view.get(key)!r}"
        for key, value in wanted.items()
        if view.get(key) != value
    ]
    entries = view.get("events" if subject.kind == "flow" else "snapshots")
    history = _history(subject, entries or [], ledger, out_of_order)
    return found + [f"{name}: {difference}" for difference in history]


def summary(subject: SimSubject, out_of_order: set[SimCallback] | None) -> dict[str, Any]:
    """The read API's summary fields that the spec fixes for `subject`."""
    callbacks = subject.callbacks
    if subject.kind == "flow":
        wanted: dict[str, Any] = {
            "state": subject.state,
            "terminal": subject.state != "in_progress",
            "event_count": len(callbacks),
            # In the one spelling the spec gives a subject's times, made from the instant.
            "first_event_at": canonical(callbacks[0].position[0]),
            "last_event_at": canonical(callbacks[-1].position[0]),
        }
    else:
        final = subject.state in ("canceled", "rejected")
        count = len(callbacks)
        wanted = {"state": subject.state, "final": final, **subject.shown, "snapshot_count": count}
    if out_of_order is not None:
        wanted["anomalies"] = sum(c.outcome == "illegal" or c in out_of_order for c in callbacks)
    return wanted


def _check_line(subjects: Sequence[SimSubject], found: int, arrival_known: bool) -> str:
    if found:
        return f"check: {found} differences"
    flows = sum(subject.kind == "flow" for subject in subjects)
    compared = "state, history, outcomes, deliveries" + (
        ", out of order, anomalies" if arrival_known else ""
    )
    return (
        f"check: all {flows} instances and {len(subjects) - flows} documents "
        f"are as expected ({compared})"
    )


def _history(
    subject: SimSubject, entries: list[Any], ledger: Ledger, out_of_order: set[SimCallback] | None
) -> Iterator[str]:
    wanted = {_key(c): c for c in subject.callbacks}
    got = {_entry_key(entry): entry for entry in entries}
    yield from (f"{_named(key)}: missing" for key in wanted if key not in got)
    yield from (f"{_named(key)}: not sent by the simulator" for key in got if key not in wanted)
    if list(wanted) != list(got) and wanted.keys() == got.keys():
        yield "history: not in event order"
    for key, c in wanted.items():
        if key in got:
            for difference in _event(c, got[key], ledger, out_of_order):
                yield f"{_named(key)}: {difference}"


def _event(
    c: SimCallback, entry: dict[str, Any], ledger: Ledger, out_of_order: set[SimCallback] | None
) -> Iterator[str]:
    if entry.get("outcome") != c.outcome:
        yield f"outcome: expected {c.outcome!r}, got {entry.get('outcome')!r}"
    low, high = ledger.deliveries(c)
    count = entry.get("deliveries")
    if not (isinstance(count, int) and low <= count <= high):
        yield f"deliveries: expected {low if low == high else f'{low} to {high}'}, got {count!r}"
    if out_of_order is not None and entry.get("out_of_order") != (c in out_of_order):
        yield f"out_of_order: expected {c in out_of_order}, got {entry.get('out_of_order')!r}"


def _key(c: SimCallback) -> tuple[Any, ...]:
    return (c.label, c.time) if c.kind == "flow" else (c.label, c.position[0], c.time)


def _entry_key(entry: dict[str, Any]) -> tuple[Any, ...]:
    if "type" in entry:
        return (entry.get("type"), entry.get("event_created"))
    return (entry.get("state"), entry.get("object_version"), entry.get("mtime"))


def _named(key: tuple[Any, ...]) -> str:
    if len(key) == 2:
        return f"{key[0]} at {key[1]}"
    return f"{key[0]} (object_version {key[1]}, mtime {key[2]})"


def _states(subjects: Sequence[SimSubject], states: Sequence[str]) -> dict[str, int]:
    found = Counter(subject.state for subject in subjects)
    return {state: found[state] for state in states}


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in counts.items())
