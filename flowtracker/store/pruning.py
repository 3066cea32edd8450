"""Retention and the quarantine's actions (SPEC 14): statements that both backends' write
transactions run as they are (`?` placeholders, which PostgreSQL's backend spells `%s`).

A transaction implements `_rows` (one statement, its rows), `_many` (one statement per
row of parameters), `_one_of` (a test of a column against a list of values) and
`_events_of` (which rows of an event table belong to some subjects: SQLite finds them
through its key tables, PostgreSQL through the subject column).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from flowtracker.engine.events import Kind
from flowtracker.store.rows import TombstoneRow
from flowtracker.store.tables import (
    EVENTS,
    SUBJECTS,
    TOMBSTONE_COLUMNS,
    TOMBSTONES,
    NamedRow,
    hour,
)

_INSERT_TOMBSTONE = {
    kind: f"INSERT INTO {table} ({', '.join(TOMBSTONE_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TOMBSTONE_COLUMNS))})"
    for kind, table in TOMBSTONES.items()
}
CHUNK = 500  # values bound in one IN (...) list, at most
# What a tombstone keeps of its subject's row.
_KEPT = ", ".join(column for column in TOMBSTONE_COLUMNS if column != "pruned_at")


def prunable_where(states: Collection[str], before: str) -> tuple[str, list[Any]]:
    """The subjects pruning may remove: in one of `states`, the last callback received
    before `before`; on the (state, received_hour) index, the exact time checked on its
    rows."""
    listed = sorted(states)
    return (f"state IN ({', '.join('?' * len(listed))}) AND received_hour <= ? "
            "AND last_received_at < ?", [*listed, hour(before), before])  # fmt: skip


class PruneStatements:
    """`Transaction`'s retention and quarantine methods, for a backend that implements
    the four helpers below."""

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[NamedRow]:
        raise NotImplementedError

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _one_of(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        raise NotImplementedError

    def _events_of(self, kind: Kind, subjects: Sequence[NamedRow]) -> tuple[str, list[Any]]:
        raise NotImplementedError

    def _delete_events(self, kind: Kind, subjects: Sequence[NamedRow]) -> None:
        raise NotImplementedError

    def bump(self, deltas: Mapping[str, int]) -> None:
        raise NotImplementedError

    # Tombstones -------------------------------------------------------------------------

    def tombstoned(self, kind: Kind, ids: Collection[str]) -> dict[str, str]:
        """The final states of those of these subjects that were pruned."""
        listed, found = list(ids), dict[str, str]()
        for start in range(0, len(listed), CHUNK):  # a batch may hold thousands
            where, params = self._one_of("id", listed[start : start + CHUNK])
            rows = self._rows(f"SELECT id, state FROM {TOMBSTONES[kind]} WHERE {where}", params)
            found.update((row["id"], row["state"]) for row in rows)
        return found

    def add_tombstones(self, kind: Kind, rows: Sequence[Mapping[str, Any]]) -> None:
        """Keep tombstones as they were (a replayed export); one already kept stays, and
        none is kept for a subject that is stored."""
        ids = [row["id"] for row in rows]
        where, params = self._one_of("id", ids)
        live = {row["id"] for row in self._rows(f"SELECT id FROM {SUBJECTS[kind]} WHERE {where}",
                                                params)}  # fmt: skip
        kept = self.tombstoned(kind, ids)
        # Never beside a stored subject: a tombstone is what is left when there is none.
        new = {row["id"]: row for row in rows if row["id"] not in kept and row["id"] not in live}
        self._many(_INSERT_TOMBSTONE[kind], [
            tuple(row[name] for name in TOMBSTONE_COLUMNS) for row in new.values()
        ])  # fmt: skip
        self.bump({f"{kind}.pruned": len(new)})

    # Retention --------------------------------------------------------------------------

    def prunable(self, kind: Kind, states: Collection[str], before: str, limit: int) -> list[str]:
        """Up to `limit` subjects in one of `states` whose last callback was received
        before `before`."""
        where, params = prunable_where(states, before)
        rows = self._rows(f"SELECT id FROM {SUBJECTS[kind]} WHERE {where} LIMIT ?",
                          [*params, limit])  # fmt: skip
        return [row["id"] for row in rows]

    def prune(
        self, kind: Kind, ids: Sequence[str], states: Collection[str], before: str, at: str
    ) -> tuple[int, int]:
        """Remove these subjects, with their events and bodies, leaving a tombstone each;
        only those still finished and quiet since `before` (a callback may have come
        since they were chosen: the caller holds their locks). The counters behind
        /status lose what went. How many subjects and events went."""
        if not ids:
            return 0, 0
        where, params = self._one_of("id", list(ids))
        still, still_params = prunable_where(states, before)
        gone = self._rows(
            f"SELECT seq, {_KEPT} FROM {SUBJECTS[kind]} WHERE {where} AND {still}",
            [*params, *still_params],
        )
        if not gone:
            return 0, 0
        events_where, event_params = self._events_of(kind, gone)
        deltas: Counter[str] = Counter()
        for row in self._rows(
            "SELECT outcome, COUNT(*) AS n, "
            "SUM(CASE WHEN deliveries > 1 THEN deliveries - 1 ELSE 0 END) AS repeats, "
            "SUM(CASE WHEN out_of_order THEN 1 ELSE 0 END) AS late "
            f"FROM {EVENTS[kind]} WHERE {events_where} GROUP BY outcome",
            event_params,
        ):
            deltas[f"{kind}.outcome.{row['outcome']}"] -= int(row["n"])
            deltas[f"{kind}.duplicate"] -= int(row["repeats"] or 0)
            deltas[f"{kind}.out_of_order"] -= int(row["late"] or 0)
        deltas.update({f"{kind}.state.{state}": -n
                       for state, n in Counter(row["state"] for row in gone).items()})  # fmt: skip
        deltas[f"{kind}.pruned"] += len(gone)
        self._many(_INSERT_TOMBSTONE[kind], [
            (*(row[name] for name in TOMBSTONE_COLUMNS[:-1]), at) for row in gone
        ])  # fmt: skip
        self._delete_events(kind, gone)
        where, params = self._one_of("id", [row["id"] for row in gone])
        self._rows(f"DELETE FROM {SUBJECTS[kind]} WHERE {where}", params)
        self.bump(deltas)
        return len(gone), sum(int(row["events"]) for row in gone)

    # The quarantine ---------------------------------------------------------------------

    def drop_quarantined(
        self, hashes: Sequence[str] | None = None, before: str | None = None
    ) -> int:
        """Remove kept requests: those of these body hashes, or those last seen before
        `before`; how many went. The counters behind /status lose them."""
        if hashes is not None:
            if not hashes:
                return 0
            where, params = self._one_of("body_hash", list(hashes))
        elif before is not None:
            where, params = "last_seen < ?", [before]
        else:
            raise ValueError("name the requests to drop: hashes or before")
        (row,) = self._rows(
            f"SELECT COUNT(*) AS n, COALESCE(SUM(count), 0) AS requests FROM quarantine "
            f"WHERE {where}",
            params,
        )
        if not row["n"]:
            return 0
        self._rows(f"DELETE FROM quarantine WHERE {where}", params)
        self.bump({"quarantine.rows": -int(row["n"]), "quarantine.requests": -int(row["requests"])})
        return int(row["n"])


class TombstoneReads:
    """`Store.tombstone`, for a backend that implements `_run` (`store.feeding`)."""

    def _run(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        raise NotImplementedError

    def count_prunable(self, kind: Kind, states: Collection[str], before: str) -> tuple[int, int]:
        """How many subjects `prune` would remove now, and their events (a read: the write
        lock is not held for the scan)."""
        where, params = prunable_where(states, before)
        (row,) = self._run(
            f"SELECT COUNT(*) AS n, COALESCE(SUM(events), 0) AS events FROM {SUBJECTS[kind]} "
            f"WHERE {where}",
            params,
        )
        return int(row["n"]), int(row["events"])

    def count_quarantined(self, before: str) -> int:
        """How many kept requests were last seen before `before`."""
        (row,) = self._run("SELECT COUNT(*) AS n FROM quarantine WHERE last_seen < ?", (before,))
        return int(row["n"])

    def tombstone(self, kind: Kind, subject_id: str) -> TombstoneRow | None:
        """What is left of a pruned subject; None when it was never pruned."""
        rows = self._run(
            f"SELECT {', '.join(TOMBSTONE_COLUMNS)} FROM {TOMBSTONES[kind]} WHERE id = ?",
            (subject_id,),
        )
        if not rows:
            return None
        return TombstoneRow(kind, *(rows[0][name] for name in TOMBSTONE_COLUMNS))
