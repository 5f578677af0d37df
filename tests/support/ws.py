"""A client of the stream's WebSocket transport, on websocket-client (an independent library from PyPI)."""

from __future__ import annotations

import json
import time
from typing import Any

import psutil
import websocket
from websocket import ABNF

#: Every client opened and not yet closed: a test's fixture closes them (see :func:`close_all`).
OPEN: list[WsClient] = []


def close_all() -> None:
    while OPEN:
        OPEN.pop().close()


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class WsClient:
    """``ws://127.0.0.1:<port><path>``; :meth:`event` the next event's fields, :meth:`close_code` the end."""

    def __init__(self, port: int, path: str, timeout: float = 10.0, **options: Any) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout, **options)
        self.pings = 0
        self.timeout = timeout
        #: Frames without data (a ``retry`` before a close, say), as the browser client would not dispatch them.
        self.undispatched: list[dict[str, Any]] = []
        OPEN.append(self)

    def event(self) -> dict[str, Any]:
        """The next frame with ``data`` within ``timeout`` seconds; raises :class:`Closed` on a close frame."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            opcode, frame = self.ws.recv_data_frame(True)
            if opcode == ABNF.OPCODE_TEXT:
                fields: dict[str, Any] = json.loads(frame.data.decode("utf-8"))
                if "data" in fields:
                    return fields
                self.undispatched.append(fields)
            elif opcode == ABNF.OPCODE_PING:
                self.pings += 1
            elif opcode == ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
                raise Closed(code, frame.data[2:].decode("utf-8", "replace"))
            else:
                raise AssertionError(f"unexpected opcode {opcode}")
        raise TimeoutError(f"no event within {self.timeout} s (keep-alive pings: {self.pings})")

    def events(self, n: int) -> list[dict[str, Any]]:
        return [self.event() for _ in range(n)]

    def close_code(self) -> tuple[int, str, list[dict[str, Any]]]:
        """Read to the close frame: its code and reason, and the events before it."""
        before = []
        try:
            while True:
                before.append(self.event())
        except Closed as closed:
            return closed.code, closed.reason, before

    def peer(self) -> tuple[str, int]:
        name: tuple[str, int] = self.ws.sock.getsockname()
        return name

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except (OSError, websocket.WebSocketException):
            pass
        self.ws.shutdown()  # the socket too, also after a close frame
        if self in OPEN:
            OPEN.remove(self)


def worker_serving(client: WsClient, workers: set[int]) -> int:
    """The pid of the worker whose socket is the other end of ``client``'s (the 101 names no worker)."""
    peer = client.peer()
    for pid in workers:
        for connection in psutil.Process(pid).net_connections("tcp"):
            if connection.raddr and (connection.raddr.ip, connection.raddr.port) == peer:
                return pid
    raise AssertionError(f"no worker of {sorted(workers)} holds the connection from {peer}")
