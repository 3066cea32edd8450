"""Log line formats: plain text like uvicorn's, or one JSON object per line for machines.

`JSONFormatter` is what `flowtracker serve --log-format json` puts on every handler. A
record's `fields` (a dict passed as `extra={"fields": ...}`, as the callback log line
does) become keys of the object; uvicorn's access lines get theirs from the record's args.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


class PlainFormatter(logging.Formatter):
    """uvicorn's layout, `INFO:     message`, for flowtracker's loggers: without uvicorn's
    copy of each record and colours, as there is a line for every callback."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"{record.levelname + ':':<9} {record.message}"


class JSONFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields}` on one line, UTF-8, no colours."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


def lighten() -> None:
    """Leave out of every log record what no line shows: the caller's file and line, the
    thread and process names (the logging HOWTO's "Optimization"). About 4 µs less per
    callback line; for the processes `serve` runs."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = record.__dict__.get("fields")
    if isinstance(fields, dict):
        return fields
    # uvicorn's access line: (client, method, path, http version, status), already
    # passed through the RedactTokens filter of its logger.
    args = record.args
    if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
        return dict(zip(_ACCESS_FIELDS, args, strict=True))
    return {}


def _utc(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
