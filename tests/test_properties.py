"""The core invariant: any arrival order of a delivery set, with any duplicates and any
batching, gives the same states and the same histories; and they match the spec's rules
applied to the events sorted by their order key."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtracker.engine.events import FLOW_FIELDS, Callback
from flowtracker.engine.lifecycles import DOCUMENT_STATES
from flowtracker.engine.parsing import parse_line, reconciled_document, reconciled_instance
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.conftest import DOCUMENT, INSTANCE, Clock, at, document_json, flow
from tests.test_lifecycles import expected_document, expected_flow

OTHER = "08b9e7d4-d424-4e66-baa4-06ab6635aad6"
# The known types and statuses (their names are checked against the spec in
# test_lifecycles), and one unknown of each, which must be ignored.
FLOW_TYPES = [*FLOW_FIELDS, "signatory_opened"]
STATUSES = [*DOCUMENT_STATES, "archived"]
ENDINGS = ("completed", "failed", "cancelled", "flow_rejected", "timed_out")


def written(second: int, style: str) -> str:
    """One instant written as Scrive might: nine digits, ten digits, or with an offset."""
    if style == "ten digits":  # the tenth digit is truncated: the same nanosecond
        return at(second).replace("Z", "7Z")
    if style == "a trailing zero":  # the example: ...17.3323509210Z
        return at(second, "332350921").replace("Z", "0Z")
    if style == "its own nanoseconds":
        return at(second, "332350921")
    if style == "offset":
        return at(second).replace("T16:", "T17:").replace("Z", "+01:00")
    return at(second)


flow_bodies = st.builds(
    lambda type_, second, style, instance, version, n: flow(
        type_, 0, instance, version=version, n=n, event_created=written(second, style)
    ),
    st.sampled_from(FLOW_TYPES),
    st.integers(0, 5),  # few distinct times: equal times happen
    st.sampled_from(
        ["nine digits", "ten digits", "offset", "a trailing zero", "its own nanoseconds"]
    ),
    st.sampled_from([INSTANCE, OTHER]),
    st.sampled_from([1, 1, 1, 1, 2]),
    st.integers(0, 1),  # same type and time, other body: a distinct event
)
document_bodies = st.builds(
    lambda status, version, minute, sealed: json.dumps(
        {
            "document_id": DOCUMENT,
            "document_signed_and_sealed": sealed,
            "document_json": document_json(status, version, minute),
        }
    ).encode(),
    st.sampled_from(STATUSES),
    st.integers(1, 4),
    st.integers(0, 2),
    st.booleans(),
)


# An answer of Scrive's API (SPEC 13), marked so that `ingested` reconciles it instead of
# ingesting it as a callback: the same answer twice is one event, like a redelivery.
ANSWER = b"answer:"
flow_answers = st.builds(
    lambda status, second, instance: ANSWER + json.dumps({
        "kind": "flow", "id": instance,
        "answer": {"id": instance, "status": status, "last_event": written(second, "")},
    }).encode(),
    st.sampled_from(["completed", "failed"]),
    st.integers(0, 5),
    st.sampled_from([INSTANCE, OTHER]),
)  # fmt: skip
document_answers = st.builds(
    lambda status, version, minute: ANSWER + json.dumps({
        "kind": "document", "id": DOCUMENT, "answer": document_json(status, version, minute),
    }).encode(),
    st.sampled_from(STATUSES),
    st.integers(1, 4),
    st.integers(0, 2),
)  # fmt: skip


def parsed(body: bytes) -> Callback:
    """A callback body, or an answer of Scrive's API as the callback it stands for."""
    if not body.startswith(ANSWER):
        return parse_line(body)
    marked = json.loads(body[len(ANSWER) :])
    if marked["kind"] == "flow":
        callback = reconciled_instance(marked["id"], marked["answer"])
        assert callback is not None
        return callback
    return reconciled_document(marked["id"], marked["answer"])


@st.composite
def deliveries(draw: st.DrawFn, bodies: st.SearchStrategy[bytes]) -> list[list[bytes]]:
    """Distinct bodies, each delivered at least once, shuffled, cut into batches."""
    distinct = draw(st.lists(bodies, min_size=1, max_size=12, unique=True))
    repeats = draw(st.lists(st.sampled_from(distinct), max_size=8))
    order = draw(st.permutations(distinct + repeats))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=4)))
    return [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if a < b]


@contextmanager
def ingested(batches: list[list[bytes]]) -> Iterator[SQLiteStore]:
    """A fresh database that has taken these batches, one transaction each."""
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "t.db", durability="normal")
        try:
            pipeline = Pipeline(store, Clock())
            for batch in batches:
                # Callbacks in batches; each answer of Scrive's API on its own, in its turn.
                for answer, run in groupby(batch, key=lambda body: body.startswith(ANSWER)):
                    if not answer:
                        pipeline.ingest([parse_line(body) for body in run])
                        continue
                    for body in run:
                        c = parsed(body)
                        pipeline.reconcile(c.kind, c.subject_id, c)
            yield store
        finally:
            store.close()


def ingest(batches: list[list[bytes]]) -> tuple[dict[str, Any], int]:
    """Ingest into a fresh database; the state and history of every subject touched."""
    with ingested(batches) as store:
        kept = store.totals("1970-01-01T00:00:00Z")  # the counters the batches kept up to date
        with store.transaction() as tx:
            tx.recount()
        assert kept == store.totals("1970-01-01T00:00:00Z")
        return _subjects(store), _totals(store)


