"""Reading a request body without ever holding much more than the limit."""

from __future__ import annotations

from starlette.requests import Request

from ..errors import PayloadTooLarge


async def read_body(request: Request, limit: int) -> tuple[bytes, PayloadTooLarge | None]:
    """The body up to `limit` bytes, and the error to answer when there was more.

    Reading stops at the first chunk past the limit: the rest of a 1 GB body is never
    read. What was read, up to the limit, is returned for the quarantine.
    """
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            error = PayloadTooLarge(
                f"the body is over the limit of {limit} bytes", {"limit": limit}
            )
            return b"".join(chunks)[:limit], error
    return b"".join(chunks), None
