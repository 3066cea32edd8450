import json
from typing import Any

import pytest

from flowtracker.engine.bodies import canonical_json, json_type
from flowtracker.engine.events import FLOW_FIELDS, DocumentCallback, FlowCallback
from flowtracker.engine.parsing import parse_document, parse_flow, parse_line
from flowtracker.errors import (
    InvalidEvent,
    InvalidForm,
    InvalidJSON,
    MalformedCallback,
    UnsupportedMediaType,
)
from tests.conftest import DOCUMENT, INSTANCE, document_form, document_json, flow, sample

FORM = "application/x-www-form-urlencoded; charset=UTF-8"


@pytest.mark.parametrize("type_", sorted(FLOW_FIELDS))
def test_every_sample_flow_callback_parses(type_: str) -> None:
    body = sample(f"flow/{type_}.json")
    callback = parse_flow(body, "application/json")
    payload = json.loads(body)
    assert callback.type == type_
    assert (callback.label, callback.format_version) == (type_, 1)
    assert callback.instance_id == payload["flow_instance_id"]
    assert callback.event_created.text == payload["event_created"]
    assert dict(callback.payload) == payload
    assert callback.body == body


def test_flow_callback_keeps_unknown_fields_and_enum_values() -> None:
    body = flow("authentication_attempted", result="abandoned", provider="new_eid", colour="blue")
    callback = parse_flow(body)
    assert callback.payload["result"] == "abandoned"
    assert callback.payload["colour"] == "blue"


def test_flow_instance_id_is_normalised_to_lower_case() -> None:
    assert parse_flow(flow("completed", instance=INSTANCE.upper())).instance_id == INSTANCE


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (
            {},
            {
                "type": "required",
                "version": "required",
                "flow_instance_id": "required",
                "event_created": "required",
            },
        ),
        (
            {
                "type": "completed",
                "version": "1",
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
            },
            {"version": "must be an integer, not a string"},
        ),
        (
            {
                "type": "completed",
                "version": True,
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
            },
            {"version": "must be an integer, not a boolean"},
        ),
        (
            {
                "type": ["completed"],
                "version": 1,
                "flow_instance_id": "nope",
                "event_created": "2021-03-15T13:43:67.4589254893Z",
            },
            {
                "type": "must be a string, not an array",
                "flow_instance_id": "must be a UUID (8-4-4-4-12 hexadecimal digits)",
                "event_created": "second must be in 0..59 (got 67)",
            },
        ),
        (
            {
                "type": "custom",
                "version": 1,
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
            },
            {"callback_name": "required"},
        ),
        (
            {
                "type": "flow_rejected",
                "version": 1,
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
                "message": 5,
            },
            {"user_name": "required", "message": "must be a string, not an integer"},
        ),
        (
            {
                "type": "authentication_attempted",
                "version": 1,
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
                "user_name": "u",
                "provider_data": [],
            },
            {
                "result": "required",
                "provider": "required",
                "provider_data": "must be an object, not an array",
            },
        ),
        (
            {
                "type": "authentication_max_failures_exceeded",
                "version": 1,
                "flow_instance_id": INSTANCE,
                "event_created": "2021-03-10T16:40:17Z",
            },
            {"user_name": "required"},
        ),
    ],
)
def test_invalid_flow_callback_names_every_field(
    body: dict[str, Any], problems: dict[str, str]
) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse_flow(json.dumps(body).encode())
    assert error.value.problems == problems
    assert error.value.to_dict()["error"]["details"] == problems


def test_invalid_event_message_lists_field_and_reason() -> None:
    body = json.loads(flow("failed"))
    body["event_created"] = "2021-03-15T13:43:67.4589254893Z"
    with pytest.raises(InvalidEvent) as error:
        parse_flow(json.dumps(body).encode())
    assert error.value.message == (
        "invalid callback: event_created: second must be in 0..59 (got 67)"
    )


