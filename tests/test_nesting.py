"""Nesting: one limit (64 levels) that intake and every reader agree on.

Deeper bodies are refused at intake and quarantined; what an older version stored deeper
is still served, with its payload left out and the reason given. Before the limit, a
callback nested 960 to 979 levels deep was answered 200 and its subject then answered
500 for good.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from flowtracker.engine.bodies import MAX_NESTING, TOO_DEEP
from flowtracker.engine.parsing import parse_document, parse_flow, parse_line
from flowtracker.errors import InvalidEvent, InvalidJSON, MalformedCallback
from flowtracker.ingest.pipeline import Pipeline
from flowtracker.reads import summaries, views
from flowtracker.settings import Settings
from flowtracker.store.sqlite.backend import SQLiteStore
from flowtracker.web import create_app
from tests.conftest import DOCUMENT, document_json
from tests.server import serving

DEEPEST = 20_000
FORM = "application/x-www-form-urlencoded"


def nested(depth: int) -> Any:
    """Arrays `depth` levels deep (0: a plain value)."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def instance_id(depth: int) -> str:
    return f"00000000-0000-4000-8000-{depth:012d}"


def flow_body(depth: int) -> bytes:
    """A custom callback whose extra field nests so that the body is `depth` + 1 deep."""
    head = json.dumps({
        "type": "custom", "version": 1, "event_created": "2021-03-10T16:00:00Z",
        "flow_instance_id": instance_id(depth), "callback_name": "deep",
    })  # fmt: skip
    return (head[:-1] + f', "extra": {nested_text(depth)}}}').encode()


def document_form_body(depth: int, document_id: str = DOCUMENT) -> bytes:
    """A document callback whose document_json is `depth` + 1 deep."""
    inner = json.dumps(document_json("pending", 1, id=document_id))
    text = inner[:-1] + f', "deep": {nested_text(depth)}}}'
    fields = {"document_id": document_id, "document_signed_and_sealed": "false"}
    return urlencode({**fields, "document_json": text}).encode()


def accepted(depth: int) -> bool:
    return depth + 1 <= MAX_NESTING


def test_the_limit_in_the_parsers_at_every_depth() -> None:
    for depth in range(DEEPEST + 1):
        body = flow_body(depth)
        if accepted(depth):
            assert parse_flow(body).payload["extra"] == nested(depth)
            continue
        with pytest.raises(MalformedCallback) as refused:
            parse_flow(body)
        error = refused.value
        if isinstance(error, InvalidEvent):  # past the decoder's own limit: InvalidJSON
            assert error.problems == {"extra": TOO_DEEP}
        else:
            assert isinstance(error, InvalidJSON) and depth > 900


@pytest.mark.parametrize("depth", [MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, 979, 5_000])
def test_document_json_has_the_same_limit_in_every_encoding(depth: int) -> None:
    inner = json.dumps(document_json("pending", 1))
    document = inner[:-1] + f', "deep": {nested_text(depth)}}}'  # as text: the encoder
    head = f'{{"document_id": "{DOCUMENT}", "document_signed_and_sealed": false, '  # gives up
    bodies = [
        (document_form_body(depth), FORM),
        (urlencode({"documentid": DOCUMENT, "signedAndSealed": "false", "json": document})
         .encode(), FORM),
        ((head + f'"document_json": {json.dumps(document)}}}').encode(), "application/json"),
    ]  # fmt: skip
    if depth < 900:  # as an object inside a JSON body, the body too must be decodable
        bodies.append(((head + f'"document_json": {document}}}').encode(), "application/json"))
    for body, content_type in bodies:
        if accepted(depth):
            assert parse_document(body, content_type).document["deep"] == nested(depth)
        else:
            with pytest.raises(InvalidEvent) as refused:
                parse_document(body, content_type)
            assert refused.value.problems == {"document_json": TOO_DEEP}


