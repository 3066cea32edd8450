"""Crash test: SIGKILL `flowtracker serve` at random moments while clients post callbacks,
restart it, and check that nothing acknowledged was lost.

Clients behave like Scrive: each sends its share of a delivery stream (duplicates and late
events included) and retries a callback until it gets a 200. The server is killed with
SIGKILL (all its processes) at random moments, `--cycles` times, and started again. Then:
every callback that got a 200 must be stored exactly once, every state must equal what
`rebuild` computes from the stored events, the counters must equal a recount, and SQLite's
`PRAGMA integrity_check` must say ok. Prints the counts; exits 1 if anything was lost.

With `--postgres`, on a throwaway PostgreSQL server (fsync on, as the tests start one):
two receivers on one database, the clients split between them, one of the two killed at
random each cycle (PostgreSQL has no integrity_check: it says ok by construction).

Bounded: at most --callbacks deliveries and --cycles kills. Loopback only.
Usage: python scripts/crash_test.py [--cycles 20] [--workers 1] [--callbacks 20000]
       [--postgres]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx2 as httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_http import deliveries

from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.opening import open_store
from tests.server import free_port


class Server:
    """`flowtracker serve` in its own process group, so a kill reaches every worker."""

    def __init__(self, db: str, workers: int, directory: Path) -> None:
        self.db, self.workers, self.port = db, workers, free_port()
        self.directory = directory
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
        env["TMPDIR"] = str(self.directory)  # the writer's socket directory, which SIGKILL leaves
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowtracker", "serve", "--db", str(self.db), "--port",
             str(self.port), "--workers", str(self.workers), "--no-access-log"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the server did not come up")

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def client(url: str, bodies: list[bytes], acked: list[bytes], stop: threading.Event) -> None:
    """Send each body until it is acknowledged, like Scrive's retries, but faster."""
    with httpx.Client(base_url=url, timeout=10) as http:
        for body in bodies:
            while not stop.is_set():
                try:
                    response = http.post("/callbacks/flow", content=body,
                                         headers={"content-type": "application/json"})  # fmt: skip
                except httpx.TransportError:
                    time.sleep(0.05)  # the server is down: try again shortly
                    continue
                if response.status_code == 200:
                    acked.append(body)
                    break
                time.sleep(0.05)  # 503: retry


def check(db: str, acked: list[bytes]) -> dict[str, int]:
    if db.startswith("postgresql://"):
        with psycopg.connect(db) as pg:
            rows = pg.execute("SELECT body FROM flow_events").fetchall()
        stored, integrity = Counter(bytes(row[0]) for row in rows), "ok"
    else:
        conn = sqlite3.connect(db)
        stored = Counter(bytes(row[0]) for row in conn.execute("SELECT body FROM flow_events"))
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        conn.close()
    distinct_acked = set(acked)
    lost = sum(1 for body in distinct_acked if stored[body] == 0)
    twice = sum(1 for body in distinct_acked if stored[body] > 1)
    store = open_store(db)
    kept = store.totals("1970-01-01T00:00:00Z")
    rebuilt = Pipeline(store).rebuild()  # also recounts the counters
    recounted = store.totals("1970-01-01T00:00:00Z")
    store.close()
    return {
        "acked": len(acked),
        "acked_distinct": len(distinct_acked),
        "stored": sum(stored.values()),
        "lost": lost,
        "stored_twice": twice,
        "states_rebuild_changed": rebuilt["changed_states"],
        "outcomes_rebuild_changed": rebuilt["changed_outcomes"],
        "counters_off": int(kept != recounted),
        "integrity_ok": int(integrity == "ok"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--callbacks", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="two receivers on PostgreSQL")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    stream = deliveries(args.callbacks)
    acked: list[bytes] = []
    postgres = None
    with tempfile.TemporaryDirectory() as directory:
        if args.postgres:
            from tests.postgres_server import PostgresServer, binaries

            found = binaries()
            if found is None:
                sys.exit("PostgreSQL is not installed (apt-get install postgresql)")
            postgres = PostgresServer(found, fsync=True)
            db = postgres.database("crash")
            servers = [Server(db, args.workers, Path(directory)) for _ in range(2)]
        else:
            servers = [Server(str(Path(directory) / "crash.db"), args.workers, Path(directory))]
        try:
            for server in servers:
                server.start()
            stop = threading.Event()
            threads = [
                threading.Thread(target=client, args=(servers[i % len(servers)].url,
                                 stream[i :: args.clients], acked, stop), daemon=True)
                for i in range(args.clients)
            ]  # fmt: skip
            for thread in threads:
                thread.start()
            for cycle in range(args.cycles):
                time.sleep(rng.uniform(0.2, 1.2))
                victim = rng.randrange(len(servers))
                servers[victim].kill()
                print(f"cycle {cycle + 1:>2}: killed receiver {victim + 1} after "
                      f"{len(acked):,} acknowledged", flush=True)  # fmt: skip
                servers[victim].start()
            for thread in threads:
                thread.join(timeout=120)
            stop.set()
            for server in servers:
                server.kill()
            result = check(servers[0].db, acked)
        finally:
            if postgres is not None:
                postgres.close()
    print(" ".join(f"{name}={value}" for name, value in result.items()))
    bad = result["lost"] or result["stored_twice"] or result["states_rebuild_changed"]
    bad = bad or result["outcomes_rebuild_changed"] or result["counters_off"]
    return 1 if bad or not result["integrity_ok"] else 0


if __name__ == "__main__":
    sys.exit(main())
