"""Local fan-out: the open streams of one app in this process, by channel.

A backend calls :meth:`Hub.deliver` once per event; the hub appends that
event to the queue of each stream subscribed to its channel. Delivering never
blocks and never waits on a client: a stream that falls more than
``SSE_QUEUE_SIZE`` events behind is aborted instead (its socket is closed, so
a writer blocked on a client that stopped reading is freed too).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import gevent

from .event import Event
from .stats import Counters
from .waking import GeventWaker, ThreadWaker, allocate_lock, new_waker, thread_ident

log = logging.getLogger("flask_sse_stream")


class Connection:
    """One open stream: what ``SSE.connections`` lists.

    ``channels`` is the tuple of its channel names in request order,
    ``remote_addr`` the client's address and ``started_at`` the
    ``time.time()`` it opened.
    """

    # Its writer (the greenlet or thread that serves the response) waits in
    # take() or take_chunk(). Under gevent, once the response is under way,
    # events queued by senders of the writer's own thread are written to the
    # socket by the thread's Flusher while the writer stays asleep: no wake-up
    # and no switch per delivery, and all the events queued in one turn of
    # the event loop go out in one write. What the socket does not take is
    # left to the writer, in order.

    __slots__ = (
        "channels",
        "remote_addr",
        "started_at",
        "server",
        "closed",
        "hangup",
        "_pending",
        "_limit",
        "_waker",
        "_socket",
        "_replayed",
        "_direct",
        "_flusher",
        "_thread",
        "_dirty",
        "_idle",
        "_partial",
        "_written_at",
        "_counters",
    )

    def __init__(
        self,
        channels: tuple[str, ...],
        remote_addr: str | None,
        queue_size: int,
        sock: socket.socket | None = None,
        server: object = None,
        counters: Counters | None = None,
    ) -> None:
        self.channels = channels
        self.remote_addr = remote_addr
        self.started_at = time.time()
        #: The standalone server that serves it, if any (``start_sse_tcp_port``).
        self.server = server
        #: Set once the stream must end; it then receives nothing more.
        self.closed = False
        #: Set when the connection itself must close after the stream ends
        #: (server or worker shutdown), not wait for another request.
        self.hangup = False
        self._pending: deque[Event] = deque()
        self._limit = queue_size
        self._waker: GeventWaker | ThreadWaker | None = None
        self._socket = sock
        # The highest id sent by replay: a queued copy of it is dropped.
        self._replayed = 0
        # Direct writes: the OS socket (non-blocking) and the flusher of the
        # writer's thread once the writer allows them, whether the flusher
        # has it on its list, whether the writer is idle in take_chunk(),
        # bytes of a chunk that the socket did not take, and when data last
        # went out.
        self._direct: socket.socket | None = None
        self._flusher: Flusher | None = None
        self._thread = 0
        self._dirty = False
        self._idle = False
        self._partial: bytes | None = None
        self._written_at = 0.0
        self._counters = counters or Counters()

    def __repr__(self) -> str:
        return f"<Connection channels={self.channels!r} remote_addr={self.remote_addr!r}>"

    def replayed(self, last_id: int) -> None:
        """The replay sent ids up to ``last_id``: drop queued or later copies of them."""
        self._replayed = last_id

    def push(self, event: Event, thread: int) -> None:
        """Queue ``event``; from any greenlet or thread (``thread``: the sender's), never blocks."""
        if self.closed:
            return
        if self._replayed and event.id is not None and event.id <= self._replayed:
            return  # a copy of a replayed event (_drain clears _replayed once past them)
        pending = self._pending
        pending.append(event)
        if len(pending) > self._limit:
            self._counters.slow_clients_dropped += 1
            log.info(
                "disconnected a stream of %s from %s: more than %d events behind",
                ", ".join(self.channels),
                self.remote_addr,
                self._limit,
            )
            self.abort()
        elif self._flusher is not None and thread == self._thread:
            if not self._dirty:
                self._dirty = True
                self._flusher.mark(self)
        elif self._waker is not None:
            self._waker.wake()

    def flush(self, flusher: Flusher) -> None:
        """Called by the flusher: write what is pending if the writer is idle."""
        self._dirty = False
        if not self._idle or self.closed:
            return  # the writer is busy writing: it takes the rest itself
        pending = self._pending
        if len(pending) == 1 and not self._replayed:
            # The common case: one event, framed once for all its streams.
            event = pending.popleft()
            if event is flusher.event:
                chunk = flusher.chunk
            else:
                chunk = flusher.chunk = _chunk(event.frame)
                flusher.event = event
        else:
            events = self._drain()
            if not events:
                return
            chunk = _chunk(b"".join([event.frame for event in events]))
        try:
            sent = self._direct.send(chunk)  # type: ignore[union-attr]
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()  # the client is gone
            return
        self._written_at = flusher.now
        self._counters.bytes_written += sent
        if sent < len(chunk):
            self._partial = chunk[sent:]
            self._idle = False
            self._waker.wake()  # type: ignore[union-attr]

    def take(self, timeout: float) -> list[Event] | None:
        """Wait up to ``timeout`` seconds for events and return all pending ones.

        Returns ``[]`` on timeout and ``None`` once the stream must end. Called
        only by the stream's own writer: the first call binds the wait to it.
        """
        waker = self._waker
        if waker is None:
            waker = self._waker = new_waker()
        while not self.closed:
            waker.clear()
            events = self._drain()
            if events:
                return events
            if not waker.wait(timeout):
                return []
        return None

    def allow_direct_writes(self, raw: socket.socket) -> None:
        """From now on the writer writes with :meth:`take_chunk`, and the flusher of its thread writes ``raw``."""
        if self._waker is None:
            self._waker = new_waker()
        self._written_at = time.monotonic()
        self._direct = raw
        self._thread = thread_ident()
        self._flusher = Flusher.of_this_thread()

    def take_chunk(self, timeout: float, keepalive: bytes) -> bytes | None:
        """Wait for something to write and return it as chunked-encoding bytes.

        That is: what a direct write left over, then every pending event in
        one chunk; ``keepalive`` when ``timeout`` seconds passed without any
        write; ``None`` once the stream must end.
        """
        waker = self._waker
        assert waker is not None
        wait = timeout
        while not self.closed:
            waker.clear()
            partial, self._partial = self._partial, None
            events = self._drain()
            if events:
                chunk = _chunk(b"".join([event.frame for event in events]))
                return partial + chunk if partial else chunk
            if partial:
                return partial
            self._idle = True
            try:
                woken = waker.wait(wait)
            finally:
                self._idle = False
            if not woken and not self.closed:
                # Direct writes do not wake the writer: keep-alive time
                # counts from the last of them.
                quiet = time.monotonic() - self._written_at
                if quiet >= timeout:
                    return keepalive
                wait = timeout - quiet
        return None

    def wrote(self) -> None:
        """The writer has written: keep-alive time counts from now."""
        self._written_at = time.monotonic()

    def _drain(self) -> list[Event]:
        pending = self._pending
        if not pending:
            return []
        # deque.popleft is atomic, so a concurrent push is never lost: it
        # lands either in this batch or in the next one.
        events = [pending.popleft() for _ in range(len(pending))]
        if self._replayed:
            replayed = self._replayed
            events = [event for event in events if event.id is None or event.id > replayed]
            if any(event.id is not None for event in events):
                self._replayed = 0
        return events

    def close(self, hangup: bool = False) -> None:
        """End the stream cleanly after what it is writing now.

        With ``hangup``, the connection closes too once the response has ended,
        so that the client reconnects elsewhere instead of reusing it.
        """
        self.hangup = self.hangup or hangup
        self.closed = True
        self._pending.clear()
        if self._waker is not None:
            self._waker.wake()

    def abort(self) -> None:
        """End the stream now, even if its writer is blocked on a client that stopped reading."""
        self.close()
        if not self.shutdown_socket():
            if self._waker is not None:
                self._waker.kill()

    def shutdown_socket(self) -> bool:
        """Close the client's connection under the server's feet; False if its socket is unknown."""
        if self._socket is None:
            return False
        shutdown(self._socket)
        return True


def shutdown(sock: Any) -> None:
    """End a client's connection both ways, whoever is blocked on it; quiet if it is gone already."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _chunk(data: bytes) -> bytes:
    """``data`` as one chunk of HTTP/1.1 chunked encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Flusher:
    """Writes, once per turn of a gevent loop, what senders queued for idle streams of its thread."""

    _by_thread: dict[int, Flusher] = {}
    _lock = allocate_lock()

    def __init__(self) -> None:
        self._loop = gevent.get_hub().loop
        self._dirty: list[Connection] = []
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

    def mark(self, connection: Connection) -> None:
        """Have ``connection`` flushed at the next turn of the loop (from the loop's thread only)."""
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._flush)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        self.now = time.monotonic()
        for connection in dirty:
            connection.flush(self)
        self.event, self.chunk = None, b""


