"""Reading a database that cannot be written: a read-only file system (a tmpfs mounted by
the test, so this needs root, as CI has), and another program's WAL database, which is
judged from its file alone so that not even SQLite's side files appear next to it; and a
database in use, which is judged through its WAL, never from its file alone."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_cli import DEMO, SPEC_EXAMPLE, run


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)


def test_reads_work_on_a_read_only_file_system(tmp_path: Path, read_only_disk: Path) -> None:
    made = tmp_path / "demo.db"
    assert run("replay", DEMO, "--db", str(made)).exit_code == 0
    shutil.copy(made, read_only_disk / "demo.db")  # closed cleanly: no WAL beside it
    remount_read_only(read_only_disk)
    db = str(read_only_disk / "demo.db")
    expected = run("status", "--db", str(made)).output
    assert run("status", "--db", db).output == expected
    assert run("status", SPEC_EXAMPLE, "--db", db).exit_code == 0
    assert run("quarantine", "--db", db).output == "the quarantine is empty\n"
    exported = run("export", "-", "--db", db)
    assert exported.exit_code == 0 and exported.output.count("\n") == 345 + 1  # and its total
    assert f"exported 345 lines from {db}" in exported.output
    assert sorted(os.listdir(read_only_disk)) == ["demo.db"]


def test_a_write_ahead_log_on_a_read_only_file_system_is_named(
    tmp_path: Path, read_only_disk: Path
) -> None:
    made = tmp_path / "live.db"
    assert run("replay", DEMO, "--db", str(made)).exit_code == 0
    live = sqlite3.connect(made)  # a writer whose last commit is only in the WAL
    live.execute("PRAGMA wal_autocheckpoint = 0")
    live.execute("UPDATE counters SET value = 4242 WHERE name = 'quarantine.rows'")
    live.commit()
    for name in ("live.db", "live.db-wal"):
        shutil.copy(tmp_path / name, read_only_disk / name)
    live.close()
    assert (read_only_disk / "live.db-wal").stat().st_size > 0
    remount_read_only(read_only_disk)
    db = read_only_disk / "live.db"
    result = run("status", "--db", str(db))
    assert (result.exit_code, result.output) == (
        1,
        f"Error: cannot read {db}: SQLite needs to write {db}-shm beside it to read its "
        f"write-ahead log (unable to open database file); give this user write access to "
        f"{read_only_disk}\n",
    )


@pytest.mark.parametrize("command", [["status"], ["replay", DEMO]])
def test_another_programs_wal_database_gets_no_side_files(
    tmp_path: Path, command: list[str]
) -> None:
    app = tmp_path / "app.db"
    with sqlite3.connect(app) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.close()
    before = (sorted(os.listdir(tmp_path)), app.read_bytes())
    result = run(*command, "--db", str(app))
    assert result.exit_code == 1
    assert "is not a flowtracker database" in result.output
    assert (sorted(os.listdir(tmp_path)), app.read_bytes()) == before


def test_a_database_being_checkpointed_is_opened_through_its_wal(tmp_path: Path) -> None:
    """A server's checkpoint rewrites pages of the file while other processes open it: a
    page that is newer in the WAL may be half-written in the file meanwhile. Opening must
    go through the WAL then, never judge the file alone (once: `database disk image is
    malformed` from `flowtracker prune` beside a busy server)."""
    made = tmp_path / "live.db"
    assert run("replay", DEMO, "--db", str(made)).exit_code == 0
    live = sqlite3.connect(made)  # the server: its last commits only in the WAL
    live.execute("PRAGMA wal_autocheckpoint = 0")
    live.execute("INSERT INTO health_probe (id, filler) VALUES (7, zeroblob(200000))")
    live.commit()  # the file grew: page 1 (its size, the schema's root) is in the WAL
    try:
        before = run("status", "--db", str(made)).output
        with open(made, "r+b") as file:  # the checkpoint, halfway through page 1
            file.seek(100)
            file.write(b"\xff" * 3996)
        assert run("status", "--db", str(made)).output == before
        pruned = run("prune", "--older-than", "1d", "--db", str(made))
        when = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
        assert re.fullmatch(
            f"removed 0 flow instances \\(0 events\\) and 0 documents \\(0 snapshots\\) "
            f"last received before {when}\n"
            f"removed 0 quarantined requests last seen before {when}\n"
            "removed 0 changes of the change log\n"
            f"[\\d.]+ MiB of {re.escape(str(made))} given back to the file system\n",
            pruned.output,
        ), pruned.output
    finally:
        live.close()
