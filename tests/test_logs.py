"""One log line per callback on `flowtracker.callbacks`; `--log-format json` for machines."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from uvicorn.logging import DefaultFormatter

from flowtracker.cli import main
from flowtracker.logs import JSONFormatter, PlainFormatter
from flowtracker.settings import Settings, SettingsError
from flowtracker.web import create_app
from flowtracker.web.serving import log_config as _log_config
from tests.conftest import DOCUMENT, INSTANCE, document_form, document_json, flow
from tests.server import serving

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}
LATENCY = re.compile(r"latency_ms=\d+\.\d")
ERROR_400 = "latency_ms=<ms> status=400 code=invalid_json"


@pytest.fixture
def client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Iterator[TestClient]:
    caplog.set_level(logging.INFO, logger="flowtracker.callbacks")
    with TestClient(create_app(Settings(db_path=str(tmp_path / "logs.db")))) as client:
        yield client


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """(level, message) of each callback line; the latency, which varies, as <ms>."""
    return [
        (record.levelname, LATENCY.sub("latency_ms=<ms>", record.getMessage()))
        for record in caplog.records
        if record.name == "flowtracker.callbacks"
    ]


def fields(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The structured fields of each callback line, the latency checked and left out."""
    found = []
    for record in caplog.records:
        if record.name == "flowtracker.callbacks":
            given = dict(record.__dict__["fields"])
            latency = given.pop("latency_ms")
            assert isinstance(latency, float) and 0 <= latency < 60_000
            found.append(given)
    return found


def taken(outcome: str, *, late: bool = False, kind: str = "flow", id_: str = INSTANCE) -> Any:
    flag = "true" if late else "false"
    return (
        "INFO",
        f"callback kind={kind} id={id_} outcome={outcome} out_of_order={flag} latency_ms=<ms>",
    )


