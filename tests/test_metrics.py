"""GET /metrics: the database's totals and the request latency, in Prometheus text format."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from flowtracker import __version__
from flowtracker.engine.timestamps import parse_timestamp
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.settings import Settings
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.web import create_app
from tests.conftest import DOCUMENT, INSTANCE, document_form, flow
from tests.server import serving

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
OTHER = "2c9a3b1e-5d6f-4a7b-8c9d-0e1f2a3b4c5d"
THIRD = "3d0b4c2f-6e7a-4b8c-9d0e-1f2a3b4c5d6e"
FLOW, DOC = "/callbacks/flow", "/callbacks/document"
# (path, body, headers): what each does is in the comment
DELIVERIES = [
    (FLOW, flow("completed", 1), JSON),  # applied
    (FLOW, flow("completed", 1), JSON),  # duplicate
    (FLOW, flow("cancelled", 20, OTHER), JSON),  # applied; illegal once the next arrives
    (FLOW, flow("completed", 10, OTHER), JSON),  # applied, out of order
    (FLOW, flow("mystery", 5, THIRD), JSON),  # ignored: an unknown type
    (DOC, document_form("closed", 2, 5), FORM),  # applied
    (DOC, document_form("pending", 1, 1), FORM),  # applied, out of order
    (FLOW, b"{", JSON),  # 400, quarantined
    (FLOW, b"{", JSON),  # 400, the same body: quarantined once
    (DOC, b"document_id=1", FORM),  # 422, quarantined
]
# By the outcome each delivery got on arrival: the cancelled one counts as applied for ever.
CALLBACKS = {
    ("flow", "applied"): 3,
    ("flow", "illegal"): 0,
    ("flow", "ignored"): 1,
    ("flow", "duplicate"): 1,
    ("document", "applied"): 2,
    ("document", "illegal"): 0,
    ("document", "ignored"): 0,
    ("document", "duplicate"): 0,
}
INSTANCES = {
    ("in_progress",): 1,
    ("completed",): 2,
    ("failed",): 0,
    ("cancelled",): 0,
    ("rejected",): 0,
    ("timed_out",): 0,
}
DOCUMENTS = {
    ("preparation",): 0,
    ("awaiting_start",): 0,
    ("pending",): 0,
    ("closed",): 1,
    ("canceled",): 0,
    ("rejected",): 0,
    ("timedout",): 0,
    ("document_error",): 0,
}
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(text: str) -> Samples:
    """Every sample of a scrape: {sample name: {sorted labels: value}}."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def values(found: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """One metric's samples keyed by the values of `labels`, in that order."""
    return {
        tuple(dict(key)[label] for label in labels): value
        for key, value in found.get(name, {}).items()
    }


def database_totals(found: Samples) -> dict[str, object]:
    """What /metrics reads from the database (the same whichever process answers)."""
    return {
        "callbacks": values(found, "flowtracker_callbacks_total", "kind", "outcome"),
        "out_of_order": values(found, "flowtracker_out_of_order_total", "kind"),
        "quarantined": found["flowtracker_quarantined_total"][()],
        "quarantined_bodies": found["flowtracker_quarantined_bodies"][()],
        "instances": values(found, "flowtracker_instances", "state"),
        "documents": values(found, "flowtracker_documents", "state"),
        "stuck": found["flowtracker_stuck_instances"][()],
    }


EXPECTED = {
    "callbacks": CALLBACKS,
    "out_of_order": {("flow",): 1, ("document",): 1},
    "quarantined": 3,
    "quarantined_bodies": 2,
    "instances": INSTANCES,
    "documents": DOCUMENTS,
    "stuck": 0,
}


@pytest.fixture
def client(target: str) -> Iterator[TestClient]:
    """The app on each backend in turn."""
    with TestClient(create_app(Settings(db_path=target))) as client:
        yield client


@pytest.fixture
def delivered(client: TestClient) -> TestClient:
    for path, body, headers in DELIVERIES:
        client.post(path, content=body, headers=headers)
    return client


def test_the_database_totals_after_known_callbacks(delivered: TestClient) -> None:
    response = delivered.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert database_totals(scrape(response.text)) == EXPECTED


