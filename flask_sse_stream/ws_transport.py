"""The stream over a WebSocket that gevent-websocket's handler accepted (``environ["wsgi.websocket"]``).

The view decides everything as for an SSE stream (channels, authorization,
limits, the replay); this module drives the same :class:`Stream` and writes
WebSocket frames instead of SSE text: one text frame per event (see
ws_frames), pings as keep-alives, and a close frame whose code tells the
client whether to resume or stop. It never imports gevent-websocket: it
uses the socket and reader the handler hands over.

One greenlet writes (the request's, after the request context has gone, as
for SSE, or direct writes); one reads the client's frames once it sends any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import gevent
import gevent.lock

from .event import Event
from .stream import GRACE, Stream
from .stream_body import finished
from .ws_frames import (
    BINARY,
    CLOSE,
    PING,
    PING_FRAME,
    PONG,
    TEXT,
    FrameError,
    close_frame,
    event_frame,
    fields_of,
    frame,
    is_ping,
    json_frame,
    pieces,
    read_frame,
)
from .ws_writer import FrameWriter, direct

#: Close codes, and what a client does on each (docs/websocket.rst).
RESTART = 1012  # the server ends the stream (shutdown, a planned end): resume
TRY_AGAIN = 1013  # the store could not be reached: resume after a while
ENDED = 4000  # end_streams or an expiry: reconnect, to be authorized again
BAD_REQUEST = 4400  # bad channels: stop
FORBIDDEN = 4403  # the authorizer refused: stop for good
TOO_MANY = 4429  # SSE_MAX_CONNECTIONS or the per-client limit: retry later
#: The close code of each HTTP status the SSE stream would answer.
FOR_STATUS = {400: BAD_REQUEST, 403: FORBIDDEN, 429: TOO_MANY, 503: TOO_MANY}
_REASONS = {
    RESTART: "service restart, resume",
    TRY_AGAIN: "store unavailable, resume later",
    ENDED: "ended, reconnect to be re-authorized",
}


def websocket_of(environ: dict[str, Any]) -> Any:
    """gevent-websocket's WebSocket for this request, if its handler accepted an upgrade."""
    return environ.get("wsgi.websocket")


def socket_of(ws: Any) -> Any:
    return getattr(getattr(ws, "handler", None), "socket", None)