def test_an_applied_callback(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    assert lines(caplog) == [taken("applied")]
    assert fields(caplog) == [
        {"kind": "flow", "subject_id": INSTANCE, "outcome": "applied", "out_of_order": False}
    ]


def test_a_duplicate(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    assert lines(caplog) == [taken("applied"), taken("duplicate")]


def test_an_out_of_order_callback(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client.post("/callbacks/flow", content=flow("cancelled", 20), headers=JSON)
    client.post("/callbacks/flow", content=flow("completed", 10), headers=JSON)
    client.post("/callbacks/flow", content=flow("custom", 30), headers=JSON)
    assert lines(caplog) == [taken("applied"), taken("applied", late=True), taken("illegal")]
    assert [f["out_of_order"] for f in fields(caplog)] == [False, True, False]


def test_a_document_callback(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    client.post("/callbacks/document", content=document_form("pending", 1), headers=FORM)
    assert lines(caplog) == [taken("applied", kind="document", id_=DOCUMENT)]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        ("/callbacks/flow", b"{}", JSON, 422, "invalid_event"),
        ("/callbacks/flow", b"{", JSON, 400, "invalid_json"),
        (
            "/callbacks/document",
            b"{}",
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_a_quarantined_callback(
    client: TestClient,
    caplog: pytest.LogCaptureFixture,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    assert client.post(path, content=body, headers=headers).status_code == status
    kind = path.rsplit("/", 1)[1]
    assert lines(caplog) == [
        (
            "WARNING",
            f"callback kind={kind} id=- outcome=quarantined out_of_order=false "
            f"latency_ms=<ms> status={status} code={code}",
        )
    ]
    assert fields(caplog) == [
        {
            "kind": kind,
            "subject_id": None,
            "outcome": "quarantined",
            "out_of_order": False,
            "status": status,
            "code": code,
        }
    ]


def test_an_unauthenticated_callback_is_rejected_and_no_token_or_body_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowtracker.callbacks")
    settings = Settings(db_path=str(tmp_path / "locked.db"), callback_token="s3cret-T0ken")
    body = flow("custom", 1, callback_name="b0dy-marker")
    with TestClient(create_app(settings)) as client:
        client.post("/callbacks/flow?token=wr0ng-T0ken", content=body, headers=JSON)
        client.post("/callbacks/flow?token=s3cret-T0ken", content=body, headers=JSON)
        client.post("/callbacks/flow?token=s3cret-T0ken", content=b'{"b0dy-marker"', headers=JSON)
    assert lines(caplog) == [
        (
            "WARNING",
            "callback kind=flow id=- outcome=rejected out_of_order=false latency_ms=<ms> "
            "status=401 code=unauthorized",
        ),
        taken("applied"),
        (
            "WARNING",
            "callback kind=flow id=- outcome=quarantined out_of_order=false latency_ms=<ms> "
            "status=400 code=invalid_json",
        ),
    ]
    everything = caplog.text + repr([r.__dict__ for r in caplog.records])
    for secret in ("s3cret-T0ken", "wr0ng-T0ken", "b0dy-marker"):
        assert secret not in everything


def test_a_document_id_that_could_break_the_line_is_quoted(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Control characters are refused at intake; U+2028 (a line separator) is not one.
    odd = "lease 7\u2028INFO: forged"
    form = urlencode({
        "document_id": odd,
        "document_signed_and_sealed": "false",
        "document_json": json.dumps(document_json("pending", 1, id=odd)),
    }).encode()  # fmt: skip
    assert client.post("/callbacks/document", content=form, headers=FORM).status_code == 200
    assert lines(caplog) == [taken("applied", kind="document", id_=json.dumps(odd))]
    assert fields(caplog)[0]["subject_id"] == odd


def test_the_callback_logger_can_be_silenced_alone(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="flowtracker.callbacks")
    client.post("/callbacks/flow", content=flow("completed", 1), headers=JSON)
    client.post("/callbacks/flow", content=b"{", headers=JSON)
    assert lines(caplog) == []
    assert logging.getLogger("flowtracker").isEnabledFor(logging.WARNING)


def record(name: str, message: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    made.created = 1_800_000_000.25  # 2027-01-15T08:00:00.250Z
    return made


def test_json_formatter_puts_a_lines_fields_in_its_object() -> None:
    line = JSONFormatter().format(
        record("flowtracker.callbacks", "callback %s", "ünïcode", fields={"outcome": "applied"})
    )
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00.250Z",
        "level": "INFO",
        "logger": "flowtracker.callbacks",
        "message": "callback ünïcode",
        "outcome": "applied",
    }
    assert "\n" not in line and "ünïcode" in line


def test_json_formatter_gives_uvicorns_access_line_its_fields() -> None:
    args = ("127.0.0.1:5000", "POST", "/callbacks/flow?token=[redacted]", "1.1", 200)
    entry = json.loads(
        JSONFormatter().format(record("uvicorn.access", '%s - "%s %s HTTP/%s" %d', *args))
    )
    assert entry == {
        "time": "2027-01-15T08:00:00.250Z",
        "level": "INFO",
        "logger": "uvicorn.access",
        "message": '127.0.0.1:5000 - "POST /callbacks/flow?token=[redacted] HTTP/1.1" 200',
        "client": "127.0.0.1:5000",
        "method": "POST",
        "path": "/callbacks/flow?token=[redacted]",
        "http_version": "1.1",
        "status": 200,
    }


def test_json_formatter_keeps_a_traceback_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logging.LogRecord(
            "flowtracker", logging.ERROR, __file__, 1, "x", (), sys.exc_info()
        )
    line = JSONFormatter().format(failed)
    assert "\n" not in line
    assert json.loads(line)["exception"].endswith("ValueError: boom")


def test_log_config_json_formats_every_handler_as_json() -> None:
    plain, as_json = _log_config("plain"), _log_config("json")
    assert {name: f.get("()") for name, f in as_json["formatters"].items()} == {
        "default": "flowtracker.logs.JSONFormatter",
        "access": "flowtracker.logs.JSONFormatter",
        "flowtracker": "flowtracker.logs.JSONFormatter",
    }
    assert "flowtracker.logs.JSONFormatter" not in json.dumps(plain)
    assert (plain["loggers"], plain["handlers"]) == (as_json["loggers"], as_json["handlers"])
    assert plain["handlers"]["flowtracker"]["stream"] == "ext://sys.stderr"
    assert plain["loggers"]["flowtracker.callbacks"] == {"level": "WARNING"}  # by default
    assert "flowtracker.callbacks" not in _log_config("plain", callback_log=True)["loggers"]


@pytest.mark.parametrize(
    ("level", "line"),
    [
        (logging.INFO, "INFO:     callback x"),
        (logging.WARNING, "WARNING:  callback x"),
        (logging.ERROR, "ERROR:    callback x"),
    ],
)
def test_plain_formatter_lays_lines_out_as_uvicorn_does(level: int, line: str) -> None:
    made = logging.LogRecord("flowtracker", level, __file__, 1, "callback %s", ("x",), None)
    uvicorn = DefaultFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert PlainFormatter().format(made) == uvicorn.format(made) == line


@pytest.mark.parametrize(
    ("environ", "flag", "expected"),
    [
        ({}, None, "plain"),
        ({"FLOWTRACKER_LOG_FORMAT": "json"}, None, "json"),
        ({"FLOWTRACKER_LOG_FORMAT": "json"}, "plain", "plain"),
        ({}, "json", "json"),
    ],
)
def test_log_format_setting(environ: dict[str, str], flag: str | None, expected: str) -> None:
    settings = Settings.from_env(environ, log_format=flag)
    assert settings.log_format == expected
    assert settings.to_env()["FLOWTRACKER_LOG_FORMAT"] == expected


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(SettingsError, match="FLOWTRACKER_LOG_FORMAT must be plain or json"):
        Settings.from_env({"FLOWTRACKER_LOG_FORMAT": "xml"})
    result = CliRunner().invoke(main, ["serve", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "'xml' is not one of 'plain', 'json'" in result.output


def test_serve_help_shows_the_log_format() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--log-format [plain|json]" in result.output
    assert "--callback-log / --no-callback-log" in result.output
    assert "FLOWTRACKER_LOG_FORMAT" in result.output


APPLIED = f"INFO:     callback kind=flow id={INSTANCE} outcome=applied out_of_order=false "
QUARANTINED = "WARNING:  callback kind=flow id=- outcome=quarantined out_of_order=false "


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("--no-access-log --callback-log", [APPLIED + "latency_ms=<ms>", QUARANTINED + ERROR_400]),
        ("--no-callback-log", [QUARANTINED + ERROR_400]),  # refusals only
        ("", [QUARANTINED + ERROR_400]),  # the default
    ],
)
def test_plain_lines_from_the_real_server(tmp_path: Path, flag: str, expected: list[str]) -> None:
    with serving(tmp_path / "plain.db", *flag.split()) as server:
        httpx.post(f"{server.url}/callbacks/flow", content=flow("completed", 1), headers=JSON)
        httpx.post(f"{server.url}/callbacks/flow", content=b"{", headers=JSON)
    got = [LATENCY.sub("latency_ms=<ms>", line) for line in server.output().splitlines()]
    assert [line for line in got if "callback kind=" in line] == expected
    assert any('"POST /callbacks/flow HTTP/1.1" 200' in line for line in got) == (
        "--no-access-log" not in flag
    )


@pytest.mark.slow
def test_every_line_of_the_real_server_is_json(tmp_path: Path) -> None:
    env = {"FLOWTRACKER_CALLBACK_TOKEN": "cb-T0ken-xyz"}  # no read token: a warning at start
    args = ("--log-format", "json", "--workers", "2", "--callback-log")
    with serving(tmp_path / "json.db", *args, env=env) as server:
        url = f"{server.url}/callbacks/flow?token=cb-T0ken-xyz"
        httpx.post(url, content=flow("completed", 1), headers=JSON)
        httpx.post(url, content=flow("completed", 1), headers=JSON)
        httpx.post(url, content=b"{", headers=JSON)
        httpx.post(f"{server.url}/callbacks/flow", content=flow("custom", 2), headers=JSON)
        httpx.get(f"{server.url}/metrics")
    output = server.output()
    entries = [json.loads(line) for line in output.splitlines()]  # every line, or it fails
    assert {"time", "level", "logger", "message"} <= set().union(*entries)
    assert "cb-T0ken-xyz" not in output
    callbacks = [e for e in entries if e["logger"] == "flowtracker.callbacks"]
    for entry in callbacks:
        assert entry.pop("latency_ms") >= 0
        del entry["time"], entry["message"]
    common = {"logger": "flowtracker.callbacks", "kind": "flow"}
    assert callbacks == [
        {**common, "level": "INFO", "subject_id": INSTANCE, "outcome": "applied",
         "out_of_order": False},
        {**common, "level": "INFO", "subject_id": INSTANCE, "outcome": "duplicate",
         "out_of_order": False},
        {**common, "level": "WARNING", "subject_id": None, "outcome": "quarantined",
         "out_of_order": False, "status": 400, "code": "invalid_json"},
        {**common, "level": "WARNING", "subject_id": None, "outcome": "rejected",
         "out_of_order": False, "status": 401, "code": "unauthorized"},
    ]  # fmt: skip
    access = [e for e in entries if e["logger"] == "uvicorn.access" and e["path"] != "/healthz"]
    assert [(e["method"], e["path"], e["status"]) for e in access] == [
        ("POST", "/callbacks/flow?token=[redacted]", 200),
        ("POST", "/callbacks/flow?token=[redacted]", 200),
        ("POST", "/callbacks/flow?token=[redacted]", 400),
        ("POST", "/callbacks/flow", 401),
        ("GET", "/metrics", 200),
    ]
    loggers = {e["logger"] for e in entries}
    assert {"uvicorn.error", "flowtracker", "flowtracker.callbacks", "uvicorn.access"} <= loggers
