"""A stand-in for Scrive's API, on a loopback port: the simulator's other side (SPEC 13).

It answers what Scrive's API would for the instances and documents it is given: a flow
instance as `{id, status, last_event, ...}` with Scrive's three statuses (a cancel, a
rejection and a timeout read `failed`), a document as its JSON. It checks the OAuth 1.0
PLAINTEXT header of the credentials it was made with, as Scrive does (401 otherwise), and
answers 404 for anything it does not know. `script` queues answers to play before the
real one for a path (429 with `Retry-After`, a 503, a slow answer), for tests of the
client's retries.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from flowtracker.scrive.api import Credentials
from flowtracker.settings import Settings

# Scrive's API reads a cancel, a rejection and a timeout as `failed` (SCRIVE-FACTS.md).
SCRIVE_STATUS = {"in_progress": "in_progress", "completed": "completed"}


def scrive_status(state: str) -> str:
    """The `status` Scrive's API shows for a flow instance in `state`."""
    return SCRIVE_STATUS.get(state, "failed")


@dataclass(frozen=True, slots=True)
class Scripted:
    """One answer played instead of the real one: a status (with `headers`), after
    `delay` seconds (longer than the client's timeout: a timeout)."""

    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeScrive:
    """The truth about some instances and documents, served as Scrive's API serves it."""

    def __init__(self, settings: Settings, flow_path: str | None = None) -> None:
        self.header = Credentials(settings).header()
        self.flow_path = "/" + (flow_path or settings.scrive_flow_path).strip("/")
        self.instances: dict[str, dict[str, Any]] = {}
        self.documents: dict[str, dict[str, Any]] = {}
        self.script: defaultdict[str, deque[Scripted]] = defaultdict(deque)
        self.requests: list[str] = []  # the paths asked for, in order
        self.last_request = time.monotonic()  # when the last came (or the fake was made)
        self.refused = 0  # requests answered 401

    def instance(self, instance_id: str, state: str, last_event: str) -> None:
        """Know an instance, in flowtracker's `state` (shown as Scrive shows it)."""
        self.instances[instance_id] = {
            "id": instance_id, "template_id": "00000000-0000-4000-8000-000000000000",
            "title": "Simulated flow", "status": scrive_status(state), "started": last_event,
            "last_event": last_event, "access_links": {}, "state": {"available_actions": []},
        }  # fmt: skip

    def document(self, document: Mapping[str, Any]) -> None:
        """Know a document: its JSON as the API answers it."""
        self.documents[str(document["id"])] = dict(document)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(self.flow_path + "/instances/{id}", self._instance, methods=["GET"]),
                Route("/api/v2/documents/{id}/get", self._document, methods=["GET"]),
            ]
        )

    async def _instance(self, request: Request) -> Response:
        return await self._answer(request, self.instances.get(request.path_params["id"]))

    async def _document(self, request: Request) -> Response:
        return await self._answer(request, self.documents.get(request.path_params["id"]))

    async def _answer(self, request: Request, found: Mapping[str, Any] | None) -> Response:
        path = request.url.path
        self.requests.append(path)
        self.last_request = time.monotonic()
        if not hmac.compare_digest(request.headers.get("authorization", ""), self.header):
            self.refused += 1
            return JSONResponse({"error_type": "invalid_authorisation"}, status_code=401)
        if self.script[path]:
            scripted = self.script[path].popleft()
            await asyncio.sleep(scripted.delay)
            return JSONResponse({"error_type": "scripted"}, scripted.status, dict(scripted.headers))
        if found is None:
            return JSONResponse({"error_type": "resource_not_found"}, status_code=404)
        return JSONResponse(found)


@contextmanager
def serving(fake: FakeScrive, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `fake` on a thread until the block ends; yields its base URL."""
    config = uvicorn.Config(fake.app(), host=host, port=port, log_level="warning",
                            lifespan="off")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="fake-scrive", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the fake Scrive API could not listen on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
