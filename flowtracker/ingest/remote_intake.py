"""`RemoteIntake`: how an HTTP worker hands callbacks to the writer process.

Each request is numbered and sent at once; answers come back as the writer's commits
finish. If the writer goes away, what was in flight is answered 503 (the sender delivers
it again, and dedup makes that safe), and the next callback connects anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from flowtracker.errors import StorageUnavailable
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.ingest.wire import CHANGES_NOTICE, GONE, Framed, request_fields

ANSWER_SECONDS = 60.0  # a request unanswered for one to two times this is answered 503
RECONNECT_SECONDS = 0.5  # between attempts to reach a writer that went away, for notices


class _Writer(Framed):
    """A worker's connection to the writer: requests by number, answers as they come."""

    def __init__(self, answer_seconds: float, on_changes: Callable[[], None]) -> None:
        super().__init__()
        self.answer_seconds = answer_seconds
        self.on_changes = on_changes
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next = 0
        self._overdue = 0  # requests numbered up to this were asked a sweep ago

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().call_later(self.answer_seconds, self._sweep)

    def _sweep(self) -> None:
        """Fail what has waited a whole sweep: a writer that hangs cannot hold a request
        for ever. A late answer is dropped (dedup makes the sender's retry safe)."""
        slow = f"the writer process did not answer within {self.answer_seconds:g} s"
        for request_id in [n for n in self.waiting if n <= self._overdue]:
            future = self.waiting.pop(request_id)
            if not future.done():
                future.set_exception(StorageUnavailable(f"{slow}; deliver it again"))
        self._overdue = self._next
        if not self.lost:
            asyncio.get_running_loop().call_later(self.answer_seconds, self._sweep)

    def ask(self, request: CallbackRequest | None) -> asyncio.Future[Any]:
        fields = None if request is None else request_fields(request)
        self.send((self._next + 1, fields))  # may raise: then nothing waits
        self._next += 1
        future = self.waiting[self._next] = asyncio.get_running_loop().create_future()
        return future

    def received(self, message: Any) -> None:
        request_id, ok, value = message
        if request_id == CHANGES_NOTICE:
            self.on_changes()
            return
        future = self.waiting.pop(request_id, None)
        if future is None or future.done():  # given up on (the sweep) or cancelled
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value or RuntimeError("the writer could not store this callback"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(StorageUnavailable(GONE))
        self.waiting.clear()


class RemoteIntake:
    """An `Intake` that hands each callback to the writer process at `socket_path`."""

    def __init__(self, socket_path: str, *, answer_seconds: float = ANSWER_SECONDS) -> None:
        self.socket_path = socket_path
        self.answer_seconds = answer_seconds
        self._writer: _Writer | None = None
        self._connecting: asyncio.Lock | None = None
        self._on_changes: Callable[[], None] = lambda: None
        self._watching: asyncio.Task[None] | None = None

    def watch(self, on_changes: Callable[[], None]) -> None:
        """Call `on_changes` whenever the writer commits changes: stays connected to it
        for its notices, and connects again when it comes back."""
        self._on_changes = on_changes
        self._watching = asyncio.create_task(self._stay_connected(), name="writer-notices")

    async def _stay_connected(self) -> None:
        while True:
            try:
                writer = self._writer
                if writer is None or writer.lost:
                    writer = await self._connect()
                await writer.closed
            except StorageUnavailable:
                pass
            self._on_changes()  # notices may have been missed meanwhile
            await asyncio.sleep(RECONNECT_SECONDS)

    async def take(self, request: CallbackRequest) -> Receipt:
        return Receipt(*await self._ask(request))

    async def ping(self) -> None:
        await self._ask(None)

    async def stop(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
        if self._writer is not None and self._writer.transport is not None:
            self._writer.transport.close()

    async def _ask(self, request: CallbackRequest | None) -> Any:
        writer = self._writer
        if writer is None or writer.lost:
            writer = await self._connect()
        return await writer.ask(request)

    async def _connect(self) -> _Writer:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None or self._writer.lost:
                loop = asyncio.get_running_loop()
                try:
                    _, self._writer = await loop.create_unix_connection(
                        lambda: _Writer(self.answer_seconds, lambda: self._on_changes()),
                        self.socket_path,
                    )
                except OSError as error:
                    raise StorageUnavailable(
                        f"the writer process does not answer ({error.strerror or error})"
                    ) from None
            return self._writer
