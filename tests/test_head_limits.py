"""Request heads on a real server: too slow, too large or too many headers are refused in
the one error shape and the connection closed (`flowtracker.web.guard`)."""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from tests.server import Server, serving

HEAD = b"POST /callbacks/flow HTTP/1.1\r\nHost: flowtracker\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("heads") / "heads.db"
    with serving(db, env={"FLOWTRACKER_HEAD_TIMEOUT": "2"}) as running:
        yield running


def connect(server: Server) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    conn = socket.create_connection(("127.0.0.1", port))
    conn.settimeout(30)  # a hang fails the test instead of holding it
    return conn


def answer(conn: socket.socket) -> tuple[int, dict[str, object], bytes]:
    """The status, the JSON body and what follows (b"" once the server has closed)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return int(head.split()[1]), json.loads(body[:length]), closed(conn)


def closed(conn: socket.socket) -> bytes:
    """b"" once the server has closed (a reset too: it closed with our bytes unread)."""
    try:
        return conn.recv(1)
    except ConnectionResetError:
        return b""


@pytest.mark.slow
def test_slow_heads_are_answered_408_and_closed(server: Server) -> None:
    trickling = [connect(server) for _ in range(150)]
    silent = [connect(server) for _ in range(10)]
    for conn in trickling:
        conn.sendall(HEAD + b"X-Slow: 1\r\n")  # and never the blank line
    for conn in trickling + silent:
        status, body, rest = answer(conn)
        assert (status, body["error"]["code"], rest) == (408, "request_timeout", b"")  # type: ignore[index]
        conn.close()
    assert httpx.get(server.url + "/healthz").status_code == 200


@pytest.mark.parametrize(
    "extra",
    [b"X-Big: " + b"a" * 2_000_000 + b"\r\n", b"".join(b"X-%d: v\r\n" % n for n in range(5_000)),
     b"".join(b"a%d:\r\n" % n for n in range(101))],
    ids=["a 2 MB header", "5,000 headers", "101 tiny headers"],
)  # fmt: skip
def test_large_heads_are_answered_431_and_closed(server: Server, extra: bytes) -> None:
    with connect(server) as conn:
        with contextlib.suppress(ConnectionResetError):  # refused before all was sent
            conn.sendall(HEAD + extra + b"Content-Length: 2\r\n\r\n{}")
        status, body, rest = answer(conn)
    assert (status, body) == (
        431,
        {
            "error": {
                "code": "request_headers_too_large",
                "message": "the request head is over the limit of 32768 bytes or 100 headers",
                "details": {"max_bytes": 32768, "max_count": 100},
            }
        },
    )
    assert rest == b""
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_head_within_the_limits_is_served_on_a_kept_alive_connection(server: Server) -> None:
    with connect(server) as conn:
        for _ in range(3):
            padded = b"X-Pad: " + b"p" * 30_000 + b"\r\n\r\n"
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + padded)
            assert answer_keep_alive(conn) == (200, {"status": "ok"})


def answer_keep_alive(conn: socket.socket) -> tuple[int, object]:
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_the_next_request_on_a_kept_alive_connection_has_the_same_time_limit(
    server: Server,
) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_keep_alive(conn) == (200, {"status": "ok"})
        conn.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        status, body, rest = answer(conn)
    assert (status, body["error"]["code"], rest) == (408, "request_timeout", b"")  # type: ignore[index]


def test_blank_lines_between_requests_do_not_hold_a_connection(server: Server) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_keep_alive(conn) == (200, {"status": "ok"})
        for _ in range(3):  # the parser skips them; uvicorn's keep-alive timer stops
            conn.sendall(b"\r\n")
        status, body, rest = answer(conn)
        assert (status, body["error"]["code"], rest) == (408, "request_timeout", b"")  # type: ignore[index]


def test_the_first_chunk_of_a_later_head_counts_toward_its_size(server: Server) -> None:
    with connect(server) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer_keep_alive(conn) == (200, {"status": "ok"})
        with contextlib.suppress(ConnectionResetError):  # never ended: counted as it comes
            conn.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"b" * 40_000)
        status, body, rest = answer(conn)
        assert (status, body["error"]["code"], rest) == (431, "request_headers_too_large", b"")  # type: ignore[index]


def test_refused_heads_are_counted_by_status_in_metrics(server: Server) -> None:
    with connect(server) as large:
        large.sendall(HEAD + b"".join(b"a%d:\r\n" % n for n in range(101)) + b"\r\n")
        assert answer(large)[0] == 431
    with connect(server) as slow:
        slow.sendall(HEAD)  # and never the rest: refused when its 2 s are up
        assert answer(slow)[0] == 408
    text = httpx.get(server.url + "/metrics").text
    counted = dict(re.findall(r'flowtracker_http_responses_total\{status="(\d+)"\} ([\d.]+)', text))
    assert float(counted["431"]) >= 1 and float(counted["408"]) >= 1
