"""A subscription connection read in bulk: one read takes whatever has arrived, and every message in it is parsed.

redis-py's ``PubSub.get_message`` polls, reads and parses one message at a
time, with a timeout object per call: most of a listener's CPU when events
are small and many. Here the listener reads the socket directly, up to 64 KiB
at once, and parses every reply in what it read: with ``hiredis`` (the C
parser redis-py itself uses; part of the ``redis`` extra) when it is
installed, else with :class:`RespReader`, a small reader of the replies a
subscription receives.

In a monkey-patched process, what arrives is read in the gevent hub itself,
by a callback of an io watcher, and the replies the listener can take there
(events to deliver: nearly all of them) never wake its greenlet: a message
that arrives alone costs a wake-up of the process, one ``recv`` and the
delivery, not two greenlet switches and a ``recv`` that finds nothing more.
The first reply it cannot take there, and those after it, go to the
listener's greenlet, in order.

The connection is one of the pool's (so it counts in :data:`POOL_SIZE`),
made as redis-py makes it (TLS, a Unix socket, a password, a database), and
disconnected when the subscription ends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket as gevent_socket
from gevent.hub import Waiter, get_hub

from ..hangups import shutdown
from .redis_connection import RedisConnections

try:  # pragma: no branch - depends on the environment
    import hiredis
except ImportError:  # pragma: no cover - depends on the environment
    hiredis = None  # type: ignore[assignment]

#: Bytes one read may take.
READ_SIZE = 1 << 16

Reply = Any


class RespReader:
    """The replies of a subscription, parsed from bytes fed in any pieces (``hiredis.Reader``'s interface).

    A subscription receives arrays (RESP2) or pushes (RESP3, which redis-py
    may negotiate) of bulk strings and integers (``message``,
    ``subscribe``...), and errors; nothing else is parsed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0

    def feed(self, data: bytes) -> None:
        if self._start > READ_SIZE:  # drop what has been parsed
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def gets(self) -> Reply:
        """The next whole reply, or ``False`` until more bytes come."""
        parsed = self._parse(self._start)
        if parsed is None:
            return False
        reply, self._start = parsed
        return reply

    def _parse(self, at: int) -> tuple[Reply, int] | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n", at)
        if end < 0:
            return None
        kind, line, after = bytes(buffer[at : at + 1]), bytes(buffer[at + 1 : end]), end + 2
        if kind == b"$":
            size = int(line)
            if size < 0:
                return None, after
            if len(buffer) < after + size + 2:
                return None
            return bytes(buffer[after : after + size]), after + size + 2
        if kind in (b"*", b">"):
            items = []
            for _ in range(int(line)):
                parsed = self._parse(after)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        if kind == b":":
            return int(line), after
        if kind == b"-":
            return RedisReplyError(line.decode(errors="replace")), after
        if kind == b"+":
            return line, after
        if kind == b"_":
            return None, after
        raise ValueError(f"not a reply a subscription receives: {bytes(buffer[at : at + 20])!r}")


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) read from the subscription."""


def new_reader() -> Any:
    """hiredis's reader if it is installed, else the pure-Python one."""
    return hiredis.Reader() if hiredis is not None else RespReader()


class Subscription:
    def __init__(self, connections: RedisConnections, key: str) -> None:
        """A connection to the node that holds ``key`` (on a cluster, the node of the app's slot)."""
        self._pool = connections.node(key).connection_pool
        self._home = connections.home
        self._connection: Any = self._pool.get_connection()
        self._reader = new_reader()
        self._socket: Any = self._connection._sock
        _keep_alive(self._socket)
        # A gevent socket, read from the hub in its thread: its OS socket (non-blocking) and a watcher.
        self._raw: Any = None
        if self._home is not None and isinstance(self._socket, gevent_socket.socket):
            self._raw = self._socket._sock
            self._watcher: Any = get_hub().loop.io(self._socket.fileno(), 1)

    def send(self, *command: str) -> None:
        """``SUBSCRIBE``, ``UNSUBSCRIBE``...; from the thread that reads.

        If it cannot be sent (Redis ended the connection and the reader has
        not noticed yet), the connection is ended, so the reader notices and
        subscribes again, and :class:`ConnectionError` is raised. It is sent
        on the socket itself: redis-py would close it, under a reader that
        waits in the hub for a socket that no longer exists.
        """
        try:
            self._socket.sendall(b"".join(self._connection.pack_command(*command)))
        except OSError as error:
            self.interrupt()
            raise ConnectionError(f"could not send {command[0]} to Redis on the subscription: {error}") from error

    def read(self, timeout: float | None = None, take: Callable[[Reply], bool] | None = None) -> list[Reply]:
        """Every reply that has arrived (waiting up to ``timeout`` seconds, or for good); [] on timeout.

        Raises :class:`ConnectionError` when the connection ends. Waiting for
        good costs no timer per read: :meth:`interrupt` ends the wait. With
        ``take``, in a monkey-patched process, the replies are given to it in
        the hub as they arrive, and read returns the first one it does not
        take, with those after it (``take`` must never block or switch).
        """
        if take is not None and self._raw is not None and self._home is not None and self._home.here():
            return self._read_in_hub(timeout, take)
        if self._socket.gettimeout() != timeout:
            self._socket.settimeout(timeout)
        try:
            data = self._socket.recv(READ_SIZE)
        except TimeoutError:
            return []
        if not data:
            raise ConnectionError("the subscription's connection ended")
        self._reader.feed(data)
        replies = []
        while (reply := self._reader.gets()) is not False:
            if isinstance(reply, Exception):
                raise ConnectionError(f"Redis refused the subscription: {reply}")
            replies.append(reply)
        return replies

    def _read_in_hub(self, timeout: float | None, take: Callable[[Reply], bool]) -> list[Reply]:
        waiter: Waiter = Waiter()
        raw, reader, watcher = self._raw, self._reader, self._watcher

        def readable() -> None:  # in the hub: never blocks, never switches but to hand over
            try:
                data = raw.recv(READ_SIZE)
            except BlockingIOError:
                return
            except BaseException as error:  # noqa: BLE001 - the listener's greenlet gets it
                watcher.stop()
                waiter.throw(ConnectionError(f"the subscription's connection failed: {error}"))
                return
            try:
                if not data:
                    raise ConnectionError("the subscription's connection ended")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    if isinstance(reply, Exception):
                        raise ConnectionError(f"Redis refused the subscription: {reply}")
                    if not take(reply):
                        rest = [reply]
                        while (reply := reader.gets()) is not False:
                            rest.append(reply)
                        watcher.stop()
                        waiter.switch(rest)
                        return
            except BaseException as error:  # noqa: BLE001 - the listener's greenlet gets it
                watcher.stop()
                waiter.throw(error)

        watcher.start(readable)
        try:
            if timeout is None:
                return waiter.get()  # type: ignore[no-any-return]
            with gevent.Timeout(timeout, False):
                return waiter.get()  # type: ignore[no-any-return]
            return []
        finally:
            watcher.stop()

    def interrupt(self) -> None:
        """End a :meth:`read` that waits, from any thread: the connection ends."""
        if self._home is not None:
            self._home.soon(shutdown, self._socket)
        else:
            shutdown(self._socket)

    def close(self) -> None:
        if self._raw is not None:
            self._watcher.close()
        try:
            self._connection.disconnect()
        finally:
            self._pool.release(self._connection)


def _keep_alive(sock: Any) -> None:
    """TCP keep-alives, so that a Redis that vanished without a word is noticed within a minute."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except (OSError, AttributeError):
        pass  # a Unix socket
