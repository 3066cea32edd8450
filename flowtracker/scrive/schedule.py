"""How Scrive delivers a scenario: at least once and out of order, in an order fixed by a seed.

Every callback is sent shortly after its event. A share of them is held back by failed
attempts and lands on Scrive's retry schedule after a later callback of the same subject
(out of order); a share is sent again although the tracker stored it (at least once: the
answer was lost, so Scrive retries). Flow events carry no id and documents are snapshots,
so a repeat is the very same body.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flowtracker.scrive.payloads import MIN, NS, RETRY
from flowtracker.scrive.traffic import SimCallback, SimSubject


@dataclass(frozen=True, slots=True)
class Delivery:
    callback: SimCallback
    again: bool  # a repeat of a callback already delivered


def plan(
    subjects: Sequence[SimSubject], seed: int, *, duplicates: float, reorder: float
) -> list[Delivery]:
    """Every callback of `subjects` once, `duplicates` of them twice, in delivery order.

    `duplicates` and `reorder` are shares of the callbacks (0 to 1). Reordering needs a
    later callback of the same subject within reach of Scrive's retries (23 h 45 min), so
    a share larger than the callbacks that have one is capped.
    """
    rng = random.Random(f"delivery {seed}")  # noqa: S311 - reproducible traffic, not secrets
    callbacks = [c for subject in subjects for c in subject.callbacks]
    due = {c: at for subject in subjects for c, at in _prompt(subject, rng)}
    followed = [c for subject in subjects for c in _within_retries(subject, due)]
    held = set(rng.sample(followed, min(len(followed), round(reorder * len(callbacks)))))
    for subject in subjects:
        later: int | None = None  # the earliest delivery of a later callback of the subject
        for c in reversed(subject.callbacks):
            if c in held and later is not None:
                due[c] = _retried(_time(c), later, rng)
            later = due[c] if later is None else min(later, due[c])
    sends = [(due[c], n, Delivery(c, False)) for n, c in enumerate(callbacks)]
    for n, c in enumerate(rng.sample(callbacks, round(duplicates * len(callbacks)))):
        retry = due[c] + rng.choice(RETRY[:4]) * MIN + rng.randrange(NS)
        sends.append((retry, len(callbacks) + n, Delivery(c, True)))
    return [delivery for _, _, delivery in sorted(sends, key=lambda send: send[:2])]


def late(arrivals: Iterable[SimCallback]) -> set[SimCallback]:
    """The callbacks that first arrived after a later one of their subject had: the ones a
    tracker marks out of order."""
    highest: dict[tuple[str, str], tuple[int, int]] = {}
    seen: set[SimCallback] = set()
    found: set[SimCallback] = set()
    for c in arrivals:
        if c in seen:
            continue
        seen.add(c)
        key = (c.kind, c.subject)
        if key in highest and c.position < highest[key]:
            found.add(c)
        highest[key] = max(highest.get(key, c.position), c.position)
    return found


def _prompt(subject: SimSubject, rng: random.Random) -> list[tuple[SimCallback, int]]:
    """Deliveries soon after each event, in the order of the subject's events."""
    dues, last = [], 0
    for c in subject.callbacks:
        last = max(_time(c) + rng.randrange(50_000_000, 900_000_000), last + 1_000_000)
        dues.append((c, last))
    return dues


def _within_retries(subject: SimSubject, due: dict[SimCallback, int]) -> list[SimCallback]:
    """The callbacks whose next one is delivered before Scrive's last retry would be."""
    pairs = zip(subject.callbacks, subject.callbacks[1:], strict=False)
    return [c for c, after in pairs if due[after] - _time(c) < RETRY[-1] * MIN]


def _retried(at: int, later: int, rng: random.Random) -> int:
    """The first retry after the first try at `at` that lands after `later`."""
    for minutes in RETRY:
        if at + minutes * MIN > later:
            return at + minutes * MIN + rng.randrange(NS)
    return later + rng.randrange(1, 60) * NS  # a later callback was held back too


def _time(c: SimCallback) -> int:
    """When the event happened: event_created, or a document's mtime."""
    return c.position[1] if c.kind == "document" else c.position[0]
