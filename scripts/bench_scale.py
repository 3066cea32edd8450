"""Benchmark flowtracker at scale: does it stay fast when the database holds millions?

1. Builds a database of N instances with E events (default 1,000,000 and 10,000,000)
   through the engine's batch path (`Pipeline.ingest`, 5,000 callbacks per transaction,
   durability normal for the build only), or reuses one built before (`--db`).
2. Reads the big database once, so that it is in the OS page cache as on a server that
   has been running. Then measures, in the same run, the ingest rate of the same fresh
   workload (new instances with 10% late events, durability full, batches of 1,000) into
   an empty database and into the big one.
3. Callbacks over HTTP (`flowtracker serve`, 64 connections, wrk, durability full) for
   existing subjects (an authentication attempt, or a redelivery 10% of the time, on
   instances spread over the whole database) and for new ones, on the big database and
   on a small one (100,000 events) built in the same run, interleaved: rates and
   p50/p90/p99. Existing subjects are where a large database costs: their rows, keys
   and index entries sit at random places of indexes as large as the database.
4. Starts `flowtracker serve` on the big database and measures GET /instances/{id},
   GET /status and GET /instances?state=in_progress (a page of 50) over loopback: p50/p99
   of sequential requests; and the server's RSS after start-up and after the run.
5. Prints the database size per million events.

Asserts nothing. Usage: python scripts/bench_scale.py [--instances N] [--events E] [--db P]
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from statistics import quantiles

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_engine import ENDINGS, NS, STEPS, _body, make_lines
from bench_http import load_wrk, memory_mb
from bench_http import server as bench_server

from flowtracker.engine.parsing import parse_line
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.server import serving


def instance_ids(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        yield str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build(path: Path, instances: int, events: int, seed: int = 11) -> list[str]:
    """Fill the database; returns a sample of 1,000 instance ids for the reads."""
    store = SQLiteStore(path, durability="normal")
    pipeline, rng = Pipeline(store), random.Random(seed)
    per, batch, sample, done, started = events // instances, [], [], 0, time.perf_counter()
    for n, instance in enumerate(instance_ids(instances, seed)):
        start = 1_790_000_000 * NS + rng.randrange(86_400 * NS)
        ends = rng.random() < 0.8  # a fifth stay in progress
        for step in range(per):
            last = step == per - 1 and ends
            kind = ENDINGS[rng.randrange(len(ENDINGS))] if last else STEPS[step % 4]
            batch.append(parse_line(_body(kind, instance, start + step * 60 * NS, step)))
        if len(batch) >= 5_000:
            pipeline.ingest(batch)
            done, batch = done + len(batch), []
        if n % (instances // 1000 or 1) == 0 and len(sample) < 1_000:
            sample.append(instance)
        if n and n % 100_000 == 0:
            rate = done / (time.perf_counter() - started)
            print(f"  built {n:,} instances, {done:,} events ({rate:,.0f}/s)", flush=True)
    pipeline.ingest(batch)
    store.close()
    return sample


def ingest_rate(path: Path, lines: list[bytes]) -> float:
    store = SQLiteStore(path)  # durability full, as the service runs
    pipeline = Pipeline(store)
    started = time.perf_counter()
    for start in range(0, len(lines), 1_000):
        pipeline.ingest([parse_line(line) for line in lines[start : start + 1_000]])
    store.close()  # timed too: the last checkpoint copies what the checkpointer had left
    return len(lines) / (time.perf_counter() - started)


def latencies(client: httpx.Client, paths: list[str]) -> tuple[float, float]:
    times = []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code)
    cuts = quantiles(times, n=100)
    return cuts[49], cuts[98]


def existing_ids(path: Path, count: int) -> list[str]:
    """`count` instance ids spread over the whole database (random `seq`)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        total = conn.execute("SELECT MAX(seq) FROM instances").fetchone()[0]
        seqs = random.Random(3).sample(range(1, total + 1), min(count, total))
        found = [conn.execute("SELECT id FROM instances WHERE seq = ?", (seq,)).fetchone()
                 for seq in seqs]  # fmt: skip
    conn.close()
    return [row[0] for row in found if row]


def callbacks_for(ids: list[str], count: int, seed: int) -> list[bytes]:
    """`count` authentication attempts on `ids`, dated after everything stored (2027),
    10% of them a redelivery of an earlier one."""
    rng = random.Random(seed)
    bodies: list[bytes] = []
    for n in range(count):
        if bodies and rng.random() < 0.1:
            bodies.append(rng.choice(bodies))
            continue
        when = 1_800_000_000 * NS + n * 1_000_000 + rng.randrange(1_000_000)
        bodies.append(_body("authentication_attempted", rng.choice(ids), when, n))
    return bodies


def http_callbacks(
    db: Path, bodies: list[bytes], directory: Path, seconds: float
) -> dict[str, float]:
    """wrk against `flowtracker serve` on `db`, 64 connections."""
    bodies_file = directory / f"bodies-{time.monotonic_ns()}.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    with bench_server("service", 1, directory, [], db_path=db) as (port, _):
        return load_wrk(port, bodies_file, 64, seconds)


