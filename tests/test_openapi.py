"""/openapi.json is a valid OpenAPI 3.1 document, and the service's answers match it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from flowtracker.settings import Settings
from flowtracker.web import create_app
from tests.conftest import DATA, document_form, flow, sample

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
DOCUMENT_ID = "9221714692413150898"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(db_path=str(tmp_path_factory.mktemp("openapi") / "o.db"))
    with TestClient(create_app(settings)) as client:
        for path in sorted((DATA / "flow").glob("*.json")):
            client.post("/callbacks/flow", content=path.read_bytes(), headers=JSON)
        client.post("/callbacks/document", content=sample("document/pending.form"), headers=FORM)
        client.post("/callbacks/flow", content=b"{", headers=JSON)
        yield client


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    served: dict[str, Any] = client.get("/openapi.json").json()
    return served


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


CASES = [
    ("POST", "/callbacks/flow", flow("custom", 1), JSON, 200),
    ("POST", "/callbacks/flow", flow("custom", 1), JSON, 200),  # duplicate
    ("POST", "/callbacks/document", document_form("closed", 9, sealed=True), FORM, 200),
    ("POST", "/callbacks/flow", b"{", JSON, 400),
    ("POST", "/callbacks/flow", b"{}", JSON, 422),
    ("POST", "/callbacks/flow", b"{}", {"content-type": "text/plain"}, 415),
    ("GET", "/instances", b"", {}, 200),
    ("GET", "/instances?limit=0", b"", {}, 422),
    ("GET", "/instances/1e3a60ea-80b8-44bb-9e59-c64d8697b959", b"", {}, 200),
    ("GET", "/instances/nope", b"", {}, 404),
    ("GET", "/documents", b"", {}, 200),
    ("GET", f"/documents/{DOCUMENT_ID}", b"", {}, 200),
    ("GET", "/status", b"", {}, 200),
    ("GET", "/anomalies", b"", {}, 200),
    ("GET", "/quarantine", b"", {}, 200),
    ("GET", "/quarantine?code=invalid_json", b"", {}, 200),
    # No admin token set here: the actions that change data are off over HTTP.
    ("POST", "/quarantine/retry", b"", {}, 403),
    ("POST", "/quarantine/abc/retry", b"", {}, 403),
    ("DELETE", "/quarantine/abc", b"", {}, 403),
    ("DELETE", "/quarantine?before=2026-01-01", b"", {}, 403),
    ("GET", "/healthz", b"", {}, 200),
    ("GET", "/metrics", b"", {}, 200),
    ("GET", "/changes?after=0&kind=flow", b"", {}, 200),
    ("GET", "/changes?after=x", b"", {}, 422),
    ("GET", "/feed?after=-1", b"", {}, 422),
]


@pytest.mark.parametrize(("method", "url", "body", "headers", "status"), CASES)
def test_answers_match_the_schema(
    client: TestClient,
    document: dict[str, Any],
    method: str,
    url: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
) -> None:
    response = client.request(method, url, content=body, headers=headers)
    assert response.status_code == status
    path = _template(document, url.split("?")[0])
    declared = document["paths"][path][method.lower()]["responses"][str(status)]
    if "text/plain" in declared["content"]:  # /metrics: Prometheus text, not JSON
        assert response.headers["content-type"].startswith("text/plain;")
        assert "# TYPE flowtracker_callbacks_total counter" in response.text
        return
    schema = declared["content"]["application/json"]["schema"]
    jsonschema.validate(
        response.json(),
        {**schema, "components": document["components"]},
        cls=jsonschema.Draft202012Validator,
    )


def _template(document: dict[str, Any], path: str) -> str:
    for template in document["paths"]:
        parts, wanted = template.split("/"), path.split("/")
        if len(parts) == len(wanted) and all(
            p == w or p.startswith("{") for p, w in zip(parts, wanted, strict=True)
        ):
            return str(template)
    raise AssertionError(f"{path} is not in the OpenAPI document")


def test_every_path_is_exercised_here(document: dict[str, Any]) -> None:
    exercised = {_template(document, url.split("?")[0]) for _, url, *_ in CASES}
    assert set(document["paths"]) - exercised == {"/openapi.json"}


def test_schema_validation_catches_a_wrong_answer(document: dict[str, Any]) -> None:
    schema = {"$ref": "#/components/schemas/Receipt", "components": document["components"]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"outcome": "maybe"}, schema, cls=jsonschema.Draft202012Validator)


def test_the_security_schemes_say_which_token_goes_where(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"callback_query", "callback_basic", "callback_bearer", "read", "admin"}
    for path in ("/callbacks/flow", "/callbacks/document"):
        offered = {name for choice in document["paths"][path]["post"]["security"]
                   for name in choice}  # fmt: skip
        assert offered == {"callback_query", "callback_basic", "callback_bearer"}
    assert document["paths"]["/instances"]["get"]["security"] == [{"read": []}]
    assert document["paths"]["/quarantine/{id}"]["delete"]["security"] == [{"admin": []}]
