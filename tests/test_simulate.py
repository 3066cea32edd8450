"""`flowtracker simulate`: the scenarios, the delivery plan, the sender, and the check."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtracker.engine import lifecycles
from flowtracker.engine.events import FLOW_FIELDS
from flowtracker.engine.parsing import parse_document, parse_flow
from flowtracker.errors import NotFound
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.scrive import sender
from flowtracker.scrive.link import SimulationError, Target
from flowtracker.scrive.payloads import timestamp
from flowtracker.scrive.scenarios import scenario
from flowtracker.scrive.schedule import late, plan
from flowtracker.scrive.sender import Ledger, Outbox, send
from flowtracker.scrive.simulate import differences
from flowtracker.scrive.traffic import (
    DOCUMENT_STATES,
    FLOW_STATES,
    FLOW_TYPES,
    SimCallback,
    SimSubject,
)
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.conftest import Clock
from tests.server import free_port, serving
from tests.test_lifecycles import expected_document, expected_flow

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = scenario(1, 200)


def parse(c: SimCallback) -> Any:
    return (parse_flow if c.kind == "flow" else parse_document)(c.body, c.content_type)


def instances_with_documents(
    subjects: list[SimSubject],
) -> list[tuple[SimSubject, list[SimSubject]]]:
    """Each flow instance with the documents that follow it in the scenario."""
    groups: list[tuple[SimSubject, list[SimSubject]]] = []
    for subject in subjects:
        if subject.kind == "flow":
            groups.append((subject, []))
        else:
            groups[-1][1].append(subject)
    return groups


def bodies(seed: int, instances: int) -> list[bytes]:
    deliveries = plan(scenario(seed, instances), seed, duplicates=0.2, reorder=0.3)
    return [delivery.callback.body for delivery in deliveries]


# Scenarios


def test_a_seed_gives_the_same_callbacks_in_the_same_order() -> None:
    assert bodies(7, 30) == bodies(7, 30)
    assert bodies(7, 30) != bodies(8, 30)


def test_the_simulator_knows_every_type_and_state_the_tracker_knows() -> None:
    assert (set(FLOW_TYPES), FLOW_STATES, DOCUMENT_STATES) == (
        set(FLOW_FIELDS),
        lifecycles.FLOW_STATES,
        lifecycles.DOCUMENT_STATES,
    )


def test_every_kind_of_callback_flow_and_document_end_appears() -> None:
    flows = [s for s in SUBJECTS if s.kind == "flow"]
    documents = [s for s in SUBJECTS if s.kind == "document"]
    callbacks = [c for s in SUBJECTS for c in s.callbacks]
    assert {c.label for c in callbacks if c.kind == "flow"} == set(FLOW_TYPES)
    assert {c.label for c in callbacks if c.kind == "document"} == set(DOCUMENT_STATES)
    assert {s.state for s in flows} == set(FLOW_STATES)
    assert {s.state for s in documents} == {"pending", "closed", "canceled", "rejected", "timedout"}
    assert {note for s in flows for note in s.story} == {
        "completed", "flow_rejected", "cancelled", "timed_out", "failed", "in_progress",
        "max_failures", "race", "archived view", "seal error", "seal extended", "prolonged",
    }  # fmt: skip
    assert {c.body.split(b"=")[0] for c in callbacks if c.kind == "document"} == {
        b"document_id",
        b"documentid",  # the v1 field names
    }
    assert {len(c.time) for c in callbacks if c.kind == "flow"} == {30, 31}  # 9 and 10 digits


def test_every_callback_is_one_the_parser_accepts_as_generated() -> None:
    callbacks = [c for s in SUBJECTS for c in s.callbacks]
    parsed = [parse(c) for c in callbacks]
    assert [(p.kind, p.subject_id, p.label, p.moment.text, p.position) for p in parsed] == [
        (c.kind, c.subject, c.label, c.time, c.position) for c in callbacks
    ]
    assert len({p.dedup_key for p in parsed}) == len(callbacks)


def test_expected_ends_agree_with_the_rules_written_out_by_hand() -> None:
    for subject in SUBJECTS:
        is_flow = subject.kind == "flow"
        state, outcomes, shown = "in_progress" if is_flow else "new", [], {}
        for c in sorted(subject.callbacks, key=lambda c: c.position):
            state, verdict = (expected_flow if is_flow else expected_document)(state, c.label)
            outcomes.append(verdict.outcome)
            if not is_flow and verdict.outcome == "applied":
                parsed = parse(c)
                shown = {
                    "object_version": parsed.object_version,
                    "signed_and_sealed": parsed.signed_and_sealed,
                    "title": parsed.title,
                    "mtime": parsed.mtime.text,
                }
        assert (state, outcomes, shown) == (
            subject.state,
            [c.outcome for c in subject.callbacks],
            dict(subject.shown),
        )


def test_documents_end_as_their_flow_does() -> None:
    ends: dict[str, set[tuple[str, ...]]] = {}
    for flow, documents in instances_with_documents(SUBJECTS):
        states = tuple(sorted({d.state for d in documents}))
        ends.setdefault(flow.state, set()).add(states)
    assert ends == {
        "completed": {("closed",)},
        "cancelled": {("canceled",)},
        "rejected": {("rejected",), ("canceled", "rejected")},  # one rejected cancels the rest
        "timed_out": {("timedout",)},
        "failed": {("pending",)},
        "in_progress": {("pending",)},
    }
    sealed = {d.shown["signed_and_sealed"] for f, ds in instances_with_documents(SUBJECTS)
              for d in ds if f.state == "completed"}  # fmt: skip
    assert sealed == {True}


def test_a_completion_raced_by_a_cancel_expects_the_cancel_refused() -> None:
    raced = [s for s in SUBJECTS if "race" in s.story]
    assert raced
    for flow in raced:
        labels = [(c.label, c.outcome) for c in flow.callbacks if c.label in FLOW_TYPES[:5]]
        assert labels[-1] == ("cancelled", "illegal")
        assert {label for label, _ in labels[:-1]} == {"completed"}
        assert flow.state == "completed"


# The delivery plan


@pytest.mark.parametrize(("duplicates", "reorder"), [(0, 0), (0.2, 0.3), (0.5, 0.6), (1, 0.1)])
def test_the_shares_of_duplicates_and_reordered_callbacks_are_honoured(
    duplicates: float, reorder: float
) -> None:
    deliveries = plan(SUBJECTS, 1, duplicates=duplicates, reorder=reorder)
    callbacks = [c for s in SUBJECTS for c in s.callbacks]
    sent = Counter(delivery.callback for delivery in deliveries)
    assert set(sent) == set(callbacks)
    assert (sum(delivery.again for delivery in deliveries), sum(sent.values())) == (
        round(duplicates * len(callbacks)),
        len(callbacks) + round(duplicates * len(callbacks)),
    )
    assert len(late(delivery.callback for delivery in deliveries)) == round(
        reorder * len(callbacks)
    )


def test_late_marks_what_arrives_after_a_later_callback_of_its_subject() -> None:
    first, second, third = SUBJECTS[0].callbacks[:3]
    other = SUBJECTS[1].callbacks[0]
    assert late([third, other, first, third, second]) == {first, second}


# The sender


def test_a_callback_that_keeps_failing_is_tried_ten_times_then_dropped() -> None:
    delivery = plan(SUBJECTS[:1], 1, duplicates=0, reorder=0)[0]
    outbox, ledger, attempts = Outbox([delivery], rate=None, scale=1e9), Ledger(), []
    while (job := outbox.take()) is not None:
        attempts.append(job[1])
        ledger.record(delivery.callback, 503, job[1])
        outbox.settle(delivery, job[1], "503 storage_unavailable")
    assert attempts == list(range(1, 11))
    assert (ledger.retries, ledger.dropped) == (9, [delivery.callback])


@pytest.mark.parametrize(
    ("statuses", "deliveries"),
    [
        ([200, 200], (2, 2)),
        ([503, 200], (1, 1)),  # a 503 writes nothing
        ([422, 200], (1, 1)),
        ([None, 200], (1, 2)),  # no answer: stored or not, nobody knows
        ([500, 200, 200], (2, 3)),
    ],
)
def test_the_ledger_counts_what_the_tracker_may_have_stored(
    statuses: list[int | None], deliveries: tuple[int, int]
) -> None:
    c, ledger = SUBJECTS[0].callbacks[0], Ledger()
    for attempt, status in enumerate(statuses, 1):
        ledger.record(c, status, attempt)
    assert (ledger.deliveries(c), ledger.arrivals) == (deliveries, [c])


def test_a_tracker_that_accepts_nothing_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender, "STALL", 0.0)
    deliveries = plan(SUBJECTS[:1], 1, duplicates=0, reorder=0)
    target = Target(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SimulationError, match=r"^the tracker accepted no callback for 0 s \("):
        send(target, deliveries, connections=2, rate=None, time_scale=1e9)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:8000", "the URL must be http://HOST[:PORT], not 'localhost:8000'"),
        ("ftp://example.com", "the URL must be http://HOST[:PORT], not 'ftp://example.com'"),
        ("http://h/?token=x", "the URL is the tracker's base URL, without a query or #"),
        ("http://h:99999", "the URL has a bad port: Port out of range 0-65535"),
    ],
)
def test_a_bad_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(SimulationError) as raised:
        Target(url)
    assert str(raised.value) == message


# The check, against the engine in process


def ingest(subjects: list[SimSubject], arrivals: list[SimCallback]) -> tuple[list[Any], Ledger]:
    """Feed callbacks one by one to a fresh pipeline, as one connection would: each
    subject as the read API shows it (None if unknown), and the ledger of the answers."""
    ledger = Ledger()
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "t.db", durability="normal")
        try:
            pipeline = Pipeline(store, Clock())
            for c in arrivals:
                pipeline.ingest([parse(c)])
                ledger.record(c, 200, 1)
            return [read(store, subject) for subject in subjects], ledger
        finally:
            store.close()


def read(store: SQLiteStore, subject: SimSubject) -> Any:
    try:
        return (views.instance if subject.kind == "flow" else views.document)(store, subject.id)
    except NotFound:
        return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10**6),
    instances=st.integers(1, 4),
    duplicates=st.floats(0, 1),
    reorder=st.floats(0, 1),
    data=st.data(),
)
def test_in_any_arrival_order_the_engine_ends_where_the_stories_say(
    seed: int, instances: int, duplicates: float, reorder: float, data: st.DataObject
) -> None:
    subjects = scenario(seed, instances)
    planned = plan(subjects, seed, duplicates=duplicates, reorder=reorder)
    order = data.draw(st.permutations([delivery.callback for delivery in planned]))
    found, ledger = ingest(subjects, order)
    arrivals = late(ledger.arrivals)
    assert [
        difference
        for subject, view in zip(subjects, found, strict=True)
        for difference in differences(subject, view, ledger, arrivals)
    ] == []


def test_the_check_names_each_difference() -> None:
    flow = next(s for s in SUBJECTS if s.story == ("completed",) and len(s.callbacks) > 3)
    [view], ledger = ingest([flow], list(flow.callbacks))
    first, last = flow.callbacks[0], flow.callbacks[-1]
    view["state"] = "cancelled"
    view["events"][0]["outcome"] = "illegal"
    view["events"][1]["deliveries"] = 2
    del view["events"][-1]
    name = f"instance {flow.id}"
    assert differences(flow, view, ledger, late(ledger.arrivals)) == [
        f"{name}: state: expected 'completed', got 'cancelled'",
        f"{name}: {last.label} at {last.time}: missing",
        f"{name}: {first.label} at {first.time}: outcome: expected 'applied', got 'illegal'",
        f"{name}: {flow.callbacks[1].label} at {flow.callbacks[1].time}: deliveries: "
        "expected 1, got 2",
    ]
    assert differences(flow, None, ledger, None) == [f"{name}: not found (expected completed)"]


# End to end: the command against `flowtracker serve`


def simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "flowtracker", "simulate", *args],
        cwd=ROOT,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def without_timing(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("took ")]


SUMMARY_SEED_1 = [
    "seed 1: 200 flow instances with 348 documents",
    "sent 2520 callbacks in 3024 deliveries: 504 duplicates, 756 reordered, 0 retries, 0 dropped",
    "  flow      completed 184, failed 14, cancelled 24, flow_rejected 20, timed_out 19, "
    "custom 252, authentication_attempted 536, authentication_max_failures_exceeded 10",
    "  document  preparation 318, awaiting_start 84, pending 565, closed 370, canceled 38, "
    "rejected 20, timedout 42, document_error 24",
    "a correct tracker ends with",
    "  instances in_progress 27, completed 105, failed 14, cancelled 15, rejected 20, timed_out 19",
    "  documents preparation 0, awaiting_start 0, pending 71, closed 184, canceled 38, "
    "rejected 20, timedout 35, document_error 0",
]
ARGS_SEED_1 = ["--instances", "200", "--duplicates", "0.2", "--reorder", "0.3", "--seed", "1"]


@pytest.mark.slow
def test_simulate_check_passes_against_a_fresh_tracker(tmp_path: Path) -> None:
    with serving(tmp_path / "sim.db") as server:
        done = simulate("--url", server.url, *ARGS_SEED_1, "--check")
    assert (done.returncode, done.stderr) == (0, "")
    assert without_timing(done.stdout) == [
        *SUMMARY_SEED_1,
        "check: all 200 instances and 348 documents are as expected "
        "(state, history, outcomes, deliveries)",
    ]


@pytest.mark.slow
def test_simulate_check_fails_when_the_tracker_knows_otherwise(tmp_path: Path) -> None:
    flow = next(s for s in SUBJECTS if s.story == ("completed",))
    completed = [c for c in flow.callbacks if c.label == "completed"]
    before = timestamp(completed[0].position[0] - 1)
    # A cancel a tracker received from elsewhere, just before the completion: the tracker
    # rightly ends the instance cancelled, which is not what the simulator sent.
    cancel = {"type": "cancelled", "version": 1, "event_created": before,
              "flow_instance_id": flow.id}  # fmt: skip
    with serving(tmp_path / "sim.db") as server:
        httpx.post(f"{server.url}/callbacks/flow", json=cancel).raise_for_status()
        done = simulate("--url", server.url, *ARGS_SEED_1, "--check")
    name = f"instance {flow.id}"
    assert (done.returncode, done.stderr) == (1, "")
    assert without_timing(done.stdout) == [
        *SUMMARY_SEED_1,
        f"{name}: state: expected 'completed', got 'cancelled'",
        f"{name}: event_count: expected {len(flow.callbacks)}, got {len(flow.callbacks) + 1}",
        f"{name}: cancelled at {before}: not sent by the simulator",
        *(
            f"{name}: completed at {c.time}: outcome: expected 'applied', got 'illegal'"
            for c in completed
        ),
        f"check: {3 + len(completed)} differences",
    ]


@pytest.mark.slow
def test_simulate_with_tokens(tmp_path: Path) -> None:
    tokens = {"FLOWTRACKER_CALLBACK_TOKEN": "c4llback", "FLOWTRACKER_READ_TOKEN": "r3ad"}
    with serving(tmp_path / "sim.db", env=tokens) as server:
        args = ["--url", server.url, "--instances", "20", "--check", "--seed"]
        no_token = simulate(*args, "5")
        wrong_read_token = simulate(*args, "6", env={**tokens, "FLOWTRACKER_READ_TOKEN": "x"})
        by_environment = simulate(*args, "7", env=tokens)
        by_flags = simulate(*args, "8", "--connections", "1", "--token", "c4llback",
                            "--read-token", "r3ad")  # fmt: skip
    assert (no_token.returncode, no_token.stderr) == (
        1,
        "Error: the tracker refused the callback token (401): set --token or "
        "FLOWTRACKER_CALLBACK_TOKEN to the tracker's FLOWTRACKER_CALLBACK_TOKEN\n",
    )
    assert (wrong_read_token.returncode, wrong_read_token.stderr) == (
        1,
        "Error: the tracker refused the read token (401): set --read-token or "
        "FLOWTRACKER_READ_TOKEN to the tracker's FLOWTRACKER_READ_TOKEN\n",
    )
    assert (by_flags.returncode, by_flags.stderr) == (0, "")
    assert by_flags.stdout.splitlines()[-1].endswith(
        "are as expected (state, history, outcomes, deliveries, out of order, anomalies)"
    )
    assert (by_environment.returncode, by_environment.stderr) == (0, "")


def test_an_unreachable_tracker_is_one_line_and_exit_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = simulate("--url", url, "--instances", "1")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"Error: cannot reach the tracker at {url}: ")
    assert done.stderr.count("\n") == 1
