"""The simulator's traffic as values: callbacks as Scrive sends them, the flow instances and
documents they are about, and the end each must reach."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flowtracker.engine.events import Kind

# Written out again on purpose, not imported from the engine: the simulator's expectations
# must not follow the engine's mistakes. A test checks both know the same names.
FLOW_TYPES = ("completed", "failed", "cancelled", "flow_rejected", "timed_out", "custom",
              "authentication_attempted", "authentication_max_failures_exceeded")  # fmt: skip
FLOW_STATES = ("in_progress", "completed", "failed", "cancelled", "rejected", "timed_out")
DOCUMENT_STATES = (
    "preparation",
    "awaiting_start",
    "pending",
    "closed",
    "canceled",
    "rejected",
    "timedout",
    "document_error",
)


@dataclass(frozen=True, slots=True)
class SimCallback:
    """One callback as Scrive sends it, and the outcome a correct tracker gives it."""

    kind: Kind
    subject: str
    label: str  # the Flow callback type, or the document status
    time: str  # event_created or mtime, as written
    position: tuple[int, int]  # the order key: (event ns, 0) or (object_version, mtime ns)
    body: bytes
    content_type: str
    outcome: str = "applied"


@dataclass(frozen=True, slots=True)
class SimSubject:
    """A flow instance or a document: its callbacks in order, and where it must end."""

    kind: Kind
    id: str
    state: str
    callbacks: tuple[SimCallback, ...]
    story: tuple[str, ...] = ()  # how it got there: the ending and any twists
    shown: Mapping[str, Any] = field(default_factory=dict)  # documents: the last snapshot's
