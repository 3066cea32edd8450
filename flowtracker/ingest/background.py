"""Background work of `serve` that one receiver at a time does (retention, reconciliation):
a task on each receiver's event loop that runs the work on a thread now and then; the work
itself takes a lease in the database first (`Store.take_lease`), so that whatever the
number of receivers, one does it per period. A receiver that dies lets its lease run out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from typing import Any

from flowtracker.errors import StorageUnavailable

log = logging.getLogger("flowtracker")
STOP_SECONDS = 10.0  # how long `stop` waits for work under way to reach a stopping point


class LeasedWork:
    """Runs `run_once` on a thread, `first` seconds after `start` and then every `poll`
    seconds, until `stop`; its failures are logged, never raised. `owner` names this
    receiver in the lease; `stopping` is set when the work should end early."""

    name = "background work"  # for the log lines and the task

    def __init__(self, poll: float, first: float) -> None:
        self.poll, self.first = poll, first
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: asyncio.Future[Any] | None = None  # the work on its thread, if any

    def run_once(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._forever(), name=self.name)

    async def stop(self) -> None:
        """Ask the work to end (it looks between steps), wait for its thread a while, so
        that nothing uses the store once it is closed, then end the task."""
        self.stopping.set()
        running = self._running
        if running is not None:
            with contextlib.suppress(Exception):  # logged by the task
                await asyncio.wait_for(asyncio.shield(running), STOP_SECONDS)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _forever(self) -> None:
        await asyncio.sleep(self.first)
        while not self.stopping.is_set():
            self._running = asyncio.ensure_future(asyncio.to_thread(self.run_once))
            try:
                await asyncio.shield(self._running)  # a cancel leaves the thread to `stop`
            except StorageUnavailable as error:
                log.warning("%s: the database is unavailable: %s", self.name, error.message)
            except Exception:
                log.exception("%s failed", self.name)
            finally:
                self._running = None
            await asyncio.sleep(self.poll)
