"""What a running app holds: its settings and the resources opened in `lifespan`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio.to_thread
from prometheus_client import CollectorRegistry, Gauge
from starlette.requests import HTTPConnection

from flowtracker.feed.hub import Hub
from flowtracker.ingest.interface import Intake
from flowtracker.settings import Settings
from flowtracker.store.protocol import Store
from flowtracker.web.body import Deadlines

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    intake: Intake  # where callbacks go: this process's committer, or the writer process
    hub: Hub  # fans the change log out to this process's open feeds
    open_feeds: Gauge  # /metrics: the feeds open in this process
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)  # /metrics
    deadlines: Deadlines = field(default_factory=Deadlines)  # for reading bodies
    started: float = field(default_factory=time.monotonic)


def runtime(connection: HTTPConnection) -> Runtime:
    """The runtime of the app serving this request (set by its lifespan)."""
    found: Runtime = connection.app.state.runtime
    return found


async def off_the_loop(store: Store, read: Callable[[], T]) -> T:
    """`read()`, on the event loop when the store answers locally (SQLite: the hop to a
    thread costs more than the read, docs/performance.md), else on a thread, so that a
    database across the network never holds up the other requests (PostgreSQL)."""
    if store.reads_block:
        return await anyio.to_thread.run_sync(read)
    return read()
