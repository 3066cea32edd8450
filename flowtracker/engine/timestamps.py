"""RFC 3339 timestamps, kept as written and as integer nanoseconds since the Unix epoch."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from flowtracker.errors import InvalidQuery

_RFC3339 = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d+))?"
    r"(?P<zone>[Zz]|(?P<sign>[+-])(?P<off_hour>\d{2}):(?P<off_minute>\d{2}))",
    re.ASCII,
)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NS = 1_000_000_000
_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_EARLIEST, _LATEST = -(2**63), 2**63 - 1
_RANGE = "1677-09-21T00:12:43.145224192Z and 2262-04-11T23:47:16.854775807Z"


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
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    days = _days_since_epoch(year, month, day)
    _check("hour", hour, 0, 23)
    _check("minute", minute, 0, 59)
    _check("second", second, 0, 59)
    offset = 0
    if match["sign"]:
        off_hour, off_minute = int(match["off_hour"]), int(match["off_minute"])
        _check("offset hour", off_hour, 0, 23)
        _check("offset minute", off_minute, 0, 59)
        offset = (off_hour * 60 + off_minute) * 60 * (-1 if match["sign"] == "-" else 1)
    seconds = days * 86_400 + hour * 3_600 + minute * 60 + second
    fraction = int((match["fraction"] or "").ljust(9, "0")[:9])
    ns = (seconds - offset) * _NS + fraction
    if not _EARLIEST <= ns <= _LATEST:
        raise TimestampError(f"must be between {_RANGE} (nanoseconds stored in 64 bits)")
    return Timestamp(text, ns)


@lru_cache(maxsize=4096)
def _days_since_epoch(year: int, month: int, day: int) -> int:
    """The checked date as days since 1970-01-01 (callbacks of a day share it: cached)."""
    _check("year", year, 1, 9999)
    _check("month", month, 1, 12)
    _check("day", day, 1, 29 if month == 2 and calendar.isleap(year) else _DAYS[month])
    return date(year, month, day).toordinal() - _EPOCH_ORDINAL


def format_ns(ns: int) -> str:
    """Nanoseconds since the epoch as RFC 3339 UTC with microseconds, for times we record."""
    seconds, rest = divmod(ns, _NS)
    moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(ns: int) -> str:
    """Nanoseconds since the epoch as the one spelling of that instant: RFC 3339 in UTC
    with `Z`, the fraction to nanoseconds without trailing zeros (`...17.33235092Z`,
    `...10:00:00Z`). For what is shown of a subject, whatever spelling arrived."""
    seconds, rest = divmod(ns, _NS)
    fraction = f".{rest:09d}".rstrip("0") if rest else ""
    return f"{_whole_seconds(seconds)}{fraction}Z"


@lru_cache(maxsize=4096)
def _whole_seconds(seconds: int) -> str:
    """(Events of one subject come seconds apart, in bursts: cached.)"""
    return f"{_EPOCH + timedelta(seconds=seconds):%Y-%m-%dT%H:%M:%S}"


def _check(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise TimestampError(f"{name} must be in {low}..{high} (got {value})")


_DAY_NS = 86_400 * 1_000_000_000


def moment(text: str, name: str, *, end_of_day: bool = False) -> str:
    """A time given as a date (2026-01-31: midnight UTC, or with `end_of_day` the midnight
    after, for the end of a range) or in RFC 3339, spelled as stored times are (they
    compare as text); `InvalidQuery` names the field `name` otherwise."""
    day = len(text) == 10
    full = f"{text}T00:00:00Z" if day else text
    try:
        return format_ns(parse_timestamp(full).ns + (_DAY_NS if day and end_of_day else 0))
    except TimestampError as error:
        raise InvalidQuery({name: f"must be a date or an RFC 3339 time: {error}"}) from None
