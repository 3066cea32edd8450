"""The SQLite store: one file in WAL mode, one writer behind a lock, readers per thread.

sqlite-utils owns the schema (migrations); the ingest transaction is in
`sqlite_transaction`. Reads that take several statements run in one read transaction, so
they see one snapshot. Every `sqlite3.Error` becomes `StorageUnavailable` here.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, get_args

from sqlite_utils import Database

from .errors import StorageUnavailable, UnusableDatabase
from .events import Kind
from .records import DELIVERY_OUTCOMES, Outcome
from .schema import LAST_CALLBACK, check, migrate
from .settings import Durability
from .sqlite_transaction import EVENTS, SUBJECTS, SQLiteTransaction, events_of
from .storage import Quarantined, SubjectFilter
from .timestamps import format_ns

log = logging.getLogger("flowtracker")
Row = dict[str, Any]
Access = Literal["read", "write", "create"]
CHECKPOINT_SECONDS = 0.5  # how often the checkpointer copies the WAL back, when written
# A WAL this long is checkpointed by the commit itself: the checkpointer's PASSIVE
# checkpoints seldom catch up with a writer that never pauses, and only a complete one lets
# the WAL start again from its beginning. Most pages have been copied back by then.
BACKSTOP_PAGES = 10_000


class SQLiteStore:
    """A flowtracker database in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        access: Access = "create",
        upgrade: bool = True,
        durability: Durability = "full",
        busy_timeout_ms: int = 5_000,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
    ) -> None:
        """`access="read"` opens an existing flowtracker database for reading only: it
        creates, migrates and writes nothing (a read-only file will do). `"write"` opens
        one for writing too, migrating it when `upgrade`; `"create"` also makes a new
        one in a missing or empty file. Each refuses another program's database, one
        from a newer flowtracker, and (reading, or without `upgrade`) one that needs
        migrating: `UnusableDatabase` names the file and the cause."""
        self.path = str(path)
        self.read_only = access == "read"
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        needed = _inspect(self.path, new=access == "create")
        if needed and not (upgrade and not self.read_only):
            raise UnusableDatabase(
                f"{self.path} needs migrating to this flowtracker ({', '.join(needed)}): "
                f"run `flowtracker migrate --db {self.path}`"
            )
        if self.read_only:
            return
        self._process_lock = _ProcessLock(self.path + ".lock", self._busy_timeout_ms / 1000)
        with _translated("open the database"):
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {durability.upper()}")
            # The checkpointer thread copies the WAL back; SQLite's own checkpoint, which
            # runs inside a commit and holds up every callback behind it, is only a
            # backstop for a checkpointer that cannot keep up (docs/performance.md).
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            self._checkpointer = _Checkpointer(self._connect(), checkpoint_seconds)
            try:
                with self._write():
                    # Checked again under the write lock: another process may have got
                    # there first.
                    db = Database(self._writer)
                    if check(db, self.path, empty=None):
                        migrate(db)
            except BaseException:
                self._checkpointer.close()
                raise

    @contextmanager
    def transaction(self) -> Iterator[SQLiteTransaction]:
        with _translated("write"), self._write() as conn:
            yield SQLiteTransaction(conn)

    def quarantine(self, item: Quarantined, at: str) -> None:
        digest, error = hashlib.sha256(item.body).hexdigest(), json.dumps(item.error)
        with _translated("quarantine a request"), self._write() as conn:
            seen = conn.execute(
                "UPDATE quarantine SET last_seen = ?, count = count + 1, error = ?, "
                "content_type = ?, source = ? WHERE body_hash = ?",
                (at, error, item.content_type, item.source, digest),
            )
            if seen.rowcount == 0:
                conn.execute(
                    "INSERT INTO quarantine (body_hash, body, content_type, error, source, "
                    "first_seen, last_seen, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (digest, item.body, item.content_type, error, item.source, at, at),
                )
            counted = {"quarantine.requests": 1, "quarantine.rows": int(seen.rowcount == 0)}
            SQLiteTransaction(conn).bump(counted)

    def subject_ids(self, kind: Kind, after: str, limit: int) -> list[str]:
        sql = f"SELECT id FROM {SUBJECTS[kind]} WHERE id > ? ORDER BY id LIMIT ?"
        with self._reading() as read:
            return [row["id"] for row in read(sql, (after, limit))]

    def subject_history(self, kind: Kind, subject_id: str) -> tuple[Row, list[Row]] | None:
        with self._reading() as read:
            found = read(f"SELECT * FROM {SUBJECTS[kind]} WHERE id = ?", (subject_id,))
            if not found:
                return None
            events = read(f"SELECT e.* {events_of(kind)}", (subject_id,))
            return found[0], events

    def list_subjects(
        self, kind: Kind, where: SubjectFilter, after: int | None, limit: int
    ) -> list[Row]:
        # In `seq` order, on an index for each filter: (state, seq), the partial index of
        # anomalous subjects, or `seq` alone. An id prefix's range on the primary key is
        # narrower than any of them: then the other terms stay off the indexes (SQLite's
        # unary +) and what the range finds is sorted.
        def term(column: str) -> str:
            return f"+{column}" if where.id_prefix else column

        clauses = [f"{term('seq')} > ?"]
        params: list[int | str] = [after or 0]
        if where.state is not None:
            clauses.append(f"{term('state')} = ?")
            params.append(where.state)
        if where.anomalous:
            clauses.append(f"{term('anomalies')} > 0")
        if where.received_before is not None:
            clauses.append(f"{term('state')} = 'in_progress' AND {term('last_received_at')} < ?")
            params.append(where.received_before)
        if where.id_prefix:  # a range on the primary key, not a LIKE scan
            clauses.append("id >= ? AND id < ?")
            params += [where.id_prefix, where.id_prefix + "\U0010ffff"]
        sql = f"SELECT * FROM {SUBJECTS[kind]} WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
        with self._reading() as read:
            return read(sql, (*params, limit))

    def id_match(self, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
        # The primary key's range, in id order: the id itself comes first if it is there.
        with self._reading() as read:
            found = read(
                f"SELECT id FROM {SUBJECTS[kind]} WHERE id >= ? AND id < ? ORDER BY id LIMIT 1",
                (prefix, prefix + "\U0010ffff"),
            )
        if not found:
            return None
        return "whole" if found[0]["id"] == prefix else "prefix"

    def quietest(self, received_before: str, limit: int) -> list[Row]:
        with self._reading() as read:  # the (state, last_received_at) index, in its order
            return read(
                "SELECT * FROM instances WHERE state = 'in_progress' AND last_received_at < ? "
                "ORDER BY last_received_at LIMIT ?",
                (received_before, limit),
            )

    def summary(self, stuck_before: str) -> dict[str, Any]:
        """From the counters kept by the ingest transactions, not from COUNT(*)."""
        with self._reading() as read:
            counters = {row["name"]: row["value"] for row in read("SELECT * FROM counters")}
            stuck = read(
                "SELECT COUNT(*) AS n FROM instances WHERE state = 'in_progress' "
                "AND last_received_at < ?",
                (stuck_before,),
            )[0]["n"]
        outcomes = {
            outcome: counters.get(f"flow.outcome.{outcome}", 0)
            + counters.get(f"document.outcome.{outcome}", 0)
            for outcome in get_args(Outcome)
        }
        return {
            "outcomes": {**outcomes, "duplicate": _total(counters, "duplicate")},
            "out_of_order": _total(counters, "out_of_order"),
            "quarantined": counters.get("quarantine.rows", 0),
            "quarantined_requests": counters.get("quarantine.requests", 0),
            "instances": _prefixed(counters, "flow.state."),
            "documents": _prefixed(counters, "document.state."),
            "stuck": stuck,
            "last_callback_at": format_ns(last) if (last := counters.get(LAST_CALLBACK)) else None,
            "by_kind": {kind: _by_kind(counters, kind) for kind in EVENTS},
        }

    def quarantined(
        self, before: tuple[str, str] | None, limit: int, body_limit: int | None = None
    ) -> list[Row]:
        where = "WHERE (last_seen, body_hash) < (?, ?)" if before else ""
        body = "body" if body_limit is None else f"substr(body, 1, {int(body_limit)}) AS body"
        with self._reading() as read:
            return read(
                f"SELECT body_hash, {body}, length(body) AS body_length, content_type, error, "
                f"source, first_seen, last_seen, count FROM quarantine {where} "
                "ORDER BY last_seen DESC, body_hash DESC LIMIT ?",
                (*(before or ()), limit),
            )

    def quarantined_body(self, body_hash: str) -> bytes | None:
        with self._reading() as read:
            rows = read("SELECT body FROM quarantine WHERE body_hash = ?", (body_hash,))
        return bytes(rows[0]["body"]) if rows else None

    def pulse(self, subject: tuple[Kind, str] | None = None) -> str:
        with self._reading() as read:
            if subject is None:  # counters that only grow: every delivery moves one
                return str(read(
                    "SELECT COALESCE(SUM(value), 0) AS n FROM counters "
                    "WHERE name GLOB 'arrived.*' OR name = 'quarantine.requests'"
                )[0]["n"])  # fmt: skip
            kind, subject_id = subject
            found = read(
                "SELECT COUNT(*) AS n, SUM(e.deliveries) AS d, MAX(e.last_delivery_at) AS at "
                + events_of(kind),
                (subject_id,),
            )[0]
        return f"{found['n']}.{found['d'] or 0}.{found['at'] or ''}"

    def anomalies(self, limit: int) -> list[Row]:
        with self._reading() as read:
            return read(
                "SELECT * FROM ("
                "SELECT 'flow' AS kind, instance_id AS subject_id, type AS label, "
                "event_created AS at, outcome, reason, out_of_order, received_at "
                "FROM flow_events WHERE outcome = 'illegal' OR out_of_order "
                "ORDER BY received_at DESC LIMIT ?) "
                "UNION ALL SELECT * FROM ("
                "SELECT 'document', document_id, status, mtime, outcome, reason, out_of_order, "
                "received_at FROM document_snapshots WHERE outcome = 'illegal' OR out_of_order "
                "ORDER BY received_at DESC LIMIT ?) ORDER BY received_at DESC LIMIT ?",
                (limit, limit, limit),
            )

    def received_since(self, minute: str) -> dict[str, int]:
        with self._reading() as read:
            rows = read("SELECT * FROM received_per_minute WHERE minute >= ?", (minute,))
        return {row["minute"]: row["callbacks"] for row in rows}

    def ping(self) -> None:
        """Read, and commit a write as large as a big callback (64 KiB, always the same
        row): a full disk or a read-only file fails it as it would fail a callback."""
        with self._reading() as read:
            read("SELECT COUNT(*) FROM sqlite_master")
        with _translated("take writes"), self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO health_probe VALUES (1, randomblob(65536))")

    def close(self) -> None:
        if not self.read_only:
            self._checkpointer.close()
        with self._lock:
            if not self.read_only:
                self._process_lock.close()
                self._writer.close()
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _connect(self) -> sqlite3.Connection:
        conn = _connection(self.path, reading=self.read_only)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        # 16 MiB of page cache per connection instead of 2: histories and indexes of a
        # large database stay in memory.
        conn.execute("PRAGMA cache_size = -16384")
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self.read_only:
            raise StorageUnavailable(f"{self.path} was opened for reading only")
        with self._lock, self._process_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.execute("COMMIT")
                self._checkpointer.written()
            except BaseException:
                # Also after a failed COMMIT: an open transaction would hold the lock.
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self) -> Iterator[Reader]:
        """A read transaction on an idle reader connection: one consistent snapshot.

        Readers are pooled, not per thread: server threads come and go, connections stay
        as many as were ever busy at once.
        """
        with _translated("read"):
            try:
                conn = self._idle_readers.get_nowait()
            except queue.Empty:
                conn = self._new_reader()
            try:
                conn.execute("BEGIN")
                try:
                    yield Reader(conn)
                finally:
                    conn.execute("COMMIT")
            finally:
                if conn.in_transaction:  # a failed COMMIT: never pool a connection mid-read
                    conn.execute("ROLLBACK")
                self._idle_readers.put(conn)

    def _new_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = 1")
        with self._lock:
            self._readers.append(conn)
        return conn


