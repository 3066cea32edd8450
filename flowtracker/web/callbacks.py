"""The callback endpoints: authenticate, read within the limit, parse, ingest, answer.

A well-formed callback is answered 200 with its receipt only after the transaction that
holds it has committed. A malformed one is quarantined, then answered with its error.
Each callback, taken or refused, makes one line on the `flowtracker.callbacks` logger.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..errors import FlowtrackerError, MalformedCallback
from ..events import Callback, Kind
from ..parsing import parse_document, parse_flow
from ..pipeline import Receipt
from ..storage import Quarantined
from ..timestamps import format_ns
from .auth import require_callback_token
from .body import read_body
from .runtime import runtime

Parser = Callable[[bytes, str], Callback]

log = logging.getLogger("flowtracker.callbacks")
_TAKEN = "callback kind=%s id=%s outcome=%s out_of_order=%s latency_ms=%.1f"
_REFUSED = _TAKEN + " status=%d code=%s"


async def flow_callback(request: Request) -> JSONResponse:
    return await _callback(request, parse_flow, "flow")


async def document_callback(request: Request) -> JSONResponse:
    return await _callback(request, parse_document, "document")


async def _callback(request: Request, parse: Parser, kind: Kind) -> JSONResponse:
    started = time.perf_counter()
    try:
        receipt = await _take(request, parse)
    except Exception as error:
        if log.isEnabledFor(logging.WARNING):
            _log_refused(kind, error, time.perf_counter() - started)
        raise
    if log.isEnabledFor(logging.INFO):
        _log_taken(receipt, time.perf_counter() - started)
    return JSONResponse(receipt.to_dict())


async def _take(request: Request, parse: Parser) -> Receipt:
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
    return await run.committer.submit(callback)


def _log_taken(receipt: Receipt, seconds: float) -> None:
    latency_ms = round(seconds * 1000, 1)
    fields = {
        "kind": receipt.kind,
        "subject_id": receipt.subject_id,
        "outcome": receipt.outcome,
        "out_of_order": receipt.out_of_order,
        "latency_ms": latency_ms,
    }
    shown = (receipt.kind, _plain(receipt.subject_id), receipt.outcome)
    late = "true" if receipt.out_of_order else "false"
    log.info(_TAKEN, *shown, late, latency_ms, extra={"fields": fields})


def _log_refused(kind: Kind, error: Exception, seconds: float) -> None:
    """Quarantined (malformed) or rejected (unauthorized, storage down): no subject."""
    outcome = "quarantined" if isinstance(error, MalformedCallback) else "rejected"
    status = error.status if isinstance(error, FlowtrackerError) else 500
    code = error.code if isinstance(error, FlowtrackerError) else "internal_error"
    latency_ms = round(seconds * 1000, 1)
    fields = {
        "kind": kind,
        "subject_id": None,
        "outcome": outcome,
        "out_of_order": False,
        "latency_ms": latency_ms,
        "status": status,
        "code": code,
    }
    shown = (kind, "-", outcome, "false", latency_ms, status, code)
    log.warning(_REFUSED, *shown, extra={"fields": fields})


def _plain(subject_id: str) -> str:
    """A document id is the sender's text: quoted when it could break the line apart."""
    if subject_id.isprintable() and " " not in subject_id:
        return subject_id
    return json.dumps(subject_id)
