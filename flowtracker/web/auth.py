"""Tokens: the callback token (query, Basic password or Bearer) and the read token (Bearer,
or for the dashboard a session cookie set by its login form)."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
from urllib.parse import unquote_plus

from starlette.requests import HTTPConnection

from flowtracker.errors import AdminActionsOff, Unauthorized

# A value runs to the next & (the query parser keeps a ; in it, so the token would too).
_PARAMETER = re.compile(r"([?&;])([^=&;\s]*)=[^&\s]*")
SESSION_COOKIE = "flowtracker_session"


def require_callback_token(request: HTTPConnection, token: str | None) -> None:
    """Pass when no token is set, or the request carries it in any of the three places."""
    if token is None:
        return
    offered = [request.query_params.get("token"), *_from_authorization(request)]
    if not any(_same(candidate, token) for candidate in offered if candidate is not None):
        raise Unauthorized(
            "a valid callback token is required (?token=, HTTP Basic password or Bearer)"
        )


def require_read_token(request: HTTPConnection, token: str | None) -> None:
    if token is not None and not _bearer_is(request, token):
        raise Unauthorized("a valid read token is required (Authorization: Bearer)")


ADMIN_OFF = ("actions that change data are off over HTTP: set FLOWTRACKER_ADMIN_TOKEN on "
             "the server to allow them (the command line always has them)")  # fmt: skip


def require_admin_token(request: HTTPConnection, token: str | None) -> None:
    """The quarantine's actions over HTTP: only with FLOWTRACKER_ADMIN_TOKEN set, and only
    with that token (never the read token)."""
    if token is None:
        raise AdminActionsOff(ADMIN_OFF)
    if not _bearer_is(request, token):
        raise Unauthorized("a valid admin token is required (Authorization: Bearer)")


SESSION_SECONDS = 12 * 3600


def may_read(request: HTTPConnection, token: str | None, now: float) -> bool:
    """For the dashboard: no read token set, the Bearer token, or a live session cookie."""
    if token is None:
        return True
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is not None and valid_session(cookie, token, now):
        return True
    return _bearer_is(request, token)


def _bearer_is(request: HTTPConnection, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and _same(value.strip(), token)


def is_read_token(offered: str, token: str) -> bool:
    return _same(offered, token)


ADMIN_COOKIE = "flowtracker_admin"
ADMIN_SECONDS = 3600  # an admin session of the dashboard: an hour


def session_cookie(token: str, now: float, purpose: str = "dashboard session") -> str:
    """`issued.signature`: the time of sign-in, signed with the read token (never the token
    itself). It expires after SESSION_SECONDS, and a new token ends every session. The
    admin session (`purpose` "admin session") is signed with the admin token."""
    issued = str(int(now))
    return f"{issued}.{_signature(token, issued, purpose)}"


def valid_session(
    cookie: str, token: str, now: float, purpose: str = "dashboard session",
    seconds: float = SESSION_SECONDS,
) -> bool:  # fmt: skip
    issued, _, signature = cookie.partition(".")
    if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
        return False
    age = now - int(issued)
    return -60 <= age < seconds and _same(signature, _signature(token, issued, purpose))


def csrf_token(admin_token: str, cookie: str) -> str:
    """What a form of the admin session carries: a page of another site can neither read
    it nor make it (SPEC 14)."""
    return hmac.new(admin_token.encode("utf-8"), b"flowtracker csrf " + cookie.encode(),
                    "sha256").hexdigest()  # fmt: skip


def valid_csrf(offered: str, admin_token: str, cookie: str) -> bool:
    return _same(offered, csrf_token(admin_token, cookie))


def _signature(token: str, issued: str, purpose: str) -> str:
    message = f"flowtracker {purpose} {issued}".encode()
    return hmac.new(token.encode("utf-8"), message, "sha256").hexdigest()


def _from_authorization(request: HTTPConnection) -> list[str]:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return [value]
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return []
        return [decoded.partition(":")[2]]
    return []


def _same(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


class RedactTokens(logging.Filter):
    """Keeps `?token=` values out of uvicorn's access log lines, however the name is
    written (`%74oken=` is the same parameter to the query parser)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _PARAMETER.sub(_redacted, arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


def _redacted(found: re.Match[str]) -> str:
    name = found.group(2)
    if unquote_plus(name).strip().lower() != "token":
        return found.group(0)
    return f"{found.group(1)}{name}=[redacted]"
