"""Stream clients over the WebSocket transport: the behaviours, admissions and history of ``clients.Client``.

A WebSocket client is a ``Client`` in all it draws and records; only its
wire differs (see ``checker.ws_wire``): it asks with an upgrade request,
resumes with ``?lastEventId=`` (a WebSocket has no ``Last-Event-ID``
header), answers pings and the server's close, and closes with a close
frame (1000) where an SSE client just closes its socket; a connection the
server closes without a close frame is recorded as cut ("network: ..."),
as a browser's 1006. A refusal's close
code (4403, 4429, 4400) is recorded as the status an SSE stream would have
been answered, so that the same rules judge both.
"""

from __future__ import annotations

import socket
from urllib.parse import urlencode

from .clients import Client
from .history import Connection
from .wire import Event
from .ws_wire import CLOSE, FrameReader, client_frame, upgrade_request


class WebSocketClient(Client):
    transport = "websocket"

    def _reader(self) -> FrameReader:
        return FrameReader()

    def _end_of(self, reader: FrameReader) -> str:  # type: ignore[override]
        # A clean end is a close frame. A connection closed without one is cut (1006, as a browser says):
        # no WebSocket client hands on a part of a frame, and a slow client's cut has no close frame.
        return "server-end" if reader.finished else "network: closed without a close frame"

    def _request(self, via: str | None, record: Connection) -> bytes:
        query = self._query(record)
        if via is not None:
            record.resume_via = "query"
            query.append(("lastEventId", str(self.last_id)))
        return upgrade_request(f"/stream?{urlencode(query)}", f"127.0.0.1:{self.port}")

    def _take(self, events: list[Event], reader: FrameReader, record: Connection) -> None:  # type: ignore[override]
        super()._take(events, reader, record)
        if reader.finished and reader.has_head:
            record.status = reader.status  # a refusal's close after the app's frame
        self._answer(reader)

    def _answer(self, reader: FrameReader) -> None:
        replies, reader.replies = reader.replies, []
        if replies and self._sock is not None:
            try:
                self._sock.sendall(b"".join(replies))
            except OSError:
                pass  # gone: the next read says how

    def _goodbye(self, sock: socket.socket, record: Connection) -> None:
        if record.ended == "client-close" and record.opened is not None:
            try:
                sock.sendall(client_frame(CLOSE, (1000).to_bytes(2, "big")))
            except OSError:
                pass
