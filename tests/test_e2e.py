"""End to end: `flowtracker serve` in a subprocess on loopback, spoken to over real HTTP."""

from __future__ import annotations

import base64
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import DATA, flow, sample
from tests.server import Server, serving, stop

pytestmark = pytest.mark.slow
JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded; charset=UTF-8"}
FLOW_TYPES = sorted(p.stem for p in (DATA / "flow").glob("*.json"))
UNSEEN = "00000000-0000-4000-8000-00000000dead"
DEMO = [line for line in (DATA / "demo.jsonl").read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """`flowtracker serve` on each backend in turn: these tests run on both."""
    directory = tmp_path_factory.mktemp("e2e")
    db: Path | str = directory / "e2e.db"
    if request.param == "postgres":
        db = request.getfixturevalue("postgres").database(f"e2e_{os.getpid()}")
    with serving(db, logs=directory) as server:
        yield server


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def post_line(client: httpx.Client, line: bytes) -> httpx.Response:
    """Send one demo line where Scrive would: documents and flows to their endpoints."""
    is_document = b'"document_id"' in line or b'"documentid"' in line
    path = "/callbacks/document" if is_document else "/callbacks/flow"
    return client.post(path, content=line, headers=JSON)


def receipt(outcome: str, instance: str, state: str, reason: str | None = None) -> Any:
    return {"outcome": outcome, "out_of_order": False, "reason": reason,
            "subject": {"kind": "flow", "id": instance, "state": state}}  # fmt: skip


# Sent in name order. Scrive's own samples share instances: 4923... gets the two
# authentication callbacks and the custom one; flow_rejected then timed_out hit 08b9...
SAMPLE_RECEIPTS = {
    "authentication_attempted": receipt(
        "applied", "49235955-29fd-4411-81c3-3222f5c9df30", "in_progress"),
    "authentication_max_failures_exceeded": receipt(
        "applied", "49235955-29fd-4411-81c3-3222f5c9df30", "in_progress"),
    "cancelled": receipt("applied", "21dd7deb-3483-4fdd-bff9-05843a63df57", "cancelled"),
    "completed": receipt("applied", "1e3a60ea-80b8-44bb-9e59-c64d8697b959", "completed"),
    "custom": receipt("applied", "49235955-29fd-4411-81c3-3222f5c9df30", "in_progress"),
    "failed": receipt("applied", "e98d5743-9d1a-4e65-bb77-4e117a5451b1", "failed"),
    "flow_rejected": receipt("applied", "08b9e7d4-d424-4e66-baa4-06ab6635aad6", "rejected"),
    "timed_out": receipt("illegal", "08b9e7d4-d424-4e66-baa4-06ab6635aad6", "rejected",
                         "instance already rejected"),
}  # fmt: skip


@pytest.mark.parametrize("type_", FLOW_TYPES)
def test_every_sample_flow_callback_is_stored(http: httpx.Client, type_: str) -> None:
    body = sample(f"flow/{type_}.json")
    response = http.post("/callbacks/flow", content=body, headers=JSON)
    instance = json.loads(body)["flow_instance_id"]
    assert (response.status_code, response.json()) == (200, SAMPLE_RECEIPTS[type_])
    events = http.get(f"/instances/{instance}").json()["events"]
    assert json.loads(body) in [event["payload"] for event in events]


@pytest.mark.parametrize(
    ("name", "headers", "state"),
    [
        ("pending.form", FORM, "pending"),
        ("pending.json", JSON, "pending"),
        ("prolonged-1-timedout.form", FORM, "timedout"),
        ("prolonged-2-pending.form", FORM, "pending"),
    ],
)
def test_document_callbacks_in_both_encodings(
    http: httpx.Client, name: str, headers: dict[str, str], state: str
) -> None:
    response = http.post("/callbacks/document", content=sample(f"document/{name}"), headers=headers)
    assert response.status_code == 200
    assert response.json()["subject"]["state"] == state


def test_a_duplicate_only_counts_a_delivery(http: httpx.Client) -> None:
    body = flow("custom", 30, "5a1d1d6e-0000-4000-8000-000000000001")
    first = http.post("/callbacks/flow", content=body, headers=JSON).json()
    second = http.post("/callbacks/flow", content=body, headers=JSON).json()
    assert (first["outcome"], second["outcome"]) == ("applied", "duplicate")
    events = http.get("/instances/5a1d1d6e-0000-4000-8000-000000000001").json()["events"]
    assert [e["deliveries"] for e in events] == [2]


def test_the_specs_late_completed_flips_the_state(http: httpx.Client) -> None:
    instance = "5bec0000-0000-4000-8000-000000000001"  # its own instance in the shared db
    cancelled = http.post(
        "/callbacks/flow", content=flow("cancelled", 20, instance), headers=JSON
    ).json()
    completed = http.post(
        "/callbacks/flow", content=flow("completed", 10, instance), headers=JSON
    ).json()
    assert (cancelled["subject"]["state"], completed["subject"]["state"]) == (
        "cancelled",
        "completed",
    )
    view = http.get(f"/instances/{instance}").json()
    assert [(e["type"], e["outcome"], e["out_of_order"], e["reason"]) for e in view["events"]] == [
        ("completed", "applied", True, None),
        ("cancelled", "illegal", False, "instance already completed"),
    ]


def error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "expected"),
    [
        (
            "POST",
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
            "POST",
            "/callbacks/document",
            b"%",
            FORM,
            400,
            error("invalid_form", "body is not a valid url-encoded form: bad query field: '%'"),
        ),
        (
            "GET",
            f"/instances/{UNSEEN}",
            b"",
            {},
            404,
            error("not_found", f"no flow instance '{UNSEEN}'", {"id": UNSEEN}),
        ),
        (
            "PATCH",
            "/callbacks/flow",
            b"",
            {},
            405,
            error(
                "method_not_allowed",
                "PATCH is not allowed on /callbacks/flow (allowed: POST)",
                {"allowed": ["POST"]},
            ),
        ),
        (
            "POST",
            "/callbacks/document",
            b"<xml/>",
            {"content-type": "application/xml"},
            415,
            error(
                "unsupported_media_type",
                "document callbacks are "
                "application/x-www-form-urlencoded or application/json, not application/xml",
            ),
        ),
        (
            "POST",
            "/callbacks/flow",
            b'{"type": "completed", "version": 1}',
            JSON,
            422,
            error(
                "invalid_event",
                "invalid callback: flow_instance_id: required; event_created: required",
                {"flow_instance_id": "required", "event_created": "required"},
            ),
        ),
        (
            "GET",
            "/instances?limit=1000",
            b"",
            {},
            422,
            error(
                "invalid_query",
                "invalid query: limit: must be a whole number in 1..500 (got '1000')",
                {"limit": "must be a whole number in 1..500 (got '1000')"},
            ),
        ),
    ],
)
def test_each_error_code_with_its_exact_body(
    http: httpx.Client,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    expected: dict[str, Any],
) -> None:
    response = http.request(method, path, content=body, headers=headers)
    assert (response.status_code, response.json()) == (status, expected)
    assert response.headers["content-type"] == "application/json"


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))


