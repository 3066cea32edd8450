"""The quarantine's actions (spec 14): retry kept requests (those an upgrade now accepts
are stored and leave the quarantine), delete them, filter by error code; on the command
line, over HTTP behind the admin token (never the read token), and on the dashboard with
an admin session and CSRF tokens."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from flowtracker.cli import main
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Quarantined
from flowtracker.web import create_app
from tests.conftest import INSTANCE, flow

READ, ADMIN = "read-token-1", "admin-token-2"
# A callback an older flowtracker refused (today's accepts it), and one still refused.
ACCEPTABLE = flow("completed", 5)
BROKEN = b'{"type": "completed", "version": 1'
OLD, NEW = "2026-01-10T10:00:00.000000Z", "2026-03-01T10:00:00.000000Z"


def _id(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _keep(target: str) -> None:
    store = open_store(target)
    try:
        store.quarantine(Quarantined(ACCEPTABLE, "application/json",
                                     {"code": "invalid_event", "message": "older rules"},
                                     "POST /callbacks/flow"), OLD)  # fmt: skip
        store.quarantine(Quarantined(BROKEN, "application/json",
                                     {"code": "invalid_json", "message": "cut short"},
                                     "POST /callbacks/flow"), NEW)  # fmt: skip
    finally:
        store.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_retry_and_delete_on_the_command_line(target: str) -> None:
    _keep(target)
    listed = run("quarantine", "--db", target, "--code", "invalid_json")
    assert listed.exit_code == 0 and _id(BROKEN)[:12] in listed.output
    assert _id(ACCEPTABLE)[:12] not in listed.output
    assert run("quarantine", "--db", target, "--code", "request_timeout").output == (
        "no quarantined request_timeout\n"
    )
    both = run("quarantine", "retry", "--all", "--db", target)
    assert both.exit_code == 1
    assert f"{_id(ACCEPTABLE)[:12]}  accepted: applied (flow {INSTANCE}, now completed)" in (
        both.output
    )
    assert f"{_id(BROKEN)[:12]}  still refused: invalid_json:" in both.output
    assert "1 accepted and stored (they left the quarantine), 1 still refused" in both.output
    status = run("status", INSTANCE, "--db", target)
    assert status.exit_code == 0 and "completed" in status.output
    left = run("quarantine", "--db", target, "--json").output
    assert _id(BROKEN) in left and _id(ACCEPTABLE) not in left
    assert run("quarantine", "retry", "--db", target).exit_code == 2  # IDs or --all
    gone = run("quarantine", "delete", _id(BROKEN)[:8], "--db", target)
    assert gone.output == "deleted 1 quarantined request\n"
    assert run("quarantine", "--db", target).output == "the quarantine is empty\n"
    missing = run("quarantine", "delete", "abc123", "--db", target)
    assert missing.exit_code == 1 and "no quarantined request 'abc123'" in missing.output


def test_delete_before_a_date_and_what_is_refused(target: str) -> None:
    _keep(target)
    assert run("quarantine", "delete", "--before", "nonsense", "--db", target).exit_code == 1
    both = run("quarantine", "delete", "x", "--before", "2026-02-01", "--db", target)
    assert both.exit_code == 2
    done = run("quarantine", "delete", "--before", "2026-02-01", "--db", target)
    assert done.output == "deleted 1 quarantined request\n"
    left = run("quarantine", "--db", target, "--json").output
    assert _id(BROKEN) in left and _id(ACCEPTABLE) not in left
    totals = run("status", "--db", target, "--json").output
    assert '"quarantined": 1' in totals


def _client(target: str, admin: str | None) -> TestClient:
    return TestClient(create_app(Settings(db_path=target, read_token=READ, admin_token=admin)))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_over_http_the_actions_need_the_admin_token(target: str) -> None:
    _keep(target)
    with _client(target, None) as client:
        kept = client.get("/quarantine?code=invalid_json", headers=_bearer(READ)).json()
        assert [item["id"] for item in kept["items"]] == [_id(BROKEN)]
        off = client.post("/quarantine/retry", headers=_bearer(READ))
        assert off.status_code == 403 and off.json()["error"]["code"] == "admin_actions_off"
        assert "FLOWTRACKER_ADMIN_TOKEN" in off.json()["error"]["message"]
    with _client(target, ADMIN) as client:
        for headers in ({}, _bearer(READ)):  # the read token never suffices
            refused = client.post(f"/quarantine/{_id(ACCEPTABLE)}/retry", headers=headers)
            assert refused.status_code == 401
        done = client.post(f"/quarantine/{_id(ACCEPTABLE)}/retry", headers=_bearer(ADMIN))
        assert done.status_code == 200
        assert [(a["id"], a["outcome"]) for a in done.json()["accepted"]] == [
            (_id(ACCEPTABLE), "applied")
        ]
        assert client.get(f"/instances/{INSTANCE}", headers=_bearer(READ)).status_code == 200
        again = client.post(f"/quarantine/{_id(BROKEN)}/retry", headers=_bearer(ADMIN)).json()
        assert again["accepted"] == [] and again["refused"][0]["error"]["code"] == "invalid_json"
        assert client.delete("/quarantine", headers=_bearer(ADMIN)).status_code == 422
        gone = client.delete(f"/quarantine/{_id(BROKEN)}", headers=_bearer(ADMIN))
        assert gone.json() == {"deleted": 1}
        assert (
            client.delete(f"/quarantine/{_id(BROKEN)}", headers=_bearer(ADMIN)).status_code == 404
        )
        assert client.get("/quarantine", headers=_bearer(READ)).json()["items"] == []


def test_the_dashboard_offers_the_actions_to_an_admin_session_with_csrf(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "t.db")
    _keep(db)
    with _client(db, None) as client:
        client.post("/ui/login", data={"token": READ, "next": "/ui/quarantine"})
        page = client.get("/ui/quarantine").text
        assert "set <code>FLOWTRACKER_ADMIN_TOKEN</code>" in page and "Retry</button>" not in page
        filtered = client.get("/ui/quarantine?code=invalid_event").text
        assert _id(ACCEPTABLE) in filtered and _id(BROKEN) not in filtered
    with _client(db, ADMIN) as client:
        client.post("/ui/login", data={"token": READ, "next": "/ui/quarantine"})
        assert "Sign in as admin" in client.get("/ui/quarantine").text
        wrong = client.post("/ui/admin", data={"token": READ}, follow_redirects=True)
        assert "that is not the admin token" in wrong.text
        client.post("/ui/admin", data={"token": ADMIN})
        page = client.get("/ui/quarantine").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None and "Retry</button>" in page
        # A form without this session's CSRF token (another site's) is refused.
        forged = client.post(f"/ui/quarantine/{_id(ACCEPTABLE)}/retry", data={"csrf": "0" * 64})
        assert forged.status_code == 401 and _id(ACCEPTABLE) in client.get("/ui/quarantine").text
        done = client.post(f"/ui/quarantine/{_id(ACCEPTABLE)}/retry",
                           data={"csrf": csrf[1]}, follow_redirects=True)  # fmt: skip
        assert "1 accepted and stored" in done.text and _id(ACCEPTABLE) not in done.text
        deleted = client.post(f"/ui/quarantine/{_id(BROKEN)}/delete",
                              data={"csrf": csrf[1]}, follow_redirects=True)  # fmt: skip
        assert "deleted 1 quarantined request" in deleted.text
        assert "The quarantine is empty." in deleted.text


@pytest.mark.parametrize("command", [["quarantine", "retry"], ["quarantine", "delete"], ["prune"]])
def test_each_action_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0 and "--db FILE" in result.output


def test_the_database_named_before_the_action_is_the_one_acted_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, other = str(tmp_path / "named.db"), str(tmp_path / "other.db")
    _keep(db)
    monkeypatch.setenv("FLOWTRACKER_DB", other)
    done = run("quarantine", "--db", db, "delete", "--before", "2030-01-01")
    assert done.output == "deleted 2 quarantined requests\n"


def test_a_request_kept_cut_short_is_never_retried(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    store = open_store(db)
    try:
        store.quarantine(Quarantined(ACCEPTABLE[:20], "application/json",
                                     {"code": "payload_too_large", "message": "over"},
                                     "POST /callbacks/flow"), OLD)  # fmt: skip
    finally:
        store.close()
    done = run("quarantine", "retry", "--all", "--db", db)
    assert done.exit_code == 1
    assert "still refused: payload_too_large: kept cut short" in done.output


def test_a_read_session_with_a_copied_csrf_token_is_not_an_admin(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    _keep(db)
    with _client(db, ADMIN) as admin:
        admin.post("/ui/login", data={"token": READ})
        admin.post("/ui/admin", data={"token": ADMIN})
        page = admin.get("/ui/quarantine").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
    with _client(db, ADMIN) as reader:  # signed in to read, never as admin
        reader.post("/ui/login", data={"token": READ})
        refused = reader.post(f"/ui/quarantine/{_id(BROKEN)}/delete", data={"csrf": csrf[1]})
        assert refused.status_code == 401
    assert _id(BROKEN) in run("quarantine", "--db", db, "--json").output
