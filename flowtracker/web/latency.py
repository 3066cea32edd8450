"""Request latency: the histogram's series, and the middleware that times every request."""

from __future__ import annotations

import re
from time import perf_counter

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_CONVERTOR = re.compile(r":\w+}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class LatencySeries:
    """The latency histogram's series by (route template, method, status class), made once
    each: `labels()` validates and locks, which is too slow for every request."""

    def __init__(self, histogram: Histogram, responses: Counter) -> None:
        self.histogram, self.responses = histogram, responses
        self._series: dict[tuple[str, str, int], Histogram] = {}
        self._answers: dict[int, Counter] = {}  # the responses counter's series, by status

    def answered(self, status: int) -> None:
        """Count one HTTP answer of this status (also those no route answered: the
        connection guard's 408 and 431)."""
        answers = self._answers.get(status)
        if answers is None:
            answers = self._answers[status] = self.responses.labels(str(status))
        answers.inc()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.answered(status)
        method = method if method in _METHODS else "other"
        key = (route, method, status // 100)
        series = self._series.get(key)
        if series is None:
            template = _CONVERTOR.sub("}", route)  # {document_id:path} as {document_id}
            series = self._series[key] = self.histogram.labels(template, method, f"{key[2]}xx")
        series.observe(seconds)


class RequestTimer:
    """Pure ASGI middleware: observes the duration of each HTTP request in `latency`,
    labelled by route template (never the raw path), method and status class."""

    def __init__(self, app: ASGIApp, latency: LatencySeries) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 500  # unless a response starts: an exception became the 500 outside us

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router leaves the matched route in the scope; no route: no path matched.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.observe(route, scope["method"], status, perf_counter() - started)