class Connection:
    """One client's WebSocket: locked writes, the reader of its frames, and its close handshake."""

    def __init__(self, ws: Any, stream: Stream | None = None) -> None:
        self._ws = ws
        self._write: Callable[[bytes], Any] = ws.raw_write
        self._read: Callable[[int], bytes] = ws.raw_read
        self._lock = gevent.lock.Semaphore()
        self._stream = stream
        #: The close frame sent (code), once sent; nothing is written after it.
        self.closed_with: int | None = None
        #: A code and reason the reader found (a client's close, a bad frame).
        self.ending: tuple[int, str] | None = None
        #: The client has closed its side (a close frame or EOF).
        self.peer_gone = False
        self.written = 0
        self._reader: gevent.Greenlet | None = None
        self._watcher: Any = None
        #: The stream's direct writer, once it has one: the reader's pongs go through it.
        self.writer: FrameWriter | None = None

    def send(self, data: bytes) -> None:
        """Write ``data``; OSError if the client is gone (or it was closed)."""
        with self._lock:
            if self.closed_with is not None:
                raise OSError("the WebSocket is closed")
            self._write(data)
        self.written += len(data)

    def close(self, code: int, reason: str = "", before: bytes = b"") -> None:
        """Send ``before`` and the close frame (once), then wait up to GRACE for the client's close."""
        with self._lock:
            if self.closed_with is None and not self.peer_gone:
                self.closed_with = code
                try:
                    self._write(before + close_frame(code, reason))
                except OSError:
                    self.peer_gone = True
        self._stop_watching()
        if self._reader is None:
            self._reader = gevent.spawn(self._read_frames)
        self._reader.join(GRACE)
        self._reader.kill(block=False)
        self._ws.closed = True  # gevent-websocket must not send a close of its own

    def start_reading(self) -> None:
        """Read the client's frames once it sends any: till then a watcher waits, not a greenlet (12 KiB each)."""
        sock = socket_of(self._ws)
        try:
            watcher = self._watcher = gevent.get_hub().loop.io(sock.fileno(), 1)
        except (AttributeError, OSError):
            self._reader = gevent.spawn(self._read_frames)
            return
        watcher.start(self._readable)

    def _readable(self) -> None:
        self._stop_watching()
        if self._reader is None:
            self._reader = gevent.spawn(self._read_frames)

    def release(self) -> None:
        """The stream has ended: stop waiting for the client's frames."""
        self._stop_watching()
        if self._reader is not None:
            self._reader.kill(block=False)

    def _stop_watching(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()

    def _read_frames(self) -> None:
        try:
            while self._on_frame(*read_frame(self._read)):
                pass
        except FrameError as error:
            self._end(error.code, error.reason)
        except (EOFError, OSError, ValueError):
            self.peer_gone = True  # gone without a close frame
            self._end(None, "")

    def _on_frame(self, opcode: int, payload: bytes) -> bool:
        if opcode == PING:
            if self.writer is not None:
                self.writer.hand_over(frame(PONG, payload))
            else:
                try:
                    self.send(frame(PONG, payload))
                except OSError:
                    pass
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            self._end(1000 if code < 1000 or code in (1004, 1005, 1006, 1015) else code, "")
            return False
        elif opcode == TEXT:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                raise FrameError(1007, "text frames must be UTF-8") from None
            if not is_ping(text):
                raise FrameError(1003, 'the channels are fixed at connect: a client sends only {"ping": ...}')
        elif opcode == BINARY:
            raise FrameError(1003, "binary frames are not accepted here")
        return True

    def _end(self, code: int | None, reason: str) -> None:
        if code is not None and self.ending is None:
            self.ending = (code, reason)
        if self._stream is not None:
            self._stream.close()


class Refusal(Iterator[bytes]):
    """The body of a WebSocket stream that does not open: a close frame with ``code`` (and a ``retry``)."""

    def __init__(self, ws: Any, code: int, reason: str, farewell: bytes | None = None) -> None:
        self._connection: Connection | None = Connection(ws)
        self._code = code
        self._reason = reason or _REASONS.get(code, "")
        self._before = json_frame(fields_of(farewell)) if farewell else b""

    def __next__(self) -> bytes:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close(self._code, self._reason, self._before)
        raise StopIteration


class Session(Iterator[bytes]):
    """The body of an open WebSocket stream: it runs the whole stream in its first step, and yields nothing.

    gevent-websocket iterates the body after Flask has popped the request
    context, and never calls ``close()``: the stream ends inside.
    """

    def __init__(
        self,
        ended: Callable[[Stream], None],
        stream: Stream,
        ws: Any,
        keepalive: float,
        first: Sequence[Event],
        direct_writes: bool = True,
    ) -> None:
        self._raw = direct(socket_of(ws)) if direct_writes else None
        self._ended = ended
        self._stream = stream
        self._connection = Connection(ws, stream)
        self._keepalive = keepalive
        self._first: Sequence[Event] | None = first
        self._done = False

    def __next__(self) -> bytes:
        if not self._done:
            self._done = True
            try:
                self._run()
            finally:
                self._finish()
        raise StopIteration

    def _run(self) -> None:
        stream, connection = self._stream, self._connection
        connection.start_reading()
        try:
            first, self._first = self._first or (), None
            for piece in pieces(first):
                if stream.closed:
                    break
                connection.send(piece)
            if self._raw is not None:
                self._write_directly(self._raw)
            while (events := stream.take(self._keepalive)) is not None:
                connection.send(b"".join([event_frame(event) for event in events]) if events else PING_FRAME)
        except OSError:
            connection.peer_gone = True
            stream.close()  # the client is gone
        self._close()

    def _write_directly(self, raw: Any) -> None:
        stream, connection = self._stream, self._connection
        writer = stream.writer = connection.writer = FrameWriter(stream, raw)
        while (data := writer.take_chunk(self._keepalive, PING_FRAME)) is not None:
            connection.send(data)
            writer.wrote()
        stream.writer = None

    def _close(self) -> None:
        stream, connection = self._stream, self._connection
        if connection.ending is not None:
            code, reason = connection.ending
        elif stream.too_slow:
            return  # its connection was cut
        elif stream.ending is not None:
            code, reason = ENDED, _REASONS[ENDED]
        else:
            code, reason = RESTART, _REASONS[RESTART]
        farewell = stream.farewell()
        before = json_frame(fields_of(farewell)) if farewell and code in (RESTART, ENDED) else b""
        connection.close(code, reason, before)

    def _finish(self) -> None:
        stream = self._stream
        self._connection.release()
        stream.counters.bytes_written += self._connection.written
        finished(stream, self._ended, "WebSocket stream")
