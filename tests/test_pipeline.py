"""The ingest pipeline against a real SQLite file: dedup, order, refold, atomicity."""

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flowtracker.engine.parsing import parse_document, parse_flow
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import StorageUnavailable, UnusableDatabase
from flowtracker.ingest.interface import Receipt
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import summaries, views
from flowtracker.store.sqlite.backend import SQLiteStore, SQLiteTransaction
from flowtracker.store.sqlite.connection import BACKSTOP_PAGES, Checkpointer
from tests.conftest import DOCUMENT, INSTANCE, Clock, at, document_form, flow

FORM = "application/x-www-form-urlencoded"
OTHER = "08b9e7d4-d424-4e66-baa4-06ab6635aad6"


def send(pipeline: Pipeline, *bodies: bytes) -> list[Receipt]:
    """Deliver each body in its own batch, as separate HTTP requests would."""
    return [pipeline.ingest([parse_flow(body)])[0] for body in bodies]


def send_documents(pipeline: Pipeline, *bodies: bytes) -> list[Receipt]:
    return [pipeline.ingest([parse_document(body, FORM)])[0] for body in bodies]


def history(store: SQLiteStore, instance: str = INSTANCE) -> list[tuple[Any, ...]]:
    return [
        (
            e["type"],
            e["event_created"],
            e["outcome"],
            e["reason"],
            e["out_of_order"],
            e["deliveries"],
        )
        for e in views.instance(store, instance)["events"]
    ]


def test_the_specs_late_completed_example(pipeline: Pipeline, store: SQLiteStore) -> None:
    receipts = send(pipeline, flow("cancelled", 20), flow("completed", 10))
    assert [r.to_dict() for r in receipts] == [
        {
            "outcome": "applied",
            "out_of_order": False,
            "reason": None,
            "subject": {"kind": "flow", "id": INSTANCE, "state": "cancelled"},
        },
        {
            "outcome": "applied",
            "out_of_order": True,
            "reason": None,
            "subject": {"kind": "flow", "id": INSTANCE, "state": "completed"},
        },
    ]
    assert history(store) == [
        ("completed", at(10), "applied", None, True, 1),
        ("cancelled", at(20), "illegal", "instance already completed", False, 1),
    ]
    summary = views.instance(store, INSTANCE)
    assert (summary["state"], summary["terminal"], summary["anomalies"]) == ("completed", True, 2)


def test_duplicate_only_counts_a_delivery(
    pipeline: Pipeline, store: SQLiteStore, clock: Clock
) -> None:
    send(pipeline, flow("custom", 1))
    first = views.instance(store, INSTANCE)
    clock.advance(60)
    receipts = send(pipeline, flow("custom", 1))
    assert receipts == [Receipt("duplicate", False, None, "flow", INSTANCE, "in_progress")]
    again = views.instance(store, INSTANCE)
    assert again["events"][0].pop("deliveries") == 2
    assert again["events"][0].pop("last_delivery_at") == "2027-01-15T08:01:00.000000Z"
    del first["events"][0]["deliveries"], first["events"][0]["last_delivery_at"]
    assert again == first


def test_duplicate_of_a_late_event_reports_it_late(pipeline: Pipeline) -> None:
    send(pipeline, flow("custom", 9), flow("custom", 1))
    assert send(pipeline, flow("custom", 1))[0].out_of_order is True


def test_equal_times_are_not_out_of_order(pipeline: Pipeline, store: SQLiteStore) -> None:
    receipts = send(pipeline, flow("custom", 5), flow("custom", 5, callback_name="other"))
    assert [r.out_of_order for r in receipts] == [False, False]
    assert views.instance(store, INSTANCE)["anomalies"] == 0


def test_unknown_type_and_version_are_ignored(pipeline: Pipeline, store: SQLiteStore) -> None:
    receipts = send(pipeline, flow("signatory_opened", 1), flow("completed", 2, version=2))
    assert [(r.outcome, r.reason, r.state) for r in receipts] == [
        ("ignored", "unknown callback type 'signatory_opened'", "in_progress"),
        ("ignored", "unsupported version 2", "in_progress"),
    ]


def test_terminal_instance_takes_auth_and_repeats_but_not_custom(pipeline: Pipeline) -> None:
    receipts = send(
        pipeline,
        flow("completed", 1),
        flow("completed", 2),
        flow("authentication_attempted", 3),
        flow("custom", 4),
        flow("flow_rejected", 5),
    )
    assert [(r.outcome, r.reason) for r in receipts] == [
        ("applied", None),
        ("applied", None),
        ("applied", None),
        ("illegal", "instance already completed"),
        ("illegal", "instance already completed"),
    ]


