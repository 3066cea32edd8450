"""The feed hub: one per process, it follows the change log and hands each new change to
every open feed of the process.

It reads the log only while feeds are open, and only when woken: by this process's
commits, the writer process's notice (SQLite), PostgreSQL's NOTIFY from any receiver, or,
at the latest, once a second (a `replay` or `rebuild` run by another program). So an open
feed costs no query of its own, only a bounded buffer: a feed whose client reads too
slowly to keep up is dropped once its buffer is full, and resumes by `Last-Event-ID`. With
no feed open, the callback path pays nothing for it.

A feed first catches up by reading the log itself, then subscribes at the position it
reached, then reads once more (what the hub had already passed), and from then on takes
what the hub hands it, skipping what it has sent: no change is missed or sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from flowtracker.engine.events import Kind
from flowtracker.errors import StorageUnavailable
from flowtracker.reads.changes import encoded
from flowtracker.store.protocol import Store
from flowtracker.store.rows import ChangeRow

log = logging.getLogger("flowtracker")
T = TypeVar("T")
Reader = Callable[[Callable[[], T]], Awaitable[T]]  # runs a store read on or off the loop
PAGE = 1_000  # changes read at once
SAFETY_SECONDS = 1.0  # the log is read at least this often while feeds are open


class Dropped(Exception):
    """The feed's buffer filled up: its client reads too slowly."""


@dataclass(eq=False)
class Subscriber:
    """One open feed: the changes that match its filters, waiting to be sent."""

    kind: Kind | None
    subject: str | None
    limit: int
    waiting: deque[tuple[int, bytes]] = field(default_factory=deque)
    dropped: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, row: ChangeRow, line: bytes) -> None:
        if (self.kind and row.kind != self.kind) or (self.subject and row.subject != self.subject):
            return
        if len(self.waiting) >= self.limit:
            self.dropped = True
        else:
            self.waiting.append((row.seq, line))
        self.ready.set()

    async def next(self) -> list[tuple[int, bytes]]:
        """The changes waiting (at least one); raises `Dropped` once the buffer overflowed."""
        while not self.waiting and not self.dropped:
            self.ready.clear()
            await self.ready.wait()
        if self.dropped:
            raise Dropped
        taken = list(self.waiting)
        self.waiting.clear()
        return taken


class Hub:
    """Follows the change log for this process's open feeds (see the module's docstring)."""

    def __init__(self, store: Store, read: Reader[Any], *, buffer: int = 1_000) -> None:
        self.store, self.read, self.buffer = store, read, buffer
        # Read in pages that fit twice in a buffer, with a turn for the feeds after each:
        # a burst (a replay) fills no buffer of a client that keeps up.
        self.page = max(1, min(PAGE, buffer // 2))
        self.subscribers: set[Subscriber] = set()
        self.position: int | None = None  # the last change handed out; None while idle
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="feed-hub")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        """Changes were committed: read them (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            if asyncio.get_running_loop() is loop:
                self._wake.set()
                return
        except RuntimeError:
            pass
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake.set)

    def subscribe(self, kind: Kind | None, subject: str | None, after: int) -> Subscriber:
        """A feed that has read the log up to `after` itself."""
        if self.position is None:  # idle until now: follows on from this feed
            self.position = after
        subscriber = Subscriber(kind, subject, self.buffer)
        self.subscribers.add(subscriber)
        self._wake.set()
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            self.position = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), SAFETY_SECONDS)
            self._wake.clear()
            if not self.subscribers:
                continue
            try:
                await self._follow()
            except StorageUnavailable as error:
                log.warning("the change feed cannot read the change log: %s", error.message)
            except Exception:
                log.exception("the change feed failed to read the change log")

    async def _follow(self) -> None:
        while self.position is not None:
            rows = await self.read(partial(self.store.changes, self.position, self.page))
            if self.position is None:  # every feed closed meanwhile
                return
            for row in rows:
                line = encoded(row)
                for subscriber in list(self.subscribers):
                    subscriber.offer(row, line)
            if rows:
                self.position = rows[-1].seq
            if len(rows) < self.page:
                return
            await asyncio.sleep(0)  # the feeds send what they were handed
