"""The dashboard: server-rendered pages over the same read models as the JSON API.

Every page polls `/ui/pulse` and redraws its `<main>` when a callback has been taken
since it was rendered. With a read token set, a login form trades it for a session cookie.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates

from .. import __version__, views
from ..diagram import layout
from ..errors import FlowtrackerError
from ..lifecycles import DOCUMENT, DOCUMENT_NEW, DOCUMENT_STATES, FLOW, FLOW_STATES
from .auth import SESSION_COOKIE, is_read_token, may_read, session_value
from .body import read_body
from .charts import first_minute, sparkline
from .reads import list_query
from .runtime import Runtime, runtime

Handler = Callable[[Request, Runtime], Awaitable[Response]]
OVERVIEW_ROWS = 10  # stuck instances and anomalies on the overview
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.\d+)?(.*)$")


def _when(value: str | None, short: bool = False) -> str:
    """`2026-11-28T18:23:09.851741Z` as `2026-11-28 18:23:09 UTC`, or `11-28 18:23:09`
    when short; the page keeps the whole value in a title."""
    if not value:
        return "never"
    found = _STAMP.match(value)
    if found is None:
        return value
    day, clock, zone = found.groups()
    if short:
        return f"{day[5:]} {clock}"
    return f"{day} {clock} {'UTC' if zone in ('Z', '+00:00') else zone}"


def _short_id(value: str) -> str:
    """A long id cut to its first 8 characters (UUIDs differ there)."""
    return value if len(value) <= 13 else value[:8] + "…"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("flowtracker.web", "templates"),
        autoescape=True,  # every value from a payload is text, never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["short_id"] = _short_id
    env.globals["version"] = __version__
    return env


_templates = Jinja2Templates(env=_environment())


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A dashboard page: signed in (or sent to the login form), errors as HTML pages."""

    async def endpoint(request: Request) -> Response:
        run = runtime(request)
        if not may_read(request, run.settings.read_token):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/ui/login?next={quote(here, safe='')}", status_code=303)
        try:
            return await handler(request, run)
        except FlowtrackerError as error:
            return render(request, "error.html", {"error": error}, status=error.status)

    return endpoint


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    token_set = runtime(request).settings.read_token is not None
    defaults = {"token_set": token_set, "section": None, "bare": False}
    return _templates.TemplateResponse(request, name, {**defaults, **context}, status_code=status)


@page
async def overview(request: Request, run: Runtime) -> Response:
    return render(request, "overview.html", await run_in_threadpool(_overview, run))


def _overview(run: Runtime) -> dict[str, Any]:
    now = time.time_ns()
    age_ns = run.settings.stuck_age_seconds * 1_000_000_000
    status = _status(run, now)
    stuck = views.quietest(run.store, now, age_ns, OVERVIEW_ROWS + 1)
    return {
        "section": "overview",
        "status": status,
        "pulse": _pulse_of(status),
        "stuck": stuck,
        "rows": OVERVIEW_ROWS,
        "stuck_days": round(run.settings.stuck_age_seconds / 86_400, 1),
        "anomalies": views.anomalies(run.store, OVERVIEW_ROWS),
        "throughput": sparkline(run.store.received_since(first_minute(now)), now),
    }


@page
async def instances(request: Request, run: Runtime) -> Response:
    return await _list(request, run, "flow")


@page
async def documents(request: Request, run: Runtime) -> Response:
    return await _list(request, run, "document")


async def _list(request: Request, run: Runtime, kind: str) -> Response:
    flow = kind == "flow"
    states = FLOW_STATES if flow else (DOCUMENT_NEW, *DOCUMENT_STATES)
    where, paging = list_query(request, states, run, stuck=flow)
    query = (request.query_params.get("q") or "").strip()
    search = query.lower() if flow else query
    where = replace(where, id_prefix=search or None)
    read = views.instances if flow else views.documents
    found, pulse = await run_in_threadpool(_with_pulse, run, read, run.store, where, paging)
    items = found["items"]
    if search and len(items) == 1 and items[0]["id"] == search and paging.cursor is None:
        return RedirectResponse(_subject_url(kind, search), status_code=303)
    filters = {k: v for k, v in request.query_params.items() if k not in ("cursor", "limit")}
    return render(
        request,
        "list.html",
        {
            "section": kind,
            "kind": kind,
            "states": states,
            "page": found,
            "pulse": pulse,
            "query": query,
            "where": where,
            "filters": filters,
            "stuck_filter": flow,
            "next_url": f"?{urlencode({**filters, 'cursor': found['next']})}"
            if found["next"]
            else None,
            "first_url": f"?{urlencode(filters)}" if paging.cursor else None,
        },
    )


