"""The callback endpoints: authenticate, read within the limit, parse, ingest, answer.

A well-formed callback is answered 200 with its receipt only after the transaction that
holds it has committed. A malformed one is quarantined, then answered with its error.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import MalformedCallback
from ..events import Callback
from ..parsing import parse_document, parse_flow
from ..storage import Quarantined
from ..timestamps import format_ns
from .auth import require_callback_token
from .body import read_body
from .runtime import runtime

Parser = Callable[[bytes, str], Callback]


async def flow_callback(request: Request) -> JSONResponse:
    return await _callback(request, parse_flow)


async def document_callback(request: Request) -> JSONResponse:
    return await _callback(request, parse_document)


async def _callback(request: Request, parse: Parser) -> JSONResponse:
    run = runtime(request)
    require_callback_token(request, run.settings.callback_token)
    body, cut_short = await read_body(
        request, run.settings.max_body, run.settings.body_timeout_seconds
    )
    content_type = request.headers.get("content-type", "")
    try:
        if cut_short is not None:
            raise cut_short
        callback = parse(body, content_type)
    except MalformedCallback as error:
        kept = Quarantined(body, content_type, error.to_dict()["error"], f"POST {request.url.path}")
        await run.committer.run(run.store.quarantine, kept, format_ns(run.pipeline.clock()))
        raise
    receipt = await run.committer.submit(callback)
    return JSONResponse(receipt.to_dict())
