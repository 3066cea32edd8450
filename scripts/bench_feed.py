"""Benchmark the change feed: commit-to-client latency with many open feeds, and webhook
deliveries per second to a fast local receiver.

1. Latency: `flowtracker serve` on a fresh database, `--clients` Server-Sent Events
   clients on /feed, then `--changes` callbacks posted one after the other at about
   `--rate` per second, each making one change (a new instance). For every change and
   client: the time it arrived minus the time its POST was answered (the commit is done
   by then). Prints p50, p99 and max over all clients.
2. Webhooks: `--deliveries` changes loaded with `replay`, `--subscriptions`
   subscriptions from the start to a receiver on loopback that answers 204 at once, then
   `serve` started: the seconds until every subscription has had every change, and the
   deliveries per second (each subscription has one request in flight at a time).

The cost of the change log on the callback path is measured by scripts/bench_http.py
with `--against` a checkout of the commit before it (docs/performance.md). Every run is
bounded in count and time. Asserts nothing. Usage:
python scripts/bench_feed.py [--clients 100] [--changes 2000] [--db URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from statistics import quantiles
from typing import Any, ClassVar

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import server

ROOT = Path(__file__).resolve().parent.parent


def flow_body(n: int) -> bytes:
    return json.dumps({
        "flow_instance_id": f"{n:08x}-0000-4000-8000-{n:012x}", "type": "custom",
        "event_created": "2026-01-01T00:00:00Z", "version": 1, "callback_name": "bench",
    }).encode()  # fmt: skip


async def follow(url: str, arrived: dict[int, float], ready: asyncio.Event, total: int) -> None:
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("GET", url) as answer,
    ):
        ready.set()
        async for line in answer.aiter_lines():
            if line.startswith("id: "):
                arrived[int(line[4:])] = time.perf_counter()
                if len(arrived) >= total:
                    return


async def latency(port: int, clients: int, changes: int, rate: float) -> list[float]:
    base = f"http://127.0.0.1:{port}"
    arrivals: list[dict[int, float]] = [{} for _ in range(clients)]
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [
        asyncio.create_task(follow(f"{base}/feed", arrivals[n], readies[n], changes))
        for n in range(clients)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(0.5)
    answered: dict[int, float] = {}
    async with httpx.AsyncClient(timeout=60) as client:
        for n in range(changes):
            started = time.perf_counter()
            reply = await client.post(
                f"{base}/callbacks/flow", content=flow_body(n),
                headers={"content-type": "application/json"},
            )  # fmt: skip
            assert reply.status_code == 200, reply.text
            answered[n + 1] = time.perf_counter()
            await asyncio.sleep(max(0.0, 1 / rate - (answered[n + 1] - started)))
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return [got[seq] - answered[seq] for got in arrivals for seq in answered]


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint would
    counts: ClassVar[dict[str, int]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        with self.lock:
            self.counts[self.path] = self.counts.get(self.path, 0) + 1
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def webhooks(db: str, directory: Path, deliveries: int, subscriptions: int) -> float:
    lines = directory / "changes.jsonl"
    lines.write_bytes(b"\n".join(flow_body(n) for n in range(deliveries)) + b"\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    flowtracker = [sys.executable, "-m", "flowtracker"]
    subprocess.run([*flowtracker, "replay", str(lines), "--db", db], check=True, env=env,
                   capture_output=True, timeout=300)  # fmt: skip
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    for n in range(subscriptions):
        subprocess.run(
            [*flowtracker, "webhooks", "add", f"http://127.0.0.1:{sink.server_port}/{n}",
             "--from-start", "--db", db], check=True, env=env, capture_output=True,
        )  # fmt: skip
    with server("service", 1, directory, [], ROOT, db):
        started = time.perf_counter()
        deadline = started + 600
        while sum(_Sink.counts.values()) < deliveries * subscriptions:
            if time.perf_counter() > deadline:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    sink.shutdown()
    return sum(_Sink.counts.values()) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--changes", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0, help="callbacks per second")
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--db", help="a PostgreSQL URL of an empty database (default: SQLite)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        db = args.db or str(directory / "latency.db")
        with server("service", 1, directory, [], ROOT, db) as (port, _):
            waits = asyncio.run(latency(port, args.clients, args.changes, args.rate))
        cuts = quantiles(waits, n=100)
        print(f"commit to SSE client, {args.clients} clients, {args.changes} changes at "
              f"~{args.rate:g}/s: p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms, "
              f"max {max(waits) * 1000:.1f} ms")  # fmt: skip
        if args.db:
            print("webhooks: run again with an empty database to measure deliveries")
            return
        rate = webhooks(str(directory / "hooks.db"), directory, args.deliveries,
                        args.subscriptions)  # fmt: skip
        print(f"webhooks: {args.deliveries} changes to each of {args.subscriptions} "
              f"subscriptions: {rate:,.0f} deliveries/s ({rate / args.subscriptions:,.0f} per "
              "subscription, one request in flight each)")  # fmt: skip


if __name__ == "__main__":
    main()
