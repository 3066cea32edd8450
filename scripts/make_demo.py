"""Generate a deterministic demo stream of Scrive callbacks as JSON Lines.

Each output line is one callback body exactly as it would arrive over HTTP (compact JSON):
Flow callbacks are Scrive's Flow event objects; document callbacks are objects with
``document_id``, ``document_signed_and_sealed`` (boolean) and ``document_json`` (an object).
Lines are in delivery order, which includes Scrive-like retries: duplicate deliveries of the
same body and events delivered after newer events of the same instance.

Usage: python scripts/make_demo.py [--seed 2026] [--instances 40] [--output data/demo.jsonl]
Running it twice with the same arguments gives byte-identical output.
"""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

from flowtracker.scrive.payloads import (
    MIN,
    NAMES,
    NS,
    PROVIDERS,
    RETRY,
    STAGES,
    START,
    USERS,
    Draw,
    Event,
    new_document,
    timestamp_seconds,
)


class Gen(Draw):
    def instance(self, kind: str) -> tuple[str, list[Event]]:
        """One Flow instance ending with `kind` (a terminal type, or 'in_progress')."""
        r, iid = self.rng, self.uuid()
        t = START + r.randrange(4 * 24 * 60) * MIN
        users = r.sample(USERS, r.randint(1, 3))
        events: list[Event] = []
        if r.random() < 0.6:
            t = self.step(t, 0, 2)
            events.append(self.flow_event(t, iid, "custom", callback_name=STAGES[0]))
        for i, user in enumerate(users):
            t = self.step(t, 5, 240)
            provider = r.choice(PROVIDERS)
            for _ in range(r.choice([0, 0, 0, 1, 2])):
                events.append(self.auth(t, iid, user, provider, False))
                t = self.step(t, 0.5, 10)
            if kind == "max_failures" and i == 0:
                for _ in range(3):
                    events.append(self.auth(t, iid, user, provider, False))
                    t = self.step(t, 0.5, 5)
                events.append(
                    self.flow_event(
                        t,
                        iid,
                        "authentication_max_failures_exceeded",
                        user_name=user,
                        provider=provider,
                    )
                )
                kind = r.choice(["failed", "timed_out", "in_progress"])
                break
            events.append(self.auth(t, iid, user, provider, True))
            if r.random() < 0.5:
                t = self.step(t, 1, 30)
                events.append(self.flow_event(t, iid, "custom", callback_name=r.choice(STAGES[1:])))
        if kind == "in_progress":
            return iid, events
        t = self.step(t, 10 if kind != "timed_out" else 7 * 24 * 60, 600)
        if kind == "completed":
            for _ in range(r.choice([1, 1, 1, 2, 3])):  # one `completed` per document
                events.append(self.flow_event(t, iid, "completed"))
                t = self.step(t, 0, 0.05)
            if r.random() < 0.25:  # a participant views the archived documents later
                t = self.step(t, 60, 2000)
                events.append(self.auth(t, iid, r.choice(users), "se_bank_id", True))
        elif kind == "flow_rejected":
            extra: dict[str, Any] = {"user_name": r.choice(users)}
            if r.random() < 0.7:
                extra["message"] = r.choice(
                    [
                        "Sorry, I don't want to sign this",
                        "The rent is wrong on page 2.",
                        "Fel personnummer",
                    ]
                )
            if r.random() < 0.5:
                extra["document_name"] = r.choice(["doc1", "doc2", "lease-agreement"])
            events.append(self.flow_event(t, iid, "flow_rejected", **extra))
        else:
            events.append(self.flow_event(t, iid, kind))
        return iid, events

    def documents(self) -> list[tuple[str, list[Event]]]:
        """Document snapshots with growing object_version (t is mtime in ns)."""
        r, out = self.rng, []
        plans = [  # (status, object_version, sealed) per snapshot
            [
                ("preparation", 1, False),
                ("pending", 2, False),
                ("pending", 3, False),
                ("closed", 5, False),
                ("closed", 5, True),
            ],
            [("preparation", 1, False), ("pending", 2, False), ("canceled", 3, False)],
            [("pending", 2, False), ("rejected", 3, False)],
            [
                ("pending", 2, False),
                ("timedout", 3, False),
                ("pending", 3, False),
                ("closed", 5, True),
            ],
            [("pending", 2, False), ("pending", 4, False), ("closed", 6, True)],
            [("pending", 2, False), ("closed", 4, True), ("closed", 4, True)],  # seal extension
        ]
        for n, plan in enumerate(plans):
            did = str(r.randrange(9_221_714_692_413_000_000, 9_221_714_692_414_000_000))
            t = START + r.randrange(3 * 24 * 60) * MIN
            people = r.sample(NAMES, 2)
            title = f"Agreement {r.randrange(1000, 9999)}"
            doc = new_document(did, title, people, t, [{"name": "demo", "value": str(n)}])
            snaps: list[Event] = []
            deadline = 0
            for status, version, sealed in plan:
                t = self.step(t, 20, 300) // NS * NS
                if status == "timedout":  # Scrive's timeout job runs just after timeout_time
                    t = deadline + r.randrange(5, 300) * NS
                parties = doc["parties"]
                if (status == "pending" and doc["timeout_time"] is None) or doc[
                    "status"
                ] == "timedout":
                    deadline = t + 14 * 24 * 60 * MIN
                    doc["timeout_time"] = timestamp_seconds(deadline)
                if status == "pending" and version > 2:
                    parties[0]["seen_time"] = parties[0]["sign_time"] = timestamp_seconds(t - MIN)
                if status == "closed":
                    for p in parties:
                        p["seen_time"] = p["seen_time"] or timestamp_seconds(t - 9 * MIN)
                        p["sign_time"] = p["sign_time"] or timestamp_seconds(t - MIN)
                if status == "rejected":
                    parties[1].update(
                        rejected_time=timestamp_seconds(t), rejection_reason="Wrong address"
                    )
                if sealed:
                    doc["sealed_file"] = {
                        "id": str(int(did) + 40 + len(snaps)),
                        "name": "agreement_sealed.pdf",
                    }
                doc.update(status=status, object_version=version, mtime=timestamp_seconds(t))
                snaps.append(
                    (
                        t,
                        {
                            "document_id": did,
                            "document_signed_and_sealed": sealed,
                            "document_json": copy.deepcopy(doc),
                        },
                    )
                )
            out.append((did, snaps))
        return out


