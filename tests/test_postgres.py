"""PostgreSQL as a backend: the same answers as SQLite, several receivers on one database,
faults answered 503 and healed, and clear lines for a database that cannot be used.

Each test starts real processes: the session's throwaway PostgreSQL server
(`tests.postgres_server`), `flowtracker serve` on free loopback ports, the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from flowtracker.engine.parsing import parse_line
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.ingest.replay import replay
from flowtracker.reads import views
from flowtracker.store.opening import open_store
from flowtracker.store.postgres.schema import MIGRATIONS
from flowtracker.store.protocol import Store
from tests import test_properties as properties
from tests.conftest import DATA, flow
from tests.feeds import check_chain
from tests.postgres_server import PASSWORD, PostgresServer
from tests.server import serving
from tests.test_properties import deliveries, document_bodies, flow_bodies

DEMO = DATA / "demo.jsonl"
JSON = {"Content-Type": "application/json"}


def _everything(store: Store) -> dict[str, Any]:
    """Every read a user makes of the database, as the API serves it."""
    found: dict[str, Any] = {"status": store.totals("2000-01-01T00:00:00Z")}
    for kind, listing, one in (
        ("flow", views.instances, views.instance),
        ("document", views.documents, views.document),
    ):
        page = listing(store, views.SubjectFilter(), views.Page(views.MAX_LIMIT))
        found[kind] = [item["id"] for item in page["items"]]
        for item in page["items"]:
            shown = one(store, item["id"])
            found[f"{kind}:{item['id']}"] = shown
    # Anomalies received in one transaction share a time: in either order.
    anomalies = views.anomalies(store, 100)
    found["anomalies"] = sorted(
        json.dumps(_without_arrival(a), sort_keys=True) for a in anomalies["events"]
    )
    found["quarantine"] = views.quarantine(store, views.Page(100))
    return found


def _replayed(target: str) -> dict[str, Any]:
    store = open_store(target)
    try:
        with DEMO.open("rb") as lines:
            replay(Pipeline(store), lines, DEMO.name, batch_size=7, max_body=1 << 20)
        return _everything(store)
    finally:
        store.close()


ARRIVAL = {"received_at", "last_delivery_at", "last_received_at", "last_seen", "first_seen",
           "last_callback_ns"}  # fmt: skip


def _without_arrival(found: Any) -> Any:
    """The reads without the times of arrival, which differ between two runs."""
    if dataclasses.is_dataclass(found) and not isinstance(found, type):
        found = dataclasses.asdict(found)
    if isinstance(found, dict):
        return {k: _without_arrival(v) for k, v in found.items() if k not in ARRIVAL}
    if isinstance(found, list):
        return [_without_arrival(v) for v in found]
    return found


def test_both_backends_answer_every_read_the_same(tmp_path: Path, postgres: PostgresServer) -> None:
    on_sqlite = _replayed(str(tmp_path / "t.db"))
    on_postgres = _replayed(postgres.database(f"same_{os.getpid()}"))
    assert len(on_sqlite["flow"]) > 30 and on_sqlite["quarantine"]["items"] == []
    assert _without_arrival(on_postgres) == _without_arrival(on_sqlite)


def test_a_late_event_refolds_on_either_backend(any_store: Store) -> None:
    pipeline = Pipeline(any_store)
    first = pipeline.ingest([parse_line(flow("completed", 5)), parse_line(flow("cancelled", 9))])
    assert [r.outcome for r in first] == ["applied", "illegal"]
    late = pipeline.ingest([parse_line(flow("cancelled", 3)), parse_line(flow("completed", 5))])
    assert [r.outcome for r in late] == ["applied", "duplicate"]
    shown = views.instance(any_store, first[0].subject_id)
    assert shown["state"] == "cancelled"  # the late one decides; the others refolded
    assert [e["outcome"] for e in shown["events"]] == ["applied", "illegal", "applied"]
    assert [e["deliveries"] for e in shown["events"]] == [1, 2, 1]
    kept = any_store.totals("2000-01-01T00:00:00Z")
    with any_store.transaction() as tx:
        tx.recount()
    assert any_store.totals("2000-01-01T00:00:00Z") == kept  # the counters kept add up
    rebuilt = pipeline.rebuild()
    assert (rebuilt["subjects"], rebuilt["events"], rebuilt["changed_states"]) == (1, 3, 0)
    assert views.instance(any_store, first[0].subject_id) == shown


def _bodies(instances: int, seed: int) -> list[bytes]:
    """Callbacks for many instances, every one delivered twice, shuffled."""
    rng = random.Random(seed)
    bodies = []
    for _ in range(instances):
        instance = str(uuid.UUID(int=rng.getrandbits(128)))
        steps = ["custom", "custom", rng.choice(["completed", "failed", "cancelled"])]
        bodies += [flow(step, second, instance) for second, step in enumerate(steps)]
    doubled = bodies + bodies
    rng.shuffle(doubled)
    return doubled


def _post_all(url: str, bodies: list[bytes], failures: list[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for body in bodies:
            for _ in range(50):  # a 503 is retried, as Scrive retries
                answer = client.post(url + "/callbacks/flow", content=body, headers=JSON)
                if answer.status_code == 200:
                    break
                time.sleep(0.05)
            else:
                failures.append(answer.text)


def test_two_receivers_on_one_database_keep_every_guarantee(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.database(f"receivers_{os.getpid()}")
    bodies = _bodies(60, seed=7)
    failures: list[str] = []
    with (
        serving(url, "--workers", "2", logs=tmp_path) as one,
        serving(url, "--workers", "2", logs=tmp_path) as two,
    ):
        threads = [
            threading.Thread(target=_post_all, args=(server.url, bodies[n::4], failures))
            for n, server in enumerate([one, two, one, two])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        status = httpx.get(one.url + "/status", timeout=10).json()
    assert failures == []
    # The same bodies, one by one into SQLite: the reference.
    reference = open_store(str(tmp_path / "reference.db"))
    pipeline = Pipeline(reference)
    for body in bodies:
        pipeline.ingest([parse_line(body)])
    shared = open_store(url, access="read")
    try:
        # Arrival order differs (which subject came first, what was out of order); the
        # states, histories, outcomes and deliveries may not.
        assert _fold(shared) == _fold(reference)
        assert status["callbacks"]["duplicate"] == len(bodies) // 2
        kept = shared.totals("2000-01-01T00:00:00Z")
        assert (kept.outcomes, kept.states, kept.duplicates) == (
            (reference_totals := reference.totals("2000-01-01T00:00:00Z")).outcomes,
            reference_totals.states,
            reference_totals.duplicates,
        )
    finally:
        shared.close()
        reference.close()


def _fold(store: Store) -> dict[str, Any]:
    found = {}
    page = views.instances(store, views.SubjectFilter(), views.Page(views.MAX_LIMIT))
    for item in page["items"]:
        shown = views.instance(store, item["id"])
        found[item["id"]] = (shown["state"], [
            (e["type"], e["event_created"], e["outcome"], e["reason"], e["deliveries"])
            for e in shown["events"]
        ])  # fmt: skip
    return found


def test_servers_starting_at_once_migrate_once(postgres: PostgresServer) -> None:
    url = postgres.database(f"race_{os.getpid()}")
    runs = [
        subprocess.Popen([sys.executable, "-m", "flowtracker", "migrate", "--db", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs
    said = sorted(out for out, _ in outputs)
    assert sum(f"applied {len(MIGRATIONS)} migration" in out for out in said) == 1
    assert sum("already up to date" in out for out in said) == 3
    assert all(PASSWORD not in out + err for out, err in outputs)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FLOWTRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "flowtracker", *args],
        capture_output=True, text=True, timeout=60, env=environment,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://flowtracker:{pw}@127.0.0.1:notaport/x", "is not a PostgreSQL URL"),
        ("postgresql://flowtracker:{pw}@no-such-host.invalid:5432/x", "unknown host"),
        ("postgresql://flowtracker:wrong-{pw}@127.0.0.1:{port}/postgres",
         "authentication failed for user 'flowtracker' at 127.0.0.1:{port}"),
        ("postgresql://flowtracker:{pw}@127.0.0.1:{port}/no_such_db", "there is no database"),
        ("postgresql://flowtracker:{pw}@127.0.0.1:{free}/x", "nothing accepts connections"),
    ],
)  # fmt: skip
def test_a_database_that_cannot_be_used_is_one_clear_line(
    postgres: PostgresServer, url: str, said: str
) -> None:
    from tests.postgres_server import free_port

    values = {"pw": PASSWORD, "port": postgres.port, "free": free_port()}
    for command in (["status"], ["serve", "--port", str(free_port())], ["replay", str(DEMO)]):
        run = _cli(*command, "--db", url.format(**values))
        assert run.returncode != 0
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and said.format(**values) in lines[0], run.stderr
        assert PASSWORD not in run.stdout + run.stderr and "***" in lines[0]


def test_another_programs_database_and_a_newer_one_are_refused(postgres: PostgresServer) -> None:
    other = postgres.database(f"other_{os.getpid()}")
    with psycopg.connect(other, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int)")
    run = _cli("replay", str(DEMO), "--db", other)
    assert run.returncode == 1 and "not a flowtracker database" in run.stderr
    newer = postgres.database(f"newer_{os.getpid()}")
    assert _cli("migrate", "--db", newer).returncode == 0
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute("INSERT INTO flowtracker_migrations (name) VALUES ('p999_future')")
    run = _cli("status", "--db", newer)
    assert run.returncode == 1 and "migrated by a newer flowtracker (p999_future)" in run.stderr
    empty = postgres.database(f"empty_{os.getpid()}")
    run = _cli("status", "--db", empty)
    assert run.returncode == 1 and "no flowtracker database" in run.stderr
    with psycopg.connect(empty) as conn:  # a read created nothing
        assert conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone() == (0,)


def _until(check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
            if found:
                return found
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "it did not happen in time"
        time.sleep(0.2)


def test_postgres_down_read_only_and_back_is_503_then_healed(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    name = f"faults_{os.getpid()}"
    url = postgres.database(name)
    body = flow("flow_started", 1)
    with serving(url, logs=tmp_path) as server, httpx.Client(timeout=30) as client:
        assert (
            client.post(server.url + "/callbacks/flow", content=body, headers=JSON).status_code
            == 200
        )
        postgres.stop()
        try:
            answer = client.post(
                server.url + "/callbacks/flow", content=flow("custom", 2), headers=JSON
            )
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "storage_unavailable"
            assert int(answer.headers["Retry-After"]) > 0
            assert client.get(server.url + "/healthz").status_code == 503
            assert client.get(server.url + "/status").status_code == 503
        finally:
            postgres.start()
        _until(lambda: client.get(server.url + "/healthz").status_code == 200)
        again = client.post(server.url + "/callbacks/flow", content=flow("custom", 2), headers=JSON)
        assert again.status_code == 200 and again.json()["outcome"] == "applied"
        # Read-only: every new session refuses writes.
        postgres.admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        postgres.admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        )
        try:
            refused = _until(lambda: (r := client.post(
                server.url + "/callbacks/flow", content=flow("custom", 3), headers=JSON
            )).status_code == 503 and r)  # fmt: skip
            assert "read-only" in refused.json()["error"]["message"]
            assert client.get(server.url + "/healthz").status_code == 503
        finally:
            postgres.admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            postgres.admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            )
        _until(lambda: client.post(
            server.url + "/callbacks/flow", content=flow("custom", 3), headers=JSON
        ).status_code == 200)  # fmt: skip
        shown = client.get(server.url + f"/instances/{json.loads(body)['flow_instance_id']}").json()
        assert [e["type"] for e in shown["events"]] == ["flow_started", "custom", "custom"]
    assert PASSWORD not in server.output()


def test_copy_either_way_answers_every_read_the_same(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    original = str(tmp_path / "original.db")
    assert _cli("replay", str(DEMO), "--db", original).returncode == 0
    hook = _cli("webhooks", "add", "https://hooks.example.com/in", "--db", original, "--json")
    assert hook.returncode == 0, hook.stderr
    on_postgres = postgres.database(f"copy_{os.getpid()}")
    back = str(tmp_path / "back.db")
    for source, destination in ((original, on_postgres), (on_postgres, back)):
        run = _cli("copy", source, destination)
        assert run.returncode == 0, run.stderr
        assert "copied 299 events of 48 subjects" in run.stdout
        assert PASSWORD not in run.stdout + run.stderr
    reads = []
    for target in (original, on_postgres, back):
        store = open_store(target, access="read")
        try:
            # ... and the change log, its numbers and the subscriptions with their secrets
            feed = (store.changes(0, 10_000), store.change_clock(), store.subscriptions())
            reads.append((_everything(store), feed))
        finally:
            store.close()
    assert reads[0] == reads[1] == reads[2]  # arrival times, counters and all
    assert len(reads[0][1][0]) == reads[0][1][1][0] > 48 and len(reads[0][1][2]) == 1
    again = _cli("copy", original, on_postgres)
    assert again.returncode == 1 and "already holds events" in again.stderr


@pytest.fixture(scope="module")
def shared_database(postgres: PostgresServer) -> str:
    return postgres.database(f"properties_{os.getpid()}")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(batches=deliveries(flow_bodies | document_bodies))
def test_postgres_state_and_history_do_not_depend_on_arrival(
    shared_database: str, batches: list[list[bytes]]
) -> None:
    """The SQLite property of `test_properties`, on PostgreSQL: any arrival order, any
    cut into batches, any repeats give the oracle's states and histories."""
    store = open_store(shared_database)
    with psycopg.connect(shared_database, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE instances, documents, flow_events, document_snapshots, counters, "
            "received_per_minute, changes RESTART IDENTITY"
        )
        conn.execute("UPDATE change_clock SET seq = 0, pruned_through = 0")
    try:
        pipeline = Pipeline(store)
        for batch in batches:
            pipeline.ingest([parse_line(body) for body in batch])
        everything = [body for batch in batches for body in batch]
        assert properties._subjects(store) == properties.oracle(set(everything))
        assert properties._totals(store) == len(everything)
        check_chain(store)  # and the change feed tells the same story
    finally:
        store.close()


