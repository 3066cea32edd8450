"""The one error shape of the API as a response, with the headers each error calls for."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from flowtracker.errors import (
    FlowtrackerError,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestTimeout,
    StorageUnavailable,
)

log = logging.getLogger("flowtracker")


class FastJSON(JSONResponse):
    """JSONResponse rendered by orjson: the same compact UTF-8, several times faster, and
    able to hold stored JSON as it is (`orjson.Fragment`, the read models' raw payloads).
    Integers past 64 bits, which orjson refuses, are rendered by the json module."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except TypeError:
            return super().render(content)


def error_response(request: HTTPConnection, error: FlowtrackerError) -> JSONResponse:
    headers = {}
    if isinstance(error, StorageUnavailable):
        runtime = getattr(request.app.state, "runtime", None)
        retry = runtime.settings.retry_after_seconds if runtime else 30
        headers["Retry-After"] = str(retry)
        method = request.scope.get("method", "")
        log.error("storage unavailable on %s %s: %s", method, request.url.path, error)
    elif error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="flowtracker"'
    elif error.status == 405 and isinstance(error.details, dict):
        headers["Allow"] = ", ".join(error.details.get("allowed", []))
    elif isinstance(error, PayloadTooLarge | RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body is not worth receiving
    return JSONResponse(error.to_dict(), status_code=error.status, headers=headers)


def not_allowed(request: HTTPConnection, allowed: list[str]) -> MethodNotAllowed:
    method = request.scope.get("method", "")
    return MethodNotAllowed(
        f"{method} is not allowed on {request.url.path} (allowed: {', '.join(allowed)})",
        {"allowed": allowed},
    )


def internal_error(request: HTTPConnection) -> JSONResponse:
    method = request.scope.get("method", "")
    log.exception("unexpected error on %s %s", method, request.url.path)
    body = {"error": {"code": "internal_error", "message": "internal error", "details": None}}
    return JSONResponse(body, status_code=500)
