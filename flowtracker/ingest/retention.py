"""Retention (SPEC 14): `flowtracker prune` and `serve --retention`.

Finished subjects (flow instances in a terminal state; documents closed, canceled,
rejected, timed out or in error) whose last callback was received before the cutoff go,
with their events and raw bodies, a page at a time: each page is one transaction that
holds its subjects' locks, so a callback that arrives meanwhile either comes first (and
the subject, no longer quiet, stays) or finds the tombstone (and is ignored, `pruned`).
Quarantined requests last seen before the cutoff go too, and the change log is pruned by
its own retention (SPEC 11), never a change still owed to a subscription.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from flowtracker.engine.events import KINDS, Kind
from flowtracker.engine.lifecycles import FINISHED
from flowtracker.engine.timestamps import format_ns
from flowtracker.ingest.background import LeasedWork
from flowtracker.ingest.pipeline import again_on_conflict
from flowtracker.store.protocol import Store

log = logging.getLogger("flowtracker")
PAGE = 500  # subjects per transaction: short enough that callbacks hardly wait
LEASE = "retention"  # one receiver at a time runs the background pruning
EVERY_SECONDS = 3_600.0  # at most this long between background prunings
FIRST_SECONDS = 30.0  # the first one, after `serve` starts


@dataclass
class Pruned:
    """What one pruning removed (or, in a dry run, would remove)."""

    subjects: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    events: dict[Kind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    quarantined: int = 0
    changes: int = 0
    space: str = ""  # what was done with the space freed, in a sentence

    def lines(self, before: str, *, dry_run: bool) -> list[str]:
        verb = "would remove" if dry_run else "removed"
        return [
            f"{verb} {self.subjects['flow']} flow instances ({self.events['flow']} events) "
            f"and {self.subjects['document']} documents ({self.events['document']} "
            f"snapshots) last received before {before}",
            f"{verb} {self.quarantined} quarantined requests last seen before {before}",
            *([] if dry_run else [f"removed {self.changes} changes of the change log"]),
            *([self.space] if self.space else []),
        ]


def count(store: Store, before: str) -> Pruned:
    """What pruning at `before` would remove (subjects and events; quarantined requests)."""
    found = Pruned()
    for kind in KINDS:
        found.subjects[kind], found.events[kind] = store.count_prunable(
            kind, FINISHED[kind], before
        )
    found.quarantined = store.count_quarantined(before)
    return found


def prune(
    store: Store,
    before: str,
    *,
    changes_before: str | None,
    clock: Callable[[], int] = time.time_ns,
    progress: Callable[[int], None] = lambda subjects: None,
    page: int = PAGE,
    stopping: threading.Event | None = None,
    reclaim: bool = True,
    still_mine: Callable[[], bool] = lambda: True,
) -> Pruned:
    """Remove what retention allows at `before` (RFC 3339); the change log's changes
    committed before `changes_before` too (None: leave it). `progress` is told the
    subjects each page removed. Then, with `reclaim`, the space goes back (`Store.reclaim`).
    It ends early, after a page, once `stopping` is set or `still_mine()` is false (the
    background pruning's lease, renewed there, was lost)."""
    done = Pruned()

    def going_on() -> bool:
        return (stopping is None or not stopping.is_set()) and still_mine()

    for kind in KINDS:
        found = True
        while found and going_on():
            found, subjects, events = again_on_conflict(
                partial(_page, store, kind, before, format_ns(clock()), page)
            )
            done.subjects[kind] += subjects
            done.events[kind] += events
            progress(subjects)
    if not going_on():
        return done
    with store.transaction() as tx:
        done.quarantined = tx.drop_quarantined(before=before)
    if changes_before is not None:
        done.changes = store.prune_changes(changes_before)
    if reclaim:
        done.space = store.reclaim()
    return done


def _page(store: Store, kind: Kind, before: str, at: str, page: int) -> tuple[bool, int, int]:
    """One page: whether any subject was found, and the subjects and events removed (a
    subject found may have taken a callback before its lock was held: it stays)."""
    with store.transaction() as tx:
        ids = tx.prunable(kind, FINISHED[kind], before, page)
        if not ids:
            return False, 0, 0
        tx.lock((kind, subject_id) for subject_id in ids)
        return True, *tx.prune(kind, ids, FINISHED[kind], before, at)


class BackgroundRetention(LeasedWork):
    """`serve --retention`: pruning about every hour, one receiver at a time (under a
    lease in the database, which a receiver that dies lets run out)."""

    name = "retention"

    def __init__(
        self, store: Store, retention_seconds: float, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.every = min(EVERY_SECONDS, retention_seconds / 10)
        super().__init__(poll=self.every, first=min(self.every, FIRST_SECONDS))
        self.store, self.clock = store, clock
        self.retention_ns = int(retention_seconds * 1e9)

    def _renew(self) -> bool:
        """Take the lease, or keep it for a period more: whether this receiver holds it
        (a long first pruning renews it between pages, so no other starts meanwhile)."""
        now = self.clock()
        return self.store.take_lease(LEASE, self.owner, now, now + int(self.every * 1e9))

    def run_once(self) -> Pruned | None:
        """One pruning, if no other receiver holds the lease (then None)."""
        now = self.clock()
        if not self._renew():
            return None
        before = format_ns(now - self.retention_ns)
        # The change log has its own background pruning on every receiver (`feed.retention`).
        done = prune(self.store, before, changes_before=None, clock=self.clock,
                     stopping=self.stopping, still_mine=self._renew)  # fmt: skip
        for line in done.lines(before, dry_run=False):
            log.info("retention: %s", line)
        return done
