"""Scrive callbacks as immutable values: Flow events and document snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from flowtracker.engine.timestamps import Timestamp

Kind = Literal["flow", "document"]
KINDS: tuple[Kind, ...] = ("flow", "document")
JSONObject = Mapping[str, Any]

FLOW_VERSION = 1


@dataclass(frozen=True, slots=True)
class Field:
    """A field a callback type carries: its JSON type, and whether it may be absent."""

    name: str
    type: type
    optional: bool = False


# The extra fields of each known Flow callback type at version 1 (the four common ones aside).
FLOW_FIELDS: Mapping[str, tuple[Field, ...]] = MappingProxyType(
    {
        "completed": (),
        "failed": (),
        "cancelled": (),
        "timed_out": (),
        "flow_rejected": (
            Field("user_name", str),
            Field("message", str, True),
            Field("document_name", str, True),
        ),
        "authentication_attempted": (
            Field("user_name", str),
            Field("result", str),
            Field("provider", str),
            Field("eid_transaction_id", str, True),
            Field("provider_data", dict, True),
        ),
        "authentication_max_failures_exceeded": (
            Field("user_name", str),
            Field("provider", str, True),
        ),
        "custom": (Field("callback_name", str),),
    }
)


@dataclass(frozen=True, slots=True)
class FlowCallback:
    """One Flow callback: an event in the life of a flow instance."""

    instance_id: str
    type: str
    version: int
    event_created: Timestamp
    payload: JSONObject
    dedup_key: str
    body: bytes
    content_type: str
    # Not a callback: what Scrive's API answered (SPEC 13), the terminal status it carries.
    reconciled: str | None = None

    kind: ClassVar[Kind] = "flow"

    @property
    def subject_id(self) -> str:
        return self.instance_id

    @property
    def position(self) -> tuple[int, int]:
        return (self.event_created.ns, 0)

    @property
    def moment(self) -> Timestamp:
        return self.event_created

    @property
    def shown(self) -> JSONObject:
        return {}

    @property
    def label(self) -> str:
        return self.type if self.reconciled is None else self.reconciled

    @property
    def format_version(self) -> int:
        return self.version


@dataclass(frozen=True, slots=True)
class DocumentCallback:
    """One document callback: a snapshot of the whole document when Scrive sent it."""

    document_id: str
    signed_and_sealed: bool | None  # None: not known (a snapshot from Scrive's API)
    status: str
    object_version: int
    mtime: Timestamp
    title: str | None
    document: JSONObject
    dedup_key: str
    body: bytes
    content_type: str
    # Not a callback: the document as Scrive's API answered it (SPEC 13), its status.
    reconciled: str | None = None

    kind: ClassVar[Kind] = "document"

    @property
    def subject_id(self) -> str:
        return self.document_id

    @property
    def position(self) -> tuple[int, int]:
        return (self.object_version, self.mtime.ns)

    @property
    def moment(self) -> Timestamp:
        return self.mtime

    @property
    def shown(self) -> JSONObject:
        """What the document shows when this is its last applied snapshot."""
        return {
            "object_version": self.object_version,
            "signed_and_sealed": self.signed_and_sealed,
            "title": self.title,
            "mtime": self.mtime.text,
        }

    @property
    def label(self) -> str:
        return self.status

    @property
    def format_version(self) -> None:
        return None

    @property
    def payload(self) -> JSONObject:
        """The callback as one JSON object, whatever encoding it arrived in."""
        return {
            "document_id": self.document_id,
            "document_signed_and_sealed": self.signed_and_sealed,
            "document_json": dict(self.document),
        }


Callback = FlowCallback | DocumentCallback
