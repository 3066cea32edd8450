"""Serving the app under uvicorn as `flowtracker serve` does: the writer process beside the
workers, uvicorn's options, and the logging configuration of every process."""

from __future__ import annotations

import copy
import fcntl
import os
import socket
from dataclasses import dataclass
from typing import IO, Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from flowtracker.ingest.wire import WRITER_SOCKET
from flowtracker.ingest.writer import WriterProcess
from flowtracker.settings import Settings
from flowtracker.web.app import SUPERVISOR
from flowtracker.web.guard import PROTOCOL

GRACEFUL_SECONDS = 30  # for requests in flight at SIGTERM


@dataclass(frozen=True, kw_only=True)
class ServeOptions:
    """How `serve` runs: where it listens, how many workers, what it logs."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    limit_concurrency: int = 1000
    access_log: bool = True
    callback_log: bool = False  # a line per callback taken; refusals are logged anyway
    writer_process: bool = True  # else each worker commits on a thread of its own


def check_listen(host: str, port: int) -> None:
    """Raise `OSError` (its message naming the address) unless this process could listen
    on `host:port` now: before `serve` opens, creates or migrates a database (SPEC 14).
    The socket is made as uvicorn makes its own (IPv6 only for a host with a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family=family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = error.strerror or str(error)
            raise OSError(f"cannot listen on {host}:{port}: {reason}") from None


def claim(db_path: str) -> tuple[IO[str] | None, bool]:
    """Mark a SQLite file as served by this process (a shared lock on `FILE.serving`, held
    while the returned file is open); whether another process serves it already."""
    if "://" in db_path:  # PostgreSQL: several receivers on one database is the design
        return None, False
    mark = open(db_path + ".serving", "a")  # noqa: SIM115 (held for the life of `serve`)
    try:
        fcntl.flock(mark, fcntl.LOCK_EX | fcntl.LOCK_NB)
        shared = False
    except BlockingIOError:
        shared = True
    fcntl.flock(mark, fcntl.LOCK_SH)
    return mark, shared


def run(settings: Settings, options: ServeOptions) -> None:
    """Serve until SIGTERM or SIGINT; raises `RuntimeError` if the writer cannot start.

    The settings reach uvicorn's workers as FLOWTRACKER_* variables (`Settings.to_env`),
    and the writer's socket as `WRITER_SOCKET`.
    """
    os.environ.update(settings.to_env())
    os.environ.pop(WRITER_SOCKET, None)
    os.environ.pop(SUPERVISOR, None)
    if options.workers > 1:  # uvicorn's main process: its workers stop if it dies
        os.environ[SUPERVISOR] = str(os.getpid())
    writer = WriterProcess(os.environ) if options.writer_process else None
    if writer is not None:
        try:
            writer.start()
        except (OSError, RuntimeError) as error:
            writer.stop()
            raise RuntimeError(str(error)) from None
        os.environ[WRITER_SOCKET] = writer.socket_path
    try:
        uvicorn.run(
            "flowtracker.web:app_from_environment",
            factory=True,
            host=options.host,
            port=options.port,
            workers=options.workers,
            access_log=options.access_log,
            log_config=log_config(settings.log_format, callback_log=options.callback_log),
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            http=PROTOCOL,  # uvicorn's httptools protocol with limits on request heads
            limit_concurrency=options.limit_concurrency,
        )
    finally:
        # After uvicorn has answered its last request. (On SIGTERM uvicorn ends this
        # process itself once it is done; the writer then sees its stdin close.)
        if writer is not None:
            writer.stop()


def log_config(log_format: str = "plain", *, callback_log: bool = False) -> dict[str, Any]:
    """uvicorn's logging, with flowtracker's own loggers (`flowtracker.callbacks` among
    them) printed the same way; with "json", every line is one JSON object. The line
    per callback taken costs the worker about 14 µs of CPU, as much as a tenth of the
    callback (docs/performance.md): it is written only with `callback_log`."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["flowtracker"] = {"()": "flowtracker.logs.PlainFormatter"}
    # Its own handler on stderr: a line per callback, without uvicorn's per-record copy.
    config["handlers"]["flowtracker"] = {
        **config["handlers"]["default"],
        "formatter": "flowtracker",
    }
    config["loggers"]["flowtracker"] = {
        "handlers": ["flowtracker"],
        "level": "INFO",
        "propagate": False,
    }
    if not callback_log:  # the refusals are warnings: they stay
        config["loggers"]["flowtracker.callbacks"] = {"level": "WARNING"}
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "flowtracker.logs.JSONFormatter"}
    return config
