"""`flowtracker copy`: every stored row from one database to another, either backend to
either, as it is (ids, sequence numbers, times of arrival, verdicts, deliveries, counters),
so that every read answers the same afterwards."""

from __future__ import annotations

from collections.abc import Callable

from flowtracker.errors import UnusableDatabase
from flowtracker.store.protocol import Store
from flowtracker.store.tables import COPIED, REPLACED, TOMBSTONES

PAGE = 1_000  # rows per read and per destination transaction


def size(store: Store) -> int:
    """About how many rows a copy of `store` carries (for a progress bar)."""
    totals = store.totals("1970-01-01T00:00:00Z")
    last_change, pruned = store.change_clock()
    return (sum(sum(counts.values()) for counts in totals.outcomes.values())
            + sum(sum(counts.values()) for counts in totals.states.values())
            + totals.quarantined + last_change - pruned)  # fmt: skip


# Tables the progress bar leaves out: `copy` counts events, subjects, quarantined
# requests and changes.
UNCOUNTED = frozenset({"subscriptions", *TOMBSTONES.values()})


def copy(source: Store, destination: Store, progress: Callable[[int], None]) -> dict[str, int]:
    """Copy every table of `tables.COPIED`; the rows copied, by table. Refuses a
    destination that holds events or subjects already (nothing is written then).
    Every table is read in one snapshot of the source, so that a copy of a database in
    use is the database as it was at one moment: no events without their subject, no
    counters of another moment, no subject both kept and pruned."""
    if destination.subject_ids("flow", "", 1) or destination.subject_ids("document", "", 1):
        raise UnusableDatabase(
            f"{destination.path} already holds events: copy only into a new, empty database"
        )
    copied = dict.fromkeys(COPIED, 0)
    with source.snapshot() as snapshot:
        for table, (key, _) in COPIED.items():
            after = None
            while rows := snapshot.rows(table, after, PAGE):
                with destination.transaction() as tx:
                    tx.load(table, rows)
                copied[table] += len(rows)
                if table not in REPLACED and table not in UNCOUNTED:
                    progress(len(rows))
                after = rows[-1][key]
    return copied
