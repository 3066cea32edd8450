"""The webhook delivery worker inside `serve` (SPEC 12): for every subscription, its
changes POSTed one at a time, in `seq` order, signed, retried with backoff until a 2xx.

Each subscription has a task of its own, so a failing endpoint holds up only itself. The
task delivers only while its receiver holds the subscription's lease in the database
(renewed before every attempt; another receiver takes over once it runs out), and keeps
the position after each success: after a crash, delivery goes on from the first change
not yet delivered (one may come twice, with the same `webhook-id`, never zero times).
Nothing here runs in, or waits for, the callback path; a subscriber that is down costs
one row and a sleeping task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx2 as httpx

from flowtracker import __version__
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import StorageUnavailable
from flowtracker.feed.subscriptions import body, signed_headers
from flowtracker.settings import Settings
from flowtracker.store.protocol import Store
from flowtracker.store.rows import ChangeRow, SubscriptionRow

log = logging.getLogger("flowtracker")
T = TypeVar("T")
Reader = Callable[[Callable[[], T]], Awaitable[T]]  # runs a store call on or off the loop
PAGE = 200  # changes looked at once for the next one a subscription takes
IDLE_SECONDS = 1.0  # a subscription with nothing to deliver looks again this often
WOKEN_SECONDS = 0.05  # at least this between two looks of a subscription that waits
RUN_NS = 500_000_000  # a run of deliveries keeps its position after this long at most
ERROR_LIMIT = 200  # characters of an endpoint's error kept


class Deliveries:
    """Runs a delivery task per subscription that is not paused (see the module)."""

    def __init__(
        self, store: Store, settings: Settings, run: Reader[Any],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:  # fmt: skip
        self.store, self.settings, self.run, self.clock = store, settings, run, clock
        # Who holds a lease: this process, on this host (a new name at each start).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.backoff = settings.backoff_seconds()
        self.lease_ns = int(settings.webhook_lease_seconds * 1e9)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, int] = {}  # the leases this process holds, until when (ns)
        self._wake = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.settings.webhook_timeout_seconds),
            follow_redirects=False,
            headers={"user-agent": f"flowtracker/{__version__}"},
            trust_env=False,  # deliveries go where the subscription says, not via a proxy
        )
        self._main = asyncio.create_task(self._supervise(), name="webhook-deliveries")

    async def stop(self) -> None:
        tasks = [t for t in (self._main, *self.tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for id_ in list(self.tasks):
            with contextlib.suppress(StorageUnavailable):
                await self.run(partial(self.store.release_subscription, id_, self.owner))
        if self._client is not None:
            await self._client.aclose()

    def wake_threadsafe(self) -> None:
        """Changes were committed: look for them now (from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._wake.set)

    async def _supervise(self) -> None:
        """A task for each subscription not paused, looked up every `webhook_poll_seconds`."""
        while True:
            try:
                subscriptions = await self.run(self.store.subscriptions)
            except StorageUnavailable as error:
                log.warning("webhook deliveries cannot read the subscriptions: %s", error.message)
                subscriptions = None
            if subscriptions is not None:
                wanted = {s.id for s in subscriptions if not s.paused}
                for id_ in wanted - set(self.tasks):
                    task = asyncio.create_task(self._deliver_for(id_), name=f"webhook-{id_}")
                    self.tasks[id_] = task
                    task.add_done_callback(partial(self._ended, id_))
            await asyncio.sleep(self.settings.webhook_poll_seconds)

    def _ended(self, id_: str, task: asyncio.Task[None]) -> None:
        if self.tasks.get(id_) is task:
            del self.tasks[id_]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook deliveries of %s stopped", id_, exc_info=task.exception())

    async def _deliver_for(self, id_: str) -> None:
        """Deliver for one subscription until it is removed or paused."""
        while True:
            try:
                subscription = await self.run(partial(self.store.subscription, id_))
                if subscription is None or subscription.paused:
                    await self.run(partial(self.store.release_subscription, id_, self.owner))
                    self._held.pop(id_, None)
                    return
                wait = await self._step(subscription)
            except StorageUnavailable as error:
                log.warning("webhook deliveries of %s wait for the database: %s",
                            id_, error.message)  # fmt: skip
                wait = IDLE_SECONDS
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                await asyncio.sleep(WOKEN_SECONDS)  # commits come in bursts: one look

    async def _step(self, subscription: SubscriptionRow) -> float:
        """A run of attempts, if one is due and the lease is ours; the seconds to wait after.

        The changes of a run are read at once and POSTed one by one; the position is kept
        after the run (at most `RUN_SECONDS` or a page long), or at the first failure: a
        crash meanwhile delivers that run again, never skips it."""
        now = self.clock()
        if self._held.get(subscription.id, 0) - now < self.lease_ns * 2 // 3:
            until = now + self.lease_ns
            lease = partial(self.store.lease_subscription, subscription.id, self.owner, now,
                            until)  # fmt: skip
            if not await self.run(lease):  # another receiver delivers for it
                self._held.pop(subscription.id, None)
                return self.settings.webhook_lease_seconds / 3
            self._held[subscription.id] = until
        if subscription.next_attempt_ns > now:
            return min((subscription.next_attempt_ns - now) / 1e9, self.lease_ns / 3e9)
        rows = await self.run(partial(self.store.changes, subscription.position, PAGE))
        if not rows:
            return IDLE_SECONDS
        position, delivered, status, ends = subscription.position, 0, None, now + RUN_NS
        for row in rows:
            if row.kind in subscription.kinds:
                status, error = await self._attempt(subscription, row)
                if error is not None:
                    return await self._failed(subscription, position, delivered, row, status,
                                              error)  # fmt: skip
                delivered += 1
            position = row.seq  # delivered, or of a kind it does not take
            if self.clock() > ends:
                break
        await self._record(subscription, position, delivered, status, None)
        return 0

    async def _attempt(
        self, subscription: SubscriptionRow, row: ChangeRow
    ) -> tuple[int | None, str | None]:
        """POST one change: the status answered, and what went wrong (None: delivered)."""
        now = self.clock()
        payload = body(row, now)
        headers = signed_headers(subscription, row, payload, now)
        assert self._client is not None
        try:
            response = await self._client.post(subscription.url, content=payload, headers=headers)
        except httpx.TimeoutException:
            return None, f"no answer within {self.settings.webhook_timeout_seconds:g} s"
        except httpx.HTTPError as problem:
            return None, f"{type(problem).__name__}: {problem}"[:ERROR_LIMIT] or "request failed"
        status = response.status_code
        return status, None if 200 <= status < 300 else f"answered {status}"

    async def _failed(
        self, subscription: SubscriptionRow, position: int, delivered: int, row: ChangeRow,
        status: int | None, error: str,
    ) -> float:  # fmt: skip
        failures = subscription.failures + 1 if not delivered else 1
        wait = self.backoff[min(failures, len(self.backoff)) - 1]
        wait *= random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
        log.warning("webhook %s: change %d not delivered (%s); again in %.1f s",
                    subscription.id, row.seq, error, wait)  # fmt: skip
        await self._record(subscription, position, delivered, status, error,
                           failures=failures, next_ns=self.clock() + int(wait * 1e9))  # fmt: skip
        return wait

    async def _record(
        self, subscription: SubscriptionRow, position: int, delivered: int,
        status: int | None, error: str | None, *, failures: int = 0, next_ns: int = 0,
    ) -> None:  # fmt: skip
        """Keep how a run went, while the lease is ours and nobody moved the position
        meanwhile (`webhooks replay`): else the next step reads the subscription again
        and goes on from where it is."""
        kept = partial(
            self.store.record_attempts, subscription.id, self.owner, subscription.position,
            position=position, delivered=delivered, failures=failures,
            at=format_ns(self.clock()), status=status, error=error, next_attempt_ns=next_ns,
        )  # fmt: skip
        await self.run(kept)
