"""The change log's reads and pruning, the webhook subscriptions and the leases of
background work: statements both backends run as they are (`?` placeholders, which
PostgreSQL's backend spells `%s`).

A backend implements `_run`: one statement in a read transaction, or in a write
transaction of its own. The ingest transaction writes the changes themselves
(`Transaction.add_changes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowtracker.engine.events import KINDS, Kind
from flowtracker.store.rows import ChangeRow, SubscriptionRow
from flowtracker.store.tables import CHANGE_COLUMNS, NamedRow

_CHANGES = f"SELECT {', '.join(CHANGE_COLUMNS)} FROM changes"
_SUBSCRIPTIONS = "SELECT * FROM subscriptions"
PRUNE_PAGE = 5_000  # changes deleted per transaction


class FeedStatements:
    """`Store`'s change-log and subscription methods, for a backend that implements `_run`."""

    def _run(self, sql: str, params: Sequence[Any] = (), *, write: bool = False) -> list[Any]:
        raise NotImplementedError

    # The change log ------------------------------------------------------------------------

    def changes(
        self, after: int, limit: int, kind: Kind | None = None, subject: str | None = None
    ) -> list[ChangeRow]:
        """Changes with `seq` above `after`, oldest first, of one kind or subject if given."""
        where, params = ["seq > ?"], [after]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)  # type: ignore[arg-type]
        if subject is not None:
            where.append("subject = ?")
            params.append(subject)  # type: ignore[arg-type]
        rows = self._run(f"{_CHANGES} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
                         (*params, limit))  # fmt: skip
        return [_change_row(row) for row in rows]

    def change_clock(self) -> tuple[int, int]:
        """The last `seq` committed, and the greatest pruned (0 for none)."""
        (row,) = self._run("SELECT seq, pruned_through FROM change_clock")
        return int(row["seq"]), int(row["pruned_through"])

    def first_change_since(self, at: str) -> int | None:
        """The first `seq` committed at or after `at` (RFC 3339), if any is kept."""
        row = self._run("SELECT MIN(seq) AS seq FROM changes WHERE at >= ?", (at,))[0]
        return None if row["seq"] is None else int(row["seq"])

    def prune_changes(self, before: str, page: int = PRUNE_PAGE) -> int:
        """Remove the oldest changes committed before `before` (RFC 3339), never one that
        a subscription has not been delivered; how many went. Only a prefix of the log
        goes, so that `pruned_through` says what a cursor has missed."""
        removed = 0
        while True:
            owed = self._run("SELECT MIN(position) AS p FROM subscriptions")[0]["p"]
            rows = self._run("SELECT seq, at FROM changes ORDER BY seq LIMIT ?", (page,))
            cut = 0
            for row in rows:
                if row["at"] >= before or (owed is not None and row["seq"] > owed):
                    break
                cut = int(row["seq"])
            if not cut:
                return removed
            # The mark first: a crash between the two makes a cursor resynchronise too
            # early, never miss a change.
            self._run("UPDATE change_clock SET pruned_through = ? WHERE pruned_through < ?",
                      (cut, cut), write=True)  # fmt: skip
            gone = self._run("DELETE FROM changes WHERE seq <= ? RETURNING seq", (cut,),
                             write=True)  # fmt: skip
            removed += len(gone)
            if len(rows) < page:
                return removed

    # Webhook subscriptions -----------------------------------------------------------------

    def add_subscription(
        self, id_: str, url: str, kinds: Sequence[Kind], secret: str, *, from_start: bool,
        at: str,
    ) -> SubscriptionRow:  # fmt: skip
        """A new subscription, delivering from the first change kept (`from_start`) or
        from the next one committed."""
        start = "pruned_through" if from_start else "seq"
        self._run(
            "INSERT INTO subscriptions (id, url, kinds, secret, position, paused, created_at, "
            "delivered, failed, failures, next_attempt_ns, lease_until_ns) "
            f"SELECT ?, ?, ?, ?, {start}, ?, ?, 0, 0, 0, 0, 0 FROM change_clock",
            (id_, url, ",".join(kinds), secret, False, at),
            write=True,
        )
        found = self.subscription(id_)
        assert found is not None
        return found

    def subscriptions(self) -> list[SubscriptionRow]:
        return [_subscription_row(row) for row in self._run(f"{_SUBSCRIPTIONS} ORDER BY id")]

    def subscription(self, id_: str) -> SubscriptionRow | None:
        rows = self._run(f"{_SUBSCRIPTIONS} WHERE id = ?", (id_,))
        return _subscription_row(rows[0]) if rows else None

    def remove_subscription(self, id_: str) -> bool:
        return bool(self._run("DELETE FROM subscriptions WHERE id = ? RETURNING id", (id_,),
                              write=True))  # fmt: skip

    def change_subscription(self, id_: str, **values: Any) -> bool:
        """Set columns of a subscription (pause, rotate, replay); whether it exists."""
        names = sorted(values)
        assert set(names) <= _CHANGEABLE, names  # column names never come from input
        return bool(self._run(
            f"UPDATE subscriptions SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ? "
            "RETURNING id",
            (*(values[n] for n in names), id_),
            write=True,
        ))  # fmt: skip

    def lease_subscription(self, id_: str, owner: str, now_ns: int, until_ns: int) -> bool:
        """Take or renew the right to deliver for a subscription until `until_ns`: granted
        when nobody holds it, when `owner` does, or when the holder's lease has run out."""
        return bool(self._run(
            "UPDATE subscriptions SET lease_owner = ?, lease_until_ns = ? WHERE id = ? AND "
            "(lease_owner IS NULL OR lease_owner = ? OR lease_until_ns < ?) RETURNING id",
            (owner, until_ns, id_, owner, now_ns),
            write=True,
        ))  # fmt: skip

    # Leases of background work that one receiver at a time does (the reconciliation) ----

    def take_lease(self, name: str, owner: str, now_ns: int, until_ns: int) -> bool:
        """Take or renew the lease `name` until `until_ns`: granted when nobody holds it,
        when `owner` does, or when the holder's lease has run out."""
        self._run("INSERT INTO leases (name, owner, until_ns) VALUES (?, NULL, 0) "
                  "ON CONFLICT (name) DO NOTHING", (name,), write=True)  # fmt: skip
        return bool(self._run(
            "UPDATE leases SET owner = ?, until_ns = ? WHERE name = ? AND "
            "(owner IS NULL OR owner = ? OR until_ns < ?) RETURNING name",
            (owner, until_ns, name, owner, now_ns),
            write=True,
        ))  # fmt: skip

    def release_lease(self, name: str, owner: str) -> None:
        self._run("UPDATE leases SET owner = NULL, until_ns = 0 WHERE name = ? AND owner = ?",
                  (name, owner), write=True)  # fmt: skip

    def release_subscription(self, id_: str, owner: str) -> None:
        self._run("UPDATE subscriptions SET lease_owner = NULL, lease_until_ns = 0 "
                  "WHERE id = ? AND lease_owner = ?", (id_, owner), write=True)  # fmt: skip

    def record_attempts(
        self, id_: str, owner: str, expected: int, *, position: int, delivered: int,
        failures: int, at: str, status: int | None, error: str | None, next_attempt_ns: int,
    ) -> bool:  # fmt: skip
        """Keep how a run of attempts went (`delivered` of them 2xx, then a failure when
        `failures` is not 0), while `owner` holds the lease and the position is still
        `expected` (a `webhooks replay` meanwhile wins); whether it was kept."""
        attempted = delivered > 0 or failures > 0  # else only skipped past other kinds
        last = "last_attempt_at = ?, last_status = ?, last_error = ?, " if attempted else ""
        return bool(self._run(
            f"UPDATE subscriptions SET {last}position = ?, delivered = delivered + ?, "
            "failed = failed + ?, failures = ?, next_attempt_ns = ? "
            "WHERE id = ? AND lease_owner = ? AND position = ? RETURNING id",
            (*((at, status, error) if attempted else ()), position, delivered,
             int(failures > 0), failures, next_attempt_ns, id_, owner, expected),
            write=True,
        ))  # fmt: skip


