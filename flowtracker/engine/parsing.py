"""Parsing callback bodies into `events` values, checking what the spec requires.

Parsing checks everything the spec requires and nothing more: unknown fields are kept,
unknown callback types, statuses and versions are valid input (the fold marks them
`ignored`). Every problem is reported at once, by field, in one `InvalidEvent`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flowtracker.engine.bodies import (
    FORM_TYPE,
    JSON_TYPES,
    TOO_DEEP,
    JSONTooDeep,
    canonical_json,
    decode_form,
    decode_json,
    json_type,
    media_type,
    too_deep,
    too_deep_fields,
)
from flowtracker.engine.events import (
    FLOW_FIELDS,
    FLOW_VERSION,
    Callback,
    DocumentCallback,
    Field,
    FlowCallback,
    JSONObject,
)
from flowtracker.engine.timestamps import Timestamp, TimestampError, parse_timestamp
from flowtracker.errors import InvalidEvent, InvalidJSON, UnsupportedMediaType

MAX_ID_LENGTH = 200
# C0, DEL and C1: an id holding one could be stored but not named in a URL path.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_INT64 = (-(2**63), 2**63 - 1)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TYPE, _VERSION = Field("type", str), Field("version", int)
_INSTANCE_ID = Field("flow_instance_id", str)
_STATUS, _OBJECT_VERSION = Field("status", str), Field("object_version", int)
_EVENT_CREATED, _MTIME = Field("event_created", str), Field("mtime", str)


def parse_flow(body: bytes, content_type: str = "application/json") -> FlowCallback:
    """Parse a Flow callback body; raises a `MalformedCallback` naming what is wrong."""
    if media_type(content_type) not in JSON_TYPES:
        raise UnsupportedMediaType(
            f"Flow callbacks are application/json, not {content_type or 'unspecified'}"
        )
    return _flow(decode_json(body), body, content_type)


def parse_document(body: bytes, content_type: str) -> DocumentCallback:
    """Parse a document callback sent as a form (v2 or v1 names) or as a JSON object."""
    media = media_type(content_type)
    if media == FORM_TYPE:
        return _document(decode_form(body), body, content_type)
    if media in JSON_TYPES:
        return _document(decode_json(body), body, content_type)
    raise UnsupportedMediaType(
        f"document callbacks are {FORM_TYPE} or application/json, "
        f"not {content_type or 'unspecified'}"
    )


def parse_line(line: bytes) -> Callback:
    """Parse one JSON Lines record: a document callback if it names a document, else Flow."""
    fields = decode_json(line)
    if "document_id" in fields or "documentid" in fields:
        return _document(fields, line, "application/json")
    return _flow(fields, line, "application/json")


def is_uuid(text: str) -> bool:
    """Whether `text` is spelled as a flow instance id must be."""
    return _UUID.fullmatch(text) is not None


# What Scrive's API answers as a flow instance's `status` (SPEC 13); a cancel, a rejection
# and a timeout all read `failed` there.
SCRIVE_INSTANCE_STATUSES = ("in_progress", "completed", "failed")
RECONCILED = "reconciled"  # the type of the event a terminal answer is stored as


def reconciled_instance(instance_id: str, answer: Any) -> FlowCallback | None:
    """What Scrive's API answered about a flow instance, as the event it stands for: the
    `reconciled` event of a terminal status, dated `last_event`; None while in progress.
    Raises `InvalidEvent` naming what is wrong with the answer."""
    if not isinstance(answer, dict):
        raise InvalidEvent({"answer": f"must be a JSON object, not {json_type(answer)}"})
    problems: dict[str, str] = {}
    found = _take(answer, Field("id", str), problems)
    if found is not None and found.lower() != instance_id.lower():
        problems["id"] = f"must be the instance asked for ({instance_id!r}), got {found!r}"
    status = _take(answer, Field("status", str), problems)
    if status is not None and status not in SCRIVE_INSTANCE_STATUSES:
        problems["status"] = f"must be one of {', '.join(SCRIVE_INSTANCE_STATUSES)}, not {status!r}"
    last_event = None
    if status != "in_progress":
        last_event = _timestamp(answer, Field("last_event", str), problems)
    if problems:
        raise InvalidEvent(problems)
    if status == "in_progress":
        return None
    assert status is not None and last_event is not None
    fields = {"reconciled": status, "flow_instance_id": instance_id.lower(),
              "last_event": last_event.text}  # fmt: skip
    body = canonical_json(fields)
    return FlowCallback(
        instance_id=instance_id.lower(),
        type=RECONCILED,
        version=FLOW_VERSION,
        event_created=last_event,
        payload=MappingProxyType(fields),
        dedup_key=hashlib.sha256(body).hexdigest(),
        body=body,
        content_type="application/json",
        reconciled=status,
    )


def reconciled_document(document_id: str, answer: Any) -> DocumentCallback:
    """The document as Scrive's API answered it, as a snapshot whose `signed_and_sealed`
    is unknown (null). Raises `InvalidEvent` naming what is wrong with the answer."""
    fields = {"document_id": document_id, "document_signed_and_sealed": None,
              "document_json": answer}  # fmt: skip
    return _document(fields, canonical_json(fields), "application/json", reconciled=True)


def _flow(fields: JSONObject, body: bytes, content_type: str) -> FlowCallback:
    problems = too_deep_fields(fields, body)
    kind = _take(fields, _TYPE, problems)
    _no_nul(kind, "type", problems)
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


def _document(
    fields: JSONObject, body: bytes, content_type: str, *, reconciled: bool = False
) -> DocumentCallback:
    # `document_json` is judged on its own, so that every encoding takes the same ones.
    problems = too_deep_fields(fields, body, skip=("document_json", "json"))
    document_id = _alias(fields, "document_id", "documentid", problems, str)
    if document_id is not None and not 0 < len(document_id) <= MAX_ID_LENGTH:
        problems["document_id"] = f"must be 1 to {MAX_ID_LENGTH} characters"
    elif document_id is not None and (control := _CONTROL.search(document_id)):
        problems["document_id"] = (
            f"must not hold control characters (U+{ord(control.group()):04X} at {control.start()})"
        )
    sealed = None
    if not reconciled:  # Scrive's API does not say; only a callback does
        sealed = _sealed(_alias(fields, "document_signed_and_sealed", "signedAndSealed", problems))
        if sealed is None and "document_signed_and_sealed" not in problems:
            problems["document_signed_and_sealed"] = 'must be "true" or "false"'
    document = _document_json(_alias(fields, "document_json", "json", problems), body, problems)
    status = object_version = mtime = None
    if document is not None:
        status = _take(document, _STATUS, problems, "document_json.")
        _no_nul(status, "document_json.status", problems)
        _no_nul(document.get("title"), "document_json.title", problems)
        object_version = _take(document, _OBJECT_VERSION, problems, "document_json.")
        mtime = _timestamp(document, _MTIME, problems, "document_json.")
        _check_id(document, document_id, problems)
    if problems:
        raise InvalidEvent(problems)
    assert document_id is not None and (sealed is not None or reconciled) and document is not None
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
        reconciled=status if reconciled else None,
    )


def _alias(
    fields: JSONObject, name: str, v1_name: str, problems: dict[str, str], kind: type = object
) -> Any:
    present = name if name in fields else v1_name if v1_name in fields else None
    if present is None:
        problems[name] = "required"
        return None
    value = fields[present]
    if not isinstance(value, kind):
        problems[name] = f"must be {_TYPE_NAMES[kind]}, not {json_type(value)}"
        return None
    return value


def _sealed(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    return {"true": True, "false": False}.get(value) if isinstance(value, str) else None


def _document_json(value: Any, body: bytes, problems: dict[str, str]) -> JSONObject | None:
    """The document, decoded from its text or (in a JSON body) as it is; `body` bounds the
    nesting of an object inside it, as the text bounds one decoded from it."""
    if "document_json" in problems:  # missing: already said
        return None
    text: str | bytes = value if isinstance(value, str) else body
    if isinstance(value, str):
        try:
            value = decode_json(value.encode("utf-8", "surrogatepass"))
        except JSONTooDeep:
            problems["document_json"] = TOO_DEEP
            return None
        except (InvalidJSON, InvalidEvent) as error:
            problems["document_json"] = f"must be a JSON object ({error.message})"
            return None
    if not isinstance(value, dict):
        problems["document_json"] = f"must be a JSON object, not {json_type(value)}"
        return None
    if too_deep(value, text):
        problems["document_json"] = TOO_DEEP
        return None
    return value


def _check_id(document: JSONObject, document_id: str | None, problems: dict[str, str]) -> None:
    inner = document.get("id")
    if inner is None:
        problems["document_json.id"] = "required"
    elif not isinstance(inner, str | int) or isinstance(inner, bool):
        problems["document_json.id"] = f"must be a string, not {json_type(inner)}"
    elif document_id is not None and str(inner) != document_id:
        problems["document_json.id"] = f"must equal document_id ({document_id!r}), got {inner!r}"


def _no_nul(value: Any, name: str, problems: dict[str, str]) -> None:
    """A text kept in a column of its own must not hold U+0000: PostgreSQL's text cannot,
    and a callback that no backend can store would be retried for ever."""
    if isinstance(value, str) and "\x00" in value:
        problems[name] = f"must not hold U+0000 (at {value.index(chr(0))})"


def _take(fields: JSONObject, field: Field, problems: dict[str, str], prefix: str = "") -> Any:
    value: Any = fields.get(field.name)
    kind = type(value)
    if kind is field.type and (kind is not int or _INT64[0] <= value <= _INT64[1]):
        return value  # present and of the right type: the common case, checked first
    if value is None:
        if not field.optional:
            problems[prefix + field.name] = "required"
        return None
    if field.type is int and isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        problems[prefix + field.name] = "must fit in 64 bits (a signed integer)"
        return None
    if not isinstance(value, field.type) or (field.type is int and isinstance(value, bool)):
        problems[prefix + field.name] = f"must be {_TYPE_NAMES[field.type]}, not {json_type(value)}"
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
