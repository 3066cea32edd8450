"""Group commit: concurrent callbacks share transactions, each answered after its commit."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flowtracker.engine.parsing import parse_flow
from flowtracker.errors import StorageUnavailable
from flowtracker.ingest import committer as committer_module
from flowtracker.ingest.committer import GroupCommitter
from flowtracker.ingest.interface import Receipt
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import views
from flowtracker.store.sqlite.backend import SQLiteStore
from tests.conftest import flow

IDS = [f"00000000-0000-4000-8000-{n:012d}" for n in range(200)]


class CountingStore:
    """The real store, counting its write transactions."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store, self.transactions = store, 0

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        self.transactions += 1
        with self.store.transaction() as tx:
            yield tx

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture
def store(any_store: SQLiteStore) -> SQLiteStore:
    """The committer over each backend in turn (the conftest's pipeline takes it)."""
    return any_store


@pytest.fixture(params=[False, True], ids=["thread", "inline"])
def inline(request: pytest.FixtureRequest) -> bool:
    """The committer writes on its thread, or on the event loop (the writer process)."""
    return bool(request.param)


def submit_all(pipeline: Pipeline, bodies: list[bytes], **options: Any) -> list[Receipt]:
    async def main() -> list[Receipt]:
        committer = GroupCommitter(pipeline, **options)
        committer.start()
        try:
            return await asyncio.gather(*(committer.submit(parse_flow(body)) for body in bodies))
        finally:
            await committer.stop()

    return asyncio.run(main())


@pytest.mark.parametrize(("max_batch", "transactions"), [(500, 1), (64, 4), (1, 200)])
def test_concurrent_callbacks_share_transactions(
    store: SQLiteStore, max_batch: int, transactions: int, inline: bool
) -> None:
    counting = CountingStore(store)
    pipeline = Pipeline(counting)  # type: ignore[arg-type]
    bodies = [flow("completed", 1, instance) for instance in IDS]
    receipts = submit_all(pipeline, bodies, max_batch=max_batch, inline=inline)
    assert counting.transactions == transactions
    assert [(r.outcome, r.subject_id, r.state) for r in receipts] == [
        ("applied", instance, "completed") for instance in IDS
    ]
    assert (
        views.instances(store, views.SubjectFilter(), views.Page(500))["items"][-1]["id"]
        == (IDS[-1])
    )


def test_a_batch_answers_duplicates_and_late_events_like_single_commits(
    store: SQLiteStore, inline: bool
) -> None:
    bodies = [flow("cancelled", 9), flow("completed", 5), flow("cancelled", 9)]
    receipts = submit_all(Pipeline(store), bodies, inline=inline)
    assert [(r.outcome, r.out_of_order, r.state) for r in receipts] == [
        ("applied", False, "cancelled"),
        ("applied", True, "completed"),
        ("duplicate", False, "completed"),
    ]


def test_a_failed_transaction_fails_every_callback_in_it(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    def full(*args: object) -> None:
        raise StorageUnavailable("the database cannot write now: database or disk is full")

    monkeypatch.setattr(Pipeline, "ingest", full)

    async def main() -> list[BaseException | Receipt]:
        committer = GroupCommitter(Pipeline(store), inline=inline)
        committer.start()
        results = await asyncio.gather(
            *(committer.submit(parse_flow(flow("custom", n))) for n in range(3)),
            return_exceptions=True,
        )
        await committer.stop()
        return results

    results = asyncio.run(main())
    assert [type(result) for result in results] == [StorageUnavailable] * 3


def test_stop_commits_what_is_queued(store: SQLiteStore, inline: bool) -> None:
    async def main() -> list[Receipt]:
        committer = GroupCommitter(Pipeline(store), max_wait=0.05, inline=inline)
        committer.start()
        pending = [asyncio.ensure_future(committer.submit(parse_flow(flow("custom", n))))
                   for n in range(5)]  # fmt: skip
        await asyncio.sleep(0)  # the callbacks are queued; the committer is still waiting
        await committer.stop()
        return [future.result() for future in pending]

    assert [r.outcome for r in asyncio.run(main())] == ["applied"] * 5


def test_a_callback_that_trips_a_bug_fails_alone(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    real = Pipeline.ingest
    bad = parse_flow(flow("custom", 7, IDS[1]))

    def ingest(self: Pipeline, callbacks: list[Any]) -> list[Receipt]:
        if any(c.dedup_key == bad.dedup_key for c in callbacks):
            raise ValueError("a bug this body triggers")
        return real(self, callbacks)

    monkeypatch.setattr(Pipeline, "ingest", ingest)

    async def main() -> list[BaseException | Receipt]:
        committer = GroupCommitter(Pipeline(store), inline=inline)
        committer.start()
        callbacks = [parse_flow(flow("custom", 7, IDS[0])), bad,
                     parse_flow(flow("custom", 7, IDS[2]))]  # fmt: skip
        results = await asyncio.gather(
            *(committer.submit(c) for c in callbacks), return_exceptions=True
        )
        await committer.stop()
        return results

    results = asyncio.run(main())
    assert [type(r).__name__ for r in results] == ["Receipt", "RuntimeError", "Receipt"]


def test_after_stop_callbacks_are_told_to_come_back(store: SQLiteStore, inline: bool) -> None:
    async def main() -> None:
        committer = GroupCommitter(Pipeline(store), inline=inline)
        committer.start()
        await committer.stop()
        with pytest.raises(StorageUnavailable, match="shutting down"):
            await committer.submit(parse_flow(flow("custom", 1)))

    asyncio.run(main())


def trickled(store: SQLiteStore, **options: Any) -> tuple[list[Receipt], list[int]]:
    """Ten callbacks handed to a committer one per pass of the event loop, as a worker's
    requests reach the writer; their receipts, and the callbacks of each transaction."""
    pipeline, sizes = Pipeline(store), []
    ingest = pipeline.ingest

    def recording(callbacks: Any) -> list[Receipt]:
        sizes.append(len(callbacks))
        return ingest(callbacks)

    pipeline.ingest = recording  # type: ignore[method-assign]
    bodies = [flow("custom", 1, instance) for instance in IDS[:10]]

    async def main() -> list[Receipt]:
        committer = GroupCommitter(pipeline, **options)
        committer.start()
        loop, futures = asyncio.get_running_loop(), []

        def arrive(n: int) -> None:
            futures.append(committer.enqueue(parse_flow(bodies[n])))
            if n + 1 < len(bodies):
                loop.call_soon(arrive, n + 1)

        arrive(0)
        try:
            while len(futures) < len(bodies):
                await asyncio.sleep(0)
            return await asyncio.gather(*futures)
        finally:
            await committer.stop()

    return asyncio.run(main()), sizes


def test_callbacks_ready_one_loop_pass_after_another_share_a_transaction(
    store: SQLiteStore, inline: bool
) -> None:
    # The batch is cut at the first pass of the loop that brings nothing.
    receipts, sizes = trickled(store, inline=inline)
    assert [(r.outcome, r.subject_id) for r in receipts] == [("applied", i) for i in IDS[:10]]
    assert sizes == [10]


def test_gathering_stops_at_a_full_batch(store: SQLiteStore) -> None:
    assert trickled(store, max_batch=4, inline=True)[1] == [4, 4, 2]


def test_gathering_stops_after_a_while(
    store: SQLiteStore, inline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A steady trickle never leaves a pass quiet: the first callback would wait for ever.
    monkeypatch.setattr(committer_module, "GATHER_SECONDS", 0.0)
    sizes = trickled(store, inline=inline)[1]
    assert sum(sizes) == 10 and sizes[0] == 1
