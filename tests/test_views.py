"""Read models over a real store: whole values, filters, keyset pagination, quarantine;
on both backends (`store` is each of them in turn)."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowtracker.engine.parsing import parse_document, parse_flow
from flowtracker.errors import InvalidQuery, NotFound
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import summaries, views
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Quarantined, Store, SubjectFilter
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.conftest import DOCUMENT, INSTANCE, T0, Clock, at, document_form, flow

DAY = 86_400
WEEK = 7 * DAY * 1_000_000_000
IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(7)]
NOT_A_CURSOR = "not a cursor this API gave out"


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    """The conftest's store, on SQLite and on PostgreSQL (the pipeline takes it too)."""
    opened = open_store(target)
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "plans.db")
    yield opened
    opened.close()


def test_instance_view_is_the_whole_history(pipeline: Pipeline, store: Store) -> None:
    pipeline.ingest([parse_flow(flow("custom", 3)), parse_flow(flow("completed", 1))])
    assert views.instance(store, INSTANCE.upper()) == {
        "id": INSTANCE,
        "state": "completed",
        "terminal": True,
        "first_event_at": "2021-03-10T16:00:01Z",  # canonical: no trailing zeros
        "last_event_at": "2021-03-10T16:00:03Z",
        "last_received_at": "2027-01-15T08:00:00.000000Z",
        "event_count": 2,
        "anomalies": 2,
        "unknown_to_scrive_at": None,
        "events": [
            {
                "type": "completed",
                "event_created": at(1),
                "received_at": "2027-01-15T08:00:00.000000Z",
                "last_delivery_at": "2027-01-15T08:00:00.000000Z",
                "outcome": "applied",
                "out_of_order": True,
                "deliveries": 1,
                "reason": None,
                "source": "callback",
                "payload": json.loads(flow("completed", 1)),
            },
            {
                "type": "custom",
                "event_created": at(3),
                "received_at": "2027-01-15T08:00:00.000000Z",
                "last_delivery_at": "2027-01-15T08:00:00.000000Z",
                "outcome": "illegal",
                "out_of_order": False,
                "deliveries": 1,
                "reason": "instance already completed",
                "source": "callback",
                "payload": json.loads(flow("custom", 3)),
            },
        ],
    }


def test_document_snapshot_payload_is_json_whatever_the_encoding(
    pipeline: Pipeline, store: Store
) -> None:
    body = document_form("pending", 2)
    pipeline.ingest([parse_document(body, "application/x-www-form-urlencoded")])
    snapshot = views.document(store, DOCUMENT)["snapshots"][0]
    assert snapshot["payload"] == parse_document(body, "application/x-www-form-urlencoded").payload
    assert (snapshot["state"], snapshot["object_version"], snapshot["signed_and_sealed"]) == (
        "pending",
        2,
        False,
    )


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (views.instance, f"no flow instance '{INSTANCE}'"),
        (views.document, f"no document '{INSTANCE}'"),
    ],
)
def test_unknown_subject_is_not_found(store: Store, view: object, message: str) -> None:
    with pytest.raises(NotFound) as error:
        view(store, INSTANCE)  # type: ignore[operator]
    assert error.value.to_dict() == {
        "error": {"code": "not_found", "message": message, "details": {"id": INSTANCE}}
    }


@pytest.fixture
def seven(pipeline: Pipeline, clock: Clock) -> Pipeline:
    """Seven instances: 0-2 completed, 3 with an illegal event, 4-6 in progress, 5-6 stale."""
    for n, instance in enumerate(IDS):
        clock.ns = T0 - (10 * DAY * 1_000_000_000 if n >= 5 else 0)
        bodies = [flow("custom", 1, instance)]
        if n <= 3:
            bodies.append(flow("completed", 2, instance))
        if n == 3:
            bodies.append(flow("custom", 3, instance))
        pipeline.ingest([parse_flow(b) for b in bodies])
    clock.ns = T0
    return pipeline


def ids(page: dict[str, object]) -> list[str]:
    return [item["id"] for item in page["items"]]  # type: ignore[attr-defined, index]


def test_pages_walk_every_instance_once(seven: Pipeline, store: Store) -> None:
    seen, cursor, pages = [], None, 0
    while True:
        page = views.instances(store, SubjectFilter(), views.Page(3, cursor))
        seen += ids(page)
        pages += 1
        cursor = page["next"]
        if cursor is None:
            break
    assert (seen, pages) == (IDS, 3)


