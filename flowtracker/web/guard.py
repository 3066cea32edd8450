"""Limits on request heads that uvicorn's httptools protocol does not keep.

uvicorn bounds the time between requests on a kept-alive connection and, with
`--limit-concurrency`, the number of connections; nothing bounds a request head. A client
could send header lines a byte a minute on as many connections as it likes, or one header
of a gigabyte, and uvicorn would wait and buffer (docs/reliability.md). This protocol is
uvicorn's own, with three limits added around its parser callbacks: a head must arrive
within `HeadLimits.seconds` (else 408), and stay within `max_bytes` and `max_count`
headers (else 431). It parses nothing itself; `flowtracker serve` runs it (`--http`).

The limits come from the settings through the app's lifespan state (`HEAD_LIMITS`), which
uvicorn hands every connection.
"""

from __future__ import annotations

import asyncio
import http
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from flowtracker.errors import FlowtrackerError, RequestHeadersTooLarge, RequestTimeout

HEAD_LIMITS = "flowtracker.head_limits"  # the key of the lifespan state
PROTOCOL = "flowtracker.web.guard:GuardedHttpTools"  # for uvicorn's `http` option


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """How large and how slow a request head (request line and headers) may be."""

    max_bytes: int = 32 * 1024
    max_count: int = 100
    seconds: float = 10.0
    # Told the status of each refusal (408, 431): no app runs for them, so the responses
    # counter of /metrics hears of them here.
    refused: Callable[[int], None] = field(default=lambda status: None, compare=False)


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `HeadLimits` on every request head.

    A head's time limit is a deadline on the connection, checked once a second for all the
    connections of the process (`_Sweep`): a timer armed and cancelled for every request
    cost the path of every request more than the check does.
    """

    _limits = HeadLimits()
    _deadline: float | None = None  # by the loop's clock; None once the head is complete
    _in_head = True  # reading a request head, or waiting for one on an idle connection
    _unparsed = 0  # bytes received in this head
    _heads = 0  # request heads completed on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        found = self.app_state.get(HEAD_LIMITS)
        if isinstance(found, HeadLimits):
            self._limits = found
        _Sweep.watch(self)
        self._deadline = self.loop.time() + self._limits.seconds  # silence counts too

    def data_received(self, data: bytes) -> None:
        heading, heads = self._in_head, self._heads
        super().data_received(data)
        # In the same head before and after this chunk: all of it was head. Counted here,
        # as the parser reports a header only once its line has ended. (A chunk in which a
        # head ended, or a body ended and a head began, pipelined, is not counted.)
        if heading and self._in_head and heads == self._heads:
            self._unparsed += len(data)
            if self._unparsed > self._limits.max_bytes:
                self._refuse(_too_large(self._limits))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._deadline is None:  # a pipelined request, begun before the last answer
            self._deadline = self.loop.time() + self._limits.seconds

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle again: the next head has the same time, counted from now. The parser skips
        # blank lines between requests and uvicorn's keep-alive timer stops at any data,
        # so without this a kept-alive connection could be held by sending "\r\n".
        if not self.transport.is_closing() and not self.pipeline and not self._in_head:
            self._in_head, self._unparsed = True, 0
            self._deadline = self.loop.time() + self._limits.seconds

    def on_headers_complete(self) -> None:
        self._deadline, self._in_head, self._unparsed = None, False, 0
        self._heads += 1
        limits, headers = self._limits, self.headers
        # Summed once here rather than counted in a callback per header: this is the path
        # of every request.
        if len(headers) <= limits.max_count and (
            len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers)
            <= limits.max_bytes
        ):
            super().on_headers_complete()
            return
        # Answered as uvicorn answers over `--limit-concurrency`: another app this once.
        limits.refused(RequestHeadersTooLarge.status)
        app, self.app = self.app, _Refusal(_too_large(limits))
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def overdue(self, now: float) -> None:
        """Refuse the head if its time is up (`_Sweep`)."""
        if self._in_head and self._deadline is not None and now >= self._deadline:
            self._deadline = None
            seconds = self._limits.seconds
            self._refuse(RequestTimeout(f"the request head did not arrive within {seconds:g} s"))

    def _refuse(self, error: FlowtrackerError) -> None:
        """Answer in the one error shape and close: the head never ended, so no app ran.
        While an earlier request's answer may still be going out (pipelined), only close:
        writing now could cut into it."""
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_raw_response(error))
            self._limits.refused(error.status)
        self.transport.close()


class _Sweep:
    """Once a second, the deadlines of every guarded connection of one event loop."""

    SECONDS = 1.0
    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweep]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: weakref.WeakSet[GuardedHttpTools] = weakref.WeakSet()
        loop.call_later(self.SECONDS, self._run)

    @classmethod
    def watch(cls, connection: GuardedHttpTools) -> None:
        sweep = cls._by_loop.get(connection.loop)
        if sweep is None:
            sweep = cls._by_loop[connection.loop] = cls(connection.loop)
        sweep.connections.add(connection)

    def _run(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if connection.transport.is_closing():
                self.connections.discard(connection)
            else:
                connection.overdue(now)
        if not self.loop.is_closed():
            self.loop.call_later(self.SECONDS, self._run)


class _Refusal:
    """An ASGI app answering one error and closing the connection."""

    def __init__(self, error: FlowtrackerError) -> None:
        self.error = error

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = json.dumps(self.error.to_dict()).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": self.error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _too_large(limits: HeadLimits) -> RequestHeadersTooLarge:
    return RequestHeadersTooLarge(
        f"the request head is over the limit of {limits.max_bytes} bytes "
        f"or {limits.max_count} headers",
        {"max_bytes": limits.max_bytes, "max_count": limits.max_count},
    )


def _raw_response(error: FlowtrackerError) -> bytes:
    body = json.dumps(error.to_dict()).encode()
    phrase = http.HTTPStatus(error.status).phrase
    return (
        f"HTTP/1.1 {error.status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body
