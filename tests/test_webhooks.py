"""Webhooks (SPEC 12): subscriptions made with `flowtracker webhooks`, deliveries from
`flowtracker serve` to a real receiver on loopback that verifies every signature with the
`standardwebhooks` library, through failures, kills and a second receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from standardwebhooks import Webhook

from tests.conftest import DOCUMENT, document_form, flow
from tests.feeds import chained
from tests.postgres_server import PostgresServer
from tests.server import serving

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
FAST = {"FLOWTRACKER_WEBHOOK_BACKOFF": "0.1s,0.2s", "FLOWTRACKER_WEBHOOK_POLL": "0.3s"}


@dataclass
class Receiver:
    """A webhook endpoint: keeps what it is sent; answers `failing` times 500 first."""

    failing: int = 0
    delay: float = 0.0
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]

    def delivered(self) -> list[dict[str, Any]]:
        """The changes answered 2xx, once each (a change may come twice, never zero times)."""
        seen: dict[int, dict[str, Any]] = {}
        for headers, body in self.got:
            if headers.get("answered") == "200":
                change = json.loads(body)["data"]
                seen.setdefault(change["seq"], change)
        return [seen[seq] for seq in sorted(seen)]

    def wait_for(self, count: int, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while len(self.delivered()) < count:
            assert time.monotonic() < deadline, f"delivered only {len(self.delivered())}"
            time.sleep(0.05)


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            time.sleep(receiver.delay)
            headers = {k.lower(): v for k, v in self.headers.items()}
            failing = receiver.failing > 0
            receiver.failing -= failing
            headers["answered"] = "500" if failing else "200"
            receiver.got.append((headers, body))
            self.send_response(500 if failing else 204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}/hooks/flowtracker"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def webhooks(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "flowtracker", "webhooks", *args],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip


def add(db: Path | str, url: str, *extra: str) -> dict[str, Any]:
    made = webhooks("add", url, "--db", str(db), "--json", *extra)
    assert made.returncode == 0, made.stderr
    found: dict[str, Any] = json.loads(made.stdout)
    return found


def listed(db: Path | str) -> dict[str, dict[str, Any]]:
    shown = webhooks("list", "--db", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    return {s["id"]: s for s in json.loads(shown.stdout)}


def verified(receiver: Receiver, *secrets: str) -> None:
    """Every request verifies with each of `secrets`, as a subscriber would check it."""
    for headers, body in receiver.got:
        for secret in secrets:
            Webhook(secret).verify(body, headers)


def post(url: str, body: bytes, headers: dict[str, str] = JSON) -> None:
    kind = "document" if headers is FORM else "flow"
    answer = httpx.post(f"{url}/callbacks/{kind}", content=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text


def test_every_change_is_delivered_signed_in_order(target: str, tmp_path: Path) -> None:
    with receiving(Receiver()) as receiver:
        made = add(target, receiver.url, "--from-start")
        assert made["secret"].startswith("whsec_") and len(made["secret"]) == 6 + 44
        with serving(target, "--no-access-log", env=FAST, logs=tmp_path) as server:
            post(server.url, flow("custom", 1))
            post(server.url, document_form("pending", 1), FORM)
            post(server.url, flow("completed", 2))
            post(server.url, flow("completed", 2))  # a duplicate: no change
            receiver.wait_for(3)
            states = {
                subject: state for (_, subject), state in chained(receiver.delivered()).items()
            }
            assert states == {
                json.loads(flow("custom", 1))["flow_instance_id"]: "completed",
                DOCUMENT: "pending",
            }
            shown = listed(target)[made["id"]]
            output = server.output()
        verified(receiver, made["secret"])
        bodies = receiver.bodies()
        assert [b["type"] for b in bodies] == ["state.changed"] * 3
        assert [h["webhook-id"] for h, _ in receiver.got] == ["chg_1", "chg_2", "chg_3"]
        assert {h["content-type"] for h, _ in receiver.got} == {"application/json"}
        assert (shown["delivered_seq"], shown["lag"], shown["delivered"]) == (3, 0, 3)
        assert "secret" not in shown and made["secret"] not in output


def test_a_failing_endpoint_is_retried_with_the_same_id_until_it_answers(
    tmp_path: Path,
) -> None:
    db = tmp_path / "f.db"
    with receiving(Receiver(failing=3)) as receiver:
        made = add(db, receiver.url)
        with serving(db, "--no-access-log", env=FAST) as server:
            post(server.url, flow("custom", 1))
            post(server.url, flow("completed", 2))
            receiver.wait_for(2)
            shown = listed(db)[made["id"]]
        ids = [h["webhook-id"] for h, _ in receiver.got]
        assert ids == ["chg_1"] * 4 + ["chg_2"]  # held up in order, never skipped
        stamps = [int(h["webhook-timestamp"]) for h, _ in receiver.got]
        assert stamps == sorted(stamps)
        verified(receiver, made["secret"])
        assert (shown["failed"], shown["delivered"], shown["failures_in_a_row"]) == (3, 2, 0)
        assert shown["last_status"] == 204


def test_a_subscription_for_one_kind_gets_only_that_kind(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with receiving(Receiver()) as receiver:
        made = add(db, receiver.url, "--kind", "document")
        with serving(db, "--no-access-log", env=FAST) as server:
            post(server.url, flow("custom", 1))
            post(server.url, document_form("pending", 1), FORM)
            post(server.url, flow("completed", 2))
            receiver.wait_for(1)
            deadline = time.monotonic() + 20
            while listed(db)[made["id"]]["delivered_seq"] < 3:  # the flows skipped past
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert [c["kind"] for c in receiver.delivered()] == ["document"]
        assert len(receiver.got) == 1


def test_pause_resume_rotate_and_replay(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with receiving(Receiver()) as receiver:
        made = add(db, receiver.url)
        with serving(db, "--no-access-log", env=FAST) as server:
            post(server.url, flow("custom", 1))
            receiver.wait_for(1)
            assert webhooks("pause", made["id"], "--db", str(db)).returncode == 0
            time.sleep(1)  # a running server takes it within FLOWTRACKER_WEBHOOK_POLL
            post(server.url, flow("completed", 2))
            time.sleep(1.5)
            assert len(receiver.got) == 1 and listed(db)[made["id"]]["lag"] == 1
            rotated = webhooks("rotate", made["id"], "--db", str(db))
            assert rotated.returncode == 0, rotated.stderr
            new_secret = rotated.stdout.strip()
            assert new_secret.startswith("whsec_") and new_secret != made["secret"]
            assert webhooks("resume", made["id"], "--db", str(db)).returncode == 0
            receiver.wait_for(2)
            # Signed by both secrets while the old one still signs.
            headers, body = receiver.got[-1]
            assert len(headers["webhook-signature"].split(" ")) == 2
            Webhook(new_secret).verify(body, headers)
            Webhook(made["secret"]).verify(body, headers)
            again = webhooks("replay", made["id"], "--from", "1", "--db", str(db))
            assert again.returncode == 0, again.stderr
            deadline = time.monotonic() + 20
            while len(receiver.got) < 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert [h["webhook-id"] for h, _ in receiver.got] == ["chg_1", "chg_2", "chg_1", "chg_2"]
        since = webhooks("replay", made["id"], "--since", "1h", "--db", str(db))
        assert since.returncode == 0 and "after seq 0" in since.stdout


def test_webhook_commands_say_what_is_wrong(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    bad = webhooks("add", "ftp://example.invalid/x", "--db", str(db))
    assert bad.returncode == 1 and "http:// or https://" in bad.stderr
    hidden = webhooks("add", "ftp://user:hunter2@example.invalid/", "--db", str(db))
    assert "hunter2" not in hidden.stderr
    for command in ("remove", "rotate", "pause", "resume"):
        missing = webhooks(command, "sub_nope", "--db", str(db))
        assert missing.returncode == 1 and "no webhook subscription 'sub_nope'" in missing.stderr
    neither = webhooks("replay", "sub_nope", "--db", str(db))
    assert neither.returncode == 2 and "--from SEQ or --since DURATION" in neither.stderr
    assert webhooks("list", "--db", str(db)).stdout.startswith("no webhook subscriptions")
    made = add(db, "https://user:hunter2@hooks.example.com/in")
    shown = webhooks("list", "--db", str(db)).stdout
    assert "hunter2" not in shown and made["secret"] not in shown
    assert webhooks("remove", made["id"], "--db", str(db)).returncode == 0
    assert listed(db) == {}


def test_a_killed_server_delivers_the_rest_after_restart(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    with receiving(Receiver(delay=0.05)) as receiver:
        add(db, receiver.url)
        env = {**FAST, "FLOWTRACKER_WEBHOOK_LEASE": "2s"}  # the dead one's runs out soon
        with serving(db, "--no-access-log", env=env) as server:
            for second in range(40):
                post(server.url, flow("custom", 0, f"{second:08d}-0000-4000-8000-000000000000"))
            deadline = time.monotonic() + 20
            while len(receiver.got) < 5:  # some delivered, the rest in flight or waiting
                assert time.monotonic() < deadline
                time.sleep(0.01)
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()
        before = len(receiver.delivered())
        assert before < 40
        time.sleep(0.5)  # the killed server's writer and workers go too
        with serving(db, "--no-access-log", env=env):
            receiver.wait_for(40, seconds=60)
        assert [c["seq"] for c in receiver.delivered()] == list(range(1, 41))


def test_two_receivers_one_delivers_the_other_takes_over(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.database(f"webhooks_{os.getpid()}")
    env = {**FAST, "FLOWTRACKER_WEBHOOK_LEASE": "2s"}
    with receiving(Receiver(delay=0.02)) as receiver:
        add(url, receiver.url)
        with (
            serving(url, "--no-access-log", env=env, logs=tmp_path) as one,
            serving(url, "--no-access-log", env=env, logs=tmp_path) as two,
        ):
            for second in range(30):
                post([one, two][second % 2].url,
                     flow("custom", 0, f"{second:08d}-0000-4000-8000-000000000000"))  # fmt: skip
            receiver.wait_for(30)
            holder = _lease_owner(url)
            assert holder is not None
            # Only one delivered each change: no change was sent twice.
            assert len(receiver.got) == 30
            pid = int(holder.split(":")[1])
            victim = one if pid in _pids(one.process.pid) else two
            survivor = two if victim is one else one
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            for second in range(30, 40):
                post(survivor.url, flow("custom", 0, f"{second:08d}-0000-4000-8000-000000000000"))
            receiver.wait_for(40, seconds=60)
            assert _lease_owner(url) != holder
        assert [c["seq"] for c in receiver.delivered()] == list(range(1, 41))


def _lease_owner(url: str) -> str | None:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT lease_owner FROM subscriptions").fetchone()
    return None if row is None else row[0]


def _pids(root: int) -> set[int]:
    """A process and its children (uvicorn's workers)."""
    found = {root}
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(root)], capture_output=True,
                            text=True).stdout.split()  # fmt: skip
    for child in listed:
        found |= _pids(int(child))
    return found


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)


def test_the_dashboard_shows_subscriptions_and_changes(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    made = add(db, "https://user:hunter2@hooks.example.com/in", "--kind", "flow")
    env = {"FLOWTRACKER_READ_TOKEN": "reader-secret", "FLOWTRACKER_WEBHOOK_POLL": "60s"}
    with serving(db, "--no-access-log", env=env) as server:
        post(server.url, flow("custom", 1))
        post(server.url, flow("completed", 2))
        bearer = {"authorization": "Bearer reader-secret"}
        page = httpx.get(server.url + "/ui/changes", headers=bearer)
        assert page.status_code == 200
        assert made["id"] in page.text and "hunter2" not in page.text
        assert made["secret"] not in page.text
        assert page.text.count("<td>completed</td>") == 1 and 'data-after="2"' in page.text
        # The live view's stream: the session (or the token), never open to anyone.
        assert httpx.get(server.url + "/ui/feed").status_code == 401
        with httpx.stream("GET", server.url + "/ui/feed?after=1", headers=bearer) as feed:
            assert feed.status_code == 200
            lines = feed.iter_lines()
            assert next(lines) == "id: 2"