def test_lists_are_in_the_order_instances_were_first_seen(pipeline: Pipeline, store: Store) -> None:
    first_seen = [IDS[4], IDS[1], IDS[6], IDS[0], IDS[3]]
    for n, instance in enumerate(first_seen):
        pipeline.ingest([parse_flow(flow("custom", 1, instance))])
        if n % 2:  # an anomaly: a late event
            pipeline.ingest([parse_flow(flow("completed", 3, instance))])
            pipeline.ingest([parse_flow(flow("custom", 2, instance))])
    pipeline.ingest([parse_flow(flow("custom", 5, first_seen[0]))])  # seen again: no move
    for where, expected in (
        (SubjectFilter(), first_seen),
        (SubjectFilter(state="in_progress"), first_seen[::2]),
        (SubjectFilter(anomalous=True), first_seen[1::2]),
    ):
        seen, cursor = [], None
        while True:
            page = views.instances(store, where, views.Page(2, cursor))
            seen += ids(page)
            if (cursor := page["next"]) is None:
                break
        assert seen == expected


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (SubjectFilter(), "instances_seq"),
        (SubjectFilter(state="completed"), "instances_state_seq"),
        (SubjectFilter(anomalous=True), "instances_anomalous"),
        (views.stuck_filter(T0, WEEK), "instances_state_seq"),
        # the primary key's range, then a sort of what it found
        (SubjectFilter(id_prefix="0000"), "sqlite_autoindex_instances_1"),
        (SubjectFilter(state="completed", id_prefix="0000"), "sqlite_autoindex_instances_1"),
        (SubjectFilter(anomalous=True, id_prefix="0000"), "sqlite_autoindex_instances_1"),
    ],
)
def test_every_list_filter_reads_an_index(
    sqlite_store: Store, where: SubjectFilter, index: str
) -> None:
    store = sqlite_store  # SQLite's query plans
    statements: list[str] = []
    conn = store.connections._new_reader()
    conn.set_trace_callback(statements.append)
    store.connections._idle_readers.put(conn)
    views.instances(store, where, views.Page(2))
    (sql,) = [s for s in statements if s.startswith("SELECT * FROM instances")]
    plan = " / ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
    assert f"USING INDEX {index} " in plan, plan
    assert ("TEMP B-TREE" in plan) == bool(where.id_prefix), plan


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (SubjectFilter(state="completed"), IDS[:4]),
        (SubjectFilter(state="in_progress"), IDS[4:]),
        (SubjectFilter(anomalous=True), [IDS[3]]),
        (views.stuck_filter(T0, WEEK), IDS[5:]),
        (views.stuck_filter(T0, stuck_age_ns=20 * DAY * 1_000_000_000), []),
        (SubjectFilter(state="cancelled"), []),
    ],
)
def test_filters(seven: Pipeline, store: Store, where: SubjectFilter, expected: list[str]) -> None:
    assert ids(views.instances(store, where, views.Page())) == expected


def test_status_counts_stuck_instances(seven: Pipeline, store: Store) -> None:
    status = summaries.status(store, T0, stuck_age_ns=WEEK, version="1", uptime_seconds=2.5)
    assert (status["stuck"], status["instances"]["in_progress"], status["uptime_seconds"]) == (
        2,
        3,
        2.5,
    )


@pytest.mark.parametrize(
    ("page", "problems"),
    [
        (views.Page(0), {"limit": "must be in 1..500 (got 0)"}),
        (views.Page(501), {"limit": "must be in 1..500 (got 501)"}),
        (views.Page(10, "garbage!"), {"cursor": "not a cursor this API gave out"}),
        (views.Page(10, "WyJhIiwiYiJd"), {"cursor": "not a cursor this API gave out"}),
        # a cursor given out before migration m008 held an instance id
        (views.Page(10, views._encode_cursor([IDS[0]])), {"cursor": NOT_A_CURSOR}),
        (views.Page(10, views._encode_cursor(["1234"])), {"cursor": NOT_A_CURSOR}),
        (views.Page(10, views._encode_cursor(["seq", "9" * 40])), {"cursor": NOT_A_CURSOR}),
        (views.Page(10, views._encode_cursor(["seq", "-1"])), {"cursor": NOT_A_CURSOR}),
    ],
)
def test_bad_page_is_an_invalid_query(
    store: Store, page: views.Page, problems: dict[str, str]
) -> None:
    with pytest.raises(InvalidQuery) as error:
        views.instances(store, SubjectFilter(), page)
    assert error.value.details == problems


def test_documents_list_by_state(pipeline: Pipeline, store: Store) -> None:
    pipeline.ingest(
        [parse_document(document_form("pending", 2), "application/x-www-form-urlencoded")]
    )
    assert ids(views.documents(store, SubjectFilter(state="pending"), views.Page())) == [DOCUMENT]
    assert ids(views.documents(store, SubjectFilter(state="closed"), views.Page())) == []


def quarantine_one(store: Store, body: bytes, at_: str) -> None:
    error = {"code": "invalid_json", "message": "body is not valid JSON", "details": None}
    store.quarantine(Quarantined(body, "application/json", error, "POST /callbacks/flow"), at_)


def test_quarantine_counts_repeats_and_pages_newest_first(store: Store) -> None:
    quarantine_one(store, b"{a", "2027-01-01T00:00:00.000000Z")
    quarantine_one(store, b"\xff\xfe", "2027-01-01T00:00:01.000000Z")
    quarantine_one(store, b"{a", "2027-01-01T00:00:02.000000Z")
    quarantine_one(store, b"{b", "2027-01-01T00:00:03.000000Z")
    first = views.quarantine(store, views.Page(2))
    second = views.quarantine(store, views.Page(2, first["next"]))
    assert [
        (q["body"], q["count"], q["first_seen"][-9:-1]) for q in first["items"] + second["items"]
    ] == [
        ("{b", 1, "3.000000"),
        ("{a", 2, "0.000000"),
        ("\ufffd\ufffd", 1, "1.000000"),
    ]
    assert second["next"] is None


def test_anomalies_lists_illegal_late_and_quarantined(
    pipeline: Pipeline, store: Store, clock: Clock
) -> None:
    pipeline.ingest([parse_flow(flow("cancelled", 5))])
    clock.advance(1)
    pipeline.ingest([parse_flow(flow("completed", 1))])
    quarantine_one(store, b"{a", "2027-01-15T08:00:02.000000Z")
    result = views.anomalies(store)
    assert [
        (e["type"], e["outcome"], e["out_of_order"], e["reason"]) for e in result["events"]
    ] == [
        ("completed", "applied", True, None),
        ("cancelled", "illegal", False, "instance already completed"),
    ]
    assert [q["body"] for q in result["quarantine"]] == ["{a"]
