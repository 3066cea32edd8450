"""The read endpoints: JSON from the read models (`reads`), the same the CLI prints with
--json, and `/metrics`.

On SQLite, reads run on the event loop itself, not on a thread: a read of one subject
takes well under a millisecond of Python, which holds the interpreter lock on a thread as
much as here, and the hop to anyio's threads cost more than the read
(docs/performance.md). So a worker uses one reader connection, and its page cache,
whatever the number of readers. On PostgreSQL a read waits on the network: on a thread
(`runtime.off_the_loop`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial

from prometheus_client import generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from flowtracker import __version__
from flowtracker.engine.lifecycles import DOCUMENT_NEW, DOCUMENT_STATES, FLOW_STATES
from flowtracker.engine.timestamps import moment
from flowtracker.errors import InvalidQuery, StorageUnavailable
from flowtracker.reads import summaries, views
from flowtracker.store.protocol import SubjectFilter
from flowtracker.web.auth import require_read_token
from flowtracker.web.responses import FastJSON
from flowtracker.web.runtime import Runtime, off_the_loop, runtime

_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# The classic text format: what every Prometheus version reads.
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def reading(
    read: Callable[[Request, Runtime], Response],
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint of the read API: the read token checked, then `read` run on the event
    loop or off it, as the store asks (`off_the_loop`)."""

    async def endpoint(request: Request) -> Response:
        run = _reader(request)
        return await off_the_loop(run.store, partial(read, request, run))

    return endpoint


@reading
def instance(request: Request, run: Runtime) -> JSONResponse:
    return FastJSON(views.instance(run.store, request.path_params["instance_id"], raw=True))


@reading
def instances(request: Request, run: Runtime) -> JSONResponse:
    where, page = list_query(request, FLOW_STATES, run)
    return FastJSON(views.instances(run.store, where, page))


@reading
def document(request: Request, run: Runtime) -> JSONResponse:
    return FastJSON(views.document(run.store, request.path_params["document_id"], raw=True))


@reading
def documents(request: Request, run: Runtime) -> JSONResponse:
    where, page = list_query(request, (DOCUMENT_NEW, *DOCUMENT_STATES), run, stuck=False)
    return FastJSON(views.documents(run.store, where, page))


@reading
def status(request: Request, run: Runtime) -> JSONResponse:
    return FastJSON(
        summaries.status(
            run.store,
            time.time_ns(),
            stuck_age_ns=run.settings.stuck_age_seconds * 1_000_000_000,
            version=__version__,
            uptime_seconds=round(time.monotonic() - run.started, 3),
        )
    )


@reading
def anomalies(request: Request, run: Runtime) -> JSONResponse:
    return FastJSON(views.anomalies(run.store, _page(request).limit))


@reading
def quarantine(request: Request, run: Runtime) -> JSONResponse:
    code = request.query_params.get("code") or None
    return FastJSON(views.quarantine(run.store, _page(request), code=code))


async def metrics(request: Request) -> Response:
    """The app's registry in Prometheus text format; needs the read token when one is set."""
    run = _reader(request)
    body = generate_latest(run.registry)
    return Response(body, media_type=PROMETHEUS_TEXT)


async def healthz(request: Request) -> JSONResponse:
    run = runtime(request)
    try:
        # Through the intake, in turn with the callbacks: a flood of health checks cannot
        # starve them of the write lock, and a writer process that is gone shows here.
        await run.intake.ping()
    except StorageUnavailable as error:
        raise StorageUnavailable(f"the database does not answer: {error.message}") from error
    return JSONResponse({"status": "ok"})


def _reader(request: Request) -> Runtime:
    run = runtime(request)
    require_read_token(request, run.settings.read_token)
    return run


def _page(request: Request, problems: dict[str, str] | None = None) -> views.Page:
    """`limit` and `cursor`; raises with these and any `problems` found before."""
    problems = {} if problems is None else problems
    limit = limit_query(request, views.DEFAULT_LIMIT, views.MAX_LIMIT, problems)
    if problems:
        raise InvalidQuery(problems)
    return views.Page(limit, request.query_params.get("cursor") or None)


def limit_query(request: Request, default: int, maximum: int, problems: dict[str, str]) -> int:
    """`limit` in 1..`maximum` (`default` when absent); what is wrong goes to `problems`."""
    raw = request.query_params.get("limit", str(default))
    limit = int(raw) if raw.isascii() and raw.isdigit() else 0
    if not 1 <= limit <= maximum:
        problems["limit"] = f"must be a whole number in 1..{maximum} (got {raw!r})"
    return limit


def list_query(
    request: Request, states: tuple[str, ...], run: Runtime, *, stuck: bool = True
) -> tuple[SubjectFilter, views.Page]:
    query, problems = request.query_params, {}
    state = query.get("state") or None
    if state is not None and state not in states:
        problems["state"] = f"must be one of {', '.join(states)}"
    flags = {}
    for name in ("anomalous", "stuck") if stuck else ("anomalous",):
        flags[name] = _BOOLEANS.get(query.get(name, "false").lower())
        if flags[name] is None:
            problems[name] = "must be true or false"
    sort = query.get("sort") or "first_seen"
    if sort not in SORTS:
        problems["sort"] = f"must be one of {', '.join(SORTS)}"
    times: dict[str, str | None] = {}
    for name in ("since", "until"):
        try:
            raw = query.get(name)
            times[name] = moment(raw, name, end_of_day=name == "until") if raw else None
        except InvalidQuery as error:
            problems.update(error.details)
    page = _page(request, problems)
    received_before = None
    if flags.get("stuck"):
        age_ns = run.settings.stuck_age_seconds * 1_000_000_000
        received_before = views.stuck_filter(time.time_ns(), age_ns).received_before
    where = SubjectFilter(
        state=state, anomalous=bool(flags["anomalous"]), received_before=received_before,
        received_since=times["since"], received_until=times["until"],
        by_activity=sort == "last_activity",
    )  # fmt: skip
    return where, page


# How a list is ordered: as first seen (the oldest first), or by the last callback
# received (the latest first).
SORTS = ("first_seen", "last_activity")
