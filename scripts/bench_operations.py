"""Benchmark the operations of year two (SPEC 14) on a large database: export and prune.

1. Builds a SQLite database of N instances with E events (default 100,000 and 1,000,000)
   through the engine's batch path (`scripts/bench_scale.build`: four events per instance
   and an ending for four in five), then dates every last receipt 500 days back, as if
   the callbacks had come then.
2. `export` of the whole database to a file: lines, seconds, lines/s, MB/s.
3. `prune --older-than 400d` of the whole database (every finished instance: about 80%):
   subjects and events removed, seconds, events/s; then, timed apart, what incremental
   vacuum gave back (`prune` does both).
4. With `--postgres`, the same on PostgreSQL (a throwaway server of its own, fsync on, as
   the tests start one): the database is copied there first (`flowtracker copy`), then
   exported and pruned.

Asserts nothing; prints figures. Usage: python scripts/bench_operations.py [--instances N]
[--events E] [--postgres]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_scale import build

from flowtracker.engine.timestamps import format_ns, parse_timestamp
from flowtracker.ingest.retention import prune
from flowtracker.reads.export import export
from flowtracker.store.copying import copy
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Store
from flowtracker.store.tables import HOUR_NS
from tests.postgres_server import PostgresServer, binaries

DAY_NS = 86_400 * 1_000_000_000
LONG_AGO = "2025-01-01T00:00:00.000000Z"  # every last receipt, after the build


def age(path: Path) -> None:
    """Every subject's last receipt 500 days back (the build took them now)."""
    hour = parse_timestamp(LONG_AGO).ns // HOUR_NS
    with sqlite3.connect(path) as conn:
        for table in ("instances", "documents"):
            conn.execute(f"UPDATE {table} SET last_received_at = ?, received_hour = ?",
                         (LONG_AGO, hour))  # fmt: skip


def measure(store: Store, directory: Path, name: str) -> None:
    out = directory / f"{name}.jsonl"
    started = time.perf_counter()
    with out.open("wb") as file:
        lines = export(store, file)
    seconds = time.perf_counter() - started
    size = out.stat().st_size / 2**20
    print(f"{name}: export {lines:,} lines ({size:,.0f} MB) in {seconds:.1f} s: "
          f"{lines / seconds:,.0f} lines/s, {size / seconds:,.1f} MB/s", flush=True)  # fmt: skip
    out.unlink()
    before = format_ns(time.time_ns() - 400 * DAY_NS)
    started = time.perf_counter()
    done = prune(store, before, changes_before=None, reclaim=False)
    seconds = time.perf_counter() - started
    subjects, events = sum(done.subjects.values()), sum(done.events.values())
    rates = f"{events / seconds:,.0f} events/s, {subjects / seconds:,.0f} subjects/s"
    print(f"{name}: prune {subjects:,} subjects with {events:,} events in {seconds:.1f} s: "
          f"{rates}", flush=True)  # fmt: skip
    started = time.perf_counter()
    space = store.reclaim()
    print(f"{name}: {space} ({time.perf_counter() - started:.1f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="measure PostgreSQL too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowtracker-ops-") as tmp:
        directory = Path(tmp)
        path = directory / "big.db"
        started = time.perf_counter()
        build(path, args.instances, args.events)
        age(path)
        size = os.path.getsize(path) / 2**20
        print(f"built {args.events:,} events over {args.instances:,} instances in "
              f"{time.perf_counter() - started:.0f} s ({size:,.0f} MB)", flush=True)  # fmt: skip
        if args.postgres:
            found = binaries()
            if found is None:
                sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
            server = PostgresServer(found, fsync=True)
            source, target = (
                open_store(str(path), access="read"),
                open_store(server.database("ops")),
            )
            try:
                started = time.perf_counter()
                copy(source, target, lambda n: None)
                print(f"copied to PostgreSQL in {time.perf_counter() - started:.0f} s",
                      flush=True)  # fmt: skip
                measure(target, directory, "postgresql")
            finally:
                source.close()
                target.close()
                server.close()
        store = open_store(str(path))
        try:
            measure(store, directory, "sqlite")
        finally:
            store.close()
        print(f"sqlite: the file is {os.path.getsize(path) / 2**20:,.0f} MB after pruning "
              f"({size:,.0f} MB before)")  # fmt: skip


if __name__ == "__main__":
    main()
