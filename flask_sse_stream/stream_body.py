"""The WSGI body of a stream: its opening and replay, then live events until it ends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .event import Event
from .hangups import shutdown
from .socket_writer import DirectWriter, chunk
from .stats import Counters
from .stream import PIECE, Stream

log = logging.getLogger("flask_sse_stream")

OPENING = b": flask_sse_stream\n"
KEEPALIVE = b": keep-alive\n\n"
KEEPALIVE_CHUNK = chunk(KEEPALIVE)


class StreamBody(Iterator[bytes]):
    """The WSGI body of one stream.

    The first item (opening comment and replay) goes through the server, which
    writes the headers with it. After that, under gevent with a server whose
    socket and framing are known (``direct``), the body writes the chunks
    itself and senders may write to the socket directly; otherwise each item
    is one write of every pending event joined.
    """

    __slots__ = (
        "_ended", "_stream", "_first", "_replay", "_next_replayed", "_keepalive", "_direct", "_counters", "_unwatch",
    )  # fmt: skip

    def __init__(
        self,
        ended: Callable[[Stream], None],
        stream: Stream,
        first: bytes,
        keepalive: float,
        direct: Any = None,
        replay: Sequence[Event] = (),
        unwatch: Callable[[], None] | None = None,
    ) -> None:
        #: Called once the response has ended (``SSECore.close_stream``).
        self._ended = ended
        self._stream = stream
        self._first: bytes | None = first
        #: The replayed events, shared with the streams that opened on the same read, and the next to write.
        self._replay: Sequence[Event] | None = replay or None
        self._next_replayed = 0
        self._keepalive = keepalive
        self._direct = direct
        self._counters: Counters = stream.counters
        #: Stops watching the socket for the client's departure (see hangups).
        self._unwatch = unwatch

    def __next__(self) -> bytes:
        stream = self._stream
        stream.in_write = False  # the server wrote the last item
        try:
            data = self._next()
        except StopIteration:
            stream.in_write = True  # the server writes the end of the response now
            raise
        self._counters.bytes_written += len(data)
        stream.writes += 1
        stream.in_write = True
        return data

    def _next(self) -> bytes:
        first = self._first
        if first is not None:
            self._first = None
            return first + self._piece() if self._replay else first
        if self._replay and not self._stream.closed:
            return self._piece()
        if self._direct is not None:
            self._write_directly(self._direct)
            raise StopIteration
        events = self._stream.take(self._keepalive)
        if events is None:
            farewell = self._stream.farewell()
            if farewell is None:
                raise StopIteration
            return farewell
        if not events:
            return KEEPALIVE
        if len(events) == 1:
            return events[0].frame
        return b"".join([event.frame for event in events])

    def _piece(self) -> bytes:
        """The next replayed events, about :data:`~flask_sse_stream.stream.PIECE` bytes of them.

        A client that does not read holds one piece, not its replay.
        """
        replay, n = self._replay, self._next_replayed
        assert replay is not None
        frames, size = [], 0
        while n < len(replay) and size < PIECE:
            frame = replay[n].frame
            frames.append(frame)
            size += len(frame)
            n += 1
        if n == len(replay):
            self._replay = None
        self._next_replayed = n
        return b"".join(frames)

    def _write_directly(self, sock: Any) -> None:
        # The server has written the headers and the first item: it waits for
        # the next one, so the socket is ours until this returns.
        stream = self._stream
        writer = stream.writer = DirectWriter(stream, sock._sock)
        while (data := writer.take_chunk(self._keepalive, KEEPALIVE_CHUNK)) is not None:
            if not self._send(sock, data):
                stream.close()  # the client is gone
                return
            self._counters.bytes_written += len(data)
            writer.wrote()
        if (farewell := stream.farewell()) is not None:
            self._send(sock, chunk(farewell))

    def _send(self, sock: Any, data: bytes) -> bool:
        """One whole write, marked as under way while it lasts; False if the client is gone."""
        stream = self._stream
        stream.writes += 1
        stream.in_write = True
        try:
            sock.sendall(data)
        except OSError:
            return False
        finally:
            stream.in_write = False
        return True

    def close(self) -> None:
        if self._unwatch is not None:
            self._unwatch()  # before the server closes (or reuses) the socket
        stream = self._stream
        finished(stream, self._ended)
        if stream.hangup:
            # The server has written the end of the response by now (WSGI
            # calls close() last): end the connection too.
            stream.shutdown_socket()


def finished(stream: Stream, ended: Callable[[Stream], None], what: str = "stream") -> None:
    """``stream``'s response has ended: it leaves the fan-out (``ended``), and its end is logged (a slow
    client's cut at info: the log is not written under the senders' feet, a handler may block)."""
    stream.finished = True
    ended(stream)
    stream.close()
    channels = ", ".join(stream.channels)
    if stream.too_slow:
        log.info("disconnected a %s of %s from %s: more than %d events behind",
                 what, channels, stream.remote_addr, stream.queue_size)  # fmt: skip
    log.debug("closed a %s of %s for %s", what, channels, stream.remote_addr)


class Hangup(Iterator[bytes]):
    """A stream that ends after its opening and closes its connection."""

    def __init__(self, sock: Any, farewell: bytes | None = None) -> None:
        self._first: bytes | None = OPENING + b"\n" + (farewell or b"")
        self._socket = sock

    def __next__(self) -> bytes:
        first, self._first = self._first, None
        if first is None:
            raise StopIteration
        return first

    def close(self) -> None:
        if self._socket is not None:
            shutdown(self._socket)
