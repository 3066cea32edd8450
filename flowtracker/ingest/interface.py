"""The write path as the HTTP side sees it: a callback request handed in, a receipt handed
back, and the `Intake` that takes one. Nothing here imports the write stack, so the HTTP
workers and the socket to the writer process need no more than this."""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from flowtracker.engine.events import Kind
from flowtracker.errors import MalformedCallback


class CallbackRequest(NamedTuple):
    """One callback request as the HTTP worker read it. (Tuples, these two: made and
    taken apart for every callback, on both sides of the writer's socket.)"""

    kind: Kind
    body: bytes
    content_type: str
    source: str  # "POST /callbacks/flow": where it came in, for the quarantine
    cut_short: MalformedCallback | None = None  # the body was over the limit or too slow


class Receipt(NamedTuple):
    """What a delivery did: the answer a sender gets once it is durably stored."""

    outcome: str  # applied | illegal | ignored | duplicate
    out_of_order: bool
    reason: str | None
    kind: Kind
    subject_id: str
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "out_of_order": self.out_of_order,
            "reason": self.reason,
            "subject": {"kind": self.kind, "id": self.subject_id, "state": self.state},
        }


class Intake(Protocol):
    """Where an HTTP worker hands its callbacks: this process's committer
    (`intake.LocalIntake`) or the writer process (`remote_intake.RemoteIntake`)."""

    async def take(self, request: CallbackRequest) -> Receipt:
        """The receipt once the callback is committed; raises `MalformedCallback` after
        keeping the request in quarantine, `StorageUnavailable` when nothing was stored."""

    async def ping(self) -> None:
        """A small write in turn with the callbacks; raises `StorageUnavailable`."""

    async def stop(self) -> None:
        """Finish what was handed over, then let go of the writer."""
