"""`LocalIntake`: taking one callback request: parse it, keep it in quarantine when it is
malformed, else commit it and hand back its receipt.

An HTTP worker reads the body and gives it to an `Intake` (`interface`). `LocalIntake`
does the work in its own process, committing on its group committer's thread.
`flowtracker serve` runs a writer process next to its workers instead (`writer`): each
worker's `RemoteIntake` sends the body there, where a `LocalIntake` does the same work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flowtracker.engine.events import Callback, Kind
from flowtracker.engine.parsing import parse_document, parse_flow
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import MalformedCallback
from flowtracker.ingest.committer import GroupCommitter
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.protocol import Quarantined, Store

PARSERS: dict[Kind, Callable[[bytes, str], Callback]] = {
    "flow": parse_flow,
    "document": parse_document,
}


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

    async def take(self, request: CallbackRequest) -> Receipt:
        return await self.take_soon(request)

    def take_soon(self, request: CallbackRequest) -> asyncio.Future[Receipt]:
        """`take` without a coroutine, for the writer process: the receipt's future."""
        try:
            if request.cut_short is not None:
                raise request.cut_short
            callback = PARSERS[request.kind](request.body, request.content_type)
        except MalformedCallback as error:
            return asyncio.ensure_future(self._quarantine(request, error))
        return self.committer.enqueue(callback)

    async def _quarantine(self, request: CallbackRequest, error: MalformedCallback) -> Receipt:
        """Keeps the request, then raises its error."""
        kept = Quarantined(
            request.body, request.content_type, error.to_dict()["error"], request.source
        )
        await self.committer.run(self.store.quarantine, kept, format_ns(self.pipeline.clock()))
        raise error

    async def ping(self) -> None:
        await self.committer.run(self.store.ping)

    async def stop(self) -> None:
        await self.committer.stop()
