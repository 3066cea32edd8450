"""Callbacks lost for good (Scrive's tenth attempt failed), and where a tracker can still
bring each subject by asking Scrive's API (SPEC 13).

Losses are drawn, with the seed, among the callbacks whose loss leaves the outcome of
every other callback of the story as it was: none of a subject whose story has an
illegal callback (what made it illegal could be the one lost), never the first of a
subject (a tracker that heard nothing of it could not know to ask), and no snapshot that
shares its object_version with another (Scrive's API could not tell them apart). What the
tracker can reach is then written out from the stories, as the expected ends are, never
from the tracker's code: a lost terminal callback is replaced by the `reconciled` event
of the status Scrive's API shows (where a cancel, a rejection and a timeout all read
`failed`), a lost last snapshot by the document as the API answers it, whose
signed_and_sealed is unknown.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from flowtracker.scrive.fake_api import FakeScrive, scrive_status
from flowtracker.scrive.traffic import SimCallback, SimSubject

# Written out again on purpose (see traffic.py): the callbacks that end an instance.
ENDINGS = ("completed", "failed", "cancelled", "flow_rejected", "timed_out")


def lose(subjects: Sequence[SimSubject], share: float, seed: int) -> frozenset[SimCallback]:
    """`share` of all callbacks, drawn among those that may be lost (see the module)."""
    if share <= 0:
        return frozenset()
    rng = random.Random(f"losses {seed}")  # noqa: S311 - reproducible traffic, not secrets
    callbacks = [c for subject in subjects for c in subject.callbacks]
    eligible = [c for subject in subjects for c in _losable(subject)]
    return frozenset(rng.sample(eligible, min(len(eligible), round(share * len(callbacks)))))


@dataclass(frozen=True, slots=True)
class Reachable:
    """Where a tracker can bring a subject: its state, the callbacks it got (in order),
    the entry Scrive's API adds (None if none is needed), and a document's shown fields."""

    state: str
    callbacks: tuple[SimCallback, ...]
    reconciled: SimCallback | None = None
    shown: Mapping[str, Any] = field(default_factory=dict)

    @property
    def entries(self) -> list[SimCallback]:
        """What its history holds, in order."""
        found = [*self.callbacks, *([self.reconciled] if self.reconciled else [])]
        return sorted(found, key=lambda c: c.position)


def reachable(subject: SimSubject, lost: frozenset[SimCallback]) -> Reachable:
    kept = tuple(c for c in subject.callbacks if c not in lost)
    if len(kept) == len(subject.callbacks):
        return Reachable(subject.state, kept, shown=subject.shown)
    if subject.kind == "flow":
        ended = [c for c in subject.callbacks if c.label in ENDINGS and c.outcome == "applied"]
        if not ended or any(c in kept for c in ended):
            return Reachable(subject.state, kept)
        status = scrive_status(subject.state)
        answer = SimCallback("flow", subject.id, "reconciled", ended[0].time, ended[0].position,
                             b"", "application/json")  # fmt: skip
        return Reachable(status, kept, answer)
    last = subject.callbacks[-1]
    if last in kept:
        return Reachable(subject.state, kept, shown=subject.shown)
    document = document_json(last)
    shown = {"object_version": document["object_version"], "signed_and_sealed": None,
             "title": document.get("title"), "mtime": document["mtime"]}  # fmt: skip
    return Reachable(subject.state, kept, last, shown)


def truth(subjects: Sequence[SimSubject], fake: FakeScrive) -> None:
    """Tell the fake Scrive API where every instance and document really is."""
    for subject in subjects:
        if subject.kind == "document":
            fake.document(document_json(subject.callbacks[-1]))
            continue
        ended = [c for c in subject.callbacks if c.label in ENDINGS and c.outcome == "applied"]
        # Scrive's `last_event`: the action that ended it, or the last one so far.
        fake.instance(
            subject.id, subject.state, (ended[0] if ended else subject.callbacks[-1]).time
        )


def document_json(callback: SimCallback) -> dict[str, Any]:
    """The document a snapshot callback carries (either field names, v2 or v1)."""
    fields = parse_qs(callback.body.decode())
    text = (fields.get("document_json") or fields["json"])[0]
    document: dict[str, Any] = json.loads(text)
    return document


def _losable(subject: SimSubject) -> list[SimCallback]:
    """Never the first callback of a subject: a tracker that heard nothing of it could not
    know to ask."""
    if any(c.outcome != "applied" for c in subject.callbacks):
        return []
    later = list(subject.callbacks[1:])
    if subject.kind == "flow":
        return later
    versions = Counter(c.position[0] for c in subject.callbacks)
    return [c for c in later if versions[c.position[0]] == 1]
