"""Which backend a `--db` names: a `postgresql://` URL, or else a SQLite file."""

from __future__ import annotations

from typing import Literal

from flowtracker.settings import Durability
from flowtracker.store.protocol import Store

Access = Literal["read", "write", "create"]


def is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


def open_store(
    target: str,
    *,
    access: Access = "create",
    upgrade: bool = True,
    durability: Durability = "full",
    busy_timeout_ms: int = 5_000,
) -> Store:
    """The store at `target`, opened for `access`: `"read"` creates, migrates and writes
    nothing; `"write"` migrates (when `upgrade`); `"create"` also makes a new database.
    Raises `UnusableDatabase` (one line, naming it and the cause) when it cannot be used."""
    if is_postgres(target):
        from flowtracker.store.postgres.backend import PostgresStore

        return PostgresStore(
            target, access=access, upgrade=upgrade, durability=durability,
            busy_timeout_ms=busy_timeout_ms,
        )  # fmt: skip
    from flowtracker.store.sqlite.backend import SQLiteStore

    return SQLiteStore(
        target, access=access, upgrade=upgrade, durability=durability,
        busy_timeout_ms=busy_timeout_ms,
    )  # fmt: skip