def test_a_field_nested_too_deep_is_named_with_the_others() -> None:
    body = json.loads(flow_body(1))
    body.update({"extra": nested(MAX_NESTING), "type": None})
    with pytest.raises(InvalidEvent) as refused:
        parse_flow(json.dumps(body).encode())
    assert refused.value.problems == {"extra": TOO_DEEP, "type": "required"}


@pytest.mark.slow
def test_every_depth_over_http_is_answered_2xx_or_4xx_and_every_subject_reads_back(
    tmp_path: Path,
) -> None:
    db = tmp_path / "deep.db"
    with (
        serving(db, "--no-access-log", "--no-callback-log") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        statuses = {}
        for depth in range(1, DEEPEST + 1):
            answer = client.post(
                "/callbacks/flow",
                content=flow_body(depth),
                headers={"content-type": "application/json"},
            )
            statuses[depth] = answer.status_code
            code = answer.json().get("error", {}).get("code")
            if accepted(depth):
                assert answer.status_code == 200, depth
            elif code == "invalid_event":
                assert answer.json()["error"]["details"] == {"extra": TOO_DEEP}, depth
            else:
                assert (answer.status_code, code) == (400, "invalid_json"), depth
        assert {depth for depth, status in statuses.items() if status == 200} == set(
            range(1, MAX_NESTING)
        )
        for depth in range(1, MAX_NESTING):
            instance = instance_id(depth)
            for path in (f"/instances/{instance}", f"/ui/instances/{instance}"):
                assert client.get(path).status_code == 200, path
        form = {"content-type": FORM}
        for depth in DOCUMENT_DEPTHS:
            body = document_form_body(depth, f"deep-{depth}")
            answer = client.post("/callbacks/document", content=body, headers=form)
            if accepted(depth):
                assert answer.status_code == 200, depth
                for path in (f"/documents/deep-{depth}", f"/ui/documents/deep-{depth}"):
                    assert client.get(path).status_code == 200, path
            else:
                assert answer.status_code == 422, depth
                assert answer.json()["error"]["details"] == {"document_json": TOO_DEEP}
        refused = DEEPEST - (MAX_NESTING - 1) + sum(not accepted(d) for d in DOCUMENT_DEPTHS)
        assert client.get("/status").json()["quarantined"] == refused


# Around the limit, around the old trap (960-979) and far beyond: for documents, the
# parsers' test above covers every encoding.
DOCUMENT_DEPTHS = [*range(1, 101), *range(950, 1_000), 5_000, DEEPEST]


@pytest.mark.slow
def test_every_depth_through_replay(tmp_path: Path) -> None:
    lines = tmp_path / "deep.jsonl"
    lines.write_bytes(b"\n".join(flow_body(depth) for depth in range(1, DEEPEST + 1)) + b"\n")
    db = tmp_path / "replayed.db"
    done = subprocess.run(
        [sys.executable, "-m", "flowtracker", "replay", str(lines), "--db", str(db)],
        capture_output=True,
        check=True,
    )
    refused = DEEPEST - (MAX_NESTING - 1)
    assert done.stdout.decode().splitlines()[-1] == (
        f"{DEEPEST} lines: {MAX_NESTING - 1} applied, 0 illegal, 0 ignored, 0 duplicate, "
        f"{refused} quarantined; 0 out of order"
    )
    store = SQLiteStore(db, access="read")
    try:
        for depth in range(1, MAX_NESTING):
            assert views.instance(store, instance_id(depth))["events"][0]["payload"]["extra"] == (
                nested(depth)
            )
        assert (
            summaries.status(store, 0, stuck_age_ns=1, version="", uptime_seconds=None)[
                "quarantined"
            ]
            == refused
        )
    finally:
        store.close()


@pytest.fixture
def stored_deep(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A database holding one flow event and one document snapshot stored deeper than the
    limit, as an older flowtracker took them (the parser's check is stepped around)."""
    db = tmp_path / "old.db"
    store = SQLiteStore(db)
    deep_flow = flow_body(970)
    flow = dataclasses.replace(parse_flow(flow_body(1)), body=deep_flow)
    document = dataclasses.replace(
        parse_document(document_form_body(1), FORM), body=document_form_body(970)
    )
    Pipeline(store).ingest([flow, document])
    store.close()
    yield db, instance_id(1)


def test_what_was_stored_deeper_is_served_without_its_payload(
    stored_deep: tuple[Path, str],
) -> None:
    db, instance = stored_deep
    with TestClient(create_app(Settings(db_path=str(db)))) as client:
        event = client.get(f"/instances/{instance}").json()["events"][0]
        snapshot = client.get(f"/documents/{DOCUMENT}").json()["snapshots"][0]
        for entry in (event, snapshot):
            assert (entry["payload"], entry["payload_error"]) == (None, TOO_DEEP)
        for page in (f"/ui/instances/{instance}", f"/ui/documents/{DOCUMENT}"):
            shown = client.get(page)
            assert shown.status_code == 200
            assert f"(not shown: {TOO_DEEP})" in shown.text


def test_status_json_and_rebuild_keep_what_was_stored_deeper(
    stored_deep: tuple[Path, str],
) -> None:
    db, instance = stored_deep

    def status() -> Any:
        shown = subprocess.run(
            [sys.executable, "-m", "flowtracker", "status", instance, "--json", "--db", str(db)],
            capture_output=True,
            check=True,
        )
        return json.loads(shown.stdout)

    before = status()
    assert before["events"][0]["payload_error"] == TOO_DEEP
    rebuilt = subprocess.run(
        [sys.executable, "-m", "flowtracker", "rebuild", "--db", str(db)],
        capture_output=True,
        check=True,
    )
    assert b"0 states and 0 outcomes changed" in rebuilt.stdout
    assert status() == before


def test_a_replayed_line_too_deep_is_named_and_quarantined(tmp_path: Path) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_line(flow_body(MAX_NESTING))
    assert refused.value.problems == {"extra": TOO_DEEP}
    lines = tmp_path / "deep.jsonl"
    lines.write_bytes(flow_body(MAX_NESTING - 1) + b"\n" + flow_body(MAX_NESTING) + b"\n")
    db = tmp_path / "replayed.db"
    done = subprocess.run(
        [sys.executable, "-m", "flowtracker", "replay", str(lines), "--db", str(db)],
        capture_output=True,
        check=True,
    )
    assert done.stderr.decode().splitlines() == [
        f"line 2: invalid_event: invalid callback: extra: {TOO_DEEP}"
    ]
    store = SQLiteStore(db, access="read")
    try:
        kept = views.quarantine(store, views.Page())["items"]
        assert [(item["source"], item["error"]["details"]) for item in kept] == [
            (f"replay {lines}:2", {"extra": TOO_DEEP})
        ]
    finally:
        store.close()


def test_a_json_body_stored_deeper_is_served_without_its_payload(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    store = SQLiteStore(db)
    deep_document = (
        f'{{"document_id": "{DOCUMENT}", "document_signed_and_sealed": false, '
        f'"document_json": {json.dumps(document_json("pending", 1))[:-1]}, '
        f'"deep": {nested_text(2_000)}}}}}'
    ).encode()  # past the decoder's own limit: json.loads itself gives up on it
    flow = dataclasses.replace(parse_flow(flow_body(1)), body=flow_body(2_000))
    document = dataclasses.replace(
        parse_document(document_form_body(1), FORM),
        body=deep_document,
        content_type="application/json",
    )
    Pipeline(store).ingest([flow, document])
    try:
        served = views.instance(store, instance_id(1))["events"][0]
        snapshot = views.document(store, DOCUMENT)["snapshots"][0]
        for entry in (served, snapshot):
            assert (entry["payload"], entry["payload_error"]) == (None, TOO_DEEP)
    finally:
        store.close()