def rss_mb(pid: int) -> float:
    return memory_mb(pid, "VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workload", type=int, default=50_000, help="events ingested to time")
    parser.add_argument("--requests", type=int, default=2_000, help="per read endpoint")
    parser.add_argument("--db", type=Path, help="reuse (or keep) the big database here")
    parser.add_argument("--seconds", type=float, default=10, help="per HTTP callback run")
    parser.add_argument("--skip-engine", action="store_true", help="only the HTTP parts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        big = args.db or Path(directory) / "big.db"
        if big.exists():
            print(f"reusing {big}")
            sample = [row[0] for row in SQLiteStore(big).connections._writer.execute(
                "SELECT id FROM instances ORDER BY id LIMIT 1000")]  # fmt: skip
        else:
            print(f"building {args.instances:,} instances, {args.events:,} events in {big}")
            started = time.perf_counter()
            sample = build(big, args.instances, args.events)
            took = time.perf_counter() - started
            print(f"built in {took:,.0f} s ({args.events / took:,.0f} events/s, batches of "
                  "5,000, durability normal)")  # fmt: skip
        store = SQLiteStore(big)
        store.connections._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # size without the WAL
        stored = store.connections._writer.execute("SELECT COUNT(*) FROM flow_events").fetchone()[0]
        # Free pages (an index a migration dropped, say) are in the file until later
        # writes reuse them: counted apart.
        free = (store.connections._writer.execute("PRAGMA freelist_count").fetchone()[0]
                * store.connections._writer.execute("PRAGMA page_size").fetchone()[0])  # fmt: skip
        store.close()
        size = big.stat().st_size - free
        print(
            f"database: {stored:,} events, {size / 2**20:,.0f} MiB, "
            f"{size / 2**20 / (stored / 1e6):,.0f} MiB per million events "
            f"(and {free / 2**20:,.0f} MiB of free pages)"
        )

        # A server that has run for a while holds its database in the OS page cache; a
        # database just built by an earlier run may have been evicted since. Cold, every
        # random index page is a disk read: ingest ran at 5-17% of empty (2026-11-28).
        started = time.perf_counter()
        with big.open("rb") as whole:
            while whole.read(1 << 24):
                pass
        took = time.perf_counter() - started
        print(f"page cache: read the whole database once ({took:.0f} s)")

        http_section(big, Path(directory), args.seconds)
        if args.skip_engine:
            return

        # Best of two alternating turns each (the machine is shared). Each turn is a new
        # workload of new instances: a reused database already holds earlier ones.
        empty = full = 0.0
        for turn in range(2):
            lines = make_lines(args.workload, args.workload // 10, seed=time.time_ns() + turn)
            empty = max(empty, ingest_rate(Path(directory) / f"empty{turn}.db", lines))
            full = max(full, ingest_rate(big, lines))
        print(
            f"ingest, empty database : {empty:>8,.0f} events/s  (batches of 1,000, "
            "durability full, 10% late)"
        )
        print(f"ingest, big database   : {full:>8,.0f} events/s  ({full / empty:.0%} of empty)")

        env = dict(os.environ)
        with serving(big, "--no-access-log", env=env) as server:
            pid = server.process.pid
            start_rss = rss_mb(pid)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                rng = random.Random(5)
                for name, paths in (
                    ("GET /instances/{id}", [f"/instances/{rng.choice(sample)}"
                                             for _ in range(args.requests)]),
                    ("GET /status", ["/status"] * args.requests),
                    ("GET /instances?state=in_progress", [
                        "/instances?state=in_progress&limit=50"] * (args.requests // 4)),
                ):  # fmt: skip
                    p50, p99 = latencies(client, paths)
                    print(f"{name:<34} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
            end_rss = rss_mb(pid)
        print(
            f"server RSS (with its writer): {start_rss:.0f} MB after start-up, "
            f"{end_rss:.0f} MB after the reads ({end_rss - start_rss:+.0f} MB)"
        )


def http_section(big: Path, directory: Path, seconds: float) -> None:
    """Existing and new subjects over HTTP, on the big and a small database, in turns."""
    small = directory / "small.db"
    build(small, 10_000, 100_000, seed=12)
    ids = {"big": existing_ids(big, 20_000), "small": existing_ids(small, 20_000)}
    print(
        f"callbacks over HTTP: 64 connections, {seconds:g} s per run, durability full, "
        "2 turns (each line the better one)"
    )
    best: dict[tuple[str, str], dict[str, float]] = {}
    for turn in range(2):
        for name, db in (("small", small), ("big", big)):
            new = [str(uuid.UUID(int=random.Random(turn).getrandbits(128) + n, version=4))
                   for n in range(20_000)]  # fmt: skip
            for which, pool in (("existing", ids[name]), ("new", new)):
                bodies = callbacks_for(pool, 200_000, seed=turn * 10 + len(name))
                found = http_callbacks(db, bodies, directory, seconds)
                if found["rate"] > best.get((name, which), {"rate": 0})["rate"]:
                    best[name, which] = found
    for which in ("existing", "new"):
        for name in ("small", "big"):
            found = best[name, which]
            ratio = found["rate"] / best["small", which]["rate"]
            print(
                f"  {which:<8} subjects, {name:<5} database: {found['rate']:>7,.0f}/s "
                f"({ratio:.0%} of small)  p50 {found['p50']:5.1f}  p90 {found['p90']:5.1f}  "
                f"p99 {found['p99']:5.1f} ms"
            )


if __name__ == "__main__":
    main()
