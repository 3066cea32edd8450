"""Signing in to the dashboard: a form that trades the read token for a session cookie."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from flowtracker.errors import FlowtrackerError, Unauthorized
from flowtracker.web.auth import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    is_read_token,
    may_read,
    session_cookie,
)
from flowtracker.web.body import read_body
from flowtracker.web.runtime import Runtime, runtime
from flowtracker.web.templating import render

Page = Callable[[Request, Runtime], Awaitable[Response]]
FORM_LIMIT = 8 * 1024


def signed_in(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """A dashboard page for signed-in readers; anyone else goes to the form first."""

    async def endpoint(request: Request) -> Response:
        run = runtime(request)
        if not may_read(request, run.settings.read_token, time.time()):
            # The path as sent: a decoded one would turn an id's %41 into A on the way back.
            raw = request.scope.get("raw_path") or request.url.path.encode()
            here = raw.decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/ui/login?next={quote(here, safe='')}", status_code=303)
        return await page(request, run)

    return endpoint


def signed_in_json(page: Page) -> Callable[[Request], Awaitable[Response]]:
    """A small JSON endpoint of the dashboard: 401 in the one error shape when signed out."""

    async def endpoint(request: Request) -> Response:
        run = runtime(request)
        if not may_read(request, run.settings.read_token, time.time()):
            error = Unauthorized("sign in to the dashboard again")
            return JSONResponse(error.to_dict(), status_code=error.status)
        return await page(request, run)

    return endpoint


async def read_form(
    request: Request, run: Runtime
) -> tuple[dict[str, str], FlowtrackerError | None]:
    """A dashboard form's fields (the first value of each), read within FORM_LIMIT bytes
    and the body time limit; else no fields and the error that cut it short."""
    body, cut_short = await read_body(
        request.receive, FORM_LIMIT, run.settings.body_timeout_seconds, run.deadlines
    )
    if cut_short is not None:
        return {}, cut_short
    fields = parse_qs(body.decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}, None


async def login(request: Request) -> Response:
    run = runtime(request)
    token = run.settings.read_token
    target = _safe_next(request.query_params.get("next"))
    if token is None or may_read(request, token, time.time()):
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return _form(request, target, failed=False)
    form, cut_short = await read_form(request, run)
    if cut_short is not None:  # too large or too slow: no form to judge
        context = {"error": cut_short, "bare": True}
        return render(request, "error.html", context, token_set=True, status=cut_short.status)
    offered = form.get("token", "")
    target = _safe_next(form.get("next", target))
    if not is_read_token(offered, token):
        return _form(request, target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_cookie(token, time.time()),
        max_age=SESSION_SECONDS,
        httponly=True,
        # Lax: a link to a page from a chat or an alert arrives signed in; every GET is a
        # read, and signing out is a POST.
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax")
    return response


def _form(request: Request, target: str, *, failed: bool) -> Response:
    context = {"next": target, "failed": failed, "bare": True}
    return render(request, "login.html", context, token_set=True, status=401 if failed else 200)


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never `//host` or `https://host` (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(character) < 0x20 or ord(character) == 0x7F for character in target):
        return "/"
    return target
