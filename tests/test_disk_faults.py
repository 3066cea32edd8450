"""A real full disk under a running server (a small tmpfs mounted for the test, so this
needs root, as CI has): 503 storage_unavailable with Retry-After, /healthz says so, and the
service recovers by itself when there is room again.

A read-only file system cannot be simulated the same way: Linux refuses to remount a file
system read-only while the database is open for writing. test_faults injects SQLite's
read-only error instead."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import flow
from tests.server import Server, serving

JSON = {"content-type": "application/json"}
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root"),
]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def grow(mount: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def post(http: httpx.Client, n: int) -> httpx.Response:
    body = json.loads(flow("custom", n % 3600, f"d15c0000-0000-4000-8000-{n:012d}"))
    body["callback_name"] = "x" * 20_000
    return http.post("/callbacks/flow", content=json.dumps(body).encode(), headers=JSON)


def stored(server: Server, http: httpx.Client) -> int:
    counts: dict[str, int] = http.get("/status").json()["callbacks"]
    return counts["applied"]


def test_a_full_disk_is_503_and_recovers_when_there_is_room(small_disk: Path) -> None:
    with serving(small_disk / "full.db") as server, httpx.Client(base_url=server.url) as http:
        answers = [post(http, n) for n in range(400)]  # 8 MB of callbacks into 3 MB
        statuses = [response.status_code for response in answers]
        assert statuses[0] == 200 and 503 in statuses
        refused = answers[statuses.index(503)]
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["error"]["code"] == "storage_unavailable"
        assert http.get("/healthz").status_code == 503
        acknowledged = statuses.count(200)
        assert stored(server, http) == acknowledged  # nothing half-written, nothing lost
        grow(small_disk, "64m")
        assert http.get("/healthz").json() == {"status": "ok"}
        assert post(http, 10_000).status_code == 200
        assert stored(server, http) == acknowledged + 1
