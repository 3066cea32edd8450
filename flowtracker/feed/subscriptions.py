"""Webhook subscriptions (SPEC 12): what `flowtracker webhooks` does to them, how a
delivery is signed, and how a subscription is shown (never its secret, after `add`)."""

from __future__ import annotations

import base64
import os
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from standardwebhooks import Webhook

from flowtracker.engine.events import Kind
from flowtracker.engine.timestamps import format_ns, parse_timestamp
from flowtracker.errors import FlowtrackerError, NotFound
from flowtracker.reads.changes import change
from flowtracker.store.protocol import Store
from flowtracker.store.rows import ChangeRow, SubscriptionRow

ROTATED_SIGNS_FOR_NS = 24 * 3_600 * 1_000_000_000  # the old secret signs alongside this long


class InvalidSubscription(FlowtrackerError):
    status, code = 422, "invalid_subscription"


def new_secret() -> str:
    """`whsec_` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def checked_url(url: str) -> str:
    """A URL a webhook can be POSTed to, or `InvalidSubscription` saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSubscription(
            f"the webhook URL must be http:// or https:// with a host (got {shown_url(url)!r})"
        )
    return url


def shown_url(url: str) -> str:
    """A URL with any password in it masked: how lists, logs and errors show it."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def add(
    store: Store, url: str, kinds: Sequence[Kind], *, from_start: bool, now_ns: int | None = None
) -> SubscriptionRow:
    """A new subscription with a new secret (the only time the secret is shown)."""
    at = format_ns(time.time_ns() if now_ns is None else now_ns)
    id_ = "sub_" + secrets.token_hex(8)
    return store.add_subscription(
        id_, checked_url(url), kinds, new_secret(), from_start=from_start, at=at
    )


def found(store: Store, id_: str) -> SubscriptionRow:
    subscription = store.subscription(id_)
    if subscription is None:
        raise NotFound(f"no webhook subscription {id_!r} (`flowtracker webhooks list`)")
    return subscription


def rotate(store: Store, id_: str, now_ns: int | None = None) -> str:
    """A new secret; the one it replaces goes on signing alongside for 24 h."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    old = found(store, id_)
    secret = new_secret()
    store.change_subscription(
        id_, secret=secret, old_secret=old.secret,
        old_secret_until=format_ns(now_ns + ROTATED_SIGNS_FOR_NS),
    )  # fmt: skip
    return secret


def pause(store: Store, id_: str, paused: bool) -> None:
    found(store, id_)
    values: dict[str, Any] = {"paused": paused}
    if not paused:  # resumed: the next attempt at once
        values["next_attempt_ns"] = 0
    store.change_subscription(id_, **values)


def replay(store: Store, id_: str, from_seq: int) -> int:
    """Deliver again every change from `from_seq` on that is still kept; the position set."""
    found(store, id_)
    _, pruned = store.change_clock()
    position = max(from_seq - 1, pruned)
    store.change_subscription(id_, position=position, failures=0, next_attempt_ns=0)
    return position


def first_since(store: Store, since_ns: int) -> int:
    """The first `seq` committed at or after `since_ns` (for `replay --since`)."""
    first = store.first_change_since(format_ns(since_ns))
    return store.change_clock()[0] + 1 if first is None else first


def view(subscription: SubscriptionRow, last_change: int) -> dict[str, Any]:
    """A subscription as `webhooks list --json`, /metrics and the dashboard show it."""
    return {
        "id": subscription.id,
        "url": shown_url(subscription.url),
        "kinds": list(subscription.kinds),
        "delivered_seq": subscription.position,
        "lag": max(0, last_change - subscription.position),
        "paused": subscription.paused,
        "delivered": subscription.delivered,
        "failed": subscription.failed,
        "failures_in_a_row": subscription.failures,
        "next_attempt_at": (
            format_ns(subscription.next_attempt_ns) if subscription.next_attempt_ns else None
        ),
        "last_attempt_at": subscription.last_attempt_at,
        "last_status": subscription.last_status,
        "last_error": subscription.last_error,
        "created_at": subscription.created_at,
    }


def body(row: ChangeRow, now_ns: int) -> bytes:
    """What a delivery POSTs: `{"type": "state.changed", "timestamp", "data": change}`."""
    return orjson.dumps(
        {"type": "state.changed", "timestamp": format_ns(now_ns), "data": change(row)}
    )


def signed_headers(
    subscription: SubscriptionRow, row: ChangeRow, payload: bytes, now_ns: int
) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: the change's id (the same on every
    retry), this attempt's time, and a signature by each secret still signing."""
    msg_id = f"chg_{row.seq}"
    moment = datetime.fromtimestamp(now_ns // 1_000_000_000, tz=UTC)
    keys = [subscription.secret]
    if subscription.old_secret and subscription.old_secret_until and (
        parse_timestamp(subscription.old_secret_until).ns > now_ns
    ):  # fmt: skip
        keys.append(subscription.old_secret)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now_ns // 1_000_000_000),
        "webhook-signature": " ".join(Webhook(key).sign(msg_id, moment, payload) for key in keys),
    }
