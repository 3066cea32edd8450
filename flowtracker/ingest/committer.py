"""Group commit: one committer owns the database writes; the callbacks that arrive while it
is busy are stored together in its next transaction.

It commits on a thread, so that the event loop goes on serving HTTP meanwhile; or, with
`inline=True`, on the event loop itself, in the writer process (`writer`), whose loop has
nothing else to do: callbacks that arrive during a commit wait in its socket.

Every caller awaits its own receipt, which is handed over only after the commit that
holds its callback. Under load a batch grows to whatever arrived during the last commit
and until the event loop has taken every request that was ready (at most `max_batch`);
when idle, a callback is committed at once, or after `max_wait` seconds if a wait is
configured to gather more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from flowtracker.engine.events import Callback
from flowtracker.errors import StorageUnavailable
from flowtracker.ingest.interface import Receipt
from flowtracker.ingest.pipeline import Pipeline

log = logging.getLogger("flowtracker")

T = TypeVar("T")
# How long a batch may go on gathering callbacks that keep arriving, after the first.
GATHER_SECONDS = 0.005


class GroupCommitter:
    """Batches `submit` calls from one event loop into `Pipeline.ingest` transactions."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        max_batch: int = 500,
        max_wait: float = 0.0,
        inline: bool = False,
    ):
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: list[tuple[Callback, asyncio.Future[Receipt]]] = []
        self._wakeup = asyncio.Event()
        self._thread = (
            None if inline else ThreadPoolExecutor(1, thread_name_prefix="flowtracker-commit")
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, callback: Callback) -> Receipt:
        """Store one callback; returns its receipt once its transaction has committed."""
        return await self.enqueue(callback)

    def enqueue(self, callback: Callback) -> asyncio.Future[Receipt]:
        """`submit` without a coroutine: the future of the receipt."""
        if self._stopping:
            raise StorageUnavailable("the service is shutting down; deliver it again")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append((callback, future))
        self._wakeup.set()
        return future

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run another write (the quarantine, the health probe) in turn with the batches."""
        if self._stopping and self._task is not None and self._task.done():
            raise StorageUnavailable("the service is shutting down; deliver it again")
        if self._thread is None:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def stop(self) -> None:
        """Commit what is queued, then stop its thread."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        try:
            while not (self._stopping and not self._queue):
                await self._wakeup.wait()
                self._wakeup.clear()
                if self.max_wait and len(self._queue) < self.max_batch and not self._stopping:
                    await asyncio.sleep(self.max_wait)
                await self._gather()
                while self._queue:
                    batch = self._queue[: self.max_batch]
                    del self._queue[: self.max_batch]
                    await self._commit(batch)
        finally:  # however it ends, no caller is left waiting
            self._stopping = True
            _fail(self._queue, StorageUnavailable("the service is shutting down; deliver it again"))
            self._queue.clear()

    async def _gather(self) -> None:
        """Lets the event loop run until a pass of it brings no callback, the batch is
        full, or `GATHER_SECONDS` have passed. What is ready then is in the batch: requests
        that reached the socket while the first were parsed, or a worker's requests sent
        one after the other. Cut at the first, a third of the commits held one or two
        callbacks and the rest waited through them: batches of 16 on average, against 31
        (docs/performance.md)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while len(self._queue) < self.max_batch and loop.time() < deadline:
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before:
                return

    async def _commit(self, batch: list[tuple[Callback, asyncio.Future[Receipt]]]) -> None:
        try:
            receipts = await self.run(self.pipeline.ingest, [callback for callback, _ in batch])
        except StorageUnavailable as error:  # the transaction failed: every caller retries
            _fail(batch, error)
            return
        except Exception:
            # Not the database: one callback tripped something. Commit them one by one, so
            # that only the one that fails again answers with an error.
            if len(batch) > 1:
                for item in batch:
                    await self._commit([item])
                return
            _fail(batch, RuntimeError("this callback could not be stored"))
            log.exception("a callback could not be stored")
            return
        except BaseException as error:  # cancelled or stopped: nobody may wait for ever
            _fail(batch, StorageUnavailable("the service is shutting down; deliver it again"))
            raise error
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():  # the client may have gone; its callback is stored
                future.set_result(receipt)


def _fail(batch: list[tuple[Callback, asyncio.Future[Receipt]]], error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
