"""Reconciliation with Scrive's API (SPEC 13), against a fake Scrive API over real HTTP:
each answer Scrive can give, the fold's rules for answers, the command and the background
pass of `serve`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner, Result

from flowtracker.cli import main
from flowtracker.engine.parsing import parse_document, parse_flow, reconciled_instance
from flowtracker.errors import ScriveAPIError, ScriveRefused
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.scrive import api as scrive_api
from flowtracker.scrive import reconcile
from flowtracker.scrive.api import ScriveAPI
from flowtracker.scrive.fake_api import FakeScrive, Scripted, serving
from flowtracker.scrive.reconcile import BackgroundReconciliation
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Store, SubjectFilter
from tests.conftest import DOCUMENT, INSTANCE, at, document_form, document_json, flow
from tests.server import free_port
from tests.server import serving as serving_tracker

SECRETS = {
    "FLOWTRACKER_SCRIVE_API_TOKEN": "api-token-5f1c",
    "FLOWTRACKER_SCRIVE_API_SECRET": "api-secret-9a7e",
    "FLOWTRACKER_SCRIVE_ACCESS_TOKEN": "access-token-2b4d",
    "FLOWTRACKER_SCRIVE_ACCESS_SECRET": "access-secret-c3e8",
}
CREDENTIALS = Settings.from_env(SECRETS)
FORM = "application/x-www-form-urlencoded"
OTHER = "08b9e7d4-d424-4e66-baa4-06ab6635aad6"


@contextmanager
def scrive(flow_path: str | None = None) -> Iterator[tuple[FakeScrive, Settings]]:
    """A fake Scrive API on a loopback port, and settings that point at it."""
    fake = FakeScrive(CREDENTIALS, flow_path)
    with serving(fake) as url:
        yield fake, CREDENTIALS.but(scrive_url=url, scrive_flow_path=fake.flow_path)


def api(settings: Settings, sleeps: list[float] | None = None) -> ScriveAPI:
    """A client that records its waits instead of sleeping them (no rate limit either)."""
    recorded = sleeps if sleeps is not None else []
    return ScriveAPI(settings, rate=1e6, sleep=recorded.append)


def started(pipeline: Pipeline, *bodies: bytes) -> None:
    pipeline.ingest([parse_flow(body) for body in bodies])


def state(store: Store, instance: str = INSTANCE) -> str:
    return str(views.instance(store, instance)["state"])


def entries(store: Store, instance: str = INSTANCE) -> list[tuple[Any, ...]]:
    return [(e["type"], e["outcome"], e["reason"], e["source"], e["deliveries"])
            for e in views.instance(store, instance)["events"]]  # fmt: skip


def test_a_lost_terminal_callback_is_brought_back(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    started(pipeline, flow("authentication_attempted", 1))
    arrived = any_store.totals("2000-01-01T00:00:00Z").arrived
    before = views.instance(any_store, INSTANCE)
    with scrive() as (fake, settings), api(settings) as client:
        fake.instance(INSTANCE, "cancelled", at(30))  # Scrive's API shows it as failed
        line = reconcile.one(pipeline, client, "flow", INSTANCE, dry_run=False)
    assert line.text() == f"instance {INSTANCE}: in_progress -> failed"
    shown = views.instance(any_store, INSTANCE)
    assert shown["state"] == "failed"
    assert shown["last_received_at"] == before["last_received_at"]  # no callback came
    reconciled = shown["events"][-1]
    assert reconciled["payload"] == {
        "reconciled": "failed", "flow_instance_id": INSTANCE, "last_event": at(30)
    }  # fmt: skip
    assert (reconciled["type"], reconciled["source"], reconciled["deliveries"]) == (
        "reconciled", "reconcile", 0,
    )  # fmt: skip
    # no delivery: the arrival counters did not move; the change feed was told
    assert any_store.totals("2000-01-01T00:00:00Z").arrived == arrived
    change = any_store.changes(0, 10, subject=INSTANCE)[-1]
    assert (change.state, change.previous, change.source) == ("failed", "in_progress", "reconcile")
    assert json.loads(change.event)["type"] == "reconciled"
    # rebuilding changes nothing; the same answer again is one event
    assert Pipeline(any_store).rebuild()["changed_states"] == 0
    with scrive() as (fake, settings), api(settings) as client:
        fake.instance(INSTANCE, "cancelled", at(30))
        again = reconcile.one(pipeline, client, "flow", INSTANCE, dry_run=False)
    assert again.result == "unchanged"
    assert len(views.instance(any_store, INSTANCE)["events"]) == 2


@pytest.mark.parametrize("callback_first", [False, True])
@pytest.mark.parametrize("ending", ["cancelled", "flow_rejected", "timed_out"])
def test_a_real_ending_decides_over_a_reconciled_failed(
    any_store: Store, ending: str, callback_first: bool
) -> None:
    pipeline = Pipeline(any_store)
    answer = reconciled_instance(
        INSTANCE, {"id": INSTANCE, "status": "failed", "last_event": at(40)}
    )
    real = parse_flow(flow(ending, 20))
    if callback_first:
        pipeline.ingest([real])
        pipeline.reconcile("flow", INSTANCE, answer)
    else:
        pipeline.reconcile("flow", INSTANCE, answer)
        assert state(any_store) == "failed"
        pipeline.ingest([real])
    expected = {"flow_rejected": "rejected"}.get(ending, ending)
    assert state(any_store) == expected
    assert entries(any_store) == [
        (ending, "applied", None, "callback", 1),
        ("reconciled", "ignored", "superseded by a callback", "reconcile", 0),
    ]


def test_a_reconciled_ending_stands_while_no_callback_ends_it(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    started(pipeline, flow("custom", 1), flow("authentication_attempted", 5))
    answer = reconciled_instance(
        INSTANCE, {"id": INSTANCE, "status": "completed", "last_event": at(3)}
    )
    pipeline.reconcile("flow", INSTANCE, answer)
    # placed at its time; what follows it is judged from `completed`
    started(pipeline, flow("custom", 9))
    assert [(e[0], e[1]) for e in entries(any_store)] == [
        ("custom", "applied"), ("reconciled", "applied"),
        ("authentication_attempted", "applied"), ("custom", "illegal"),
    ]  # fmt: skip
    assert views.instance(any_store, INSTANCE)["anomalies"] == 1  # the illegal custom only


def test_a_callback_posted_as_reconciled_is_an_unknown_type(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    forged = json.dumps({"type": "reconciled", "version": 1, "flow_instance_id": INSTANCE,
                         "event_created": at(1), "reconciled": "completed"}).encode()  # fmt: skip
    (receipt,) = pipeline.ingest([parse_flow(forged)])
    assert (receipt.outcome, receipt.reason, receipt.state) == (
        "ignored", "unknown callback type 'reconciled'", "in_progress",
    )  # fmt: skip
    assert entries(any_store)[0][3] == "callback"


def test_document_answers_count_only_when_newer(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    pipeline.ingest([parse_document(document_form("pending", 3, 10), FORM)])
    with scrive() as (fake, settings), api(settings) as client:
        fake.document(document_json("pending", 2, 5))  # stale: older object_version
        stale = reconcile.one(pipeline, client, "document", DOCUMENT, dry_run=False)
        fake.document(document_json("closed", 5, 30))  # newer
        newer = reconcile.one(pipeline, client, "document", DOCUMENT, dry_run=False)
    assert stale.text() == (
        f"document {DOCUMENT}: unchanged (pending; already known: Scrive's API has "
        "object_version 2)"
    )
    assert newer.text() == f"document {DOCUMENT}: pending -> closed"
    shown = views.document(any_store, DOCUMENT)
    assert (shown["state"], shown["object_version"], shown["signed_and_sealed"]) == (
        "closed", 5, None,  # not known until a callback says
    )  # fmt: skip
    assert [(s["object_version"], s["outcome"], s["reason"], s["source"], s["deliveries"])
            for s in shown["snapshots"]] == [  # the stale answer is not kept
        (3, "applied", None, "callback", 1),
        (5, "applied", None, "reconcile", 0),
    ]  # fmt: skip
    assert shown["snapshots"][1]["payload"]["document_signed_and_sealed"] is None
    # the callback of that version comes after all: it decides, and says it is sealed
    pipeline.ingest([parse_document(document_form("closed", 5, 31, sealed=True), FORM)])
    shown = views.document(any_store, DOCUMENT)
    assert (shown["state"], shown["signed_and_sealed"]) == ("closed", True)
    assert [(s["source"], s["outcome"], s["reason"]) for s in shown["snapshots"][1:]] == [
        ("reconcile", "ignored", "already known"),
        ("callback", "applied", None),
    ]


def test_404_is_an_anomaly_of_the_subject_not_a_change(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    started(pipeline, flow("authentication_attempted", 1))
    with scrive() as (fake, settings), api(settings) as client:
        line = reconcile.one(pipeline, client, "flow", INSTANCE, dry_run=False)
        unknown = reconcile.one(pipeline, client, "flow", OTHER, dry_run=False)
        shown = views.instance(any_store, INSTANCE)
        anomalous = any_store.list_subjects("flow", SubjectFilter(anomalous=True), None, 10)
        fake.instance(INSTANCE, "in_progress", at(1))
        answered = reconcile.one(pipeline, client, "flow", INSTANCE, dry_run=False)
    assert line.text() == f"instance {INSTANCE}: unknown to Scrive (404)"
    assert (line.result, line.answered) == ("unknown", True)
    assert (shown["state"], shown["anomalies"], len(shown["events"])) == ("in_progress", 1, 1)
    assert shown["unknown_to_scrive_at"] is not None
    assert any_store.changes(0, 10, subject=INSTANCE)[-1].state == "in_progress"  # no change
    assert [row.id for row in anomalous] == [INSTANCE]
    assert unknown.text() == f"instance {OTHER}: unknown to Scrive (404) (and not stored here)"
    assert any_store.subject_history("flow", OTHER) is None
    # Scrive knows it again: the anomaly goes
    assert answered.text() == f"instance {INSTANCE}: unchanged (in_progress)"
    shown = views.instance(any_store, INSTANCE)
    assert (shown["anomalies"], shown["unknown_to_scrive_at"]) == (0, None)


def test_429_waits_for_retry_after() -> None:
    with scrive() as (fake, settings):
        path = f"{fake.flow_path}/instances/{INSTANCE}"
        fake.script[path].extend([Scripted(429, {"Retry-After": "2"}), Scripted(429)])
        fake.instance(INSTANCE, "completed", at(9))
        sleeps: list[float] = []
        with api(settings, sleeps) as client:
            answer = client.subject("flow", INSTANCE)
    assert answer.found and answer.body["status"] == "completed"
    assert sleeps[:2] == [2.0, pytest.approx(1e-6)]  # its Retry-After, then the rate's spacing
    assert fake.requests == [path] * 3


def test_5xx_is_retried_with_backoff_then_answered() -> None:
    with scrive() as (fake, settings):
        path = f"/api/v2/documents/{DOCUMENT}/get"
        fake.script[path].extend([Scripted(503), Scripted(502)])
        fake.document(document_json("pending", 2))
        sleeps: list[float] = []
        with api(settings, sleeps) as client:
            assert client.subject("document", DOCUMENT).found
    assert len(fake.requests) == 3
    assert 1.0 <= sleeps[0] <= 1.2 and 4.0 <= sleeps[1] <= 4.8  # backoff with jitter


def test_5xx_gives_up_after_three_retries() -> None:
    with scrive() as (fake, settings):
        path = f"/api/v2/documents/{DOCUMENT}/get"
        fake.script[path].extend([Scripted(500)] * 5)
        fake.document(document_json("pending", 2))
        with api(settings) as client, pytest.raises(ScriveAPIError, match="answered 500"):
            client.subject("document", DOCUMENT)
    assert len(fake.requests) == 4  # the first attempt and three retries


def test_a_timeout_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with scrive() as (fake, settings):
        path = f"{fake.flow_path}/instances/{INSTANCE}"
        fake.script[path].append(Scripted(200, delay=1.5))  # longer than the timeout
        fake.instance(INSTANCE, "failed", at(9))
        sleeps: list[float] = []
        client = ScriveAPI(settings.but(scrive_timeout_seconds=0.3), rate=1e6,
                           sleep=sleeps.append)  # fmt: skip
        with client:
            assert client.subject("flow", INSTANCE).body["status"] == "failed"
    assert len(fake.requests) == 2 and len(sleeps) == 1


def test_the_rate_spaces_requests() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "failed", at(9))
        client = ScriveAPI(settings, rate=4, sleep=sleep, clock=lambda: now[0])
        with client:
            for _ in range(3):
                client.subject("flow", INSTANCE)
    assert sleeps == [0.25, 0.25]


def test_the_authorization_header_is_oauth_plaintext() -> None:
    header = scrive_api.Credentials(CREDENTIALS).header()
    assert header == (
        'oauth_signature_method="PLAINTEXT", oauth_consumer_key="api-token-5f1c", '
        'oauth_token="access-token-2b4d", oauth_signature="api-secret-9a7e&access-secret-c3e8"'
    )
    assert "api-secret" not in repr(scrive_api.Credentials(CREDENTIALS))
    assert "api-secret" not in repr(CREDENTIALS)


def test_a_refusal_stops_the_run_and_names_the_settings_not_their_values() -> None:
    with scrive() as (_, settings):
        wrong = settings.but(scrive_access_secret="not-the-secret")
        with api(wrong) as client, pytest.raises(ScriveRefused) as refused:
            client.subject("flow", INSTANCE)
    message = refused.value.message
    assert "refused the credentials (401)" in message
    assert "FLOWTRACKER_SCRIVE_ACCESS_SECRET" in message
    assert "not-the-secret" not in message and "api-secret" not in message


# The command ---------------------------------------------------------------------------


def run(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def tracked(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """A SQLite database with an instance in progress and a pending document."""
    db = str(tmp_path / "t.db")
    store = open_store(db, access="create")
    pipeline = Pipeline(store)
    started(pipeline, flow("authentication_attempted", 1))
    pipeline.ingest([parse_document(document_form("pending", 2), FORM)])
    yield db, store
    store.close()


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    return {**SECRETS, "FLOWTRACKER_SCRIVE_URL": settings.scrive_url, **extra}


def test_reconcile_command_prints_each_subject_and_a_total(
    tracked: tuple[str, Store],
) -> None:
    db, store = tracked
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "completed", at(50))
        fake.document(document_json("closed", 4, 20))
        result = run("reconcile", INSTANCE, DOCUMENT, "--db", db, env=environment(settings))
        as_json = run("reconcile", INSTANCE, "--db", db, "--json", env=environment(settings))
    assert (result.exit_code, result.output) == (0, (
        f"instance {INSTANCE}: in_progress -> completed\n"
        f"document {DOCUMENT}: pending -> closed\n"
        "reconciled 2 subjects: 2 changed, 0 unchanged\n"
    ))  # fmt: skip
    answer = json.loads(as_json.output)
    assert answer["totals"] == {"changed": 0, "unchanged": 1, "unknown": 0, "error": 0}
    assert answer["subjects"][0]["after"] == "completed" and not answer["dry_run"]
    assert state(store) == "completed"
    assert store.totals("2000-01-01T00:00:00Z").reconciliations == {
        "changed": 2, "unchanged": 1,
    }  # fmt: skip


def test_dry_run_asks_and_writes_nothing(tracked: tuple[str, Store]) -> None:
    db, store = tracked
    clock = store.change_clock()
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "failed", at(50))
        result = run("reconcile", INSTANCE, "--db", db, "--dry-run", env=environment(settings))
    assert result.exit_code == 0
    assert result.output == (
        f"instance {INSTANCE}: in_progress -> failed\n"
        "reconciled 1 subject: 1 changed, 0 unchanged (dry run: nothing was written)\n"
    )
    assert state(store) == "in_progress" and len(entries(store)) == 1
    assert store.change_clock() == clock


def test_wrong_credentials_change_nothing_and_exit_1(tracked: tuple[str, Store]) -> None:
    db, store = tracked
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "failed", at(50))
        env = environment(settings, FLOWTRACKER_SCRIVE_API_SECRET="wrong-secret-0000")
        result = run("reconcile", INSTANCE, DOCUMENT, "--db", db, env=env)
    assert result.exit_code == 1
    assert "refused the credentials (401): check FLOWTRACKER_SCRIVE_API_TOKEN" in result.output
    assert fake.refused == 1  # stopped at the first refusal
    for secret in (*SECRETS.values(), "wrong-secret-0000"):
        assert secret not in result.output
    assert state(store) == "in_progress"


def test_missing_credentials_are_named(tracked: tuple[str, Store]) -> None:
    db, _ = tracked
    env = {"FLOWTRACKER_SCRIVE_API_TOKEN": "x", "FLOWTRACKER_SCRIVE_ACCESS_TOKEN": ""}
    result = run("reconcile", "--stuck", "--db", db, env=env)
    assert result.exit_code == 1
    assert result.output == (
        "Error: Scrive's API needs personal access credentials (Scrive: Account settings, "
        "API): set FLOWTRACKER_SCRIVE_API_SECRET, FLOWTRACKER_SCRIVE_ACCESS_TOKEN, "
        "FLOWTRACKER_SCRIVE_ACCESS_SECRET\n"
    )


def test_ids_or_stuck_is_required(tracked: tuple[str, Store]) -> None:
    db, _ = tracked
    assert run("reconcile", "--db", db, env=SECRETS).exit_code == 2
    assert run("reconcile", INSTANCE, "--stuck", "--db", db, env=SECRETS).exit_code == 2


def test_an_unreachable_subject_is_an_error_and_exit_1(tracked: tuple[str, Store]) -> None:
    db, store = tracked
    with scrive() as (fake, settings):
        fake.script[f"/api/v2/documents/{DOCUMENT}/get"].extend([Scripted(503)] * 4)
        fake.instance(INSTANCE, "completed", at(50))
        scrive_api.BACKOFF_SECONDS, saved = (0.01, 0.01, 0.01), scrive_api.BACKOFF_SECONDS
        try:
            result = run("reconcile", DOCUMENT, INSTANCE, "--db", db, env=environment(settings))
        finally:
            scrive_api.BACKOFF_SECONDS = saved
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"document {DOCUMENT}: error: {settings.scrive_url}/api/v2/documents/{DOCUMENT}/get "
        "answered 503",
        f"instance {INSTANCE}: in_progress -> completed",
        "reconciled 2 subjects: 1 changed, 0 unchanged, 1 error",
    ]
    assert store.totals("2000-01-01T00:00:00Z").reconciliations == {"changed": 1, "error": 1}


def test_stuck_selects_quiet_instances_in_progress_and_unfinished_documents(
    any_store: Store,
) -> None:
    pipeline = Pipeline(any_store)
    third = "3c3e0c5e-8e55-4a55-9b4e-3fd1bbd0f0a3"
    started(pipeline, flow("authentication_attempted", 1), flow("completed", 2, OTHER),
            flow("custom", 3, third))  # fmt: skip
    pipeline.ingest([parse_document(document_form("pending", 2), FORM)])
    closed = document_form("closed", 3).replace(DOCUMENT.encode(), b"77")
    pipeline.ingest([parse_document(closed, FORM)])
    quiet_for = 3_600 * 10**9
    now = time.time_ns() + quiet_for + 10**9
    assert list(reconcile.stuck(any_store, time.time_ns(), quiet_for)) == []
    assert list(reconcile.stuck(any_store, now, quiet_for)) == [
        ("flow", INSTANCE), ("flow", third), ("document", DOCUMENT),
    ]  # fmt: skip


def test_named_ids_find_their_kind(tracked: tuple[str, Store]) -> None:
    _, store = tracked
    assert reconcile.named(store, [INSTANCE.upper(), DOCUMENT, OTHER, "123"]) == [
        ("flow", INSTANCE), ("document", DOCUMENT), ("flow", OTHER), ("document", "123"),
    ]  # fmt: skip


def test_an_ended_instance_keeps_its_end(tracked: tuple[str, Store]) -> None:
    db, store = tracked
    started(Pipeline(store), flow("completed", 9))
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "failed", at(50))
        result = run("reconcile", INSTANCE, "--db", db, env=environment(settings))
    assert result.output.splitlines()[0] == (
        f"instance {INSTANCE}: unchanged (completed; Scrive's API says failed)"
    )
    assert state(store) == "completed" and len(entries(store)) == 2


def test_the_flow_path_is_a_setting(tracked: tuple[str, Store]) -> None:
    db, store = tracked
    with scrive("/journey/v1") as (fake, settings):
        fake.instance(INSTANCE, "completed", at(50))
        env = environment(settings, FLOWTRACKER_SCRIVE_FLOW_PATH="/journey/v1")
        assert run("reconcile", INSTANCE, "--db", db, env=env).exit_code == 0
    assert fake.requests == [f"/journey/v1/instances/{INSTANCE}"]
    assert state(store) == "completed"


# The background pass -----------------------------------------------------------------


def test_one_receiver_at_a_time_holds_the_lease(any_store: Store) -> None:
    assert any_store.take_lease("reconcile", "a", 100, 200)
    assert not any_store.take_lease("reconcile", "b", 150, 250)
    assert any_store.take_lease("reconcile", "a", 150, 300)  # renewed
    assert not any_store.take_lease("reconcile", "b", 299, 400)
    assert any_store.take_lease("reconcile", "b", 301, 400)  # ran out: taken over
    any_store.release_lease("reconcile", "a")  # not a's any more: nothing happens
    assert not any_store.take_lease("reconcile", "a", 302, 500)
    any_store.release_lease("reconcile", "b")
    assert any_store.take_lease("reconcile", "a", 303, 500)


def test_two_receivers_run_one_pass(any_store: Store) -> None:
    started(Pipeline(any_store), flow("authentication_attempted", 1))
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "completed", at(50))
        settings = settings.but(reconcile_every_seconds=3600.0, stuck_age_seconds=1)
        later = time.time_ns() + 5 * 10**9
        passes = [BackgroundReconciliation(any_store, settings, Pipeline(any_store),
                                           clock=lambda: later) for _ in range(2)]  # fmt: skip
        results: list[Any] = []
        threads = [threading.Thread(target=lambda p=p: results.append(p.run_once()))
                   for p in passes]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ran = [summary for summary in results if summary is not None]
    assert len(ran) == 1 and ran[0].counts["changed"] == 1
    assert fake.requests == [f"{fake.flow_path}/instances/{INSTANCE}"]
    assert state(any_store) == "completed"


def test_serve_reconciles_in_the_background(tmp_path: Path) -> None:
    with scrive() as (fake, settings):
        fake.instance(INSTANCE, "completed", at(50))
        env = environment(settings, FLOWTRACKER_STUCK_AGE="1")
        db = tmp_path / "t.db"
        with serving_tracker(db, "--reconcile-every", "1s", env=env) as server:
            posted = httpx.post(f"{server.url}/callbacks/flow", content=flow("custom", 1),
                                headers={"content-type": "application/json"})  # fmt: skip
            assert posted.status_code == 200
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                shown = httpx.get(f"{server.url}/instances/{INSTANCE}").json()
                if shown["state"] == "completed":
                    break
                time.sleep(0.2)
            assert shown["state"] == "completed"
            assert shown["events"][-1]["source"] == "reconcile"
            metrics = httpx.get(f"{server.url}/metrics").text
            status = httpx.get(f"{server.url}/status").text
            page = httpx.get(f"{server.url}/ui/instances/{INSTANCE}").text
        log = server.output()
    assert re.search(r'flowtracker_reconciliations_total\{result="changed"\} 1\.0', metrics)
    assert f"reconciliation: instance {INSTANCE}: in_progress -> completed" in log
    assert 'class="tag tag-reconciled"' in page and "no delivery" in page  # marked
    for secret in SECRETS.values():
        assert secret not in log and secret not in metrics and secret not in status
        assert secret.encode() not in db.read_bytes()


def test_serve_refuses_reconcile_every_without_credentials(tmp_path: Path) -> None:
    result = run("serve", "--db", str(tmp_path / "t.db"), "--reconcile-every", "6h", env={})
    assert result.exit_code == 1
    assert "set FLOWTRACKER_SCRIVE_API_TOKEN" in result.output
    bad = run("serve", "--db", str(tmp_path / "t.db"), "--reconcile-every", "often", env={})
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_a_deployment_that_lost_callbacks_is_whole_after_one_reconcile(tmp_path: Path) -> None:
    """The issue's end: 5% of the callbacks lost for good, `simulate --check` reports the
    differences, one `reconcile --stuck`, and the check passes; no credential anywhere."""
    port = free_port()
    env = {**SECRETS, "FLOWTRACKER_SCRIVE_URL": f"http://127.0.0.1:{port}",
           "FLOWTRACKER_STUCK_AGE": "1"}  # fmt: skip
    db = tmp_path / "t.db"
    with serving_tracker(db, "--no-access-log", env=env) as server:
        simulator = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", "simulate", "--url", server.url,
             "--seed", "11", "--instances", "120", "--lose", "0.05",
             "--scrive-api", f"127.0.0.1:{port}", "--check", "--wait", "120"],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        assert simulator.stdout is not None
        shown: list[str] = []
        for line in simulator.stdout:
            shown.append(line)
            if line.startswith("check: "):  # the first check, before reconciling
                break
        time.sleep(1.1)  # quiet for the stuck age
        reconciled = subprocess.run(
            [sys.executable, "-m", "flowtracker", "reconcile", "--db", str(db), "--stuck",
             "--rate", "50"],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        rest, _ = simulator.communicate(timeout=120)
        log = server.output()
    before = "".join(shown)
    assert "lost for good" in before and re.search(r"^check: \d+ differences", before, re.M)
    assert "state: expected 'failed', got 'in_progress'" in before
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert re.search(r"reconciled \d+ subjects: [1-9]\d* changed", reconciled.stdout)
    assert simulator.returncode == 0, before + rest
    assert "check: all 120 instances" in rest
    for secret in SECRETS.values():
        for text in (before, rest, reconciled.stdout, reconciled.stderr, log):
            assert secret not in text
        assert secret.encode() not in db.read_bytes()
