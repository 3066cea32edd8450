"""Soak: run `flowtracker serve` for a bounded time at a steady load and watch its memory.

Sends realistic Flow callbacks (10% duplicates, ~10% late) and 1% malformed ones at a fixed
rate for --minutes (default 5), reads an instance and /status now and then, and prints per
minute: requests, errors (any 5xx or transport error), throughput and the RSS of the
server and its writer process; then RSS at the start and the end. The RSS must stay flat.
Asserts nothing; loopback only.
Usage: python scripts/soak.py [--minutes 5] [--rate 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_http import deliveries, memory_mb

from tests.server import serving

JSON = {"content-type": "application/json"}


class Tally:
    def __init__(self) -> None:
        self.lock, self.requests, self.errors = threading.Lock(), 0, 0

    def add(self, error: bool) -> None:
        with self.lock:
            self.requests += 1
            self.errors += error

    def take(self) -> tuple[int, int]:
        with self.lock:
            counts, self.requests, self.errors = (self.requests, self.errors), 0, 0
            return counts


def sender(url: str, bodies: list[bytes], rate: float, until: float, tally: Tally) -> None:
    pause, n = 1 / rate, 0
    with httpx.Client(base_url=url, timeout=30) as http:
        next_at = time.monotonic()
        while time.monotonic() < until:
            body = bodies[n % len(bodies)]
            malformed = n % 100 == 99
            try:
                if n % 50 == 0:
                    response = http.get("/status")
                else:
                    response = http.post("/callbacks/flow", headers=JSON,
                                         content=body[:-5] if malformed else body)  # fmt: skip
                tally.add(response.status_code >= 500)
            except httpx.TransportError:
                tally.add(True)
            n += 1
            next_at += pause
            time.sleep(max(0.0, next_at - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rate", type=float, default=300, help="requests per second")
    parser.add_argument("--senders", type=int, default=4)
    args = parser.parse_args()
    bodies = deliveries(int(args.rate * args.minutes * 60) + 1000)
    with (
        tempfile.TemporaryDirectory() as directory,
        serving(Path(directory) / "soak.db", "--no-access-log") as server,
    ):
        pid = server.process.pid
        start_rss = memory_mb(pid, "VmRSS")
        print(f"soak: {args.minutes:g} min at {args.rate:g} requests/s; "
              f"server RSS at start {start_rss:.1f} MB")  # fmt: skip
        tally, until = Tally(), time.monotonic() + args.minutes * 60
        threads = [
            threading.Thread(target=sender, args=(
                server.url, bodies[i :: args.senders], args.rate / args.senders, until, tally))
            for i in range(args.senders)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        minute, started = 0, time.monotonic()
        while time.monotonic() < until:
            time.sleep(min(60, until - time.monotonic()))
            for thread in threads if time.monotonic() >= until else ():
                thread.join()
            minute += 1
            requests, errors = tally.take()
            seconds = time.monotonic() - started
            started = time.monotonic()
            print(
                f"minute {minute}: {requests:,} requests, {errors} errors, "
                f"{requests / seconds:,.0f}/s, RSS {memory_mb(pid, 'VmRSS'):.1f} MB",
                flush=True,
            )
        end_rss = memory_mb(pid, "VmRSS")
    print(f"RSS start {start_rss:.1f} MB, end {end_rss:.1f} MB ({end_rss - start_rss:+.1f} MB)")


if __name__ == "__main__":
    main()