def test_a_huge_body_is_refused_while_streaming(http: httpx.Client, server: Server) -> None:
    sent, rss_before = 0, rss_kb(server.process.pid)

    def endless() -> Iterator[bytes]:
        nonlocal sent
        chunk = b"x" * 65_536
        while sent < 1_073_741_824:  # would be 1 GiB if the server kept reading
            sent += len(chunk)
            yield chunk

    try:
        response = http.post("/callbacks/flow", content=endless(), headers=JSON)
        assert (response.status_code, response.json()["error"]["code"]) == (
            413,
            "payload_too_large",
        )
    except httpx.TransportError:
        pass  # the server may close the connection while we are still sending
    assert sent < 64 * 1024 * 1024
    assert rss_kb(server.process.pid) - rss_before < 32 * 1024
    assert http.get("/healthz").status_code == 200
    kept = http.get("/quarantine").json()["items"]
    assert any(
        q["error"]["code"] == "payload_too_large" and len(q["body"]) == 1024 * 1024 for q in kept
    )


def test_pagination_across_pages(http: httpx.Client) -> None:
    prefix = "9a9e0000-0000-4000-8000-"
    ids = [f"{prefix}{n:012d}" for n in range(7)]
    for instance in ids:
        http.post("/callbacks/flow", content=flow("timed_out", 1, instance), headers=JSON)
    seen, cursor = [], None
    while True:
        params = {"state": "timed_out", "limit": "3", **({"cursor": cursor} if cursor else {})}
        page = http.get("/instances", params=params).json()
        seen += [item["id"] for item in page["items"] if item["id"].startswith(prefix)]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ids


def test_openapi_is_served(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert (document["openapi"], document["info"]["title"]) == ("3.1.0", "flowtracker")


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"scrive:{password}".encode()).decode()


