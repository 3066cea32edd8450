"""Export and backup (spec 14): an export replays into the same states, histories and
outcomes, on either backend; a backup of a live SQLite database is consistent."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowtracker.engine.parsing import parse_flow, parse_line
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.replay import replay
from flowtracker.ingest.retention import prune
from flowtracker.reads import export as exporting
from flowtracker.reads.export import export, one_line
from flowtracker.store import copying
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Store
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.store.sqlite.backup import backup
from tests.conftest import DATA, flow
from tests.test_postgres import _everything, _without_arrival

DEMO = DATA / "demo.jsonl"


def _replay(target: str, lines: io.BufferedIOBase | io.BytesIO, name: str) -> None:
    store = open_store(target)
    try:
        replay(Pipeline(store), lines, name, batch_size=5, max_body=1 << 20)
    finally:
        store.close()


def test_an_export_replays_into_the_same_states_histories_and_outcomes(
    target: str, tmp_path: Path
) -> None:
    with DEMO.open("rb") as lines:
        _replay(target, lines, DEMO.name)
    store = open_store(target)
    try:
        # A pretty-printed JSON body and a form-encoded document callback, taken over
        # HTTP, come out as one line each.
        Pipeline(store).ingest([parse_flow(b'{\n "type": "custom",\r\n "version": 1,\n'
            b' "event_created": "2026-10-01T10:00:00Z", "callback_name": "x",\n'
            b' "flow_instance_id": "' + str(uuid.UUID(int=5)).encode() + b'"}')])  # fmt: skip
        exported = io.BytesIO()
        lines = export(store, exported)
        before = _without_arrival(_everything(store))
    finally:
        store.close()
    assert lines == 346 and exported.getvalue().count(b"\n") == 346
    again = str(tmp_path / "again.db")
    _replay(again, io.BytesIO(exported.getvalue()), "export")
    replayed = open_store(again, access="read")
    try:
        after = _without_arrival(_everything(replayed))
    finally:
        replayed.close()
    assert after == before


def test_a_form_body_becomes_the_json_line_of_the_same_snapshot() -> None:
    from urllib.parse import urlencode

    from flowtracker.engine.parsing import parse_document

    document = (
        '{"id": "7", "status": "closed", "object_version": 3, "mtime": "2026-10-01T10:00:00Z"}'
    )
    form = urlencode({"document_id": "7", "document_signed_and_sealed": "true",
                      "document_json": document}).encode()  # fmt: skip
    sent = parse_document(form, "application/x-www-form-urlencoded")
    line = one_line(form, "application/x-www-form-urlencoded")
    assert b"\n" not in line and parse_line(line).dedup_key == sent.dedup_key


def test_a_backup_of_a_live_database_is_consistent_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    store = SQLiteStore(path)
    stop = threading.Event()
    taken = [0]

    def load() -> None:  # callbacks go on arriving while the backup runs
        pipeline = Pipeline(store)
        n = 0
        while not stop.is_set():
            batch = [parse_line(flow("custom", n, str(uuid.UUID(int=n + i)))) for i in range(50)]
            pipeline.ingest(batch)
            n += 50
            taken[0] = n

    loader = threading.Thread(target=load)
    loader.start()
    try:
        while taken[0] < 500:
            pass
        size = backup(store, tmp_path / "copy.db")
    finally:
        stop.set()
        loader.join()
        store.close()
    assert size > 0 and not list(tmp_path.glob(".copy.db.partial"))
    copy = sqlite3.connect(tmp_path / "copy.db")
    events = copy.execute("SELECT COUNT(*) FROM flow_events").fetchone()[0]
    subjects = copy.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    counted = copy.execute("SELECT value FROM counters WHERE name = 'flow.state.in_progress'")
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert events >= 500 and events % 50 == 0  # whole transactions only
    assert subjects == events == counted.fetchone()[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run([sys.executable, "-m", "flowtracker", *args], capture_output=True,
                          text=True, timeout=60, env=environment)  # fmt: skip


def test_backup_and_export_on_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    assert _cli("replay", str(DEMO), "--db", db).returncode == 0
    done = _cli("backup", str(tmp_path / "b.db"), "--db", db)
    assert done.returncode == 0 and "integrity ok" in done.stdout
    again = _cli("backup", str(tmp_path / "b.db"), "--db", db)
    assert again.returncode == 1 and "exists already" in again.stderr
    on_postgres = _cli("backup", str(tmp_path / "c.db"), "--db", "postgresql://u:pw@h/d")
    assert on_postgres.returncode == 1 and "pg_dump" in on_postgres.stderr
    out = tmp_path / "e.jsonl"
    exported = _cli("export", str(out), "--db", db)
    assert exported.returncode == 0 and "exported 345 lines" in exported.stderr
    assert out.read_bytes().count(b"\n") == 345
    assert _cli("export", "--db", db).stdout.count("\n") == 345


LATER = "2100-01-01T00:00:00.000000Z"  # every subject that ended was last received before


def _meddle(store: Store) -> None:
    """What a busy server does meanwhile: prunes every subject that ended, takes a new one."""
    prune(store, LATER, changes_before=None, reclaim=False)
    Pipeline(store).ingest([parse_flow(flow("custom", 1, str(uuid.UUID(int=77))))])


def test_an_export_is_one_snapshot_of_a_database_that_changes_meanwhile(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page of an export is read in one snapshot: subjects pruned while it ran were
    once in neither its tombstones nor its events (found with `export` beside a server
    pruning under load: 162 of 14,767 instances missing, exit code 0)."""
    with DEMO.open("rb") as lines:
        _replay(target, lines, DEMO.name)
    monkeypatch.setattr(exporting, "PAGE", 10)  # many reads: the changes fall between them
    store = open_store(target)
    try:
        before = _without_arrival(_everything(store))
        exported = _Meddling(lambda: _meddle(store))
        export(store, exported)
        assert store.totals("2000-01-01T00:00:00Z").pruned["flow"] > 0  # it did meddle
    finally:
        store.close()
    again = str(tmp_path / "again.db")
    _replay(again, io.BytesIO(exported.getvalue()), "export")
    replayed = open_store(again, access="read")
    try:
        assert _without_arrival(_everything(replayed)) == before
    finally:
        replayed.close()


