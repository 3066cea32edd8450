"""Following PostgreSQL's NOTIFY of new changes (`transaction.CHANGES_CHANNEL`): one
connection per process, on a thread of its own, that wakes the process's feed hub."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from flowtracker.store.postgres.connection import CONNECT_TIMEOUT, scrubbed
from flowtracker.store.postgres.transaction import CHANGES_CHANNEL

log = logging.getLogger("flowtracker")
RECONNECT_SECONDS = 1.0


class Listener:
    """LISTENs until stopped; reconnects when the server goes away (and wakes the hub
    then too: a notice may have been missed)."""

    def __init__(self, url: str, wake: Callable[[], None]) -> None:
        self.url, self.wake = url, wake
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowtracker-listen", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as conn:
                    conn.execute(f"LISTEN {CHANGES_CHANNEL}")
                    self.wake()
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self.wake()
            except psycopg.Error as error:
                said = scrubbed(str(error), self.url).strip().splitlines() or [repr(error)]
                log.warning("the change feed lost its database connection (%s); again in "
                            "%g s", said[0], RECONNECT_SECONDS)  # fmt: skip
                self._stopping.wait(RECONNECT_SECONDS)