def test_tokens_guard_the_endpoints_and_stay_out_of_the_log(tmp_path: Path) -> None:
    env = {"FLOWTRACKER_CALLBACK_TOKEN": "cb-T0ken-xyz", "FLOWTRACKER_READ_TOKEN": "rd-T0ken"}
    with (
        serving(tmp_path / "auth.db", "--callback-log", env=env) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        post = lambda url, **kw: http.post(url, content=flow("custom", 1), headers={**JSON, **kw})  # noqa: E731
        assert post("/callbacks/flow").status_code == 401
        assert post("/callbacks/flow?token=nope").status_code == 401
        assert post("/callbacks/flow?token=cb-T0ken-xyz").status_code == 200
        assert post("/callbacks/flow", authorization=basic("cb-T0ken-xyz")).status_code == 200
        assert post("/callbacks/flow", authorization="Bearer cb-T0ken-xyz").status_code == 200
        assert post("/callbacks/flow", authorization="Bearer rd-T0ken").status_code == 401
        assert http.get("/status").status_code == 401
        assert (
            http.get("/status", headers={"authorization": "Bearer cb-T0ken-xyz"}).status_code == 401
        )
        assert http.get("/status", headers={"authorization": "Bearer rd-T0ken"}).status_code == 200
        assert http.get("/healthz").status_code == 200
    log = server.output()
    assert "token=[redacted]" in log
    assert "cb-T0ken-xyz" not in log and "rd-T0ken" not in log


def test_open_service_warns_at_startup(server: Server) -> None:
    log = server.output()
    assert "WARNING:  FLOWTRACKER_CALLBACK_TOKEN is not set" in log
    assert "WARNING:  FLOWTRACKER_READ_TOKEN is not set" in log


def deliver_all(url: str, lines: list[bytes], threads: int) -> list[int]:
    def send(chunk: list[bytes]) -> list[int]:
        with httpx.Client(base_url=url, timeout=60) as client:
            return [post_line(client, line).status_code for line in chunk]

    chunks = [lines[i::threads] for i in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        return [status for statuses in pool.map(send, chunks) for status in statuses]


def snapshot(url: str) -> dict[str, Any]:
    """Every subject's state and history, and the totals: what two runs must agree on."""
    with httpx.Client(base_url=url, timeout=30) as client:
        status = client.get("/status").json()
        found: dict[str, Any] = {
            "callbacks": status["callbacks"],
            "instances": status["instances"],
            "documents": status["documents"],
        }
        for kind, key in (("instances", "events"), ("documents", "snapshots")):
            page: dict[str, Any] = {"next": ""}
            while page["next"] is not None:
                page = client.get(f"/{kind}", params={"limit": 500, "cursor": page["next"]}).json()
                for item in page["items"]:
                    view = client.get(f"/{kind}/{item['id']}").json()
                    found[item["id"]] = (
                        view["state"],
                        [
                            (
                                json.dumps(e["payload"], sort_keys=True),
                                e["outcome"],
                                e["reason"],
                                e["deliveries"],
                            )
                            for e in view[key]
                        ],
                    )
    return found


def test_two_workers_agree_with_one(tmp_path: Path) -> None:
    deliveries = DEMO * 2  # every line twice: the same instance arrives at both workers
    random.Random(7).shuffle(deliveries)
    with serving(tmp_path / "one.db") as one:
        assert set(deliver_all(one.url, deliveries, threads=1)) == {200}
        expected = snapshot(one.url)
    with serving(tmp_path / "two.db", "--workers", "2") as two:
        assert set(deliver_all(two.url, deliveries, threads=8)) == {200}
        got = snapshot(two.url)
    assert got == expected
    assert expected["callbacks"]["duplicate"] == len(deliveries) - len(set(deliveries))


def test_sigterm_finishes_in_flight_callbacks(tmp_path: Path) -> None:
    db = tmp_path / "term.db"
    bodies = [flow("custom", n, f"7e57e000-0000-4000-8000-{n:012d}") for n in range(400)]
    acknowledged: list[bytes] = []
    lock = threading.Lock()
    with serving(db) as server:

        def send(chunk: list[bytes]) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                for body in chunk:
                    try:
                        response = client.post("/callbacks/flow", content=body, headers=JSON)
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        with lock:
                            acknowledged.append(body)

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(send, bodies[i::8]) for i in range(8)]
            while len(acknowledged) < 50:
                time.sleep(0.01)
            # uvicorn shuts down gracefully, then re-raises SIGTERM: exit status -15.
            assert stop(server) in (0, -15)
            for future in futures:
                future.result()
        assert server.output().splitlines()[-2:] == [
            "INFO:     Application shutdown complete.",
            f"INFO:     Finished server process [{server.process.pid}]",
        ]
    stored = sqlite3.connect(db).execute("SELECT body FROM flow_events").fetchall()
    assert {row[0] for row in stored} >= set(acknowledged)


def test_a_trickled_body_is_cut_off_by_the_body_timeout(tmp_path: Path) -> None:
    import socket

    with serving(tmp_path / "slow.db", env={"FLOWTRACKER_BODY_TIMEOUT": "1"}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            head = b"POST /callbacks/flow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            conn.sendall(head + b"Content-Type: application/json\r\n\r\n")
            started, answer = time.monotonic(), b""
            for byte in b'{"type": "completed", ':  # a byte every 0.2 s, never finishing
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    break
                conn.settimeout(0.2)
                try:
                    answer += conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:  # reset after the answer: the server closed the connection
                    break
                if answer:
                    break
            took = time.monotonic() - started
            conn.settimeout(5)
            try:
                while chunk := conn.recv(4096):  # the server closes the connection after it
                    answer += chunk
            except OSError:  # closed with a reset: the unsent rest of our body was refused
                pass
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"code":"request_timeout"' in answer
        assert 0.9 < took < 5
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/healthz").status_code == 200
            kept = http.get("/quarantine").json()["items"]
        # what arrived before the timeout is kept: a few bytes, depending on timing
        assert [q["error"]["code"] for q in kept] == ["request_timeout"]
        assert kept[0]["body"] and '{"type": "completed", '.startswith(kept[0]["body"])
