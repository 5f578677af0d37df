"""Direct writes: under gevent, events go from the sender's turn of the loop straight to idle streams' sockets.

Once a stream's response is under way on a plain gevent socket, events
queued by senders of the writer's own thread are written by that thread's
:class:`Flusher`, once per turn of the event loop, while the writer stays
asleep: no wake-up and no switch per delivery, and all the events queued in
one turn go out in one write. What the socket does not take is left to the
writer, which finishes that chunk before anything else, even when the
stream is closed meanwhile: a response never ends inside a chunk.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING

import gevent

from .concurrency import allocate_lock, thread_ident
from .event import Event

if TYPE_CHECKING:
    from .stream import Stream

log = logging.getLogger("flask_sse_stream")


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of HTTP/1.1 chunked encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class DirectWriter:
    """The direct-write state of one stream: its OS socket and what its writer must finish."""

    __slots__ = ("stream", "raw", "thread", "flusher", "dirty", "idle", "partial", "written_at", "counters")

    def __init__(self, stream: Stream, raw: socket.socket) -> None:
        self.stream = stream
        #: The non-blocking OS socket under the gevent socket.
        self.raw = raw
        self.thread = thread_ident()
        self.flusher = Flusher.of_this_thread()
        #: On the flusher's list for its next turn.
        self.dirty = False
        #: The writer waits in take_chunk(): the flusher may write.
        self.idle = False
        #: The rest of a chunk the socket did not take: the writer's to finish.
        self.partial: bytes | None = None
        self.written_at = time.monotonic()
        self.counters = stream.counters

    def flush(self, flusher: Flusher) -> None:
        """Called by the flusher: write what is pending if the writer is idle."""
        self.dirty = False
        stream = self.stream
        if not self.idle or stream.closed:
            return  # the writer is busy writing: it takes the rest itself
        pending = stream.pending
        if len(pending) == 1 and not stream.sifting and stream.resumed is None:
            # The common case: one event, framed once for all the streams of this flush.
            try:
                event = pending.popleft()
            except IndexError:
                return  # closed meanwhile, from another thread
            if event is flusher.event:
                data = flusher.chunk
            else:
                data = flusher.chunk = chunk(event.frame)
                flusher.event = event
        else:
            events = stream.drain()
            if not events:
                return
            data = self.framed(events)
        self.send(data, flusher)

    def framed(self, events: list[Event]) -> bytes:
        """``events`` as the bytes of one write: one chunk of their SSE text."""
        return chunk(b"".join([event.frame for event in events]))

    def send(self, data: bytes, flusher: Flusher) -> None:
        """Write what the socket takes of ``data`` now; the writer finishes the rest."""
        stream = self.stream
        try:
            sent = self.raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            stream.close()  # the client is gone
            return
        self.written_at = flusher.now
        self.counters.bytes_written += sent
        if sent < len(data):
            self.partial = data[sent:]
            self.idle = False
            stream.waker().wake()
        elif stream.pending or stream.resumed is not None:
            stream.waker().wake()  # more than one write's worth was queued: the writer takes the rest

    def take_chunk(self, timeout: float, keepalive: bytes) -> bytes | None:
        """Wait for something to write and return it as chunked-encoding bytes.

        That is: what a direct write left over, then every pending event in
        one chunk; ``keepalive`` when ``timeout`` seconds passed without any
        write; ``None`` once the stream must end, but never before what a
        direct write left over.
        """
        stream = self.stream
        waker = stream.waker()
        wait = timeout
        while True:
            waker.clear()
            partial, self.partial = self.partial, None
            if stream.closed or (stream.deadline is not None and stream.expired()):
                return partial
            events = stream.drain()
            if events:
                data = self.framed(events)
                return partial + data if partial else data
            if partial:
                return partial
            self.idle = True
            try:
                woken = waker.wait(wait if stream.deadline is None else stream.until_deadline(wait))
            finally:
                self.idle = False
            if not woken and not stream.closed and not stream.expired():
                # Direct writes do not wake the writer: keep-alive time
                # counts from the last of them.
                quiet = time.monotonic() - self.written_at
                if quiet >= timeout:
                    return keepalive
                wait = timeout - quiet

    def wrote(self) -> None:
        """The writer has written: keep-alive time counts from now."""
        self.written_at = time.monotonic()


class Flusher:
    """Writes, once per turn of a gevent loop, what senders queued for idle streams of its thread."""

    _by_thread: dict[int, Flusher] = {}
    _lock = allocate_lock()

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._dirty: list[DirectWriter] = []
        self._scheduled = False
        #: During a flush: its time, and the last event framed with its chunk.
        self.now = 0.0
        self.event: Event | None = None
        self.chunk = b""

    @classmethod
    def of_this_thread(cls) -> Flusher:
        thread = thread_ident()
        flusher = cls._by_thread.get(thread)
        if flusher is None or flusher._loop is not gevent.get_hub().loop:
            with cls._lock:
                flusher = cls._by_thread[thread] = Flusher()
        return flusher

    def mark(self, writer: DirectWriter) -> None:
        """Have ``writer`` flushed at the next turn of the loop (from the loop's thread only)."""
        self._dirty.append(writer)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self.now = time.monotonic()
        for writer in dirty:
            try:
                writer.flush(self)
            except Exception:  # one stream's failure must not leave the others unwritten
                log.exception("a direct write failed; the stream is cut")
                writer.dirty = False
                writer.stream.abort()
        self.event, self.chunk = None, b""
