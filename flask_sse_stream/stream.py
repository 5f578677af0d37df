"""One open stream: its bounded queue of events, how its writer waits, and how it ends.

Senders, from any greenlet or thread, :meth:`Stream.push` events; the
stream's writer (the greenlet or thread serving the response) takes them.
Pushing never blocks: a stream more than ``SSE_QUEUE_SIZE`` events behind is
aborted instead. A stream ends in one of two ways, both on an event boundary
as the client sees it: :meth:`Stream.close` lets the writer finish the write
it has begun and then end the response; :meth:`Stream.abort` cuts the
connection itself (the client sees a network error, never a cut event).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from .concurrency import GeventWaker, Home, ThreadWaker, new_waker, thread_ident
from .event import Event
from .hangups import departed, shutdown
from .spread import Telling, farewell
from .stats import Counters

log = logging.getLogger("flask_sse_stream")

#: Seconds a stream told to end may stay in the same write before its connection is cut.
GRACE = 0.5
#: Bytes of events one write takes at most (or one larger event): replayed or live.
PIECE = 64 * 1024


class Writer(Protocol):
    """Writes a stream's events to its socket from the loop of one thread (see socket_writer)."""

    thread: int
    #: Already on its flusher's list for the next turn of the loop.
    dirty: bool
    #: What writes it at the next turn of the loop: ``flusher.mark(writer)``, from that thread only.
    flusher: Any


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """An open stream, as :attr:`SSE.connections` lists it."""

    #: Its channel names, in request order.
    channels: tuple[str, ...]
    #: The client's address.
    remote_addr: str | None
    #: When it opened (``time.time()``).
    started_at: float


