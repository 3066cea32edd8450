"""Starting `flowtracker serve` as a user would: a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(
    db: Path | str, *args: str, env: dict[str, str] | None = None, logs: Path | None = None
) -> Iterator[Server]:
    """Run the server until the block ends, then stop it with SIGTERM as an operator would.
    `db` is a SQLite file or a PostgreSQL URL (then its log goes to `logs`)."""
    port = free_port()
    log = (logs / f"serve.{port}.log") if logs else Path(db).with_suffix(f".{port}.log")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowtracker",
                "serve",
                "--db",
                str(db),
                "--port",
                str(port),
                *args,
            ],
            env={**environment, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        stop(server)


def stop(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


def _wait_until_healthy(server: Server, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{server.output()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not become healthy:\n{server.output()}")
