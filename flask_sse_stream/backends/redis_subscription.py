"""A subscription connection read in bulk: one read takes whatever has arrived, and every message in it is parsed.

redis-py's ``PubSub.get_message`` polls, reads and parses one message at a
time, with a timeout object per call: most of a listener's CPU when events
are small and many. Here the listener reads the socket directly, up to 64 KiB
at once, and parses every reply in what it read: with ``hiredis`` (the C
parser redis-py itself uses; part of the ``redis`` extra) when it is
installed, else with :class:`RespReader`, a small reader of the replies a
subscription receives.

The connection is one of the pool's (so it counts in :data:`POOL_SIZE`),
made as redis-py makes it (TLS, a Unix socket, a password, a database), and
disconnected when the subscription ends.
"""

from __future__ import annotations

import socket
from typing import Any

from ..stream import shutdown
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

    def send(self, *command: str) -> None:
        """``SUBSCRIBE``, ``UNSUBSCRIBE``...; from the thread that reads."""
        self._connection.send_command(*command)

    def read(self, timeout: float | None = None) -> list[Reply]:
        """Every reply that has arrived (waiting up to ``timeout`` seconds, or for good); [] on timeout.

        Raises :class:`ConnectionError` when the connection ends. Waiting for
        good costs no timer per read: :meth:`interrupt` ends the wait.
        """
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

    def interrupt(self) -> None:
        """End a :meth:`read` that waits, from any thread: the connection ends."""
        if self._home is not None:
            self._home.soon(shutdown, self._socket)
        else:
            shutdown(self._socket)

    def close(self) -> None:
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
