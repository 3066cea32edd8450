"""Benchmark the ingest pipeline against a bare SQLite insert of the same rows.

Builds N Flow events over M instances (default 100,000 over 10,000: each instance gets
authentication and custom callbacks and ends in a terminal event; 10% are delivered
5 to 60 minutes late), then in the same run measures:

  bare      executemany INSERT of the finished rows into flow_events (same schema,
            same indexes, same pragmas, the same batch size per commit);
  loop      the least a replay must do, timed whole: for each line json.loads, SHA-256
            of the canonical form (sorted keys, compact), then executemany INSERT of the
            rows into the same schema, batch by batch, synchronous=FULL (issue 16's
            "bare parse-hash-insert loop");
  pipeline  the same bodies as JSON Lines through `flowtracker.ingest.replay.replay`, i.e.
            parse + dedup + fold + store, committed in batches.

Prints events per second for both, the ratio, peak RSS, and RSS sampled through the
pipeline run (it must stay flat: no per-instance object outlives its batch).
Asserts nothing. Usage: python scripts/bench_engine.py [--events N] [--instances M]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import tempfile
import time
import uuid
from pathlib import Path

from flowtracker.engine.parsing import parse_line
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.replay import replay
from flowtracker.settings import Settings
from flowtracker.store.sqlite.backend import SQLiteStore

STEPS = ["authentication_attempted", "custom", "authentication_attempted", "custom"]
ENDINGS = ["completed"] * 6 + ["flow_rejected", "cancelled", "timed_out", "failed"]
NS = 1_000_000_000
RETRY_MINUTES = (5, 10, 30, 60)


_BARE_INSERT = (
    "INSERT INTO flow_events (dedup_key, instance_id, type, version, event_created, "
    "event_ns, outcome, reason, out_of_order, deliveries, received_at, last_delivery_at, "
    "body, content_type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)"
)


def make_lines(events: int, instances: int, seed: int) -> list[bytes]:
    """Bodies in delivery order; 10% are retried 5 to 60 minutes late, as Scrive does."""
    rng = random.Random(seed)
    per = events // instances
    delivered: list[tuple[int, bytes]] = []
    for _ in range(instances):
        instance = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        start = 1_790_000_000 * NS + rng.randrange(86_400 * NS)
        for step in range(per):
            kind = ENDINGS[rng.randrange(len(ENDINGS))] if step == per - 1 else STEPS[step % 4]
            when = start + step * 60 * NS + rng.randrange(NS)
            delay = rng.choice(RETRY_MINUTES) * 60 * NS if rng.random() < 0.1 else 0
            delivered.append((when + delay, _body(kind, instance, when, step)))
    delivered.sort()
    return [body for _, body in delivered]


def _body(kind: str, instance: str, when: int, step: int) -> bytes:
    seconds, fraction = divmod(when, NS)
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{fraction:09d}Z"
    body: dict[str, object] = {
        "type": kind,
        "version": 1,
        "event_created": created,
        "flow_instance_id": instance,
    }
    if kind == "authentication_attempted":
        body |= {"user_name": f"user{step}", "result": "success", "provider": "se_bank_id"}
    elif kind == "custom":
        body["callback_name"] = f"stage-{step}"
    elif kind == "flow_rejected":
        body |= {"user_name": "user1", "message": "Sorry, I don't want to sign this"}
    return json.dumps(body, separators=(",", ":")).encode()


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def bench_bare(lines: list[bytes], path: Path, batch: int) -> float:
    store = SQLiteStore(path)
    rows = []
    for line in lines:
        c = parse_line(line)
        rows.append(
            (
                c.dedup_key,
                c.subject_id,
                c.label,
                1,
                c.moment.text,
                c.moment.ns,
                "applied",
                None,
                False,
                "2026-01-01T00:00:00.000000Z",
                "2026-01-01T00:00:00.000000Z",
                c.body,
                c.content_type,
            )
        )
    conn = store.connections._writer
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_BARE_INSERT, rows[start : start + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    store.close()
    return len(rows) / elapsed


def bench_loop(lines: list[bytes], path: Path, batch: int) -> float:
    """Decode, hash and insert each batch, with no validation, dedup or fold."""
    store = SQLiteStore(path)
    conn = store.connections._writer
    canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    at = "2026-01-01T00:00:00.000000Z"
    started = time.perf_counter()
    for start in range(0, len(lines), batch):
        rows = []
        for line in lines[start : start + batch]:
            fields = json.loads(line)
            key = hashlib.sha256(canonical.encode(fields).encode()).hexdigest()
            rows.append((key, fields["flow_instance_id"], fields["type"], fields["version"],
                         fields["event_created"], 0, "applied", None, False, at, at, line,
                         "application/json"))  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_BARE_INSERT, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    store.close()
    return len(lines) / elapsed


def bench_pipeline(lines: list[bytes], path: Path, batch: int) -> tuple[float, int, list[float]]:
    store = SQLiteStore(path)
    samples: list[float] = []
    tick = max(1, len(lines) // 10)

    def sample(line: bytes, seen: list[int] = [0]) -> None:  # noqa: B006 - a counter
        seen[0] += 1
        if seen[0] % tick == 0:
            samples.append(rss_mb())

    started = time.perf_counter()
    report = replay(
        Pipeline(store),
        lines,
        "bench",
        batch_size=batch,
        max_body=Settings().max_body,
        on_line=sample,
    )
    elapsed = time.perf_counter() - started
    store.close()
    return len(lines) / elapsed, report.out_of_order, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=1_000, help="callbacks per commit")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    lines = make_lines(args.events, args.instances, args.seed)
    print(
        f"{len(lines):,} events over {args.instances:,} instances, batches of {args.batch}, "
        "synchronous=FULL, WAL"
    )
    with tempfile.TemporaryDirectory() as directory:
        bare = bench_bare(lines, Path(directory) / "bare.db", args.batch)
        loop = bench_loop(lines, Path(directory) / "loop.db", args.batch)
        start_rss = rss_mb()
        rate, late, samples = bench_pipeline(lines, Path(directory) / "pipeline.db", args.batch)
    print(f"bare executemany insert : {bare:>10,.0f} rows/s")
    print(f"pipeline (replay)       : {rate:>10,.0f} events/s ({late:,} arrived out of order)")
    print(f"ratio pipeline/bare     : {rate / bare:>10.1%}")
    print(f"parse-hash-insert loop  : {loop:>10,.0f} events/s")
    print(f"ratio pipeline/loop     : {rate / loop:>10.1%}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                : {peak:>10.1f} MB")
    print(f"RSS before pipeline     : {start_rss:>10.1f} MB")
    print("RSS through pipeline    : " + " ".join(f"{mb:.1f}" for mb in samples) + " MB")


if __name__ == "__main__":
    main()
