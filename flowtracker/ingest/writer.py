"""The writer process: one process takes the callbacks of every HTTP worker.

`flowtracker serve` starts it before uvicorn and stops it after (`WriterProcess`). Each
worker's `RemoteIntake` sends a callback's body over a Unix socket (`wire`);
the writer parses it, keeps it in quarantine or commits it with its group committer
(`intake.LocalIntake`), and answers with the receipt or the error. The workers are then
left with HTTP alone, and the parsing, folding and SQLite work runs on another core
instead of taking turns with them for one interpreter lock (docs/performance.md has the
figures). Workers also share one committer, so their callbacks share transactions.

The writer stops when its standard input closes: when `serve` closes it after uvicorn has
answered its last request, or when `serve` dies. It ignores SIGINT and SIGTERM, which a
terminal or a service manager sends to the whole process group at once, so that it
outlives the workers' graceful shutdown and they can still store what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import glob
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

from flowtracker.errors import FlowtrackerError, StorageUnavailable
from flowtracker.ingest.intake import LocalIntake
from flowtracker.ingest.interface import CallbackRequest
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.wire import CHANGES_NOTICE, GONE, Framed, receipt_fields
from flowtracker.settings import Settings
from flowtracker.store.opening import open_store

log = logging.getLogger("flowtracker")

READY = b"ready\n"  # the writer's first line on stdout, once its socket listens
START_SECONDS = 60  # for that line
STOP_SECONDS = 60  # for the writer to commit what it holds and exit, else it is killed
_SOCKET_PATH_MAX = 100  # bytes: sun_path holds 104 to 108, by system
_SHORT_TMP = "/tmp"  # noqa: S108 (a mkdtemp directory there: private, mode 0700)
_OWNER = "serve.lock"  # in the socket's directory, locked while its `serve` lives


class _Worker(Framed):
    """One HTTP worker's connection: each request is answered when its work is done."""

    gather = True

    def __init__(
        self, intake: LocalIntake, pending: set[asyncio.Future[Any]], workers: set[_Worker]
    ) -> None:
        super().__init__()
        self.intake, self.pending, self.workers = intake, pending, workers

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.workers.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.workers.discard(self)

    def received(self, message: Any) -> None:
        request_id, fields = message
        # No task per callback: the answer goes out from the receipt's future.
        answer: asyncio.Future[Any]
        try:
            if fields is None:
                answer = asyncio.ensure_future(self.intake.ping())
            else:
                answer = self.intake.take_soon(CallbackRequest(*fields))
        except StorageUnavailable as error:  # stopping: the worker answers 503
            self.send((request_id, False, error))
            return
        except Exception:  # a bug met by one request: it alone is answered 500
            log.exception("a callback could not be taken")
            self.send((request_id, False, None))
            return
        answer.add_done_callback(lambda done: self._answer(request_id, done))
        self.pending.add(answer)
        answer.add_done_callback(self.pending.discard)

    def _answer(self, request_id: int, done: asyncio.Future[Any]) -> None:
        error = None if done.cancelled() else done.exception()
        if done.cancelled():
            answer: tuple[Any, ...] = (request_id, False, StorageUnavailable(GONE))
        elif isinstance(error, FlowtrackerError):
            answer = (request_id, False, error)
        elif error is not None:
            log.error("a callback could not be stored", exc_info=error)
            answer = (request_id, False, None)
        else:
            receipt = done.result()
            answer = (request_id, True, None if receipt is None else receipt_fields(receipt))
        try:
            self.send(answer)
        except Exception:  # an answer that cannot be pickled: a bare failure instead
            log.exception("an answer could not be sent")
            self.send((request_id, False, None))


