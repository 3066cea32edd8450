"""The SQLite schema, as sqlite-utils migrations applied in order when a database is opened."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from flowtracker.engine.timestamps import canonical, parse_timestamp
from flowtracker.errors import UnusableDatabase
from flowtracker.store.tables import (
    ACTIVITY_ORDER,
    CHANGE_FEED,
    HOUR_NS,
    LAST_CALLBACK,
    RECONCILIATION,
    RETENTION,
)

migrations = Migrations("flowtracker")


def migrate(db: Database) -> None:
    """Applies the migrations this flowtracker knows and the database has not had yet
    (after `check` has found it to be flowtracker's, or empty)."""
    migrations.apply(db)


# Migrations that only rewrite data into a form the reads take either way: a database that
# lacks them alone can still be read (by `status` on a database not yet migrated, say).
READABLE_PENDING = frozenset({"m009_canonical_subject_times"})


def pending(db: Database) -> list[str]:
    """The names of the migrations this database has not had yet."""
    return [migration.name for migration in migrations.pending(db)]


def check(db: Database, name: str, *, empty: str | None) -> list[str]:
    """The migrations `db` (the file `name`) still needs; raises `UnusableDatabase` when it
    is not a flowtracker database, or one that a newer flowtracker has migrated.

    A database with no tables at all is refused with `empty` when it is given (a read
    finds nothing there), else taken as a new one. Another program's tables are never
    touched: a database holding tables and none of flowtracker's is refused.
    """
    tables = db.table_names()
    if not tables:
        if empty is not None:
            raise UnusableDatabase(empty)
        return pending(db)
    applied = [migration.name for migration in migrations.applied(db)]
    if not applied:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise UnusableDatabase(
            f"{name} is not a flowtracker database (it holds other tables: {shown}); "
            "flowtracker leaves it alone: give it a file of its own with --db"
        )
    known = {migration.name for migration in migrations.pending(Database(memory=True))}
    # Code that does not know a newer schema would write rows its readers cannot find
    # (an event without its key, m008).
    newer = [migration for migration in applied if migration not in known]
    if newer:
        raise UnusableDatabase(
            f"{name} was migrated by a newer flowtracker ({', '.join(newer)}): "
            "run that version or a later one"
        )
    return pending(db)


_SUBJECT_COLUMNS = {
    "id": str,
    "state": str,
    "anomalies": int,
    "events": int,
    "first_event_at": str,
    "first_event_ns": int,
    "last_event_at": str,
    "last_event_ns": int,
    # The greatest (position, dedup key) among the subject's events: an event below it
    # makes the pipeline refold the subject.
    "last_major": int,
    "last_minor": int,
    "last_key": str,
    "last_received_at": str,
}
_DELIVERY_COLUMNS = {
    "outcome": str,
    "reason": str,
    "out_of_order": int,
    "deliveries": int,
    "received_at": str,
    "last_delivery_at": str,
    "body": bytes,
    "content_type": str,
}
_NOT_NULL = {"dedup_key", "outcome", "out_of_order", "deliveries", "received_at", "body"}


@migrations()
def m001_initial(db: Database) -> None:
    db.table("instances").create(
        _SUBJECT_COLUMNS, pk="id", not_null={"state", "anomalies", "events"}
    )
    db.table("documents").create(
        {
            **_SUBJECT_COLUMNS,
            "object_version": int,
            "signed_and_sealed": int,
            "title": str,
            "mtime": str,
        },
        pk="id",
        not_null={"state", "anomalies", "events"},
    )
    db.table("flow_events").create(
        {
            "id": int,
            "dedup_key": str,
            "instance_id": str,
            "type": str,
            "version": int,
            "event_created": str,
            "event_ns": int,
            **_DELIVERY_COLUMNS,
        },
        pk="id",
        not_null=_NOT_NULL | {"instance_id", "type", "version", "event_created", "event_ns"},
    )
    db.table("document_snapshots").create(
        {
            "id": int,
            "dedup_key": str,
            "document_id": str,
            "status": str,
            "object_version": int,
            "mtime": str,
            "mtime_ns": int,
            "signed_and_sealed": int,
            "title": str,
            **_DELIVERY_COLUMNS,
        },
        pk="id",
        not_null=_NOT_NULL | {"document_id", "status", "object_version", "mtime", "mtime_ns"},
    )
    db.table("quarantine").create(
        {
            "body_hash": str,
            "body": bytes,
            "content_type": str,
            "error": str,
            "source": str,
            "first_seen": str,
            "last_seen": str,
            "count": int,
        },
        pk="body_hash",
        not_null={"body", "error", "first_seen", "last_seen", "count"},
    )
    # Dedup keys are unique for the life of the database, in the ingest transaction.
    db.table("flow_events").create_index(["dedup_key"], unique=True)
    db.table("document_snapshots").create_index(["dedup_key"], unique=True)
    db.table("flow_events").create_index(["instance_id", "event_ns", "dedup_key"])
    db.table("document_snapshots").create_index(
        ["document_id", "object_version", "mtime_ns", "dedup_key"]
    )
    for table in ("flow_events", "document_snapshots"):
        db.table(table).create_index(["outcome"])
        db.table(table).create_index(["last_delivery_at"])
        db.execute(
            f"CREATE INDEX {table}_anomalous ON {table}(received_at) "
            "WHERE outcome = 'illegal' OR out_of_order"
        )
    for table in ("instances", "documents"):
        db.table(table).create_index(["state", "id"])
        db.table(table).create_index(["state", "last_received_at"])
        db.execute(f"CREATE INDEX {table}_anomalous ON {table}(id) WHERE anomalies > 0")
    db.table("quarantine").create_index(["last_seen", "body_hash"])


# Totals for /status, kept up to date in the ingest transactions: at millions of events a
# COUNT(*) per request is too slow. `recount` rebuilds them from the tables.
RECOUNT = (
    # The outcomes deliveries got on arrival cannot be recomputed: they are kept, and so
    # is the time of the last one.
    f"DELETE FROM counters WHERE name NOT GLOB 'arrived.*' AND name NOT GLOB 'reconcile.*' "
    f"AND name <> '{LAST_CALLBACK}'",
    *(
        statement
        for kind, events, subjects, tombstones in (
            ("flow", "flow_events", "instances", "instance_tombstones"),
            ("document", "document_snapshots", "documents", "document_tombstones"),
        )
        for statement in (
            f"INSERT INTO counters SELECT '{kind}.outcome.' || outcome, COUNT(*) FROM {events} "
            "GROUP BY outcome",
            # an answer of Scrive's API is stored with no delivery (SPEC 13)
            f"INSERT INTO counters SELECT '{kind}.duplicate', "
            "COALESCE(SUM(max(deliveries, 1) - 1), 0) "
            f"FROM {events}",
            f"INSERT INTO counters SELECT '{kind}.out_of_order', COALESCE(SUM(out_of_order), 0) "
            f"FROM {events}",
            f"INSERT INTO counters SELECT '{kind}.state.' || state, COUNT(*) FROM {subjects} "
            "GROUP BY state",
            f"INSERT INTO counters SELECT '{kind}.pruned', COUNT(*) FROM {tombstones}",
        )
    ),
    "INSERT INTO counters SELECT 'quarantine.rows', COUNT(*) FROM quarantine",
    "INSERT INTO counters SELECT 'quarantine.requests', COALESCE(SUM(count), 0) FROM quarantine",
)


@migrations()
def m002_counters(db: Database) -> None:
    db.table("counters").create({"name": str, "value": int}, pk="name", not_null={"value"})
    for statement in RECOUNT:
        if "_tombstones" not in statement:  # their tables come with m013, with none in them
            db.execute(statement)


@migrations()
def m003_health_probe(db: Database) -> None:
    # /healthz rewrites this one row: a write that fails when callbacks would.
    db.table("health_probe").create({"id": int, "filler": bytes}, pk="id")


@migrations()
def m004_one_unique_index_per_event_table(db: Database) -> None:
    # The dedup key is a hash of the body, and the body fixes the subject and its position:
    # a unique (subject, position, key) index keeps keys unique as well as the separate
    # unique index on the key did, and the ordered history reads use it. One random-key
    # index fewer to write per event: ingest into a large database no longer pays twice.
    db.execute("DROP INDEX idx_flow_events_dedup_key")
    db.execute("DROP INDEX idx_flow_events_instance_id_event_ns_dedup_key")
    db.execute("DROP INDEX idx_document_snapshots_dedup_key")
    db.execute("DROP INDEX idx_document_snapshots_document_id_object_version_mtime_ns_dedup_key")
    db.table("flow_events").create_index(["instance_id", "event_ns", "dedup_key"], unique=True)
    db.table("document_snapshots").create_index(
        ["document_id", "object_version", "mtime_ns", "dedup_key"], unique=True
    )


@migrations()
def m005_received_per_minute(db: Database) -> None:
    # Callbacks taken per minute (duplicates included), for the dashboard's throughput line.
    # Kept for a day; it starts empty, older events are not counted back.
    db.table("received_per_minute").create(
        {"minute": str, "callbacks": int}, pk="minute", not_null={"callbacks"}
    )


@migrations()
def m006_arrival_counters(db: Database) -> None:
    # Counters that only grow, for /metrics: deliveries by the outcome they got on arrival,
    # and quarantined requests. A database from before starts them from today's outcomes.
    db.execute(
        "INSERT OR REPLACE INTO counters SELECT 'arrived.' || replace(name, '.outcome.', '.'), "
        "value FROM counters WHERE name GLOB '*.outcome.*' OR name GLOB '*.duplicate'"
    )
    db.execute(
        "INSERT OR REPLACE INTO counters SELECT 'quarantine.requests', "
        "COALESCE(SUM(count), 0) FROM quarantine"
    )


@migrations()
def m007_last_callback_counter(db: Database) -> None:
    # /status's last callback time is kept in the ingest transactions, as the totals are.
    # The indexes on last_delivery_at it was read from cost a page or more per commit,
    # at a random place for every redelivery.
    last = [
        row[0]
        for table in ("flow_events", "document_snapshots")
        for row in db.execute(f"SELECT MAX(last_delivery_at) FROM {table}")
        if row[0] is not None
    ]
    if last:
        db.execute(
            "INSERT OR REPLACE INTO counters VALUES (?, ?)",
            (LAST_CALLBACK, max(parse_timestamp(at).ns for at in last)),
        )
    db.execute("DROP INDEX idx_flow_events_last_delivery_at")
    db.execute("DROP INDEX idx_document_snapshots_last_delivery_at")


@migrations()
def m008_events_keyed_by_subject_order(db: Database) -> None:
    # Instance and document ids are random: the unique (subject id, position, dedup key)
    # index put every new subject's events on a random leaf of an index as big as the
    # events, which split and was written back at every commit; so did the (state, id)
    # and anomalous-subject indexes. Subjects now get a number in the order they are first
    # seen (`seq`). The keys of their events live in a table ordered by it, and lists are
    # in that order: new and recent subjects' entries are at the end of each.
    for subjects, events, keys, owner, position in (
        ("instances", "flow_events", "flow_event_keys", "instance_id", ("event_ns",)),
        (
            "documents",
            "document_snapshots",
            "document_snapshot_keys",
            "document_id",
            ("object_version", "mtime_ns"),
        ),
    ):
        db.execute(f"ALTER TABLE {subjects} ADD COLUMN seq INTEGER")
        db.execute(f"UPDATE {subjects} SET seq = rowid")
        db.execute(f"CREATE UNIQUE INDEX {subjects}_seq ON {subjects}(seq)")
        columns = ", ".join(position)
        db.execute(
            f"CREATE TABLE {keys} (subject_seq INTEGER NOT NULL, "
            + "".join(f"{column} INTEGER NOT NULL, " for column in position)
            + f"dedup_key TEXT NOT NULL, event_id INTEGER NOT NULL, "
            f"PRIMARY KEY (subject_seq, {columns}, dedup_key)) WITHOUT ROWID"
        )
        db.execute(
            f"INSERT INTO {keys} SELECT s.seq, "
            + "".join(f"e.{column}, " for column in position)
            + f"e.dedup_key, e.id FROM {events} e JOIN {subjects} s ON s.id = e.{owner} "
            f"ORDER BY 1, {', '.join(str(n + 2) for n in range(len(position) + 1))}"
        )
        # Every event has its subject's row, written in the same transaction; if one had
        # not, its key would be lost with the index: stop, and leave the database as it was.
        count = "SELECT (SELECT COUNT(*) FROM {}) - (SELECT COUNT(*) FROM {})"
        if missing := db.execute(count.format(events, keys)).fetchone()[0]:
            raise sqlite3.IntegrityError(
                f"migration m008: {missing} rows of {events} have no row in {subjects}; "
                "the database was left as it was"
            )
        db.execute(f"DROP INDEX idx_{events}_{owner}_{'_'.join(position)}_dedup_key")
        db.execute(f"DROP INDEX idx_{subjects}_state_id")
        db.execute(f"CREATE INDEX {subjects}_state_seq ON {subjects}(state, seq)")
        db.execute(f"DROP INDEX {subjects}_anomalous")
        db.execute(f"CREATE INDEX {subjects}_anomalous ON {subjects}(seq) WHERE anomalies > 0")


@migrations()
def m009_canonical_subject_times(db: Database) -> None:
    # A subject's first and last event times are shown in one spelling made from their
    # nanoseconds: they were the text of whichever event of that instant arrived first.
    db.conn.create_function(
        "flowtracker_canonical", 1, lambda ns: None if ns is None else canonical(ns),
        deterministic=True,
    )  # fmt: skip
    for table in ("instances", "documents"):
        db.execute(
            f"UPDATE {table} SET first_event_at = flowtracker_canonical(first_event_ns), "
            "last_event_at = flowtracker_canonical(last_event_ns) "
            "WHERE first_event_at <> flowtracker_canonical(first_event_ns) "
            "OR last_event_at <> flowtracker_canonical(last_event_ns)"
        )


@migrations()
def m010_received_hour(db: Database) -> None:
    # The (state, last_received_at) index behind the stuck lists moved its entry at every
    # callback of a subject: a page written at a random place per subject and commit.
    # It holds the hour of the last receipt instead, which moves once an hour; the exact
    # time is checked on the rows of the last hour. The events' outcome index served only
    # the recount, which scans anyway.
    db.conn.create_function(
        "flowtracker_hour", 1,
        lambda at: None if at is None else parse_timestamp(at).ns // HOUR_NS,
        deterministic=True,
    )  # fmt: skip
    for table in ("instances", "documents"):
        db.execute(f"ALTER TABLE {table} ADD COLUMN received_hour INTEGER")
        db.execute(f"UPDATE {table} SET received_hour = flowtracker_hour(last_received_at)")
        db.execute(f"DROP INDEX idx_{table}_state_last_received_at")
        db.execute(f"CREATE INDEX {table}_state_received_hour ON {table}(state, received_hour)")
    for table in ("flow_events", "document_snapshots"):
        db.execute(f"DROP INDEX idx_{table}_outcome")


@migrations()
def m011_change_feed(db: Database) -> None:
    # The change log (SPEC 11), its clock (the last `seq` given, and the greatest pruned),
    # and the webhook subscriptions (SPEC 12). Existing subjects get no change: the log
    # starts with the next one.
    db.executescript(CHANGE_FEED.format(bigint="INTEGER", boolean="INTEGER", text="TEXT"))


@migrations()
def m012_reconciliation(db: Database) -> None:
    # Answers of Scrive's API (SPEC 13): an event or snapshot that holds one names the
    # status it carries; a subject counts its reconciled events (a callback may supersede
    # them, so the pipeline refolds it) and keeps the time Scrive last answered 404. The
    # lease lets one receiver at a time run the background pass.
    db.executescript(RECONCILIATION.format(bigint="INTEGER", text="TEXT"))


@migrations()
def m013_retention(db: Database) -> None:
    # What `flowtracker prune` leaves of a subject it removes (SPEC 14): its final state,
    # so that a late callback is ignored and a read answers 410, never a new subject.
    db.executescript(RETENTION.format(bigint="INTEGER", text="TEXT"))


@migrations()
def m014_activity_order(db: Database) -> None:
    # Lists ordered by last activity, and filtered by a time range of it (the dashboard).
    db.executescript(ACTIVITY_ORDER)
