"""Following `/feed` as a consumer would: Server-Sent Events read off a real connection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import orjson

from flowtracker.reads import changes, views
from flowtracker.store.protocol import Store


@dataclass
class Follower:
    """Reads a feed on a thread; `changes` fills as they come, `comments` counts keepalives."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)
    comments: int = 0
    status: int | None = None
    ended: bool = False
    opened: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Follower:
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the feed did not answer"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not check(self.changes):
            assert time.monotonic() < deadline, f"the feed gave only {self.changes}"
            assert not self.ended or check(self.changes), "the feed ended"
            time.sleep(0.02)

    def seqs(self) -> list[int]:
        return [change["seq"] for change in self.changes]

    def _read(self) -> None:
        try:
            with httpx.stream("GET", self.url, headers=self.headers, timeout=60) as answer:
                self.status = answer.status_code
                self.opened.set()
                if answer.status_code != 200:
                    return
                event: dict[str, str] = {}
                for line in answer.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith(":"):
                        self.comments += 1
                    elif not line:
                        if event.get("event") == "change":
                            change = json.loads(event["data"])
                            assert str(change["seq"]) == event["id"]
                            self.changes.append(change)
                        event = {}
                    else:
                        name, _, value = line.partition(":")
                        event[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        finally:
            self.ended = True
            self.opened.set()


def chained(changes: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Checks that each subject's changes chain (the `previous` of one is the `state` of the
    one before, the first's is null, and each moves the state); the last state of each."""
    last: dict[tuple[str, str], str] = {}
    for change in sorted(changes, key=lambda c: c["seq"]):
        key = (change["kind"], change["subject"])
        assert change["previous"] == last.get(key), change
        assert change["state"] != change["previous"], change
        last[key] = change["state"]
    return last


def check_chain(store: Store) -> None:
    """Each subject's changes chain and end in its current state."""
    last = chained(json.loads(orjson.dumps(changes.page(store, 0, changes.MAX_LIMIT)))["items"])
    for (kind, subject), state in last.items():
        view = views.instance(store, subject) if kind == "flow" else views.document(store, subject)
        assert view["state"] == state
    current = {
        (kind, item["id"])
        for kind, listed in (
            ("flow", views.instances(store, views.SubjectFilter(), views.Page(100))),
            ("document", views.documents(store, views.SubjectFilter(), views.Page(100))),
        )
        for item in listed["items"]
    }
    assert set(last) == current  # every subject has its changes
