"""A document as Scrive keeps it through a story, and the snapshots it sends of it."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from flowtracker.scrive.payloads import (
    DAY,
    MIN,
    NAMES,
    NS,
    Draw,
    compact,
    new_document,
    timestamp_seconds,
)
from flowtracker.scrive.traffic import SimCallback, SimSubject

TITLES = ["Lease agreement", "Loan agreement", "Power of attorney", "Account opening", "KYC form"]
V2_FIELDS = ("document_id", "document_signed_and_sealed", "document_json")
V1_FIELDS = ("documentid", "signedAndSealed", "json")
FORM_TYPE = "application/x-www-form-urlencoded; charset=UTF-8"


class Paper:
    """A document of an instance as Scrive keeps it, and the snapshots it sent of it."""

    def __init__(self, draw: Draw, did: str, t: int, people: int) -> None:
        r = draw.rng
        title = f"{r.choice(TITLES)} {r.randrange(1000, 9999)}"
        tags = [{"name": "case", "value": f"SIM-{r.randrange(10**6):06d}"}]
        self.json = new_document(did, title, r.sample(NAMES, people), t, tags)
        self.v1 = r.random() < 0.1  # an account still on the v1 callback field names
        self.sealed = False
        self.mtime = self.deadline = 0
        self.snapshots: list[tuple[int, bool, dict[str, Any]]] = []
        self.send(t, "preparation", bump=False)

    def send(self, t: int, status: str, *, bump: bool = True, sealed: bool = False) -> int:
        """A change of the document, and the snapshot Scrive builds of it."""
        doc = self.json
        self.mtime = max(t // NS * NS, self.mtime + NS)  # distinct seconds: mtime's precision
        doc["object_version"] += bump  # prolong and sealing do not bump it
        if status == "pending" and (doc["timeout_time"] is None or doc["status"] == "timedout"):
            self.deadline = self.mtime + doc["days_to_sign"] * DAY
            doc["timeout_time"] = timestamp_seconds(self.deadline)
        if sealed:
            self.sealed = True
            sealed_id = str(int(doc["id"]) + 40 + len(self.snapshots))
            doc["sealed_file"] = {"id": sealed_id, "name": "agreement_sealed.pdf"}
        doc.update(status=status, mtime=timestamp_seconds(self.mtime))
        self.snapshots.append((self.mtime, self.sealed, copy.deepcopy(doc)))
        return self.mtime

    def sign(self, t: int, party: int, last: bool) -> None:
        signer = self.json["parties"][party]
        signer.update(seen_time=timestamp_seconds(t - 3 * MIN), sign_time=timestamp_seconds(t))
        self.send(t, "closed" if last else "pending")

    def reject(self, t: int, party: int, reason: str) -> None:
        self.json["parties"][party].update(
            seen_time=timestamp_seconds(t - 2 * MIN),
            rejected_time=timestamp_seconds(t),
            rejection_reason=reason,
        )
        self.send(t, "rejected")

    def subject(self, keep: Sequence[bool]) -> SimSubject:
        """The document with the snapshots kept (Scrive merges queued callbacks)."""
        kept = [snap for snap, sent in zip(self.snapshots, keep, strict=True) if sent]
        callbacks = tuple(self._callback(*snap) for snap in kept)
        _, sealed, doc = kept[-1]
        shown = {
            "object_version": doc["object_version"],
            "signed_and_sealed": sealed,
            "title": doc["title"],
            "mtime": doc["mtime"],
        }
        return SimSubject("document", doc["id"], doc["status"], callbacks, shown=shown)

    def _callback(self, mtime: int, sealed: bool, doc: dict[str, Any]) -> SimCallback:
        names = V1_FIELDS if self.v1 else V2_FIELDS
        values = (doc["id"], "true" if sealed else "false", compact(doc))
        body = urlencode(dict(zip(names, values, strict=True))).encode()
        position = (doc["object_version"], mtime)
        return SimCallback(
            "document", doc["id"], doc["status"], doc["mtime"], position, body, FORM_TYPE
        )
