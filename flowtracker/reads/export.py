"""`flowtracker export`: every stored delivery as JSON Lines that `replay` takes.

In the order received (by time of receipt, then by row id, which numbers the events of
one transaction in their order), each event's body once per delivery, so that replaying
an export into an empty database gives the same states, histories, outcomes, out-of-order
marks and delivery counts. A body is written as stored, made one line: a JSON body's raw
line breaks can only be whitespace (JSON strings escape theirs), so they become spaces;
a document callback sent as a form becomes the JSON object of its fields, which `replay`
reads as the same snapshot (the dedup key is of the fields, not of the encoding). A body
stored before a limit refused its kind (nested too deep, issue 14) is written too: `replay`
then quarantines it, as the service would today.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from flowtracker.engine.bodies import FORM_TYPE, decode_form, media_type
from flowtracker.errors import MalformedCallback
from flowtracker.store.protocol import Snapshot, Store
from flowtracker.store.tables import EXPORT_MARK, TOMBSTONE_COLUMNS, TOMBSTONES

PAGE = 1_000


def export(store: Store, out: BinaryIO) -> int:
    """Write every delivery to `out`; how many lines were written. The tombstones of
    pruned subjects come first; an answer of Scrive's API is a line of its own, in its
    place (SPEC 14). All of it is read in one snapshot: the database as it was when the
    export began, whatever a server commits or prunes meanwhile."""
    with store.snapshot() as snapshot:
        return _export(snapshot, out)


def _export(snapshot: Snapshot, out: BinaryIO) -> int:
    lines = 0
    for kind, table in TOMBSTONES.items():
        for row in _rows(snapshot, table):
            out.write(_marked("tombstone", kind, row["id"], {
                name: row[name] for name in TOMBSTONE_COLUMNS if name != "id"
            }))  # fmt: skip
            lines += 1
    for row in heapq.merge(
        _rows(snapshot, "flow_events"), _rows(snapshot, "document_snapshots"),
        key=lambda row: (row["received_at"], row["id"]),
    ):  # fmt: skip
        if row["reconciled"] is not None:
            out.write(_reconciled(row))
            lines += 1
            continue
        line = one_line(row["body"], row["content_type"] or "")
        for _ in range(max(1, row["deliveries"])):
            out.write(line + b"\n")
            lines += 1
    return lines


def _reconciled(row: dict[str, Any]) -> bytes:
    """An answer of Scrive's API, as `replay` takes it: what the API answered."""
    if "instance_id" in row:
        answer = {"id": row["instance_id"], "status": row["reconciled"],
                  "last_event": row["event_created"]}  # fmt: skip
        return _marked("reconciled", "flow", row["instance_id"], {"answer": answer})
    stored = json.loads(bytes(row["body"]))
    return _marked("reconciled", "document", row["document_id"],
                   {"answer": stored["document_json"]})  # fmt: skip


def _marked(what: str, kind: str, subject_id: str, fields: dict[str, Any]) -> bytes:
    line = {EXPORT_MARK: what, "kind": kind, "id": subject_id, **fields}
    return json.dumps(line, ensure_ascii=False).encode() + b"\n"


def one_line(body: bytes, content_type: str) -> bytes:
    """A stored body as one JSON line that `replay` reads as the same callback."""
    if media_type(content_type) == FORM_TYPE:
        try:
            return json.dumps(decode_form(body), ensure_ascii=False).encode()
        except MalformedCallback:
            pass  # stored before a rule refused it: written as it is, for replay to judge
    return body.replace(b"\r", b" ").replace(b"\n", b" ")


def _rows(snapshot: Snapshot, table: str) -> Iterator[dict[str, Any]]:
    after = None
    while rows := snapshot.rows(table, after, PAGE):
        yield from rows
        after = rows[-1]["id"]