_CHANGEABLE = frozenset({"paused", "secret", "old_secret", "old_secret_until", "position",
                         "failures", "next_attempt_ns"})  # fmt: skip


def _change_row(row: NamedRow) -> ChangeRow:
    return ChangeRow(
        int(row["seq"]), row["kind"], row["subject"], row["state"], row["previous"],
        bool(row["terminal"]), bool(row["correction"]), row["source"], row["event"], row["at"],
    )  # fmt: skip


def _subscription_row(row: NamedRow) -> SubscriptionRow:
    kinds = tuple(k for k in KINDS if k in row["kinds"].split(","))
    return SubscriptionRow(
        id=row["id"], url=row["url"], kinds=kinds, secret=row["secret"],
        old_secret=row["old_secret"], old_secret_until=row["old_secret_until"],
        position=int(row["position"]), paused=bool(row["paused"]), created_at=row["created_at"],
        delivered=int(row["delivered"]), failed=int(row["failed"]),
        failures=int(row["failures"]), next_attempt_ns=int(row["next_attempt_ns"]),
        last_attempt_at=row["last_attempt_at"], last_error=row["last_error"],
        last_status=row["last_status"], lease_owner=row["lease_owner"],
        lease_until_ns=int(row["lease_until_ns"]),
    )  # fmt: skip