def _subjects(store: SQLiteStore) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for instance in (INSTANCE, OTHER):
        if store.subject_history("flow", instance):
            view = views.instance(store, instance)
            times = (view["first_event_at"], view["last_event_at"])
            found[instance] = (view["state"], times, [_event(e) for e in view["events"]])
    if store.subject_history("document", DOCUMENT):
        view = views.document(store, DOCUMENT)
        shown = (view["object_version"], view["signed_and_sealed"], view["mtime"])
        found[DOCUMENT] = (view["state"], shown, [_event(e) for e in view["snapshots"]])
    return found


def _event(event: dict[str, Any]) -> tuple[Any, ...]:
    # Everything but what describes arrival: out_of_order, received_at, deliveries.
    return (json.dumps(event["payload"], sort_keys=True), event["outcome"], event["reason"])


def _totals(store: SQLiteStore) -> int:
    """All deliveries counted by the store."""
    total = 0
    for kind, subject in (("flow", INSTANCE), ("flow", OTHER), ("document", DOCUMENT)):
        found = store.subject_history(kind, subject)  # type: ignore[arg-type]
        total += sum(event.deliveries for event in found[1]) if found else 0
    return total


def oracle(bodies: set[bytes]) -> dict[str, Any]:
    """The spec applied by hand: sort each subject's events by order key and fold."""
    callbacks = sorted((parsed(body) for body in bodies), key=lambda c: (c.position, c.dedup_key))
    found: dict[str, Any] = {}
    for subject in (INSTANCE, OTHER, DOCUMENT):
        mine = [c for c in callbacks if c.subject_id == subject]
        if mine:
            found[subject] = _fold_by_hand(mine)
    return found


def _fold_by_hand(callbacks: list[Callback]) -> Any:
    is_flow = callbacks[0].kind == "flow"
    state, history = ("in_progress" if is_flow else "new"), []
    # One spelling for an instance's first and last event, however they were written.
    times = (spelled(callbacks[0].position[0]), spelled(callbacks[-1].position[0]))
    shown: tuple[Any, ...] = (None, None, None)
    # SPEC 13: a callback decides over an answer of Scrive's API, wherever either stands.
    real = [c for c in callbacks if c.reconciled is None]
    ended = any(c.label in ENDINGS and c.format_version == 1 for c in real)
    newest = max((c.position[0] for c in real), default=None)
    for c in callbacks:
        if c.reconciled is not None and is_flow and ended:
            verdict: tuple[Any, ...] = ("ignored", "superseded by a callback")
        elif (
            c.reconciled is not None
            and not is_flow
            and newest is not None
            and (c.position[0] <= newest)
        ):
            verdict = ("ignored", "already known")
        elif is_flow and c.format_version != 1:
            verdict = ("ignored", f"unsupported version {c.format_version}")
        elif c.label not in (FLOW_TYPES[:-1] if is_flow else STATUSES[:-1]):
            noun = "callback type" if is_flow else "status"
            verdict = ("ignored", f"unknown {noun} {c.label!r}")
        else:
            rule = expected_flow if is_flow else expected_document
            state, judged = rule(state, c.label)
            verdict = (judged.outcome, judged.reason)
            if judged.outcome == "applied" and c.kind == "document":
                shown = (c.object_version, c.signed_and_sealed, c.mtime.text)
        history.append((json.dumps(dict(c.payload), sort_keys=True), *verdict))
    return (state, times, history) if is_flow else (state, shown, history)


def spelled(ns: int) -> str:
    """RFC 3339 in UTC, nanoseconds without trailing zeros (the spec's canonical form)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{rest:09d}".rstrip("0")
    return f"{whole}{'.' + fraction if fraction else ''}Z"


def check(batches: list[list[bytes]]) -> None:
    subjects, totals = ingest(batches)
    everything = [body for batch in batches for body in batch]
    assert subjects == oracle(set(everything))
    # An answer of Scrive's API is no delivery.
    assert totals == sum(not body.startswith(ANSWER) for body in everything)
    in_order = sorted(set(everything), key=lambda b: parsed(b).dedup_key)
    assert ingest([in_order])[0] == subjects


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(deliveries(flow_bodies))
def test_flow_state_and_history_do_not_depend_on_arrival(batches: list[list[bytes]]) -> None:
    check(batches)


@SETTINGS
@given(deliveries(document_bodies))
def test_document_state_and_history_do_not_depend_on_arrival(
    batches: list[list[bytes]],
) -> None:
    check(batches)


@SETTINGS
@given(deliveries(st.one_of(flow_bodies, flow_bodies, flow_answers)))
def test_flow_answers_of_scrive_fold_the_same_in_any_order(batches: list[list[bytes]]) -> None:
    check(batches)


@SETTINGS
@given(deliveries(st.one_of(document_bodies, document_bodies, document_answers)))
def test_document_answers_of_scrive_fold_the_same_in_any_order(
    batches: list[list[bytes]],
) -> None:
    check(batches)


def test_the_oracle_sees_the_specs_example() -> None:
    assert oracle({flow("cancelled", 2), flow("completed", 1)})[INSTANCE][0] == "completed"
