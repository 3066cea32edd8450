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
from functools import partial
from typing import Any

from flowtracker.engine.timestamps import canonical
from flowtracker.errors import FlowtrackerError
from flowtracker.scrive.fake_api import FakeScrive, serving
from flowtracker.scrive.link import Link, SimulationError, Target
from flowtracker.scrive.losses import Reachable, lose, reachable, truth
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
from flowtracker.settings import Settings

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
    lose: float = 0.0  # share of the callbacks lost for good (Scrive's 10th attempt failed)
    scrive_api: tuple[str, int] | None = None  # serve a fake Scrive API there, after sending
    scrive_settings: Settings | None = None  # its credentials (FLOWTRACKER_SCRIVE_*)
    wait: float | None = None  # seconds to serve it (with check: until it passes); None: ever


def run(options: Options, echo: Callable[[str], None]) -> bool:
    """Simulate, report, and check if asked. True when every callback was delivered and
    (with the check) every subject is where it must be."""
    seed = secrets.randbelow(1_000_000) if options.seed is None else options.seed
    subjects = scenario(seed, options.instances)
    lost = lose(subjects, options.lose, seed)
    deliveries = [
        delivery
        for delivery in plan(subjects, seed, duplicates=options.duplicates, reorder=options.reorder)
        if delivery.callback not in lost
    ]
    fake = _fake_scrive(options, subjects)  # before sending: its settings may be wrong
    link = Link(options.target)
    try:
        link.healthy()
        # The same seed makes the same subjects: the first and the last there already
        # (not one a tracker may have from elsewhere) say it was sent before.
        probes = [subjects[0], subjects[-1]] if subjects else []
        sent_before = bool(probes) and all(link.knows(s.kind, s.id) for s in probes)
    finally:
        link.close()
    if sent_before:
        first, last = subjects[0], subjects[-1]
        said = (f"seed {seed} was sent to this tracker before ({first.kind} {first.id} and "
                f"{last.kind} {last.id} are there)")  # fmt: skip
        if options.check:
            raise SimulationError(
                f"{said}: the check would compare against states the first run left; "
                "give another --seed, or a tracker on a fresh database"
            )
        echo(f"warning: {said}: every callback will be a duplicate")
    started = time.monotonic()
    ledger = send(
        options.target,
        deliveries,
        connections=options.connections,
        rate=options.rate,
        time_scale=options.time_scale,
    )
    elapsed = time.monotonic() - started
    for line in report(seed, subjects, deliveries, ledger, lost):
        echo(line)
    echo(f"took {elapsed:.1f} s ({len(deliveries) / max(elapsed, 1e-3):.0f} deliveries/s)")
    if ledger.dropped:
        echo(
            f"{len(ledger.dropped)} callbacks dropped after {ATTEMPTS} failed attempts: "
            "the tracker cannot reach the expected states"
        )
        return False
    check = partial(_check, options, subjects, ledger, lost)
    if fake is None:
        return not options.check or check(echo) == 0
    assert options.scrive_api is not None
    with serving(fake, *options.scrive_api) as url:
        echo(
            f"Scrive's API (simulated) answers at {url} for these instances and documents, "
            "with the FLOWTRACKER_SCRIVE_* credentials: `flowtracker reconcile --stuck` "
            "with FLOWTRACKER_SCRIVE_URL=" + url
            + (" brings the tracker there; checking again every "
               f"{RECHECK_SECONDS:.0f} s" if options.check else "; Ctrl-C stops it")
        )  # fmt: skip
        return _serve(options, fake, check, echo)


RECHECK_SECONDS = 5.0
IDLE_SECONDS = 3.0  # after the check passes, served until nobody asked for this long


def _serve(
    options: Options, fake: FakeScrive, check: Callable[..., int], echo: Callable[[str], None]
) -> bool:
    """Serve the fake Scrive API for `options.wait` seconds (None: until Ctrl-C); with
    the check, until the tracker passes it and has stopped asking (a reconciliation
    still running gets its answers)."""
    deadline = None if options.wait is None else time.monotonic() + options.wait
    found = check(echo) if options.check else None
    while found != 0 and (deadline is None or time.monotonic() < deadline):
        time.sleep(RECHECK_SECONDS if deadline is None else
                   max(0.0, min(RECHECK_SECONDS, deadline - time.monotonic())))  # fmt: skip
        if options.check:
            again = check(lambda line: None)
            if again == 0:
                check(echo)  # the line that says what was compared
            elif again != found:
                echo(f"check: {again} differences")
            found = again
    while found == 0 and time.monotonic() - fake.last_request < IDLE_SECONDS:
        if deadline is not None and time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    return not options.check or found == 0


def _fake_scrive(options: Options, subjects: Sequence[SimSubject]) -> FakeScrive | None:
    if options.scrive_api is None:
        return None
    if options.scrive_settings is None:
        raise SimulationError("the simulated Scrive API needs the FLOWTRACKER_SCRIVE_* settings")
    try:
        fake = FakeScrive(options.scrive_settings)
    except FlowtrackerError as error:
        raise SimulationError(
            f"{error.message}: the simulated Scrive API checks them as Scrive does"
        ) from None
    truth(subjects, fake)
    return fake