def run_writer(settings: Settings, socket_path: str) -> None:
    """The writer process's life: listen on `socket_path` until stdin closes."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings, socket_path))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where uvicorn uses it too (`uvicorn[standard]`): its sockets cost less."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(settings: Settings, socket_path: str) -> None:
    loop = asyncio.get_running_loop()
    done = False
    store = open_store(
        settings.db_path, durability=settings.durability, busy_timeout_ms=settings.busy_timeout_ms
    )
    workers: set[_Worker] = set()

    def tell_workers(last_change: int) -> None:  # on this loop: the commits are inline
        for worker in list(workers):
            worker.send((CHANGES_NOTICE, True, last_change))

    try:
        intake = LocalIntake(
            store,
            Pipeline(store, on_changes=tell_workers),
            max_batch=settings.batch_max,
            max_wait=settings.batch_wait_ms / 1000,
            # Committed on this loop, not a thread: the writer has nothing else to do, and
            # what arrives meanwhile waits in the socket for the next transaction.
            inline=True,
        )
        intake.start()
        pending: set[asyncio.Future[Any]] = set()
        server = await loop.create_unix_server(
            lambda: _Worker(intake, pending, workers), socket_path
        )
        closed = loop.create_future()
        await loop.connect_read_pipe(lambda: _Closing(closed), sys.stdin)
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        await closed
        server.close()
        while pending:  # what the workers handed over is committed and answered
            await asyncio.gather(*pending, return_exceptions=True)
        await intake.stop()
        done = True
    finally:
        store.close()
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
    # Stdin closed: `serve` is done with the directory, and may be gone already (uvicorn
    # ends it with its own SIGTERM, before `WriterProcess.stop` could remove it). A writer
    # that fails leaves it: `serve` starts the next one there.
    if done:
        shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)


class _Closing(asyncio.Protocol):
    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


# The serving process's side ---------------------------------------------------------------


class WriterProcess:
    """Starts the writer, starts it again if it dies, and stops it when told."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        self.environment = dict(environment)
        _remove_stale_directories({tempfile.gettempdir(), _SHORT_TMP})
        self.directory = tempfile.mkdtemp(prefix="flowtracker-")  # mode 0700
        self.socket_path = os.path.join(self.directory, "writer.sock")
        if len(self.socket_path.encode()) > _SOCKET_PATH_MAX:  # a long TMPDIR
            os.rmdir(self.directory)
            self.directory = tempfile.mkdtemp(prefix="flowtracker-", dir=_SHORT_TMP)
            self.socket_path = os.path.join(self.directory, "writer.sock")
        # Held while this process lives: a directory whose lock is free is a dead serve's.
        self._owner: IO[bytes] = open(os.path.join(self.directory, _OWNER), "wb")  # noqa: SIM115
        fcntl.flock(self._owner, fcntl.LOCK_EX)
        self.process: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never cross
        self._watcher = threading.Thread(target=self._watch, name="writer-watch", daemon=True)

    def start(self) -> None:
        """Returns once the writer listens; raises `RuntimeError` if it cannot start."""
        self._spawn()
        self._watcher.start()

    def stop(self) -> int | None:
        """Close the writer's stdin, wait for it to commit and exit; its exit status."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.error("the writer process did not stop within %d s: killed", STOP_SECONDS)
                process.kill()
                process.wait()
        if self._watcher.is_alive():
            self._watcher.join()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._owner.close()
        return None if process is None else process.returncode

    def _spawn(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        os.makedirs(self.directory, 0o700, exist_ok=True)
        command = [sys.executable, "-m", "flowtracker", "writer", "--socket", self.socket_path]
        process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.environment
        )
        self.process, self._spawned_at = process, time.monotonic()
        assert process.stdout is not None
        ready = _read_line(process, START_SECONDS)
        if ready != READY:
            process.kill()  # first: its stdout can be closed only once nothing reads it
            process.wait()
            process.stdout.close()
            raise RuntimeError(
                f"the writer process did not start (exit status {process.returncode})"
            )
        process.stdout.close()

    def _watch(self) -> None:
        delay = 0.1
        while True:
            assert self.process is not None
            status = self.process.wait()
            if self._stopping.is_set():
                return
            assert self.process.stdin is not None
            self.process.stdin.close()
            log.error("the writer process exited with status %s; starting it again", status)
            if time.monotonic() - self._spawned_at > 60:
                delay = 0.1  # it had run well: no reason to wait long
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, 5.0)
            with self._lock:
                if self._stopping.is_set():
                    return
                try:
                    self._spawn()
                except (OSError, RuntimeError) as error:  # waited on again at once: retried
                    log.error("%s", error)


def _remove_stale_directories(bases: Iterable[str]) -> None:
    """Remove the socket directories that a `serve` killed with SIGKILL left behind: this
    user's `flowtracker-*` directories whose lock no process holds."""
    for base in bases:
        for directory in glob.glob(os.path.join(base, "flowtracker-*")):
            try:
                made = os.stat(directory)
                # A directory just made may not hold its lock file yet.
                if made.st_uid != os.getuid() or time.time() - made.st_mtime < 10:
                    continue
                with open(os.path.join(directory, _OWNER), "rb") as owner:
                    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held (alive), not ours, or not made by this version
                continue
            shutil.rmtree(directory, ignore_errors=True)


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The writer's first line, or b"" if it exits or stays silent for `timeout` seconds."""
    assert process.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return line[0] if line else b""
