"""Hostile input: each gets the spec's 4xx (never a 500, never a hang), and the service
stays healthy. Oversized and trickled bodies are in test_e2e (they need a real socket)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from urllib.parse import quote, urlencode

import pytest
from starlette.testclient import TestClient

from flowtracker.engine.parsing import parse_line
from flowtracker.errors import InvalidEvent
from flowtracker.settings import Settings
from flowtracker.web import create_app
from tests.conftest import INSTANCE, document_form, document_json, flow

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(db_path=str(tmp_path_factory.mktemp("hostile") / "h.db"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
        assert client.get("/healthz").json() == {"status": "ok"}  # healthy after it all


def custom(name: object) -> bytes:
    body = json.loads(flow("custom", 1, "0b51e000-0000-4000-8000-000000000000"))
    return json.dumps({**body, "callback_name": name}).encode()


CASES = [
    # (what, path, body, headers, status, code)
    ("100,000 levels of nesting", "/callbacks/flow", b"[" * 100_000 + b"]" * 100_000, JSON,
     400, "invalid_json"),
    ("100,000 nested objects", "/callbacks/flow", b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
     JSON, 400, "invalid_json"),
    ("a 10,000-digit integer", "/callbacks/flow",
     flow("custom").replace(b'"version": 1', b'"version": 1' + b"0" * 10_000), JSON, 400,
     "invalid_json"),
    ("a number out of float range", "/callbacks/flow", flow("custom").replace(
        b'"version": 1', b'"version": 1, "x": -1e999'), JSON, 400, "invalid_json"),
    ("invalid UTF-8", "/callbacks/flow", b'{"type": "\xc3\x28"}', JSON, 400, "invalid_json"),
    ("a raw NUL byte", "/callbacks/flow", b'{"type": "com\x00pleted"}', JSON, 400,
     "invalid_json"),
    ("duplicate keys", "/callbacks/flow", b'{"type": "a", "type": "b"}', JSON, 400,
     "invalid_json"),
    ("a JSON array", "/callbacks/flow", b"[1, 2]", JSON, 422, "invalid_event"),
    ("a JSON string", "/callbacks/flow", b'"completed"', JSON, 422, "invalid_event"),
    ("an empty body", "/callbacks/flow", b"", JSON, 400, "invalid_json"),
    ("no content type", "/callbacks/flow", flow("custom"), {}, 415,
     "unsupported_media_type"),
    ("a multipart body", "/callbacks/document", b"--x\r\n\r\n--x--",
     {"content-type": "multipart/form-data; boundary=x"}, 415, "unsupported_media_type"),
    ("XML", "/callbacks/flow", b"<completed/>", {"content-type": "application/xml"}, 415,
     "unsupported_media_type"),
    ("a form posted as a Flow callback", "/callbacks/flow", document_form("pending", 1), FORM,
     415, "unsupported_media_type"),
    ("year 0001", "/callbacks/flow", flow("completed").replace(b"2021-03-10", b"0001-01-01"),
     JSON, 422, "invalid_event"),
    ("year 9999", "/callbacks/flow", flow("completed").replace(b"2021-03-10", b"9999-12-31"),
     JSON, 422, "invalid_event"),
    ("a megabyte-long instance id", "/callbacks/flow",
     flow("completed", instance="a" * 1_100_000), JSON, 413, "payload_too_large"),
    ("a 100,000-character instance id", "/callbacks/flow",
     flow("completed", instance="a" * 100_000), JSON, 422, "invalid_event"),
    ("a 10,000-character document id", "/callbacks/document",
     document_form("pending", 1).replace(b"document_id=9221714692413150898",
                                         b"document_id=" + b"9" * 10_000), FORM, 422,
     "invalid_event"),
    ("a form with binary garbage", "/callbacks/document", b"\xff\xfe\x00\x01", FORM, 400,
     "invalid_form"),
    ("percent-encoded invalid UTF-8", "/callbacks/document", b"document_id=%C3%28", FORM, 400,
     "invalid_form"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hostile_callbacks(
    client: TestClient, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = client.post(path, content=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    "name", ["x" * 500_000, "\u0000", "<script>alert(1)</script>", "'; DROP TABLE x; --"]
)
def test_odd_but_valid_values_are_stored_and_served_back(client: TestClient, name: str) -> None:
    response = client.post("/callbacks/flow", content=custom(name), headers=JSON)
    assert response.status_code == 200
    instance = response.json()["subject"]["id"]
    served = client.get(f"/instances/{instance}")
    assert served.headers["content-type"] == "application/json"
    assert name in [event["payload"]["callback_name"] for event in served.json()["events"]]


QUERIES = [
    "/instances?state=' OR 1=1 --",
    "/instances?state=<script>alert(1)</script>",
    "/instances?cursor=' UNION SELECT * FROM quarantine --",
    "/instances?limit=1;DROP TABLE instances",
    "/documents?state=%00",
    "/quarantine?cursor=%3Cimg%20src=x%3E",
    "/anomalies?limit=-1",
]


@pytest.mark.parametrize("url", QUERIES)
def test_metacharacters_in_queries_are_invalid_queries(client: TestClient, url: str) -> None:
    response = client.get(url)
    assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_query")


@pytest.mark.parametrize(
    "path", ["/instances/' OR '1'='1", "/documents/<b>x</b>", "/instances/" + "a" * 20_000]
)
def test_odd_ids_are_not_found_and_echoed_only_as_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert (response.status_code, response.headers["content-type"]) == (404, "application/json")
    assert response.json()["error"]["code"] == "not_found"


PATHS = ["/callbacks/flow", "/callbacks/document", "/instances", f"/instances/{INSTANCE}",
         "/documents", "/documents/1", "/status", "/anomalies", "/quarantine", "/healthz",
         "/openapi.json", "/", "/nope"]  # fmt: skip
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_path_is_answered_in_the_error_shape_or_served(
    client: TestClient, method: str, path: str
) -> None:
    response = client.request(method, path, content=b"{}", headers=JSON)
    assert response.status_code < 500
    if response.status_code >= 400 and method != "HEAD":
        assert set(response.json()) == {"error"}


def document_bodies(document_id: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """One document callback for `document_id` in every encoding the endpoint takes."""
    inner = json.dumps(document_json("pending", 1, id=document_id))
    v2 = {"document_id": document_id, "document_signed_and_sealed": "false", "document_json": inner}
    v1 = {"documentid": document_id, "signedAndSealed": "false", "json": inner}
    as_json = {**v2, "document_signed_and_sealed": False}
    return {
        "v2 form": (urlencode(v2).encode(), FORM),
        "v1 form": (urlencode(v1).encode(), FORM),
        "json, document_json as text": (json.dumps(as_json).encode(), JSON),
        "json, document_json as an object": (
            json.dumps({**as_json, "document_json": json.loads(inner)}).encode(),
            JSON,
        ),
    }


CONTROL = [chr(code) for code in (*range(0x20), 0x7F, 0x80, 0x85, 0x9F)]


@pytest.mark.parametrize("character", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_a_document_id_with_a_control_character_is_refused_in_every_encoding(
    client: TestClient, character: str
) -> None:
    document_id = f"line1{character}line2"
    quarantined = client.get("/status").json()["quarantined"]
    for encoding, (body, headers) in document_bodies(document_id).items():
        response = client.post("/callbacks/document", content=body, headers=headers)
        assert response.status_code == 422, encoding
        assert response.json()["error"]["details"] == {
            "document_id": f"must not hold control characters (U+{ord(character):04X} at 5)"
        }, encoding
    assert client.get("/status").json()["quarantined"] == quarantined + 4


@pytest.mark.parametrize(
    ("document_id", "problem"),
    [("", "must be 1 to 200 characters"), ("7" * 201, "must be 1 to 200 characters")],
    ids=["empty", "201 characters"],
)
def test_a_document_id_empty_or_too_long_is_refused(
    client: TestClient, document_id: str, problem: str
) -> None:
    for encoding, (body, headers) in document_bodies(document_id).items():
        response = client.post("/callbacks/document", content=body, headers=headers)
        assert response.status_code == 422, encoding
        assert response.json()["error"]["details"]["document_id"] == problem, encoding


ODD_IDS = ["lease/2025/7", "100%", "a?b#c", "two words", "\u202eRTL mark", "<script>x</script>",
           "7" * 200, "é-ü", "tab\u2028line sep"]  # fmt: skip


@pytest.mark.parametrize("document_id", ODD_IDS)
def test_every_other_document_id_is_taken_and_reads_back(
    client: TestClient, document_id: str
) -> None:
    body, headers = document_bodies(document_id)["v2 form"]
    assert client.post("/callbacks/document", content=body, headers=headers).status_code == 200
    path = quote(document_id, safe="")
    served = client.get(f"/documents/{path}")
    assert (served.status_code, served.json()["id"]) == (200, document_id)
    page = client.get(f"/ui/documents/{path}")
    assert page.status_code == 200
    assert html.escape(document_id) in page.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"type": "cus\\u0000tom", "version": 1, "event_created": "2026-10-01T10:00:00Z", '
         b'"flow_instance_id": "1e3a60ea-80b8-44bb-9e59-c64d8697b959"}', "type"),
        (b'{"document_id": "7", "document_signed_and_sealed": false, "document_json": '
         b'{"id": "7", "status": "clo\\u0000sed", "object_version": 1, '
         b'"mtime": "2026-10-01T10:00:00Z"}}', "document_json.status"),
        (b'{"document_id": "7", "document_signed_and_sealed": false, "document_json": '
         b'{"id": "7", "status": "closed", "object_version": 1, "title": "a\\u0000b", '
         b'"mtime": "2026-10-01T10:00:00Z"}}', "document_json.title"),
    ],
)  # fmt: skip
def test_a_nul_in_a_stored_text_is_refused_by_name(body: bytes, field: str) -> None:
    # PostgreSQL's text cannot hold U+0000: stored, it would fail every retry for ever.
    with pytest.raises(InvalidEvent) as refused:
        parse_line(body)
    at = 1 if field == "document_json.title" else 3
    assert refused.value.details == {field: f"must not hold U+0000 (at {at})"}