def _check(
    options: Options,
    subjects: Sequence[SimSubject],
    ledger: Ledger,
    lost: frozenset[SimCallback],
    echo: Callable[[str], None],
) -> int:
    """Read every subject back and print each difference; how many there are."""
    views = read_back(options.target, subjects, options.connections)
    # One connection and no unanswered attempt: the order the tracker stored them is known.
    known = options.connections == 1 and not ledger.unsure
    out_of_order = late(ledger.arrivals) if known else None
    found = 0
    for subject, view in zip(subjects, views, strict=True):
        for difference in differences(subject, view, ledger, out_of_order, lost):
            echo(difference)
            found += 1
    echo(_check_line(subjects, found, out_of_order is not None, lost))
    return found


def report(
    seed: int,
    subjects: Sequence[SimSubject],
    deliveries: Sequence[Delivery],
    ledger: Ledger,
    lost: frozenset[SimCallback] = frozenset(),
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
        f"{len(ledger.dropped)} dropped" + (f", {len(lost)} lost for good" if lost else "")
    )
    yield "  flow      " + _counts({t: labels["flow", t] for t in FLOW_TYPES})
    yield "  document  " + _counts({s: labels["document", s] for s in DOCUMENT_STATES})
    yield "a correct tracker ends with"
    yield "  instances " + _counts(_states(flows, FLOW_STATES))
    yield "  documents " + _counts(_states(documents, DOCUMENT_STATES))
    if lost:
        reach = [reachable(subject, lost) for subject in flows]
        short = sum(r.reconciled is not None for r in reach)
        states = Counter(r.state for r in reach)
        yield (
            f"{short} instances only once it asks Scrive's API (their last callback was "
            "lost), where a cancel, a rejection and a timeout read failed; instances then "
            + _counts({state: states[state] for state in FLOW_STATES})
        )


def differences(
    subject: SimSubject,
    view: Any,
    ledger: Ledger,
    out_of_order: set[SimCallback] | None,
    lost: frozenset[SimCallback] = frozenset(),
) -> list[str]:
    """Each way the tracker's `view` of `subject` (the read API's JSON, None if unknown)
    differs from where it must be. `out_of_order`: the callbacks that arrived after a
    later one of their subject, when the arrival order is known (else None); `lost`: the
    callbacks lost for good, which Scrive's API must make up for."""
    name = f"{'instance' if subject.kind == 'flow' else 'document'} {subject.id}"
    reach = reachable(subject, lost)
    if view is None:
        return [f"{name}: not found (expected {reach.state})"]
    wanted = summary(subject, out_of_order, reach)
    found = [
        f"{name}: {key}: expected {value!r}, got {view.get(key)!r}"
        for key, value in wanted.items()
        if view.get(key) != value
    ]
    entries = view.get("events" if subject.kind == "flow" else "snapshots")
    history = _history(reach, entries or [], ledger, out_of_order)
    return found + [f"{name}: {difference}" for difference in history]


def summary(
    subject: SimSubject, out_of_order: set[SimCallback] | None, reach: Reachable | None = None
) -> dict[str, Any]:
    """The read API's summary fields that the spec fixes for `subject` (where it can be
    brought, `reach`, when callbacks were lost)."""
    reach = reach or reachable(subject, frozenset())
    entries = reach.entries
    if subject.kind == "flow":
        wanted: dict[str, Any] = {
            "state": reach.state,
            "terminal": reach.state != "in_progress",
            "event_count": len(entries),
            # In the one spelling the spec gives a subject's times, made from the instant.
            "first_event_at": canonical(entries[0].position[0]),
            "last_event_at": canonical(max(c.position[0] for c in entries)),
        }
    else:
        final = reach.state in ("canceled", "rejected")
        count = len(entries)
        wanted = {"state": reach.state, "final": final, **reach.shown, "snapshot_count": count}
    if out_of_order is not None:
        wanted["anomalies"] = sum(
            c.outcome == "illegal" or c in out_of_order for c in reach.callbacks
        )
    return wanted


def _check_line(
    subjects: Sequence[SimSubject], found: int, arrival_known: bool, lost: frozenset[SimCallback]
) -> str:
    if found:
        if lost:
            return (
                f"check: {found} differences ({len(lost)} callbacks were lost for good: "
                "`flowtracker reconcile --stuck` asks Scrive's API for what they said)"
            )
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
    reach: Reachable, entries: list[Any], ledger: Ledger, out_of_order: set[SimCallback] | None
) -> Iterator[str]:
    wanted = {_key(c): c for c in reach.entries}
    got = {_entry_key(entry): entry for entry in entries}
    yield from (f"{_named(key)}: missing" for key in wanted if key not in got)
    yield from (f"{_named(key)}: not sent by the simulator" for key in got if key not in wanted)
    if list(wanted) != list(got) and wanted.keys() == got.keys():
        yield "history: not in event order"
    for key, c in wanted.items():
        if key in got:
            answer = c is reach.reconciled
            for difference in _event(c, got[key], ledger, out_of_order, answer):
                yield f"{_named(key)}: {difference}"


def _event(
    c: SimCallback,
    entry: dict[str, Any],
    ledger: Ledger,
    out_of_order: set[SimCallback] | None,
    answer: bool = False,
) -> Iterator[str]:
    """`answer`: the entry must be Scrive's API's answer, no delivery."""
    if entry.get("outcome") != c.outcome:
        yield f"outcome: expected {c.outcome!r}, got {entry.get('outcome')!r}"
    source = "reconcile" if answer else "callback"
    if entry.get("source") != source:
        yield f"source: expected {source!r}, got {entry.get('source')!r}"
    if answer:
        if entry.get("deliveries") != 0:
            got = entry.get("deliveries")
            yield f"deliveries: expected 0 (an answer of Scrive's API), got {got!r}"
        return
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
