"""The scripts under scripts/ still run: each once, on a tiny load, as a user would."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_engine_prints_its_figures() -> None:
    out = run("scripts/bench_engine.py", "--events", "600", "--instances", "60")
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == [
        "bare executemany insert", "pipeline (replay)", "ratio pipeline/bare",
        "parse-hash-insert loop", "ratio pipeline/loop", "peak RSS", "RSS before pipeline",
        "RSS through pipeline",
    ]  # fmt: skip


@pytest.mark.slow
def test_bench_http_prints_its_figures() -> None:
    out = run("scripts/bench_http.py", "--seconds", "1", "--workers", "1", "--connections",
              "2", "--tool", "python")  # fmt: skip
    rows = out.splitlines()
    assert rows[1].split("|")[0].split() == ["what"]
    assert [row.split("|")[0].split()[-1] for row in rows[2:4]] == ["bare", "service"]
    assert [row.split("|")[1].split()[-1] for row in rows[2:4]] == ["0", "0"]  # no errors
    assert "CPU" in rows[3].split("|")[3]  # the service's CPU against bare's


def test_bench_stages_prints_each_stage() -> None:
    out = run("scripts/bench_stages.py", "--callbacks", "300", "--warm", "300")
    stages = [line.split()[:2] for line in out.splitlines()[1:]]
    assert [stage for process, stage in stages if process == "writer"] == [
        "wire", "parse", "reads", "fold", "writes", "commit", "total",
    ]  # fmt: skip


def test_make_demo_is_deterministic(tmp_path: Path) -> None:
    run("scripts/make_demo.py", "--output", str(tmp_path / "demo.jsonl"))
    assert (tmp_path / "demo.jsonl").read_bytes() == (ROOT / "data" / "demo.jsonl").read_bytes()


def test_bench_route_prints_its_figures() -> None:
    out = run("scripts/bench_route.py", "--requests", "500")
    labels = [line.split(":")[0].strip() for line in out.splitlines()[1:]]
    assert labels == ["bare Starlette", "callback route", "route + log"]


def test_lifecycle_tables_print() -> None:
    assert run("scripts/lifecycle_tables.py").startswith("Flow instance (rows: callback type")


@pytest.mark.slow
def test_bench_scale_prints_its_figures() -> None:
    out = run("scripts/bench_scale.py", "--instances", "300", "--events", "3000",
              "--workload", "1000", "--requests", "40", "--seconds", "1")  # fmt: skip
    labels = [
        " ".join(line.split(":")[0].split(" p50")[0].split()) for line in out.splitlines()[2:]
    ]
    assert labels == [
        "database", "page cache", "callbacks over HTTP",
        "existing subjects, small database", "existing subjects, big database",
        "new subjects, small database", "new subjects, big database",
        "ingest, empty database", "ingest, big database", "GET /instances/{id}",
        "GET /status", "GET /instances?state=in_progress", "server RSS (with its writer)",
    ]  # fmt: skip


@pytest.mark.slow
def test_crash_test_on_postgres_loses_nothing(postgres: object) -> None:
    # Its own PostgreSQL server (fsync on); the fixture only makes sure one can start.
    out = run("scripts/crash_test.py", "--postgres", "--cycles", "3", "--callbacks", "600",
              "--clients", "4")  # fmt: skip
    result = dict(pair.split("=") for pair in out.splitlines()[-1].split())
    assert (result["lost"], result["stored_twice"]) == ("0", "0")
    assert result["states_rebuild_changed"] == result["counters_off"] == "0"


@pytest.mark.slow
def test_crash_test_loses_nothing() -> None:
    out = run("scripts/crash_test.py", "--cycles", "3", "--callbacks", "600", "--clients", "4")
    result = dict(pair.split("=") for pair in out.splitlines()[-1].split())
    assert (result["lost"], result["stored_twice"], result["integrity_ok"]) == ("0", "0", "1")
    assert result["states_rebuild_changed"] == result["counters_off"] == "0"


@pytest.mark.slow
def test_soak_prints_rss_and_errors() -> None:
    out = run("scripts/soak.py", "--minutes", "0.05", "--rate", "50")
    lines = out.splitlines()
    assert lines[1].startswith("minute 1: ") and " 0 errors, " in lines[1]
    assert lines[-1].startswith("RSS start ")


def test_wal_pages_prints_pages_per_commit_by_btree() -> None:
    out = run("scripts/wal_pages.py", "--warm", "500", "--commits", "5", "--batch", "10")
    lines = out.splitlines()
    assert lines[1].startswith("5 commits of 10: ")
    trees = {line.split()[1] for line in lines[2:]}
    assert {"flow_event_keys", "flow_events", "instances", "counters"} <= trees
    assert "?" not in trees  # every page has an owner


def test_bench_operations_prints_export_and_prune_figures() -> None:
    out = run("scripts/bench_operations.py", "--instances", "200", "--events", "1000")
    assert "sqlite: export 1,000 lines" in out
    # Four in five instances end: those are pruned, with their events.
    pruned = re.search(r"sqlite: prune ([\d,]+) subjects with ([\d,]+) events", out)
    assert pruned is not None and 120 <= int(pruned[1].replace(",", "")) <= 200, out
    assert "given back to the file system" in out
