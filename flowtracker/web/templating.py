"""The dashboard's templates: one Jinja2 environment with autoescaping, its filters, and
the headers every HTML page carries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from flowtracker import __version__
from flowtracker.engine.timestamps import TimestampError, parse_timestamp

# Every script and style is a file of ours: nothing inline, nothing from elsewhere.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # the back button after signing out shows nothing
}


def templates() -> Jinja2Templates:
    """The environment of the dashboard's templates (flowtracker/web/templates)."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flowtracker.web", "templates"),
        autoescape=True,  # every value from a payload is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["short_id"] = short_id
    env.filters["path_part"] = path_part
    env.filters["duration"] = duration
    env.globals["version"] = __version__
    return Jinja2Templates(env=env)


def render(
    request: Request, name: str, context: dict[str, Any], *, token_set: bool, status: int = 200
) -> Response:
    found: Jinja2Templates = request.app.state.templates
    defaults = {"token_set": token_set, "section": None, "bare": False, "pulse_url": None}
    return found.TemplateResponse(
        request, name, {**defaults, **context}, status_code=status, headers=HEADERS
    )


def when(value: str | None, short: bool = False) -> str:
    """An RFC 3339 instant in UTC to the millisecond (`2026-11-28 18:23:09.851`, no `.000`), or
    `11-28 18:23:09` when short; the page keeps the value as sent in a title."""
    if not value:
        return "never"
    try:
        ns = parse_timestamp(value).ns
    except TimestampError:
        return value
    moment = datetime.fromtimestamp(ns // 1_000_000_000, UTC)
    if short:
        return moment.strftime("%m-%d %H:%M:%S")
    milliseconds = ns // 1_000_000 % 1000
    return f"{moment:%Y-%m-%d %H:%M:%S}" + (f".{milliseconds:03d}" if milliseconds else "")


def duration(seconds: float) -> str:
    """A span of time in words, in the largest unit that keeps it readable: "45 s",
    "20 min", "3 h", "1.5 h", "7 days" (never "0.0 days")."""
    for unit, size, more in (("days", 86_400, 2), ("h", 3_600, 2), ("min", 60, 2)):
        if seconds >= size * more or (seconds >= size and seconds % size == 0):
            amount = round(seconds / size, 1)
            shown = f"{amount:g}"
            return f"{shown} {'day' if unit == 'days' and shown == '1' else unit}"
    return f"{seconds:g} s"


def short_id(value: str) -> str:
    """A UUID cut to its first 8 characters (they differ there); other ids whole."""
    return value[:8] + "…" if len(value) == 36 and value.count("-") == 4 else value


def path_part(value: str) -> str:
    """An id as one segment of a URL path: `/` and everything else escaped."""
    return quote(value, safe="")
