"""The writer process: workers hand it callback bodies over a Unix socket, it parses,
quarantines or commits them, and answers; `serve` starts it, restarts it, and stops it."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pickle
import shutil
import signal
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from flowtracker import errors
from flowtracker.errors import InvalidEvent, PayloadTooLarge, StorageUnavailable
from flowtracker.ingest import writer as writer_module
from flowtracker.ingest.interface import CallbackRequest, Receipt
from flowtracker.ingest.remote_intake import RemoteIntake
from flowtracker.ingest.wire import receipt_fields, request_fields
from flowtracker.ingest.writer import WriterProcess, _remove_stale_directories
from flowtracker.settings import Settings
from tests.conftest import INSTANCE, flow
from tests.server import serving

JSON = "application/json"


def delivery(body: bytes, cut_short: errors.MalformedCallback | None = None) -> CallbackRequest:
    return CallbackRequest("flow", body, JSON, "POST /callbacks/flow", cut_short)


def test_every_error_crosses_the_socket_as_it_was() -> None:
    made = [
        errors.InvalidJSON("not JSON", {"line": 1}),
        errors.PayloadTooLarge("too big", {"limit": 10}),
        errors.InvalidEvent({"type": "required", "version": "must be a whole number"}),
        errors.InvalidQuery({"limit": "too big"}),
        errors.StorageUnavailable("disk full"),
    ]
    for error in made:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (copy.to_dict(), str(copy), copy.__dict__) == (
            error.to_dict(),
            str(error),
            error.__dict__,
        )


@pytest.fixture
def short_tmp() -> Iterator[str]:
    """A TMPDIR for a `serve` that the test kills: its socket directory is left behind."""
    directory = tempfile.mkdtemp(prefix="ft-", dir="/tmp")  # short: a socket path fits
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def writer(db_path: Path) -> Iterator[WriterProcess]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    process = WriterProcess({**environment, "FLOWTRACKER_DB": str(db_path)})
    process.start()
    yield process
    process.stop()


def rows(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql).fetchall()


def test_callbacks_are_committed_before_their_receipts(
    writer: WriterProcess, db_path: Path
) -> None:
    async def scenario() -> list[str]:
        intake = RemoteIntake(writer.socket_path)
        bodies = [flow("custom", n) for n in range(20)]
        receipts = await asyncio.gather(*(intake.take(delivery(b)) for b in bodies))
        again = await intake.take(delivery(bodies[3]))
        for n in range(20, 25):  # each one already in the file when its receipt comes
            await intake.take(delivery(flow("custom", n)))
            stored = rows(db_path, "SELECT COUNT(*) FROM flow_events")
            assert stored == [(n + 1,)]
        await intake.ping()
        await intake.stop()
        return [r.outcome for r in [*receipts, again]]

    assert asyncio.run(scenario()) == ["applied"] * 20 + ["duplicate"]
    assert rows(db_path, "SELECT COUNT(*), SUM(deliveries) FROM flow_events") == [(25, 26)]
    assert rows(db_path, "SELECT id, state FROM instances") == [(INSTANCE, "in_progress")]


def test_malformed_callbacks_are_quarantined_and_answered_with_their_error(
    writer: WriterProcess, db_path: Path
) -> None:
    async def scenario() -> list[BaseException]:
        intake = RemoteIntake(writer.socket_path)
        too_big = PayloadTooLarge("the body is over the limit of 5 bytes", {"limit": 5})
        answers = await asyncio.gather(
            intake.take(delivery(b'{"type": "custom"}')),
            intake.take(delivery(b"12345", too_big)),
            return_exceptions=True,
        )
        await intake.stop()
        return [answer for answer in answers if isinstance(answer, BaseException)]

    invalid, too_big = asyncio.run(scenario())
    assert isinstance(invalid, InvalidEvent)
    required = {"version": "required", "flow_instance_id": "required"}
    assert invalid.problems == {**required, "event_created": "required"}
    assert isinstance(too_big, PayloadTooLarge) and too_big.details == {"limit": 5}
    kept = rows(db_path, "SELECT body, source FROM quarantine ORDER BY body")
    assert kept == [
        (b"12345", "POST /callbacks/flow"),
        (b'{"type": "custom"}', "POST /callbacks/flow"),
    ]


def test_a_writer_that_dies_is_started_again(writer: WriterProcess, db_path: Path) -> None:
    async def scenario() -> list[str]:
        intake = RemoteIntake(writer.socket_path)
        first = await intake.take(delivery(flow("custom", 1)))
        assert writer.process is not None
        dead = writer.process
        dead.kill()
        outcomes = [first.outcome]
        deadline = time.monotonic() + 30
        while len(outcomes) < 2:  # 503 until the new writer listens, then taken
            try:
                taken = await asyncio.wait_for(intake.take(delivery(flow("custom", 2))), 30)
                outcomes.append(taken.outcome)
            except StorageUnavailable:
                assert time.monotonic() < deadline, "the writer was not started again"
                await asyncio.sleep(0.05)
        assert writer.process is not dead
        await intake.stop()
        return outcomes

    assert asyncio.run(scenario()) == ["applied", "applied"]
    assert rows(db_path, "SELECT COUNT(*) FROM flow_events") == [(2,)]


def test_a_request_that_trips_a_bug_fails_alone(writer: WriterProcess) -> None:
    async def scenario() -> list[str]:
        intake = RemoteIntake(writer.socket_path)
        bogus = CallbackRequest("bogus", b"{}", JSON, "POST /callbacks/bogus")  # type: ignore[arg-type]
        answers = await asyncio.gather(
            intake.take(delivery(flow("custom", 1))),
            intake.take(bogus),
            intake.take(delivery(flow("custom", 2))),
            return_exceptions=True,
        )
        connection = intake._writer
        after = await intake.take(delivery(flow("custom", 3)))
        assert intake._writer is connection  # the same connection goes on
        await intake.stop()
        return [type(a).__name__ if isinstance(a, BaseException) else a.outcome
                for a in [*answers, after]]  # fmt: skip

    assert asyncio.run(scenario()) == ["applied", "RuntimeError", "applied", "applied"]


def test_the_writer_outlives_a_sigterm_to_the_process_group(writer: WriterProcess) -> None:
    assert writer.process is not None
    writer.process.send_signal(signal.SIGTERM)
    writer.process.send_signal(signal.SIGINT)

    async def scenario() -> str:
        intake = RemoteIntake(writer.socket_path)
        taken = await asyncio.wait_for(intake.take(delivery(flow("custom", 1))), 30)
        await intake.stop()
        return taken.outcome

    assert asyncio.run(scenario()) == "applied"
    assert writer.process.poll() is None


def test_what_is_in_flight_at_stop_is_committed_and_answered(
    writer: WriterProcess, db_path: Path
) -> None:
    async def scenario() -> list[object]:
        intake = RemoteIntake(writer.socket_path)
        await intake.ping()  # connected
        loop = asyncio.get_running_loop()
        bodies = [flow("custom", n, str(uuid.UUID(int=n))) for n in range(300)]
        bodies[::30] = [b'{"n": %d}' % n for n in range(10)]  # quarantined: a write each
        takes = [asyncio.ensure_future(intake.take(delivery(body))) for body in bodies]
        await asyncio.sleep(0)  # every request written to the socket
        stopping = loop.run_in_executor(None, writer.stop)
        answers = await asyncio.gather(*takes, return_exceptions=True)
        assert await stopping == 0
        return [type(a).__name__ if isinstance(a, BaseException) else a.outcome for a in answers]

    answers = asyncio.run(scenario())
    assert sorted(set(answers)) == ["InvalidEvent", "applied"]
    assert answers.count("applied") == 290
    assert rows(db_path, "SELECT COUNT(*) FROM flow_events") == [(290,)]
    assert rows(db_path, "SELECT COUNT(*) FROM quarantine") == [(10,)]


def test_no_writer_is_a_503_not_a_hang(tmp_path: Path) -> None:
    async def scenario() -> None:
        await RemoteIntake(str(tmp_path / "nobody.sock")).take(delivery(flow("custom", 1)))

    with pytest.raises(StorageUnavailable, match="the writer process does not answer"):
        asyncio.run(scenario())


def test_stop_lets_the_writer_finish_and_cleans_up(writer: WriterProcess) -> None:
    assert os.path.exists(writer.socket_path)
    assert writer.stop() == 0
    assert not os.path.exists(writer.directory)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; its parent is gone and init reaps it


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(fields["Pid"]))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_writer_and_workers_go_when_serve_is_killed(
    tmp_path: Path, short_tmp: str, workers: str
) -> None:
    killed = serving(tmp_path / "killed.db", "--workers", workers, env={"TMPDIR": short_tmp})
    with killed as server:
        response = httpx.post(
            server.url + "/callbacks/flow",
            content=flow("custom", 1),
            headers={"content-type": JSON},
        )
        assert response.status_code == 200
        children = _children(server.process.pid)
        assert children, "serve runs its writer as a child process"
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        deadline = time.monotonic() + 30
        while alive := [pid for pid in children if _running(pid)]:
            assert time.monotonic() < deadline, f"outlived serve: {alive}"
            time.sleep(0.05)
    assert rows(tmp_path / "killed.db", "SELECT COUNT(*) FROM flow_events") == [(1,)]


@pytest.mark.slow
def test_serve_can_store_on_a_thread_of_each_worker(tmp_path: Path) -> None:
    with serving(tmp_path / "thread.db", "--writer", "thread") as server:
        assert _children(server.process.pid) == []
        response = httpx.post(
            server.url + "/callbacks/flow",
            content=flow("custom", 1),
            headers={"content-type": JSON},
        )
        assert response.json()["outcome"] == "applied"


def test_socket_directories_of_killed_serves_are_removed(tmp_path: Path) -> None:
    dead, alive, fresh = (tmp_path / f"flowtracker-{name}" for name in ("dead", "alive", "new"))
    for directory in (dead, alive, fresh):
        directory.mkdir()
        (directory / "serve.lock").touch()
    with (alive / "serve.lock").open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a live serve holds it
        for directory in (dead, alive):
            os.utime(directory, (time.time() - 60, time.time() - 60))
        _remove_stale_directories([str(tmp_path)])
    assert [dead.exists(), alive.exists(), fresh.exists()] == [False, True, True]


def test_messages_keep_every_field_in_its_place() -> None:
    error = PayloadTooLarge("too big", {"limit": 5})
    sent = CallbackRequest(
        "document", b"body", "application/x-www-form-urlencoded", "POST /x", error
    )
    assert CallbackRequest(*pickle.loads(pickle.dumps(request_fields(sent)))).__repr__() == repr(
        sent
    )
    receipt = Receipt("illegal", True, "instance already closed", "flow", "id-1", "closed")
    assert Receipt(*pickle.loads(pickle.dumps(receipt_fields(receipt)))) == receipt


def test_a_writer_that_never_answers_is_a_503_after_the_deadline(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")

    async def scenario() -> None:
        connections: list[asyncio.Transport] = []

        class Mute(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                connections.append(transport)  # type: ignore[arg-type]

        server = await asyncio.get_running_loop().create_unix_server(Mute, path)
        intake = RemoteIntake(path, answer_seconds=0.05)
        try:
            with pytest.raises(StorageUnavailable, match=r"did not answer within 0\.05 s"):
                await asyncio.wait_for(intake.take(delivery(flow("custom", 1))), 30)
        finally:
            await intake.stop()
            server.close()

    asyncio.run(scenario())


@pytest.mark.slow
def test_serve_stopped_by_sigterm_leaves_no_socket_directory(
    tmp_path: Path, short_tmp: str
) -> None:
    with serving(tmp_path / "term.db", env={"TMPDIR": short_tmp}) as server:
        assert os.listdir(short_tmp)  # the writer's socket directory
        response = httpx.post(
            server.url + "/callbacks/flow",
            content=flow("custom", 1),
            headers={"content-type": JSON},
        )
        assert response.status_code == 200
    deadline = time.monotonic() + 30  # the writer removes it once its stdin closes
    while os.listdir(short_tmp):
        assert time.monotonic() < deadline, os.listdir(short_tmp)
        time.sleep(0.05)


def test_the_writer_runs_on_uvloop_where_it_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its sockets cost less there than on asyncio's own loop (docs/performance.md).
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve(settings: object, socket_path: str) -> None:
        loops.append(asyncio.get_running_loop())

    monkeypatch.setattr(writer_module, "_serve", serve)
    monkeypatch.setattr(writer_module.signal, "signal", lambda *args: None)  # not pytest's
    writer_module.run_writer(Settings(db_path=str(tmp_path / "x.db")), "unused")
    try:
        import uvloop
    except ImportError:  # a Python that uvloop does not support (the dependency's marker)
        assert type(loops[0]).__module__.startswith("asyncio")
    else:
        assert isinstance(loops[0], uvloop.Loop)