def test_the_totals_are_those_of_status(delivered: TestClient) -> None:
    found = scrape(delivered.get("/metrics").text)
    status = delivered.get("/status").json()
    arrived = {
        outcome: sum(n for (_, o), n in CALLBACKS.items() if o == outcome)
        for outcome in ("applied", "illegal", "ignored", "duplicate")
    }
    # /status has today's outcomes: the late completed made the cancelled one illegal.
    assert status["callbacks"] == {**arrived, "applied": arrived["applied"] - 1, "illegal": 1}
    assert (status["out_of_order"], status["quarantined"]) == (2, 2)
    # int / int as the service divides: correctly rounded, where ns / 1e9 may be one ulp off
    last = parse_timestamp(status["last_callback_at"]).ns / 1_000_000_000
    assert found["flowtracker_last_callback_timestamp_seconds"] == {(): last}


def test_an_empty_database(client: TestClient) -> None:
    found = scrape(client.get("/metrics").text)
    assert database_totals(found) == {
        "callbacks": dict.fromkeys(CALLBACKS, 0),
        "out_of_order": {("flow",): 0, ("document",): 0},
        "quarantined": 0,
        "quarantined_bodies": 0,
        "instances": dict.fromkeys(INSTANCES, 0),
        "documents": dict.fromkeys(DOCUMENTS, 0),
        "stuck": 0,
    }
    assert "flowtracker_last_callback_timestamp_seconds" not in found


@pytest.mark.slow
def test_a_quiet_in_progress_instance_is_stuck(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "stuck.db"), stuck_age_seconds=1)
    with TestClient(create_app(settings)) as client:
        client.post(FLOW, content=flow("custom", 1), headers=JSON)
        time.sleep(1.1)
        found = scrape(client.get("/metrics").text)
    assert found["flowtracker_stuck_instances"] == {(): 1}


def test_the_latency_histogram_counts_every_request_by_route_template(
    delivered: TestClient,
) -> None:
    delivered.get(f"/instances/{INSTANCE}")
    delivered.get(f"/instances/{OTHER}")
    delivered.get("/instances/no-such-instance")
    delivered.get(f"/documents/{DOCUMENT}")
    delivered.get("/no/such/path")
    delivered.request("BREW", "/status")
    delivered.get("/metrics")  # observed once answered: in the next scrape, not its own
    found = scrape(delivered.get("/metrics").text)
    counts = values(
        found, "flowtracker_http_request_duration_seconds_count", "route", "method", "status"
    )
    assert counts == {
        (FLOW, "POST", "2xx"): 5,
        (FLOW, "POST", "4xx"): 2,
        (DOC, "POST", "2xx"): 2,
        (DOC, "POST", "4xx"): 1,
        ("/instances/{instance_id}", "GET", "2xx"): 2,
        ("/instances/{instance_id}", "GET", "4xx"): 1,
        ("/documents/{document_id}", "GET", "2xx"): 1,
        ("unmatched", "GET", "4xx"): 1,
        ("/status", "other", "4xx"): 1,
        ("/metrics", "GET", "2xx"): 1,
    }
    buckets = found["flowtracker_http_request_duration_seconds_bucket"]
    inf = {key: n for key, n in buckets.items() if ("le", "+Inf") in key}
    assert sorted(inf.values()) == sorted(counts.values())  # every request in some bucket


def test_several_apps_in_one_process_keep_their_own_metrics(tmp_path: Path) -> None:
    one = create_app(Settings(db_path=str(tmp_path / "one.db")))
    two = create_app(Settings(db_path=str(tmp_path / "two.db")))
    with TestClient(one) as first, TestClient(two) as second:
        first.post(FLOW, content=flow("completed", 1), headers=JSON)
        found = [scrape(client.get("/metrics").text) for client in (first, second)]
    flows = [values(f, "flowtracker_http_request_duration_seconds_count", "route") for f in found]
    assert flows == [{(FLOW,): 1}, {}]
    callbacks = [values(f, "flowtracker_callbacks_total", "kind", "outcome") for f in found]
    assert [c[("flow", "applied")] for c in callbacks] == [1, 0]


