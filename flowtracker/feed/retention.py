"""Pruning the change log in the background (SPEC 11): changes older than
`FLOWTRACKER_CHANGE_RETENTION` go, never one that a subscription is still owed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import StorageUnavailable
from flowtracker.store.protocol import Store

log = logging.getLogger("flowtracker")
T = TypeVar("T")
Runner = Callable[[Callable[[], T]], Awaitable[T]]  # runs a store call on or off the loop
EVERY_SECONDS = 600.0  # at most this long between prunings (less for a short retention)


class ChangeRetention:
    """Prunes now and then; every receiver may run one (pruning twice removes nothing)."""

    def __init__(
        self, store: Store, retention_seconds: float, run: Runner[Any],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:  # fmt: skip
        self.store, self.run, self.clock = store, run, clock
        self.retention_ns = int(retention_seconds * 1e9)
        self.every = min(EVERY_SECONDS, retention_seconds / 2)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._prune_forever(), name="change-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def prune(self) -> int:
        before = format_ns(self.clock() - self.retention_ns)
        removed: int = await self.run(partial(self.store.prune_changes, before))
        if removed:
            log.info("pruned %d changes committed before %s", removed, before)
        return removed

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.prune()
            except StorageUnavailable as error:
                log.warning("the change log could not be pruned now: %s", error.message)
