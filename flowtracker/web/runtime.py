"""What a running app holds: its settings and the resources opened in `lifespan`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry
from starlette.requests import HTTPConnection

from flowtracker.ingest.interface import Intake
from flowtracker.settings import Settings
from flowtracker.store.protocol import Store
from flowtracker.web.body import Deadlines


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    intake: Intake  # where callbacks go: this process's committer, or the writer process
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)  # /metrics
    deadlines: Deadlines = field(default_factory=Deadlines)  # for reading bodies
    started: float = field(default_factory=time.monotonic)


def runtime(connection: HTTPConnection) -> Runtime:
    """The runtime of the app serving this request (set by its lifespan)."""
    found: Runtime = connection.app.state.runtime
    return found
