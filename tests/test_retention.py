"""Retention (spec 14): `prune` removes finished subjects that have been quiet longer than
the cutoff, with their events, and leaves a tombstone; a late callback for a pruned
subject is ignored (`pruned`) and never brings it back; the counters stay what a recount
gives; old quarantined requests go too. On both backends."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx2 as httpx
from starlette.testclient import TestClient

from flowtracker.engine.lifecycles import FINISHED
from flowtracker.engine.parsing import parse_line, reconciled_document, reconciled_instance
from flowtracker.engine.timestamps import format_ns
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.replay import replay
from flowtracker.ingest.retention import EVERY_SECONDS, BackgroundRetention, count, prune
from flowtracker.reads.export import export
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Quarantined, Store
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.web import create_app
from tests.conftest import DATA, Clock, document_json, flow
from tests.server import serving
from tests.test_postgres import _everything, _without_arrival

DAY = 86_400
IDS = [str(uuid.UUID(int=n + 1)) for n in range(6)]


def _document(document_id: str, status: str, version: int) -> bytes:
    body = {"document_id": document_id, "document_signed_and_sealed": False,
            "document_json": {**document_json(status, version), "id": document_id}}  # fmt: skip
    return json.dumps(body).encode()


def _totals(store: Store) -> dict[str, object]:
    found = dataclasses.asdict(store.totals("2000-01-01T00:00:00Z"))
    found.pop("arrived")  # only grow: what each delivery got on arrival
    found.pop("last_callback_ns")
    return found


def _kept(store: Store) -> object:
    """Every read, but the counts of deliveries on arrival (which count the deliveries of
    pruned subjects too: an export has those no more)."""
    found = _without_arrival(_everything(store))
    found["status"].pop("arrived")
    return found


def _fill(store: Store, clock: Clock) -> Pipeline:
    """Two old finished instances (one with a duplicate and a late event), one old in
    progress, one recent finished; an old closed document and an old pending one."""
    pipeline = Pipeline(store, clock)
    old = [
        flow("completed", 5, IDS[0]), flow("completed", 5, IDS[0]), flow("custom", 2, IDS[0]),
        flow("cancelled", 3, IDS[1]), flow("custom", 1, IDS[2]),
        _document("1001", "pending", 1), _document("1001", "closed", 2),
        _document("1002", "pending", 1),
    ]  # fmt: skip
    pipeline.ingest([parse_line(body) for body in old])
    store.quarantine(Quarantined(b"{", "application/json", {"code": "invalid_json"}, "http"),
                     format_ns(clock()))  # fmt: skip
    clock.advance(30 * DAY)
    pipeline.ingest([parse_line(flow("completed", 9, IDS[3]))])
    clock.advance(1)
    return pipeline


def test_prune_leaves_tombstones_and_a_late_callback_stays_ignored(
    any_store: Store,
) -> None:
    clock = Clock()
    pipeline = _fill(any_store, clock)
    before = format_ns(clock() - 10 * DAY * 10**9)
    planned = count(any_store, before)
    assert (planned.subjects, planned.events, planned.quarantined) == (
        {"flow": 2, "document": 1}, {"flow": 3, "document": 2}, 1,
    )  # fmt: skip
    done = prune(any_store, before, changes_before=None, clock=clock)
    assert (done.subjects, done.events, done.quarantined) == (
        planned.subjects, planned.events, planned.quarantined,
    )  # fmt: skip
    assert any_store.subject_history("flow", IDS[0]) is None
    assert any_store.subject_history("flow", IDS[2]) is not None  # in progress: kept
    assert any_store.subject_history("flow", IDS[3]) is not None  # recent: kept
    assert any_store.subject_history("document", "1002") is not None  # pending: kept
    tombstone = any_store.tombstone("flow", IDS[0])
    assert tombstone is not None and (tombstone.state, tombstone.events) == ("completed", 2)
    assert tombstone.pruned_at == format_ns(clock())
    assert any_store.tombstone("flow", IDS[2]) is None
    # The counters are those a recount computes from what is left.
    kept = _totals(any_store)
    assert kept["pruned"] == {"flow": 2, "document": 1}
    assert kept["quarantined"] == 0 and kept["states"]["flow"] == {"in_progress": 1, "completed": 1}
    with any_store.transaction() as tx:
        tx.recount()
    assert _totals(any_store) == kept
    # A late callback, or Scrive's retry of one, for a pruned subject is ignored.
    late = pipeline.ingest([parse_line(flow("custom", 4, IDS[1])),
                            parse_line(_document("1001", "closed", 3))])  # fmt: skip
    assert [(r.outcome, r.reason, r.state) for r in late] == [
        ("ignored", "pruned", "cancelled"), ("ignored", "pruned", "closed"),
    ]  # fmt: skip
    assert any_store.subject_history("flow", IDS[1]) is None
    assert _totals(any_store) == kept
    # Pruning again removes nothing more.
    again = prune(any_store, before, changes_before=None, clock=clock)
    assert again.subjects == {"flow": 0, "document": 0}


def test_a_dry_run_counts_and_changes_nothing(any_store: Store) -> None:
    clock = Clock()
    _fill(any_store, clock)
    before = format_ns(clock() - 10 * DAY * 10**9)
    totals = _totals(any_store)
    assert count(any_store, before).subjects == {"flow": 2, "document": 1}
    assert _totals(any_store) == totals and any_store.tombstone("flow", IDS[0]) is None


def test_new_sqlite_files_give_the_space_back(store: SQLiteStore) -> None:
    clock = Clock()
    pipeline = Pipeline(store, clock)
    big = "x" * 20_000
    pipeline.ingest([parse_line(flow("completed", 1, i, note=big)) for i in IDS])
    clock.advance(2 * DAY)
    done = prune(store, format_ns(clock() - DAY * 10**9), changes_before=None, clock=clock)
    assert done.subjects["flow"] == len(IDS)
    assert "given back to the file system" in done.space, done.space
    assert not done.space.startswith("0.0 MiB")


def test_an_export_carries_tombstones_and_answers_of_scrive_into_a_replay(
    target: str, tmp_path: Path
) -> None:
    store = open_store(target)
    try:
        clock = Clock()
        pipeline = _fill(store, clock)
        prune(store, format_ns(clock() - 10 * DAY * 10**9), changes_before=None, clock=clock)
        pipeline.reconcile("flow", IDS[2], reconciled_instance(IDS[2], {
            "id": IDS[2], "status": "failed", "last_event": "2021-03-10T16:00:30Z"}))  # fmt: skip
        pipeline.reconcile("document", "1002", reconciled_document("1002", {
            **document_json("closed", 7), "id": "1002"}))  # fmt: skip
        exported = io.BytesIO()
        lines = export(store, exported)
        before = _kept(store)
        tombstones = [store.tombstone("flow", IDS[0]), store.tombstone("document", "1001")]
    finally:
        store.close()
    text = exported.getvalue().decode()
    # tombstones; callbacks of the subjects kept (instance 3, instance 4, document 1002)
    assert lines == text.count("\n") == 3 + 3 + 2
    assert text.count('{"flowtracker": "tombstone"') == 3
    assert text.count('{"flowtracker": "reconciled"') == 2
    again = open_store(str(tmp_path / "again.db"))
    try:
        report = replay(Pipeline(again, Clock()), io.BytesIO(exported.getvalue()), "export",
                        max_body=1 << 20)  # fmt: skip
        assert (report.tombstones, report.reconciled, report.rejected) == (3, 2, [])
        assert _kept(again) == before
        assert [again.tombstone("flow", IDS[0]), again.tombstone("document", "1001")] == tombstones
        late = Pipeline(again, Clock()).ingest([parse_line(flow("custom", 4, IDS[0]))])
        assert (late[0].outcome, late[0].reason) == ("ignored", "pruned")
    finally:
        again.close()


def test_a_bad_line_of_flowtracker_s_own_is_quarantined_with_its_fields(store: SQLiteStore) -> None:
    lines = [b'{"flowtracker": "tombstone", "kind": "flow", "id": "x", "state": 3}',
             b'{"flowtracker": "nonsense", "kind": "cat", "id": ""}']  # fmt: skip
    report = replay(Pipeline(store, Clock()), lines, "export", max_body=1 << 20)
    assert [error.details for _, error in report.rejected] == [
        {"events": "must be an integer", "pruned_at": "must be a string",
         "state": "must be a string"},
        {"flowtracker": "must be tombstone or reconciled, not 'nonsense'",
         "kind": "must be flow or document, not 'cat'",
         "id": "must be a subject's id (a non-empty string)"},
    ]  # fmt: skip
    assert store.totals("2000-01-01T00:00:00Z").quarantined == 2


JSON = {"Content-Type": "application/json"}
SPEC_EXAMPLE = "cd772958-e6f5-45a8-a4cd-68d02c341d58"  # in the demo: completed


def test_prune_on_the_command_line_and_what_reads_answer_then(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    assert _cli("replay", str(DATA / "demo.jsonl"), "--db", db).returncode == 0
    time.sleep(1.1)  # everything was received over a second ago
    for bare in ("400", "1.5", "soon"):
        refused = _cli("prune", "--older-than", bare, "--db", db)
        assert refused.returncode == 2 and "--older-than" in refused.stderr, refused.stderr
    assert "needs a unit" in _cli("prune", "--older-than", "400", "--db", db).stderr
    planned = _cli("prune", "--older-than", "1s", "--dry-run", "--db", db)
    assert planned.returncode == 0, planned.stderr
    when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
    assert re.fullmatch(
        f"would remove 37 flow instances \\(257 events\\) and 6 documents \\(20 snapshots\\) "
        f"last received before {when}\n"
        f"would remove 0 quarantined requests last seen before {when}\n",
        planned.stdout,
    ), planned.stdout
    assert _cli("status", SPEC_EXAMPLE, "--db", db).returncode == 0  # a dry run: still there
    done = _cli("prune", "--older-than", "1s", "--db", db)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        f"removed 37 flow instances \\(257 events\\) and 6 documents \\(20 snapshots\\) "
        f"last received before {when}\n"
        f"removed 0 quarantined requests last seen before {when}\n"
        "removed 0 changes of the change log\n"
        f"[\\d.]+ MiB of {re.escape(db)} given back to the file system\n",
        done.stdout,
    ), done.stdout
    removed = 37
    gone = _cli("status", SPEC_EXAMPLE, "--db", db)
    assert gone.returncode == 1 and "was pruned at" in gone.stderr and "completed" in gone.stderr
    # Over HTTP: 410 with the final state; a late callback is answered and not stored.
    app = create_app(Settings(db_path=db))
    with TestClient(app) as client:
        answer = client.get(f"/instances/{SPEC_EXAMPLE}")
        assert answer.status_code == 410
        error = answer.json()["error"]
        assert error["code"] == "pruned" and error["details"]["state"] == "completed"
        assert error["details"]["kind"] == "flow" and error["details"]["id"] == SPEC_EXAMPLE
        late = client.post("/callbacks/flow", content=flow("custom", 1, SPEC_EXAMPLE),
                           headers={"Content-Type": "application/json"})  # fmt: skip
        assert late.status_code == 200
        assert (late.json()["outcome"], late.json()["reason"]) == ("ignored", "pruned")
        assert client.get(f"/instances/{SPEC_EXAMPLE}").status_code == 410
        status = client.get("/status").json()
        assert status["pruned"]["flow"] == removed
    assert "--older-than DURATION" in _cli("prune", "--help").stdout
    assert "--retention DURATION" in _cli("serve", "--help").stdout


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run([sys.executable, "-m", "flowtracker", *args], capture_output=True,
                          text=True, timeout=120, env=environment)  # fmt: skip


def test_prune_while_callbacks_arrive_loses_nothing_and_never_revives(
    target: str, tmp_path: Path
) -> None:
    """A real server takes new instances that end at once and late callbacks for older
    ones, while `flowtracker prune --older-than 1s` runs again and again beside it."""
    answers: list[tuple[str, int, dict[str, object]]] = []
    stop = threading.Event()
    with serving(target, logs=tmp_path) as server:

        def load() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                n = 0
                while not stop.is_set():
                    n += 1
                    new = str(uuid.UUID(int=10_000 + n))
                    late = str(uuid.UUID(int=10_000 + random.randint(1, n)))
                    for instance, body in ((new, flow("completed", 5, new)),
                                           (late, flow("custom", 9, late))):  # fmt: skip
                        answer = client.post("/callbacks/flow", content=body, headers=JSON)
                        answers.append((instance, answer.status_code, answer.json()))
                    time.sleep(0.005)

        loader = threading.Thread(target=load)
        loader.start()
        pruned = 0
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                time.sleep(1.2)
                done = _cli("prune", "--older-than", "1s", "--db", target)
                assert done.returncode == 0, done.stderr
                pruned += int(done.stdout.split()[1])
        finally:
            stop.set()
            loader.join()
    assert pruned > 0 and len(answers) > 100, (pruned, len(answers))
    statuses = Counter(status for _, status, _ in answers)
    assert set(statuses) == {200}, (
        statuses,
        [body for _, status, body in answers if status != 200][:3],
    )
    store = open_store(target)
    try:
        ignored = {instance for instance, _, body in answers if body["reason"] == "pruned"}
        assert ignored, "no late callback met a tombstone: the test proved nothing"
        for instance in {instance for instance, _, _ in answers}:
            kept = store.subject_history("flow", instance) is not None
            gone = store.tombstone("flow", instance) is not None
            assert kept != gone, instance  # one or the other, never both, never neither
            if instance in ignored:
                assert gone, instance
        # Every stored event was acknowledged; the counters are what a recount gives.
        totals = _totals(store)
        with store.transaction() as tx:
            tx.recount()
        assert _totals(store) == totals
        assert totals["pruned"]["flow"] == pruned
    finally:
        store.close()


def test_serve_s_background_pruning_runs_on_one_receiver_at_a_time(any_store: Store) -> None:
    clock = Clock()
    _fill(any_store, clock)
    first = BackgroundRetention(any_store, 10 * DAY, clock=clock)
    second = BackgroundRetention(any_store, 10 * DAY, clock=clock)
    done = first.run_once()
    assert done is not None and done.subjects == {"flow": 2, "document": 1}
    assert second.run_once() is None  # the lease is the first one's for a while
    clock.advance(first.every + 1)
    again = second.run_once()  # then anyone's; nothing more to prune
    assert again is not None and again.subjects == {"flow": 0, "document": 0}
    assert first.every == EVERY_SECONDS  # ten days kept: about every hour


def test_a_subject_that_took_a_callback_after_it_was_chosen_stays(any_store: Store) -> None:
    """The re-check under the lock: chosen as prunable, then a callback, then the page."""
    clock = Clock()
    pipeline = _fill(any_store, clock)
    before = format_ns(clock() - 10 * DAY * 10**9)
    with any_store.transaction() as tx:
        chosen = tx.prunable("flow", FINISHED["flow"], before, 10)
    assert sorted(chosen) == sorted(IDS[:2])
    pipeline.ingest([parse_line(flow("custom", 30, IDS[0]))])  # IDS[0] is quiet no more
    with any_store.transaction() as tx:
        tx.lock(("flow", subject_id) for subject_id in chosen)
        assert tx.prune("flow", chosen, FINISHED["flow"], before, format_ns(clock())) == (1, 1)
    assert any_store.subject_history("flow", IDS[0]) is not None
    assert any_store.tombstone("flow", IDS[0]) is None
    assert any_store.tombstone("flow", IDS[1]) is not None


def test_a_replayed_tombstone_never_sits_beside_a_stored_subject(store: SQLiteStore) -> None:
    pipeline = Pipeline(store, Clock())
    pipeline.ingest([parse_line(flow("completed", 1, IDS[0]))])
    line = json.dumps({"flowtracker": "tombstone", "kind": "flow", "id": IDS[0],
                       "state": "completed", "events": 1, "first_event_at": None,
                       "last_event_at": None, "last_received_at": None,
                       "pruned_at": "2026-01-01T00:00:00.000000Z"}).encode()  # fmt: skip
    report = replay(pipeline, [line], "export", max_body=1 << 20)
    assert report.tombstones == 1 and store.tombstone("flow", IDS[0]) is None
    assert store.totals("2000-01-01T00:00:00Z").pruned["flow"] == 0
