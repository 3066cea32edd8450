"""Settings: one frozen value, built once from flags and FLOWTRACKER_* environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

Durability = Literal["full", "normal"]
LogFormat = Literal["plain", "json"]

_ENVIRONMENT = {
    "db_path": "FLOWTRACKER_DB",
    "callback_token": "FLOWTRACKER_CALLBACK_TOKEN",
    "read_token": "FLOWTRACKER_READ_TOKEN",
    "admin_token": "FLOWTRACKER_ADMIN_TOKEN",
    "max_body": "FLOWTRACKER_MAX_BODY",
    "stuck_age_seconds": "FLOWTRACKER_STUCK_AGE",
    "durability": "FLOWTRACKER_DURABILITY",
    "busy_timeout_ms": "FLOWTRACKER_BUSY_TIMEOUT_MS",
    "retry_after_seconds": "FLOWTRACKER_RETRY_AFTER",
    "batch_max": "FLOWTRACKER_BATCH_MAX",
    "batch_wait_ms": "FLOWTRACKER_BATCH_WAIT_MS",
    "body_timeout_seconds": "FLOWTRACKER_BODY_TIMEOUT",
    "head_timeout_seconds": "FLOWTRACKER_HEAD_TIMEOUT",
    "max_head": "FLOWTRACKER_MAX_HEAD",
    "log_format": "FLOWTRACKER_LOG_FORMAT",
    "change_retention_seconds": "FLOWTRACKER_CHANGE_RETENTION",
    "feed_buffer": "FLOWTRACKER_FEED_BUFFER",
    "feed_keepalive_seconds": "FLOWTRACKER_FEED_KEEPALIVE",
    "feed_send_timeout_seconds": "FLOWTRACKER_FEED_SEND_TIMEOUT",
    "webhook_backoff": "FLOWTRACKER_WEBHOOK_BACKOFF",
    "webhook_timeout_seconds": "FLOWTRACKER_WEBHOOK_TIMEOUT",
    "webhook_lease_seconds": "FLOWTRACKER_WEBHOOK_LEASE",
    "webhook_poll_seconds": "FLOWTRACKER_WEBHOOK_POLL",
    "scrive_url": "FLOWTRACKER_SCRIVE_URL",
    "scrive_flow_path": "FLOWTRACKER_SCRIVE_FLOW_PATH",
    "scrive_api_token": "FLOWTRACKER_SCRIVE_API_TOKEN",
    "scrive_api_secret": "FLOWTRACKER_SCRIVE_API_SECRET",
    "scrive_access_token": "FLOWTRACKER_SCRIVE_ACCESS_TOKEN",
    "scrive_access_secret": "FLOWTRACKER_SCRIVE_ACCESS_SECRET",
    "scrive_rate": "FLOWTRACKER_SCRIVE_RATE",
    "scrive_timeout_seconds": "FLOWTRACKER_SCRIVE_TIMEOUT",
    "reconcile_every_seconds": "FLOWTRACKER_RECONCILE_EVERY",
    "retention_seconds": "FLOWTRACKER_RETENTION",
}
# Scrive's personal access credentials (SPEC 13): never shown, logged or printed.
SCRIVE_CREDENTIALS = ("scrive_api_token", "scrive_api_secret", "scrive_access_token",
                      "scrive_access_secret")  # fmt: skip
SECRETS = ("callback_token", "read_token", "admin_token", *SCRIVE_CREDENTIALS)
# Settings that take a duration: "90" (seconds), "30s", "15m", "2h", "30d", "1.5h".
_DURATIONS = frozenset({"change_retention_seconds", "feed_keepalive_seconds",
                        "feed_send_timeout_seconds", "webhook_timeout_seconds",
                        "webhook_lease_seconds", "webhook_poll_seconds",
                        "scrive_timeout_seconds", "reconcile_every_seconds",
                        "retention_seconds"})  # fmt: skip
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 7 * 86_400}


class SettingsError(ValueError):
    """A setting has a value flowtracker cannot use; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service is configured with. Tokens are hidden from repr."""

    db_path: str = "flowtracker.db"
    callback_token: str | None = None
    read_token: str | None = None
    admin_token: str | None = None  # the quarantine's actions over HTTP (SPEC 14)
    max_body: int = 1024 * 1024
    stuck_age_seconds: int = 7 * 86_400
    durability: Durability = "full"
    busy_timeout_ms: int = 5_000
    retry_after_seconds: int = 30
    batch_max: int = 500  # callbacks per group-commit transaction, at most
    batch_wait_ms: int = 0  # wait to gather a batch when idle (0: commit at once)
    body_timeout_seconds: int = 30  # a body must arrive within this, or 408
    head_timeout_seconds: int = 10  # a request line and headers likewise (`serve` only)
    max_head: int = 32 * 1024  # bytes of request line and headers, else 431 (`serve` only)
    log_format: LogFormat = "plain"  # json: one JSON object per log line
    # The change feed (SPEC 11) and webhooks (SPEC 12).
    change_retention_seconds: float = 30 * 86_400  # changes kept at least this long
    feed_buffer: int = 1_000  # changes a slow feed client may fall behind, then dropped
    feed_keepalive_seconds: float = 15.0  # a comment line on an idle feed this often
    feed_send_timeout_seconds: float = 10.0  # a feed client that takes no bytes: dropped
    # The waits after a webhook delivery's 1st, 2nd, ... failure (the last repeats),
    # each with up to a fifth of jitter.
    webhook_backoff: str = "5s,30s,2m,10m,30m,1h"
    webhook_timeout_seconds: float = 10.0  # a delivery not answered 2xx within: failed
    webhook_lease_seconds: float = 30.0  # a receiver that dies: another takes over after
    webhook_poll_seconds: float = 5.0  # new, changed or removed subscriptions seen within
    # Reconciliation with Scrive's API (SPEC 13).
    scrive_url: str = "https://scrive.com"
    scrive_flow_path: str = "/experimental/flow"  # newer Scrive versions moved it
    scrive_api_token: str | None = None
    scrive_api_secret: str | None = None
    scrive_access_token: str | None = None
    scrive_access_secret: str | None = None
    scrive_rate: float = 5.0  # requests a second, at most
    scrive_timeout_seconds: float = 10.0  # a request not answered within: retried
    reconcile_every_seconds: float | None = None  # `serve`: the --stuck pass this often
    retention_seconds: float | None = None  # `serve`: prune what is finished and this old

    def __post_init__(self) -> None:
        positive = ("max_body", "stuck_age_seconds", "busy_timeout_ms", "retry_after_seconds",
                    "batch_max", "body_timeout_seconds", "head_timeout_seconds",
                    "max_head")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise SettingsError(f"{_ENVIRONMENT[name]} must be a positive whole number")
        if self.batch_wait_ms < 0:
            raise SettingsError("FLOWTRACKER_BATCH_WAIT_MS must be 0 or more")
        if self.durability not in ("full", "normal"):
            raise SettingsError("FLOWTRACKER_DURABILITY must be full or normal")
        if self.log_format not in ("plain", "json"):
            raise SettingsError("FLOWTRACKER_LOG_FORMAT must be plain or json")
        if self.admin_token is not None and self.admin_token == self.read_token:
            raise SettingsError(  # the read token must never suffice for the actions (SPEC 14)
                "FLOWTRACKER_ADMIN_TOKEN must differ from FLOWTRACKER_READ_TOKEN: every "
                "reader could retry and delete quarantined requests"
            )
        for name in (*_DURATIONS, "feed_buffer", "scrive_rate"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise SettingsError(f"{_ENVIRONMENT[name]} must be more than 0")
        self.backoff_seconds()  # a list it can read

    def backoff_seconds(self) -> list[float]:
        """`webhook_backoff` in seconds."""
        try:
            waits = [duration(part) for part in self.webhook_backoff.split(",")]
        except ValueError:
            waits = []
        if not waits or min(waits) <= 0:
            raise SettingsError(
                "FLOWTRACKER_WEBHOOK_BACKOFF must be durations separated by commas, "
                f"such as 5s,30s,2m (got {self.webhook_backoff!r})"
            )
        return waits

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in SECRETS:
            shown[secret] = "<set>" if shown[secret] else None
        shown["db_path"] = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", self.db_path)
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Defaults, overridden by FLOWTRACKER_* variables, overridden by flags not None."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = environ.get(_ENVIRONMENT[field.name])
            if raw:
                values[field.name] = _convert(field.name, raw, field.type)
        values.update({name: value for name, value in flags.items() if value is not None})
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The variables that rebuild these settings (for uvicorn's worker processes)."""
        return {
            _ENVIRONMENT[f.name]: _spelled(f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def but(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _spelled(name: str, value: Any) -> str:
    """A setting as its variable takes it back: a duration with its unit, in plain digits."""
    return f"{format(value, 'f').rstrip('0').rstrip('.')}s" if name in _DURATIONS else str(value)


def duration(text: str) -> float:
    """Seconds in a duration, written with its unit (SPEC 14): "30s", "15m", "2h", "30d",
    "1w", "1.5h". A bare number is refused: is "400" seconds or days?"""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        bare = text.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", bare):
            raise ValueError(f"{bare!r} needs a unit: s, m, h, d or w (e.g. {bare}s or {bare}d)")
        raise ValueError(f"not a duration: {text!r} (try 30s, 15m, 2h or 30d)")
    return float(match[1]) * _UNITS[match[2]]


def _convert(name: str, raw: str, kind: Any) -> Any:
    if name in _DURATIONS:
        try:
            return duration(raw)
        except ValueError as error:
            raise SettingsError(f"{_ENVIRONMENT[name]}: {error}") from None
    if kind == "float":
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{_ENVIRONMENT[name]} must be a number, not {raw!r}") from None
    if kind != "int":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{_ENVIRONMENT[name]} must be a whole number, not {raw!r}") from None
