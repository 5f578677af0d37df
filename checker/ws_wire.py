"""A WebSocket client's handshake and frame reader, fed bytes as they arrive, for the checker's WebSocket clients.

Written for the checker from RFC 6455 (sections 4.1 and 5) and the frame
format that docs/websocket.rst documents (one JSON text frame per event);
nothing in it comes from the library under test. It has the interface of
``wire.StreamReader``, so that a client reads either the same way:

- ``has_head`` is set by the stream's answer: the checker app's frame
  ``{"x-worker": pid, "x-auth-start": t}`` (sent as the stream opens, where an
  SSE stream has its head), a close frame, or an HTTP answer other than 101;
- a close frame ends the body (``finished``); its code and reason are kept,
  and a refusal's code (4400, 4403, 4429) is the status an SSE stream would
  have been answered;
- ``partial()`` names an unfinished frame when the connection ended inside one.
"""

from __future__ import annotations

import base64
import json
import os
import struct
from dataclasses import dataclass, field

from .wire import Event

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
#: The close code of each refusal, and the HTTP status an SSE stream would have been answered.
REFUSALS = {4400: 400, 4403: 403, 4429: 429}


def upgrade_request(path: str, host: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
    ]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame from the client: masked, as RFC 6455 requires (payloads under 126 bytes)."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return struct.pack("!BB", 0x80 | opcode, 0x80 | len(payload)) + mask + masked


@dataclass
class FrameReader:
    #: 200 once the stream answered (the app's frame), the refusal's status after its close, or the HTTP status.
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    finished: bool = False
    body: bytes = b""
    #: The close frame's code and reason (None before one came).
    close_code: int | None = None
    close_reason: str = ""
    #: Control frames the client must answer (pings, a close), in order.
    replies: list[bytes] = field(default_factory=list)
    _upgraded: bool = False
    _head: bytes = b""
    _raw: bytes = b""

    @property
    def has_head(self) -> bool:
        return self.status != 0

    def feed(self, data: bytes) -> list[Event]:
        if not self._upgraded:
            self._head += data
            if b"\r\n\r\n" not in self._head:
                return []
            head, data = self._head.split(b"\r\n\r\n", 1)
            if not self._upgrade(head):
                self.body = data[:2000]
                return []
        self._raw += data
        events: list[Event] = []
        while not self.finished and (frame := self._frame()) is not None:
            event = self._take(*frame)
            if event is not None:
                events.append(event)
        return events

    def _upgrade(self, head: bytes) -> bool:
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        for line in lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._upgraded = status == 101
        if not self._upgraded:
            self.status, self.finished = status, True
        return self._upgraded

    def _frame(self) -> tuple[int, bytes] | None:
        raw = self._raw
        if len(raw) < 2:
            return None
        opcode, length, start = raw[0] & 0x0F, raw[1] & 0x7F, 2
        if raw[0] & 0x80 == 0 or raw[1] & 0x80:
            raise ValueError(f"the server sent a fragmented or masked frame: {raw[:2]!r}")
        if length == 126:
            if len(raw) < 4:
                return None
            length, start = struct.unpack("!H", raw[2:4])[0], 4
        elif length == 127:
            if len(raw) < 10:
                return None
            length, start = struct.unpack("!Q", raw[2:10])[0], 10
        if len(raw) < start + length:
            return None
        self._raw = raw[start + length :]
        return opcode, raw[start : start + length]

    def _take(self, opcode: int, payload: bytes) -> Event | None:
        if opcode == PING:
            self.replies.append(client_frame(PONG, payload))
        elif opcode == CLOSE:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode("utf-8", "replace")
            self.replies.append(client_frame(CLOSE, payload[:2]))
            self.finished = True
            if self.close_code in REFUSALS:
                self.status = REFUSALS[self.close_code]
                self.body = f"close {self.close_code} {self.close_reason}".encode()
            elif not self.status:
                self.status = 200  # ended as it opened: an SSE stream is answered 200, then ended
        elif opcode == TEXT:
            fields = json.loads(payload)
            if "x-worker" in fields:
                self.status = 200
                self.headers.update({key: str(value) for key, value in fields.items()})
            elif "data" in fields:
                id = fields.get("id")
                return Event(int(id) if id is not None else None, fields.get("event", "message"), fields["data"])
        return None  # a pong, or a frame without data (a retry alone): not an event

    def partial(self) -> str:
        """An unfinished frame ("" when the connection ended between frames)."""
        return f"frame: {self._raw[:60]!r}" if self._upgraded and self._raw and not self.finished else ""