class Stream:
    __slots__ = (
        "channels", "remote_addr", "started_at", "subjects", "deadline", "since", "server", "closed", "hangup",
        "finished", "too_slow", "pending", "resumed", "_farewell", "spread", "_limit", "_waker", "_socket", "upto",
        "sifting", "writer", "counters", "writes", "in_write", "client", "ending",
    )  # fmt: skip

    def __init__(
        self,
        channels: tuple[str, ...],
        remote_addr: str | None,
        queue_size: int,
        sock: socket.socket | None = None,
        server: object = None,
        counters: Counters | None = None,
        subjects: frozenset[str] = frozenset(),
        deadline: float | None = None,
        since: float = 0.0,
        spread: float = 0.0,
    ) -> None:
        self.channels = channels
        self.remote_addr = remote_addr
        self.started_at = time.time()
        #: Whom its admission names (``Admission.subject``): end_streams(subject=...) ends it.
        self.subjects = subjects
        #: When it must end (``time.monotonic()``): its admission's expiry, or its maximum age.
        self.deadline = deadline
        #: When its authorization began (``time.monotonic()``): an end_streams() that matches it
        #: and arrives after that ends it, even if it arrives before the stream is open.
        self.since = since
        #: The standalone server that serves it, if any (``start_sse_tcp_port``).
        self.server = server
        #: Set once the stream must end; it then takes no more events.
        self.closed = False
        #: The connection itself closes after the stream ends (server or worker shutdown).
        self.hangup = False
        #: Set once its response has ended (the WSGI server closed the body).
        self.finished = False
        #: Writes its body began, and whether one is under way: one stuck since its end was asked is cut.
        self.writes, self.in_write = 0, False
        #: Set when it was cut for falling more than ``queue_size`` events behind.
        self.too_slow = False
        #: The events queued for it and not yet written, oldest first (at most ``queue_size``).
        self.pending: deque[Event] = deque()
        #: Written before ``pending`` (see :meth:`restart`): what was queued, the reset event, the store.
        self.resumed: deque[Event] | None = None
        #: Seconds over which the clients of streams ended for a planned reason come back
        #: (``SSE_RECONNECT_SPREAD``), and the ``retry:`` block written last when it is so ended.
        self.spread = spread
        self._farewell: bytes | Telling | None = None
        self._limit = queue_size
        self._waker: GeventWaker | ThreadWaker | None = None
        self._socket = sock
        #: The client has every id'd event up to ``upto`` (its replay): copies are dropped, whenever they come;
        #: ``sifting``: what is queued may hold such copies (queued before ``upto`` was known).
        self.upto, self.sifting = 0, False
        #: Direct writes to its socket, under gevent (see socket_writer).
        self.writer: Writer | None = None
        self.counters = counters or Counters()
        #: Whom SSE_MAX_CONNECTIONS_PER_CLIENT counts it for: its address (an IPv6 one's prefix).
        self.client = remote_addr
        #: ``"ended"`` (end_streams) or ``"expired"`` once so ended: its client must be authorized again.
        self.ending: str | None = None

    queue_size = property(lambda self: self._limit)

    def farewell(self) -> bytes | None:
        """The ``retry:`` block to write last (once), if it was ended for a planned reason."""
        block, self._farewell = self._farewell, None
        return block.next(self.spread) if isinstance(block, Telling) else block

    def __repr__(self) -> str:
        return f"<Stream channels={self.channels!r} remote_addr={self.remote_addr!r}>"

    def info(self) -> StreamInfo:
        return StreamInfo(self.channels, self.remote_addr, self.started_at)

    def replayed(self, upto: int) -> None:
        """The client has every id'd event up to ``upto``: drop queued or later copies of them; unless told
        in-band while its read was in flight (:meth:`restart`): after that reset it needs all past its store."""
        if self.resumed is None:
            self.upto = upto
            self.sifting = upto > 0

    def push(self, event: Event, thread: int) -> None:
        """Queue ``event``; from any greenlet or thread (``thread``: the sender's), never blocks."""
        if self.closed:
            return
        if self.upto and event.id is not None and event.id <= self.upto:
            return  # a copy of a replayed event
        pending = self.pending
        pending.append(event)
        if len(pending) > self._limit:
            # Logged when its response ends (StreamBody.close), not here: a logging handler may block
            # or yield, and a sender delivers to every stream under the store's lock, or in the hub.
            self.counters.slow_clients_dropped += 1
            self.too_slow = True
            self.abort()
        elif (writer := self.writer) is not None and thread == writer.thread:
            if not writer.dirty:  # the per-delivery path, inlined: mark it for the loop's next turn
                writer.dirty = True
                writer.flusher.mark(writer)
        elif self._waker is not None:
            self._waker.wake()

    def waker(self) -> GeventWaker | ThreadWaker:
        """The writer's waker; the first call binds it to the calling greenlet or thread."""
        if self._waker is None:
            self._waker = new_waker()
        return self._waker

    def take(self, timeout: float) -> list[Event] | None:
        """Wait up to ``timeout`` seconds for events and return all pending ones.

        Returns ``[]`` on timeout and ``None`` once the stream must end. Called
        only by the stream's own writer.
        """
        waker = self.waker()
        while not self.closed:
            waker.clear()
            if self.deadline is not None and self.expired():
                break  # even if events keep coming
            events = self.drain()
            if events:
                return events
            if self.deadline is None:
                if not waker.wait(timeout):
                    return []
            elif not waker.wait(self.until_deadline(timeout)) and not self.closed and not self.expired():
                return []
        return None

    def until_deadline(self, wait: float) -> float:
        """``wait`` seconds, or fewer if the stream's deadline comes first."""
        if self.deadline is None:
            return wait
        return max(0.0, min(wait, self.deadline - time.monotonic()))

    def expired(self) -> bool:
        """Whether its deadline has passed; if so it is closed (ended on an event boundary, as close() does)."""
        if self.deadline is None or time.monotonic() < self.deadline:
            return False
        if not self.closed:
            self.counters.streams_expired += 1
            self.ending = "expired"
            log.debug("a stream of %s for %s reached its deadline", ", ".join(self.channels), self.remote_addr)
            self.close(planned=True)
        return True

    def drain(self) -> list[Event]:
        """The pending events, in order, about :data:`PIECE` bytes of them at most, without replayed copies.

        One write takes at most that much (or one larger event): what a
        client that stops reading holds is one piece, not its whole queue.
        """
        if (resumed := self.resumed) is not None:
            return self._drain_resumed(resumed)
        pending = self.pending
        events = []
        size = 0
        # popleft is atomic: a concurrent push lands in this batch or the
        # next, and a concurrent close() that empties the queue ends it.
        for _ in range(len(pending)):
            try:
                event = pending.popleft()
            except IndexError:
                break
            events.append(event)
            size += len(event.frame)
            if size >= PIECE:
                break
        if self.sifting and events:
            events = [event for event in events if event.id is None or event.id > self.upto]
            if any(event.id is not None for event in events):
                self.sifting = False  # the rest came after the replay, in id order; a late copy: push() drops it
        return events

    def restart(self, first: list[Event], upto: int) -> None:
        """Serve ``first`` (the reset event, the store) in-band, after what is queued; from the listener's thread.
        Events queued later with an id up to ``upto`` are copies of ``first``'s: dropped."""
        pending, old = self.pending, self.upto
        queued = []
        while pending:  # popleft is atomic: an event the writer takes meanwhile is written before these
            event = pending.popleft()
            if not old or event.id is None or event.id > old:
                queued.append(event)
        self.resumed = deque(queued + first)
        self.upto, self.sifting = upto, upto > 0
        if (writer := self.writer) is not None and thread_ident() == writer.thread:
            if not writer.dirty:
                writer.dirty = True
                writer.flusher.mark(writer)
        elif self._waker is not None:
            self._waker.wake()

    def _drain_resumed(self, resumed: deque[Event]) -> list[Event]:
        events, size = [], 0
        while resumed and size < PIECE:
            event = resumed.popleft()
            events.append(event)
            size += len(event.frame)
        if not resumed:
            self.resumed = None
        return events

    def close(self, hangup: bool = False, planned: bool = False, telling: Telling | None = None) -> None:
        """End the stream after the write its writer has begun; from any greenlet or thread.

        With ``hangup``, the connection closes too once the response has ended,
        so that the client reconnects elsewhere instead of reusing it. A
        ``planned`` end (shutdown, ``end_streams``, an expiry) first tells the
        client a ``retry:`` in ``spread`` (its turn in ``telling``, for streams ended together),
        so that the clients of streams ended together do not all come back at once.
        """
        if planned and not self.closed:
            self._farewell = telling if telling is not None and self.spread else farewell(self.spread)
        self.hangup = self.hangup or hangup
        self.closed = True
        self.pending.clear()
        self.resumed = None
        if self._waker is not None:
            self._waker.wake()

    def abort(self) -> None:
        """End the stream now, even if its writer is blocked on a client that stopped reading."""
        self.close()
        if not self.shutdown_socket() and self._waker is not None:
            self._waker.kill()

    def departed(self) -> bool:
        """Whether its client has closed or reset the connection; never blocks."""
        return self._socket is not None and departed(self._socket)

    def shutdown_socket(self) -> bool:
        """Close the client's connection under the server's feet; False if its socket is unknown."""
        if self._socket is None:
            return False
        home: Home | None = self._waker.home if self._waker is not None else None
        if home is not None and home.thread != thread_ident():
            home.soon(shutdown, self._socket)  # a gevent socket belongs to its hub's thread
        else:
            shutdown(self._socket)
        return True
