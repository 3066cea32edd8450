"""The dashboard: server-rendered pages over the same read models as the JSON API.

Each page names a pulse (`/ui/pulse`, for its subject or for everything) and redraws its
`<main>` when the pulse changes: when its subject gets a delivery, or for the lists and
the overview when any callback is taken or request quarantined.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from flowtracker import __version__
from flowtracker.engine.events import Kind
from flowtracker.engine.lifecycles import DOCUMENT, DOCUMENT_NEW, DOCUMENT_STATES, FLOW, FLOW_STATES
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import FlowtrackerError, NotFound
from flowtracker.feed import subscriptions
from flowtracker.reads import changes as feed_changes
from flowtracker.reads import summaries, views
from flowtracker.reads.diagram import layout
from flowtracker.store.protocol import SubjectFilter
from flowtracker.web.admin import admin_state
from flowtracker.web.charts import first_minute, sparkline
from flowtracker.web.reads import list_query
from flowtracker.web.runtime import Runtime, off_the_loop
from flowtracker.web.session import signed_in, signed_in_json
from flowtracker.web.templating import HEADERS, path_part, render

# Fields that tell an event from the others of its subject when its payload is not shown.
_EVENT_IDENTITY = ("type", "state", "event_created", "mtime", "object_version", "received_at")
OVERVIEW_ROWS = 10  # stuck instances and anomalies on the overview
QUARANTINE_PAGE = 20
# The error codes a request is quarantined with: the filters of the quarantine page.
QUARANTINE_CODES = ("invalid_json", "invalid_form", "invalid_event", "payload_too_large",
                    "unsupported_media_type", "request_timeout")  # fmt: skip
PREVIEW_BYTES = 4096  # of a quarantined body on its page; the rest by its own link


def page(
    handler: Callable[[Request, Runtime], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """A signed-in page whose errors are HTML pages in the site's frame; it reads the
    store off the event loop when the store asks for it (`off_the_loop`)."""

    def guarded(request: Request, run: Runtime) -> Response:
        try:
            return handler(request, run)
        except FlowtrackerError as error:
            return _render(request, run, "error.html", {"error": error}, status=error.status)

    async def endpoint(request: Request, run: Runtime) -> Response:
        return await off_the_loop(run.store, partial(guarded, request, run))

    return signed_in(endpoint)


@page
def overview(request: Request, run: Runtime) -> Response:
    return _render(request, run, "overview.html", _overview(run))


def _overview(run: Runtime) -> dict[str, Any]:
    pulse = run.store.pulse()  # before the reads: a change between shows as news
    now = time.time_ns()
    age_ns = run.settings.stuck_age_seconds * 1_000_000_000
    status = summaries.status(
        run.store, now, stuck_age_ns=age_ns, version=__version__, uptime_seconds=None
    )
    found = views.anomalies(run.store, OVERVIEW_ROWS, body_limit=0)
    newest = [{**event, "when": event["received_at"]} for event in found["events"]]
    newest += [{**item, "kind": "quarantine", "when": item["last_seen"]}
               for item in found["quarantine"]]  # fmt: skip
    received = run.store.received_since(first_minute(now))
    return {
        "section": "overview",
        "status": status,
        "stuck": views.quietest(run.store, now, age_ns, OVERVIEW_ROWS + 1),
        "rows": OVERVIEW_ROWS,
        "stuck_age": run.settings.stuck_age_seconds,
        "anomalies": sorted(newest, key=lambda a: a["when"], reverse=True)[:OVERVIEW_ROWS],
        "throughput": sparkline(received, now),
        "pulse": _minute_pulse(pulse, now),
        "pulse_url": "/ui/pulse?minute=1",
    }


@page
def instances(request: Request, run: Runtime) -> Response:
    return _list(request, run, "flow")


@page
def documents(request: Request, run: Runtime) -> Response:
    return _list(request, run, "document")


def _list_filter(
    request: Request, run: Runtime, kind: Kind
) -> tuple[tuple[str, ...], SubjectFilter, views.Page, str]:
    """A list's states, filter, page and search box, from its query (the page and its
    CSV download take the same)."""
    flow = kind == "flow"
    states = FLOW_STATES if flow else (DOCUMENT_NEW, *DOCUMENT_STATES)
    where, paging = list_query(request, states, run, stuck=flow)
    query = (request.query_params.get("q") or "").strip()
    search = query.lower() if flow else query  # flow instance ids are stored lowercase
    return states, replace(where, id_prefix=search or None), paging, query


def _list(request: Request, run: Runtime, kind: Kind) -> Response:
    flow = kind == "flow"
    states, where, paging, query = _list_filter(request, run, kind)
    search = where.id_prefix
    read = views.instances if flow else views.documents
    found, pulse = _read_with_pulse(run, None, read, where, paging)
    items = found["items"]
    if search and len(items) == 1 and items[0]["id"] == search and paging.cursor is None:
        return RedirectResponse(subject_url(kind, search), status_code=303)
    kept = {k: v for k, v in request.query_params.items() if k != "cursor"}
    context = {
        "section": kind,
        "kind": kind,
        "states": states,
        "page": found,
        "query": query,
        "where": where,
        "filtered": any(k != "limit" for k in kept),
        "stuck_filter": flow,
        "next_url": _with(kept, cursor=found["next"]),
        "first_url": _with(kept) if paging.cursor else None,
        "csv_url": f"/ui/{'instances' if flow else 'documents'}.csv" + (_with(kept) or ""),
        "sort": request.query_params.get("sort") or "first_seen",
        "since": request.query_params.get("since") or "",
        "until": request.query_params.get("until") or "",
        "pulse": _minute_pulse(pulse, time.time_ns()) if where.received_before else pulse,
        # stuck instances become stuck with time, without a delivery
        "pulse_url": "/ui/pulse?minute=1" if where.received_before else "/ui/pulse",
    }
    return _render(request, run, "list.html", context)


CSV_PAGE = 500  # rows read per page of a CSV download
CSV_COLUMNS = {
    "flow": ("id", "state", "terminal", "event_count", "anomalies", "first_event_at",
             "last_event_at", "last_received_at"),
    "document": ("id", "title", "state", "object_version", "snapshot_count", "anomalies",
                 "first_event_at", "last_event_at", "last_received_at"),
    "quarantine": ("id", "code", "message", "source", "content_type", "count", "first_seen",
                   "last_seen"),
}  # fmt: skip


@signed_in
async def instances_csv(request: Request, run: Runtime) -> Response:
    return _csv_list(request, run, "flow")


@signed_in
async def documents_csv(request: Request, run: Runtime) -> Response:
    return _csv_list(request, run, "document")


def _csv_list(request: Request, run: Runtime, kind: Kind) -> Response:
    """Every subject the list's filters select (not only its page), in its order."""
    flow = kind == "flow"
    try:
        _, where, _, _ = _list_filter(request, run, kind)
    except FlowtrackerError as error:
        return _render(request, run, "error.html", {"error": error}, status=error.status)
    read = views.instances if flow else views.documents

    def pages() -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            found = read(run.store, where, views.Page(CSV_PAGE, cursor))
            yield from found["items"]
            if (cursor := found["next"]) is None:
                return

    return _csv(pages(), CSV_COLUMNS[kind], "instances" if flow else "documents")


