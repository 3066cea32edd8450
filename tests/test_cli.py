"""The command line, run through click's runner against a database file."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from flowtracker import __version__, views
from flowtracker.cli import main
from flowtracker.sqlite_store import SQLiteStore
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


def test_status_json_is_what_the_read_api_serves(demo_db: str) -> None:
    result = run("status", SPEC_EXAMPLE, "--db", demo_db, "--json")
    store = SQLiteStore(demo_db)
    assert json.loads(result.output) == views.instance(store, SPEC_EXAMPLE)
    store.close()


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
        f"Error: no database at {db} (set --db or FLOWTRACKER_DB, or replay a file first)\n",
    )
    assert not db.exists()


def test_db_comes_from_the_environment(demo_db: str) -> None:
    result = run("rebuild", env={"FLOWTRACKER_DB": demo_db})
    assert result.output == (
        "rebuilt 48 subjects from 299 events: 0 states and 0 outcomes changed\n"
    )


def test_empty_quarantine(demo_db: str) -> None:
    assert run("quarantine", "--db", demo_db).output == "the quarantine is empty\n"


@pytest.mark.parametrize("command", ["replay", "status", "rebuild", "quarantine"])
def test_every_command_has_help_naming_the_db_option(command: str) -> None:
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "--db FILE" in result.output
    assert "FLOWTRACKER_DB" in result.output
