"""`GET /changes` (a page of the change log, JSON) and `GET /feed` (the change log as
Server-Sent Events, live), SPEC 11. The dashboard's live view follows `/ui/feed`, the
same stream behind its session cookie."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from flowtracker.engine.events import KINDS, Kind
from flowtracker.errors import InvalidQuery, Unauthorized
from flowtracker.feed.hub import Dropped, Hub
from flowtracker.reads import changes
from flowtracker.web.auth import may_read, require_read_token
from flowtracker.web.reads import limit_query
from flowtracker.web.responses import FastJSON
from flowtracker.web.runtime import Runtime, off_the_loop, runtime

CATCH_UP_PAGE = 500  # changes read at once while a feed catches up


async def changes_page(request: Request) -> Response:
    run = runtime(request)
    require_read_token(request, run.settings.read_token)
    after, kind, subject, problems = _query(request, default_after=0)
    limit = limit_query(request, changes.DEFAULT_LIMIT, changes.MAX_LIMIT, problems)
    if problems:
        raise InvalidQuery(problems)
    assert after is not None
    page = partial(changes.page, run.store, after, limit, kind, subject)
    return FastJSON(await off_the_loop(run.store, page))


async def feed(request: Request) -> Response:
    run = runtime(request)
    require_read_token(request, run.settings.read_token)
    return await _stream(request, run)


async def dashboard_feed(request: Request) -> Response:
    """`/feed` for the dashboard's live view: the session cookie will do (EventSource
    cannot send an Authorization header)."""
    run = runtime(request)
    if not may_read(request, run.settings.read_token, time.time()):
        raise Unauthorized("log in to the dashboard first")
    return await _stream(request, run)


async def _stream(request: Request, run: Runtime) -> Response:
    after, kind, subject, problems = _query(request, default_after=None)
    if problems:
        raise InvalidQuery(problems)
    store = run.store
    if after is None:  # only what is committed from now on
        after = (await off_the_loop(store, store.change_clock))[0]
    else:
        await off_the_loop(store, partial(changes.check_cursor, store, after))
    hub: Hub = run.hub
    settings = run.settings
    return EventSourceResponse(
        _events(run, hub, after, kind, subject),
        ping=settings.feed_keepalive_seconds,
        send_timeout=settings.feed_send_timeout_seconds,
        headers={"Cache-Control": "no-store"},
    )


async def _events(
    run: Runtime, hub: Hub, after: int, kind: Kind | None, subject: str | None
) -> AsyncIterator[ServerSentEvent]:
    """Catch up from the log, subscribe, catch up on what the hub had passed, then live
    (see `feed.hub`); ends when the client falls a whole buffer behind."""
    store, position = run.store, after

    async def catch_up() -> AsyncIterator[ServerSentEvent]:
        nonlocal position
        while True:
            page = partial(store.changes, position, CATCH_UP_PAGE, kind, subject)
            rows = await off_the_loop(store, page)
            for row in rows:
                position = row.seq
                yield _event(row.seq, changes.encoded(row))
            if len(rows) < CATCH_UP_PAGE:
                return

    async for event in catch_up():
        yield event
    subscriber = hub.subscribe(kind, subject, position)
    run.open_feeds.inc()
    try:
        async for event in catch_up():
            yield event
        while True:
            try:
                waiting = await subscriber.next()
            except Dropped:
                return  # the client resumes by Last-Event-ID
            for seq, line in waiting:
                if seq > position:
                    position = seq
                    yield _event(seq, line)
    finally:
        hub.unsubscribe(subscriber)
        run.open_feeds.dec()


def _event(seq: int, line: bytes) -> ServerSentEvent:
    return ServerSentEvent(data=line.decode(), id=str(seq), event="change")


def _query(
    request: Request, *, default_after: int | None
) -> tuple[int | None, Kind | None, str | None, dict[str, str]]:
    """`after` (or the `Last-Event-ID` header), `kind` and `subject`, and what is wrong."""
    query, problems = request.query_params, {}
    after: int | None = default_after
    raw: Any = query.get("after")
    name = "after"
    if raw is None and request.headers.get("last-event-id") is not None:
        raw, name = request.headers["last-event-id"], "Last-Event-ID"
    if raw is not None:
        raw = raw.strip()
        if raw.isascii() and raw.isdigit() and len(raw) < 19:
            after = int(raw)
        else:
            problems[name] = f"must be a change's seq, a whole number from 0 (got {raw!r})"
    kind = query.get("kind") or None
    if kind is not None and kind not in KINDS:
        problems["kind"] = f"must be one of {', '.join(KINDS)}"
    subject = query.get("subject") or None
    return after, kind, subject, problems  # type: ignore[return-value]
