"""The callback endpoints, `POST /callbacks/flow` and `POST /callbacks/document`:
authenticate, read the body within the limit, hand it to the intake, answer.

The intake parses and stores (`flowtracker.ingest`). A well-formed callback is answered
200 with its receipt only after the transaction that holds it has committed. A malformed
one is quarantined, then answered with its error. Each refused callback makes a line on
the `flowtracker.callbacks` logger, and so does each one taken when INFO is enabled there.

They are the service's hot path, so they run as plain ASGI middleware in front of the
rest of Starlette's middleware and its router (`CallbackEndpoints`). In-process, with no
storage, that took a callback from about 43 to 23 µs, against 20 µs for bare Starlette
(scripts/bench_route.py). Errors are answered as everywhere else
(`responses.error_response`), and the latency histogram counts them as Starlette's
routes are counted.
"""

from __future__ import annotations

import json
import logging
import time

import orjson
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from flowtracker.engine.events import Kind
from flowtracker.errors import FlowtrackerError, MalformedCallback
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.web.auth import require_callback_token
from flowtracker.web.body import ClientGone, read_body
from flowtracker.web.latency import LatencySeries
from flowtracker.web.responses import error_response, internal_error, not_allowed
from flowtracker.web.runtime import Runtime

ROUTES: dict[str, Kind] = {"/callbacks/flow": "flow", "/callbacks/document": "document"}

log = logging.getLogger("flowtracker.callbacks")
_TAKEN = "callback kind=%s id=%s outcome=%s out_of_order=%s latency_ms=%.1f"
_REFUSED = _TAKEN + " status=%d code=%s"


class CallbackEndpoints:
    """ASGI: the callback routes itself, every other request to `app` (Starlette's stack)."""

    def __init__(self, app: ASGIApp, latency: LatencySeries) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route_path(scope) if scope["type"] == "http" else ""
        kind = ROUTES.get(route)
        if kind is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            answer = await _answer(scope, receive, kind, route, started)
        except ClientGone:  # nothing was stored, and there is no one to answer
            return
        if isinstance(answer, Receipt):
            body = orjson.dumps(answer.to_dict())
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            status = 200
        else:
            await answer(scope, receive, send)
            status = answer.status_code
        self.latency.observe(route, scope["method"], status, time.perf_counter() - started)


def _route_path(scope: Scope) -> str:
    """The path below the app's root path, as Starlette's router matches it."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return str(path[len(root) :])
    return str(path)


async def _answer(
    scope: Scope, receive: Receive, kind: Kind, route: str, started: float
) -> Receipt | Response:
    """The receipt, or the error response. Plain ASGI: no Request is made unless an
    error needs one, or a callback token is to be checked."""
    if scope["method"] != "POST":
        request = Request(scope, receive)
        return error_response(request, not_allowed(request, ["POST"]))
    try:
        receipt = await _take(scope, receive, kind, route)
    except ClientGone:
        raise
    except Exception as error:
        if log.isEnabledFor(logging.WARNING):
            _log_refused(kind, error, time.perf_counter() - started)
        if isinstance(error, FlowtrackerError):
            return error_response(Request(scope, receive), error)
        return internal_error(Request(scope, receive))
    if log.isEnabledFor(logging.INFO):
        _log_taken(receipt, time.perf_counter() - started)
    return receipt


async def _take(scope: Scope, receive: Receive, kind: Kind, route: str) -> Receipt:
    run: Runtime = scope["app"].state.runtime
    settings = run.settings
    if settings.callback_token is not None:
        require_callback_token(HTTPConnection(scope), settings.callback_token)
    body, cut_short = await read_body(
        receive, settings.max_body, settings.body_timeout_seconds, run.deadlines
    )
    return await run.intake.take(
        CallbackRequest(kind, body, _content_type(scope), f"POST {route}", cut_short)
    )


def _content_type(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return str(value.decode("latin-1"))
    return ""


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
