"""Scrive's sender over HTTP: callbacks to a tracker, retried on Scrive's schedule.

A few threads, one kept-alive connection each, send the plan in order (at most `rate` a
second). An attempt that fails (no answer, or anything but a 2xx) is tried again on
Scrive's schedule, its waits divided by `time_scale`; after the tenth failure the callback
is dropped, as Scrive drops it. A 401 stops the run at once (no retry can fix a token),
and so does a tracker that accepts nothing for `STALL` seconds, so a run always ends.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from heapq import heappop, heappush
from itertools import count
from typing import Any

from flowtracker.scrive.link import Link, SimulationError, Target
from flowtracker.scrive.payloads import RETRY_WAITS
from flowtracker.scrive.schedule import Delivery
from flowtracker.scrive.traffic import SimCallback, SimSubject

ATTEMPTS = len(RETRY_WAITS) + 1  # Scrive tries a callback ten times
STALL = 60.0  # seconds with no callback accepted: the tracker is down, stop


class Ledger:
    """The tracker's answers: how often each callback was stored, and in which order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stored: Counter[SimCallback] = Counter()  # 2xx answers
        self.unsure: Counter[SimCallback] = Counter()  # no answer, or a 5xx but 503: stored?
        self.arrivals: list[SimCallback] = []  # in the order of their first 2xx
        self.retries = 0
        self.dropped: list[SimCallback] = []

    def record(self, callback: SimCallback, status: int | None, attempt: int) -> None:
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

    def deliveries(self, callback: SimCallback) -> tuple[int, int]:
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


def read_back(target: Target, subjects: Sequence[SimSubject], connections: int) -> list[Any]:
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


def _read(target: Target, subjects: Sequence[SimSubject]) -> list[Any]:
    link = Link(target)
    try:
        return [link.view(subject.kind, subject.id) for subject in subjects]
    finally:
        link.close()
