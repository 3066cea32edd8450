"""The quarantine's actions over HTTP (SPEC 14), behind FLOWTRACKER_ADMIN_TOKEN (never the
read token): retry kept requests, or delete them. Off when no admin token is set."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from flowtracker.errors import (
    AdminActionsOff,
    FlowtrackerError,
    InvalidQuery,
    NotFound,
    Unauthorized,
)
from flowtracker.ingest import quarantine
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.web.auth import (
    ADMIN_COOKIE,
    ADMIN_OFF,
    ADMIN_SECONDS,
    csrf_token,
    is_read_token,
    may_read,
    require_admin_token,
    session_cookie,
    valid_csrf,
    valid_session,
)
from flowtracker.web.runtime import Runtime, runtime
from flowtracker.web.session import read_form
from flowtracker.web.templating import render

Action = Callable[[Request, Runtime], dict[str, Any]]


def admin(action: Action) -> Callable[[Request], Awaitable[JSONResponse]]:
    """An endpoint that changes data: the admin token first, then the action on a thread
    (it writes, and may wait for the write lock)."""

    async def endpoint(request: Request) -> JSONResponse:
        run = runtime(request)
        require_admin_token(request, run.settings.admin_token)
        return JSONResponse(await anyio.to_thread.run_sync(partial(action, request, run)))

    return endpoint


def retry_all(request: Request, run: Runtime) -> dict[str, Any]:
    return retried(run, (), request.query_params.get("code") or None)


def retry_one(request: Request, run: Runtime) -> dict[str, Any]:
    return retried(run, (quarantine.whole_id(run.store, request.path_params["id"]),))


def retried(run: Runtime, ids: tuple[str, ...], code: str | None = None) -> dict[str, Any]:
    done = quarantine.retry(Pipeline(run.store), quarantine.kept(run.store, ids, code),
                            run.settings.max_body)  # fmt: skip
    return done.to_dict()


def delete_one(request: Request, run: Runtime) -> dict[str, Any]:
    whole = quarantine.whole_id(run.store, request.path_params["id"])
    return {"deleted": quarantine.delete(run.store, (whole,))}


def delete_before(request: Request, run: Runtime) -> dict[str, Any]:
    before = request.query_params.get("before")
    if before is None:
        raise InvalidQuery({"before": "required: delete what was last seen before when?"})
    return {"deleted": quarantine.delete(run.store, (), before)}


# The dashboard's buttons ------------------------------------------------------------------
# The quarantine page offers them to a reader who has also signed in with the admin token
# (an admin session cookie of an hour, SameSite=Strict). Each button is a form that posts
# a CSRF token made from that cookie; a request from another site has neither.


def admin_state(request: Request, run: Runtime) -> dict[str, Any] | None:
    """What the quarantine page offers: None with no admin token set; else whether this
    reader is signed in as admin, and the CSRF token its forms carry."""
    token = run.settings.admin_token
    if token is None:
        return None
    cookie = request.cookies.get(ADMIN_COOKIE)
    if cookie is None or not valid_session(cookie, token, time.time(), ADMIN, ADMIN_SECONDS):
        return {"signed_in": False, "csrf": ""}
    return {"signed_in": True, "csrf": csrf_token(token, cookie)}


async def ui_admin_login(request: Request) -> Response:
    """POST /ui/admin: trade the admin token for an admin session (the reader must be
    signed in already: the page is behind the read token as any other)."""
    gate = _gate(request)
    if isinstance(gate, Response):
        return gate
    run, token = gate
    form, cut_short = await read_form(request, run)
    if cut_short is not None or not is_read_token(form.get("token", ""), token):
        return RedirectResponse("/ui/quarantine?done=" + quote("that is not the admin token"),
                                status_code=303)  # fmt: skip
    response = RedirectResponse("/ui/quarantine", status_code=303)
    response.set_cookie(
        ADMIN_COOKIE, session_cookie(token, time.time(), ADMIN), max_age=ADMIN_SECONDS,
        httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/ui",
    )  # fmt: skip
    return response


async def ui_action(request: Request) -> Response:
    """POST /ui/quarantine/retry, /ui/quarantine/{id}/retry, /ui/quarantine/{id}/delete."""
    gate = _gate(request)
    if isinstance(gate, Response):
        return gate
    run, token = gate
    cookie = request.cookies.get(ADMIN_COOKIE)
    form, cut_short = await read_form(request, run)
    if (cookie is None or cut_short is not None
            or not valid_session(cookie, token, time.time(), ADMIN, ADMIN_SECONDS)
            or not valid_csrf(form.get("csrf", ""), token, cookie)):  # fmt: skip
        return _refused(request, run, Unauthorized(
            "sign in with the admin token on the quarantine page again (the form was not "
            "one of this session's)"))  # fmt: skip
    body_hash = request.path_params.get("body_hash")
    verb = request.path_params.get("verb", "retry")
    if verb not in ("retry", "delete"):
        return _refused(request, run, NotFound(f"no such page: {request.url.path}"))
    try:
        done = await anyio.to_thread.run_sync(partial(_act, run, body_hash, verb))
    except FlowtrackerError as error:
        done = error.message
    return RedirectResponse("/ui/quarantine?done=" + quote(done), status_code=303)


ADMIN = "admin session"  # the purpose its cookie is signed for


def _gate(request: Request) -> tuple[Runtime, str] | Response:
    """A dashboard action's first checks: a signed-in reader (else to the sign-in form),
    and an admin token set (else the page that says how to allow the actions)."""
    run = runtime(request)
    if not may_read(request, run.settings.read_token, time.time()):
        return RedirectResponse("/ui/login?next=/ui/quarantine", status_code=303)
    if run.settings.admin_token is None:
        return _refused(request, run, AdminActionsOff(ADMIN_OFF))
    return run, run.settings.admin_token


def _act(run: Runtime, body_hash: str | None, verb: str) -> str:
    if verb == "delete" and body_hash is not None:
        removed = quarantine.delete(run.store, (quarantine.whole_id(run.store, body_hash),))
        return f"deleted {removed} quarantined request"
    ids = () if body_hash is None else (quarantine.whole_id(run.store, body_hash),)
    done = quarantine.retry(Pipeline(run.store), quarantine.kept(run.store, ids),
                            run.settings.max_body)  # fmt: skip
    refused = "".join(f"; {hash_[:12]} still refused: {error.code}: {error.message}"
                      for hash_, error in done.refused[:5])  # fmt: skip
    return done.total() + refused


def _refused(request: Request, run: Runtime, error: FlowtrackerError) -> Response:
    context = {"error": error}
    return render(request, "error.html", context, token_set=run.settings.read_token is not None,
                  status=error.status)  # fmt: skip
