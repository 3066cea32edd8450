"""The change log as the API shows it (SPEC 11): a change as JSON, and a page of them."""

from __future__ import annotations

from typing import Any

import orjson

from flowtracker.engine.events import Kind
from flowtracker.errors import CursorExpired
from flowtracker.store.protocol import Store
from flowtracker.store.rows import ChangeRow

DEFAULT_LIMIT, MAX_LIMIT = 100, 1_000


def change(row: ChangeRow) -> dict[str, Any]:
    """One change as the API, the feed and the webhooks show it (the stored event's JSON
    embedded as it is)."""
    return {
        "seq": row.seq,
        "kind": row.kind,
        "subject": row.subject,
        "state": row.state,
        "previous": row.previous,
        "terminal": row.terminal,
        "correction": row.correction,
        "source": row.source,
        "event": orjson.Fragment(row.event),
        "at": row.at,
    }


def encoded(row: ChangeRow) -> bytes:
    """A change as one line of JSON."""
    return orjson.dumps(change(row))


def check_cursor(store: Store, after: int) -> None:
    """Raise `CursorExpired` when changes after `after` have been pruned already. Asked
    after reading the changes: pruning moves the mark before it removes anything."""
    _, pruned = store.change_clock()
    if after < pruned:
        raise CursorExpired(
            f"changes up to {pruned} are no longer kept (cursor {after}): read the current "
            "states from /instances and /documents, then follow from the last seq",
            {"after": after, "oldest_kept": pruned + 1},
        )


def page(
    store: Store, after: int, limit: int, kind: Kind | None = None, subject: str | None = None
) -> dict[str, Any]:
    """`GET /changes`: the changes after `after`, oldest first, and the cursor to go on."""
    rows = store.changes(after, limit, kind, subject)
    check_cursor(store, after)  # after the read: pruning marks what goes before it goes
    return {"items": [change(row) for row in rows], "next": rows[-1].seq if rows else after}
