"""Replaying a JSON Lines file of callback bodies through the ingest pipeline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from flowtracker.engine.events import Callback
from flowtracker.engine.parsing import parse_line
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import MalformedCallback, PayloadTooLarge
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.protocol import Quarantined

DEFAULT_BATCH = 1_000


@dataclass
class ReplayReport:
    """What a replay did: outcomes counted, and every bad line with its error."""

    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    out_of_order: int = 0
    rejected: list[tuple[int, MalformedCallback]] = field(default_factory=list)


def replay(
    pipeline: Pipeline,
    lines: Iterable[bytes],
    source: str,
    *,
    batch_size: int = DEFAULT_BATCH,
    max_body: int,
    on_line: Callable[[bytes], None] = lambda line: None,
) -> ReplayReport:
    """Ingest each non-blank line as one callback body; quarantine the lines that are bad."""
    report = ReplayReport()
    batch: list[Callback] = []
    for number, callback in _parsed(pipeline, lines, source, max_body, report, on_line):
        report.lines = number
        if callback is not None:
            batch.append(callback)
        if len(batch) >= batch_size:
            _ingest(pipeline, batch, report)
    _ingest(pipeline, batch, report)
    return report


def _parsed(
    pipeline: Pipeline,
    lines: Iterable[bytes],
    source: str,
    max_body: int,
    report: ReplayReport,
    on_line: Callable[[bytes], None],
) -> Iterator[tuple[int, Callback | None]]:
    for number, raw in enumerate(lines, start=1):
        on_line(raw)
        line = raw.strip()
        if not line:
            yield number, None
            continue
        try:
            if len(line) > max_body:
                raise PayloadTooLarge(f"line is {len(line)} bytes, over the limit of {max_body}")
            yield number, parse_line(line)
        except MalformedCallback as error:
            report.rejected.append((number, error))
            pipeline.store.quarantine(
                Quarantined(
                    line[:max_body],
                    "application/json",
                    error.to_dict()["error"],
                    f"replay {source}:{number}",
                ),
                format_ns(pipeline.clock()),
            )
            yield number, None


def _ingest(pipeline: Pipeline, batch: list[Callback], report: ReplayReport) -> None:
    for receipt in pipeline.ingest(batch):
        report.outcomes[receipt.outcome] += 1
        report.out_of_order += receipt.out_of_order and receipt.outcome != "duplicate"
    batch.clear()
