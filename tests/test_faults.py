"""Storage faults: nothing half-written, the service says 503 and recovers by itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from flowtracker.engine.parsing import parse_flow
from flowtracker.errors import StorageUnavailable
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.settings import Settings
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.web import create_app
from tests.conftest import INSTANCE, Clock, flow

JSON = {"content-type": "application/json"}


class FailingCommit:
    """Wraps the writer connection; its next COMMIT fails with `error`."""

    def __init__(self, conn: sqlite3.Connection, error: str) -> None:
        self.conn, self.error, self.armed = conn, error, True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.armed:
            self.armed = False
            raise sqlite3.OperationalError(self.error)
        return self.conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.mark.parametrize(
    "fault", ["database or disk is full", "attempt to write a readonly database", "disk I/O error"]
)
def test_a_failed_commit_is_rolled_back_and_writes_go_on(db_path: Path, fault: str) -> None:
    store = SQLiteStore(db_path)
    real = store.connections._writer
    store.connections._writer = FailingCommit(real, fault)  # type: ignore[assignment]
    pipeline = Pipeline(store, Clock())
    with pytest.raises(StorageUnavailable) as error:
        pipeline.ingest([parse_flow(flow("completed", 1))])
    assert error.value.message == f"the database cannot write now: {fault}"
    assert not real.in_transaction
    assert store.subject_history("flow", INSTANCE) is None
    assert pipeline.ingest([parse_flow(flow("completed", 1))])[0].outcome == "applied"
    other = SQLiteStore(db_path)  # the lock was released: another process can write
    other.close()
    store.close()


def test_a_database_locked_past_the_busy_timeout_is_503_then_recovers(db_path: Path) -> None:
    settings = Settings(db_path=str(db_path), busy_timeout_ms=50, retry_after_seconds=7)
    with TestClient(create_app(settings)) as client:
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        response = client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
        assert (response.status_code, response.headers["retry-after"]) == (503, "7")
        assert response.json() == {"error": {
            "code": "storage_unavailable",
            "message": "the database cannot write now: database is locked",
            "details": None,
        }}  # fmt: skip
        health = client.get("/healthz")
        assert (health.status_code, health.json()["error"]["code"]) == (
            503,
            "storage_unavailable",
        )
        blocker.execute("ROLLBACK")
        blocker.close()
        assert client.get("/healthz").json() == {"status": "ok"}
        again = client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
        assert again.json()["outcome"] == "applied"


def test_reads_see_one_snapshot(pipeline: Pipeline, store: SQLiteStore) -> None:
    pipeline.ingest([parse_flow(flow("custom", n)) for n in range(3)])
    view = views.instance(store, INSTANCE)
    assert view["event_count"] == len(view["events"]) == 3


def test_another_process_holding_the_write_lock_past_the_timeout_is_503(db_path: Path) -> None:
    import fcntl
    import os

    store = SQLiteStore(db_path, busy_timeout_ms=30)
    other = os.open(f"{db_path}.lock", os.O_RDWR)  # as another worker would hold it
    fcntl.flock(other, fcntl.LOCK_EX)
    with pytest.raises(StorageUnavailable) as error:
        Pipeline(store, Clock()).ingest([parse_flow(flow("completed", 1))])
    assert error.value.message == ("the database cannot write now: another process holds its lock")
    fcntl.flock(other, fcntl.LOCK_UN)
    os.close(other)
    assert Pipeline(store, Clock()).ingest([parse_flow(flow("completed", 1))])[0].outcome == (
        "applied"
    )
    store.close()