class _Checkpointer:
    """Copies the WAL back into the database file on a thread and connection of its own.

    At most every `seconds` after a commit, so that a page written again meanwhile is
    copied once. A PASSIVE checkpoint never waits for the writer nor holds it up; SQLite
    runs it without the interpreter lock. Before, SQLite checkpointed inside the commit
    that filled the WAL to 10,000 pages, and every callback behind it waited 0.1-0.4 s.
    """

    def __init__(self, conn: sqlite3.Connection, seconds: float) -> None:
        self.conn, self.seconds = conn, seconds
        self._written = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flowtracker-checkpoint")
        self._thread.daemon = True
        self._thread.start()

    def written(self) -> None:
        self._written.set()

    def close(self) -> None:
        self._closing.set()
        self._written.set()
        self._thread.join()
        self.conn.close()

    def _run(self) -> None:
        while True:
            self._written.wait()
            if self._closing.wait(self.seconds):
                return  # closing the last connection checkpoints what is left
            self._written.clear()
            try:
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as error:  # the next commit wakes it to try again
                log.warning("checkpoint failed: %s", error)


class _ProcessLock:
    """An advisory file lock taken around every write transaction.

    Several workers on one database otherwise meet in SQLite's busy handler, which sleeps
    up to 100 ms between tries; polling a lock file every few milliseconds hands the
    writer's turn over far sooner. Within the busy timeout, else `StorageUnavailable`.
    Without a lock file (a read-only directory) SQLite's own locking still applies.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.timeout = timeout
        try:
            self.fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            self.fd = None

    def __enter__(self) -> None:
        if self.fd is None:
            return
        deadline, pause = time.monotonic() + self.timeout, 0.0005
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StorageUnavailable(
                        "the database cannot write now: another process holds its lock"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.004)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Reader:
    """Runs queries on a reader connection, answering rows as dicts."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [dict(row) for row in self.conn.execute(sql, params)]


