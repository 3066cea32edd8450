"""What Scrive sends, in pieces: timestamps, Flow events, document JSON, the retry schedule.

Shared by the simulator (`scenarios`) and `scripts/make_demo.py`; every random choice is
drawn from one seeded generator, so the same seed gives the same pieces.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

NS = 1_000_000_000
MIN = 60 * NS
DAY = 24 * 60 * MIN
START = int(datetime(2026, 10, 1, 7, 0, tzinfo=UTC).timestamp()) * NS
RETRY_WAITS = (5, 10, 30, 60, 120, 240, 240, 240, 480)  # minutes after failed tries 1 to 9
RETRY = tuple(accumulate(RETRY_WAITS))  # minutes from the first try to each retry
USERS = ["user1", "user2", "applicant", "co_applicant", "advisor"]
PROVIDERS = ["sms_otp", "se_bank_id", "no_bank_id", "dk_mitid", "fi_ftn", "onfido", "sms_pin"]
STAGES = ["stage-1-entered", "stage-2-entered", "kyc-done", "documents-sent", "review-started"]
NAMES = [
    ("Erik", "Lindqvist"),
    ("Åsa", "Berg"),
    ("Johan", "Nyström"),
    ("Maria", "Ek"),
    ("Lars", "Sørensen"),
    ("Anna", "Virtanen"),
    ("Olof", "Dahl"),
    ("Sara", "Öberg"),
]
Event = tuple[int, dict[str, Any]]  # (event time in ns, body)


def compact(value: dict[str, Any]) -> str:
    """JSON as Scrive writes it: no spaces, and UTF-8 left as it is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def timestamp(ns: int) -> str:
    """RFC 3339 UTC with nine fractional digits, as in Flow callbacks."""
    secs = datetime.fromtimestamp(ns // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{secs}.{ns % NS:09d}Z"


def timestamp_seconds(ns: int) -> str:
    """RFC 3339 UTC to the second, as in Scrive document JSON."""
    return datetime.fromtimestamp(ns // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Draw:
    """Random pieces of Scrive callbacks, all from one seeded generator."""

    def __init__(self, seed: int | str) -> None:
        self.rng = random.Random(seed)  # noqa: S311 - reproducible traffic, not secrets

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def step(self, t: int, lo_min: float, hi_min: float) -> int:
        """Advance t by a random number of minutes, with random nanoseconds."""
        return t + int(self.rng.uniform(lo_min, hi_min) * MIN) + self.rng.randrange(NS)

    def flow_event(self, t: int, iid: str, typ: str, **extra: Any) -> Event:
        body = {"type": typ, "version": 1, "event_created": timestamp(t), "flow_instance_id": iid}
        return t, {**body, **extra}

    def auth(self, t: int, iid: str, user: str, provider: str, ok: bool) -> Event:
        extra: dict[str, Any] = {
            "result": "success" if ok else "failure",
            "provider": provider,
            "user_name": user,
        }
        if provider != "sms_pin":
            extra["eid_transaction_id"] = self.uuid()
        if provider == "onfido":
            extra["provider_data"] = {"applicant_id": self.uuid()}
        return self.flow_event(t, iid, "authentication_attempted", **extra)


def new_document(
    did: str, title: str, people: Sequence[tuple[str, str]], t: int, tags: list[dict[str, str]]
) -> dict[str, Any]:
    """The JSON of a document in preparation, created at `t`, with a signing party each."""
    return {
        "id": did,
        "title": title,
        "parties": [
            {
                "id": str(int(did) + 11 + i),
                "signatory_role": "signing_party",
                "sign_order": 1,
                "fields": [
                    {"type": "name", "order": 1, "value": first},
                    {"type": "name", "order": 2, "value": last},
                    {"type": "email", "value": f"{first.lower()}.{i}@example.com"},
                ],
                "sign_time": None,
                "seen_time": None,
                "rejected_time": None,
                "rejection_reason": None,
            }
            for i, (first, last) in enumerate(people)
        ],
        "file": {"id": str(int(did) + 3), "name": "agreement.pdf"},
        "sealed_file": None,
        "ctime": timestamp_seconds(t),
        "mtime": timestamp_seconds(t),
        "timeout_time": None,
        "status": "preparation",
        "days_to_sign": 14,
        "lang": "en",
        "object_version": 1,
        "is_template": False,
        "is_trashed": False,
        "is_deleted": False,
        "tags": tags,
    }
