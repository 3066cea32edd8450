"""RFC 3339 timestamps, kept as written and as integer nanoseconds since the Unix epoch."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>[Zz]|(?P<sign>[+-])(?P<off_hour>\d{2}):(?P<off_minute>\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_NS = 1_000_000_000


class TimestampError(ValueError):
    """The text is not an RFC 3339 timestamp, or names an impossible time."""


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A point in time: the original text and nanoseconds since 1970-01-01T00:00:00Z."""

    text: str
    ns: int


def parse_timestamp(text: str) -> Timestamp:
    """Parse RFC 3339 with any number of fractional digits (past the ninth truncated)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise TimestampError("not an RFC 3339 timestamp (expected YYYY-MM-DDTHH:MM:SS[.f]Z)")
    part = {name: int(value) for name, value in match.groupdict().items() if _digits(value)}
    year, month = part["year"], part["month"]
    _check("year", year, 1, 9999)
    _check("month", month, 1, 12)
    _check("day", part["day"], 1, calendar.monthrange(year, month)[1])
    _check("hour", part["hour"], 0, 23)
    _check("minute", part["minute"], 0, 59)
    _check("second", part["second"], 0, 59)
    offset = 0
    if match["sign"]:
        _check("offset hour", part["off_hour"], 0, 23)
        _check("offset minute", part["off_minute"], 0, 59)
        offset = (part["off_hour"] * 60 + part["off_minute"]) * 60
        offset = -offset if match["sign"] == "-" else offset
    days = date(year, month, part["day"]).toordinal() - _EPOCH_ORDINAL
    seconds = days * 86_400 + part["hour"] * 3_600 + part["minute"] * 60 + part["second"]
    fraction = int((match["fraction"] or "").ljust(9, "0")[:9])
    return Timestamp(text, (seconds - offset) * _NS + fraction)


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds, for times we record."""
    seconds, rest = divmod(ns, _NS)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _digits(value: str | None) -> bool:
    return value is not None and value.isdigit()


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise TimestampError(f"{name} must be in {low}..{high} (got {value})")
