"""Fixtures: a database, a pipeline with a controllable clock, and callback bodies."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.opening import open_store
from flowtracker.store.protocol import Store
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.postgres_server import PostgresServer, binaries

DATA = Path(__file__).resolve().parent.parent / "data"
T0 = 1_800_000_000_000_000_000  # 2027-01-15T08:00:00Z in ns: "now" for the tests' clock
INSTANCE = "1e3a60ea-80b8-44bb-9e59-c64d8697b959"
DOCUMENT = "9221714692413150898"


class Clock:
    """A clock the test moves by hand; starts at T0."""

    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns

    def advance(self, seconds: float) -> None:
        self.ns += int(seconds * 1_000_000_000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "flowtracker.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole session (`tests.postgres_server`)."""
    found = binaries()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but PostgreSQL is not installed: scripts/test installs it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI runs these")
    server = PostgresServer(found)
    yield server
    server.close()


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database on each backend, as `--db` names it: a file or a URL."""
    if request.param == "sqlite":
        return str(tmp_path / "flowtracker.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.database(f"test_{os.getpid()}_{next(_databases)}")


@pytest.fixture
def any_store(target: str) -> Iterator[Store]:
    """A store on each backend, through one fixture."""
    store = open_store(target)
    yield store
    store.close()


@pytest.fixture
def pipeline(store: SQLiteStore, clock: Clock) -> Pipeline:
    return Pipeline(store, clock)


def at(second: int, fraction: str = "000000000") -> str:
    """An event_created on 2021-03-10 some seconds after 16:00:00, nine fractional digits."""
    minutes, seconds = divmod(second, 60)
    return f"2021-03-10T16:{minutes:02d}:{seconds:02d}.{fraction}Z"


def flow(type_: str, second: int = 0, instance: str = INSTANCE, **extra: Any) -> bytes:
    """A Flow callback body with the fields its type requires."""
    required: dict[str, dict[str, Any]] = {
        "flow_rejected": {"user_name": "user1"},
        "authentication_attempted": {
            "user_name": "user1",
            "result": "success",
            "provider": "sms_otp",
        },
        "authentication_max_failures_exceeded": {"user_name": "user1"},
        "custom": {"callback_name": "my-callback"},
    }
    body = {
        "type": type_,
        "version": 1,
        "event_created": at(second),
        "flow_instance_id": instance,
        **required.get(type_, {}),
        **extra,
    }
    return json.dumps(body).encode()


def document_json(status: str, version: int, minute: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": DOCUMENT,
        "title": "Lease agreement",
        "status": status,
        "object_version": version,
        "mtime": f"2021-04-05T10:{minute:02d}:00Z",
        "parties": [],
        **extra,
    }


def document_form(
    status: str,
    version: int,
    minute: int = 0,
    *,
    sealed: bool = False,
    v1: bool = False,
    **extra: Any,
) -> bytes:
    names = (
        ("documentid", "signedAndSealed", "json")
        if v1
        else ("document_id", "document_signed_and_sealed", "document_json")
    )
    values = (
        DOCUMENT,
        "true" if sealed else "false",
        json.dumps(document_json(status, version, minute, **extra)),
    )
    return urlencode(dict(zip(names, values, strict=True))).encode()


def sample(name: str) -> bytes:
    return (DATA / name).read_bytes()