def test_a_copy_is_one_snapshot_of_a_source_that_changes_meanwhile(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found beside a server under load: events copied without their subjects, subjects
    both live and tombstoned, counters that no recount gives; `copy` said it went well."""
    with DEMO.open("rb") as lines:
        _replay(target, lines, DEMO.name)
    monkeypatch.setattr(copying, "PAGE", 10)
    source = open_store(target)
    destination = open_store(str(tmp_path / "copy.db"))
    try:
        before = (_everything(source), source.changes(0, 10_000), source.change_clock())
        meddled: list[int] = []

        def progress(rows: int) -> None:
            if not meddled:
                meddled.append(rows)
                _meddle(source)

        copying.copy(source, destination, progress)
        assert meddled and source.totals("2000-01-01T00:00:00Z").pruned["flow"] > 0
        after = (_everything(destination), destination.changes(0, 10_000),
                 destination.change_clock())  # fmt: skip
        assert after == before
        totals = destination.totals("2000-01-01T00:00:00Z")
        with destination.transaction() as tx:
            tx.recount()
        assert destination.totals("2000-01-01T00:00:00Z") == totals
    finally:
        source.close()
        destination.close()


class _Meddling(io.BytesIO):
    """An output that runs `meddle` once, at the first line written to it."""

    def __init__(self, meddle: Callable[[], None]) -> None:
        super().__init__()
        self._meddle: Callable[[], None] | None = meddle

    def write(self, data: Any) -> int:
        if self._meddle is not None:
            meddle, self._meddle = self._meddle, None
            meddle()
        return super().write(data)