def test_instances_are_independent(pipeline: Pipeline, store: SQLiteStore) -> None:
    send(pipeline, flow("completed", 1), flow("timed_out", 2, instance=OTHER))
    assert [views.instance(store, i)["state"] for i in (INSTANCE, OTHER)] == [
        "completed",
        "timed_out",
    ]


def test_one_batch_equals_one_by_one(tmp_path: Path, clock: Clock) -> None:
    bodies = [
        flow("custom", 5),
        flow("completed", 9),
        flow("custom", 5),
        flow("cancelled", 3),
        flow("authentication_attempted", 1),
        flow("completed", 9),
        flow("failed", 7),
    ]
    results = []
    for name, batched in (("one.db", False), ("batch.db", True)):
        store = SQLiteStore(tmp_path / name)
        pipeline = Pipeline(store, clock)
        callbacks = [parse_flow(b) for b in bodies]
        receipts = (
            pipeline.ingest(callbacks) if batched else [pipeline.ingest([c])[0] for c in callbacks]
        )
        results.append((receipts, views.instance(store, INSTANCE)))
        store.close()
    assert results[0] == results[1]
    assert results[0][1]["state"] == "cancelled"


def test_documents_follow_object_version(pipeline: Pipeline, store: SQLiteStore) -> None:
    receipts = send_documents(
        pipeline,
        document_form("pending", 3, 1),
        document_form("closed", 7, 9, sealed=True),
        document_form("pending", 5, 4),  # late: lands between the two
        document_form("pending", 8, 10),  # later, but a closed document cannot go back
    )
    assert [(r.outcome, r.out_of_order, r.reason, r.state) for r in receipts] == [
        ("applied", False, None, "pending"),
        ("applied", False, None, "closed"),
        ("applied", True, None, "closed"),
        ("illegal", False, "document is closed; pending is not reachable from closed", "closed"),
    ]
    view = views.document(store, DOCUMENT)
    del view["snapshots"]
    assert view == {
        "id": DOCUMENT,
        "state": "closed",
        "final": False,
        "object_version": 7,
        "signed_and_sealed": True,
        "title": "Lease agreement",
        "mtime": "2021-04-05T10:09:00Z",
        "last_received_at": "2027-01-15T08:00:00.000000Z",
        "snapshot_count": 4,
        "anomalies": 2,
        "unknown_to_scrive_at": None,
    }


def test_prolong_keeps_object_version(pipeline: Pipeline, store: SQLiteStore) -> None:
    receipts = send_documents(
        pipeline,
        document_form("pending", 4, 5),
        document_form("timedout", 4, 6),
        document_form("pending", 4, 7),
    )
    assert [(r.outcome, r.state) for r in receipts] == [
        ("applied", "pending"),
        ("applied", "timedout"),
        ("applied", "pending"),
    ]


def test_first_snapshot_is_applied_whatever_its_status(pipeline: Pipeline) -> None:
    receipts = send_documents(
        pipeline, document_form("closed", 9, 1), document_form("preparation", 1, 0)
    )
    assert [(r.outcome, r.out_of_order, r.state) for r in receipts] == [
        ("applied", False, "closed"),
        ("applied", True, "closed"),
    ]


def test_dedup_survives_a_restart(db_path: Path, clock: Clock) -> None:
    store = SQLiteStore(db_path)
    send(Pipeline(store, clock), flow("completed", 1))
    send_documents(Pipeline(store, clock), document_form("pending", 1))
    store.close()
    store = SQLiteStore(db_path)
    pipeline = Pipeline(store, clock)
    assert send(pipeline, flow("completed", 1))[0].outcome == "duplicate"
    assert send_documents(pipeline, document_form("pending", 1))[0].outcome == "duplicate"
    store.close()