def test_the_app_restarts_with_its_registry(tmp_path: Path) -> None:
    app = create_app(Settings(db_path=str(tmp_path / "again.db")))
    for expected in (1, 2):  # the store's collector is registered again on each start
        with TestClient(app) as client:
            client.post(FLOW, content=flow("custom", expected), headers=JSON)
            found = scrape(client.get("/metrics").text)
        assert values(found, "flowtracker_instances", "state")[("in_progress",)] == 1
        callbacks = values(found, "flowtracker_callbacks_total", "kind", "outcome")
        assert callbacks[("flow", "applied")] == expected


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "Bearer cb-token"}, 401),  # the callback token does not read
        ({"authorization": "Basic cmVhZDpyZWFkLXRva2Vu"}, 401),  # read:read-token, not Bearer
        ({"authorization": "Bearer read-token"}, 200),
    ],
)
def test_the_read_token_guards_metrics(
    tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    settings = Settings(
        db_path=str(tmp_path / "locked.db"), callback_token="cb-token", read_token="read-token"
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {
            "error": {
                "code": "unauthorized",
                "message": "a valid read token is required (Authorization: Bearer)",
                "details": None,
            }
        }
        assert response.headers["www-authenticate"] == 'Bearer realm="flowtracker"'
    else:
        assert "flowtracker_callbacks_total" in scrape(response.text)


def test_metrics_are_open_without_a_read_token(client: TestClient) -> None:
    assert client.get("/metrics").status_code == 200


@pytest.mark.slow
def test_two_workers_serve_the_same_database_totals(tmp_path: Path) -> None:
    """Every answer has the database's totals, whichever worker gives it; the latency
    histogram is each worker's own (told apart here by its callbacks' latency sum)."""
    with serving(tmp_path / "workers.db", "--workers", "2", "--no-access-log") as server:
        for path, body, headers in DELIVERIES:  # a new connection each: spread over workers
            httpx.post(server.url + path, content=body, headers=headers, timeout=30)
        workers: set[object] = set()
        for _ in range(200):
            found = scrape(httpx.get(server.url + "/metrics", timeout=30).text)
            assert database_totals(found) == EXPECTED
            sums = values(found, "flowtracker_http_request_duration_seconds_sum", "route")
            workers.add(sums.get((FLOW,)))
            if len(workers) == 2:
                break
    assert len(workers) == 2, "one worker answered every scrape"


def test_a_database_from_before_the_arrival_counters_starts_them_from_its_outcomes(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    settings = Settings(db_path=str(db))
    with TestClient(create_app(settings)) as client:
        for path, body, headers in DELIVERIES:
            client.post(path, content=body, headers=headers)
    with sqlite3.connect(db) as conn:  # as it was before migration m006
        conn.execute("DELETE FROM counters WHERE name GLOB 'arrived.*'")
        conn.execute("DELETE FROM counters WHERE name = 'quarantine.requests'")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm006_arrival_counters'")
    with TestClient(create_app(settings)) as client:
        found = database_totals(scrape(client.get("/metrics").text))
    # Only today's outcomes were kept: the cancelled one counts as illegal from now on.
    assert found == {
        **EXPECTED,
        "callbacks": {**CALLBACKS, ("flow", "applied"): 2, ("flow", "illegal"): 1},
    }


def test_a_rebuild_keeps_the_counters_that_only_grow(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "rebuilt.db"))
    with TestClient(create_app(settings)) as client:
        for path, body, headers in DELIVERIES:
            client.post(path, content=body, headers=headers)
        store = SQLiteStore(settings.db_path)
        try:
            Pipeline(store).rebuild()
        finally:
            store.close()
        assert database_totals(scrape(client.get("/metrics").text)) == EXPECTED


def test_answers_by_status_the_build_and_what_retention_pruned(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "m.db"), callback_token="cb", max_body=64)
    with TestClient(create_app(settings)) as client:
        client.post(FLOW + "?token=cb", content=flow("completed", 1), headers=JSON)  # 413
        client.post(FLOW, content=b"{}", headers=JSON)  # 401
        client.post(FLOW + "?token=cb", content=b"{}", headers={"content-type": "text/csv"})
        client.get("/instances/nope")  # 404
        families = {
            family.name: family
            for family in text_string_to_metric_families(client.get("/metrics").text)
        }
    answers = {s.labels["status"]: s.value for s in families["flowtracker_http_responses"].samples
               if s.name.endswith("_total")}  # fmt: skip
    assert {"401": 1.0, "413": 1.0, "415": 1.0, "404": 1.0}.items() <= answers.items()
    (build,) = families["flowtracker_build_info"].samples
    assert build.labels == {"version": __version__} and build.value == 1.0
    pruned = {s.labels["kind"]: s.value for s in families["flowtracker_pruned"].samples}
    assert pruned == {"flow": 0.0, "document": 0.0}
