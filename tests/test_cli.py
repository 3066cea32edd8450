"""The command line, run through click's runner against a database file."""

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from flowtracker import __version__
from flowtracker.cli import main
from flowtracker.settings import Settings
from flowtracker.web import create_app
from tests.conftest import DATA, INSTANCE, flow

DEMO = str(DATA / "demo.jsonl")
SPEC_EXAMPLE = "cd772958-e6f5-45a8-a4cd-68d02c341d58"  # cancelled, then completed arrives late


def run(*args: str, input: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture
def demo_db(tmp_path: Path) -> str:
    db = str(tmp_path / "demo.db")
    result = run("replay", DEMO, "--db", db)
    assert result.exit_code == 0
    return db


def test_replay_prints_a_summary_of_outcomes(tmp_path: Path) -> None:
    result = run("replay", DEMO, "--db", str(tmp_path / "x.db"))
    assert result.output == (
        "345 lines: 296 applied, 1 illegal, 2 ignored, 46 duplicate, 0 quarantined; "
        "45 out of order\n"
    )


def test_replaying_twice_only_adds_duplicates(demo_db: str) -> None:
    result = run("replay", DEMO, "--db", demo_db)
    assert result.output == (
        "345 lines: 0 applied, 0 illegal, 0 ignored, 345 duplicate, 0 quarantined; 0 out of order\n"
    )


def test_a_bad_line_is_reported_quarantined_and_does_not_stop_the_run(tmp_path: Path) -> None:
    lines = b"\n".join(
        [flow("custom", 1), b"{not json", b"", b'{"type": "completed"}', flow("completed", 2)]
    )
    db = str(tmp_path / "x.db")
    result = CliRunner().invoke(main, ["replay", "-", "--db", db], input=lines)
    assert result.exit_code == 0
    assert result.stdout == (
        "5 lines: 2 applied, 0 illegal, 0 ignored, 0 duplicate, 2 quarantined; 0 out of order\n"
    )
    assert result.stderr == (
        "line 2: invalid_json: body is not valid JSON: Expecting property name enclosed in "
        "double quotes: line 1 column 2 (char 1)\n"
        "line 4: invalid_event: invalid callback: version: required; flow_instance_id: "
        "required; event_created: required\n"
    )
    quarantine = json.loads(run("quarantine", "--db", db, "--json").output)
    assert [
        (q["source"], q["body"], q["error"]["code"], q["count"]) for q in quarantine["items"]
    ] == [
        ("replay <stdin>:4", '{"type": "completed"}', "invalid_event", 1),
        ("replay <stdin>:2", "{not json", "invalid_json", 1),
    ]


@pytest.mark.parametrize(
    ("args", "path"),
    [
        ([SPEC_EXAMPLE], f"/instances/{SPEC_EXAMPLE}"),
        (["9221714692413586300"], "/documents/9221714692413586300"),
        ([], "/status"),
    ],
)
def test_status_json_is_what_the_read_api_serves(demo_db: str, args: list[str], path: str) -> None:
    with sqlite3.connect(demo_db) as db:  # the demo was received long ago
        db.execute(  # and its hour, which the stuck lists' index holds
            "UPDATE instances SET last_received_at = '2000-01-01T00:00:00.000000Z', "
            "received_hour = 262968"
        )
    env = {"FLOWTRACKER_STUCK_AGE": str(100 * 365 * 86_400)}  # so nothing is stuck yet
    printed = json.loads(run("status", *args, "--db", demo_db, "--json", env=env).output)
    settings = Settings.from_env(env, db_path=demo_db)
    with TestClient(create_app(settings)) as client:
        served = client.get(path).json()
    if path == "/status":
        assert (printed.pop("uptime_seconds"), served.pop("uptime_seconds") > 0) == (None, True)
        assert printed["stuck"] == 0  # 5 with the default age of 7 days
    assert printed == served


def test_replay_takes_the_body_limit_from_the_environment(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    result = run("replay", "-", "--db", db, input=flow("custom", 1),
                 env={"FLOWTRACKER_MAX_BODY": "50"})  # fmt: skip
    assert result.stdout.startswith("1 lines: 0 applied")
    assert result.stderr == f"line 1: payload_too_large: line is {len(flow('custom', 1))} " \
        "bytes, over the limit of 50\n"  # fmt: skip


def test_status_of_an_instance_reads_as_a_history(demo_db: str) -> None:
    result = run("status", SPEC_EXAMPLE, "--db", demo_db)
    assert result.output.splitlines()[0] == (
        f"flow instance {SPEC_EXAMPLE}: completed (terminal), 2 anomalies"
    )
    assert result.output.splitlines()[-1].split() == [
        "2026-10-05T01:00:41.486272848Z",
        "cancelled",
        "illegal,",
        "2",
        "deliveries:",
        "instance",
        "already",
        "completed",
    ]


def test_status_of_a_document(demo_db: str) -> None:
    result = run("status", "9221714692413586300", "--db", demo_db)
    assert result.output.splitlines()[0] == (
        "document 9221714692413586300 'Agreement 1260': closed, object_version 6, "
        "signed and sealed, 1 anomalies"
    )


def test_status_summary(demo_db: str) -> None:
    data = json.loads(run("status", "--db", demo_db, "--json").output)
    del data["last_callback_at"]
    assert data == {
        "version": __version__,
        "uptime_seconds": None,
        "callbacks": {"applied": 295, "illegal": 2, "ignored": 2, "duplicate": 46},
        "out_of_order": 45,
        "quarantined": 0,
        "pruned": {"flow": 0, "document": 0},
        "instances": {
            "in_progress": 5,
            "completed": 23,
            "failed": 3,
            "cancelled": 3,
            "rejected": 4,
            "timed_out": 4,
        },
        "documents": {
            "preparation": 0,
            "awaiting_start": 0,
            "pending": 0,
            "closed": 4,
            "canceled": 1,
            "rejected": 1,
            "timedout": 0,
            "document_error": 0,
        },
        "stuck": 0,
    }


def test_unknown_id_is_one_clear_line_and_exit_1(demo_db: str) -> None:
    result = run("status", INSTANCE, "--db", demo_db)
    assert (result.exit_code, result.output) == (
        1,
        f"Error: no flow instance or document '{INSTANCE}'\n",
    )


@pytest.mark.parametrize("command", ["status", "rebuild", "quarantine"])
def test_reading_commands_do_not_create_a_database(tmp_path: Path, command: str) -> None:
    db = tmp_path / "missing.db"
    result = run(command, "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: no flowtracker database at {db} yet "
        "(set --db or FLOWTRACKER_DB, or replay a file first)\n",
    )
    assert not db.exists()


def test_db_comes_from_the_environment(demo_db: str) -> None:
    result = run("rebuild", env={"FLOWTRACKER_DB": demo_db})
    assert result.output == (
        "rebuilt 48 subjects from 299 events: 0 states and 0 outcomes changed\n"
    )


def test_empty_quarantine(demo_db: str) -> None:
    assert run("quarantine", "--db", demo_db).output == "the quarantine is empty\n"


@pytest.mark.parametrize("command", ["replay", "status", "rebuild", "quarantine", "migrate"])
def test_every_command_has_help_naming_the_db_option(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--db FILE" in result.output
    assert "FLOWTRACKER_DB" in result.output


def tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master"))


@pytest.mark.parametrize(
    "command", [["status"], ["quarantine"], ["rebuild"], ["replay", DEMO], ["migrate"]]
)
def test_another_programs_database_is_refused_and_left_alone(
    tmp_path: Path, command: list[str]
) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    before = app.read_bytes()
    result = run(*command, "--db", str(app))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {app} is not a flowtracker database (it holds other tables: orders); "
        "flowtracker leaves it alone: give it a file of its own with --db\n",
    )
    assert (tables(app), app.read_bytes()) == (["orders"], before)


@pytest.mark.parametrize("command", ["status", "quarantine"])
def test_reading_commands_create_nothing_in_an_empty_file(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = run(command, "--db", str(empty))
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: no flowtracker database at {empty} yet")
    assert empty.read_bytes() == b""


def test_a_file_that_is_not_sqlite_is_named(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but long enough to look like a header of one\n" * 20)
    for command in (["status"], ["replay", DEMO]):
        result = run(*command, "--db", str(notes))
        assert (result.exit_code, result.output) == (
            1,
            f"Error: {notes} is not a SQLite database (file is not a database)\n",
        )


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    db = tmp_path / "nowhere" / "x.db"
    result = run("replay", DEMO, "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot open {db}: there is no directory {db.parent}\n",
    )


def older(db: Path, stop_before: str) -> None:
    """A flowtracker database as a version before `stop_before` left it."""
    from sqlite_utils import Database

    from flowtracker.store.sqlite.schema import migrations

    made = Database(db)
    migrations.apply(made, stop_before=stop_before)
    made.close()


def test_an_older_schema_is_read_only_after_migrate(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    older(db, "m008_events_keyed_by_subject_order")
    before = db.read_bytes()
    result = run("status", "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {db} needs migrating to this flowtracker (m008_events_keyed_by_subject_order, "
        f"m009_canonical_subject_times, m010_received_hour, m011_change_feed, "
        f"m012_reconciliation, m013_retention, m014_activity_order): run "
        f"`flowtracker migrate --db "
        f"{db}` (or another process is migrating it now)\n",
    )
    assert db.read_bytes() == before
    assert run("migrate", "--db", str(db)).output == (
        f"{db}: applied 7 migrations (m008_events_keyed_by_subject_order, "
        "m009_canonical_subject_times, m010_received_hour, m011_change_feed, "
        "m012_reconciliation, m013_retention, m014_activity_order)\n"
    )
    assert run("migrate", "--db", str(db)).output == f"{db}: already up to date\n"
    assert run("status", "--db", str(db)).exit_code == 0


def test_a_schema_that_lacks_only_data_rewrites_is_read_with_a_note(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    assert run("migrate", "--db", str(db)).exit_code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_canonical_subject_times'")
    conn.close()
    before = db.read_bytes()
    result = run("status", "--db", str(db))
    assert result.exit_code == 0
    assert result.stderr == (
        f"note: {db} lacks migrations (m009_canonical_subject_times); it reads as it is, "
        "and `flowtracker migrate` brings it up to date\n"
    )
    assert result.stdout.startswith("callbacks    none\n")
    assert db.read_bytes() == before
    assert run("migrate", "--db", str(db)).output == (
        f"{db}: applied 1 migration (m009_canonical_subject_times)\n"
    )


def test_m009_spells_stored_subject_times_canonically(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    assert run("replay", DEMO, "--db", str(db)).exit_code == 0
    with sqlite3.connect(db) as conn:  # as versions before m009 stored them
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm009_canonical_subject_times'")
        conn.execute(
            "UPDATE instances SET first_event_at = replace(first_event_at, 'Z', '0Z') WHERE id = ?",
            (SPEC_EXAMPLE,),
        )
    spelled = json.loads(run("status", SPEC_EXAMPLE, "--json", "--db", str(db)).stdout)
    assert spelled["first_event_at"].endswith("0Z")
    assert run("migrate", "--db", str(db)).exit_code == 0
    shown = json.loads(run("status", SPEC_EXAMPLE, "--json", "--db", str(db)).stdout)
    assert shown["first_event_at"] == spelled["first_event_at"][:-2].rstrip("0") + "Z"


def test_replay_migrates_an_older_flowtracker_database(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    older(db, "m009_canonical_subject_times")
    assert run("replay", DEMO, "--db", str(db)).exit_code == 0
    assert run("migrate", "--db", str(db)).output == f"{db}: already up to date\n"


def test_m010_gives_each_subject_the_hour_of_its_last_receipt(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    older(db, "m010_received_hour")
    with sqlite3.connect(db) as conn:  # a subject as versions before m010 stored it
        conn.execute(
            "INSERT INTO instances (id, seq, state, anomalies, events, last_received_at) "
            "VALUES (?, 1, 'in_progress', 0, 1, '2000-01-01T01:30:00.000000Z')",
            (SPEC_EXAMPLE,),
        )
    conn.close()
    assert run("migrate", "--db", str(db)).output == (
        f"{db}: applied 5 migrations (m010_received_hour, m011_change_feed, m012_reconciliation, "
        "m013_retention, m014_activity_order)\n"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT received_hour FROM instances").fetchall() == [(262969,)]
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "instances_state_received_hour" in indexes
    assert not {"idx_instances_state_last_received_at", "idx_flow_events_outcome"} & indexes
