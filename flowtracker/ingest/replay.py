"""Replaying a JSON Lines file of callback bodies through the ingest pipeline.

Besides callback bodies, an export (`reads.export`, SPEC 14) holds lines of its own,
marked `"flowtracker"`: a tombstone of a pruned subject (kept as it was), and an answer
of Scrive's API (folded as reconciliation folds it, in its place in the file).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from flowtracker.engine.bodies import decode_json
from flowtracker.engine.events import KINDS, Callback, Kind
from flowtracker.engine.parsing import parse_line, reconciled_document, reconciled_instance
from flowtracker.engine.timestamps import format_ns
from flowtracker.errors import InvalidEvent, MalformedCallback, PayloadTooLarge
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.protocol import Quarantined
from flowtracker.store.tables import EXPORT_MARK, TOMBSTONE_COLUMNS

DEFAULT_BATCH = 1_000
_QUOTED_MARK = f'"{EXPORT_MARK}"'.encode()  # only a line holding it may be a record


@dataclass
class ReplayReport:
    """What a replay did: outcomes counted, and every bad line with its error."""

    lines: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    out_of_order: int = 0
    rejected: list[tuple[int, MalformedCallback]] = field(default_factory=list)
    tombstones: int = 0
    reconciled: int = 0


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
        if isinstance(callback, Record):  # in its place: what came before goes first
            _ingest(pipeline, batch, report)
            _record(pipeline, callback, report)
        elif callback is not None:
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
) -> Iterator[tuple[int, Callback | Record | None]]:
    for number, raw in enumerate(lines, start=1):
        on_line(raw)
        line = raw.strip()
        if not line:
            yield number, None
            continue
        try:
            if len(line) > max_body:
                raise PayloadTooLarge(f"line is {len(line)} bytes, over the limit of {max_body}")
            yield number, (record(line) if _QUOTED_MARK in line else None) or parse_line(line)
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


class Record(NamedTuple):
    """A line of flowtracker's own in an export: a tombstone, or an answer of Scrive's API
    as the event it stands for."""

    what: str  # tombstone | reconciled
    kind: Kind
    subject_id: str
    tombstone: dict[str, Any] | None = None
    answer: Callback | None = None


def record(line: bytes) -> Record | None:
    """The record a line holds, if it is one of flowtracker's own (marked `flowtracker`);
    raises `InvalidEvent` naming what is wrong with one."""
    fields = decode_json(line)
    what = fields.get(EXPORT_MARK)
    if what is None:
        return None
    problems: dict[str, str] = {}
    kind, subject_id = fields.get("kind"), fields.get("id")
    if what not in ("tombstone", "reconciled"):
        problems[EXPORT_MARK] = f"must be tombstone or reconciled, not {what!r}"
    if kind not in KINDS:
        problems["kind"] = f"must be flow or document, not {kind!r}"
    if not isinstance(subject_id, str) or not subject_id:
        problems["id"] = "must be a subject's id (a non-empty string)"
    if problems:
        raise InvalidEvent(problems)
    assert isinstance(subject_id, str) and kind in KINDS
    kind = cast(Kind, kind)
    if what == "tombstone":
        kept = {name: fields.get(name) for name in TOMBSTONE_COLUMNS}
        for name in ("state", "pruned_at"):
            if not isinstance(kept[name], str):
                problems[name] = "must be a string"
        if not isinstance(kept["events"], int):
            problems["events"] = "must be an integer"
        if problems:
            raise InvalidEvent(problems)
        return Record("tombstone", kind, subject_id, tombstone=kept)
    answer = fields.get("answer")
    made = (reconciled_instance(subject_id, answer) if kind == "flow"
            else reconciled_document(subject_id, answer))  # fmt: skip
    if made is None:  # an instance in progress: nothing to fold
        raise InvalidEvent({"answer": "an instance in progress is never exported"})
    return Record("reconciled", kind, subject_id, answer=made)


def _record(pipeline: Pipeline, line: Record, report: ReplayReport) -> None:
    if line.tombstone is not None:
        with pipeline.store.transaction() as tx:
            tx.add_tombstones(line.kind, [line.tombstone])
        report.tombstones += 1
        return
    result = pipeline.reconcile(line.kind, line.subject_id, line.answer)
    if result.receipt is not None:
        report.outcomes[result.receipt.outcome] += 1
    report.reconciled += 1
