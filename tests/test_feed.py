"""The change feed (SPEC 11): the change log written with each state change, read by
`GET /changes` and followed live by `GET /feed`, on both backends."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from flowtracker.engine.parsing import parse_line
from flowtracker.errors import CursorExpired
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import changes
from flowtracker.store.protocol import Store
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.conftest import DOCUMENT, INSTANCE, Clock, document_form, document_json, flow
from tests.feeds import Follower, chained, check_chain
from tests.postgres_server import PostgresServer
from tests.server import serving
from tests.test_postgres import _bodies, _post_all
from tests.test_properties import deliveries, document_bodies, flow_bodies, ingested

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
OTHER = "2e3a60ea-80b8-44bb-9e59-c64d8697b959"


def _changes(store: Store) -> list[dict[str, Any]]:
    return json.loads(orjson.dumps(changes.page(store, 0, changes.MAX_LIMIT)))["items"]


def document(status: str, version: int, minute: int = 0) -> bytes:
    """A document callback as a JSON line (`replay`'s form)."""
    made = document_json(status, version, minute)
    return json.dumps({"document_id": DOCUMENT, "document_signed_and_sealed": False,
                       "document_json": made}).encode()  # fmt: skip


def _ingest(store: Store, *bodies: bytes, clock: Clock | None = None) -> None:
    Pipeline(store, clock or Clock()).ingest([parse_line(body) for body in bodies])


def test_one_change_per_state_change_none_for_repeats_and_standstills(any_store: Store) -> None:
    _ingest(any_store, flow("custom", 1))
    _ingest(any_store, flow("custom", 2), flow("custom", 1))  # moves nothing; a duplicate
    _ingest(any_store, flow("cancelled", 5))
    _ingest(any_store, flow("completed", 3))  # late, dated before the cancel: it decides
    found = _changes(any_store)
    assert [(c["previous"], c["state"], c["terminal"], c["correction"]) for c in found] == [
        (None, "in_progress", False, False),
        ("in_progress", "cancelled", True, False),
        ("cancelled", "completed", True, True),
    ]
    assert [c["seq"] for c in found] == [1, 2, 3]
    assert found[2]["event"] == {
        "type": "completed", "event_created": "2021-03-10T16:00:03Z", "outcome": "applied",
    }  # fmt: skip
    assert {c["source"] for c in found} == {"callback"}
    assert {c["kind"] for c in found} == {"flow"} and {c["subject"] for c in found} == {INSTANCE}
    assert any_store.change_clock() == (3, 0)


def test_a_documents_changes_name_its_snapshot(any_store: Store) -> None:
    _ingest(any_store, document("pending", 1), document("closed", 2, 1))
    found = _changes(any_store)
    assert [(c["previous"], c["state"]) for c in found] == [
        (None, "pending"),
        ("pending", "closed"),
    ]
    assert found[1]["event"] == {
        "status": "closed", "object_version": 2, "mtime": "2021-04-05T10:01:00Z",
        "outcome": "applied",
    }  # fmt: skip
    assert found[1]["subject"] == DOCUMENT and found[1]["terminal"] is False


def test_filters_and_paging_of_the_log(any_store: Store) -> None:
    _ingest(any_store, flow("custom", 1), flow("completed", 2), flow("failed", 1, OTHER))
    _ingest(any_store, document("pending", 1))
    assert [c.seq for c in any_store.changes(0, 10, "flow")] == [1, 2, 3]
    assert [c.seq for c in any_store.changes(0, 10, "document")] == [4]
    assert [c.seq for c in any_store.changes(0, 10, subject=OTHER)] == [3]
    assert [c.seq for c in any_store.changes(1, 2)] == [2, 3]
    page = changes.page(any_store, 4, 10)
    assert page == {"items": [], "next": 4}


def test_pruning_keeps_what_a_subscription_is_owed(any_store: Store) -> None:
    clock = Clock()
    for second in range(6):
        _ingest(any_store, flow("custom", 0, f"{second:08d}-0000-4000-8000-000000000000"))
    # 6 changes; a subscription that has had the first 3.
    made = any_store.add_subscription(
        "sub_t",
        "http://127.0.0.1:9/",
        ["flow"],
        "whsec_x",
        from_start=True,
        at="2000-01-01T00:00:00Z",
    )
    assert made.position == 0
    any_store.change_subscription("sub_t", position=3)
    assert any_store.prune_changes("2999-01-01T00:00:00Z", page=2) == 3
    assert any_store.change_clock() == (6, 3)
    with pytest.raises(CursorExpired) as expired:
        changes.page(any_store, 2, 10)
    assert expired.value.details == {"after": 2, "oldest_kept": 4}
    assert [c["seq"] for c in changes.page(any_store, 3, 10)["items"]] == [4, 5, 6]
    # Nothing younger than the retention goes, whoever is owed what.
    any_store.remove_subscription("sub_t")
    assert any_store.prune_changes("2000-01-01T00:00:00Z") == 0
    assert any_store.prune_changes("2999-01-01T00:00:00Z") == 3
    assert any_store.change_clock() == (6, 6)
    _ingest(any_store, flow("custom", 0), clock=clock)  # numbering goes on
    assert [c.seq for c in any_store.changes(6, 10)] == [7]


def test_rebuild_writes_a_change_for_each_state_it_changes(store: SQLiteStore) -> None:
    _ingest(store, flow("custom", 1), flow("completed", 2), flow("failed", 1, OTHER))
    with sqlite3.connect(store.path) as conn:  # as if an older rule had decided otherwise
        conn.execute("UPDATE instances SET state = 'timed_out' WHERE id = ?", (INSTANCE,))
    conn.close()
    Pipeline(store).rebuild()
    rebuilt = [c for c in _changes(store) if c["source"] == "rebuild"]
    assert [(c["subject"], c["previous"], c["state"]) for c in rebuilt] == [
        (INSTANCE, "timed_out", "completed")
    ]
    assert rebuilt[0]["event"]["type"] == "completed"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=deliveries(flow_bodies | document_bodies))