@page
async def instance(request: Request, run: Runtime) -> Response:
    subject_id = request.path_params["instance_id"]
    data, pulse = await run_in_threadpool(_with_pulse, run, views.instance, run.store, subject_id)
    return render(request, "subject.html", _subject(data, pulse, "flow", data["events"]))


@page
async def document(request: Request, run: Runtime) -> Response:
    subject_id = request.path_params["document_id"]
    data, pulse = await run_in_threadpool(_with_pulse, run, views.document, run.store, subject_id)
    return render(request, "subject.html", _subject(data, pulse, "document", data["snapshots"]))


def _subject(data: dict[str, Any], pulse: str, kind: str, events: list[Any]) -> dict[str, Any]:
    timeline = [
        {**event, "payload_text": json.dumps(event["payload"], indent=2, ensure_ascii=False)}
        for event in events
    ]
    lifecycle = FLOW if kind == "flow" else DOCUMENT
    drawn = {trigger for _, trigger, _ in lifecycle.arrows}
    return {
        "section": kind,
        "kind": kind,
        "subject": data,
        "timeline": timeline,
        "diagram": layout(lifecycle),
        "steady": [trigger for trigger in lifecycle.triggers if trigger not in drawn],
        "pulse": pulse,
    }


@page
async def quarantine(request: Request, run: Runtime) -> Response:
    cursor = request.query_params.get("cursor") or None
    found, pulse = await run_in_threadpool(
        _with_pulse, run, views.quarantine, run.store, views.Page(views.DEFAULT_LIMIT, cursor)
    )
    for item in found["items"]:
        item["details_text"] = json.dumps(item["error"]["details"], indent=2, ensure_ascii=False)
    return render(
        request,
        "quarantine.html",
        {
            "section": "quarantine",
            "page": found,
            "pulse": pulse,
            "next_url": f"?{urlencode({'cursor': found['next']})}" if found["next"] else None,
            "first_url": "?" if cursor else None,
        },
    )


async def pulse(request: Request) -> Response:
    """A token that changes whenever a callback is taken or a request quarantined."""
    run = runtime(request)
    if not may_read(request, run.settings.read_token):
        return JSONResponse({"signed_in": False}, status_code=401)
    status = await run_in_threadpool(_status, run, time.time_ns())
    return JSONResponse({"pulse": _pulse_of(status)}, headers={"Cache-Control": "no-store"})


async def login(request: Request) -> Response:
    run = runtime(request)
    token = run.settings.read_token
    target = _safe_next(request.query_params.get("next"))
    if token is None:
        return RedirectResponse(target, status_code=303)
    if request.method == "GET":
        return render(request, "login.html", {"next": target, "failed": False, "bare": True})
    body, cut_short = await read_body(request, 8 * 1024, run.settings.body_timeout_seconds)
    form = parse_qs(body.decode("utf-8", "replace")) if cut_short is None else {}
    offered = (form.get("token") or [""])[0]
    target = _safe_next((form.get("next") or [target])[0])
    if not is_read_token(offered, token):
        failed = {"next": target, "failed": True, "bare": True}
        return render(request, "login.html", failed, status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session_value(token),
        max_age=12 * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
    return response


def _with_pulse(
    run: Runtime, read: Callable[..., dict[str, Any]], *args: Any
) -> tuple[dict[str, Any], str]:
    """A read, and the pulse taken before it: a callback between the two shows as news."""
    before = _pulse_of(_status(run, time.time_ns()))
    return read(*args), before


def _status(run: Runtime, now_ns: int) -> dict[str, Any]:
    return views.status(
        run.store,
        now_ns,
        stuck_age_ns=run.settings.stuck_age_seconds * 1_000_000_000,
        version=__version__,
        uptime_seconds=round(time.monotonic() - run.started, 3),
    )


def _pulse_of(status: dict[str, Any]) -> str:
    taken = sum(status["callbacks"].values())
    return f"{taken}.{status['quarantined']}.{status['last_callback_at'] or ''}"


def _subject_url(kind: str, subject_id: str) -> str:
    return f"/ui/{'instances' if kind == 'flow' else 'documents'}/{quote(subject_id, safe='')}"


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never `//host` or `https://host` (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