def build(seed: int, instances: int) -> list[dict[str, Any]]:
    """Return the callback bodies in delivery order."""
    g = Gen(seed)
    r = g.rng
    kinds = (
        ["completed"] * 21
        + ["max_failures"] * 2
        + ["flow_rejected"] * 4
        + ["cancelled"] * 3
        + ["timed_out"] * 3
        + ["failed"] * 2
        + ["in_progress"] * 5
    )
    plan = [kinds[i % len(kinds)] for i in range(instances)]
    r.shuffle(plan)
    subjects = [g.instance(kind) for kind in plan]
    open_ = [s for s, k in zip(subjects, plan, strict=True) if k == "in_progress"] or subjects[:2]
    special: set[int] = set()  # ids of bodies whose delivery is fixed below

    deliveries: list[tuple[int, int, dict[str, Any]]] = []  # (delivery ns, seq, body)
    seq = iter(range(10**9))

    def deliver(t: int, body: dict[str, Any]) -> None:
        deliveries.append((t, next(seq), body))

    # The spec's example: `cancelled`@t2 delivered first, `completed`@t1 < t2 arrives later.
    iid, evs = g.instance("in_progress")
    t1 = g.step(evs[-1][0], 30, 60)
    t2 = g.step(t1, 1, 3)
    (_, completed), (_, cancelled) = (
        g.flow_event(t1, iid, "completed"),
        g.flow_event(t2, iid, "cancelled"),
    )
    subjects.append((iid, evs))
    deliver(t2 + 200_000_000, cancelled)
    deliver(t1 + RETRY[1] * MIN, completed)  # Scrive's second retry of `completed`
    special |= {id(completed), id(cancelled)}
    print(f"reorder example (cancelled@t2 first, completed@t1 later): {iid}")
    # An illegal sequence in event time: `completed`, then `cancelled` an hour later.
    iid, evs = g.instance("completed")
    evs.append(g.flow_event(g.step(evs[-1][0], 60, 61), iid, "cancelled"))
    subjects.append((iid, evs))
    print(f"illegal sequence (completed then cancelled): {iid}")
    # Forward compatibility: an unknown type and an unknown version.
    iid, evs = open_[0]
    evs.append(g.flow_event(g.step(evs[-1][0], 1, 5), iid, "signatory_opened", user_name="user1"))
    iid, evs = open_[-1]
    t, body = g.flow_event(g.step(evs[-1][0], 1, 5), iid, "custom", callback_name="stage-3-entered")
    evs.append((t, {**body, "version": 2, "stage": {"name": "stage-3", "index": 3}}))

    docs = g.documents()
    subjects += docs
    late_doc = docs[4][1][1][1]  # the `pending` v4 snapshot arrives after `closed`
    deliver(docs[4][1][2][0] + RETRY[2] * MIN, late_doc)
    special.add(id(late_doc))

    events = [(t, body, evs) for _, evs in subjects for t, body in evs]
    for t, body, evs in events:
        if id(body) in special:
            continue
        nxt = [u for u, _ in evs if u > t]
        if (
            nxt and "type" in body and r.random() < 0.18
        ):  # failed delivery: a retry lands after a newer event
            delay = next((m for m in RETRY if t + m * MIN > min(nxt)), RETRY[-1])
            deliver(t + delay * MIN + r.randrange(NS), body)
        else:
            deliver(t + r.randrange(50_000_000, 900_000_000), body)
    first = list(deliveries)
    for t, _, body in r.sample(first, round(0.15 * len(first))):  # 2xx lost: same body again
        deliver(t + r.choice(RETRY[:4]) * MIN + r.randrange(NS), body)
    dup_doc = docs[0][1][2][1]
    deliver(docs[0][1][2][0] + RETRY[0] * MIN, dup_doc)  # at least one duplicate snapshot
    deliveries.sort(key=lambda d: (d[0], d[1]))
    return [body for _, _, body in deliveries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--output", default="data/demo.jsonl")
    args = ap.parse_args()
    bodies = build(args.seed, args.instances)
    with open(args.output, "w", encoding="utf-8", newline="\n") as f:
        for body in bodies:
            f.write(json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {len(bodies)} callbacks to {args.output}")


if __name__ == "__main__":
    main()
