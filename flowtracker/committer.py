"""Group commit: one writer thread owns the database writes; the callbacks that arrive
while it is busy are stored together in its next transaction.

Every caller awaits its own receipt, which is handed over only after the commit that
holds its callback. Under load a batch grows to whatever arrived during the last commit
(at most `max_batch`); when idle, a callback is committed at once, or after `max_wait`
seconds if a wait is configured to gather more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .events import Callback
from .pipeline import Pipeline, Receipt

T = TypeVar("T")


class GroupCommitter:
    """Batches `submit` calls from one event loop into `Pipeline.ingest` transactions."""

    def __init__(self, pipeline: Pipeline, *, max_batch: int = 500, max_wait: float = 0.0):
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._queue: list[tuple[Callback, asyncio.Future[Receipt]]] = []
        self._wakeup = asyncio.Event()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="flowtracker-writer")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, callback: Callback) -> Receipt:
        """Store one callback; returns its receipt once its transaction has committed."""
        if self._stopping:
            raise RuntimeError("the committer is stopping")
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self._queue.append((callback, future))
        self._wakeup.set()
        return await future

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run another write (the quarantine) on the writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, function, *args)

    async def stop(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._writer.shutdown(wait=True)

    async def _run(self) -> None:
        while not (self._stopping and not self._queue):
            await self._wakeup.wait()
            self._wakeup.clear()
            if self.max_wait and len(self._queue) < self.max_batch and not self._stopping:
                await asyncio.sleep(self.max_wait)
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Callback, asyncio.Future[Receipt]]]) -> None:
        try:
            receipts = await self.run(self.pipeline.ingest, [callback for callback, _ in batch])
        except Exception as error:  # every caller of the batch learns why, as a 503 or 500
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():  # the client may have gone; its callback is stored
                future.set_result(receipt)
