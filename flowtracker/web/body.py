"""Reading a request body without ever holding much more than the limit, or waiting
longer than the timeout for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import Receive

from flowtracker.errors import MalformedCallback, PayloadTooLarge, RequestTimeout


class ClientGone(Exception):
    """The client went away before its body had arrived: there is no one to answer."""


class Deadlines:
    """Cancels the tasks whose deadline has passed, checked once a second.

    What `asyncio.timeout` does for one task, for all of them with one timer: a timer
    armed and cancelled per callback cost the path of every request more than this does.
    """

    SECONDS = 1.0

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.SECONDS, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    @contextmanager
    def within(self, seconds: float) -> Iterator[None]:
        """Raises `TimeoutError` if the block takes longer than about `seconds` (to a
        second more)."""
        task = asyncio.current_task()
        assert task is not None
        self._due[task] = time.monotonic() + seconds
        try:
            yield
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            self._expired.discard(task)
            task.uncancel()
            raise TimeoutError from None
        finally:
            self._due.pop(task, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for task in [task for task, due in self._due.items() if due <= now]:
            del self._due[task]
            self._expired.add(task)
            task.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.SECONDS, self._sweep)


async def read_body(
    receive: Receive, limit: int, timeout: float, deadlines: Deadlines
) -> tuple[bytes, MalformedCallback | None]:
    """The body up to `limit` bytes, and the error to answer when it was cut short.

    Reading stops at the first chunk past the limit: the rest of a 1 GB body is never
    read. A body still arriving after `timeout` seconds is cut off too (a client that
    trickles a byte a second would otherwise hold a connection for ever). What was read,
    up to the limit, is returned for the quarantine. Raises `ClientGone` when the client
    disconnects first.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        with deadlines.within(timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ClientGone
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    error = PayloadTooLarge(
                        f"the body is over the limit of {limit} bytes", {"limit": limit}
                    )
                    return b"".join(chunks)[:limit], error
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        slow = RequestTimeout(f"the body did not arrive within {timeout:g} s", {"read": size})
        return b"".join(chunks), slow
    return chunks[0] if len(chunks) == 1 else b"".join(chunks), None
