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

from .errors import InvalidEvent, InvalidForm, InvalidJSON

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
        raise InvalidJSON("body is nested too deeply to parse") from None
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


def canonical_json(value: Any) -> bytes:
    """Keys sorted, compact separators, UTF-8: the form dedup keys are computed over."""
    try:
        return _CANONICAL.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJSON("body holds a lone UTF-16 surrogate, which UTF-8 cannot carry") from None


def document_payload(body: bytes, content_type: str) -> dict[str, Any]:
    """A stored document callback as one JSON object, whatever its encoding.

    For the read side: the body was validated when it was received, and is decoded here
    without judging it again, so a stricter parser later never hides old history.
    """
    fields: Mapping[str, Any]
    fields = decode_form(body) if media_type(content_type) == FORM_TYPE else json.loads(body)

    def pick(name: str, v1_name: str) -> Any:
        return fields[name] if name in fields else fields.get(v1_name)

    document = pick("document_json", "json")
    sealed = pick("document_signed_and_sealed", "signedAndSealed")
    return {
        "document_id": pick("document_id", "documentid"),
        "document_signed_and_sealed": sealed if isinstance(sealed, bool) else sealed == "true",
        "document_json": json.loads(document) if isinstance(document, str) else document,
    }


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
