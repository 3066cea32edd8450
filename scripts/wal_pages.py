"""Which tables and indexes the WAL pages of ingest commits belong to.

Ingests with the checkpoints off, reads the page number of every frame in the WAL, and
maps each page to the b-tree that owns it (SQLite's `dbstat`). Prints pages per commit by
b-tree. Asserts nothing.

- By default, a fresh database: --warm callbacks of bench_http's workload in batches of
  500, then --commits commits of --batch callbacks (17: what the writer commits under
  load before the gathering of 2026-11-28, 31 after).
- With --db PATH, an existing database, such as the one bench_scale.py builds: --commits
  batches of --batch new events of bench_engine's workload. They stay in it. The event
  tables are too big to map page by page: what no other b-tree owns is counted as "event
  rows (or free pages)".

Usage: python scripts/wal_pages.py [--batch 17] [--commits 200] [--db PATH]
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_engine import make_lines
from bench_http import deliveries

from flowtracker.engine.parsing import parse_line
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.sqlite.backend import SQLiteStore

EVENT_TABLES = ("flow_events", "document_snapshots")


def wal_pages(wal: bytes) -> Counter[int]:
    """How many frames each page has in a WAL file (see SQLite's file format, WAL)."""
    (page_size,) = struct.unpack(">I", wal[8:12])
    frames: Counter[int] = Counter()
    for offset in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
        frames[struct.unpack(">I", wal[offset : offset + 4])[0]] += 1
    return frames


def owners(store: SQLiteStore, *, whole: bool) -> dict[int, str]:
    """Page number -> the b-tree that owns it; without `whole`, the event tables left out."""
    conn = store.connections._writer
    found: dict[int, str] = {}
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0]:
        # Incremental vacuum keeps pointer-map pages: the second page, then one every
        # (page size / 5 + 1) pages; each records where the pages after it belong.
        size, pages = (conn.execute(f"PRAGMA {name}").fetchone()[0]
                       for name in ("page_size", "page_count"))  # fmt: skip
        found.update(dict.fromkeys(range(2, pages + 1, size // 5 + 1), "(pointer map)"))
    if whole:
        return {**found, **dict(conn.execute("SELECT pageno, name FROM dbstat"))}
    names = [
        row[0]
        for row in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
        if row[0] not in EVENT_TABLES
    ]
    for name in names:
        for (page,) in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (name,)):
            found[page] = name
    return found


def measure(path: Path, batches: list[list[bytes]], *, whole: bool) -> tuple[int, Counter[str]]:
    store = SQLiteStore(path, checkpoint_seconds=1e9)
    try:
        store.connections._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.connections._writer.execute("PRAGMA wal_autocheckpoint = 0")
        pipeline = Pipeline(store)
        for batch in batches:
            pipeline.ingest([parse_line(line) for line in batch])
        frames = wal_pages(Path(f"{path}-wal").read_bytes())
        store.connections._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = owners(store, whole=whole)
    finally:
        store.close()
    rest = "?" if whole else "event rows (or free pages)"
    by_tree: Counter[str] = Counter()
    for page, count in frames.items():
        by_tree[owner.get(page, rest)] += count
    return sum(frames.values()), by_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=None, help="callbacks per commit")
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--warm", type=int, default=20_000, help="callbacks first (fresh db)")
    parser.add_argument("--db", type=Path, help="an existing database to add to")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        if args.db is None:
            batch = args.batch or 17
            lines = deliveries(args.warm + batch * args.commits)
            path = Path(directory) / "wal_pages.db"
            store = SQLiteStore(path)
            warm = Pipeline(store)
            for start in range(0, args.warm, 500):
                warm.ingest(
                    [parse_line(line) for line in lines[start : min(start + 500, args.warm)]]
                )
            store.close()
            print(f"fresh database, {args.warm:,} callbacks first (bench_http's workload)")
            lines = lines[args.warm :]
            whole = True
        else:
            batch = args.batch or 1_000
            count = batch * args.commits
            lines = make_lines(count, max(1, count // 10), seed=time.time_ns())
            path = args.db
            print(f"{path}: {count:,} new events (bench_engine's workload), kept")
            whole = False
        batches = [lines[start : start + batch] for start in range(0, len(lines), batch)]
        total, by_tree = measure(path, batches, whole=whole)
    commits = len(batches)
    print(f"{commits} commits of {batch}: {total / commits:,.1f} WAL pages per commit, "
          f"{total / commits / batch:.2f} per callback")  # fmt: skip
    for name, count in by_tree.most_common():
        print(f"  {count / commits:9.1f}  {name}")


if __name__ == "__main__":
    main()
