"""Taking one callback request: parse it, keep it in quarantine when it is malformed,
else commit it and hand back its receipt.

An HTTP worker reads the body and gives it to an `Intake`. `LocalIntake` does the work in
its own process, committing on its group-commit writer thread. `flowtracker serve` runs
a writer process next to its workers instead (`flowtracker.writer`): each worker's
`RemoteIntake` sends the body there, where a `LocalIntake` does the same work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .committer import GroupCommitter
from .errors import MalformedCallback
from .events import Callback, Kind
from .parsing import parse_document, parse_flow
from .pipeline import Pipeline, Receipt
from .storage import Quarantined, Store
from .timestamps import format_ns

PARSERS: dict[Kind, Callable[[bytes, str], Callback]] = {
    "flow": parse_flow,
    "document": parse_document,
}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One callback request as the HTTP worker read it."""

    kind: Kind
    body: bytes
    content_type: str
    source: str  # "POST /callbacks/flow": where it came in, for the quarantine
    cut_short: MalformedCallback | None = None  # the body was over the limit or too slow


class Intake(Protocol):
    async def take(self, delivery: Delivery) -> Receipt:
        """The receipt once the callback is committed; raises `MalformedCallback` after
        keeping the request in quarantine, `StorageUnavailable` when nothing was stored."""

    async def ping(self) -> None:
        """A small write in turn with the callbacks; raises `StorageUnavailable`."""

    async def stop(self) -> None:
        """Finish what was handed over, then let go of the writer."""


class LocalIntake:
    """Parses on the event loop, stores through a `GroupCommitter` of its own."""

    def __init__(
        self,
        store: Store,
        pipeline: Pipeline,
        *,
        max_batch: int,
        max_wait: float,
        inline: bool = False,
    ):
        self.store, self.pipeline = store, pipeline
        self.committer = GroupCommitter(
            pipeline, max_batch=max_batch, max_wait=max_wait, inline=inline
        )

    def start(self) -> None:
        self.committer.start()

    async def take(self, delivery: Delivery) -> Receipt:
        return await self.take_soon(delivery)

    def take_soon(self, delivery: Delivery) -> asyncio.Future[Receipt]:
        """`take` without a coroutine, for the writer process: the receipt's future."""
        try:
            if delivery.cut_short is not None:
                raise delivery.cut_short
            callback = PARSERS[delivery.kind](delivery.body, delivery.content_type)
        except MalformedCallback as error:
            return asyncio.ensure_future(self._quarantine(delivery, error))
        return self.committer.enqueue(callback)

    async def _quarantine(self, delivery: Delivery, error: MalformedCallback) -> Receipt:
        """Keeps the request, then raises its error."""
        kept = Quarantined(
            delivery.body, delivery.content_type, error.to_dict()["error"], delivery.source
        )
        await self.committer.run(self.store.quarantine, kept, format_ns(self.pipeline.clock()))
        raise error

    async def ping(self) -> None:
        await self.committer.run(self.store.ping)

    async def stop(self) -> None:
        await self.committer.stop()
