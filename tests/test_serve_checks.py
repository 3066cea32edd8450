"""Errors that say what is wrong (spec 14), as a new operator meets them: `serve` on a port
in use says so before it touches the database; a second `serve` on a SQLite file works and
says it shares the file; the simulator refuses a seed already sent when it is to check."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx

from flowtracker.scrive.scenarios import scenario
from tests.conftest import flow
from tests.server import free_port, serving
from tests.test_simulate import simulate

JSON = {"content-type": "application/json"}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run([sys.executable, "-m", "flowtracker", *args], capture_output=True,
                          text=True, timeout=60, env=environment)  # fmt: skip


def test_serve_on_a_port_in_use_says_so_and_creates_no_database(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = _cli("serve", "--db", str(tmp_path / "new.db"), "--port", str(port))
    assert done.returncode == 1
    assert done.stderr == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert list(tmp_path.iterdir()) == []  # no database, no lock file


def test_a_second_server_on_one_sqlite_file_works_and_says_it_shares_it(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    with serving(db) as first, serving(db) as second:
        for server, second_ in ((first, 1), (second, 2)):
            body = flow("custom", second_)
            answer = httpx.post(server.url + "/callbacks/flow", content=body, headers=JSON)
            assert answer.status_code == 200 and answer.json()["outcome"] == "applied"
        assert httpx.get(first.url + "/status").json()["callbacks"]["applied"] == 2
        assert "note: another process serves" not in first.output()
        assert f"note: another process serves {db} already" in second.output()


def test_the_simulator_refuses_a_seed_it_sent_before_when_it_is_to_check(tmp_path: Path) -> None:
    with serving(tmp_path / "sim.db") as server:
        args = ["--url", server.url, "--instances", "5", "--seed", "3"]
        assert simulate(*args).returncode == 0
        again = simulate(*args, "--check")
        told = simulate(*args)
    subjects = scenario(3, 5)
    first, last = subjects[0], subjects[-1]
    said = (f"seed 3 was sent to this tracker before ({first.kind} {first.id} and "
            f"{last.kind} {last.id} are there)")  # fmt: skip
    assert (again.returncode, again.stdout, again.stderr) == (1, "", (
        f"Error: {said}: the check would compare against states the first run left; "
        "give another --seed, or a tracker on a fresh database\n"
    ))  # fmt: skip
    assert told.returncode == 0
    assert told.stdout.splitlines()[0] == f"warning: {said}: every callback will be a duplicate"