@signed_in
async def quarantine_csv(request: Request, run: Runtime) -> Response:
    code = request.query_params.get("code") or None

    def rows() -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            found = views.quarantine(run.store, views.Page(CSV_PAGE, cursor), 0, code)
            for item in found["items"]:
                yield {**item, "code": item["error"]["code"], "message": item["error"]["message"]}
            if (cursor := found["next"]) is None:
                return

    return _csv(rows(), CSV_COLUMNS["quarantine"], "quarantine")


def _csv(rows: Iterator[dict[str, Any]], columns: tuple[str, ...], name: str) -> Response:
    """A download of `rows`, streamed (a list may be long); read on a thread page by page.
    A cell that a spreadsheet would take for a formula is written with a leading quote."""

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
            if out.tell() > 64 * 1024:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{name}.csv"'}
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


@page
def search(request: Request, run: Runtime) -> Response:
    """The header's box: the list of instances, or of documents when only a document's id
    starts so (a whole id then opens its page)."""
    query = (request.query_params.get("q") or "").strip()
    found = _first_match(run, query)
    target = "documents" if found == "document" else "instances"
    return RedirectResponse(f"/ui/{target}?{urlencode({'q': query})}", status_code=303)


def _first_match(run: Runtime, query: str) -> Kind | None:
    if not query:
        return None
    documents = run.store.id_match("document", query)
    if documents == "whole":  # a whole document id wins
        return "document"
    if run.store.id_match("flow", query.lower()):
        return "flow"
    return "document" if documents else None


@page
def instance(request: Request, run: Runtime) -> Response:
    return _subject(request, run, "flow", request.path_params["instance_id"].lower())


@page
def document(request: Request, run: Runtime) -> Response:
    return _subject(request, run, "document", request.path_params["document_id"])


