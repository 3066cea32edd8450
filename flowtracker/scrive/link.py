"""The tracker over HTTP: its address, and one kept-alive connection to it."""

from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from flowtracker.engine.events import Kind
from flowtracker.scrive.traffic import SimCallback

TIMEOUT = 30.0  # seconds to wait for an answer (Scrive waits 60)
IDLE = 2.0  # seconds a kept-alive connection may rest before it is reopened
USER_AGENT = "flowtracker-simulate"


class SimulationError(Exception):
    """The run cannot go on: the tracker is unreachable, refuses a token, or went away."""


@dataclass(frozen=True, slots=True)
class Target:
    """The tracker: its base URL, and the tokens it wants (None: it runs open)."""

    url: str
    token: str | None = None
    read_token: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SimulationError(f"the URL must be http://HOST[:PORT], not {self.url!r}")
        if parts.query or parts.fragment:
            raise SimulationError("the URL is the tracker's base URL, without a query or #")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked for it
        except ValueError as error:
            raise SimulationError(f"the URL has a bad port: {error}") from None


class Link:
    """One kept-alive HTTP connection to the tracker, reopened after an error or a rest."""

    def __init__(self, target: Target) -> None:
        parts = urlsplit(target.url)
        self._target, self._base = target, parts.path.rstrip("/")
        https = parts.scheme == "https"
        self._open = http.client.HTTPSConnection if https else http.client.HTTPConnection
        self._host, self._port = parts.hostname or "", parts.port
        self._connection: http.client.HTTPConnection | None = None
        self._used = 0.0

    def deliver(self, callback: SimCallback) -> tuple[int | None, str | None]:
        """POST a callback where Scrive would: its status (None: no answer), and why it
        failed (None when it did not). Flows carry the token in the URL, as Scrive
        advises; documents as the password of HTTP Basic, which Scrive supports."""
        headers = {"Content-Type": callback.content_type}
        token = self._target.token
        path = f"/callbacks/{callback.kind}"
        if token is not None and callback.kind == "flow":
            path += f"?token={quote(token, safe='')}"
        elif token is not None:
            basic = base64.b64encode(f"scrive:{token}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        try:
            status, body = self._request("POST", path, callback.body, headers)
        except (OSError, http.client.HTTPException) as error:
            return None, _reason(error)
        return status, None if 200 <= status < 300 else f"{status} {_error_code(body)}"

    def knows(self, kind: Kind, subject_id: str) -> bool | None:
        """Whether the tracker has this subject (a 200 or a 410: pruned); None when it
        cannot be told (no read token for a tracker that wants one, say)."""
        path = f"/{'instances' if kind == 'flow' else 'documents'}/{quote(subject_id, safe='')}"
        status, _ = self._get(path)
        return True if status in (200, 410) else False if status == 404 else None

    def view(self, kind: Kind, subject_id: str) -> Any:
        """A subject as the read API serves it; None when the tracker does not know it."""
        path = f"/{'instances' if kind == 'flow' else 'documents'}/{quote(subject_id, safe='')}"
        status, body = self._get(path)
        if status == 404:
            return None
        if status == 401:
            raise SimulationError(
                "the tracker refused the read token (401): set --read-token or "
                "FLOWTRACKER_READ_TOKEN to the tracker's FLOWTRACKER_READ_TOKEN"
            )
        if status != 200:
            raise SimulationError(f"GET {path} answered {status} {_error_code(body)}")
        try:
            return json.loads(body)
        except ValueError:
            raise SimulationError(f"GET {path} answered 200 but not JSON") from None

    def healthy(self) -> None:
        """Raise unless the tracker answers its health check."""
        status, body = self._get("/healthz")
        if status != 200:
            raise SimulationError(
                f"the tracker at {self._target.url} is not healthy: GET /healthz answered "
                f"{status} {_error_code(body)}"
            )

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _get(self, path: str) -> tuple[int, bytes]:
        token = self._target.read_token
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        try:
            return self._request("GET", path, None, headers)
        except (OSError, http.client.HTTPException):
            pass  # the tracker may have closed a kept-alive connection: once more, afresh
        try:
            return self._request("GET", path, None, headers)
        except (OSError, http.client.HTTPException) as error:
            raise SimulationError(
                f"cannot reach the tracker at {self._target.url}: {_reason(error)}"
            ) from None

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        if self._connection is None or time.monotonic() - self._used > IDLE:
            self.close()
            self._connection = self._open(self._host, self._port, timeout=TIMEOUT)
        connection = self._connection
        try:
            headers = headers | {"User-Agent": USER_AGENT}
            connection.request(method, self._base + path, body, headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        self._used = time.monotonic()
        if response.will_close:
            self.close()
        return response.status, data


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _error_code(body: bytes) -> str:
    """The `code` of the tracker's error shape, or the start of whatever it sent."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return body[:80].decode("utf-8", "replace")
