"""Opening a SQLite database: the checks before anything is written, the pragmas, the
migrations, one writer connection behind its locks, and a pool of reader connections.

Reads that take several statements run in one read transaction, so they see one
snapshot. Every `sqlite3.Error` met here becomes `StorageUnavailable` (`translated`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from flowtracker.errors import StorageUnavailable, UnusableDatabase
from flowtracker.settings import Durability
from flowtracker.store.opening import Access
from flowtracker.store.sqlite.schema import READABLE_PENDING, check, migrate

log = logging.getLogger("flowtracker")
CHECKPOINT_SECONDS = 0.5  # how often the checkpointer copies the WAL back, when written
# A WAL this long is checkpointed by the commit itself: the checkpointer's PASSIVE
# checkpoints seldom catch up with a writer that never pauses, and only a complete one lets
# the WAL start again from its beginning. Most pages have been copied back by then.
BACKSTOP_PAGES = 20_000


class Connections:
    """The connections to one flowtracker database file."""

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
        needed, self._immutable = _inspect(self.path, new=access == "create")
        self.pending: list[str] = []  # migrations a reader goes on without
        self.applied: list[str] = []  # migrations this opening applied
        if self.read_only and set(needed) <= READABLE_PENDING:
            self.pending = needed
        elif needed and not (upgrade and not self.read_only):
            raise UnusableDatabase(
                f"{self.path} needs migrating to this flowtracker ({', '.join(needed)}): "
                f"run `flowtracker migrate --db {self.path}` (or another process is "
                "migrating it now)"
            )
        if self.read_only:
            return
        self._process_lock = ProcessLock(self.path + ".lock", self._busy_timeout_ms / 1000)
        with translated("open the database"):
            self._writer = self._connect()
            # Before anything is written to a new file (this does nothing to an existing
            # one): the pages `prune` frees can then be given back (SPEC 14).
            self._writer.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._writer.execute("PRAGMA journal_mode = WAL")
            self._writer.execute(f"PRAGMA synchronous = {durability.upper()}")
            # The checkpointer thread copies the WAL back; SQLite's own checkpoint, which
            # runs inside a commit and holds up every callback behind it, is only a
            # backstop for a checkpointer that cannot keep up (docs/performance.md).
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            self._checkpointer = Checkpointer(self._connect(), checkpoint_seconds)
            try:
                with self.write():
                    # Checked again under the write lock: another process may have got
                    # there first.
                    db = Database(self._writer)
                    self.applied = check(db, self.path, empty=None)
                    if self.applied:
                        migrate(db)
            except BaseException:
                self._checkpointer.close()
                raise

    def _connect(self) -> sqlite3.Connection:
        conn = _connection(self.path, reading=self.read_only, immutable=self._immutable)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        # 16 MiB of page cache per connection instead of 2: histories and indexes of a
        # large database stay in memory.
        conn.execute("PRAGMA cache_size = -16384")
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (`BEGIN IMMEDIATE`) on the one writer connection, under
        this process's lock and the lock file other processes take: commits when the
        block ends, rolls back on any exception."""
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
    def reading(self) -> Iterator[Reader]:
        """A read transaction on an idle reader connection: one consistent snapshot.

        Readers are pooled, not per thread: server threads come and go, connections stay
        as many as were ever busy at once.
        """
        with translated("read"):
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