def test_changes_chain_and_end_in_the_current_state_for_any_arrival(
    batches: list[list[bytes]],
) -> None:
    with ingested(batches) as store:
        check_chain(store)


# Over HTTP, against `flowtracker serve` -------------------------------------------------


def _post(url: str, body: bytes, headers: dict[str, str] = JSON) -> None:
    kind = "document" if headers is FORM else "flow"
    answer = httpx.post(f"{url}/callbacks/{kind}", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def test_changes_over_http_page_filter_and_refuse_bad_queries(target: str, tmp_path: Path) -> None:
    with serving(target, "--no-access-log", logs=tmp_path) as server:
        _post(server.url, flow("custom", 1))
        _post(server.url, flow("completed", 2))
        _post(server.url, document_form("pending", 1), FORM)
        first = httpx.get(f"{server.url}/changes?limit=2").json()
        assert [c["seq"] for c in first["items"]] == [1, 2] and first["next"] == 2
        rest = httpx.get(f"{server.url}/changes?after=2").json()
        assert [c["kind"] for c in rest["items"]] == ["document"] and rest["next"] == 3
        only = httpx.get(f"{server.url}/changes", params={"subject": DOCUMENT}).json()
        assert [c["seq"] for c in only["items"]] == [3]
        assert [c["seq"] for c in httpx.get(f"{server.url}/changes?kind=flow").json()["items"]] == [
            1, 2,
        ]  # fmt: skip
        wrong = httpx.get(f"{server.url}/changes?after=-1&limit=0&kind=x")
        assert wrong.status_code == 422
        assert set(wrong.json()["error"]["details"]) == {"after", "limit", "kind"}
        assert httpx.get(f"{server.url}/feed", headers={"Last-Event-ID": "x"}).status_code == 422


def test_a_pruned_cursor_is_410_cursor_expired(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    env = {"FLOWTRACKER_CHANGE_RETENTION": "1s"}  # pruned in the background, every 0.5 s
    with serving(db, "--no-access-log", env=env) as server:
        _post(server.url, flow("custom", 1))
        _post(server.url, flow("completed", 2))
        deadline = time.monotonic() + 20
        while (answer := httpx.get(f"{server.url}/changes?after=0")).status_code == 200:
            assert time.monotonic() < deadline, "nothing was pruned"
            time.sleep(0.2)
        assert answer.status_code == 410
        assert answer.json()["error"]["code"] == "cursor_expired"
        assert answer.json()["error"]["details"] == {"after": 0, "oldest_kept": 3}
        feed = httpx.get(f"{server.url}/feed?after=1")
        assert feed.status_code == 410
        assert httpx.get(f"{server.url}/changes?after=2").json() == {"items": [], "next": 2}


def test_feed_and_changes_need_the_read_token(tmp_path: Path) -> None:
    env = {"FLOWTRACKER_READ_TOKEN": "reader-secret"}
    with serving(tmp_path / "f.db", "--no-access-log", env=env) as server:
        for path in ("/changes", "/feed"):
            assert httpx.get(server.url + path).status_code == 401
        ok = httpx.get(server.url + "/changes", headers={"authorization": "Bearer reader-secret"})
        assert ok.status_code == 200
        follower = Follower(
            server.url + "/feed", headers={"authorization": "Bearer reader-secret"}
        ).start()
        try:
            _post(server.url, flow("custom", 1))
            follower.wait_for(lambda got: len(got) == 1)
        finally:
            follower.stop()
    assert "reader-secret" not in server.output()


def test_feed_resumes_filters_and_keeps_the_connection_alive(target: str, tmp_path: Path) -> None:
    env = {"FLOWTRACKER_FEED_KEEPALIVE": "0.3s"}
    with serving(target, "--no-access-log", "--workers", "2", env=env, logs=tmp_path) as server:
        _post(server.url, flow("custom", 1))
        _post(server.url, flow("completed", 2))
        live = Follower(server.url + "/feed").start()  # no cursor: only what comes next
        by_header = Follower(server.url + "/feed", headers={"Last-Event-ID": "1"}).start()
        by_query = Follower(server.url + "/feed?after=0&kind=flow").start()
        documents = Follower(server.url + f"/feed?subject={DOCUMENT}").start()
        try:
            by_header.wait_for(lambda got: len(got) == 1)
            by_query.wait_for(lambda got: len(got) == 2)
            _post(server.url, document_form("pending", 1), FORM)
            _post(server.url, flow("failed", 1, OTHER))
            live.wait_for(lambda got: len(got) == 2)
            by_header.wait_for(lambda got: len(got) == 3)
            by_query.wait_for(lambda got: len(got) == 3)
            documents.wait_for(lambda got: len(got) == 1)
            assert live.seqs() == [3, 4]
            assert by_header.seqs() == [2, 3, 4]
            assert by_query.seqs() == [1, 2, 4]
            assert [c["subject"] for c in documents.changes] == [DOCUMENT]
            deadline = time.monotonic() + 10
            while live.comments < 2:  # keepalive comments on a quiet feed
                assert time.monotonic() < deadline
                time.sleep(0.1)
        finally:
            for follower in (live, by_header, by_query, documents):
                follower.stop()


def test_two_hundred_open_feeds_all_get_every_change(tmp_path: Path) -> None:
    with serving(tmp_path / "f.db", "--no-access-log") as server:
        followers = [Follower(server.url + "/feed") for _ in range(200)]
        try:
            for follower in followers:
                follower.start()
            metrics = httpx.get(server.url + "/metrics").text
            assert "flowtracker_feed_connections 200.0" in metrics
            for second in range(3):
                _post(server.url, flow(["custom", "custom", "completed"][second], second))
            for follower in followers:
                follower.wait_for(lambda got: len(got) == 2)
                assert [c["state"] for c in follower.changes] == ["in_progress", "completed"]
        finally:
            for follower in followers:
                follower.stop()


def test_a_client_that_stops_reading_is_dropped_and_resumes(tmp_path: Path) -> None:
    env = {"FLOWTRACKER_FEED_BUFFER": "20", "FLOWTRACKER_FEED_SEND_TIMEOUT": "1s"}
    db, count = tmp_path / "f.db", 12_000  # changes of ~500 bytes: more than socket buffers
    lines = tmp_path / "many.jsonl"
    with lines.open("w") as out:
        for n in range(count):
            long_id = f"{n:05d}" + "d" * 190
            out.write(
                json.dumps(
                    {
                        "document_id": long_id,
                        "document_signed_and_sealed": False,
                        "document_json": document_json("pending", 1, id=long_id),
                    }
                )
            )
            out.write("\n")  # fmt: skip
    with serving(db, "--no-access-log", env=env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # takes little, then nothing
        slow.connect(("127.0.0.1", port))
        slow.sendall(b"GET /feed?after=0 HTTP/1.1\r\nhost: x\r\n\r\n")
        other = Follower(server.url + "/feed?after=0").start()
        try:
            # Written by another program: the feeds see it all the same.
            replayed = subprocess.run(
                [sys.executable, "-m", "flowtracker", "replay", str(lines), "--db", str(db)],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert replayed.returncode == 0, replayed.stderr
            other.wait_for(lambda got: len(got) == count, seconds=120)
            deadline = time.monotonic() + 30
            while "flowtracker_feed_connections 1.0" not in httpx.get(server.url + "/metrics").text:
                assert time.monotonic() < deadline, "the slow client was never dropped"
                time.sleep(0.2)
            received = b""
            slow.settimeout(5)
            while chunk := slow.recv(65536):
                received += chunk
            # Whole events only: the last may have been cut short.
            ids = [int(line[4:]) for line in received.split(b"\r\n") if line.startswith(b"id: ")]
            assert ids == list(range(1, len(ids) + 1)) and 0 < len(ids) < count
            last = ids[-2]
            resumed = Follower(server.url + "/feed", headers={"Last-Event-ID": str(last)})
            resumed.start()
            try:
                resumed.wait_for(lambda got: len(got) == count - last, seconds=60)
                assert resumed.seqs() == list(range(last + 1, count + 1))
            finally:
                resumed.stop()
        finally:
            slow.close()
            other.stop()


def test_two_receivers_under_load_feed_every_change_once_in_order(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Receivers commit out of sequence order; a reader following live on either still
    sees every change exactly once, with no gap, and ends in the states of /instances."""
    url = postgres.database(f"feed_receivers_{os.getpid()}")
    bodies = _bodies(150, seed=11)
    failures: list[str] = []
    with (
        serving(url, "--workers", "2", "--no-access-log", logs=tmp_path) as one,
        serving(url, "--workers", "2", "--no-access-log", logs=tmp_path) as two,
    ):
        followers = [Follower(server.url + "/feed?after=0").start() for server in (one, two)]
        try:
            threads = [
                threading.Thread(target=_post_all, args=(server.url, bodies[n::6], failures))
                for n, server in enumerate([one, two] * 3)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert failures == []
            total = httpx.get(one.url + "/changes?limit=1000&after=0").json()
            last = total["next"]
            # Each instance appears, and ends (one change only when its end came first).
            assert 150 < last <= 300 and len(total["items"]) == last
            for follower in followers:
                follower.wait_for(lambda got: len(got) >= last)
                assert follower.seqs() == list(range(1, last + 1))
                states = chained(follower.changes)
                for (_, subject), state in states.items():
                    shown = httpx.get(f"{one.url}/instances/{subject}").json()
                    assert shown["state"] == state
                assert len(states) == 150
        finally:
            for follower in followers:
                follower.stop()
