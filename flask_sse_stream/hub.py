"""Local fan-out: the open streams of one app in this process, by channel.

A backend calls :meth:`Hub.deliver` once per event; the hub appends that
event to the queue of each stream subscribed to its channel. Delivering never
blocks and never waits on a client: a stream that falls more than
``SSE_QUEUE_SIZE`` events behind is aborted instead (its socket is closed, so
a writer blocked on a client that stopped reading is freed too).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Iterable

from .event import Event
from .waking import GeventWaker, ThreadWaker, allocate_lock, new_waker


class Connection:
    """One open stream: what ``SSE.connections`` lists.

    ``channels`` is the tuple of its channel names in request order,
    ``remote_addr`` the client's address and ``started_at`` the
    ``time.time()`` it opened.
    """

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
    )

    def __init__(
        self,
        channels: tuple[str, ...],
        remote_addr: str | None,
        queue_size: int,
        sock: socket.socket | None = None,
        server: object = None,
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

    def __repr__(self) -> str:
        return f"<Connection channels={self.channels!r} remote_addr={self.remote_addr!r}>"

    def replayed(self, last_id: int) -> None:
        """The replay sent ids up to ``last_id``: drop queued copies of them (0: drop none)."""
        self._replayed = last_id

    def push(self, event: Event) -> None:
        """Queue ``event``; from any greenlet or thread, never blocks."""
        if self.closed:
            return
        if self._replayed and event.id is not None and event.id <= self._replayed:
            return  # a copy of a replayed event (_drain clears _replayed once past them)
        pending = self._pending
        pending.append(event)
        if len(pending) > self._limit:
            self.abort()
        elif self._waker is not None:
            self._waker.wake()

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
                self._replayed = 0  # events come in id order: no more copies
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
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True


class Hub:
    """The open streams of one app in this process, indexed by channel."""

    def __init__(self) -> None:
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
        for connection in targets:
            connection.push(event)

    def ids_restarted(self) -> None:
        """The store lost its data and ids start again from 1: no queued event is a replayed copy."""
        for connection in self.connections():
            connection.replayed(0)

    def close(self, connections: Iterable[Connection], hangup: bool = False) -> None:
        for connection in connections:
            connection.close(hangup)
