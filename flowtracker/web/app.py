"""`create_app(settings)`: routes, the lifespan that opens the database, one error shape."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowtracker.errors import (
    FlowtrackerError,
    NotFound,
)
from flowtracker.feed.delivery import Deliveries
from flowtracker.feed.hub import Hub
from flowtracker.feed.retention import ChangeRetention
from flowtracker.ingest.intake import LocalIntake
from flowtracker.ingest.interface import Intake
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.remote_intake import RemoteIntake
from flowtracker.ingest.retention import BackgroundRetention
from flowtracker.ingest.wire import WRITER_SOCKET
from flowtracker.logs import lighten
from flowtracker.reads.metrics import (
    StoreCollector,
    build_info,
    http_responses,
    open_feeds,
    request_latency,
)
from flowtracker.scrive.reconcile import BackgroundReconciliation
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store
from flowtracker.web import admin, callbacks, dashboard, feed, reads, session
from flowtracker.web.auth import RedactTokens
from flowtracker.web.guard import HEAD_LIMITS, HeadLimits
from flowtracker.web.latency import LatencySeries, RequestTimer
from flowtracker.web.openapi import openapi_document
from flowtracker.web.responses import error_response, internal_error, not_allowed
from flowtracker.web.runtime import Runtime, off_the_loop
from flowtracker.web.templating import templates

log = logging.getLogger("flowtracker")
SUPERVISOR = "FLOWTRACKER_SUPERVISOR_PID"  # set by `serve --workers N` for its workers


def create_app(
    settings: Settings, *, writer_socket: str | None = None, supervisor: int | None = None
) -> Starlette:
    """The flowtracker service for these settings; the database opens when it starts.

    Callbacks are stored by the writer process listening on `writer_socket` when one is
    given (as `flowtracker serve` does), else on a writer thread of this process. A worker
    whose `supervisor` (uvicorn's main process, by pid) is gone stops itself.
    """
    registry = CollectorRegistry()  # the app's own: several apps in one process never clash
    feeds_open = open_feeds(registry)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        store = open_store(
            settings.db_path,
            durability=settings.durability,
            busy_timeout_ms=settings.busy_timeout_ms,
        )
        hub = Hub(store, partial(off_the_loop, store), buffer=settings.feed_buffer)
        intake: Intake
        if writer_socket is not None:
            intake = remote = RemoteIntake(writer_socket)
            remote.watch(lambda: woken())  # the writer's notices of its commits
        else:
            intake = local = LocalIntake(
                store,
                Pipeline(store, on_changes=lambda _: woken()),
                max_batch=settings.batch_max,
                max_wait=settings.batch_wait_ms / 1000,
            )
            local.start()
        reading = partial(off_the_loop, store)
        deliveries = Deliveries(store, settings, reading)
        retention = ChangeRetention(store, settings.change_retention_seconds, reading)
        pruning = None
        if settings.retention_seconds is not None:
            pruning = BackgroundRetention(store, settings.retention_seconds)
        reconciliation = None
        if settings.reconcile_every_seconds is not None:
            reconciliation = BackgroundReconciliation(
                store, settings, Pipeline(store, on_changes=lambda _: woken())
            )

        def woken() -> None:  # on any thread; costs nothing with no feed or subscription
            if hub.subscribers:
                hub.wake()
            if deliveries.tasks:
                deliveries.wake_threadsafe()

        stop_watching = store.watch_changes(woken)  # other receivers' (PostgreSQL)
        await hub.start()
        await deliveries.start()
        retention.start()
        if reconciliation is not None:
            reconciliation.start()
        if pruning is not None:
            pruning.start()
        collector = StoreCollector(store, settings.stuck_age_seconds)
        registry.register(collector)
        app.state.runtime = run = Runtime(
            settings, store, intake, hub, feeds_open, registry=registry
        )
        run.deadlines.start()
        _warn_when_open(settings)
        orphan_watch = asyncio.create_task(_stop_when_orphaned(supervisor))
        limits = HeadLimits(settings.max_head, seconds=settings.head_timeout_seconds,
                            refused=latency.answered)  # fmt: skip
        try:
            yield {HEAD_LIMITS: limits}  # for the connections of `serve` (web.guard)
        finally:
            run.deadlines.stop()
            orphan_watch.cancel()
            stop_watching()
            if pruning is not None:
                await pruning.stop()
            if reconciliation is not None:
                await reconciliation.stop()
            await retention.stop()
            await deliveries.stop()
            await hub.stop()
            registry.unregister(collector)
            try:
                await intake.stop()
            finally:
                store.close()

    document = openapi_document()

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

    routes = [
        Route("/instances", reads.instances, methods=["GET"]),
        Route("/instances/{instance_id}", reads.instance, methods=["GET"]),
        Route("/documents", reads.documents, methods=["GET"]),
        Route("/documents/{document_id:path}", reads.document, methods=["GET"]),
        Route("/status", reads.status, methods=["GET"]),
        Route("/anomalies", reads.anomalies, methods=["GET"]),
        Route("/quarantine", reads.quarantine, methods=["GET"]),
        Route("/quarantine", admin.admin(admin.delete_before), methods=["DELETE"]),
        Route("/quarantine/retry", admin.admin(admin.retry_all), methods=["POST"]),
        Route("/quarantine/{id}/retry", admin.admin(admin.retry_one), methods=["POST"]),
        Route("/quarantine/{id}", admin.admin(admin.delete_one), methods=["DELETE"]),
        Route("/changes", feed.changes_page, methods=["GET"]),
        Route("/feed", feed.feed, methods=["GET"]),
        Route("/healthz", reads.healthz, methods=["GET"]),
        Route("/metrics", reads.metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *_dashboard_routes(),
    ]
    latency = LatencySeries(request_latency(registry), http_responses(registry))
    build_info(registry)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # The hot path first, in front of the rest: it answers the callback routes
            # itself, and times them as the timer times every other request.
            Middleware(callbacks.CallbackEndpoints, latency=latency),
            Middleware(RequestTimer, latency=latency),
        ],
        exception_handlers={
            FlowtrackerError: _error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    # A POST answered with a redirect is a failed delivery for Scrive: say 404 instead.
    app.router.redirect_slashes = False
    app.state.templates = templates()
    return app


def _dashboard_routes() -> list[Route | Mount]:
    """The dashboard's HTML pages: `/` and everything under `/ui/`."""
    static = StaticFiles(packages=[("flowtracker.web", "static")])
    return [
        Route("/", dashboard.overview, methods=["GET"]),
        Route("/ui/search", dashboard.search, methods=["GET"]),
        Route("/ui/instances", dashboard.instances, methods=["GET"]),
        Route("/ui/instances.csv", dashboard.instances_csv, methods=["GET"]),
        Route("/ui/documents.csv", dashboard.documents_csv, methods=["GET"]),
        Route("/ui/quarantine.csv", dashboard.quarantine_csv, methods=["GET"]),
        Route("/ui/instances/{instance_id}", dashboard.instance, methods=["GET"]),
        Route("/ui/documents", dashboard.documents, methods=["GET"]),
        # :path: a document id is the sender's text and may hold a slash
        Route("/ui/documents/{document_id:path}", dashboard.document, methods=["GET"]),
        Route("/ui/quarantine", dashboard.quarantine, methods=["GET"]),
        Route("/ui/changes", dashboard.changes, methods=["GET"]),
        Route("/ui/quarantine/{body_hash}/body", dashboard.quarantined_body, methods=["GET"]),
        Route("/ui/quarantine/retry", admin.ui_action, methods=["POST"]),
        Route("/ui/quarantine/{body_hash}/{verb:str}", admin.ui_action, methods=["POST"]),
        Route("/ui/admin", admin.ui_admin_login, methods=["POST"]),
        Route("/ui/pulse", dashboard.pulse, methods=["GET"]),
        Route("/ui/feed", feed.dashboard_feed, methods=["GET"]),
        Route("/ui/login", session.login, methods=["GET", "POST"]),
        Route("/ui/logout", session.logout, methods=["POST"]),
        Mount("/ui/static", static, name="static"),
        Route("/ui/{rest:path}", dashboard.not_found, methods=["GET"]),
    ]


def app_from_environment() -> Starlette:
    """The app factory uvicorn's workers call: settings from FLOWTRACKER_* variables."""
    lighten()
    supervisor = os.environ.get(SUPERVISOR)
    return create_app(
        Settings.from_env(os.environ),
        writer_socket=os.environ.get(WRITER_SOCKET) or None,
        supervisor=int(supervisor) if supervisor else None,
    )


async def _stop_when_orphaned(supervisor: int | None) -> None:
    """SIGTERM this worker once uvicorn's main process is gone (killed with SIGKILL, say):
    an orphan would keep the port, and its writer is gone with `serve`."""
    if supervisor is None:
        return
    while os.getppid() == supervisor:
        await asyncio.sleep(1)
    log.error("the serving process (pid %d) is gone: this worker stops", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowtrackerError)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        # Starlette keeps a route's methods in a set: sort them for a stable answer.
        allowed = sorted((exc.headers or {}).get("Allow", "").replace(" ", "").split(","))
        return error_response(request, not_allowed(request, allowed))
    if exc.status_code == 404:
        return await _error(request, NotFound(f"no such path: {request.url.path}"))
    body = {"error": {"code": "http_error", "message": exc.detail, "details": None}}
    return JSONResponse(body, status_code=exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(request)


def _warn_when_open(settings: Settings) -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    if settings.callback_token is None:
        log.warning(
            "FLOWTRACKER_CALLBACK_TOKEN is not set: anyone who can reach the callback "
            "endpoints can post callbacks"
        )
    if settings.read_token is None:
        log.warning("FLOWTRACKER_READ_TOKEN is not set: the read API is open to anyone")
