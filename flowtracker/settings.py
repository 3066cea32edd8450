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
}


class SettingsError(ValueError):
    """A setting has a value flowtracker cannot use; the message names it."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the service is configured with. Tokens are hidden from repr."""

    db_path: str = "flowtracker.db"
    callback_token: str | None = None
    read_token: str | None = None
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

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        for secret in ("callback_token", "read_token"):
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
            _ENVIRONMENT[f.name]: str(getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) is not None
        }

    def but(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _convert(name: str, raw: str, kind: Any) -> Any:
    if kind != "int":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{_ENVIRONMENT[name]} must be a whole number, not {raw!r}") from None