@pytest.mark.parametrize("failing", ["add_entries", "set_verdicts", "redeliver", "put_subjects"])
def test_a_crash_inside_the_transaction_writes_nothing(
    pipeline: Pipeline, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    send(pipeline, flow("cancelled", 20), flow("custom", 1))
    before = (
        views.instance(store, INSTANCE),
        summaries.status(store, 0, stuck_age_ns=1, version="x", uptime_seconds=None),
    )

    def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(SQLiteTransaction, failing, crash)
    batch = [
        parse_flow(b)
        for b in (flow("completed", 10), flow("custom", 1), flow("completed", 1, instance=OTHER))
    ]
    with pytest.raises(RuntimeError):
        pipeline.ingest(batch)
    monkeypatch.undo()
    assert (
        views.instance(store, INSTANCE),
        summaries.status(store, 0, stuck_age_ns=1, version="x", uptime_seconds=None),
    ) == before
    assert store.subject_history("flow", OTHER) is None


def test_rebuild_gives_the_states_ingest_gave(pipeline: Pipeline, store: SQLiteStore) -> None:
    send(
        pipeline,
        flow("cancelled", 20),
        flow("completed", 10),
        flow("custom", 1),
        flow("failed", 3, instance=OTHER),
    )
    send_documents(pipeline, document_form("closed", 7, 9), document_form("pending", 3, 1))
    before = [
        views.instance(store, INSTANCE),
        views.instance(store, OTHER),
        views.document(store, DOCUMENT),
    ]
    assert pipeline.rebuild() == {
        "subjects": 3,
        "events": 6,
        "changed_outcomes": 0,
        "changed_states": 0,
    }
    assert [
        views.instance(store, INSTANCE),
        views.instance(store, OTHER),
        views.document(store, DOCUMENT),
    ] == before


def test_rebuild_repairs_a_state_that_disagrees_with_the_events(
    pipeline: Pipeline, store: SQLiteStore
) -> None:
    send(pipeline, flow("cancelled", 20), flow("completed", 10))
    before = views.instance(store, INSTANCE)
    with store.transaction() as tx:
        tx.conn.execute("UPDATE instances SET state = 'failed', anomalies = 0")
        tx.conn.execute("UPDATE flow_events SET outcome = 'applied', reason = NULL")
    assert pipeline.rebuild() == {
        "subjects": 1,
        "events": 2,
        "changed_outcomes": 1,
        "changed_states": 1,
    }
    assert views.instance(store, INSTANCE) == before


def test_empty_batch_is_a_no_op(pipeline: Pipeline) -> None:
    assert pipeline.ingest([]) == []


class _Checkpoints:
    """A connection's checkpoints as the checkpointer sees them: the WAL's size each time."""

    def __init__(self, frames: list[int]) -> None:
        self.frames = frames

    def execute(self, sql: str) -> Any:
        assert sql == "PRAGMA wal_checkpoint(PASSIVE)"
        frames = self.frames.pop(0) if self.frames else 0
        return type("Row", (), {"fetchone": lambda _: (0, frames, frames)})()

    def close(self) -> None:
        pass


def test_the_checkpointer_turns_eager_past_half_the_backstop(monkeypatch: Any) -> None:
    waits: list[float] = []
    checkpointer = Checkpointer.__new__(Checkpointer)
    checkpointer.conn = _Checkpoints([10, BACKSTOP_PAGES // 2 + 1, BACKSTOP_PAGES, 10])
    checkpointer.seconds = 0.5

    class Written:  # a commit before every checkpoint
        def wait(self) -> bool:
            return True

        def clear(self) -> None:
            pass

    class Closing:
        def wait(self, seconds: float) -> bool:  # the waits between checkpoints, recorded
            waits.append(seconds)
            return len(waits) > 4

    checkpointer._written = Written()  # type: ignore[assignment]
    checkpointer._closing = Closing()  # type: ignore[assignment]
    checkpointer._run()
    eager = Checkpointer.EAGER_SECONDS
    assert waits == [0.5, 0.5, eager, eager, 0.5]


def test_the_wal_is_copied_back_by_the_checkpointer_not_by_commits(db_path: Path) -> None:
    store = SQLiteStore(db_path, checkpoint_seconds=0.01)
    try:
        autocheckpoint = store.connections._writer.execute("PRAGMA wal_autocheckpoint")
        assert autocheckpoint.fetchone()[0] == BACKSTOP_PAGES
        store.connections._writer.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        )  # the baseline, by hand
        before = db_path.stat().st_size
        pipeline = Pipeline(store)
        pipeline.ingest([parse_flow(flow("custom", n, str(uuid.UUID(int=n)))) for n in range(500)])
        deadline = time.monotonic() + 30
        while db_path.stat().st_size <= before:  # the pages reach the file only by a checkpoint
            assert time.monotonic() < deadline, "nothing was checkpointed"
            time.sleep(0.01)
    finally:
        store.close()
    assert not store.connections._checkpointer._thread.is_alive()


def test_an_update_assigns_indexed_columns_only_when_they_change(store: SQLiteStore) -> None:
    # Assigning a column, even its own value, rewrites its index entries: a page at a
    # random place per instance and commit, for the partial index of anomalous instances.
    pipeline = Pipeline(store)
    send(pipeline, flow("custom", 5), flow("custom", 3))  # late: one anomaly
    statements: list[str] = []
    store.connections._writer.set_trace_callback(statements.append)
    try:
        send(pipeline, flow("custom", 7))  # same state, same anomalies
        same = [s for s in statements if s.startswith("UPDATE instances")]
        statements.clear()
        send(pipeline, flow("custom", 1))  # late again: the count changes
        counted = [s for s in statements if s.startswith("UPDATE instances")]
        statements.clear()
        send(pipeline, flow("completed", 9))  # the state changes, the count does not
        moved = [s for s in statements if s.startswith("UPDATE instances")]
    finally:
        store.connections._writer.set_trace_callback(None)
    assert len(same) == 1 and "anomalies" not in same[0] and " state" not in same[0]
    assert len(counted) == 1 and "anomalies = 2" in counted[0] and " state" not in counted[0]
    assert len(moved) == 1 and "state = 'completed'" in moved[0] and "anomalies" not in moved[0]
    assert views.instance(store, INSTANCE)["anomalies"] == 2
    assert views.instance(store, INSTANCE)["state"] == "completed"
    assert views.instances(store, views.SubjectFilter(anomalous=True), views.Page(10))["items"] == [
        views.instances(store, views.SubjectFilter(), views.Page(10))["items"][0]
    ]


def test_the_last_callback_time_is_the_latest_arrival_and_survives_a_rebuild(
    pipeline: Pipeline, store: SQLiteStore, clock: Clock
) -> None:
    def last() -> str | None:
        return summaries.status(store, 0, stuck_age_ns=1, version="", uptime_seconds=None)[
            "last_callback_at"
        ]

    assert last() is None
    send(pipeline, flow("custom", 1))
    clock.advance(60)
    send(pipeline, flow("custom", 1))  # a duplicate is a callback too
    latest = format_ns(clock.ns)
    assert last() == latest
    clock.advance(-3600)  # the clock stepped back
    send(pipeline, flow("custom", 2))
    assert last() == latest
    pipeline.rebuild()
    assert last() == latest


@pytest.mark.parametrize("kinds", ["flow, document", "document, flow", "document"])
def test_a_database_from_before_the_last_callback_counter_gets_it(
    db_path: Path, kinds: str
) -> None:
    clock = Clock()
    store = SQLiteStore(db_path)
    for kind in kinds.split(", "):  # the last one is the latest
        if kind == "flow":
            send(Pipeline(store, clock), flow("custom", 1))
        else:
            send_documents(Pipeline(store, clock), document_form("pending", 1))
        clock.advance(5)
    clock.advance(-5)
    store.close()
    with sqlite3.connect(db_path) as conn:  # as it was before migration m007
        conn.execute("DELETE FROM counters WHERE name = 'last_callback_ns'")
        for table in ("flow_events", "document_snapshots"):
            conn.execute(f"CREATE INDEX idx_{table}_last_delivery_at ON {table}(last_delivery_at)")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm007_last_callback_counter'")
    store = SQLiteStore(db_path)
    try:
        assert summaries.status(store, 0, stuck_age_ns=1, version="", uptime_seconds=None)[
            "last_callback_at"
        ] == format_ns(clock.ns)
        indexes = [
            row[0] for row in store.connections._writer.execute("SELECT name FROM sqlite_master")
        ]
        assert not [name for name in indexes if "last_delivery_at" in name]
    finally:
        store.close()


def test_subjects_are_numbered_in_the_order_they_are_first_seen(
    pipeline: Pipeline, store: SQLiteStore
) -> None:
    # Their events' keys are kept in that order: new subjects' keys go to the end.
    order = [str(uuid.UUID(int=n * 7919 % 1000)) for n in range(1, 6)]
    pipeline.ingest([parse_flow(flow("custom", 1, instance)) for instance in order[:3]])
    send(pipeline, flow("custom", 2, order[0]), flow("custom", 1, order[3]))
    send(pipeline, flow("custom", 1, order[4]), flow("custom", 3, order[1]))
    conn = store.connections._writer
    assert [r[0] for r in conn.execute("SELECT id FROM instances ORDER BY seq")] == order
    assert [r[0] for r in conn.execute("SELECT seq FROM instances ORDER BY seq")] == [1, 2, 3, 4, 5]
    keys = conn.execute(
        "SELECT e.instance_id, k.subject_seq FROM flow_event_keys k "
        "JOIN flow_events e ON e.id = k.event_id"
    ).fetchall()
    assert len(keys) == 7
    assert {tuple(key) for key in keys} == {(instance, n + 1) for n, instance in enumerate(order)}


def test_a_database_from_before_the_event_keys_gets_them(db_path: Path, clock: Clock) -> None:
    store = SQLiteStore(db_path)
    pipeline = Pipeline(store, clock)
    send(pipeline, flow("custom", 5), flow("custom", 1, OTHER), flow("completed", 9))
    send_documents(pipeline, document_form("pending", 1), document_form("closed", 2))
    before = views.instance(store, INSTANCE), views.document(store, DOCUMENT)
    store.close()
    with sqlite3.connect(db_path) as conn:  # as it was before migration m008
        for subjects, events, keys, columns in (
            ("instances", "flow_events", "flow_event_keys", "instance_id, event_ns"),
            ("documents", "document_snapshots", "document_snapshot_keys",
             "document_id, object_version, mtime_ns"),
        ):  # fmt: skip
            conn.execute(f"DROP TABLE {keys}")
            for index in ("seq", "state_seq", "anomalous", "received_hour"):  # m014 too
                conn.execute(f"DROP INDEX {subjects}_{index}")
            conn.execute(f"ALTER TABLE {subjects} DROP COLUMN seq")
            conn.execute(f"CREATE INDEX idx_{subjects}_state_id ON {subjects} (state, id)")
            conn.execute(f"CREATE INDEX {subjects}_anomalous ON {subjects}(id) WHERE anomalies > 0")
            index = f"idx_{events}_{columns.replace(', ', '_')}_dedup_key"
            conn.execute(f"CREATE UNIQUE INDEX {index} ON {events} ({columns}, dedup_key)")
        conn.execute(
            "DELETE FROM _sqlite_migrations WHERE name = 'm008_events_keyed_by_subject_order'"
        )
    store = SQLiteStore(db_path)
    try:
        assert (views.instance(store, INSTANCE), views.document(store, DOCUMENT)) == before
        pipeline = Pipeline(store, clock)
        # a repeat is still known, and a late event still refolds what was stored before
        assert [r.outcome for r in send(pipeline, flow("custom", 5))] == ["duplicate"]
        late = send(pipeline, flow("custom", 3))[0]
        assert (late.outcome, late.out_of_order, late.state) == ("applied", True, "completed")
        new = str(uuid.UUID(int=3))
        assert [r.outcome for r in send(pipeline, flow("custom", 1, new))] == ["applied"]
        seqs = store.connections._writer.execute(
            "SELECT id, seq FROM instances ORDER BY seq"
        ).fetchall()
        assert [seq for _, seq in seqs] == [1, 2, 3] and seqs[-1][0] == new
        assert len(views.instance(store, INSTANCE)["events"]) == 3
    finally:
        store.close()


def test_the_event_keys_migration_stops_at_an_event_without_its_subject(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    send(Pipeline(store), flow("custom", 1))
    store.close()
    with sqlite3.connect(db_path) as conn:  # before m008, an event whose instance is gone
        conn.execute("DROP TABLE flow_event_keys")
        conn.execute("DROP TABLE document_snapshot_keys")
        for subjects in ("instances", "documents"):
            for index in ("seq", "state_seq", "anomalous", "received_hour"):  # m014 too
                conn.execute(f"DROP INDEX {subjects}_{index}")
            conn.execute(f"ALTER TABLE {subjects} DROP COLUMN seq")
        conn.execute("DELETE FROM instances")
        conn.execute(
            "DELETE FROM _sqlite_migrations WHERE name = 'm008_events_keyed_by_subject_order'"
        )
    with pytest.raises(StorageUnavailable, match="1 rows of flow_events have no row in instances"):
        SQLiteStore(db_path)
    with sqlite3.connect(db_path) as conn:  # left as it was
        columns = [row[1] for row in conn.execute("PRAGMA table_info(instances)")]
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    assert "seq" not in columns and "flow_event_keys" not in tables


def test_a_database_a_newer_flowtracker_migrated_is_refused(db_path: Path) -> None:
    SQLiteStore(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
            "VALUES ('flowtracker', 'm999_from_the_future', '2030-01-01')"
        )
    for access in ("read", "write", "create"):
        with pytest.raises(
            UnusableDatabase, match=r"migrated by a newer flowtracker \(m999_from_the_future\)"
        ):
            SQLiteStore(db_path, access=access)
