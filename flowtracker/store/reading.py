"""The read half of a store, shared by the backends: each read opens one read transaction
(`_reading`) and hands it to the function of the same name in the backend's `queries`
module, which answers the rows of `store.rows`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Literal

from flowtracker.engine.events import Kind
from flowtracker.store.protocol import ActivityKey, SubjectFilter
from flowtracker.store.rows import AnomalyRow, EventRow, QuarantineRow, SubjectRow, Totals


class QueryReads:
    """`Store`'s reads, for a backend that sets `queries` and implements `_reading`."""

    queries: ModuleType  # the backend's module of read queries

    def _reading(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def subject_ids(self, kind: Kind, after: str, limit: int) -> list[str]:
        with self._reading() as read:
            found: list[str] = self.queries.subject_ids(read, kind, after, limit)
            return found

    def subject_history(
        self, kind: Kind, subject_id: str
    ) -> tuple[SubjectRow, list[EventRow]] | None:
        with self._reading() as read:
            found: tuple[SubjectRow, list[EventRow]] | None
            found = self.queries.subject_history(read, kind, subject_id)
            return found

    def list_subjects(
        self, kind: Kind, where: SubjectFilter, after: int | ActivityKey | None, limit: int
    ) -> list[SubjectRow]:
        with self._reading() as read:
            found: list[SubjectRow] = self.queries.list_subjects(read, kind, where, after, limit)
            return found

    def id_match(self, kind: Kind, prefix: str) -> Literal["whole", "prefix"] | None:
        with self._reading() as read:
            found: Literal["whole", "prefix"] | None = self.queries.id_match(read, kind, prefix)
            return found

    def quietest(self, received_before: str, limit: int) -> list[SubjectRow]:
        with self._reading() as read:
            found: list[SubjectRow] = self.queries.quietest(read, received_before, limit)
            return found

    def totals(self, stuck_before: str) -> Totals:
        with self._reading() as read:
            found: Totals = self.queries.totals(read, stuck_before)
            return found

    def quarantined(
        self, before: tuple[str, str] | None, limit: int, body_limit: int | None = None,
        code: str | None = None, body_hash: str | None = None,
    ) -> list[QuarantineRow]:  # fmt: skip
        with self._reading() as read:
            found: list[QuarantineRow] = self.queries.quarantined(
                read, before, limit, body_limit, code, body_hash
            )
            return found

    def quarantined_body(self, body_hash: str) -> bytes | None:
        with self._reading() as read:
            found: bytes | None = self.queries.quarantined_body(read, body_hash)
            return found

    def pulse(self, subject: tuple[Kind, str] | None = None) -> str:
        with self._reading() as read:
            found: str = self.queries.pulse(read, subject)
            return found

    def anomalies(self, limit: int) -> list[AnomalyRow]:
        with self._reading() as read:
            found: list[AnomalyRow] = self.queries.anomalies(read, limit)
            return found

    def received_since(self, minute: str) -> dict[str, int]:
        with self._reading() as read:
            found: dict[str, int] = self.queries.received_since(read, minute)
            return found