def _total(counters: dict[str, int], name: str) -> int:
    return counters.get(f"flow.{name}", 0) + counters.get(f"document.{name}", 0)


def _by_kind(counters: dict[str, int], kind: str) -> dict[str, int]:
    """Deliveries of one kind by the outcome they got on arrival, and out of order."""
    arrived = {o: counters.get(f"arrived.{kind}.{o}", 0) for o in DELIVERY_OUTCOMES}
    return {**arrived, "out_of_order": counters.get(f"{kind}.out_of_order", 0)}


def _prefixed(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {name[len(prefix) :]: n for name, n in counters.items() if name.startswith(prefix) and n}


def _connection(path: str, *, reading: bool) -> sqlite3.Connection:
    """A connection in autocommit mode; for `reading`, one that cannot write or create."""
    target, uri = (Path(path).absolute().as_uri() + "?mode=ro", True) if reading else (path, False)
    return sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)


def needed_migrations(path: str) -> list[str]:
    """The migrations opening `path` to write would apply (all of them to a new file)."""
    return _inspect(path, new=True)


def _inspect(path: str, *, new: bool) -> list[str]:
    """The migrations the database at `path` needs (with `new`, all of them for a missing
    or empty file), without writing to it; raises `UnusableDatabase` when it cannot be
    used (`schema.check`)."""
    absent = (
        f"no flowtracker database at {path} yet "
        "(set --db or FLOWTRACKER_DB, or replay a file first)"
    )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UnusableDatabase(f"cannot open {path}: there is no directory {folder}")
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        if not new:
            raise UnusableDatabase(absent)
        return check(Database(memory=True), path, empty=None)
    conn = _connection(path, reading=True)
    try:
        return check(Database(conn), path, empty=None if new else absent)
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            raise UnusableDatabase(f"{path} is not a SQLite database ({error})") from None
        raise StorageUnavailable(f"the database cannot be read now: {error}") from error
    finally:
        conn.close()


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise StorageUnavailable(f"the database cannot {doing} now: {error}") from error