class Hub:
    """The open streams of one app in this process, indexed by channel."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters or Counters()
        self._lock = allocate_lock()
        self._channels: dict[str, dict[Connection, None]] = {}
        # channel -> snapshot of its streams, rebuilt after a change, so that
        # deliver() iterates without a lock and without copying.
        self._fanout: dict[str, tuple[Connection, ...]] = {}
        self._all: dict[Connection, None] = {}

    def __len__(self) -> int:
        return len(self._all)

    def connections(self) -> list[Connection]:
        return list(self._all)

    def channels(self) -> list[str]:
        """The channels that have streams here."""
        with self._lock:
            return list(self._channels)

    def streams_by_channel(self) -> dict[str, int]:
        """How many streams each channel has here."""
        with self._lock:
            return {channel: len(members) for channel, members in self._channels.items()}

    def subscribe(self, connection: Connection, limit: int) -> bool:
        """Add ``connection`` unless ``limit`` streams are open; False if full."""
        with self._lock:
            if len(self._all) >= limit:
                return False
            self._all[connection] = None
            for channel in connection.channels:
                self._channels.setdefault(channel, {})[connection] = None
                self._fanout.pop(channel, None)
        return True

    def unsubscribe(self, connection: Connection) -> None:
        with self._lock:
            if connection not in self._all:
                return
            del self._all[connection]
            for channel in connection.channels:
                members = self._channels.get(channel)
                if members is not None:
                    members.pop(connection, None)
                    if not members:
                        del self._channels[channel]
                self._fanout.pop(channel, None)

    def deliver(self, channel: str, event: Event) -> None:
        """Queue ``event`` for every stream of ``channel``; never blocks."""
        targets = self._fanout.get(channel)
        if targets is None:
            with self._lock:
                members = self._channels.get(channel)
                if not members:
                    return  # not cached: senders may use any number of channels
                targets = self._fanout[channel] = tuple(members)
        thread = thread_ident()
        for connection in targets:
            connection.push(event, thread)

    def ids_restarted(self) -> None:
        """The store lost its data and ids start again from 1: no queued event is a replayed copy."""
        for connection in self.connections():
            connection.replayed(0)

    def close(self, connections: Iterable[Connection], hangup: bool = False) -> None:
        for connection in connections:
            connection.close(hangup)
