"""Request bodies to JSON objects: strict JSON and form decoding, and canonical JSON.

Strict means: UTF-8 only, no duplicate keys, no NaN or infinite numbers, no lone UTF-16
surrogates; anything that cannot be stored and served back as JSON is refused here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from flowtracker.errors import InvalidEvent, InvalidForm, InvalidJSON

JSON_TYPES = frozenset({"application/json", "text/json"})
# One limit that intake and every reader agree on. Scrive's payloads nest fewer than ten
# levels; the JSON encoder gives up at a depth that depends on the stack it runs on, so a
# deeper value could be stored and then never served (docs/reliability.md).
MAX_NESTING = 64
TOO_DEEP = f"nested deeper than {MAX_NESTING} levels"
FORM_TYPE = "application/x-www-form-urlencoded"
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class JSONTooDeep(InvalidJSON):
    """Nested deeper than the JSON decoder itself can go (far past `MAX_NESTING`)."""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode_json(body: bytes) -> dict[str, Any]:
    """A JSON object from UTF-8 bytes; `InvalidJSON` or `InvalidEvent` says why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJSON(f"body is not UTF-8: {error}") from None
    if text.startswith("\ufeff"):
        raise InvalidJSON("body is not valid JSON: it starts with a byte order mark")
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise JSONTooDeep("body is nested too deeply to parse") from None
    except ValueError as error:
        raise InvalidJSON(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidEvent({"body": f"must be a JSON object, not {json_type(value)}"})
    return value


def decode_form(body: bytes) -> dict[str, str]:
    """The fields of an url-encoded UTF-8 form; a field given twice is refused."""
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


def too_deep(value: Any, text: str | bytes | None = None, limit: int = MAX_NESTING) -> bool:
    """Whether the container `value` (level 1) holds containers more than `limit` levels
    deep. `text`, what it (or a value holding it) was decoded from, answers most values at
    C speed: nothing can nest deeper than its text has opening brackets."""
    if text is not None and _openers(text) <= limit:
        return False
    level = [value]
    for _ in range(limit):  # one level at a time: a list per level, no stack of pairs
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


def too_deep_text(text: str | bytes) -> bool:
    """Whether JSON `text` might nest deeper than `MAX_NESTING` (it has more opening
    brackets than that): False is certain, True needs a decoded look (`too_deep`)."""
    return _openers(text) > MAX_NESTING


def too_deep_fields(
    fields: Mapping[str, Any], text: bytes, *, skip: tuple[str, ...] = ()
) -> dict[str, str]:
    """The fields of a decoded body (level 1, decoded from `text`) that nest deeper than
    `MAX_NESTING`, each with the reason; the fields in `skip` are judged on their own."""
    if _openers(text) <= MAX_NESTING:
        return {}
    return {
        name: TOO_DEEP
        for name, value in fields.items()
        if name not in skip
        and isinstance(value, dict | list)
        and too_deep(value, None, MAX_NESTING - 1)
    }


def stored_json(text: bytes | str, *, judged: bool = True) -> tuple[Any, str | None]:
    """A stored JSON text decoded for serving, or None and why it cannot be served; with
    `judged=False` only decoded, its nesting left to the caller.

    For the read side: what was stored before the nesting limit existed may nest deeper,
    and a reader must answer for it rather than fail on it.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        return None, TOO_DEEP
    if judged and isinstance(value, dict | list) and too_deep(value, text):
        return None, TOO_DEEP
    return value, None


def _openers(text: str | bytes) -> int:
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{")
    return text.count("[") + text.count("{")


def canonical_json(value: Any) -> bytes:
    """Keys sorted, compact separators, UTF-8: the form dedup keys are computed over."""
    try:
        return _CANONICAL.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJSON("body holds a lone UTF-16 surrogate, which UTF-8 cannot carry") from None


def document_payload(body: bytes, content_type: str) -> tuple[dict[str, Any] | None, str | None]:
    """A stored document callback as one JSON object, whatever its encoding; or None and
    why it cannot be served (`stored_json`).

    For the read side: the body was validated when it was received, and is decoded here
    without judging it again, so a stricter parser later never hides old history.
    """
    fields: Mapping[str, Any]
    if media_type(content_type) == FORM_TYPE:
        fields = decode_form(body)
    else:
        # Judged as intake judges it: `document_json` on its own, whatever the encoding.
        fields, problem = stored_json(body, judged=False)
        if problem is not None:
            return None, problem

    def pick(name: str, v1_name: str) -> Any:
        return fields[name] if name in fields else fields.get(v1_name)

    document, problem = pick("document_json", "json"), None
    if isinstance(document, str):
        document, problem = stored_json(document)
    elif isinstance(document, dict) and too_deep(document, body):
        problem = TOO_DEEP
    if problem is not None:
        return None, problem
    sealed = pick("document_signed_and_sealed", "signedAndSealed")
    return {
        "document_id": pick("document_id", "documentid"),
        # null: a snapshot from Scrive's API, which does not say
        "document_signed_and_sealed": (
            sealed if isinstance(sealed, bool) or sealed is None else sealed == "true"
        ),
        "document_json": document,
    }, None


def json_type(value: Any) -> str:
    """How JSON calls the type of a decoded value, for error messages."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "an object", type(None): "null"}  # fmt: skip
    return names.get(type(value), type(value).__name__)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        names = [key for key, _ in pairs]
        repeated = next(key for key in names if names.count(key) > 1)
        raise ValueError(f"duplicate key {repeated!r}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:40]} is out of range")
    return number


# Built once: json.loads with hooks would build a decoder per call, on the hot path.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite
)