@pytest.mark.parametrize(
    "body",
    [
        {
            "type": "signatory_opened",
            "version": 1,
            "flow_instance_id": INSTANCE,
            "event_created": "2021-03-10T16:40:17Z",
        },
        # the per-type required fields apply only at version 1
        {
            "type": "custom",
            "version": 2,
            "flow_instance_id": INSTANCE,
            "event_created": "2021-03-10T16:40:17Z",
        },
    ],
)
def test_unknown_type_or_version_is_valid_input(body: dict[str, Any]) -> None:
    callback = parse_flow(json.dumps(body).encode())
    assert callback.type == body["type"]


def test_unknown_version_is_kept_for_the_fold_to_judge() -> None:
    callback = parse_flow(flow("custom", version=2))
    assert (callback.label, callback.format_version) == ("custom", 2)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (
            b"{",
            InvalidJSON,
            "body is not valid JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
        ),
        (
            b"\xff\xfe{}",
            InvalidJSON,
            "body is not UTF-8: 'utf-8' codec can't decode byte "
            "0xff in position 0: invalid start byte",
        ),
        (
            b"\xef\xbb\xbf{}",
            InvalidJSON,
            "body is not valid JSON: it starts with a byte order mark",
        ),
        (
            b'{"type": "a", "type": "b"}',
            InvalidJSON,
            "body is not valid JSON: duplicate key 'type'",
        ),
        (b'{"version": NaN}', InvalidJSON, "body is not valid JSON: NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, InvalidJSON, "body is nested too deeply to parse"),
        (b"[]", InvalidEvent, "invalid callback: body: must be a JSON object, not an array"),
        (b"", InvalidJSON, "body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    ],
)
def test_unparseable_bodies(body: bytes, error: type[MalformedCallback], message: str) -> None:
    with pytest.raises(error) as raised:
        parse_flow(body)
    assert raised.value.message == message


@pytest.mark.parametrize("content_type", ["", "text/plain", FORM, "application/xml"])
def test_flow_callbacks_must_be_json(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_flow(flow("completed"), content_type)


def test_flow_accepts_json_with_charset() -> None:
    assert parse_flow(flow("completed"), "application/json; charset=utf-8").type == "completed"


def test_dedup_key_is_sha256_of_canonical_json() -> None:
    spaced = (
        b'{ "version": 1, "type": "completed", "flow_instance_id": "%s", '
        b'"event_created": "2021-03-10T16:40:17Z" }' % INSTANCE.encode()
    )
    compact = json.dumps(json.loads(spaced), sort_keys=True, separators=(",", ":")).encode()
    first, second = parse_flow(spaced), parse_flow(compact)
    assert first.dedup_key == second.dedup_key
    assert first.body != second.body


def test_canonical_json_sorts_keys_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": "Åsa"}) == '{"a":"Åsa","b":1}'.encode()


@pytest.mark.parametrize(
    "name",
    ["pending.form", "closed-sealed.form", "prolonged-1-timedout.form", "prolonged-2-pending.form"],
)
def test_sample_document_callbacks_parse(name: str) -> None:
    callback = parse_document(sample(f"document/{name}"), FORM)
    assert callback.document_id == callback.document["id"]
    assert callback.status == callback.document["status"]


def test_document_encodings_give_one_callback_and_one_dedup_key() -> None:
    form = parse_document(sample("document/pending.form"), FORM)
    as_json = parse_document(sample("document/pending.json"), "application/json")
    body = json.loads(sample("document/pending.json"))
    body["document_json"] = json.dumps(body["document_json"])
    body["document_signed_and_sealed"] = "false"
    as_json_text = parse_document(json.dumps(body).encode(), "application/json")
    v1 = parse_document(document_form("pending", 3, v1=True), FORM)
    v2 = parse_document(document_form("pending", 3), FORM)
    assert form.dedup_key == as_json.dedup_key == as_json_text.dedup_key
    assert v1.dedup_key == v2.dedup_key
    assert (form.document_id, form.status, form.object_version, form.signed_and_sealed) == (
        "9221714692413150898",
        "pending",
        3,
        False,
    )


def test_document_callback_fields() -> None:
    callback = parse_document(document_form("closed", 7, 5, sealed=True), FORM)
    assert isinstance(callback, DocumentCallback)
    assert (callback.position, callback.label, callback.title, callback.signed_and_sealed) == (
        (7, callback.mtime.ns),
        "closed",
        "Lease agreement",
        True,
    )
    assert callback.payload == {
        "document_id": DOCUMENT,
        "document_signed_and_sealed": True,
        "document_json": document_json("closed", 7, 5),
    }


def _form(**fields: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode(fields).encode()


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (
            b"",
            {
                "document_id": "required",
                "document_signed_and_sealed": "required",
                "document_json": "required",
            },
        ),
        (
            _form(
                document_id=DOCUMENT,
                document_signed_and_sealed="yes",
                document_json=json.dumps(document_json("pending", 1)),
            ),
            {"document_signed_and_sealed": 'must be "true" or "false"'},
        ),
        (
            _form(
                document_id="42",
                document_signed_and_sealed="false",
                document_json=json.dumps(document_json("pending", 1)),
            ),
            {"document_json.id": "must equal document_id ('42'), got '9221714692413150898'"},
        ),
        (
            _form(
                document_id=DOCUMENT, document_signed_and_sealed="false", document_json="{not json"
            ),
            {
                "document_json": "must be a JSON object (body is not valid JSON: Expecting "
                "property name enclosed in double quotes: line 1 column 2 (char 1))"
            },
        ),
        (
            _form(
                document_id=DOCUMENT,
                document_signed_and_sealed="false",
                document_json=json.dumps(
                    {"id": DOCUMENT, "object_version": "3", "mtime": "2021-04-05T10:00:61Z"}
                ),
            ),
            {
                "document_json.status": "required",
                "document_json.object_version": "must be an integer, not a string",
                "document_json.mtime": "second must be in 0..59 (got 61)",
            },
        ),
        (
            _form(
                document_id="x" * 201,
                document_signed_and_sealed="false",
                document_json=json.dumps(document_json("pending", 1)),
            ),
            {
                "document_id": "must be 1 to 200 characters",
                "document_json.id": "must equal document_id ('"
                + "x" * 201
                + "'), got '9221714692413150898'",
            },
        ),
        (b"document_id=1&document_id=2", {"document_id": "given more than once"}),
    ],
)
def test_invalid_document_callback_names_every_field(body: bytes, problems: dict[str, str]) -> None:
    with pytest.raises(InvalidEvent) as error:
        parse_document(body, FORM)
    assert error.value.problems == problems


@pytest.mark.parametrize("value", [None, [], 7])
def test_document_json_that_is_not_an_object_is_named(value: Any) -> None:
    body = {"document_id": DOCUMENT, "document_signed_and_sealed": "true", "document_json": value}
    with pytest.raises(InvalidEvent) as error:
        parse_document(json.dumps(body).encode(), "application/json")
    assert error.value.problems == {
        "document_json": f"must be a JSON object, not {json_type(value)}"
    }


@pytest.mark.parametrize("body", [b"document_id=%ff", b"a=1&&&b", b"\xff=1"])
def test_unparseable_form(body: bytes) -> None:
    with pytest.raises(InvalidForm):
        parse_document(body, FORM)


def test_document_callback_rejects_other_media_types() -> None:
    with pytest.raises(UnsupportedMediaType) as error:
        parse_document(document_form("pending", 1), "text/plain")
    assert error.value.message == (
        "document callbacks are application/x-www-form-urlencoded or application/json, "
        "not text/plain"
    )


def test_parse_line_tells_documents_from_flows() -> None:
    document_line = json.dumps(
        {"documentid": DOCUMENT, "signedAndSealed": "false", "json": document_json("pending", 1)}
    ).encode()
    assert isinstance(parse_line(document_line), DocumentCallback)
    assert isinstance(parse_line(flow("completed")), FlowCallback)
