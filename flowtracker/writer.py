"""The writer process: one process takes the callbacks of every HTTP worker.

`flowtracker serve` starts it before uvicorn and stops it after (`WriterProcess`). Each
worker's `RemoteIntake` sends a callback's body over a Unix socket; the writer parses it,
keeps it in quarantine or commits it with its group committer (`intake.LocalIntake`), and
answers with the receipt or the error. The workers are then left with HTTP alone, and the
parsing, folding and SQLite work runs on another core instead of taking turns with them
for one interpreter lock (docs/performance.md has the figures). Workers also share one
committer, so their callbacks share transactions.

Messages are pickles behind a 4-byte length. Both ends are this package, and the socket
lives in a directory only its user can enter (mode 0700).

The writer stops when its standard input closes: when `serve` closes it after uvicorn has
answered its last request, or when `serve` dies. It ignores SIGINT and SIGTERM, which a
terminal or a service manager sends to the whole process group at once, so that it
outlives the workers' graceful shutdown and they can still store what they hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pickle
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

from .errors import FlowtrackerError, StorageUnavailable
from .intake import Delivery, LocalIntake
from .pipeline import Pipeline, Receipt
from .settings import Settings
from .sqlite_store import SQLiteStore

log = logging.getLogger("flowtracker")

_HEADER = struct.Struct("!I")
WRITER_SOCKET = "FLOWTRACKER_WRITER_SOCKET"  # how `serve` tells its workers where it is
READY = b"ready\n"  # the writer's first line on stdout, once its socket listens
_SOCKET_PATH_MAX = 100  # bytes: sun_path holds 104 to 108, by system
_SHORT_TMP = "/tmp"  # noqa: S108 (a mkdtemp directory there: private, mode 0700)
_GONE = "the writer process went away; deliver it again"
ANSWER_SECONDS = 60.0  # a request unanswered for one to two times this is answered 503
_SLOW = f"the writer process did not answer within {ANSWER_SECONDS:g} s; deliver it again"


class _Framed(asyncio.Protocol):
    """Length-prefixed pickles both ways.

    The writer's answers from one commit go out in one write. A worker's requests go out
    at once, each: gathered until the end of the loop pass, they reached the writer only
    after the worker had handled every ready request, and the two processes took turns
    instead of working side by side.
    """

    gather = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + size
            if len(buffer) < end:
                break
            # Only processes of the socket's own user can connect (module docstring).
            self.received(pickle.loads(buffer[offset + _HEADER.size : end]))  # noqa: S301
            offset = end
        del buffer[:offset]

    def received(self, message: Any) -> None:
        raise NotImplementedError

    def send(self, message: Any) -> None:
        try:
            payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an answer that cannot cross: a bare failure in its place
            log.exception("a message to the other process could not be pickled")
            payload = pickle.dumps((message[0], False, None))
        if not self.gather:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(_HEADER.pack(len(payload)) + payload)
            return
        self._out.append(_HEADER.pack(len(payload)) + payload)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()


# The writer's side ------------------------------------------------------------------------


class _Worker(_Framed):
    """One HTTP worker's connection: each request is answered when its work is done."""

    gather = True

    def __init__(self, intake: LocalIntake, pending: set[asyncio.Future[Any]]) -> None:
        super().__init__()
        self.intake, self.pending = intake, pending

    def received(self, message: Any) -> None:
        request_id, fields = message
        # No task per callback: the answer goes out from the receipt's future.
        answer: asyncio.Future[Any]
        try:
            if fields is None:
                answer = asyncio.ensure_future(self.intake.ping())
            else:
                answer = self.intake.take_soon(Delivery(*fields))
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
            self.send((request_id, False, StorageUnavailable(_GONE)))
        elif isinstance(error, FlowtrackerError):
            self.send((request_id, False, error))
        elif error is not None:
            log.error("a callback could not be stored", exc_info=error)
            self.send((request_id, False, None))
        else:
            r = done.result()
            receipt = None if r is None else (
                r.outcome, r.out_of_order, r.reason, r.kind, r.subject_id, r.state
            )  # fmt: skip
            self.send((request_id, True, receipt))