class Checkpointer:
    """Copies the WAL back into the database file on a thread and connection of its own.

    At most every `seconds` after a commit, so that a page written again meanwhile is
    copied once. A PASSIVE checkpoint never waits for the writer nor holds it up; SQLite
    runs it without the interpreter lock. Before, SQLite checkpointed inside the commit
    that filled the WAL to 10,000 pages, and every callback behind it waited 0.1-0.4 s.

    Under a writer that never pauses, though, only a checkpoint in the writer's own
    connection between two commits can start the WAL again from its beginning: that is
    SQLite's backstop (`BACKSTOP_PAGES`), and it holds up the commit that runs it for as
    long as it takes to copy what is left. So once the WAL is past half the backstop,
    this thread checkpoints every `EAGER_SECONDS`, and little is left for the backstop
    (on a 10M-event database, callbacks for existing subjects: p99 from 140 to 40 ms).
    """

    EAGER_SECONDS = 0.05

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
        wait = self.seconds
        while True:
            self._written.wait()
            if self._closing.wait(wait):
                return  # closing the last connection checkpoints what is left
            self._written.clear()
            try:
                _, frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as error:  # the next commit wakes it to try again
                log.warning("checkpoint failed: %s", error)
                continue
            wait = self.EAGER_SECONDS if frames > BACKSTOP_PAGES // 2 else self.seconds


class ProcessLock:
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
    """Runs queries in one read transaction; rows answer by name and by position."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __call__(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()


def _connection(path: str, *, reading: bool, immutable: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode; for `reading`, one that cannot write or create
    (SQLite still makes the `-shm` and `-wal` files of a WAL database, unless
    `immutable`: then it reads the file alone, as it is)."""
    if not reading:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    target = Path(path).absolute().as_uri() + ("?immutable=1" if immutable else "?mode=ro")
    return sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=True)


def _inspect(path: str, *, new: bool) -> tuple[list[str], bool]:
    """The migrations the database at `path` needs (with `new`, all of them for a missing
    or empty file), and whether it must be read `immutable` (a read-only directory and no
    WAL to read); raises `UnusableDatabase` when it cannot be used (`schema.check`).

    Another program's database is judged from its file alone (`immutable`), so that not
    even SQLite's side files appear next to it; one with a WAL beside it through the WAL.
    """
    absent = (
        f"no flowtracker database at {path} yet "
        "(set --db or FLOWTRACKER_DB, or replay a file first)"
    )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UnusableDatabase(f"cannot open {path}: there is no directory {folder}")
    logged = os.path.exists(path + "-wal")
    wal = logged and os.path.getsize(path + "-wal") > 0
    if not os.path.exists(path) or (os.path.getsize(path) == 0 and not wal):
        if not new:
            raise UnusableDatabase(absent)
        return check(Database(memory=True), path, empty=None), False

    def peek() -> list[str]:
        return _checked(path, lambda db: check(db, path, empty=None), immutable=True)

    # The file alone first: another program's database, or a newer flowtracker's, is
    # refused untouched. Not beside a WAL, though: its side files are there already, and
    # the database may be in use, a checkpoint rewriting pages of the file that only
    # the WAL holds whole (a page read from the file alone then may be half-written).
    # A new database may still be all in its WAL: judged below.
    peeked = None if logged else peek()
    try:
        return _checked(path, lambda db: check(db, path, empty=None if new else absent)), False
    except sqlite3.OperationalError as error:
        if wal:  # the WAL holds commits that only a connection with its shared memory sees
            raise UnusableDatabase(
                f"cannot read {path}: SQLite needs to write {path}-shm beside it to read "
                f"its write-ahead log ({error}); give this user write access to {folder}"
            ) from None
        # A read-only directory, and nothing outside the file.
        return peeked if peeked is not None else peek(), True


def _checked(
    path: str, judge: Callable[[Database], list[str]], *, immutable: bool = False
) -> list[str]:
    """`judge` run on a read-only connection to `path`; a file that is not SQLite is
    refused, other SQLite errors left to the caller."""
    conn = _connection(path, reading=True, immutable=immutable)
    try:
        return judge(Database(conn))
    except sqlite3.DatabaseError as error:
        if "not a database" in str(error):
            raise UnusableDatabase(f"{path} is not a SQLite database ({error})") from None
        raise
    finally:
        conn.close()


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Any `sqlite3.Error` inside as `StorageUnavailable`, saying what could not be done."""
    try:
        yield
    except sqlite3.Error as error:
        raise StorageUnavailable(f"the database cannot {doing} now: {error}") from error
