"""The exceptions flowtracker raises, each carrying the HTTP status and error code it maps to.

FlowtrackerError
├── MalformedCallback        a callback that cannot be accepted; kept in quarantine
│   ├── InvalidJSON          400 invalid_json
│   ├── InvalidForm          400 invalid_form
│   ├── RequestTimeout       408 request_timeout (the body came too slowly)
│   ├── PayloadTooLarge      413 payload_too_large
│   ├── UnsupportedMediaType 415 unsupported_media_type
│   └── InvalidEvent         422 invalid_event (details: {field: reason})
├── Unauthorized             401 unauthorized
├── NotFound                 404 not_found
├── MethodNotAllowed         405 method_not_allowed
├── RequestHeadersTooLarge   431 request_headers_too_large (refused before any app ran)
├── InvalidQuery             422 invalid_query (details: {parameter: reason})
├── StorageUnavailable       503 storage_unavailable (the request may be retried)
│   └── TransactionConflict  the database aborted a transaction to keep concurrent ones
│                            apart (PostgreSQL); the pipeline runs it again first
├── UnusableDatabase         the database cannot be used as it is (not flowtracker's,
│                            newer, in need of migrating, absent): the command says why
└── ScriveAPIError           Scrive's API did not answer usefully (reconciliation)
    └── ScriveRefused        401/403 or credentials missing: the run stops
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class FlowtrackerError(Exception):
    """Base of every error flowtracker raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as it is, whatever the subclass's __init__ takes: the writer process
        # sends errors back to the HTTP workers (flowtracker.ingest.writer).
        return _rebuilt, (type(self), self.message, self.details), self.__dict__

    def to_dict(self) -> dict[str, Any]:
        """The one error shape of the API: {"error": {"code", "message", "details"}}."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class MalformedCallback(FlowtrackerError):
    """A callback request that is not well formed; the request is kept in quarantine."""

    status = 400


class InvalidJSON(MalformedCallback):
    status, code = 400, "invalid_json"


class InvalidForm(MalformedCallback):
    status, code = 400, "invalid_form"


class RequestTimeout(MalformedCallback):
    status, code = 408, "request_timeout"


class PayloadTooLarge(MalformedCallback):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(MalformedCallback):
    status, code = 415, "unsupported_media_type"


class InvalidEvent(MalformedCallback):
    """Parseable, but not a valid callback. `details` maps each offending field to why."""

    status, code = 422, "invalid_event"

    def __init__(self, problems: Mapping[str, str]) -> None:
        listed = "; ".join(f"{field}: {why}" for field, why in problems.items())
        super().__init__(f"invalid callback: {listed}", dict(problems))
        self.problems = dict(problems)


class Unauthorized(FlowtrackerError):
    status, code = 401, "unauthorized"


class AdminActionsOff(FlowtrackerError):
    """An action that changes data, asked for over HTTP with no admin token set (SPEC 14)."""

    status, code = 403, "admin_actions_off"


class NotFound(FlowtrackerError):
    status, code = 404, "not_found"


class MethodNotAllowed(FlowtrackerError):
    status, code = 405, "method_not_allowed"


class RequestHeadersTooLarge(FlowtrackerError):
    status, code = 431, "request_headers_too_large"


class InvalidQuery(FlowtrackerError):
    status, code = 422, "invalid_query"

    def __init__(self, problems: Mapping[str, str]) -> None:
        listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
        super().__init__(f"invalid query: {listed}", dict(problems))


class CursorExpired(FlowtrackerError):
    """A change-feed cursor older than what is kept: resynchronise from the read API."""

    status, code = 410, "cursor_expired"


class Pruned(FlowtrackerError):
    """A subject that retention removed (SPEC 14): its final state is in the details."""

    status, code = 410, "pruned"


class StorageUnavailable(FlowtrackerError):
    """The database cannot take the write now; nothing was written, the sender should retry."""

    status, code = 503, "storage_unavailable"


class TransactionConflict(StorageUnavailable):
    """The database aborted the transaction (a serialization failure, a deadlock) so that
    concurrent ones stay apart; running it again from the start will do."""


class UnusableDatabase(FlowtrackerError):
    """The database named cannot be used as it is; retrying will not help. Raised when a
    store opens, so a command reports it in one line before it does anything."""

    status, code = 503, "database_unusable"


class ScriveAPIError(FlowtrackerError):
    """Scrive's API could not answer for a subject (5xx or timeouts after the retries, a
    body that is not what it should be); other subjects may still be asked."""

    status, code = 502, "scrive_api_error"


class ScriveRefused(ScriveAPIError):
    """Scrive's API refused the credentials (401/403), or they are not all set: every
    further request would fail too, so the run stops. Names the settings to check, never
    their values."""

    code = "scrive_api_refused"


def _rebuilt(cls: type[FlowtrackerError], message: str, details: Any) -> FlowtrackerError:
    error = cls.__new__(cls)
    FlowtrackerError.__init__(error, message, details)
    return error
