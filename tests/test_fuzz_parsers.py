"""Fuzzing the parsers: valid and near-valid callbacks, and random bytes. Whatever comes
in, a parser either returns a callback or raises a `MalformedCallback`; nothing else."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from flowtracker.engine.bodies import canonical_json
from flowtracker.engine.events import FLOW_FIELDS
from flowtracker.engine.parsing import parse_document, parse_flow, parse_line
from flowtracker.errors import MalformedCallback
from tests.conftest import document_json

FORM = "application/x-www-form-urlencoded"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.one_of(
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.from_regex(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,12})?(Z|[+-]\d{2}:\d{2})",
                  fullmatch=True),
    st.text(max_size=40),
)  # fmt: skip


@st.composite
def near_valid_flow(draw: st.DrawFn) -> dict[str, Any]:
    """A valid Flow callback, then a few fields dropped, replaced or added."""
    kind = draw(st.sampled_from([*FLOW_FIELDS, "signatory_opened"]))
    body: dict[str, Any] = {
        "type": kind,
        "version": draw(st.sampled_from([1, 1, 1, 2, 0, -1, 2**70])),
        "flow_instance_id": draw(st.uuids().map(str) | st.text(max_size=40)),
        "event_created": draw(timestamps),
    }
    for field in FLOW_FIELDS.get(kind, ()):
        body[field.name] = draw(st.text(max_size=20) if field.type is str else json_values)
    for name in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    body.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return body


def parses_or_refuses(parse: Any, *args: Any) -> None:
    try:
        callback = parse(*args)
    except MalformedCallback:
        return
    canonical_json(dict(callback.payload))  # what was accepted can be served back as JSON


@settings(max_examples=400, deadline=None)
@given(near_valid_flow())
def test_flow_parser_on_near_valid_callbacks(body: dict[str, Any]) -> None:
    parses_or_refuses(parse_flow, json.dumps(body).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_every_parser_on_random_bytes(body: bytes) -> None:
    parses_or_refuses(parse_flow, body)
    parses_or_refuses(parse_line, body)
    parses_or_refuses(parse_document, body, FORM)
    parses_or_refuses(parse_document, body, "application/json")


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["document_id", "documentid", "x"]),
    st.text(max_size=30),
    st.sampled_from(["document_signed_and_sealed", "signedAndSealed"]),
    st.sampled_from(["true", "false", "", "TRUE", "1"]),
    st.sampled_from(["document_json", "json"]),
    st.one_of(
        st.builds(lambda s, v: json.dumps(document_json(s, v)),
                  st.text(max_size=10), st.integers(-(2**70), 2**70)),
        st.text(max_size=50),
    ),
    st.booleans(),
)  # fmt: skip
def test_document_parser_on_near_valid_forms(
    id_name: str, id_value: str, sealed_name: str, sealed: str, json_name: str,
    document: str, as_json: bool,
) -> None:  # fmt: skip
    fields = {id_name: id_value, sealed_name: sealed, json_name: document}
    if as_json:
        parses_or_refuses(parse_document, json.dumps(fields).encode(), "application/json")
    else:
        parses_or_refuses(parse_document, urlencode(fields).encode(), FORM)
