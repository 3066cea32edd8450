"""Where one callback's time goes: CPU µs per callback for each stage of the path, in the
HTTP worker and in the writer process, measured in-process over the bench_http load.

Worker (the ASGI app driven directly, 64 requests at a time, as in bench_route.py):
  bare           scripts/bare_app.py: what bare Starlette spends on a request
  route          flowtracker's callback route above bare, with a canned receipt
  log line       the per-callback log line (`serve --callback-log`), above the route
  wire (worker)  framing the request for the writer, reading its answer
Writer:
  wire (writer)  reading a request off the socket, framing the answer
  parse          JSON, validation, timestamps, the canonical form and its SHA-256
  reads          the batch's subjects and known dedup keys; histories of late events
  fold           judging each callback through its lifecycle
  writes         events, keys, subjects, verdicts, deliveries, counters
  commit         COMMIT with synchronous=FULL (the WAL write and fsync)
Batches are of `--batch` callbacks (what group commit makes under load: 30 on average),
into a database warmed with `--warm` callbacks first, so most subjects exist. The
socket's system calls and uvicorn's HTTP parsing are not in this account: bench_http.py
measures the whole, in CPU ms per 1,000 callbacks. Asserts nothing.
Usage: python scripts/bench_stages.py [--callbacks 30000] [--batch 30] [--warm 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import pickle
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_http import deliveries
from bench_route import RECEIPT, run

from flowtracker.engine.parsing import parse_flow
from flowtracker.ingest import intake, wire
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.logs import lighten
from flowtracker.settings import Settings
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.store.sqlite.transaction import SQLiteTransaction
from flowtracker.web import create_app
from flowtracker.web.serving import log_config

READS = ("subjects", "known_keys", "history")
WRITES = ("put_subjects", "add_entries", "set_verdicts", "redeliver", "bump", "count_received")
JSON = "application/json"


def cpu() -> float:
    return time.thread_time()


class Clock:
    """CPU seconds by stage, added up by the timers below."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        began = cpu()
        try:
            yield
        finally:
            self.spent[name] += cpu() - began

    def timed(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timer(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timer


class TimedCommit:
    """The writer connection, with COMMIT timed (every other call passed through)."""

    def __init__(self, conn: Any, clock: Clock) -> None:
        self._conn, self._clock = conn, clock

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            with self._clock.stage("commit"):
                return self._conn.execute(sql, *args)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def worker_stages(bodies: list[bytes], requests: int) -> dict[str, float]:
    async def canned(self: intake.LocalIntake, request: CallbackRequest) -> Receipt:
        return RECEIPT

    intake.LocalIntake.take = canned  # type: ignore[method-assign]
    from bare_app import app as bare

    logging.getLogger("flowtracker").setLevel(logging.ERROR)  # not the startup warnings
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings.from_env({}).but(db_path=f"{directory}/route.db")
        base = _cpu_of(lambda: asyncio.run(run(bare, bodies, requests)), requests)
        route = _cpu_of(lambda: asyncio.run(run(create_app(settings), bodies, requests)), requests)
        config = log_config()
        config["handlers"]["flowtracker"]["stream"] = "ext://sys.stdout"
        with open("/dev/null", "w") as null:
            sys.stdout, real = null, sys.stdout
            try:
                logging.config.dictConfig(config)
                logging.getLogger("flowtracker.callbacks").setLevel(logging.INFO)
                lighten()
                app = create_app(settings)
                logged = _cpu_of(lambda: asyncio.run(run(app, bodies, requests)), requests)
            finally:
                sys.stdout = real
                logging.getLogger("flowtracker.callbacks").setLevel(logging.WARNING)
    return {"bare": base, "route": route - base, "log line": max(0.0, logged - route)}


def _cpu_of(work: Callable[[], object], count: int) -> float:
    """µs of this process's CPU per unit of `work`'s `count` (its warm-up included)."""
    began = time.process_time()
    work()
    return (time.process_time() - began) / (count + 2_000) * 1e6


def wire_stages(bodies: list[bytes]) -> dict[str, float]:
    """The two ends of the socket, without the socket: what each process does per message."""
    requests = [CallbackRequest("flow", body, JSON, "POST /callbacks/flow") for body in bodies]
    answer = wire.receipt_fields(RECEIPT)
    began = cpu()
    framed = [pickle.dumps((n, wire.request_fields(r)), protocol=5) for n, r in enumerate(requests)]
    for _ in framed:  # the answer, read back
        Receipt(*pickle.loads(pickle.dumps((1, True, answer), protocol=5))[2])
    worker = cpu() - began
    began = cpu()
    for frame in framed:
        _, fields = pickle.loads(frame)
        CallbackRequest(*fields)
        pickle.dumps((1, True, answer), protocol=5)
    writer = cpu() - began
    return {
        "wire (worker)": worker / len(bodies) * 1e6,
        "wire (writer)": writer / len(bodies) * 1e6,
    }


def writer_stages(bodies: list[bytes], batch: int, warm: list[bytes]) -> dict[str, float]:
    clock = Clock()
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore(Path(directory) / "stages.db")
        pipeline = Pipeline(store)
        for start in range(0, len(warm), 1_000):
            pipeline.ingest([parse_flow(body) for body in warm[start : start + 1_000]])
        for name in (*READS, *WRITES):
            setattr(SQLiteTransaction, name, clock.timed(name, getattr(SQLiteTransaction, name)))
        store.connections._writer = TimedCommit(store.connections._writer, clock)  # type: ignore[assignment]
        for start in range(0, len(bodies), batch):
            with clock.stage("parse"):
                callbacks = [parse_flow(body, JSON) for body in bodies[start : start + batch]]
            with clock.stage("ingest"):
                pipeline.ingest(callbacks)
        store.close()
    spent = clock.spent
    reads = sum(spent[name] for name in READS)
    writes = sum(spent[name] for name in WRITES)
    fold = spent["ingest"] - reads - writes - spent["commit"]
    per = 1e6 / len(bodies)
    return {
        "parse": spent["parse"] * per,
        "reads": reads * per,
        "fold": fold * per,
        "writes": writes * per,
        "commit": spent["commit"] * per,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callbacks", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--warm", type=int, default=100_000)
    args = parser.parse_args()
    load = deliveries(args.warm + args.callbacks)
    warm, bodies = load[: args.warm], load[args.warm :]
    worker = worker_stages(bodies, args.callbacks)
    wired = wire_stages(bodies)
    writer = writer_stages(bodies, args.batch, warm)
    print(
        f"{args.callbacks:,} Flow callbacks (bench_http's mix), batches of {args.batch}, "
        f"after {args.warm:,} into the database; CPU µs per callback"
    )
    rows = [("worker", {**worker, "wire (worker)": wired["wire (worker)"]}),
            ("writer", {"wire (writer)": wired["wire (writer)"], **writer})]  # fmt: skip
    for process, stages in rows:
        for name, micros in stages.items():
            print(f"  {process:<7} {name:<14} {micros:7.1f}")
        print(f"  {process:<7} {'total':<14} {sum(stages.values()):7.1f}")


if __name__ == "__main__":
    main()
