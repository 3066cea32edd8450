"""The socket between the HTTP workers and the writer process (`writer`).

Messages are pickles behind a 4-byte length. Both ends are this package, and the socket
lives in a directory only its user can enter (mode 0700): whoever can connect can already
run code as that user.

A worker asks `(number, request fields)`, or `(number, None)` for a ping; the writer
answers `(number, True, receipt fields)` or `(number, False, error)`, where the error is
a `FlowtrackerError` or None for a failure that is not one. Fields are plain tuples, in
the named tuples' own order: pickled as themselves, they would name their class. After a
commit that wrote changes, the writer tells every worker `(CHANGES_NOTICE, True, seq)`,
the last change's number (for the feeds, `feed.hub`).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from typing import Any, cast

from flowtracker.ingest.interface import CallbackRequest, Receipt

log = logging.getLogger("flowtracker")

WRITER_SOCKET = "FLOWTRACKER_WRITER_SOCKET"  # how `serve` tells its workers where it is
GONE = "the writer process went away; deliver it again"
_HEADER = struct.Struct("!I")
CHANGES_NOTICE = 0  # the number of no request (they count from 1)


def request_fields(request: CallbackRequest) -> tuple[Any, ...]:
    return tuple(request)


def receipt_fields(receipt: Receipt) -> tuple[Any, ...]:
    return tuple(receipt)


class Framed(asyncio.Protocol):
    """Length-prefixed pickles both ways; subclasses handle each message in `received`.

    With `gather`, what is sent in one loop pass goes out in one write (the writer's
    answers from one commit). Without, each message goes at once (a worker's requests:
    gathered until the end of the loop pass, they reached the writer only after the
    worker had handled every ready request, and the two processes took turns instead of
    working side by side).
    """

    gather = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            end = offset + _HEADER.size + size
            if len(buffer) < end:
                break
            # Only processes of the socket's own user can connect (module docstring).
            self.received(pickle.loads(buffer[offset + _HEADER.size : end]))  # noqa: S301
            offset = end
        del buffer[:offset]

    def received(self, message: Any) -> None:
        raise NotImplementedError

    def send(self, message: Any) -> None:
        """Raises what pickling raises: nothing is sent then."""
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(payload)) + payload
        if not self.gather:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(frame)
            return
        self._out.append(frame)
        if len(self._out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out))
        self._out.clear()
