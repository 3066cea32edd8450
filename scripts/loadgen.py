"""A small bounded HTTP/1.1 load generator: keep-alive connections on asyncio, fixed
request bodies, stops after a duration or a request count, whichever comes first.

Used by bench_http.py when wrk is not installed. Prints nothing; `run()` returns counts
and latencies.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    requests: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0


def request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    next_index: list[int],
    deadline: float,
    limit: int,
    result: Result,
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline and next_index[0] < limit:
            raw = requests[next_index[0] % len(requests)]
            next_index[0] += 1
            started = time.perf_counter()
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1
            result.statuses[status] = result.statuses.get(status, 0) + 1
    except (OSError, asyncio.IncompleteReadError):
        result.errors += 1
    finally:
        writer.close()


async def _run(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float, limit: int
) -> Result:
    result, next_index = Result(), [0]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(
        *(
            _connection(host, port, requests, next_index, deadline, limit, result)
            for _ in range(connections)
        )
    )
    result.seconds = time.perf_counter() - started
    return result


def run(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float, limit: int
) -> Result:
    """Send `requests` in turn over `connections` connections; bounded in time and count."""
    return asyncio.run(_run(host, port, requests, connections, seconds, limit))
