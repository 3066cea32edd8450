"""The HTTP contract, in process (Starlette's TestClient): endpoints, errors, auth."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from flowtracker import __version__
from flowtracker.settings import Settings
from flowtracker.web import create_app
from flowtracker.web.auth import RedactTokens
from flowtracker.web.callbacks import _route_path
from tests.conftest import DOCUMENT, INSTANCE, document_form, flow, sample

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"}


@pytest.fixture
def settings(target: str) -> Settings:
    """A new database on each backend: every test here runs on SQLite and PostgreSQL."""
    return Settings(db_path=target)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def receipt(
    outcome: str,
    state: str,
    *,
    late: bool = False,
    reason: str | None = None,
    kind: str = "flow",
    id_: str = INSTANCE,
) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "out_of_order": late,
        "reason": reason,
        "subject": {"kind": kind, "id": id_, "state": state},
    }


def test_flow_callback_is_answered_with_its_receipt(client: TestClient) -> None:
    response = client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    assert (response.status_code, response.json()) == (200, receipt("applied", "completed"))


def test_the_specs_late_completed_example_over_http(client: TestClient) -> None:
    client.post("/callbacks/flow", content=flow("cancelled", 20), headers=JSON)
    response = client.post("/callbacks/flow", content=flow("completed", 10), headers=JSON)
    again = client.post("/callbacks/flow", content=flow("cancelled", 20), headers=JSON)
    assert response.json() == receipt("applied", "completed", late=True)
    assert again.json() == receipt("duplicate", "completed")
    events = client.get(f"/instances/{INSTANCE}").json()["events"]
    assert [(e["type"], e["outcome"], e["reason"], e["deliveries"]) for e in events] == [
        ("completed", "applied", None, 1),
        ("cancelled", "illegal", "instance already completed", 2),
    ]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (sample("document/pending.form"), FORM),
        (sample("document/pending.json"), JSON),
    ],
)
def test_document_callback_in_either_encoding(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> None:
    response = client.post("/callbacks/document", content=body, headers=headers)
    document_id = "9221714692413150898"
    assert response.json() == receipt("applied", "pending", kind="document", id_=document_id)
    other = FORM if headers is JSON else JSON
    twin = sample("document/pending.json" if headers is FORM else "document/pending.form")
    again = client.post("/callbacks/document", content=twin, headers=other)
    assert again.json() == receipt("duplicate", "pending", kind="document", id_=document_id)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "expected"),
    [
        (
            "/callbacks/flow",
            b"{",
            JSON,
            400,
            error(
                "invalid_json",
                "body is not valid JSON: Expecting property name enclosed in "
                "double quotes: line 1 column 2 (char 1)",
            ),
        ),
        (
            "/callbacks/document",
            b"a=1&&b",
            FORM,
            400,
            error("invalid_form", "body is not a valid url-encoded form: bad query field: ''"),
        ),
        (
            "/callbacks/flow",
            flow("completed"),
            {"content-type": "text/plain"},
            415,
            error("unsupported_media_type", "Flow callbacks are application/json, not text/plain"),
        ),
        (
            "/callbacks/flow",
            flow("completed"),
            {},
            415,
            error("unsupported_media_type", "Flow callbacks are application/json, not unspecified"),
        ),
        (
            "/callbacks/flow",
            json.dumps(
                {
                    "type": "failed",
                    "version": 1,
                    "flow_instance_id": "e98d5743",
                    "event_created": "2021-03-15T13:43:67.4589254893Z",
                }
            ).encode(),
            JSON,
            422,
            error(
                "invalid_event",
                "invalid callback: flow_instance_id: must be a UUID (8-4-4-4-12 "
                "hexadecimal digits); event_created: second must be in 0..59 (got 67)",
                {
                    "flow_instance_id": "must be a UUID (8-4-4-4-12 hexadecimal digits)",
                    "event_created": "second must be in 0..59 (got 67)",
                },
            ),
        ),
        (
            "/callbacks/document",
            document_form("pending", 1).replace(b"document_id=9", b"document_id=8"),
            FORM,
            422,
            error(
                "invalid_event",
                "invalid callback: document_json.id: must equal document_id "
                "('8221714692413150898'), got '9221714692413150898'",
                {
                    "document_json.id": "must equal document_id ('8221714692413150898'), got "
                    "'9221714692413150898'"
                },
            ),
        ),
    ],
)
def test_malformed_callbacks_get_their_error_and_are_quarantined(
    client: TestClient,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    expected: dict[str, Any],
) -> None:
    response = client.post(path, content=body, headers=headers)
    assert (response.status_code, response.json()) == (status, expected)
    kept = client.get("/quarantine").json()["items"]
    assert [(q["body"], q["error"], q["source"], q["count"]) for q in kept] == [
        (body.decode(), expected["error"], f"POST {path}", 1)
    ]


def test_a_body_over_the_limit_is_refused_and_its_start_kept(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "x.db"), max_body=100)
    with TestClient(create_app(settings)) as client:
        big = flow("custom", 1, callback_name="x" * 200)
        response = client.post("/callbacks/flow", content=big, headers=JSON)
        assert (response.status_code, response.json()) == (
            413,
            error("payload_too_large", "the body is over the limit of 100 bytes", {"limit": 100}),
        )
        kept = client.get("/quarantine").json()["items"]
        assert [len(q["body"]) for q in kept] == [100]
        just_fits = client.post("/callbacks/flow", content=b"x" * 100, headers=JSON)
        assert just_fits.status_code == 400  # read whole, then found not JSON


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/callbacks/flow", ["POST"]),
        ("PUT", "/callbacks/document", ["POST"]),
        ("DELETE", "/instances", ["GET", "HEAD"]),
        ("POST", "/status", ["GET", "HEAD"]),
    ],
)
def test_wrong_method(client: TestClient, method: str, path: str, allowed: list[str]) -> None:
    response = client.request(method, path)
    assert (response.status_code, response.json(), response.headers["allow"]) == (
        405,
        error(
            "method_not_allowed",
            f"{method} is not allowed on {path} (allowed: {', '.join(allowed)})",
            {"allowed": allowed},
        ),
        ", ".join(allowed),
    )


def test_unknown_path_and_unknown_instance_are_not_found(client: TestClient) -> None:
    assert client.get("/nope").json() == error("not_found", "no such path: /nope")
    response = client.get(f"/instances/{INSTANCE}")
    assert (response.status_code, response.json()) == (
        404,
        error("not_found", f"no flow instance '{INSTANCE}'", {"id": INSTANCE}),
    )
    assert client.get(f"/documents/{DOCUMENT}").status_code == 404


@pytest.mark.parametrize(
    ("query", "message", "details"),
    [
        ("limit=0", "invalid query: limit: must be a whole number in 1..500 (got '0')",
         {"limit": "must be a whole number in 1..500 (got '0')"}),
        (
            "limit=x&state=zz&stuck=maybe",
            "invalid query: state: must be one of in_progress, completed, failed, cancelled, "
            "rejected, timed_out; stuck: must be true or false; limit: must be a whole number "
            "in 1..500 (got 'x')",
            {
                "state": "must be one of in_progress, completed, failed, cancelled, rejected, "
                "timed_out",
                "stuck": "must be true or false",
                "limit": "must be a whole number in 1..500 (got 'x')",
            },
        ),
        ("cursor=bogus", "invalid query: cursor: not a cursor this API gave out",
         {"cursor": "not a cursor this API gave out"}),
    ],
)  # fmt: skip
def test_bad_list_queries(
    client: TestClient, query: str, message: str, details: dict[str, str]
) -> None:
    response = client.get(f"/instances?{query}")
    assert (response.status_code, response.json()) == (
        422, error("invalid_query", message, details))  # fmt: skip


def test_pages_of_instances(client: TestClient) -> None:
    ids = [f"00000000-0000-4000-8000-{n:012d}" for n in range(5)]
    for n, instance in enumerate(ids):
        kind = "completed" if n % 2 else "custom"
        client.post("/callbacks/flow", content=flow(kind, 1, instance), headers=JSON)
    seen, url = [], "/instances?limit=2"
    while url:
        page = client.get(url).json()
        seen += [item["id"] for item in page["items"]]
        url = f"/instances?limit=2&cursor={page['next']}" if page["next"] else ""
    assert seen == ids
    done = client.get("/instances?state=completed").json()
    assert [item["id"] for item in done["items"]] == ids[1::2]


def test_status_and_healthz(client: TestClient) -> None:
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    client.post("/callbacks/flow", content=b"{", headers=JSON)
    status = client.get("/status").json()
    assert status.pop("uptime_seconds") > 0
    assert status.pop("last_callback_at").startswith("20")
    assert status == {
        "version": __version__,
        "callbacks": {"applied": 1, "illegal": 0, "ignored": 0, "duplicate": 1},
        "out_of_order": 0,
        "quarantined": 1,
        "pruned": {"flow": 0, "document": 0},
        "instances": {"in_progress": 0, "completed": 1, "failed": 0, "cancelled": 0,
                      "rejected": 0, "timed_out": 0},
        "documents": {"preparation": 0, "awaiting_start": 0, "pending": 0, "closed": 0,
                      "canceled": 0, "rejected": 0, "timedout": 0, "document_error": 0},
        "stuck": 0,
    }  # fmt: skip
    assert client.get("/healthz").json() == {"status": "ok"}


def test_quarantine_counts_a_repeated_bad_body(client: TestClient) -> None:
    for _ in range(3):
        client.post("/callbacks/flow", content=b"{", headers=JSON)
    items = client.get("/quarantine").json()["items"]
    assert [(item["body"], item["count"]) for item in items] == [("{", 3)]
    assert items[0]["first_seen"] <= items[0]["last_seen"]


def test_list_filters_over_http(settings: Settings) -> None:
    old, new = "01d00000-0000-4000-8000-000000000000", "0e000000-0000-4000-8000-000000000000"
    app = create_app(settings.but(stuck_age_seconds=3600))
    with TestClient(app) as client:
        client.post("/callbacks/flow", content=flow("custom", 1, old), headers=JSON)
        client.post("/callbacks/flow", content=flow("cancelled", 9, new), headers=JSON)
        client.post("/callbacks/flow", content=flow("completed", 5, new), headers=JSON)
        client.post("/callbacks/document", content=document_form("pending", 2), headers=FORM)
        mark = "%s" if settings.db_path.startswith("postgresql://") else "?"
        with client.app.state.runtime.store.transaction() as tx:  # type: ignore[attr-defined]
            tx.conn.execute("UPDATE instances SET last_received_at = '2000-01-01T00:00:00Z', "
                            f"received_hour = 262968 WHERE id = {mark}", (old,))  # fmt: skip

        def ids(url: str) -> list[str]:
            return [item["id"] for item in client.get(url).json()["items"]]

        assert ids("/instances?stuck=true") == [old]
        assert ids("/instances?anomalous=true") == [new]
        assert ids("/instances?state=completed&anomalous=1") == [new]
        assert ids("/instances?state=in_progress&stuck=false") == [old]
        assert ids("/documents?state=pending") == [DOCUMENT]
        assert ids("/documents?state=closed") == []
        anomalies = client.get("/anomalies").json()
        assert [(e["type"], e["outcome"], e["out_of_order"]) for e in anomalies["events"]] == [
            ("completed", "applied", True), ("cancelled", "illegal", False)]  # fmt: skip


def test_openapi_names_every_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert sorted(document["paths"]) == sorted(
        [
            "/callbacks/flow",
            "/callbacks/document",
            "/instances",
            "/instances/{instance_id}",
            "/documents",
            "/documents/{document_id}",
            "/status",
            "/anomalies",
            "/quarantine",
            "/quarantine/retry",
            "/quarantine/{id}/retry",
            "/quarantine/{id}",
            "/changes",
            "/feed",
            "/healthz",
            "/metrics",
            "/openapi.json",
        ]
    )


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"scrive:{password}".encode()).decode()


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        db_path=str(tmp_path / "locked.db"), callback_token="s3cret", read_token="r3ad"
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {}, 401),
        ("?token=wrong", {}, 401),
        ("?token=s3cret", {}, 200),
        ("", {"authorization": "Bearer s3cret"}, 200),
        ("", {"authorization": "Bearer r3ad"}, 401),
        ("", {"authorization": basic("s3cret")}, 200),
        ("", {"authorization": basic("wrong")}, 401),
        ("", {"authorization": "Basic !!!"}, 401),
    ],
)
def test_callback_token(
    locked: TestClient, query: str, headers: dict[str, str], status: int
) -> None:
    response = locked.post(
        f"/callbacks/flow{query}", content=flow("completed"), headers={**JSON, **headers}
    )
    assert response.status_code == status
    if status == 401:
        assert response.json() == error(
            "unauthorized",
            "a valid callback token is required (?token=, HTTP Basic password or Bearer)",
        )
        assert response.headers["www-authenticate"] == 'Bearer realm="flowtracker"'


def test_unauthenticated_callbacks_are_not_quarantined(locked: TestClient) -> None:
    locked.post("/callbacks/flow", content=b"{", headers=JSON)
    page = locked.get("/quarantine", headers={"authorization": "Bearer r3ad"}).json()
    assert page == {"items": [], "next": None}


@pytest.mark.parametrize(
    "path",
    [
        "/instances",
        f"/instances/{INSTANCE}",
        "/documents",
        "/status",
        "/anomalies",
        "/quarantine",
        f"/documents/{DOCUMENT}",
        "/metrics",
    ],
)
def test_read_token_closes_every_read_endpoint(locked: TestClient, path: str) -> None:
    assert locked.get(path).json() == error(
        "unauthorized", "a valid read token is required (Authorization: Bearer)"
    )
    assert locked.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 401
    found = locked.get(path, headers={"authorization": "Bearer r3ad"}).status_code
    assert found == (404 if path.count("/") == 2 else 200)  # nothing is stored: ids unknown


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
def test_health_and_openapi_stay_open(locked: TestClient, path: str) -> None:
    assert locked.get(path).status_code == 200


def test_storage_failure_is_503_with_retry_after(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import psycopg

    from flowtracker.store.postgres.transaction import PostgresTransaction
    from flowtracker.store.sqlite.backend import SQLiteTransaction

    postgres = settings.db_path.startswith("postgresql://")
    said = "could not extend file: No space left on device" if postgres else (
        "database or disk is full"
    )  # fmt: skip

    def full(*args: object) -> None:
        raise (psycopg.errors.DiskFull if postgres else sqlite3.OperationalError)(said)

    monkeypatch.setattr(
        PostgresTransaction if postgres else SQLiteTransaction, "put_subjects", full
    )
    response = client.post("/callbacks/flow", content=flow("completed"), headers=JSON)
    assert (response.status_code, response.headers["retry-after"], response.json()) == (
        503,
        "30",
        error("storage_unavailable", f"the database cannot write now: {said}"),
    )
    monkeypatch.undo()
    assert client.get(f"/instances/{INSTANCE}").status_code == 404  # nothing half-written
    retried = client.post("/callbacks/flow", content=flow("completed"), headers=JSON)
    assert retried.json() == receipt("applied", "completed")


def test_a_trailing_slash_is_not_found_not_redirected(client: TestClient) -> None:
    response = client.post("/callbacks/flow/", content=flow("completed"), headers=JSON)
    assert (response.status_code, response.json()) == (
        404,
        error("not_found", "no such path: /callbacks/flow/"),
    )


RANGE = (
    "must be between 1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z "
    "(nanoseconds stored in 64 bits)"
)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (flow("completed").replace(b"2021-03-10", b"2300-03-10"), 422, error(
            "invalid_event", f"invalid callback: event_created: {RANGE}",
            {"event_created": RANGE})),
        (flow("completed", version=2**63), 422, error(
            "invalid_event", "invalid callback: version: must fit in 64 bits (a signed integer)",
            {"version": "must fit in 64 bits (a signed integer)"})),
        (flow("custom").replace(b'"my-callback"', b'"\\ud800"'), 400, error(
            "invalid_json", "body holds a lone UTF-16 surrogate, which UTF-8 cannot carry")),
        (flow("custom", extra=1e308).replace(b"1e+308", b"1e400"), 400, error(
            "invalid_json", "body is not valid JSON: number 1e400 is out of range")),
    ],
)  # fmt: skip
def test_values_that_cannot_be_stored_and_served_back_are_refused(
    client: TestClient, body: bytes, status: int, expected: dict[str, Any]
) -> None:
    response = client.post("/callbacks/flow", content=body, headers=JSON)
    assert (response.status_code, response.json()) == (status, expected)
    assert client.get("/quarantine").json()["items"][0]["body"] == body.decode()
    assert client.get(f"/instances/{INSTANCE}").status_code == 404


def test_a_non_ascii_digit_limit_is_an_invalid_query(client: TestClient) -> None:
    response = client.get("/instances?limit=²")
    assert (response.status_code, response.json()["error"]["details"]) == (
        422,
        {"limit": "must be a whole number in 1..500 (got '²')"},
    )


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/callbacks/flow?token=s3cret", "/callbacks/flow?token=[redacted]"),
        ("/callbacks/flow?a=1&%74oken=s3cret", "/callbacks/flow?a=1&%74oken=[redacted]"),
        ("/callbacks/flow?TOKEN=s3cret&x=2", "/callbacks/flow?TOKEN=[redacted]&x=2"),
        ("/callbacks/flow?tokens=kept", "/callbacks/flow?tokens=kept"),
        ("/callbacks/flow?token=abc;tail&x=1", "/callbacks/flow?token=[redacted]&x=1"),
    ],
)
def test_the_access_log_never_shows_a_token_however_it_is_spelled(path: str, shown: str) -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "POST", path, "1.1", 200), None,
    )  # fmt: skip
    assert RedactTokens().filter(record)
    assert record.args == ("127.0.0.1:1", "POST", shown, "1.1", 200)


@pytest.mark.parametrize(
    ("path", "root_path", "route"),
    [
        ("/callbacks/flow", "", "/callbacks/flow"),
        ("/api/callbacks/flow", "/api", "/callbacks/flow"),
        ("/apix/callbacks/flow", "/api", "/apix/callbacks/flow"),  # not below the root
        ("/xyz/callbacks/flow", "/api", "/xyz/callbacks/flow"),
        ("/api", "/api", "/api"),
    ],
)
def test_callback_routes_are_matched_below_the_root_path(
    path: str, root_path: str, route: str
) -> None:
    assert _route_path({"type": "http", "path": path, "root_path": root_path}) == route