def _subject(request: Request, run: Runtime, kind: Kind, subject_id: str) -> Response:
    read = views.instance if kind == "flow" else views.document
    watched = (kind, subject_id)
    data, pulse = _read_with_pulse(run, watched, read, subject_id)
    lifecycle = FLOW if kind == "flow" else DOCUMENT
    drawn = {trigger for _, trigger, _ in lifecycle.arrows}
    timeline: list[dict[str, Any]] = []
    for event in data["events" if kind == "flow" else "snapshots"]:
        if "payload_error" in event:  # stored before the nesting limit: not shown
            text = f"(not shown: {event['payload_error']})"
            # What sets it apart without its payload; its place in the list would not
            # survive a late event landing before it.
            unique = json.dumps([event.get(name) for name in _EVENT_IDENTITY])
        else:
            text = unique = json.dumps(event["payload"], indent=2, ensure_ascii=False)
        # The payload is unique to its event: an anchor that survives a redraw.
        anchor = hashlib.sha256(unique.encode("utf-8", "replace")).hexdigest()[:16]
        timeline.append({**event, "payload_text": text, "anchor": anchor})
    context = {
        "section": kind,
        "kind": kind,
        "subject": data,
        "timeline": timeline,
        "diagram": layout(lifecycle),
        "steady": [trigger for trigger in lifecycle.triggers if trigger not in drawn],
        "pulse": pulse,
        "pulse_url": "/ui/pulse?" + urlencode([(str(kind), subject_id)]),
    }
    return _render(request, run, "subject.html", context)


@page
def quarantine(request: Request, run: Runtime) -> Response:
    cursor = request.query_params.get("cursor") or None
    code = request.query_params.get("code") or None
    paging = views.Page(QUARANTINE_PAGE, cursor)
    found, pulse = _read_with_pulse(
        run, None, partial(views.quarantine, code=code), paging, PREVIEW_BYTES
    )
    context = {
        "section": "quarantine",
        "page": found,
        "preview": PREVIEW_BYTES,
        "code": code,
        "codes": QUARANTINE_CODES,
        "admin": admin_state(request, run),
        "done": request.query_params.get("done"),
        "next_url": _with({"code": code} if code else {}, cursor=found["next"]),
        "first_url": "?" if cursor else None,
        "pulse": pulse,
        "pulse_url": "/ui/pulse",
    }
    return _render(request, run, "quarantine.html", context)


CHANGES_SHOWN = 50  # the newest changes a page shows before the live ones


@page
def changes(request: Request, run: Runtime) -> Response:
    """The webhook subscriptions and the newest changes; new ones appear as they come
    (the page follows /ui/feed)."""
    last, _ = run.store.change_clock()
    newest = run.store.changes(max(0, last - CHANGES_SHOWN), CHANGES_SHOWN)
    context = {
        "section": "changes",
        "subscriptions": [subscriptions.view(s, last) for s in run.store.subscriptions()],
        "changes": [
            {**feed_changes.change(row), "event": json.loads(row.event)} for row in newest[::-1]
        ],
        "last": last,
    }
    return _render(request, run, "changes.html", context)


@page
def quarantined_body(request: Request, run: Runtime) -> Response:
    """One kept body, whole, as text that no browser will run or render."""
    body_hash = request.path_params["body_hash"]
    body = run.store.quarantined_body(body_hash)
    if body is None:
        raise NotFound(f"no quarantined request {body_hash!r}")
    headers = {**HEADERS, "Content-Disposition": "inline"}
    return Response(body, media_type="text/plain; charset=utf-8", headers=headers)


@page
def not_found(request: Request, run: Runtime) -> Response:
    raise NotFound(f"no such page: {request.url.path}")


@signed_in_json
async def pulse(request: Request, run: Runtime) -> Response:
    return await off_the_loop(run.store, partial(_pulse, request, run))


def _pulse(request: Request, run: Runtime) -> Response:
    """The pulse a page watches: `?flow=ID` or `?document=ID`, else everything;
    `minute=1` adds the minute (the overview's sparkline and stuck list move with time)."""
    query = request.query_params
    subject: tuple[Kind, str] | None = None
    if "flow" in query:
        subject = ("flow", query["flow"].lower())
    elif "document" in query:
        subject = ("document", query["document"])
    found = run.store.pulse(subject)
    if query.get("minute") == "1":
        found = _minute_pulse(found, time.time_ns())
    return JSONResponse({"pulse": found}, headers={"Cache-Control": "no-store"})


def subject_url(kind: Kind, subject_id: str) -> str:
    return f"/ui/{'instances' if kind == 'flow' else 'documents'}/{path_part(subject_id)}"


def _read_with_pulse(
    run: Runtime, subject: tuple[Kind, str] | None, read: Callable[..., Any], *args: Any
) -> tuple[Any, str]:
    """The pulse, then the read: a change between the two shows as news, never as missed."""
    before = run.store.pulse(subject)
    return read(run.store, *args), before


def _render(
    request: Request, run: Runtime, name: str, context: dict[str, Any], status: int = 200
) -> Response:
    token_set = run.settings.read_token is not None
    return render(request, name, context, token_set=token_set, status=status)


def _minute_pulse(found: str, now_ns: int) -> str:
    return f"{found}@{format_ns(now_ns)[:16]}"


def _with(params: dict[str, str], **more: str | None) -> str | None:
    """`?query` of these parameters; None when a given value is None (no next page)."""
    if any(value is None for value in more.values()):
        return None
    return "?" + urlencode({**params, **more})
