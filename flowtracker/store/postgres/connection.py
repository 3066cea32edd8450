"""Opening a PostgreSQL database: the URL checked and its password masked, one clear line
for each way connecting can fail, the migrations under an advisory lock, and the pools.

Every psycopg or pool error met once the store is open becomes `StorageUnavailable`
(`translated`): a stopped, restarting or read-only server, a refused connection, an
exhausted pool, a statement or lock timeout. The pools reconnect by themselves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from flowtracker.errors import StorageUnavailable, TransactionConflict, UnusableDatabase
from flowtracker.settings import Durability
from flowtracker.store.opening import Access
from flowtracker.store.postgres.schema import MIGRATION_LOCK, check, migrate

log = logging.getLogger("flowtracker")
CONNECT_TIMEOUT = 5  # seconds to wait for the server to answer a new connection
WRITE_POOL = 4  # connections per process for writes (the committer, quarantine, health)
READ_POOL = 8  # and for reads
Connection = psycopg.Connection[dict[str, Any]]


def masked(url: str) -> str:
    """The URL with its password replaced by `***`, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def scrubbed(message: str, url: str) -> str:
    """A message with the URL's password, should it appear, masked."""
    password = _password(url)
    if password:
        message = message.replace(password, "***")
    return message.replace(url, masked(url))


def explained(error: psycopg.Error, url: str) -> str:
    """One line saying why a connection to `url` failed, its password masked."""
    shown = masked(url)
    text = scrubbed(str(error), url).strip()
    params = _params(url)
    where = f"{params.get('host', 'localhost')}:{params.get('port', '5432')}"
    user = params.get("user", "")
    if "password authentication failed" in text or "authentication failed" in text:
        return f"cannot connect to {shown}: authentication failed for user {user!r} at {where}"
    if "no password supplied" in text:
        return f"cannot connect to {shown}: the server at {where} wants a password for {user!r}"
    if "could not translate host name" in text or "Name or service not known" in text:
        return f"cannot connect to {shown}: unknown host {params.get('host', '')!r}"
    if match := re.search(r'database "([^"]*)" does not exist', text):
        return (f"cannot connect to {shown}: there is no database {match.group(1)!r} at "
                f"{where} (create it with `createdb {match.group(1)}`)")  # fmt: skip
    if "Connection refused" in text:
        return f"cannot connect to {shown}: nothing accepts connections at {where}"
    if "timeout expired" in text:
        return f"cannot connect to {shown}: no answer from {where} in {CONNECT_TIMEOUT} s"
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return f"cannot connect to {shown}: {last[-1] if last else type(error).__name__}"


def _params(url: str) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in psycopg.conninfo.conninfo_to_dict(url).items()}
    except psycopg.Error:
        return {}


def validated(url: str) -> str:
    """`url` when it is a well-formed PostgreSQL URL, else `UnusableDatabase` saying why."""
    try:
        psycopg.conninfo.conninfo_to_dict(url)
        urlsplit(url).port  # noqa: B018 (raises on a port that is not a number)
    except (psycopg.Error, ValueError) as error:
        raise UnusableDatabase(
            f"{masked(url)} is not a PostgreSQL URL that flowtracker can use "
            f"({scrubbed(str(error), url).strip()}); write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    return url


class Connections:
    """The connections of one process to one flowtracker database on PostgreSQL."""

    def __init__(
        self,
        url: str,
        *,
        access: Access = "create",
        upgrade: bool = True,
        durability: Durability = "full",
        timeout_ms: int = 5_000,
    ) -> None:
        """Checks and (unless `access="read"`) migrates the database at once, on a
        connection of its own: a bad URL, host, password or database name is reported
        here, in one line. `timeout_ms` bounds a statement, a lock wait and the wait for
        a pooled connection, each; past it the write is refused (`StorageUnavailable`)."""
        self.url = validated(url)
        self.shown = masked(url)
        self.read_only = access == "read"
        self._timeout_ms = int(timeout_ms)
        self._durability = durability
        self.pending: list[str] = []
        self.applied: list[str] = []
        try:
            first = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        except psycopg.Error as error:
            raise UnusableDatabase(explained(error, self.url)) from None
        absent = f"no flowtracker database at {self.shown} yet (run `flowtracker migrate`)"
        try:
            with first, first.transaction():
                # One server at a time checks and migrates; the others wait here, then
                # find the database up to date.
                first.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                needed = check(first, self.shown, empty=absent if self.read_only else None)
                if needed and (self.read_only or not upgrade):
                    raise UnusableDatabase(
                        f"{self.shown} needs migrating to this flowtracker "
                        f"({', '.join(needed)}): run `flowtracker migrate --db URL`"
                    )
                if needed:
                    migrate(first, needed)
                    self.applied = needed
        except psycopg.Error as error:
            raise UnusableDatabase(
                f"cannot prepare {self.shown}: {scrubbed(str(error), self.url).strip()}"
            ) from None
        self.reads = self._pool("reads", READ_POOL, read_only=True)
        self.writes = None if self.read_only else self._pool("writes", WRITE_POOL)

    def _pool(self, name: str, size: int, *, read_only: bool = False) -> ConnectionPool[Connection]:
        def configure(conn: Connection) -> None:
            conn.autocommit = True  # transactions are explicit (`conn.transaction()`)
            conn.execute(f"SET statement_timeout = {self._timeout_ms}")
            conn.execute(f"SET lock_timeout = {self._timeout_ms}")
            if self._durability == "normal":  # a crash of the server may lose the last commits
                conn.execute("SET synchronous_commit = off")
            if read_only:  # one snapshot per read, which never writes
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True

        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=size,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "row_factory": dict_row},
            configure=configure,
            check=ConnectionPool.check_connection,
            timeout=self._timeout_ms / 1000,
            reconnect_timeout=float("inf"),  # a server down for long is waited for, not dropped
            name=f"flowtracker-{name}",
            open=True,
        )

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (READ COMMITTED) on a pooled connection: commits when the
        block ends, rolls back on any exception. In pipeline mode: a statement whose rows
        nobody reads does not wait for the server, so the writes of a batch and its commit
        go in one round trip; a read waits for what was sent before it."""
        if self.writes is None:
            raise StorageUnavailable(f"{self.shown} was opened for reading only")
        with (
            translated("write", self.url),
            self.writes.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            yield conn

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only REPEATABLE READ transaction: one snapshot for several statements."""
        with translated("read", self.url), self.reads.connection() as conn, conn.transaction():
            yield conn

    def close(self) -> None:
        self.reads.close()
        if self.writes is not None:
            self.writes.close()


# Aborted to keep concurrent transactions apart: running it again will do.
_CONFLICTS = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.UniqueViolation)


@contextmanager
def translated(doing: str, url: str) -> Iterator[None]:
    """Any psycopg or pool error inside as `StorageUnavailable` (`TransactionConflict`
    for one that a retry resolves), saying what could not be done; the URL's password
    never appears."""
    try:
        yield
    except _CONFLICTS as error:
        raise TransactionConflict(
            f"the database cannot {doing} now: {_first_line(error, url)}"
        ) from None
    except PoolTimeout as error:
        raise StorageUnavailable(
            f"the database cannot {doing} now: no connection to {masked(url)} "
            f"({_first_line(error, url)})"
        ) from None
    except psycopg.Error as error:
        raise StorageUnavailable(
            f"the database cannot {doing} now: {_first_line(error, url)}"
        ) from None


def _first_line(error: BaseException, url: str) -> str:
    lines = [line.strip() for line in scrubbed(str(error), url).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
