"""The quarantine's actions (SPEC 14): run kept requests through the pipeline again (after
an upgrade that accepts them), or drop them. The same for the command line, the API and
the dashboard.

A kept request is parsed as it came in: by the endpoint it was posted to, or as a line of
a replayed file. Those now accepted are stored and leave the quarantine in one
transaction; the others stay, with the reason they are still refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowtracker.engine.events import Callback
from flowtracker.engine.parsing import parse_document, parse_flow, parse_line
from flowtracker.engine.timestamps import moment
from flowtracker.errors import (
    InvalidQuery,
    MalformedCallback,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
)
from flowtracker.ingest.interface import Receipt
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.store.protocol import Store
from flowtracker.store.rows import QuarantineRow

PAGE = 100  # kept requests retried per transaction
# The codes of requests kept without their whole body, and the error a retry gives them.
CUT_SHORT: dict[str, type[MalformedCallback]] = {
    "payload_too_large": PayloadTooLarge,
    "request_timeout": RequestTimeout,
}


@dataclass
class Retried:
    """What a retry did: the requests now accepted (with their receipts), and those still
    refused (with the error they get today)."""

    accepted: list[tuple[str, Receipt]] = field(default_factory=list)
    refused: list[tuple[str, MalformedCallback]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accepted": [{"id": hash_, **receipt.to_dict()} for hash_, receipt in self.accepted],
            "refused": [{"id": hash_, **error.to_dict()} for hash_, error in self.refused],
        }

    def total(self) -> str:
        return (f"{len(self.accepted)} accepted and stored (they left the quarantine), "
                f"{len(self.refused)} still refused")  # fmt: skip


def parsed(row: QuarantineRow, max_body: int) -> Callback:
    """The callback a kept request holds, parsed as it came in; raises the
    `MalformedCallback` it still gets."""
    body, code = row.body, row.error.get("code")
    if code in CUT_SHORT:  # only what arrived in time, or up to the limit, was kept
        raise CUT_SHORT[code](
            "kept cut short (the request was refused before its whole body arrived): it "
            "cannot be accepted; delete it, and the sender's retry brings the callback again"
        )
    if len(body) > max_body:
        raise PayloadTooLarge(f"body is {len(body)} bytes, over the limit of {max_body}")
    content_type = row.content_type or ""
    if row.source.startswith("POST /callbacks/document"):
        return parse_document(body, content_type)
    if row.source.startswith("POST /callbacks/flow"):
        return parse_flow(body, content_type or "application/json")
    return parse_line(body)  # a line of a replayed file


def retry(pipeline: Pipeline, rows: Iterator[QuarantineRow], max_body: int) -> Retried:
    """Run these kept requests through the pipeline again, a page per transaction."""
    done = Retried()
    page: list[tuple[str, Callback]] = []

    def flush() -> None:
        if page:
            hashes = [hash_ for hash_, _ in page]
            receipts = pipeline.ingest([c for _, c in page], unquarantine=hashes)
            done.accepted += zip(hashes, receipts, strict=True)
            page.clear()

    for row in rows:
        try:
            page.append((row.body_hash, parsed(row, max_body)))
        except MalformedCallback as error:
            done.refused.append((row.body_hash, error))
        if len(page) >= PAGE:
            flush()
    flush()
    return done


def kept(store: Store, ids: Sequence[str] = (), code: str | None = None) -> Iterator[QuarantineRow]:
    """The kept requests named by `ids` (each must be there), or every one (of error
    `code`, when given), whole."""
    if ids:
        for id_ in ids:  # whole ids (`whole_id`)
            found = store.quarantined(None, 1, code=code, body_hash=id_)
            if not found:
                raise NotFound(f"no quarantined request {id_!r}", {"id": id_})
            yield found[0]
        return
    before = None
    while rows := store.quarantined(before, PAGE, code=code):
        yield from rows
        before = (rows[-1].last_seen, rows[-1].body_hash)


def delete(store: Store, ids: Sequence[str] = (), before: str | None = None) -> int:
    """Drop kept requests: those named (each must be there), or those last seen before
    `before` (RFC 3339); how many went."""
    if bool(ids) == (before is not None):
        raise InvalidQuery({"before": "name the requests to delete, or give before (not both)"})
    if before is not None:
        before = moment(before, "before")
    with store.transaction() as tx:
        if before is not None:
            return tx.drop_quarantined(before=before)
        missing = [id_ for id_ in ids if not store.quarantined(None, 1, 0, body_hash=id_)]
        if missing:
            raise NotFound(f"no quarantined request {missing[0]!r}", {"id": missing[0]})
        return tx.drop_quarantined(hashes=list(ids))


def whole_id(store: Store, prefix: str) -> str:
    """The id (body hash) of the one kept request that starts with `prefix` (as
    `quarantine` shows them, cut to 12 characters)."""
    text = prefix.strip().lower()
    if not text or any(c not in "0123456789abcdef" for c in text) or len(text) > 64:
        raise InvalidQuery(
            {"id": f"must be a quarantined request's id (hexadecimal), not {prefix!r}"}
        )
    if len(text) == 64:
        return text
    found = [row.body_hash for row in store.quarantined(None, 2, body_limit=0, body_hash=text)]
    if not found:
        raise NotFound(f"no quarantined request {prefix!r}", {"id": prefix})
    if len(found) > 1:
        raise InvalidQuery({"id": f"{prefix!r} starts several requests' ids: give more of it"})
    return found[0]