def test_the_same_callback_at_once_on_both_receivers_is_one_event(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    url = postgres.database(f"same_instant_{os.getpid()}")
    body = flow("completed", 4, str(uuid.UUID(int=99)))
    senders = 24
    start = threading.Barrier(senders)
    answers: list[dict[str, Any]] = []
    with (
        serving(url, "--workers", "2", logs=tmp_path) as one,
        serving(url, "--workers", "2", logs=tmp_path) as two,
    ):

        def send(server_url: str) -> None:
            with httpx.Client(timeout=30) as client:
                client.get(server_url + "/healthz")  # connected before the barrier
                start.wait()
                answer = client.post(server_url + "/callbacks/flow", content=body, headers=JSON)
                answers.append({"status": answer.status_code, **answer.json()})

        threads = [threading.Thread(target=send, args=((one, two)[n % 2].url,))
                   for n in range(senders)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        shown = httpx.get(one.url + f"/instances/{uuid.UUID(int=99)}", timeout=10).json()
        status = httpx.get(two.url + "/status", timeout=10)
    assert {a["status"] for a in answers} == {200}
    assert sorted(a["outcome"] for a in answers) == ["applied"] + ["duplicate"] * (senders - 1)
    assert [e["deliveries"] for e in shown["events"]] == [senders]
    assert PASSWORD not in status.text and PASSWORD not in one.output() + two.output()


def test_serve_no_migrate_names_the_command_and_help_hides_the_password(
    postgres: PostgresServer,
) -> None:
    from tests.postgres_server import free_port

    url = postgres.database(f"no_migrate_{os.getpid()}")
    run = _cli("serve", "--no-migrate", "--port", str(free_port()), "--db", url)
    assert run.returncode == 1 and "flowtracker migrate" in run.stderr
    assert PASSWORD not in run.stderr
    environment = {**os.environ, "FLOWTRACKER_DB": url}
    for command in ("serve", "status", "copy", "replay"):
        shown = subprocess.run(
            [sys.executable, "-m", "flowtracker", command, "--help"],
            capture_output=True, text=True, env=environment, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0 and PASSWORD not in shown.stdout


def test_postgres_stopped_and_started_under_load_loses_nothing(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Clients behave like Scrive (a 503 or a dropped connection is sent again) while the
    database goes away and comes back: afterwards every callback answered 200 is stored
    once, and the states are what a sequential replay gives."""
    url = postgres.database(f"under_load_{os.getpid()}")
    bodies = _bodies(80, seed=11)
    acked: list[bytes] = []
    statuses: list[int] = []
    with serving(url, "--workers", "2", logs=tmp_path) as server:

        def client(share: list[bytes]) -> None:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for body in share:
                    time.sleep(0.02)  # a steady load, still running when the database stops
                    for _ in range(600):
                        try:
                            answer = http.post("/callbacks/flow", content=body, headers=JSON)
                        except httpx.TransportError:
                            time.sleep(0.05)
                            continue
                        statuses.append(answer.status_code)
                        if answer.status_code == 200:
                            acked.append(body)
                            break
                        assert answer.status_code == 503, answer.text
                        time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(bodies[n::4],)) for n in range(4)]
        for thread in threads:
            thread.start()
        while len(acked) < len(bodies) // 4:
            time.sleep(0.01)
        postgres.stop()
        time.sleep(8)  # longer than the 5 s a write waits for a connection: 503s
        postgres.start()
        for thread in threads:
            thread.join()
    assert 503 in statuses and len(acked) == len(bodies)
    reference = open_store(str(tmp_path / "reference.db"))
    shared = open_store(url, access="read")
    try:
        pipeline = Pipeline(reference)
        for body in bodies:
            pipeline.ingest([parse_line(body)])
        # A commit whose answer was lost when the server stopped (the transaction committed,
        # the connection died before saying so) is answered 503 and delivered again: one
        # more delivery of a stored event, never an event lost or stored twice.
        found, expected = _fold(shared), _fold(reference)
        assert _without_deliveries(found) == _without_deliveries(expected)
        for instance, (_, events) in found.items():
            for event, wanted in zip(events, expected[instance][1], strict=True):
                assert event[4] >= wanted[4]
    finally:
        shared.close()
        reference.close()


def _without_deliveries(fold: dict[str, Any]) -> dict[str, Any]:
    return {key: (state, [e[:4] for e in events]) for key, (state, events) in fold.items()}
