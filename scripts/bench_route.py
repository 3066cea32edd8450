"""The callback route's own cost, in-process: no sockets, no uvicorn, no storage.

Drives the ASGI app directly, 64 requests at a time, with realistic Flow callbacks:
  bare      scripts/bare_app.py (Starlette: read the body, answer 200)
  route     flowtracker's app, with an intake that answers a fixed receipt at once
  route+log the same, with the callback log line on (written to /dev/null)
Prints µs per request for each and the route's share above bare. Asserts nothing.
Usage: python scripts/bench_route.py [--requests 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_http import deliveries

from flowtracker.ingest import intake
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.logs import lighten
from flowtracker.settings import Settings
from flowtracker.web import create_app
from flowtracker.web.serving import log_config as _log_config

ASGIApp = Callable[..., Any]
RECEIPT = Receipt("applied", False, None, "flow", "b76e7cac-57d7-4e1b-b8eb-21155f1cce44", "x")


async def run(app: ASGIApp, bodies: list[bytes], requests: int) -> float:
    """µs per request, after a warm-up, with the app's lifespan around it."""
    startup: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    started, stopped = asyncio.Event(), asyncio.Event()
    await startup.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        (started if message["type"].startswith("lifespan.startup") else stopped).set()

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                   startup.get, lifespan_send))  # fmt: skip
    await started.wait()

    async def one(body: bytes) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/callbacks/flow",
            "raw_path": b"/callbacks/flow", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        assert statuses == [200], statuses

    async def rounds(count: int, offset: int) -> None:
        for start in range(0, count, 64):
            batch = range(offset + start, offset + min(start + 64, count))
            await asyncio.gather(*(one(bodies[n % len(bodies)]) for n in batch))

    await rounds(2_000, 0)
    began = time.perf_counter()
    await rounds(requests, 2_000)
    seconds = time.perf_counter() - began
    await startup.put({"type": "lifespan.shutdown"})
    await life
    return seconds / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=30_000)
    args = parser.parse_args()
    bodies = deliveries(20_000)

    async def canned(self: intake.LocalIntake, delivery: CallbackRequest) -> Receipt:
        return RECEIPT

    intake.LocalIntake.take = canned  # type: ignore[method-assign]
    from bare_app import app as bare

    logging.getLogger("flowtracker").setLevel(logging.ERROR)  # not the startup warnings
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings.from_env({}).but(db_path=f"{directory}/route.db")
        base = asyncio.run(run(bare, bodies, args.requests))
        route = asyncio.run(run(create_app(settings), bodies, args.requests))
        config = _log_config()
        config["handlers"]["flowtracker"]["stream"] = "ext://sys.stdout"
        with open("/dev/null", "w") as null:
            sys.stdout, real = null, sys.stdout
            try:
                logging.config.dictConfig(config)
                lighten()
                logged = asyncio.run(run(create_app(settings), bodies, args.requests))
            finally:
                sys.stdout = real
    print(f"{args.requests:,} requests, 64 at a time, in-process (no sockets, no storage)")
    print(f"bare Starlette : {base:6.1f} µs per request")
    print(f"callback route : {route:6.1f} µs per request ({route - base:+.1f} µs)")
    print(f"route + log    : {logged:6.1f} µs per request ({logged - base:+.1f} µs)")


if __name__ == "__main__":
    main()
