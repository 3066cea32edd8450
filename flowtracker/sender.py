"""Scrive's sender over HTTP: callbacks to a tracker, retried on Scrive's schedule.

A few threads, one kept-alive connection each, send the plan in order (at most `rate` a
second). An attempt that fails (no answer, or anything but a 2xx) is tried again on
Scrive's schedule, its waits divided by `time_scale`; after the tenth failure the callback
is dropped, as Scrive drops it. A 401 stops the run at once (no retry can fix a token),
and so does a tracker that accepts nothing for `STALL` seconds, so a run always ends.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from heapq import heappop, heappush
from itertools import count
from typing import Any
from urllib.parse import quote, urlsplit

from .delivery import Delivery
from .scenarios import Callback, Kind, Subject
from .scrive import RETRY_WAITS

ATTEMPTS = len(RETRY_WAITS) + 1  # Scrive tries a callback ten times
STALL = 60.0  # seconds with no callback accepted: the tracker is down, stop
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

    def deliver(self, callback: Callback) -> tuple[int | None, str | None]:
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


class Ledger:
    """The tracker's answers: how often each callback was stored, and in which order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stored: Counter[Callback] = Counter()  # 2xx answers
        self.unsure: Counter[Callback] = Counter()  # no answer, or a 5xx but 503: stored?
        self.arrivals: list[Callback] = []  # in the order of their first 2xx
        self.retries = 0
        self.dropped: list[Callback] = []

    def record(self, callback: Callback, status: int | None, attempt: int) -> None:
        """Count one attempt's answer (None: none came)."""
        with self._lock:
            if status is not None and 200 <= status < 300:
                if not self.stored[callback]:
                    self.arrivals.append(callback)
                self.stored[callback] += 1
                return
            if status is None or (status >= 500 and status != 503):  # 503: nothing written
                self.unsure[callback] += 1
            if attempt < ATTEMPTS:
                self.retries += 1
            else:
                self.dropped.append(callback)

    def deliveries(self, callback: Callback) -> tuple[int, int]:
        """The fewest and the most deliveries of `callback` the tracker may have counted."""
        return self.stored[callback], self.stored[callback] + self.unsure[callback]


class Outbox:
    """The plan in order, with failed attempts back on Scrive's schedule, scaled in time."""

    def __init__(self, deliveries: Sequence[Delivery], *, rate: float | None, scale: float):
        self._planned = deque((delivery, 1) for delivery in deliveries)
        self._retries: list[tuple[float, int, Delivery, int]] = []  # (due, n, it, attempt)
        self._numbers = count()
        self._busy = 0
        self._changed = threading.Condition()
        self._interval = 1 / rate if rate else 0.0
        self._slot = self._accepted = time.monotonic()
        self._scale = scale
        self.stopped: str | None = None

    def take(self) -> tuple[Delivery, int] | None:
        """The next attempt, once it is due; None when all is done or the run stopped."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self.stopped:
                    return None
                if self._retries and self._retries[0][0] <= now:
                    job = heappop(self._retries)[2:]
                elif self._planned:
                    job = self._planned.popleft()
                elif self._retries or self._busy:
                    self._changed.wait(self._retries[0][0] - now if self._retries else None)
                    continue
                else:
                    return None
                self._busy += 1
                wait, self._slot = self._slot - now, max(now, self._slot) + self._interval
                break
        time.sleep(max(0.0, wait))  # at most `rate` attempts a second
        return job

    def settle(self, delivery: Delivery, attempt: int, failure: str | None) -> None:
        """An attempt is over: schedule its retry if it failed and may be tried again."""
        with self._changed:
            self._busy -= 1
            now = time.monotonic()
            if failure is None:
                self._accepted = now
            elif now - self._accepted > STALL:
                self.stop(f"the tracker accepted no callback for {STALL:.0f} s (last: {failure})")
            elif attempt < ATTEMPTS:
                due = now + RETRY_WAITS[attempt - 1] * 60 / self._scale
                heappush(self._retries, (due, next(self._numbers), delivery, attempt + 1))
            self._changed.notify_all()

    def stop(self, reason: str) -> None:
        with self._changed:
            self.stopped = self.stopped or reason
            self._changed.notify_all()


def send(
    target: Target,
    deliveries: Sequence[Delivery],
    *,
    connections: int,
    rate: float | None,
    time_scale: float,
) -> Ledger:
    """Deliver the plan over `connections` connections; the tracker's answers."""
    ledger, outbox = Ledger(), Outbox(deliveries, rate=rate, scale=time_scale)
    workers = [
        threading.Thread(target=_sender, args=(target, outbox, ledger), daemon=True)
        for _ in range(connections)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if outbox.stopped:
        raise SimulationError(outbox.stopped)
    return ledger


def read_back(target: Target, subjects: Sequence[Subject], connections: int) -> list[Any]:
    """Each subject as the read API serves it (None where it answers 404), in order."""
    shares = [subjects[n::connections] for n in range(connections)]
    with ThreadPoolExecutor(connections) as pool:
        found = list(pool.map(lambda share: _read(target, share), shares))
    views: list[Any] = [None] * len(subjects)
    for n, share in enumerate(found):
        views[n::connections] = share
    return views


def _sender(target: Target, outbox: Outbox, ledger: Ledger) -> None:
    link = Link(target)
    try:
        while (job := outbox.take()) is not None:
            delivery, attempt = job
            status, failure = link.deliver(delivery.callback)
            if status == 401:
                outbox.stop(
                    "the tracker refused the callback token (401): set --token or "
                    "FLOWTRACKER_CALLBACK_TOKEN to the tracker's FLOWTRACKER_CALLBACK_TOKEN"
                )
            ledger.record(delivery.callback, status, attempt)
            outbox.settle(delivery, attempt, failure)
    except Exception as error:  # a bug here must stop the run, not leave it waiting
        outbox.stop(f"the sender failed: {error!r}")
        raise
    finally:
        link.close()


def _read(target: Target, subjects: Sequence[Subject]) -> list[Any]:
    link = Link(target)
    try:
        return [link.view(subject.kind, subject.id) for subject in subjects]
    finally:
        link.close()


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _error_code(body: bytes) -> str:
    """The `code` of the tracker's error shape, or the start of whatever it sent."""
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return body[:80].decode("utf-8", "replace")
