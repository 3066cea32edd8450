"""Scrive callbacks parsed into immutable values: Flow events and document snapshots.

Parsing checks everything the spec requires and nothing more: unknown fields are kept,
unknown callback types, statuses and versions are valid input (the fold marks them
`ignored`). Every problem is reported at once, by field, in one `InvalidEvent`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

from .errors import InvalidEvent, InvalidForm, InvalidJSON, UnsupportedMediaType
from .timestamps import Timestamp, TimestampError, parse_timestamp

Kind = Literal["flow", "document"]
JSONObject = Mapping[str, Any]

FLOW_VERSION = 1
MAX_ID_LENGTH = 128
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_JSON_TYPES = {"application/json", "text/json"}
_FORM_TYPE = "application/x-www-form-urlencoded"


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


_TYPE, _VERSION = Field("type", str), Field("version", int)
_INSTANCE_ID = Field("flow_instance_id", str)
_STATUS, _OBJECT_VERSION = Field("status", str), Field("object_version", int)
_EVENT_CREATED, _MTIME = Field("event_created", str), Field("mtime", str)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    def trigger(self) -> str | None:
        return flow_trigger(self.type, self.version)[0]

    @property
    def note(self) -> str | None:
        """Why there is no trigger, when there is none."""
        return flow_trigger(self.type, self.version)[1]


@dataclass(frozen=True, slots=True)
class DocumentCallback:
    """One document callback: a snapshot of the whole document when Scrive sent it."""

    document_id: str
    signed_and_sealed: bool
    status: str
    object_version: int
    mtime: Timestamp
    title: str | None
    document: JSONObject
    dedup_key: str
    body: bytes
    content_type: str

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
    def trigger(self) -> str:
        return self.status

    @property
    def note(self) -> None:
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


def flow_trigger(type_: str, version: int) -> tuple[str | None, str | None]:
    """The lifecycle trigger of a Flow callback, or None and why there is none."""
    if version == FLOW_VERSION:
        return type_, None
    return None, f"unsupported version {version}"


def parse_flow(body: bytes, content_type: str = "application/json") -> FlowCallback:
    """Parse a Flow callback body; raises a `MalformedCallback` naming what is wrong."""
    if media_type(content_type) not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Flow callbacks are application/json, not {content_type or 'unspecified'}"
        )
    return _flow(_json_object(body), body, content_type)


def parse_document(body: bytes, content_type: str) -> DocumentCallback:
    """Parse a document callback sent as a form (v2 or v1 names) or as a JSON object."""
    media = media_type(content_type)
    if media == _FORM_TYPE:
        return _document(_form(body), body, content_type)
    if media in _JSON_TYPES:
        return _document(_json_object(body), body, content_type)
    raise UnsupportedMediaType(
        f"document callbacks are {_FORM_TYPE} or application/json, "
        f"not {content_type or 'unspecified'}"
    )


def parse_line(line: bytes) -> Callback:
    """Parse one JSON Lines record: a document callback if it names a document, else Flow."""
    fields = _json_object(line)
    if "document_id" in fields or "documentid" in fields:
        return _document(fields, line, "application/json")
    return _flow(fields, line, "application/json")


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def canonical_json(value: Any) -> bytes:
    """Keys sorted, compact separators, UTF-8: the form dedup keys are computed over."""
    return _CANONICAL.encode(value).encode("utf-8", "surrogatepass")


def _flow(fields: JSONObject, body: bytes, content_type: str) -> FlowCallback:
    problems: dict[str, str] = {}
    kind = _take(fields, _TYPE, problems)
    version = _take(fields, _VERSION, problems)
    instance_id = _take(fields, _INSTANCE_ID, problems)
    if instance_id is not None and not _UUID.fullmatch(instance_id):
        problems["flow_instance_id"] = "must be a UUID (8-4-4-4-12 hexadecimal digits)"
    created = _timestamp(fields, _EVENT_CREATED, problems)
    if version == FLOW_VERSION and kind in FLOW_FIELDS:
        for field in FLOW_FIELDS[kind]:
            _take(fields, field, problems)
    if problems:
        raise InvalidEvent(problems)
    assert kind is not None and version is not None and created is not None
    return FlowCallback(
        instance_id=str(instance_id).lower(),
        type=kind,
        version=version,
        event_created=created,
        payload=MappingProxyType(fields),
        dedup_key=hashlib.sha256(canonical_json(fields)).hexdigest(),
        body=body,
        content_type=content_type,
    )


def _document(fields: JSONObject, body: bytes, content_type: str) -> DocumentCallback:
    problems: dict[str, str] = {}
    document_id = _alias(fields, "document_id", "documentid", problems, str)
    if document_id is not None and not 0 < len(document_id) <= MAX_ID_LENGTH:
        problems["document_id"] = f"must be 1 to {MAX_ID_LENGTH} characters"
    sealed = _sealed(_alias(fields, "document_signed_and_sealed", "signedAndSealed", problems))
    if sealed is None and "document_signed_and_sealed" not in problems:
        problems["document_signed_and_sealed"] = 'must be "true" or "false"'
    document = _document_json(_alias(fields, "document_json", "json", problems), problems)
    status = object_version = mtime = None
    if document is not None:
        status = _take(document, _STATUS, problems, "document_json.")
        object_version = _take(document, _OBJECT_VERSION, problems, "document_json.")
        mtime = _timestamp(document, _MTIME, problems, "document_json.")
        _check_id(document, document_id, problems)
    if problems:
        raise InvalidEvent(problems)
    assert document_id is not None and sealed is not None and document is not None
    assert status is not None and object_version is not None and mtime is not None
    key_source = {
        "document_id": document_id,
        "document_signed_and_sealed": sealed,
        "document_json": document,
    }
    title = document.get("title")
    return DocumentCallback(
        document_id=document_id,
        signed_and_sealed=sealed,
        status=status,
        object_version=object_version,
        mtime=mtime,
        title=title if isinstance(title, str) else None,
        document=MappingProxyType(document),
        dedup_key=hashlib.sha256(canonical_json(key_source)).hexdigest(),
        body=body,
        content_type=content_type,
    )


def _json_object(body: bytes) -> JSONObject:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJSON(f"body is not UTF-8: {error}") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidJSON("body is nested too deeply to parse") from None
    except ValueError as error:
        raise InvalidJSON(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidEvent({"body": f"must be a JSON object, not {_json_type(value)}"})
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        names = [key for key, _ in pairs]
        repeated = next(key for key in names if names.count(key) > 1)
        raise ValueError(f"duplicate key {repeated!r}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _form(body: bytes) -> JSONObject:
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as error:
        raise InvalidForm(f"body is not a valid url-encoded form: {error}") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise InvalidEvent({name: "given more than once"})
        fields[name] = value
    return fields


def _alias(
    fields: JSONObject, name: str, v1_name: str, problems: dict[str, str], kind: type = object
) -> Any:
    present = name if name in fields else v1_name if v1_name in fields else None
    if present is None:
        problems[name] = "required"
        return None
    value = fields[present]
    if not isinstance(value, kind):
        problems[name] = f"must be {_TYPE_NAMES[kind]}, not {_json_type(value)}"
        return None
    return value


def _sealed(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get(value) if isinstance(value, str) else None


def _document_json(value: Any, problems: dict[str, str]) -> JSONObject | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = _json_object(value.encode("utf-8", "surrogatepass"))
        except (InvalidJSON, InvalidEvent) as error:
            problems["document_json"] = f"must be a JSON object ({error.message})"
            return None
    if not isinstance(value, dict):
        problems["document_json"] = f"must be a JSON object, not {_json_type(value)}"
        return None
    return value


def _check_id(document: JSONObject, document_id: str | None, problems: dict[str, str]) -> None:
    inner = document.get("id")
    if inner is None:
        problems["document_json.id"] = "required"
    elif not isinstance(inner, str | int) or isinstance(inner, bool):
        problems["document_json.id"] = f"must be a string, not {_json_type(inner)}"
    elif document_id is not None and str(inner) != document_id:
        problems["document_json.id"] = f"must equal document_id ({document_id!r}), got {inner!r}"


def _take(fields: JSONObject, field: Field, problems: dict[str, str], prefix: str = "") -> Any:
    value = fields.get(field.name)
    if value is None:
        if not field.optional:
            problems[prefix + field.name] = "required"
        return None
    if not isinstance(value, field.type) or (field.type is int and isinstance(value, bool)):
        problems[prefix + field.name] = (
            f"must be {_TYPE_NAMES[field.type]}, not {_json_type(value)}"
        )
        return None
    return value


def _timestamp(
    fields: JSONObject, field: Field, problems: dict[str, str], prefix: str = ""
) -> Timestamp | None:
    text = _take(fields, field, problems, prefix)
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except TimestampError as error:
        problems[prefix + field.name] = str(error)
        return None


_TYPE_NAMES: Mapping[type, str] = {
    str: "a string",
    int: "an integer",
    dict: "an object",
    object: "a value",
}


def _json_type(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