def run_writer(settings: Settings, socket_path: str) -> None:
    """The writer process's life: listen on `socket_path` until stdin closes."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    asyncio.run(_serve(settings, socket_path))


async def _serve(settings: Settings, socket_path: str) -> None:
    loop = asyncio.get_running_loop()
    store = SQLiteStore(
        settings.db_path, durability=settings.durability, busy_timeout_ms=settings.busy_timeout_ms
    )
    try:
        intake = LocalIntake(
            store,
            Pipeline(store),
            max_batch=settings.batch_max,
            max_wait=settings.batch_wait_ms / 1000,
            # Committed on this loop, not a thread: the writer has nothing else to do, and
            # what arrives meanwhile waits in the socket for the next transaction.
            inline=True,
        )
        intake.start()
        pending: set[asyncio.Future[Any]] = set()
        server = await loop.create_unix_server(lambda: _Worker(intake, pending), socket_path)
        closed = loop.create_future()
        await loop.connect_read_pipe(lambda: _Closing(closed), sys.stdin)
        sys.stdout.buffer.write(READY)
        sys.stdout.buffer.flush()
        await closed
        server.close()
        while pending:  # what the workers handed over is committed and answered
            await asyncio.gather(*pending, return_exceptions=True)
        await intake.stop()
    finally:
        store.close()
        # Its parent may be gone already (uvicorn ends `serve` by its own SIGTERM).
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
            os.rmdir(os.path.dirname(socket_path))


class _Closing(asyncio.Protocol):
    def __init__(self, closed: asyncio.Future[None]) -> None:
        self.closed = closed

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


# The HTTP worker's side -------------------------------------------------------------------


class _Writer(_Framed):
    """A worker's connection to the writer: requests by number, answers as they come."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.lost = False
        self._next = 0
        self._overdue = 0  # requests numbered up to this were asked a sweep ago

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().call_later(ANSWER_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Fail what has waited a whole sweep, at least ANSWER_SECONDS: a writer that
        hangs cannot hold a request for ever. A late answer is dropped (dedup makes the
        sender's retry safe)."""
        for request_id in [n for n in self.waiting if n <= self._overdue]:
            future = self.waiting.pop(request_id)
            if not future.done():
                future.set_exception(StorageUnavailable(_SLOW))
        self._overdue = self._next
        if not self.lost:
            asyncio.get_running_loop().call_later(ANSWER_SECONDS, self._sweep)

    def ask(self, delivery: Delivery | None) -> asyncio.Future[Any]:
        self._next += 1
        future = self.waiting[self._next] = asyncio.get_running_loop().create_future()
        # Plain tuples on the wire: pickling a slotted dataclass costs several times more.
        fields = None if delivery is None else (
            delivery.kind, delivery.body, delivery.content_type, delivery.source,
            delivery.cut_short,
        )  # fmt: skip
        self.send((self._next, fields))
        return future

    def received(self, message: Any) -> None:
        request_id, ok, value = message
        future = self.waiting.pop(request_id, None)
        if future is None or future.done():  # given up on (the sweep) or cancelled
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value or RuntimeError("the writer could not store this callback"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(StorageUnavailable(_GONE))
        self.waiting.clear()


class RemoteIntake:
    """An `Intake` that hands each callback to the writer process at `socket_path`.

    If the writer goes away, what was in flight is answered 503 (the sender delivers it
    again, and dedup makes that safe); the next callback connects anew.
    """

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._writer: _Writer | None = None
        self._connecting: asyncio.Lock | None = None

    async def take(self, delivery: Delivery) -> Receipt:
        return Receipt(*await self._ask(delivery))

    async def ping(self) -> None:
        await self._ask(None)

    async def stop(self) -> None:
        if self._writer is not None and self._writer.transport is not None:
            self._writer.transport.close()

    async def _ask(self, delivery: Delivery | None) -> Any:
        writer = self._writer
        if writer is None or writer.lost:
            writer = await self._connect()
        return await writer.ask(delivery)

    async def _connect(self) -> _Writer:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is None or self._writer.lost:
                loop = asyncio.get_running_loop()
                try:
                    _, self._writer = await loop.create_unix_connection(_Writer, self.socket_path)
                except OSError as error:
                    raise StorageUnavailable(
                        f"the writer process does not answer ({error.strerror or error})"
                    ) from None
            return self._writer


# The serving process's side ---------------------------------------------------------------


class WriterProcess:
    """Starts the writer, starts it again if it dies, and stops it when told."""

    def __init__(self, environment: Mapping[str, str], *, start_timeout: float = 60) -> None:
        self.environment = dict(environment)
        self.start_timeout = start_timeout
        _remove_stale_directories()
        self.directory = tempfile.mkdtemp(prefix="flowtracker-")  # mode 0700
        self.socket_path = os.path.join(self.directory, "writer.sock")
        if len(self.socket_path.encode()) > _SOCKET_PATH_MAX:  # a long TMPDIR
            os.rmdir(self.directory)
            self.directory = tempfile.mkdtemp(prefix="flowtracker-", dir=_SHORT_TMP)
            self.socket_path = os.path.join(self.directory, "writer.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self._spawned_at = 0.0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never cross
        self._watcher = threading.Thread(target=self._watch, name="writer-watch", daemon=True)

    def start(self) -> None:
        """Returns once the writer listens; raises `RuntimeError` if it cannot start."""
        self._spawn()
        self._watcher.start()

    def stop(self, timeout: float = 60) -> int | None:
        """Close the writer's stdin, wait for it to commit and exit; its exit status."""
        self._stopping.set()
        with self._lock:
            process = self.process
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.error("the writer process did not stop within %g s: killed", timeout)
                process.kill()
                process.wait()
        if self._watcher.is_alive():
            self._watcher.join()
        shutil.rmtree(self.directory, ignore_errors=True)
        return None if process is None else process.returncode

    def _spawn(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        command = [sys.executable, "-m", "flowtracker", "writer", "--socket", self.socket_path]
        process = subprocess.Popen(  # noqa: S603 (this interpreter, fixed arguments)
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.environment
        )
        self.process, self._spawned_at = process, time.monotonic()
        assert process.stdout is not None
        ready = _read_line(process, self.start_timeout)
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


def _remove_stale_directories(older_than: float = 60) -> None:
    """Remove the socket directories of writers killed with SIGKILL (no listener left).

    Only this user's, and only those older than a minute: a writer that is starting may
    have bound its socket without listening yet.
    """
    now = time.time()
    for base in {tempfile.gettempdir(), _SHORT_TMP}:
        for directory in glob.glob(os.path.join(base, "flowtracker-*")):
            path = os.path.join(directory, "writer.sock")
            try:
                info = os.stat(directory)
                if info.st_uid != os.getuid() or now - info.st_mtime < older_than:
                    continue
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(path)
            except ConnectionRefusedError:
                shutil.rmtree(directory, ignore_errors=True)
            except OSError:
                continue


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    """The writer's first line, or b"" if it exits or stays silent for `timeout` seconds."""
    assert process.stdout is not None
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return line[0] if line else b""
