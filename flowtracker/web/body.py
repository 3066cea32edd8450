"""Reading a request body without ever holding much more than the limit, or waiting
longer than the timeout for it."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from flowtracker.errors import MalformedCallback, PayloadTooLarge, RequestTimeout


async def read_body(
    request: Request, limit: int, timeout: float
) -> tuple[bytes, MalformedCallback | None]:
    """The body up to `limit` bytes, and the error to answer when it was cut short.

    Reading stops at the first chunk past the limit: the rest of a 1 GB body is never
    read. A body still arriving after `timeout` seconds is cut off too (a client that
    trickles a byte a second would otherwise hold a connection for ever). What was read,
    up to the limit, is returned for the quarantine.
    """
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    error = PayloadTooLarge(
                        f"the body is over the limit of {limit} bytes", {"limit": limit}
                    )
                    return b"".join(chunks)[:limit], error
    except TimeoutError:
        slow = RequestTimeout(f"the body did not arrive within {timeout:g} s", {"read": size})
        return b"".join(chunks), slow
    return b"".join(chunks), None
